//! The adapter to an AWS AppSync Events API's HTTP publish endpoint (`POST /event`), used in
//! `AppSyncEvents` delivery: one request carries up to 5 events for one channel, each a JSON
//! document as a string of at most 240 KB, and AppSync delivers every event to every subscriber
//! of the channel. Requests are SigV4-signed (service `appsync`) with the function's role, which
//! the template allows `appsync:EventPublish` on the stream namespace only. AppSync answers 200
//! with the events it took (`successful`) and refused (`failed`), or an error status with
//! `{"errors":[{"errorType","message"}]}`.

use aws_config::SdkConfig;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use reactions::event_channel::{MAX_EVENT_BYTES, MAX_EVENTS_PER_PUBLISH};
use reactions::sigv4::{RequestToSign, signature_headers};
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime};

/// Why a publish did not reach the channel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// 429: too many publishes; try again later.
    #[error("throttled (429)")]
    Throttled,
    /// A refusal that repeating will not change: bad auth (401/403), a bad request (400), too
    /// large (413). The error type is AppSync's (`UnauthorizedException`, ...).
    #[error("refused ({status} {error_type}): {message}")]
    Refused {
        status: u16,
        error_type: String,
        message: String,
    },
    /// Anything else: a timeout, a connection failure, a 5xx, no credentials.
    #[error("{0}")]
    Failed(String),
}

impl PublishError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, PublishError::Refused { .. })
    }
}

/// What AppSync did with one publish's events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Published {
    pub successful: usize,
    pub failed: usize,
}

#[derive(Serialize)]
struct PublishBody<'a> {
    channel: &'a str,
    events: &'a [String],
}

#[derive(Deserialize, Default)]
struct PublishAnswer {
    #[serde(default)]
    successful: Vec<serde_json::Value>,
    #[serde(default)]
    failed: Vec<serde_json::Value>,
    #[serde(default)]
    errors: Vec<ErrorEntry>,
}

#[derive(Deserialize)]
struct ErrorEntry {
    #[serde(rename = "errorType", default)]
    error_type: String,
    #[serde(default)]
    message: String,
}

/// A client for one Event API's publish endpoint.
#[derive(Clone)]
pub struct EventApi {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    endpoint: String,
    host: String,
    region: String,
    credentials: Option<SharedCredentialsProvider>,
    timeout: Duration,
}

impl std::fmt::Debug for EventApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventApi")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

/// The `host[:port]` of an http(s) URL.
fn authority(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.split('/').next().unwrap_or(rest)
}

impl EventApi {
    /// A client for `endpoint` (`https://{host}/event`), signing with the region and credentials
    /// of `sdk`, each request bounded by `timeout`.
    pub fn new(sdk: &SdkConfig, endpoint: &str, timeout: Duration) -> Result<Self, PublishError> {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| PublishError::Failed(format!("no TLS root certificates: {e}")))?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            endpoint: endpoint.to_owned(),
            host: authority(endpoint).to_owned(),
            region: sdk
                .region()
                .map_or_else(|| "us-east-1".to_owned(), ToString::to_string),
            credentials: sdk.credentials_provider(),
            timeout,
        })
    }

    /// Publishes `events` (each a JSON document, at most [`MAX_EVENTS_PER_PUBLISH`]) to
    /// `channel`.
    pub async fn publish(
        &self,
        channel: &str,
        events: &[String],
    ) -> Result<Published, PublishError> {
        let body = serde_json::to_vec(&PublishBody { channel, events })
            .map_err(|e| PublishError::Failed(e.to_string()))?;
        let request = self.signed_request(body).await?;
        let response = tokio::time::timeout(self.timeout, self.client.request(request))
            .await
            .map_err(|_| PublishError::Failed(format!("no answer in {:?}", self.timeout)))?
            .map_err(|e| PublishError::Failed(format!("publish request failed: {e}")))?;
        let status = response.status().as_u16();
        let bytes = tokio::time::timeout(self.timeout, response.into_body().collect())
            .await
            .map_err(|_| PublishError::Failed("answer body timed out".into()))?
            .map_err(|e| PublishError::Failed(format!("reading the answer failed: {e}")))?
            .to_bytes();
        let answer: PublishAnswer = serde_json::from_slice(&bytes).unwrap_or_default();
        match status {
            200 => Ok(Published {
                successful: answer.successful.len(),
                failed: answer.failed.len(),
            }),
            429 => Err(PublishError::Throttled),
            400..=499 => {
                let first = answer.errors.into_iter().next();
                Err(PublishError::Refused {
                    status,
                    error_type: first
                        .as_ref()
                        .map_or_else(String::new, |e| e.error_type.clone()),
                    message: first.map_or_else(
                        || String::from_utf8_lossy(&bytes).into_owned(),
                        |e| e.message,
                    ),
                })
            }
            _ => Err(PublishError::Failed(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&bytes)
            ))),
        }
    }

    async fn signed_request(
        &self,
        body: Vec<u8>,
    ) -> Result<hyper::Request<Full<Bytes>>, PublishError> {
        let provider = self
            .credentials
            .as_ref()
            .ok_or_else(|| PublishError::Failed("no AWS credentials to sign publishes".into()))?;
        let credentials = provider
            .provide_credentials()
            .await
            .map_err(|e| PublishError::Failed(format!("no AWS credentials: {e}")))?;
        let headers = [
            ("host", self.host.as_str()),
            ("content-type", "application/json"),
        ];
        let request = RequestToSign {
            method: "POST",
            url: &self.endpoint,
            headers: &headers,
            body: &body,
        };
        let signature = signature_headers(
            request,
            &credentials,
            &self.region,
            "appsync",
            SystemTime::now(),
        )
        .map_err(|e| PublishError::Failed(format!("signing failed: {e}")))?;
        let mut builder = hyper::Request::post(self.endpoint.as_str());
        for (name, value) in headers {
            builder = builder.header(name, value);
        }
        for (name, value) in signature {
            builder = builder.header(name, value);
        }
        builder
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| PublishError::Failed(format!("bad publish request: {e}")))
    }
}

/// Splits documents (each a JSON text) into publishes: events of several documents joined as a
/// JSON array would change the format, so each document is one event; documents larger than
/// [`MAX_EVENT_BYTES`] are returned apart, as they cannot be published.
pub fn into_publishes(events: Vec<String>) -> (Vec<Vec<String>>, Vec<String>) {
    let (fits, too_large): (Vec<String>, Vec<String>) =
        events.into_iter().partition(|e| e.len() <= MAX_EVENT_BYTES);
    let publishes = fits
        .chunks(MAX_EVENTS_PER_PUBLISH)
        .map(<[String]>::to_vec)
        .collect();
    (publishes, too_large)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_five_events_per_publish_and_none_too_large() {
        let events: Vec<String> = (0..11).map(|i| format!("{{\"n\":{i}}}")).collect();
        let (publishes, too_large) = into_publishes(events.clone());
        assert!(too_large.is_empty());
        assert_eq!(
            publishes.iter().map(Vec::len).collect::<Vec<_>>(),
            [5, 5, 1]
        );
        assert_eq!(publishes.concat(), events, "order kept");
        let huge = format!("\"{}\"", "x".repeat(MAX_EVENT_BYTES));
        let (publishes, too_large) = into_publishes(vec![huge.clone(), "1".into()]);
        assert_eq!(publishes, [vec!["1".to_owned()]]);
        assert_eq!(too_large, [huge]);
        assert!(into_publishes(Vec::new()).0.is_empty());
    }

    #[test]
    fn the_host_is_the_endpoint_authority() {
        assert_eq!(
            authority("https://abc.appsync-api.eu-west-1.amazonaws.com/event"),
            "abc.appsync-api.eu-west-1.amazonaws.com"
        );
        assert_eq!(authority("http://127.0.0.1:3002/event"), "127.0.0.1:3002");
    }
}
