//! Probe dialogs: what to send once connected, and what the replies must look like.
//!
//! A [`Dialog`] is a list of steps. A [`Conversation`] runs one dialog for one probe as a
//! sans-IO state machine: the engine reports completions (connected, bytes sent, bytes read,
//! timed out) and does what the returned [`Step`] says. It reads no clock: callers pass the
//! time elapsed since the handshake. Its buffers are reused from probe to probe; it allocates
//! only for what a dialog asks for: a TLS session, the capture groups of its expects, and
//! the bytes of a send that puts them in.
//!
//! A user's dialog (`--send`/`--expect` repeated, `steps` in monitors and the API) is a list of
//! [`DialogStep::Send`], [`DialogStep::SendCaptures`] and [`DialogStep::ExpectAll`] steps that
//! [`crate::ProbeOptions`] builds; captures are numbered across the whole dialog, in the order
//! the expects take them (`${1}` is the first group of the first expect that has one).

use std::fmt;
use std::io::{Read, Write};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;

use crate::escape::printable;
use crate::line::trim_line_end;
use crate::tls::TlsInfo;
use crate::{ConnectEvent, Errno, PortState, Probe, ProbeSpec, Step};

/// Bytes kept of one read step by default; a reply that has not matched by then fails.
/// [`ProbeSpec::max_reply`] changes it per job (`--max-reply`).
pub const READ_LIMIT: usize = 4096;
/// The largest [`ProbeSpec::max_reply`] a job may ask for (1 MiB).
pub const MAX_REPLY_LIMIT: usize = 1 << 20;
/// Bytes of the first reply kept as the banner.
pub const BANNER_LIMIT: usize = 1024;
/// Capture groups a dialog keeps (`${1}` to `${16}`); later groups are not kept.
pub const MAX_CAPTURES: usize = 16;
/// Bytes kept of one capture; a longer one is cut.
pub const CAPTURE_LIMIT: usize = 256;
/// Characters of one line of a reply quoted in a failure reason.
const QUOTE_LIMIT: usize = 100;
/// Characters of a binary reply quoted in a failure reason (32 bytes written as `\xHH`).
const BINARY_QUOTE_LIMIT: usize = 128;

/// Whether a reply is binary rather than lines of text: it holds a control byte other than
/// tab, CR and LF (a NUL, a length prefix, a BER tag). Lines mean nothing in such a reply,
/// and a 0x0a in it is data, not a line end.
fn is_binary(reply: &[u8]) -> bool {
    reply
        .iter()
        .any(|&b| matches!(b, 0x00..=0x08 | 0x0b | 0x0c | 0x0e..=0x1f | 0x7f))
}

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
    ///
    /// Matching is line-aware, as blackbox_exporter's query_response (which matches line by
    /// line) and check_tcp users expect: `^` and `$` match at the start and end of every line
    /// of the reply as well as of the whole reply (multi-line mode), and a line may end in
    /// `\r\n` or `\n` (CRLF mode: `$` matches before the `\r`, and `.` matches neither).
    pub fn regex(source: &str) -> Result<Pattern, DialogError> {
        regex::bytes::RegexBuilder::new(source)
            .multi_line(true)
            .crlf(true)
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
        self.find(reply).is_some()
    }

    /// Where the first match in `reply` starts.
    pub fn find(&self, reply: &[u8]) -> Option<usize> {
        match self {
            Pattern::Regex(re) => re.find(reply).map(|m| m.start()),
            Pattern::Literal(needle) if needle.is_empty() => Some(0),
            Pattern::Literal(needle) => reply
                .windows(needle.len())
                .position(|w| w == needle.as_slice()),
            // A protocol reply is judged whole: it matches from its start.
            Pattern::Wire(wire) => wire.is_match(reply).then_some(0),
        }
    }

    /// How many capture groups the pattern has (group 0, the whole match, not counted).
    pub fn groups(&self) -> usize {
        match self {
            Pattern::Regex(re) => re.captures_len().saturating_sub(1),
            Pattern::Literal(_) | Pattern::Wire(_) => 0,
        }
    }

    /// Appends the capture groups of the first match in `reply` to `out` (an unmatched
    /// optional group as empty bytes), each cut to [`CAPTURE_LIMIT`] bytes, until `out`
    /// holds [`MAX_CAPTURES`].
    fn capture_into(&self, reply: &[u8], out: &mut Vec<Vec<u8>>) {
        let Pattern::Regex(re) = self else {
            return;
        };
        if self.groups() == 0 {
            return;
        }
        let mut locations = re.capture_locations();
        if re.captures_read(&mut locations, reply).is_none() {
            return;
        }
        for group in 1..locations.len() {
            if out.len() >= MAX_CAPTURES {
                return;
            }
            let bytes = locations
                .get(group)
                .map_or(&[][..], |(start, end)| &reply[start..end]);
            out.push(bytes[..bytes.len().min(CAPTURE_LIMIT)].to_vec());
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
    /// fails at once), the peer closes, the reply outgrows the reply limit
    /// ([`ProbeSpec::max_reply`]), or the step times out.
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
    /// Send these pieces, with earlier captures put in (`--send 'AUTH ${1}\r\n'`).
    SendCaptures(Vec<SendPiece>),
    /// A user's expect (`--expect`, `steps`): read until the reply matches every one of
    /// `patterns` (one, or several with `--expect-all`), then keep their capture groups for
    /// later sends and the result. Fails as [`DialogStep::Expect`] does.
    ExpectAll {
        /// What a good reply contains, all of it.
        patterns: Vec<Pattern>,
    },
    /// Identify the service (`--identify`): read the banner (the null probe); if the server
    /// says nothing or nothing [`crate::identify`] recognises, send the protocol probes of
    /// [`crate::probe_order`] for the port, one by one, until a reply is recognised, at most
    /// `max_probes` of them, within the dialog timeout. A probe after the first goes on a new
    /// connection (the engine reconnects when the conversation says [`Step::Reconnect`]). The
    /// banner kept is the reply that was recognised, or else the first reply.
    Identify {
        /// The most protocol probes to send.
        max_probes: u8,
    },
}

/// The protocol probes `--identify` sends to a silent port by default: on a port no probe
/// names, HTTP, TLS, Redis, memcached and Java RMI (a TLS handshake the plan makes counts as
/// one).
pub const DEFAULT_MAX_PROBES: u8 = 5;

/// A piece of a [`DialogStep::SendCaptures`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendPiece {
    /// These bytes.
    Bytes(Vec<u8>),
    /// The capture with this number (1 is the dialog's first capture group), as it was read.
    Capture(usize),
    /// An XMPP client stream header ([`crate::xmpp_stream_header`]) addressed to the name
    /// the probe presents: `--sni`, else the target's host name; without `to` for a target
    /// given as an address.
    XmppHeader,
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

    /// Identify the service: the null probe, then up to `max_probes` protocol probes chosen
    /// for the port (see [`DialogStep::Identify`]).
    pub fn identify(max_probes: u8) -> Dialog {
        Dialog {
            steps: vec![DialogStep::Identify { max_probes }],
        }
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
            .any(|s| matches!(s, DialogStep::Expect { .. } | DialogStep::ExpectAll { .. }))
    }
}

/// One probe's connect attempts and dialog.
///
/// Kept once per slot of the engine's slab and reused with [`Conversation::reset`]. Its
/// buffers start empty and grow (to at most [`ProbeSpec::max_reply`] and [`BANNER_LIMIT`])
/// only when a dialog reads, so connect-only sweeps pay nothing for them; a reset gives back
/// what a long reply took beyond [`READ_LIMIT`], so a slot keeps no more than that between
/// probes. A TLS session is allocated per probe that starts one, captures per probe that
/// takes them.
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
    /// Capture groups of the expects that matched, in order (`${1}` is the first).
    captures: Vec<Vec<u8>>,
    /// The dialog failed on what the peer said (a reply that did not match), not on silence,
    /// a reset or TLS.
    mismatch: bool,
    /// Bytes one read step may keep (the spec's `max_reply`, bounded).
    max_reply: usize,
    /// Keep the peer's bytes out of reasons.
    jail: bool,
    /// The TLS alert the server sent, if it sent one.
    alert: Option<rustls::AlertDescription>,
    /// Where a [`DialogStep::Identify`] is.
    plan: PlanState,
}

/// The progress of a [`DialogStep::Identify`] through its probe plan.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct PlanState {
    /// The probes sent, and what their replies told.
    probes: crate::ProbePlan,
    /// A probe is on the wire or its answer awaited (not the null probe's wait).
    probing: bool,
    /// The conversation asked for a new connection for the next probe.
    reconnecting: bool,
    /// Time spent on earlier connections of the plan.
    spent: Duration,
    /// The latest elapsed time a completion reported on this connection.
    last_elapsed: Duration,
    /// The plan went inside TLS itself (a reply showed a TLS server): every connection of
    /// the plan from then on starts with a TLS handshake.
    auto_tls: bool,
    /// The plan's TLS handshake is under way on this connection.
    handshaking: bool,
    /// The null probe inside TLS was made (on the plan's first TLS connection).
    greeted: bool,
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
        self.captures.clear();
        self.mismatch = false;
        self.plan = PlanState::default();
        // A long reply (`--max-reply`) grew `rx`; a slot keeps no more than the default.
        if self.rx.capacity() > READ_LIMIT {
            self.rx.shrink_to(READ_LIMIT);
        }
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
        if self.plan.reconnecting {
            return self.plan_reconnected(spec, event);
        }
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
                    self.plan.probes = crate::ProbePlan::new(peer.port());
                }
                self.max_reply = spec.max_reply.clamp(1, MAX_REPLY_LIMIT);
                self.jail = spec.jail;
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
        if self.plan.handshaking {
            return self.plan_handshake(spec, elapsed);
        }
        if matches!(self.current(), Some(DialogStep::Identify { .. })) {
            // The probe is out: read its answer.
            self.plan.last_elapsed = elapsed;
            return self.next_io(spec, elapsed, false);
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
                if self.plan.auto_tls {
                    return self.plan_tls_error(spec, elapsed);
                }
                if let Some(step) = self.on_alert(spec) {
                    return step;
                }
                return self.fail(why);
            }
            if self.plan.handshaking {
                if self.peer_closed {
                    return self.plan_tls_error(spec, elapsed);
                }
                return self.plan_handshake(spec, elapsed);
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
            let room = self.max_reply.saturating_sub(self.rx.len());
            self.rx.extend_from_slice(&data[..data.len().min(room)]);
        }
        self.read_step(spec, elapsed)
    }

    /// Call when the current send or read timed out, `elapsed` after the handshake.
    pub fn on_timeout(&mut self, spec: &ProbeSpec, elapsed: Duration) -> Step {
        if self.plan.handshaking {
            // A server that only looked like TLS, or a slow one: the TLS branch ends.
            return self.plan_tls_error(spec, elapsed);
        }
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
            Some(step @ (DialogStep::Expect { .. } | DialogStep::ExpectAll { .. })) => {
                let wanted = self.wanted(step);
                if self.rx.is_empty() {
                    self.fail(format!("expect {wanted} timed out after {after}"))
                } else {
                    self.mismatch = true;
                    let got = self.quote();
                    self.fail(format!("{got}, wanted {wanted} (timed out after {after})"))
                }
            }
            Some(DialogStep::StartTls) => match wanted_alert(spec) {
                Some(want) if self.tls_info.is_some() => self.fail(format!(
                    "the server accepted the TLS handshake, wanted alert {want} (none after {after})"
                )),
                _ => self.fail(format!("TLS handshake timed out after {after}")),
            },
            Some(DialogStep::Identify { .. }) => {
                // A reply that was worth waiting on is taken as it is.
                if !self.rx.is_empty() {
                    if let Some(step) = self.judge_reply(spec, elapsed, true) {
                        return step;
                    }
                }
                // Silence is no failure here: the next probe, on this connection after the
                // null probe's wait, on a new one after a probe's.
                self.keep_banner();
                let reconnect = self.plan.probing;
                self.next_probe(spec, elapsed, reconnect)
            }
            Some(
                DialogStep::Send(_) | DialogStep::SendIfSilent(_) | DialogStep::SendCaptures(_),
            ) => self.fail(format!("send timed out after {after}")),
            None => self.finish(),
        }
    }

    /// Call when a send or read failed with `errno` (e.g. ECONNRESET).
    pub fn on_io_error(&mut self, errno: Errno) -> Step {
        if matches!(self.current(), Some(DialogStep::Identify { .. }))
            && (self.tls.is_none() || self.plan.auto_tls)
        {
            // A service that resets the connection on a probe it does not speak: try the
            // next one on a new connection, if the plan has one left.
            self.keep_banner();
            if self.plan.handshaking {
                // The plan's own TLS handshake failed: the TLS branch, and the plan, end.
                self.plan.handshaking = false;
                self.plan.auto_tls = false;
                self.rx.clear();
                self.step += 1;
                return self.finish();
            }
            let last_step = self.dialog.as_ref().map_or(0, |d| d.steps.len()) == self.step + 1;
            if !self.plan_has_probes_left() && last_step {
                self.rx.clear();
                self.step += 1;
                return self.finish();
            }
            return self.plan_reconnect(self.plan.last_elapsed);
        }
        let what = match self.current() {
            Some(
                DialogStep::Send(_) | DialogStep::SendIfSilent(_) | DialogStep::SendCaptures(_),
            ) => "sending",
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
            let got = self.quote();
            self.fail(format!("{got}, then {name} while {what}"))
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

    /// The capture groups of the dialog's expects, in order (`${1}` first), each at most
    /// [`CAPTURE_LIMIT`] bytes; empty when no expect had groups.
    pub fn captures(&self) -> &[Vec<u8>] {
        &self.captures
    }

    /// Whether the dialog failed on what the peer said: a reply that did not match its expect,
    /// matched a reject, or outgrew the reply limit. A dialog that failed on silence, a reset,
    /// a close before any reply or TLS is not a mismatch.
    pub fn mismatched(&self) -> bool {
        self.mismatch && self.reason.is_some()
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
            DialogStep::SendCaptures(pieces) => {
                let mut bytes = Vec::new();
                for piece in pieces {
                    match piece {
                        SendPiece::Bytes(b) => bytes.extend_from_slice(b),
                        // A capture the dialog did not take (a group past MAX_CAPTURES)
                        // is sent as nothing; options refuse such references up front.
                        SendPiece::Capture(n) => bytes.extend_from_slice(
                            n.checked_sub(1)
                                .and_then(|i| self.captures.get(i))
                                .map_or(&[][..], Vec::as_slice),
                        ),
                        SendPiece::XmppHeader => {
                            let name = spec
                                .tls_check
                                .as_deref()
                                .and_then(|c| c.sni.as_deref())
                                .or(self.server_name.as_deref());
                            bytes.extend(crate::xmpp_stream_header(name));
                        }
                    }
                }
                if bytes.is_empty() {
                    self.step += 1;
                    return self.advance(spec, elapsed);
                }
                if let Err(why) = self.tls_output(Some(&bytes)) {
                    return self.fail(why);
                }
                self.next_io(spec, elapsed, true)
            }
            DialogStep::StartTls => self.start_tls(spec, elapsed),
            DialogStep::Banner
            | DialogStep::Expect { .. }
            | DialogStep::ExpectAll { .. }
            | DialogStep::Identify { .. } => self.read_step(spec, elapsed),
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
            Some(step @ (DialogStep::Expect { .. } | DialogStep::ExpectAll { .. })) => {
                if let DialogStep::Expect {
                    reject: Some(reject),
                    ..
                } = step
                {
                    if let Some(at) = reject.find(&self.rx) {
                        self.mismatch = true;
                        let got = self.quote_at(at);
                        return self.fail(format!("{got}, which matches reject {reject}"));
                    }
                }
                let passed = match step {
                    DialogStep::Expect { expect, .. } => expect.is_match(&self.rx),
                    DialogStep::ExpectAll { patterns } => {
                        patterns.iter().all(|p| p.is_match(&self.rx))
                    }
                    _ => false,
                };
                if passed {
                    if let DialogStep::ExpectAll { patterns } = step {
                        for p in patterns {
                            p.capture_into(&self.rx, &mut self.captures);
                        }
                    }
                    self.keep_banner();
                    self.rx.clear();
                    self.step += 1;
                    return self.advance(spec, elapsed);
                }
                let wanted = self.wanted(step);
                if self.peer_closed {
                    if self.rx.is_empty() {
                        return self.fail(format!("connection closed, wanted {wanted}"));
                    }
                    self.mismatch = true;
                    let got = self.quote();
                    return self.fail(format!("{got}, wanted {wanted} (then closed)"));
                }
                if self.rx.len() >= self.max_reply {
                    self.mismatch = true;
                    let got = self.quote();
                    let limit = self.max_reply;
                    return self.fail(format!(
                        "{got}, wanted {wanted} (stopped at the reply limit of {limit} bytes)"
                    ));
                }
                self.next_io(spec, elapsed, false)
            }
            Some(DialogStep::Identify { .. }) => {
                self.plan.last_elapsed = elapsed;
                if self.rx.is_empty() && !self.peer_closed {
                    return self.next_io(spec, elapsed, false);
                }
                if !self.rx.is_empty() {
                    // Reading on is no use when nothing more can come or may be waited for.
                    let last = self.peer_closed
                        || self.rx.len() >= self.max_reply
                        || elapsed >= spec.dialog_timeout;
                    if let Some(step) = self.judge_reply(spec, elapsed, last) {
                        return step;
                    }
                }
                // A reply nothing recognises, or a close: the next probe, on a new connection.
                self.keep_banner();
                self.next_probe(spec, elapsed, true)
            }
            Some(
                DialogStep::Send(_)
                | DialogStep::SendIfSilent(_)
                | DialogStep::SendCaptures(_)
                | DialogStep::StartTls,
            )
            | None => self.finish(),
        }
    }

    /// Judges the reply of a [`DialogStep::Identify`] (`last`: no more will come): read more,
    /// keep it as the banner and end the plan or follow it up with the service's own probe
    /// (on a new connection), or `None` when nothing recognises it.
    fn judge_reply(&mut self, spec: &ProbeSpec, elapsed: Duration, last: bool) -> Option<Step> {
        match self.plan.probes.judge(&self.rx, last) {
            crate::ReplyVerdict::Unknown => None,
            crate::ReplyVerdict::ReadMore => Some(self.next_io(spec, elapsed, false)),
            crate::ReplyVerdict::Tls => {
                // A TLS server: this reply is the banner (`tls`, or the HTTPS server's
                // complaint) unless something inside TLS says more.
                let n = self.rx.len().min(BANNER_LIMIT);
                self.banner.clear();
                self.banner.extend_from_slice(&self.rx[..n]);
                self.have_banner = true;
                if self.plan_may_enter_tls(spec, elapsed) {
                    self.plan.probes.enter_tls();
                    self.plan.auto_tls = true;
                    return Some(self.plan_reconnect(elapsed));
                }
                self.rx.clear();
                self.step += 1;
                Some(self.advance(spec, elapsed))
            }
            crate::ReplyVerdict::Recognised { follow_up } => {
                // This reply names the service: it is the banner, whatever came before.
                let n = self.rx.len().min(BANNER_LIMIT);
                self.banner.clear();
                self.banner.extend_from_slice(&self.rx[..n]);
                self.have_banner = true;
                if follow_up {
                    return Some(self.next_probe(spec, elapsed, true));
                }
                self.rx.clear();
                self.step += 1;
                Some(self.advance(spec, elapsed))
            }
        }
    }

    /// Moves a [`DialogStep::Identify`] to its next protocol probe: sent on this connection,
    /// or on a new one (`reconnect`), or none when the plan is spent (its probes, its
    /// budget, or the dialog's time), which ends the step.
    fn next_probe(&mut self, spec: &ProbeSpec, elapsed: Duration, reconnect: bool) -> Step {
        let Some(&DialogStep::Identify { max_probes }) = self.current() else {
            return self.finish();
        };
        let spent = self.plan.spent + elapsed;
        let probe = self.plan.probes.next();
        if self.plan.probes.sent() >= max_probes || probe.is_none() || spent >= spec.dialog_timeout
        {
            self.rx.clear();
            self.step += 1;
            return self.advance(spec, elapsed);
        }
        if reconnect || self.peer_closed {
            if self.tls.is_some() && !self.plan.auto_tls {
                // A TLS session is not made again for a probe: the plan ends here.
                self.rx.clear();
                self.step += 1;
                return self.advance(spec, elapsed);
            }
            return self.plan_reconnect(elapsed);
        }
        self.send_probe(spec, elapsed)
    }

    /// Whether the plan of the current [`DialogStep::Identify`] may send another probe (its
    /// time aside).
    fn plan_has_probes_left(&self) -> bool {
        match self.current() {
            Some(&DialogStep::Identify { max_probes }) => {
                self.plan.probes.sent() < max_probes && self.plan.probes.next().is_some()
            }
            _ => false,
        }
    }

    /// Asks the engine for a new connection for the plan's next probe.
    fn plan_reconnect(&mut self, elapsed: Duration) -> Step {
        self.plan.spent += elapsed;
        // The plan's own TLS session belongs to the old connection; the new one makes its own.
        if self.plan.auto_tls {
            self.tls = None;
        }
        self.plan.reconnecting = true;
        self.plan.probing = false;
        self.rx.clear();
        self.peer_closed = false;
        Step::Reconnect
    }

    /// The new connection of a plan is up (or not): send the next probe, or end the plan
    /// with what the earlier connections showed. The port is open whatever this connect
    /// does; the tries of the first connect stay the result's.
    fn plan_reconnected(&mut self, spec: &ProbeSpec, event: ConnectEvent) -> Step {
        self.plan.reconnecting = false;
        match event {
            ConnectEvent::Connected { local, peer }
                if local != peer
                    && (self.plan_has_probes_left()
                        || (self.plan.auto_tls && !self.plan.greeted))
                    && self.plan.spent < spec.dialog_timeout =>
            {
                if self.plan.auto_tls {
                    return self.plan_start_tls(spec);
                }
                self.send_probe(spec, Duration::ZERO)
            }
            _ => {
                self.step += 1;
                self.advance(spec, Duration::ZERO)
            }
        }
    }

    /// Whether the plan may go inside TLS after a reply that showed it: TLS can be set up,
    /// the dialog is not in TLS already, and the budget has room for the handshake (one
    /// probe) and the time is not spent.
    fn plan_may_enter_tls(&self, spec: &ProbeSpec, elapsed: Duration) -> bool {
        let Some(&DialogStep::Identify { max_probes }) = self.current() else {
            return false;
        };
        spec.tls_config.is_some()
            && self.tls.is_none()
            && !self.plan.auto_tls
            && self.plan.probes.tls() == crate::identify::PlanTls::Plain
            && self.plan.probes.sent() < max_probes
            && self.plan.spent + elapsed < spec.dialog_timeout
    }

    /// Starts the plan's TLS handshake on its new connection (SNI from the target's name,
    /// the certificate recorded, never verified: identification names what runs, whatever
    /// its certificate).
    fn plan_start_tls(&mut self, spec: &ProbeSpec) -> Step {
        let config = spec.tls_config.as_ref().map(Arc::clone);
        let name = conn_server_name(&self.server_name, spec.tls_check.as_deref(), self.peer);
        let conn = config
            .zip(name)
            .and_then(|(config, name)| rustls::ClientConnection::new(config, name).ok());
        let Some(conn) = conn else {
            return self.plan_tls_error(spec, Duration::ZERO);
        };
        self.tls = Some(Box::new(conn));
        self.plan.handshaking = true;
        self.rx.clear();
        self.plan_handshake(spec, Duration::ZERO)
    }

    /// Drives the plan's TLS handshake; once done, the null probe inside TLS (on the first
    /// TLS connection: imaps, pop3s, smtps speak first) or the plan's next probe.
    fn plan_handshake(&mut self, spec: &ProbeSpec, elapsed: Duration) -> Step {
        let Some(conn) = self.tls.as_mut() else {
            return self.plan_tls_error(spec, elapsed);
        };
        if conn.wants_write() {
            if self.tls_output(None).is_err() {
                return self.plan_tls_error(spec, elapsed);
            }
            return self.next_io(spec, elapsed, true);
        }
        if conn.is_handshaking() {
            return self.next_io(spec, elapsed, false);
        }
        self.plan.handshaking = false;
        self.record_tls();
        self.plan.last_elapsed = elapsed;
        if !self.plan.greeted {
            self.plan.greeted = true;
            self.plan.probing = false;
            // A greeting that came with the server's Finished is already in `rx`.
            return self.read_step(spec, elapsed);
        }
        self.rx.clear();
        self.send_probe(spec, elapsed)
    }

    /// The plan's TLS failed: a handshake that did not complete (a service that only looked
    /// like TLS) ends the TLS branch and the plan, with what the earlier replies showed; an
    /// error after the handshake is taken as the peer's close (the next probe, if any).
    fn plan_tls_error(&mut self, spec: &ProbeSpec, elapsed: Duration) -> Step {
        if self.plan.handshaking || self.tls.is_none() {
            self.plan.handshaking = false;
            self.plan.auto_tls = false;
            self.rx.clear();
            self.step += 1;
            return self.advance(spec, elapsed);
        }
        self.peer_closed = true;
        self.read_step(spec, elapsed)
    }

    /// Sends the plan's next probe on this connection.
    fn send_probe(&mut self, spec: &ProbeSpec, elapsed: Duration) -> Step {
        let Some(probe) = self.plan.probes.next() else {
            self.step += 1;
            return self.advance(spec, elapsed);
        };
        self.plan.probes.mark_sent(probe);
        self.plan.probing = true;
        self.plan.last_elapsed = elapsed;
        if let Err(why) = self.tls_output(Some(probe.bytes)) {
            return self.fail(why);
        }
        self.next_io(spec, elapsed, true)
    }

    /// Protocol probes sent by this probe's [`DialogStep::Identify`].
    pub fn probes_sent(&self) -> u8 {
        self.plan.probes.sent()
    }

    /// What a read step wanted, for a reason: its pattern, or for several (`--expect-all`)
    /// the ones the reply lacks.
    fn wanted(&self, step: &DialogStep) -> String {
        match step {
            DialogStep::Expect { expect, .. } => expect.to_string(),
            DialogStep::ExpectAll { patterns } => {
                let missing: Vec<String> = patterns
                    .iter()
                    .filter(|p| !p.is_match(&self.rx))
                    .map(Pattern::to_string)
                    .collect();
                if patterns.len() == 1 || missing.is_empty() {
                    missing.join(", ")
                } else {
                    format!(
                        "all of {} patterns, missing {}",
                        patterns.len(),
                        missing.join(", ")
                    )
                }
            }
            _ => String::new(),
        }
    }

    /// `got '...'` for a reason: the lines of the reply that matter, escaped and bounded. The
    /// first line, and when more came, the last one read (the one a multi-line reply ends
    /// with, or where it stopped); a binary reply from its start, as escaped bytes; with
    /// the jail on, only how many bytes came.
    fn quote(&self) -> String {
        if self.jail {
            return format!("got {} bytes", self.rx.len());
        }
        if is_binary(&self.rx) {
            return format!("got '{}'", printable(&self.rx, BINARY_QUOTE_LIMIT));
        }
        let mut lines = self
            .rx
            .split(|&b| b == b'\n')
            .map(trim_line_end)
            .filter(|l| !l.is_empty());
        let first = lines.next().unwrap_or(&[]);
        match lines.next_back() {
            Some(last) => format!(
                "got '{}' ... '{}'",
                printable(first, QUOTE_LIMIT),
                printable(last, QUOTE_LIMIT)
            ),
            None => format!("got '{}'", printable(first, QUOTE_LIMIT)),
        }
    }

    /// `got '...'` for a reason: the line of the reply that holds byte `at` (where a reject
    /// pattern matched); of a binary reply, its bytes from `at` on.
    fn quote_at(&self, at: usize) -> String {
        if self.jail {
            return format!("got {} bytes", self.rx.len());
        }
        if is_binary(&self.rx) {
            let from = &self.rx[at.min(self.rx.len())..];
            return format!("got '{}'", printable(from, BINARY_QUOTE_LIMIT));
        }
        let start = self.rx[..at.min(self.rx.len())]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let end = self.rx[start..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(self.rx.len(), |i| start + i);
        let line = trim_line_end(&self.rx[start..end]);
        format!("got '{}'", printable(line, QUOTE_LIMIT))
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
        let chain = self.record_tls();
        // `--identify --tls`: the plan runs in this session, without the TLS probe.
        self.plan.probes.given_tls();
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

    /// Records what the finished TLS handshake showed (version, cipher, certificates) as
    /// the probe's TLS info; returns the peer's chain.
    fn record_tls(&mut self) -> Vec<rustls::pki_types::CertificateDer<'static>> {
        let Some(conn) = self.tls.as_ref() else {
            return Vec::new();
        };
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
        chain
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
    /// to `rx` (bounded by the reply limit).
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
        while self.rx.len() < self.max_reply {
            match conn.reader().read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => {
                    let room = self.max_reply - self.rx.len();
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

    fn connected_to(port: u16) -> ConnectEvent {
        ConnectEvent::Connected {
            local: "127.0.0.1:40000".parse().unwrap(),
            peer: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    fn sends(step: Step) -> bool {
        matches!(step, Step::Send { .. })
    }

    fn open() -> Step {
        Step::Done {
            state: PortState::Open,
            errno: None,
        }
    }

    #[test]
    fn the_identify_plan_probes_a_silent_port_and_reconnects_after_a_close() {
        let spec = spec(Dialog::identify(4));
        let ms = Duration::from_millis;
        let mut c = Conversation::default();
        // The null probe: wait for a banner.
        assert!(matches!(
            c.on_connect(&spec, connected_to(11211)),
            Step::Recv { .. }
        ));
        // Silence: the port's hinted probe goes out on the same connection.
        assert!(sends(c.on_timeout(&spec, ms(2000))));
        assert_eq!(c.pending_send(), b"version\r\n");
        let n = c.pending_send().len();
        assert!(matches!(c.on_sent(&spec, n, ms(2001)), Step::Recv { .. }));
        // The service hangs up: the next probe needs a new connection.
        assert_eq!(c.on_recv(&spec, b"", ms(2002)), Step::Reconnect);
        assert!(sends(c.on_connect(&spec, connected_to(11211))));
        assert_eq!(c.pending_send(), b"GET / HTTP/1.0\r\n\r\n");
        let n = c.pending_send().len();
        assert!(matches!(c.on_sent(&spec, n, ms(1)), Step::Recv { .. }));
        // An answer that names the service ends the plan; it is the banner.
        assert_eq!(c.on_recv(&spec, b"ERROR\r\n", ms(2)), open());
        assert_eq!(c.banner(), Some(&b"ERROR\r\n"[..]));
        assert_eq!(
            (c.probes_sent(), c.tries(), c.matched(), c.reason()),
            (2, 1, None, None)
        );
    }

    #[test]
    fn the_identify_plan_keeps_to_its_budget_and_to_the_port_it_found_open() {
        let ms = Duration::from_millis;
        // A talkative service that names itself needs no probe.
        let spec4 = spec(Dialog::identify(4));
        let mut c = Conversation::default();
        c.on_connect(&spec4, connected_to(22));
        assert_eq!(
            c.on_recv(&spec4, b"SSH-2.0-OpenSSH_9.2p1\r\n", ms(1)),
            open()
        );
        assert_eq!(c.probes_sent(), 0);
        // One probe allowed: after its close, the plan ends with the port open.
        let spec1 = spec(Dialog::identify(1));
        let mut c = Conversation::default();
        c.on_connect(&spec1, connected_to(4000));
        c.on_timeout(&spec1, ms(2000));
        let n = c.pending_send().len();
        c.on_sent(&spec1, n, ms(2001));
        assert_eq!(c.on_recv(&spec1, b"", ms(2002)), open());
        assert_eq!((c.probes_sent(), c.banner()), (1, None));
        // No probe at all: the banner only.
        let spec0 = spec(Dialog::identify(0));
        let mut c = Conversation::default();
        c.on_connect(&spec0, connected_to(4000));
        assert_eq!(c.on_timeout(&spec0, ms(2000)), open());
        assert_eq!(c.probes_sent(), 0);
        // A reset, then a refused reconnect: still open, with what was seen before.
        let mut c = Conversation::default();
        c.on_connect(&spec4, connected_to(4000));
        assert_eq!(c.on_recv(&spec4, b"hello\r\n", ms(5)), Step::Reconnect);
        assert!(sends(c.on_connect(&spec4, connected_to(4000))));
        assert_eq!(
            c.on_io_error(crate::errno::consts::ECONNRESET),
            Step::Reconnect
        );
        let refused = ConnectEvent::Failed(crate::errno::consts::ECONNREFUSED);
        assert_eq!(c.on_connect(&spec4, refused), open());
        assert_eq!(c.banner(), Some(&b"hello\r\n"[..]));
        assert_eq!((c.tries(), c.reason()), (1, None));
        // The dialog's time bounds the whole plan, across connections.
        let mut c = Conversation::default();
        c.on_connect(&spec4, connected_to(4000));
        c.on_timeout(&spec4, ms(2000));
        let n = c.pending_send().len();
        c.on_sent(&spec4, n, ms(2001));
        assert_eq!(c.on_recv(&spec4, b"", ms(4000)), Step::Reconnect);
        c.on_connect(&spec4, connected_to(4000));
        let n = c.pending_send().len();
        c.on_sent(&spec4, n, ms(1));
        assert_eq!(c.on_timeout(&spec4, ms(1000)), open());
        assert_eq!(c.probes_sent(), 2);
    }

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
                "step 1: got '554 go away', wanted ^220 (then closed)",
            ),
            (
                smtp(),
                vec![
                    Peer::Says(b"220 hi\r\n"),
                    Peer::Accepts,
                    Peer::Says(b"550 no\r\n"),
                ],
                "step 3: got '550 no', which matches reject ^5",
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

    /// Runs the dialog that `options` describe against a script; returns the conversation
    /// and every send it made, in order.
    fn talk(options: crate::ProbeOptions, script: &[Peer]) -> (Conversation, Vec<Vec<u8>>) {
        let dialog = options.dialog().unwrap().unwrap();
        let spec = ProbeSpec {
            max_reply: options.max_reply.unwrap_or(READ_LIMIT),
            jail: options.jail,
            ..spec(dialog)
        };
        let mut c = Conversation::default();
        let mut step = c.on_connect(&spec, connected());
        let mut sent = Vec::new();
        let mut t = Duration::ZERO;
        for (n, peer) in script.iter().enumerate() {
            t += Duration::from_millis(10);
            step = match (step, peer) {
                // The verdict came before the script's end (e.g. a match before the close).
                (Step::Done { .. }, _) => break,
                (Step::Recv { .. }, Peer::Says(b)) => c.on_recv(&spec, b, t),
                (Step::Recv { .. }, Peer::Closes) => c.on_recv(&spec, b"", t),
                (Step::Recv { .. } | Step::Send { .. }, Peer::Silent) => c.on_timeout(&spec, t),
                (Step::Recv { .. } | Step::Send { .. }, Peer::Resets) => c.on_io_error(104),
                (Step::Send { .. }, Peer::Accepts) => {
                    sent.push(c.pending_send().to_vec());
                    let len = c.pending_send().len();
                    c.on_sent(&spec, len, t)
                }
                (s, _) => panic!("script out of step at {n}: conversation wants {s:?}"),
            };
        }
        assert!(matches!(step, Step::Done { .. }), "not done: {step:?}");
        (c, sent)
    }

    fn steps(list: &[(&str, &str)]) -> Vec<crate::ProbeStep> {
        list.iter()
            .map(|&(kind, text)| match kind {
                "send" => crate::ProbeStep::Send(text.into()),
                _ => crate::ProbeStep::Expect(text.into()),
            })
            .collect()
    }

    #[test]
    fn steps_run_in_order_and_captures_fill_later_sends() {
        let options = crate::ProbeOptions {
            steps: steps(&[
                ("expect", r"^220 (\S+) ESMTP"),
                ("send", r"EHLO ${1}\r\n"),
                ("expect", r"^250[ -]SIZE (\d+)$"),
                ("send", r"MAIL FROM:<${1}@${2}>\r\n"),
                ("expect", "^250 "),
            ]),
            quit: Some(r"QUIT\r\n".into()),
            ..Default::default()
        };
        let (c, sent) = talk(
            options,
            &[
                Peer::Says(b"220 mx.example ESMTP\r\n"),
                Peer::Accepts,
                Peer::Says(b"250-mx.example\r\n250-SIZE 1024\r\n250 HELP\r\n"),
                Peer::Accepts,
                Peer::Says(b"250 OK\r\n"),
                Peer::Accepts,
            ],
        );
        assert_eq!((c.matched(), c.reason()), (Some(true), None));
        assert_eq!(
            sent,
            [
                &b"EHLO mx.example\r\n"[..],
                b"MAIL FROM:<mx.example@1024>\r\n",
                b"QUIT\r\n"
            ]
        );
        assert_eq!(c.captures(), [&b"mx.example"[..], b"1024"]);
        assert!(!c.mismatched());
    }

    #[test]
    fn anchors_match_at_every_line_with_crlf_or_lf() {
        let case = |pattern: &str, reply: &'static [u8]| {
            let options = crate::ProbeOptions {
                steps: steps(&[("expect", pattern)]),
                ..Default::default()
            };
            talk(options, &[Peer::Says(reply), Peer::Closes])
                .0
                .matched()
        };
        assert_eq!(case("^250 OK$", b"250-mx\r\n250 OK\r\n"), Some(true));
        assert_eq!(case("^250 OK$", b"250-mx\n250 OK\n"), Some(true));
        assert_eq!(case("^mx$", b"250-mx\r\n"), Some(false));
        assert_eq!(case("^OK$", b"NOK\r\nOKAY\r\n"), Some(false));
        assert_eq!(
            case(r"^\+OK ready\.$", b"* hi\r\n+OK ready.\r\n"),
            Some(true)
        );
    }

    #[test]
    fn expect_all_needs_every_pattern_and_names_the_missing_ones() {
        let options = |expect_all| crate::ProbeOptions {
            steps: steps(&[("expect", "^A"), ("expect", "^B"), ("expect", "^C")]),
            expect_all,
            ..Default::default()
        };
        // In one reply, in any order, over several reads.
        let (c, _) = talk(
            options(true),
            &[Peer::Says(b"C\r\nA"), Peer::Says(b"x\r\nB\r\n")],
        );
        assert_eq!((c.matched(), c.reason()), (Some(true), None));
        let (c, _) = talk(options(true), &[Peer::Says(b"B\r\nA\r\n"), Peer::Closes]);
        assert_eq!(
            c.reason(),
            Some("step 1: got 'B' ... 'A', wanted all of 3 patterns, missing ^C (then closed)")
        );
        assert!(c.mismatched());
        // Without --expect-all the three are three reads, in order.
        let (c, _) = talk(
            options(false),
            &[
                Peer::Says(b"A\r\n"),
                Peer::Says(b"B\r\n"),
                Peer::Says(b"C\r\n"),
            ],
        );
        assert_eq!((c.matched(), c.reason()), (Some(true), None));
    }

    #[test]
    fn long_replies_read_up_to_max_reply_and_say_when_it_is_hit() {
        let reply: Vec<u8> = (0..300)
            .flat_map(|i| format!("line {i:04} of a long reply\r\n").into_bytes())
            .collect();
        assert!(reply.len() > 8000);
        let options = |max_reply| crate::ProbeOptions {
            steps: steps(&[("expect", "^line 0299 ")]),
            max_reply,
            ..Default::default()
        };
        let chunks: Vec<Peer> = reply.chunks(2048).map(Peer::Says).collect();
        let (c, _) = talk(options(Some(16 * 1024)), &chunks);
        assert_eq!((c.matched(), c.reason()), (Some(true), None));
        // The default limit stops the read at 4096 bytes, and the reason says so.
        let (mut c, _) = talk(options(None), &chunks[..2]);
        let reason = c.reason().unwrap_or_default().to_string();
        assert!(
            reason.starts_with("step 1: got 'line 0000 of a long reply' ... 'line 0"),
            "{reason}"
        );
        assert!(
            reason.ends_with("wanted ^line 0299  (stopped at the reply limit of 4096 bytes)"),
            "{reason}"
        );
        assert!(c.mismatched());
        // A slot gives back what a long reply took.
        let (mut big, _) = talk(
            options(Some(16 * 1024)),
            &[Peer::Says(&reply[..6000]), Peer::Closes],
        );
        assert!(big.rx.capacity() >= 6000);
        big.reset();
        assert!(big.rx.capacity() <= READ_LIMIT);
        c.reset();
        assert!(c.captures().is_empty() && !c.mismatched());
    }

    #[test]
    fn the_xmpp_stream_goes_to_the_targets_name_unless_sni_names_another() {
        let header = |sni: Option<&str>, target: Option<&str>| {
            let options = crate::ProbeOptions {
                preset: Some("xmpp".into()),
                sni: sni.map(str::to_string),
                ..Default::default()
            };
            let s = Duration::from_secs(1);
            let spec = options
                .spec(
                    s,
                    1,
                    s,
                    s,
                    Arc::new(rustls::time_provider::DefaultTimeProvider),
                )
                .unwrap();
            let mut c = Conversation::default();
            c.set_server_name(target);
            assert!(matches!(
                c.on_connect(&spec, connected()),
                Step::Send { .. }
            ));
            String::from_utf8(c.pending_send().to_vec()).unwrap()
        };
        assert!(header(None, Some("chat.example")).ends_with(" to='chat.example'>"));
        assert!(
            header(Some("vhost.example"), Some("chat.example")).ends_with(" to='vhost.example'>")
        );
        let bare = header(None, None);
        assert!(
            bare.ends_with(" version='1.0'>") && !bare.contains(" to="),
            "{bare}"
        );
    }

    #[test]
    fn binary_replies_are_quoted_as_escaped_bytes_past_their_0x0a() {
        // A PostgreSQL-like reply: a length prefix with a 0x0a in it, then more bytes. Cut
        // at the 0x0a it would read as a line of four bytes.
        let reply = b"R\x00\x00\x00\x0a\x00\x00\x00\x05salt\x01\x02";
        let (_, _, reason, _) = run(
            Dialog {
                steps: vec![expect(r"^\+OK")],
            },
            &[Peer::Says(reply), Peer::Closes],
        );
        assert_eq!(
            reason.as_deref(),
            Some(
                r"step 1: got 'R\x00\x00\x00\n\x00\x00\x00\x05salt\x01\x02', wanted ^\+OK (then closed)"
            )
        );
        // A long one is cut at the bound, with `...`.
        let long: Vec<u8> = (0u8..=255).collect();
        let (_, _, reason, _) = run(
            Dialog {
                steps: vec![expect("^never")],
            },
            &[Peer::Says(&long), Peer::Closes],
        );
        let reason = reason.unwrap();
        let quoted = reason
            .strip_prefix("step 1: got '")
            .and_then(|r| r.split_once("', wanted"))
            .map(|(q, _)| q)
            .unwrap();
        assert!(quoted.starts_with(r"\x00\x01\x02"), "{reason}");
        assert!(quoted.ends_with("..."), "{reason}");
        assert!(quoted.len() <= BINARY_QUOTE_LIMIT + 3, "{reason}");
        // A reject in a binary reply quotes the bytes from where it matched.
        let (_, _, reason, _) = run(
            Dialog {
                steps: vec![DialogStep::Expect {
                    expect: Pattern::regex("(?-u)^\\x00OK").unwrap(),
                    reject: Some(Pattern::regex("ERR").unwrap()),
                }],
            },
            &[Peer::Says(b"\x00\x01\nhdr ERR\x02 bad")],
        );
        assert_eq!(
            reason.as_deref(),
            Some(r"step 1: got 'ERR\x02 bad', which matches reject ERR")
        );
        // Text keeps its lines.
        assert!(!is_binary(b"220 mx ESMTP\r\n250-a\tb\r\n"));
        assert!(is_binary(b"\x16\x03\x01"));
    }

    #[test]
    fn reasons_quote_the_lines_that_matter_and_the_jail_keeps_them_out() {
        let options = |jail| crate::ProbeOptions {
            steps: steps(&[("send", r"HELP\r\n"), ("expect", "^214 ")]),
            jail,
            ..Default::default()
        };
        let script = [
            Peer::Accepts,
            Peer::Says(b"214-commands:\r\n214-HELO EHLO\r\n\r\n"),
            Peer::Says(b"502 not today\r\n"),
            Peer::Silent,
        ];
        let (c, _) = talk(options(false), &script);
        assert_eq!(
            c.reason(),
            Some(
                "step 2: got '214-commands:' ... '502 not today', wanted ^214  \
                 (timed out after 2s)"
            )
        );
        let (c, _) = talk(options(true), &script);
        assert_eq!(
            c.reason(),
            Some("step 2: got 47 bytes, wanted ^214  (timed out after 2s)")
        );
        // A reject quotes the line it matched, not the start of the reply.
        let dialog = Dialog {
            steps: vec![DialogStep::Expect {
                expect: Pattern::regex("^250 ").unwrap(),
                reject: Some(Pattern::regex(r"^5\d\d").unwrap()),
            }],
        };
        let (_, _, reason, _) = run(dialog, &[Peer::Says(b"250-a\r\n250-b\r\n554 no\r\n250-c")]);
        assert_eq!(
            reason.as_deref(),
            Some("step 1: got '554 no', which matches reject ^5\\d\\d")
        );
        // Silence and resets are not mismatches.
        let (c, _) = talk(options(false), &[Peer::Accepts, Peer::Silent]);
        assert_eq!(c.reason(), Some("step 2: expect ^214  timed out after 2s"));
        assert!(!c.mismatched());
    }

    #[test]
    fn steps_continue_inside_tls_after_a_starttls_preset() {
        let options = crate::ProbeOptions {
            preset: Some("smtp-starttls".into()),
            steps: steps(&[("send", r"EHLO porthawk\r\n"), ("expect", "^250 ")]),
            quit: Some(r"QUIT\r\n".into()),
            ..Default::default()
        };
        let dialog = options.dialog().unwrap().unwrap();
        let at = dialog
            .steps
            .iter()
            .position(|s| *s == DialogStep::StartTls)
            .unwrap();
        assert_eq!(
            dialog.steps[at + 1..],
            [
                DialogStep::Send(b"EHLO porthawk\r\n".to_vec()),
                DialogStep::ExpectAll {
                    patterns: vec![Pattern::regex("^250 ").unwrap()]
                },
                DialogStep::Send(b"QUIT\r\n".to_vec()),
            ]
        );
        // Through a real TLS session: the EHLO goes encrypted and its answer is read.
        let greeting = b"250 mail.example\r\n";
        let (c, _) = tls_greeting(
            &rustls::version::TLS13,
            vec![
                DialogStep::StartTls,
                DialogStep::Send(b"EHLO porthawk\r\n".to_vec()),
                DialogStep::ExpectAll {
                    patterns: vec![Pattern::regex(r"^250 (\S+)").unwrap()],
                },
            ],
            greeting,
        );
        assert_eq!((c.matched(), c.reason()), (Some(true), None));
        assert_eq!(c.captures(), [&b"mail.example"[..]]);
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

    /// What the peer behind the port of [`play_plan`] does inside TLS: its greeting (sent as
    /// soon as the handshake is done) and its answer to a request (`None`: silence).
    struct TlsPeer<'a> {
        greeting: &'a [u8],
        answer: &'a dyn Fn(&[u8]) -> Option<Vec<u8>>,
    }

    /// An in-memory rustls server with [`TEST_CERT`], TLS 1.2 and 1.3.
    fn tls_server() -> rustls::ServerConnection {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cert = CertificateDer::from_pem_slice(TEST_CERT.as_bytes()).unwrap();
        let key = PrivateKeyDer::from_pem_slice(TEST_KEY.as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap();
        rustls::ServerConnection::new(Arc::new(config)).unwrap()
    }

    /// Plays an identify plan on `port` against one server: on a plain connection it answers
    /// each send with `plain` (`None`: it closes), unless `tls` is given and the send is a
    /// TLS record, which starts a real TLS server on that connection (the plan's ClientHello
    /// probe and its handshakes alike). Silent until spoken to. Returns the conversation and
    /// what each connection carried: its plaintext sends, or `TLS:` and the requests inside.
    fn play_plan(
        spec: &ProbeSpec,
        port: u16,
        plain: &dyn Fn(&[u8]) -> Option<Vec<u8>>,
        tls: Option<&TlsPeer>,
    ) -> (Conversation, Vec<String>) {
        let mut c = Conversation::default();
        let mut step = c.on_connect(spec, connected_to(port));
        let mut server: Option<rustls::ServerConnection> = None;
        // The plain answer waiting to be read: `Some(empty)` is a close.
        let mut pending: Option<Vec<u8>> = None;
        let mut log = vec![String::new()];
        let mut t = Duration::ZERO;
        for _ in 0..200 {
            t += Duration::from_millis(10);
            step = match step {
                Step::Send { .. } => {
                    let wire = c.pending_send().to_vec();
                    let starts_tls = wire.first() == Some(&0x16) && tls.is_some();
                    if let (None, true, Some(peer)) = (&server, starts_tls, tls) {
                        let mut s = tls_server();
                        s.writer().write_all(peer.greeting).unwrap();
                        server = Some(s);
                        log.last_mut().unwrap().push_str("TLS:");
                    }
                    if let (Some(s), Some(peer)) = (server.as_mut(), tls) {
                        let mut rd = wire.as_slice();
                        while !rd.is_empty() {
                            s.read_tls(&mut rd).unwrap();
                        }
                        if s.process_new_packets().is_ok() && !s.is_handshaking() {
                            let mut request = Vec::new();
                            let _ = s.reader().read_to_end(&mut request);
                            if !request.is_empty() {
                                let line = request.split(|&b| b == b'\r').next().unwrap_or(&[]);
                                log.last_mut().unwrap().push_str(&printable(line, 40));
                                log.last_mut().unwrap().push(';');
                                if let Some(answer) = (peer.answer)(&request) {
                                    s.writer().write_all(&answer).unwrap();
                                }
                            }
                        }
                    } else {
                        let line = wire.split(|&b| b == b'\r').next().unwrap_or(&[]);
                        log.last_mut().unwrap().push_str(&printable(line, 16));
                        log.last_mut().unwrap().push(';');
                        pending = Some(plain(&wire).unwrap_or_default());
                    }
                    c.on_sent(spec, wire.len(), t)
                }
                Step::Recv { .. } => {
                    if let Some(s) = server.as_mut() {
                        let mut wire = Vec::new();
                        while s.wants_write() {
                            s.write_tls(&mut wire).unwrap();
                        }
                        if wire.is_empty() {
                            t += spec.read_timeout;
                            c.on_timeout(spec, t)
                        } else {
                            c.on_recv(spec, &wire, t)
                        }
                    } else {
                        match pending.take() {
                            Some(answer) => c.on_recv(spec, &answer, t),
                            None => {
                                t += spec.read_timeout;
                                c.on_timeout(spec, t)
                            }
                        }
                    }
                }
                Step::Reconnect => {
                    server = None;
                    pending = None;
                    log.push(String::new());
                    t = Duration::ZERO;
                    c.on_connect(spec, connected_to(port))
                }
                Step::Done { .. } => break,
            };
        }
        assert!(matches!(step, Step::Done { .. }), "not done: {step:?}");
        (c, log)
    }

    /// An identify spec as `--identify` builds it: with the TLS configuration.
    fn identify_spec(
        dialog: Dialog,
        read_timeout: Duration,
        dialog_timeout: Duration,
    ) -> ProbeSpec {
        let time = Arc::new(rustls::time_provider::DefaultTimeProvider);
        ProbeSpec {
            tls_config: Some(crate::tls::client_config(time).unwrap()),
            read_timeout,
            dialog_timeout,
            ..spec(dialog)
        }
    }

    const NGINX_PLAIN_TO_TLS: &[u8] = b"HTTP/1.1 400 Bad Request\r\nServer: nginx/1.22.1\r\n\
        Content-Type: text/html\r\n\r\n<html>\r\n<head><title>400 The plain HTTP request was \
        sent to HTTPS port</title></head>\r\n";
    const NGINX_OK: &[u8] =
        b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nContent-Length: 9\r\n\r\nporthawk\n";

    fn https(request: &[u8]) -> Option<Vec<u8>> {
        request.starts_with(b"GET / ").then(|| NGINX_OK.to_vec())
    }

    fn id_of(c: &Conversation) -> Option<(String, Option<String>, Option<String>)> {
        let id = crate::identify(c.banner()?)?;
        Some((id.service.to_string(), id.product, id.version))
    }

    #[test]
    fn the_identify_plan_goes_inside_tls_when_a_reply_shows_it() {
        let ms = Duration::from_millis;
        let spec = identify_spec(Dialog::identify(DEFAULT_MAX_PROBES), ms(100), ms(5000));
        let nginx = (
            "http".to_string(),
            Some("nginx".to_string()),
            Some("1.22.1".to_string()),
        );
        // nginx's complaint to a plain request: the handshake on a new connection, the null
        // probe (silent), then HTTP inside, which names it; with the TLS info.
        let complain = |_: &[u8]| Some(NGINX_PLAIN_TO_TLS.to_vec());
        let peer = TlsPeer {
            greeting: b"",
            answer: &https,
        };
        let (c, log) = play_plan(&spec, 40_001, &complain, Some(&peer));
        assert_eq!(log, ["GET / HTTP/1.0;", "TLS:GET / HTTP/1.0;"]);
        assert_eq!(id_of(&c), Some(nginx.clone()));
        assert_eq!(c.tls().map(|t| t.version.as_str()), Some("TLSv1.3"));
        let subject = c
            .tls()
            .and_then(|t| t.cert.as_ref())
            .map(|k| k.subject.as_str());
        assert_eq!(subject, Some("CN=localhost"));
        assert_eq!((c.probes_sent(), c.tries(), c.reason()), (3, 1, None));

        // An OpenSSL server closes on plain HTTP without a byte; the ClientHello probe gets a
        // ServerHello. An imaps server greets inside TLS: the null probe names it.
        let closes = |_: &[u8]| None;
        let imaps = TlsPeer {
            greeting: b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] Dovecot ready.\r\n",
            answer: &|_| None,
        };
        let (c, log) = play_plan(&spec, 40_001, &closes, Some(&imaps));
        assert_eq!(log, ["GET / HTTP/1.0;", "TLS:", "TLS:"]);
        assert_eq!(
            id_of(&c),
            Some(("imap".to_string(), Some("Dovecot".to_string()), None))
        );
        assert!(c.tls().is_some());
        assert_eq!((c.probes_sent(), c.reason()), (3, None));

        // A TLS server that says nothing inside: `tls`, with the TLS info, within the
        // budget (HTTP, the ClientHello, the handshake, HTTP and Redis inside).
        let mute = TlsPeer {
            greeting: b"",
            answer: &|_| None,
        };
        let (c, log) = play_plan(&spec, 40_001, &closes, Some(&mute));
        assert_eq!(
            log,
            ["GET / HTTP/1.0;", "TLS:", "TLS:GET / HTTP/1.0;", "TLS:*1;"]
        );
        assert_eq!(id_of(&c).map(|i| i.0), Some("tls".to_string()));
        assert!(c.tls().is_some());
        assert_eq!((c.probes_sent(), c.reason()), (DEFAULT_MAX_PROBES, None));

        // On a TLS port the ClientHello goes first.
        let (c, log) = play_plan(&spec, 443, &closes, Some(&peer));
        assert_eq!(log, ["TLS:", "TLS:GET / HTTP/1.0;"]);
        assert_eq!(id_of(&c), Some(nginx));
        assert_eq!(c.probes_sent(), 3);
    }

    #[test]
    fn a_handshake_that_fails_ends_the_tls_branch_with_what_was_seen() {
        let ms = Duration::from_millis;
        let spec = identify_spec(Dialog::identify(DEFAULT_MAX_PROBES), ms(100), ms(5000));
        // The complaint, then plain HTTP again to the ClientHello: the handshake fails; the
        // port is open, the complaint is the banner, no TLS info and no failure reason.
        let complain = |_: &[u8]| Some(NGINX_PLAIN_TO_TLS.to_vec());
        let (c, log) = play_plan(&spec, 40_001, &complain, None);
        assert_eq!(log.len(), 2, "{log:?}");
        assert!(log[1].starts_with("\\x16\\x03"), "{log:?}");
        assert_eq!(c.banner(), Some(NGINX_PLAIN_TO_TLS));
        assert_eq!((c.tls(), c.reason(), c.tries()), (None, None, 1));
        assert_eq!(c.probes_sent(), 2);
        // A close, or silence, in the middle of the handshake: the same.
        for answer in [None, Some(Vec::new())] {
            let mut c = Conversation::default();
            c.on_connect(&spec, connected_to(40_001));
            c.on_timeout(&spec, ms(100));
            let n = c.pending_send().len();
            c.on_sent(&spec, n, ms(101));
            assert_eq!(
                c.on_recv(&spec, NGINX_PLAIN_TO_TLS, ms(102)),
                Step::Reconnect
            );
            assert!(sends(c.on_connect(&spec, connected_to(40_001))));
            assert_eq!(c.pending_send().first(), Some(&0x16));
            let n = c.pending_send().len();
            assert!(matches!(c.on_sent(&spec, n, ms(1)), Step::Recv { .. }));
            let end = match answer {
                None => c.on_timeout(&spec, ms(101)),
                Some(close) => c.on_recv(&spec, &close, ms(2)),
            };
            assert_eq!(end, open());
            assert_eq!((c.tls(), c.reason()), (None, None));
            assert_eq!(c.banner(), Some(NGINX_PLAIN_TO_TLS));
        }
        // An alert to the ClientHello probe on 443, then a reset in the handshake.
        let mut c = Conversation::default();
        c.on_connect(&spec, connected_to(443));
        assert!(sends(c.on_timeout(&spec, ms(100))));
        let n = c.pending_send().len();
        assert!(matches!(c.on_sent(&spec, n, ms(101)), Step::Recv { .. }));
        let alert: &[u8] = b"\x15\x03\x03\x00\x02\x02\x28";
        assert_eq!(c.on_recv(&spec, alert, ms(2)), Step::Reconnect);
        assert!(sends(c.on_connect(&spec, connected_to(443))));
        assert_eq!(c.on_io_error(crate::errno::consts::ECONNRESET), open());
        assert_eq!((c.tls(), c.reason()), (None, None));
        assert_eq!(c.banner(), Some(alert));
    }

    #[test]
    fn the_tls_branch_keeps_to_the_budget_and_the_dialog_time() {
        let ms = Duration::from_millis;
        let complain = |_: &[u8]| Some(NGINX_PLAIN_TO_TLS.to_vec());
        let peer = TlsPeer {
            greeting: b"",
            answer: &https,
        };
        // One probe: no room for the handshake.
        let spec1 = identify_spec(Dialog::identify(1), ms(100), ms(5000));
        let (c, log) = play_plan(&spec1, 40_001, &complain, Some(&peer));
        assert_eq!(log, ["GET / HTTP/1.0;"]);
        assert_eq!((c.probes_sent(), c.tls()), (1, None));
        // Two: the handshake and the null probe inside, no request.
        let spec2 = identify_spec(Dialog::identify(2), ms(100), ms(5000));
        let (c, log) = play_plan(&spec2, 40_001, &complain, Some(&peer));
        assert_eq!(log, ["GET / HTTP/1.0;", "TLS:"]);
        assert_eq!(c.probes_sent(), 2);
        assert!(c.tls().is_some());
        assert_eq!(c.banner(), Some(NGINX_PLAIN_TO_TLS));
        // The dialog's time spent by the first connection: no TLS branch.
        let short = identify_spec(Dialog::identify(4), ms(100), ms(120));
        let (c, log) = play_plan(&short, 40_001, &complain, Some(&peer));
        assert_eq!(log, ["GET / HTTP/1.0;"]);
        assert_eq!((c.probes_sent(), c.tls()), (1, None));
        // Spent during the null probe inside: the plan ends there.
        let short = identify_spec(Dialog::identify(4), ms(100), ms(200));
        let (c, log) = play_plan(&short, 40_001, &complain, Some(&peer));
        assert_eq!(log, ["GET / HTTP/1.0;", "TLS:"]);
        assert_eq!(c.probes_sent(), 2);
        // Without a TLS configuration (a spec built by hand), the plan stops at the reply.
        let bare = spec(Dialog::identify(4));
        let (c, log) = play_plan(&bare, 40_001, &complain, Some(&peer));
        assert_eq!(log, ["GET / HTTP/1.0;"]);
        assert_eq!((c.probes_sent(), c.tls()), (1, None));
    }

    #[test]
    fn identify_with_tls_given_runs_the_plan_in_that_session_unchanged() {
        let ms = Duration::from_millis;
        let spec = identify_spec(Dialog::identify(4).over_tls(), ms(100), ms(5000));
        let peer = TlsPeer {
            greeting: b"",
            answer: &https,
        };
        let closes = |_: &[u8]| None;
        // Port 443 hints the ClientHello, but the session is TLS already: HTTP goes first,
        // in it, and names nginx; one probe.
        let (c, log) = play_plan(&spec, 443, &closes, Some(&peer));
        assert_eq!(log, ["TLS:GET / HTTP/1.0;"], "{:?}", c.reason());
        assert_eq!(
            id_of(&c),
            Some((
                "http".to_string(),
                Some("nginx".to_string()),
                Some("1.22.1".to_string())
            ))
        );
        assert_eq!((c.probes_sent(), c.reason()), (1, None));
        // A silent server: the plan ends after its one probe (no new session per probe).
        let mute = TlsPeer {
            greeting: b"",
            answer: &|_| None,
        };
        let (c, log) = play_plan(&spec, 40_001, &closes, Some(&mute));
        assert_eq!(log, ["TLS:GET / HTTP/1.0;"]);
        assert_eq!(c.probes_sent(), 1);
    }

    #[test]
    fn the_kubernetes_api_is_followed_up_inside_tls_on_a_new_session() {
        let ms = Duration::from_millis;
        let spec = identify_spec(Dialog::identify(DEFAULT_MAX_PROBES), ms(100), ms(5000));
        // Go's plain answer, then inside TLS the API's 403 Status to `GET /` and its
        // version to `GET /version`, asked on a second TLS connection.
        let plain =
            |_: &[u8]| Some(crate::fuzzing::sample_reply("kubernetes-1.28-plain-http").to_vec());
        let api = |request: &[u8]| {
            let name = if request.starts_with(b"GET /version ") {
                "kubernetes-1.28.2-version"
            } else {
                "kubernetes-1.28-forbidden"
            };
            Some(crate::fuzzing::sample_reply(name).to_vec())
        };
        let peer = TlsPeer {
            greeting: b"",
            answer: &api,
        };
        let (c, log) = play_plan(&spec, 40_001, &plain, Some(&peer));
        assert_eq!(
            log,
            [
                "GET / HTTP/1.0;",
                "TLS:GET / HTTP/1.0;",
                "TLS:GET /version HTTP/1.0;"
            ]
        );
        assert_eq!(
            id_of(&c),
            Some((
                "http".to_string(),
                Some("Kubernetes".to_string()),
                Some("1.28.2".to_string())
            ))
        );
        assert!(c.tls().is_some());
        assert_eq!((c.probes_sent(), c.reason()), (4, None));
    }

    #[test]
    fn the_plans_handshake_sends_sni_for_a_named_target_only() {
        let ms = Duration::from_millis;
        let spec = identify_spec(Dialog::identify(DEFAULT_MAX_PROBES), ms(100), ms(5000));
        let sni = |name: Option<&str>| {
            let mut c = Conversation::default();
            c.set_server_name(name);
            // On 443 the ClientHello probe goes first, after the null probe; an alert
            // answers it.
            c.on_connect(&spec, connected_to(443));
            assert!(sends(c.on_timeout(&spec, ms(100))));
            assert_eq!(c.pending_send().get(..3), Some(&b"\x16\x03\x01"[..]));
            let n = c.pending_send().len();
            assert!(matches!(c.on_sent(&spec, n, ms(101)), Step::Recv { .. }));
            let alert: &[u8] = b"\x15\x03\x03\x00\x02\x02\x70";
            assert_eq!(c.on_recv(&spec, alert, ms(102)), Step::Reconnect);
            // The plan's own handshake: a real ClientHello, read by a real server.
            assert!(sends(c.on_connect(&spec, connected_to(443))));
            let mut server = tls_server();
            let mut wire = c.pending_send();
            while !wire.is_empty() {
                server.read_tls(&mut wire).unwrap();
            }
            server.process_new_packets().unwrap();
            server.server_name().map(str::to_string)
        };
        assert_eq!(sni(Some("web.example")), Some("web.example".to_string()));
        assert_eq!(sni(None), None);
    }
}
