//! `scan --identify` against real daemons from Debian's packages that the other daemon tests
//! do not start: each test starts its daemon in the foreground with a throwaway
//! configuration on a free port of its own `127.a.b.1`, scans it on each backend, and checks
//! the service, product and version (the version against the installed package, never a
//! number written here). Ports are random high ones, so the probe plan cannot lean on port
//! hints: it has to find the protocol within `--max-probes`.
//!
//! A daemon that is not installed is skipped with a message (a failure under `CI=true`);
//! `.ci/run` installs them all.

mod containerd;
mod desktop;
mod more;
mod rmi_docker;
mod rtsp_syslog;
mod servers;
mod tls_inside;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;

use crate::daemon_util::{
    backends, chown_to, daemon_ip, free_port, package_version, programs, root_for,
    upstream_version, Daemon,
};
use crate::util::{assert_success, parse_jsonl, run, stdout, Record, TempDir};

/// `scan --identify` of one port on one backend: its one record. Generous read timeouts for
/// a busy machine, and every probe of the plan allowed.
fn identify(addr: SocketAddr, backend: &str) -> Record {
    identify_within(addr, backend, Some(30))
}

/// `scan --identify` of one port on one backend with `--max-probes` (`None`: the default
/// budget): its one record.
fn identify_within(addr: SocketAddr, backend: &str, max_probes: Option<u8>) -> Record {
    let records = parse_jsonl(&scan_identify(addr, backend, max_probes, "jsonl"));
    assert_eq!(records.len(), 1, "{backend}: {records:?}");
    records.into_iter().next().unwrap_or_else(|| unreachable!())
}

/// `scan --identify` of one port on one backend with `--max-probes` (`None`: the default
/// budget), in `format`: its output.
fn scan_identify(addr: SocketAddr, backend: &str, max_probes: Option<u8>, format: &str) -> String {
    let ip = addr.ip().to_string();
    let port = addr.port().to_string();
    let mut argv = vec!["scan", &ip, "-p", &port, "--identify"];
    let budget = max_probes.map(|n| n.to_string());
    if let Some(n) = budget.as_deref() {
        argv.extend(["--max-probes", n]);
    }
    argv.extend([
        "--read-timeout",
        "1500ms",
        "--dialog-timeout",
        "40s",
        "--backend",
        backend,
        "--format",
        format,
    ]);
    let out = run(&argv);
    assert_success(&argv, &out);
    stdout(&out)
}

/// Checks service, product and version (`None`: the daemon's reply does not carry one).
fn assert_identity(r: &Record, service: &str, product: Option<&str>, version: Option<&str>) {
    let ctx = format!("{:?}", r.fields);
    assert_eq!(r.state, "open", "{ctx}");
    assert_eq!(r.str("service"), Some(service), "service, {ctx}");
    assert_eq!(r.str("product"), product, "product, {ctx}");
    assert_eq!(r.str("version"), version, "version, {ctx}");
}

/// Starts `cmd` as the test's daemon and waits until it listens on `addr`.
fn start(name: &str, cmd: Command, dir: &Path, addr: SocketAddr) -> Daemon {
    let mut d = Daemon::start(name, cmd, &dir.join(format!("{name}.log")), "TERM");
    d.wait_listening(&[addr]);
    d
}

/// Lets a daemon that runs as its own user read its configuration.
fn open_to_all(dir: &Path, conf: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
    std::fs::set_permissions(conf, std::fs::Permissions::from_mode(0o644)).expect("chmod conf");
}

#[test]
fn rsync_daemon_names_its_protocol() {
    let Some([rsync]) = programs("rsync", ["rsync"]) else {
        return;
    };
    let ip = daemon_ip("identify::rsync");
    let dir = TempDir::new("identify-rsync");
    let addr = SocketAddr::new(ip, free_port(ip));
    let conf = dir.path().join("rsyncd.conf");
    std::fs::write(
        &conf,
        format!(
            "port = {}\naddress = {ip}\nuse chroot = no\npid file = {}/rsyncd.pid\n\
             [pub]\npath = {}\nread only = yes\n",
            addr.port(),
            dir.path().display(),
            dir.path().display()
        ),
    )
    .expect("write rsyncd.conf");
    let mut cmd = Command::new(rsync);
    cmd.args(["--daemon", "--no-detach", "--config"]).arg(&conf);
    let _d = start("rsync", cmd, dir.path(), addr);
    for backend in backends(ip) {
        let r = identify(addr, backend);
        assert_identity(&r, "rsync", None, None);
        assert!(
            r.str("protocol_version")
                .is_some_and(|v| v.starts_with("3")),
            "{r:?}"
        );
    }
}

#[test]
fn svnserve_is_subversion() {
    let Some([svnserve]) = programs("svnserve", ["svnserve"]) else {
        return;
    };
    let ip = daemon_ip("identify::svnserve");
    let dir = TempDir::new("identify-svnserve");
    let addr = SocketAddr::new(ip, free_port(ip));
    let mut cmd = Command::new(svnserve);
    cmd.args([
        "-d",
        "--foreground",
        "--listen-host",
        &ip.to_string(),
        "--listen-port",
    ])
    .arg(addr.port().to_string())
    .arg("-r")
    .arg(dir.path());
    let _d = start("svnserve", cmd, dir.path(), addr);
    for backend in backends(ip) {
        let r = identify(addr, backend);
        assert_identity(&r, "svn", Some("Subversion"), None);
        assert_eq!(r.str("protocol_version"), Some("2"), "{r:?}");
    }
}

#[test]
fn memcached_answers_a_probe() {
    let Some([memcached]) = programs("memcached", ["memcached"]) else {
        return;
    };
    if !root_for("memcached") {
        return;
    }
    let ip = daemon_ip("identify::memcached");
    let dir = TempDir::new("identify-memcached");
    let addr = SocketAddr::new(ip, free_port(ip));
    let mut cmd = Command::new(&memcached);
    cmd.args(["-u", "nobody", "-U", "0", "-l", &ip.to_string(), "-p"])
        .arg(addr.port().to_string());
    let _d = start("memcached", cmd, dir.path(), addr);
    let truth = package_version(&memcached);
    for backend in backends(ip) {
        // Silent until asked, it closes on the HTTP probe and says ERROR to the Redis one;
        // the plan follows that up with memcached's own `version`.
        assert_identity(
            &identify(addr, backend),
            "memcached",
            Some("memcached"),
            Some(&truth),
        );
    }
}

#[test]
fn mosquitto_answers_an_mqtt_connect() {
    let Some([mosquitto]) = programs("mosquitto", ["mosquitto"]) else {
        return;
    };
    let ip = daemon_ip("identify::mosquitto");
    let dir = TempDir::new("identify-mosquitto");
    let addr = SocketAddr::new(ip, free_port(ip));
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("listener {} {ip}\nallow_anonymous true\n", addr.port()),
    )
    .expect("write mosquitto.conf");
    let mut cmd = Command::new(mosquitto);
    cmd.arg("-c").arg(&conf);
    let _d = start("mosquitto", cmd, dir.path(), addr);
    for backend in backends(ip) {
        assert_identity(&identify(addr, backend), "mqtt", None, None);
    }
}

#[test]
fn ngircd_is_irc() {
    let Some([ngircd]) = programs("ngircd", ["ngircd"]) else {
        return;
    };
    if !root_for("ngircd") {
        return;
    }
    let ip = daemon_ip("identify::ngircd");
    let dir = TempDir::new("identify-ngircd");
    let addr = SocketAddr::new(ip, free_port(ip));
    let conf = dir.path().join("ngircd.conf");
    std::fs::write(
        &conf,
        format!(
            "[Global]\nName = irc.identify.test\nInfo = porthawk\nListen = {ip}\nPorts = {}\n\
             ServerGID = nogroup\nServerUID = nobody\nPidFile = {}/ngircd.pid\n\
             [Options]\nPAM = no\nIdent = no\nDNS = no\n",
            addr.port(),
            dir.path().display()
        ),
    )
    .expect("write ngircd.conf");
    let mut cmd = Command::new(&ngircd);
    cmd.arg("-n").arg("-f").arg(&conf);
    let _d = start("ngircd", cmd, dir.path(), addr);
    let truth = package_version(&ngircd);
    for backend in backends(ip) {
        // ngIRCd answers the HTTP probe with an IRC ERROR line; the plan follows it up with
        // the IRC probe, whose welcome names the software and its version.
        let r = identify(addr, backend);
        assert_identity(&r, "irc", Some("ngIRCd"), Some(&truth));
        assert_eq!(r.str("info"), Some("server: irc.identify.test"), "{r:?}");
    }
}

#[test]
fn bind_names_its_version_over_tcp() {
    let Some([named]) = programs("named", ["named"]) else {
        return;
    };
    if !root_for("named") {
        return;
    }
    // named listens only on the addresses of the machine's interfaces: 127.0.0.1, not the
    // rest of 127.0.0.0/8.
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let dir = TempDir::new("identify-named");
    let addr = SocketAddr::new(ip, free_port(ip));
    let work = dir.path().join("bind");
    std::fs::create_dir(&work).expect("mkdir");
    chown_to(&work, "bind");
    let conf = dir.path().join("named.conf");
    std::fs::write(
        &conf,
        format!(
            "options {{ directory \"{}\"; listen-on port {} {{ {ip}; }}; listen-on-v6 {{ none; }};\
             pid-file none; recursion no; }};\n",
            work.display(),
            addr.port()
        ),
    )
    .expect("write named.conf");
    open_to_all(dir.path(), &conf);
    let mut cmd = Command::new(&named);
    cmd.args(["-g", "-u", "bind", "-c"]).arg(&conf);
    let _d = start("named", cmd, dir.path(), addr);
    let truth = upstream_version(&package_version(&named));
    for backend in backends(ip) {
        let r = identify(addr, backend);
        assert_identity(&r, "domain", Some("ISC BIND"), Some(&truth));
        assert_eq!(
            r.str("cpe"),
            Some(format!("cpe:/a:isc:bind:{truth}").as_str())
        );
    }
}

#[test]
fn proxies_are_http_proxy() {
    let Some([tinyproxy]) = programs("tinyproxy", ["tinyproxy"]) else {
        return;
    };
    let ip = daemon_ip("identify::tinyproxy");
    let dir = TempDir::new("identify-tinyproxy");
    let addr = SocketAddr::new(ip, free_port(ip));
    let conf = dir.path().join("tinyproxy.conf");
    std::fs::write(
        &conf,
        format!(
            "Port {}\nListen {ip}\nTimeout 60\nAllow 127.0.0.0/8\nMaxClients 10\n",
            addr.port()
        ),
    )
    .expect("write tinyproxy.conf");
    open_to_all(dir.path(), &conf);
    // As root, tinyproxy drops to its own user after binding.
    let mut cmd = Command::new(&tinyproxy);
    cmd.arg("-d").arg("-c").arg(&conf);
    let _d = start("tinyproxy", cmd, dir.path(), addr);
    let truth = upstream_version(&package_version(&tinyproxy));
    for backend in backends(ip) {
        let r = identify(addr, backend);
        assert_identity(&r, "http-proxy", Some("tinyproxy"), Some(&truth));
    }
}

#[test]
fn git_daemon_names_its_version() {
    let Some([git]) = programs("git", ["git"]) else {
        return;
    };
    let ip = daemon_ip("identify::git");
    let dir = TempDir::new("identify-git");
    let addr = SocketAddr::new(ip, free_port(ip));
    let out = Command::new(&git)
        .arg("--version")
        .output()
        .expect("git --version");
    let truth = String::from_utf8_lossy(&out.stdout)
        .trim()
        .trim_start_matches("git version ")
        .to_string();
    let mut cmd = Command::new(&git);
    cmd.args(["daemon", "--reuseaddr", "--export-all"])
        .arg(format!("--listen={ip}"))
        .arg(format!("--port={}", addr.port()))
        .arg(format!("--base-path={}", dir.path().display()))
        .arg(dir.path());
    let _d = start("git-daemon", cmd, dir.path(), addr);
    for backend in backends(ip) {
        // The plan's git probe asks for a repository that is not there: an ERR pkt-line,
        // which names git but not its version.
        assert_identity(&identify(addr, backend), "git", None, None);
    }
    let _ = truth;
}
