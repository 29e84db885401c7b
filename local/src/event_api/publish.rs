//! Publishing to a channel, as AppSync Events answers it: `POST /event` over HTTP, and the
//! checks it shares with a `publish` over the real-time WebSocket. The request is
//! `{"channel": "/ns/...", "events": ["<JSON>", ...]}`, authorized by the namespace's publish
//! modes (`x-api-key`, or a SigV4 `Authorization` for IAM). A request AppSync refuses as a whole
//! gets its status and `{"errors":[{"errorType","message"}]}`: 401 `UnauthorizedException`,
//! 400 `BadRequestException` (no channel, a bad path, an unknown namespace, no events or more
//! than 5), 429 `TooManyRequestsException` (inbound events per second). Otherwise 200 with each
//! event listed as `successful` or `failed` (not a string of valid JSON, or over 240 KB).

use super::{AuthType, EventApi, NamespaceAuth, UNAUTHORIZED, error_entry};
use crate::iam::sigv4::{ReceivedRequest, SignedRequest};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use reactions::event_channel::{MAX_EVENT_BYTES, MAX_EVENTS_PER_PUBLISH, parse_path};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Largest request body read: five full events and their JSON quoting.
pub const MAX_REQUEST_BYTES: usize = 2 * 1024 * 1024;

/// A request refused as a whole: the HTTP status the publish endpoint answers with, and the
/// `errorType` and message both endpoints give.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Refusal {
    pub(super) status: StatusCode,
    pub(super) error_type: &'static str,
    pub(super) message: String,
}

impl Refusal {
    pub(super) fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            error_type: "BadRequestException",
            message: message.into(),
        }
    }

    pub(super) fn unauthorized() -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            error_type: "UnauthorizedException",
            message: UNAUTHORIZED.to_owned(),
        }
    }

    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(json!({ "errors": [error_entry(self.error_type, &self.message)] })),
        )
            .into_response()
    }
}

/// The segments of `channel` and the auth of its namespace, or why AppSync refuses it. A
/// subscription may end in a wildcard (`wildcard`).
pub(super) fn resolve_channel<'a, 'c>(
    api: &'a EventApi,
    channel: Option<&'c str>,
    wildcard: bool,
) -> Result<(Vec<&'c str>, &'a NamespaceAuth), Refusal> {
    let channel = channel.ok_or_else(|| Refusal::bad_request("channel is required."))?;
    let segments =
        parse_path(channel, wildcard).map_err(|e| Refusal::bad_request(e.to_string()))?;
    let namespace = api.namespace(&segments).ok_or_else(|| {
        Refusal::bad_request(format!("Namespace {} does not exist.", segments[0]))
    })?;
    Ok((segments, namespace))
}

/// A publish let through: each event listed as `successful` or `failed`, and the accepted
/// events' texts to deliver.
pub(super) struct Admitted<'e> {
    pub(super) successful: Vec<Value>,
    pub(super) failed: Vec<Value>,
    accepted: Vec<&'e str>,
}

/// Checks a publish's `events` (1 to 5, within the inbound events per second) and sorts them:
/// the same for the HTTP endpoint and a publish over the WebSocket.
pub(super) fn admit<'e>(
    api: &EventApi,
    events: Option<&'e Vec<Value>>,
) -> Result<Admitted<'e>, Refusal> {
    let events = events.ok_or_else(|| Refusal::bad_request("events must be a list of strings."))?;
    if events.is_empty() || events.len() > MAX_EVENTS_PER_PUBLISH {
        return Err(Refusal::bad_request(format!(
            "A publish carries 1 to {MAX_EVENTS_PER_PUBLISH} events; this one has {}.",
            events.len()
        )));
    }
    if let Some(bucket) = &api.inbound
        && !(0..events.len()).all(|_| bucket.try_take())
    {
        api.stats
            .throttled_publishes
            .fetch_add(1, Ordering::Relaxed);
        return Err(Refusal {
            status: StatusCode::TOO_MANY_REQUESTS,
            error_type: "TooManyRequestsException",
            message: "Rate exceeded".to_owned(),
        });
    }
    let (successful, failed, accepted) = sort_events(events);
    Ok(Admitted {
        successful,
        failed,
        accepted,
    })
}

/// Delivers an admitted publish to the subscriptions of `segments`, and counts it.
pub(super) fn deliver(api: &EventApi, segments: &[&str], admitted: &Admitted<'_>) {
    if !api.loses_publish(segments) {
        api.deliver(segments, &admitted.accepted);
    }
    api.stats.publishes.fetch_add(1, Ordering::Relaxed);
    api.stats
        .events
        .fetch_add(admitted.accepted.len() as u64, Ordering::Relaxed);
}

/// Whether the request carries an authorization `modes` accepts. A signed publish must also be
/// allowed `appsync:EventPublish` on the channel namespace by its signer's policies.
fn authorized(
    api: &EventApi,
    modes: &[AuthType],
    request: &SignedRequest<'_>,
    namespace: &str,
) -> bool {
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    if modes.contains(&AuthType::Iam) && header("authorization").is_some() {
        return match api.iam.principals.authenticate(request, "appsync") {
            Ok(principal) => principal
                .check("appsync:EventPublish", &api.iam.arn(namespace))
                .is_ok(),
            Err(error) => {
                tracing::info!(%error, "publish signature refused");
                false
            }
        };
    }
    modes.contains(&AuthType::ApiKey) && header("x-api-key") == Some(api.api_key.as_str())
}

pub(crate) async fn handle(
    State(api): State<Arc<EventApi>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let received = ReceivedRequest::new(&uri, &headers);
    let request = received.signed("POST", &body);
    let Ok(parsed) = serde_json::from_slice::<Value>(&body) else {
        return Refusal::bad_request("The request body is not valid JSON.").into_response();
    };
    let channel = parsed.get("channel").and_then(Value::as_str);
    let (segments, namespace) = match resolve_channel(&api, channel, false) {
        Ok(resolved) => resolved,
        Err(refusal) => return refusal.into_response(),
    };
    if !authorized(&api, &namespace.publish, &request, segments[0]) {
        return Refusal::unauthorized().into_response();
    }
    let admitted = match admit(&api, parsed.get("events").and_then(Value::as_array)) {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal.into_response(),
    };
    if !api.limits.publish_latency.is_zero() {
        tokio::time::sleep(api.limits.publish_latency).await;
    }
    deliver(&api, &segments, &admitted);
    axum::Json(json!({ "successful": admitted.successful, "failed": admitted.failed }))
        .into_response()
}

/// Each event as `successful` or `failed` (with why), and the accepted ones' texts in order.
fn sort_events(events: &[Value]) -> (Vec<Value>, Vec<Value>, Vec<&str>) {
    let mut successful = Vec::new();
    let mut failed = Vec::new();
    let mut accepted = Vec::new();
    for (index, event) in events.iter().enumerate() {
        let identifier = uuid_like();
        let refusal = match event.as_str() {
            None => Some("An event must be a string of JSON."),
            Some(text) if text.len() > MAX_EVENT_BYTES => Some("The event is larger than 240 KB."),
            Some(text) if serde_json::from_str::<serde::de::IgnoredAny>(text).is_err() => {
                Some("The event is not valid JSON.")
            }
            Some(text) => {
                accepted.push(text);
                None
            }
        };
        match refusal {
            None => successful.push(json!({ "identifier": identifier, "index": index })),
            Some(message) => failed.push(json!({
                "identifier": identifier,
                "index": index,
                "code": 400,
                "message": message,
            })),
        }
    }
    (successful, failed, accepted)
}

/// A random identifier in the shape AppSync gives each published event.
fn uuid_like() -> String {
    let bytes: [u8; 16] = rand::random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_event_is_accepted_or_failed_with_its_index() {
        let big = format!("\"{}\"", "x".repeat(MAX_EVENT_BYTES));
        let events = vec![
            json!("{\"a\":1}"),
            json!({"not": "a string"}),
            json!("{not json"),
            Value::String(big),
            json!("42"),
        ];
        let (successful, failed, accepted) = sort_events(&events);
        assert_eq!(accepted, ["{\"a\":1}", "42"]);
        let indexes = |list: &[Value]| {
            list.iter()
                .map(|v| v["index"].as_u64().unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(indexes(&successful), [0, 4]);
        assert_eq!(indexes(&failed), [1, 2, 3]);
        assert_eq!(successful[0]["identifier"].as_str().unwrap().len(), 36);
    }
}
