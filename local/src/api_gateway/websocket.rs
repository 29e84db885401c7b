//! The WebSocket API and its `@connections` management API, on one port like API Gateway's
//! `wss://{api}.execute-api.{region}.amazonaws.com/{stage}`.
//!
//! A handshake on `/{stage}` invokes the `$connect` route with the real event JSON and is
//! refused with the function's status unless that is 2xx. Each text frame is routed by the
//! route selection expression (`$request.body.action`) to its route, else `$default`, else
//! answered with API Gateway's `Forbidden` frame; a failing route is answered with its
//! `Internal server error` frame. A closed, idle (10 minutes) or too old (2 hours) connection
//! is ended and `$disconnect` invoked. `POST|GET|DELETE /{stage}/@connections/{id}` push to,
//! describe and close a connection, answering 410 `GoneException` for unknown ones and for
//! connections whose handshake has not completed (as AWS does until `$connect` has returned).
//! Connects, client messages and `@connections` calls count against the account's quotas
//! ([`AwsQuotas`]): beyond them a connect is refused with 429, a message is answered with a
//! `Too Many Requests` frame and a call with 429 `LimitExceededException`; each call is answered
//! after the emulated `PostToConnection` latency. A call must be SigV4-signed by a principal
//! allowed `execute-api:ManageConnections` on it ([`crate::iam`]): unsigned calls get 403
//! `Missing Authentication Token`, denied ones 403 `AccessDeniedException` with AWS's message.

use super::query_pairs;
use crate::api_gateway::quotas::AwsQuotas;
use crate::api_gateway::websocket_event::{
    ConnectionContext, connect_event, disconnect_event, iso8601, message_event,
};
use crate::iam::ServiceIam;
use crate::iam::sigv4::{ReceivedRequest, SignatureError};
use crate::lambda::FunctionPool;
use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures::{SinkExt, StreamExt};
use rand::RngCore;
use reactions::clock::now_ms;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// API Gateway's limits for WebSocket APIs.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A connection without client messages for this long is closed (10 minutes).
    pub idle: Duration,
    /// No connection lives longer than this (2 hours).
    pub max_age: Duration,
    /// Largest message either way (128 KB).
    pub max_message_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            idle: Duration::from_secs(600),
            max_age: Duration::from_secs(7_200),
            max_message_bytes: 128 * 1024,
        }
    }
}

enum Outgoing {
    Frame(String),
    Close(u16, &'static str),
}

struct Live {
    context: ConnectionContext,
    user_agent: String,
    outbox: mpsc::UnboundedSender<Outgoing>,
    last_active_ms: Arc<AtomicI64>,
}

/// The WebSocket API of the stack.
pub struct WebSocketApi {
    stage: String,
    selection_path: Vec<String>,
    routes: BTreeMap<String, Arc<FunctionPool>>,
    limits: Limits,
    quotas: Arc<AwsQuotas>,
    connections: Mutex<HashMap<String, Live>>,
    next_request: AtomicU64,
    /// Frames pushed through `@connections` (for the stack's summary and tests).
    pub pushed: AtomicU64,
    /// Who may call `@connections`: SigV4-signed requests whose signer is allowed
    /// `execute-api:ManageConnections` on `{api}/{stage}/{METHOD}/@connections/{id}`.
    iam: ServiceIam,
    /// Connections whose next push (a `windows` frame) is lost on the way: answered 200 and
    /// never delivered, as a frame lost to a network fault would be. Set by tests of clients'
    /// self-repair.
    losing: Mutex<HashSet<String>>,
}

fn gateway_error(status: StatusCode, kind: &str, message: &str) -> Response {
    (
        status,
        [("x-amzn-ErrorType", kind.to_owned())],
        axum::Json(json!({ "message": message })),
    )
        .into_response()
}

fn new_connection_id() -> String {
    // API Gateway's ids look like `L0SM9cOFvHcCIhw=`: 11 random bytes in base64.
    let mut bytes = [0u8; 11];
    rand::rng().fill_bytes(&mut bytes);
    STANDARD.encode(bytes)
}

impl WebSocketApi {
    /// An API serving `stage`, with `routes` (route key to function) and a route selection
    /// expression of the form `$request.body.<path>`, under the account's `quotas`.
    pub fn new(
        stage: &str,
        route_selection: &str,
        routes: BTreeMap<String, Arc<FunctionPool>>,
        limits: Limits,
        quotas: Arc<AwsQuotas>,
        iam: ServiceIam,
    ) -> Arc<Self> {
        let selection_path = route_selection
            .strip_prefix("$request.body.")
            .unwrap_or("action")
            .split('.')
            .map(str::to_owned)
            .collect();
        Arc::new(Self {
            stage: stage.to_owned(),
            selection_path,
            routes,
            limits,
            quotas,
            connections: Mutex::new(HashMap::new()),
            next_request: AtomicU64::new(1),
            pushed: AtomicU64::new(0),
            iam,
            losing: Mutex::new(HashSet::new()),
        })
    }

    /// The router: the WebSocket endpoint and the management API.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/{stage}", get(upgrade))
            .route("/{stage}/@connections/{id}", any(manage))
            .with_state(Arc::clone(self))
    }

    /// The stage name (the first path segment of both endpoints).
    pub fn stage(&self) -> &str {
        &self.stage
    }

    /// The ids of the open connections.
    pub fn connection_ids(&self) -> Vec<String> {
        self.connections
            .lock()
            .map(|c| c.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Makes the next push (`windows` frame) to each of `connection_ids` get lost: accepted
    /// and never delivered. For tests of clients that must notice a missed push.
    pub fn lose_next_push(&self, connection_ids: &[String]) {
        if let Ok(mut losing) = self.losing.lock() {
            losing.extend(connection_ids.iter().cloned());
        }
    }

    /// How many pushes [`Self::lose_next_push`] asked to lose are still to come.
    pub fn pushes_to_lose(&self) -> usize {
        self.losing.lock().map(|losing| losing.len()).unwrap_or(0)
    }

    /// Whether this frame to `connection_id` is one [`Self::lose_next_push`] asked to lose.
    fn loses(&self, connection_id: &str, frame: &str) -> bool {
        frame.contains(r#""type":"windows""#)
            && self
                .losing
                .lock()
                .is_ok_and(|mut losing| losing.remove(connection_id))
    }

    /// How many connections are open.
    pub fn open_connections(&self) -> usize {
        self.connections.lock().map(|c| c.len()).unwrap_or(0)
    }

    fn request_id(&self) -> String {
        format!(
            "local-ws-{:010}",
            self.next_request.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// The route key a message selects.
    pub fn select_route(&self, body: &str) -> Option<String> {
        let selected = serde_json::from_str::<Value>(body).ok().and_then(|value| {
            let pointer: String = self
                .selection_path
                .iter()
                .map(|p| format!("/{p}"))
                .collect();
            value
                .pointer(&pointer)
                .and_then(Value::as_str)
                .map(str::to_owned)
        });
        match selected {
            Some(key) if self.routes.contains_key(&key) => Some(key),
            _ if self.routes.contains_key("$default") => Some("$default".to_owned()),
            _ => None,
        }
    }

    fn send(&self, connection_id: &str, frame: Outgoing) -> bool {
        self.connections
            .lock()
            .ok()
            .and_then(|c| {
                c.get(connection_id)
                    .map(|live| live.outbox.send(frame).is_ok())
            })
            .unwrap_or(false)
    }

    async fn route_message(self: Arc<Self>, context: ConnectionContext, body: String) {
        let request_id = self.request_id();
        let answer_error = |message: &str| {
            json!({
                "message": message,
                "connectionId": context.connection_id,
                "requestId": request_id,
            })
            .to_string()
        };
        if !self.quotas.admit_request() {
            self.send(
                &context.connection_id,
                Outgoing::Frame(answer_error("Too Many Requests")),
            );
            return;
        }
        let Some(route) = self.select_route(&body) else {
            self.send(
                &context.connection_id,
                Outgoing::Frame(answer_error("Forbidden")),
            );
            return;
        };
        let Some(function) = self.routes.get(&route) else {
            return;
        };
        let event = message_event(&context, &route, &body, now_ms(), &request_id);
        let bytes = serde_json::to_vec(&event).unwrap_or_default();
        if function.invoke(&bytes).await.is_err() {
            self.send(
                &context.connection_id,
                Outgoing::Frame(answer_error("Internal server error")),
            );
        }
    }

    async fn disconnect(&self, context: &ConnectionContext, code: u16, reason: &str) {
        let removed = self
            .connections
            .lock()
            .ok()
            .and_then(|mut c| c.remove(&context.connection_id));
        if removed.is_some() {
            self.invoke_disconnect(context, code, reason).await;
        }
    }

    async fn invoke_disconnect(&self, context: &ConnectionContext, code: u16, reason: &str) {
        if let Some(function) = self.routes.get("$disconnect") {
            let event = disconnect_event(context, code, reason, now_ms(), &self.request_id());
            let bytes = serde_json::to_vec(&event).unwrap_or_default();
            function.invoke(&bytes).await.ok();
        }
    }

    /// Serves an established connection; only now can `@connections` reach it.
    async fn serve(self: Arc<Self>, socket: WebSocket, live: Live) {
        let context = live.context.clone();
        let last_active_ms = Arc::clone(&live.last_active_ms);
        let (outbox, mut inbox) = mpsc::unbounded_channel();
        if let Ok(mut connections) = self.connections.lock() {
            connections.insert(context.connection_id.clone(), Live { outbox, ..live });
        }
        let (mut sink, mut stream) = socket.split();
        // Ends after sending a Close (with its code and reason), or when the client is gone.
        let mut writer = tokio::spawn(async move {
            while let Some(frame) = inbox.recv().await {
                match frame {
                    Outgoing::Frame(text) => {
                        if sink.send(Message::Text(text.into())).await.is_err() {
                            return None;
                        }
                    }
                    Outgoing::Close(code, reason) => {
                        let close = CloseFrame {
                            code,
                            reason: reason.into(),
                        };
                        sink.send(Message::Close(Some(close))).await.ok();
                        return Some((code, reason));
                    }
                }
            }
            None
        });
        let mut writer_done = false;
        let deadline = tokio::time::Instant::now() + self.limits.max_age;
        let (code, reason) = loop {
            let idle_at = tokio::time::Instant::now() + self.limits.idle;
            let next = tokio::select! {
                next = stream.next() => next,
                // Closed by the server (`@connections` DELETE): like API Gateway, the connection
                // is over at once, whether or not the client answers the close.
                closed = &mut writer => {
                    writer_done = true;
                    break closed.ok().flatten().unwrap_or((1006, "Connection lost"));
                }
                _ = tokio::time::sleep_until(idle_at.min(deadline)) => {
                    let reason = if idle_at < deadline { "Going away (idle)" } else { "Going away (2 hours)" };
                    self.send(&context.connection_id, Outgoing::Close(1001, "Going away"));
                    break (1001, reason);
                }
            };
            match next {
                Some(Ok(Message::Text(text))) => {
                    last_active_ms.store(now_ms(), Ordering::Relaxed);
                    let api = Arc::clone(&self);
                    tokio::spawn(api.route_message(context.clone(), text.to_string()));
                }
                Some(Ok(Message::Binary(bytes))) => {
                    last_active_ms.store(now_ms(), Ordering::Relaxed);
                    let api = Arc::clone(&self);
                    let text = String::from_utf8_lossy(&bytes).into_owned();
                    tokio::spawn(api.route_message(context.clone(), text));
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {
                    last_active_ms.store(now_ms(), Ordering::Relaxed);
                }
                Some(Ok(Message::Close(frame))) => {
                    break (frame.map(|f| f.code).unwrap_or(1005), "Client closed");
                }
                Some(Err(_)) | None => break (1006, "Connection lost"),
            }
        };
        self.disconnect(&context, code, reason).await;
        // The writer ends once the connection is removed (its sender dropped) or after Close.
        if !writer_done {
            writer.await.ok();
        }
    }
}

async fn upgrade(
    State(api): State<Arc<WebSocketApi>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(stage): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if stage != api.stage {
        return gateway_error(StatusCode::FORBIDDEN, "ForbiddenException", "Forbidden");
    }
    if !api.quotas.admit_connect() || !api.quotas.admit_request() {
        return gateway_error(
            StatusCode::TOO_MANY_REQUESTS,
            "LimitExceededException",
            "Too Many Requests",
        );
    }
    let now = now_ms();
    let context = ConnectionContext {
        connection_id: new_connection_id(),
        api_id: "local".into(),
        stage: stage.clone(),
        domain_name: headers
            .get("host")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost")
            .to_owned(),
        connected_at_ms: now,
        source_ip: peer.ip().to_string(),
    };
    let query = query_pairs(uri.query().unwrap_or(""));
    let header_pairs: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    if let Some(function) = api.routes.get("$connect") {
        let event = connect_event(&context, &query, &header_pairs, now, &api.request_id());
        let bytes = serde_json::to_vec(&event).unwrap_or_default();
        match function.invoke(&bytes).await {
            Ok(answer) => {
                let answer: Value = serde_json::from_slice(&answer).unwrap_or_default();
                let status = answer["statusCode"].as_u64().unwrap_or(200) as u16;
                if !(200..300).contains(&status) {
                    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
                    let body = answer["body"].as_str().unwrap_or("").to_owned();
                    return (status, body).into_response();
                }
            }
            Err(_) => {
                return gateway_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalServerErrorException",
                    "Internal server error",
                );
            }
        }
    }
    let live = Live {
        context: context.clone(),
        user_agent: headers
            .get("user-agent")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("")
            .to_owned(),
        // Replaced by the connection's own outbox once the handshake completes.
        outbox: mpsc::unbounded_channel().0,
        last_active_ms: Arc::new(AtomicI64::new(now)),
    };
    let limit = api.limits.max_message_bytes;
    let serving = Arc::clone(&api);
    let failed = Arc::clone(&api);
    ws.max_message_size(limit)
        .on_failed_upgrade(move |_| {
            tokio::spawn(async move {
                failed
                    .invoke_disconnect(&context, 1006, "Handshake failed")
                    .await;
            });
        })
        .on_upgrade(move |socket| serving.serve(socket, live))
}

async fn manage(
    State(api): State<Arc<WebSocketApi>>,
    Path((stage, connection_id)): Path<(String, String)>,
    method: axum::http::Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let gone = || gateway_error(StatusCode::GONE, "GoneException", "Gone");
    if stage != api.stage {
        return gateway_error(StatusCode::FORBIDDEN, "ForbiddenException", "Forbidden");
    }
    // The management API takes only SigV4-signed calls its signer's policies allow
    // ("Use @connections commands in your backend service", API Gateway developer guide).
    let received = ReceivedRequest::new(&uri, &headers);
    let principal = match api
        .iam
        .principals
        .authenticate(&received.signed(method.as_str(), &body), "execute-api")
    {
        Ok(principal) => principal,
        Err(SignatureError::Missing) => {
            return gateway_error(
                StatusCode::FORBIDDEN,
                "MissingAuthenticationTokenException",
                "Missing Authentication Token",
            );
        }
        Err(error) => {
            return gateway_error(
                StatusCode::FORBIDDEN,
                "InvalidSignatureException",
                &error.to_string(),
            );
        }
    };
    let resource = api.iam.arn(&format!(
        "/{}/@connections/{connection_id}",
        method.as_str()
    ));
    if let Err(message) = principal.check("execute-api:ManageConnections", &resource) {
        return gateway_error(StatusCode::FORBIDDEN, "AccessDeniedException", &message);
    }
    if !api.quotas.admit_request() {
        return gateway_error(
            StatusCode::TOO_MANY_REQUESTS,
            "LimitExceededException",
            "Rate exceeded",
        );
    }
    api.quotas.post_latency().await;
    match method.as_str() {
        "POST" => {
            if body.len() > api.limits.max_message_bytes {
                return gateway_error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "PayloadTooLargeException",
                    "Message too long",
                );
            }
            let text = String::from_utf8_lossy(&body).into_owned();
            if api.loses(&connection_id, &text) {
                return StatusCode::OK.into_response();
            }
            if api.send(&connection_id, Outgoing::Frame(text)) {
                api.pushed.fetch_add(1, Ordering::Relaxed);
                StatusCode::OK.into_response()
            } else {
                gone()
            }
        }
        "GET" => {
            let described = api.connections.lock().ok().and_then(|c| {
                c.get(&connection_id).map(|live| {
                    json!({
                        "ConnectedAt": iso8601(live.context.connected_at_ms),
                        "Identity": {
                            "SourceIp": live.context.source_ip,
                            "UserAgent": live.user_agent,
                        },
                        "LastActiveAt": iso8601(live.last_active_ms.load(Ordering::Relaxed)),
                    })
                })
            });
            match described {
                Some(description) => axum::Json(description).into_response(),
                None => gone(),
            }
        }
        "DELETE" => {
            if api.send(
                &connection_id,
                Outgoing::Close(1000, "Closed by the application"),
            ) {
                StatusCode::NO_CONTENT.into_response()
            } else {
                gone()
            }
        }
        _ => gateway_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowedException",
            "Method not allowed",
        ),
    }
}
