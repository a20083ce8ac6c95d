//! `porthawk diff OLD NEW`: what changed between two sweeps' jsonl results, as JSON lines;
//! exit 0 when nothing changed and 1 when something did, as diff(1) does.

use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use porthawk_core::{diff_results, ResultLine};

use crate::args::DiffArgs;

pub fn run(args: &DiffArgs) -> Result<ExitCode> {
    let old = read_lines(&args.old)?;
    let new = read_lines(&args.new)?;
    let changes = diff_results(&old, &new);
    let mut out = BufWriter::new(io::stdout().lock());
    for change in &changes {
        let json = serde_json::to_string(change).context("cannot encode a change")?;
        writeln!(out, "{json}").context("cannot write to standard output")?;
    }
    out.flush().context("cannot write to standard output")?;
    Ok(ExitCode::from(u8::from(!changes.is_empty())))
}

/// The result lines of a `porthawk scan --format jsonl` file; an error names the file and the
/// line that is not a result line.
fn read_lines(path: &Path) -> Result<Vec<ResultLine>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read '{}'", path.display()))?;
    if text.trim_start().starts_with('<') {
        bail!(
            "'{}' looks like XML; porthawk diff reads the jsonl results of `porthawk scan --format jsonl`",
            path.display()
        );
    }
    let mut lines = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let parsed: ResultLine = serde_json::from_str(line).with_context(|| {
            format!(
                "'{}' line {}: not a porthawk result line",
                path.display(),
                n + 1
            )
        })?;
        lines.push(parsed);
    }
    Ok(lines)
}
