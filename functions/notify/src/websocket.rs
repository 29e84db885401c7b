//! The WebSocket routes: `$connect` registers a connection for the stream in its query (after
//! verifying the viewer's token, its `token` query parameter, when viewer identity is on:
//! WebSocket APIs have no JWT authorizer, and browsers cannot set headers on a WebSocket), `$disconnect` forgets it, and every other route
//! carries a client action, answered through the management API. A refused `$connect` returns
//! the status API Gateway should answer with; a bad client message gets an `error` frame.
//! A connection's `sync` is answered at most once per `SYNC_EVERY_MS` (`sync_too_soon` else);
//! a snapshot keeps under API Gateway's 128 KB frame by leaving out its oldest windows, and a
//! throttled reply is retried with backoff within the throttle budget.

use crate::fanout::backoff_delay;
use crate::management::PostError;
use crate::protocol::{ClientAction, MAX_FRAME_BYTES, ProtocolError, ServerMessage, parse_action};
use crate::{Notify, NotifyError};
use aws_lambda_events::event::apigw::ApiGatewayWebsocketProxyRequest;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use reactions::StreamId;
use reactions::clock::now_ms;
use reactions::mongo::SyncClaim;
use serde_json::{Value, json};
use tokio::time::Instant;

fn status(code: u16, body: &str) -> Value {
    json!({ "statusCode": code, "body": body })
}

fn ok() -> Value {
    json!({ "statusCode": 200 })
}

impl Notify {
    /// Handles one WebSocket route event.
    pub(crate) async fn handle_route(
        &self,
        request: &ApiGatewayWebsocketProxyRequest,
    ) -> Result<Value, NotifyError> {
        let context = &request.request_context;
        let route = context.route_key.as_deref().unwrap_or("$default");
        let Some(connection_id) = context.connection_id.as_deref() else {
            return Ok(status(400, "no connection id"));
        };
        match route {
            "$connect" => self.connect(request, connection_id).await,
            "$disconnect" => {
                let known = self.connections.remove(connection_id).await?;
                tracing::info!(connection_id, known, "disconnected");
                Ok(ok())
            }
            _ => {
                let action = decode_body(request).and_then(|body| parse_action(&body));
                self.act(connection_id, action).await?;
                Ok(ok())
            }
        }
    }

    async fn connect(
        &self,
        request: &ApiGatewayWebsocketProxyRequest,
        connection_id: &str,
    ) -> Result<Value, NotifyError> {
        let query = &request.query_string_parameters;
        let stream = match query.first("stream").map(|s| StreamId::parse("stream", s)) {
            Some(Ok(stream)) => stream,
            Some(Err(error)) => {
                tracing::info!(connection_id, %error, "connect refused: bad stream");
                return Ok(status(
                    400,
                    &format!("query parameter `stream`: {}", error.rule),
                ));
            }
            None => {
                tracing::info!(connection_id, "connect refused: no stream");
                return Ok(status(400, "query parameter `stream` is required"));
            }
        };
        let mut viewer = None;
        if let Some(verifier) = &self.viewers {
            let token = query.first("token");
            match verifier.verify(token, now_ms().div_euclid(1000)).await {
                // The same viewer id as ingest's for that subject, so logs line up.
                Ok(verified) => {
                    viewer = Some(String::from(reactions::UserId::from_subject(
                        &verified.subject,
                    )))
                }
                Err(refusal) if refusal.is_the_tokens_fault() => {
                    tracing::info!(connection_id, stream = stream.as_str(), %refusal, "connect refused");
                    return Ok(status(401, "a valid viewer token is required"));
                }
                Err(refusal) => {
                    tracing::error!(connection_id, %refusal, "connect refused: cannot verify tokens");
                    return Ok(status(500, "viewer tokens cannot be verified now; retry"));
                }
            }
        }
        self.connections
            .register(connection_id, &stream, now_ms())
            .await?;
        tracing::info!(connection_id, stream = stream.as_str(), viewer, "connected");
        Ok(ok())
    }

    async fn act(
        &self,
        connection_id: &str,
        action: Result<ClientAction, ProtocolError>,
    ) -> Result<(), NotifyError> {
        let reply = match action {
            Err(error) => {
                tracing::info!(
                    connection_id,
                    code = error.code(),
                    "refused client message: {error}"
                );
                ServerMessage::refusal(&error)
            }
            Ok(ClientAction::Ping) => ServerMessage::Pong { at_ms: now_ms() },
            Ok(ClientAction::Subscribe { stream }) => {
                if !self.connections.subscribe(connection_id, &stream).await? {
                    // The record expired while the socket lived on: register it again.
                    self.connections
                        .register(connection_id, &stream, now_ms())
                        .await?;
                }
                ServerMessage::Subscribed { stream }
            }
            Ok(ClientAction::Sync { windows }) => match self
                .connections
                .claim_sync(connection_id, now_ms(), self.config.sync_every)
                .await?
            {
                SyncClaim::Unknown => ServerMessage::Error {
                    code: "unknown_connection".to_owned(),
                    message: "this connection is not registered; reconnect".to_owned(),
                },
                SyncClaim::TooSoon { retry_after_ms } => ServerMessage::Error {
                    code: "sync_too_soon".to_owned(),
                    message: format!(
                        "a connection may sync once every {} ms; ask again in {retry_after_ms} ms",
                        self.config.sync_every.as_millis()
                    ),
                },
                SyncClaim::Granted(connection) => {
                    let limit = windows.unwrap_or(self.config.sync_windows);
                    let stored = self
                        .windows
                        .list_windows(&connection.stream, None, limit)
                        .await?
                        .windows;
                    let now = now_ms();
                    ServerMessage::Snapshot {
                        window_width_ms: self.config.domain.window_width.millis(),
                        windows: stored
                            .iter()
                            .map(|w| w.state_record(&self.config.domain, now))
                            .collect(),
                        stream: connection.stream,
                    }
                }
            },
        };
        self.reply(connection_id, reply).await
    }

    async fn reply(&self, connection_id: &str, message: ServerMessage) -> Result<(), NotifyError> {
        let (frame, dropped) = message.to_capped_bytes(MAX_FRAME_BYTES);
        if dropped > 0 {
            tracing::info!(
                connection_id,
                dropped,
                "snapshot too large for one frame: oldest windows left out"
            );
        }
        let retry_until = Instant::now() + self.config.throttle_budget;
        let mut attempt = 0;
        loop {
            match self
                .api
                .post_to_connection(connection_id, frame.clone())
                .await
            {
                Ok(()) => return Ok(()),
                Err(PostError::Gone) => {
                    self.connections.remove(connection_id).await?;
                    return Ok(());
                }
                Err(PostError::Throttled) => {
                    attempt += 1;
                    let delay = backoff_delay(attempt, &mut rand::rng());
                    if Instant::now() + delay > retry_until {
                        tracing::warn!(
                            connection_id,
                            attempt,
                            "reply still throttled: not delivered"
                        );
                        return Ok(());
                    }
                    tokio::time::sleep(delay).await;
                }
                Err(error) => {
                    tracing::warn!(connection_id, %error, "reply not delivered");
                    return Ok(());
                }
            }
        }
    }
}

fn decode_body(request: &ApiGatewayWebsocketProxyRequest) -> Result<String, ProtocolError> {
    let body = request.body.as_deref().unwrap_or("");
    if !request.is_base64_encoded {
        return Ok(body.to_owned());
    }
    let bytes = STANDARD.decode(body).map_err(|_| ProtocolError::NotJson)?;
    String::from_utf8(bytes).map_err(|_| ProtocolError::NotJson)
}
