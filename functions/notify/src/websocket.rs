//! The WebSocket routes: `$connect` registers a connection for the stream in its query (after
//! checking its token when tokens are required), `$disconnect` forgets it, and every other route
//! carries a client action, answered through the management API. A refused `$connect` returns
//! the status API Gateway should answer with; a bad client message gets an `error` frame.

use crate::protocol::{ClientAction, ProtocolError, ServerMessage, parse_action};
use crate::{Notify, NotifyError};
use aws_lambda_events::event::apigw::ApiGatewayWebsocketProxyRequest;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use reactions::StreamId;
use reactions::clock::now_ms;
use serde_json::{Value, json};

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
        if let Err(refusal) = self.check_token(&stream, query.first("token")) {
            tracing::info!(connection_id, stream = stream.as_str(), reason = %refusal, "connect refused");
            return Ok(refusal.response());
        }
        self.connections
            .register(connection_id, &stream, now_ms())
            .await?;
        tracing::info!(connection_id, stream = stream.as_str(), "connected");
        Ok(ok())
    }

    fn check_token(&self, stream: &StreamId, token: Option<&str>) -> Result<(), TokenRefusal> {
        match &self.tokens {
            None => Ok(()),
            Some(tokens) => tokens.verify(stream, token, now_ms()).map_err(TokenRefusal),
        }
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
            Ok(ClientAction::Subscribe { stream, token }) => {
                match self.check_token(&stream, token.as_deref()) {
                    Err(refusal) => ServerMessage::Error {
                        code: "unauthorized".to_owned(),
                        message: refusal.0.to_string(),
                    },
                    Ok(()) => {
                        if !self.connections.subscribe(connection_id, &stream).await? {
                            // The record expired while the socket lived on: register it again.
                            self.connections
                                .register(connection_id, &stream, now_ms())
                                .await?;
                        }
                        ServerMessage::Subscribed { stream }
                    }
                }
            }
            Ok(ClientAction::Sync { windows }) => match self.connections.find(connection_id).await?
            {
                None => ServerMessage::Error {
                    code: "unknown_connection".to_owned(),
                    message: "this connection is not registered; reconnect".to_owned(),
                },
                Some(connection) => {
                    let limit = windows.unwrap_or(self.config.sync_windows);
                    let stored = self
                        .windows
                        .list_windows(&connection.stream, None, limit)
                        .await?;
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
        self.reply(connection_id, &reply).await
    }

    async fn reply(&self, connection_id: &str, message: &ServerMessage) -> Result<(), NotifyError> {
        match self
            .api
            .post_to_connection(connection_id, message.to_bytes())
            .await
        {
            Ok(()) => {}
            Err(crate::management::PostError::Gone) => {
                self.connections.remove(connection_id).await?;
            }
            Err(error) => tracing::warn!(connection_id, %error, "reply not delivered"),
        }
        Ok(())
    }
}

/// A refused token, with the HTTP status `$connect` answers: 401 when none was given, 403 when
/// one was given but is not valid.
struct TokenRefusal(crate::token::TokenError);

impl std::fmt::Display for TokenRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl TokenRefusal {
    fn response(&self) -> Value {
        match self.0 {
            crate::token::TokenError::Missing => status(401, "a token is required"),
            _ => status(403, "the token is not valid for this stream"),
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
