//! A subscriber of an AppSync Events API speaking the real-time protocol as the browser client
//! does: the `aws-appsync-event-ws` and `header-<base64url>` subprotocols, `connection_init`
//! answered by `connection_ack`, `subscribe` answered by `subscribe_success`, then `data`
//! messages between `ka` keep-alives. The load generator's listeners and the end-to-end tests
//! stand in for browsers with it, against the local stack or a deployed API.

use super::realtime::SUBPROTOCOL;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use std::borrow::Cow;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Why a subscriber could not connect.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The handshake was refused with this HTTP status (429: too many connects per second).
    #[error("handshake refused with HTTP {0}")]
    Refused(u16),
    /// The API answered `connection_error` (a bad API key: `UnauthorizedException`).
    #[error("connection refused: {0}")]
    ConnectionError(Value),
    #[error("{0}")]
    Failed(String),
}

/// A WebSocket configuration for a client that receives small messages. tungstenite zeroes
/// its whole read buffer (128 KB by default) on every read: with thousands of subscribers
/// that was most of the CPU the load generator spent per message.
pub fn small_reads() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(8 * 1024)
}

/// The subprotocols that carry `authorization` (`{"host", "x-api-key"}`).
pub fn subprotocols(authorization: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(authorization.to_string());
    format!("{SUBPROTOCOL}, header-{header}")
}

/// A connected, acknowledged subscriber.
pub struct Subscriber {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    authorization: Value,
    /// The `connectionTimeoutMs` of the `connection_ack`.
    pub connection_timeout_ms: u64,
}

/// What a subscriber authorizes with: the API key (API_KEY), or a token of the API's OpenID
/// Connect issuer (OPENID_CONNECT).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventCredential {
    ApiKey(String),
    Token(String),
}

impl EventCredential {
    /// The authorization object for the API whose HTTP host is `http_host`.
    pub fn authorization(&self, http_host: &str) -> Value {
        match self {
            EventCredential::ApiKey(key) => json!({ "host": http_host, "x-api-key": key }),
            EventCredential::Token(token) => json!({ "host": http_host, "Authorization": token }),
        }
    }
}

impl Subscriber {
    /// Connects to `realtime_url` (`wss://.../event/realtime`) with the API key `api_key` of the
    /// API whose HTTP host is `http_host`, and waits up to `timeout` for the `connection_ack`.
    pub async fn connect(
        realtime_url: &str,
        http_host: &str,
        api_key: &str,
        timeout: Duration,
    ) -> Result<Self, ConnectError> {
        let credential = EventCredential::ApiKey(api_key.to_owned());
        Self::connect_with(realtime_url, http_host, &credential, timeout).await
    }

    /// [`Subscriber::connect`] with any credential.
    pub async fn connect_with(
        realtime_url: &str,
        http_host: &str,
        credential: &EventCredential,
        timeout: Duration,
    ) -> Result<Self, ConnectError> {
        let authorization = credential.authorization(http_host);
        let mut request = realtime_url
            .into_client_request()
            .map_err(|e| ConnectError::Failed(format!("{realtime_url}: {e}")))?;
        let protocols = subprotocols(&authorization)
            .parse()
            .map_err(|e| ConnectError::Failed(format!("subprotocol header: {e}")))?;
        request
            .headers_mut()
            .insert("sec-websocket-protocol", protocols);
        let connecting =
            tokio_tungstenite::connect_async_with_config(request, Some(small_reads()), false);
        let socket = match tokio::time::timeout(timeout, connecting).await {
            Err(_) => return Err(ConnectError::Failed(format!("no handshake in {timeout:?}"))),
            Ok(Err(WsError::Http(response))) => {
                return Err(ConnectError::Refused(response.status().as_u16()));
            }
            Ok(Err(error)) => return Err(ConnectError::Failed(format!("{realtime_url}: {error}"))),
            Ok(Ok((socket, _))) => socket,
        };
        let mut subscriber = Self {
            socket,
            authorization,
            connection_timeout_ms: 0,
        };
        subscriber.send(&json!({ "type": "connection_init" })).await;
        match subscriber.next_message(timeout).await {
            Ok(ack) if ack["type"] == "connection_ack" => {
                subscriber.connection_timeout_ms = ack["connectionTimeoutMs"].as_u64().unwrap_or(0);
                Ok(subscriber)
            }
            Ok(other) if other["type"] == "connection_error" => {
                Err(ConnectError::ConnectionError(other))
            }
            Ok(other) => Err(ConnectError::Failed(format!(
                "expected connection_ack, got {other}"
            ))),
            Err(code) => Err(ConnectError::Failed(format!(
                "closed before connection_ack ({code:?})"
            ))),
        }
    }

    /// Sends one message.
    pub async fn send(&mut self, message: &Value) {
        self.socket
            .send(Message::Text(message.to_string().into()))
            .await
            .ok();
    }

    /// Subscribes to `channel` as `id`, with the connection's authorization; the answer
    /// (`subscribe_success` or `subscribe_error`) within `timeout`.
    pub async fn subscribe(
        &mut self,
        id: &str,
        channel: &str,
        timeout: Duration,
    ) -> Result<Value, Option<u16>> {
        self.request_subscription(id, channel).await;
        self.next_message(timeout).await
    }

    /// Sends a `subscribe` without waiting for its answer, which arrives among the messages.
    pub async fn request_subscription(&mut self, id: &str, channel: &str) {
        let message = json!({
            "type": "subscribe",
            "id": id,
            "channel": channel,
            "authorization": self.authorization,
        });
        self.send(&message).await;
    }

    /// The next message other than `ka`, `Err(Some(code))` when the connection closed,
    /// `Err(None)` after `timeout`. Reading is also what answers the server's pings.
    pub async fn next_message(&mut self, timeout: Duration) -> Result<Value, Option<u16>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let text = next_text(&mut self.socket, deadline).await?;
            if let Ok(message) = serde_json::from_str::<Value>(&text)
                && message["type"] != "ka"
            {
                return Ok(message);
            }
        }
    }

    /// The next text message as it came (`ka` included), for a reader of many messages that
    /// parses only what it needs (see [`data_event`]). Errors as [`Subscriber::next_message`].
    pub async fn next_raw(&mut self, timeout: Duration) -> Result<Utf8Bytes, Option<u16>> {
        next_text(&mut self.socket, tokio::time::Instant::now() + timeout).await
    }

    /// The event of a `data` message (a JSON document as text), parsed.
    pub fn event_of(message: &Value) -> Option<Value> {
        (message["type"] == "data")
            .then(|| serde_json::from_str(message["event"].as_str()?).ok())
            .flatten()
    }
}

/// A message's type and, for `data`, its event; other fields are skipped unread.
#[derive(Deserialize)]
struct DataMessage<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    event: Option<Cow<'a, str>>,
}

/// The event (a JSON document as text) of `message` if it is a `data` message, without
/// building a document of the whole message.
pub fn data_event(message: &str) -> Option<Cow<'_, str>> {
    let message: DataMessage<'_> = serde_json::from_str(message).ok()?;
    (message.kind == "data").then_some(message.event).flatten()
}

/// The next text message of `socket` before `deadline`, other frames skipped: `Err(Some(code))`
/// when the connection closed (1006 when it broke), `Err(None)` at the deadline.
pub async fn next_text<S>(
    socket: &mut WebSocketStream<S>,
    deadline: tokio::time::Instant,
) -> Result<Utf8Bytes, Option<u16>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let next = tokio::time::timeout_at(deadline, socket.next())
            .await
            .map_err(|_| None)?;
        match next {
            Some(Ok(Message::Text(text))) => return Ok(text),
            Some(Ok(Message::Close(frame))) => {
                return Err(Some(frame.map(|f| u16::from(f.code)).unwrap_or(1005)));
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return Err(Some(1006)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::data_event;

    #[test]
    fn the_event_of_a_data_message_is_its_unescaped_text() {
        let message = r#"{"type":"data","id":"s1","event":"{\"n\":1}"}"#;
        assert_eq!(data_event(message).as_deref(), Some(r#"{"n":1}"#));
        assert_eq!(data_event(r#"{"type":"ka"}"#), None);
        assert_eq!(
            data_event(r#"{"type":"subscribe_success","id":"s1"}"#),
            None
        );
        assert_eq!(data_event("[1"), None);
    }
}
