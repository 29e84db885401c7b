//! Amazon API Gateway as the functions and browsers meet it: the HTTP API (payload format 2.0,
//! "Working with AWS Lambda proxy integrations for HTTP APIs"), its IAM and JWT authorizers
//! ("Controlling access to HTTP APIs with IAM authorization", "... with JWT authorizers"), the
//! WebSocket API with its `@connections` management API ("Working with WebSocket APIs", "Use
//! @connections commands in your backend service"), and the account-wide quotas both share
//! ("Amazon API Gateway quotas", "Quotas for configuring and running a WebSocket API").

pub mod admin_client;
pub mod authorizers;
pub mod http;
pub mod quotas;
pub mod websocket;
pub mod websocket_event;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An answer API Gateway itself gives, `{"message": ...}`.
pub fn gateway_error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "message": message }))).into_response()
}

/// The decoded `name=value` pairs of a raw query string (`+` is a space, `%XX` an escape; bad
/// escapes are kept as written), as both APIs hand them to functions.
pub fn query_pairs(raw: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(raw.as_bytes())
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect()
}
