//! The guard every request passes before its handler: the defences against other web sites'
//! pages (cross-site requests, DNS rebinding), anonymous readers when a token is set, paths
//! that do not decode and clients that stall mid-request; and the security headers of every
//! response.
//!
//! Checks, in order, each answered in the JSON error shape:
//! 1. the path percent-decodes to UTF-8 (400);
//! 2. `Host`, if present, names this server: its local address, `localhost`, `127.0.0.1`,
//!    `[::1]` (with the port it listens on) or a name of `[api] hosts` (421);
//! 3. `Origin`, if present, is this server's own origin by the same rule (403);
//! 4. with a token set, the request carries it unless its path is in `[api] public` (401);
//! 5. a request that may change something (POST, PUT, PATCH, DELETE) carries JSON, or no body
//!    and no content type at all (415); its body must arrive within `[api] idle_timeout` (408)
//!    and within `[api] max_body_bytes` (413).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header::{
    AUTHORIZATION, CONTENT_LENGTH, CONTENT_SECURITY_POLICY, CONTENT_TYPE, HOST, ORIGIN,
    REFERRER_POLICY, TRANSFER_ENCODING, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;

use crate::error::ApiError;
use crate::shared::AppState;

/// The policy of every response. The status page is server-rendered HTML with one inline
/// `<style>` block and no script: nothing may load from elsewhere, run, or frame it.
pub(crate) const CSP: &str = "default-src 'self'; script-src 'none'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'; \
     base-uri 'none'; form-action 'self'";

/// The local address a connection was accepted on, put into each of its requests by the
/// accept loop; without it (tests through `oneshot`) the configured listen address counts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LocalAddr(pub(crate) SocketAddr);

/// The middleware: runs the checks, then the handler, and adds the security headers.
pub(crate) async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let mut response = match check(&state, req).await {
        Ok(req) => next.run(req).await,
        Err(e) => e.into_response(),
    };
    security_headers(response.headers_mut());
    response
}

async fn check(state: &AppState, req: Request) -> Result<Request, ApiError> {
    let config = &state.0.config;
    decodes(req.uri().path())?;
    let local = req
        .extensions()
        .get::<LocalAddr>()
        .map_or(config.listen, |l| l.0);
    let names = &config.http.hosts;
    if let Some(host) = req.headers().get(HOST) {
        let host = host.to_str().unwrap_or("");
        if !host_allowed(host, local, names) {
            return Err(ApiError::misdirected(format!(
                "Host '{host}' does not name this server; add it to [api] hosts if it does"
            )));
        }
    }
    if let Some(origin) = req.headers().get(ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        if !origin_allowed(origin, local, names) {
            return Err(ApiError::foreign_origin(format!(
                "requests from the web page of '{origin}' are refused"
            )));
        }
    }
    if let Some(token) = &config.token {
        let public = config.http.public.iter().any(|p| p == req.uri().path());
        if !public {
            check_bearer(req.headers(), token)?;
        }
    }
    if !matches!(
        *req.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    ) {
        return Ok(req);
    }
    let has_body = match req.headers().get(CONTENT_LENGTH) {
        Some(n) => n.as_bytes() != b"0",
        None => req.headers().contains_key(TRANSFER_ENCODING),
    };
    match req.headers().get(CONTENT_TYPE) {
        Some(ct) if !is_json(ct) => {
            return Err(ApiError::unsupported_media_type(format!(
                "this route takes 'Content-Type: application/json', not '{}'",
                ct.to_str().unwrap_or("?")
            )))
        }
        None if has_body => {
            return Err(ApiError::unsupported_media_type(
                "a request body needs 'Content-Type: application/json'",
            ))
        }
        _ => {}
    }
    if !has_body {
        return Ok(req);
    }
    let (parts, body) = req.into_parts();
    let limit = config.limits.max_body_bytes;
    let bytes = read_body(body, limit, config.http.idle_timeout).await?;
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// Reads a whole body, at most `limit` bytes, within `within`.
async fn read_body(body: Body, limit: usize, within: Duration) -> Result<Bytes, ApiError> {
    let read = async {
        let mut out = Vec::new();
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| ApiError::bad_request("body", e.to_string()))?;
            if out.len() + chunk.len() > limit {
                return Err(ApiError::too_large(
                    None,
                    format!("the request body is larger than {limit} bytes"),
                ));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(out))
    };
    tokio::time::timeout(within, read).await.map_err(|_| {
        ApiError::request_timeout(format!(
            "the request body did not arrive within {} s ([api] idle_timeout)",
            within.as_secs_f64()
        ))
    })?
}

/// Checks an `Authorization` header against the token. The scheme is case-insensitive (RFC
/// 7235); the comparison of the token takes the same time wherever it differs.
pub(crate) fn check_bearer(headers: &HeaderMap, token: &str) -> Result<(), ApiError> {
    let header = headers.get(AUTHORIZATION).ok_or_else(|| {
        ApiError::unauthorized("this route needs an 'Authorization: Bearer <token>' header")
    })?;
    let given = header
        .to_str()
        .ok()
        .and_then(|h| h.trim_start().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
        .ok_or_else(|| {
            ApiError::unauthorized("the Authorization header must be 'Bearer <token>'")
        })?;
    if !constant_time_eq(given.as_bytes(), token.as_bytes()) {
        return Err(ApiError::unauthorized("wrong API token"));
    }
    Ok(())
}

/// Compares without an early exit, so that the time taken does not tell how much matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Refuses a path whose percent-escapes do not decode to UTF-8 (`/v1/monitors/%FF`), before
/// a handler's path extractor answers it in plain text.
fn decodes(path: &str) -> Result<(), ApiError> {
    let raw = path.as_bytes();
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (raw[i], raw.get(i + 1).copied(), raw.get(i + 2).copied()) {
            (b'%', Some(h), Some(l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    match std::str::from_utf8(&out) {
        Ok(_) => Ok(()),
        Err(_) => Err(ApiError::bad_request(
            "path",
            "the path's percent-escapes do not decode to UTF-8",
        )),
    }
}

/// Whether a `Host` value (`name[:port]`) names this server, reached at `local`: its own
/// address, or a loopback name, with the port it listens on; or a name of `[api] hosts` (at
/// any port: a reverse proxy may listen on another). A DNS rebinding page sends its own name.
pub(crate) fn host_allowed(host: &str, local: SocketAddr, names: &[String]) -> bool {
    let host = host.trim().to_ascii_lowercase();
    let Some((name, port)) = split_host_port(&host) else {
        return false;
    };
    if names.iter().any(|n| *n == host || *n == name) {
        return true;
    }
    if port.unwrap_or(80) != local.port() {
        return false;
    }
    if name == "localhost" {
        return true;
    }
    let bare = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    match bare.parse::<IpAddr>() {
        Ok(ip) => {
            ip == local.ip()
                || ip.is_loopback()
                || local.ip().is_unspecified()
                || to_canonical(ip) == to_canonical(local.ip())
        }
        Err(_) => false,
    }
}

fn to_canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// `name` and the port of `name:port`, `[v6]:port`, `name` or `[v6]`.
fn split_host_port(host: &str) -> Option<(&str, Option<u16>)> {
    if host.is_empty() {
        return None;
    }
    let (name, port) = if host.starts_with('[') {
        let end = host.find(']')?;
        let rest = &host[end + 1..];
        match rest.strip_prefix(':') {
            Some(p) => (&host[..=end], Some(p)),
            None if rest.is_empty() => (host, None),
            None => return None,
        }
    } else {
        match host.split_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (host, None),
        }
    };
    match port {
        None => Some((name, None)),
        Some(p) => p.parse().ok().map(|p| (name, Some(p))),
    }
}

/// Whether an `Origin` value is this server's own origin: `http(s)://` and an authority that
/// [`host_allowed`] accepts. `null` (sandboxed pages, files) is foreign.
fn origin_allowed(origin: &str, local: SocketAddr, names: &[String]) -> bool {
    let lower = origin.trim().to_ascii_lowercase();
    let (authority, default_port) = if let Some(a) = lower.strip_prefix("http://") {
        (a, 80)
    } else if let Some(a) = lower.strip_prefix("https://") {
        (a, 443)
    } else {
        return false;
    };
    if authority.contains('/') {
        return false;
    }
    match split_host_port(authority) {
        Some((name, None)) => host_allowed(&format!("{name}:{default_port}"), local, names),
        Some(_) => host_allowed(authority, local, names),
        None => false,
    }
}

/// Whether a content type is JSON (`application/json`, with any parameters).
fn is_json(ct: &HeaderValue) -> bool {
    ct.to_str()
        .ok()
        .and_then(|c| c.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

/// The headers every response carries: no framing, no content sniffing, no foreign content.
fn security_headers(h: &mut HeaderMap) {
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
}

/// Adds the guard's answers to every operation of the OpenAPI document: they can come from
/// any route, before its handler.
pub(crate) struct GuardResponses;

impl utoipa::Modify for GuardResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            let reads = [&mut item.get, &mut item.head];
            for op in reads.into_iter().flatten() {
                add_common(op);
            }
            let writes = [
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ];
            for op in writes.into_iter().flatten() {
                add_common(op);
                add_response(
                    op,
                    "408",
                    "The request body did not arrive within [api] idle_timeout",
                );
                add_response(op, "413", "The request body is over [api] max_body_bytes");
                add_response(
                    op,
                    "415",
                    "A body that is not 'Content-Type: application/json'",
                );
            }
        }
    }
}

fn add_common(op: &mut utoipa::openapi::path::Operation) {
    add_response(op, "400", "The path does not decode to UTF-8");
    add_response(
        op,
        "401",
        "A token is set and the request does not carry it",
    );
    add_response(op, "403", "A foreign Origin (a page of another site)");
    add_response(
        op,
        "421",
        "A Host header that names neither this server nor a name of [api] hosts",
    );
}

fn add_response(op: &mut utoipa::openapi::path::Operation, code: &str, description: &str) {
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
    op.responses
        .responses
        .entry(code.to_string())
        .or_insert_with(|| {
            let content = ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build();
            RefOr::T(
                ResponseBuilder::new()
                    .description(description)
                    .content("application/json", content)
                    .build(),
            )
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> SocketAddr {
        "127.0.0.1:9180".parse().unwrap()
    }

    /// The comparison looks at every byte: a token differing in any one position, or in
    /// length, is refused. (That it takes the same time whatever matched rests on the code
    /// having no early exit; a timing test would be noise on a shared machine.)
    #[test]
    fn token_comparison_checks_every_byte() {
        let token = b"s3cret-token-0123456789";
        assert!(constant_time_eq(token, token));
        for i in 0..token.len() {
            let mut other = *token;
            other[i] ^= 0x01;
            assert!(!constant_time_eq(&other, token), "byte {i} ignored");
        }
        assert!(!constant_time_eq(&token[..token.len() - 1], token));
        assert!(!constant_time_eq(b"", token));
    }

    #[test]
    fn host_names_this_server_or_a_configured_name() {
        let names = vec!["porthawk.lan".to_string()];
        for ok in [
            "127.0.0.1:9180",
            "localhost:9180",
            "LOCALHOST:9180",
            "[::1]:9180",
            "127.0.0.2:9180",
            "porthawk.lan",
            "porthawk.lan:443",
        ] {
            assert!(host_allowed(ok, local(), &names), "{ok}");
        }
        for bad in [
            "attacker.example",
            "attacker.example:9180",
            "localhost",
            "127.0.0.1",
            "127.0.0.1:80",
            "10.0.0.1:9180",
            "[::1]x",
            "",
            "127.0.0.1:99999",
            "localhost.attacker.example:9180",
        ] {
            assert!(!host_allowed(bad, local(), &names), "{bad}");
        }
        let wildcard_conn: SocketAddr = "192.0.2.7:9180".parse().unwrap();
        assert!(host_allowed("192.0.2.7:9180", wildcard_conn, &[]));
        assert!(!host_allowed("192.0.2.8:9180", wildcard_conn, &[]));
    }

    #[test]
    fn origin_must_be_this_server() {
        let names = vec!["porthawk.lan".to_string()];
        for ok in [
            "http://127.0.0.1:9180",
            "http://localhost:9180",
            "https://porthawk.lan",
        ] {
            assert!(origin_allowed(ok, local(), &names), "{ok}");
        }
        for bad in [
            "null",
            "http://attacker.example",
            "http://attacker.example:9180",
            "http://127.0.0.1",
            "file://",
            "http://127.0.0.1:9180/path",
        ] {
            assert!(!origin_allowed(bad, local(), &names), "{bad}");
        }
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        let mut h = HeaderMap::new();
        for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
            h.insert(AUTHORIZATION, format!("{scheme} t0k").parse().unwrap());
            assert!(check_bearer(&h, "t0k").is_ok(), "{scheme}");
        }
        for bad in ["Basic t0k", "Bearer", "Bearert0k", "Bearer t0kx"] {
            h.insert(AUTHORIZATION, bad.parse().unwrap());
            assert!(check_bearer(&h, "t0k").is_err(), "{bad}");
        }
    }

    #[test]
    fn undecodable_paths_are_refused() {
        assert!(decodes("/v1/monitors/%FF").is_err());
        assert!(decodes("/v1/monitors/%C3%28").is_err());
        assert!(decodes("/v1/monitors/caf%C3%A9").is_ok());
        assert!(decodes("/v1/monitors/100%").is_ok());
        assert!(decodes("/v1/monitors/%zz").is_ok());
    }
}
