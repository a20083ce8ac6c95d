//! TLS for probe dialogs: the client configuration (which reports certificates rather than
//! judging them) and a small, bounded reader of the X.509 fields porthawk reports.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::time_provider::TimeProvider;
use rustls::{
    AlertDescription, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use serde::{Deserialize, Serialize};

/// What a TLS handshake showed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsInfo {
    /// `TLSv1.3`, `TLSv1.2`.
    pub version: String,
    /// The negotiated cipher suite.
    pub cipher: String,
    /// The server's certificate, if it sent one that could be read.
    pub cert: Option<CertInfo>,
    /// The certificate of the presented chain whose validity ends first (the leaf itself when
    /// it does): the one whose expiry an administrator must watch.
    pub expires_first: Option<CertInfo>,
}

impl TlsInfo {
    /// What a handshake showed: `chain` is the presented chain, leaf first (certificates that
    /// cannot be read are left out of the expiry; an unreadable leaf leaves `cert` empty).
    pub fn new(version: String, cipher: String, chain: &[CertificateDer<'_>]) -> TlsInfo {
        let cert = chain
            .first()
            .and_then(|c| parse_certificate(c.as_ref()).ok());
        let expires_first = chain
            .iter()
            .filter_map(|c| parse_certificate(c.as_ref()).ok())
            .min_by_key(|c| c.not_after);
        TlsInfo {
            version,
            cipher,
            cert,
            expires_first,
        }
    }

    /// The certificate whose expiry counts: the first of the chain to expire, else the leaf.
    pub fn expiring(&self) -> Option<&CertInfo> {
        self.expires_first.as_ref().or(self.cert.as_ref())
    }
}

/// The fields of a server certificate that an administrator watches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertInfo {
    /// The subject, as `CN=mx.example, O=Example`.
    pub subject: String,
    /// The issuer, in the same form.
    pub issuer: String,
    /// Start of validity, seconds since the Unix epoch.
    pub not_before: i64,
    /// End of validity, seconds since the Unix epoch.
    pub not_after: i64,
}

impl CertInfo {
    /// Whether the certificate names itself as its issuer.
    pub fn self_signed(&self) -> bool {
        self.subject == self.issuer
    }

    /// Whole days from `now` (seconds since the epoch) to the end of validity; negative once
    /// expired.
    pub fn days_left(&self, now: i64) -> i64 {
        (self.not_after - now).div_euclid(86_400)
    }
}

/// Accepts any certificate chain, so that self-signed, expired or mismatched certificates are
/// reported rather than hidden behind a failed handshake. The handshake signatures are still
/// verified: the server must hold the key of the certificate it presents.
#[derive(Debug)]
struct ReportingVerifier {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for ReportingVerifier {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The TLS client configuration of probe dialogs. The caller supplies the clock (the core
/// reads none): pass `Arc::new(rustls::time_provider::DefaultTimeProvider)` in a program.
pub fn client_config(time: Arc<dyn TimeProvider>) -> Result<Arc<ClientConfig>, rustls::Error> {
    client_config_with(time, None)
}

/// A client certificate chain (leaf first) and its private key.
pub type ClientAuth = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// [`client_config`] that presents `client_auth` to servers that ask for a certificate.
pub fn client_config_with(
    time: Arc<dyn TimeProvider>,
    client_auth: Option<ClientAuth>,
) -> Result<Arc<ClientConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_details(Arc::clone(&provider), time)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ReportingVerifier { provider }));
    let config = match client_auth {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key)?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// What a TLS probe asks for beyond the handshake (`--sni`, `--verify`, `--expect-alert`).
/// Built once per probe spec by [`crate::ProbeOptions::spec`]; the dialog consults it.
#[derive(Debug, Default)]
pub struct TlsCheck {
    /// The server name to present (and verify against) instead of the target's.
    pub sni: Option<String>,
    /// Judge the certificate: chain, dates and name.
    pub verify: Option<TlsVerifier>,
    /// The alert the server must answer the handshake with (the check passes when it does).
    pub expect_alert: Option<AlertDescription>,
}

/// Verifies a presented chain against trusted roots and a name, as a browser would, and says
/// in words why it fails. It runs after the handshake (which accepts any chain), so that a
/// failed verification still reports the certificate.
pub struct TlsVerifier {
    webpki: Arc<WebPkiServerVerifier>,
    time: Arc<dyn TimeProvider>,
}

impl fmt::Debug for TlsVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsVerifier")
    }
}

impl TlsVerifier {
    /// A verifier trusting `roots`, with the caller's clock.
    pub fn new(roots: RootCertStore, time: Arc<dyn TimeProvider>) -> Result<TlsVerifier, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| format!("cannot set up certificate verification: {e}"))?;
        Ok(TlsVerifier { webpki, time })
    }

    /// Checks `chain` (leaf first) for `name`; the error names the cause: `expired`, `not yet
    /// valid`, `self-signed`, `unknown issuer`, `name mismatch`, and the certificate at fault.
    pub fn verify(
        &self,
        chain: &[CertificateDer<'_>],
        name: &ServerName<'_>,
    ) -> Result<(), String> {
        let Some((leaf, intermediates)) = chain.split_first() else {
            return Err("no certificate presented".into());
        };
        let Some(now) = self.time.current_time() else {
            return Err("no clock to verify the certificate with".into());
        };
        let err = match self
            .webpki
            .verify_server_cert(leaf, intermediates, name, &[], now)
        {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        let now = now.as_secs() as i64;
        let certs: Vec<CertInfo> = chain
            .iter()
            .filter_map(|c| parse_certificate(c.as_ref()).ok())
            .collect();
        Err(explain(&err, &certs, name, now))
    }
}

/// The words for a verification failure, naming the certificate at fault where the chain
/// shows it.
fn explain(err: &rustls::Error, chain: &[CertInfo], name: &ServerName<'_>, now: i64) -> String {
    use rustls::CertificateError as E;
    let rustls::Error::InvalidCertificate(cause) = err else {
        return format!("certificate rejected: {err}");
    };
    // webpki's word for a self-signed certificate that says it is a CA (OpenSSL's default).
    let ca_as_leaf = matches!(cause, E::Other(o) if format!("{o:?}").contains("CaUsedAsEndEntity"));
    if let [only] = chain {
        if only.self_signed() && (ca_as_leaf || matches!(cause, E::UnknownIssuer)) {
            return format!("self-signed certificate '{}'", only.subject);
        }
    }
    if ca_as_leaf {
        let subject = chain.first().map_or("", |c| c.subject.as_str());
        return format!("a CA certificate '{subject}' is the server's own");
    }
    match cause {
        E::Expired | E::ExpiredContext { .. } => match chain.iter().find(|c| c.not_after < now) {
            Some(c) => format!(
                "certificate expired: '{}' ended {}",
                c.subject,
                crate::rfc3339(c.not_after)
            ),
            None => "certificate expired".into(),
        },
        E::NotValidYet | E::NotValidYetContext { .. } => {
            match chain.iter().find(|c| c.not_before > now) {
                Some(c) => format!(
                    "certificate not yet valid: '{}' starts {}",
                    c.subject,
                    crate::rfc3339(c.not_before)
                ),
                None => "certificate not yet valid".into(),
            }
        }
        E::UnknownIssuer => match chain.last() {
            Some(c) => format!("unknown issuer '{}' (of '{}')", c.issuer, c.subject),
            None => "unknown issuer".into(),
        },
        E::NotValidForName | E::NotValidForNameContext { .. } => {
            let wanted = match name {
                ServerName::DnsName(d) => d.as_ref().to_string(),
                ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
                other => format!("{other:?}"),
            };
            let subject = chain.first().map_or("", |c| c.subject.as_str());
            format!("name mismatch: '{subject}' is not valid for {wanted}")
        }
        other => format!(
            "certificate rejected: {}",
            rustls::Error::InvalidCertificate(other.clone())
        ),
    }
}

/// The trust anchors in a PEM file's certificates; `file` names it in errors.
pub fn roots_from_pem(file: &str, pem: &[u8]) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    let mut n = 0;
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| format!("{file}: not a PEM certificate file: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("{file}: certificate {}: {e}", n + 1))?;
        n += 1;
    }
    if n == 0 {
        return Err(format!("{file}: no certificate in it"));
    }
    Ok(roots)
}

/// The system's trust anchors: the first CA bundle found of Debian's, Red Hat's, Alpine's
/// and SUSE's usual paths; without one, the Mozilla roots built in (webpki-roots).
pub fn system_roots() -> Result<RootCertStore, String> {
    const BUNDLES: &[&str] = &[
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/cert.pem",
        "/etc/ssl/ca-bundle.pem",
    ];
    for path in BUNDLES {
        if let Ok(pem) = std::fs::read(path) {
            return roots_from_pem(path, &pem);
        }
    }
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    Ok(roots)
}

/// A client certificate chain and key from PEM files; errors name the file.
pub fn client_auth_from_pem(
    cert_file: &str,
    cert_pem: &[u8],
    key_file: &str,
    key_pem: &[u8],
) -> Result<ClientAuth, String> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{cert_file}: not a PEM certificate file: {e}"))?;
    if chain.is_empty() {
        return Err(format!("{cert_file}: no certificate in it"));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| format!("{key_file}: no private key in it: {e}"))?;
    Ok((chain, key))
}

/// A TLS alert by its RFC 8446 name (`certificate_required`, `handshake_failure`).
pub fn alert_by_name(name: &str) -> Option<AlertDescription> {
    (0..=u8::MAX)
        .map(AlertDescription::from)
        .filter(|a| !matches!(a, AlertDescription::Unknown(_)))
        .find(|a| alert_name(*a) == name)
}

/// The RFC 8446 name of an alert (`certificate_required`); `alert_42` for an unknown one.
pub fn alert_name(alert: AlertDescription) -> String {
    if let AlertDescription::Unknown(n) = alert {
        return format!("alert_{n}");
    }
    // CamelCase to snake_case, acronyms kept whole: `UnknownPSKIdentity` is
    // `unknown_psk_identity`.
    let camel: Vec<char> = format!("{alert:?}").chars().collect();
    let mut out = String::new();
    for (i, &c) in camel.iter().enumerate() {
        let prev = i.checked_sub(1).map(|j| camel[j]);
        let next = camel.get(i + 1);
        let starts_word = c.is_ascii_uppercase()
            && (prev.is_some_and(|p| p.is_ascii_lowercase() || p.is_ascii_digit())
                || (prev.is_some_and(|p| p.is_ascii_uppercase())
                    && next.is_some_and(|n| n.is_ascii_lowercase())));
        if starts_word {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// Why a certificate could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    /// The DER structure is malformed or truncated.
    #[error("malformed certificate: {0}")]
    Malformed(&'static str),
}

/// One DER element: its tag and contents.
struct Der<'a> {
    tag: u8,
    body: &'a [u8],
}

/// Reads the element at the start of `input`; returns it and the rest.
fn der(input: &[u8]) -> Result<(Der<'_>, &[u8]), CertError> {
    let bad = CertError::Malformed;
    let (&tag, rest) = input.split_first().ok_or(bad("truncated tag"))?;
    let (&first, mut rest) = rest.split_first().ok_or(bad("truncated length"))?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return Err(bad("unsupported length"));
        }
        let (bytes, r) = (rest.get(..n).ok_or(bad("truncated length"))?, &rest[n..]);
        rest = r;
        bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
    };
    let body = rest.get(..len).ok_or(bad("truncated element"))?;
    Ok((Der { tag, body }, &rest[len..]))
}

fn expect_tag<'a>(
    input: &'a [u8],
    tag: u8,
    what: &'static str,
) -> Result<(Der<'a>, &'a [u8]), CertError> {
    let (el, rest) = der(input)?;
    if el.tag != tag {
        return Err(CertError::Malformed(what));
    }
    Ok((el, rest))
}

/// Reads the subject, issuer and validity of a DER-encoded X.509 certificate.
pub fn parse_certificate(cert: &[u8]) -> Result<CertInfo, CertError> {
    const SEQUENCE: u8 = 0x30;
    let (certificate, _) = expect_tag(cert, SEQUENCE, "certificate is not a sequence")?;
    let (tbs, _) = expect_tag(
        certificate.body,
        SEQUENCE,
        "tbsCertificate is not a sequence",
    )?;
    let mut rest = tbs.body;
    // version [0] EXPLICIT, optional
    if rest.first() == Some(&0xa0) {
        rest = der(rest)?.1;
    }
    rest = expect_tag(rest, 0x02, "serial number is not an integer")?.1;
    rest = expect_tag(rest, SEQUENCE, "signature algorithm is not a sequence")?.1;
    let (issuer, r) = expect_tag(rest, SEQUENCE, "issuer is not a sequence")?;
    let (validity, r) = expect_tag(r, SEQUENCE, "validity is not a sequence")?;
    let (subject, _) = expect_tag(r, SEQUENCE, "subject is not a sequence")?;
    let (not_before, r) = der(validity.body)?;
    let (not_after, _) = der(r)?;
    Ok(CertInfo {
        subject: name(subject.body)?,
        issuer: name(issuer.body)?,
        not_before: time(&not_before)?,
        not_after: time(&not_after)?,
    })
}

/// Renders an X.501 Name as `CN=..., O=...` (the attributes people read; others are skipped).
fn name(mut rdns: &[u8]) -> Result<String, CertError> {
    let mut out = String::new();
    while !rdns.is_empty() {
        let (set, rest) = expect_tag(rdns, 0x31, "name component is not a set")?;
        rdns = rest;
        let mut attrs = set.body;
        while !attrs.is_empty() {
            let (attr, rest) = expect_tag(attrs, 0x30, "attribute is not a sequence")?;
            attrs = rest;
            let (oid, value) = expect_tag(attr.body, 0x06, "attribute type is not an OID")?;
            let (value, _) = der(value)?;
            let label = match oid.body {
                [0x55, 0x04, 0x03] => "CN",
                [0x55, 0x04, 0x0a] => "O",
                [0x55, 0x04, 0x0b] => "OU",
                [0x55, 0x04, 0x06] => "C",
                [0x55, 0x04, 0x07] => "L",
                [0x55, 0x04, 0x08] => "ST",
                _ => continue,
            };
            if !out.is_empty() {
                out.push_str(", ");
            }
            out.push_str(label);
            out.push('=');
            // Printable, UTF-8 and IA5 strings are all shown as text; anything else lossily.
            let text = String::from_utf8_lossy(value.body);
            out.extend(text.chars().take(256).filter(|c| !c.is_control()));
        }
    }
    Ok(out)
}

/// UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) as Unix seconds.
fn time(el: &Der<'_>) -> Result<i64, CertError> {
    let bad = || CertError::Malformed("invalid time");
    let digits = |s: &[u8]| -> Result<i64, CertError> {
        s.iter().try_fold(0i64, |acc, b| {
            b.is_ascii_digit()
                .then(|| acc * 10 + i64::from(b - b'0'))
                .ok_or_else(bad)
        })
    };
    let (year, rest) = match (el.tag, el.body.len()) {
        (0x17, 13) => {
            let yy = digits(&el.body[..2])?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &el.body[2..])
        }
        (0x18, 15) => (digits(&el.body[..4])?, &el.body[4..]),
        _ => return Err(bad()),
    };
    if rest.last() != Some(&b'Z') {
        return Err(bad());
    }
    let month = digits(&rest[0..2])?;
    let day = digits(&rest[2..4])?;
    let (h, m, s) = (
        digits(&rest[4..6])?,
        digits(&rest[6..8])?,
        digits(&rest[8..10])?,
    );
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return Err(bad());
    }
    Ok(crate::civil::days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + s)
}

impl fmt::Display for CertInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "subject '{}', issuer '{}'", self.subject, self.issuer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate made with
    /// `openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30
    ///  -subj "/CN=porthawk.test/O=Porthawk" -keyout /dev/null -outform DER`,
    /// cut down to its TBS fields (the parser reads nothing after the subject).
    fn sample() -> Vec<u8> {
        fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
            let mut v = vec![tag];
            if body.len() < 0x80 {
                v.push(body.len() as u8);
            } else {
                v.push(0x82);
                v.extend_from_slice(&(body.len() as u16).to_be_bytes());
            }
            v.extend_from_slice(body);
            v
        }
        let attr = |oid: &[u8], value: &str| {
            tlv(
                0x31,
                &tlv(
                    0x30,
                    &[tlv(0x06, oid), tlv(0x0c, value.as_bytes())].concat(),
                ),
            )
        };
        let name = tlv(
            0x30,
            &[
                attr(&[0x55, 4, 3], "porthawk.test"),
                attr(&[0x55, 4, 10], "Porthawk"),
            ]
            .concat(),
        );
        let validity = tlv(
            0x30,
            &[tlv(0x17, b"261123000000Z"), tlv(0x18, b"20261223000000Z")].concat(),
        );
        let tbs = tlv(
            0x30,
            &[
                tlv(0xa0, &tlv(0x02, &[2])),
                tlv(0x02, &[0x01, 0x02]),
                tlv(0x30, &tlv(0x06, &[0x2a, 0x86, 0x48, 0xce, 0x3d, 4, 3, 2])),
                name.clone(),
                validity,
                name,
            ]
            .concat(),
        );
        tlv(0x30, &tbs)
    }

    #[test]
    fn reads_subject_issuer_and_validity() {
        let info = parse_certificate(&sample()).unwrap();
        assert_eq!(info.subject, "CN=porthawk.test, O=Porthawk");
        assert!(info.self_signed());
        // 2026-11-23T00:00:00Z and 2026-12-23T00:00:00Z.
        assert_eq!(info.not_before, 1_795_392_000);
        assert_eq!(info.not_after, 1_795_392_000 + 30 * 86_400);
        assert_eq!(info.days_left(1_795_392_000), 30);
        assert_eq!(info.days_left(info.not_after + 1), -1);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let cert = sample();
        for cut in 0..cert.len() {
            assert!(parse_certificate(&cert[..cut]).is_err(), "cut at {cut}");
        }
        assert!(parse_certificate(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(parse_certificate(b"not der at all").is_err());
    }

    /// `sample()` with another subject (13 bytes, as `porthawk.test`) and end of validity
    /// (`YYMMDDHHMMSSZ`), both rewritten in place.
    fn cert_with(subject: &[u8], not_after: &[u8; 13]) -> Vec<u8> {
        let mut der = sample();
        let end = der
            .windows(15)
            .position(|w| w == b"20261223000000Z")
            .unwrap_or_else(|| unreachable!());
        der[end + 2..end + 15].copy_from_slice(not_after);
        // The subject is the second name (the first is the issuer).
        let cn = der
            .windows(13)
            .rposition(|w| w == b"porthawk.test")
            .unwrap_or_else(|| unreachable!());
        der[cn..cn + 13].copy_from_slice(subject);
        der
    }

    #[test]
    fn the_chain_expiry_is_its_earliest_end() {
        let leaf = CertificateDer::from(cert_with(b"leaf.example1", b"261223000000Z"));
        let inter = CertificateDer::from(cert_with(b"inter.exampl2", b"261201000000Z"));
        let info = TlsInfo::new("TLSv1.3".into(), String::new(), &[leaf.clone(), inter]);
        assert_eq!(
            info.cert.as_ref().map(|c| c.subject.as_str()),
            Some("CN=leaf.example1, O=Porthawk")
        );
        let first = info.expiring().unwrap_or_else(|| unreachable!());
        assert_eq!(first.subject, "CN=inter.exampl2, O=Porthawk");
        // 2026-12-01T00:00:00Z.
        assert_eq!(first.not_after, 1_796_083_200);
        // A chain of one: the leaf; an unreadable intermediate is left out.
        let info = TlsInfo::new(
            String::new(),
            String::new(),
            &[leaf, CertificateDer::from(vec![0x30, 0x01])],
        );
        assert_eq!(
            info.expiring().map(|c| c.subject.as_str()),
            Some("CN=leaf.example1, O=Porthawk")
        );
        assert_eq!(
            TlsInfo::new(String::new(), String::new(), &[]).expiring(),
            None
        );
    }

    #[test]
    fn alerts_go_by_their_rfc_names() {
        for (name, alert) in [
            (
                "certificate_required",
                AlertDescription::CertificateRequired,
            ),
            ("handshake_failure", AlertDescription::HandshakeFailure),
            ("unknown_psk_identity", AlertDescription::UnknownPSKIdentity),
            ("bad_certificate", AlertDescription::BadCertificate),
            ("unknown_ca", AlertDescription::UnknownCA),
            ("close_notify", AlertDescription::CloseNotify),
        ] {
            assert_eq!(alert_name(alert), name);
            assert_eq!(alert_by_name(name), Some(alert), "{name}");
        }
        assert_eq!(alert_by_name("CertificateRequired"), None);
        assert_eq!(alert_by_name("nope"), None);
        assert_eq!(alert_name(AlertDescription::Unknown(201)), "alert_201");
    }

    #[test]
    fn verification_failures_are_told_in_words() {
        use rustls::CertificateError as E;
        let cert = |subject: &str, issuer: &str, not_before, not_after| CertInfo {
            subject: subject.into(),
            issuer: issuer.into(),
            not_before,
            not_after,
        };
        let leaf = cert("CN=www", "CN=ca", 0, 2_000_000_000);
        let old_ca = cert("CN=ca", "CN=root", 0, 1_000_000_000);
        let name = ServerName::try_from("www.example").unwrap_or_else(|_| unreachable!());
        let why = |e: E, chain: &[CertInfo]| {
            explain(
                &rustls::Error::InvalidCertificate(e),
                chain,
                &name,
                1_500_000_000,
            )
        };
        assert_eq!(
            why(E::Expired, &[leaf.clone(), old_ca.clone()]),
            "certificate expired: 'CN=ca' ended 2001-09-09T01:46:40Z"
        );
        assert_eq!(
            why(
                E::NotValidYet,
                &[cert("CN=www", "CN=ca", 1_600_000_000, 1_700_000_000)]
            ),
            "certificate not yet valid: 'CN=www' starts 2020-09-13T12:26:40Z"
        );
        assert_eq!(
            why(
                E::UnknownIssuer,
                &[cert("CN=me", "CN=me", 0, 2_000_000_000)]
            ),
            "self-signed certificate 'CN=me'"
        );
        assert_eq!(
            why(E::UnknownIssuer, &[leaf.clone(), old_ca]),
            "unknown issuer 'CN=root' (of 'CN=ca')"
        );
        assert_eq!(
            why(E::NotValidForName, &[leaf]),
            "name mismatch: 'CN=www' is not valid for www.example"
        );
        assert!(why(E::BadSignature, &[]).starts_with("certificate rejected: "));
    }

    #[test]
    fn pem_files_name_themselves_in_errors() {
        let err = roots_from_pem("/etc/x.pem", b"nothing here").unwrap_err();
        assert_eq!(err, "/etc/x.pem: no certificate in it");
        let err = client_auth_from_pem("c.pem", b"", "k.pem", b"").unwrap_err();
        assert_eq!(err, "c.pem: no certificate in it");
        assert!(system_roots().is_ok_and(|r| !r.is_empty()));
    }

    #[test]
    fn config_builds() {
        assert!(client_config(Arc::new(rustls::time_provider::DefaultTimeProvider)).is_ok());
    }
}
