//! Filtered and unreachable ports, made by nftables rules inside a private network namespace.
//!
//! These tests need root, `ip` and `nft`. Where a namespace cannot be created (no privileges, a
//! container without `CAP_SYS_ADMIN`) they say why and return.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::util::{
    assert_success, check_summary, index_records, parse_jsonl, require, require_that, run_command,
    stderr, stdout, which, Helper, Kind, Record, BIN, RUN_TIMEOUT,
};

/// Dropped by the input hook: no answer, so `filtered` after every try.
const DROPPED: [u16; 2] = [1001, 1002];
/// Rejected with ICMP host unreachable: `unreachable`, errno `EHOSTUNREACH`.
const REJECTED: u16 = 1003;
/// Nothing listens and nothing filters: `closed`.
const CLOSED: u16 = 1004;

/// What a sweep said about each port: state and errno.
type Outcome = BTreeSet<(u16, String, Option<String>)>;

const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// A network namespace that is deleted on drop, whatever happened in between.
struct Namespace {
    name: String,
    ip: PathBuf,
}

impl Namespace {
    /// Creates `ph-test-<pid>-<n>`.
    fn create(ip: PathBuf) -> Result<Namespace, String> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "ph-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut cmd = Command::new(&ip);
        cmd.args(["netns", "add", &name]);
        let out = run_command(cmd, None, SETUP_TIMEOUT);
        if !out.status.success() {
            return Err(format!("ip netns add {name}: {}", stderr(&out).trim()));
        }
        Ok(Namespace { name, ip })
    }

    /// A new namespace with its loopback up; `None` (a failure under CI, see [`require`])
    /// without `ip` or the privilege to make one.
    fn with_loopback() -> Option<Namespace> {
        let Some(ip) = which("ip") else {
            let _ = require("`ip` (iproute2)", Some("not found".into()));
            return None;
        };
        let ns = match Namespace::create(ip) {
            Ok(ns) => ns,
            Err(why) => {
                let _ = require("a network namespace (root)", Some(why));
                return None;
            }
        };
        let lo = ns.run("ip", &["link", "set", "lo", "up"], None);
        assert!(
            lo.status.success(),
            "ip link set lo up in {}: {}",
            ns.name,
            stderr(&lo)
        );
        Some(ns)
    }

    /// `ip netns exec <name> program args...`
    fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.ip);
        cmd.args(["netns", "exec", &self.name, program]).args(args);
        cmd
    }

    fn run(&self, program: &str, args: &[&str], input: Option<&str>) -> Output {
        run_command(self.command(program, args), input, SETUP_TIMEOUT)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let mut cmd = Command::new(&self.ip);
        cmd.args(["netns", "del", &self.name]);
        let out = run_command(cmd, None, SETUP_TIMEOUT);
        if !out.status.success() {
            eprintln!(
                "warning: could not delete network namespace {}: {}",
                self.name,
                stderr(&out).trim()
            );
        }
    }
}

/// The ruleset: drop [`DROPPED`], reject [`REJECTED`] with host unreachable (ICMP for IPv4,
/// ICMPv6 address unreachable for IPv6, which the kernel also maps to `EHOSTUNREACH`).
fn ruleset() -> String {
    format!(
        "table inet filter {{\n\
         \tchain input {{\n\
         \t\ttype filter hook input priority 0; policy accept;\n\
         \t\ttcp dport {{ {}, {} }} drop\n\
         \t\tmeta nfproto ipv4 tcp dport {REJECTED} reject with icmp type host-unreachable\n\
         \t\tmeta nfproto ipv6 tcp dport {REJECTED} reject with icmpv6 type addr-unreachable\n\
         \t}}\n\
         }}\n",
        DROPPED[0], DROPPED[1]
    )
}

/// Sets up a namespace with the ruleset and sweeps `target` in it with each backend.
fn sweep_in_namespace(target: IpAddr) {
    if !require_that("`nft` (nftables)", which("nft").is_some(), "not found") {
        return;
    }
    let Some(ns) = Namespace::with_loopback() else {
        return;
    };
    if target.is_ipv6() {
        let addrs = ns.run("ip", &["-6", "addr", "show", "dev", "lo"], None);
        let has_v6 = stdout(&addrs).contains("::1/128");
        if !require_that("::1 in the namespace", has_v6, "IPv6 disabled?") {
            return;
        }
    }
    let nft = ns.run("nft", &["-f", "-"], Some(&ruleset()));
    if !nft.status.success() {
        let why = format!("cannot load one: {}", stderr(&nft).trim());
        let _ = require("an nftables ruleset in the namespace", Some(why));
        return;
    }

    // An open port needs a listener inside the namespace; the python3 helper provides one where
    // python3 exists (nc is not assumed). It is stopped when `open` drops, before the namespace.
    let prefix = ["ip", "netns", "exec", ns.name.as_str()];
    let open = match Helper::spawn(&prefix, Kind::Accept, &[target]) {
        Ok((helper, ports)) => Some((helper, ports[0])),
        Err(why) => {
            // Outside CI the rest of the test still runs without the open port.
            let _ = require("an open port in the namespace (python3)", Some(why));
            None
        }
    };

    let mut ports = vec![DROPPED[0], DROPPED[1], REJECTED, CLOSED];
    ports.extend(open.as_ref().map(|(_, p)| *p));
    let ports_text: Vec<String> = ports.iter().map(u16::to_string).collect();
    let ports_arg = ports_text.join(",");
    let target_arg = target.to_string();

    // Every backend and io_uring fd path: unanswered connects end by each one's own
    // timeout machinery (a deadline and a disconnect on io_uring), retried on the same socket.
    let mut results: Vec<(String, Outcome)> = Vec::new();
    for (backend, fd_path) in [("epoll", "plain"), ("uring", "direct"), ("uring", "plain")] {
        let args = [
            "scan",
            &target_arg,
            "-p",
            &ports_arg,
            "--timeout",
            "300ms",
            "--tries",
            "2",
            "--all",
            "--format",
            "jsonl",
            "--backend",
            backend,
            "--fd-path",
            fd_path,
        ];
        let out = run_command(ns.command(BIN, &args), None, RUN_TIMEOUT);
        if backend == "uring" && crate::util::uring_unavailable(&out) {
            let _ = require("io_uring", Some(stderr(&out).trim().to_string()));
            continue;
        }
        assert_success(&args, &out);
        let err = stderr(&out);
        assert!(
            backend == "epoll" || err.contains(&format!("with {fd_path} fds")),
            "{backend}/{fd_path}: {err}"
        );
        let records = parse_jsonl(&stdout(&out));
        let want_backend = if backend == "uring" {
            "io_uring"
        } else {
            "epoll"
        };
        check_summary(&stderr(&out), &records, Some(want_backend));
        check_namespace_records(
            backend,
            &records,
            target,
            &ports,
            open.as_ref().map(|(_, p)| *p),
        );
        results.push((
            format!("{backend}/{fd_path}"),
            records
                .iter()
                .map(|r| (r.port, r.state.clone(), r.str("errno").map(str::to_string)))
                .collect(),
        ));
    }
    for pair in results.windows(2) {
        let ((a, ra), (b, rb)) = (&pair[0], &pair[1]);
        assert_eq!(ra, rb, "{a} and {b} disagree");
    }
    drop(open);
    drop(ns);
}

fn check_namespace_records(
    backend: &str,
    records: &[Record],
    target: IpAddr,
    ports: &[u16],
    open: Option<u16>,
) {
    let index = index_records(records);
    assert_eq!(
        records.len(),
        ports.len(),
        "--backend {backend}: one record per port: {records:?}"
    );
    let by_port: BTreeMap<u16, &Record> = index
        .iter()
        .map(|((ip, port), r)| {
            assert_eq!(*ip, target, "{:?}", r.fields);
            (*port, *r)
        })
        .collect();
    let get = |port: u16| -> &Record {
        by_port
            .get(&port)
            .unwrap_or_else(|| panic!("--backend {backend}: port {port} not reported: {records:?}"))
    };
    for port in DROPPED {
        let r = get(port);
        assert_eq!(
            r.state, "filtered",
            "--backend {backend}: dropped port {port}: {:?}",
            r.fields
        );
        assert_eq!(
            r.uint("tries"),
            Some(2),
            "--backend {backend}: dropped port {port}: {:?}",
            r.fields
        );
    }
    let r = get(REJECTED);
    assert_eq!(
        r.state, "unreachable",
        "--backend {backend}: rejected port: {:?}",
        r.fields
    );
    assert_eq!(
        r.str("errno"),
        Some("EHOSTUNREACH"),
        "--backend {backend}: rejected port: {:?}",
        r.fields
    );
    let r = get(CLOSED);
    assert_eq!(
        r.state, "closed",
        "--backend {backend}: closed port: {:?}",
        r.fields
    );
    assert!(
        r.str("errno").is_none(),
        "--backend {backend}: closed port has an errno: {:?}",
        r.fields
    );
    if let Some(port) = open {
        let r = get(port);
        assert_eq!(
            r.state, "open",
            "--backend {backend}: listening port: {:?}",
            r.fields
        );
        assert_eq!(
            r.uint("tries"),
            Some(1),
            "--backend {backend}: listening port: {:?}",
            r.fields
        );
    }
}

#[test]
fn netns_dropped_ports_are_filtered_and_rejected_ports_unreachable() {
    sweep_in_namespace(IpAddr::V4(Ipv4Addr::LOCALHOST));
}

#[test]
fn netns_ipv6_dropped_ports_are_filtered_and_rejected_ports_unreachable() {
    sweep_in_namespace(IpAddr::V6(Ipv6Addr::LOCALHOST));
}

/// Issue 15 item 2: a connect that can only be a self-connect (inside a namespace whose
/// ephemeral range is the single port probed, nothing listening) is `closed`, never `open`,
/// on io_uring with direct and with plain descriptors and on epoll. On the direct path the
/// socket has no descriptor, so this checks that its own address is still read.
#[test]
fn netns_forced_self_connect_is_closed_on_every_fd_path() {
    let Some(ns) = Namespace::with_loopback() else {
        return;
    };
    let range = ns.run(
        "sh",
        &[
            "-c",
            "echo '40000 40000' > /proc/sys/net/ipv4/ip_local_port_range",
        ],
        None,
    );
    assert!(
        range.status.success(),
        "ip_local_port_range: {}",
        stderr(&range)
    );
    for (backend, fd_path) in [("uring", "direct"), ("uring", "plain"), ("epoll", "plain")] {
        let args = [
            "scan",
            "127.0.0.1",
            "-p",
            "40000",
            "--all",
            "--format",
            "jsonl",
            "--backend",
            backend,
            "--fd-path",
            fd_path,
        ];
        let out = run_command(ns.command(BIN, &args), None, RUN_TIMEOUT);
        let err = stderr(&out);
        if backend == "uring" && !out.status.success() && err.contains("unavailable") {
            let _ = require(&format!("io_uring with {fd_path} descriptors"), Some(err));
            continue;
        }
        assert_success(&args, &out);
        let records = parse_jsonl(&stdout(&out));
        assert_eq!(records.len(), 1, "{backend}/{fd_path}: {}", stdout(&out));
        assert_eq!(
            records[0].state, "closed",
            "{backend}/{fd_path}: a self-connect reported as {:?}",
            records[0].fields
        );
        assert!(
            err.contains(&format!("with {fd_path} fds")) || backend == "epoll",
            "{backend}/{fd_path}: {err}"
        );
    }
}
