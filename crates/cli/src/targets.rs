//! Turning the user's targets and exclusions into a host set and a port set: reading @files,
//! resolving host names once, up front.

use std::net::{IpAddr, ToSocketAddrs};
use std::path::Path;

use anyhow::{bail, Context, Result};
use porthawk_core::{
    parse_target, parse_target_list, AddrRange, FamilyChoice, HostSet, HostSetBuilder, PortSet,
    TargetToken,
};

/// Targets as given on the command line (`@file` entries expanded), each with where it came
/// from for error messages.
fn tokens(args: &[String]) -> Result<Vec<TargetToken>> {
    let mut out = Vec::new();
    for arg in args {
        if let Some(path) = arg.strip_prefix('@') {
            out.extend(read_list(Path::new(path))?);
        } else {
            out.push(parse_target(arg)?);
        }
    }
    Ok(out)
}

fn read_list(path: &Path) -> Result<Vec<TargetToken>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read target file '{}'", path.display()))?;
    parse_target_list(&text).with_context(|| format!("in target file '{}'", path.display()))
}

/// Resolves a host name to every A and AAAA address it has.
pub fn resolve(name: &str) -> Result<Vec<IpAddr>> {
    let addrs = (name, 0)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve host '{name}'"))?;
    let mut ips: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
    ips.sort();
    ips.dedup();
    if ips.is_empty() {
        bail!("cannot resolve host '{name}': it has no address");
    }
    Ok(ips)
}

/// What an exclude file names: targets to leave out, and `:PORTS` lines of ports to leave out.
pub struct ExcludeFile {
    /// Target lines.
    pub targets: Vec<TargetToken>,
    /// Port lists from `:PORTS` lines.
    pub ports: Vec<String>,
}

/// Reads an exclude file: the target list format, where a line may also be `:PORTS`.
pub fn read_exclude_file(path: &Path) -> Result<ExcludeFile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read exclude file '{}'", path.display()))?;
    let port_lines: Vec<&str> = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| l.starts_with(':'))
        .collect();
    // Keep line numbers right for errors: blank out the port lines rather than dropping them.
    let targets_text: String = text
        .lines()
        .map(|l| {
            if l.trim_start().starts_with(':') {
                ""
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let targets = parse_target_list(&targets_text)
        .with_context(|| format!("in exclude file '{}'", path.display()))?;
    Ok(ExcludeFile {
        targets,
        ports: port_lines.iter().map(|l| l[1..].to_string()).collect(),
    })
}

/// The hosts to sweep: every target (of a host name, the addresses `family` chooses),
/// minus every excluded target (every address of an excluded name).
pub fn hosts(
    targets: &[String],
    exclude: &[String],
    exclude_files: &[ExcludeFile],
    family: FamilyChoice,
) -> Result<HostSet> {
    let mut builder = HostSetBuilder::default();
    for token in tokens(targets)? {
        match token {
            TargetToken::Range(r) => {
                builder.include(r);
            }
            TargetToken::Host(name) => {
                let ips = resolve(&name)?;
                if let Some(why) = family.nothing_left(&ips) {
                    bail!("cannot resolve host '{name}': {why}");
                }
                for ip in family.select(&ips) {
                    builder.include_named(ip, &name);
                }
            }
        }
    }
    let mut excluded = tokens(exclude)?;
    for file in exclude_files {
        excluded.extend(file.targets.iter().cloned());
    }
    for token in excluded {
        match token {
            TargetToken::Range(r) => {
                builder.exclude(r);
            }
            TargetToken::Host(name) => {
                for ip in resolve(&name)? {
                    builder.exclude(AddrRange::single(ip));
                }
            }
        }
    }
    Ok(builder.build())
}

/// Splits `--exclude` values into targets and `:PORTS` port exclusions.
pub fn split_excludes(values: &[String]) -> (Vec<String>, Vec<String>) {
    values.iter().cloned().partition(|v| !v.starts_with(':'))
}

/// The ports to sweep: `-p` (or the built-in list) minus every excluded port.
pub fn ports(spec: Option<&str>, excluded: &[&str]) -> Result<PortSet> {
    let mut ports = match spec {
        Some(s) => PortSet::parse(s).with_context(|| format!("in --ports '{s}'"))?,
        None => PortSet::default_ports(),
    };
    for ex in excluded {
        let set = PortSet::parse(ex).with_context(|| format!("in excluded ports '{ex}'"))?;
        ports.remove(&set);
    }
    Ok(ports)
}
