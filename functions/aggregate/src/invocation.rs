//! What aggregate is invoked with: a Kafka batch from the event source mapping, or the
//! scheduled finalize tick (template event `FinalizeTick`, `rate(1 minute)`), which runs the
//! `final` pass when no batch comes to run it: once every stream's taps stop, the last windows
//! still become final.

use aws_lambda_events::event::kafka::KafkaEvent;
use serde::{Deserialize, Serialize};

/// The scheduled tick's input, exactly `{"emostream":"finalize"}` (template.yaml).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinalizeTick {
    pub emostream: TickAction,
}

/// What a tick asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TickAction {
    Finalize,
}

/// One invocation's event. The tick is tried first: every field of a Kafka event is optional,
/// so any object would pass for an empty batch.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Invocation {
    Tick(FinalizeTick),
    Batch(KafkaEvent),
}

/// What a tick did; the tick's response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TickSummary {
    pub windows_finalized: usize,
}

/// An invocation's response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Response {
    Batch(crate::BatchSummary),
    Tick(TickSummary),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tick_and_kafka_batches_are_told_apart() {
        let tick: Invocation = serde_json::from_str(r#"{"emostream":"finalize"}"#).unwrap();
        assert!(matches!(tick, Invocation::Tick(_)));
        let batch: Invocation = serde_json::from_str(
            r#"{"eventSource":"SelfManagedKafka","bootstrapServers":"b","records":{}}"#,
        )
        .unwrap();
        assert!(matches!(batch, Invocation::Batch(_)));
        // Anything else with an `emostream` field is not a tick.
        let other: Invocation = serde_json::from_str(r#"{"emostream":"other"}"#).unwrap();
        assert!(matches!(other, Invocation::Batch(_)));
    }
}
