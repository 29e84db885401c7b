//! What the aggregate tests share: a handler on fresh output and dead-letter topics and its own
//! database, Lambda Kafka events built from reaction logs, and exactness checks.
#![allow(dead_code)]

use aggregate::config::AggregateConfig;
use aggregate::{Aggregate, BatchSummary};
use aws_lambda_events::event::kafka::KafkaEvent;
use emostream_tests::fixtures::FIXTURE_RETENTION_HOURS;
use emostream_tests::patience::PATIENCE;
use emostream_tests::{servers, unique_name};
use reactions::kafka::{TopicSpec, ensure_topics};
use reactions::kafka_event::{RecordPosition, lambda_kafka_event_json, lambda_kafka_record_json};
use reactions::message::{ReactionRecord, VersionedMessage};
use reactions::mongo::{WindowStore, connect};
use reactions::window_delta::window_deltas;
use reactions::{Reaction, count_batch};
use std::collections::HashMap;
use std::time::Duration;

pub const TOPIC: &str = "emoji-reaction-topic";

/// An allowed lateness (about 300 years) under which no window becomes final.
pub const NEVER_FINAL_LATENESS_MS: &str = "10000000000000";

pub struct Setup {
    pub aggregate: Aggregate,
    pub config: AggregateConfig,
}

pub fn settings(
    brokers: &str,
    mongodb_uri: &str,
    database: &str,
    extra: &[(&str, &str)],
) -> HashMap<String, String> {
    let mut settings = HashMap::from([
        ("KAFKA_BROKERS".to_owned(), brokers.to_owned()),
        ("MONGODB_URI".to_owned(), mongodb_uri.to_owned()),
        ("MONGODB_DATABASE".to_owned(), database.to_owned()),
        ("OUTPUT_TOPIC".to_owned(), unique_name("output")),
        ("DEAD_LETTER_TOPIC".to_owned(), unique_name("dlq")),
        // Long enough for a busy machine; the broker-down test sets its own.
        ("PRODUCE_TIMEOUT_MS".to_owned(), "30000".to_owned()),
        // The fixtures' windows lie in January 2026: with the default 168 h they would already be
        // past `expires_at`, and MongoDB's TTL sweep (once a minute) could delete them mid-test.
        (
            "WINDOW_RETENTION_HOURS".to_owned(),
            FIXTURE_RETENTION_HOURS.to_owned(),
        ),
        // The fixtures' input topic is shared with other tests in the broker, so whether its
        // partitions are counted to their ends (what `final` waits for) depends on them: no
        // window becomes final here. `final_windows.rs` tests it on topics of its own.
        (
            "ALLOWED_LATENESS_MS".to_owned(),
            NEVER_FINAL_LATENESS_MS.to_owned(),
        ),
    ]);
    for (k, v) in extra {
        settings.insert((*k).to_owned(), (*v).to_owned());
    }
    settings
}

pub async fn build(settings: &HashMap<String, String>) -> Setup {
    let config = AggregateConfig::from_settings(settings).unwrap();
    let topics = [
        TopicSpec {
            name: config.output_topic.clone(),
            partitions: 2,
        },
        TopicSpec {
            name: config.dead_letter_topic.clone(),
            partitions: 1,
        },
    ];
    ensure_topics(&config.kafka, &topics, PATIENCE)
        .await
        .unwrap();
    Setup {
        aggregate: Aggregate::new(config.clone()).await.unwrap(),
        config,
    }
}

/// A handler on a database of its own named after `name`, with `extra` settings.
pub async fn setup_named(name: &str, extra: &[(&str, &str)]) -> Setup {
    let database = servers().mongo(name).database;
    build(&settings(
        &servers().kafka_brokers,
        &servers().mongodb_uri,
        &database,
        extra,
    ))
    .await
}

pub async fn setup() -> Setup {
    let database = servers().mongo("aggregate").database;
    build(&settings(
        &servers().kafka_brokers,
        &servers().mongodb_uri,
        &database,
        &[],
    ))
    .await
}

pub fn log(
    partition: i32,
    len: usize,
    streams: usize,
    base_ms: i64,
) -> Vec<(RecordPosition, Reaction)> {
    emostream_tests::fixtures::reaction_log(TOPIC, partition, len, streams, base_ms)
}

pub fn event(records: &[(RecordPosition, Reaction)], source: &str) -> KafkaEvent {
    let json = records
        .iter()
        .map(|(position, reaction)| {
            let value = ReactionRecord::from(reaction).encode();
            lambda_kafka_record_json(
                position,
                reaction.at_ms,
                Some(reaction.stream.as_str().as_bytes()),
                Some(&value),
                &[],
            )
        })
        .collect();
    serde_json::from_value(lambda_kafka_event_json(source, "127.0.0.1:9092", json)).unwrap()
}

pub async fn handle(setup: &Setup, records: &[(RecordPosition, Reaction)]) -> BatchSummary {
    setup
        .aggregate
        .handle(&event(records, "SelfManagedKafka"))
        .await
        .unwrap()
}

/// Redelivers the batch `records` every 500 ms, as the event source does after a failure,
/// until the function succeeds or [`PATIENCE`] has passed.
pub async fn handle_until_ok(
    setup: &Setup,
    records: &[(RecordPosition, Reaction)],
) -> Option<BatchSummary> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while tokio::time::Instant::now() < deadline {
        match setup
            .aggregate
            .handle(&event(records, "SelfManagedKafka"))
            .await
        {
            Ok(summary) => return Some(summary),
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
    None
}

pub async fn store(config: &AggregateConfig) -> WindowStore {
    WindowStore::new(&connect(&config.mongo, "aggregate-test").await.unwrap())
}

/// The stored windows equal the counts of `records`, exactly.
pub async fn assert_exact(config: &AggregateConfig, records: &[(RecordPosition, Reaction)]) {
    let width = config.domain.window_width;
    let expected = count_batch(records.iter().map(|(_, r)| r), width);
    let deltas = window_deltas(records.iter().map(|(p, r)| (p, r)), width);
    let stored = store(config).await.read_windows(&deltas).await.unwrap();
    assert_eq!(stored.len(), expected.len());
    for window in stored {
        assert_eq!(window.counts, expected[&window.key], "{:?}", window.key);
    }
}
