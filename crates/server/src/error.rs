//! The one error type of the HTTP API, and the errors of starting a server.

use std::path::PathBuf;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// An error answered by the API: every handler returns `Result<_, ApiError>`, so every error
/// has the same JSON shape, `{"error": {"code", "message", "field"}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable machine-readable code, such as `bad_request` or `not_found`.
    pub code: &'static str,
    /// A sentence for people.
    pub message: String,
    /// The request field at fault (`targets[2]`, `probe.tries`), where there is one.
    pub field: Option<String>,
    /// What the log says about a server failure (and the client is not told), logged when
    /// the error becomes a response.
    detail: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
            detail: None,
        }
    }

    /// Names the request field at fault.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// 400: the request is malformed or a field is invalid.
    pub fn bad_request(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message).with_field(field)
    }

    /// 400: the body is not JSON at all.
    pub fn bad_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_json", message)
    }

    /// 401: a mutating route without the right bearer token.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403: a target outside the allow-list.
    pub fn forbidden(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message).with_field(field)
    }

    /// 404: no such sweep or route.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 409: the request does not fit the resource's state.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 413: a request body or a sweep over its limit.
    pub fn too_large(field: Option<&str>, message: impl Into<String>) -> Self {
        let e = Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message);
        match field {
            Some(f) => e.with_field(f),
            None => e,
        }
    }

    /// 429: too many sweeps at once.
    pub fn too_many(message: impl Into<String>) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "too_many_sweeps", message)
    }

    /// 403: a request from a foreign `Origin` (another web site's page).
    pub fn foreign_origin(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "foreign_origin", message).with_field("Origin")
    }

    /// 408: the client stopped sending its request body.
    pub fn request_timeout(message: impl Into<String>) -> Self {
        Self::new(StatusCode::REQUEST_TIMEOUT, "request_timeout", message)
    }

    /// 415: a body that is not JSON on a route that changes something.
    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            message,
        )
        .with_field("Content-Type")
    }

    /// 421: a `Host` header that names neither this server nor a configured name (a DNS
    /// rebinding page, or a misdirected request).
    pub fn misdirected(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::MISDIRECTED_REQUEST,
            "misdirected_request",
            message,
        )
        .with_field("Host")
    }

    /// 503: the server cannot take the request now (its store is unhealthy).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// The error of a JSON body that `serde_path_to_error` read: a syntax error is
    /// `bad_json`; a field of the wrong type, missing or unknown is `bad_request` naming the
    /// field path, as in `probe.timeout_ms: invalid type: string "x", expected u64`.
    pub fn from_json(e: serde_path_to_error::Error<serde_json::Error>) -> Self {
        let inner = e.inner();
        let message = Self::json_message(inner);
        if !inner.is_data() {
            return Self::bad_json(format!("the body is not valid JSON: {message}"));
        }
        let mut path = e.path().to_string();
        if path == "." {
            path.clear();
        }
        // A missing field is reported at the object that lacks it; name the field itself.
        if let Some(name) = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.strip_suffix('`'))
        {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(name);
        }
        if path.is_empty() {
            return Self::bad_json(format!("the body does not fit the request: {message}"));
        }
        Self::bad_request(&path, format!("{path}: {message}"))
    }

    /// A serde_json error's message without its position (`at line 1 column 9`), which means
    /// little to a client that sent one line.
    pub fn json_message(e: &serde_json::Error) -> String {
        let full = e.to_string();
        let suffix = format!(" at line {} column {}", e.line(), e.column());
        match full.strip_suffix(&suffix) {
            Some(m) => m.to_string(),
            None => full,
        }
    }

    /// 500: the server failed; the details go to the log (when the response is made), not
    /// to the client.
    pub fn internal(context: &str, err: impl std::fmt::Display) -> Self {
        let mut e = Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("internal error: {context}"),
        );
        e.detail = Some(err.to_string());
        e
    }
}

/// The JSON body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The inside of [`ErrorBody`].
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable machine-readable code.
    #[schema(example = "bad_request")]
    pub code: String,
    /// A sentence for people.
    pub message: String,
    /// The request field at fault, if there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "targets[0]")]
    pub field: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Some(detail) = &self.detail {
            tracing::error!(
                status = self.status.as_u16(),
                code = self.code,
                error = %detail,
                "{}",
                self.message
            );
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
                field: self.field,
            },
        };
        (self.status, axum::Json(body)).into_response()
    }
}

/// Why a server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration file is unreadable or invalid: `file:line: field: message`.
    #[error(transparent)]
    ConfigFile(#[from] porthawk_watch::config::ConfigError),
    /// A setting is invalid or unsafe.
    #[error("{0}")]
    Config(String),
    /// The store could not be opened or migrated.
    #[error("store '{}'", path.display())]
    Store {
        /// The database file.
        path: PathBuf,
        /// The cause.
        source: porthawk_store::StoreError,
    },
    /// Another server holds the data directory.
    #[error(
        "data directory '{}' is in use by another porthawk serve{}",
        dir.display(),
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Locked {
        /// The data directory.
        dir: PathBuf,
        /// The other server's pid, as its lock file says.
        pid: Option<u32>,
    },
    /// The engine could not start.
    #[error(transparent)]
    Engine(#[from] porthawk_engine::EngineError),
    /// The API's address cannot be bound.
    #[error(transparent)]
    Listen(#[from] ListenError),
    /// An I/O failure (data directory, listening socket, runtime).
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// The API's address cannot be bound. For the causes a person can act on (the port is taken,
/// the port needs privileges, the address is not this machine's) the message says what to do
/// and stands alone; any other cause is this error's source.
#[derive(Debug)]
pub struct ListenError {
    /// The address asked for.
    pub addr: std::net::SocketAddr,
    /// What bind(2) said.
    pub cause: std::io::Error,
}

impl ListenError {
    /// The advice for causes that have one.
    fn advice(&self) -> Option<String> {
        let addr = self.addr;
        match self.cause.kind() {
            std::io::ErrorKind::AddrInUse => Some(format!(
                "address {addr} is in use: another process listens there \
                 (stop it, or use --listen ADDR)"
            )),
            std::io::ErrorKind::PermissionDenied => Some(format!(
                "cannot listen on {addr}: permission denied (ports below 1024 need root or \
                 CAP_NET_BIND_SERVICE; or use --listen with a port above 1023)"
            )),
            std::io::ErrorKind::AddrNotAvailable => Some(format!(
                "cannot listen on {addr}: no interface of this machine has that address \
                 (use --listen with one of its addresses, or 0.0.0.0)"
            )),
            _ => None,
        }
    }
}

impl std::fmt::Display for ListenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.advice() {
            Some(text) => f.write_str(&text),
            None => write!(f, "cannot listen on {}", self.addr),
        }
    }
}

impl std::error::Error for ListenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        // An explained cause is not repeated in the OS's words.
        match self.advice() {
            Some(_) => None,
            None => Some(&self.cause),
        }
    }
}

#[cfg(test)]
mod listen_tests {
    use super::*;

    fn chain(err: &dyn std::error::Error) -> Vec<String> {
        let mut out = vec![err.to_string()];
        let mut next = err.source();
        while let Some(e) = next {
            out.push(e.to_string());
            next = e.source();
        }
        out
    }

    #[test]
    fn a_busy_port_is_said_once_with_what_to_do() {
        let err = ServerError::from(ListenError {
            addr: "127.0.0.1:9180".parse().expect("addr"),
            cause: std::io::Error::from(std::io::ErrorKind::AddrInUse),
        });
        let chain = chain(&err);
        assert_eq!(
            chain,
            [
                "address 127.0.0.1:9180 is in use: another process listens there \
              (stop it, or use --listen ADDR)"
            ]
        );
    }

    #[test]
    fn an_unexplained_cause_is_the_source_not_part_of_the_text() {
        let err = ServerError::from(ListenError {
            addr: "127.0.0.1:9180".parse().expect("addr"),
            cause: std::io::Error::other("boom"),
        });
        assert_eq!(chain(&err), ["cannot listen on 127.0.0.1:9180", "boom"]);
        let io = ServerError::Io {
            context: "cannot start the async runtime".into(),
            source: std::io::Error::other("no threads"),
        };
        assert_eq!(chain(&io), ["cannot start the async runtime", "no threads"]);
    }
}
