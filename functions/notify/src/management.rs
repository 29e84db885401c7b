//! The adapter to API Gateway's `@connections` management API, through
//! aws-sdk-apigatewaymanagement. The endpoint is always explicit (the deployed stage in AWS, the
//! local stack locally). The SDK's own retries are off: throttling is retried by the fan-out with
//! jittered backoff inside a time budget, and a 410 must surface at once so exactly that
//! connection is forgotten.

use aws_config::SdkConfig;
use aws_config::retry::RetryConfig;
use aws_config::stalled_stream_protection::StalledStreamProtectionConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_apigatewaymanagement::Client;
use aws_sdk_apigatewaymanagement::error::SdkError;
use aws_sdk_apigatewaymanagement::operation::post_to_connection::PostToConnectionError;
use aws_sdk_apigatewaymanagement::primitives::Blob;
use std::time::Duration;

/// Why a post did not reach its connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PostError {
    /// 410 `GoneException`: the connection is closed for good.
    #[error("connection is gone (410)")]
    Gone,
    /// 429 `LimitExceededException` or throttling: try again later.
    #[error("throttled (429)")]
    Throttled,
    /// Anything else: a timeout, a 5xx, a 403 (bad endpoint or permissions), a payload too large.
    #[error("{0}")]
    Failed(String),
}

/// A client for one WebSocket API stage's `@connections` endpoint.
#[derive(Debug, Clone)]
pub struct ConnectionsApi {
    client: Client,
}

impl ConnectionsApi {
    /// Builds the client from the shared AWS configuration (region, credentials) and the
    /// stage's management `endpoint`, with `attempt_timeout` per call.
    pub fn new(sdk: &SdkConfig, endpoint: &str, attempt_timeout: Duration) -> Self {
        let config = aws_sdk_apigatewaymanagement::config::Builder::from(sdk)
            .endpoint_url(endpoint)
            .retry_config(RetryConfig::disabled())
            // The attempt timeout bounds every post; stalled-stream checks of a sub-KB body
            // would only add a timer per call.
            .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(attempt_timeout.min(Duration::from_secs(2)))
                    .operation_attempt_timeout(attempt_timeout)
                    .build(),
            )
            .build();
        Self {
            client: Client::from_conf(config),
        }
    }

    /// Sends one frame to one connection.
    pub async fn post_to_connection(
        &self,
        connection_id: &str,
        data: Vec<u8>,
    ) -> Result<(), PostError> {
        self.client
            .post_to_connection()
            .connection_id(connection_id)
            .data(Blob::new(data))
            .send()
            .await
            .map(|_| ())
            .map_err(classify)
    }
}

fn classify(error: SdkError<PostToConnectionError>) -> PostError {
    if let Some(service) = error.as_service_error() {
        match service {
            PostToConnectionError::GoneException(_) => return PostError::Gone,
            PostToConnectionError::LimitExceededException(_) => return PostError::Throttled,
            _ => {}
        }
    }
    match error.raw_response().map(|r| r.status().as_u16()) {
        Some(410) => PostError::Gone,
        Some(429) => PostError::Throttled,
        Some(status) => PostError::Failed(format!(
            "HTTP {status}: {}",
            aws_sdk_apigatewaymanagement::error::DisplayErrorContext(&error)
        )),
        None => PostError::Failed(
            aws_sdk_apigatewaymanagement::error::DisplayErrorContext(&error).to_string(),
        ),
    }
}
