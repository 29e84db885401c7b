//! The WebSocket protocol between notify and browsers. Browsers send JSON actions
//! (`{"action":"subscribe","stream":"final"}`, `{"action":"sync"}`, `{"action":"ping"}`),
//! which API Gateway routes on `$request.body.action`; notify answers and pushes JSON messages
//! tagged by `type`. Anything a browser sends that is not a valid action gets an `error` message
//! naming what was wrong; nothing a client sends can fail the function.

use reactions::moments::{Moment, MomentStatus};
use reactions::{StreamId, WindowStateRecord};
use serde::Serialize;
use serde_json::Value;

/// The largest frame API Gateway delivers to a WebSocket client ("Amazon API Gateway quotas
/// for configuring and running a WebSocket API": message payload size 128 KB); a larger
/// `PostToConnection` is refused and the viewer gets nothing.
pub const MAX_FRAME_BYTES: usize = 128 * 1024;

/// The largest client message read, well above any valid action.
pub const MAX_CLIENT_MESSAGE_BYTES: usize = 4_096;

/// An action a browser asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientAction {
    /// Watch another stream from now on (the viewer was verified at `$connect`).
    Subscribe { stream: StreamId },
    /// Send the latest `windows` windows of the watched stream (the late-joiner snapshot).
    Sync { windows: Option<u32> },
    /// Keep-alive and latency probe.
    Ping,
}

/// Why a client message was not an action. The code is stable for clients to match on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("message is empty")]
    Empty,
    #[error("message is larger than {MAX_CLIENT_MESSAGE_BYTES} bytes")]
    TooLarge,
    #[error("message is not a JSON object")]
    NotJson,
    #[error("field `action` is missing; expected one of subscribe, sync, ping")]
    MissingAction,
    #[error("unknown action `{0}`; expected one of subscribe, sync, ping")]
    UnknownAction(String),
    #[error("field `{field}` is invalid: {reason}")]
    BadField { field: &'static str, reason: String },
}

impl ProtocolError {
    /// A short, stable code for the `error` message.
    pub fn code(&self) -> &'static str {
        match self {
            ProtocolError::Empty => "empty_message",
            ProtocolError::TooLarge => "message_too_large",
            ProtocolError::NotJson => "not_json",
            ProtocolError::MissingAction => "missing_action",
            ProtocolError::UnknownAction(_) => "unknown_action",
            ProtocolError::BadField { .. } => "bad_field",
        }
    }
}

fn bad(field: &'static str, reason: impl Into<String>) -> ProtocolError {
    ProtocolError::BadField {
        field,
        reason: reason.into(),
    }
}

/// Parses one client message.
pub fn parse_action(body: &str) -> Result<ClientAction, ProtocolError> {
    if body.trim().is_empty() {
        return Err(ProtocolError::Empty);
    }
    if body.len() > MAX_CLIENT_MESSAGE_BYTES {
        return Err(ProtocolError::TooLarge);
    }
    let Ok(Value::Object(message)) = serde_json::from_str::<Value>(body) else {
        return Err(ProtocolError::NotJson);
    };
    let action = match message.get("action") {
        None | Some(Value::Null) => return Err(ProtocolError::MissingAction),
        Some(Value::String(action)) => action.as_str(),
        Some(_) => return Err(bad("action", "must be a string")),
    };
    match action {
        "subscribe" => {
            let stream = match message.get("stream") {
                Some(Value::String(s)) => {
                    StreamId::parse("stream", s).map_err(|e| bad("stream", e.rule.to_string()))?
                }
                Some(_) => return Err(bad("stream", "must be a string")),
                None => return Err(bad("stream", "is required")),
            };
            Ok(ClientAction::Subscribe { stream })
        }
        "sync" => {
            let windows = match message.get("windows") {
                None | Some(Value::Null) => None,
                Some(value) => {
                    let n = value
                        .as_u64()
                        .filter(|n| (1..=u64::from(crate::config::MAX_SYNC_WINDOWS)).contains(n))
                        .ok_or_else(|| {
                            bad(
                                "windows",
                                format!(
                                    "must be an integer from 1 to {}",
                                    crate::config::MAX_SYNC_WINDOWS
                                ),
                            )
                        })?;
                    Some(n as u32)
                }
            };
            Ok(ClientAction::Sync { windows })
        }
        "ping" => Ok(ClientAction::Ping),
        other => Err(ProtocolError::UnknownAction(
            other.chars().take(40).collect(),
        )),
    }
}

/// What notify sends to a browser.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// One push: the newest state of every window of the watched stream that changed since the
    /// previous push, oldest first. A client keeps, per window, the state with the largest
    /// total.
    Windows {
        stream: StreamId,
        /// The stream's push number, one more than the previous push's (0 without a push
        /// schedule): a client that sees a number skipped missed a push and syncs.
        seq: i64,
        /// When notify sent this push (ms since the epoch): what a client's delivery latency is
        /// measured from, whichever way the push travelled.
        sent_at_ms: i64,
        windows: Vec<WindowStateRecord>,
    },
    /// A moment of the watched stream appeared, changed, was confirmed or was withdrawn (see
    /// `reactions::moments`): sent when it happens, outside the push schedule (a stream has
    /// a few an hour). A client keeps, per `moment.detected_from_ms`, the frame with the
    /// highest `revision`, and drops a withdrawn moment.
    Moment {
        stream: StreamId,
        moment: Moment,
        status: MomentStatus,
        revision: i64,
    },
    /// The latest windows of a stream, oldest first, answering `sync`.
    Snapshot {
        stream: StreamId,
        window_width_ms: i64,
        windows: Vec<WindowStateRecord>,
    },
    /// The connection now watches `stream`.
    Subscribed { stream: StreamId },
    /// Answers `ping`.
    Pong { at_ms: i64 },
    /// The client's message was refused.
    Error { code: String, message: String },
}

impl ServerMessage {
    /// The error message for a refused client message.
    pub fn refusal(error: &ProtocolError) -> Self {
        ServerMessage::Error {
            code: error.code().to_owned(),
            message: error.to_string(),
        }
    }

    /// The JSON frame.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Plain structs of strings and integers: serialisation cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The JSON frame, at most `max_bytes` long: a `windows` or `snapshot` frame that would be
    /// longer drops its oldest windows until it fits (the newest matter most, and the client
    /// keeps what earlier frames gave it). Also returns how many windows were dropped.
    pub fn to_capped_bytes(mut self, max_bytes: usize) -> (Vec<u8>, usize) {
        let bytes = self.to_bytes();
        if bytes.len() <= max_bytes {
            return (bytes, 0);
        }
        let (ServerMessage::Windows { windows, .. } | ServerMessage::Snapshot { windows, .. }) =
            &mut self
        else {
            return (bytes, 0);
        };
        // Each window costs its own JSON and a separating comma; drop from the oldest.
        let sizes: Vec<usize> = windows
            .iter()
            .map(|w| serde_json::to_vec(w).map_or(0, |v| v.len()) + 1)
            .collect();
        let mut length = bytes.len();
        let mut dropped = 0;
        while length > max_bytes && dropped < sizes.len() {
            length = length.saturating_sub(sizes[dropped]);
            dropped += 1;
        }
        windows.drain(..dropped);
        (self.to_bytes(), dropped)
    }

    /// The JSON frame as text (an AppSync Events event is a JSON document in a string).
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_actions_parse() {
        assert_eq!(
            parse_action(r#"{"action":"subscribe","stream":"final"}"#),
            Ok(ClientAction::Subscribe {
                stream: StreamId::parse("s", "final").unwrap(),
            })
        );
        assert_eq!(
            parse_action(r#"{"action":"sync","windows":5}"#),
            Ok(ClientAction::Sync { windows: Some(5) })
        );
        assert_eq!(
            parse_action(r#"{"action":"sync"}"#),
            Ok(ClientAction::Sync { windows: None })
        );
        assert_eq!(parse_action(r#"{"action":"ping"}"#), Ok(ClientAction::Ping));
    }

    #[test]
    fn malformed_messages_get_precise_codes() {
        let long = format!(r#"{{"action":"ping","pad":"{}"}}"#, "x".repeat(5_000));
        for (body, code) in [
            ("", "empty_message"),
            ("   ", "empty_message"),
            (long.as_str(), "message_too_large"),
            ("ping", "not_json"),
            ("[1,2]", "not_json"),
            ("{}", "missing_action"),
            (r#"{"action":7}"#, "bad_field"),
            (r#"{"action":"dance"}"#, "unknown_action"),
            (r#"{"action":"subscribe"}"#, "bad_field"),
            (r#"{"action":"subscribe","stream":"a b"}"#, "bad_field"),
            (r#"{"action":"subscribe","stream":5}"#, "bad_field"),
            (r#"{"action":"sync","windows":0}"#, "bad_field"),
            (r#"{"action":"sync","windows":151}"#, "bad_field"),
            (r#"{"action":"sync","windows":"3"}"#, "bad_field"),
        ] {
            assert_eq!(parse_action(body).unwrap_err().code(), code, "{body}");
        }
    }

    #[test]
    fn every_action_route_key_is_an_action() {
        for key in crate::ROUTE_KEYS.iter().filter(|k| !k.starts_with('$')) {
            let body = format!(r#"{{"action":"{key}","stream":"s"}}"#);
            assert!(parse_action(&body).is_ok(), "{key}");
        }
    }

    /// A window of `stream` counting every emoji of a 64-emoji catalogue, as a busy stream's
    /// windows do.
    fn wide_window(start_ms: i64) -> WindowStateRecord {
        let counts: reactions::window::EmojiCounts = (0..64)
            .map(|i| {
                let emoji =
                    reactions::EmojiName::parse(&format!("catalogue_emoji_{i:02}")).unwrap();
                (emoji, 1_000_000 + i)
            })
            .collect();
        WindowStateRecord {
            v: 1,
            stream: StreamId::parse("s", "final").unwrap(),
            start_ms,
            end_ms: start_ms + 2_000,
            total: counts.values().sum(),
            counts,
            swarm: Default::default(),
            is_final: true,
            updated_at_ms: start_ms + 2_500,
        }
    }

    #[test]
    fn frames_are_capped_by_size_dropping_the_oldest_windows() {
        let windows: Vec<_> = (0..150).map(|i| wide_window(i * 2_000)).collect();
        let snapshot = ServerMessage::Snapshot {
            stream: StreamId::parse("s", "final").unwrap(),
            window_width_ms: 2_000,
            windows: windows.clone(),
        };
        let whole = snapshot.to_bytes().len();
        assert!(whole > 2 * MAX_FRAME_BYTES, "{whole}");
        let (frame, dropped) = snapshot.to_capped_bytes(MAX_FRAME_BYTES);
        assert!(frame.len() <= MAX_FRAME_BYTES, "{}", frame.len());
        assert!(dropped > 0 && dropped < 150, "{dropped}");
        let parsed: Value = serde_json::from_slice(&frame).unwrap();
        let kept = parsed["windows"].as_array().unwrap();
        assert_eq!(kept.len(), 150 - dropped);
        // The newest windows stay, in order, and as many as fit: one more would not.
        assert_eq!(kept.last().unwrap()["start_ms"], 149 * 2_000);
        assert_eq!(kept[0]["start_ms"], dropped as i64 * 2_000);
        let one_more = ServerMessage::Snapshot {
            stream: StreamId::parse("s", "final").unwrap(),
            window_width_ms: 2_000,
            windows: windows[dropped - 1..].to_vec(),
        };
        assert!(one_more.to_bytes().len() > MAX_FRAME_BYTES);
        // Small frames are untouched.
        let small = ServerMessage::Windows {
            stream: StreamId::parse("s", "final").unwrap(),
            seq: 1,
            sent_at_ms: 1,
            windows: windows[..3].to_vec(),
        };
        let (bytes, dropped) = small.clone().to_capped_bytes(MAX_FRAME_BYTES);
        assert_eq!((bytes, dropped), (small.to_bytes(), 0));
    }

    #[test]
    fn messages_are_tagged_by_type() {
        let pong = serde_json::to_value(ServerMessage::Pong { at_ms: 5 }).unwrap();
        assert_eq!(pong, serde_json::json!({"type": "pong", "at_ms": 5}));
        let refusal = ServerMessage::refusal(&ProtocolError::UnknownAction("x".into()));
        let refusal = serde_json::to_value(refusal).unwrap();
        assert_eq!(refusal["type"], "error");
        assert_eq!(refusal["code"], "unknown_action");
    }
}
