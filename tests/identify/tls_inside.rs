//! `scan --identify` against services behind TLS, which the probe plan finds by itself (no
//! `--tls`): nginx with a TLS server (HTTP inside TLS), dovecot's imaps (IMAP inside TLS)
//! and `openssl s_server` without `-www` (a TLS server that says nothing inside). Each
//! starts on a free port of its own `127.a.b.1` with a throwaway configuration and a test
//! certificate; the port is unhinted, so the plan gets to TLS by the answers it reads (nginx's
//! complaint about plain HTTP, the ClientHello probe's ServerHello), with the default
//! `--max-probes`. The record carries the service inside and the TLS info (`tunnel="ssl"`
//! in nmap XML, nmap's `ssl/http`).

use std::net::{IpAddr, SocketAddr};
use std::process::{Child, ChildStdin, Command, Stdio};

use super::{assert_identity, identify_within, scan_identify};
use crate::daemon_util::{
    backends, daemon_ip, free_port, package_version, programs, root_for, upstream_version, Cert,
    CertMaker, Daemon, Nginx,
};
use crate::util::{Record, TempDir};

/// The record's TLS info: a TLS 1.2 or 1.3 handshake, and the test's certificate.
fn assert_tls(r: &Record, cert: &Cert) {
    let ctx = format!("{:?}", r.fields);
    let version = r.str("tls_version");
    assert!(
        matches!(version, Some("TLSv1.3" | "TLSv1.2")),
        "tls_version, {ctx}"
    );
    assert_eq!(r.str("cert_subject"), Some(cert.subject.as_str()), "{ctx}");
    assert_eq!(r.str("cert_issuer"), Some(cert.subject.as_str()), "{ctx}");
    assert!(r.str("cert_not_after").is_some(), "{ctx}");
}

#[test]
fn nginx_over_tls_is_http_inside_tls() {
    let ip = daemon_ip("identify::tls-nginx");
    let dir = TempDir::new("identify-tls-nginx");
    let Some(certs) = CertMaker::new(dir.path()) else {
        return;
    };
    let cert = certs.make_for_days("web.porthawk.test", 60);
    let Some(nginx) = Nginx::start(ip, dir.path(), std::slice::from_ref(&cert)) else {
        return;
    };
    let truth = upstream_version(&package_version(&nginx.program));
    let addr = nginx.https[0];
    for backend in backends(ip) {
        // nginx answers the plain HTTP probe with its `400 The plain HTTP request was sent
        // to HTTPS port`; the plan makes the handshake and asks `GET /` inside.
        let r = identify_within(addr, backend, None);
        assert_identity(&r, "http", Some("nginx"), Some(&truth));
        assert_tls(&r, &cert);
        let xml = scan_identify(addr, backend, None, "xml");
        let service = xml
            .lines()
            .find(|l| l.contains("<service "))
            .unwrap_or_else(|| panic!("{backend}: no service in {xml}"));
        assert!(service.contains("name=\"http\""), "{service}");
        assert!(service.contains("product=\"nginx\""), "{service}");
        assert!(service.contains(" tunnel=\"ssl\""), "{service}");
        // The plain port stays plain.
        let r = identify_within(nginx.http, backend, None);
        assert_identity(&r, "http", Some("nginx"), Some(&truth));
        assert_eq!(r.str("tls_version"), None, "{:?}", r.fields);
    }
}

#[test]
fn dovecot_imaps_is_imap_inside_tls() {
    let Some([dovecot]) = programs("dovecot", ["dovecot"]) else {
        return;
    };
    if !root_for("dovecot") {
        return;
    }
    let ip = daemon_ip("identify::tls-dovecot");
    let dir = TempDir::new("identify-tls-dovecot");
    let Some(certs) = CertMaker::new(dir.path()) else {
        return;
    };
    let cert = certs.make_for_days("mail.porthawk.test", 60);
    let imaps = SocketAddr::new(ip, free_port(ip));
    let d = dir.path().display();
    // Only an imaps listener (the plain one off); the login processes are not chrooted, so
    // the test needs nothing outside its directory.
    let conf = dir.write(
        "dovecot.conf",
        &format!(
            "protocols = imap\nlisten = {ip}\nbase_dir = {d}/run\nstate_dir = {d}/state\n\
             log_path = {d}/dovecot.log\n\
             ssl = yes\nssl_cert = <{}\nssl_key = <{}\n\
             passdb {{\n  driver = static\n  args = password=unused\n}}\n\
             userdb {{\n  driver = static\n  args = uid=nobody gid=nogroup home={d}/mail\n}}\n\
             service anvil {{\n  chroot =\n}}\n\
             service imap-login {{\n  chroot =\n\
               inet_listener imap {{\n    port = 0\n  }}\n\
               inet_listener imaps {{\n    port = {}\n    ssl = yes\n  }}\n}}\n",
            cert.cert.display(),
            cert.key.display(),
            imaps.port()
        ),
    );
    let mut cmd = Command::new(&dovecot);
    cmd.arg("-F").arg("-c").arg(&conf);
    let mut daemon = Daemon::start("dovecot", cmd, &dir.path().join("dovecot.out"), "TERM")
        .also_log(dir.path().join("dovecot.log"));
    daemon.wait_listening(&[imaps]);
    for backend in backends(ip) {
        // Silent to the null probe, closes on plain HTTP; the ClientHello probe's
        // ServerHello, then the greeting inside TLS names Dovecot (without its version).
        let r = identify_within(imaps, backend, None);
        assert_identity(&r, "imap", Some("Dovecot"), None);
        assert_tls(&r, &cert);
        assert_eq!(
            r.str("cpe"),
            Some("cpe:/a:dovecot:dovecot"),
            "{:?}",
            r.fields
        );
    }
}

/// An `openssl s_server` without `-www`: it makes the handshake and then says nothing (what
/// the client sends goes to its stdout). Its stdin is kept open (at EOF it would close the
/// connection); stopped by its handle on drop.
struct SilentTlsServer {
    child: Child,
    _stdin: Option<ChildStdin>,
    addr: SocketAddr,
}

impl SilentTlsServer {
    fn start(ip: IpAddr, cert: &Cert) -> SilentTlsServer {
        let addr = SocketAddr::new(ip, free_port(ip));
        let mut child = Command::new("openssl")
            .args(["s_server", "-quiet", "-accept"])
            .arg(addr.to_string())
            .arg("-cert")
            .arg(&cert.cert)
            .arg("-key")
            .arg(&cert.key)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start openssl s_server");
        let stdin = child.stdin.take();
        let server = SilentTlsServer {
            child,
            _stdin: stdin,
            addr,
        };
        crate::util::wait_accepting(addr, "openssl s_server");
        server
    }
}

impl Drop for SilentTlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_tls_server_silent_inside_is_tls() {
    let ip = daemon_ip("identify::tls-silent");
    let dir = TempDir::new("identify-tls-silent");
    // CertMaker skips (a failure under CI=true) without openssl.
    let Some(certs) = CertMaker::new(dir.path()) else {
        return;
    };
    let cert = certs.make_for_days("silent.porthawk.test", 30);
    let server = SilentTlsServer::start(ip, &cert);
    for backend in backends(ip) {
        // Closes on plain HTTP without an alert; the ClientHello gets a ServerHello; inside,
        // the null probe, HTTP and Redis get nothing: `tls` (nmap's `ssl`), with the TLS
        // info, after the default budget of five (the handshake counts as one).
        let r = identify_within(server.addr, backend, None);
        assert_identity(&r, "tls", None, None);
        assert_tls(&r, &cert);
        let xml = scan_identify(server.addr, backend, None, "xml");
        assert!(xml.contains(" tunnel=\"ssl\""), "{xml}");
    }
}
