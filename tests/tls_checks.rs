//! TLS checks (issue 11 items 5, 6, 7, 13, 14) against real TLS servers: `openssl s_server`
//! with TLS 1.2 and 1.3, certificates this test makes with `openssl` (a root, an intermediate
//! that expires first, good, expired, not-yet-valid, wrong-name and self-signed leaves, a
//! client certificate). Asserted through `check` (exit codes, status lines), `scan --format
//! jsonl` (fields), the API (a sweep's results) and a monitor (its target's last reason).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::daemon_util::{free_port, now_unix, setup, DAY};
use crate::serve::{submit, wait_ended};
use crate::util::{http, parse_jsonl, run, stdout, test_hosts, which, Serve, TempDir};

/// `20261223200916Z`, as `openssl ca -startdate/-enddate` takes it.
fn openssl_time(t: i64) -> String {
    let out = Command::new("date")
        .args(["-u", "-d", &format!("@{t}"), "+%Y%m%d%H%M%SZ"])
        .output()
        .expect("date");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A certificate and its key, as files.
#[derive(Debug, Clone)]
struct Pem {
    cert: PathBuf,
    key: PathBuf,
}

/// A small PKI made with `openssl`: a root, an intermediate signed by it, and leaves.
struct Pki {
    dir: PathBuf,
    root: Pem,
    intermediate: Pem,
    /// Subjects as porthawk prints them.
    intermediate_subject: String,
    /// When the intermediate ends: before any good leaf does.
    intermediate_not_after: i64,
}

impl Pki {
    /// `None` (with the skip message, a failure under CI=true) without openssl.
    fn new(dir: &Path) -> Option<Pki> {
        if crate::util::require(
            "openssl",
            which("openssl").map_or(Some("not installed".into()), |_| None),
        )
        .is_err()
        {
            return None;
        }
        let dir = dir.join("pki");
        std::fs::create_dir_all(&dir).expect("pki dir");
        std::fs::write(dir.join("index.txt"), "").expect("index");
        std::fs::write(dir.join("serial"), "2000\n").expect("serial");
        let now = now_unix();
        let root = Pem {
            cert: dir.join("root.pem"),
            key: dir.join("root.key"),
        };
        genkey(&root.key);
        let mut cmd = Command::new("openssl");
        cmd.args(["req", "-x509", "-new", "-key"])
            .arg(&root.key)
            .args(["-subj", "/O=porthawk tests/CN=Test Root", "-days", "3650"])
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out"])
            .arg(&root.cert);
        setup("openssl req -x509 (root)", cmd);
        let mut pki = Pki {
            dir,
            intermediate: root.clone(),
            root,
            intermediate_subject: "O=porthawk tests, CN=Test Intermediate".into(),
            intermediate_not_after: now + 10 * DAY + DAY / 2,
        };
        let root = pki.root.clone();
        pki.intermediate = pki.sign(
            "intermediate",
            "Test Intermediate",
            &root,
            now - 30 * DAY,
            pki.intermediate_not_after,
            "basicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\n",
        );
        Some(pki)
    }

    /// A certificate for `cn` signed by `issuer`, valid from `not_before` to `not_after`,
    /// with `extensions` (openssl config lines).
    fn sign(
        &self,
        file: &str,
        cn: &str,
        issuer: &Pem,
        not_before: i64,
        not_after: i64,
        extensions: &str,
    ) -> Pem {
        let pem = Pem {
            cert: self.dir.join(format!("{file}.pem")),
            key: self.dir.join(format!("{file}.key")),
        };
        genkey(&pem.key);
        let csr = self.dir.join(format!("{file}.csr"));
        let mut cmd = Command::new("openssl");
        cmd.args(["req", "-new", "-key"])
            .arg(&pem.key)
            .args(["-subj", &format!("/O=porthawk tests/CN={cn}"), "-out"])
            .arg(&csr);
        setup("openssl req", cmd);
        let d = self.dir.display();
        let config = self.dir.join(format!("{file}.cnf"));
        std::fs::write(
            &config,
            format!(
                "[ca]\ndefault_ca = test_ca\n\
                 [test_ca]\ndatabase = {d}/index.txt\nnew_certs_dir = {d}\nserial = {d}/serial\n\
                 default_md = sha256\npolicy = test_policy\nunique_subject = no\n\
                 copy_extensions = none\nx509_extensions = ext\n\
                 [test_policy]\norganizationName = supplied\ncommonName = supplied\n\
                 [ext]\nsubjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n{extensions}"
            ),
        )
        .expect("write ca config");
        let mut cmd = Command::new("openssl");
        cmd.args(["ca", "-batch", "-notext", "-config"])
            .arg(&config)
            .arg("-cert")
            .arg(&issuer.cert)
            .arg("-keyfile")
            .arg(&issuer.key)
            .arg("-in")
            .arg(&csr)
            .arg("-out")
            .arg(&pem.cert)
            .args(["-startdate", &openssl_time(not_before)])
            .args(["-enddate", &openssl_time(not_after)]);
        setup("openssl ca", cmd);
        pem
    }

    /// A server certificate for `names` (DNS names) signed by the intermediate.
    fn leaf(&self, file: &str, names: &str, not_before: i64, not_after: i64) -> Pem {
        let san: Vec<String> = names.split(',').map(|n| format!("DNS:{n}")).collect();
        self.sign(
            file,
            names.split(',').next().unwrap_or(names),
            &self.intermediate.clone(),
            not_before,
            not_after,
            &format!(
                "basicConstraints = CA:FALSE\nextendedKeyUsage = serverAuth\n\
                 subjectAltName = {}\n",
                san.join(",")
            ),
        )
    }

    /// A self-signed server certificate for `name`.
    fn self_signed(&self, name: &str) -> Pem {
        let pem = Pem {
            cert: self.dir.join("self.pem"),
            key: self.dir.join("self.key"),
        };
        genkey(&pem.key);
        let mut cmd = Command::new("openssl");
        cmd.args(["req", "-x509", "-new", "-key"])
            .arg(&pem.key)
            .args([
                "-subj",
                &format!("/O=porthawk tests/CN={name}"),
                "-days",
                "300",
            ])
            .args(["-addext", &format!("subjectAltName=DNS:{name}"), "-out"])
            .arg(&pem.cert);
        setup("openssl req -x509 (self-signed)", cmd);
        pem
    }

    /// A client certificate signed by the root.
    fn client(&self) -> Pem {
        let now = now_unix();
        let root = self.root.clone();
        self.sign(
            "client",
            "porthawk client",
            &root,
            now - DAY,
            now + 300 * DAY,
            "basicConstraints = CA:FALSE\nextendedKeyUsage = clientAuth\n",
        )
    }
}

fn genkey(path: &Path) {
    let mut cmd = Command::new("openssl");
    cmd.args([
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
    ])
    .arg(path);
    setup("openssl genpkey", cmd);
}

/// An `openssl s_server`, stopped (by its handle) on drop.
struct TlsServer {
    child: Child,
    addr: SocketAddr,
}

impl TlsServer {
    /// `openssl s_server` on a free port of `ip` with `cert` (and the intermediate, when
    /// `chain` is given) and `extra` arguments (`-tls1_2`, `-Verify 1`, `-www`, ...).
    fn start(ip: IpAddr, cert: &Pem, chain: Option<&Path>, extra: &[&str]) -> TlsServer {
        let addr = SocketAddr::new(ip, free_port(ip));
        let mut cmd = Command::new("openssl");
        cmd.args(["s_server", "-quiet", "-accept"])
            .arg(addr.to_string())
            .arg("-cert")
            .arg(&cert.cert)
            .arg("-key")
            .arg(&cert.key);
        if let Some(chain) = chain {
            cmd.arg("-cert_chain").arg(chain);
        }
        cmd.args(extra);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start openssl s_server");
        let server = TlsServer { child, addr };
        crate::util::wait_accepting(addr, "openssl s_server");
        server
    }

    fn target(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `porthawk check` with `args`: (exit code, status line).
fn check(args: &[&str]) -> (i32, String) {
    let mut argv = vec!["check"];
    argv.extend_from_slice(args);
    let out = run(&argv);
    let code = out.status.code().unwrap_or(-1);
    let text = format!("{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    (code, text.trim().to_string())
}

/// `porthawk scan --format jsonl --all` of one server with `args`: its one result.
fn scan_one(server: &TlsServer, args: &[&str]) -> crate::util::Record {
    let ip = server.addr.ip().to_string();
    let port = server.addr.port().to_string();
    let mut argv = vec!["scan", &ip, "-p", &port, "--all", "--format", "jsonl"];
    argv.extend_from_slice(args);
    let out = run(&argv);
    assert!(
        out.status.success(),
        "{argv:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records = parse_jsonl(&stdout(&out));
    assert_eq!(records.len(), 1, "{}", stdout(&out));
    records.into_iter().next().unwrap_or_else(|| unreachable!())
}

/// Each cause of a failed verification, over TLS 1.2 and 1.3, from `check` (CRITICAL with
/// the cause) and `scan` (matched false, the cause in the reason, the certificate still
/// reported); a good chain verifies, and without `--verify` nothing is judged.
#[test]
fn verification_failures_name_their_cause() {
    let ip = test_hosts("tls-verify", 1)[0];
    let dir = TempDir::new("tls-verify");
    let Some(pki) = Pki::new(dir.path()) else {
        return;
    };
    let now = now_unix();
    let chain = pki.intermediate.cert.clone();
    let good = pki.leaf("good", "good.test", now - DAY, now + 200 * DAY);
    let expired = pki.leaf(
        "expired",
        "expired.test",
        now - 60 * DAY,
        now - 2 * DAY - DAY / 2,
    );
    let future = pki.leaf("future", "future.test", now + 5 * DAY, now + 200 * DAY);
    let wrong = pki.leaf("wrong", "other.test", now - DAY, now + 200 * DAY);
    let own = pki.self_signed("self.test");
    let root = pki.root.cert.display().to_string();
    for version in ["-tls1_2", "-tls1_3"] {
        let cases: [(&Pem, bool, &str, i32, &str); 6] = [
            (&good, true, "good.test", 0, "OK - "),
            (
                &expired,
                true,
                "expired.test",
                2,
                "certificate expired: 'O=porthawk tests, CN=expired.test' ended ",
            ),
            (
                &future,
                true,
                "future.test",
                2,
                "certificate not yet valid: 'O=porthawk tests, CN=future.test' starts ",
            ),
            (
                &wrong,
                true,
                "good.test",
                2,
                "name mismatch: 'O=porthawk tests, CN=other.test' is not valid for good.test",
            ),
            (
                &own,
                false,
                "self.test",
                2,
                "self-signed certificate 'O=porthawk tests, CN=self.test'",
            ),
            // The good chain against the system's roots: the test root is not one of them.
            (
                &good,
                true,
                "good.test",
                2,
                "unknown issuer 'O=porthawk tests, CN=Test Root'",
            ),
        ];
        for (i, (pem, with_chain, sni, want_code, want)) in cases.into_iter().enumerate() {
            let server =
                TlsServer::start(ip, pem, with_chain.then_some(chain.as_path()), &[version]);
            let target = server.target();
            let mut args = vec![
                target.as_str(),
                "--tls",
                "--verify",
                "--sni",
                sni,
                "--cert-warn-days",
                "3",
                "--cert-crit-days",
                "1",
            ];
            if i < 5 {
                args.extend_from_slice(&["--ca-file", &root]);
            }
            let (code, line) = check(&args);
            assert_eq!(code, want_code, "{version} {sni}: {line}");
            assert!(
                line.contains(want),
                "{version} {sni}: wanted {want:?} in {line}"
            );
            if want_code == 2 {
                assert!(line.contains("certificate verification failed: "), "{line}");
                let mut scan_args = vec!["--tls", "--verify", "--sni", sni];
                if i < 5 {
                    scan_args.extend_from_slice(&["--ca-file", &root]);
                }
                let r = scan_one(&server, &scan_args);
                assert_eq!(
                    r.fields["matched"],
                    json!(false),
                    "{version} {sni}: {:?}",
                    r.fields
                );
                let reason = r.str("reason").unwrap_or_default();
                assert!(reason.contains(want), "{version} {sni}: {reason}");
                // The certificate is reported all the same.
                assert!(
                    r.str("cert_subject")
                        .is_some_and(|s| s.starts_with("O=porthawk tests")),
                    "{:?}",
                    r.fields
                );
                let want_version = if version == "-tls1_2" {
                    "TLSv1.2"
                } else {
                    "TLSv1.3"
                };
                assert_eq!(r.str("tls_version"), Some(want_version));
            }
            // Reporting without judging stays the default: the expired leaf is reported,
            // not refused, and its days left decide.
            if i == 1 {
                let (code, line) = check(&[&target, "--tls", "--sni", sni]);
                assert_eq!(code, 2, "{line}");
                assert!(line.contains("certificate expired 3 days ago"), "{line}");
                assert!(!line.contains("verification"), "{line}");
            }
        }
    }
}

/// The chain's first certificate to expire is the intermediate: `cert_days_left`,
/// `cert_not_after` and the thresholds use it, `cert_expires_first` names it, and `check`
/// says which certificate it is.
#[test]
fn the_earliest_expiry_of_the_chain_counts() {
    let ip = test_hosts("tls-chain-expiry", 1)[0];
    let dir = TempDir::new("tls-chain-expiry");
    let Some(pki) = Pki::new(dir.path()) else {
        return;
    };
    let now = now_unix();
    let leaf = pki.leaf("leaf", "leaf.test", now - DAY, now + 200 * DAY + DAY / 2);
    let server = TlsServer::start(ip, &leaf, Some(&pki.intermediate.cert), &["-tls1_3"]);
    let target = server.target();
    let (code, line) = check(&[&target, "--tls"]);
    assert_eq!(code, 1, "{line}");
    assert!(
        line.contains(&format!(
            "certificate '{}' of the chain expires in 10 days",
            pki.intermediate_subject
        )),
        "{line}"
    );
    assert!(line.ends_with("cert_days=10;21;7;;"), "{line}");
    let (code, line) = check(&[&target, "--tls", "--cert-crit-days", "12"]);
    assert_eq!(code, 2, "{line}");
    let r = scan_one(&server, &["--tls"]);
    assert_eq!(
        r.str("cert_subject"),
        Some("O=porthawk tests, CN=leaf.test")
    );
    assert_eq!(
        r.str("cert_expires_first"),
        Some(pki.intermediate_subject.as_str())
    );
    assert_eq!(r.fields["cert_days_left"], json!(10));
    assert_eq!(
        r.str("cert_not_after"),
        Some(crate::daemon_util::rfc3339(pki.intermediate_not_after).as_str())
    );
    // A server that sends its leaf alone: the leaf is the chain's first expiry.
    drop(server);
    let server = TlsServer::start(ip, &leaf, None, &["-tls1_2"]);
    let r = scan_one(&server, &["--tls"]);
    assert_eq!(
        r.str("cert_expires_first"),
        Some("O=porthawk tests, CN=leaf.test")
    );
    assert_eq!(r.fields["cert_days_left"], json!(200));
}

/// `--sni` names the virtual host: a server with a default certificate and another for
/// `good.test` (s_server's `-servername`/`-cert2`) shows the one the name asks for.
#[test]
fn sni_names_the_virtual_host() {
    let ip = test_hosts("tls-sni", 1)[0];
    let dir = TempDir::new("tls-sni");
    let Some(pki) = Pki::new(dir.path()) else {
        return;
    };
    let now = now_unix();
    let default = pki.leaf("default", "default.test", now - DAY, now + 200 * DAY);
    let good = pki.leaf("vhost", "good.test", now - DAY, now + 200 * DAY);
    let (cert2, key2) = (
        good.cert.display().to_string(),
        good.key.display().to_string(),
    );
    // s_server sends its -cert_chain with the default certificate only: the virtual host's
    // leaf comes alone, so the intermediate is trusted beside the root.
    let bundle = dir.path().join("bundle.pem");
    let pem = |p: &Path| std::fs::read_to_string(p).expect("read pem");
    std::fs::write(&bundle, pem(&pki.root.cert) + &pem(&pki.intermediate.cert)).expect("bundle");
    let server = TlsServer::start(
        ip,
        &default,
        Some(&pki.intermediate.cert),
        &["-servername", "good.test", "-cert2", &cert2, "-key2", &key2],
    );
    let r = scan_one(&server, &["--tls"]);
    assert_eq!(
        r.str("cert_subject"),
        Some("O=porthawk tests, CN=default.test")
    );
    let r = scan_one(&server, &["--tls", "--sni", "good.test"]);
    assert_eq!(
        r.str("cert_subject"),
        Some("O=porthawk tests, CN=good.test")
    );
    // And the name is what the certificate is verified against.
    let root = bundle.display().to_string();
    let target = server.target();
    let (code, line) = check(&[
        &target,
        "--tls",
        "--verify",
        "--ca-file",
        &root,
        "--sni",
        "good.test",
        "--cert-warn-days",
        "3",
    ]);
    assert!(code == 0 || line.contains("expires in"), "{line}");
    assert!(!line.contains("verification failed"), "{line}");
    let (code, line) = check(&[&target, "--tls", "--verify", "--ca-file", &root]);
    assert_eq!(code, 2, "{line}");
    assert!(line.contains(&format!("is not valid for {}", ip)), "{line}");
    // Options that need TLS are refused without it, naming the flag.
    let (code, line) = check(&[&target, "--sni", "good.test"]);
    assert_eq!(code, 3, "{line}");
    assert!(line.contains("--sni"), "{line}");
}

/// A server that requires a client certificate (`-Verify 1`): with the certificate the
/// dialog runs; without it `--expect-alert` passes on the alert it answers with (TLS 1.3:
/// `certificate_required`, after the handshake; TLS 1.2: `handshake_failure`), and fails
/// naming both alerts when it is another.
#[test]
fn client_certificates_and_expected_alerts() {
    let ip = test_hosts("tls-client-cert", 1)[0];
    let dir = TempDir::new("tls-client-cert");
    let Some(pki) = Pki::new(dir.path()) else {
        return;
    };
    let now = now_unix();
    let leaf = pki.leaf("server", "server.test", now - DAY, now + 200 * DAY);
    let client = pki.client();
    let root = pki.root.cert.display().to_string();
    let (cert, key) = (
        client.cert.display().to_string(),
        client.key.display().to_string(),
    );
    for (version, alert, other) in [
        ("-tls1_3", "certificate_required", "handshake_failure"),
        ("-tls1_2", "handshake_failure", "certificate_required"),
    ] {
        let server = TlsServer::start(
            ip,
            &leaf,
            Some(&pki.intermediate.cert),
            &[
                version,
                "-Verify",
                "1",
                "-CAfile",
                &root,
                "-verify_return_error",
                "-www",
            ],
        );
        let target = server.target();
        let warn = ["--cert-warn-days", "3", "--cert-crit-days", "1"];
        let with = |extra: &[&str]| {
            let mut a = vec![target.as_str()];
            a.extend_from_slice(extra);
            a.extend_from_slice(&warn);
            check(&a)
        };
        // With the client certificate, HTTP over TLS answers.
        let http = [
            "--tls",
            "--send",
            "GET / HTTP/1.0\\r\\n\\r\\n",
            "--expect",
            "^HTTP/1",
        ];
        let mut args = http.to_vec();
        args.extend_from_slice(&["--cert", &cert, "--key", &key]);
        let (code, line) = with(&args);
        assert_eq!(code, 0, "{version}: {line}");
        // Without it, the HTTP read meets the server's refusal.
        let (code, line) = with(&http);
        assert_eq!(code, 2, "{version}: {line}");
        assert!(
            line.contains(&format!("got TLS alert {alert}")),
            "{version}: {line}"
        );
        // The refusal is what this check wants (on either backend: both drive the same
        // dialog).
        for backend in ["epoll", "auto"] {
            let (code, line) = with(&["--expect-alert", alert, "--backend", backend]);
            assert_eq!(code, 0, "{version} {backend}: {line}");
        }
        let (code, line) = with(&["--expect-alert", other]);
        assert_eq!(code, 2, "{version}: {line}");
        assert!(
            line.contains(&format!("got TLS alert {alert}, wanted {other}")),
            "{version}: {line}"
        );
        // A server that takes the client: no alert comes.
        let (code, line) = with(&[
            "--expect-alert",
            alert,
            "--cert",
            &cert,
            "--key",
            &key,
            "--read-timeout",
            "500ms",
        ]);
        assert_eq!(code, 2, "{version}: {line}");
        assert!(
            line.contains(&format!("wanted alert {alert}"))
                || line.contains(&format!("wanted TLS alert {alert}")),
            "{version}: {line}"
        );
        let r = scan_one(&server, &["--expect-alert", alert]);
        assert_eq!(r.fields["matched"], json!(true), "{:?}", r.fields);
    }
    // Files are read once, at start; errors name the file.
    let (code, line) = check(&[
        "127.0.0.1:1",
        "--tls",
        "--cert",
        "/nonexistent/client.pem",
        "--key",
        &key,
    ]);
    assert_eq!(code, 3, "{line}");
    assert!(line.contains("/nonexistent/client.pem"), "{line}");
    let (code, line) = check(&["127.0.0.1:1", "--tls", "--cert", &cert, "--key", &root]);
    assert_eq!(code, 3, "{line}");
    assert!(line.contains(&root) && line.contains("--key"), "{line}");
    let (code, line) = check(&["127.0.0.1:1", "--expect-alert", "no_such_alert"]);
    assert_eq!(code, 3, "{line}");
    assert!(line.contains("unknown TLS alert 'no_such_alert'"), "{line}");
}

/// The API and a monitor get the same checks from the same fields: `tls_verify`,
/// `tls_ca_file`, `sni`, `tls_cert`, `tls_key`, `expect_alert`.
#[test]
fn the_api_and_monitors_verify_and_expect_alerts() {
    let ip = test_hosts("tls-api-monitor", 1)[0];
    let dir = TempDir::new("tls-api-monitor");
    let Some(pki) = Pki::new(dir.path()) else {
        return;
    };
    let now = now_unix();
    let expired = pki.leaf(
        "expired",
        "expired.test",
        now - 60 * DAY,
        now - 2 * DAY - DAY / 2,
    );
    let server = TlsServer::start(ip, &expired, Some(&pki.intermediate.cert), &["-tls1_3"]);
    let good = pki.leaf("good", "good.test", now - DAY, now + 200 * DAY);
    let strict = TlsServer::start(
        ip,
        &good,
        Some(&pki.intermediate.cert),
        &[
            "-tls1_3",
            "-Verify",
            "1",
            "-CAfile",
            &pki.root.cert.display().to_string(),
            "-verify_return_error",
        ],
    );
    let root = pki.root.cert.display().to_string();
    let config = dir.write(
        "porthawk.toml",
        &format!(
            "[[monitor]]\nname = \"expired\"\ntargets = [\"{ip}\"]\nports = \"{}\"\ninterval = \"1s\"\n\
             tls = true\ntls_verify = true\ntls_ca_file = \"{root}\"\nsni = \"expired.test\"\n\
             fail_after = 1\n\n\
             [[monitor]]\nname = \"strict\"\ntargets = [\"{ip}\"]\nports = \"{}\"\ninterval = \"1s\"\n\
             expect_alert = \"certificate_required\"\nfail_after = 1\n",
            server.addr.port(),
            strict.addr.port()
        ),
    );
    let data = TempDir::new("tls-api-monitor-data");
    let mut cmd = Serve::command(data.path());
    cmd.arg("--config").arg(&config);
    let serve = Serve::spawn(cmd);
    // The API: a sweep with the same checks.
    let body = json!({
        "targets": [ip.to_string()],
        "ports": server.addr.port().to_string(),
        "store": "all",
        "probe": {"tls": true, "tls_verify": true, "tls_ca_file": root, "sni": "expired.test"},
    })
    .to_string();
    let id = submit(serve.addr, &body);
    assert_eq!(wait_ended(serve.addr, id)["state"], "done");
    let (code, text) = http(serve.addr, "GET", &format!("/v1/sweeps/{id}/results"), None);
    assert_eq!(code, 200, "{text}");
    let r: Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(r["matched"], json!(false), "{r}");
    let reason = r["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("certificate expired: 'O=porthawk tests, CN=expired.test'"),
        "{r}"
    );
    assert_eq!(
        r["cert_expires_first"],
        json!("O=porthawk tests, CN=expired.test"),
        "{r}"
    );
    // A bad field is a 400 naming it.
    let bad = json!({"targets": [ip.to_string()], "ports": "1", "probe": {"tls": true, "expect_alert": "nope"}}).to_string();
    let (code, reply) = serve.http_json("POST", "/v1/sweeps", Some(&bad));
    assert_eq!(code, 400, "{reply}");
    assert!(reply.to_string().contains("probe.expect_alert"), "{reply}");
    // The monitors: one down with the verification's reason, one up on the expected alert.
    let deadline = Instant::now() + Duration::from_secs(30);
    let last = |name: &str| -> Value {
        let (code, v) = serve.http_json("GET", &format!("/v1/monitors/{name}"), None);
        assert_eq!(code, 200, "{v}");
        v["target_list"][0].clone()
    };
    loop {
        let (e, s) = (last("expired"), last("strict"));
        let reason = e["last"]["reason"].as_str().unwrap_or_default().to_string();
        if reason.contains("certificate expired") && s["last"]["ok"] == json!(true) {
            assert_eq!(e["last"]["ok"], json!(false), "{e}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "monitors did not report: {e} {s}"
        );
        thread::sleep(Duration::from_millis(200));
    }
    serve.stop();
}

// ---------------------------------------------------------------------------------------------
// Presets against real daemons (slapd, prosody, ngircd) and a scripted NNTP server

/// `check` and `scan` of one preset: (exit code, status line) and the jsonl record.
fn preset_check(addr: SocketAddr, args: &[&str]) -> (i32, String, crate::util::Record) {
    let target = addr.to_string();
    let mut argv = vec![target.as_str()];
    argv.extend_from_slice(args);
    let (code, line) = check(&argv);
    let ip = addr.ip().to_string();
    let port = addr.port().to_string();
    let mut scan = vec!["scan", &ip, "-p", &port, "--all", "--format", "jsonl"];
    // The certificate thresholds are check's own.
    let mut rest = args.iter();
    while let Some(&a) = rest.next() {
        if a.starts_with("--cert-") && a.ends_with("-days") {
            rest.next();
        } else {
            scan.push(a);
        }
    }
    let out = run(&scan);
    assert!(
        out.status.success(),
        "{scan:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let record = parse_jsonl(&stdout(&out))
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no result from {scan:?}"));
    (code, line, record)
}

/// The ldap preset against OpenLDAP's slapd: StartTLS answered success, then the handshake
/// (the certificate is reported); a slapd without TLS refuses StartTLS, and the check fails
/// naming the LDAP error.
#[test]
fn ldap_preset_starts_tls_with_slapd() {
    let Some([slapd]) = crate::daemon_util::programs("slapd", ["slapd"]) else {
        return;
    };
    let ip = test_hosts("tls-slapd", 1)[0];
    let dir = TempDir::new("tls-slapd");
    let Some(pki) = Pki::new(dir.path()) else {
        return;
    };
    let now = now_unix();
    let leaf = pki.leaf("ldap", "ldap.test", now - DAY, now + 200 * DAY);
    let mut daemons = Vec::new();
    let mut addrs = Vec::new();
    for (name, tls) in [("with-tls", true), ("without-tls", false)] {
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d).expect("slapd dir");
        let mut conf = format!(
            "include /etc/ldap/schema/core.schema\npidfile {0}/slapd.pid\nargsfile {0}/slapd.args\n",
            d.display()
        );
        if tls {
            conf.push_str(&format!(
                "TLSCertificateFile {}\nTLSCertificateKeyFile {}\n",
                leaf.cert.display(),
                leaf.key.display()
            ));
        }
        std::fs::write(d.join("slapd.conf"), conf).expect("slapd.conf");
        let addr = SocketAddr::new(ip, free_port(ip));
        let mut cmd = Command::new(&slapd);
        cmd.args(["-d", "0", "-f"])
            .arg(d.join("slapd.conf"))
            .arg("-h")
            .arg(format!("ldap://{addr}/"));
        let mut daemon =
            crate::daemon_util::Daemon::start("slapd", cmd, &d.join("slapd.log"), "TERM");
        daemon.wait_listening(&[addr]);
        daemons.push(daemon);
        addrs.push(addr);
    }
    let (code, line, r) = preset_check(addrs[0], &["--preset", "ldap", "--cert-warn-days", "3"]);
    assert_eq!(code, 0, "{line}");
    assert_eq!(r.fields["matched"], json!(true), "{:?}", r.fields);
    assert_eq!(
        r.str("cert_subject"),
        Some("O=porthawk tests, CN=ldap.test")
    );
    assert!(r
        .str("tls_version")
        .is_some_and(|v| v.starts_with("TLSv1.")));
    let (code, line, r) = preset_check(addrs[1], &["--preset", "ldap"]);
    assert_eq!(code, 2, "{line}");
    assert!(line.contains("step 2: got '0"), "{line}");
    assert!(
        line.contains("which matches reject an LDAP error"),
        "{line}"
    );
    assert_eq!(r.fields["matched"], json!(false), "{:?}", r.fields);
    assert!(r.str("tls_version").is_none(), "{:?}", r.fields);
    drop(daemons);
}

/// The xmpp preset against Prosody: the stream addressed to the domain (`--sni`), features
/// that offer STARTTLS, `<proceed/>`, then the handshake; a stream to no domain is refused
/// with a stream error, and the check says so.
#[test]
fn xmpp_preset_starts_tls_with_prosody() {
    let Some([prosody]) = crate::daemon_util::programs("prosody", ["prosody"]) else {
        return;
    };
    let ip = test_hosts("tls-prosody", 1)[0];
    let dir = TempDir::new("tls-prosody");
    let Some(pki) = Pki::new(dir.path()) else {
        return;
    };
    let now = now_unix();
    let leaf = pki.leaf("xmpp", "chat.test", now - DAY, now + 200 * DAY);
    // Prosody sends the certificate file's chain.
    let chain = dir.path().join("xmpp-chain.pem");
    let pem = |p: &Path| std::fs::read_to_string(p).expect("read pem");
    std::fs::write(&chain, pem(&leaf.cert) + &pem(&pki.intermediate.cert)).expect("chain");
    let addr = SocketAddr::new(ip, free_port(ip));
    let d = dir.path();
    std::fs::create_dir_all(d.join("data")).expect("prosody data");
    let conf = d.join("prosody.cfg.lua");
    std::fs::write(
        &conf,
        format!(
            "run_as_root = true\ndaemonize = false\npidfile = \"{0}/prosody.pid\"\n\
             data_path = \"{0}/data\"\nmodules_enabled = {{ \"tls\", \"saslauth\", \"disco\" }}\n\
             modules_disabled = {{ \"s2s\" }}\nc2s_ports = {{ {port} }}\n\
             c2s_interfaces = {{ \"{ip}\" }}\ns2s_ports = {{ }}\nhttp_ports = {{ }}\n\
             https_ports = {{ }}\nc2s_direct_tls_ports = {{ }}\nc2s_require_encryption = true\n\
             log = {{ {{ levels = {{ min = \"info\" }}, to = \"console\" }} }}\n\
             VirtualHost \"chat.test\"\n  ssl = {{ certificate = \"{cert}\", key = \"{key}\" }}\n",
            d.display(),
            port = addr.port(),
            cert = chain.display(),
            key = leaf.key.display(),
        ),
    )
    .expect("prosody config");
    let mut cmd = Command::new(&prosody);
    cmd.arg("--config").arg(&conf);
    let mut daemon =
        crate::daemon_util::Daemon::start("prosody", cmd, &d.join("prosody.log"), "TERM");
    daemon.wait_listening(&[addr]);
    let (code, line, r) = preset_check(
        addr,
        &[
            "--preset",
            "xmpp",
            "--sni",
            "chat.test",
            "--cert-warn-days",
            "3",
        ],
    );
    assert_eq!(code, 0, "{line}");
    assert_eq!(r.fields["matched"], json!(true), "{:?}", r.fields);
    assert_eq!(
        r.str("cert_subject"),
        Some("O=porthawk tests, CN=chat.test")
    );
    // Verified against the test's root, for the domain.
    let root = pki.root.cert.display().to_string();
    let (code, line, _) = preset_check(
        addr,
        &[
            "--preset",
            "xmpp",
            "--sni",
            "chat.test",
            "--verify",
            "--ca-file",
            &root,
            "--cert-warn-days",
            "3",
        ],
    );
    assert!(!line.contains("verification failed"), "{line}");
    assert!(
        code == 0 || code == 2 && line.contains("unknown issuer"),
        "{line}"
    );
    let (code, line, r) = preset_check(addr, &["--preset", "xmpp"]);
    assert_eq!(code, 2, "{line}");
    assert!(line.contains("step 2: "), "{line}");
    assert!(
        line.contains("an XMPP stream error or features without <starttls/>"),
        "{line}"
    );
    assert_eq!(r.fields["matched"], json!(false));
    // Checked by its name (in a private /etc/hosts), the stream goes to that name: no
    // --sni needed; `--verify` checks the certificate for it too.
    if crate::names::can_run("xmpp_preset_by_name") {
        let hosts = dir.path().join("hosts");
        std::fs::write(&hosts, format!("127.0.0.1 localhost\n{ip} chat.test\n")).expect("hosts");
        let target = format!("chat.test:{}", addr.port());
        for extra in [&[][..], &["--verify", "--ca-file", &root][..]] {
            let mut args = vec!["check", target.as_str(), "--preset", "xmpp"];
            args.extend_from_slice(&["--cert-warn-days", "3"]);
            args.extend_from_slice(extra);
            let out = crate::util::run_command(
                crate::names::private_hosts(&hosts, &args),
                None,
                crate::util::RUN_TIMEOUT,
            );
            let line = stdout(&out);
            assert_eq!(out.status.code(), Some(0), "{args:?}: {line}");
            assert!(
                line.starts_with("PORTHAWK OK - ") && line.contains(&format!("via {ip}")),
                "{line}"
            );
        }
    }
    drop(daemon);
}

/// The irc and ircs presets against ngIRCd: registration answered (001, or 433 while an
/// earlier check's nick lingers) on the plain and the TLS port.
#[test]
fn irc_presets_register_with_ngircd() {
    let Some([ngircd]) = crate::daemon_util::programs("ngircd", ["ngircd"]) else {
        return;
    };
    let ip = test_hosts("tls-ngircd", 1)[0];
    let dir = TempDir::new("tls-ngircd");
    let Some(pki) = Pki::new(dir.path()) else {
        return;
    };
    let now = now_unix();
    let leaf = pki.leaf("irc", "irc.test", now - DAY, now + 200 * DAY);
    let chain = dir.path().join("irc-chain.pem");
    let pem = |p: &Path| std::fs::read_to_string(p).expect("read pem");
    std::fs::write(&chain, pem(&leaf.cert) + &pem(&pki.intermediate.cert)).expect("chain");
    let (plain, tls) = (free_port(ip), free_port(ip));
    let conf = dir.path().join("ngircd.conf");
    std::fs::write(
        &conf,
        format!(
            "[Global]\nName = irc.porthawk.test\nInfo = porthawk test\nListen = {ip}\n\
             Ports = {plain}\nPidFile = {}/ngircd.pid\nMotdPhrase = hello\n\
             [Options]\nPAM = no\nIdent = no\nDNS = no\n\
             [SSL]\nCertFile = {}\nKeyFile = {}\nPorts = {tls}\n",
            dir.path().display(),
            chain.display(),
            leaf.key.display()
        ),
    )
    .expect("ngircd.conf");
    let mut cmd = Command::new(&ngircd);
    cmd.args(["-n", "-f"]).arg(&conf);
    let mut daemon =
        crate::daemon_util::Daemon::start("ngircd", cmd, &dir.path().join("ngircd.log"), "TERM");
    let (plain, tls) = (SocketAddr::new(ip, plain), SocketAddr::new(ip, tls));
    daemon.wait_listening(&[plain, tls]);
    let (code, line, r) = preset_check(plain, &["--preset", "irc"]);
    assert_eq!(code, 0, "{line}");
    assert!(
        r.str("banner")
            .is_some_and(|b| b.starts_with(":irc.porthawk.test ")),
        "{:?}",
        r.fields
    );
    let (code, line, r) = preset_check(tls, &["--preset", "ircs", "--cert-warn-days", "3"]);
    assert_eq!(code, 0, "{line}");
    assert_eq!(
        r.str("cert_expires_first"),
        Some(pki.intermediate_subject.as_str())
    );
    // The plain port is no TLS port.
    let (code, line, _) = preset_check(plain, &["--preset", "ircs"]);
    assert_eq!(code, 2, "{line}");
    drop(daemon);
}

/// The nntp preset against a scripted server speaking INN's bytes (Debian's inn2 needs a
/// system-wide set-up to start): 200 passes, 502 fails naming the reply, and the client
/// says QUIT.
#[test]
fn nntp_preset_reads_the_greeting() {
    use std::io::{Read, Write};
    use std::net::TcpListener;
    let ip = test_hosts("tls-nntp", 1)[0];
    for (greeting, want_code) in [
        (
            &b"200 news.porthawk.test InterNetNews NNRP server INN 2.7.1 ready (posting ok)\r\n"[..],
            0,
        ),
        (b"502 You have no permission to talk.  Goodbye.\r\n", 2),
    ] {
        let listener = TcpListener::bind(SocketAddr::new(ip, 0)).expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = thread::spawn(move || {
            let mut heard = Vec::new();
            // check, then scan: two connections.
            for _ in 0..2 {
                let (mut s, _) = listener.accept().expect("accept");
                s.set_read_timeout(Some(Duration::from_secs(10)))
                    .expect("timeout");
                s.write_all(greeting).expect("greet");
                let mut buf = [0u8; 256];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    heard.extend_from_slice(&buf[..n]);
                    if heard.ends_with(b"QUIT\r\n") {
                        break;
                    }
                }
            }
            heard
        });
        let (code, line, r) = preset_check(addr, &["--preset", "nntp"]);
        assert_eq!(code, want_code, "{line}");
        let heard = server.join().expect("server thread");
        if want_code == 0 {
            assert_eq!(heard, b"QUIT\r\nQUIT\r\n");
            assert_eq!(r.fields["matched"], json!(true));
        } else {
            assert!(
                line.contains("step 1: got '502 You have no permission"),
                "{line}"
            );
            assert!(heard.is_empty(), "{heard:?}");
        }
    }
}
