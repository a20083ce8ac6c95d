//! Binary protocols that [`super::identify`] recognises beyond the parent module's: AMQP's
//! Connection.Start, DNS over TCP, SMB, Microsoft SQL Server's prelogin, Oracle TNS, X11,
//! Java RMI, OpenVPN over TCP and gRPC over cleartext HTTP/2. Each checks lengths and
//! constants before it believes a reply, since a binary reply can begin with any byte.

use super::{field, find, version_at, Identity};

fn u16_be(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn u32_be(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// AMQP 0-9-1 Connection.Start, the broker's first frame after the protocol header: a method
/// frame on channel 0 (class 10, method 10), the protocol version, and the server-properties
/// table whose `product` and `version` name the broker (`RabbitMQ`, `3.12.1`).
pub(super) fn amqp_start(r: &[u8]) -> Option<Identity> {
    let [0x01, 0x00, 0x00, ..] = *r else {
        return None;
    };
    let size = usize::try_from(u32_be(r, 3)?).ok()?;
    if !(12..=1 << 20).contains(&size) || r.get(7..11)? != [0x00, 0x0a, 0x00, 0x0a] {
        return None;
    }
    let (major, minor) = (*r.get(11)?, *r.get(12)?);
    let protocol = match (major, minor) {
        (0, 9) => "0-9-1".to_string(),
        (a, b) => format!("{a}-{b}"),
    };
    let table_len = usize::try_from(u32_be(r, 13)?).ok()?;
    let end = r.len().min(17 + table_len);
    let table = r.get(17..end)?;
    let (product, version) = (amqp_text(table, b"product"), amqp_text(table, b"version"));
    Some(
        Identity::new("amqp")
            .product(product.and_then(field))
            .version(version.and_then(version_at))
            .protocol(Some(protocol)),
    )
}

/// The long-string value of the field `name` in an AMQP field table (possibly truncated).
fn amqp_text<'a>(table: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let mut key = Vec::with_capacity(name.len() + 2);
    key.push(u8::try_from(name.len()).ok()?);
    key.extend_from_slice(name);
    key.push(b'S');
    let at = find(table, &key)? + key.len();
    let len = usize::try_from(u32_be(table, at)?).ok()?;
    let start = at + 4;
    table.get(start..table.len().min(start + len))
}

/// The answer to the `version.bind` CHAOS TXT query over TCP (a two-byte length, then a DNS
/// message with QR set and one question): `domain`, with BIND's or dnsmasq's version when the
/// server tells it.
pub(super) fn dns(r: &[u8]) -> Option<Identity> {
    let len = usize::from(u16_be(r, 0)?);
    let m = r.get(2..)?;
    if len < 12 || len < m.len().min(len) || m.len() < 12 {
        return None;
    }
    let (flags, qd, an) = (u16_be(m, 2)?, u16_be(m, 4)?, u16_be(m, 6)?);
    // A response (QR), a standard query (opcode 0), one question, a sane answer count.
    if flags & 0x8000 == 0 || flags & 0x7800 != 0 || qd != 1 || an > 16 {
        return None;
    }
    let mut at = skip_name(m, 12)?;
    let qtype = u16_be(m, at)?;
    at += 4;
    let id = Identity::new("domain");
    if an == 0 || qtype != 16 {
        return Some(id);
    }
    at = skip_name(m, at)?;
    if u16_be(m, at)? != 16 {
        return Some(id);
    }
    let text_len = usize::from(*m.get(at + 10)?);
    let text = m.get(at + 11..at + 11 + text_len)?;
    Some(match text {
        t if t.starts_with(b"dnsmasq-") => id
            .product(Some("dnsmasq".into()))
            .version(version_at(&t[8..])),
        t if t.first().is_some_and(u8::is_ascii_digit) => {
            // BIND answers with its version (`9.18.33-1~deb12u2-Debian`).
            let v = &t[..t.iter().position(|&c| c == b'-').unwrap_or(t.len())];
            id.product(Some("ISC BIND".into())).version(version_at(v))
        }
        t => id.info(field(t)),
    })
}

/// The offset after the DNS name at `at`: labels up to a zero byte, or a compression pointer.
fn skip_name(m: &[u8], mut at: usize) -> Option<usize> {
    for _ in 0..128 {
        let len = *m.get(at)?;
        match len {
            0 => return Some(at + 1),
            0xc0..=0xff => return m.get(at + 1).map(|_| at + 2),
            1..=63 => at += 1 + usize::from(len),
            _ => return None,
        }
    }
    None
}

/// An SMB answer in a NetBIOS session frame: an SMB2 negotiate response (its dialect as
/// `protocol_version`; Samba where its SPNEGO hint says so) or an SMB1 one.
pub(super) fn smb(r: &[u8]) -> Option<Identity> {
    let [0x00, ..] = *r else {
        return None;
    };
    let id = Identity::new("microsoft-ds");
    match r.get(4..8)? {
        b"\xffSMB" => Some(id.protocol(Some("1".into()))),
        b"\xfeSMB" => {
            let body = r.get(4 + 64..)?;
            if body.get(..2)? != [0x41, 0x00] {
                return None;
            }
            let dialect = u16::from_le_bytes([*body.get(4)?, *body.get(5)?]);
            let protocol = match dialect {
                0x0202 => "2.0.2",
                0x0210 => "2.1",
                0x0300 => "3.0",
                0x0302 => "3.0.2",
                0x0311 => "3.1.1",
                0x02ff => "2.x",
                _ => return None,
            };
            let samba = find(r, b"not_defined_in_RFC4178@please_ignore").is_some();
            Some(
                id.protocol(Some(protocol.into()))
                    .product(samba.then(|| "Samba".to_string())),
            )
        }
        _ => None,
    }
}

/// A TDS prelogin response (packet type 4, last packet): Microsoft SQL Server, with the
/// version from the VERSION option (`16.0.1000`).
pub(super) fn mssql(r: &[u8]) -> Option<Identity> {
    let [0x04, 0x01, ..] = *r else {
        return None;
    };
    let len = usize::from(u16_be(r, 2)?);
    if !(9..=4096).contains(&len) {
        return None;
    }
    let options = r.get(8..r.len().min(len))?;
    // The first option is VERSION (token 0): offset and length relative to the options.
    let [0x00, oh, ol, 0x00, 0x06, ..] = *options else {
        return None;
    };
    let at = usize::from(u16::from_be_bytes([oh, ol]));
    let v = options.get(at..at + 6)?;
    let version = format!("{}.{}.{}", v[0], v[1], u16::from_be_bytes([v[2], v[3]]));
    Some(
        Identity::new("ms-sql-s")
            .product(Some("Microsoft SQL Server".into()))
            .version(Some(version)),
    )
}

/// An Oracle TNS packet: accept, refuse, redirect or resend, with the listener's version from
/// a refusal's `VSNNUM`.
pub(super) fn oracle_tns(r: &[u8]) -> Option<Identity> {
    let len = usize::from(u16_be(r, 0)?);
    let kind = *r.get(4)?;
    if !(8..=8192).contains(&len) || u16_be(r, 2)? != 0 || *r.get(5)? != 0 {
        return None;
    }
    if !matches!(kind, 2 | 4 | 5 | 11) {
        return None;
    }
    let id = Identity::new("oracle-tns").product(Some("Oracle TNS Listener".into()));
    if kind == 11 || kind == 2 {
        return Some(id);
    }
    let text = &r[8.min(r.len())..];
    if find(text, b"(DESCRIPTION=").is_none() && find(text, b"(ADDRESS=").is_none() {
        return None;
    }
    let version = find(text, b"VSNNUM=").and_then(|at| {
        let digits = &text[at + 7..];
        let n = digits.iter().take_while(|c| c.is_ascii_digit()).count();
        let v: u32 = std::str::from_utf8(&digits[..n]).ok()?.parse().ok()?;
        Some(format!(
            "{}.{}.{}.{}.{}",
            v >> 24,
            (v >> 20) & 0xf,
            (v >> 12) & 0xff,
            (v >> 8) & 0xf,
            v & 0xff
        ))
    });
    Some(id.version(version))
}

/// The X server's answer to a connection setup (little-endian, protocol 11.0): refused with a
/// reason, or accepted with the vendor's name.
pub(super) fn x11(r: &[u8]) -> Option<Identity> {
    let [status, reason_len, 11, 0, 0, 0, ..] = *r else {
        return None;
    };
    let id = Identity::new("X11").protocol(Some("11.0".into()));
    match status {
        0 => {
            let reason = r.get(8..8 + usize::from(reason_len))?;
            Some(id.info(field(reason)))
        }
        // The accepted setup's first 8 bytes may come alone; the vendor follows.
        1 if r.len() < 40 => Some(id),
        1 => {
            let vendor_len = usize::from(u16::from_le_bytes([*r.get(24)?, *r.get(25)?]));
            let vendor = r.get(40..40 + vendor_len.min(64))?;
            let release = u32::from_le_bytes(r.get(8..12)?.try_into().ok()?);
            let version = (vendor == b"The X.Org Foundation")
                .then(|| xorg_version(release))
                .flatten();
            Some(id.product(field(vendor)).version(version))
        }
        _ => None,
    }
}

/// The X.Org server's version from its release number: `1 MM PP SSS` in decimal (`12011000`
/// is 1.20.11; from 21.1 on the `1.` is a fixed prefix, so `12101006` is 21.1.6).
fn xorg_version(release: u32) -> Option<String> {
    if !(10_000_000..20_000_000).contains(&release) {
        return None;
    }
    let (minor, patch, snap) = (
        release / 100_000 % 100,
        release / 1000 % 100,
        release % 1000,
    );
    Some(match (minor >= 21, snap) {
        (true, _) => format!("{minor}.{patch}.{snap}"),
        (false, 0) => format!("1.{minor}.{patch}"),
        (false, _) => format!("1.{minor}.{patch}.{snap}"),
    })
}

/// Java RMI's ProtocolAck, the answer to the `JRMI` stream header (`N`, then the client's
/// host as the server saw it, as a Java UTF string, and the client's port as a 32-bit
/// integer): `N\0\x09127.0.0.1\0\0\xc8\x9c` from OpenJDK 17's `rmiregistry`. nmap calls the
/// product "Java RMI"; the acknowledgement carries no version.
pub(super) fn java_rmi(r: &[u8]) -> Option<Identity> {
    let [0x4e, hi, lo, ref rest @ ..] = *r else {
        return None;
    };
    let len = usize::from(u16::from_be_bytes([hi, lo]));
    let host = rest.get(..len)?;
    // The port is a TCP port in a 32-bit integer: its two high bytes are zero.
    let port_high = rest.get(len..len + 4)?.get(..2)?;
    if !(1..=255).contains(&len)
        || port_high != [0, 0]
        || !host
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || b".:-_%".contains(c))
    {
        return None;
    }
    Some(Identity::new("java-rmi").product(Some("Java RMI".into())))
}

/// OpenVPN over TCP: a length, then P_CONTROL_HARD_RESET_SERVER_V2 (opcode 8, key id 0) and
/// the server's session id.
pub(super) fn openvpn(r: &[u8]) -> Option<Identity> {
    let len = usize::from(u16_be(r, 0)?);
    let op = *r.get(2)?;
    (op == 8 << 3 && (14..=1500).contains(&len) && r.len() >= 14).then(|| Identity::new("openvpn"))
}

/// Kafka's answer to the ApiVersions request of the probe plan, which repeats its correlation
/// id (`phk1`): a length, the id, an error code and the API version ranges.
pub(super) fn kafka(r: &[u8]) -> Option<Identity> {
    let len = usize::try_from(u32_be(r, 0)?).ok()?;
    if r.get(4..8)? != b"phk1" || !(6..=1 << 16).contains(&len) {
        return None;
    }
    Some(Identity::new("kafka").product(Some("Apache Kafka".into())))
}

/// An HTTP/2 frame: its type, flags, stream and payload (without padding for DATA).
struct Frame<'a> {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: &'a [u8],
}

const H2_DATA: u8 = 0;
const H2_HEADERS: u8 = 1;
const H2_RST_STREAM: u8 = 3;
const H2_SETTINGS: u8 = 4;
const H2_GOAWAY: u8 = 7;
const H2_END_STREAM: u8 = 0x1;
const H2_PADDED: u8 = 0x8;

/// The whole HTTP/2 frames at the start of `r` (at most 32; a frame not yet whole ends
/// them). `None` unless the first frame is a server's SETTINGS frame (stream 0, not an
/// acknowledgement, a multiple of 6 bytes), which every HTTP/2 server sends first, and every
/// frame is no larger than HTTP/2's default.
fn http2_frames(r: &[u8]) -> Option<Vec<Frame<'_>>> {
    let mut frames = Vec::new();
    let mut rest = r;
    // A first frame begun, its header valid so far.
    let mut begun = matches!(*r, [0, ..]) && r.len() < 9;
    while frames.len() < 32 {
        let [a, b, c, kind, flags, s0, s1, s2, s3, ref tail @ ..] = *rest else {
            break;
        };
        let len = usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c);
        let stream = u32::from_be_bytes([s0 & 0x7f, s1, s2, s3]);
        let first = frames.is_empty();
        if len > 1 << 14 || (first && (kind != H2_SETTINGS || stream != 0 || flags != 0)) {
            return None;
        }
        if kind == H2_SETTINGS && (stream != 0 || len % 6 != 0) {
            return None;
        }
        let Some(payload) = tail.get(..len) else {
            begun = true;
            break;
        };
        rest = &tail[len..];
        let payload = match (kind, flags & H2_PADDED) {
            (H2_DATA | H2_HEADERS, H2_PADDED) => {
                let (&pad, body) = payload.split_first()?;
                body.get(..body.len().checked_sub(usize::from(pad))?)?
            }
            _ => payload,
        };
        frames.push(Frame {
            kind,
            flags,
            stream,
            payload,
        });
    }
    (begun || !frames.is_empty()).then_some(frames)
}

/// Whether `r` is the start of an HTTP/2 server's answer whose stream 1 is still open (no
/// frame ended it, reset it, or went away): more frames are to come.
pub(super) fn http2_pending(r: &[u8]) -> bool {
    let Some(frames) = http2_frames(r) else {
        return false;
    };
    !frames.iter().any(|f| {
        f.kind == H2_GOAWAY
            || (f.stream == 1 && (f.kind == H2_RST_STREAM || f.flags & H2_END_STREAM != 0))
    })
}

/// `application/grpc` as HPACK's Huffman code spells it (as Go's HTTP/2 library sends it).
const GRPC_CONTENT_TYPE_HUFFMAN: &[u8] = b"\x1d\x75\xd0\x62\x0d\x26\x3d\x4c\x4d\x65\x64";

/// A gRPC server's answer over cleartext HTTP/2: `grpc`, when a HEADERS frame on stream 1
/// carries the `application/grpc` content type (literal or Huffman-coded) or a DATA frame on
/// stream 1 a gRPC message. When that message is a CRI `VersionResponse` (`version`,
/// `runtime_name`, `runtime_version`, `runtime_api_version`: fields 1 to 4), the runtime is
/// the product (`containerd`) and its version the version (`1.6.20~ds1` → `1.6.20`).
pub(super) fn grpc(r: &[u8]) -> Option<Identity> {
    let frames = http2_frames(r)?;
    let mut seen = false;
    let mut runtime = None;
    for f in frames.iter().filter(|f| f.stream == 1) {
        match f.kind {
            H2_HEADERS => {
                seen |= find(f.payload, b"application/grpc").is_some()
                    || find(f.payload, GRPC_CONTENT_TYPE_HUFFMAN).is_some();
            }
            H2_DATA => {
                // A gRPC message: not compressed, a 4-byte length, the protobuf body.
                let [0, a, b, c, d, ref body @ ..] = *f.payload else {
                    continue;
                };
                let len = usize::try_from(u32::from_be_bytes([a, b, c, d])).ok()?;
                seen = true;
                runtime = runtime.or_else(|| cri_version(body.get(..len.min(body.len()))?));
            }
            _ => {}
        }
    }
    if !seen {
        return None;
    }
    let id = Identity::new("grpc");
    Some(match runtime {
        Some((name, version)) => id.product(field(name)).version(version_at(version)),
        None => id,
    })
}

/// The `runtime_name` and `runtime_version` of a CRI `VersionResponse`: string fields 1 to 4
/// (one-byte tags and lengths, as such short strings have), both named.
fn cri_version(mut body: &[u8]) -> Option<(&[u8], &[u8])> {
    let (mut name, mut version) = (None, None);
    for _ in 0..8 {
        let [tag, len, ref tail @ ..] = *body else {
            break;
        };
        if !matches!(tag, 0x0a | 0x12 | 0x1a | 0x22) || len >= 0x80 {
            return None;
        }
        let value = tail.get(..usize::from(len))?;
        body = &tail[usize::from(len)..];
        match tag {
            0x12 => name = Some(value),
            0x1a => version = Some(value),
            _ => {}
        }
    }
    Some((name?, version?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_needs_a_settings_frame_first_and_never_panics_on_cuts() {
        let reply = crate::fuzzing::sample_reply("containerd-1.6.20-cri-version");
        let id = grpc(reply).expect("containerd");
        assert_eq!(id.product.as_deref(), Some("containerd"));
        assert_eq!(id.version.as_deref(), Some("1.6.20"));
        for cut in 0..reply.len() {
            let _ = grpc(&reply[..cut]);
            let _ = http2_pending(&reply[..cut]);
            let _ = grpc(&reply[cut..]);
        }
        // Without the leading SETTINGS frame, the same frames are not believed.
        assert!(grpc(&reply[15..]).is_none());
        // A SETTINGS frame with a length that is not a multiple of 6 is not HTTP/2.
        let mut bad = reply.to_vec();
        bad[2] = 5;
        assert!(grpc(&bad).is_none());
        // A VersionResponse that names no runtime is gRPC without a product.
        let mut anonymous = reply.to_vec();
        let at = super::super::find(&anonymous, b"\x12\x0acontainerd").expect("runtime_name");
        anonymous[at] = 0x0a;
        let id = grpc(&anonymous).expect("grpc");
        assert_eq!((id.service, id.product), ("grpc", None));
    }
}
