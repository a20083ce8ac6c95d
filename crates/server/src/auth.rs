//! The bearer-token check of mutating routes, shared by the sweep and the monitor routes.

use axum::extract::FromRequestParts;
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
        crate::guard::check_bearer(&parts.headers, token)?;
        Ok(Authorized)
    }
}
