//! Text protocols that [`super::identify`] recognises beyond the mail, file-transfer and
//! web greetings of the parent module: rsync, svnserve, IRC, git daemon, ZooKeeper, RTSP, and
//! the products behind an HTTP answer (proxies, JSON APIs, metrics pages).

use super::{
    field, find, first_line, header_lines, product_and_version, skip_spaces, starts_with_ci,
    version_at, Identity,
};

/// `@RSYNCD: 32.0 sha512 sha256 sha1 md5 md4\n`: the rsync daemon's greeting, which names the
/// protocol it speaks (not the software's version).
pub(super) fn rsync(r: &[u8]) -> Option<Identity> {
    let rest = r.strip_prefix(b"@RSYNCD: ")?;
    let version = version_at(first_line(rest))?;
    Some(Identity::new("rsync").protocol(Some(version)))
}

/// `( success ( 2 2 ( ) ( edit-pipeline svndiff1 ... ) ) ) `: svnserve's greeting, the lowest
/// and highest protocol versions it speaks, then its capabilities.
pub(super) fn svnserve(r: &[u8]) -> Option<Identity> {
    let rest = r.strip_prefix(b"( success ( ")?;
    let mut words = rest.split(|&c| c == b' ');
    let low = words.next().filter(|w| is_number(w))?;
    let high = words.next().filter(|w| is_number(w))?;
    let _ = low;
    Some(
        Identity::new("svn")
            .product(Some("Subversion".into()))
            .protocol(field(high)),
    )
}

fn is_number(w: &[u8]) -> bool {
    !w.is_empty() && w.len() <= 4 && w.iter().all(u8::is_ascii_digit)
}

/// IRC server messages: `:irc.example.net NOTICE * :*** Looking up your hostname`,
/// `:irc.example.net 451 * :Connection not registered`, `NOTICE AUTH :*** ...`,
/// `ERROR :Closing Link: ...`. The server's name goes in `info`; the software comes from a
/// `002` (`Your host is ..., running version ngircd-26.1`) or `004` reply when there is one.
pub(super) fn irc(r: &[u8]) -> Option<Identity> {
    let line = first_line(r);
    let plain = line.starts_with(b"NOTICE AUTH :")
        || line.starts_with(b"NOTICE * :")
        || line.starts_with(b"ERROR :")
        || line.starts_with(b"PING :");
    let server = if plain {
        None
    } else {
        let rest = line.strip_prefix(b":")?;
        let space = rest.iter().position(|&c| c == b' ')?;
        let (prefix, tail) = (&rest[..space], &rest[space + 1..]);
        let command = &tail[..tail.iter().position(|&c| c == b' ')?];
        let numeric = command.len() == 3 && command.iter().all(u8::is_ascii_digit);
        let printable = prefix.iter().all(|c| c.is_ascii_graphic());
        if prefix.is_empty()
            || !printable
            || !(numeric || command == b"NOTICE" || command == b"ERROR")
        {
            return None;
        }
        field(prefix)
    };
    let mut id = Identity::new("irc").info(server.map(|s| format!("server: {s}")));
    let head = &r[..r.len().min(1024)];
    if let Some(at) = find(head, b"running version ") {
        let (product, version) = irc_software(first_line(&head[at + 16..]));
        id = id.product(product).version(version);
    }
    Some(id)
}

/// `ngircd-26.1 (x86_64/pc/linux-gnu)`, `UnrealIRCd-6.1.2`, `InspIRCd-3`.
fn irc_software(text: &[u8]) -> (Option<String>, Option<String>) {
    let word = &text[..text.iter().position(|&c| c == b' ').unwrap_or(text.len())];
    let Some(dash) = word.iter().position(|&c| c == b'-') else {
        return (field(word), None);
    };
    let name = &word[..dash];
    let product = if name.eq_ignore_ascii_case(b"ngircd") {
        Some("ngIRCd".to_string())
    } else {
        field(name)
    };
    (product, version_at(&word[dash + 1..]))
}

/// A git daemon's ref advertisement: pkt-lines of a 40-hex object id and a ref name, the
/// first carrying capabilities after a NUL (`agent=git/2.39.5`); or an `ERR` pkt-line.
pub(super) fn git(r: &[u8]) -> Option<Identity> {
    let len = r.get(..4)?;
    if !len.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let payload = &r[4..];
    if payload.starts_with(b"ERR ") {
        return Some(Identity::new("git"));
    }
    let oid = payload.get(..41)?;
    if !oid[..40]
        .iter()
        .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
        || oid[40] != b' '
    {
        return None;
    }
    let head = &r[..r.len().min(1024)];
    let version = find(head, b"agent=git/").and_then(|at| version_at(&head[at + 10..]));
    Some(
        Identity::new("git")
            .product(Some("git".into()))
            .version(version),
    )
}

/// ZooKeeper's answer to `srvr`: `Zookeeper version: 3.8.4-9316c2a7a97e1666d8f4593f34dd6fc36ecc436c, built on ...`.
pub(super) fn zookeeper(r: &[u8]) -> Option<Identity> {
    let rest = r.strip_prefix(b"Zookeeper version: ")?;
    let v = first_line(rest);
    let v = &v[..v
        .iter()
        .position(|&c| c == b'-' || c == b',')
        .unwrap_or(v.len())];
    Some(
        Identity::new("zookeeper")
            .product(Some("Zookeeper".into()))
            .version(version_at(v)),
    )
}

/// `RTSP/1.0 200 OK`, with the product from `Server`: VLC's `VLC/3.0.24` is `VLC rtspd`
/// (nmap's name), FFmpeg's `Lavf59.27.100` (libavformat's own version, not FFmpeg's) is
/// `FFmpeg libavformat`.
pub(super) fn rtsp(r: &[u8]) -> Option<Identity> {
    let rest = r.strip_prefix(b"RTSP/1.")?;
    if !rest.first()?.is_ascii_digit() {
        return None;
    }
    let id = Identity::new("rtsp");
    let Some(value) = header_value(r, b"server:") else {
        return Some(id);
    };
    if let Some(v) = value.strip_prefix(b"Lavf") {
        if let Some(version) = version_at(v) {
            return Some(
                id.product(Some("FFmpeg libavformat".into()))
                    .version(Some(version)),
            );
        }
    }
    let (product, version) = product_and_version(value);
    let product = match product.as_deref() {
        Some("VLC") => Some("VLC rtspd".to_string()),
        _ => product,
    };
    Some(id.product(product).version(version))
}

/// The page VLC's web server (its HTTP and its RTSP ports alike) sends for a path it does
/// not serve: `404 Not found (/)` and a link to VideoLAN. No Server header, no version; the
/// plan follows it up with the RTSP probe, which VLC answers with its version.
fn vlc_not_found(body: &[u8]) -> bool {
    find(body, b"<a href=\"http://www.videolan.org\">VideoLAN</a>").is_some()
}

/// The value of the header `name` (lower case, with its colon), in the header block of `r`.
pub(super) fn header_value<'a>(r: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    header_lines(r)
        .find(|l| starts_with_ci(l, name))
        .map(|l| skip_spaces(&l[name.len()..]))
}

/// An HTTP answer that has not all arrived yet, within what identification reads: its head
/// is not complete, or its body is shorter than its `Content-Length`. Reading on may tell
/// more (VLC, Docker, Kubernetes and the JSON APIs are named by the body only); a reply that
/// stops short is judged as it is once the read times out or the peer closes.
pub(super) fn http_incomplete(r: &[u8]) -> bool {
    if !r.starts_with(b"HTTP/") || r.len() >= super::IDENTIFY_SCAN_LIMIT {
        return false;
    }
    let Some(head_end) = find(r, b"\r\n\r\n")
        .map(|at| at + 4)
        .or_else(|| find(r, b"\n\n").map(|at| at + 2))
    else {
        return true;
    };
    let Some(length) = header_value(r, b"content-length:")
        .and_then(|v| std::str::from_utf8(v.trim_ascii()).ok())
        .and_then(|v| v.parse::<usize>().ok())
    else {
        return false;
    };
    r.len() - head_end < length
}

/// The body of an HTTP answer: what follows the first empty line.
fn body(r: &[u8]) -> &[u8] {
    find(r, b"\r\n\r\n")
        .map(|at| &r[at + 4..])
        .or_else(|| find(r, b"\n\n").map(|at| &r[at + 2..]))
        .unwrap_or(&[])
}

/// The string value of a JSON member `"name" : "value"` in `json`, spaced either way.
fn json_string<'a>(json: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let mut key = Vec::with_capacity(name.len() + 2);
    key.push(b'"');
    key.extend_from_slice(name);
    key.push(b'"');
    let at = find(json, &key)?;
    let rest = skip_json_space(&json[at + key.len()..]);
    let rest = skip_json_space(rest.strip_prefix(b":")?);
    let rest = rest.strip_prefix(b"\"")?;
    Some(&rest[..rest.iter().position(|&c| c == b'"')?])
}

fn skip_json_space(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|c| c.is_ascii_whitespace()).count();
    &b[n..]
}

/// Products that the `Server` header names, as they are printed, with the service they make
/// the port (proxies are `http-proxy` in nmap's vocabulary).
const HTTP_PRODUCTS: &[(&[u8], &str, &str)] = &[
    (b"squid", "Squid", "http-proxy"),
    (b"tinyproxy", "tinyproxy", "http-proxy"),
    (b"haproxy", "HAProxy", "http-proxy"),
    (b"cups", "CUPS", "ipp"),
    (b"docker", "Docker", "docker"),
];

/// The landing page of a Prometheus exporter (`GET /` on `prometheus-node-exporter`): a
/// title that names an exporter, and a link to `/metrics`. The title (`Node Exporter`).
fn exporter_landing_page(body: &[u8]) -> Option<&[u8]> {
    find(body, b"href=\"/metrics\"")?;
    let start = super::find_ci(body, b"<title>")? + 7;
    let len = super::find_ci(&body[start..], b"</title>")?;
    let title = &body[start..start + len];
    super::find_ci(title, b"exporter").map(|_| title)
}

/// etcd's client port answers every request, `GET /` included (a `404 page not found`),
/// with its own fixed CORS headers: the methods and headers it allows, exactly these. The
/// version comes from `/version`, the plan's `etcd` probe, which this identity calls for.
fn etcd_cors(r: &[u8]) -> bool {
    let is = |name: &[u8], value: &[u8]| {
        header_value(r, name).is_some_and(|v| v.trim_ascii().eq_ignore_ascii_case(value))
    };
    is(
        b"access-control-allow-methods:",
        b"POST, GET, OPTIONS, PUT, DELETE",
    ) && is(
        b"access-control-allow-headers:",
        b"accept, content-type, authorization",
    )
}

/// Refines a plain HTTP identity with what the rest of the answer tells: proxies (from the
/// `Server` product, `Via`, or their own error pages), and the JSON APIs and pages of
/// Elasticsearch, OpenSearch, etcd, Docker (`docker` in nmap's vocabulary, with the API
/// version as `protocol_version`) and Prometheus exporters.
pub(super) fn refine_http(r: &[u8], mut id: Identity) -> Identity {
    if let Some(product) = id.product.as_deref() {
        let known = HTTP_PRODUCTS
            .iter()
            .find(|(name, _, _)| product.as_bytes().eq_ignore_ascii_case(name));
        if let Some(&(_, name, service)) = known {
            id.service = service;
            id.product = Some(name.into());
        }
        if id.service == "docker" {
            id.protocol_version = header_value(r, b"api-version:").and_then(version_at);
        }
        return id;
    }
    let body = body(&r[..r.len().min(super::IDENTIFY_SCAN_LIMIT)]);
    if let Some(via) = header_value(r, b"via:") {
        if let Some(at) = super::find_ci(via, b"(squid/") {
            return Identity::new("http-proxy")
                .product(Some("Squid".into()))
                .version(version_at(&via[at + 7..]));
        }
    }
    // HAProxy's own answers carry no Server header.
    if find(body, b"Your browser sent an invalid request.").is_some()
        || find(body, b"No server is available to handle this request.").is_some()
    {
        return Identity::new("http-proxy").product(Some("HAProxy".into()));
    }
    if find(body, b"You Know, for Search").is_some() {
        let version = json_string(body, b"number").and_then(version_at);
        return id
            .product(Some("Elasticsearch".into()))
            .version(version)
            .info(
                json_string(body, b"cluster_name")
                    .and_then(field)
                    .map(|c| format!("cluster: {c}")),
            );
    }
    if json_string(body, b"distribution") == Some(b"opensearch") {
        let version = json_string(body, b"number").and_then(version_at);
        return id.product(Some("OpenSearch".into())).version(version);
    }
    if let Some(v) = json_string(body, b"etcdserver") {
        return id.product(Some("etcd".into())).version(version_at(v));
    }
    if etcd_cors(r) {
        return id.product(Some("etcd".into()));
    }
    if find(body, b"# HELP ").is_some() && find(body, b"# TYPE ").is_some() {
        return id.product(Some("Prometheus exporter".into()));
    }
    if let Some(name) = exporter_landing_page(body) {
        return id
            .product(Some("Prometheus exporter".into()))
            .info(field(name));
    }
    if let Some(api) = json_string(body, b"ApiVersion") {
        let version = json_string(body, b"Version").and_then(version_at);
        return Identity::new("docker")
            .product(Some("Docker".into()))
            .version(version)
            .protocol(version_at(api));
    }
    if docker_not_found(r, body) {
        return Identity::new("docker").product(Some("Docker".into()));
    }
    if let Some(v) = kubernetes_version(body) {
        return id.product(Some("Kubernetes".into())).version(version_at(v));
    }
    if kubernetes_status(body) {
        return id.product(Some("Kubernetes".into()));
    }
    if vlc_not_found(body) {
        return id.product(Some("VLC".into()));
    }
    id
}

/// The Kubernetes API server's `/version`: `{"major": "1", "minor": "28", "gitVersion":
/// "v1.28.2", ..., "platform": "linux/amd64"}` (k8s.io/apimachinery's `version.Info`); the
/// `gitVersion`.
fn kubernetes_version(body: &[u8]) -> Option<&[u8]> {
    let json = body.trim_ascii_start().starts_with(b"{");
    let fields = json_string(body, b"major").is_some()
        && json_string(body, b"minor").is_some()
        && json_string(body, b"platform").is_some();
    json_string(body, b"gitVersion").filter(|_| json && fields)
}

/// The Kubernetes API server's answer to a request it refuses (`GET /` without credentials:
/// 401, or 403 for `system:anonymous`): a `Status` object of API group `v1`. The version
/// comes from `/version`, the plan's `kubernetes` probe, which this identity calls for.
fn kubernetes_status(body: &[u8]) -> bool {
    body.trim_ascii_start().starts_with(b"{")
        && json_string(body, b"kind") == Some(b"Status")
        && json_string(body, b"apiVersion") == Some(b"v1")
        && json_string(body, b"status") == Some(b"Failure")
}

/// The Docker Engine API's answer to `GET /`: a JSON 404 without a `Server` header (only
/// its API routes add one), `{"message":"page not found"}`. The version comes from
/// `/version`, the plan's `docker` probe, which this identity calls for.
fn docker_not_found(r: &[u8], body: &[u8]) -> bool {
    let json = header_value(r, b"content-type:")
        .is_some_and(|v| v.trim_ascii().eq_ignore_ascii_case(b"application/json"));
    let not_found = r.starts_with(b"HTTP/1.0 404 ") || r.starts_with(b"HTTP/1.1 404 ");
    json && not_found && body.starts_with(b"{\"message\":\"page not found\"}")
}
