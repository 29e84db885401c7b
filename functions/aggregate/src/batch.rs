//! Sorting one Kafka batch into reactions to count and records to dead-letter. Pure: no I/O,
//! so it is what the benchmark measures and what the handler trusts.
//!
//! A reaction's `at_ms` decides its window, so it is checked against the one time the broker
//! vouches for, the record's own Kafka timestamp (ingest stamps `at_ms` just before producing;
//! the producer's `CreateTime`, or the broker's `LogAppendTime`, follows within the allowed
//! lateness): a record whose `at_ms` lies outside that range came from a broken clock or
//! another producer, and would open a window in the far past or future (or overflow one), so it
//! is dead-lettered. The check depends only on the record, so every delivery decides the same.

use aws_lambda_events::event::kafka::KafkaEvent;
use reactions::kafka::OutgoingRecord;
use reactions::kafka_event::{DecodedRecord, RecordPosition, decode_kafka_event};
use reactions::message::{ReactionRecord, VersionedMessage};
use reactions::{Reaction, WindowKey, WindowWidth};

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

    /// A reaction whose idempotency key an earlier request used with another body (see
    /// `reactions::idempotency`): found only once the viewer's keys are read, after decoding.
    /// Its value is encoded again, as ingest encodes it (the same bytes for a record this build
    /// produced); its key is the stream's (the viewer's shard suffix, if any, is not kept).
    pub fn key_reused(position: &RecordPosition, reaction: &Reaction) -> Self {
        DeadLetter {
            position: position.clone(),
            reason: reactions::idempotency::KEY_REUSED,
            error: format!(
                "the request's {} was used before for a request with other reactions; not counted",
                reactions::idempotency::HEADER
            ),
            key: Some(reaction.stream.as_str().as_bytes().to_vec()),
            value: ReactionRecord::from(reaction).encode(),
        }
    }
}

/// The reason code of a record whose `at_ms` is out of [`AtMsRange`].
pub const AT_MS_OUT_OF_RANGE: &str = "at_ms_out_of_range";

/// How much lower a decoded Kafka timestamp can be than the broker's (see
/// [`AtMsRange::range_of`]).
const DECODED_TIMESTAMP_SLACK_MS: i64 = 1;

/// How far a reaction's `at_ms` may lie from its record's Kafka timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AtMsRange {
    /// The record may reach the topic this long after `at_ms` (`ALLOWED_LATENESS_MS`).
    pub lateness_ms: i64,
    /// `at_ms` may be this far ahead of the broker's clock (`MAX_CLOCK_SKEW_MS`).
    pub skew_ms: i64,
}

impl AtMsRange {
    /// Whether `at_ms` fits a record stamped `timestamp_ms` by Kafka. A record without a
    /// timestamp (Kafka's -1, or 0) is not checked.
    pub fn admits(self, at_ms: i64, timestamp_ms: i64) -> bool {
        timestamp_ms <= 0 || self.range_of(timestamp_ms).contains(&at_ms)
    }

    /// The `at_ms` a record stamped `timestamp_ms` may carry. The upper end has a millisecond
    /// more: the Lambda event's timestamp reaches the handler through a conversion to
    /// fractional seconds (`aws_lambda_events`), which can drop its last millisecond.
    fn range_of(self, timestamp_ms: i64) -> std::ops::RangeInclusive<i64> {
        timestamp_ms.saturating_sub(self.lateness_ms)
            ..=timestamp_ms
                .saturating_add(self.skew_ms)
                .saturating_add(DECODED_TIMESTAMP_SLACK_MS)
    }
}

/// Takes out the reactions whose windows have expired by `now_ms` (ended more than `retention`
/// ago; MongoDB's TTL index deletes such a window's document), returning how many there were:
/// a replay from the start of a long-kept topic, or a record kept longer than its window, must
/// not re-create a window with part of its count (which the next pass would publish as final).
pub fn take_expired(
    reactions: &mut Vec<(RecordPosition, Reaction)>,
    width: WindowWidth,
    retention: std::time::Duration,
    now_ms: i64,
) -> usize {
    let retention_ms = reactions::clock::duration_ms(retention);
    let before = reactions.len();
    reactions.retain(|(_, reaction)| {
        let end =
            WindowKey::containing(reaction.stream.clone(), reaction.at_ms, width).end_ms(width);
        end.saturating_add(retention_ms) > now_ms
    });
    before - reactions.len()
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
/// fail decoding and are dead-lettered with the other malformed records, as are reactions whose
/// `at_ms` is out of `range`.
pub fn prepare_batch(event: &KafkaEvent, range: AtMsRange) -> PreparedBatch {
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
            Ok(message) if range.admits(message.at_ms, record.timestamp_ms) => {
                reactions.push((record.position, Reaction::from(message)));
            }
            Ok(message) => {
                let admitted = range.range_of(record.timestamp_ms);
                let error = format!(
                    "at_ms {} is outside [{}, {}]: its record's Kafka timestamp {} less ALLOWED_LATENESS_MS, plus MAX_CLOCK_SKEW_MS",
                    message.at_ms,
                    admitted.start(),
                    admitted.end(),
                    record.timestamp_ms
                );
                dead_letters.push(dead_letter(record, AT_MS_OUT_OF_RANGE, error));
            }
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

    const RANGE: AtMsRange = AtMsRange {
        lateness_ms: 5_000,
        skew_ms: 1_000,
    };

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
        let batch = prepare_batch(&event, RANGE);
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

    fn reaction_at(at_ms: i64) -> Vec<u8> {
        format!(r#"{{"v":1,"stream":"m","user":"u","emoji":"fire","count":1,"at_ms":{at_ms}}}"#)
            .into_bytes()
    }

    #[test]
    fn a_reaction_whose_at_ms_is_far_from_its_kafka_timestamp_is_dead_lettered() {
        let ts = 1_800_000_000_000;
        let cases = [
            (ts, true),
            (ts - 5_000, true),
            (ts + 1_001, true),
            (ts - 5_001, false),
            (ts + 1_002, false),
            // A window end near the end of time, or a clock at the epoch.
            (i64::MAX, false),
            (0, false),
        ];
        let records = cases
            .iter()
            .enumerate()
            .map(|(i, (at_ms, _))| {
                lambda_kafka_record_json(
                    &position(i as i64),
                    ts,
                    Some(b"m"),
                    Some(&reaction_at(*at_ms)),
                    &[],
                )
            })
            .collect();
        let event =
            serde_json::from_value(lambda_kafka_event_json("SelfManagedKafka", "b", records))
                .unwrap();
        let batch = prepare_batch(&event, RANGE);
        let counted: Vec<i64> = batch.reactions.iter().map(|(p, _)| p.offset).collect();
        let refused: Vec<i64> = batch
            .dead_letters
            .iter()
            .map(|d| d.position.offset)
            .collect();
        assert_eq!(counted, [0, 1, 2]);
        assert_eq!(refused, [3, 4, 5, 6]);
        assert!(
            batch
                .dead_letters
                .iter()
                .all(|d| d.reason == AT_MS_OUT_OF_RANGE)
        );
        assert!(
            batch.dead_letters[2]
                .error
                .contains("at_ms 9223372036854775807 is outside")
        );
        // Every record still advances the partition's progress.
        assert_eq!(batch.record_times.len(), cases.len());
        // A record without a timestamp is not checked.
        assert!(RANGE.admits(0, 0) && RANGE.admits(i64::MAX, -1));
    }

    #[test]
    fn reactions_whose_windows_have_expired_are_taken_out() {
        let width = WindowWidth::DEFAULT;
        let hour = std::time::Duration::from_secs(3_600);
        let now = 10 * 3_600_000;
        let reaction = |at_ms: i64| {
            let bytes = reaction_at(at_ms);
            let record: ReactionRecord =
                reactions::message::VersionedMessage::decode(&bytes).unwrap();
            (position(at_ms), Reaction::from(record))
        };
        // Windows ending 1 h ago and later are kept an hour; one ending before is gone.
        let mut batch = vec![
            reaction(now - 3_600_000 - 2_000),
            reaction(now - 3_600_000 - 1),
            reaction(now - 3_600_000),
            reaction(now),
        ];
        assert_eq!(take_expired(&mut batch, width, hour, now), 2);
        let kept: Vec<i64> = batch.iter().map(|(_, r)| r.at_ms).collect();
        assert_eq!(kept, [now - 3_600_000, now]);
    }
}
