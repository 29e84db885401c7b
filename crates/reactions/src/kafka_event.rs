//! Decoding of the Kafka events that Lambda event source mappings deliver (`aws:kafka` from MSK
//! and `SelfManagedKafka`; both share one JSON shape). Keys and values arrive base64-encoded and
//! headers as arrays of signed byte numbers; this module turns each record into typed data or a
//! typed error, never a panic, so one bad record can be dead-lettered without failing the batch.

use crate::message::{RecordError, VersionedMessage};
use aws_lambda_events::event::kafka::{KafkaEvent, KafkaRecord};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use std::borrow::Cow;
use std::collections::BTreeMap;

/// Where a record sits in the log: what exactly-once bookkeeping and dead letters refer to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordPosition {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The incarnation of the topic the offset belongs to: 0 as decoded; aggregate raises it
    /// once it sees the topic was deleted and created again (see `crate::topic_generation`),
    /// so the restarted offsets are not taken for ones already counted.
    pub generation: u32,
}

/// One record of a batch with its payload decoded, or the reason it could not be.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedRecord<T> {
    pub position: RecordPosition,
    /// Broker or producer timestamp, ms since the epoch.
    pub timestamp_ms: i64,
    /// The decoded key, if any (the stream id for our topics).
    pub key: Option<Vec<u8>>,
    /// The value bytes as decoded from base64, or the raw text if it was not valid base64:
    /// what a dead-letter record carries so nothing is lost.
    pub value: Vec<u8>,
    /// Headers in order, values as bytes.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The typed message, or why it is malformed.
    pub message: Result<T, RecordError>,
}

fn topic_of(map_key: &str, record: &KafkaRecord) -> String {
    match &record.topic {
        Some(topic) if !topic.is_empty() => topic.clone(),
        // Map keys are "<topic>-<partition>"; topics may contain '-' themselves.
        _ => map_key
            .rsplit_once('-')
            .map_or(map_key, |(topic, _)| topic)
            .to_owned(),
    }
}

fn decode_record<T: VersionedMessage>(map_key: &str, record: &KafkaRecord) -> DecodedRecord<T> {
    let position = RecordPosition {
        topic: topic_of(map_key, record),
        partition: i32::try_from(record.partition).unwrap_or(i32::MAX),
        offset: record.offset,
        generation: 0,
    };
    let headers = record
        .headers
        .iter()
        .flat_map(|h| h.iter())
        // Lambda serialises header bytes as Java's signed bytes; reinterpret as unsigned.
        .map(|(k, v)| (k.clone(), v.iter().map(|b| *b as u8).collect()))
        .collect();
    let key = record.key.as_deref().and_then(|k| STANDARD.decode(k).ok());
    let (value, message) = match record.value.as_deref() {
        None | Some("") => (Vec::new(), Err(RecordError::MissingValue)),
        Some(text) => match STANDARD.decode(text) {
            Ok(bytes) => {
                let message = T::decode(&bytes);
                (bytes, message)
            }
            Err(e) => (
                text.as_bytes().to_vec(),
                Err(RecordError::BadBase64 {
                    part: "value",
                    reason: e.to_string(),
                }),
            ),
        },
    };
    DecodedRecord {
        position,
        timestamp_ms: record.timestamp.timestamp_millis(),
        key,
        value,
        headers,
        message,
    }
}

/// Decodes every record of an event, ordered by topic, partition and offset (Lambda delivers
/// the map in no particular order).
pub fn decode_kafka_event<T: VersionedMessage>(event: &KafkaEvent) -> Vec<DecodedRecord<T>> {
    let mut records: Vec<DecodedRecord<T>> = event
        .records
        .iter()
        .flat_map(|(map_key, records)| records.iter().map(move |r| decode_record(map_key, r)))
        .collect();
    records.sort_by(|a, b| a.position.cmp(&b.position));
    records
}

/// The `eventSourceArn` of local MSK events.
const LOCAL_MSK_ARN: &str =
    "arn:aws:kafka:local:000000000000:cluster/emostream/00000000-0000-0000-0000-000000000000-1";

/// One record as Lambda encodes it in a Kafka event: base64 key and value, headers as a list of
/// one-entry maps from name to signed bytes. Serialized straight from borrowed data, so the
/// local event source builds a 500-record event without a tree of JSON values.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LambdaKafkaRecord<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
    timestamp: i64,
    timestamp_type: &'static str,
    key: Option<String>,
    value: Option<String>,
    headers: Vec<SignedHeader<'a>>,
}

/// A header as Lambda writes it: `{"name": [signed bytes]}`.
#[derive(Debug, Clone)]
struct SignedHeader<'a>(&'a str, &'a [u8]);

impl serde::Serialize for SignedHeader<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        struct Signed<'b>(&'b [u8]);
        impl serde::Serialize for Signed<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_seq(self.0.iter().map(|b| *b as i8))
            }
        }
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry(self.0, &Signed(self.1))?;
        map.end()
    }
}

impl<'a> LambdaKafkaRecord<'a> {
    pub fn new(
        position: &'a RecordPosition,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &'a [(String, Vec<u8>)],
    ) -> Self {
        Self {
            topic: &position.topic,
            partition: position.partition,
            offset: position.offset,
            timestamp: timestamp_ms,
            timestamp_type: "CREATE_TIME",
            key: key.map(|k| STANDARD.encode(k)),
            value: value.map(|v| STANDARD.encode(v)),
            headers: headers.iter().map(|(k, v)| SignedHeader(k, v)).collect(),
        }
    }
}

/// A whole Kafka event: records grouped under `"<topic>-<partition>"` keys as Lambda does.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct LambdaKafkaEvent<'a, R> {
    event_source: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    event_source_arn: Option<&'static str>,
    bootstrap_servers: &'a str,
    records: BTreeMap<String, Vec<R>>,
}

impl<'a, R> LambdaKafkaEvent<'a, R> {
    /// `records` with their topic and partition; `event_source` is `aws:kafka` (MSK) or
    /// `SelfManagedKafka`. A group's name is built once per group, not per record.
    fn new<'t>(
        event_source: &'a str,
        bootstrap_servers: &'a str,
        records: impl IntoIterator<Item = ((Cow<'t, str>, i64), R)>,
    ) -> Self {
        let mut by_partition: BTreeMap<(Cow<'t, str>, i64), Vec<R>> = BTreeMap::new();
        for (topic_partition, record) in records {
            by_partition
                .entry(topic_partition)
                .or_default()
                .push(record);
        }
        Self {
            event_source,
            event_source_arn: (event_source == "aws:kafka").then_some(LOCAL_MSK_ARN),
            bootstrap_servers,
            records: by_partition
                .into_iter()
                .map(|((topic, partition), records)| (format!("{topic}-{partition}"), records))
                .collect(),
        }
    }
}

/// The JSON of a Kafka event holding `records`, exactly as Lambda would deliver it: what the
/// local stack's event source mappings send.
pub fn lambda_kafka_event_bytes(
    event_source: &str,
    bootstrap_servers: &str,
    records: Vec<LambdaKafkaRecord<'_>>,
) -> Vec<u8> {
    let event = LambdaKafkaEvent::new(
        event_source,
        bootstrap_servers,
        records
            .into_iter()
            .map(|r| ((Cow::Borrowed(r.topic), i64::from(r.partition)), r)),
    );
    serde_json::to_vec(&event).unwrap_or_default()
}

/// Encodes a record the way Lambda does, as a JSON value, for tests and samples.
pub fn lambda_kafka_record_json(
    position: &RecordPosition,
    timestamp_ms: i64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[(String, Vec<u8>)],
) -> serde_json::Value {
    serde_json::to_value(LambdaKafkaRecord::new(
        position,
        timestamp_ms,
        key,
        value,
        headers,
    ))
    .unwrap_or_default()
}

/// Wraps records made by [`lambda_kafka_record_json`] into a whole Kafka event (see
/// [`lambda_kafka_event_bytes`]).
pub fn lambda_kafka_event_json(
    event_source: &str,
    bootstrap_servers: &str,
    records: Vec<serde_json::Value>,
) -> serde_json::Value {
    let event = LambdaKafkaEvent::new(
        event_source,
        bootstrap_servers,
        records.into_iter().map(|record| {
            let topic = record["topic"].as_str().unwrap_or_default().to_owned();
            let partition = record["partition"].as_i64().unwrap_or_default();
            ((Cow::Owned(topic), partition), record)
        }),
    );
    serde_json::to_value(event).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::ReactionRecord;
    use serde_json::json;

    fn event(records: serde_json::Value) -> KafkaEvent {
        serde_json::from_value(json!({
            "eventSource": "SelfManagedKafka",
            "bootstrapServers": "127.0.0.1:9092",
            "records": records,
        }))
        .unwrap()
    }

    fn position(partition: i32, offset: i64) -> RecordPosition {
        RecordPosition {
            topic: "emoji-reaction-topic".into(),
            partition,
            offset,
            generation: 0,
        }
    }

    const GOOD: &[u8] = br#"{"v":1,"stream":"m1","user":"u","emoji":"fire","count":2,"at_ms":5}"#;

    #[test]
    fn decodes_keys_values_and_signed_byte_headers() {
        let headers = vec![("trace".to_string(), vec![0xC3, 0xA9, b'x'])];
        let record =
            lambda_kafka_record_json(&position(1, 7), 42, Some(b"m1"), Some(GOOD), &headers);
        assert_eq!(record["headers"][0]["trace"], json!([-61, -87, 120]));
        let decoded = decode_kafka_event::<ReactionRecord>(&event(
            json!({"emoji-reaction-topic-1": [record]}),
        ));
        assert_eq!(decoded.len(), 1);
        let r = &decoded[0];
        assert_eq!(r.position, position(1, 7));
        assert_eq!(r.timestamp_ms, 42);
        assert_eq!(r.key.as_deref(), Some(&b"m1"[..]));
        assert_eq!(r.headers, headers);
        assert_eq!(r.message.as_ref().unwrap().count, 2);
    }

    #[test]
    fn whole_events_group_records_by_topic_and_partition() {
        let records = vec![
            lambda_kafka_record_json(&position(1, 7), 0, None, Some(GOOD), &[]),
            lambda_kafka_record_json(&position(0, 3), 0, None, Some(GOOD), &[]),
            lambda_kafka_record_json(&position(1, 8), 0, None, Some(GOOD), &[]),
        ];
        let json = lambda_kafka_event_json("aws:kafka", "b:9092", records);
        assert_eq!(
            json["records"]["emoji-reaction-topic-1"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
        assert!(json["eventSourceArn"].is_string());
        let event: KafkaEvent = serde_json::from_value(json).unwrap();
        let offsets: Vec<i64> = decode_kafka_event::<ReactionRecord>(&event)
            .iter()
            .map(|r| r.position.offset)
            .collect();
        assert_eq!(offsets, [3, 7, 8]);
    }

    #[test]
    fn the_event_source_bytes_are_the_same_event_as_the_json_values() {
        let headers = vec![("trace".to_string(), vec![0xC3, b'x'])];
        let positions = [position(1, 7), position(0, 3), position(1, 8)];
        let values: Vec<serde_json::Value> = positions
            .iter()
            .map(|p| lambda_kafka_record_json(p, 9, Some(b"m1"), Some(GOOD), &headers))
            .collect();
        let borrowed: Vec<LambdaKafkaRecord<'_>> = positions
            .iter()
            .map(|p| LambdaKafkaRecord::new(p, 9, Some(b"m1"), Some(GOOD), &headers))
            .collect();
        for source in ["aws:kafka", "SelfManagedKafka"] {
            let bytes = lambda_kafka_event_bytes(source, "b:9092", borrowed.clone());
            let parsed: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(
                parsed,
                lambda_kafka_event_json(source, "b:9092", values.clone())
            );
            let event: KafkaEvent = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(decode_kafka_event::<ReactionRecord>(&event).len(), 3);
        }
    }

    #[test]
    fn the_aws_fixture_decodes_with_a_typed_error_for_its_non_json_value() {
        let fixture = json!({
            "eventSource": "aws:kafka",
            "eventSourceArn": "arn:aws:kafka:us-west-2:012345678901:cluster/ExampleMSKCluster/e9f754c6-d29a-4430-a7db-958a19fd2c54-4",
            "records": {"AWSKafkaTopic-0": [{
                "topic": "AWSKafkaTopic", "partition": 0, "offset": 0,
                "timestamp": 1595035749700_i64, "timestampType": "CREATE_TIME",
                "key": "OGQ1NTk2YjQtMTgxMy00MjM4LWIyNGItNmRhZDhlM2QxYzBj",
                "value": "OGQ1NTk2YjQtMTgxMy00MjM4LWIyNGItNmRhZDhlM2QxYzBj",
                "headers": [{"headerKey": [104, 101, 97, 100, 101, 114, 86, 97, 108, 117, 101]}]
            }]}
        });
        let event: KafkaEvent = serde_json::from_value(fixture).unwrap();
        let decoded = decode_kafka_event::<ReactionRecord>(&event);
        assert_eq!(
            decoded[0].headers[0],
            ("headerKey".into(), b"headerValue".to_vec())
        );
        assert_eq!(decoded[0].value, b"8d5596b4-1813-4238-b24b-6dad8e3d1c0c");
        assert_eq!(decoded[0].message.as_ref().unwrap_err().code(), "bad_json");
    }

    #[test]
    fn malformed_records_carry_their_reason_and_are_ordered() {
        let good = lambda_kafka_record_json(&position(0, 3), 0, None, Some(GOOD), &[]);
        let mut bad_base64 = lambda_kafka_record_json(&position(0, 1), 0, None, Some(GOOD), &[]);
        bad_base64["value"] = json!("%%% not base64");
        let missing = lambda_kafka_record_json(&position(0, 2), 0, None, None, &[]);
        let mut no_topic =
            lambda_kafka_record_json(&position(2, 0), 0, None, Some(b"{\"v\":9}"), &[]);
        no_topic.as_object_mut().unwrap().remove("topic");
        let decoded = decode_kafka_event::<ReactionRecord>(&event(json!({
            "emoji-reaction-topic-0": [good, bad_base64, missing],
            "emoji-reaction-topic-2": [no_topic],
        })));
        let summary: Vec<_> = decoded
            .iter()
            .map(|r| {
                (
                    r.position.partition,
                    r.position.offset,
                    r.message.as_ref().err().map(RecordError::code),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (0, 1, Some("bad_base64")),
                (0, 2, Some("missing_value")),
                (0, 3, None),
                (2, 0, Some("unsupported_version")),
            ]
        );
        assert_eq!(decoded[0].value, b"%%% not base64");
        assert_eq!(decoded[3].position.topic, "emoji-reaction-topic");
    }
}
