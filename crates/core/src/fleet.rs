//! The wire of fleet mode (`docs/fleet.md`, the design in `/work/shared/fleet.md` §3): the
//! messages that travel through NATS JetStream between the coordinator and the agents, and
//! every name both sides must agree on (streams, consumers, buckets, subjects, headers,
//! message ids).
//!
//! Sans-IO like the rest of this crate: values in, bytes out, and bytes from a peer in,
//! a value or a typed error out. Each message is a header (four magic bytes, a version byte,
//! a little-endian `u32` payload length) and a postcard payload, bounded like
//! [`decode_frame`](crate::decode_frame): a payload larger than its type's limit is refused
//! before anything is allocated, and a decoded value is checked ([`WireMessage::check`])
//! before it is returned, so a caller never sees an item whose range is upside down or a
//! spec whose ports include 0.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use rustls::time_provider::TimeProvider;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{
    AddrRange, HostSetBuilder, PortSet, ProbeOptions, ProbeOptionsError, ProbeSpec, ProbeStep,
    SpaceError, TargetSpace, MAX_PROBES,
};

/// The wire version token in every subject (`porthawk.v1.…`): an agent of another wire
/// version never sees v1 work.
pub const WIRE_TOKEN: &str = "v1";
/// The version byte of every fleet message header.
pub const FLEET_VERSION: u8 = 1;
/// Magic, version and length.
pub const FLEET_HEADER_LEN: usize = 9;

/// The work stream (WorkQueue retention): one message per slice.
pub const WORK_STREAM: &str = "PORTHAWK_WORK";
/// The subjects of [`WORK_STREAM`].
pub const WORK_SUBJECTS: &str = "porthawk.v1.work.>";
/// The results stream (WorkQueue retention): result frames until the coordinator acks them.
pub const RESULTS_STREAM: &str = "PORTHAWK_RESULTS";
/// The subjects of [`RESULTS_STREAM`].
pub const RESULTS_SUBJECTS: &str = "porthawk.v1.results.>";
/// The coordinator's durable consumer on [`RESULTS_STREAM`].
pub const COORDINATOR_CONSUMER: &str = "coordinator";
/// The KV bucket of the agent registry (key = agent name, value = [`AgentStatus`]).
pub const AGENTS_BUCKET: &str = "porthawk_agents";
/// The KV bucket of sweep specs (key = [`spec_key`], value = [`SweepSpec`]). Deleting a key
/// cancels that job on every agent.
pub const SPECS_BUCKET: &str = "porthawk_sweeps";
/// The advisory nats-server publishes when a slice has used up `max_deliver`.
pub const MAX_DELIVERIES_ADVISORY: &str =
    "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.PORTHAWK_WORK.*";

/// Header: the job (`s<sweep>` or `m<monitor>`) a result frame belongs to.
pub const HEADER_SWEEP: &str = "Porthawk-Sweep";
/// Header: the slice number.
pub const HEADER_SLICE: &str = "Porthawk-Slice";
/// Header: the attempt, `<workseq>.<delivered>` ([`Attempt`]).
pub const HEADER_ATTEMPT: &str = "Porthawk-Attempt";
/// Header: the frame's number within its attempt, from 0.
pub const HEADER_FRAME: &str = "Porthawk-Frame";
/// Header of the last frame: `<frames>/<records>` ([`LastFrame`]).
pub const HEADER_LAST: &str = "Porthawk-Last";
/// Header of the last frame when the attempt did not simply finish ([`EndReason`]).
pub const HEADER_END: &str = "Porthawk-End";

/// The smallest slice the coordinator cuts (positions).
pub const MIN_SLICE_LEN: u64 = 4096;
/// The largest slice the coordinator cuts (positions): about 52 s at 20 k probes/s.
pub const MAX_SLICE_LEN: u64 = 1 << 20;

/// The largest [`SweepSpec`] payload (the KV value and the NATS message must fit 1 MiB).
pub const MAX_SPEC_LEN: usize = 1 << 20;
/// The largest [`WorkItem`] payload (it may carry a spec inline).
pub const MAX_WORK_LEN: usize = MAX_SPEC_LEN + 1024;
/// The largest [`AgentStatus`] payload.
pub const MAX_STATUS_LEN: usize = 64 << 10;
/// The longest pool or agent name.
pub const MAX_NAME_LEN: usize = 64;
/// The longest reason carried in `Porthawk-End: error:<reason>`.
pub const MAX_END_REASON_LEN: usize = 256;
/// Most address ranges in a spec, like the most targets of a sweep.
pub const MAX_SPEC_HOST_RANGES: usize = crate::MAX_TARGETS;
/// Most entries in the lists of an [`AgentStatus`].
pub const MAX_STATUS_ITEMS: usize = 1024;

const DAY_MS: u64 = 86_400_000;

/// Why a fleet message, name or header could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Fewer bytes than the header or the announced payload.
    #[error("truncated {what}: need {need} bytes, have {have}")]
    Truncated {
        /// The message type.
        what: &'static str,
        /// Bytes the message needs.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// The bytes do not start with the type's magic.
    #[error("not a porthawk {0} (bad magic)")]
    BadMagic(&'static str),
    /// A version this build does not read.
    #[error("unsupported {what} version {version} (this build reads version {FLEET_VERSION})")]
    Version {
        /// The message type.
        what: &'static str,
        /// The version found.
        version: u8,
    },
    /// The announced payload is larger than the type's limit.
    #[error("{what} payload of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// The message type.
        what: &'static str,
        /// The announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Bytes after the message.
    #[error("{what}: {extra} trailing bytes after the message")]
    Trailing {
        /// The message type.
        what: &'static str,
        /// How many.
        extra: usize,
    },
    /// The payload is not valid postcard for the type.
    #[error("malformed {what} payload: {message}")]
    Payload {
        /// The message type.
        what: &'static str,
        /// The decoder's complaint.
        message: String,
    },
    /// The message decodes but says something impossible.
    #[error("invalid {what}: {message}")]
    Invalid {
        /// The message type.
        what: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A pool or agent name that cannot be a subject token.
    #[error("invalid {kind} name {name:?}: use 1 to 64 of A-Z a-z 0-9 _ -")]
    Name {
        /// `pool` or `agent`.
        kind: &'static str,
        /// The name, cut to 80 characters.
        name: String,
    },
    /// A header value or subject that does not parse.
    #[error("malformed {what}: {value:?}")]
    Malformed {
        /// What was being parsed.
        what: &'static str,
        /// The value, cut to 80 characters.
        value: String,
    },
}

fn cut(text: &str) -> String {
    text.chars().take(80).collect()
}

pub(crate) fn invalid(what: &'static str, message: impl Into<String>) -> WireError {
    WireError::Invalid {
        what,
        message: message.into(),
    }
}

fn malformed(what: &'static str, value: &str) -> WireError {
    WireError::Malformed {
        what,
        value: cut(value),
    }
}

/// A fleet message type: its magic, its size limit and the checks a decoded value must pass.
pub trait WireMessage: Serialize + DeserializeOwned {
    /// The four bytes its messages start with.
    const MAGIC: [u8; 4];
    /// The largest payload accepted.
    const MAX_LEN: usize;
    /// The name errors use.
    const WHAT: &'static str;

    /// Whether the value is one a correct peer could send.
    fn check(&self) -> Result<(), WireError>;

    /// The message: header and postcard payload.
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(&Self::MAGIC);
        out.push(FLEET_VERSION);
        out.extend_from_slice(&[0; 4]);
        // Serialising plain data into a Vec cannot fail: postcard only errors on unsupported
        // types (these have none) or a full fixed buffer (a Vec grows).
        let mut out = match postcard::to_extend(self, out) {
            Ok(v) => v,
            Err(_) => unreachable!("postcard serialisation into a Vec is infallible here"),
        };
        let len = (out.len() - FLEET_HEADER_LEN) as u32;
        out[5..9].copy_from_slice(&len.to_le_bytes());
        out
    }

    /// Reads a whole message (exactly `bytes`, nothing after it) and checks it.
    fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        let what = Self::WHAT;
        if bytes.len() < FLEET_HEADER_LEN {
            return Err(WireError::Truncated {
                what,
                need: FLEET_HEADER_LEN,
                have: bytes.len(),
            });
        }
        if bytes[..4] != Self::MAGIC {
            return Err(WireError::BadMagic(what));
        }
        if bytes[4] != FLEET_VERSION {
            return Err(WireError::Version {
                what,
                version: bytes[4],
            });
        }
        let len = u32::from_le_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) as usize;
        if len > Self::MAX_LEN {
            return Err(WireError::TooLarge {
                what,
                len,
                max: Self::MAX_LEN,
            });
        }
        let need = FLEET_HEADER_LEN + len;
        if bytes.len() < need {
            return Err(WireError::Truncated {
                what,
                need,
                have: bytes.len(),
            });
        }
        if bytes.len() > need {
            return Err(WireError::Trailing {
                what,
                extra: bytes.len() - need,
            });
        }
        let (value, rest) =
            postcard::take_from_bytes::<Self>(&bytes[FLEET_HEADER_LEN..]).map_err(|e| {
                WireError::Payload {
                    what,
                    message: e.to_string(),
                }
            })?;
        if !rest.is_empty() {
            return Err(WireError::Payload {
                what,
                message: format!("{} trailing bytes after the payload", rest.len()),
            });
        }
        value.check()?;
        Ok(value)
    }
}

/// A pool or agent name: 1 to 64 of `[A-Za-z0-9_-]`, because it becomes a subject token,
/// a consumer name and a KV key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FleetName(String);

impl FleetName {
    /// Checks `name` for use as a pool name (`kind` = `"pool"`) or agent name (`"agent"`).
    pub fn new(kind: &'static str, name: &str) -> Result<Self, WireError> {
        let ok = (1..=MAX_NAME_LEN).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Ok(FleetName(name.to_owned()))
        } else {
            Err(WireError::Name {
                kind,
                name: cut(name),
            })
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for FleetName {
    type Error = WireError;
    fn try_from(name: String) -> Result<Self, WireError> {
        FleetName::new("pool or agent", &name)
    }
}

impl From<FleetName> for String {
    fn from(name: FleetName) -> String {
        name.0
    }
}

impl fmt::Display for FleetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a work item belongs to: a sweep or one round of a monitor. Its token (`s42`, `m7`)
/// is the last token of work and results subjects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum FleetJob {
    /// Sweep `id` of the coordinator's store.
    Sweep(u64),
    /// A round of monitor `id`.
    Monitor(u64),
}

impl fmt::Display for FleetJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FleetJob::Sweep(id) => write!(f, "s{id}"),
            FleetJob::Monitor(id) => write!(f, "m{id}"),
        }
    }
}

impl FromStr for FleetJob {
    type Err = WireError;
    fn from_str(s: &str) -> Result<Self, WireError> {
        let bad = || malformed("job", s);
        let (kind, id) = s.split_at_checked(1).ok_or_else(bad)?;
        let id = parse_uint(id).ok_or_else(bad)?;
        match kind {
            "s" => Ok(FleetJob::Sweep(id)),
            "m" => Ok(FleetJob::Monitor(id)),
            _ => Err(bad()),
        }
    }
}

/// A decimal `u64` in its one spelling: digits only (no sign, spaces or leading zeros), at
/// most 20 of them. One spelling per number keeps header values and message ids canonical.
fn parse_uint(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if s.len() > 1 && s.starts_with('0') {
        return None;
    }
    s.parse().ok()
}

/// The subject a slice of `job` for `pool` is published on: `porthawk.v1.work.<pool>.<job>`.
pub fn work_subject(pool: &FleetName, job: FleetJob) -> String {
    format!("porthawk.{WIRE_TOKEN}.work.{pool}.{job}")
}

/// The filter of the pool's consumer: `porthawk.v1.work.<pool>.>`.
pub fn work_filter(pool: &FleetName) -> String {
    format!("porthawk.{WIRE_TOKEN}.work.{pool}.>")
}

/// The subjects of all slices of `job`, in every pool (to purge when it is cancelled).
pub fn work_job_filter(job: FleetJob) -> String {
    format!("porthawk.{WIRE_TOKEN}.work.*.{job}")
}

/// Reads `porthawk.v1.work.<pool>.<job>`.
pub fn parse_work_subject(subject: &str) -> Result<(FleetName, FleetJob), WireError> {
    parse_subject(subject, "work", "pool")
}

/// The subject `agent` publishes the frames of `job` on: `porthawk.v1.results.<agent>.<job>`.
pub fn results_subject(agent: &FleetName, job: FleetJob) -> String {
    format!("porthawk.{WIRE_TOKEN}.results.{agent}.{job}")
}

/// Everything `agent` may publish results on: `porthawk.v1.results.<agent>.>`.
pub fn results_agent_filter(agent: &FleetName) -> String {
    format!("porthawk.{WIRE_TOKEN}.results.{agent}.>")
}

/// Reads `porthawk.v1.results.<agent>.<job>`: the agent token is the authenticated one
/// (the server's permissions enforce it), so this is who probed.
pub fn parse_results_subject(subject: &str) -> Result<(FleetName, FleetJob), WireError> {
    parse_subject(subject, "results", "agent")
}

fn parse_subject(
    subject: &str,
    kind: &'static str,
    name_kind: &'static str,
) -> Result<(FleetName, FleetJob), WireError> {
    let bad = || malformed("subject", subject);
    let mut tokens = subject.split('.');
    let head = [tokens.next(), tokens.next(), tokens.next()];
    if head != [Some("porthawk"), Some(WIRE_TOKEN), Some(kind)] {
        return Err(bad());
    }
    let (Some(name), Some(job), None) = (tokens.next(), tokens.next(), tokens.next()) else {
        return Err(bad());
    };
    Ok((FleetName::new(name_kind, name)?, job.parse()?))
}

/// The durable consumer of a pool, shared by its agents: `pool-<pool>`.
pub fn pool_consumer(pool: &FleetName) -> String {
    format!("pool-{pool}")
}

/// The inbox prefix of an agent's connection, `_INBOX_<agent>`: its permissions allow
/// subscribing only there.
pub fn inbox_prefix(agent: &FleetName) -> String {
    format!("_INBOX_{agent}")
}

/// The key of a job's spec in [`SPECS_BUCKET`]: the job token (`s42`).
pub fn spec_key(job: FleetJob) -> String {
    job.to_string()
}

/// The `Nats-Msg-Id` of a work item: `w.<job>.<slice>.<epoch>`, so a republish after a
/// coordinator crash is deduplicated and a new epoch is not.
pub fn work_msg_id(job: FleetJob, slice: u32, epoch: u32) -> String {
    format!("w.{job}.{slice}.{epoch}")
}

/// The `Nats-Msg-Id` of frame `n` of an attempt: `<job>.<slice>.<workseq>.<delivered>.<n>`.
/// A retried publish reuses it; a redelivered slice has a new attempt, so new ids.
pub fn frame_msg_id(job: FleetJob, slice: u32, attempt: Attempt, frame: u32) -> String {
    format!("{job}.{slice}.{attempt}.{frame}")
}

/// One delivery of a work item: the stream sequence of the item and its delivery count.
/// Unique even when the same slice was published twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Attempt {
    /// The work item's sequence in [`WORK_STREAM`].
    pub work_seq: u64,
    /// How many times it has been delivered, this delivery included (from 1).
    pub delivered: u64,
}

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.work_seq, self.delivered)
    }
}

impl FromStr for Attempt {
    type Err = WireError;
    fn from_str(s: &str) -> Result<Self, WireError> {
        let bad = || malformed("attempt", s);
        let (seq, delivered) = s.split_once('.').ok_or_else(bad)?;
        Ok(Attempt {
            work_seq: parse_uint(seq).ok_or_else(bad)?,
            delivered: parse_uint(delivered).ok_or_else(bad)?,
        })
    }
}

/// `Porthawk-Last: <frames>/<records>`: how many frames and records the whole attempt sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastFrame {
    /// Frames of the attempt, this one included.
    pub frames: u32,
    /// Records over all its frames.
    pub records: u64,
}

impl fmt::Display for LastFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.frames, self.records)
    }
}

impl FromStr for LastFrame {
    type Err = WireError;
    fn from_str(s: &str) -> Result<Self, WireError> {
        let bad = || malformed("Porthawk-Last", s);
        let (frames, records) = s.split_once('/').ok_or_else(bad)?;
        let frames = parse_uint(frames)
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(bad)?;
        Ok(LastFrame {
            frames,
            records: parse_uint(records).ok_or_else(bad)?,
        })
    }
}

/// Parses a `Porthawk-Slice` or `Porthawk-Frame` value.
pub fn parse_u32_header(what: &'static str, value: &str) -> Result<u32, WireError> {
    parse_uint(value)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| malformed(what, value))
}

/// `Porthawk-End`: why an attempt ended other than by finishing its positions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EndReason {
    /// The job was cancelled (its spec key was deleted); the records are partial.
    Cancelled,
    /// A monitor item arrived after its deadline and was not probed.
    Expired,
    /// The agent could not run it (`error:<reason>`).
    Error(String),
}

impl EndReason {
    /// An error end, its reason made header-safe (printable ASCII, at most
    /// [`MAX_END_REASON_LEN`] bytes).
    pub fn error(reason: &str) -> Self {
        let clean: String = reason
            .chars()
            .map(|c| {
                if c.is_ascii_graphic() || c == ' ' {
                    c
                } else {
                    '?'
                }
            })
            .take(MAX_END_REASON_LEN)
            .collect();
        EndReason::Error(clean)
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndReason::Cancelled => f.write_str("cancelled"),
            EndReason::Expired => f.write_str("expired"),
            EndReason::Error(reason) => write!(f, "error:{reason}"),
        }
    }
}

impl FromStr for EndReason {
    type Err = WireError;
    fn from_str(s: &str) -> Result<Self, WireError> {
        match s {
            "cancelled" => Ok(EndReason::Cancelled),
            "expired" => Ok(EndReason::Expired),
            _ => match s.strip_prefix("error:") {
                Some(reason)
                    if reason.len() <= MAX_END_REASON_LEN
                        && reason.bytes().all(|b| b.is_ascii_graphic() || b == b' ') =>
                {
                    Ok(EndReason::Error(reason.to_owned()))
                }
                _ => Err(malformed("Porthawk-End", s)),
            },
        }
    }
}

/// The slice length for `total` positions and `agents` agents in the pool:
/// `clamp(ceil(total / (8 × agents)), 4,096, 2^20)`, so each agent gets at least 8 slices
/// and a slice is at most about 52 s of work. Slice `i` is `[i·L, min((i+1)·L, total))`.
pub fn slice_len(total: u64, agents: usize) -> u64 {
    let per = 8 * (agents.max(1) as u128);
    let len = u128::from(total).div_ceil(per) as u64;
    len.clamp(MIN_SLICE_LEN, MAX_SLICE_LEN)
}

/// How many slices of `len` positions tile `[0, total)`.
pub fn slice_count(total: u64, len: u64) -> u64 {
    total.div_ceil(len.max(1))
}

/// The positions of slice `index`: `[index·len, min((index+1)·len, total))`; `None` past the
/// last slice.
pub fn slice_range(total: u64, len: u64, index: u64) -> Option<std::ops::Range<u64>> {
    let start = index.checked_mul(len.max(1))?;
    (start < total).then(|| start..start.saturating_add(len.max(1)).min(total))
}

/// What to do once connected, and the timeouts: everything of a probe the engine needs,
/// as the coordinator resolved it. A wire mirror of [`ProbeOptions`] plus the timeouts of
/// [`ProbeOptions::spec`], so a field added to the options does not silently change the wire.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepProbe {
    /// A named dialog (`smtp`, ...).
    pub preset: Option<String>,
    /// Read the banner and probe services that wait for the client.
    pub identify: bool,
    /// Bytes to send, with escapes.
    pub send: Option<String>,
    /// A regular expression the reply must match.
    pub expect: Option<String>,
    /// Read the banner.
    pub banner: bool,
    /// Handshake TLS before the dialog.
    pub tls: bool,
    /// Dialog steps in order.
    pub steps: Vec<ProbeStep>,
    /// Bytes sent after the last step.
    pub quit: Option<String>,
    /// Consecutive expects are one read that must match them all.
    pub expect_all: bool,
    /// Bytes one read may keep while it waits for its pattern.
    pub max_reply: Option<u64>,
    /// Keep the peer's bytes out of failure reasons.
    pub jail: bool,
    /// Verify the server's certificate.
    pub tls_verify: bool,
    /// CA file to verify with: a path, read on the agent's host.
    pub tls_ca_file: Option<String>,
    /// Server name to send (SNI).
    pub sni: Option<String>,
    /// Client certificate file: a path, read on the agent's host.
    pub tls_cert: Option<String>,
    /// Client key file: a path, read on the agent's host.
    pub tls_key: Option<String>,
    /// A TLS alert the handshake is expected to end with.
    pub expect_alert: Option<String>,
    /// The most protocol probes `identify` sends to a silent port.
    pub max_probes: Option<u8>,
    /// Connect timeout in milliseconds.
    pub connect_timeout_ms: u64,
    /// Connect attempts for an unanswered probe.
    pub tries: u8,
    /// Read timeout in milliseconds.
    pub read_timeout_ms: u64,
    /// Whole-dialog timeout in milliseconds.
    pub dialog_timeout_ms: u64,
}

impl SweepProbe {
    /// The probe options of the spec.
    pub fn options(&self) -> ProbeOptions {
        ProbeOptions {
            preset: self.preset.clone(),
            identify: self.identify,
            send: self.send.clone(),
            expect: self.expect.clone(),
            banner: self.banner,
            tls: self.tls,
            steps: self.steps.clone(),
            quit: self.quit.clone(),
            expect_all: self.expect_all,
            // A value past usize (on a 32-bit agent) is past every limit: spec() refuses it.
            max_reply: self
                .max_reply
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            jail: self.jail,
            tls_verify: self.tls_verify,
            tls_ca_file: self.tls_ca_file.clone(),
            sni: self.sni.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            expect_alert: self.expect_alert.clone(),
            max_probes: self.max_probes,
        }
    }

    /// The wire form of `options` with these timeouts.
    pub fn new(
        options: &ProbeOptions,
        connect_timeout: Duration,
        tries: u8,
        read_timeout: Duration,
        dialog_timeout: Duration,
    ) -> Self {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        SweepProbe {
            preset: options.preset.clone(),
            identify: options.identify,
            send: options.send.clone(),
            expect: options.expect.clone(),
            banner: options.banner,
            tls: options.tls,
            steps: options.steps.clone(),
            quit: options.quit.clone(),
            expect_all: options.expect_all,
            max_reply: options.max_reply.map(|n| n as u64),
            jail: options.jail,
            tls_verify: options.tls_verify,
            tls_ca_file: options.tls_ca_file.clone(),
            sni: options.sni.clone(),
            tls_cert: options.tls_cert.clone(),
            tls_key: options.tls_key.clone(),
            expect_alert: options.expect_alert.clone(),
            max_probes: options.max_probes,
            connect_timeout_ms: ms(connect_timeout),
            tries,
            read_timeout_ms: ms(read_timeout),
            dialog_timeout_ms: ms(dialog_timeout),
        }
    }

    /// The probe spec, through the one [`ProbeOptions::spec`] every front end uses.
    pub fn spec(&self, time: Arc<dyn TimeProvider>) -> Result<ProbeSpec, ProbeOptionsError> {
        self.options().spec(
            Duration::from_millis(self.connect_timeout_ms),
            self.tries,
            Duration::from_millis(self.read_timeout_ms),
            Duration::from_millis(self.dialog_timeout_ms),
            time,
        )
    }

    fn check(&self) -> Result<(), WireError> {
        // The API's bounds for tries; timeouts are non-zero and at most a day (a value past
        // that is a broken or hostile coordinator, not a setting).
        let what = "sweep spec";
        if self.tries == 0 || self.tries > 10 {
            return Err(invalid(what, format!("tries {} not in 1..=10", self.tries)));
        }
        for (name, ms, max) in [
            ("connect timeout", self.connect_timeout_ms, DAY_MS),
            ("read timeout", self.read_timeout_ms, DAY_MS),
            ("dialog timeout", self.dialog_timeout_ms, DAY_MS),
        ] {
            if ms == 0 || ms > max {
                return Err(invalid(what, format!("{name} {ms} ms not in 1..={max}")));
            }
        }
        Ok(())
    }
}

/// The shared, large part of a sweep, stored once in [`SPECS_BUCKET`] (or inline in a
/// monitor's work item): the resolved hosts and ports, the seed, and the probe. Names stay
/// on the coordinator; an agent reports addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepSpec {
    /// Positions of the whole space; the agent checks the rebuilt space has exactly this many.
    pub total: u64,
    /// The permutation seed.
    pub seed: u64,
    /// Inclusive address ranges after exclusions and the allow-list, in address order.
    pub hosts: Vec<(IpAddr, IpAddr)>,
    /// Inclusive port ranges.
    pub ports: Vec<(u16, u16)>,
    /// How to probe.
    pub probe: SweepProbe,
}

impl SweepSpec {
    /// The spec of `space` (built with `seed`), probed with `probe`.
    pub fn from_space(space: &TargetSpace, seed: u64, probe: SweepProbe) -> Self {
        let hosts = space
            .hosts()
            .ranges()
            .map(|r| (r.first(), r.last()))
            .collect();
        let mut ports: Vec<(u16, u16)> = Vec::new();
        for &p in space.ports().as_slice() {
            match ports.last_mut() {
                Some((_, hi)) if hi.checked_add(1) == Some(p) => *hi = p,
                _ => ports.push((p, p)),
            }
        }
        SweepSpec {
            total: space.len(),
            seed,
            hosts,
            ports,
            probe,
        }
    }

    /// Rebuilds the target space with the same seed, and checks it has exactly
    /// [`SweepSpec::total`] positions (so agent and coordinator agree on every position).
    pub fn space(&self) -> Result<TargetSpace, WireError> {
        let what = "sweep spec";
        let mut hosts = HostSetBuilder::default();
        for &(first, last) in &self.hosts {
            let range = AddrRange::new(first, last)
                .ok_or_else(|| invalid(what, format!("bad address range {first}-{last}")))?;
            hosts.include(range);
        }
        // Merging sorted ranges before expanding them bounds the work by 65,535 ports
        // whatever the list says.
        let mut ranges = self.ports.clone();
        ranges.sort_unstable();
        let mut ports = Vec::new();
        let mut next: u32 = 1;
        for (lo, hi) in ranges {
            let lo = u32::from(lo).max(next);
            for p in lo..=u32::from(hi) {
                ports.push(p as u16);
            }
            next = next.max(u32::from(hi) + 1);
        }
        let space = TargetSpace::new(hosts.build(), PortSet::from_ports(ports), self.seed)
            .map_err(|e: SpaceError| invalid(what, e.to_string()))?;
        if space.len() != self.total {
            return Err(invalid(
                what,
                format!(
                    "the hosts and ports make {} positions, the spec says {}",
                    space.len(),
                    self.total
                ),
            ));
        }
        Ok(space)
    }
}

impl WireMessage for SweepSpec {
    const MAGIC: [u8; 4] = *b"PHSS";
    const MAX_LEN: usize = MAX_SPEC_LEN;
    const WHAT: &'static str = "sweep spec";

    fn check(&self) -> Result<(), WireError> {
        let what = Self::WHAT;
        if self.total == 0 || self.total > MAX_PROBES {
            return Err(invalid(
                what,
                format!("total {} not in 1..=2^48", self.total),
            ));
        }
        if self.hosts.is_empty() || self.hosts.len() > MAX_SPEC_HOST_RANGES {
            return Err(invalid(what, "no address range, or too many"));
        }
        for &(first, last) in &self.hosts {
            if AddrRange::new(first, last).is_none() {
                return Err(invalid(what, format!("bad address range {first}-{last}")));
            }
        }
        if self.ports.is_empty() || self.ports.len() > crate::MAX_PORT_ELEMENTS {
            return Err(invalid(what, "no port range, or too many"));
        }
        for &(lo, hi) in &self.ports {
            if lo == 0 || hi < lo {
                return Err(invalid(what, format!("bad port range {lo}-{hi}")));
            }
        }
        self.probe.check()
    }
}

/// Where a work item's spec is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SpecRef {
    /// In [`SPECS_BUCKET`] under [`spec_key`] of the item's job, at this revision (sweeps).
    Ref(u64),
    /// In the item itself (monitor rounds, at most a few hundred probes).
    Inline(Box<SweepSpec>),
}

/// One slice of a job: the positions `start..end` of its target space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkItem {
    /// The sweep or monitor round.
    pub job: FleetJob,
    /// The slice number.
    pub slice: u32,
    /// The first position.
    pub start: u64,
    /// One past the last position.
    pub end: u64,
    /// The spec.
    pub spec: SpecRef,
    /// Unix time in milliseconds after which the item must not be probed (monitor rounds):
    /// the agent acks it with an `expired` end frame instead.
    pub deadline_ms: Option<u64>,
    /// Probe starts per second for this slice, if capped.
    pub rate: Option<u64>,
    /// Bumped when the coordinator republishes a slice that used up `max_deliver`.
    pub epoch: u32,
}

impl WorkItem {
    /// How many positions the slice holds.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Always false for a decoded item.
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    /// Whether the deadline has passed at `now_ms` (Unix milliseconds).
    pub fn expired(&self, now_ms: u64) -> bool {
        self.deadline_ms.is_some_and(|d| now_ms >= d)
    }

    /// The slice's positions within a space of `space_len` positions; an error when they do
    /// not fit (a spec and an item that disagree).
    pub fn positions(&self, space_len: u64) -> Result<std::ops::Range<u64>, WireError> {
        if self.end > space_len {
            return Err(invalid(
                Self::WHAT,
                format!(
                    "slice {}..{} past the space's {space_len} positions",
                    self.start, self.end
                ),
            ));
        }
        Ok(self.start..self.end)
    }
}

impl WireMessage for WorkItem {
    const MAGIC: [u8; 4] = *b"PHWI";
    const MAX_LEN: usize = MAX_WORK_LEN;
    const WHAT: &'static str = "work item";

    fn check(&self) -> Result<(), WireError> {
        if self.start >= self.end || self.end > MAX_PROBES {
            return Err(invalid(
                Self::WHAT,
                format!("empty or oversized slice {}..{}", self.start, self.end),
            ));
        }
        if self.rate == Some(0) {
            return Err(invalid(Self::WHAT, "rate 0"));
        }
        if let SpecRef::Inline(spec) = &self.spec {
            spec.check()?;
            if self.end > spec.total {
                return Err(invalid(
                    Self::WHAT,
                    format!("slice ends at {}, the spec has {}", self.end, spec.total),
                ));
            }
        }
        Ok(())
    }
}

/// A slice an agent is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningSlice {
    /// Its job.
    pub job: FleetJob,
    /// Its slice number.
    pub slice: u32,
    /// This agent's attempt.
    pub attempt: Attempt,
}

/// What an agent puts into [`AGENTS_BUCKET`] under its name, every few seconds: liveness is
/// the key being there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatus {
    /// The porthawk version of the agent.
    pub version: String,
    /// The pools it takes work from.
    pub pools: Vec<FleetName>,
    /// The engine backend (`io_uring`, `epoll`).
    pub backend: String,
    /// Engine shards.
    pub shards: u32,
    /// Probes in flight right now, across shards.
    pub inflight: u32,
    /// Probes per second over the last interval.
    pub probes_per_s: u64,
    /// The slices it is running.
    pub running: Vec<RunningSlice>,
    /// The host's own addresses (for remote remediation later), detected.
    pub addresses: Vec<IpAddr>,
    /// The host's own names, detected.
    pub names: Vec<String>,
}

impl WireMessage for AgentStatus {
    const MAGIC: [u8; 4] = *b"PHAS";
    const MAX_LEN: usize = MAX_STATUS_LEN;
    const WHAT: &'static str = "agent status";

    fn check(&self) -> Result<(), WireError> {
        let lists = [
            self.pools.len(),
            self.running.len(),
            self.addresses.len(),
            self.names.len(),
        ];
        if lists.iter().any(|n| *n > MAX_STATUS_ITEMS) {
            return Err(invalid(Self::WHAT, "a list is too long"));
        }
        let texts = std::iter::once(&self.version)
            .chain(std::iter::once(&self.backend))
            .chain(&self.names);
        for text in texts {
            if text.len() > 255 || text.chars().any(|c| c.is_control()) {
                return Err(invalid(Self::WHAT, format!("bad text {:?}", cut(text))));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::time_provider::DefaultTimeProvider;

    fn pool(s: &str) -> FleetName {
        FleetName::new("pool", s).unwrap()
    }

    fn probe() -> SweepProbe {
        SweepProbe::new(
            &ProbeOptions {
                steps: vec![
                    ProbeStep::Send("PING\\r\\n".into()),
                    ProbeStep::Expect("^\\+PONG".into()),
                ],
                quit: Some("QUIT\\r\\n".into()),
                max_reply: Some(8192),
                ..ProbeOptions::default()
            },
            Duration::from_millis(1500),
            2,
            Duration::from_secs(2),
            Duration::from_secs(10),
        )
    }

    fn spec() -> SweepSpec {
        SweepSpec {
            total: 3 * 256 * 4,
            seed: 99,
            hosts: vec![
                ("10.0.0.0".parse().unwrap(), "10.0.0.255".parse().unwrap()),
                ("192.0.2.1".parse().unwrap(), "192.0.2.1".parse().unwrap()),
                ("fd00::1".parse().unwrap(), "fd00::1".parse().unwrap()),
                ("fd00::5".parse().unwrap(), "fd00::5".parse().unwrap()),
            ],
            ports: vec![(22, 22), (80, 81), (443, 443)],
            probe: probe(),
        }
        .with_total()
    }

    impl SweepSpec {
        fn with_total(mut self) -> Self {
            self.total = 0;
            let hosts: u128 = self
                .hosts
                .iter()
                .map(|&(a, b)| AddrRange::new(a, b).unwrap().len())
                .sum();
            let ports: u64 = self.ports.iter().map(|&(a, b)| u64::from(b - a) + 1).sum();
            self.total = hosts as u64 * ports;
            self
        }
    }

    #[test]
    fn messages_round_trip() {
        let s = spec();
        assert_eq!(SweepSpec::decode(&s.encode()), Ok(s.clone()));
        let item = WorkItem {
            job: FleetJob::Monitor(7),
            slice: 3,
            start: 10,
            end: 20,
            spec: SpecRef::Inline(Box::new(s)),
            deadline_ms: Some(1_700_000_000_000),
            rate: Some(500),
            epoch: 1,
        };
        assert_eq!(WorkItem::decode(&item.encode()), Ok(item.clone()));
        let status = AgentStatus {
            version: "0.1.0".into(),
            pools: vec![pool("eu"), pool("dc-2")],
            backend: "io_uring".into(),
            shards: 2,
            inflight: 4096,
            probes_per_s: 20_000,
            running: vec![RunningSlice {
                job: FleetJob::Sweep(42),
                slice: 0,
                attempt: Attempt {
                    work_seq: 17,
                    delivered: 2,
                },
            }],
            addresses: vec!["127.0.0.1".parse().unwrap()],
            names: vec!["probe-eu-1".into()],
        };
        assert_eq!(AgentStatus::decode(&status.encode()), Ok(status));
    }

    #[test]
    fn spec_rebuilds_the_coordinators_space_exactly() {
        let s = spec();
        let space = s.space().unwrap();
        assert_eq!(space.len(), s.total);
        let again = SweepSpec::from_space(&space, s.seed, s.probe.clone());
        assert_eq!(again, s);
        let other = again.space().unwrap();
        for p in 0..space.len() {
            assert_eq!(space.get(p), other.get(p));
        }
        let mut wrong = s.clone();
        wrong.total += 1;
        assert!(wrong.space().is_err());
        assert!(s.probe.spec(Arc::new(DefaultTimeProvider)).is_ok());
    }

    #[test]
    fn overlapping_port_ranges_expand_once() {
        let mut s = spec();
        s.ports = vec![(80, 90), (1, 65535), (85, 100)];
        s.hosts = vec![("10.0.0.1".parse().unwrap(), "10.0.0.1".parse().unwrap())];
        s.total = 65535;
        assert_eq!(s.space().unwrap().len(), 65535);
    }

    #[test]
    fn decoding_refuses_bad_bytes() {
        let good = spec().encode();
        assert!(matches!(
            SweepSpec::decode(&good[..5]),
            Err(WireError::Truncated { .. })
        ));
        assert!(matches!(
            SweepSpec::decode(&good[..good.len() - 1]),
            Err(WireError::Truncated { .. })
        ));
        let mut extra = good.clone();
        extra.push(0);
        assert!(matches!(
            SweepSpec::decode(&extra),
            Err(WireError::Trailing { .. })
        ));
        assert_eq!(
            WorkItem::decode(&good),
            Err(WireError::BadMagic("work item"))
        );
        let mut v2 = good.clone();
        v2[4] = 2;
        assert!(matches!(
            SweepSpec::decode(&v2),
            Err(WireError::Version { version: 2, .. })
        ));
        let mut huge = good.clone();
        huge[5..9].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            SweepSpec::decode(&huge),
            Err(WireError::TooLarge { .. })
        ));
        let mut zero_port = spec();
        zero_port.ports.push((0, 5));
        assert!(matches!(
            SweepSpec::decode(&zero_port.encode()),
            Err(WireError::Invalid { .. })
        ));
        let mut mixed = spec();
        mixed
            .hosts
            .push(("10.0.0.1".parse().unwrap(), "fd00::9".parse().unwrap()));
        assert!(SweepSpec::decode(&mixed.encode()).is_err());
        let upside_down = WorkItem {
            job: FleetJob::Sweep(1),
            slice: 0,
            start: 9,
            end: 9,
            spec: SpecRef::Ref(3),
            deadline_ms: None,
            rate: None,
            epoch: 0,
        };
        assert!(WorkItem::decode(&upside_down.encode()).is_err());
        let mut past_total = upside_down.clone();
        past_total.end = spec().total + 1;
        past_total.spec = SpecRef::Inline(Box::new(spec()));
        assert!(WorkItem::decode(&past_total.encode()).is_err());
    }

    #[test]
    fn names_are_subject_tokens() {
        for good in ["eu", "eu-1", "dc_2", "A", &"x".repeat(64)] {
            assert!(FleetName::new("pool", good).is_ok(), "{good}");
        }
        for bad in ["", "eu.1", "eu*", ">", "eu 1", "é", &"x".repeat(65)] {
            assert!(FleetName::new("pool", bad).is_err(), "{bad}");
        }
        let bad = postcard::to_allocvec(&"a.b".to_string()).unwrap();
        assert!(postcard::from_bytes::<FleetName>(&bad).is_err());
    }

    #[test]
    fn subjects_and_ids_follow_the_contract() {
        let (eu, agent) = (pool("eu"), FleetName::new("agent", "eu-1").unwrap());
        let job = FleetJob::Sweep(42);
        assert_eq!(work_subject(&eu, job), "porthawk.v1.work.eu.s42");
        assert_eq!(work_filter(&eu), "porthawk.v1.work.eu.>");
        assert_eq!(work_job_filter(job), "porthawk.v1.work.*.s42");
        assert_eq!(pool_consumer(&eu), "pool-eu");
        assert_eq!(inbox_prefix(&agent), "_INBOX_eu-1");
        assert_eq!(spec_key(job), "s42");
        assert_eq!(
            results_subject(&agent, FleetJob::Monitor(7)),
            "porthawk.v1.results.eu-1.m7"
        );
        assert_eq!(results_agent_filter(&agent), "porthawk.v1.results.eu-1.>");
        assert_eq!(
            parse_results_subject("porthawk.v1.results.eu-1.m7"),
            Ok((agent.clone(), FleetJob::Monitor(7)))
        );
        assert_eq!(parse_work_subject("porthawk.v1.work.eu.s42"), Ok((eu, job)));
        for bad in [
            "porthawk.v1.results.eu-1",
            "porthawk.v1.results.eu-1.s1.x",
            "porthawk.v2.results.eu-1.s1",
            "porthawk.v1.work.eu-1.s1",
            "porthawk.v1.results.eu-1.x1",
            "porthawk.v1.results.eu-1.s+1",
            "porthawk.v1.results.eu-1.s",
        ] {
            assert!(parse_results_subject(bad).is_err(), "{bad}");
        }
        assert_eq!(work_msg_id(job, 3, 1), "w.s42.3.1");
        let attempt = Attempt {
            work_seq: 17,
            delivered: 2,
        };
        assert_eq!(attempt.to_string(), "17.2");
        assert_eq!(frame_msg_id(job, 3, attempt, 5), "s42.3.17.2.5");
        assert_eq!("17.2".parse(), Ok(attempt));
        for bad in [
            "17",
            "17.",
            ".2",
            "17.2.1",
            "+17.2",
            "17.-2",
            "a.b",
            "1.99999999999999999999",
        ] {
            assert!(bad.parse::<Attempt>().is_err(), "{bad}");
        }
    }

    #[test]
    fn end_frame_headers_round_trip() {
        let last = LastFrame {
            frames: 3,
            records: 10_240,
        };
        assert_eq!(last.to_string(), "3/10240");
        assert_eq!("3/10240".parse(), Ok(last));
        for bad in ["3", "3/", "/3", "4294967296/1", "3/x", " 3/1"] {
            assert!(bad.parse::<LastFrame>().is_err(), "{bad}");
        }
        for end in [
            EndReason::Cancelled,
            EndReason::Expired,
            EndReason::error("cannot build the space: no port"),
        ] {
            assert_eq!(end.to_string().parse(), Ok(end));
        }
        assert_eq!(EndReason::error("a\r\nb").to_string(), "error:a??b");
        assert!("error:a\nb".parse::<EndReason>().is_err());
        assert!("finished".parse::<EndReason>().is_err());
        assert_eq!(parse_u32_header("slice", "12"), Ok(12));
        assert!(parse_u32_header("slice", "-1").is_err());
        assert!(parse_u32_header("slice", "01").is_err());
        assert_eq!(parse_u32_header("slice", "0"), Ok(0));
        assert!(parse_u32_header("slice", "4294967296").is_err());
    }

    #[test]
    fn fuzz_seeds_are_valid_messages() {
        let seeds = crate::fuzzing::fleet_wire_seeds();
        let get = |name: &str| &seeds.iter().find(|(n, _)| n == name).unwrap().1;
        assert!(SweepSpec::decode(get("spec")).unwrap().space().is_ok());
        assert!(WorkItem::decode(get("sweep-item")).is_ok());
        assert!(WorkItem::decode(get("monitor-item")).is_ok());
        assert!(AgentStatus::decode(get("status")).is_ok());
        assert!(crate::RemedyRequest::decode(get("action-request")).is_ok());
        assert!(crate::RemedyResult::decode(get("action-ran")).is_ok());
        assert!(crate::RemedyResult::decode(get("action-refused")).is_ok());
    }

    #[test]
    fn slices_tile_the_space() {
        assert_eq!(slice_len(100, 1), MIN_SLICE_LEN);
        assert_eq!(slice_len(16_777_216 * 100, 50), MAX_SLICE_LEN);
        assert_eq!(slice_len(8 * 3 * 5000, 3), 5000);
        assert_eq!(slice_len(8 * 3 * 5000 + 1, 3), 5001);
        assert_eq!(slice_len(1000, 0), MIN_SLICE_LEN);
        assert_eq!(slice_count(16_777_216 * 100, MAX_SLICE_LEN), 1600);
        for (total, agents) in [(1, 1), (4096, 1), (4097, 1), (100_000, 3), (1 << 30, 7)] {
            let len = slice_len(total, agents);
            let n = slice_count(total, len);
            let mut next = 0;
            for i in 0..n {
                let r = slice_range(total, len, i).unwrap();
                assert_eq!(r.start, next);
                assert!(!r.is_empty() && r.end - r.start <= len);
                next = r.end;
            }
            assert_eq!(next, total);
            assert_eq!(slice_range(total, len, n), None);
        }
        assert_eq!(slice_range(10, 4, u64::MAX), None);
    }
}
