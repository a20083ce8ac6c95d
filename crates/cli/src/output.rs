//! Result output: table, JSON Lines, CSV, grepable lines and nmap XML, each an encoding of
//! core's [`ResultLine`] (JSON Lines and CSV are its serde_json and CSV encodings, the contract
//! that the HTTP API shares; XML is core's [`nmap_xml`]).

use std::io::{self, Write};

use porthawk_core::{
    nmap_xml, printable, trim_line_end, PortState, ProbeRecord, ResultLine, XmlRun,
};

use crate::args::Format;

/// Writes results in one format. Streaming formats write each record as it comes; the table
/// and the XML document collect their lines and write them at the end.
pub struct Output<W: Write> {
    format: Format,
    out: W,
    /// Table rows: the line and the short banner the INFO column shows.
    rows: Vec<(ResultLine, Option<String>)>,
    buf: String,
    /// Where the output goes (`'out.csv'`, `standard output`), for error messages.
    dest: String,
    /// XML: the lines, and what the document says about the run.
    xml_lines: Vec<ResultLine>,
    xml_run: XmlRun,
}

impl<W: Write> Output<W> {
    /// An output in `format` to `out`, which `dest` names in errors (`'out.csv'`, `standard
    /// output`); writes the CSV header at once.
    pub fn new(format: Format, out: W, dest: String) -> io::Result<Self> {
        let mut output = Output {
            format,
            out,
            rows: Vec::new(),
            buf: String::with_capacity(256),
            dest,
            xml_lines: Vec::new(),
            xml_run: XmlRun::default(),
        };
        if format == Format::Csv {
            output.buf = ResultLine::csv_header();
            output.write_buf()?;
        }
        Ok(output)
    }

    /// Writes the line in `buf`; an error names the destination and keeps its kind (so that
    /// a broken pipe is still recognised as one).
    fn write_buf(&mut self) -> io::Result<()> {
        let written = self.out.write_all(self.buf.as_bytes());
        written.map_err(|e| self.io_error(e))
    }

    fn io_error(&self, e: io::Error) -> io::Error {
        io::Error::new(e.kind(), format!("cannot write to {}: {e}", self.dest))
    }

    /// Notes a probed record whether or not it is written: the XML document says a host is up
    /// when it answered on any port.
    pub fn seen(&mut self, r: &ProbeRecord) {
        if self.format == Format::Xml && matches!(r.state, PortState::Open | PortState::Closed) {
            self.xml_run.answered.insert(r.ip);
        }
    }

    /// What the XML document says about the run (ignored by the other formats); call before
    /// [`Output::finish`]. Hosts already [seen](Output::seen) stay up.
    pub fn set_run(&mut self, run: XmlRun) {
        let answered = std::mem::take(&mut self.xml_run.answered);
        self.xml_run = run;
        self.xml_run.answered.extend(answered);
    }

    /// Writes (or, for the table and XML, keeps) one record; `host` is the name it was given by.
    pub fn record(&mut self, r: &ProbeRecord, host: Option<&str>) -> io::Result<()> {
        let line = ResultLine::new(r, host, unix_now());
        self.buf.clear();
        match self.format {
            Format::Table => {
                let banner = r.banner.as_deref().map(|b| printable(trim_line_end(b), 60));
                self.rows.push((line, banner));
                return Ok(());
            }
            Format::Jsonl => {
                // serde_json writes a struct of scalars and strings into a
                // String without failing; the error arm only keeps the signature honest.
                let json = serde_json::to_string(&line).map_err(io::Error::other)?;
                self.buf.push_str(&json);
                self.buf.push('\n');
            }
            Format::Xml => {
                self.xml_lines.push(line);
                return Ok(());
            }
            Format::Csv => line.write_csv_row(&mut self.buf),
            Format::Grep => {
                // nmap's -oG port field: port/state/protocol/owner/service/rpc/version/
                let version = [line.product.as_deref(), line.version.as_deref()]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(" ")
                    .replace('/', "|");
                self.buf = format!(
                    "Host: {} ({})\tPorts: {}/{}/tcp//{}//{version}/\n",
                    line.ip,
                    line.host.as_deref().unwrap_or(""),
                    line.port,
                    line.state,
                    line.service.as_deref().unwrap_or(""),
                );
            }
        }
        self.write_buf()
    }

    /// Writes the table or the XML document (if that is the format) and flushes.
    pub fn finish(mut self) -> io::Result<()> {
        if self.format == Format::Xml {
            self.buf = nmap_xml(&self.xml_run, &self.xml_lines);
            self.write_buf()?;
        }
        self.write_table()
            .and_then(|()| self.out.flush())
            .map_err(|e| self.io_error(e))
    }

    fn write_table(&mut self) -> io::Result<()> {
        if self.format == Format::Table {
            self.rows.sort_by_key(|(l, _)| (l.ip, l.port));
            let host = |l: &ResultLine| match &l.host {
                Some(name) => format!("{name} ({})", l.ip),
                None => l.ip.to_string(),
            };
            let width = self
                .rows
                .iter()
                .map(|(l, _)| host(l).len())
                .max()
                .unwrap_or(0)
                .max(4);
            writeln!(
                self.out,
                "{:<width$}  {:>5}  {:<11}  {:>9}  {:<24}  INFO",
                "HOST", "PORT", "STATE", "RTT", "SERVICE"
            )?;
            for (l, banner) in &self.rows {
                let info = match (l.state, &l.errno) {
                    (PortState::Unreachable | PortState::Error, Some(e)) => e.as_str(),
                    (PortState::Filtered, _) => "no answer",
                    _ => l.reason.as_deref().or(banner.as_deref()).unwrap_or(""),
                };
                let rtt = format!("{:.1}ms", f64::from(l.rtt_us) / 1000.0);
                let service = [
                    l.service.as_deref(),
                    l.product.as_deref(),
                    l.version.as_deref(),
                ]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" ");
                writeln!(
                    self.out,
                    "{:<width$}  {:>5}  {:<11}  {:>9}  {:<24}  {}",
                    host(l),
                    l.port,
                    l.state.as_str(),
                    rtt,
                    service,
                    info
                )?;
            }
        }
        Ok(())
    }
}

/// Seconds since the epoch, now.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
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
        let mut out = Output::new(format, &mut buf, "a buffer".into()).unwrap();
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
            "ip,port,state,rtt_us,tries,host,errno,matched,service,product,version,banner,reason,\
             tls_version,cert_subject,cert_issuer,cert_not_after,cert_days_left,captures,\
             cert_expires_first,protocol_version,info,cpe\n\
             10.0.0.7,25,open,412,1,mx,,,,,,,,,,,,,,,,,\n\
             10.0.0.1,80,unreachable,412,1,,EHOSTUNREACH,,,,,,,,,,,,,,,,\n"
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
}
