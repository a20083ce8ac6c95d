//! A network namespace with an nftables rule that drops some ports, for the scenarios with
//! filtered targets.
//!
//! The engine runs in-process, so rather than re-executing the binary under `ip netns exec`,
//! a dedicated thread enters the namespace with `setns(2)` and runs the scenario there:
//! threads inherit the network namespace of the thread that spawns them, so the farm's
//! accept threads and the engine's shard threads started from it live in the namespace too.

use std::fs::File;
use std::io::{self, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A network namespace that exists while this value lives.
pub(crate) struct Netns {
    name: String,
}

impl Netns {
    /// Creates a namespace and brings its loopback up. Fails with a message saying why when
    /// unprivileged or when `ip` is missing.
    pub(crate) fn create() -> Result<Netns, String> {
        if !crate::sys::is_root() {
            return Err("needs root".into());
        }
        let name = format!(
            "porthawk-bench-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        // A namespace left by an earlier run with the same pid would make `add` fail.
        let _ = quiet(Command::new("ip").args(["netns", "del", &name]));
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Netns { name };
        run(Command::new("ip").args(["-n", &ns.name, "link", "set", "lo", "up"]))?;
        Ok(ns)
    }

    /// The namespace's name, as `ip netns` knows it.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Runs `f` on a new thread inside the namespace and returns its result.
    pub(crate) fn run<T, F>(&self, f: F) -> Result<T, String>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let path = format!("/var/run/netns/{}", self.name);
        let file = File::open(&path).map_err(|e| format!("cannot open {path}: {e}"))?;
        let thread = std::thread::Builder::new()
            .name("porthawk-bench-netns".into())
            .spawn(move || -> Result<T, String> {
                enter_network_namespace(&file)
                    .map_err(|e| format!("setns into the namespace failed: {e}"))?;
                drop(file);
                Ok(f())
            })
            .map_err(|e| format!("cannot spawn the namespace thread: {e}"))?;
        thread
            .join()
            .map_err(|_| "the namespace thread panicked".to_string())?
    }
}

/// Makes nftables in namespace `name` drop TCP to `ports` arriving on loopback.
pub(crate) fn drop_ports(name: &str, ports: &[u16]) -> Result<(), String> {
    if ports.is_empty() {
        return Ok(());
    }
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    let rules = format!(
        "table inet porthawk_bench {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n    iifname \"lo\" tcp dport {{ {} }} drop\n  }}\n}}\n",
        ports.join(", ")
    );
    let mut child = Command::new("ip")
        .args(["netns", "exec", name, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run ip netns exec nft: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(rules.as_bytes())
            .map_err(|e| format!("cannot pass rules to nft: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("nft failed: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = quiet(Command::new("ip").args(["netns", "del", &self.name]));
    }
}

/// Moves the calling thread (only it) into the network namespace that `file` refers to
/// (setns(2), through rustix's safe wrapper: unsafe code stays in the engine's io_uring driver).
fn enter_network_namespace(file: &File) -> io::Result<()> {
    use std::os::fd::AsFd;
    rustix::thread::move_into_link_name_space(
        file.as_fd(),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )
    .map_err(io::Error::from)
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{:?} failed: {}",
            cmd.get_args().collect::<Vec<_>>(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn quiet(cmd: &mut Command) -> io::Result<std::process::ExitStatus> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{SocketAddr, TcpStream};
    use std::time::Duration;

    #[test]
    fn dropped_ports_time_out_inside_the_namespace() {
        let ns = match Netns::create().and_then(|ns| drop_ports(ns.name(), &[19_999]).map(|()| ns))
        {
            Ok(ns) => ns,
            // Without root, `ip` or `nft` there is no namespace: a skip outside CI, a failure
            // under CI=true, which installs both and runs as root.
            Err(why) => {
                let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
                assert!(!ci, "CI=true and no network namespace: {why}");
                return;
            }
        };
        let outcome = ns
            .run(|| {
                let dropped = SocketAddr::from(([127, 0, 0, 1], 19_999));
                let closed = SocketAddr::from(([127, 0, 0, 1], 19_998));
                let t = Duration::from_millis(300);
                (
                    TcpStream::connect_timeout(&dropped, t).map_err(|e| e.kind()),
                    TcpStream::connect_timeout(&closed, t).map_err(|e| e.kind()),
                )
            })
            .unwrap();
        assert_eq!(outcome.0.unwrap_err(), io::ErrorKind::TimedOut);
        assert_eq!(outcome.1.unwrap_err(), io::ErrorKind::ConnectionRefused);
    }
}
