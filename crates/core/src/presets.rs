//! Protocol presets: named dialogs for common services (`--preset smtp`).
//!
//! A preset is plain data: its steps hold byte strings and pattern sources, and
//! [`Preset::dialog`] compiles them into a [`Dialog`] when a job needs one. The same shape can
//! later come from the configuration file, for presets that users define.
//!
//! TLS is not part of the dialog: [`Preset::tls`] tells the engine to handshake before the
//! dialog ([`TlsMode::Implicit`]) or after it ([`TlsMode::StartTls`]: the dialog then ends with
//! the protocol's STARTTLS command and the server's go-ahead).

use std::fmt;

use crate::{Dialog, DialogError, DialogStep, Pattern, SendPiece};

/// When a preset speaks TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlsMode {
    /// Plain TCP throughout.
    None,
    /// A TLS handshake right after the TCP handshake; the dialog runs inside TLS.
    Implicit,
    /// The dialog runs in plain text up to the protocol's STARTTLS exchange; the TLS handshake
    /// follows it.
    StartTls,
}

/// One step of a preset: a [`DialogStep`] as static data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresetStep {
    /// Send these bytes ([`DialogStep::Send`]).
    Send(&'static [u8]),
    /// Read until the reply matches `expect` or fails ([`DialogStep::Expect`]); the patterns
    /// are regular expressions over bytes.
    Expect {
        /// What a good reply matches.
        expect: &'static str,
        /// What a bad reply matches, to fail fast.
        reject: Option<&'static str>,
    },
    /// Read the banner, if any ([`DialogStep::Banner`]).
    Banner,
    /// Send these bytes only to a server that has said nothing ([`DialogStep::SendIfSilent`]).
    SendIfSilent(&'static [u8]),
    /// Read until a parser judges the reply ([`DialogStep::Expect`] with [`Pattern::Wire`]):
    /// for replies a regular expression cannot judge (BER, XML).
    ExpectWire {
        /// What a good reply is.
        expect: Wire,
        /// What a bad reply is.
        reject: Wire,
    },
    /// Send an XMPP client stream header ([`xmpp_stream_header`]), addressed to the server
    /// name the probe presents: `--sni`, else the target's host name (none for an address).
    SendXmppHeader,
}

/// A named dialog for a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preset {
    /// The name users give to `--preset`.
    pub name: &'static str,
    /// One line for `--help` and listings.
    pub description: &'static str,
    /// The ports the service usually listens on (empty: no usual port).
    pub default_ports: &'static [u16],
    /// When the preset speaks TLS.
    pub tls: TlsMode,
    /// The steps, in order.
    pub steps: &'static [PresetStep],
}

impl Preset {
    /// Compiles the steps into a dialog. Fails only if a pattern does not compile, which the
    /// tests rule out for the built-in presets.
    pub fn dialog(&self) -> Result<Dialog, DialogError> {
        self.dialog_for(None)
    }

    /// [`Preset::dialog`] for a probe that names the server `server_name` (`--sni`): XMPP
    /// addresses its stream to it. Without one, the stream goes to the name of the target
    /// each connection is made to ([`SendPiece::XmppHeader`]), so that `check
    /// chat.example:5222 --preset xmpp` needs no `--sni`.
    pub fn dialog_for(&self, server_name: Option<&str>) -> Result<Dialog, DialogError> {
        let steps = self
            .steps
            .iter()
            .map(|step| {
                Ok(match *step {
                    PresetStep::Send(bytes) => DialogStep::Send(bytes.to_vec()),
                    PresetStep::Expect { expect, reject } => DialogStep::Expect {
                        expect: Pattern::regex(expect)?,
                        reject: reject.map(Pattern::regex).transpose()?,
                    },
                    PresetStep::Banner => DialogStep::Banner,
                    PresetStep::SendIfSilent(bytes) => DialogStep::SendIfSilent(bytes.to_vec()),
                    PresetStep::ExpectWire { expect, reject } => DialogStep::Expect {
                        expect: Pattern::Wire(expect),
                        reject: Some(Pattern::Wire(reject)),
                    },
                    PresetStep::SendXmppHeader => match server_name {
                        Some(name) => DialogStep::Send(xmpp_stream_header(Some(name))),
                        None => DialogStep::SendCaptures(vec![SendPiece::XmppHeader]),
                    },
                })
            })
            .collect::<Result<_, DialogError>>()?;
        Ok(Dialog { steps })
    }
}

/// A `--preset` name that no preset has.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown preset '{name}': expected one of {}", PresetNames)]
pub struct UnknownPreset {
    /// The name as given.
    pub name: String,
}

/// Displays the names of all presets, comma-separated.
struct PresetNames;

impl fmt::Display for PresetNames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in PRESETS.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(p.name)?;
        }
        Ok(())
    }
}

/// Every built-in preset, in the order `--help` lists them.
pub fn presets() -> &'static [Preset] {
    PRESETS
}

/// The preset called `name` (ignoring ASCII case).
pub fn preset(name: &str) -> Result<&'static Preset, UnknownPreset> {
    PRESETS
        .iter()
        .find(|p| p.name.eq_ignore_ascii_case(name))
        .ok_or_else(|| UnknownPreset {
            name: name.to_string(),
        })
}

use PresetStep::{Banner, Expect, ExpectWire, Send, SendIfSilent};

// SMTP. The greeting and the EHLO reply can span lines (`220-...`, `250-...`): waiting for the
// last line (code and a space) keeps the client from talking into the server's reply. A 4xx
// greeting ("421 too busy") fails as fast as a 5xx one: the service is not taking mail.
const SMTP_GREETING: PresetStep = Expect {
    expect: r"(?m)^220 ",
    reject: Some(r"^[45]\d\d"),
};
const SMTP_EHLO: PresetStep = Send(b"EHLO porthawk\r\n");
const SMTP_EHLO_REPLY: PresetStep = Expect {
    expect: r"(?m)^250 ",
    reject: Some(r"(?m)^[45]\d\d[ -]"),
};
const SMTP: &[PresetStep] = &[SMTP_GREETING, SMTP_EHLO, SMTP_EHLO_REPLY, Send(b"QUIT\r\n")];
const SMTP_STARTTLS: &[PresetStep] = &[
    SMTP_GREETING,
    SMTP_EHLO,
    SMTP_EHLO_REPLY,
    Send(b"STARTTLS\r\n"),
    Expect {
        expect: r"^220",
        reject: Some(r"^[45]\d\d"),
    },
];

const POP3_GREETING: PresetStep = Expect {
    expect: r"^\+OK",
    reject: Some(r"^-ERR"),
};
const POP3: &[PresetStep] = &[POP3_GREETING, Send(b"QUIT\r\n")];
const POP3_STARTTLS: &[PresetStep] = &[
    POP3_GREETING,
    Send(b"STLS\r\n"),
    Expect {
        expect: r"^\+OK",
        reject: Some(r"^-ERR"),
    },
];

const IMAP_GREETING: PresetStep = Expect {
    expect: r"^\* (OK|PREAUTH)",
    reject: Some(r"^\* BYE"),
};
const IMAP: &[PresetStep] = &[IMAP_GREETING, Send(b"a1 LOGOUT\r\n")];
// Untagged lines may come before the tagged answer, hence multi-line mode.
const IMAP_STARTTLS: &[PresetStep] = &[
    IMAP_GREETING,
    Send(b"a1 STARTTLS\r\n"),
    Expect {
        expect: r"(?m)^a1 OK",
        reject: Some(r"(?m)^a1 (NO|BAD)"),
    },
];

const FTP: &[PresetStep] = &[
    Expect {
        expect: r"(?m)^220 ",
        // A mail server greets with 220 too; it names itself (E)SMTP.
        reject: Some(r"^[45]\d\d|(?m)^220[ -].*\bE?SMTP\b"),
    },
    Send(b"QUIT\r\n"),
];

// RFC 4253 lets a server send other lines before its version line.
const SSH: &[PresetStep] = &[Expect {
    expect: r"(?m)^SSH-\d+\.\d+-",
    reject: None,
}];

// Any status counts: the preset checks that HTTP answers, not what the site says. A `Host`
// header would have to name the target, which a preset cannot know; HTTP/1.0 needs none.
const HTTP: &[PresetStep] = &[
    Send(b"HEAD / HTTP/1.0\r\n\r\n"),
    Expect {
        expect: r"^HTTP/1\.[01] [1-5]\d\d",
        reject: None,
    },
];

// `-NOAUTH` proves a Redis that wants a password: the service is up.
const REDIS: &[PresetStep] = &[
    Send(b"PING\r\n"),
    Expect {
        expect: r"^(\+PONG|-NOAUTH)",
        reject: Some(r"^-(ERR|DENIED|LOADING|MISCONF|WRONGPASS)"),
    },
    Send(b"QUIT\r\n"),
];

const MEMCACHED: &[PresetStep] = &[
    Send(b"version\r\n"),
    Expect {
        expect: r"^VERSION ",
        reject: Some(r"^(ERROR|CLIENT_ERROR|SERVER_ERROR)"),
    },
    Send(b"quit\r\n"),
];

// The greeting: a 3-byte length, sequence number 0, protocol version 10 (or 9). An error packet
// (0xff) in its place is a server turning the client away ("Host ... is not allowed",
// "Too many connections").
const MYSQL: &[PresetStep] = &[Expect {
    expect: r"(?s-u)^.{3}\x00[\x0a\x09]",
    reject: Some(r"(?s-u)^.{3}\x00\xff"),
}];

// An SSLRequest (length 8, code 80877103): a PostgreSQL server answers one byte, `S` or `N`,
// without logging a failed connection the way a bad startup packet would. The byte must be the
// whole reply: an SSH server's version line starts with `S` too.
const POSTGRES: &[PresetStep] = &[
    Send(b"\x00\x00\x00\x08\x04\xd2\x16\x2f"),
    Expect {
        expect: r"(?-u)\A[SN]\z",
        reject: Some(r"^E"),
    },
];

const NATS: &[PresetStep] = &[Expect {
    expect: r"^INFO \{",
    reject: Some(r"^-ERR"),
}];

// A minimal MQTT 3.1.1 CONNECT (clean session, keep-alive 60 s, client id `porthawk`); any
// CONNACK proves a broker, even one that refuses the client. DISCONNECT ends it politely.
const MQTT: &[PresetStep] = &[
    Send(b"\x10\x14\x00\x04MQTT\x04\x02\x00\x3c\x00\x08porthawk"),
    Expect {
        expect: r"(?-u)^\x20",
        reject: None,
    },
    Send(b"\xe0\x00"),
];

const VNC: &[PresetStep] = &[Expect {
    expect: r"^RFB \d{3}\.\d{3}\n",
    reject: None,
}];

// A broker answers the AMQP 0-9-1 header with Connection.Start (a method frame on channel 0),
// or with the header of the version it does speak.
const AMQP: &[PresetStep] = &[
    Send(b"AMQP\x00\x00\x09\x01"),
    Expect {
        expect: r"(?-u)^(\x01\x00\x00|AMQP)",
        reject: None,
    },
];

// NNTP (RFC 3977): 200 posting allowed, 201 not; 400 service unavailable, 502 refused.
const NNTP: &[PresetStep] = &[
    Expect {
        expect: r"^20[01][ \r\n]",
        reject: Some(r"^(400|502)"),
    },
    Send(b"QUIT\r\n"),
];

// IRC: register, and count the welcome (001), any other numeric reply (433: the nick is in
// use, as it is while another check's connection lingers) or a NOTICE (most servers greet
// with one before registration is done) as an IRC server; ERROR is one turning the client
// away.
const IRC: &[PresetStep] = &[
    Send(b"NICK porthawk\r\nUSER porthawk 0 * :porthawk\r\n"),
    Expect {
        expect: r"(?m)^(:\S+ )?(\d{3}|NOTICE) ",
        reject: Some(r"(?m)^ERROR "),
    },
    Send(b"QUIT\r\n"),
];

/// The LDAP StartTLS extended request (RFC 4511 4.14): message 1, requestName
/// 1.3.6.1.4.1.1466.20037.
pub const LDAP_STARTTLS_REQUEST: &[u8] = b"\x30\x1d\x02\x01\x01\x77\x18\x80\x16\
    1.3.6.1.4.1.1466.20037";

const LDAP_STARTTLS: &[PresetStep] = &[
    Send(LDAP_STARTTLS_REQUEST),
    ExpectWire {
        expect: Wire::LdapSuccess,
        reject: Wire::LdapFailure,
    },
];

/// The XMPP STARTTLS request (RFC 6120 5.4.2.1).
const XMPP_STARTTLS_REQUEST: &[u8] = b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>";

const XMPP_STARTTLS: &[PresetStep] = &[
    PresetStep::SendXmppHeader,
    ExpectWire {
        expect: Wire::XmppStartTlsOffered,
        reject: Wire::XmppNoStartTls,
    },
    Send(XMPP_STARTTLS_REQUEST),
    ExpectWire {
        expect: Wire::XmppProceed,
        reject: Wire::XmppRefused,
    },
];

/// An XMPP client stream header, with `to` set to `domain` when given (servers hosting
/// several domains need it; RFC 6120 4.7.2).
pub fn xmpp_stream_header(domain: Option<&str>) -> Vec<u8> {
    let mut header = String::from(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
         xmlns:stream='http://etherx.jabber.org/streams' version='1.0'",
    );
    if let Some(domain) = domain {
        // A server name has no quote or markup in it (checked as a DNS name or an address);
        // escape anyway.
        header.push_str(" to='");
        for c in domain.chars() {
            match c {
                '\'' => header.push_str("&apos;"),
                '<' => header.push_str("&lt;"),
                '&' => header.push_str("&amp;"),
                c => header.push(c),
            }
        }
        header.push('\'');
    }
    header.push('>');
    header.into_bytes()
}

/// Replies that a regular expression cannot judge, read by small hand-written parsers
/// (bounded by the dialog's read limit, never panicking, fuzzed by the `wire` target).
/// Each pair (`LdapSuccess`/`LdapFailure`, ...) splits the replies it decides between them:
/// a reply never matches both, and once one matches, more bytes do not change it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Wire {
    /// An LDAP ExtendedResponse to message 1 with resultCode success (0).
    LdapSuccess,
    /// A whole LDAP message that is not that (another resultCode, a notice of
    /// disconnection), or bytes that are no LDAP message.
    LdapFailure,
    /// XMPP stream features that offer `<starttls/>`.
    XmppStartTlsOffered,
    /// An XMPP stream error, or stream features that end without `<starttls/>`.
    XmppNoStartTls,
    /// XMPP `<proceed/>`: go ahead with TLS.
    XmppProceed,
    /// XMPP `<failure/>`, a stream error, or the stream's end.
    XmppRefused,
}

/// What a parser made of a reply so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireVerdict {
    /// Not decided yet: read more.
    More,
    /// A good reply.
    Pass,
    /// A bad reply, and why.
    Fail(String),
}

impl Wire {
    /// Whether `reply` is what this variant describes.
    pub fn is_match(&self, reply: &[u8]) -> bool {
        let verdict = self.judge(reply);
        match self {
            Wire::LdapSuccess | Wire::XmppStartTlsOffered | Wire::XmppProceed => {
                verdict == WireVerdict::Pass
            }
            Wire::LdapFailure | Wire::XmppNoStartTls | Wire::XmppRefused => {
                matches!(verdict, WireVerdict::Fail(_))
            }
        }
    }

    /// The verdict of the parser behind this variant (the same for both of a pair).
    pub fn judge(&self, reply: &[u8]) -> WireVerdict {
        match self {
            Wire::LdapSuccess | Wire::LdapFailure => ldap_starttls_verdict(reply),
            Wire::XmppStartTlsOffered | Wire::XmppNoStartTls => xmpp_features_verdict(reply),
            Wire::XmppProceed | Wire::XmppRefused => xmpp_proceed_verdict(reply),
        }
    }
}

impl fmt::Display for Wire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Wire::LdapSuccess => "an LDAP extendedResponse with resultCode success",
            Wire::LdapFailure => "an LDAP error or a reply that is no LDAP message",
            Wire::XmppStartTlsOffered => "XMPP stream features offering <starttls/>",
            Wire::XmppNoStartTls => "an XMPP stream error or features without <starttls/>",
            Wire::XmppProceed => "XMPP <proceed/>",
            Wire::XmppRefused => "XMPP <failure/> or a stream error",
        })
    }
}

/// One LDAP message as far as the StartTLS check reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LdapReply {
    /// The message is not all there yet.
    Incomplete,
    /// The bytes are no LDAP message.
    Malformed(&'static str),
    /// A whole message: its id, the tag of its protocolOp, and the resultCode when the
    /// operation is a response (`None` for other operations).
    Message {
        /// messageID.
        id: u32,
        /// The protocolOp's tag (0x78: ExtendedResponse).
        op: u8,
        /// The LDAPResult's resultCode.
        code: Option<u32>,
    },
}

/// A BER element: its tag, its contents, and what follows it.
type Ber<'a> = (u8, &'a [u8], &'a [u8]);

/// What [`ldap_reply`] reads of a message: messageID, protocolOp tag, resultCode.
type LdapHeader = (u32, u8, Option<u32>);

/// Reads the BER header at the start of `input`: its tag, its contents (all of them), and the
/// rest. `None` if the element is not all there; `Err` for what BER (as LDAP uses it:
/// definite lengths of at most 4 bytes) does not allow.
fn ber(input: &[u8]) -> Result<Option<Ber<'_>>, &'static str> {
    let Some((&tag, rest)) = input.split_first() else {
        return Ok(None);
    };
    if tag & 0x1f == 0x1f {
        return Err("multi-byte BER tag");
    }
    let Some((&first, mut rest)) = rest.split_first() else {
        return Ok(None);
    };
    let len = match first {
        0..=0x7f => usize::from(first),
        0x80 => return Err("indefinite BER length"),
        0x81..=0x84 => {
            let n = usize::from(first & 0x7f);
            let Some(bytes) = rest.get(..n) else {
                return Ok(None);
            };
            rest = &rest[n..];
            bytes
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
        }
        _ => return Err("BER length too long"),
    };
    if len > 1 << 20 {
        return Err("BER element over 1 MiB");
    }
    match rest.get(..len) {
        Some(body) => Ok(Some((tag, body, &rest[len..]))),
        None => Ok(None),
    }
}

/// A BER INTEGER or ENUMERATED body as a non-negative `u32`.
fn ber_uint(body: &[u8]) -> Result<u32, &'static str> {
    if body.is_empty() || body.len() > 4 || body[0] & 0x80 != 0 {
        return Err("integer out of range");
    }
    Ok(body.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)))
}

/// Reads the first LDAP message of `reply` (RFC 4511 4.1.1: a SEQUENCE of messageID and
/// protocolOp; for responses, the LDAPResult's resultCode first).
pub fn ldap_reply(reply: &[u8]) -> LdapReply {
    let read = || -> Result<Option<LdapHeader>, &'static str> {
        // Judge the first byte at once: a server that is no LDAP server fails fast.
        if reply.first().is_some_and(|&b| b != 0x30) {
            return Err("not an LDAP message (a SEQUENCE)");
        }
        let Some((tag, message, _)) = ber(reply)? else {
            return Ok(None);
        };
        if tag != 0x30 {
            return Err("not an LDAP message (a SEQUENCE)");
        }
        // Within a whole message, a short element is malformed, not incomplete.
        let (tag, id, rest) = ber(message)?.ok_or("truncated messageID")?;
        if tag != 0x02 {
            return Err("messageID is not an INTEGER");
        }
        let id = ber_uint(id)?;
        let (op, body, _) = ber(rest)?.ok_or("truncated protocolOp")?;
        // Responses are [APPLICATION n] constructed (0x61 bind, 0x65 search done, ...,
        // 0x78 extended): their body starts with the resultCode.
        let is_response = matches!(op, 0x61 | 0x65 | 0x67 | 0x69 | 0x6b | 0x6d | 0x6f | 0x78);
        if !is_response {
            return Ok(Some((id, op, None)));
        }
        let (tag, code, _) = ber(body)?.ok_or("truncated resultCode")?;
        if tag != 0x0a {
            return Err("resultCode is not an ENUMERATED");
        }
        Ok(Some((id, op, Some(ber_uint(code)?))))
    };
    match read() {
        Ok(None) => LdapReply::Incomplete,
        Ok(Some((id, op, code))) => LdapReply::Message { id, op, code },
        Err(why) => LdapReply::Malformed(why),
    }
}

/// The verdict on the reply to [`LDAP_STARTTLS_REQUEST`].
fn ldap_starttls_verdict(reply: &[u8]) -> WireVerdict {
    match ldap_reply(reply) {
        LdapReply::Incomplete => WireVerdict::More,
        LdapReply::Malformed(why) => WireVerdict::Fail(why.to_string()),
        LdapReply::Message {
            id: 1,
            op: 0x78,
            code: Some(0),
        } => WireVerdict::Pass,
        LdapReply::Message { id, op, code } => WireVerdict::Fail(match code {
            Some(code) => format!("message {id}: resultCode {code}"),
            None => format!("message {id}: operation {op:#04x}, not a response"),
        }),
    }
}

/// One XML tag as the XMPP checks see it: its qualified name, and whether it closes an
/// element (`</x>`) or is one on its own (`<x/>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XmlTag<'a> {
    /// `stream:features`, `starttls`.
    pub name: &'a [u8],
    /// `</name>`.
    pub closing: bool,
    /// `<name/>`.
    pub empty: bool,
}

impl XmlTag<'_> {
    /// The name without its prefix.
    pub fn local(&self) -> &[u8] {
        match self.name.iter().rposition(|&b| b == b':') {
            Some(i) => &self.name[i + 1..],
            None => self.name,
        }
    }

    /// Whether this is a stream-level element (`stream:NAME`, the prefix XMPP servers use).
    fn is_stream(&self, local: &[u8]) -> bool {
        self.name.starts_with(b"stream:") && self.local() == local
    }
}

/// The whole tags at the start of `xml`, in order, stopping at the first incomplete one:
/// declarations (`<?...?>`), comments and text are skipped; quoted attribute values may hold
/// `>`.
pub fn xml_tags(xml: &[u8]) -> Vec<XmlTag<'_>> {
    let mut tags = Vec::new();
    let mut i = 0;
    while let Some(open) = xml[i..].iter().position(|&b| b == b'<') {
        let start = i + open + 1;
        if xml[start..].starts_with(b"!--") {
            match xml[start..].windows(3).position(|w| w == b"-->") {
                Some(end) => {
                    i = start + end + 3;
                    continue;
                }
                None => break,
            }
        }
        // The end of the tag: the first `>` outside quotes.
        let mut quote = None;
        let mut end = None;
        for (j, &b) in xml[start..].iter().enumerate() {
            match (quote, b) {
                (None, b'"' | b'\'') => quote = Some(b),
                (Some(q), b) if b == q => quote = None,
                (None, b'>') => {
                    end = Some(start + j);
                    break;
                }
                _ => {}
            }
        }
        let Some(end) = end else { break };
        let inner = &xml[start..end];
        i = end + 1;
        if inner.first().is_some_and(|&b| b == b'?' || b == b'!') {
            continue;
        }
        let closing = inner.first() == Some(&b'/');
        let body = if closing { &inner[1..] } else { inner };
        let name_end = body
            .iter()
            .position(|&b| b.is_ascii_whitespace() || b == b'/')
            .unwrap_or(body.len());
        tags.push(XmlTag {
            name: &body[..name_end],
            closing,
            empty: !closing && inner.last() == Some(&b'/'),
        });
    }
    tags
}

/// The verdict on a server's stream header and features (RFC 6120 4.3.2, 5.3.1).
fn xmpp_features_verdict(reply: &[u8]) -> WireVerdict {
    let mut in_features = false;
    for tag in xml_tags(reply) {
        if tag.is_stream(b"error") {
            return WireVerdict::Fail("stream error".into());
        }
        if tag.name == b"stream:stream" && tag.closing {
            return WireVerdict::Fail("the stream ended".into());
        }
        match (tag.local(), tag.closing || tag.empty) {
            (b"features", false) => in_features = true,
            (b"features", true) => {
                return WireVerdict::Fail("stream features without <starttls/>".into())
            }
            (b"starttls", _) if in_features && !tag.closing => return WireVerdict::Pass,
            _ => {}
        }
    }
    WireVerdict::More
}

/// The verdict on the answer to `<starttls/>` (RFC 6120 5.4.2.3, 5.4.2.2).
fn xmpp_proceed_verdict(reply: &[u8]) -> WireVerdict {
    for tag in xml_tags(reply) {
        if tag.is_stream(b"error") {
            return WireVerdict::Fail("stream error".into());
        }
        if tag.name == b"stream:stream" && tag.closing {
            return WireVerdict::Fail("the stream ended".into());
        }
        if !tag.closing {
            match tag.local() {
                b"proceed" => return WireVerdict::Pass,
                b"failure" => return WireVerdict::Fail("<failure/>".into()),
                _ => {}
            }
        }
    }
    WireVerdict::More
}

/// The probe the `identify` preset sends to servers that wait for the client: many services
/// answer it in a way that names them (HTTP, Redis, memcached, MongoDB, TLS alerts).
pub const IDENTIFY_PROBE: &[u8] = b"GET / HTTP/1.0\r\n\r\n";

const IDENTIFY: &[PresetStep] = &[Banner, SendIfSilent(IDENTIFY_PROBE), Banner];

const PRESETS: &[Preset] = &[
    Preset {
        name: "smtp",
        description: "SMTP: greeting 220, EHLO answered 250, QUIT",
        default_ports: &[25, 587],
        tls: TlsMode::None,
        steps: SMTP,
    },
    Preset {
        name: "smtp-starttls",
        description: "SMTP up to STARTTLS answered 220, then TLS",
        default_ports: &[25, 587],
        tls: TlsMode::StartTls,
        steps: SMTP_STARTTLS,
    },
    Preset {
        name: "submission",
        description: "mail submission: SMTP on 587 with STARTTLS",
        default_ports: &[587],
        tls: TlsMode::StartTls,
        steps: SMTP_STARTTLS,
    },
    Preset {
        name: "smtps",
        description: "SMTP over implicit TLS (submissions, 465)",
        default_ports: &[465],
        tls: TlsMode::Implicit,
        steps: SMTP,
    },
    Preset {
        name: "pop3",
        description: "POP3: greeting +OK, QUIT",
        default_ports: &[110],
        tls: TlsMode::None,
        steps: POP3,
    },
    Preset {
        name: "pop3-starttls",
        description: "POP3 up to STLS answered +OK, then TLS",
        default_ports: &[110],
        tls: TlsMode::StartTls,
        steps: POP3_STARTTLS,
    },
    Preset {
        name: "pop3s",
        description: "POP3 over implicit TLS",
        default_ports: &[995],
        tls: TlsMode::Implicit,
        steps: POP3,
    },
    Preset {
        name: "imap",
        description: "IMAP: greeting * OK, LOGOUT",
        default_ports: &[143],
        tls: TlsMode::None,
        steps: IMAP,
    },
    Preset {
        name: "imap-starttls",
        description: "IMAP up to STARTTLS answered OK, then TLS",
        default_ports: &[143],
        tls: TlsMode::StartTls,
        steps: IMAP_STARTTLS,
    },
    Preset {
        name: "imaps",
        description: "IMAP over implicit TLS",
        default_ports: &[993],
        tls: TlsMode::Implicit,
        steps: IMAP,
    },
    Preset {
        name: "ftp",
        description: "FTP: greeting 220, QUIT",
        default_ports: &[21],
        tls: TlsMode::None,
        steps: FTP,
    },
    Preset {
        name: "ssh",
        description: "SSH: version line SSH-x.y-",
        default_ports: &[22],
        tls: TlsMode::None,
        steps: SSH,
    },
    Preset {
        name: "http",
        description: "HTTP: HEAD / answered with an HTTP/1.x status",
        default_ports: &[80, 8080],
        tls: TlsMode::None,
        steps: HTTP,
    },
    Preset {
        name: "https",
        description: "HTTP over TLS: HEAD / answered with an HTTP/1.x status",
        default_ports: &[443, 8443],
        tls: TlsMode::Implicit,
        steps: HTTP,
    },
    Preset {
        name: "tls",
        description: "a TLS handshake and nothing else",
        default_ports: &[443],
        tls: TlsMode::Implicit,
        steps: &[],
    },
    Preset {
        name: "redis",
        description: "Redis: PING answered +PONG (or -NOAUTH)",
        default_ports: &[6379],
        tls: TlsMode::None,
        steps: REDIS,
    },
    Preset {
        name: "memcached",
        description: "memcached: version answered VERSION",
        default_ports: &[11211],
        tls: TlsMode::None,
        steps: MEMCACHED,
    },
    Preset {
        name: "mysql",
        description: "MySQL/MariaDB: the server greeting (protocol 10)",
        default_ports: &[3306],
        tls: TlsMode::None,
        steps: MYSQL,
    },
    Preset {
        name: "postgres",
        description: "PostgreSQL: SSLRequest answered S or N",
        default_ports: &[5432],
        tls: TlsMode::None,
        steps: POSTGRES,
    },
    Preset {
        name: "nats",
        description: "NATS: the INFO line",
        default_ports: &[4222],
        tls: TlsMode::None,
        steps: NATS,
    },
    Preset {
        name: "mqtt",
        description: "MQTT: CONNECT answered with a CONNACK",
        default_ports: &[1883],
        tls: TlsMode::None,
        steps: MQTT,
    },
    Preset {
        name: "amqp",
        description: "AMQP 0-9-1: protocol header answered by the broker",
        default_ports: &[5672],
        tls: TlsMode::None,
        steps: AMQP,
    },
    Preset {
        name: "vnc",
        description: "VNC: the RFB version line",
        default_ports: &[5900],
        tls: TlsMode::None,
        steps: VNC,
    },
    Preset {
        name: "nntp",
        description: "NNTP: greeting 200 or 201, QUIT",
        default_ports: &[119],
        tls: TlsMode::None,
        steps: NNTP,
    },
    Preset {
        name: "nntps",
        description: "NNTP over implicit TLS",
        default_ports: &[563],
        tls: TlsMode::Implicit,
        steps: NNTP,
    },
    Preset {
        name: "irc",
        description: "IRC: NICK/USER answered with a numeric reply (001) or a NOTICE, QUIT",
        default_ports: &[6667],
        tls: TlsMode::None,
        steps: IRC,
    },
    Preset {
        name: "ircs",
        description: "IRC over implicit TLS",
        default_ports: &[6697],
        tls: TlsMode::Implicit,
        steps: IRC,
    },
    Preset {
        name: "ldap",
        description: "LDAP: the StartTLS extended operation answered success, then TLS",
        default_ports: &[389],
        tls: TlsMode::StartTls,
        steps: LDAP_STARTTLS,
    },
    Preset {
        name: "xmpp",
        description: "XMPP client: stream features offer STARTTLS, <starttls/> answered \
                      <proceed/>, then TLS (the domain: --sni)",
        default_ports: &[5222],
        tls: TlsMode::StartTls,
        steps: XMPP_STARTTLS,
    },
    Preset {
        name: "identify",
        description: "read the banner, or send a small probe to a silent server, to identify it",
        default_ports: &[],
        tls: TlsMode::None,
        steps: IDENTIFY,
    },
];

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::{ConnectEvent, Conversation, ProbeSpec, Step};

    #[test]
    fn every_preset_builds_and_names_are_unique() {
        let mut names = HashSet::new();
        for p in presets() {
            assert!(names.insert(p.name), "duplicate preset {}", p.name);
            assert!(!p.description.is_empty(), "{}", p.name);
            assert!(
                p.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "{}",
                p.name
            );
            let dialog = p.dialog().unwrap_or_else(|e| panic!("{}: {e}", p.name));
            assert_eq!(dialog.steps.len(), p.steps.len());
        }
        assert!(presets().len() >= 20);
    }

    #[test]
    fn lookup_ignores_case_and_names_the_choices() {
        assert_eq!(preset("SMTP").map(|p| p.name), Ok("smtp"));
        assert_eq!(preset("imaps").map(|p| p.tls), Ok(TlsMode::Implicit));
        let err = preset("smpt").unwrap_err().to_string();
        assert!(
            err.starts_with("unknown preset 'smpt': expected one of smtp, smtp-starttls, "),
            "{err}"
        );
        assert!(err.ends_with(", ldap, xmpp, identify"), "{err}");
    }

    #[test]
    fn starttls_presets_end_with_the_go_ahead() {
        for p in presets().iter().filter(|p| p.tls == TlsMode::StartTls) {
            assert!(
                matches!(
                    p.steps.last(),
                    Some(PresetStep::Expect { .. } | PresetStep::ExpectWire { .. })
                ),
                "{}",
                p.name
            );
            let sent = p.steps.iter().rev().find_map(|s| match s {
                PresetStep::Send(b) => Some(*b),
                _ => None,
            });
            assert!(
                sent.is_some_and(|b| b.ends_with(b"STARTTLS\r\n")
                    || b == b"STLS\r\n"
                    || b == LDAP_STARTTLS_REQUEST
                    || b == XMPP_STARTTLS_REQUEST),
                "{}",
                p.name
            );
        }
    }

    #[test]
    fn ldap_replies_are_read_as_ber() {
        use crate::fuzzing::LDAP_STARTTLS_SUCCESS;
        assert_eq!(
            ldap_reply(LDAP_STARTTLS_SUCCESS),
            LdapReply::Message {
                id: 1,
                op: 0x78,
                code: Some(0)
            }
        );
        // Active Directory writes lengths in four bytes.
        let long = b"\x30\x84\x00\x00\x00\x10\x02\x01\x01\x78\x84\x00\x00\x00\x07\x0a\x01\x00\
            \x04\x00\x04\x00";
        assert_eq!(Wire::LdapSuccess.judge(long), WireVerdict::Pass);
        // Every cut of a good reply is incomplete, never a verdict.
        for cut in 0..LDAP_STARTTLS_SUCCESS.len() {
            assert_eq!(
                Wire::LdapSuccess.judge(&LDAP_STARTTLS_SUCCESS[..cut]),
                WireVerdict::More,
                "cut at {cut}"
            );
        }
        let refused = b"\x30\x0c\x02\x01\x01\x78\x07\x0a\x01\x02\x04\x00\x04\x00";
        assert_eq!(
            Wire::LdapFailure.judge(refused),
            WireVerdict::Fail("message 1: resultCode 2".into())
        );
        assert!(Wire::LdapFailure.is_match(refused) && !Wire::LdapSuccess.is_match(refused));
        for (bad, why) in [
            (
                &b"HTTP/1.1 400 Bad Request\r\n"[..],
                "not an LDAP message (a SEQUENCE)",
            ),
            (b"\x30\x80\x02\x01\x01", "indefinite BER length"),
            (b"\x30\x85\x00", "BER length too long"),
            (b"\x30\x03\x04\x01\x01", "messageID is not an INTEGER"),
            (b"\x30\x05\x02\x01\x01\x78\x05", "truncated protocolOp"),
            (b"\x30\x84\x7f\xff\xff\xff", "BER element over 1 MiB"),
            (b"\x30\x03\x02\x01\x80", "integer out of range"),
        ] {
            assert_eq!(ldap_reply(bad), LdapReply::Malformed(why), "{bad:?}");
        }
        // A request sent back (an echo server) is no response.
        assert_eq!(
            Wire::LdapFailure.judge(LDAP_STARTTLS_REQUEST),
            WireVerdict::Fail("message 1: operation 0x77, not a response".into())
        );
    }

    #[test]
    fn xmpp_tags_are_read_in_order() {
        let tags = xml_tags(
            b"<?xml version='1.0'?><!-- c > --><stream:stream a='x>y' b=\"'\">text<a/></b><c",
        );
        let names: Vec<(&[u8], bool, bool)> =
            tags.iter().map(|t| (t.name, t.closing, t.empty)).collect();
        assert_eq!(
            names,
            vec![
                (&b"stream:stream"[..], false, false),
                (b"a", false, true),
                (b"b", true, false)
            ]
        );
        use crate::fuzzing::{XMPP_FEATURES, XMPP_PROCEED};
        assert_eq!(
            Wire::XmppStartTlsOffered.judge(XMPP_FEATURES),
            WireVerdict::Pass
        );
        assert_eq!(Wire::XmppProceed.judge(XMPP_PROCEED), WireVerdict::Pass);
        // Features that arrive in pieces: undecided until the starttls tag is whole.
        let cut = XMPP_FEATURES
            .windows(9)
            .position(|w| w == b"<starttls")
            .unwrap_or(0);
        assert_eq!(
            Wire::XmppStartTlsOffered.judge(&XMPP_FEATURES[..cut + 12]),
            WireVerdict::More
        );
        let cases: [(&[u8], Wire, &str); 4] = [
            (
                b"<stream:stream><stream:features><mechanisms/></stream:features>",
                Wire::XmppNoStartTls,
                "stream features without <starttls/>",
            ),
            (
                b"<stream:stream><stream:error><improper-addressing/></stream:error>",
                Wire::XmppNoStartTls,
                "stream error",
            ),
            (
                b"<failure xmlns='urn:ietf:params:xml:ns:xmpp-tls'/></stream:stream>",
                Wire::XmppRefused,
                "<failure/>",
            ),
            (b"</stream:stream>", Wire::XmppRefused, "the stream ended"),
        ];
        for (reply, wire, why) in cases {
            assert_eq!(wire.judge(reply), WireVerdict::Fail(why.into()));
            assert!(wire.is_match(reply));
        }
    }

    #[test]
    fn the_xmpp_header_names_the_domain_when_given() {
        let header = String::from_utf8(xmpp_stream_header(Some("example.com"))).unwrap();
        assert!(
            header.starts_with("<?xml version='1.0'?><stream:stream "),
            "{header}"
        );
        assert!(
            header.ends_with(" version='1.0' to='example.com'>"),
            "{header}"
        );
        let bare = String::from_utf8(xmpp_stream_header(None)).unwrap();
        assert!(!bare.contains(" to="), "{bare}");
        let dialog = preset("xmpp")
            .unwrap()
            .dialog_for(Some("chat.example"))
            .unwrap();
        assert!(matches!(&dialog.steps[0],
            DialogStep::Send(b) if b.ends_with(b" to='chat.example'>")));
        // Without --sni, the header is written per connection, to the target's name.
        let dialog = preset("xmpp").unwrap().dialog().unwrap();
        assert_eq!(
            dialog.steps[0],
            DialogStep::SendCaptures(vec![SendPiece::XmppHeader])
        );
    }

    /// What a scripted server does when the conversation reads.
    #[derive(Clone, Copy)]
    enum Peer {
        Says(&'static [u8]),
        Silent,
        Closes,
    }
    use Peer::{Closes, Says, Silent};

    /// Runs a preset's dialog against a server that answers each read from `script` (and is
    /// silent once it runs out); returns (matched, reason, what the client sent).
    fn converse(name: &str, script: &[Peer]) -> (Option<bool>, Option<String>, Vec<u8>) {
        let preset = preset(name).unwrap_or_else(|e| panic!("{e}"));
        let dialog = preset.dialog().unwrap();
        let spec = ProbeSpec {
            dialog: Some(Arc::new(dialog)),
            ..ProbeSpec::default()
        };
        let mut c = Conversation::default();
        let mut step = c.on_connect(
            &spec,
            ConnectEvent::Connected {
                local: "127.0.0.1:40000".parse().unwrap(),
                peer: "127.0.0.1:25".parse().unwrap(),
            },
        );
        let mut script = script.iter();
        let mut sent = Vec::new();
        let t = Duration::from_millis(1);
        for _ in 0..100 {
            step = match step {
                Step::Send { .. } => {
                    let bytes = c.pending_send().to_vec();
                    sent.extend_from_slice(&bytes);
                    c.on_sent(&spec, bytes.len(), t)
                }
                Step::Recv { .. } => match script.next().copied().unwrap_or(Silent) {
                    Says(b) => c.on_recv(&spec, b, t),
                    Closes => c.on_recv(&spec, b"", t),
                    Silent => c.on_timeout(&spec, t),
                },
                Step::Done { .. } => {
                    return (c.matched(), c.reason().map(str::to_string), sent);
                }
                Step::Reconnect => panic!("{name}: reconnect after a handshake"),
            };
        }
        panic!("{name}: the conversation did not end");
    }

    const EHLO_REPLY: &[u8] = b"250-mx.example.org\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n\
        250-STARTTLS\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250 CHUNKING\r\n";
    const POSTFIX: &[u8] = b"220 mx.example.org ESMTP Postfix (Debian/GNU)\r\n";
    const DOVECOT_IMAP: &[u8] = b"* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE \
        IDLE LITERAL+ STARTTLS AUTH=PLAIN] Dovecot (Debian) ready.\r\n";
    const MARIADB: &[u8] = b"c\0\0\0\n5.5.5-10.11.6-MariaDB-0+deb12u1\0\x1f\0\0\0K>w7|<6k\0";

    /// Each preset against a server that answers as it should, and one that does not.
    #[test]
    fn presets_pass_good_servers_and_fail_bad_ones() {
        type Case = (&'static str, &'static [Peer], &'static [Peer], &'static str);
        let table: &[Case] = &[
            (
                "smtp",
                &[
                    Says(b"220-mx.example.org ESMTP\r\n"),
                    Says(b"220 hi\r\n"),
                    Says(EHLO_REPLY),
                ],
                &[Says(b"554 5.7.1 Client host rejected\r\n")],
                "step 1: got '554 5.7.1",
            ),
            (
                "smtp-starttls",
                &[
                    Says(POSTFIX),
                    Says(EHLO_REPLY),
                    Says(b"220 2.0.0 Ready to start TLS\r\n"),
                ],
                &[
                    Says(POSTFIX),
                    Says(EHLO_REPLY),
                    Says(b"502 5.5.1 Error: command not implemented\r\n"),
                ],
                "step 5: got '502 5.5.1",
            ),
            (
                "submission",
                &[
                    Says(POSTFIX),
                    Says(EHLO_REPLY),
                    Says(b"220 2.0.0 Ready to start TLS\r\n"),
                ],
                &[Says(b"421 4.3.2 Service shutting down\r\n")],
                "step 1: got '421",
            ),
            (
                "smtps",
                &[Says(POSTFIX), Says(EHLO_REPLY)],
                &[Says(POSTFIX), Says(b"550 5.7.1 go away\r\n")],
                "step 3: got '550",
            ),
            (
                "pop3",
                &[Says(b"+OK Dovecot (Debian) ready.\r\n")],
                &[Says(b"-ERR [SYS/TEMP] too many connections\r\n")],
                "step 1: got '-ERR",
            ),
            (
                "pop3-starttls",
                &[
                    Says(b"+OK Dovecot (Debian) ready.\r\n"),
                    Says(b"+OK Begin TLS negotiation now.\r\n"),
                ],
                &[
                    Says(b"+OK Dovecot (Debian) ready.\r\n"),
                    Says(b"-ERR Unknown command.\r\n"),
                ],
                "step 3: got '-ERR",
            ),
            (
                "pop3s",
                &[Says(b"+OK ready\r\n")],
                &[Closes],
                "step 1: connection closed",
            ),
            (
                "imap",
                &[Says(DOVECOT_IMAP)],
                &[Says(b"* BYE Too many connections\r\n")],
                "step 1: got '* BYE",
            ),
            (
                "imap-starttls",
                &[
                    Says(DOVECOT_IMAP),
                    Says(b"a1 OK Begin TLS negotiation now.\r\n"),
                ],
                &[Says(DOVECOT_IMAP), Says(b"a1 BAD Unknown command.\r\n")],
                "step 3: got 'a1 BAD",
            ),
            (
                "imaps",
                &[Says(b"* PREAUTH ready\r\n")],
                &[Silent],
                "step 1: expect ^\\* (OK|PREAUTH) timed out after 2s",
            ),
            (
                "ftp",
                &[Says(b"220 (vsFTPd 3.0.3)\r\n")],
                &[Says(
                    b"421 Service not available, remote server has closed connection\r\n",
                )],
                "step 1: got '421",
            ),
            (
                "ssh",
                &[Says(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n")],
                &[Says(b"HTTP/1.1 400 Bad Request\r\n"), Closes],
                "step 1: got 'HTTP/1.1 400 Bad Request', wanted",
            ),
            (
                "http",
                &[Says(b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\n\r\n")],
                &[Says(b"SSH-2.0-OpenSSH_9.2p1\r\n"), Closes],
                "step 2: got 'SSH-2.0",
            ),
            (
                "https",
                &[Says(b"HTTP/1.0 302 Found\r\n\r\n")],
                &[Closes],
                "step 2: connection closed",
            ),
            (
                "redis",
                &[Says(b"+PONG\r\n")],
                &[Says(b"-DENIED Redis is running in protected mode\r\n")],
                "step 2: got '-DENIED",
            ),
            (
                "memcached",
                &[Says(b"VERSION 1.6.18\r\n")],
                &[Says(b"ERROR\r\n")],
                "step 2: got 'ERROR",
            ),
            (
                "mysql",
                &[Says(MARIADB)],
                &[Says(b"\x17\0\0\0\xff\x10\x04Too many connections")],
                "step 1: got '\\x17\\x00\\x00\\x00\\xff",
            ),
            (
                "postgres",
                &[Says(b"N")],
                &[Says(b"-ERR unknown command\r\n"), Closes],
                "step 2: got '-ERR",
            ),
            (
                "nats",
                &[Says(
                    b"INFO {\"server_id\":\"x\",\"version\":\"2.9.20\"} \r\n",
                )],
                &[Says(b"-ERR 'Authorization Violation'\r\n")],
                "step 1: got '-ERR",
            ),
            (
                "mqtt",
                &[Says(b"\x20\x02\x00\x00")],
                &[Closes],
                "step 2: connection closed",
            ),
            (
                "amqp",
                &[Says(
                    b"\x01\x00\x00\x00\x00\x01\xf6\x00\x0a\x00\x0a\x00\x09",
                )],
                &[Says(b"HTTP/1.1 400 Bad Request\r\n"), Closes],
                "step 2: got 'HTTP",
            ),
            (
                "nntp",
                &[Says(
                    b"200 news.example InterNetNews NNRP server INN 2.7.1 ready\r\n",
                )],
                &[Says(b"502 You have no permission to talk.  Goodbye.\r\n")],
                "step 1: got '502 You",
            ),
            (
                "nntps",
                &[Says(b"201 news.example ready (no posting)\r\n")],
                &[Says(b"400 news.example: service unavailable\r\n")],
                "step 1: got '400",
            ),
            (
                "irc",
                &[Says(
                    b":irc.example NOTICE * :*** Looking up your hostname...\r\n",
                )],
                &[Says(
                    b"ERROR :Closing link: (porthawk@127.0.0.1) [K-lined]\r\n",
                )],
                "step 2: got 'ERROR",
            ),
            (
                "ircs",
                &[Says(
                    b":irc.example 001 porthawk :Welcome to the network\r\n",
                )],
                &[Says(b"HTTP/1.1 400 Bad Request\r\n"), Closes],
                "step 2: got 'HTTP/1.1 400",
            ),
            (
                "ldap",
                &[Says(crate::fuzzing::LDAP_STARTTLS_SUCCESS)],
                &[Says(
                    b"\x30\x0c\x02\x01\x01\x78\x07\x0a\x01\x02\x04\x00\x04\x00",
                )],
                // A binary reply is quoted whole as escaped bytes, past its 0x0a (the
                // resultCode's tag here), not cut there as a line of text would be.
                "step 2: got '0\\x0c\\x02\\x01\\x01x\\x07\\n\\x01\\x02\\x04\\x00\\x04\\x00', which matches reject an LDAP error",
            ),
            (
                "xmpp",
                &[
                    Says(crate::fuzzing::XMPP_FEATURES),
                    Says(crate::fuzzing::XMPP_PROCEED),
                ],
                &[
                    Says(crate::fuzzing::XMPP_FEATURES),
                    Says(b"<failure xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"),
                ],
                "step 4: got '<failure",
            ),
            (
                "vnc",
                &[Says(b"RFB 003.008\n")],
                &[Says(b"RFB 3.8\n"), Closes],
                "step 1: got 'RFB 3.8",
            ),
        ];
        let mut covered: HashSet<&str> = table.iter().map(|c| c.0).collect();
        for &(name, good, bad, why) in table {
            let (matched, reason, _) = converse(name, good);
            assert_eq!((matched, reason), (Some(true), None), "{name}: good server");
            let (matched, reason, _) = converse(name, bad);
            assert_eq!(matched, Some(false), "{name}: bad server");
            let reason = reason.unwrap_or_default();
            assert!(reason.starts_with(why), "{name}: {reason}");
        }
        // Presets that expect nothing cannot fail on a reply.
        for name in ["tls", "identify"] {
            covered.insert(name);
        }
        for p in presets() {
            assert!(covered.contains(p.name), "no scripted test for {}", p.name);
        }
    }

    #[test]
    fn presets_send_what_the_protocol_wants() {
        let (_, _, sent) = converse("smtp", &[Says(POSTFIX), Says(EHLO_REPLY)]);
        assert_eq!(sent, b"EHLO porthawk\r\nQUIT\r\n");
        let (_, _, sent) = converse("postgres", &[Says(b"S")]);
        assert_eq!(sent, b"\x00\x00\x00\x08\x04\xd2\x16\x2f");
        // An SSH server (its version line starts with `S`) is no PostgreSQL; regression test
        // for a real OpenSSH that passed the postgres preset.
        let (matched, reason, _) = converse(
            "postgres",
            &[
                Says(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u10\r\n"),
                Says(b"Invalid SSH identification string.\r\n"),
                Closes,
            ],
        );
        assert_eq!(matched, Some(false));
        assert!(
            reason.is_some_and(|r| r.starts_with("step 2: got 'SSH-2.0-OpenSSH_9.2p1")),
            "postgres preset against sshd"
        );
        let (_, _, sent) = converse("imap-starttls", &[Says(DOVECOT_IMAP), Says(b"a1 OK\r\n")]);
        assert_eq!(sent, b"a1 STARTTLS\r\n");
        // The identify preset probes a silent server and leaves a talkative one alone.
        let (matched, reason, sent) = converse("identify", &[Silent, Says(b"HTTP/1.0 200 OK\r\n")]);
        assert_eq!(
            (matched, reason, sent.as_slice()),
            (None, None, IDENTIFY_PROBE)
        );
        let (_, _, sent) = converse("identify", &[Says(POSTFIX)]);
        assert!(sent.is_empty());
        // The tls preset has no dialog: the handshake is the whole check.
        let (matched, reason, sent) = converse("tls", &[]);
        assert_eq!((matched, reason, sent.len()), (None, None, 0));
        // mqtt: a CONNECT whose remaining length is right, then DISCONNECT.
        let (_, _, sent) = converse("mqtt", &[Says(b"\x20\x02\x00\x05")]);
        assert_eq!(usize::from(sent[1]), sent.len() - 2 - 2);
        assert_eq!(&sent[sent.len() - 2..], b"\xe0\x00");
    }
}
