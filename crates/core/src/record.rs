//! Result records, the batches the shards send, and the frame format those batches travel in.
//!
//! A frame is `FRAME_MAGIC` (4 bytes), `FRAME_VERSION` (1 byte), the payload length (u32,
//! little endian) and the postcard-encoded [`ResultBatch`]. The same bytes go through the
//! in-process channel and, in fleet mode, over the network, so decoding is bounded: a
//! malformed or oversized frame is an error, never a panic or a large allocation.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Errno;

/// The identifier of a job: one sweep, or one round of a monitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct JobId(pub u64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The state of a port, named as nmap names it (in serde formats with names, too: `"open"`;
/// postcard encodes the variant index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortState {
    /// The handshake completed.
    Open,
    /// The target refused (RST, `ECONNREFUSED`).
    Closed,
    /// No answer before the timeout, after every try.
    Filtered,
    /// An ICMP host or network unreachable came back.
    Unreachable,
    /// Anything else; the record carries the errno.
    Error,
}

impl PortState {
    /// Every state, in report order.
    pub const ALL: [PortState; 5] = [
        PortState::Open,
        PortState::Closed,
        PortState::Filtered,
        PortState::Unreachable,
        PortState::Error,
    ];

    /// The lower-case name used in every output format.
    pub fn as_str(self) -> &'static str {
        match self {
            PortState::Open => "open",
            PortState::Closed => "closed",
            PortState::Filtered => "filtered",
            PortState::Unreachable => "unreachable",
            PortState::Error => "error",
        }
    }

    /// The position of the state in [`PortState::ALL`], for per-state counters.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for PortState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PortState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PortState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown state '{s}': expected open, closed, filtered, unreachable or error"
                )
            })
    }
}

/// The result of probing one (address, port).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeRecord {
    /// The probed address.
    pub ip: IpAddr,
    /// The probed port.
    pub port: u16,
    /// The verdict.
    pub state: PortState,
    /// Time from the start of the last connect attempt to its completion, in microseconds.
    pub rtt_us: u32,
    /// Connect attempts made.
    pub tries: u8,
    /// The errno behind an `unreachable` or `error` verdict.
    pub errno: Option<Errno>,
    /// The first reply of the probe's dialog (at most [`crate::BANNER_LIMIT`] bytes), if the
    /// probe read anything.
    pub banner: Option<Vec<u8>>,
    /// Whether the replies matched what the dialog expected; `None` when it expected nothing.
    pub matched: Option<bool>,
    /// Why the dialog failed: the step, and what happened there.
    pub reason: Option<String>,
    /// What a TLS handshake showed (version, cipher, certificate).
    pub tls: Option<crate::TlsInfo>,
    /// How long the dialog took after the handshake, in microseconds (dialog probes only).
    pub dialog_us: Option<u32>,
    /// The capture groups of the dialog's expects, in order (`${1}` first); empty when none.
    pub captures: Vec<Vec<u8>>,
    /// Whether the dialog failed on a reply that did not match (rather than on silence, a
    /// reset or TLS): what `check --mismatch` maps.
    pub mismatch: bool,
}

impl ProbeRecord {
    /// A record with the connect-level fields set and no dialog outcome.
    pub fn new(ip: IpAddr, port: u16, state: PortState, rtt_us: u32, tries: u8) -> Self {
        ProbeRecord {
            ip,
            port,
            state,
            rtt_us,
            tries,
            errno: None,
            banner: None,
            matched: None,
            reason: None,
            tls: None,
            dialog_us: None,
            captures: Vec::new(),
            mismatch: false,
        }
    }
}

/// A batch of records from one shard for one job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultBatch {
    /// The job the records belong to.
    pub job: JobId,
    /// The shard that probed them.
    pub shard: u16,
    /// The records, in completion order.
    pub records: Vec<ProbeRecord>,
    /// Set on the shard's last batch for the job.
    pub shard_done: bool,
    /// Set on the one batch that ends the job: every shard has sent its last batch before it.
    pub job_done: bool,
    /// Set when the job ended because it was cancelled rather than finished.
    pub cancelled: bool,
}

/// The four bytes every frame starts with.
pub const FRAME_MAGIC: [u8; 4] = *b"PHRB";
/// The frame format version this build writes and reads.
pub const FRAME_VERSION: u8 = 2;
/// Magic, version and length.
pub const FRAME_HEADER_LEN: usize = 9;
/// The largest payload a frame may announce (16 MiB).
pub const MAX_FRAME_LEN: usize = 16 << 20;

/// Why a frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Fewer bytes than the header or the announced payload.
    #[error("truncated frame: need {need} bytes, have {have}")]
    Truncated {
        /// Bytes the frame needs.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// The frame does not start with [`FRAME_MAGIC`].
    #[error("not a porthawk result frame (bad magic)")]
    BadMagic,
    /// A version this build does not read.
    #[error("unsupported frame version {0} (this build reads version {FRAME_VERSION})")]
    Version(u8),
    /// The announced payload is larger than [`MAX_FRAME_LEN`].
    #[error("frame payload of {0} bytes exceeds the limit of {MAX_FRAME_LEN}")]
    TooLarge(usize),
    /// The payload is not a valid batch.
    #[error("malformed batch payload: {0}")]
    Payload(String),
}

/// Appends the frame of `batch` to `out`.
pub fn encode_frame(batch: &ResultBatch, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&FRAME_MAGIC);
    out.push(FRAME_VERSION);
    out.extend_from_slice(&[0; 4]);
    // Serialising plain data into a Vec cannot fail: postcard only errors on unsupported types
    // (which ResultBatch has none of) or a full fixed buffer (a Vec grows).
    let extended = postcard::to_extend(batch, std::mem::take(out));
    *out = match extended {
        Ok(v) => v,
        Err(_) => unreachable!("postcard serialisation into a Vec is infallible for ResultBatch"),
    };
    let len = (out.len() - start - FRAME_HEADER_LEN) as u32;
    out[start + 5..start + 9].copy_from_slice(&len.to_le_bytes());
}

/// Decodes the frame at the start of `bytes`; returns the batch and the bytes the frame used.
pub fn decode_frame(bytes: &[u8]) -> Result<(ResultBatch, usize), FrameError> {
    if bytes.len() < FRAME_HEADER_LEN {
        return Err(FrameError::Truncated {
            need: FRAME_HEADER_LEN,
            have: bytes.len(),
        });
    }
    if bytes[..4] != FRAME_MAGIC {
        return Err(FrameError::BadMagic);
    }
    if bytes[4] != FRAME_VERSION {
        return Err(FrameError::Version(bytes[4]));
    }
    let len = u32::from_le_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) as usize;
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge(len));
    }
    let need = FRAME_HEADER_LEN + len;
    let payload = bytes
        .get(FRAME_HEADER_LEN..need)
        .ok_or(FrameError::Truncated {
            need,
            have: bytes.len(),
        })?;
    let (batch, rest) = postcard::take_from_bytes::<ResultBatch>(payload)
        .map_err(|e| FrameError::Payload(e.to_string()))?;
    if !rest.is_empty() {
        return Err(FrameError::Payload(format!(
            "{} trailing bytes after the batch",
            rest.len()
        )));
    }
    Ok((batch, need))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ResultBatch {
        ResultBatch {
            job: JobId(7),
            shard: 1,
            records: vec![
                ProbeRecord {
                    ip: "127.0.0.1".parse().unwrap(),
                    port: 25,
                    state: PortState::Open,
                    rtt_us: 412,
                    tries: 1,
                    errno: None,
                    banner: Some(b"220 mx ESMTP\r\n".to_vec()),
                    matched: Some(true),
                    reason: None,
                    tls: None,
                    dialog_us: Some(2100),
                    captures: vec![b"mx".to_vec()],
                    mismatch: false,
                },
                ProbeRecord {
                    ip: "::1".parse().unwrap(),
                    port: 65535,
                    state: PortState::Error,
                    rtt_us: u32::MAX,
                    tries: 2,
                    errno: Some(71),
                    banner: None,
                    matched: Some(false),
                    reason: Some("step 1: expect ^220 timed out after 2s".into()),
                    tls: Some(crate::TlsInfo {
                        version: "TLSv1.3".into(),
                        cipher: "TLS13_AES_256_GCM_SHA384".into(),
                        cert: Some(crate::CertInfo {
                            subject: "CN=mx".into(),
                            issuer: "CN=mx".into(),
                            not_before: 0,
                            not_after: 1_800_000_000,
                        }),
                        expires_first: None,
                    }),
                    dialog_us: None,
                    captures: Vec::new(),
                    mismatch: true,
                },
            ],
            shard_done: true,
            job_done: false,
            cancelled: false,
        }
    }

    #[test]
    fn frames_round_trip_back_to_back() {
        let mut buf = Vec::new();
        encode_frame(&sample(), &mut buf);
        let first_len = buf.len();
        encode_frame(&sample(), &mut buf);
        let (a, used) = decode_frame(&buf).unwrap();
        assert_eq!((a, used), (sample(), first_len));
        let (b, used2) = decode_frame(&buf[used..]).unwrap();
        assert_eq!((b, used2), (sample(), first_len));
    }

    #[test]
    fn records_are_compact() {
        let mut buf = Vec::new();
        encode_frame(&sample(), &mut buf);
        // A plain connect record costs about a dozen bytes.
        let plain = ResultBatch {
            records: vec![ProbeRecord::new(
                "10.0.0.7".parse().unwrap(),
                443,
                PortState::Closed,
                150,
                1,
            )],
            ..sample()
        };
        buf.clear();
        encode_frame(&plain, &mut buf);
        assert!(
            // 23 bytes before dialogs kept captures and the mismatch flag (one byte each
            // when absent).
            buf.len() - FRAME_HEADER_LEN < 26,
            "frame is {} bytes",
            buf.len()
        );
    }

    #[test]
    fn malformed_frames_are_errors() {
        let mut good = Vec::new();
        encode_frame(&sample(), &mut good);
        assert!(matches!(
            decode_frame(&good[..5]),
            Err(FrameError::Truncated { .. })
        ));
        assert!(matches!(
            decode_frame(&good[..good.len() - 1]),
            Err(FrameError::Truncated { .. })
        ));
        let mut bad = good.clone();
        bad[0] = b'X';
        assert_eq!(decode_frame(&bad).unwrap_err(), FrameError::BadMagic);
        let mut bad = good.clone();
        bad[4] = 9;
        assert_eq!(decode_frame(&bad).unwrap_err(), FrameError::Version(9));
        let mut bad = good.clone();
        bad[5..9].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode_frame(&bad), Err(FrameError::TooLarge(_))));
        // A payload announcing a billion records must fail without allocating for them.
        let mut huge = Vec::from(FRAME_MAGIC);
        huge.push(FRAME_VERSION);
        let payload = [7u8, 1, 0xff, 0xff, 0xff, 0xff, 0x0f];
        huge.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        huge.extend_from_slice(&payload);
        assert!(matches!(decode_frame(&huge), Err(FrameError::Payload(_))));
        // Trailing garbage inside the announced payload is rejected.
        let mut bad = good.clone();
        bad.push(0);
        let len = (bad.len() - FRAME_HEADER_LEN) as u32;
        bad[5..9].copy_from_slice(&len.to_le_bytes());
        assert!(matches!(decode_frame(&bad), Err(FrameError::Payload(_))));
    }

    /// Every truncation, every single-byte corruption and noise behind a valid header: each
    /// decodes to an error or to a batch, never a panic; truncations are always errors.
    /// (Moved from the server's aggregator, which now receives typed batches in-process.)
    #[test]
    fn garbage_frames_are_errors_never_a_panic() {
        let mut good = Vec::new();
        encode_frame(&sample(), &mut good);
        let mut frames: Vec<Vec<u8>> = vec![
            vec![],
            b"PHRB".to_vec(),
            b"XXXX\x01\0\0\0\0".to_vec(),
            b"PHRB\x09\0\0\0\0".to_vec(),
            b"PHRB\x01\xff\xff\xff\xff".to_vec(),
        ];
        for (cut, f) in (0..good.len()).map(|cut| (cut, good[..cut].to_vec())) {
            assert!(decode_frame(&f).is_err(), "truncated at {cut} decoded");
            frames.push(f);
        }
        for i in 0..good.len() {
            let mut f = good.clone();
            f[i] ^= 0xa5;
            frames.push(f);
        }
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..200usize {
            let mut f = b"PHRB\x01".to_vec();
            f.extend_from_slice(&(len as u32).to_le_bytes());
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                f.push(x as u8);
            }
            frames.push(f);
        }
        let errors = frames.iter().filter(|f| decode_frame(f).is_err()).count();
        assert!(errors >= good.len() + 5, "{errors} errors");
    }

    #[test]
    fn state_names_round_trip() {
        for st in PortState::ALL {
            assert_eq!(st.as_str().parse::<PortState>().unwrap(), st);
            assert_eq!(PortState::ALL[st.index()], st);
        }
        assert!("opened".parse::<PortState>().is_err());
    }
}
