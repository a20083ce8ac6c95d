//! Probe dialogs, identification and TLS against real daemons from Debian's packages.
//!
//! Each test starts its daemon in the foreground as its own child, with a throwaway
//! configuration and data directory, on a free port of a `127.a.b.1` address that no other test
//! uses, and stops it by its pid when it ends. For each daemon, on each backend:
//!
//! 1. `--identify` names the service, the product, and the version where the daemon's reply
//!    carries one; the version is checked against the Debian package that installed the daemon,
//!    never a number written here;
//! 2. the daemon's presets pass (`matched: true`), TLS ones with the certificate the test made;
//! 3. a deliberately wrong `--expect` fails (`matched: false`) with a reason naming the step.
//!
//! A daemon that is not installed is skipped with a message; `.ci/run` installs them all.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::process::Command;

use crate::daemon_util::{
    as_user, backends, chown_to, daemon_ip, days_left, free_port, now_unix, package_version,
    postgres_bindir, programs, rfc3339, root_for, setup, skip, Cert, CertMaker, Daemon, Nginx,
};
use crate::util::{assert_success, parse_jsonl, run, stdout, Record, TempDir, Value};

/// How long one read of a dialog that should pass may wait: generous, for a busy CI machine.
const READ_TIMEOUT: &str = "5s";

/// How long one read may wait in dialogs that wait for silence (`--identify` reads a banner
/// that silent services never send) or fail on purpose (a wrong `--expect` waits for more):
/// short, since they always wait that long, but still long enough for a loaded machine.
const SHORT_READ_TIMEOUT: &str = "2s";

/// `porthawk scan IP -p PORTS --format jsonl --all` with the probe `args` on `backend`; the
/// records by port, one for each port asked for. The read timeout is [`SHORT_READ_TIMEOUT`]
/// with `--identify` or `--expect`, [`READ_TIMEOUT`] otherwise, unless `args` set one.
fn scan(backend: &str, ip: IpAddr, ports: &[u16], args: &[&str]) -> BTreeMap<u16, Record> {
    let ip_text = ip.to_string();
    let ports_text = ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let mut argv = vec![
        "scan",
        &ip_text,
        "-p",
        &ports_text,
        "--format",
        "jsonl",
        "--all",
        "--tries",
        "1",
        "--backend",
        backend,
    ];
    if !args.contains(&"--read-timeout") {
        let waits = args.iter().any(|a| *a == "--identify" || *a == "--expect");
        argv.push("--read-timeout");
        argv.push(if waits {
            SHORT_READ_TIMEOUT
        } else {
            READ_TIMEOUT
        });
    }
    argv.extend_from_slice(args);
    let out = run(&argv);
    assert_success(&argv, &out);
    let mut by_port = BTreeMap::new();
    for r in parse_jsonl(&stdout(&out)) {
        assert_eq!(r.ip, ip, "{:?}", r.fields);
        let port = r.port;
        assert!(
            by_port.insert(port, r).is_none(),
            "port {port} reported twice"
        );
    }
    let mut want = ports.to_vec();
    want.sort_unstable();
    assert_eq!(
        by_port.keys().copied().collect::<Vec<_>>(),
        want,
        "porthawk {}",
        argv.join(" ")
    );
    for r in by_port.values() {
        assert_eq!(
            r.state, "open",
            "{backend}: {args:?} on port {}: {:?}",
            r.port, r.fields
        );
    }
    by_port
}

/// What a version in the reply is checked against.
#[derive(Debug, Clone, Copy)]
enum Version<'a> {
    /// The reply names the version: it must be this one.
    Exact(&'a str),
    /// The reply does not name it (Redis, Dovecot, PostgreSQL): if a version is reported
    /// anyway, it must be this one.
    IfAny(&'a str),
}

fn assert_identity(r: &Record, service: &str, product: &str, version: Version<'_>) {
    let ctx = format!("port {}: {:?}", r.port, r.fields);
    assert_eq!(r.str("service"), Some(service), "service, {ctx}");
    assert_eq!(r.str("product"), Some(product), "product, {ctx}");
    match version {
        Version::Exact(v) => assert_eq!(r.str("version"), Some(v), "version, {ctx}"),
        Version::IfAny(v) => {
            if let Some(got) = r.str("version") {
                assert_eq!(got, v, "version, {ctx}");
            }
        }
    }
}

fn assert_matched(r: &Record) {
    assert_eq!(
        (r.fields.get("matched"), r.str("reason")),
        (Some(&Value::Bool(true)), None),
        "port {}: {:?}",
        r.port,
        r.fields
    );
}

/// The dialog failed at `step`, and the reason quotes `wanted` (the pattern) and `got` (what
/// the daemon said).
fn assert_fails_at(r: &Record, step: u32, wanted: &str, got: &str) {
    let ctx = format!("port {}: {:?}", r.port, r.fields);
    assert_eq!(r.fields.get("matched"), Some(&Value::Bool(false)), "{ctx}");
    let reason = r
        .str("reason")
        .unwrap_or_else(|| panic!("no reason, {ctx}"));
    assert!(
        reason.starts_with(&format!("step {step}: ")),
        "reason should name step {step}, {ctx}"
    );
    assert!(
        reason.contains(wanted),
        "reason should quote {wanted:?}, {ctx}"
    );
    assert!(reason.contains(got), "reason should quote {got:?}, {ctx}");
}

/// The TLS fields describe `cert`, counted at `now`.
fn assert_cert(r: &Record, cert: &Cert, now: i64) {
    let ctx = format!("port {}: {:?}", r.port, r.fields);
    assert!(
        r.str("tls_version")
            .is_some_and(|v| v.starts_with("TLSv1.")),
        "tls_version, {ctx}"
    );
    assert_eq!(r.str("cert_subject"), Some(cert.subject.as_str()), "{ctx}");
    // Self-signed: the issuer is the subject.
    assert_eq!(r.str("cert_issuer"), Some(cert.subject.as_str()), "{ctx}");
    assert_eq!(
        r.str("cert_not_after"),
        Some(rfc3339(cert.not_after).as_str()),
        "{ctx}"
    );
    let days = r.fields.get("cert_days_left").and_then(Value::as_i64);
    assert_eq!(days, Some(days_left(cert.not_after, now)), "{ctx}");
}

// ---------------------------------------------------------------------------------------------

#[test]
fn redis_server_answers_ping_and_is_identified() {
    let Some([redis]) = programs("redis-server", ["redis-server"]) else {
        return;
    };
    let truth = package_version(&redis);
    let ip = daemon_ip("daemon-redis");
    let tmp = TempDir::new("daemon-redis");
    let port = free_port(ip);
    let mut cmd = Command::new(&redis);
    cmd.args(["--port", &port.to_string(), "--bind", &ip.to_string()])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .arg("--dir")
        .arg(tmp.path());
    let mut daemon = Daemon::start("redis-server", cmd, &tmp.path().join("redis.log"), "TERM");
    daemon.wait_listening(&[SocketAddr::new(ip, port)]);

    for backend in backends(ip) {
        eprintln!("redis-server, backend {backend}");
        // Redis waits for the client; its answer to the identify probe names it.
        let r = &scan(backend, ip, &[port], &["--identify"])[&port];
        assert_identity(r, "redis", "Redis", Version::IfAny(&truth));
        let r = &scan(backend, ip, &[port], &["--preset", "redis"])[&port];
        assert_matched(r);
        assert_eq!(r.str("banner"), Some("+PONG"), "{:?}", r.fields);
        let r = &scan(
            backend,
            ip,
            &[port],
            &["--send", r"PING\r\n", "--expect", r"^\+PANG"],
        )[&port];
        assert_fails_at(r, 2, r"wanted ^\+PANG", "+PONG");
    }
}

#[test]
fn nginx_plain_and_tls_with_the_certificates_the_test_made() {
    let ip = daemon_ip("daemon-nginx");
    let tmp = TempDir::new("daemon-nginx");
    let Some(certs) = CertMaker::new(tmp.path()) else {
        return;
    };
    let cert_ok = certs.make_for_days("nginx.porthawk.test", 30);
    let cert_soon = certs.make_for_days("soon.porthawk.test", 3);
    let cert_expired = certs.make_for_days("expired.porthawk.test", -3);
    let tls_certs = [cert_ok.clone(), cert_soon, cert_expired];
    let Some(nginx) = Nginx::start(ip, tmp.path(), &tls_certs) else {
        return;
    };
    let truth = package_version(&nginx.program);
    let plain = nginx.http.port();
    let tls: Vec<u16> = nginx.https.iter().map(SocketAddr::port).collect();
    let nginx_http = |r: &Record| assert_identity(r, "http", "nginx", Version::Exact(&truth));

    for backend in backends(ip) {
        eprintln!("nginx, backend {backend}");
        let r = &scan(backend, ip, &[plain], &["--identify"])[&plain];
        nginx_http(r);
        assert!(r.str("tls_version").is_none(), "{:?}", r.fields);
        let r = &scan(backend, ip, &[plain], &["--preset", "http"])[&plain];
        assert_matched(r);
        nginx_http(r);

        // Every certificate is reported, the expired one too: https passes on all three.
        let now = now_unix();
        let found = scan(backend, ip, &tls, &["--preset", "https"]);
        for (port, cert) in tls.iter().zip(&tls_certs) {
            let r = &found[port];
            assert_matched(r);
            nginx_http(r);
            assert_cert(r, cert, now);
        }
        let r = &scan(backend, ip, &tls[..1], &["--preset", "tls"])[&tls[0]];
        assert_matched(r);
        assert_cert(r, &cert_ok, now);
        let r = &scan(backend, ip, &tls[..1], &["--identify", "--tls"])[&tls[0]];
        nginx_http(r);
        assert_cert(r, &cert_ok, now);

        // Deliberately wrong: TLS to the plain port, and a status nginx does not send.
        let r = &scan(backend, ip, &[plain], &["--preset", "https"])[&plain];
        assert_fails_at(r, 1, "TLS", "");
        let r = &scan(
            backend,
            ip,
            &[plain],
            &[
                "--send",
                r"HEAD / HTTP/1.0\r\n\r\n",
                "--expect",
                r"^HTTP/1\.1 404",
            ],
        )[&plain];
        assert_fails_at(r, 2, r"wanted ^HTTP/1\.1 404", "got 'HTTP/1.1 200 OK");
    }
}

#[test]
fn openssh_server_is_identified_with_its_version() {
    let Some([sshd, keygen]) = programs("openssh-server", ["sshd", "ssh-keygen"]) else {
        return;
    };
    if !root_for("sshd") {
        return;
    }
    let truth = package_version(&sshd);
    let ip = daemon_ip("daemon-sshd");
    let tmp = TempDir::new("daemon-sshd");
    // sshd insists on its privilege separation directory; the packaged service creates it
    // at boot, so on a machine where it never ran it may be missing.
    std::fs::create_dir_all("/run/sshd").expect("create /run/sshd");
    let host_key = tmp.path().join("host_ed25519");
    let mut cmd = Command::new(&keygen);
    cmd.args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&host_key);
    setup("ssh-keygen", cmd);
    let port = free_port(ip);
    let conf = tmp.write(
        "sshd_config",
        &format!(
            "ListenAddress {ip}:{port}\nHostKey {}\nPidFile none\nUsePAM no\n",
            host_key.display()
        ),
    );
    let mut cmd = Command::new(&sshd);
    cmd.args(["-D", "-e", "-f"]).arg(&conf);
    let mut daemon = Daemon::start("sshd", cmd, &tmp.path().join("sshd.log"), "TERM");
    daemon.wait_listening(&[SocketAddr::new(ip, port)]);

    for backend in backends(ip) {
        eprintln!("sshd, backend {backend}");
        let r = &scan(backend, ip, &[port], &["--identify"])[&port];
        assert_identity(r, "ssh", "OpenSSH", Version::Exact(&truth));
        let r = &scan(backend, ip, &[port], &["--preset", "ssh"])[&port];
        assert_matched(r);
        assert_identity(r, "ssh", "OpenSSH", Version::Exact(&truth));
        let r = &scan(backend, ip, &[port], &["--expect", r"^SSH-1\.99-"])[&port];
        assert_fails_at(r, 1, r"wanted ^SSH-1\.99-", "got 'SSH-2.0-OpenSSH_");
        // Regression: the version line starts with `S`, which once passed the postgres preset
        // (PostgreSQL answers its SSLRequest with the single byte `S` or `N`).
        // sshd answers the SSLRequest by closing, sometimes with a reset, so the reason may
        // not quote the version line; the banner keeps it.
        let r = &scan(backend, ip, &[port], &["--preset", "postgres"])[&port];
        assert_fails_at(r, 2, "", "");
        assert_identity(r, "ssh", "OpenSSH", Version::Exact(&truth));
    }
}

#[test]
fn dovecot_imap_and_pop3_plain_starttls_and_implicit_tls() {
    let Some([dovecot]) = programs("dovecot", ["dovecot"]) else {
        return;
    };
    if !root_for("dovecot") {
        return;
    }
    let truth = package_version(&dovecot);
    let ip = daemon_ip("daemon-dovecot");
    let tmp = TempDir::new("daemon-dovecot");
    let Some(certs) = CertMaker::new(tmp.path()) else {
        return;
    };
    let cert = certs.make_for_days("mail.porthawk.test", 60);
    let [imap, imaps, pop3, pop3s] = [(); 4].map(|()| free_port(ip));
    let d = tmp.path().display();
    // The login processes are not chrooted, so that the test needs nothing outside its
    // directory; authentication is never reached.
    let conf = tmp.write(
        "dovecot.conf",
        &format!(
            "protocols = imap pop3\nlisten = {ip}\nbase_dir = {d}/run\nstate_dir = {d}/state\n\
             log_path = {d}/dovecot.log\n\
             ssl = yes\nssl_cert = <{}\nssl_key = <{}\n\
             passdb {{\n  driver = static\n  args = password=unused\n}}\n\
             userdb {{\n  driver = static\n  args = uid=nobody gid=nogroup home={d}/mail\n}}\n\
             service anvil {{\n  chroot =\n}}\n\
             service imap-login {{\n  chroot =\n\
               inet_listener imap {{\n    port = {imap}\n  }}\n\
               inet_listener imaps {{\n    port = {imaps}\n    ssl = yes\n  }}\n}}\n\
             service pop3-login {{\n  chroot =\n\
               inet_listener pop3 {{\n    port = {pop3}\n  }}\n\
               inet_listener pop3s {{\n    port = {pop3s}\n    ssl = yes\n  }}\n}}\n",
            cert.cert.display(),
            cert.key.display()
        ),
    );
    let mut cmd = Command::new(&dovecot);
    cmd.arg("-F").arg("-c").arg(&conf);
    let mut daemon = Daemon::start("dovecot", cmd, &tmp.path().join("dovecot.out"), "TERM")
        .also_log(tmp.path().join("dovecot.log"));
    daemon.wait_listening(&[imap, imaps, pop3, pop3s].map(|p| SocketAddr::new(ip, p)));

    for backend in backends(ip) {
        eprintln!("dovecot, backend {backend}");
        let found = scan(backend, ip, &[imap, pop3], &["--identify"]);
        assert_identity(&found[&imap], "imap", "Dovecot", Version::IfAny(&truth));
        assert_identity(&found[&pop3], "pop3", "Dovecot", Version::IfAny(&truth));

        let now = now_unix();
        for (preset, port, service, tls) in [
            ("imap", imap, "imap", false),
            ("imap-starttls", imap, "imap", true),
            ("imaps", imaps, "imap", true),
            ("pop3", pop3, "pop3", false),
            ("pop3-starttls", pop3, "pop3", true),
            ("pop3s", pop3s, "pop3", true),
        ] {
            eprintln!("preset {preset}");
            let r = &scan(backend, ip, &[port], &["--preset", preset])[&port];
            assert_matched(r);
            assert_identity(r, service, "Dovecot", Version::IfAny(&truth));
            if tls {
                assert_cert(r, &cert, now);
            } else {
                assert!(r.str("tls_version").is_none(), "{preset}: {:?}", r.fields);
            }
        }

        let found = scan(backend, ip, &[imap, pop3], &["--expect", r"^\* PREAUTH"]);
        assert_fails_at(
            &found[&imap],
            1,
            r"wanted ^\* PREAUTH",
            "got '* OK [CAPABILITY",
        );
        assert_fails_at(&found[&pop3], 1, r"wanted ^\* PREAUTH", "got '+OK Dovecot");
        // The IMAP preset against the POP3 port: the wrong service fails the greeting.
        let r = &scan(
            backend,
            ip,
            &[pop3],
            &["--preset", "imap", "--read-timeout", SHORT_READ_TIMEOUT],
        )[&pop3];
        assert_fails_at(r, 1, r"wanted ^\* (OK|PREAUTH)", "got '+OK");
    }
}

#[test]
fn exim_smtp_plain_starttls_and_implicit_tls() {
    let Some([exim]) = programs("exim4", ["exim4"]) else {
        return;
    };
    if !root_for("exim4") {
        return;
    }
    let truth = package_version(&exim);
    let ip = daemon_ip("daemon-exim");
    let tmp = TempDir::new("daemon-exim");
    let Some(certs) = CertMaker::new(tmp.path()) else {
        return;
    };
    let cert = certs.make_for_days("mx.porthawk.test", 45);
    let [smtp, smtps] = [(); 2].map(|()| free_port(ip));
    let d = tmp.path().display();
    // A minimal configuration: the greeting, EHLO and STARTTLS, and no mail accepted.
    let conf = tmp.write(
        "exim.conf",
        &format!(
            "primary_hostname = mx.porthawk.test\nkeep_environment =\n\
             spool_directory = {d}/spool\nlog_file_path = {d}/exim-%s.log\n\
             pid_file_path = {d}/exim.pid\n\
             local_interfaces = {ip}\ndaemon_smtp_ports = {smtp} : {smtps}\n\
             tls_on_connect_ports = {smtps}\n\
             exim_user = root\nexim_group = root\nnever_users =\n\
             tls_certificate = {}\ntls_privatekey = {}\ntls_advertise_hosts = *\n\
             acl_smtp_rcpt = refuse\n\
             begin acl\nrefuse:\n  deny\n",
            cert.cert.display(),
            cert.key.display()
        ),
    );
    let mut cmd = Command::new(&exim);
    cmd.arg("-bdf").arg("-C").arg(&conf);
    let mut daemon = Daemon::start("exim", cmd, &tmp.path().join("exim.out"), "TERM")
        .also_log(tmp.path().join("exim-main.log"))
        .also_log(tmp.path().join("exim-panic.log"));
    daemon.wait_listening(&[SocketAddr::new(ip, smtp), SocketAddr::new(ip, smtps)]);

    for backend in backends(ip) {
        eprintln!("exim, backend {backend}");
        let r = &scan(backend, ip, &[smtp], &["--identify"])[&smtp];
        assert_identity(r, "smtp", "Exim", Version::Exact(&truth));
        let now = now_unix();
        for (preset, port, tls) in [
            ("smtp", smtp, false),
            ("smtp-starttls", smtp, true),
            ("smtps", smtps, true),
        ] {
            eprintln!("preset {preset}");
            let r = &scan(backend, ip, &[port], &["--preset", preset])[&port];
            assert_matched(r);
            assert_identity(r, "smtp", "Exim", Version::Exact(&truth));
            if tls {
                assert_cert(r, &cert, now);
            }
        }
        let r = &scan(backend, ip, &[smtp], &["--expect", "^554 "])[&smtp];
        assert_fails_at(r, 1, "wanted ^554 ", "got '220 mx.porthawk.test ESMTP Exim");
    }
}

#[test]
fn postgresql_answers_the_ssl_request() {
    let Some(bindir) = postgres_bindir() else {
        skip("postgresql");
        return;
    };
    if !root_for("postgresql") {
        return;
    }
    let postgres = bindir.join("postgres");
    let truth = package_version(&postgres);
    let ip = daemon_ip("daemon-postgres");
    let tmp = TempDir::new("daemon-postgres");
    let data = tmp.path().join("data");
    let sockets = tmp.path().join("sockets");
    for dir in [&data, &sockets] {
        std::fs::create_dir(dir).expect("create dir");
        chown_to(dir, "postgres");
    }
    let mut cmd = as_user("postgres", &bindir.join("initdb"));
    cmd.arg("-D")
        .arg(&data)
        .args(["--auth=trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
        .args(["--locale=C"])
        .current_dir(tmp.path());
    setup("initdb", cmd);
    let port = free_port(ip);
    let mut cmd = as_user("postgres", &postgres);
    cmd.arg("-D")
        .arg(&data)
        .args(["-p", &port.to_string(), "-k"])
        .arg(&sockets)
        .args(["-c", &format!("listen_addresses={ip}"), "-c", "fsync=off"])
        .current_dir(tmp.path());
    // SIGINT: PostgreSQL's fast shutdown (SIGTERM waits for clients to leave).
    let mut daemon = Daemon::start("postgres", cmd, &tmp.path().join("postgres.log"), "INT");
    daemon.wait_listening(&[SocketAddr::new(ip, port)]);

    for backend in backends(ip) {
        eprintln!("postgres, backend {backend}");
        // The identify probe (an HTTP request) is no startup packet: PostgreSQL closes
        // without a word. Its SSLRequest answer, which the preset reads, names it.
        let r = &scan(backend, ip, &[port], &["--preset", "postgres"])[&port];
        assert_matched(r);
        assert_eq!(r.str("banner"), Some("N"), "ssl is off: {:?}", r.fields);
        assert_identity(r, "postgresql", "PostgreSQL", Version::IfAny(&truth));
        let r = &scan(
            backend,
            ip,
            &[port],
            &[
                "--send",
                r"\x00\x00\x00\x08\x04\xd2\x16\x2f",
                "--expect",
                "^S",
            ],
        )[&port];
        assert_fails_at(r, 2, "wanted ^S", "got 'N'");
    }
}

#[test]
fn mariadb_greeting_names_its_version() {
    let Some([mariadbd, install_db]) =
        programs("mariadb-server", ["mariadbd", "mariadb-install-db"])
    else {
        return;
    };
    if !root_for("mariadb") {
        return;
    }
    let truth = package_version(&mariadbd);
    let ip = daemon_ip("daemon-mariadb");
    let tmp = TempDir::new("daemon-mariadb");
    let data = tmp.path().join("data");
    let mut cmd = Command::new(&install_db);
    cmd.arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .args(["--user=root", "--auth-root-authentication-method=normal"])
        .args(["--skip-test-db", "--skip-name-resolve"])
        .current_dir(tmp.path());
    setup("mariadb-install-db", cmd);
    let port = free_port(ip);
    let d = tmp.path().display();
    let mut cmd = Command::new(&mariadbd);
    cmd.arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--port={port}"))
        .arg(format!("--bind-address={ip}"))
        .arg(format!("--socket={d}/mysqld.sock"))
        .arg(format!("--pid-file={d}/mysqld.pid"))
        .args(["--user=root", "--skip-log-bin", "--skip-name-resolve"])
        .args(["--innodb-buffer-pool-size=16M"]);
    let mut daemon = Daemon::start("mariadbd", cmd, &tmp.path().join("mariadbd.log"), "TERM");
    daemon.wait_listening(&[SocketAddr::new(ip, port)]);

    for backend in backends(ip) {
        eprintln!("mariadbd, backend {backend}");
        let r = &scan(backend, ip, &[port], &["--identify"])[&port];
        assert_identity(r, "mysql", "MariaDB", Version::Exact(&truth));
        let r = &scan(backend, ip, &[port], &["--preset", "mysql"])[&port];
        assert_matched(r);
        assert_identity(r, "mysql", "MariaDB", Version::Exact(&truth));
        let r = &scan(backend, ip, &[port], &["--expect", "^HTTP/"])[&port];
        assert_fails_at(r, 1, "wanted ^HTTP/", &format!("5.5.5-{truth}-MariaDB"));
    }
}
