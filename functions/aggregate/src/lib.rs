//! The aggregate function: triggered by Kafka event source mappings on `emoji-reaction-topic`.
//! This version decodes each batch and counts it into windows; storing the counts exactly once
//! in MongoDB and re-publishing window state are being built.

use aws_lambda_events::event::kafka::KafkaEvent;
use reactions::message::ReactionRecord;
use reactions::{DomainConfig, Reaction, count_batch, decode_kafka_event};
use serde::Serialize;

/// Everything the handler needs, built once per container in `main`.
#[derive(Debug, Clone)]
pub struct Aggregate {
    /// Domain settings (window width, catalogue).
    pub config: DomainConfig,
}

/// What one batch contained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BatchSummary {
    /// Records decoded into reactions.
    pub reactions: usize,
    /// Records that could not be decoded.
    pub malformed: usize,
    /// Distinct (stream, window) pairs the batch touches.
    pub windows: usize,
}

impl Aggregate {
    /// Decodes and counts one batch.
    pub fn handle(&self, event: &KafkaEvent) -> BatchSummary {
        let decoded = decode_kafka_event::<ReactionRecord>(event);
        let mut malformed = 0;
        let mut reactions: Vec<Reaction> = Vec::with_capacity(decoded.len());
        for record in decoded {
            match record.message {
                Ok(message) => reactions.push(message.into()),
                Err(error) => {
                    malformed += 1;
                    tracing::warn!(
                        topic = %record.position.topic,
                        partition = record.position.partition,
                        offset = record.position.offset,
                        reason = error.code(),
                        "malformed record: {error}"
                    );
                }
            }
        }
        let windows = count_batch(&reactions, self.config.window_width);
        BatchSummary {
            reactions: reactions.len(),
            malformed,
            windows: windows.len(),
        }
    }
}
