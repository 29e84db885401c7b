//! Sorting one Kafka batch into reactions to count and records to dead-letter. Pure: no I/O,
//! so it is what the benchmark measures and what the handler trusts.

use aws_lambda_events::event::kafka::KafkaEvent;
use reactions::Reaction;
use reactions::kafka::OutgoingRecord;
use reactions::kafka_event::{DecodedRecord, RecordPosition, decode_kafka_event};
use reactions::message::ReactionRecord;

/// Header names on dead-letter records.
pub mod dead_letter_headers {
    /// Short reason code (`bad_base64`, `bad_json`, `unsupported_version`, `unknown_emoji`, ...).
    pub const REASON: &str = "dlq.reason";
    /// Human-readable error.
    pub const ERROR: &str = "dlq.error";
    /// Where the record came from.
    pub const TOPIC: &str = "dlq.topic";
    pub const PARTITION: &str = "dlq.partition";
    pub const OFFSET: &str = "dlq.offset";
}

/// A record that cannot be counted, kept whole for the dead-letter topic.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub position: RecordPosition,
    pub reason: &'static str,
    pub error: String,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
}

impl DeadLetter {
    /// The record to produce: original key and value, the reason and origin in headers.
    pub fn to_record(&self) -> OutgoingRecord {
        use dead_letter_headers::*;
        let mut record =
            OutgoingRecord::new(self.key.clone().unwrap_or_default(), self.value.clone());
        record.headers = vec![
            (REASON.into(), self.reason.as_bytes().to_vec()),
            (ERROR.into(), self.error.as_bytes().to_vec()),
            (TOPIC.into(), self.position.topic.as_bytes().to_vec()),
            (
                PARTITION.into(),
                self.position.partition.to_string().into_bytes(),
            ),
            (OFFSET.into(), self.position.offset.to_string().into_bytes()),
        ];
        record
    }
}

/// A decoded, sorted batch.
#[derive(Debug, Clone)]
pub struct PreparedBatch {
    /// Records in the event.
    pub records: usize,
    /// Reactions to count, with their positions.
    pub reactions: Vec<(RecordPosition, Reaction)>,
    /// Records to dead-letter.
    pub dead_letters: Vec<DeadLetter>,
    /// Every record's position and timestamp, dead letters included: what the partitions'
    /// progress is advanced by (see `crate::progress`).
    pub record_times: Vec<(RecordPosition, i64)>,
}

fn dead_letter(
    record: DecodedRecord<ReactionRecord>,
    reason: &'static str,
    error: String,
) -> DeadLetter {
    DeadLetter {
        position: record.position,
        reason,
        error,
        key: record.key,
        value: record.value,
    }
}

/// Decodes and sorts a batch. Any well-formed emoji name is counted, whatever the configured
/// catalogue: catalogues belong to streams and may change while a reaction ingest accepted is
/// still in Kafka, and a reaction answered 202 must be counted. Names that are not well-formed
/// fail decoding and are dead-lettered with the other malformed records.
pub fn prepare_batch(event: &KafkaEvent) -> PreparedBatch {
    let decoded = decode_kafka_event::<ReactionRecord>(event);
    let records = decoded.len();
    let mut reactions = Vec::with_capacity(records);
    let mut dead_letters = Vec::new();
    let record_times = decoded
        .iter()
        .map(|record| (record.position.clone(), record.timestamp_ms))
        .collect();
    for mut record in decoded {
        match std::mem::replace(
            &mut record.message,
            Err(reactions::RecordError::MissingValue),
        ) {
            Ok(message) => reactions.push((record.position, Reaction::from(message))),
            Err(error) => dead_letters.push(dead_letter(record, error.code(), error.to_string())),
        }
    }
    PreparedBatch {
        records,
        reactions,
        dead_letters,
        record_times,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reactions::kafka_event::{lambda_kafka_event_json, lambda_kafka_record_json};

    fn position(offset: i64) -> RecordPosition {
        RecordPosition {
            topic: "emoji-reaction-topic".into(),
            partition: 0,
            offset,
            generation: 0,
        }
    }

    #[test]
    fn malformed_records_are_dead_lettered_and_any_catalogue_name_is_counted() {
        let good = br#"{"v":1,"stream":"m","user":"u","emoji":"fire","count":2,"at_ms":10}"#;
        // Not in the configured catalogue: a stream's own emoji, or one its admin since removed.
        let custom = br#"{"v":1,"stream":"m","user":"u","emoji":"goal","count":2,"at_ms":10}"#;
        let ill_formed =
            br#"{"v":1,"stream":"m","user":"u","emoji":"Not A Name","count":2,"at_ms":10}"#;
        let records = vec![
            lambda_kafka_record_json(&position(0), 0, Some(b"m"), Some(good), &[]),
            lambda_kafka_record_json(&position(1), 0, Some(b"m"), Some(b"{oops"), &[]),
            lambda_kafka_record_json(&position(2), 0, Some(b"m"), Some(custom), &[]),
            lambda_kafka_record_json(&position(3), 0, Some(b"m"), Some(br#"{"v":7}"#), &[]),
            lambda_kafka_record_json(&position(4), 0, Some(b"m"), Some(ill_formed), &[]),
        ];
        let event =
            serde_json::from_value(lambda_kafka_event_json("SelfManagedKafka", "b", records))
                .unwrap();
        let batch = prepare_batch(&event);
        assert_eq!((batch.records, batch.reactions.len()), (5, 2));
        assert_eq!(batch.reactions[1].1.emoji.as_str(), "goal");
        let reasons: Vec<_> = batch
            .dead_letters
            .iter()
            .map(|d| (d.position.offset, d.reason))
            .collect();
        assert_eq!(
            reasons,
            [(1, "bad_json"), (3, "unsupported_version"), (4, "bad_json")]
        );
        let record = batch.dead_letters[0].to_record();
        assert_eq!(record.key, b"m");
        assert_eq!(record.value, b"{oops");
        assert!(
            record
                .headers
                .contains(&("dlq.offset".into(), b"1".to_vec()))
        );
        assert!(
            record
                .headers
                .contains(&("dlq.reason".into(), b"bad_json".to_vec()))
        );
    }
}
