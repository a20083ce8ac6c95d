//! The bearer-token check of mutating routes, shared by the sweep and the monitor routes.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use crate::error::ApiError;
use crate::shared::AppState;

/// Proof that the request may mutate: it carries the configured bearer token, or no token is
/// configured.
pub struct Authorized;

impl FromRequestParts<AppState> for Authorized {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(token) = &state.0.config.token else {
            return Ok(Authorized);
        };
        let header = parts.headers.get(AUTHORIZATION).ok_or_else(|| {
            ApiError::unauthorized("this route needs an 'Authorization: Bearer <token>' header")
        })?;
        let given = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .ok_or_else(|| {
                ApiError::unauthorized("the Authorization header must be 'Bearer <token>'")
            })?;
        if !constant_time_eq(given.trim().as_bytes(), token.as_bytes()) {
            return Err(ApiError::unauthorized("wrong API token"));
        }
        Ok(Authorized)
    }
}

/// Compares without an early exit, so that the time taken does not tell how much matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
