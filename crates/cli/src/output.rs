//! Result output: table, JSON Lines, CSV and grepable lines.

use std::fmt::Write as _;
use std::io::{self, Write};

use porthawk_core::{
    errno_name, identify, printable, rfc3339, PortState, ProbeRecord, BANNER_LIMIT,
};

use crate::args::Format;

/// Writes results in one format. Streaming formats write each record as it comes; the table
/// collects its rows and writes them sorted at the end.
pub struct Output<W: Write> {
    format: Format,
    out: W,
    rows: Vec<(ProbeRecord, Option<String>)>,
    line: String,
}

impl<W: Write> Output<W> {
    /// An output in `format` to `out`; writes the CSV header at once.
    pub fn new(format: Format, mut out: W) -> io::Result<Self> {
        if format == Format::Csv {
            writeln!(
                out,
                "ip,port,state,rtt_us,tries,host,errno,matched,service,product,version,banner,reason"
            )?;
        }
        Ok(Output {
            format,
            out,
            rows: Vec::new(),
            line: String::with_capacity(256),
        })
    }

    /// Writes (or, for the table, keeps) one record; `host` is the name it was given by.
    pub fn record(&mut self, r: &ProbeRecord, host: Option<&str>) -> io::Result<()> {
        self.line.clear();
        let l = &mut self.line;
        let errno = r
            .errno
            .filter(|_| matches!(r.state, PortState::Unreachable | PortState::Error))
            .map(errno_name);
        // Writing into a String cannot fail.
        match self.format {
            Format::Table => {
                self.rows.push((r.clone(), host.map(str::to_string)));
                return Ok(());
            }
            Format::Jsonl => {
                let _ = write!(
                    l,
                    r#"{{"ip":"{}","port":{},"state":"{}","rtt_us":{},"tries":{}"#,
                    r.ip, r.port, r.state, r.rtt_us, r.tries
                );
                if let Some(h) = host {
                    l.push_str(r#","host":""#);
                    json_escape(l, h);
                    l.push('"');
                }
                if let Some(e) = errno {
                    let _ = write!(l, r#","errno":"{e}""#);
                }
                if let Some(b) = &r.banner {
                    l.push_str(r#","banner":""#);
                    json_escape(l, &banner_text(b));
                    l.push('"');
                    if let Some(id) = identify(b) {
                        let _ = write!(l, r#","service":"{}""#, id.service);
                        for (key, value) in [("product", &id.product), ("version", &id.version)] {
                            if let Some(v) = value {
                                let _ = write!(l, r#","{key}":""#);
                                json_escape(l, v);
                                l.push('"');
                            }
                        }
                    }
                }
                if let Some(m) = r.matched {
                    let _ = write!(l, r#","matched":{m}"#);
                }
                if let Some(reason) = &r.reason {
                    l.push_str(r#","reason":""#);
                    json_escape(l, reason);
                    l.push('"');
                }
                if let Some(tls) = &r.tls {
                    let _ = write!(l, r#","tls_version":"{}""#, tls.version);
                    if let Some(cert) = &tls.cert {
                        l.push_str(r#","cert_subject":""#);
                        json_escape(l, &cert.subject);
                        l.push_str(r#"","cert_issuer":""#);
                        json_escape(l, &cert.issuer);
                        let _ = write!(
                            l,
                            r#"","cert_not_after":"{}","cert_days_left":{}"#,
                            rfc3339(cert.not_after),
                            cert.days_left(unix_now())
                        );
                    }
                }
                l.push('}');
            }
            Format::Csv => {
                let _ = write!(
                    l,
                    "{},{},{},{},{},{},{},{},",
                    r.ip,
                    r.port,
                    r.state,
                    r.rtt_us,
                    r.tries,
                    host.unwrap_or(""),
                    errno.unwrap_or(""),
                    r.matched.map_or("", |m| if m { "true" } else { "false" }),
                );
                let id = r.banner.as_deref().and_then(identify);
                l.push_str(id.as_ref().map_or("", |i| i.service));
                l.push(',');
                csv_field(
                    l,
                    id.as_ref().and_then(|i| i.product.as_deref()).unwrap_or(""),
                );
                l.push(',');
                csv_field(
                    l,
                    id.as_ref().and_then(|i| i.version.as_deref()).unwrap_or(""),
                );
                l.push(',');
                if let Some(b) = &r.banner {
                    csv_field(l, &banner_text(b));
                }
                l.push(',');
                if let Some(reason) = &r.reason {
                    csv_field(l, reason);
                }
            }
            Format::Grep => {
                // nmap's -oG port field: port/state/protocol/owner/service/rpc/version/
                let id = r.banner.as_deref().and_then(identify);
                let service = id.as_ref().map_or("", |i| i.service);
                let version = id
                    .as_ref()
                    .map(|i| {
                        [i.product.as_deref(), i.version.as_deref()]
                            .into_iter()
                            .flatten()
                            .collect::<Vec<_>>()
                            .join(" ")
                            .replace('/', "|")
                    })
                    .unwrap_or_default();
                let _ = write!(
                    l,
                    "Host: {} ({})\tPorts: {}/{}/tcp//{service}//{version}/",
                    r.ip,
                    host.unwrap_or(""),
                    r.port,
                    r.state
                );
            }
        }
        l.push('\n');
        self.out.write_all(l.as_bytes())
    }

    /// Writes the table (if that is the format) and flushes.
    pub fn finish(mut self) -> io::Result<()> {
        if self.format == Format::Table {
            self.rows.sort_by_key(|(r, _)| (r.ip, r.port));
            let host = |r: &ProbeRecord, h: &Option<String>| match h {
                Some(name) => format!("{name} ({})", r.ip),
                None => r.ip.to_string(),
            };
            let width = self
                .rows
                .iter()
                .map(|(r, h)| host(r, h).len())
                .max()
                .unwrap_or(0)
                .max(4);
            writeln!(
                self.out,
                "{:<width$}  {:>5}  {:<11}  {:>9}  {:<24}  INFO",
                "HOST", "PORT", "STATE", "RTT", "SERVICE"
            )?;
            for (r, h) in &self.rows {
                let banner;
                let reason = match (r.state, r.errno) {
                    (PortState::Unreachable | PortState::Error, Some(e)) => errno_name(e),
                    (PortState::Filtered, _) => "no answer",
                    _ => match (&r.reason, &r.banner) {
                        (Some(why), _) => why.as_str(),
                        (None, Some(b)) => {
                            banner = printable(trim_line_end(b), 60);
                            banner.as_str()
                        }
                        (None, None) => "",
                    },
                };
                let rtt = format!("{:.1}ms", f64::from(r.rtt_us) / 1000.0);
                let service = r
                    .banner
                    .as_deref()
                    .and_then(identify)
                    .map(|i| {
                        [Some(i.service), i.product.as_deref(), i.version.as_deref()]
                            .into_iter()
                            .flatten()
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .unwrap_or_default();
                writeln!(
                    self.out,
                    "{:<width$}  {:>5}  {:<11}  {:>9}  {:<24}  {}",
                    host(r, h),
                    r.port,
                    r.state.as_str(),
                    rtt,
                    service,
                    reason
                )?;
            }
        }
        self.out.flush()
    }
}

/// A banner for output: without its final line break, with every other byte that is not
/// printable ASCII escaped (`\r`, `\n`, `\xHH`).
pub fn banner_text(banner: &[u8]) -> String {
    printable(trim_line_end(banner), 4 * BANNER_LIMIT)
}

fn trim_line_end(b: &[u8]) -> &[u8] {
    let end = b
        .iter()
        .rposition(|c| !matches!(c, b'\r' | b'\n'))
        .map_or(0, |i| i + 1);
    &b[..end]
}

/// Seconds since the epoch, now.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Appends a CSV field, quoted when it holds a comma, a quote or a line break.
fn csv_field(out: &mut String, s: &str) {
    if s.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&s.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(s);
    }
}

fn json_escape(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(ip: &str, port: u16, state: PortState, errno: Option<i32>) -> ProbeRecord {
        ProbeRecord {
            errno,
            ..ProbeRecord::new(ip.parse().unwrap(), port, state, 412, 1)
        }
    }

    fn render(format: Format, records: &[(ProbeRecord, Option<&str>)]) -> String {
        let mut buf = Vec::new();
        let mut out = Output::new(format, &mut buf).unwrap();
        for (r, h) in records {
            out.record(r, *h).unwrap();
        }
        out.finish().unwrap();
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn every_format_renders_the_contract() {
        let records = [
            (rec("10.0.0.7", 25, PortState::Open, None), Some("mx")),
            (rec("10.0.0.1", 80, PortState::Unreachable, Some(113)), None),
        ];
        assert_eq!(
            render(Format::Jsonl, &records),
            "{\"ip\":\"10.0.0.7\",\"port\":25,\"state\":\"open\",\"rtt_us\":412,\"tries\":1,\"host\":\"mx\"}\n\
             {\"ip\":\"10.0.0.1\",\"port\":80,\"state\":\"unreachable\",\"rtt_us\":412,\"tries\":1,\"errno\":\"EHOSTUNREACH\"}\n"
        );
        assert_eq!(
            render(Format::Csv, &records),
            "ip,port,state,rtt_us,tries,host,errno,matched,service,product,version,banner,reason\n10.0.0.7,25,open,412,1,mx,,,,,,,\n10.0.0.1,80,unreachable,412,1,,EHOSTUNREACH,,,,,,\n"
        );
        assert_eq!(
            render(Format::Grep, &records),
            "Host: 10.0.0.7 (mx)\tPorts: 25/open/tcp/////\nHost: 10.0.0.1 ()\tPorts: 80/unreachable/tcp/////\n"
        );
        let table = render(Format::Table, &records);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("HOST"));
        // Sorted by address: 10.0.0.1 before 10.0.0.7.
        assert!(lines[1].starts_with("10.0.0.1 "), "{table}");
        assert!(lines[1].contains("EHOSTUNREACH"));
        assert!(lines[2].starts_with("mx (10.0.0.7)"), "{table}");
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut s = String::new();
        json_escape(&mut s, "a\"b\\c\n");
        assert_eq!(s, "a\\\"b\\\\c\\u000a");
    }
}
