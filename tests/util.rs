//! Helpers shared by the end-to-end tests: listener farms, running the binary with a deadline,
//! reading `/proc/net/tcp{,6}`, and a small parser for the flat JSON objects of `--format jsonl`.

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
                Kind::Accept | Kind::Reset => {
                    let stop = Arc::clone(&farm.stop);
                    let hold = kind == Kind::Accept;
                    farm.threads
                        .push(thread::spawn(move || serve(listener, hold, &stop)));
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

/// The accept loop of an `Accept` (`hold`) or `Reset` listener. Non-blocking so that it
/// notices the stop flag; bounded by [`HELPER_LIFETIME`].
fn serve(listener: TcpListener, hold: bool, stop: &AtomicBool) {
    if listener.set_nonblocking(true).is_err() {
        return;
    }
    let deadline = Instant::now() + HELPER_LIFETIME;
    let mut held: Vec<TcpStream> = Vec::new();
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        match listener.accept() {
            Ok((stream, _)) => {
                if hold {
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

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates `porthawk-test-<pid>-<name>`.
    pub fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("porthawk-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        TempDir(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `text` to a file in the directory and returns its path.
    pub fn write(&self, file: &str, text: &str) -> PathBuf {
        let p = self.0.join(file);
        std::fs::write(&p, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", p.display()));
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
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

/// A value of a flat JSON object.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A string, unescaped.
    Str(String),
    /// A number, as written.
    Num(String),
    /// `true` or `false`.
    Bool(bool),
    /// `null`.
    Null,
}

/// One line of `--format jsonl`.
#[derive(Debug, Clone)]
pub struct Record {
    /// `ip`.
    pub ip: IpAddr,
    /// `port`.
    pub port: u16,
    /// `state`.
    pub state: String,
    /// Every field, including the three above.
    pub fields: BTreeMap<String, Value>,
}

impl Record {
    /// A string field.
    pub fn str(&self, key: &str) -> Option<&str> {
        match self.fields.get(key) {
            Some(Value::Str(s)) => Some(s),
            _ => None,
        }
    }

    /// A non-negative integer field.
    pub fn uint(&self, key: &str) -> Option<u64> {
        match self.fields.get(key) {
            Some(Value::Num(n)) => n.parse().ok(),
            _ => None,
        }
    }
}

/// Parses `--format jsonl` output; panics, naming the line, on anything malformed.
pub fn parse_jsonl(text: &str) -> Vec<Record> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let fields =
            parse_flat_object(line).unwrap_or_else(|e| panic!("jsonl line {}: {e}: {line}", i + 1));
        let ip = match fields.get("ip") {
            Some(Value::Str(s)) => s
                .parse()
                .unwrap_or_else(|_| panic!("jsonl line {}: bad ip: {line}", i + 1)),
            _ => panic!("jsonl line {}: no string \"ip\": {line}", i + 1),
        };
        let port = match fields.get("port") {
            Some(Value::Num(n)) => n
                .parse()
                .unwrap_or_else(|_| panic!("jsonl line {}: bad port: {line}", i + 1)),
            _ => panic!("jsonl line {}: no numeric \"port\": {line}", i + 1),
        };
        let state = match fields.get("state") {
            Some(Value::Str(s)) => s.clone(),
            _ => panic!("jsonl line {}: no string \"state\": {line}", i + 1),
        };
        out.push(Record {
            ip,
            port,
            state,
            fields,
        });
    }
    out
}

/// Parses one JSON object whose values are strings, numbers, booleans or null.
pub fn parse_flat_object(line: &str) -> Result<BTreeMap<String, Value>, String> {
    let mut p = JsonParser {
        s: line.as_bytes(),
        i: 0,
    };
    let mut map = BTreeMap::new();
    p.ws();
    p.expect(b'{')?;
    p.ws();
    if p.peek() == Some(b'}') {
        p.i += 1;
    } else {
        loop {
            p.ws();
            let key = p.string()?;
            p.ws();
            p.expect(b':')?;
            p.ws();
            let value = p.value()?;
            if map.insert(key.clone(), value).is_some() {
                return Err(format!("duplicate key {key:?}"));
            }
            p.ws();
            match p.bump() {
                Some(b',') => continue,
                Some(b'}') => break,
                other => return Err(format!("expected ',' or '}}' at {}, got {other:?}", p.i)),
            }
        }
    }
    p.ws();
    if p.i != p.s.len() {
        return Err(format!("trailing bytes at {}", p.i));
    }
    Ok(map)
}

struct JsonParser<'a> {
    s: &'a [u8],
    i: usize,
}

impl JsonParser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let b = self.peek();
        self.i += 1;
        b
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.i += 1;
        }
    }

    fn expect(&mut self, want: u8) -> Result<(), String> {
        match self.bump() {
            Some(b) if b == want => Ok(()),
            other => Err(format!(
                "expected {:?} at {}, got {:?}",
                want as char,
                self.i - 1,
                other.map(|b| b as char)
            )),
        }
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let digits = self
            .s
            .get(self.i..self.i + 4)
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| u32::from_str_radix(d, 16).ok())
            .ok_or_else(|| format!("bad \\u escape at {}", self.i))?;
        self.i += 4;
        Ok(digits)
    }

    fn string(&mut self) -> Result<String, String> {
        self.expect(b'"')?;
        let mut out: Vec<u8> = Vec::new();
        loop {
            match self.bump() {
                None => return Err("unterminated string".into()),
                Some(b'"') => break,
                Some(b'\\') => match self.bump() {
                    Some(b'"') => out.push(b'"'),
                    Some(b'\\') => out.push(b'\\'),
                    Some(b'/') => out.push(b'/'),
                    Some(b'b') => out.push(8),
                    Some(b'f') => out.push(12),
                    Some(b'n') => out.push(b'\n'),
                    Some(b'r') => out.push(b'\r'),
                    Some(b't') => out.push(b'\t'),
                    Some(b'u') => {
                        let mut code = self.hex4()?;
                        if (0xD800..0xDC00).contains(&code) && self.s[self.i..].starts_with(b"\\u")
                        {
                            self.i += 2;
                            let low = self.hex4()?;
                            code = 0x10000 + ((code - 0xD800) << 10) + (low.wrapping_sub(0xDC00));
                        }
                        let c = char::from_u32(code).unwrap_or('\u{FFFD}');
                        let mut buf = [0u8; 4];
                        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                    }
                    other => return Err(format!("bad escape {other:?}")),
                },
                Some(b) if b < 0x20 => return Err("control byte in string".into()),
                Some(b) => out.push(b),
            }
        }
        String::from_utf8(out).map_err(|_| "string is not UTF-8".to_string())
    }

    fn value(&mut self) -> Result<Value, String> {
        match self.peek() {
            Some(b'"') => Ok(Value::Str(self.string()?)),
            Some(b't') if self.s[self.i..].starts_with(b"true") => {
                self.i += 4;
                Ok(Value::Bool(true))
            }
            Some(b'f') if self.s[self.i..].starts_with(b"false") => {
                self.i += 5;
                Ok(Value::Bool(false))
            }
            Some(b'n') if self.s[self.i..].starts_with(b"null") => {
                self.i += 4;
                Ok(Value::Null)
            }
            Some(b'-' | b'0'..=b'9') => {
                let start = self.i;
                while matches!(
                    self.peek(),
                    Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                ) {
                    self.i += 1;
                }
                let text = std::str::from_utf8(&self.s[start..self.i]).unwrap_or_default();
                if text.parse::<f64>().is_err() {
                    return Err(format!("bad number {text:?}"));
                }
                Ok(Value::Num(text.to_string()))
            }
            Some(b'{' | b'[') => Err(format!("nested value at {} (not expected)", self.i)),
            other => Err(format!(
                "unexpected {:?} at {}",
                other.map(|b| b as char),
                self.i
            )),
        }
    }
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
fn flat_json_parser_reads_the_contract_example() {
    let line = r#"{"ip":"127.0.0.1","port":25,"state":"open","rtt_us":412,"tries":1,"host":"a\"b\u00e9","ok":true,"x":null}"#;
    let f = parse_flat_object(line).expect("parses");
    assert_eq!(f.get("ip"), Some(&Value::Str("127.0.0.1".into())));
    assert_eq!(f.get("port"), Some(&Value::Num("25".into())));
    assert_eq!(f.get("host"), Some(&Value::Str("a\"b\u{e9}".into())));
    assert_eq!(f.get("ok"), Some(&Value::Bool(true)));
    assert_eq!(f.get("x"), Some(&Value::Null));
    assert!(parse_flat_object(r#"{"a":{"b":1}}"#).is_err());
    assert!(parse_flat_object(r#"{"a":1,"a":2}"#).is_err());
    assert!(parse_flat_object(r#"{"a":1} x"#).is_err());
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
