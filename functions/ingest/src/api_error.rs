//! Every answer the API gives that is not a success, as a typed enum with its status code and
//! JSON body. Client mistakes are 4xx with the field and rule named; only our own dependencies
//! being down gives 503 (with Retry-After), and nothing a client sends produces a 500.

use lambda_http::http::StatusCode;
use reactions::ValidationError;
use reactions::stream_registry::{StreamStatus, TransitionRefused};
use serde_json::{Value, json};

/// Seconds a client should wait before retrying after a 503.
pub const RETRY_AFTER_SECONDS: u32 = 1;

/// A failed request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// The body is not declared as JSON.
    #[error("content type must be application/json, got {}", got.as_deref().unwrap_or("none"))]
    UnsupportedMediaType { got: Option<String> },
    /// The body is larger than the configured cap.
    #[error("body is {size} bytes; the limit is {max}")]
    BodyTooLarge { size: usize, max: usize },
    /// The body is not valid JSON.
    #[error("body is not valid JSON: {0}")]
    InvalidJson(String),
    /// Fields break validation rules; nothing was accepted.
    #[error("{} invalid field(s); nothing was accepted", .0.len())]
    Invalid(Vec<ValidationError>),
    /// No such route.
    #[error("no route for {method} {path}")]
    NotFound { method: String, path: String },
    /// The route exists but not with this method.
    #[error("{method} is not allowed here; use {allowed}")]
    MethodNotAllowed {
        method: String,
        allowed: &'static str,
    },
    /// The stream is not in the registry.
    #[error("stream {stream:?} is not registered")]
    UnknownStream { stream: String },
    /// The stream exists but does not take reactions now.
    #[error("stream {stream:?} is {status}; reactions are taken only while it is live")]
    StreamNotLive {
        stream: String,
        status: StreamStatus,
    },
    /// The stream is live but its broadcaster paused reactions.
    #[error(
        "stream {stream:?} is live but its broadcaster paused reactions; they are taken again when the pause is lifted"
    )]
    ReactionsPaused { stream: String },
    /// An admin transition the stream's status does not allow.
    #[error("{0}")]
    TransitionRefused(TransitionRefused),
    /// An admin route reached without a verified IAM caller (the route lost its authorizer).
    #[error("admin routes need a request signed with AWS credentials (SigV4, execute-api)")]
    Forbidden,
    /// Viewer identity is on but the request carries no verified viewer (the route lost its
    /// JWT authorizer).
    #[error("reactions need a viewer's bearer token")]
    Unauthorized,
    /// The body names a viewer other than the token's.
    #[error(
        "{field} is {given:?} but the token is for {viewer:?}; omit user_id or send the token's"
    )]
    ViewerMismatch {
        field: String,
        given: String,
        viewer: String,
    },
    /// The request's idempotency key was used before for a request with other reactions (the
    /// IETF draft's 422): nothing of this request was accepted.
    #[error(
        "the {field} was used before for a request with other reactions; nothing was accepted. Send new taps with a new key, and a retry with exactly the body of its first attempt"
    )]
    KeyReused { field: &'static str },
    /// Chapters or a replay were asked of a stream that never went live, without the
    /// parameter that says where to count from.
    #[error(
        "stream {stream:?} has not gone live, so there is no start to count from; pass {parameter} (ms since the epoch)"
    )]
    NoOrigin {
        stream: String,
        parameter: &'static str,
    },
    /// A dependency (Kafka, MongoDB) did not answer in time; the client should retry.
    #[error("{service} is unavailable; retry in a moment")]
    Unavailable { service: &'static str },
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::InvalidJson(_) | ApiError::Invalid(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound { .. } | ApiError::UnknownStream { .. } => StatusCode::NOT_FOUND,
            ApiError::StreamNotLive { .. }
            | ApiError::ReactionsPaused { .. }
            | ApiError::TransitionRefused(_)
            | ApiError::NoOrigin { .. } => StatusCode::CONFLICT,
            ApiError::Forbidden | ApiError::ViewerMismatch { .. } => StatusCode::FORBIDDEN,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::KeyReused { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// A stable code for the body's `error` field and for metrics.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::UnsupportedMediaType { .. } => "unsupported_media_type",
            ApiError::BodyTooLarge { .. } => "body_too_large",
            ApiError::InvalidJson(_) => "invalid_json",
            ApiError::Invalid(_) => "invalid_reactions",
            ApiError::NotFound { .. } => "not_found",
            ApiError::UnknownStream { .. } => "unknown_stream",
            ApiError::StreamNotLive { .. } => "stream_not_live",
            ApiError::ReactionsPaused { .. } => "reactions_paused",
            ApiError::TransitionRefused(_) => "transition_refused",
            ApiError::NoOrigin { .. } => "no_origin",
            ApiError::Forbidden => "forbidden",
            ApiError::Unauthorized => "unauthorized",
            ApiError::ViewerMismatch { .. } => "user_id_mismatch",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::KeyReused { .. } => "idempotency_key_reused",
            ApiError::Unavailable { .. } => "unavailable",
        }
    }

    /// The JSON body: `error` (code), `message`, and for validation errors one entry per field.
    pub fn body(&self) -> Value {
        let mut body = json!({ "error": self.code(), "message": self.to_string() });
        match self {
            ApiError::UnknownStream { stream }
            | ApiError::NoOrigin { stream, .. }
            | ApiError::ReactionsPaused { stream } => body["stream_id"] = json!(stream),
            ApiError::ViewerMismatch { field, .. } => body["field"] = json!(field),
            ApiError::KeyReused { field } => body["field"] = json!(field),
            ApiError::StreamNotLive { stream, status } => {
                body["stream_id"] = json!(stream);
                body["status"] = json!(status);
            }
            _ => {}
        }
        if let ApiError::Invalid(errors) = self {
            body["errors"] = errors
                .iter()
                .map(|e| {
                    json!({
                        "field": e.field,
                        "rule": e.rule.code(),
                        "message": e.to_string(),
                    })
                })
                .collect();
        }
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reactions::Rule;

    #[test]
    fn validation_errors_list_every_field() {
        let error = ApiError::Invalid(vec![
            ValidationError::new(
                "reactions[0].emoji",
                Rule::UnknownEmoji { value: "x".into() },
            ),
            ValidationError::new(
                "reactions[4].count",
                Rule::OutOfRange {
                    min: 1,
                    max: 100,
                    value: 0,
                },
            ),
        ]);
        assert_eq!(error.status(), StatusCode::BAD_REQUEST);
        let body = error.body();
        assert_eq!(body["error"], "invalid_reactions");
        assert_eq!(body["errors"][1]["field"], "reactions[4].count");
        assert_eq!(body["errors"][1]["rule"], "out_of_range");
        assert_eq!(
            body["errors"][1]["message"],
            "reactions[4].count: must be between 1 and 100, got 0"
        );
    }

    #[test]
    fn statuses_match_the_kind_of_mistake() {
        assert_eq!(
            ApiError::UnsupportedMediaType { got: None }
                .status()
                .as_u16(),
            415
        );
        assert_eq!(
            ApiError::BodyTooLarge { size: 2, max: 1 }.status().as_u16(),
            413
        );
        assert_eq!(ApiError::InvalidJson("x".into()).status().as_u16(), 400);
        assert_eq!(
            ApiError::Unavailable { service: "kafka" }.status().as_u16(),
            503
        );
        let not_live = ApiError::StreamNotLive {
            stream: "final".into(),
            status: StreamStatus::Ended,
        };
        assert_eq!(not_live.status().as_u16(), 409);
        assert_eq!(not_live.body()["status"], "ended");
        assert_eq!(not_live.body()["stream_id"], "final");
        let unknown = ApiError::UnknownStream {
            stream: "nope".into(),
        };
        assert_eq!(unknown.status().as_u16(), 404);
        assert_eq!(unknown.body()["error"], "unknown_stream");
        let paused = ApiError::ReactionsPaused {
            stream: "final".into(),
        };
        assert_eq!(paused.status().as_u16(), 409);
        assert_eq!(paused.body()["error"], "reactions_paused");
        assert_eq!(paused.body()["stream_id"], "final");
        assert_eq!(ApiError::Forbidden.status().as_u16(), 403);
    }
}
