//! `POST /event`: publishing to a channel over HTTP, as AppSync Events answers it. The request
//! is `{"channel": "/ns/...", "events": ["<JSON>", ...]}`, authorized by the namespace's publish
//! modes (`x-api-key`, or a SigV4 `Authorization` for IAM). A request AppSync refuses as a whole
//! gets its status and `{"errors":[{"errorType","message"}]}`: 401 `UnauthorizedException`,
//! 400 `BadRequestException` (no channel, a bad path, an unknown namespace, no events or more
//! than 5), 429 `TooManyRequestsException` (inbound events per second). Otherwise 200 with each
//! event listed as `successful` or `failed` (not a string of valid JSON, or over 240 KB).

use super::sigv4::{SignedRequest, verify};
use super::{AuthType, EventApi, UNAUTHORIZED, error_entry};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use reactions::event_channel::parse_path;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Events one publish may carry.
pub const MAX_EVENTS: usize = 5;

/// Largest event, in bytes.
pub const MAX_EVENT_BYTES: usize = 240 * 1024;

/// Largest request body read: five full events and their JSON quoting.
pub const MAX_REQUEST_BYTES: usize = 2 * 1024 * 1024;

fn refuse(status: StatusCode, error_type: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({ "errors": [error_entry(error_type, message)] })),
    )
        .into_response()
}

fn bad_request(message: &str) -> Response {
    refuse(StatusCode::BAD_REQUEST, "BadRequestException", message)
}

/// Whether the request carries an authorization `modes` accepts.
fn authorized(api: &EventApi, modes: &[AuthType], request: &SignedRequest<'_>) -> bool {
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    if modes.contains(&AuthType::Iam) && header("authorization").is_some() {
        return match verify(request, &api.credentials) {
            Ok(()) => true,
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
    let header_pairs: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let url = format!(
        "http://{host}{}",
        uri.path_and_query().map_or("/event", |p| p.as_str())
    );
    let request = SignedRequest {
        method: "POST",
        url: &url,
        headers: &header_pairs,
        body: &body,
    };
    let Ok(parsed) = serde_json::from_slice::<Value>(&body) else {
        return bad_request("The request body is not valid JSON.");
    };
    let Some(channel) = parsed.get("channel").and_then(Value::as_str) else {
        return bad_request("channel is required.");
    };
    let segments = match parse_path(channel, false) {
        Ok(segments) => segments,
        Err(error) => return bad_request(&error.to_string()),
    };
    let Some(namespace) = api.namespace(&segments) else {
        return bad_request(&format!("Namespace {} does not exist.", segments[0]));
    };
    if !authorized(&api, &namespace.publish, &request) {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "UnauthorizedException",
            UNAUTHORIZED,
        );
    }
    let Some(events) = parsed.get("events").and_then(Value::as_array) else {
        return bad_request("events must be a list of strings.");
    };
    if events.is_empty() || events.len() > MAX_EVENTS {
        return bad_request(&format!(
            "A publish carries 1 to {MAX_EVENTS} events; this one has {}.",
            events.len()
        ));
    }
    if let Some(bucket) = &api.inbound
        && !(0..events.len()).all(|_| bucket.try_take())
    {
        api.stats
            .throttled_publishes
            .fetch_add(1, Ordering::Relaxed);
        return refuse(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequestsException",
            "Rate exceeded",
        );
    }
    let (successful, failed, accepted) = sort_events(events);
    if !api.limits.publish_latency.is_zero() {
        tokio::time::sleep(api.limits.publish_latency).await;
    }
    api.deliver(&segments, &accepted);
    api.stats.publishes.fetch_add(1, Ordering::Relaxed);
    api.stats
        .events
        .fetch_add(accepted.len() as u64, Ordering::Relaxed);
    axum::Json(json!({ "successful": successful, "failed": failed })).into_response()
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
