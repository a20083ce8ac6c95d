//! `scan --identify` against VLC's RTSP server and against rsyslog's TCP input, plain and
//! over TLS (RFC 5425). VLC answers `GET /` with a not-found page that names VideoLAN only;
//! the plan follows it up with RTSP's OPTIONS, whose answer names VLC and its version.
//! rsyslog never answers anything: the port is `open` and nothing is named, or, behind TLS,
//! `tls` with the TLS fields; the messages it logs show that the probes (inside TLS too)
//! reached it. Each daemon runs on a free, unhinted port of its own `127.a.b.1` with a
//! throwaway configuration, on both backends.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use super::{assert_identity, backends, daemon_ip, identify, identify_within, open_to_all, start};
use crate::daemon_util::{free_port, is_root, package_version, programs, CertMaker, Daemon};
use crate::util::{require_that, Record, TempDir};

/// One second of 8 kHz mono 16-bit silence as a WAV file: the medium VLC's VoD serves.
fn silence_wav() -> Vec<u8> {
    let data_len: u32 = 8_000 * 2;
    let mut wav = Vec::with_capacity(44 + data_len as usize);
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data_len).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&1u16.to_le_bytes()); // mono
    wav.extend_from_slice(&8_000u32.to_le_bytes());
    wav.extend_from_slice(&16_000u32.to_le_bytes()); // bytes per second
    wav.extend_from_slice(&2u16.to_le_bytes()); // block align
    wav.extend_from_slice(&16u16.to_le_bytes()); // bits per sample
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&data_len.to_le_bytes());
    wav.resize(44 + data_len as usize, 0);
    wav
}

#[test]
fn vlc_rtsp_server_names_its_version() {
    let Some([cvlc]) = programs("vlc (vlc-bin, vlc-plugin-base)", ["cvlc"]) else {
        return;
    };
    let ip = daemon_ip("identify::vlc-rtsp");
    let dir = TempDir::new("identify-vlc-rtsp");
    let addr = SocketAddr::new(ip, free_port(ip));
    let wav = dir.path().join("silence.wav");
    std::fs::write(&wav, silence_wav()).expect("write silence.wav");
    // VLC's VoD server: an RTSP server on --rtsp-host/--rtsp-port with one medium.
    let conf = dir.write(
        "vlm.conf",
        &format!(
            "new porthawk vod enabled\nsetup porthawk input file://{}\n",
            wav.display()
        ),
    );
    open_to_all(dir.path(), &conf);
    open_to_all(dir.path(), &wav);
    // VLC refuses to run as root: as root, it runs as nobody.
    let mut cmd = if is_root() {
        let mut cmd = Command::new("setpriv");
        cmd.args([
            "--reuid",
            "nobody",
            "--regid",
            "nogroup",
            "--clear-groups",
            "--",
        ])
        .arg(&cvlc);
        cmd
    } else {
        Command::new(&cvlc)
    };
    cmd.args(["--no-dbus", "--rtsp-host", &ip.to_string(), "--rtsp-port"])
        .arg(addr.port().to_string())
        .arg("--vlm-conf")
        .arg(&conf)
        // Its configuration and caches go to the test's directory (unwritable to nobody:
        // VLC goes on without them).
        .env("HOME", dir.path());
    let _d = start("vlc", cmd, dir.path(), addr);
    let truth = package_version(&cvlc);
    for backend in backends(ip) {
        // `GET /` gets VLC's not-found page (http, VLC, no version); the RTSP probe follows.
        let r = identify(addr, backend);
        assert_identity(&r, "rtsp", Some("VLC rtspd"), Some(&truth));
        assert_eq!(
            r.str("cpe"),
            Some(format!("cpe:/a:videolan:vlc_media_player:{truth}").as_str()),
            "{r:?}"
        );
    }
}

/// rsyslogd in the foreground with `conf`, its pid file in `dir`, on `addr`.
fn start_rsyslogd(rsyslogd: &Path, dir: &Path, conf: &Path, addr: SocketAddr) -> Daemon {
    let mut cmd = Command::new(rsyslogd);
    cmd.arg("-n")
        .arg("-f")
        .arg(conf)
        .arg("-i")
        .arg(dir.join("rsyslogd.pid"));
    start("rsyslogd", cmd, dir, addr)
}

/// An rsyslog configuration: only an imtcp input on `addr` (no /dev/log, no kernel log),
/// everything to `messages` in `dir`; `tls`: the input's stream driver settings, and the
/// global ones before it.
fn rsyslog_conf(dir: &Path, addr: SocketAddr, tls: Option<(&str, &str)>) -> (PathBuf, PathBuf) {
    let messages = dir.join("messages");
    let (global, driver) = tls.unwrap_or_default();
    let text = format!(
        "global(workDirectory=\"{d}\"{global})\n\
         module(load=\"imtcp\"{driver})\n\
         input(type=\"imtcp\" address=\"{ip}\" port=\"{port}\")\n\
         *.* action(type=\"omfile\" file=\"{m}\")\n",
        d = dir.display(),
        ip = addr.ip(),
        port = addr.port(),
        m = messages.display(),
    );
    let conf = dir.join("rsyslog.conf");
    std::fs::write(&conf, text).expect("write rsyslog.conf");
    (conf, messages)
}

/// Waits (at most 20 s) until rsyslog has written `line` to `messages`; panics, with its
/// logs, if not.
fn assert_logged(d: &Daemon, messages: &Path, line: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // The probes' bytes are logged as they came: not all of them UTF-8.
        let bytes = std::fs::read(messages).unwrap_or_default();
        if String::from_utf8_lossy(&bytes).contains(line) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "rsyslog did not log {line:?}:\n{}",
            d.log_text()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// Checks that nothing was named: no service, product, version or CPE.
fn assert_nothing_named(r: &Record) {
    let ctx = format!("{:?}", r.fields);
    assert_eq!(r.state, "open", "{ctx}");
    for field in ["service", "product", "version", "protocol_version", "cpe"] {
        assert_eq!(r.str(field), None, "{field}, {ctx}");
    }
}

#[test]
fn rsyslog_over_tcp_is_open_and_unnamed() {
    let Some([rsyslogd]) = programs("rsyslog", ["rsyslogd"]) else {
        return;
    };
    let ip = daemon_ip("identify::rsyslog");
    let dir = TempDir::new("identify-rsyslog");
    let addr = SocketAddr::new(ip, free_port(ip));
    let (conf, messages) = rsyslog_conf(dir.path(), addr, None);
    let d = start_rsyslogd(&rsyslogd, dir.path(), &conf, addr).also_log(messages.clone());
    for backend in backends(ip) {
        // Every probe of the plan: rsyslog logs each one as a message and answers none.
        let r = identify_within(addr, backend, Some(30));
        assert_nothing_named(&r);
    }
    // The probes did reach the daemon: the HTTP probe is a message in its log.
    assert_logged(&d, &messages, "GET / HTTP/1.0");
}

/// The directory of rsyslog's OpenSSL network stream driver, if it is installed.
fn rsyslog_ossl_driver() -> Option<PathBuf> {
    std::fs::read_dir("/usr/lib")
        .ok()?
        .flatten()
        .map(|e| e.path().join("rsyslog/lmnsd_ossl.so"))
        .chain([PathBuf::from("/usr/lib/rsyslog/lmnsd_ossl.so")])
        .find(|p| p.exists())
}

#[test]
fn rsyslog_over_tls_is_tls() {
    let Some([rsyslogd]) = programs("rsyslog", ["rsyslogd"]) else {
        return;
    };
    if !require_that(
        "rsyslog-openssl",
        rsyslog_ossl_driver().is_some(),
        "not installed (see .ci/run): rsyslog has no TLS stream driver",
    ) {
        return;
    }
    let ip = daemon_ip("identify::rsyslog-tls");
    let dir = TempDir::new("identify-rsyslog-tls");
    // CertMaker skips (a failure under CI=true) without openssl.
    let Some(certs) = CertMaker::new(dir.path()) else {
        return;
    };
    let cert = certs.make_for_days("syslog.porthawk.test", 30);
    let addr = SocketAddr::new(ip, free_port(ip));
    // RFC 5425: TLS only (mode 1), clients not authenticated (anon).
    let global = format!(
        " DefaultNetstreamDriver=\"ossl\" DefaultNetstreamDriverCAFile=\"{c}\" \
         DefaultNetstreamDriverCertFile=\"{c}\" DefaultNetstreamDriverKeyFile=\"{k}\"",
        c = cert.cert.display(),
        k = cert.key.display()
    );
    let driver =
        " StreamDriver.Name=\"ossl\" StreamDriver.Mode=\"1\" StreamDriver.AuthMode=\"anon\"";
    let (conf, messages) = rsyslog_conf(dir.path(), addr, Some((&global, driver)));
    let d = start_rsyslogd(&rsyslogd, dir.path(), &conf, addr).also_log(messages.clone());
    for backend in backends(ip) {
        // Plain HTTP fails rsyslog's handshake; the ClientHello gets a ServerHello; inside,
        // nothing answers: `tls`, with the certificate, on the default budget.
        let r = identify_within(addr, backend, None);
        let ctx = format!("{:?}", r.fields);
        assert_eq!(r.state, "open", "{ctx}");
        assert_eq!(r.str("service"), Some("tls"), "{ctx}");
        for field in ["product", "version", "cpe"] {
            assert_eq!(r.str(field), None, "{field}, {ctx}");
        }
        assert!(
            matches!(r.str("tls_version"), Some("TLSv1.3" | "TLSv1.2")),
            "tls_version, {ctx}"
        );
        assert_eq!(r.str("cert_subject"), Some(cert.subject.as_str()), "{ctx}");
        assert_eq!(r.str("cert_issuer"), Some(cert.subject.as_str()), "{ctx}");
    }
    // porthawk went inside TLS by itself: rsyslog logged the HTTP probe sent in the session.
    assert_logged(&d, &messages, "GET / HTTP/1.0");
}
