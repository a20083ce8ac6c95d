//! Sweeps against listener farms on private loopback addresses.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::process::Output;
use std::time::{Duration, Instant};

use crate::util::{
    assert_success, check_open_set, check_summary, index_records, loopback_lock, parse_csv,
    parse_jsonl, ports_arg, require, run, run_for, stderr, stdout, test_hosts, test_net, triples,
    uring_unavailable, with_state, Farm, Kind, ListenSnapshot, Record, ResultLine, TempDir,
};
use porthawk_core::PortState;

/// Closed ports probed next to the farm's. Above the default ephemeral range (32768-60999), so
/// unlikely to be in use; anything that does listen there is taken from `/proc` anyway.
const EXTRA: &str = "61000-61299";

fn extra_ports() -> BTreeSet<u16> {
    (61000..=61299).collect()
}

/// Runs `porthawk` and parses its jsonl output, requiring exit 0.
fn sweep(args: &[String]) -> (Vec<Record>, Output) {
    sweep_for(args, crate::util::RUN_TIMEOUT)
}

fn sweep_for(args: &[String], timeout: Duration) -> (Vec<Record>, Output) {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_for(&args, timeout);
    assert_success(&args, &out);
    (parse_jsonl(&stdout(&out)), out)
}

/// Like [`sweep`] with `--backend backend`, or `None` (after saying so) when the backend is
/// io_uring and the kernel or a seccomp profile does not offer it.
fn sweep_with_backend(args: &[String], backend: &str) -> Option<(Vec<Record>, Output)> {
    let mut args = args.to_vec();
    args.extend(["--backend".to_string(), backend.to_string()]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(&argv);
    if backend == "uring" && uring_unavailable(&out) {
        let why = format!("porthawk says it is unavailable: {}", stderr(&out).trim());
        let _ = require("io_uring", Some(why));
        return None;
    }
    assert_success(&argv, &out);
    Some((parse_jsonl(&stdout(&out)), out))
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Checks an `--all` sweep of `hosts` × `ports`: each pair reported exactly once and nothing
/// else, states only open or closed, and the open ones exactly the ground truth.
fn check_full_sweep(
    records: &[Record],
    hosts: &[IpAddr],
    ports: &BTreeSet<u16>,
    own: &BTreeSet<(IpAddr, u16)>,
    before: &ListenSnapshot,
    after: &ListenSnapshot,
) {
    let index = index_records(records);
    for r in records {
        assert!(
            hosts.contains(&r.ip) && ports.contains(&r.port),
            "{}:{} was not asked for: {:?}",
            r.ip,
            r.port,
            r.fields
        );
        assert!(
            r.state == "open" || r.state == "closed",
            "loopback probe neither open nor closed: {:?}",
            r.fields
        );
        assert!(
            r.uint("tries").is_some_and(|t| t >= 1),
            "tries missing or 0: {:?}",
            r.fields
        );
    }
    let missing: Vec<(IpAddr, u16)> = hosts
        .iter()
        .flat_map(|&h| ports.iter().map(move |&p| (h, p)))
        .filter(|k| !index.contains_key(k))
        .take(20)
        .collect();
    assert!(missing.is_empty(), "probes never reported: {missing:?}");
    assert_eq!(records.len(), hosts.len() * ports.len(), "hosts × ports");
    let own_not_open: Vec<String> = own
        .iter()
        .filter_map(|k| index.get(k).filter(|r| r.state != "open"))
        .map(|r| format!("{}:{} {:?}", r.ip, r.port, r.fields))
        .collect();
    assert!(
        own_not_open.is_empty(),
        "the test's own listeners not reported open:\n{}",
        own_not_open.join("\n")
    );
    check_open_set(
        &with_state(records, "open"),
        own,
        hosts,
        ports,
        before,
        after,
    );
}

/// A standard farm on four private hosts, and the ports to probe: the farm's plus [`EXTRA`].
struct FarmSweep {
    hosts: Vec<IpAddr>,
    farm: Farm,
    ports: BTreeSet<u16>,
    ports_arg: String,
}

impl FarmSweep {
    fn new(name: &str) -> FarmSweep {
        let hosts = test_hosts(name, 4);
        let farm = Farm::standard(&hosts);
        assert_eq!(farm.listeners().len(), 12);
        let mut ports = farm.ports();
        ports.extend(extra_ports());
        let ports_arg = ports_arg(&farm.ports(), EXTRA);
        FarmSweep {
            hosts,
            farm,
            ports,
            ports_arg,
        }
    }

    fn host_args(&self) -> Vec<String> {
        self.hosts.iter().map(IpAddr::to_string).collect()
    }

    /// `scan <hosts> -p <ports> --all --format jsonl`.
    fn args(&self, extra: &[&str]) -> Vec<String> {
        let mut args = vec!["scan".to_string()];
        args.extend(self.host_args());
        args.extend(strings(&[
            "-p",
            &self.ports_arg,
            "--all",
            "--format",
            "jsonl",
        ]));
        args.extend(strings(extra));
        args
    }

    fn check(&self, records: &[Record], before: &ListenSnapshot, after: &ListenSnapshot) {
        check_full_sweep(
            records,
            &self.hosts,
            &self.ports,
            &self.farm.open_set(),
            before,
            after,
        );
    }
}

#[test]
fn sweep_reports_farm_ports_open_and_every_probe_once() {
    let fs = FarmSweep::new("sweep_reports_farm_ports_open_and_every_probe_once");
    // The hosts as nmap's short range, `127.a.b.1-4`.
    let mut args = strings(&["scan", &format!("{}-4", fs.hosts[0])]);
    args.extend(strings(&[
        "-p",
        &fs.ports_arg,
        "--all",
        "--format",
        "jsonl",
    ]));
    let before = ListenSnapshot::take();
    let (records, out) = sweep(&args);
    let after = ListenSnapshot::take();
    fs.check(&records, &before, &after);
    check_summary(&stderr(&out), &records, None);
    for r in records.iter().filter(|r| r.state == "open") {
        assert!(
            r.uint("rtt_us").is_some(),
            "open without rtt_us: {:?}",
            r.fields
        );
        assert!(
            r.str("host").is_none(),
            "host given by address has a name: {:?}",
            r.fields
        );
    }
}

#[test]
fn uring_and_epoll_backends_agree() {
    let fs = FarmSweep::new("uring_and_epoll_backends_agree");
    // The hosts as a full range, `127.a.b.1-127.a.b.4`.
    let mut args = strings(&["scan", &format!("{}-{}", fs.hosts[0], fs.hosts[3])]);
    args.extend(strings(&[
        "-p",
        &fs.ports_arg,
        "--all",
        "--format",
        "jsonl",
    ]));
    let mut results = Vec::new();
    for (backend, name) in [("epoll", "epoll"), ("uring", "io_uring")] {
        let before = ListenSnapshot::take();
        let Some((records, out)) = sweep_with_backend(&args, backend) else {
            continue;
        };
        let after = ListenSnapshot::take();
        fs.check(&records, &before, &after);
        check_summary(&stderr(&out), &records, Some(name));
        results.push((backend, triples(&records)));
    }
    if let [(a, ra), (b, rb)] = results.as_slice() {
        let diff: Vec<_> = ra.symmetric_difference(rb).take(20).collect();
        assert!(diff.is_empty(), "{a} and {b} disagree on: {diff:?}");
    }
}

/// Issue 15 item 2: on io_uring, sockets held as direct descriptors inside the ring and as
/// plain descriptors give the same results, both exactly the farm's ground truth, and the
/// summary says which path ran.
#[test]
fn direct_and_plain_descriptors_agree() {
    let fs = FarmSweep::new("direct_and_plain_descriptors_agree");
    let mut results = Vec::new();
    for path in ["direct", "plain"] {
        let args = fs.args(&["--backend", "uring", "--fd-path", path]);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let before = ListenSnapshot::take();
        let out = run(&argv);
        let after = ListenSnapshot::take();
        let err = stderr(&out);
        if uring_unavailable(&out) || err.contains("direct descriptors are unavailable") {
            let _ = require(
                &format!("io_uring with {path} descriptors"),
                Some(err.trim().to_string()),
            );
            continue;
        }
        assert_success(&argv, &out);
        let records = parse_jsonl(&stdout(&out));
        fs.check(&records, &before, &after);
        check_summary(&err, &records, Some("io_uring"));
        let line = crate::util::summary_line(&err);
        assert!(
            line.contains(&format!("backend io_uring with {path} fds")),
            "the summary does not name the {path} fd path: {line}"
        );
        results.push((path, triples(&records)));
    }
    if let [(a, ra), (b, rb)] = results.as_slice() {
        let diff: Vec<_> = ra.symmetric_difference(rb).take(20).collect();
        assert!(
            diff.is_empty(),
            "{a} and {b} descriptors disagree on: {diff:?}"
        );
    }
}

#[test]
fn shard_count_does_not_change_results() {
    let fs = FarmSweep::new("shard_count_does_not_change_results");
    let mut results = Vec::new();
    for shards in ["1", "3"] {
        let before = ListenSnapshot::take();
        let (records, out) = sweep(&fs.args(&["--shards", shards, "--seed", "7"]));
        let after = ListenSnapshot::take();
        fs.check(&records, &before, &after);
        check_summary(&stderr(&out), &records, None);
        results.push(triples(&records));
    }
    let diff: Vec<_> = results[0]
        .symmetric_difference(&results[1])
        .take(20)
        .collect();
    assert!(
        diff.is_empty(),
        "--shards 1 and --shards 3 disagree on: {diff:?}"
    );
}

#[test]
fn cidr_target_covers_every_address_of_the_block() {
    let [a, b] = test_net("cidr_target_covers_every_address_of_the_block");
    let hosts: Vec<IpAddr> = (0..4)
        .map(|d| IpAddr::V4(Ipv4Addr::new(127, a, b, d)))
        .collect();
    let farm = Farm::new(&[(hosts[0], Kind::Accept), (hosts[3], Kind::Silent)]);
    let mut ports = farm.ports();
    ports.extend(61000..=61049);
    let args = strings(&[
        "scan",
        &format!("127.{a}.{b}.0/30"),
        "-p",
        &ports_arg(&farm.ports(), "61000-61049"),
        "--all",
        "--format",
        "jsonl",
    ]);
    let before = ListenSnapshot::take();
    let (records, _) = sweep(&args);
    let after = ListenSnapshot::take();
    check_full_sweep(&records, &hosts, &ports, &farm.open_set(), &before, &after);
}

#[test]
fn default_output_lists_only_open_ports() {
    let fs = FarmSweep::new("default_output_lists_only_open_ports");
    let mut args = vec!["scan".to_string()];
    args.extend(fs.host_args());
    args.extend(strings(&["-p", &fs.ports_arg, "--format", "jsonl"]));
    let before = ListenSnapshot::take();
    let (records, out) = sweep(&args);
    let after = ListenSnapshot::take();
    let index = index_records(&records);
    assert!(
        records.iter().all(|r| r.state == "open"),
        "without --all only open ports are printed"
    );
    assert_eq!(index.len(), records.len());
    check_open_set(
        &with_state(&records, "open"),
        &fs.farm.open_set(),
        &fs.hosts,
        &fs.ports,
        &before,
        &after,
    );
    // The summary still counts every probe, open or not.
    let line = crate::util::summary_line(&stderr(&out));
    let total: u64 = ["open", "closed", "filtered", "unreachable", "error"]
        .iter()
        .map(|s| crate::util::summary_count(&line, s).unwrap_or(0))
        .sum();
    assert_eq!(total, (fs.hosts.len() * fs.ports.len()) as u64, "{line}");
}

/// Runs a non-jsonl sweep of the farm (open ports only) and returns its stdout.
fn sweep_format(fs: &FarmSweep, format: &str) -> (String, ListenSnapshot, ListenSnapshot) {
    let mut args = vec!["scan".to_string()];
    args.extend(fs.host_args());
    args.extend(strings(&["-p", &fs.ports_arg, "--format", format]));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let before = ListenSnapshot::take();
    let out = run(&argv);
    let after = ListenSnapshot::take();
    assert_success(&argv, &out);
    (stdout(&out), before, after)
}

#[test]
fn csv_output_lists_the_open_ports() {
    let fs = FarmSweep::new("csv_output_lists_the_open_ports");
    let (text, before, after) = sweep_format(&fs, "csv");
    let mut found = BTreeSet::new();
    for line in parse_csv(&text) {
        assert_eq!(line.state, PortState::Open, "csv row: {line:?}");
        assert!(line.tries >= 1, "csv tries: {line:?}");
        assert!(
            found.insert((line.ip, line.port)),
            "csv row twice: {line:?}"
        );
    }
    check_open_set(
        &found,
        &fs.farm.open_set(),
        &fs.hosts,
        &fs.ports,
        &before,
        &after,
    );
}

#[test]
fn grep_output_lists_the_open_ports() {
    let fs = FarmSweep::new("grep_output_lists_the_open_ports");
    let (text, before, after) = sweep_format(&fs, "grep");
    let mut found = BTreeSet::new();
    for line in text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
    {
        let (host, ports) = line
            .split_once('\t')
            .unwrap_or_else(|| panic!("grep line without a tab: {line:?}"));
        let host = host
            .strip_prefix("Host: ")
            .unwrap_or_else(|| panic!("grep line not starting with 'Host: ': {line:?}"));
        let (ip, name) = host
            .split_once(' ')
            .unwrap_or_else(|| panic!("grep host without '(name)': {line:?}"));
        let ip: IpAddr = ip.parse().unwrap_or_else(|_| panic!("grep ip: {line:?}"));
        assert!(
            name.starts_with('(') && name.ends_with(')'),
            "grep name not in parentheses: {line:?}"
        );
        let ports = ports
            .strip_prefix("Ports: ")
            .unwrap_or_else(|| panic!("grep line without 'Ports: ': {line:?}"));
        let fields: Vec<&str> = ports.split('/').collect();
        // nmap's -oG port entry: port/state/protocol/owner/service/rpc/version/
        assert_eq!(ports.matches('/').count(), 7, "grep port entry: {line:?}");
        let port: u16 = fields[0]
            .parse()
            .unwrap_or_else(|_| panic!("grep port: {line:?}"));
        assert_eq!(&fields[1..3], ["open", "tcp"], "grep port entry: {line:?}");
        assert!(found.insert((ip, port)), "grep line twice: {line:?}");
    }
    check_open_set(
        &found,
        &fs.farm.open_set(),
        &fs.hosts,
        &fs.ports,
        &before,
        &after,
    );
}

#[test]
fn table_output_lists_open_ports_sorted_by_ip_then_port() {
    let fs = FarmSweep::new("table_output_lists_open_ports_sorted_by_ip_then_port");
    let (text, before, after) = sweep_format(&fs, "table");
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header = lines.next().unwrap_or_default();
    assert!(header.starts_with("HOST"), "table header: {header:?}");
    let mut rows: Vec<(IpAddr, u16)> = Vec::new();
    for line in lines {
        let words: Vec<&str> = line.split_whitespace().collect();
        let clean = |w: &str| {
            w.trim_matches(|c| c == '(' || c == ')' || c == '[' || c == ']' || c == ',')
                .to_string()
        };
        let Some(at) = words
            .iter()
            .position(|w| clean(w).parse::<IpAddr>().is_ok())
        else {
            continue; // a rule or a footer
        };
        let ip: IpAddr = clean(words[at])
            .parse()
            .unwrap_or_else(|_| panic!("{line}"));
        let port: u16 = words[at + 1..]
            .iter()
            .find_map(|w| w.trim_end_matches("/tcp").parse().ok())
            .unwrap_or_else(|| panic!("table row without a port: {line:?}"));
        assert!(line.contains("open"), "table row not open: {line:?}");
        rows.push((ip, port));
    }
    let mut sorted = rows.clone();
    sorted.sort();
    assert_eq!(rows, sorted, "table rows not sorted by ip then port");
    let found: BTreeSet<(IpAddr, u16)> = rows.iter().copied().collect();
    assert_eq!(found.len(), rows.len(), "table row repeated");
    check_open_set(
        &found,
        &fs.farm.open_set(),
        &fs.hosts,
        &fs.ports,
        &before,
        &after,
    );
}

#[test]
fn output_file_receives_the_results() {
    let fs = FarmSweep::new("output_file_receives_the_results");
    let dir = TempDir::new("output_file");
    let file = dir.path().join("out.jsonl");
    let file_arg = file.to_string_lossy().into_owned();
    let before = ListenSnapshot::take();
    let (stdout_records, _) = sweep(&fs.args(&["-o", &file_arg]));
    let after = ListenSnapshot::take();
    assert!(
        stdout_records.is_empty(),
        "with -o the results go to the file, not stdout"
    );
    let text = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("-o {} not written: {e}", file.display()));
    fs.check(&parse_jsonl(&text), &before, &after);
}

#[test]
fn targets_from_file_skip_comments_and_blank_lines() {
    let fs = FarmSweep::new("targets_from_file_skip_comments_and_blank_lines");
    let dir = TempDir::new("targets_from_file");
    let list = dir.write(
        "targets.txt",
        &format!(
            "# farm hosts\n\n{}\n   {}   # trailing comment\n# {}\n",
            fs.hosts[0], fs.hosts[2], fs.hosts[1]
        ),
    );
    let args = strings(&[
        "scan",
        &format!("@{}", list.display()),
        "-p",
        &fs.ports_arg,
        "--all",
        "--format",
        "jsonl",
    ]);
    let before = ListenSnapshot::take();
    let (records, _) = sweep(&args);
    let after = ListenSnapshot::take();
    let hosts = [fs.hosts[0], fs.hosts[2]];
    let own = fs
        .farm
        .open_set()
        .into_iter()
        .filter(|(ip, _)| hosts.contains(ip))
        .collect();
    check_full_sweep(&records, &hosts, &fs.ports, &own, &before, &after);
}

/// The farm port of `kind` on `host`.
fn farm_port(farm: &Farm, host: IpAddr, kind: Kind) -> u16 {
    farm.listeners()
        .iter()
        .find(|(a, k)| a.ip() == host && *k == kind)
        .map(|(a, _)| a.port())
        .expect("farm has a listener of each kind on each host")
}

/// Sweeps the farm with `exclude` arguments and checks that `gone_hosts` and `gone_ports` never
/// appear while the rest is swept completely.
fn check_exclusion(fs: &FarmSweep, exclude: &[&str], gone_hosts: &[IpAddr], gone_ports: &[u16]) {
    let mut args = strings(&["scan", &format!("{}-4", fs.hosts[0])]);
    args.extend(strings(&[
        "-p",
        &fs.ports_arg,
        "--all",
        "--format",
        "jsonl",
    ]));
    args.extend(strings(exclude));
    let before = ListenSnapshot::take();
    let (records, _) = sweep(&args);
    let after = ListenSnapshot::take();
    for r in &records {
        assert!(
            !gone_hosts.contains(&r.ip) && !gone_ports.contains(&r.port),
            "excluded target reported: {:?}",
            r.fields
        );
    }
    let hosts: Vec<IpAddr> = fs
        .hosts
        .iter()
        .copied()
        .filter(|h| !gone_hosts.contains(h))
        .collect();
    let ports: BTreeSet<u16> = fs
        .ports
        .iter()
        .copied()
        .filter(|p| !gone_ports.contains(p))
        .collect();
    let own = fs
        .farm
        .open_set()
        .into_iter()
        .filter(|(ip, p)| hosts.contains(ip) && ports.contains(p))
        .collect();
    check_full_sweep(&records, &hosts, &ports, &own, &before, &after);
}

#[test]
fn excluded_hosts_and_port_tokens_never_appear() {
    let fs = FarmSweep::new("excluded_hosts_and_port_tokens_never_appear");
    let port = farm_port(&fs.farm, fs.hosts[0], Kind::Accept);
    let host = fs.hosts[1].to_string();
    let port_token = format!(":{port}");
    check_exclusion(
        &fs,
        &["--exclude", &host, &port_token],
        &[fs.hosts[1]],
        &[port],
    );
}

#[test]
fn exclude_file_and_exclude_ports_never_appear() {
    let fs = FarmSweep::new("exclude_file_and_exclude_ports_never_appear");
    let dir = TempDir::new("exclude_file");
    let file = dir.write(
        "exclude.txt",
        &format!("# not this one\n{}\n\n", fs.hosts[2]),
    );
    let p1 = farm_port(&fs.farm, fs.hosts[3], Kind::Silent);
    let p2 = farm_port(&fs.farm, fs.hosts[0], Kind::Reset);
    check_exclusion(
        &fs,
        &[
            "--exclude-file",
            &file.to_string_lossy(),
            "--exclude-ports",
            &format!("{p1},{p2}"),
        ],
        &[fs.hosts[2]],
        &[p1, p2],
    );
}

#[test]
fn localhost_results_carry_the_host_name() {
    let _lock = loopback_lock();
    let farm = Farm::new(&[(IpAddr::V4(Ipv4Addr::LOCALHOST), Kind::Accept)]);
    let ports: BTreeSet<u16> = farm.ports().into_iter().chain(61000..=61019).collect();
    let args = strings(&[
        "scan",
        "localhost",
        "-p",
        &ports_arg(&farm.ports(), "61000-61019"),
        "--all",
        "--format",
        "jsonl",
    ]);
    let before = ListenSnapshot::take();
    let (records, _) = sweep(&args);
    let after = ListenSnapshot::take();
    let loopbacks = [
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ];
    let mut hosts: Vec<IpAddr> = records.iter().map(|r| r.ip).collect();
    hosts.sort();
    hosts.dedup();
    assert!(
        hosts.contains(&loopbacks[0]),
        "localhost should resolve to 127.0.0.1; swept {hosts:?}"
    );
    assert!(
        hosts.iter().all(|h| loopbacks.contains(h)),
        "localhost swept non-loopback addresses: {hosts:?}"
    );
    for r in &records {
        assert_eq!(r.str("host"), Some("localhost"), "{:?}", r.fields);
    }
    check_full_sweep(&records, &hosts, &ports, &farm.open_set(), &before, &after);
}

#[test]
fn ipv6_loopback_listeners_are_found() {
    let _lock = loopback_lock();
    let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
    if let Err(e) = TcpListener::bind(SocketAddr::new(v6, 0)) {
        let _ = require("IPv6 loopback", Some(format!("cannot bind [::1]:0 ({e})")));
        return;
    }
    let farm = Farm::standard(&[v6]);
    let mut ports = farm.ports();
    ports.extend(61000..=61099);
    let args = strings(&[
        "scan",
        "::1",
        "-p",
        &ports_arg(&farm.ports(), "61000-61099"),
        "--all",
        "--format",
        "jsonl",
    ]);
    let before = ListenSnapshot::take();
    let (records, out) = sweep(&args);
    let after = ListenSnapshot::take();
    check_full_sweep(&records, &[v6], &ports, &farm.open_set(), &before, &after);
    check_summary(&stderr(&out), &records, None);
}

/// On loopback, a connect to a port in the ephemeral range can pick that very port as its source
/// and connect to itself (TCP simultaneous open). The design says that is `closed`, never `open`.
#[test]
fn self_connect_is_never_open() {
    let _lock = loopback_lock();
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .expect("read ip_local_port_range");
    let bounds: Vec<u16> = range
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let [lo, hi] = bounds[..] else {
        panic!("ip_local_port_range: {range:?}");
    };
    let host = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let ports: BTreeSet<u16> = (lo..=hi).collect();
    let args = strings(&[
        "scan",
        "127.0.0.1",
        "-p",
        &format!("{lo}-{hi}"),
        "--all",
        "--format",
        "jsonl",
        "--timeout",
        "500ms",
    ]);
    let before = ListenSnapshot::take();
    let (records, _) = sweep_for(&args, Duration::from_secs(300));
    let after = ListenSnapshot::take();
    check_full_sweep(&records, &[host], &ports, &BTreeSet::new(), &before, &after);
}

#[test]
fn rate_cap_still_reports_every_probe() {
    let hosts = test_hosts("rate_cap_still_reports_every_probe", 1);
    let ports: BTreeSet<u16> = (20001..=23000).collect();
    let args = strings(&[
        "scan",
        &hosts[0].to_string(),
        "-p",
        "20001-23000",
        "--rate",
        "2000",
        "--all",
        "--format",
        "jsonl",
    ]);
    let before = ListenSnapshot::take();
    let started = Instant::now();
    let (records, _) = sweep(&args);
    let elapsed = started.elapsed();
    let after = ListenSnapshot::take();
    check_full_sweep(&records, &hosts, &ports, &BTreeSet::new(), &before, &after);
    // 3000 probes at 2000/s take 1.5 s; even a full second of initial burst leaves 0.5 s.
    assert!(
        elapsed >= Duration::from_millis(500),
        "--rate 2000 swept 3000 ports in {elapsed:?}: the cap does not act"
    );
}

#[test]
fn all_ports_sweep_reports_each_port_once() {
    let hosts = test_hosts("all_ports_sweep_reports_each_port_once", 1);
    let farm = Farm::standard(&hosts);
    let ports: BTreeSet<u16> = (1..=65535).collect();
    let args = strings(&[
        "scan",
        &hosts[0].to_string(),
        "-p",
        "all",
        "--all",
        "--format",
        "jsonl",
    ]);
    let before = ListenSnapshot::take();
    let (records, _) = sweep_for(&args, Duration::from_secs(300));
    let after = ListenSnapshot::take();
    check_full_sweep(&records, &hosts, &ports, &farm.open_set(), &before, &after);
}

#[test]
fn ctrl_c_stops_the_sweep_and_still_reports_what_was_found() {
    let hosts = test_hosts("ctrl_c_stops_the_sweep_and_still_reports_what_was_found", 1);
    let farm = Farm::new(&[(hosts[0], Kind::Accept)]);
    let open_port = farm.listeners()[0].0.port();
    // The open port first, then 20,000 closed ones at 1,000 probes/s: 20 s if not stopped.
    let ports = format!("{open_port},40000-59999");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_porthawk"))
        .args([
            "scan",
            &hosts[0].to_string(),
            "-p",
            &ports,
            "--rate",
            "1000",
            "--seed",
            "1",
            "--all",
            "--format",
            "jsonl",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start porthawk");
    let pid = child.id().to_string();
    // Stop it after about a second: what it probed by then must be reported, whatever that was.
    std::thread::sleep(Duration::from_millis(1200));
    let started = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("run kill");
    assert!(status.success());
    let out = child.wait_with_output().expect("wait for porthawk");
    let stopped_in = started.elapsed();
    assert_eq!(
        out.status.code(),
        Some(130),
        "exit status after Ctrl-C: {out:?}"
    );
    assert!(
        stopped_in < Duration::from_secs(10),
        "took {stopped_in:?} to stop after SIGINT"
    );
    let records = parse_jsonl(&stdout(&out));
    let err = stderr(&out);
    let line = crate::util::summary_line(&err);
    assert!(
        line.contains("interrupted"),
        "summary does not say interrupted: {line}"
    );
    // Every probe made is reported once, and the summary counts exactly those.
    check_summary(&err, &records, None);
    let distinct: BTreeSet<(IpAddr, u16)> = records.iter().map(|r| (r.ip, r.port)).collect();
    assert_eq!(distinct.len(), records.len(), "a probe reported twice");
    assert!(
        records.len() >= 500 && records.len() < 20_001,
        "{} records after about a second at 1000/s",
        records.len()
    );
    // Whatever was probed was judged right: the farm's port open, the rest closed (or open
    // because something else listens there, per /proc).
    for r in &records {
        if r.port == open_port {
            assert_eq!(r.state, "open", "{r:?}");
        }
    }
}

/// Banners for [`jsonl_and_csv_are_the_same_result_lines`]: one that identifies, one with a
/// comma and a quote, one that a spreadsheet would run as a formula.
const SSH_BANNER: &[u8] = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n";
const QUOTED_BANNER: &[u8] = b"220 \"hello\", world\r\n";
const FORMULA_BANNER: &[u8] = b"=cmd|' /C calc'!A0\r\n";

/// A farm whose listeners greet with [`SSH_BANNER`], [`QUOTED_BANNER`] and [`FORMULA_BANNER`],
/// next to a resetting one, on two hosts; and the `scan` arguments that sweep it with
/// `--banner --all` (without `--format`).
fn banner_farm(name: &str) -> (Farm, Vec<String>) {
    let hosts = test_hosts(name, 2);
    let spec: Vec<(IpAddr, Kind)> = hosts
        .iter()
        .flat_map(|&ip| {
            [
                (ip, Kind::Greet(SSH_BANNER)),
                (ip, Kind::Greet(QUOTED_BANNER)),
                (ip, Kind::Greet(FORMULA_BANNER)),
                (ip, Kind::Reset),
            ]
        })
        .collect();
    let farm = Farm::new(&spec);
    let mut args = vec!["scan".to_string()];
    args.extend(hosts.iter().map(IpAddr::to_string));
    let ports = ports_arg(&farm.ports(), "");
    args.extend(strings(&[
        "-p",
        &ports,
        "--banner",
        "--read-timeout",
        "300ms",
        "--all",
    ]));
    (farm, args)
}

/// Runs `args --format format`, requiring exit 0; returns stdout.
fn sweep_text(args: &[String], format: &str) -> String {
    let mut argv: Vec<&str> = args.iter().map(String::as_str).collect();
    argv.extend(["--format", format]);
    let out = run(&argv);
    assert_success(&argv, &out);
    stdout(&out)
}

/// A result line without the round trip, which differs from sweep to sweep.
fn without_rtt(mut line: ResultLine) -> ResultLine {
    line.rtt_us = 0;
    line
}

#[test]
fn jsonl_and_csv_are_the_same_result_lines() {
    let (farm, args) = banner_farm("jsonl_and_csv_are_the_same_result_lines");
    let jsonl = sweep_text(&args, "jsonl");
    let csv = sweep_text(&args, "csv");
    let names = ResultLine::field_names();
    // JSON objects name the fields in the order of the CSV header (unknown fields are refused
    // by `parse_jsonl`, which reads each line as a `ResultLine`).
    for text_line in jsonl.lines() {
        let fields: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(text_line).unwrap_or_else(|e| panic!("{e}: {text_line}"));
        let mut at = 0;
        for name in names.iter().filter(|n| fields.contains_key(**n)) {
            let needle = format!("\"{name}\":");
            let found = text_line[at..]
                .find(&needle)
                .unwrap_or_else(|| panic!("field {name} out of the contract order: {text_line}"));
            at += found + needle.len();
        }
    }
    let from_jsonl: BTreeSet<String> = parse_jsonl(&jsonl)
        .into_iter()
        .map(|r| format!("{:?}", without_rtt(r.line)))
        .collect();
    let csv_lines = parse_csv(&csv);
    // CSV cells that a spreadsheet would run carry a leading quote; otherwise the same lines.
    let from_csv: BTreeSet<String> = csv_lines
        .iter()
        .cloned()
        .map(|mut l| {
            if let Some(b) = l.banner.as_mut().filter(|b| b.starts_with("'=")) {
                b.remove(0);
            }
            format!("{:?}", without_rtt(l))
        })
        .collect();
    assert_eq!(from_jsonl, from_csv);
    // Every listener's port on both hosts: open on its own host, closed on the other.
    assert_eq!(from_jsonl.len(), 2 * farm.listeners().len());
    let ssh: Vec<&ResultLine> = csv_lines
        .iter()
        .filter(|l| l.service.as_deref() == Some("ssh"))
        .collect();
    assert_eq!(ssh.len(), 2, "{csv}");
    assert!(ssh
        .iter()
        .all(|l| l.product.as_deref() == Some("OpenSSH") && l.version.as_deref() == Some("9.2p1")));
    assert!(
        csv_lines
            .iter()
            .any(|l| l.banner.as_deref() == Some("220 \"hello\", world")),
        "{csv}"
    );
}

#[test]
fn csv_defuses_a_banner_that_starts_a_formula() {
    let (_farm, args) = banner_farm("csv_defuses_a_banner_that_starts_a_formula");
    let csv = sweep_text(&args, "csv");
    let rows: Vec<&str> = csv.lines().filter(|l| l.contains("cmd|")).collect();
    assert_eq!(rows.len(), 2, "{csv}");
    for row in rows {
        assert!(
            row.contains(",'=cmd|' /C calc'!A0,"),
            "formula not defused: {row}"
        );
        assert!(!row.contains(",=cmd"), "{row}");
    }
}

#[test]
fn output_write_errors_name_the_file_and_exit_2() {
    let ip = test_hosts("output_write_errors_name_the_file_and_exit_2", 1)[0];
    let farm = Farm::new(&[(ip, Kind::Accept)]);
    let port = farm.listeners()[0].0.port().to_string();
    let target = ip.to_string();
    for format in ["jsonl", "csv", "table", "grep"] {
        let args = [
            "scan",
            &target,
            "-p",
            &port,
            "--format",
            format,
            "-o",
            "/dev/full",
        ];
        let out = run(&args);
        assert_eq!(out.status.code(), Some(2), "{format}: {}", stderr(&out));
        let err = stderr(&out);
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 1, "{format}: one line: {err}");
        assert!(
            lines[0].starts_with("porthawk: ") && lines[0].contains("'/dev/full'"),
            "{format}: the error names the file: {err}"
        );
    }
}
