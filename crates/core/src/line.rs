//! One result line: the record that every result output prints, and its CSV encoding.
//!
//! [`ResultLine`] is the contract between porthawk and the scripts that read its results:
//! `porthawk scan --format jsonl` writes it with serde_json, `--format csv` with
//! [`ResultLine::csv_header`] and [`ResultLine::write_csv_row`], and the HTTP API's NDJSON and
//! CSV results are the same encodings of the same type, so a script can switch between the
//! two without changes.
//!
//! **Field order is part of the contract.** The fields are, in this order: `ip`, `port`,
//! `state`, `rtt_us`, `tries`, `host`, `errno`, `matched`, `service`, `product`, `version`,
//! `banner`, `reason`, `tls_version`, `cert_subject`, `cert_issuer`, `cert_not_after`,
//! `cert_days_left`, `captures`, `cert_expires_first`, `protocol_version`, `info`, `cpe`. JSON objects list them in that order and leave out the optional ones
//! that are absent; CSV has one column per field in that order, empty where absent. New
//! fields are only ever added at the end. The CSV header and row writer walk the serde
//! derive of the struct, so the order is stated once, by the declaration below.
//!
//! CSV text cells that start with `=`, `+`, `-`, `@`, a tab or a carriage return get a
//! leading `'`, so that a spreadsheet shows a hostile banner instead of running it as a
//! formula (OWASP's advice); a reader that wants the bytes back drops that one quote.
//! Numbers are never prefixed. `captures` is a list: a JSON array of strings, and in CSV one
//! cell holding that same JSON array text (`["a","b"]`).

use std::fmt::{self, Write as _};
use std::net::IpAddr;

use serde::ser::{self, Impossible, Serialize, SerializeStruct, Serializer};
use serde::Deserialize;

use crate::{errno_name, identify, printable, rfc3339, PortState, ProbeRecord, BANNER_LIMIT};

/// One result as every output prints it. See the module documentation for the field order
/// contract.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ResultLine {
    /// The probed address.
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "127.0.0.1"))]
    pub ip: IpAddr,
    /// The probed port.
    pub port: u16,
    /// The verdict: `open`, `closed`, `filtered`, `unreachable` or `error`.
    #[cfg_attr(feature = "openapi", schema(value_type = String, pattern = "^(open|closed|filtered|unreachable|error)$"))]
    pub state: PortState,
    /// Connect round trip of the last attempt, in microseconds.
    pub rtt_us: u32,
    /// Connect attempts made.
    pub tries: u8,
    /// The name the address was given by, if it was given by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The errno name (`EHOSTUNREACH`) behind an `unreachable` or `error` verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno: Option<String>,
    /// Whether the replies matched what the dialog expected; absent when it expected nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched: Option<bool>,
    /// The service the banner looks like (`smtp`, `ssh`, `http`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The software the banner names (`Postfix`, `OpenSSH`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    /// The software's version, where the banner says it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The first reply, without its final line break, non-printable bytes escaped (`\r`,
    /// `\n`, `\xHH`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub banner: Option<String>,
    /// Why the dialog failed: the step, and what happened there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The negotiated TLS version (`TLSv1.3`), for probes that made a handshake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_version: Option<String>,
    /// The certificate's subject (`CN=mx.example, O=Example`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_subject: Option<String>,
    /// The certificate's issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_issuer: Option<String>,
    /// The end of the presented chain's validity (the earliest end of its certificates),
    /// RFC 3339 in UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_not_after: Option<String>,
    /// Whole days from the probe to `cert_not_after`; negative once expired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_days_left: Option<i64>,
    /// The capture groups of the dialog's expects, in order (`${1}` first), non-printable
    /// bytes escaped as in `banner`; absent when no expect had groups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub captures: Option<Vec<String>>,
    /// The subject of the chain's certificate that `cert_not_after` is about: the one that
    /// expires first (`cert_subject` when it is the server's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_expires_first: Option<String>,
    /// The protocol's version the reply names (RFB `3.8`, AMQP `0-9-1`, SMB `3.1.1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<String>,
    /// Other facts the reply states (a server's name, an OS hint, a security layer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<String>,
    /// The CPE name of the product (`cpe:/a:openbsd:openssh:9.2p1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpe: Option<String>,
}

impl ResultLine {
    /// The line for `record`, probed at `host` (the name it was given by, if any), with
    /// certificate days counted from `now_unix` (seconds since the epoch). The banner is
    /// identified here, so every output names the same service, product and version.
    pub fn new(record: &ProbeRecord, host: Option<&str>, now_unix: i64) -> ResultLine {
        let errno = record
            .errno
            .filter(|_| matches!(record.state, PortState::Unreachable | PortState::Error))
            .map(|e| errno_name(e).to_string());
        let identity = record.banner.as_deref().and_then(identify);
        let tls = record.tls.as_ref();
        let cert = tls.and_then(|t| t.cert.as_ref());
        let expiring = tls.and_then(|t| t.expiring());
        ResultLine {
            ip: record.ip,
            port: record.port,
            state: record.state,
            rtt_us: record.rtt_us,
            tries: record.tries,
            host: host.map(str::to_string),
            errno,
            matched: record.matched,
            service: identity.as_ref().map(|i| i.service.to_string()),
            product: identity.as_ref().and_then(|i| i.product.clone()),
            version: identity.as_ref().and_then(|i| i.version.clone()),
            banner: record.banner.as_deref().map(banner_text),
            reason: record.reason.clone(),
            tls_version: tls.map(|t| t.version.clone()),
            cert_subject: cert.map(|c| c.subject.clone()),
            cert_issuer: cert.map(|c| c.issuer.clone()),
            cert_not_after: expiring.map(|c| rfc3339(c.not_after)),
            cert_days_left: expiring.map(|c| c.days_left(now_unix)),
            captures: (!record.captures.is_empty()).then(|| {
                record
                    .captures
                    .iter()
                    .map(|c| printable(c, 4 * crate::CAPTURE_LIMIT))
                    .collect()
            }),
            cert_expires_first: expiring.map(|c| c.subject.clone()),
            protocol_version: identity.as_ref().and_then(|i| i.protocol_version.clone()),
            info: identity.as_ref().and_then(|i| i.info.clone()),
            cpe: identity.and_then(|i| i.cpe),
        }
    }

    /// The field names, in contract order (the CSV columns).
    pub fn field_names() -> Vec<&'static str> {
        let mut names = Vec::new();
        // Any line has every field: absent ones are visited as skipped fields.
        let sample = ResultLine::new(
            &ProbeRecord::new(IpAddr::from([0, 0, 0, 0]), 0, PortState::Open, 0, 0),
            None,
            0,
        );
        let walked = sample.serialize(FieldWalker {
            visit: &mut |name, _| {
                names.push(name);
                Ok(())
            },
        });
        if let Err(e) = walked {
            unreachable!("a ResultLine has only scalar fields and lists of strings: {e}");
        }
        names
    }

    /// The CSV header line, with its line break.
    pub fn csv_header() -> String {
        let mut line = Self::field_names().join(",");
        line.push('\n');
        line
    }

    /// Appends this line as one CSV row (with its line break) to `out`: one column per field,
    /// empty where absent; text quoted where it holds a comma, a quote or a line break, and
    /// prefixed with `'` where it starts with `=`, `+`, `-`, `@`, a tab or a carriage return,
    /// so that spreadsheets show it rather than run it as a formula. Numbers are never
    /// prefixed (`cert_days_left` may be negative).
    pub fn write_csv_row(&self, out: &mut String) {
        let mut first = true;
        let walked = self.serialize(FieldWalker {
            visit: &mut |_, value| {
                if !first {
                    out.push(',');
                }
                first = false;
                if let Some(value) = value {
                    value.serialize(CsvCell {
                        out: &mut *out,
                        raw: false,
                    })?;
                }
                Ok(())
            },
        });
        if let Err(e) = walked {
            unreachable!("a ResultLine has only scalar fields and lists of strings: {e}");
        }
        out.push('\n');
    }

    /// This line as one CSV row, with its line break.
    pub fn csv_row(&self) -> String {
        let mut out = String::with_capacity(128);
        self.write_csv_row(&mut out);
        out
    }
}

/// A banner for output: without its final line break, with every other byte that is not
/// printable ASCII escaped (`\r`, `\n`, `\xHH`).
pub fn banner_text(banner: &[u8]) -> String {
    printable(trim_line_end(banner), 4 * BANNER_LIMIT)
}

/// `b` without its trailing `\r` and `\n` bytes.
pub fn trim_line_end(b: &[u8]) -> &[u8] {
    let end = b
        .iter()
        .rposition(|c| !matches!(c, b'\r' | b'\n'))
        .map_or(0, |i| i + 1);
    &b[..end]
}

/// Why a value could not be written as a CSV cell: only scalars can. A [`ResultLine`] holds
/// nothing else, so this never reaches a caller.
#[derive(Debug)]
struct CellError(String);

impl fmt::Display for CellError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CellError {}

impl ser::Error for CellError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        CellError(msg.to_string())
    }
}

/// What [`FieldWalker`] calls for each field: its name, and its value unless serde skipped it
/// (an absent optional field).
type Visit<'a> = dyn FnMut(&'static str, Option<&dyn erased::Value>) -> Result<(), CellError> + 'a;

/// Serialises a struct by calling `visit` for every field in declaration order, skipped
/// fields included; that is how the CSV columns follow the serde derive.
struct FieldWalker<'v, 'a> {
    visit: &'v mut Visit<'a>,
}

/// A field value passed through the `dyn` visitor: serialisable into a [`CsvCell`].
mod erased {
    use super::{CellError, CsvCell};

    pub(super) trait Value {
        fn serialize(&self, cell: CsvCell<'_>) -> Result<(), CellError>;
    }

    impl<T: serde::Serialize + ?Sized> Value for T {
        fn serialize(&self, cell: CsvCell<'_>) -> Result<(), CellError> {
            serde::Serialize::serialize(self, cell)
        }
    }
}

impl SerializeStruct for FieldWalker<'_, '_> {
    type Ok = ();
    type Error = CellError;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), CellError> {
        (self.visit)(key, Some(&value))
    }

    fn skip_field(&mut self, key: &'static str) -> Result<(), CellError> {
        (self.visit)(key, None)
    }

    fn end(self) -> Result<(), CellError> {
        Ok(())
    }
}

/// Everything but a struct is refused by the walker.
macro_rules! refuse {
    ($($method:ident($($arg:ty),*) -> $ret:ty;)*) => {
        $(fn $method(self, $(_: $arg),*) -> Result<$ret, CellError> {
            Err(CellError(concat!("not a CSV value: ", stringify!($method)).into()))
        })*
    };
}

impl<'v, 'a> Serializer for FieldWalker<'v, 'a> {
    type Ok = ();
    type Error = CellError;
    type SerializeSeq = Impossible<(), CellError>;
    type SerializeTuple = Impossible<(), CellError>;
    type SerializeTupleStruct = Impossible<(), CellError>;
    type SerializeTupleVariant = Impossible<(), CellError>;
    type SerializeMap = Impossible<(), CellError>;
    type SerializeStruct = Self;
    type SerializeStructVariant = Impossible<(), CellError>;

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, CellError> {
        Ok(self)
    }

    refuse! {
        serialize_bool(bool) -> ();
        serialize_i8(i8) -> ();
        serialize_i16(i16) -> ();
        serialize_i32(i32) -> ();
        serialize_i64(i64) -> ();
        serialize_u8(u8) -> ();
        serialize_u16(u16) -> ();
        serialize_u32(u32) -> ();
        serialize_u64(u64) -> ();
        serialize_f32(f32) -> ();
        serialize_f64(f64) -> ();
        serialize_char(char) -> ();
        serialize_str(&str) -> ();
        serialize_bytes(&[u8]) -> ();
        serialize_none() -> ();
        serialize_unit() -> ();
        serialize_unit_struct(&'static str) -> ();
        serialize_unit_variant(&'static str, u32, &'static str) -> ();
        serialize_seq(Option<usize>) -> Self::SerializeSeq;
        serialize_tuple(usize) -> Self::SerializeTuple;
        serialize_tuple_struct(&'static str, usize) -> Self::SerializeTupleStruct;
        serialize_tuple_variant(&'static str, u32, &'static str, usize) -> Self::SerializeTupleVariant;
        serialize_map(Option<usize>) -> Self::SerializeMap;
        serialize_struct_variant(&'static str, u32, &'static str, usize) -> Self::SerializeStructVariant;
    }

    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<(), CellError> {
        Err(CellError("not a struct".into()))
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: &T,
    ) -> Result<(), CellError> {
        Err(CellError("not a struct".into()))
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), CellError> {
        Err(CellError("not a struct".into()))
    }
}

/// Writes one scalar as a CSV cell.
struct CsvCell<'o> {
    out: &'o mut String,
    /// Text as it is, neither quoted nor guarded (an item of a list, which the list's cell
    /// quotes and guards as a whole).
    raw: bool,
}

impl CsvCell<'_> {
    fn number(self, n: impl fmt::Display) -> Result<(), CellError> {
        // Writing into a String cannot fail.
        let _ = write!(self.out, "{n}");
        Ok(())
    }
}

/// Whether a spreadsheet would take a cell that starts with `c` for a formula (OWASP's list).
fn starts_formula(s: &str) -> bool {
    s.starts_with(['=', '+', '-', '@', '\t', '\r'])
}

/// A list in one CSV cell: its items gathered as the JSON array they make (as JSON output
/// has them), then written as one text cell.
struct CsvList<'o> {
    out: &'o mut String,
    json: String,
}

impl ser::SerializeSeq for CsvList<'_> {
    type Ok = ();
    type Error = CellError;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), CellError> {
        let mut item = String::new();
        value.serialize(CsvCell {
            out: &mut item,
            raw: true,
        })?;
        self.json.push(if self.json.is_empty() { '[' } else { ',' });
        self.json.push('"');
        for c in item.chars() {
            match c {
                '"' => self.json.push_str("\\\""),
                '\\' => self.json.push_str("\\\\"),
                c if c.is_control() => {
                    let _ = write!(self.json, "\\u{:04x}", u32::from(c));
                }
                c => self.json.push(c),
            }
        }
        self.json.push('"');
        Ok(())
    }

    fn end(mut self) -> Result<(), CellError> {
        if self.json.is_empty() {
            self.json.push('[');
        }
        self.json.push(']');
        CsvCell {
            out: self.out,
            raw: false,
        }
        .serialize_str(&self.json)
    }
}

impl<'o> Serializer for CsvCell<'o> {
    type Ok = ();
    type Error = CellError;
    type SerializeSeq = CsvList<'o>;
    type SerializeTuple = Impossible<(), CellError>;
    type SerializeTupleStruct = Impossible<(), CellError>;
    type SerializeTupleVariant = Impossible<(), CellError>;
    type SerializeMap = Impossible<(), CellError>;
    type SerializeStruct = Impossible<(), CellError>;
    type SerializeStructVariant = Impossible<(), CellError>;

    fn serialize_bool(self, v: bool) -> Result<(), CellError> {
        self.out.push_str(if v { "true" } else { "false" });
        Ok(())
    }
    fn serialize_i8(self, v: i8) -> Result<(), CellError> {
        self.number(v)
    }
    fn serialize_i16(self, v: i16) -> Result<(), CellError> {
        self.number(v)
    }
    fn serialize_i32(self, v: i32) -> Result<(), CellError> {
        self.number(v)
    }
    fn serialize_i64(self, v: i64) -> Result<(), CellError> {
        self.number(v)
    }
    fn serialize_u8(self, v: u8) -> Result<(), CellError> {
        self.number(v)
    }
    fn serialize_u16(self, v: u16) -> Result<(), CellError> {
        self.number(v)
    }
    fn serialize_u32(self, v: u32) -> Result<(), CellError> {
        self.number(v)
    }
    fn serialize_u64(self, v: u64) -> Result<(), CellError> {
        self.number(v)
    }
    fn serialize_f32(self, v: f32) -> Result<(), CellError> {
        self.number(v)
    }
    fn serialize_f64(self, v: f64) -> Result<(), CellError> {
        self.number(v)
    }
    fn serialize_char(self, v: char) -> Result<(), CellError> {
        self.serialize_str(v.encode_utf8(&mut [0; 4]))
    }
    fn serialize_str(self, s: &str) -> Result<(), CellError> {
        if self.raw {
            self.out.push_str(s);
            return Ok(());
        }
        let guard = if starts_formula(s) { "'" } else { "" };
        if s.contains([',', '"', '\n', '\r']) {
            self.out.push('"');
            self.out.push_str(guard);
            self.out.push_str(&s.replace('"', "\"\""));
            self.out.push('"');
        } else {
            self.out.push_str(guard);
            self.out.push_str(s);
        }
        Ok(())
    }
    fn serialize_none(self) -> Result<(), CellError> {
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<(), CellError> {
        v.serialize(self)
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<(), CellError> {
        self.serialize_str(variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        v: &T,
    ) -> Result<(), CellError> {
        v.serialize(self)
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<CsvList<'o>, CellError> {
        Ok(CsvList {
            out: self.out,
            json: String::new(),
        })
    }

    refuse! {
        serialize_bytes(&[u8]) -> ();
        serialize_unit() -> ();
        serialize_unit_struct(&'static str) -> ();
        serialize_tuple(usize) -> Self::SerializeTuple;
        serialize_tuple_struct(&'static str, usize) -> Self::SerializeTupleStruct;
        serialize_tuple_variant(&'static str, u32, &'static str, usize) -> Self::SerializeTupleVariant;
        serialize_map(Option<usize>) -> Self::SerializeMap;
        serialize_struct(&'static str, usize) -> Self::SerializeStruct;
        serialize_struct_variant(&'static str, u32, &'static str, usize) -> Self::SerializeStructVariant;
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), CellError> {
        Err(CellError("not a CSV value: newtype variant".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CertInfo, TlsInfo};

    /// The contract order, written out once more on purpose: changing the struct's field
    /// order must fail this test.
    const CONTRACT: [&str; 23] = [
        "ip",
        "port",
        "state",
        "rtt_us",
        "tries",
        "host",
        "errno",
        "matched",
        "service",
        "product",
        "version",
        "banner",
        "reason",
        "tls_version",
        "cert_subject",
        "cert_issuer",
        "cert_not_after",
        "cert_days_left",
        "captures",
        "cert_expires_first",
        "protocol_version",
        "info",
        "cpe",
    ];

    fn full() -> ProbeRecord {
        ProbeRecord {
            errno: Some(113),
            banner: Some(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n".to_vec()),
            matched: Some(false),
            reason: Some("step 2: got '554 no', wanted ^250".into()),
            tls: Some(TlsInfo {
                version: "TLSv1.3".into(),
                cipher: "TLS13_AES_256_GCM_SHA384".into(),
                cert: Some(CertInfo {
                    subject: "CN=mx, O=Example".into(),
                    issuer: "CN=ca".into(),
                    not_before: 0,
                    not_after: 1_800_000_000,
                }),
                // An intermediate that ends a day before the leaf.
                expires_first: Some(CertInfo {
                    subject: "CN=ca".into(),
                    issuer: "CN=root".into(),
                    not_before: 0,
                    not_after: 1_800_000_000 - 86_400,
                }),
            }),
            captures: vec![b"mx".to_vec(), b"a\"b,\r".to_vec()],
            ..ProbeRecord::new("10.0.0.7".parse().unwrap(), 25, PortState::Error, 412, 2)
        }
    }

    #[test]
    fn field_names_are_the_contract_order() {
        assert_eq!(ResultLine::field_names(), CONTRACT);
        assert_eq!(ResultLine::csv_header(), CONTRACT.join(",") + "\n");
        // serde_json writes the fields in the same order.
        let mut line = ResultLine::new(&full(), Some("mx"), 1_800_000_000 - 3 * 86_400);
        line.protocol_version = Some("2.0".into());
        line.info = Some("Debian".into());
        let json = serde_json::to_string(&line).unwrap();
        let positions: Vec<usize> = CONTRACT
            .iter()
            .map(|k| {
                json.find(&format!("\"{k}\":"))
                    .unwrap_or_else(|| panic!("{k}: {json}"))
            })
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{json}");
    }

    #[test]
    fn a_full_record_becomes_every_field() {
        let line = ResultLine::new(&full(), Some("mx"), 1_800_000_000 - 3 * 86_400);
        assert_eq!(line.errno.as_deref(), Some("EHOSTUNREACH"));
        assert_eq!(line.service.as_deref(), Some("ssh"));
        assert_eq!(line.product.as_deref(), Some("OpenSSH"));
        assert_eq!(line.version.as_deref(), Some("9.2p1"));
        assert_eq!(
            line.banner.as_deref(),
            Some("SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3")
        );
        // The chain's validity ends with the intermediate's, a day before the leaf's.
        assert_eq!(line.cert_subject.as_deref(), Some("CN=mx, O=Example"));
        assert_eq!(line.cert_not_after.as_deref(), Some("2027-01-14T08:00:00Z"));
        assert_eq!(line.cert_days_left, Some(2));
        assert_eq!(line.cert_expires_first.as_deref(), Some("CN=ca"));
        let json = serde_json::to_string(&line).unwrap();
        assert_eq!(serde_json::from_str::<ResultLine>(&json).unwrap(), line);
        // The captures' CSV cell is the JSON array that JSON output has.
        assert!(
            json.ends_with(
                r#""captures":["mx","a\"b,\\r"],"cert_expires_first":"CN=ca","cpe":"cpe:/a:openbsd:openssh:9.2p1"}"#
            ),
            "{json}"
        );
        assert_eq!(
            line.csv_row(),
            "10.0.0.7,25,error,412,2,mx,EHOSTUNREACH,false,ssh,OpenSSH,9.2p1,\
             SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3,\"step 2: got '554 no', wanted ^250\",\
             TLSv1.3,\"CN=mx, O=Example\",CN=ca,2027-01-14T08:00:00Z,2,\
             \"[\"\"mx\"\",\"\"a\\\"\"b,\\\\r\"\"]\",CN=ca,,,cpe:/a:openbsd:openssh:9.2p1\n"
        );
    }

    #[test]
    fn absent_fields_are_left_out_of_json_and_empty_in_csv() {
        let rec = ProbeRecord {
            errno: Some(111),
            ..ProbeRecord::new("::1".parse().unwrap(), 80, PortState::Closed, 9, 1)
        };
        let line = ResultLine::new(&rec, None, 0);
        assert_eq!(
            serde_json::to_string(&line).unwrap(),
            r#"{"ip":"::1","port":80,"state":"closed","rtt_us":9,"tries":1}"#
        );
        assert_eq!(line.csv_row(), "::1,80,closed,9,1,,,,,,,,,,,,,,,,,,\n");
        assert!(serde_json::from_str::<ResultLine>(
            r#"{"ip":"::1","port":80,"state":"closed","rtt_us":9,"tries":1,"x":1}"#
        )
        .is_err());
    }

    #[test]
    fn csv_cells_that_look_like_formulas_are_defused() {
        let rec = ProbeRecord {
            banner: Some(b"=cmd|' /C calc'!A0\r\n".to_vec()),
            reason: Some("-2+3".into()),
            ..ProbeRecord::new("127.0.0.1".parse().unwrap(), 7, PortState::Open, 1, 1)
        };
        let mut line = ResultLine::new(&rec, Some("@host"), 0);
        line.cert_days_left = Some(-4);
        line.product = Some("+x,y".into());
        assert_eq!(
            line.csv_row(),
            "127.0.0.1,7,open,1,1,'@host,,,,\"'+x,y\",,'=cmd|' /C calc'!A0,'-2+3,,,,,-4,,,,,\n"
        );
        // JSON is not a spreadsheet: values stay as they are.
        assert!(serde_json::to_string(&line)
            .unwrap()
            .contains(r#""banner":"=cmd|' /C calc'!A0""#));
    }
}
