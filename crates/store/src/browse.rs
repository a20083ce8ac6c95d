//! Browsing a sweep's stored results, as the sweep page does: filtered by state, port,
//! service and text, one page at a time, with the count of all that match.

use rusqlite::{params, Connection};

use crate::db::{Store, StoreError};
use crate::sweeps::{result_row, ResultRow, RESULT_COLUMNS};

/// What a page of results is narrowed to; every field that is set must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResultFilter {
    /// The state: `open`, `closed`, `filtered`, `unreachable` or `error`.
    pub state: Option<String>,
    /// The port.
    pub port: Option<u16>,
    /// The service, as identification named it.
    pub service: Option<String>,
    /// Text the address, host name, banner, service, product, version or certificate subject
    /// contains (ASCII letters in any case).
    pub text: Option<String>,
}

/// The largest page [`Store::results_filtered`] returns.
pub const MAX_RESULTS_PAGE: u32 = 1000;

impl Store {
    /// Up to `limit` (at most [`MAX_RESULTS_PAGE`]) results of sweep `sweep_id` that match
    /// `filter`, after skipping `offset` of them, in the order they were stored; and how
    /// many match in all.
    pub fn results_filtered(
        &self,
        sweep_id: u64,
        filter: &ResultFilter,
        offset: u64,
        limit: u32,
    ) -> Result<(Vec<ResultRow>, u64), StoreError> {
        self.read(|c| Ok(results_filtered(c, sweep_id, filter, offset, limit)?))
    }

    /// The services among a sweep's results and how many results each has, most first, at
    /// most `limit` of them.
    pub fn result_services(
        &self,
        sweep_id: u64,
        limit: u32,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT service, COUNT(*) AS n FROM results
                 WHERE sweep_id = ?1 AND service IS NOT NULL
                 GROUP BY service ORDER BY n DESC, service LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![sweep_id as i64, limit], |r| {
                Ok((r.get(0)?, r.get::<_, i64>(1)?.max(0) as u64))
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }
}

/// `text` as a LIKE pattern that matches it anywhere, its own `%`, `_` and `\` taken
/// literally.
fn contains_pattern(text: &str) -> String {
    let mut p = String::with_capacity(text.len() + 2);
    p.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

/// The WHERE clause of a filter over `results`; its parameters are `?1` the sweep, `?2`
/// state, `?3` port, `?4` service, `?5` the text's pattern (each NULL when not set).
const FILTER: &str = "sweep_id = ?1 AND (?2 IS NULL OR state = ?2) AND (?3 IS NULL OR port = ?3)
     AND (?4 IS NULL OR service = ?4)
     AND (?5 IS NULL OR ip LIKE ?5 ESCAPE '\\' OR host LIKE ?5 ESCAPE '\\'
          OR CAST(banner AS TEXT) LIKE ?5 ESCAPE '\\' OR service LIKE ?5 ESCAPE '\\'
          OR product LIKE ?5 ESCAPE '\\' OR version LIKE ?5 ESCAPE '\\'
          OR cert_subject LIKE ?5 ESCAPE '\\')";

pub(crate) fn results_filtered(
    conn: &Connection,
    sweep_id: u64,
    f: &ResultFilter,
    offset: u64,
    limit: u32,
) -> rusqlite::Result<(Vec<ResultRow>, u64)> {
    let text = f
        .text
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(contains_pattern);
    let state = f.state.as_deref().filter(|s| !s.is_empty());
    let service = f.service.as_deref().filter(|s| !s.is_empty());
    let args = params![sweep_id as i64, state, f.port, service, text];
    let total: i64 = conn
        .prepare_cached(&format!("SELECT COUNT(*) FROM results WHERE {FILTER}"))?
        .query_row(args, |r| r.get(0))?;
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {RESULT_COLUMNS} FROM results WHERE {FILTER} ORDER BY rowid LIMIT ?6 OFFSET ?7"
    ))?;
    let rows = stmt.query_map(
        params![
            sweep_id as i64,
            state,
            f.port,
            service,
            text,
            limit.min(MAX_RESULTS_PAGE),
            offset.min(i64::MAX as u64) as i64
        ],
        result_row,
    )?;
    Ok((rows.collect::<rusqlite::Result<_>>()?, total.max(0) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweeps::NewResult;
    use porthawk_core::{PortState, ProbeRecord};

    #[test]
    fn a_page_of_results_filtered_by_port_service_and_text() {
        let dir = crate::test_support::TempDir::new("browse");
        let (store, _) = Store::open(dir.path()).unwrap();
        let id = store
            .insert_sweep(&serde_json::json!({}), true, 300, 0)
            .wait()
            .unwrap();
        let mut rows = Vec::new();
        for i in 0..300u32 {
            let ip = format!("127.0.{}.{}", i / 100, i % 100 + 1)
                .parse()
                .unwrap();
            let port = [22u16, 80, 6379][i as usize % 3];
            let mut r = ProbeRecord::new(ip, port, PortState::Open, 10, 1);
            r.banner = Some(match port {
                22 => b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n".to_vec(),
                80 => b"HTTP/1.1 200 OK\r\nServer: <script>x_100%</script>\r\n\r\n".to_vec(),
                _ => b"-ERR unknown command\r\n".to_vec(),
            });
            rows.push(NewResult::new(id, &r, None));
        }
        store.write_batch(rows, Vec::new()).wait().unwrap();
        let all = ResultFilter::default();
        let (page, total) = store.results_filtered(id, &all, 290, 50).unwrap();
        assert_eq!((page.len(), total), (10, 300));
        let by_port = ResultFilter {
            port: Some(22),
            ..ResultFilter::default()
        };
        let (page, total) = store.results_filtered(id, &by_port, 0, 20).unwrap();
        assert_eq!((page.len(), total), (20, 100));
        assert!(page.iter().all(|r| r.line.port == 22));
        let ssh = ResultFilter {
            service: Some("ssh".into()),
            ..ResultFilter::default()
        };
        assert_eq!(store.results_filtered(id, &ssh, 0, 1).unwrap().1, 100);
        // Text in any case; its % is a percent sign, not a wildcard.
        let text = |t: &str| ResultFilter {
            text: Some(t.into()),
            ..ResultFilter::default()
        };
        assert_eq!(
            store
                .results_filtered(id, &text("openssh"), 0, 1)
                .unwrap()
                .1,
            100
        );
        assert_eq!(
            store.results_filtered(id, &text("x_100%"), 0, 1).unwrap().1,
            100
        );
        assert_eq!(
            store.results_filtered(id, &text("x%100"), 0, 1).unwrap().1,
            0
        );
        assert_eq!(
            store
                .results_filtered(id, &text("127.0.2."), 0, 1)
                .unwrap()
                .1,
            100
        );
        let services = store.result_services(id, 10).unwrap();
        assert!(services.contains(&("ssh".to_string(), 100)), "{services:?}");
    }
}
