//! `porthawk man`: the manual page in roff, generated from the clap definition. One page for
//! porthawk with a section per subcommand, so `man -l` shows every flag in one place.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;
use clap::CommandFactory;

use crate::args::Cli;

pub fn run() -> Result<ExitCode> {
    let mut out = Vec::new();
    render(&mut out)?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&out)?;
    stdout.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// The page: clap_mangen's sections for porthawk, then one SUBCOMMAND section each with that
/// subcommand's synopsis and options (clap_mangen alone lists subcommands by name only).
fn render(out: &mut Vec<u8>) -> std::io::Result<()> {
    let cmd = Cli::command();
    clap_mangen::Man::new(cmd.clone()).render(out)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("porthawk {}", sub.get_name());
        let sub = sub
            .clone()
            .display_name(name.clone())
            .bin_name(name.clone());
        let man = clap_mangen::Man::new(sub);
        writeln!(out, ".SH \"{}\"", name.to_uppercase())?;
        man.render_description_section(out)?;
        man.render_synopsis_section(out)?;
        man.render_options_section(out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_has_a_section_per_subcommand_with_its_flags() {
        let mut out = Vec::new();
        render(&mut out).expect("render");
        let page = String::from_utf8(out).expect("roff is UTF-8");
        assert!(
            page.starts_with(".ie") || page.starts_with(".TH"),
            "{}",
            &page[..80]
        );
        for sub in ["SCAN", "CHECK", "BENCH", "SERVE", "COMPLETIONS", "MAN"] {
            assert!(
                page.contains(&format!(".SH \"PORTHAWK {sub}\"")),
                "no section for {sub}"
            );
        }
        // A flag of a subcommand, not only of porthawk itself.
        assert!(page.contains("\\-\\-listen"), "serve's --listen missing");
    }
}
