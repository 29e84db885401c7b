//! The notify function: one binary for two kinds of event, told apart by their shape. API
//! Gateway WebSocket route events (`$connect`, `$disconnect`, actions) manage connections;
//! Kafka events from `emoji-output-topic` carry window states to fan out. This version accepts
//! both and decodes the window states; connection storage and fan-out are being built.

use aws_lambda_events::event::kafka::KafkaEvent;
use reactions::decode_kafka_event;
use reactions::message::WindowStateRecord;
use serde_json::{Value, json};

/// The kinds of event notify receives.
#[derive(Debug)]
pub enum NotifyEvent {
    /// An API Gateway WebSocket route event, with its route key.
    WebSocket { route_key: String },
    /// A batch from the output topic.
    Kafka(Box<KafkaEvent>),
    /// Anything else: refused with an error.
    Unknown,
}

/// Classifies a raw event by its shape.
pub fn classify(event: Value) -> NotifyEvent {
    if let Some(route_key) = event
        .pointer("/requestContext/routeKey")
        .and_then(Value::as_str)
    {
        return NotifyEvent::WebSocket {
            route_key: route_key.to_owned(),
        };
    }
    if event.get("records").is_some()
        && event.get("eventSource").is_some()
        && let Ok(kafka) = serde_json::from_value::<KafkaEvent>(event)
    {
        return NotifyEvent::Kafka(Box::new(kafka));
    }
    NotifyEvent::Unknown
}

/// Why an event was refused.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// Neither a WebSocket route event nor a Kafka event.
    #[error("event is neither an API Gateway WebSocket event nor a Kafka event")]
    UnknownEvent,
}

/// Handles one event.
pub fn handle(event: Value) -> Result<Value, NotifyError> {
    match classify(event) {
        NotifyEvent::WebSocket { route_key } => {
            tracing::info!(route_key, "websocket route");
            Ok(json!({ "statusCode": 200 }))
        }
        NotifyEvent::Kafka(kafka) => {
            let states = decode_kafka_event::<WindowStateRecord>(&kafka);
            let valid = states.iter().filter(|s| s.message.is_ok()).count();
            Ok(json!({ "window_states": valid, "malformed": states.len() - valid }))
        }
        NotifyEvent::Unknown => Err(NotifyError::UnknownEvent),
    }
}
