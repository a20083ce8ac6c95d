//! `porthawk completions SHELL`: the shell's completion script, generated from the same clap
//! definition that parses the arguments, so it never lists a flag the binary does not have.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;
use clap::CommandFactory;

use crate::args::{Cli, CompletionsArgs};

pub fn run(args: CompletionsArgs) -> Result<ExitCode> {
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "porthawk", &mut out);
    // Written in one piece so that a closed pipe is an error main() recognises, not a panic.
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&out)?;
    stdout.flush()?;
    Ok(ExitCode::SUCCESS)
}
