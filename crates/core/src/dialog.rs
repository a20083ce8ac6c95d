//! Probe dialogs: what to send once connected, and what the replies must look like.
//!
//! A [`Dialog`] is a list of steps. A [`Conversation`] runs one dialog for one probe as a
//! sans-IO state machine: the engine reports completions (connected, bytes sent, bytes read,
//! timed out) and does what the returned [`Step`] says. It reads no clock: callers pass the
//! time elapsed since the handshake, and it allocates nothing after construction.

use std::fmt;
use std::io::{Read, Write};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;

use crate::escape::printable;
use crate::tls::TlsInfo;
use crate::{ConnectEvent, Errno, PortState, Probe, ProbeSpec, Step};

/// Bytes kept of one read step; a reply that has not matched by then fails.
pub const READ_LIMIT: usize = 4096;
/// Bytes of the first reply kept as the banner.
pub const BANNER_LIMIT: usize = 1024;
/// Characters of a reply quoted in a failure reason.
const QUOTE_LIMIT: usize = 80;

/// Why a dialog could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialogError {
    /// The expect or reject pattern is not a valid regular expression.
    #[error("invalid pattern '{pattern}': {message}")]
    BadPattern {
        /// The pattern as written.
        pattern: String,
        /// What the regex compiler said.
        message: String,
    },
}

/// What a reply must (or must not) contain. Matching is on bytes, so binary protocols work.
#[derive(Clone)]
pub enum Pattern {
    /// A regular expression over bytes (`^220`, `(?i)ok`).
    Regex(regex::bytes::Regex),
    /// The reply must contain these bytes.
    Literal(Vec<u8>),
    /// A reply a regular expression cannot judge, read by a small parser (LDAP's BER, XMPP).
    Wire(crate::Wire),
}

impl Pattern {
    /// A regular expression; its compiled size is bounded so that a hostile pattern cannot
    /// take the process's memory.
    pub fn regex(source: &str) -> Result<Pattern, DialogError> {
        regex::bytes::RegexBuilder::new(source)
            .size_limit(1 << 20)
            .dfa_size_limit(1 << 20)
            .build()
            .map(Pattern::Regex)
            .map_err(|e| DialogError::BadPattern {
                pattern: source.to_string(),
                message: e
                    .to_string()
                    .lines()
                    .last()
                    .unwrap_or("")
                    .trim()
                    .to_string(),
            })
    }

    /// A substring to look for.
    pub fn literal(bytes: impl Into<Vec<u8>>) -> Pattern {
        Pattern::Literal(bytes.into())
    }

    /// Whether `reply` matches.
    pub fn is_match(&self, reply: &[u8]) -> bool {
        match self {
            Pattern::Regex(re) => re.is_match(reply),
            Pattern::Literal(needle) => {
                needle.is_empty() || reply.windows(needle.len()).any(|w| w == needle.as_slice())
            }
            Pattern::Wire(wire) => wire.is_match(reply),
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Regex(re) => f.write_str(re.as_str()),
            Pattern::Literal(b) => write!(f, "'{}'", printable(b, QUOTE_LIMIT)),
            Pattern::Wire(wire) => wire.fmt(f),
        }
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({self})")
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Pattern::Regex(a), Pattern::Regex(b)) => a.as_str() == b.as_str(),
            (Pattern::Literal(a), Pattern::Literal(b)) => a == b,
            (Pattern::Wire(a), Pattern::Wire(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for Pattern {}

/// One step of a dialog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DialogStep {
    /// Send these bytes.
    Send(Vec<u8>),
    /// Read until the reply matches `expect` (the step passes), matches `reject` (the dialog
    /// fails at once), the peer closes, the reply outgrows [`READ_LIMIT`], or the step times out.
    Expect {
        /// What a good reply contains.
        expect: Pattern,
        /// What a bad reply contains (e.g. `^5\d\d` for SMTP), to fail fast.
        reject: Option<Pattern>,
    },
    /// Read what the server says first, if anything, without requiring it to say something:
    /// a server that waits for the client simply has no banner.
    Banner,
    /// Start TLS: make the handshake (SNI from the target's name), record the certificate,
    /// and run every later step through the TLS session.
    StartTls,
    /// Send these bytes only if the server has said nothing so far: a small protocol probe
    /// that makes a waiting service identify itself. When the server did speak, this step and
    /// a [`DialogStep::Banner`] right after it (the read of the probe's answer) are skipped.
    SendIfSilent(Vec<u8>),
}

/// A list of steps run after the handshake.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dialog {
    /// The steps, in order.
    pub steps: Vec<DialogStep>,
}

impl Dialog {
    /// Read the banner, if the server sends one.
    pub fn banner() -> Dialog {
        Dialog {
            steps: vec![DialogStep::Banner],
        }
    }

    /// The dialog of `--send DATA --expect REGEX` (either may be absent): without `send`, the
    /// server's first words are read (and must match `expect`, if given); with `send` but no
    /// `expect`, the reply is read as the banner.
    pub fn send_expect(send: Option<Vec<u8>>, expect: Option<Pattern>) -> Dialog {
        let mut steps = Vec::new();
        if let Some(bytes) = send {
            steps.push(DialogStep::Send(bytes));
        }
        steps.push(match expect {
            Some(expect) => DialogStep::Expect {
                expect,
                reject: None,
            },
            None => DialogStep::Banner,
        });
        Dialog { steps }
    }

    /// Read the banner; if the server says nothing, send `probe` and read the reply instead.
    pub fn banner_or_probe(probe: Vec<u8>) -> Dialog {
        Dialog {
            steps: vec![
                DialogStep::Banner,
                DialogStep::SendIfSilent(probe),
                DialogStep::Banner,
            ],
        }
    }

    /// The dialog with TLS where `mode` puts it: before every step (implicit TLS) or after
    /// them (STARTTLS, whose plaintext exchange the dialog ends with).
    pub fn with_tls(mut self, mode: crate::TlsMode) -> Dialog {
        match mode {
            crate::TlsMode::None => self,
            crate::TlsMode::Implicit => self.over_tls(),
            crate::TlsMode::StartTls => {
                self.steps.push(DialogStep::StartTls);
                self
            }
        }
    }

    /// The same dialog run over TLS from the start (implicit TLS, as for HTTPS or IMAPS).
    pub fn over_tls(mut self) -> Dialog {
        if self.steps.first() != Some(&DialogStep::StartTls) {
            self.steps.insert(0, DialogStep::StartTls);
        }
        self
    }

    /// Whether any step requires a reply to match.
    pub fn expects(&self) -> bool {
        self.steps
            .iter()
            .any(|s| matches!(s, DialogStep::Expect { .. }))
    }
}

/// One probe's connect attempts and dialog.
///
/// Kept once per slot of the engine's slab and reused with [`Conversation::reset`]. Its
/// buffers start empty and grow (to at most [`READ_LIMIT`] and [`BANNER_LIMIT`]) only when a
/// dialog reads, so connect-only sweeps pay nothing for them. A TLS session is allocated per
/// probe that starts one.
#[derive(Debug, Default)]
pub struct Conversation {
    probe: Probe,
    dialog: Option<Arc<Dialog>>,
    step: usize,
    /// Bytes to send for the current send (plain, or TLS records).
    out: Vec<u8>,
    sent: usize,
    rx: Vec<u8>,
    banner: Vec<u8>,
    have_banner: bool,
    peer_closed: bool,
    reason: Option<String>,
    server_name: Option<String>,
    peer: Option<IpAddr>,
    tls: Option<Box<rustls::ClientConnection>>,
    tls_info: Option<TlsInfo>,
    /// The TLS alert the server sent, if it sent one.
    alert: Option<rustls::AlertDescription>,
}

impl Conversation {
    /// Prepares for a new probe, keeping the buffers.
    pub fn reset(&mut self) {
        self.probe = Probe::new();
        self.dialog = None;
        self.step = 0;
        self.out.clear();
        self.sent = 0;
        self.rx.clear();
        self.banner.clear();
        self.have_banner = false;
        self.peer_closed = false;
        self.reason = None;
        self.server_name = None;
        self.peer = None;
        self.tls = None;
        self.tls_info = None;
        self.alert = None;
    }

    /// The host name to present in TLS (SNI) instead of the address.
    pub fn set_server_name(&mut self, name: Option<&str>) {
        self.server_name = name.map(str::to_string);
    }

    /// Connect attempts made so far.
    pub fn tries(&self) -> u8 {
        self.probe.tries()
    }

    /// Call with the outcome of each connect attempt.
    pub fn on_connect(&mut self, spec: &ProbeSpec, event: ConnectEvent) -> Step {
        let step = self.probe.on_connect(spec, event);
        match (step, &spec.dialog) {
            (
                Step::Done {
                    state: PortState::Open,
                    ..
                },
                Some(dialog),
            ) => {
                if let ConnectEvent::Connected { peer, .. } = event {
                    self.peer = Some(peer.ip());
                }
                self.dialog = Some(Arc::clone(dialog));
                self.step = 0;
                self.advance(spec, Duration::ZERO)
            }
            _ => step,
        }
    }

    /// The bytes still to send for the current [`Step::Send`].
    pub fn pending_send(&self) -> &[u8] {
        self.out.get(self.sent..).unwrap_or(&[])
    }

    /// Call when `n` bytes of [`Conversation::pending_send`] were sent, `elapsed` after the
    /// handshake.
    pub fn on_sent(&mut self, spec: &ProbeSpec, n: usize, elapsed: Duration) -> Step {
        self.sent += n;
        if !self.pending_send().is_empty() && n > 0 {
            return self.next_io(spec, elapsed, true);
        }
        if matches!(self.current(), Some(DialogStep::StartTls)) {
            return self.handshake(spec, elapsed);
        }
        self.step += 1;
        self.advance(spec, elapsed)
    }

    /// Call with the bytes one read returned (empty: the peer closed), `elapsed` after the
    /// handshake.
    pub fn on_recv(&mut self, spec: &ProbeSpec, data: &[u8], elapsed: Duration) -> Step {
        if data.is_empty() {
            self.peer_closed = true;
        }
        let Some(step) = self.current() else {
            return self.finish();
        };
        let handshaking = matches!(step, DialogStep::StartTls);
        if self.tls.is_some() {
            // Plaintext decrypted here, even in the read that ends the handshake, stays in `rx`
            // for the next read step.
            if let Err(why) = self.tls_input(data) {
                if let Some(step) = self.on_alert(spec) {
                    return step;
                }
                return self.fail(why);
            }
            if handshaking {
                if self.peer_closed {
                    if let Some(want) = wanted_alert(spec) {
                        return self.fail(format!("connection closed, wanted TLS alert {want}"));
                    }
                    return self.fail("connection closed during the TLS handshake".into());
                }
                return self.handshake(spec, elapsed);
            }
        } else {
            let room = READ_LIMIT - self.rx.len();
            self.rx.extend_from_slice(&data[..data.len().min(room)]);
        }
        self.read_step(spec, elapsed)
    }

    /// Call when the current send or read timed out, `elapsed` after the handshake.
    pub fn on_timeout(&mut self, spec: &ProbeSpec, elapsed: Duration) -> Step {
        let after = fmt_duration(spec.read_timeout.min(spec.dialog_timeout));
        let dialog = self.dialog.clone();
        match dialog.as_deref().and_then(|d| d.steps.get(self.step)) {
            Some(DialogStep::Banner) => {
                // A server that waits for the client has no banner; that is not a failure.
                self.keep_banner();
                self.rx.clear();
                self.step += 1;
                self.advance(spec, elapsed)
            }
            Some(DialogStep::Expect { expect, .. }) => {
                if self.rx.is_empty() {
                    self.fail(format!("expect {expect} timed out after {after}"))
                } else {
                    let got = printable(&self.rx, QUOTE_LIMIT);
                    self.fail(format!(
                        "got '{got}', wanted {expect} (timed out after {after})"
                    ))
                }
            }
            Some(DialogStep::StartTls) => match wanted_alert(spec) {
                Some(want) if self.tls_info.is_some() => self.fail(format!(
                    "the server accepted the TLS handshake, wanted alert {want} (none after {after})"
                )),
                _ => self.fail(format!("TLS handshake timed out after {after}")),
            },
            Some(DialogStep::Send(_) | DialogStep::SendIfSilent(_)) => {
                self.fail(format!("send timed out after {after}"))
            }
            None => self.finish(),
        }
    }

    /// Call when a send or read failed with `errno` (e.g. ECONNRESET).
    pub fn on_io_error(&mut self, errno: Errno) -> Step {
        let what = match self.current() {
            Some(DialogStep::Send(_) | DialogStep::SendIfSilent(_)) => "sending",
            Some(DialogStep::StartTls) => "in the TLS handshake",
            _ => "reading",
        };
        // The dialog only runs on a connected socket. A reset shows up as ECONNRESET to the
        // first read or write that meets it, and as ENOTCONN to any after that; which one
        // this probe sees depends on timing (a last look after a timeout may have taken the
        // reset already). Both are the peer resetting the connection: say so the same way.
        let errno = if errno == crate::errno::consts::ENOTCONN {
            crate::errno::consts::ECONNRESET
        } else {
            errno
        };
        let name = crate::errno_name(errno);
        if self.rx.is_empty() {
            self.fail(format!("{name} while {what}"))
        } else {
            // What the peer said before it reset the connection is the useful part.
            let got = printable(&self.rx, QUOTE_LIMIT);
            self.fail(format!("got '{got}', then {name} while {what}"))
        }
    }

    /// The first reply of the dialog, capped at [`BANNER_LIMIT`] bytes; `None` if the dialog
    /// read nothing.
    pub fn banner(&self) -> Option<&[u8]> {
        (self.have_banner && !self.banner.is_empty()).then_some(self.banner.as_slice())
    }

    /// Whether the replies matched: `Some` only for dialogs that expect something. A TLS
    /// handshake counts as an expectation: `--preset tls` passes or fails on it alone.
    pub fn matched(&self) -> Option<bool> {
        let dialog = self.dialog.as_ref()?;
        let handshakes = dialog.steps.contains(&DialogStep::StartTls);
        (dialog.expects() || handshakes).then_some(self.reason.is_none())
    }

    /// Why the dialog failed: which step and what happened.
    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }

    /// What the TLS handshake showed, if the dialog made one.
    pub fn tls(&self) -> Option<&TlsInfo> {
        self.tls_info.as_ref()
    }

    fn current(&self) -> Option<&DialogStep> {
        self.dialog.as_ref()?.steps.get(self.step)
    }

    fn keep_banner(&mut self) {
        if !self.have_banner && !self.rx.is_empty() {
            let n = self.rx.len().min(BANNER_LIMIT);
            self.banner.extend_from_slice(&self.rx[..n]);
            self.have_banner = true;
        }
    }

    /// Moves to the step at `self.step`: returns the I/O it needs, or the final verdict.
    ///
    /// `rx` is not cleared here: it holds what the peer sent that no read step has consumed
    /// yet (e.g. a greeting decrypted together with the last handshake message), and that
    /// belongs to the next read step, as unread bytes in the socket would.
    fn advance(&mut self, spec: &ProbeSpec, elapsed: Duration) -> Step {
        self.sent = 0;
        self.out.clear();
        let Some(dialog) = self.dialog.clone() else {
            return self.finish();
        };
        let Some(step) = dialog.steps.get(self.step) else {
            return self.finish();
        };
        match step {
            DialogStep::SendIfSilent(bytes) if self.have_banner || bytes.is_empty() => {
                // The server spoke: skip the probe, and the read of its answer with it.
                self.step += 1;
                if matches!(self.current(), Some(DialogStep::Banner)) {
                    self.step += 1;
                }
                self.advance(spec, elapsed)
            }
            DialogStep::Send(bytes) | DialogStep::SendIfSilent(bytes) => {
                if bytes.is_empty() {
                    self.step += 1;
                    return self.advance(spec, elapsed);
                }
                if let Err(why) = self.tls_output(Some(bytes)) {
                    return self.fail(why);
                }
                self.next_io(spec, elapsed, true)
            }
            DialogStep::StartTls => self.start_tls(spec, elapsed),
            DialogStep::Banner | DialogStep::Expect { .. } => self.read_step(spec, elapsed),
        }
    }

    /// Judges the current read step on what `rx` holds: pass and move on, fail, or read more.
    fn read_step(&mut self, spec: &ProbeSpec, elapsed: Duration) -> Step {
        // Borrow the step through our own handle on the dialog: cloning the step would clone its
        // compiled patterns, whose match caches then start cold on every read.
        let Some(dialog) = self.dialog.clone() else {
            return self.finish();
        };
        match dialog.steps.get(self.step) {
            Some(DialogStep::Banner) => {
                if self.rx.is_empty() && !self.peer_closed {
                    // Nothing yet, or TLS records that carried no application data.
                    return self.next_io(spec, elapsed, false);
                }
                self.keep_banner();
                self.rx.clear();
                self.step += 1;
                self.advance(spec, elapsed)
            }
            Some(DialogStep::Expect { expect, reject }) => {
                if reject.as_ref().is_some_and(|r| r.is_match(&self.rx)) {
                    let r = reject.as_ref().map(|r| r.to_string()).unwrap_or_default();
                    let got = printable(&self.rx, QUOTE_LIMIT);
                    return self.fail(format!("got '{got}', which matches reject {r}"));
                }
                if expect.is_match(&self.rx) {
                    self.keep_banner();
                    self.rx.clear();
                    self.step += 1;
                    return self.advance(spec, elapsed);
                }
                if self.peer_closed {
                    if self.rx.is_empty() {
                        return self.fail(format!("connection closed, wanted {expect}"));
                    }
                    let got = printable(&self.rx, QUOTE_LIMIT);
                    return self.fail(format!("got '{got}', wanted {expect} (then closed)"));
                }
                if self.rx.len() >= READ_LIMIT {
                    let got = printable(&self.rx, QUOTE_LIMIT);
                    return self.fail(format!("got '{got}', wanted {expect}"));
                }
                self.next_io(spec, elapsed, false)
            }
            Some(DialogStep::Send(_) | DialogStep::SendIfSilent(_) | DialogStep::StartTls)
            | None => self.finish(),
        }
    }

    fn start_tls(&mut self, spec: &ProbeSpec, elapsed: Duration) -> Step {
        let Some(config) = spec.tls_config.as_ref() else {
            return self.fail("TLS is not configured for this probe".into());
        };
        let name = conn_server_name(&self.server_name, spec.tls_check.as_deref(), self.peer);
        let Some(name) = name else {
            return self.fail("no server name for the TLS handshake".into());
        };
        // Plaintext that arrived before the handshake is not part of the TLS session.
        self.rx.clear();
        match rustls::ClientConnection::new(Arc::clone(config), name) {
            Ok(conn) => {
                self.tls = Some(Box::new(conn));
                self.handshake(spec, elapsed)
            }
            Err(e) => self.fail(format!("TLS setup failed: {e}")),
        }
    }

    /// Drives the TLS handshake: send what it wants sent, read what it waits for, and move
    /// on once it is complete.
    fn handshake(&mut self, spec: &ProbeSpec, elapsed: Duration) -> Step {
        let Some(conn) = self.tls.as_mut() else {
            return self.finish();
        };
        if conn.wants_write() {
            self.sent = 0;
            if let Err(why) = self.tls_output(None) {
                return self.fail(why);
            }
            return self.next_io(spec, elapsed, true);
        }
        if conn.is_handshaking() {
            return self.next_io(spec, elapsed, false);
        }
        let version = match conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
            Some(v) => format!("{v:?}"),
            None => "unknown".to_string(),
        };
        let cipher = conn
            .negotiated_cipher_suite()
            .map(|c| format!("{:?}", c.suite()))
            .unwrap_or_default();
        let chain = conn.peer_certificates().unwrap_or_default().to_vec();
        self.tls_info = Some(TlsInfo::new(version, cipher, &chain));
        let check = spec.tls_check.as_deref();
        if let Some(verifier) = check.and_then(|c| c.verify.as_ref()) {
            let verdict = match conn_server_name(&self.server_name, check, self.peer) {
                Some(name) => verifier.verify(&chain, &name),
                None => Err("no server name to verify the certificate against".into()),
            };
            if let Err(why) = verdict {
                return self.fail(format!("certificate verification failed: {why}"));
            }
        }
        if check.is_some_and(|c| c.expect_alert.is_some()) {
            // With TLS 1.3 the server judges the client's certificate after the client has
            // finished: its alert comes in a later read. Wait for it on this step.
            return self.next_io(spec, elapsed, false);
        }
        self.step += 1;
        self.advance(spec, elapsed)
    }

    /// Fills `out` with what goes on the wire: `plain` as is without TLS; through the TLS
    /// session (plus any records it has pending) with it.
    fn tls_output(&mut self, plain: Option<&[u8]>) -> Result<(), String> {
        self.out.clear();
        self.sent = 0;
        let Some(conn) = self.tls.as_mut() else {
            self.out.extend_from_slice(plain.unwrap_or(&[]));
            return Ok(());
        };
        if let Some(plain) = plain {
            conn.writer()
                .write_all(plain)
                .map_err(|e| format!("TLS write failed: {e}"))?;
        }
        while conn.wants_write() {
            conn.write_tls(&mut self.out)
                .map_err(|e| format!("TLS write failed: {e}"))?;
        }
        Ok(())
    }

    /// Feeds bytes from the wire into the TLS session and appends the plaintext they carried
    /// to `rx` (bounded by [`READ_LIMIT`]).
    fn tls_input(&mut self, mut data: &[u8]) -> Result<(), String> {
        let Some(conn) = self.tls.as_mut() else {
            return Ok(());
        };
        while !data.is_empty() {
            match conn.read_tls(&mut data) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => return Err(format!("TLS read failed: {e}")),
            }
            if let Err(e) = conn.process_new_packets() {
                if let rustls::Error::AlertReceived(alert) = e {
                    self.alert = Some(alert);
                    return Err(format!("got TLS alert {}", crate::tls::alert_name(alert)));
                }
                return Err(format!("TLS error: {e}"));
            }
        }
        if data.is_empty() && self.peer_closed {
            // Let the session see the end of the stream (a close without close_notify).
            let _ = conn.read_tls(&mut data);
        }
        let mut chunk = [0u8; 512];
        while self.rx.len() < READ_LIMIT {
            match conn.reader().read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => {
                    let room = READ_LIMIT - self.rx.len();
                    self.rx.extend_from_slice(&chunk[..n.min(room)]);
                }
                Err(_) => break, // no plaintext yet (WouldBlock), or the peer's unclean close
            }
        }
        Ok(())
    }

    /// A send or a read, with its timeout: the read timeout, cut to what is left of the
    /// dialog timeout.
    fn next_io(&mut self, spec: &ProbeSpec, elapsed: Duration, send: bool) -> Step {
        let left = spec.dialog_timeout.saturating_sub(elapsed);
        if left.is_zero() {
            let after = fmt_duration(spec.dialog_timeout);
            return self.fail(format!("dialog timed out after {after}"));
        }
        let timeout = spec.read_timeout.min(left);
        if send {
            Step::Send { timeout }
        } else {
            Step::Recv { timeout }
        }
    }

    /// After a TLS error: the verdict when the server sent the alert the check expects
    /// (pass, and the dialog ends) or another one (fail, naming both); `None` otherwise.
    fn on_alert(&mut self, spec: &ProbeSpec) -> Option<Step> {
        let want = spec.tls_check.as_ref()?.expect_alert?;
        let got = self.alert?;
        if got == want {
            self.step = self.dialog.as_ref().map_or(0, |d| d.steps.len());
            return Some(self.finish());
        }
        let (got, want) = (crate::tls::alert_name(got), crate::tls::alert_name(want));
        Some(self.fail(format!("got TLS alert {got}, wanted {want}")))
    }

    fn fail(&mut self, why: String) -> Step {
        // What the peer did say still tells what it is.
        self.keep_banner();
        self.reason = Some(format!("step {}: {why}", self.step + 1));
        self.finish()
    }

    fn finish(&mut self) -> Step {
        Step::Done {
            state: PortState::Open,
            errno: None,
        }
    }
}

/// The name of the TLS alert the spec expects, if it expects one.
fn wanted_alert(spec: &ProbeSpec) -> Option<String> {
    let alert = spec.tls_check.as_ref()?.expect_alert?;
    Some(crate::tls::alert_name(alert))
}

/// The name a certificate must be valid for: `--sni`, else the target's name, else its
/// address.
fn conn_server_name(
    target_name: &Option<String>,
    check: Option<&crate::TlsCheck>,
    peer: Option<IpAddr>,
) -> Option<ServerName<'static>> {
    match (
        check.and_then(|c| c.sni.as_ref()).or(target_name.as_ref()),
        peer,
    ) {
        (Some(n), _) => ServerName::try_from(n.clone()).ok(),
        (None, Some(ip)) => Some(ServerName::IpAddress(ip.into())),
        (None, None) => None,
    }
}

fn fmt_duration(d: Duration) -> String {
    if d.as_millis() < 1000 {
        format!("{}ms", d.as_millis())
    } else {
        let s = d.as_secs_f64();
        if s.fract() == 0.0 {
            format!("{s:.0}s")
        } else {
            format!("{s:.1}s")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dialog: Dialog) -> ProbeSpec {
        ProbeSpec {
            dialog: Some(Arc::new(dialog)),
            read_timeout: Duration::from_secs(2),
            dialog_timeout: Duration::from_secs(5),
            ..ProbeSpec::default()
        }
    }

    fn connected() -> ConnectEvent {
        ConnectEvent::Connected {
            local: "127.0.0.1:40000".parse().unwrap(),
            peer: "127.0.0.1:25".parse().unwrap(),
        }
    }

    fn expect(re: &str) -> DialogStep {
        DialogStep::Expect {
            expect: Pattern::regex(re).unwrap(),
            reject: None,
        }
    }

    /// What a scripted peer does at each I/O step the conversation asks for.
    enum Peer<'a> {
        Says(&'a [u8]),
        Closes,
        Silent,
        Accepts,
        Resets,
    }

    /// Runs a conversation against a script; returns (banner, matched, reason, I/O steps).
    fn run(
        dialog: Dialog,
        script: &[Peer],
    ) -> (Option<String>, Option<bool>, Option<String>, usize) {
        let spec = spec(dialog);
        let mut c = Conversation::default();
        let mut step = c.on_connect(&spec, connected());
        let mut t = Duration::ZERO;
        let mut n = 0;
        for peer in script {
            t += Duration::from_millis(10);
            step = match (step, peer) {
                (Step::Recv { .. }, Peer::Says(b)) => c.on_recv(&spec, b, t),
                (Step::Recv { .. }, Peer::Closes) => c.on_recv(&spec, b"", t),
                (Step::Recv { .. } | Step::Send { .. }, Peer::Silent) => c.on_timeout(&spec, t),
                (Step::Recv { .. } | Step::Send { .. }, Peer::Resets) => c.on_io_error(104),
                (Step::Send { .. }, Peer::Accepts) => {
                    let len = c.pending_send().len();
                    c.on_sent(&spec, len, t)
                }
                (s, _) => panic!("script out of step at {n}: conversation wants {s:?}"),
            };
            n += 1;
        }
        assert!(
            matches!(
                step,
                Step::Done {
                    state: PortState::Open,
                    ..
                }
            ),
            "conversation not done: {step:?}"
        );
        (
            c.banner().map(|b| printable(b, 200)),
            c.matched(),
            c.reason().map(str::to_string),
            n,
        )
    }

    /// A reset met as ENOTCONN (its error already taken from the socket) is told as the reset
    /// it is, so that two runs of the same probe give the same reason.
    #[test]
    fn a_reset_seen_as_enotconn_is_a_reset() {
        let spec = spec(Dialog {
            steps: vec![expect("^220")],
        });
        let mut c = Conversation::default();
        assert!(matches!(
            c.on_connect(&spec, connected()),
            Step::Recv { .. }
        ));
        c.on_io_error(107);
        assert_eq!(c.reason(), Some("step 1: ECONNRESET while reading"));
    }

    #[test]
    fn smtp_like_dialog_passes() {
        let dialog = Dialog {
            steps: vec![
                expect("^220"),
                DialogStep::Send(b"EHLO porthawk\r\n".to_vec()),
                DialogStep::Expect {
                    expect: Pattern::regex("^250").unwrap(),
                    reject: Some(Pattern::regex("^5").unwrap()),
                },
                DialogStep::Send(b"QUIT\r\n".to_vec()),
            ],
        };
        let got = run(
            dialog,
            &[
                Peer::Says(b"22"),
                Peer::Says(b"0 mx ESMTP Postfix\r\n"),
                Peer::Accepts,
                Peer::Says(b"250-mx\r\n250 OK\r\n"),
                Peer::Accepts,
            ],
        );
        assert_eq!(
            got,
            (
                Some("220 mx ESMTP Postfix\\r\\n".into()),
                Some(true),
                None,
                5
            )
        );
    }

    #[test]
    fn failures_name_the_step_and_the_reason() {
        let smtp = || Dialog {
            steps: vec![
                expect("^220"),
                DialogStep::Send(b"EHLO x\r\n".to_vec()),
                DialogStep::Expect {
                    expect: Pattern::regex("^250").unwrap(),
                    reject: Some(Pattern::regex("^5").unwrap()),
                },
            ],
        };
        let table: Vec<(Dialog, Vec<Peer>, &str)> = vec![
            (
                smtp(),
                vec![Peer::Silent],
                "step 1: expect ^220 timed out after 2s",
            ),
            (
                smtp(),
                vec![Peer::Says(b"554 go away\r\n"), Peer::Closes],
                "step 1: got '554 go away\\r\\n', wanted ^220 (then closed)",
            ),
            (
                smtp(),
                vec![
                    Peer::Says(b"220 hi\r\n"),
                    Peer::Accepts,
                    Peer::Says(b"550 no\r\n"),
                ],
                "step 3: got '550 no\\r\\n', which matches reject ^5",
            ),
            (
                smtp(),
                vec![Peer::Says(b"220 hi\r\n"), Peer::Resets],
                "step 2: ECONNRESET while sending",
            ),
            (
                smtp(),
                vec![Peer::Closes],
                "step 1: connection closed, wanted ^220",
            ),
            (
                smtp(),
                vec![Peer::Says(b"22"), Peer::Resets],
                "step 1: got '22', then ECONNRESET while reading",
            ),
            (
                Dialog::send_expect(Some(b"PING\r\n".to_vec()), Some(Pattern::literal("+PONG"))),
                vec![Peer::Accepts, Peer::Says(b"-ERR"), Peer::Silent],
                "step 2: got '-ERR', wanted '+PONG' (timed out after 2s)",
            ),
        ];
        for (dialog, script, want) in table {
            let (_, matched, reason, _) = run(dialog, &script);
            assert_eq!(matched, Some(false), "{want}");
            assert_eq!(reason.as_deref(), Some(want));
        }
    }

    #[test]
    fn banner_is_optional_and_capped() {
        // A server that waits for the client: no banner, no failure, nothing expected.
        let (banner, matched, reason, _) = run(Dialog::banner(), &[Peer::Silent]);
        assert_eq!((banner, matched, reason), (None, None, None));
        // A talkative one: the banner is capped.
        let long = vec![b'a'; 3 * BANNER_LIMIT];
        let spec = spec(Dialog::banner());
        let mut c = Conversation::default();
        assert!(matches!(
            c.on_connect(&spec, connected()),
            Step::Recv { .. }
        ));
        c.on_recv(&spec, &long, Duration::from_millis(1));
        assert_eq!(c.banner().map(<[u8]>::len), Some(BANNER_LIMIT));
    }

    #[test]
    fn silent_servers_get_the_probe_and_talkers_do_not() {
        let dialog = || Dialog::banner_or_probe(b"GET / HTTP/1.0\r\n\r\n".to_vec());
        let (banner, _, reason, steps) = run(
            dialog(),
            &[
                Peer::Silent,
                Peer::Accepts,
                Peer::Says(b"HTTP/1.1 200 OK\r\n"),
            ],
        );
        assert_eq!(
            (banner.as_deref(), reason, steps),
            (Some("HTTP/1.1 200 OK\\r\\n"), None, 3)
        );
        let (banner, _, _, steps) = run(dialog(), &[Peer::Says(b"SSH-2.0-OpenSSH_9.2p1\r\n")]);
        assert_eq!(
            (banner.as_deref(), steps),
            (Some("SSH-2.0-OpenSSH_9.2p1\\r\\n"), 1)
        );
    }

    #[test]
    fn binary_replies_match_on_bytes() {
        let dialog = Dialog::send_expect(
            Some(vec![0, 1, 2]),
            Some(Pattern::regex(r"(?-u)\x00\xff").unwrap()),
        );
        let (_, matched, reason, _) = run(dialog, &[Peer::Accepts, Peer::Says(&[9, 0, 0xff, 7])]);
        assert_eq!((matched, reason), (Some(true), None));
    }

    #[test]
    fn an_endless_reply_fails_at_the_read_limit() {
        let spec = spec(Dialog::send_expect(None, Some(Pattern::literal("never"))));
        let mut c = Conversation::default();
        let mut step = c.on_connect(&spec, connected());
        let chunk = [b'x'; 1000];
        let mut reads = 0;
        while let Step::Recv { .. } = step {
            step = c.on_recv(&spec, &chunk, Duration::from_millis(1));
            reads += 1;
            assert!(reads < 100);
        }
        assert_eq!(reads, READ_LIMIT.div_ceil(1000));
        assert!(c.reason().unwrap_or("").starts_with("step 1: got 'xxx"));
    }

    #[test]
    fn the_dialog_timeout_bounds_every_step() {
        let spec = spec(Dialog::send_expect(None, Some(Pattern::literal("x"))));
        let mut c = Conversation::default();
        assert_eq!(
            c.on_connect(&spec, connected()),
            Step::Recv {
                timeout: Duration::from_secs(2)
            }
        );
        // 4.5 s into the dialog only 0.5 s are left.
        assert_eq!(
            c.on_recv(&spec, b"a", Duration::from_millis(4500)),
            Step::Recv {
                timeout: Duration::from_millis(500)
            }
        );
        assert!(matches!(
            c.on_recv(&spec, b"b", Duration::from_secs(5)),
            Step::Done { .. }
        ));
        assert_eq!(c.reason(), Some("step 1: dialog timed out after 5s"));
    }

    #[test]
    fn bad_patterns_are_errors_naming_the_pattern() {
        let err = Pattern::regex("(unclosed").unwrap_err();
        assert!(
            err.to_string().starts_with("invalid pattern '(unclosed'"),
            "{err}"
        );
    }

    #[test]
    fn without_a_dialog_a_connect_is_the_whole_probe() {
        let spec = ProbeSpec::default();
        let mut c = Conversation::default();
        assert_eq!(
            c.on_connect(&spec, connected()),
            Step::Done {
                state: PortState::Open,
                errno: None
            }
        );
        assert_eq!((c.banner(), c.matched(), c.reason()), (None, None, None));
    }

    /// A fixed, self-signed P-256 certificate for `localhost` (valid until 2126) and its key,
    /// for in-memory TLS servers; nothing verifies it.
    const TEST_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBnDCCAUGgAwIBAgIUN4JlOtnl2R/CDFl0S0a1Fs1gU6MwCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTI2MTEzMDE2NDMxNloYDzIxMjYxMTA2
MTY0MzE2WjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAATFxMVjXMdHhrttgvjsDvPI9pBApu4wZMGzVLireoxjJwTsxBF+yArB
bdDpUt3GMEQGF/rShdWsRWGq3SKYGreOo28wbTAdBgNVHQ4EFgQUrs1p6/0FN17f
pXkiuHA3vgVnhkQwHwYDVR0jBBgwFoAUrs1p6/0FN17fpXkiuHA3vgVnhkQwDwYD
VR0TAQH/BAUwAwEB/zAaBgNVHREEEzARgglsb2NhbGhvc3SHBH8AAAEwCgYIKoZI
zj0EAwIDSQAwRgIhAO+AIJwcPddT8Rg2VZLwfXy+NMsDETNcTUbLutsawbzwAiEA
m1C2WyOrMQCSAb2QZa5fMF4SMikfpD+9pexqTnpUs5I=
-----END CERTIFICATE-----
";
    const TEST_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgekWwah0os9K7ZWhj
78jF9Cn/MTKq1rDKz3AOVcpgluqhRANCAATFxMVjXMdHhrttgvjsDvPI9pBApu4w
ZMGzVLireoxjJwTsxBF+yArBbdDpUt3GMEQGF/rShdWsRWGq3SKYGreO
-----END PRIVATE KEY-----
";

    /// The content types of the TLS records in `wire` (22 handshake, 20 change cipher spec,
    /// 23 application data).
    fn record_types(mut wire: &[u8]) -> Vec<u8> {
        let mut types = Vec::new();
        while let [kind, _, _, hi, lo, rest @ ..] = wire {
            types.push(*kind);
            let len = usize::from(*hi) << 8 | usize::from(*lo);
            wire = rest.get(len..).unwrap_or(&[]);
        }
        types
    }

    /// Runs `steps` against an in-memory rustls server of `version` that queues `greeting`
    /// before the handshake, so that it leaves in the same flight as the server's Finished and
    /// reaches the conversation in the same read. Returns the conversation and whether that
    /// read happened (a flight with both handshake records and application data).
    fn tls_greeting(
        version: &'static rustls::SupportedProtocolVersion,
        steps: Vec<DialogStep>,
        greeting: &[u8],
    ) -> (Conversation, bool) {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cert = CertificateDer::from_pem_slice(TEST_CERT.as_bytes()).unwrap();
        let key = PrivateKeyDer::from_pem_slice(TEST_KEY.as_bytes()).unwrap();
        let server_config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[version])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap();
        let mut server = rustls::ServerConnection::new(Arc::new(server_config)).unwrap();
        // Queued until the handshake is done, then sent right behind the Finished.
        server.writer().write_all(greeting).unwrap();

        let time = Arc::new(rustls::time_provider::DefaultTimeProvider);
        let spec = ProbeSpec {
            tls_config: Some(crate::tls::client_config(time).unwrap()),
            ..spec(Dialog { steps })
        };
        let mut c = Conversation::default();
        c.set_server_name(Some("localhost"));
        let mut step = c.on_connect(&spec, connected());
        let mut together = false;
        let mut t = Duration::ZERO;
        for _ in 0..20 {
            t += Duration::from_millis(1);
            step = match step {
                Step::Send { .. } => {
                    let wire = c.pending_send().to_vec();
                    let mut rd = wire.as_slice();
                    while !rd.is_empty() {
                        server.read_tls(&mut rd).unwrap();
                    }
                    server.process_new_packets().unwrap();
                    c.on_sent(&spec, wire.len(), t)
                }
                Step::Recv { .. } => {
                    let mut wire = Vec::new();
                    while server.wants_write() {
                        server.write_tls(&mut wire).unwrap();
                    }
                    if wire.is_empty() {
                        // A server with nothing more to say: the read times out.
                        c.on_timeout(&spec, t)
                    } else {
                        let types = record_types(&wire);
                        together |=
                            types.contains(&23) && types.iter().any(|&k| k == 20 || k == 22);
                        c.on_recv(&spec, &wire, t)
                    }
                }
                Step::Done { .. } => break,
                other => panic!("unexpected step {other:?}"),
            };
        }
        assert!(matches!(step, Step::Done { .. }), "not done: {step:?}");
        (c, together)
    }

    #[test]
    fn a_greeting_in_the_read_that_ends_the_tls_handshake_belongs_to_the_next_step() {
        let greeting = b"220 mail.example ESMTP ready\r\n";
        for (version, name) in [
            (&rustls::version::TLS12, "TLSv1.2"),
            (&rustls::version::TLS13, "TLSv1.3"),
        ] {
            // smtps: the expect sees the greeting that came with the Finished.
            let steps = vec![DialogStep::StartTls, expect("^220 "), expect("never")];
            let (c, together) = tls_greeting(version, steps, greeting);
            assert!(
                together,
                "{name}: the greeting did not share a read with the handshake"
            );
            assert_eq!(c.tls().map(|t| t.version.as_str()), Some(name));
            // The first expect passed on the greeting; the second waits on a silent server.
            let reason = c.reason().unwrap_or_default();
            assert_eq!(reason, "step 3: expect never timed out after 2s", "{name}");
            assert_eq!(c.banner(), Some(&greeting[..]), "{name}");

            // --tls --banner: the banner is the greeting.
            let (c, together) = tls_greeting(
                version,
                vec![DialogStep::StartTls, DialogStep::Banner],
                greeting,
            );
            assert!(together, "{name}");
            assert_eq!(c.reason(), None, "{name}");
            assert_eq!(c.banner(), Some(&greeting[..]), "{name}");
        }
    }
}
