//! The one JSON body extractor: every request body is read into its serde type (each with
//! `deny_unknown_fields`) through `serde_path_to_error`, so a 400 names the field path.

use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::shared::AppState;

/// A request body parsed as `T`, at most `[api] max_body_bytes` long (the guard has already
/// checked its content type, and its size where the client declared one).
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let limit = state.0.config.limits.max_body_bytes;
        let bytes = axum::body::to_bytes(req.into_body(), limit)
            .await
            .map_err(|_| {
                ApiError::too_large(
                    None,
                    format!("the request body is larger than {limit} bytes"),
                )
            })?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Parses `body` as `T`; an error names the field path (`probe.timeout_ms`).
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(ApiError::from_json)?;
    de.end().map_err(|e| {
        ApiError::bad_json(format!(
            "the body is not valid JSON: {}",
            ApiError::json_message(&e)
        ))
    })?;
    Ok(value)
}
