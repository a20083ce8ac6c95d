//! Delivering notifications: email over SMTP (lettre; plain, STARTTLS or implicit TLS, with
//! optional login), a generic JSON webhook and a Slack-compatible webhook, through one shared
//! reqwest client (rustls with ring for `https`). Failed deliveries are retried with exponential
//! backoff; the outcome and the number of attempts are recorded.

use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::config::{Channel, EmailSpec, HttpUrl, NotifySpec, SmtpSecurity};
use super::history::NoticeRecord;
use super::watch::{Notice, NoticeItem, NoticeKind};

/// How long one delivery attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// The most redirects a webhook may answer with before the delivery fails.
const MAX_REDIRECTS: usize = 5;

/// `2026-01-31T12:00:00Z` for milliseconds since the Unix epoch.
pub fn rfc3339(ms: u64) -> String {
    porthawk_core::rfc3339((ms / 1000) as i64)
}

/// `ip:port` (with brackets for IPv6) or `name:port`.
pub fn target_text(item: &NoticeItem) -> String {
    item.target.with_port(item.port)
}

fn state_of(kind: NoticeKind) -> &'static str {
    match kind {
        NoticeKind::Down | NoticeKind::Reminder => "down",
        NoticeKind::Up | NoticeKind::PartialEnd => "up",
        NoticeKind::Flapping => "flapping",
        NoticeKind::Partial => "partial",
    }
}

/// The subject line of a notice.
pub fn subject(n: &Notice) -> String {
    let what = match n.kind {
        NoticeKind::Down => "DOWN",
        NoticeKind::Up => "recovered",
        NoticeKind::Flapping => "FLAPPING",
        NoticeKind::Reminder => "still DOWN",
        NoticeKind::Partial => "PARTIAL (down from some vantage points)",
        NoticeKind::PartialEnd => "seen up from every vantage point again",
    };
    match n.items.as_slice() {
        [one] => format!("[porthawk] {}: {what}: {}", n.monitor, target_text(one)),
        many => format!("[porthawk] {}: {what}: {} targets", n.monitor, many.len()),
    }
}

/// The text of a notice: the subject, then one line per target.
pub fn body(n: &Notice) -> String {
    let mut s = format!(
        "Monitor {}: {} target(s) {} at {}:\n",
        n.monitor,
        n.items.len(),
        match n.kind {
            NoticeKind::Down => "went DOWN",
            NoticeKind::Up => "recovered",
            NoticeKind::Flapping => "are flapping (changing state too often; reported once)",
            NoticeKind::Reminder => "are still DOWN",
            NoticeKind::Partial =>
                "are seen DOWN from some vantage points, fewer than the quorum (a path or \
                 regional problem; no action runs)",
            NoticeKind::PartialEnd => "are seen up from every vantage point again",
        },
        rfc3339(n.at_ms)
    );
    for item in &n.items {
        let _ = write!(s, "  {}", target_text(item));
        if let Some(h) = &item.host {
            let _ = write!(s, " ({h})");
        }
        if let Some(r) = &item.reason {
            let _ = write!(s, ": {r}");
        }
        s.push('\n');
    }
    s
}

/// The JSON body of a generic webhook: the first target flat (`monitor, target, port, state,
/// reason, time`), every target in `targets`.
pub fn webhook_json(n: &Notice) -> serde_json::Value {
    let first = n.items.first();
    serde_json::json!({
        "monitor": n.monitor,
        "kind": n.kind.as_str(),
        "state": state_of(n.kind),
        "target": first.map(|i| i.target.to_string()),
        "port": first.map(|i| i.port),
        "reason": first.and_then(|i| i.reason.clone()),
        "time": rfc3339(n.at_ms),
        "time_ms": n.at_ms,
        "targets": n.items.iter().map(|i| serde_json::json!({
            "target": i.target.to_string(),
            "port": i.port,
            "host": i.host,
            "reason": i.reason,
        })).collect::<Vec<_>>(),
    })
}

/// The JSON body of a Slack message: the subject and the text as one text, escaped by
/// [`slack_escape`].
fn slack_message(subject: &str, text: &str) -> serde_json::Value {
    let text = format!("{subject}\n{text}");
    serde_json::json!({ "text": slack_escape(&text) })
}

/// Text for Slack's message format, with `&`, `<` and `>` escaped as Slack documents: a
/// banner or reason sent by a probed host (or a name it answers to) can then never become a
/// mention (`<!channel>`, `<@U123>`), a disguised link (`<https://evil|docs>`) or another
/// entity; it shows as the characters it is.
pub fn slack_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// Delivers `notice` through `spec`, retrying with backoff; returns its record.
pub async fn deliver(spec: &NotifySpec, notice: &Notice) -> NoticeRecord {
    let message = Outgoing {
        subject: subject(notice),
        text: body(notice),
        json: webhook_json(notice),
    };
    let (outcome, attempts, error) = deliver_message(spec, &message, &notice.monitor).await;
    record(spec, notice, outcome, attempts, error)
}

/// A message as each channel sends it: the subject and text of an email (and, together, of
/// a Slack message), the body of a JSON webhook.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The subject line.
    pub subject: String,
    /// The text, one line per item.
    pub text: String,
    /// The JSON body of a generic webhook.
    pub json: serde_json::Value,
}

/// Delivers `message` through `spec`, retrying with backoff: `sent` or `failed`, the
/// attempts made and the last error. `about` names what it is about in the log.
pub async fn deliver_message(
    spec: &NotifySpec,
    message: &Outgoing,
    about: &str,
) -> (&'static str, u32, Option<String>) {
    let mut attempts = 0;
    let mut wait = spec.backoff;
    let (outcome, error) = loop {
        attempts += 1;
        let attempt =
            tokio::time::timeout(ATTEMPT_TIMEOUT, send_once(&spec.channel, message)).await;
        let e = match attempt {
            Ok(Ok(())) => break ("sent", None),
            Ok(Err(e)) => e,
            Err(_) => format!("no answer within {ATTEMPT_TIMEOUT:?}"),
        };
        if attempts > spec.retries {
            break ("failed", Some(e));
        }
        tokio::time::sleep(wait).await;
        wait = wait.saturating_mul(2);
    };
    if let Some(e) = &error {
        tracing::warn!(
            notification = %spec.name,
            about,
            attempts,
            error = %e,
            "notification failed"
        );
    }
    (outcome, attempts, error)
}

/// The record of a notice that was not delivered (`silenced`, `dry_run`).
pub fn record(
    spec: &NotifySpec,
    notice: &Notice,
    outcome: &str,
    attempts: u32,
    error: Option<String>,
) -> NoticeRecord {
    NoticeRecord {
        monitor: notice.monitor.clone(),
        notify: spec.name.clone(),
        channel: spec.channel.as_str().to_string(),
        kind: notice.kind.as_str().to_string(),
        targets: notice.items.iter().map(target_text).collect(),
        outcome: outcome.to_string(),
        attempts,
        error,
        at_ms: notice.at_ms,
    }
}

async fn send_once(channel: &Channel, m: &Outgoing) -> Result<(), String> {
    match channel {
        Channel::Email(e) => send_email(e, m).await,
        Channel::Webhook(url) => post_json(url, m.json.to_string()).await,
        Channel::Slack(url) => post_json(url, slack_message(&m.subject, &m.text).to_string()).await,
    }
}

async fn send_email(e: &EmailSpec, m: &Outgoing) -> Result<(), String> {
    let mut message = Message::builder()
        .from(
            e.from
                .parse()
                .map_err(|x| format!("from '{}': {x}", e.from))?,
        )
        .subject(m.subject.clone())
        .header(ContentType::TEXT_PLAIN);
    for to in &e.to {
        message = message.to(to.parse().map_err(|x| format!("to '{to}': {x}"))?);
    }
    let message = message.body(m.text.clone()).map_err(|x| x.to_string())?;
    let tls = |host: &str| TlsParameters::new(host.to_string()).map_err(|x| x.to_string());
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(e.host.clone())
        .port(e.port)
        .timeout(Some(ATTEMPT_TIMEOUT))
        .tls(match e.security {
            SmtpSecurity::None => Tls::None,
            SmtpSecurity::StartTls => Tls::Required(tls(&e.host)?),
            SmtpSecurity::Implicit => Tls::Wrapper(tls(&e.host)?),
        });
    if let Some((user, password)) = &e.credentials {
        builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
    }
    builder
        .build()
        .send(message)
        .await
        .map(|_| ())
        .map_err(|x| format!("smtp://{}:{}: {x}", e.host, e.port))
}

/// The one HTTP client of every webhook and Slack notice, built on first use: rustls with the
/// ring provider and the webpki roots (the same trust as the SMTP client), proxies from the
/// environment (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY`), at most
/// [`MAX_REDIRECTS`] redirects, [`ATTEMPT_TIMEOUT`] per request. Its root store and TLS setup
/// are shared by all sends. It keeps no idle connections: a pooled connection belongs to the
/// tokio runtime that opened it, and the client is process-wide while runtimes are not (tests
/// run one each); notices are rare enough that a fresh connection per send costs nothing.
fn http_client() -> Result<&'static reqwest::Client, String> {
    static CLIENT: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    CLIENT
        .get_or_init(build_http_client)
        .as_ref()
        .map_err(Clone::clone)
}

fn build_http_client() -> Result<reqwest::Client, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS setup: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
        .timeout(ATTEMPT_TIMEOUT)
        .pool_max_idle_per_host(0)
        .user_agent(concat!("porthawk/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("HTTP client setup: {}", error_chain(&e)))
}

/// An error and its causes on one line: reqwest's own message alone ("error sending
/// request") does not say what went wrong.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}

/// POSTs a JSON body; any 2xx answer (after redirects) is a delivery.
pub async fn post_json(url: &HttpUrl, body: String) -> Result<(), String> {
    let response = http_client()?
        .post(url.as_url().clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| format!("{url}: {}", error_chain(&e.without_url())))?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("{url}: HTTP status {}", status.as_u16()))
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;

    use super::*;

    fn notice(kind: NoticeKind, n: usize) -> Notice {
        Notice {
            notify: "x".into(),
            monitor: "mail".into(),
            kind,
            items: (0..n)
                .map(|i| NoticeItem {
                    target: format!("127.0.0.{}", i + 1).parse().unwrap(),
                    port: 25,
                    host: (i == 0).then(|| "mx1".to_string()),
                    reason: Some("closed (connection refused)".into()),
                })
                .collect(),
            at_ms: 1_767_225_600_000,
            silenced: false,
        }
    }

    #[test]
    fn texts_name_monitor_targets_and_time() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_767_225_600_000), "2026-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400_000 + 61_000), "2000-02-29T00:01:01Z");
        let n = notice(NoticeKind::Down, 3);
        assert_eq!(subject(&n), "[porthawk] mail: DOWN: 3 targets");
        let b = body(&n);
        assert!(b.contains("127.0.0.1:25 (mx1): closed"), "{b}");
        assert_eq!(b.lines().count(), 4);
        let j = webhook_json(&notice(NoticeKind::Up, 1));
        assert_eq!(j["state"], "up");
        assert_eq!(j["target"], "127.0.0.1");
        assert_eq!(j["port"], 25);
        assert_eq!(j["time"], "2026-01-01T00:00:00Z");
        assert_eq!(j["targets"].as_array().unwrap().len(), 1);
    }

    /// With several vantage points a notice says what each sees, as the issue asks:
    /// `mx1:25 down from eu (3/3), up from us`; a partial outage says it runs no action.
    #[test]
    fn texts_name_the_vantage_points() {
        let mut n = notice(NoticeKind::Down, 1);
        n.items[0].reason = Some("down from eu (3/3), up from us".into());
        assert!(
            body(&n).contains("127.0.0.1:25 (mx1): down from eu (3/3), up from us"),
            "{}",
            body(&n)
        );
        let mut p = notice(NoticeKind::Partial, 1);
        p.items[0].reason = n.items[0].reason.clone();
        assert_eq!(
            subject(&p),
            "[porthawk] mail: PARTIAL (down from some vantage points): 127.0.0.1:25"
        );
        assert!(body(&p).contains("no action runs"), "{}", body(&p));
        let j = webhook_json(&p);
        assert_eq!(
            (j["kind"].as_str(), j["state"].as_str()),
            (Some("partial"), Some("partial"))
        );
        assert_eq!(j["reason"], "down from eu (3/3), up from us");
        let e = webhook_json(&notice(NoticeKind::PartialEnd, 1));
        assert_eq!(
            (e["kind"].as_str(), e["state"].as_str()),
            (Some("partial_end"), Some("up"))
        );
    }

    #[test]
    fn slack_text_escapes_what_peers_sent() {
        assert_eq!(
            slack_escape("<!channel> <https://evil.example|docs> & <@U1>"),
            "&lt;!channel&gt; &lt;https://evil.example|docs&gt; &amp; &lt;@U1&gt;"
        );
        assert_eq!(slack_escape("&lt;"), "&amp;lt;");
        let mut n = notice(NoticeKind::Down, 2);
        n.items[0].reason = Some("open, but expect: no match in '<!channel> pwned'".into());
        n.items[1].reason = Some("<https://evil.example/|click for the fix> & <!here>".into());
        n.items[1].host = Some("<!everyone>".into());
        let text = slack_message(&subject(&n), &body(&n))["text"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(!text.contains(['<', '>']), "{text}");
        assert!(text.contains("&lt;!channel&gt; pwned"), "{text}");
        assert!(
            text.contains("&lt;https://evil.example/|click for the fix&gt; &amp; &lt;!here&gt;"),
            "{text}"
        );
        assert!(text.contains("(&lt;!everyone&gt;)"), "{text}");
    }

    /// One request as the sink saw it: the head (request line and headers) and the body.
    struct Seen {
        head: String,
        body: String,
    }

    impl Seen {
        fn header(&self, name: &str) -> Option<&str> {
            self.head.lines().find_map(|line| {
                let (n, v) = line.split_once(':')?;
                n.eq_ignore_ascii_case(name).then(|| v.trim())
            })
        }
    }

    /// A response with `status`, no body, and the connection closed after it.
    fn status(code: u16) -> String {
        format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    }

    /// An HTTP sink on a real socket that answers each request with the next of `responses`
    /// and hands back what it received.
    fn sink(responses: Vec<String>) -> (u16, std::thread::JoinHandle<Vec<Seen>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for response in responses {
                let (mut c, _) = l.accept().unwrap();
                c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut r = BufReader::new(c.try_clone().unwrap());
                let mut head = String::new();
                let mut len = 0;
                loop {
                    let mut line = String::new();
                    r.read_line(&mut line).unwrap();
                    if line == "\r\n" || line.is_empty() {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                    head.push_str(&line);
                }
                let mut b = vec![0; len];
                r.read_exact(&mut b).unwrap();
                seen.push(Seen {
                    head,
                    body: String::from_utf8(b).unwrap(),
                });
                c.write_all(response.as_bytes()).unwrap();
            }
            seen
        });
        (port, t)
    }

    fn webhook(url: &str, retries: u32) -> NotifySpec {
        NotifySpec {
            name: "hook".into(),
            channel: Channel::Webhook(HttpUrl::parse(url).unwrap()),
            retries,
            backoff: Duration::from_millis(10),
        }
    }

    #[tokio::test]
    async fn webhooks_send_host_with_its_port_and_a_json_body() {
        let (port, t) = sink(vec![status(204)]);
        let spec = webhook(&format!("http://127.0.0.1:{port}/hook"), 0);
        let r = deliver(&spec, &notice(NoticeKind::Down, 1)).await;
        assert_eq!(
            (r.outcome.as_str(), r.attempts),
            ("sent", 1),
            "{:?}",
            r.error
        );
        let seen = t.join().unwrap();
        assert!(
            seen[0].head.starts_with("POST /hook HTTP/1.1\r\n"),
            "{}",
            seen[0].head
        );
        assert_eq!(
            seen[0].header("host"),
            Some(format!("127.0.0.1:{port}").as_str())
        );
        assert_eq!(seen[0].header("content-type"), Some("application/json"));
        let j: serde_json::Value = serde_json::from_str(&seen[0].body).unwrap();
        assert_eq!(
            (j["monitor"].as_str(), j["port"].as_u64()),
            (Some("mail"), Some(25))
        );
    }

    #[tokio::test]
    async fn webhooks_follow_a_redirect_with_their_body() {
        let (port, t) = sink(vec![
            format!(
                "HTTP/1.1 307 Moved\r\nLocation: /moved\r\nContent-Length: 0\r\n\
                 Connection: close\r\n\r\n"
            ),
            status(200),
        ]);
        let spec = webhook(&format!("http://127.0.0.1:{port}/old"), 0);
        let r = deliver(&spec, &notice(NoticeKind::Up, 1)).await;
        assert_eq!(
            (r.outcome.as_str(), r.attempts),
            ("sent", 1),
            "{:?}",
            r.error
        );
        let seen = t.join().unwrap();
        assert!(seen[1].head.starts_with("POST /moved "), "{}", seen[1].head);
        assert_eq!(seen[1].body, seen[0].body);
    }

    #[tokio::test]
    async fn https_webhooks_speak_tls() {
        // A peer that reads the first bytes and hangs up: the client must have opened with a
        // TLS handshake record (the ring provider is set; nothing panics), and the failed
        // handshake is a failed delivery with a reason.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut first = [0u8; 3];
            c.read_exact(&mut first).unwrap();
            first
        });
        let spec = webhook(&format!("https://127.0.0.1:{port}/hook"), 0);
        let r = deliver(&spec, &notice(NoticeKind::Down, 1)).await;
        assert_eq!((r.outcome.as_str(), r.attempts), ("failed", 1));
        let error = r.error.unwrap();
        assert!(
            error.starts_with(&format!("https://127.0.0.1:{port}/hook: ")),
            "{error}"
        );
        // A handshake record (0x16) of TLS 1.x (0x03 0x01 in a ClientHello's record header).
        assert_eq!(t.join().unwrap(), [0x16, 0x03, 0x01]);
    }

    #[tokio::test]
    async fn failed_webhooks_are_retried_with_backoff() {
        let (port, t) = sink(vec![status(500), status(503), status(200)]);
        let spec = webhook(&format!("http://127.0.0.1:{port}/h"), 4);
        let r = deliver(&spec, &notice(NoticeKind::Down, 2)).await;
        assert_eq!((r.outcome.as_str(), r.attempts), ("sent", 3));
        assert_eq!(r.targets, ["127.0.0.1:25", "127.0.0.2:25"]);
        let seen = t.join().unwrap();
        let j: serde_json::Value = serde_json::from_str(&seen[2].body).unwrap();
        assert_eq!(j["monitor"], "mail");
        assert_eq!(j["state"], "down");
    }

    #[tokio::test]
    async fn undeliverable_notices_fail_after_the_retries() {
        let (port, t) = sink(vec![status(404), status(404)]);
        let spec = NotifySpec {
            name: "chat".into(),
            channel: Channel::Slack(HttpUrl::parse(&format!("http://127.0.0.1:{port}/")).unwrap()),
            retries: 1,
            backoff: Duration::from_millis(1),
        };
        let r = deliver(&spec, &notice(NoticeKind::Flapping, 1)).await;
        assert_eq!((r.outcome.as_str(), r.attempts), ("failed", 2));
        assert!(r.error.unwrap().contains("404"));
        let seen = t.join().unwrap();
        let j: serde_json::Value = serde_json::from_str(&seen[0].body).unwrap();
        assert!(j["text"].as_str().unwrap().contains("FLAPPING"));
    }
}
