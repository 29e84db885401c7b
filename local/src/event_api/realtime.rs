//! `/event/realtime`: the AppSync Events WebSocket protocol. The client offers the
//! subprotocols `aws-appsync-event-ws` and `header-<base64url JSON>`, the JSON carrying its
//! authorization (`{"host": ..., "x-api-key": ...}`, or with OPENID_CONNECT
//! `{"host": ..., "Authorization": "<JWT>"}`, a token the API's issuer signed for its client id);
//! a connection the API's connection auth modes refuse gets a `connection_error` with
//! `UnauthorizedException` and is closed. A namespace's onSubscribe handler rule
//! ([`super::NamespaceAuth::subscribe_segments`]) refuses subscriptions to other channels.
//! Then, as JSON text messages:
//!
//! - `connection_init` → `connection_ack` with `connectionTimeoutMs`;
//! - `subscribe` (`id`, `channel`, `authorization`) → `subscribe_success`, or `subscribe_error`
//!   with `BadRequestException`, `UnauthorizedException`, `DuplicatedOperationError` or
//!   `MaxSubscriptionsReachedError`;
//! - `unsubscribe` (`id`) → `unsubscribe_success` or `unsubscribe_error`;
//! - `publish` (`id`, `channel`, `events`, `authorization`) → `publish_success` or
//!   `publish_error` (only API-key publishes can be authorized on a WebSocket here);
//! - anything else → `error`.
//!
//! Published events arrive as `{"type":"data","id":<subscription>,"event":"<JSON>"}`. The
//! server sends `ka` every keep-alive interval with a WebSocket ping; a client that answers
//! nothing for the connection timeout is dropped.

use super::publish::{admit, deliver, resolve_channel};
use super::{AuthType, EventApi, NamespaceAuth, Outgoing, UNAUTHORIZED, error_entry};
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The subprotocol AppSync Events speaks.
pub const SUBPROTOCOL: &str = "aws-appsync-event-ws";

/// Longest subscription or publish id accepted.
const MAX_ID_LEN: usize = 128;

/// The authorization a client offered in its `header-` subprotocol, if any.
fn offered_authorization(headers: &HeaderMap) -> Option<Value> {
    let offered = headers.get("sec-websocket-protocol")?.to_str().ok()?;
    let encoded = offered
        .split(',')
        .map(str::trim)
        .find_map(|p| p.strip_prefix("header-"))?;
    let decoded = URL_SAFE_NO_PAD.decode(encoded.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&decoded).ok()
}

fn offers_subprotocol(headers: &HeaderMap) -> bool {
    headers
        .get("sec-websocket-protocol")
        .and_then(|h| h.to_str().ok())
        .is_some_and(|offered| offered.split(',').any(|p| p.trim() == SUBPROTOCOL))
}

/// Whether `authorization` (a JSON object of headers) satisfies `modes`: the API key, or
/// (OPENID_CONNECT) an `Authorization` token the API's issuer signed for its client id, valid
/// now. IAM-signed WebSocket messages are not emulated and are refused.
async fn authorizes(api: &EventApi, modes: &[AuthType], authorization: Option<&Value>) -> bool {
    let header = |name: &str| {
        authorization
            .and_then(|a| a.get(name))
            .and_then(Value::as_str)
    };
    if modes.contains(&AuthType::ApiKey) && header("x-api-key") == Some(api.api_key.as_str()) {
        return true;
    }
    if modes.contains(&AuthType::OpenIdConnect)
        && let (Some(verifier), Some(token)) = (&api.openid_connect, header("Authorization"))
    {
        let now_s = reactions::clock::now_ms().div_euclid(1000);
        return match verifier
            .verify(Some(reactions::viewer_identity::bearer_token(token)), now_s)
            .await
        {
            Ok(_) => true,
            Err(refusal) => {
                tracing::info!(%refusal, "Event API refused a token");
                false
            }
        };
    }
    false
}

pub(crate) async fn upgrade(
    State(api): State<Arc<EventApi>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if !offers_subprotocol(&headers) {
        return (
            StatusCode::BAD_REQUEST,
            format!("offer the {SUBPROTOCOL} subprotocol"),
        )
            .into_response();
    }
    if let Some(bucket) = &api.connects
        && !bucket.try_take()
    {
        api.stats.refused_connects.fetch_add(1, Ordering::Relaxed);
        return (StatusCode::TOO_MANY_REQUESTS, "Too Many Requests").into_response();
    }
    let authorized = authorizes(
        &api,
        &api.spec.connection,
        offered_authorization(&headers).as_ref(),
    )
    .await;
    // Subscribers send small messages: a small read buffer (it grows when needed) keeps tens of
    // thousands of connections in memory.
    ws.protocols([SUBPROTOCOL])
        .read_buffer_size(8 * 1024)
        .max_message_size(super::publish::MAX_REQUEST_BYTES)
        .on_upgrade(move |socket| serve(api, socket, authorized))
}

async fn serve(api: Arc<EventApi>, socket: WebSocket, authorized: bool) {
    let (mut sink, mut stream) = socket.split();
    if !authorized {
        let refusal = json!({
            "type": "connection_error",
            "errors": [error_entry("UnauthorizedException", UNAUTHORIZED)],
        });
        sink.send(Message::Text(refusal.to_string().into()))
            .await
            .ok();
        let close = CloseFrame {
            code: 1008,
            reason: "Unauthorized".into(),
        };
        sink.send(Message::Close(Some(close))).await.ok();
        return;
    }
    let (outbox, mut inbox) = mpsc::channel(api.limits.outbox_frames.max(1));
    let (kick, mut kicked) = tokio::sync::watch::channel(None);
    let connection = api.register(outbox.clone(), kick);
    let mut writer = tokio::spawn(async move {
        while let Some(frame) = inbox.recv().await {
            let message = match frame {
                Outgoing::Text(text) => Message::Text(text),
                Outgoing::Ping => Message::Ping(Default::default()),
                Outgoing::Close(code, reason) => {
                    let close = CloseFrame {
                        code,
                        reason: reason.into(),
                    };
                    sink.send(Message::Close(Some(close))).await.ok();
                    return;
                }
            };
            if sink.send(message).await.is_err() {
                return;
            }
        }
    });
    let keep_alive = api.limits.keep_alive;
    let mut last_heard = Instant::now();
    let mut next_keep_alive = Instant::now() + keep_alive;
    let mut close: Option<(u16, &'static str)> = None;
    let mut writer_done = false;
    loop {
        tokio::select! {
            _ = kicked.changed() => {
                close = *kicked.borrow();
                break;
            }
            next = stream.next() => match next {
                Some(Ok(Message::Text(text))) => {
                    last_heard = Instant::now();
                    let answer = answer(&api, connection, &text).await;
                    if let Some(answer) = answer
                        && outbox.try_send(Outgoing::Text(answer.to_string().into())).is_err()
                    {
                        break;
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    last_heard = Instant::now();
                    let error = json!({
                        "type": "error",
                        "errors": [error_entry("BadRequestException", "Messages are JSON text.")],
                    });
                    outbox.try_send(Outgoing::Text(error.to_string().into())).ok();
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => last_heard = Instant::now(),
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
            },
            _ = &mut writer => {
                writer_done = true;
                break;
            }
            _ = tokio::time::sleep_until(next_keep_alive) => {
                if last_heard.elapsed() >= api.limits.connection_timeout {
                    api.stats.dropped_unresponsive.fetch_add(1, Ordering::Relaxed);
                    close = Some((1001, "Keep-alive unanswered"));
                    break;
                }
                next_keep_alive = Instant::now() + keep_alive;
                let ka = Outgoing::Text(axum::extract::ws::Utf8Bytes::from_static(r#"{"type":"ka"}"#));
                if outbox.try_send(ka).is_err() || outbox.try_send(Outgoing::Ping).is_err() {
                    api.stats.dropped_slow.fetch_add(1, Ordering::Relaxed);
                    close = Some((1008, "Too slow"));
                    break;
                }
            }
        }
    }
    api.unregister(connection);
    // A close goes after what is queued; a client too slow to take it is cut off.
    if let Some((code, reason)) = close
        && outbox.try_send(Outgoing::Close(code, reason)).is_err()
    {
        writer.abort();
    }
    drop(outbox);
    // The writer ends when the queue is drained and closed, or at once if the client is gone.
    if !writer_done
        && tokio::time::timeout(api.limits.keep_alive, &mut writer)
            .await
            .is_err()
    {
        writer.abort();
    }
}

fn error_message(kind: &str, id: Option<&str>, error_type: &str, message: &str) -> Value {
    let mut answer = json!({ "type": kind, "errors": [error_entry(error_type, message)] });
    if let Some(id) = id {
        answer["id"] = json!(id);
    }
    answer
}

/// The answer to one client message, if it has one.
async fn answer(api: &EventApi, connection: u64, text: &str) -> Option<Value> {
    let Ok(message) = serde_json::from_str::<Value>(text) else {
        return Some(error_message(
            "error",
            None,
            "BadRequestException",
            "The message is not valid JSON.",
        ));
    };
    let kind = message.get("type").and_then(Value::as_str).unwrap_or("");
    let id = message
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty() && id.len() <= MAX_ID_LEN);
    match kind {
        "connection_init" => Some(json!({
            "type": "connection_ack",
            "connectionTimeoutMs": api.limits.connection_timeout.as_millis() as u64,
        })),
        "subscribe" => Some(subscribe(api, connection, id, &message).await),
        "unsubscribe" => Some(match id {
            Some(id) if api.unsubscribe(connection, id) => {
                json!({ "type": "unsubscribe_success", "id": id })
            }
            _ => error_message(
                "unsubscribe_error",
                id,
                "UnknownOperationError",
                "No subscription with this id.",
            ),
        }),
        "publish" => Some(publish(api, id, &message).await),
        other => Some(error_message(
            "error",
            id,
            "UnsupportedOperation",
            &format!("Operation {other:?} is not supported."),
        )),
    }
}

/// The id and channel segments of a `subscribe` or `publish`, checked (the namespace exists,
/// and the message's authorization satisfies the modes `allowed` picks from it); else the
/// answer of type `failure`.
async fn checked<'m>(
    api: &EventApi,
    id: Option<&'m str>,
    message: &'m Value,
    wildcard: bool,
    failure: &str,
    allowed: fn(&NamespaceAuth) -> &[AuthType],
) -> Result<(&'m str, Vec<&'m str>), Value> {
    let fail = |error_type: &str, text: &str| error_message(failure, id, error_type, text);
    let Some(id) = id else {
        return Err(fail(
            "BadRequestException",
            "id must be 1 to 128 characters.",
        ));
    };
    let channel = message.get("channel").and_then(Value::as_str);
    let (segments, namespace) = resolve_channel(api, channel, wildcard)
        .map_err(|refusal| fail(refusal.error_type, &refusal.message))?;
    if !authorizes(api, allowed(namespace), message.get("authorization")).await {
        return Err(fail("UnauthorizedException", UNAUTHORIZED));
    }
    Ok((id, segments))
}

async fn subscribe(api: &EventApi, connection: u64, id: Option<&str>, message: &Value) -> Value {
    let checked = checked(api, id, message, true, "subscribe_error", |n| &n.subscribe).await;
    let (id, segments) = match checked {
        Ok(checked) => checked,
        Err(answer) => return answer,
    };
    // The namespace's onSubscribe handler: `util.unauthorized()` for channels off its rule.
    if !api.subscription_allowed(segments[0], &segments) {
        return error_message(
            "subscribe_error",
            Some(id),
            "UnauthorizedException",
            UNAUTHORIZED,
        );
    }
    let pattern = segments.iter().map(|s| (*s).to_owned()).collect();
    match api.subscribe(connection, id, pattern) {
        Ok(()) => json!({ "type": "subscribe_success", "id": id }),
        Err(error_type) => error_message(
            "subscribe_error",
            Some(id),
            error_type,
            "The subscription was not made.",
        ),
    }
}

/// A publish over the socket: the publish endpoint's checks, answered as `publish_success` or
/// `publish_error`.
async fn publish(api: &EventApi, id: Option<&str>, message: &Value) -> Value {
    let checked = checked(api, id, message, false, "publish_error", |n| &n.publish).await;
    let (id, segments) = match checked {
        Ok(checked) => checked,
        Err(answer) => return answer,
    };
    match admit(api, message.get("events").and_then(Value::as_array)) {
        Ok(admitted) => {
            deliver(api, &segments, &admitted);
            json!({
                "type": "publish_success",
                "id": id,
                "successful": admitted.successful,
                "failed": admitted.failed,
            })
        }
        Err(refusal) => error_message(
            "publish_error",
            Some(id),
            refusal.error_type,
            &refusal.message,
        ),
    }
}
