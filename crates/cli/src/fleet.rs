//! `porthawk fleet add-agent` and `porthawk fleet coordinator-user`: nkey users and their
//! `users` entries for nats-server.conf. The entries come from `porthawk_fleet::addagent`.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{anyhow, Context, Result};
use porthawk_core::FleetName;
use porthawk_fleet::addagent::{
    agent_users_entry, coordinator_users_entry, generate_user, UserKey,
};

use crate::args::{FleetArgs, FleetCommand};

pub fn run(args: FleetArgs) -> Result<ExitCode> {
    match args.command {
        FleetCommand::AddAgent(a) => {
            let name = FleetName::new("agent", &a.name).map_err(|e| anyhow!("{e}"))?;
            let pools = a
                .pools
                .iter()
                .map(|p| FleetName::new("pool", p).map_err(|e| anyhow!("--pool: {e}")))
                .collect::<Result<Vec<_>>>()?;
            let key = generate_user().map_err(|e| anyhow!(e))?;
            let path = a.out.join(format!("{name}.nk"));
            write_seed(&path, &key)?;
            println!(
                "# seed written to {} (the agent's --nkey; keep it secret)",
                path.display()
            );
            print!("{}", agent_users_entry(&key.public, &name, &pools));
        }
        FleetCommand::CoordinatorUser(a) => {
            let key = generate_user().map_err(|e| anyhow!(e))?;
            let path = a.out.join("coordinator.nk");
            write_seed(&path, &key)?;
            println!(
                "# seed written to {} ([fleet] nkey; keep it secret)",
                path.display()
            );
            print!("{}", coordinator_users_entry(&key.public));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes the seed with mode 0600; an existing file is never overwritten.
fn write_seed(path: &Path, key: &UserKey) -> Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| {
            format!(
                "cannot create the seed file {} (an existing one is never overwritten)",
                path.display()
            )
        })?;
    writeln!(file, "{}", key.seed)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write the seed file {}", path.display()))
}
