//! Service identification: which service a port runs, from the first reply it gave.
//!
//! [`identify`] is a pure function over bytes: the banner a server sent on its own, or its
//! answer to the small probe of the `identify` preset (`GET / HTTP/1.0\r\n\r\n`). Matching is
//! hand-written byte comparison: no regex, no allocation but the product and version strings
//! of the answer, each capped at [`IDENTITY_FIELD_LIMIT`] bytes. It looks at no more than the
//! first [`IDENTIFY_SCAN_LIMIT`] bytes, so its cost is bounded whatever the peer sent.

use std::fmt;

mod binary;
mod cpe;
mod plan;
mod text;

pub use plan::{
    nth_probe, probe_order, PlanTls, ProbePlan, ReplyVerdict, ServiceProbe, SERVICE_PROBES,
};

/// The most bytes of a product or version name that an [`Identity`] keeps.
pub const IDENTITY_FIELD_LIMIT: usize = 64;

/// The most bytes of a reply that [`identify`] looks at.
pub const IDENTIFY_SCAN_LIMIT: usize = 2048;

/// What a reply says about the service that sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The service, in lower case: `ssh`, `smtp`, `http`, `tls`, `redis`, ...
    pub service: &'static str,
    /// The software, where the reply names it (`OpenSSH`, `Postfix`, `nginx`, `MariaDB`).
    pub product: Option<String>,
    /// The software's version, where the reply names it (`9.2p1`, `1.22.1`).
    pub version: Option<String>,
    /// The protocol's version, where the reply names it (RFB `3.8`, AMQP `0-9-1`, rsync
    /// `32.0`, SMB `3.1.1`): a fact about the protocol, not the software.
    pub protocol_version: Option<String>,
    /// Other facts the reply states: the host name a server gives, an OS hint, the
    /// security layer an RDP server insists on.
    pub info: Option<String>,
    /// The CPE 2.2 name of the software (`cpe:/a:openbsd:openssh:9.2p1`), for products with a
    /// known vendor.
    pub cpe: Option<String>,
}

impl Identity {
    fn new(service: &'static str) -> Identity {
        Identity {
            service,
            product: None,
            version: None,
            protocol_version: None,
            info: None,
            cpe: None,
        }
    }

    fn protocol(mut self, protocol_version: Option<String>) -> Identity {
        self.protocol_version = protocol_version;
        self
    }

    fn info(mut self, info: Option<String>) -> Identity {
        self.info = info;
        self
    }

    fn product(mut self, product: Option<String>) -> Identity {
        self.product = product;
        self
    }

    fn version(mut self, version: Option<String>) -> Identity {
        self.version = version;
        self
    }
}

impl fmt::Display for Identity {
    /// `ssh (OpenSSH 9.2p1)`, `smtp (Postfix)`, `tls`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.service)?;
        match (&self.product, &self.version) {
            (Some(p), Some(v)) => write!(f, " ({p} {v})"),
            (Some(p), None) => write!(f, " ({p})"),
            (None, Some(v)) => write!(f, " ({v})"),
            (None, None) => Ok(()),
        }
    }
}

/// Identifies the service that sent `reply`, the first bytes a port gave (its banner, or the
/// answer to the identify probe). `None` when the reply looks like nothing known.
///
/// Never panics; allocates only the returned product and version strings, which are printable
/// ASCII of at most [`IDENTITY_FIELD_LIMIT`] bytes.
pub fn identify(reply: &[u8]) -> Option<Identity> {
    let r = &reply[..reply.len().min(IDENTIFY_SCAN_LIMIT)];
    // Text protocols first, each recognised by its first bytes; binary heuristics last, since
    // they are weaker (a length field and a few constants).
    let id = match *r.first()? {
        b'S' => ssh(r).or_else(|| sip(r)).or_else(|| postgres(r)),
        b'H' => http(r),
        // 0x30 is also the BER tag of an LDAP message, and a git pkt-line starts with its
        // length in hex.
        b'0'..=b'9' => numeric_reply(r)
            .or_else(|| ldap(r))
            .or_else(|| text::git(r)),
        b'+' => plus_reply(r),
        b'-' => minus_reply(r),
        b'*' => imap(r),
        b'$' => redis_info(r),
        b'I' => nats(r),
        b'V' => memcached(r),
        b'C' => memcached(r),
        b'E' | b'N' => memcached(r)
            .or_else(|| postgres(r))
            .or_else(|| text::irc(r))
            .or_else(|| binary::java_rmi(r)),
        b'P' => text::irc(r),
        b':' => text::irc(r),
        b'R' => vnc(r).or_else(|| text::rtsp(r)),
        b'A' => amqp(r),
        b'@' => text::rsync(r),
        b'(' => text::svnserve(r),
        b'Z' => text::zookeeper(r),
        b'<' => xmpp(r),
        0x15 | 0x16 => tls(r),
        0xff => telnet(r),
        0x20 => mqtt(r),
        0x03 => rdp(r),
        0x01 => binary::amqp_start(r).or_else(|| binary::x11(r)),
        0x00 => binary::smb(r)
            .or_else(|| binary::x11(r))
            .or_else(|| binary::grpc(r)),
        0x04 => binary::mssql(r),
        _ => None,
    }
    // Binary replies can begin with any byte: their first bytes are a length.
    .or_else(|| mysql(r))
    .or_else(|| mongodb(r))
    .or_else(|| binary::oracle_tns(r))
    .or_else(|| binary::dns(r))
    .or_else(|| binary::openvpn(r))
    .or_else(|| binary::kafka(r))?;
    Some(cpe::with_cpe(id))
}

/// Whether `reply`, recognised as `id`, shows a TLS server: a TLS record (a ServerHello, an
/// alert), or an HTTPS server's plain answer to a plain request: nginx's
/// `400 The plain HTTP request was sent to HTTPS port`, Apache's `You're speaking plain HTTP
/// to an SSL-enabled server port`, Go's `Client sent an HTTP request to an HTTPS server.`
/// (the Kubernetes API server's, among others).
fn shows_tls(reply: &[u8], id: &Identity) -> bool {
    const COMPLAINTS: &[&[u8]] = &[
        b"The plain HTTP request was sent to HTTPS port",
        b"speaking plain HTTP to an SSL-enabled server port",
        b"Client sent an HTTP request to an HTTPS server",
    ];
    let r = &reply[..reply.len().min(IDENTIFY_SCAN_LIMIT)];
    id.service == "tls"
        || (id.service == "http"
            && r.starts_with(b"HTTP/1.")
            && r.get(9..13) == Some(b"400 ")
            && COMPLAINTS.iter().any(|c| find(r, c).is_some()))
}

/// Whether `reply`, recognised as `id`, is likely to say more if read on: an IRC server's
/// welcome (`001`) whose `002` line, the one naming the software and its version, has not
/// arrived yet; an X server's accepted setup whose vendor has not; an HTTP answer whose head
/// or body (by its `Content-Length`) has not (a loaded machine's reads cut VLC's not-found
/// page after its head).
fn wants_more(reply: &[u8], id: &Identity) -> bool {
    match id.service {
        "irc" => id.product.is_none() && find(reply, b" 001 ").is_some(),
        "X11" => id.product.is_none() && reply.first() == Some(&1) && reply.len() < 40,
        _ => text::http_incomplete(reply),
    }
}

// --- text helpers -------------------------------------------------------------------------

/// The position of `needle` in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    let last = hay.len().checked_sub(needle.len())?;
    (0..=last).find(|&i| hay[i] == first && hay[i + 1..i + needle.len()] == *rest)
}

/// The position of `needle` (lower case) in `hay`, ignoring ASCII case.
fn find_ci(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    let last = hay.len().checked_sub(needle.len())?;
    (0..=last).find(|&i| {
        hay[i].to_ascii_lowercase() == first
            && hay[i + 1..i + needle.len()].eq_ignore_ascii_case(rest)
    })
}

fn starts_with_ci(hay: &[u8], prefix: &[u8]) -> bool {
    hay.get(..prefix.len())
        .is_some_and(|h| h.eq_ignore_ascii_case(prefix))
}

/// The first line, without its line ending.
fn first_line(r: &[u8]) -> &[u8] {
    let end = r
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(r.len());
    &r[..end]
}

/// The lines of `r` after the first, without line endings, up to the first empty line (the
/// end of a header block).
fn header_lines(r: &[u8]) -> impl Iterator<Item = &[u8]> {
    r.split(|&b| b == b'\n')
        .skip(1)
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .take_while(|l| !l.is_empty())
}

fn skip_spaces(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|&&c| c == b' ' || c == b'\t').count();
    &b[n..]
}

/// Peer bytes as a product or version name: printable ASCII up to the first other byte,
/// trimmed, at most [`IDENTITY_FIELD_LIMIT`] bytes; `None` if nothing is left.
fn field(b: &[u8]) -> Option<String> {
    let n = b.iter().take_while(|&&c| (0x20..0x7f).contains(&c)).count();
    let text = b[..n.min(IDENTITY_FIELD_LIMIT)].trim_ascii();
    // Only ASCII bytes remain, so this conversion cannot fail.
    std::str::from_utf8(text)
        .ok()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn is_version_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'.' || c == b'_'
}

/// A version number at the start of `b` (after spaces and an optional `v`): a digit, then
/// letters, digits, dots and underscores (`4.96`, `9.2p1`, `v2.4.17` → `2.4.17`).
fn version_at(b: &[u8]) -> Option<String> {
    let b = skip_spaces(b);
    let b = match b {
        [b'v' | b'V', d, ..] if d.is_ascii_digit() => &b[1..],
        _ => b,
    };
    if !b.first()?.is_ascii_digit() {
        return None;
    }
    let n = b.iter().take_while(|&&c| is_version_byte(c)).count();
    field(
        b[..n]
            .trim_ascii_end()
            .strip_suffix(b".")
            .unwrap_or(&b[..n]),
    )
}

/// A product that greetings name in one word, and the service that word implies (`None`:
/// the greeting's other words decide).
type ProductWord = (&'static [u8], &'static str, Option<&'static str>);

/// What one pass over the words of a greeting found.
#[derive(Default)]
struct Words {
    /// The first product of the table named, and the version that follows its name.
    product: Option<(&'static ProductWord, Option<String>)>,
    /// A word `SMTP` or `ESMTP`.
    smtp: bool,
    /// A word containing `ftp` in any case (`vsFTPd`, `FTP`, `ftp.example.org`).
    ftp: bool,
    /// A word `NNTP` or `NNRP`.
    nntp: bool,
}

/// Words between a product's name and its version: `FileZilla Server 1.7.0`,
/// `Cyrus IMAP 3.6.1`, `Serv-U FTP Server v15.1`, `Leafnode NNTP Daemon, version 1.12.0`.
const FILLER_WORDS: &[&[u8]] = &[
    b"Server", b"IMAP", b"POP3", b"FTP", b"ESMTP", b"SMTP", b"NNTP", b"Daemon", b"version",
];

/// One pass over the words of `text` (runs of bytes between blanks and brackets), looking
/// for the products of `table` and the keywords of [`Words`]. A single pass with a length
/// check before each comparison keeps long greetings cheap.
fn scan_words(text: &[u8], table: &'static [ProductWord]) -> Words {
    let separator = |c: &u8| {
        matches!(
            c,
            b' ' | b'\t' | b'\r' | b'\n' | b'(' | b')' | b'[' | b']' | b';' | b','
        )
    };
    let mut found = Words::default();
    let mut want_version = false;
    for word in text.split(separator).filter(|w| !w.is_empty()) {
        if want_version && !FILLER_WORDS.contains(&word) {
            want_version = false;
            if let Some((_, version)) = &mut found.product {
                *version = version_at(word);
            }
        }
        if found.product.is_none() {
            if let Some(entry) = table.iter().find(|e| e.0 == word) {
                found.product = Some((entry, None));
                want_version = true;
            }
        }
        match word {
            b"SMTP" | b"ESMTP" => found.smtp = true,
            b"NNTP" | b"NNRP" => found.nntp = true,
            // Names of hosts and products are short; a long word is not worth searching.
            _ if word.len() <= 64 => found.ftp |= find_ci(word, b"ftp").is_some(),
            _ => {}
        }
    }
    found
}

/// A `Server:`-style value: `nginx/1.22.1`, `Apache/2.4.62 (Debian)`, `Asterisk PBX 20.5.0`,
/// `Caddy`.
fn product_and_version(value: &[u8]) -> (Option<String>, Option<String>) {
    let value = value.trim_ascii();
    let first_word_end = value.iter().position(|&c| c == b' ').unwrap_or(value.len());
    let first_word = &value[..first_word_end];
    if let Some(slash) = first_word.iter().position(|&c| c == b'/') {
        let product = &first_word[..slash];
        let product = product.split(|&c| c == b'(').next().unwrap_or(product);
        return (field(product), version_at(&first_word[slash + 1..]));
    }
    // No slash: the first word that starts with a digit (perhaps in brackets, as in
    // `kamailio (5.6.3 (x86_64/linux))`) is the version.
    let mut at = 0;
    for word in value.split(|&c| c == b' ') {
        if at > 0 {
            if let Some(v) = version_at(word.strip_prefix(b"(").unwrap_or(word)) {
                return (field(&value[..at]), Some(v));
            }
        }
        at += word.len() + 1;
    }
    let product = value.split(|&c| c == b'(').next().unwrap_or(value);
    (field(product), None)
}

// --- text protocols -----------------------------------------------------------------------

/// `SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3`.
fn ssh(r: &[u8]) -> Option<Identity> {
    let line = first_line(r).strip_prefix(b"SSH-")?;
    let dash = line.iter().position(|&c| c == b'-')?;
    let proto = &line[..dash];
    if proto.is_empty() || !proto.iter().all(|&c| c.is_ascii_digit() || c == b'.') {
        return None;
    }
    let rest = &line[dash + 1..];
    let software = &rest[..rest.iter().position(|&c| c == b' ').unwrap_or(rest.len())];
    // `OpenSSH_9.2p1`, `dropbear_2022.83`, `Cisco-1.25`: the name ends at the last `_` or `-`
    // that a digit follows.
    let split = (1..software.len())
        .rev()
        .find(|&i| matches!(software[i - 1], b'_' | b'-') && software[i].is_ascii_digit());
    let id = Identity::new("ssh");
    Some(match split {
        Some(i) => id
            .product(field(&software[..i - 1]))
            .version(version_at(&software[i..])),
        None => id.product(field(software)),
    })
}

/// An HTTP response: the status line, and the product from the `Server` header. A MongoDB
/// answering the identify probe on its driver port also speaks a little HTTP.
fn http(r: &[u8]) -> Option<Identity> {
    let rest = r.strip_prefix(b"HTTP/")?;
    if !rest.first()?.is_ascii_digit() {
        return None;
    }
    // mongod's whole answer is about 170 bytes; no need to search a long page for it.
    if find(&r[..r.len().min(256)], b"access MongoDB over HTTP").is_some() {
        return Some(Identity::new("mongodb").product(Some("MongoDB".into())));
    }
    let id = Identity::new("http");
    let server = header_lines(r).find(|l| starts_with_ci(l, b"server:"));
    let id = match server {
        Some(line) => {
            let (product, version) = product_and_version(&line[7..]);
            id.product(product).version(version)
        }
        None => id,
    };
    Some(text::refine_http(r, id))
}

/// `SIP/2.0 200 OK`, with the product from `Server` or `User-Agent`.
fn sip(r: &[u8]) -> Option<Identity> {
    let rest = r.strip_prefix(b"SIP/2.0 ")?;
    if !rest.first()?.is_ascii_digit() {
        return None;
    }
    let id = Identity::new("sip");
    let header = header_lines(r).find_map(|l| {
        if starts_with_ci(l, b"server:") {
            Some(&l[7..])
        } else if starts_with_ci(l, b"user-agent:") {
            Some(&l[11..])
        } else {
            None
        }
    });
    Some(match header {
        Some(value) => {
            let (product, version) = product_and_version(value);
            id.product(product).version(version)
        }
        None => id,
    })
}

const GREETING_PRODUCTS: &[ProductWord] = &[
    (b"Postfix", "Postfix", Some("smtp")),
    (b"Exim", "Exim", Some("smtp")),
    (b"Sendmail", "Sendmail", Some("smtp")),
    (b"OpenSMTPD", "OpenSMTPD", Some("smtp")),
    (b"Haraka", "Haraka", Some("smtp")),
    (b"vsFTPd", "vsFTPd", Some("ftp")),
    (b"ProFTPD", "ProFTPD", Some("ftp")),
    (b"Pure-FTPd", "Pure-FTPd", Some("ftp")),
    (b"FileZilla", "FileZilla Server", Some("ftp")),
    (b"Serv-U", "Serv-U", Some("ftp")),
    (b"INN", "INN", Some("nntp")),
    (b"Leafnode", "Leafnode", Some("nntp")),
    (b"Microsoft", "Microsoft", None),
    (b"Zimbra", "Zimbra", None),
];

/// A reply that starts with a three-digit code: SMTP, FTP or NNTP greetings (`220 ...`).
fn numeric_reply(r: &[u8]) -> Option<Identity> {
    let [a, b, c, sep, ..] = *r else {
        return None;
    };
    if !(a.is_ascii_digit() && b.is_ascii_digit() && c.is_ascii_digit())
        || !(sep == b' ' || sep == b'-')
    {
        return None;
    }
    // Multi-line greetings can name the product on any line; the first 512 bytes are plenty.
    let words = scan_words(&r[..r.len().min(512)], GREETING_PRODUCTS);
    let service = match words.product {
        Some((&(_, _, Some(service)), _)) => Some(service),
        _ if words.smtp => Some("smtp"),
        _ if words.ftp => Some("ftp"),
        _ if words.nntp && a == b'2' && b == b'0' => Some("nntp"),
        _ => None,
    };
    let Some(service) = service else {
        // `554 5.7.1 ...`: an enhanced status code (RFC 3463) only SMTP servers send.
        let code = first_line(&r[4..]);
        let enhanced = matches!(code, [b'2' | b'4' | b'5', b'.', d, ..] if d.is_ascii_digit());
        return enhanced.then(|| Identity::new("smtp"));
    };
    let id = Identity::new(service);
    Some(match words.product {
        Some((&(_, product, _), version)) => id.product(Some(product.into())).version(version),
        // vsftpd's own fatal errors (`500 OOPS: vsftpd: ...`), sent instead of a greeting
        // when its configuration does not let it serve.
        None if r.starts_with(b"500 OOPS: ") && find_ci(first_line(r), b"vsftpd").is_some() => {
            id.product(Some("vsFTPd".into()))
        }
        None => id,
    })
}

const MAILBOX_PRODUCTS: &[ProductWord] = &[
    (b"Dovecot", "Dovecot", None),
    (b"Cyrus", "Cyrus", None),
    (b"Courier-IMAP", "Courier-IMAP", None),
    (b"Zimbra", "Zimbra", None),
    (b"Microsoft", "Microsoft Exchange", None),
];

/// The product a POP3 or IMAP greeting names.
fn mailbox_identity(service: &'static str, text: &[u8]) -> Identity {
    let id = Identity::new(service);
    match scan_words(text, MAILBOX_PRODUCTS).product {
        Some((&(_, product, _), version)) => id.product(Some(product.into())).version(version),
        None => id,
    }
}

/// `+OK ...` (POP3) or `+PONG` (Redis).
fn plus_reply(r: &[u8]) -> Option<Identity> {
    if r.starts_with(b"+PONG") {
        return Some(Identity::new("redis").product(Some("Redis".into())));
    }
    if r.starts_with(b"+OK") {
        return Some(mailbox_identity("pop3", first_line(r)));
    }
    None
}

/// Redis errors (`-ERR wrong number of arguments for 'get' command`, `-NOAUTH`, `-DENIED`),
/// NATS errors, or a POP3 server turning the client away.
fn minus_reply(r: &[u8]) -> Option<Identity> {
    let line = first_line(r);
    let redis = || Some(Identity::new("redis").product(Some("Redis".into())));
    for prefix in [
        &b"-NOAUTH"[..],
        b"-DENIED",
        b"-WRONGPASS",
        b"-MISCONF",
        b"-LOADING",
        b"-WRONGTYPE",
    ] {
        if line.starts_with(prefix) {
            return redis();
        }
    }
    let rest = line.strip_prefix(b"-ERR")?;
    if find(rest, b"Unknown Protocol Operation").is_some()
        || find(rest, b"Authorization Violation").is_some()
    {
        return Some(Identity::new("nats").product(Some("NATS".into())));
    }
    if find(rest, b" command").is_some()
        || find(rest, b"Protocol error").is_some()
        || find(rest, b"operation not permitted").is_some()
    {
        return redis();
    }
    if rest.is_empty() || rest[0] == b' ' {
        return Some(Identity::new("pop3"));
    }
    None
}

/// `* OK [CAPABILITY ...] Dovecot (Debian) ready.`, `* PREAUTH`, `* BYE`.
fn imap(r: &[u8]) -> Option<Identity> {
    let line = first_line(r);
    if !(line.starts_with(b"* OK") || line.starts_with(b"* PREAUTH") || line.starts_with(b"* BYE"))
    {
        return None;
    }
    // The product is named after the capability list, which is itself a list of words.
    let tail = match line.iter().rposition(|&c| c == b']') {
        Some(i) => &line[i..],
        None => line,
    };
    Some(mailbox_identity("imap", tail))
}

/// The answer to `INFO`: a bulk string with `redis_version:7.0.15`.
fn redis_info(r: &[u8]) -> Option<Identity> {
    let head = &r[..r.len().min(512)];
    let at = find(head, b"redis_version:")?;
    Some(
        Identity::new("redis")
            .product(Some("Redis".into()))
            .version(version_at(&head[at + 14..])),
    )
}

/// `INFO {"server_id":"...","version":"2.9.20",...}`.
fn nats(r: &[u8]) -> Option<Identity> {
    let json = r.strip_prefix(b"INFO ")?;
    let json = skip_spaces(json);
    if json.first() != Some(&b'{') {
        return None;
    }
    let line = first_line(json);
    let version = find(line, b"\"version\":\"").and_then(|at| version_at(&line[at + 11..]));
    Some(
        Identity::new("nats")
            .product(Some("NATS".into()))
            .version(version),
    )
}

/// `VERSION 1.6.18`, or `ERROR` (memcached's answer to a command it does not know, such as
/// the identify probe's `GET`).
fn memcached(r: &[u8]) -> Option<Identity> {
    let id = || Identity::new("memcached").product(Some("memcached".into()));
    if let Some(rest) = r.strip_prefix(b"VERSION ") {
        return Some(id().version(version_at(first_line(rest))));
    }
    let line = first_line(r);
    let terminated = r.get(line.len()) == Some(&b'\r');
    if terminated
        && (line == b"ERROR"
            || line.starts_with(b"CLIENT_ERROR ")
            || line.starts_with(b"SERVER_ERROR "))
    {
        return Some(id());
    }
    None
}

/// `RFB 003.008\n`.
fn vnc(r: &[u8]) -> Option<Identity> {
    let v = r.strip_prefix(b"RFB ")?.get(..7)?;
    if v[3] != b'.' || !v[..3].iter().chain(&v[4..]).all(u8::is_ascii_digit) {
        return None;
    }
    let num = |d: &[u8]| d.iter().fold(0u32, |n, &c| n * 10 + u32::from(c - b'0'));
    let version = format!("{}.{}", num(&v[..3]), num(&v[4..]));
    Some(Identity::new("vnc").protocol(Some(version)))
}

/// `AMQP\0\0\x09\x01`: an AMQP broker's answer to a protocol header it does not accept, which
/// names the version it speaks.
fn amqp(r: &[u8]) -> Option<Identity> {
    let v = r.strip_prefix(b"AMQP")?.get(..4)?;
    let version = if v[0] == 0 && v[1] == 0 {
        format!("0-{}-{}", v[2], v[3])
    } else {
        format!("{}.{}.{}", v[1], v[2], v[3])
    };
    Some(Identity::new("amqp").protocol(Some(version)))
}

/// An XMPP stream header.
fn xmpp(r: &[u8]) -> Option<Identity> {
    let head = &r[..r.len().min(512)];
    (head.starts_with(b"<?xml") || head.starts_with(b"<stream:"))
        .then(|| find(head, b"<stream:stream"))
        .flatten()
        .map(|_| Identity::new("xmpp"))
}

// --- binary protocols ---------------------------------------------------------------------

/// A TLS record: a handshake (a server hello) or an alert, in SSL 3.0 to TLS 1.3 framing.
fn tls(r: &[u8]) -> Option<Identity> {
    match r {
        [0x16 | 0x15, 0x03, 0x00..=0x04, ..] => Some(Identity::new("tls")),
        _ => None,
    }
}

/// Telnet option negotiation: IAC followed by WILL, WONT, DO or DONT.
fn telnet(r: &[u8]) -> Option<Identity> {
    match r {
        [0xff, 0xfb..=0xfe, ..] => Some(Identity::new("telnet")),
        _ => None,
    }
}

/// An MQTT CONNACK: 3.1.1 (`20 02 flags code`) or 5 (`20 len flags reason props`).
fn mqtt(r: &[u8]) -> Option<Identity> {
    match *r {
        [0x20, 0x02, 0x00 | 0x01, code, ..] if code <= 5 => Some(Identity::new("mqtt")),
        [0x20, len, 0x00 | 0x01, _, ..] if (3..0x80).contains(&len) => Some(Identity::new("mqtt")),
        _ => None,
    }
}

/// An LDAP message: a BER sequence holding a message id and a response operation (bind
/// response, search done, or the notice of disconnection servers send to garbage).
fn ldap(r: &[u8]) -> Option<Identity> {
    let header = match *r.get(1)? {
        n if n < 0x80 => 2,
        0x81 => 3,
        0x82 => 4,
        0x84 => 6,
        _ => return None,
    };
    let rest = r.get(header..)?;
    let [0x02, id_len, ..] = *rest else {
        return None;
    };
    if !(1..=4).contains(&id_len) {
        return None;
    }
    let op = *rest.get(2 + usize::from(id_len))?;
    if !matches!(op, 0x61 | 0x64 | 0x65 | 0x78) {
        return None;
    }
    let id = Identity::new("ldap");
    if op != 0x64 {
        return Some(id);
    }
    // A search result entry: the root DSE, whose attributes name the server.
    let value = |name: &[u8]| ber_attribute(r, name).and_then(field);
    Some(if let Some(vendor) = value(b"vendorName") {
        let product = if vendor.starts_with("389") {
            "389 Directory Server".to_string()
        } else {
            vendor
        };
        let version = ber_attribute(r, b"vendorVersion").and_then(|v| {
            let digits = v.iter().position(u8::is_ascii_digit)?;
            version_at(&v[digits..])
        });
        id.product(Some(product)).version(version)
    } else if find(r, b"OpenLDAProotDSE").is_some() {
        id.product(Some("OpenLDAP".into()))
    } else if find(r, b"forestFunctionality").is_some() {
        id.product(Some("Microsoft Active Directory".into()))
    } else {
        id
    })
}

/// The first value of the attribute `name` in a BER-encoded LDAP entry: the attribute's
/// OCTET STRING, then a SET whose first OCTET STRING is the value (short lengths only, which
/// is what root DSE attributes use).
fn ber_attribute<'a>(r: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let mut key = vec![0x04, u8::try_from(name.len()).ok()?];
    key.extend_from_slice(name);
    let at = find(r, &key)? + key.len();
    let [0x31, _, 0x04, len, ..] = *r.get(at..at + 4)? else {
        return None;
    };
    if len >= 0x80 {
        return None;
    }
    r.get(at + 4..at + 4 + usize::from(len))
}

/// An RDP (X.224) connection confirm in a TPKT; or xrdp's MCS Disconnect Provider Ultimatum,
/// its answer to bytes it does not understand.
fn rdp(r: &[u8]) -> Option<Identity> {
    if r.starts_with(b"\x03\x00\x00\x09\x02\xf0\x80\x21\x80") {
        return Some(Identity::new("ms-wbt-server").product(Some("xrdp".into())));
    }
    let [0x03, 0x00, hi, lo, _, code, ..] = *r else {
        return None;
    };
    let len = u16::from_be_bytes([hi, lo]);
    if len < 11 || code & 0xf0 != 0xd0 {
        return None;
    }
    // An RDP negotiation response or failure after the 7 bytes of the X.224 header.
    let info = match r.get(11..16) {
        Some(&[0x02, _, 0x08, 0x00, protocol]) => Some(match protocol {
            0 => "security: standard RDP",
            1 => "security: TLS",
            2 | 8 | 10 => "security: CredSSP (NLA)",
            _ => "security: other",
        }),
        Some(&[0x03, _, 0x08, 0x00, _]) => Some("negotiation failure"),
        _ => None,
    };
    Some(Identity::new("ms-wbt-server").info(info.map(str::to_string)))
}

/// A MySQL or MariaDB server greeting (length, sequence 0, protocol 10, NUL-terminated server
/// version), or the error packet a server sends a client it turns away.
fn mysql(r: &[u8]) -> Option<Identity> {
    let [l0, l1, l2, 0, kind, ..] = *r else {
        return None;
    };
    let len = usize::from(l0) | usize::from(l1) << 8 | usize::from(l2) << 16;
    if !(3..=4096).contains(&len) {
        return None;
    }
    let payload = &r[5..];
    let product = |text: &[u8]| {
        if find(text, b"MariaDB").is_some() {
            Some("MariaDB".to_string())
        } else {
            Some("MySQL".to_string())
        }
    };
    match kind {
        0x0a | 0x09 => {
            let end = payload.iter().take(96).position(|&c| c == 0)?;
            let v = &payload[..end];
            if !v.first()?.is_ascii_digit() || !v.iter().all(|&c| (0x21..0x7f).contains(&c)) {
                return None;
            }
            // MariaDB before 11.0 announces itself as `5.5.5-10.11.6-MariaDB-...` so that old
            // replication clients accept it.
            let v = v.strip_prefix(b"5.5.5-").unwrap_or(v);
            Some(
                Identity::new("mysql")
                    .product(product(v))
                    .version(version_at(v)),
            )
        }
        0xff => {
            let [lo, hi, ref message @ ..] = *payload else {
                return None;
            };
            let code = u16::from_le_bytes([lo, hi]);
            let text = &message[..message.len().min(len.saturating_sub(3))];
            let printable = !text.is_empty() && text.iter().all(|&c| (0x20..0x7f).contains(&c));
            if !(1000..5000).contains(&code) || !printable {
                return None;
            }
            let id = Identity::new("mysql");
            Some(
                if find(text, b"MySQL").is_some() || find(text, b"MariaDB").is_some() {
                    id.product(product(text))
                } else {
                    id
                },
            )
        }
        _ => None,
    }
}

/// PostgreSQL: `N` or `S`, its answer to an SSLRequest, or an error response (`E`, length,
/// `SFATAL\0...`) such as the one to a startup packet of an unknown protocol version.
/// PgBouncer answers the same way, but its errors carry only severity, code and message,
/// where PostgreSQL (9.6 and later) adds the unlocalised severity (`V`) and the source file,
/// line and function (`F`, `L`, `R`).
fn postgres(r: &[u8]) -> Option<Identity> {
    let id = |product: &str| Identity::new("postgresql").product(Some(product.into()));
    if r == b"N" || r == b"S" {
        return Some(id("PostgreSQL"));
    }
    let [b'E', a, b, c, d, b'S', ref severity @ ..] = *r else {
        return None;
    };
    let len = u32::from_be_bytes([a, b, c, d]);
    if !(8..=65536).contains(&len) {
        return None;
    }
    let end = severity.iter().take(16).position(|&c| c == 0)?;
    let word = &severity[..end];
    if word.is_empty() || !word.iter().all(|c| c.is_ascii_alphabetic()) {
        return None;
    }
    let fields = &severity[end..];
    let postgres = [&b"\0V"[..], b"\0F", b"\0L", b"\0R"]
        .iter()
        .any(|tag| find(fields, tag).is_some());
    let bouncer = fields.starts_with(b"\0C") && find(fields, b"\0M").is_some();
    Some(match (postgres, bouncer) {
        (false, true) => id("PgBouncer"),
        _ => id("PostgreSQL"),
    })
}

/// A MongoDB wire-protocol reply (OP_REPLY or OP_MSG), with the version if it carries a
/// `version` string field.
fn mongodb(r: &[u8]) -> Option<Identity> {
    let header = r.get(..16)?;
    let word =
        |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
    let (len, op) = (word(0), word(12));
    // The smallest OP_MSG: header, flags, a section kind and an empty document.
    if !(26..=48_000_000).contains(&len) || !(op == 1 || op == 2013) {
        return None;
    }
    let version = find(r, b"\x02version\x00").and_then(|at| version_at(r.get(at + 13..)?));
    Some(
        Identity::new("mongodb")
            .product(Some("MongoDB".into()))
            .version(version),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzzing::SAMPLES;

    #[test]
    fn real_banners_are_identified() {
        for s in SAMPLES {
            let got = identify(s.reply);
            let got = got.map(|i| (i.service, i.product, i.version, i.protocol_version));
            let want = s.service.map(|service| {
                let text = |t: Option<&str>| t.map(str::to_string);
                (
                    service,
                    text(s.product),
                    text(s.version),
                    text(s.protocol_version),
                )
            });
            assert_eq!(
                got,
                want,
                "{}: {:?}",
                s.name,
                crate::printable(s.reply, 120)
            );
        }
    }

    #[test]
    fn garbage_and_truncated_replies_are_not_identified() {
        let table: &[&[u8]] = &[
            b"",
            b"\0",
            b"hello world\r\n",
            b"SSH-",
            b"SSH-x",
            b"HTTP/",
            b"HTTPS",
            b"22",
            b"220",
            b"220 hello\r\n",
            b"+",
            b"-",
            b"*",
            b"* 1 EXISTS",
            b"$5\r\nhello\r\n",
            b"INFO",
            b"VERSION",
            b"RFB 00",
            b"RFB abc.def\n",
            b"AMQP\0",
            &[0x16, 0x03],
            &[0x16, 0x04, 0x00],
            &[0xff],
            &[0xff, 0x00],
            &[0x20, 0x02],
            &[0x30, 0x0c, 0x02],
            &[0x03, 0x00, 0x00],
            &[0x4a, 0x00, 0x00, 0x00, 0x0a],
            &[0x4a, 0x00, 0x00, 0x00, 0x0a, b'x', 0],
            &[0xff, 0xff, 0xff, 0x00, 0x0a, b'8', 0],
            b"E\0\0\0\x08",
            b"E\xff\xff\xff\xffSFATAL\0",
            b"ERROR",
            b"NO",
            &[0x10, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0xdd, 0x07, 0, 0],
            // A Java RMI ProtocolAck cut short, and one whose port is no TCP port.
            b"N\x00\x09127.0.0.1\x00\x00",
            b"N\x00\x09127.0.0.1\x00\x01\xc8\x9c",
            b"N\x00\x09127.0.0 1\x00\x00\xc8\x9c",
        ];
        for reply in table {
            assert_eq!(identify(reply), None, "{:?}", crate::printable(reply, 80));
        }
    }

    #[test]
    fn fields_are_capped_and_printable() {
        let mut long = b"SSH-2.0-".to_vec();
        long.extend(std::iter::repeat_n(b'A', 10_000));
        long.extend_from_slice(b"_1.0\r\n");
        let id = identify(&long).unwrap_or_else(|| panic!("not identified"));
        assert_eq!(id.service, "ssh");
        assert!(id.product.is_some_and(|p| p.len() <= IDENTITY_FIELD_LIMIT));

        let id = identify(b"HTTP/1.1 200 OK\r\nServer: ng\x00inx/1.\xff2\r\n\r\n");
        assert_eq!(
            id,
            Some(Identity {
                service: "http",
                product: Some("ng".into()),
                version: Some("1".into()),
                protocol_version: None,
                info: None,
                cpe: None,
            })
        );
    }

    #[test]
    fn identities_display_compactly() {
        let show = |r: &[u8]| identify(r).map(|i| i.to_string());
        assert_eq!(
            show(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n").as_deref(),
            Some("ssh (OpenSSH 9.2p1)")
        );
        assert_eq!(show(b"+OK ready\r\n").as_deref(), Some("pop3"));
        assert_eq!(show(b"RFB 003.008\n").as_deref(), Some("vnc"));
    }
}
