//! Helpers for the tests against real daemons from Debian's packages (`daemons`, `check`):
//! finding the daemon, running it in the foreground as a child the test owns, waiting until it
//! listens, stopping it by its pid, the ground truth of its version, and certificates with
//! chosen validity dates.
//!
//! Daemons run with throwaway configurations and data in a [`TempDir`], on a free port of a
//! `127.a.b.c` address that no other test uses, and are stopped (SIGTERM, then SIGKILL) when
//! their [`Daemon`] is dropped. No system service is started, stopped or reconfigured.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::util::{run, run_command, test_net, uring_unavailable, which};

/// How long a daemon may take to start listening (data directory set-up included).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a daemon may take to exit after its stop signal before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a set-up command (initdb, openssl, ...) may run.
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Seconds in a day.
pub const DAY: i64 = 86_400;

/// Says why a daemon test does not run, through [`crate::util::require`]: a failure under
/// `CI=true` (CI installs every daemon, so there a skip means `.ci/run` lost a package), a
/// printed skip elsewhere.
pub fn skip(daemon: &str) {
    let _ = crate::util::require(daemon, Some("not installed (see .ci/run)".to_string()));
}

/// Whether the tests run as root (the owner of `/proc/self` is the effective user).
pub fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Finds each program (on `PATH` or in the sbin directories); prints the skip message and
/// returns `None` if one is missing.
pub fn programs<const N: usize>(daemon: &str, names: [&str; N]) -> Option<[PathBuf; N]> {
    let mut found = Vec::with_capacity(N);
    for name in names {
        match which(name) {
            Some(p) => found.push(p),
            None => {
                skip(daemon);
                return None;
            }
        }
    }
    found.try_into().ok()
}

/// Whether the test may run a daemon that must switch to its system user (or needs root for
/// its privilege separation); prints why not.
pub fn root_for(daemon: &str) -> bool {
    crate::util::require_that(
        daemon,
        is_root(),
        "runs as its system user here, which needs root",
    )
}

/// The newest PostgreSQL server installation: `/usr/lib/postgresql/<major>/bin`.
pub fn postgres_bindir() -> Option<PathBuf> {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").is_file().then_some((major, bin))
        })
        .collect();
    dirs.sort();
    dirs.pop().map(|(_, bin)| bin)
}

/// A free port on `ip`: bound on port 0, then released for the daemon. The address belongs to
/// the test alone, so nobody else takes the port in between.
pub fn free_port(ip: IpAddr) -> u16 {
    let l = TcpListener::bind(SocketAddr::new(ip, 0))
        .unwrap_or_else(|e| panic!("cannot bind a port on {ip}: {e}"));
    l.local_addr().expect("local address").port()
}

/// `cmd` run as `user` (and its group) through `setpriv`, for daemons that refuse root.
pub fn as_user(user: &str, program: &Path) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid", user, "--regid", user, "--init-groups", "--"])
        .arg(program);
    cmd
}

/// Runs a set-up command; panics with its output unless it succeeds.
pub fn setup(what: &str, cmd: Command) {
    let out = run_command(cmd, None, SETUP_TIMEOUT);
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Gives `path` to `user` (and its primary group).
pub fn chown_to(path: &Path, user: &str) {
    let id = |flag: &str| -> u32 {
        let out = run_command(
            {
                let mut c = Command::new("id");
                c.args([flag, user]);
                c
            },
            None,
            SETUP_TIMEOUT,
        );
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("no user {user}"))
    };
    std::os::unix::fs::chown(path, Some(id("-u")), Some(id("-g")))
        .unwrap_or_else(|e| panic!("cannot chown {} to {user}: {e}", path.display()));
}

// ---------------------------------------------------------------------------------------------
// Daemons

/// A daemon running in the foreground as a child of the test; stopped by its pid on drop.
pub struct Daemon {
    name: String,
    child: Child,
    logs: Vec<PathBuf>,
    stop_signal: &'static str,
}

impl Daemon {
    /// Starts `cmd` with stdout and stderr going to `log`. `stop_signal` is what makes it exit
    /// promptly (`TERM` for most; `INT`, a fast shutdown, for PostgreSQL).
    pub fn start(name: &str, mut cmd: Command, log: &Path, stop_signal: &'static str) -> Daemon {
        let out =
            File::create(log).unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
        let err = out.try_clone().expect("clone log file");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        eprintln!("{name}: starting {cmd:?}");
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Daemon {
            name: name.to_string(),
            child,
            logs: vec![log.to_path_buf()],
            stop_signal,
        }
    }

    /// Another log file to show when the daemon fails (one it writes itself).
    pub fn also_log(mut self, path: PathBuf) -> Daemon {
        self.logs.push(path);
        self
    }

    /// Waits until every address accepts a connection; panics, with the daemon's logs, if
    /// it exits first or takes longer than [`START_TIMEOUT`].
    pub fn wait_listening(&mut self, addrs: &[SocketAddr]) {
        let start = Instant::now();
        let mut pending: Vec<SocketAddr> = addrs.to_vec();
        while !pending.is_empty() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited ({status}) before listening on {pending:?}\n{}",
                    self.name,
                    self.log_text()
                );
            }
            assert!(
                start.elapsed() < START_TIMEOUT,
                "{} is not listening on {pending:?} after {START_TIMEOUT:?}\n{}",
                self.name,
                self.log_text()
            );
            pending.retain(|a| TcpStream::connect_timeout(a, Duration::from_millis(200)).is_err());
            if !pending.is_empty() {
                thread::sleep(Duration::from_millis(25));
            }
        }
        eprintln!(
            "{}: listening on {addrs:?} after {:?}",
            self.name,
            start.elapsed()
        );
    }

    /// The daemon's logs, for failure messages.
    pub fn log_text(&self) -> String {
        self.logs
            .iter()
            .map(|p| {
                let text = std::fs::read_to_string(p).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!("--- {} (last 40 lines)\n{}", p.display(), tail.join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        let pid = self.child.id().to_string();
        let _ = Command::new("kill")
            .args([&format!("-{}", self.stop_signal), &pid])
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "{}: did not stop on SIG{}, killing it",
            self.name, self.stop_signal
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Ground truth

/// The upstream version of the Debian package that installed `program`: `1:9.2p1-2+deb12u6`
/// → `9.2p1`, `5:7.0.15-1~deb12u1` → `7.0.15`, `1:2.3.19.1+dfsg1-2.1` → `2.3.19.1`.
pub fn package_version(program: &Path) -> String {
    let mut candidates = vec![program.to_path_buf()];
    if let Ok(real) = program.canonicalize() {
        candidates.push(real);
    }
    for path in candidates {
        let mut cmd = Command::new("dpkg");
        cmd.arg("-S").arg(&path);
        let out = run_command(cmd, None, SETUP_TIMEOUT);
        if !out.status.success() {
            continue;
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let Some(package) = text.lines().next().and_then(|l| l.split(':').next()) else {
            continue;
        };
        let mut cmd = Command::new("dpkg-query");
        cmd.args(["-W", "-f", "${Version}", package.trim()]);
        let out = run_command(cmd, None, SETUP_TIMEOUT);
        let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() && !version.is_empty() {
            eprintln!("{}: package {package} {version}", program.display());
            return upstream_version(&version);
        }
    }
    panic!(
        "no Debian package owns {}: the ground truth of its version comes from dpkg",
        program.display()
    )
}

/// The upstream part of a Debian version: no epoch, no Debian revision, no repack suffix.
pub fn upstream_version(debian: &str) -> String {
    let v = debian.split_once(':').map_or(debian, |(_, v)| v);
    let v = v.rsplit_once('-').map_or(v, |(v, _)| v);
    let end = v.find(['+', '~']).unwrap_or(v.len());
    v[..end].to_string()
}

#[test]
fn upstream_versions_drop_epoch_revision_and_repack() {
    assert_eq!(upstream_version("1:9.2p1-2+deb12u6"), "9.2p1");
    assert_eq!(upstream_version("5:7.0.15-1~deb12u1"), "7.0.15");
    assert_eq!(upstream_version("1.22.1-9+deb12u1"), "1.22.1");
    assert_eq!(upstream_version("1:2.3.19.1+dfsg1-2.1+deb12u1"), "2.3.19.1");
    assert_eq!(upstream_version("4.96-15+deb12u4"), "4.96");
    assert_eq!(upstream_version("1:10.11.6-0+deb12u1"), "10.11.6");
    assert_eq!(upstream_version("15.8-0+deb12u1"), "15.8");
}

// ---------------------------------------------------------------------------------------------
// Time and certificates

/// Seconds since the epoch.
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The UTC calendar date and time of a Unix time: (year, month, day, hour, minute, second).
fn civil(t: i64) -> (i64, i64, i64, i64, i64, i64) {
    // Howard Hinnant's days-to-civil algorithm.
    let (days, secs) = (t.div_euclid(DAY), t.rem_euclid(DAY));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, secs / 3600, secs % 3600 / 60, secs % 60)
}

/// `2026-12-23T20:09:16Z`, as porthawk writes `cert_not_after`.
pub fn rfc3339(t: i64) -> String {
    let (y, mo, d, h, mi, s) = civil(t);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// `20261223200916Z`, as `openssl ca -startdate/-enddate` takes it.
fn openssl_time(t: i64) -> String {
    let (y, mo, d, h, mi, s) = civil(t);
    format!("{y:04}{mo:02}{d:02}{h:02}{mi:02}{s:02}Z")
}

#[test]
fn civil_dates_are_right() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(rfc3339(1_798_059_556), "2026-12-23T20:59:16Z");
    assert_eq!(openssl_time(1_580_515_200), "20200201000000Z");
}

/// Days left as porthawk counts them: whole days, rounded down (negative once expired).
pub fn days_left(not_after: i64, now: i64) -> i64 {
    (not_after - now).div_euclid(DAY)
}

/// A certificate the test made, with its key.
#[derive(Debug, Clone)]
pub struct Cert {
    /// The PEM certificate.
    pub cert: PathBuf,
    /// The PEM private key.
    pub key: PathBuf,
    /// The subject as porthawk prints it (`O=porthawk tests, CN=...`).
    pub subject: String,
    /// The end of its validity, as a Unix time.
    pub not_after: i64,
}

/// Makes self-signed certificates (one EC P-256 key for all) with chosen validity dates,
/// through `openssl ca`, which, unlike `openssl req -x509` in OpenSSL 3.0, can set any start
/// and end date, including ones in the past.
pub struct CertMaker {
    dir: PathBuf,
    key: PathBuf,
    config: PathBuf,
}

impl CertMaker {
    /// Sets up the key and a minimal CA database in `dir`; `None` (with the skip message) if
    /// openssl is not installed.
    pub fn new(dir: &Path) -> Option<CertMaker> {
        let Some(openssl) = which("openssl") else {
            skip("openssl");
            return None;
        };
        let dir = dir.join("certs");
        std::fs::create_dir_all(&dir).expect("create certs dir");
        let key = dir.join("key.pem");
        let mut cmd = Command::new(&openssl);
        cmd.args(["genpkey", "-algorithm", "EC", "-pkeyopt"])
            .arg("ec_paramgen_curve:P-256")
            .arg("-out")
            .arg(&key);
        setup("openssl genpkey", cmd);
        std::fs::write(dir.join("index.txt"), "").expect("write index.txt");
        std::fs::write(dir.join("serial"), "1000\n").expect("write serial");
        let config = dir.join("ca.cnf");
        let d = dir.display();
        std::fs::write(
            &config,
            format!(
                "[ca]\ndefault_ca = test_ca\n\
                 [test_ca]\ndatabase = {d}/index.txt\nnew_certs_dir = {d}\nserial = {d}/serial\n\
                 default_md = sha256\npolicy = test_policy\nunique_subject = no\n\
                 x509_extensions = test_ext\n\
                 [test_policy]\norganizationName = supplied\ncommonName = supplied\n\
                 [test_ext]\nbasicConstraints = CA:FALSE\nsubjectKeyIdentifier = hash\n"
            ),
        )
        .expect("write ca.cnf");
        Some(CertMaker { dir, key, config })
    }

    /// A certificate for `cn`, valid from `not_before` to `not_after` (Unix times).
    pub fn make(&self, cn: &str, not_before: i64, not_after: i64) -> Cert {
        let csr = self.dir.join(format!("{cn}.csr"));
        let cert = self.dir.join(format!("{cn}.pem"));
        let mut cmd = Command::new("openssl");
        cmd.args(["req", "-new", "-key"])
            .arg(&self.key)
            .args(["-subj", &format!("/O=porthawk tests/CN={cn}"), "-out"])
            .arg(&csr);
        setup("openssl req", cmd);
        let mut cmd = Command::new("openssl");
        cmd.args(["ca", "-batch", "-notext", "-selfsign", "-config"])
            .arg(&self.config)
            .arg("-keyfile")
            .arg(&self.key)
            .arg("-in")
            .arg(&csr)
            .arg("-out")
            .arg(&cert)
            .args(["-startdate", &openssl_time(not_before)])
            .args(["-enddate", &openssl_time(not_after)]);
        setup("openssl ca", cmd);
        Cert {
            cert,
            key: self.key.clone(),
            subject: format!("O=porthawk tests, CN={cn}"),
            not_after,
        }
    }

    /// A certificate that ends `days` days (and half a day, so that the whole-day count is
    /// the same all through the test) from now; negative: ended that long ago.
    pub fn make_for_days(&self, cn: &str, days: i64) -> Cert {
        let now = now_unix();
        let not_after = now + days * DAY + DAY / 2;
        self.make(cn, (now - 30 * DAY).min(not_after - DAY), not_after)
    }
}

// ---------------------------------------------------------------------------------------------
// nginx (shared by `daemons` and `check`)

/// An nginx with one plain HTTP port and one TLS port per certificate.
pub struct Nginx {
    /// The running daemon, stopped when this is dropped.
    _daemon: Daemon,
    /// The plain HTTP port.
    pub http: SocketAddr,
    /// One TLS port per certificate, in the order given.
    pub https: Vec<SocketAddr>,
    /// The program, for the ground truth of its version.
    pub program: PathBuf,
}

impl Nginx {
    /// Starts nginx on `ip` with its configuration, logs and temp files under `dir`; `None` if
    /// nginx is not installed.
    pub fn start(ip: IpAddr, dir: &Path, certs: &[Cert]) -> Option<Nginx> {
        let [program] = programs("nginx", ["nginx"])?;
        let http = SocketAddr::new(ip, free_port(ip));
        let https: Vec<SocketAddr> = certs
            .iter()
            .map(|_| SocketAddr::new(ip, free_port(ip)))
            .collect();
        let d = dir.display();
        let mut conf = format!(
            "pid {d}/nginx.pid;\nerror_log {d}/nginx-error.log;\nworker_processes 1;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/nginx-body;\n\
             proxy_temp_path {d}/nginx-proxy;\n  fastcgi_temp_path {d}/nginx-fastcgi;\n\
             uwsgi_temp_path {d}/nginx-uwsgi;\n  scgi_temp_path {d}/nginx-scgi;\n\
             server {{ listen {http}; location / {{ return 200 \"porthawk\\n\"; }} }}\n"
        );
        for (addr, cert) in https.iter().zip(certs) {
            conf.push_str(&format!(
                "  server {{ listen {addr} ssl; ssl_certificate {}; ssl_certificate_key {}; \
                 location / {{ return 200 \"porthawk\\n\"; }} }}\n",
                cert.cert.display(),
                cert.key.display()
            ));
        }
        conf.push_str("}\n");
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("write nginx.conf");
        let mut cmd = Command::new(&program);
        // -e: the error log before the configuration is read, which would otherwise be the
        // system's /var/log/nginx/error.log.
        cmd.arg("-e")
            .arg(dir.join("nginx-error.log"))
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf_path)
            .args(["-g", "daemon off;"]);
        let mut daemon = Daemon::start("nginx", cmd, &dir.join("nginx.out"), "TERM")
            .also_log(dir.join("nginx-error.log"));
        let mut all = vec![http];
        all.extend(&https);
        daemon.wait_listening(&all);
        Some(Nginx {
            _daemon: daemon,
            http,
            https,
            program,
        })
    }
}

/// The address the test's daemon listens on: host 1 of the test's own `127.a.b.0/24`.
pub fn daemon_ip(name: &str) -> IpAddr {
    let [a, b] = test_net(name);
    IpAddr::V4(Ipv4Addr::new(127, a, b, 1))
}

/// The backends to run the checks on: both, unless io_uring is unavailable here.
pub fn backends(ip: IpAddr) -> Vec<&'static str> {
    let port = free_port(ip).to_string();
    let out = run(&[
        "scan",
        &ip.to_string(),
        "-p",
        &port,
        "--backend",
        "uring",
        "--format",
        "jsonl",
    ]);
    if uring_unavailable(&out) {
        eprintln!("io_uring is not available here: epoll only");
        return vec!["epoll"];
    }
    vec!["uring", "epoll"]
}

/// The pids and command lines of processes whose command line mentions `path` (a daemon's
/// helpers name the test's directory in their configuration paths).
pub fn processes_naming(path: &Path) -> Vec<String> {
    let needle = path.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|c| c.is_ascii_digit())
        })
        .filter_map(|e| {
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            text.contains(&needle)
                .then(|| format!("{}: {text}", e.file_name().to_string_lossy()))
        })
        .collect()
}

/// Waits (at most 20 s) until no process names `path` any more, after `daemon` was stopped;
/// fails naming those left.
pub fn assert_none_left(path: &Path, daemon: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut left = processes_naming(path);
    while !left.is_empty() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
        left = processes_naming(path);
    }
    assert!(
        left.is_empty(),
        "left running after {daemon} stopped: {left:?}"
    );
}
