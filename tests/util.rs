//! Helpers shared by the end-to-end tests: listener farms, running the binary with a deadline,
//! reading `/proc/net/tcp{,6}`, reading `--format jsonl` and `csv` back into `ResultLine`s, and the
//! rule for tests whose environment is missing ([`require`]).

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

pub use porthawk_core::ResultLine;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_porthawk");

/// How long one run of the binary may take before the test kills it and fails.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// Upper bound on the life of any helper thread or process, in case a test leaks a farm.
const HELPER_LIFETIME: Duration = Duration::from_secs(600);

/// How often accept loops and child waits poll.
const POLL: Duration = Duration::from_millis(5);

// ---------------------------------------------------------------------------------------------
// Addresses

/// Hands out a distinct `127.a.b.0/24` block to every caller in this process.
///
/// The block is derived from the process id (so that two test processes running at once are
/// unlikely to collide) plus a counter (so that two tests of the same process never do, which a
/// hash of the test name could not guarantee). `a` is never 0, so `127.0.0.1` is never handed out.
/// The name only goes to the log, to make failures easy to place.
pub fn test_net(name: &str) -> [u8; 2] {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let mut h = DefaultHasher::new();
    std::process::id().hash(&mut h);
    let base = h.finish() % (254 * 256);
    let slot = (base + u64::from(NEXT.fetch_add(1, Ordering::Relaxed))) % (254 * 256);
    let a = 1 + (slot / 256) as u8;
    let b = (slot % 256) as u8;
    eprintln!("{name}: using 127.{a}.{b}.0/24");
    [a, b]
}

/// Hosts `127.a.b.1 ..= 127.a.b.n` of a block from [`test_net`].
pub fn test_hosts(name: &str, n: u8) -> Vec<IpAddr> {
    let [a, b] = test_net(name);
    (1..=n)
        .map(|d| IpAddr::V4(Ipv4Addr::new(127, a, b, d)))
        .collect()
}

/// Serialises the tests that listen on or sweep `127.0.0.1` or `::1` (shared by every test
/// process on the machine, so they cannot get a private block). A test that panicked while
/// holding the lock does not poison it for the others.
pub fn loopback_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ---------------------------------------------------------------------------------------------
// Listener farms

/// How a farm listener treats the connections it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Accepts and holds the connection open without ever sending a byte.
    Accept,
    /// Accepts and closes at once with `SO_LINGER 0`, so the peer gets a RST.
    Reset,
    /// Never accepts: connections complete in the kernel and wait in the backlog.
    Silent,
    /// Accepts, sends these bytes at once, and holds the connection open.
    Greet(&'static [u8]),
}

/// Listeners bound on port 0 of given addresses, each served until the farm is dropped.
///
/// `Reset` listeners set `SO_LINGER 0` on each accepted connection (through socket2) and close
/// it, so the prober sees a handshake followed at once by an RST.
pub struct Farm {
    listeners: Vec<(SocketAddr, Kind)>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    silent: Vec<TcpListener>,
}

impl Farm {
    /// Binds one listener per entry of `spec`.
    pub fn new(spec: &[(IpAddr, Kind)]) -> Farm {
        let mut farm = Farm {
            listeners: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            silent: Vec::new(),
        };
        for &(ip, kind) in spec {
            let listener = TcpListener::bind(SocketAddr::new(ip, 0))
                .unwrap_or_else(|e| panic!("cannot bind a listener on {ip}: {e}"));
            let addr = listener.local_addr().expect("listener address");
            farm.listeners.push((addr, kind));
            match kind {
                Kind::Silent => farm.silent.push(listener),
                Kind::Accept | Kind::Reset | Kind::Greet(_) => {
                    let stop = Arc::clone(&farm.stop);
                    farm.threads
                        .push(thread::spawn(move || serve(listener, kind, &stop)));
                }
            }
        }
        eprintln!("farm: {:?}", farm.listeners);
        farm
    }

    /// The usual farm: an `Accept`, a `Reset` and a `Silent` listener on each host.
    pub fn standard(hosts: &[IpAddr]) -> Farm {
        let spec: Vec<(IpAddr, Kind)> = hosts
            .iter()
            .flat_map(|&ip| [(ip, Kind::Accept), (ip, Kind::Reset), (ip, Kind::Silent)])
            .collect();
        Farm::new(&spec)
    }

    /// Every listener with its kind.
    pub fn listeners(&self) -> &[(SocketAddr, Kind)] {
        &self.listeners
    }

    /// The (address, port) pairs that must be found open.
    pub fn open_set(&self) -> BTreeSet<(IpAddr, u16)> {
        self.listeners
            .iter()
            .map(|(a, _)| (a.ip(), a.port()))
            .collect()
    }

    /// The port numbers of all listeners.
    pub fn ports(&self) -> BTreeSet<u16> {
        self.listeners.iter().map(|(a, _)| a.port()).collect()
    }
}

impl Drop for Farm {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.silent.clear();
    }
}

/// The accept loop of an `Accept`, `Greet` or `Reset` listener. Non-blocking so that it
/// notices the stop flag; bounded by [`HELPER_LIFETIME`].
fn serve(listener: TcpListener, kind: Kind, stop: &AtomicBool) {
    if listener.set_nonblocking(true).is_err() {
        return;
    }
    let deadline = Instant::now() + HELPER_LIFETIME;
    let mut held: Vec<TcpStream> = Vec::new();
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        match listener.accept() {
            Ok((mut stream, _)) => {
                if let Kind::Greet(bytes) = kind {
                    let _ = stream.write_all(bytes);
                }
                if kind != Kind::Reset {
                    held.push(stream);
                } else {
                    // An RST rather than a FIN: the harshest thing a live service can do.
                    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                }
            }
            Err(_) => thread::sleep(POLL),
        }
    }
}

/// Python source of the listener helper: `reset|hold addr...` binds one listener per address,
/// prints the ports on one line, then accepts and either closes with `SO_LINGER 0` (`reset`) or
/// holds the connection (`hold`) until its stdin is closed (or ten minutes pass).
const LISTEN_HELPER: &str = r#"
import select, socket, struct, sys, time
reset = sys.argv[1] == 'reset'
held = []
ls = []
for addr in sys.argv[2:]:
    s = socket.socket(socket.AF_INET6 if ':' in addr else socket.AF_INET, socket.SOCK_STREAM)
    s.bind((addr, 0))
    s.listen(128)
    s.setblocking(False)
    ls.append(s)
print(' '.join(str(s.getsockname()[1]) for s in ls), flush=True)
end = time.monotonic() + 600
while time.monotonic() < end:
    r, _, _ = select.select(ls + [sys.stdin], [], [], 0.1)
    if sys.stdin in r:
        break
    for s in r:
        try:
            c, _ = s.accept()
        except OSError:
            continue
        if reset:
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
            c.close()
        else:
            held.append(c)
"#;

/// A running python3 listener helper; dropping it closes its stdin and reaps it.
pub struct Helper {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Helper {
    /// Starts the helper as `prefix... python3 -c SCRIPT reset|hold addrs...` and returns it
    /// with the ports it bound, in the order of `addrs`. `kind` is `Reset` or `Accept` (hold);
    /// `prefix` lets a test run it in a namespace.
    pub fn spawn(
        prefix: &[&str],
        kind: Kind,
        addrs: &[IpAddr],
    ) -> Result<(Helper, Vec<u16>), String> {
        let python = which("python3").ok_or("python3 not found")?;
        let mut cmd = match prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&python);
                c
            }
            None => Command::new(&python),
        };
        cmd.arg("-c").arg(LISTEN_HELPER);
        cmd.arg(if kind == Kind::Reset { "reset" } else { "hold" });
        cmd.args(addrs.iter().map(|ip| ip.to_string()));
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start python3: {e}"))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut helper = Helper { child, stdin };
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .map_err(|_| "python3 helper did not report its ports in time".to_string())?;
        let ports: Vec<u16> = line
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        if ports.len() != addrs.len() {
            helper.stop();
            return Err(format!("python3 helper failed to bind: {line:?}"));
        }
        Ok((helper, ports))
    }

    fn stop(&mut self) {
        self.stdin = None;
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(POLL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------------
// Running commands

/// Runs the binary with `args`, killing it after [`RUN_TIMEOUT`].
pub fn run(args: &[&str]) -> Output {
    run_for(args, RUN_TIMEOUT)
}

/// Runs the binary with `args`, killing it after `timeout`.
pub fn run_for(args: &[&str], timeout: Duration) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    run_command(cmd, None, timeout)
}

/// Runs any command with optional stdin text; kills it and panics after `timeout`.
pub fn run_command(mut cmd: Command, input: Option<&str>, timeout: Duration) -> Output {
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {shown}: {e}"));
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .unwrap_or_else(|e| panic!("cannot write stdin of {shown}: {e}"));
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{shown} did not finish within {timeout:?}");
            }
            Err(e) => panic!("waiting for {shown}: {e}"),
        }
    };
    Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        buf
    })
}

/// Stdout as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Panics with the command's output unless it exited 0.
pub fn assert_success(args: &[&str], out: &Output) {
    assert!(
        out.status.success(),
        "porthawk {} exited with {:?}\nstderr:\n{}\nstdout (first 2000 bytes):\n{}",
        args.join(" "),
        out.status.code(),
        stderr(out),
        stdout(out).chars().take(2000).collect::<String>()
    );
}

/// Whether a failed run says io_uring is not available here (seccomp, `io_uring_disabled`).
pub fn uring_unavailable(out: &Output) -> bool {
    !out.status.success() && stderr(out).to_lowercase().contains("uring")
}

/// Finds a program on `PATH` (and the sbin directories, which root's tools live in).
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// A directory under the system temp dir (from `tempfile`), removed on drop.
pub struct TempDir(tempfile::TempDir);

impl TempDir {
    /// Creates `porthawk-test-<name>-XXXXXX`.
    pub fn new(name: &str) -> TempDir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("porthawk-test-{name}-"))
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temporary directory for {name}: {e}"));
        TempDir(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// Writes `text` to a file in the directory and returns its path.
    pub fn write(&self, file: &str, text: &str) -> PathBuf {
        let p = self.0.path().join(file);
        std::fs::write(&p, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", p.display()));
        p
    }
}

// ---------------------------------------------------------------------------------------------
// A missing environment

/// Whether the environment variable `CI` says this is a CI run (`true` or `1`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Decides what a test does when something it needs (root, a daemon, a browser, a tool) is
/// missing: `Ok(())` when `missing` is `None`; otherwise, under `CI=true`, it panics naming
/// what is missing and why (CI installs everything, so a skip there would hide a broken
/// set-up); outside CI it prints `skipping: ...` and returns the message, and the test stops.
pub fn require(what: &str, missing: Option<String>) -> Result<(), String> {
    require_in(in_ci(), what, missing)
}

/// [`require`] with the CI decision made by the caller.
fn require_in(ci: bool, what: &str, missing: Option<String>) -> Result<(), String> {
    let Some(why) = missing else {
        return Ok(());
    };
    let text = format!("{what}: {why}");
    if ci {
        panic!("CI=true and this test cannot run: {text}");
    }
    eprintln!("skipping: {text}");
    Err(text)
}

/// [`require`] for a check that is a `bool`: `true` when the test may go on.
pub fn require_that(what: &str, present: bool, why: &str) -> bool {
    require(what, (!present).then(|| why.to_string())).is_ok()
}

// ---------------------------------------------------------------------------------------------
// Listening sockets of the whole machine

/// The TCP sockets in LISTEN state (`0A`) from `/proc/net/tcp` and `/proc/net/tcp6`.
#[derive(Debug, Clone)]
pub struct ListenSnapshot(Vec<SocketAddr>);

impl ListenSnapshot {
    /// Reads both tables now.
    pub fn take() -> ListenSnapshot {
        let mut all = Vec::new();
        for (file, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
            match std::fs::read_to_string(file) {
                Ok(text) => all.extend(parse_proc_net_tcp(&text, v6)),
                // A kernel without IPv6 has no tcp6 table; that is not an error.
                Err(e) if v6 && e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => panic!("cannot read {file}: {e}"),
            }
        }
        ListenSnapshot(all)
    }

    /// Ports that certainly accept connections to `ip`: a listener on `ip` itself or on the
    /// wildcard address of its family.
    pub fn strict_ports(&self, ip: IpAddr) -> BTreeSet<u16> {
        self.0
            .iter()
            .filter(|a| a.ip() == ip || (a.ip().is_unspecified() && a.is_ipv4() == ip.is_ipv4()))
            .map(|a| a.port())
            .collect()
    }

    /// Ports that may accept connections to `ip`: [`Self::strict_ports`] plus, for IPv4, the
    /// dual-stack listeners on `::` and the IPv4-mapped form of `ip` (whether a `::` listener is
    /// v6-only is not visible in `/proc`).
    pub fn loose_ports(&self, ip: IpAddr) -> BTreeSet<u16> {
        let mut ports = self.strict_ports(ip);
        if let IpAddr::V4(v4) = ip {
            let mapped = IpAddr::V6(v4.to_ipv6_mapped());
            let mapped_any = IpAddr::V6(Ipv4Addr::UNSPECIFIED.to_ipv6_mapped());
            ports.extend(
                self.0
                    .iter()
                    .filter(|a| {
                        a.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED)
                            || a.ip() == mapped
                            || a.ip() == mapped_any
                    })
                    .map(|a| a.port()),
            );
        }
        ports
    }
}

/// Parses one `/proc/net/tcp{,6}` table, keeping the LISTEN sockets.
///
/// Addresses are printed as 32-bit words in host byte order (`%08X` of the network-order bytes
/// read as a native integer), so each word goes back through `to_ne_bytes`.
fn parse_proc_net_tcp(text: &str, v6: bool) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 4 || cols[3] != "0A" {
            continue;
        }
        let Some((addr_hex, port_hex)) = cols[1].split_once(':') else {
            continue;
        };
        let Ok(port) = u16::from_str_radix(port_hex, 16) else {
            continue;
        };
        let mut bytes = Vec::with_capacity(16);
        for chunk in addr_hex.as_bytes().chunks(8) {
            let word = std::str::from_utf8(chunk)
                .ok()
                .and_then(|w| u32::from_str_radix(w, 16).ok());
            match word {
                Some(w) => bytes.extend_from_slice(&w.to_ne_bytes()),
                None => break,
            }
        }
        let ip = match (v6, bytes.len()) {
            (false, 4) => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
            (true, 16) => {
                let mut b = [0u8; 16];
                b.copy_from_slice(&bytes);
                IpAddr::V6(Ipv6Addr::from(b))
            }
            _ => continue,
        };
        out.push(SocketAddr::new(ip, port));
    }
    out
}

/// Checks the open ports a sweep found against the ground truth.
///
/// `own` are the test's listeners (all must be found). Of the machine's other listeners, a port
/// listening for a host in both snapshots must be found; a port found open must be the test's own
/// or listening (loosely) in one of the snapshots. Only `hosts` × `ports` are considered.
pub fn check_open_set(
    found: &BTreeSet<(IpAddr, u16)>,
    own: &BTreeSet<(IpAddr, u16)>,
    hosts: &[IpAddr],
    ports: &BTreeSet<u16>,
    before: &ListenSnapshot,
    after: &ListenSnapshot,
) {
    let mut must = own.clone();
    let mut allowed = own.clone();
    for &ip in hosts {
        let b = before.strict_ports(ip);
        let a = after.strict_ports(ip);
        must.extend(
            b.intersection(&a)
                .filter(|p| ports.contains(p))
                .map(|&p| (ip, p)),
        );
        allowed.extend(
            before
                .loose_ports(ip)
                .union(&after.loose_ports(ip))
                .map(|&p| (ip, p)),
        );
    }
    let missed: Vec<_> = must.difference(found).take(20).collect();
    let extra: Vec<_> = found.difference(&allowed).take(20).collect();
    assert!(
        missed.is_empty() && extra.is_empty(),
        "open ports wrong.\nmissed (listening, not reported open): {missed:?}\n\
         unexpected (reported open, nothing listens): {extra:?}\nfound: {} open",
        found.len()
    );
}

// ---------------------------------------------------------------------------------------------
// JSONL

pub use serde_json::Value;

/// One line of `--format jsonl`: the typed [`ResultLine`] it must parse into, and its fields
/// by name for the assertions.
#[derive(Debug, Clone)]
pub struct Record {
    /// `ip`.
    pub ip: IpAddr,
    /// `port`.
    pub port: u16,
    /// `state`.
    pub state: String,
    /// Every field, including the three above.
    pub fields: serde_json::Map<String, Value>,
    /// The line as the contract type.
    pub line: ResultLine,
}

impl Record {
    /// A string field.
    pub fn str(&self, key: &str) -> Option<&str> {
        self.fields.get(key).and_then(Value::as_str)
    }

    /// A non-negative integer field.
    pub fn uint(&self, key: &str) -> Option<u64> {
        self.fields.get(key).and_then(Value::as_u64)
    }
}

/// Parses `--format jsonl` output; panics, naming the line, on anything malformed or on a
/// line that is not a [`ResultLine`].
pub fn parse_jsonl(text: &str) -> Vec<Record> {
    let mut out = Vec::new();
    for (i, text_line) in text.lines().enumerate() {
        if text_line.trim().is_empty() {
            continue;
        }
        let fail = |e: serde_json::Error| -> ! { panic!("jsonl line {}: {e}: {text_line}", i + 1) };
        let line: ResultLine = serde_json::from_str(text_line).unwrap_or_else(|e| fail(e));
        let fields = serde_json::from_str(text_line).unwrap_or_else(|e| fail(e));
        out.push(Record {
            ip: line.ip,
            port: line.port,
            state: line.state.to_string(),
            fields,
            line,
        });
    }
    out
}

/// Parses `--format csv` output into lines; panics unless the header is exactly
/// [`ResultLine::field_names`] and every row parses into a [`ResultLine`].
pub fn parse_csv(text: &str) -> Vec<ResultLine> {
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .unwrap_or_else(|e| panic!("csv header: {e}"))
        .iter()
        .map(str::to_string)
        .collect();
    assert_eq!(header, ResultLine::field_names(), "csv header");
    reader
        .deserialize()
        .enumerate()
        .map(|(i, row)| row.unwrap_or_else(|e| panic!("csv row {}: {e}\n{text}", i + 1)))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Checks on sweeps

/// Maps every (ip, port) to its record; panics if one is reported twice.
pub fn index_records(records: &[Record]) -> BTreeMap<(IpAddr, u16), &Record> {
    let mut map = BTreeMap::new();
    for r in records {
        if let Some(prev) = map.insert((r.ip, r.port), r) {
            panic!(
                "{}:{} reported twice: {:?} and {:?}",
                r.ip, r.port, prev.fields, r.fields
            );
        }
    }
    map
}

/// The (ip, port) pairs reported in `state`.
pub fn with_state(records: &[Record], state: &str) -> BTreeSet<(IpAddr, u16)> {
    records
        .iter()
        .filter(|r| r.state == state)
        .map(|r| (r.ip, r.port))
        .collect()
}

/// The (ip, port, state) triples, for comparing two sweeps.
pub fn triples(records: &[Record]) -> BTreeSet<(IpAddr, u16, String)> {
    records
        .iter()
        .map(|r| (r.ip, r.port, r.state.clone()))
        .collect()
}

/// A `-p` argument: the given ports joined by commas, then `extra` (a list or range) if any.
pub fn ports_arg(ports: &BTreeSet<u16>, extra: &str) -> String {
    let mut parts: Vec<String> = ports.iter().map(u16::to_string).collect();
    if !extra.is_empty() {
        parts.push(extra.to_string());
    }
    parts.join(",")
}

/// The summary line: the last stderr line that starts with `porthawk:`.
pub fn summary_line(stderr: &str) -> String {
    stderr
        .lines()
        .rev()
        .find(|l| l.starts_with("porthawk:"))
        .unwrap_or_else(|| panic!("no summary line starting with 'porthawk:' on stderr:\n{stderr}"))
        .to_string()
}

/// The number after the word `state` (`open 3`) in the summary line.
pub fn summary_count(line: &str, state: &str) -> Option<u64> {
    let pat = format!("{state} ");
    let mut from = 0;
    while let Some(pos) = line[from..].find(&pat) {
        let at = from + pos;
        from = at + pat.len();
        let word_start = at == 0 || !line.as_bytes()[at - 1].is_ascii_alphanumeric();
        let digits: String = line[from..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        if word_start && !digits.is_empty() {
            return digits.parse().ok();
        }
    }
    None
}

/// Checks the stderr summary of an `--all` sweep against its records: counts per state,
/// `probes/s`, and the backend (`io_uring` or `epoll`; `want_backend` if given).
pub fn check_summary(stderr: &str, records: &[Record], want_backend: Option<&str>) {
    let line = summary_line(stderr);
    for state in ["open", "closed", "filtered", "unreachable", "error"] {
        let n = records.iter().filter(|r| r.state == state).count() as u64;
        assert_eq!(
            summary_count(&line, state),
            Some(n),
            "summary count for {state} (records have {n}): {line}"
        );
    }
    assert!(line.contains("probes/s"), "no probes/s in summary: {line}");
    let backend = if line.contains("backend io_uring") {
        "io_uring"
    } else if line.contains("backend epoll") {
        "epoll"
    } else {
        panic!("summary names no backend (io_uring or epoll): {line}");
    };
    if let Some(want) = want_backend {
        assert_eq!(backend, want, "summary: {line}");
    }
}

#[test]
fn proc_net_tcp_parser_decodes_addresses() {
    let v4 = "  sl  local_address rem_address   st\n   0: 0100007F:0016 00000000:0000 0A 0\n   1: 00000000:07E8 00000000:0000 0A 0\n   2: 0100007F:0017 0100007F:1234 01 0\n";
    let got = parse_proc_net_tcp(v4, false);
    let want_first = if cfg!(target_endian = "little") {
        "127.0.0.1:22"
    } else {
        "1.0.0.127:22"
    };
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].to_string(), want_first);
    assert_eq!(got[1].to_string(), "0.0.0.0:2024");
    let v6 = "  sl  local_address\n   0: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 0A 0\n";
    let got = parse_proc_net_tcp(v6, true);
    if cfg!(target_endian = "little") {
        assert_eq!(got[0].to_string(), "[::1]:80");
    }
}

#[test]
fn summary_count_reads_word_number_pairs() {
    let line = "porthawk: 10 probes in 0.1s (100 probes/s), open 2, closed 8, filtered 0, unreachable 0, error 0, backend epoll";
    assert_eq!(summary_count(line, "open"), Some(2));
    assert_eq!(summary_count(line, "closed"), Some(8));
    assert_eq!(summary_count(line, "error"), Some(0));
    assert_eq!(summary_count("reopen 5", "open"), None);
}

#[test]
fn a_missing_tool_fails_under_ci_and_skips_elsewhere() {
    let missing = || {
        which("porthawk-no-such-tool")
            .is_none()
            .then(|| "not installed".to_string())
    };
    let under_ci =
        std::panic::catch_unwind(|| require_in(true, "porthawk-no-such-tool", missing()));
    let message = under_ci.expect_err("CI=true must fail the test");
    let text = message
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        text.contains("porthawk-no-such-tool: not installed"),
        "{text}"
    );
    assert_eq!(
        require_in(false, "porthawk-no-such-tool", missing()),
        Err("porthawk-no-such-tool: not installed".to_string())
    );
    assert_eq!(
        require_in(true, "sh", which("sh").is_none().then(String::new)),
        Ok(())
    );
}

/// One HTTP/1.1 exchange with a `porthawk serve` (`Connection: close`, a JSON content type,
/// the real `Host`); returns the status and the (de-chunked) body. Waits at most 90 s.
pub fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(90)))
        .expect("timeout");
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send request");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read response");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut rest = &raw[split + 4..];
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head}"));
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        let mut out = Vec::new();
        loop {
            let eol = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .expect("chunk size line");
            let size_text = String::from_utf8_lossy(&rest[..eol]).to_string();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .unwrap_or_else(|_| panic!("bad chunk size {size_text:?}"));
            rest = &rest[eol + 2..];
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[..size]);
            rest = &rest[size + 2..];
        }
        out
    } else {
        rest.to_vec()
    };
    (status, String::from_utf8(body).expect("UTF-8 body"))
}

/// [`http`] whose answer is JSON.
pub fn http_json(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, serde_json::Value) {
    let (status, text) = http(addr, method, path, body);
    let value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {e}: {text}"));
    (status, value)
}

/// The line `porthawk serve` prints once it listens: user-facing output that `.ci/run` and
/// the tests read, not a log line.
pub const LISTENING: &str = "porthawk: listening on http://";

/// A running `porthawk serve`: its stderr lines are echoed (as `serve: ...`) and kept; it is
/// killed, by its handle, if the test ends without stopping it.
pub struct Serve {
    /// The process.
    pub child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    log: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Serve {
    /// `porthawk serve --listen 127.0.0.1:0 --data DATA`, without the environment's token or
    /// `RUST_LOG`: add `--config` and the like, then [`Serve::spawn`] it.
    pub fn command(data: &Path) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .env_remove("PORTHAWK_API_TOKEN")
            .env_remove("RUST_LOG");
        cmd
    }

    /// A server on `data` with no config.
    pub fn start(data: &Path) -> Serve {
        Serve::spawn(Serve::command(data))
    }

    /// Starts `cmd` (a `porthawk ... serve` command) and waits, at most 30 s, for the line
    /// that says where it listens.
    pub fn spawn(mut cmd: Command) -> Serve {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start porthawk serve");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, log) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("serve: {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut serve = Serve {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
            seen: Vec::new(),
        };
        let Some(line) = serve.wait_for_line(Duration::from_secs(30), |l| l.starts_with(LISTENING))
        else {
            panic!(
                "porthawk serve did not say where it listens: {:?}",
                serve.seen
            );
        };
        serve.addr = line[LISTENING.len()..]
            .split_whitespace()
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("bad address in {line:?}"));
        serve
    }

    /// The next stderr line for which `f` holds, waiting at most `within`.
    pub fn wait_for_line(&mut self, within: Duration, f: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + within;
        while let Ok(line) = self
            .log
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.seen.push(line.clone());
            if f(&line) {
                return Some(line);
            }
        }
        None
    }

    /// Whether the server writes a line containing `needle` within `within`.
    pub fn logs(&mut self, needle: &str, within: Duration) -> bool {
        self.wait_for_line(within, |l| l.contains(needle)).is_some()
    }

    /// Every stderr line read so far.
    pub fn seen(&self) -> &[String] {
        &self.seen
    }

    /// The descriptors the server process holds now.
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .expect("the server's /proc/PID/fd")
            .count()
    }

    /// The descriptors the server holds once start-up is over: the count after it has stayed
    /// the same for a second (threads that start with the server open theirs a little
    /// after it answers, later on a loaded machine), or after 15 s whatever it is then.
    pub fn settled_fds(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut last = self.fds();
        let mut same_since = Instant::now();
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            let now = self.fds();
            if now != last {
                last = now;
                same_since = Instant::now();
            } else if same_since.elapsed() >= Duration::from_secs(1) {
                break;
            }
        }
        last
    }

    /// What each descriptor of the server points at (`socket:[N]`, `anon_inode:inotify`, a
    /// path), sorted: for messages that say which ones a test did not expect.
    pub fn fd_targets(&self) -> Vec<String> {
        let mut targets: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .expect("the server's /proc/PID/fd")
            .filter_map(Result::ok)
            .filter_map(|e| std::fs::read_link(e.path()).ok())
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        targets.sort();
        targets
    }

    /// Sends SIGTERM and waits (at most 20 s) for the exit; every stderr line.
    pub fn terminate(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -TERM {pid} failed");
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            match self.child.try_wait().expect("wait") {
                Some(status) => break status,
                None if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                None => panic!("porthawk serve did not stop within 20 s of SIGTERM"),
            }
        };
        // The reader thread ends with the pipe.
        while let Ok(line) = self.log.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        (status, std::mem::take(&mut self.seen))
    }

    /// Stops it with SIGTERM and requires a clean exit; every stderr line.
    pub fn stop(self) -> Vec<String> {
        let (status, lines) = self.terminate();
        assert!(status.success(), "porthawk serve exited with {status}");
        lines
    }

    /// `kill -9`.
    pub fn kill(mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("wait");
    }

    /// [`http_json`] to this server.
    pub fn http_json(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> (u16, serde_json::Value) {
        http_json(self.addr, method, path, body)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits (at most 20 s) until `addr` accepts a connection; fails naming `what` otherwise.
pub fn wait_accepting(addr: SocketAddr, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
