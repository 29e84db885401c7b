//! The aggregate handler against the real Kafka-wire broker and MongoDB-wire server: exact counts
//! under replays, overlapping batches, redelivery after a crash and concurrent partitions;
//! dead letters; absolute window states on the output topic; and outages that fail the batch
//! without losing or double-counting anything once the retry succeeds.

use aggregate::Aggregate;
use aws_lambda_events::event::kafka::KafkaEvent;
use emostream_tests::broker_process::BrokerProcess;
use emostream_tests::patience::PATIENCE;
use emostream_tests::topic_reader::{header_text, read_records, record_count};
use emostream_tests::{closed_port, servers};
use rdkafka::Message;
use reactions::kafka::KafkaSettings;
use reactions::kafka_event::{RecordPosition, lambda_kafka_event_json, lambda_kafka_record_json};
use reactions::message::{ReactionRecord, VersionedMessage, WindowStateRecord};
use reactions::{WindowWidth, count_batch};
use std::collections::BTreeMap;
use std::sync::Arc;

const TOPIC: &str = "emoji-reaction-topic";

mod common;
use common::*;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test]
async fn the_same_batch_twice_and_overlapping_batches_count_exactly_once() {
    let setup = setup().await;
    let partition = log(0, 300, 3, 1_767_225_600_000);
    let first = handle(&setup, &partition[..120]).await;
    assert_eq!(first.reactions, 120);
    let replay = handle(&setup, &partition[..120]).await;
    assert_eq!(
        (replay.taps_applied, replay.replays_skipped),
        (0, replay.windows)
    );
    for (start, end) in [(100, 200), (150, 151), (0, 300), (250, 300)] {
        handle(&setup, &partition[start..end]).await;
    }
    assert_exact(&setup.config, &partition).await;
}

#[tokio::test]
async fn a_crash_between_the_write_and_the_acknowledgement_changes_nothing() {
    let setup = setup().await;
    let partition = log(3, 200, 2, 1_767_225_700_000);
    // The batch is written, then the container dies before Lambda hears back: a new container
    // gets the same batch again, extended by the records that arrived meanwhile.
    handle(&setup, &partition[..80]).await;
    drop(setup.aggregate);
    let replacement = Setup {
        aggregate: Aggregate::new(setup.config.clone()).await.unwrap(),
        config: setup.config,
    };
    let redelivered = handle(&replacement, &partition[..200]).await;
    let expected_new: u64 = partition[80..]
        .iter()
        .map(|(_, r)| u64::from(r.count))
        .sum();
    assert_eq!(redelivered.taps_applied, expected_new);
    assert_exact(&replacement.config, &partition).await;
}

#[tokio::test]
async fn two_partitions_of_the_same_streams_applied_concurrently_count_exactly_once() {
    let setup = Arc::new(setup().await);
    let logs = [
        log(0, 240, 2, 1_767_225_800_000),
        log(1, 240, 2, 1_767_225_800_000),
    ];
    let tasks: Vec<_> = logs
        .iter()
        .cloned()
        .map(|partition| {
            let setup = Arc::clone(&setup);
            tokio::spawn(async move {
                for start in (0..partition.len()).step_by(40) {
                    // Batches overlap their predecessor by 10 records, like a retried poll. The
                    // fixture's viewers tap on both partitions, so a batch can find a viewer's
                    // state written by the other partition since it read it: it fails and, as
                    // the event source does, is delivered again.
                    let from = start.saturating_sub(10);
                    let batch = &partition[from..(start + 40).min(partition.len())];
                    handle_until_ok(&setup, batch)
                        .await
                        .expect("the batch succeeds once delivered again");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_exact(&setup.config, &logs.concat()).await;
}

#[tokio::test]
async fn window_states_are_absolute_with_swarm_and_not_final_before_their_partitions_are_counted() {
    let database = servers().mongo("states").database;
    let setup = build(&settings(
        &servers().kafka_brokers,
        &servers().mongodb_uri,
        &database,
        &[("SWARM_RULE", "ratio:2")],
    ))
    .await;
    let old = log(0, 8, 1, 1_600_000_000_000);
    let mut live = log(1, 8, 1, 0);
    for (_, reaction) in &mut live {
        reaction.at_ms = now_ms();
    }
    let first = handle(&setup, &[old.clone(), live[..4].to_vec()].concat()).await;
    let second = handle(&setup, &live).await;
    let published = first.states_published + second.states_published;
    let kafka = &setup.config.kafka;
    let messages = read_records(kafka, &setup.config.output_topic, published, PATIENCE).await;
    let mut newest: BTreeMap<(String, i64), WindowStateRecord> = BTreeMap::new();
    for message in &messages {
        let state = WindowStateRecord::decode(message.payload().unwrap()).unwrap();
        assert_eq!(
            String::from_utf8_lossy(message.key().unwrap()),
            state.stream.as_str()
        );
        assert_eq!(state.total, state.counts.values().sum::<u64>());
        let slot = newest
            .entry((state.stream.to_string(), state.start_ms))
            .or_insert_with(|| state.clone());
        if state.total > slot.total {
            *slot = state;
        }
    }
    let width = WindowWidth::DEFAULT;
    let expected = count_batch(old.iter().chain(live.iter()).map(|(_, r)| r), width);
    assert_eq!(newest.len(), expected.len());
    for state in newest.values() {
        let key = reactions::WindowKey {
            stream: state.stream.clone(),
            start_ms: state.start_ms,
        };
        assert_eq!(
            state.counts, expected[&key],
            "newest state is the exact absolute count"
        );
        assert_eq!(state.end_ms - state.start_ms, width.millis());
        for (emoji, n) in &state.counts {
            assert_eq!(state.swarm[emoji], n.div_ceil(2));
        }
        // Old or live, a window is final only once every partition is counted past it
        // (`final_windows.rs`), never by age alone.
        assert!(!state.is_final);
    }
}

#[tokio::test]
async fn malformed_records_go_to_the_dead_letter_topic_and_the_batch_succeeds() {
    let setup = setup().await;
    let good = log(0, 3, 1, 1_767_225_900_000);
    let mut json: Vec<serde_json::Value> = good
        .iter()
        .map(|(p, r)| {
            lambda_kafka_record_json(
                p,
                0,
                Some(b"live-0"),
                Some(&ReactionRecord::from(r).encode()),
                &[],
            )
        })
        .collect();
    let at = |offset| RecordPosition {
        topic: TOPIC.into(),
        partition: 0,
        offset,
        generation: 0,
    };
    let mut bad_base64 = lambda_kafka_record_json(&at(2_000), 0, Some(b"live-0"), Some(b"x"), &[]);
    bad_base64["value"] = "!!not base64!!".into();
    json.push(bad_base64);
    json.push(lambda_kafka_record_json(
        &at(2_001),
        0,
        Some(b"live-0"),
        Some(b"{\"half\":"),
        &[],
    ));
    json.push(lambda_kafka_record_json(
        &at(2_002),
        0,
        Some(b"live-0"),
        Some(br#"{"v":99,"future":true}"#),
        &[],
    ));
    let event: KafkaEvent =
        serde_json::from_value(lambda_kafka_event_json("aws:kafka", "b", json)).unwrap();
    let summary = setup.aggregate.handle(&event).await.unwrap();
    assert_eq!((summary.reactions, summary.dead_lettered), (3, 3));
    assert_exact(&setup.config, &good).await;

    let letters = read_records(
        &setup.config.kafka,
        &setup.config.dead_letter_topic,
        3,
        PATIENCE,
    )
    .await;
    let mut reasons: Vec<(String, String, Vec<u8>)> = letters
        .iter()
        .map(|m| {
            let header = |name: &str| header_text(m, name).unwrap();
            assert_eq!(header("dlq.topic"), TOPIC);
            (
                header("dlq.offset"),
                header("dlq.reason"),
                m.payload().unwrap().to_vec(),
            )
        })
        .collect();
    reasons.sort();
    assert_eq!(
        reasons,
        [
            (
                "2000".into(),
                "bad_base64".into(),
                b"!!not base64!!".to_vec()
            ),
            ("2001".into(), "bad_json".into(), b"{\"half\":".to_vec()),
            (
                "2002".into(),
                "unsupported_version".into(),
                br#"{"v":99,"future":true}"#.to_vec()
            ),
        ]
    );
}

#[tokio::test]
async fn a_down_mongodb_fails_the_batch_and_the_retry_counts_once() {
    let database = servers().mongo("mongo-down").database;
    let dead_uri = format!(
        "mongodb://127.0.0.1:{}/?directConnection=true",
        closed_port()
    );
    let down = build(&settings(
        &servers().kafka_brokers,
        &dead_uri,
        &database,
        &[],
    ))
    .await;
    let partition = log(0, 50, 2, 1_767_226_000_000);
    let failed = down.aggregate.handle(&event(&partition, "aws:kafka")).await;
    assert!(failed.is_err(), "the event source must retry the batch");
    // MongoDB is back (same database, reachable server): the retried batch counts once.
    let up = build(&settings(
        &servers().kafka_brokers,
        &servers().mongodb_uri,
        &database,
        &[],
    ))
    .await;
    handle(&up, &partition).await;
    handle(&up, &partition).await;
    assert_exact(&up.config, &partition).await;
}

#[tokio::test]
async fn a_down_broker_fails_the_batch_and_the_retry_publishes_without_double_counting() {
    let mut broker = BrokerProcess::start();
    let database = servers().mongo("broker-down").database;
    let setup = build(&settings(
        &broker.address(),
        &servers().mongodb_uri,
        &database,
        &[("PRODUCE_TIMEOUT_MS", "1000")],
    ))
    .await;
    let partition = log(0, 60, 2, 1_767_226_100_000);
    // A fresh broker can take longer than the 1 s produce timeout to accept the producer's first
    // records; a failed batch is redelivered as it is, exactly as the event source mapping does.
    handle_until_ok(&setup, &partition[..30])
        .await
        .expect("the first batch succeeds on a running broker");
    broker.stop();
    let failed = setup
        .aggregate
        .handle(&event(&partition[..60], "SelfManagedKafka"))
        .await;
    assert!(
        failed.is_err(),
        "states could not be published: the batch must be retried"
    );
    broker.restart();
    let retried = handle_until_ok(&setup, &partition[..60])
        .await
        .expect("the retry succeeds once the broker is back");
    assert_eq!(
        retried.taps_applied, 0,
        "the failed attempt had already written the counts"
    );
    assert_exact(&setup.config, &partition).await;
    let kafka = KafkaSettings::new(broker.address(), "check");
    assert!(record_count(&kafka, &setup.config.output_topic) >= retried.states_published as i64);
}

/// A batch of `good` reactions plus one malformed record at each of `bad_offsets` (partition 0).
fn batch_with_bad_records(
    good: &[(RecordPosition, reactions::Reaction)],
    bad_offsets: &[i64],
) -> KafkaEvent {
    let mut json: Vec<serde_json::Value> = good
        .iter()
        .map(|(p, r)| {
            lambda_kafka_record_json(
                p,
                r.at_ms,
                Some(r.stream.as_str().as_bytes()),
                Some(&ReactionRecord::from(r).encode()),
                &[],
            )
        })
        .collect();
    for offset in bad_offsets {
        let position = RecordPosition {
            topic: TOPIC.into(),
            partition: 0,
            offset: *offset,
            generation: 0,
        };
        json.push(lambda_kafka_record_json(
            &position,
            0,
            Some(b"live-0"),
            Some(b"{\"half\":"),
            &[],
        ));
    }
    serde_json::from_value(lambda_kafka_event_json("SelfManagedKafka", "b", json)).unwrap()
}

#[tokio::test]
async fn dead_letters_are_produced_once_per_offset_however_often_the_batch_comes_back() {
    let setup = setup().await;
    let good = log(0, 4, 1, 1_767_225_900_000);
    let first = batch_with_bad_records(&good, &[3_000, 3_001]);
    let summary = setup.aggregate.handle(&first).await.unwrap();
    assert_eq!(
        (summary.dead_lettered, summary.dead_letters_already_sent),
        (2, 0)
    );
    // Delivered again (a retry after a later failure, or a timeout): nothing is re-sent.
    let again = setup.aggregate.handle(&first).await.unwrap();
    assert_eq!(
        (again.dead_lettered, again.dead_letters_already_sent),
        (2, 2)
    );
    // Redelivered with one more bad record behind: only that one is new.
    let longer = batch_with_bad_records(&good, &[3_000, 3_001, 3_002]);
    let longer = setup.aggregate.handle(&longer).await.unwrap();
    assert_eq!(
        (longer.dead_lettered, longer.dead_letters_already_sent),
        (3, 2)
    );
    // Every produce above was acknowledged before `handle` returned, so the log holds all.
    let config = &setup.config;
    assert_eq!(record_count(&config.kafka, &config.dead_letter_topic), 3);
    assert_exact(config, &good).await;
}

#[tokio::test]
async fn a_missing_dead_letter_topic_fails_the_batch_with_a_clear_error_and_loses_nothing() {
    let database = servers().mongo("aggregate").database;
    let mut settings = settings(
        &servers().kafka_brokers,
        &servers().mongodb_uri,
        &database,
        &[],
    );
    let missing = emostream_tests::unique_name("missing-dlq");
    settings.insert("DEAD_LETTER_TOPIC".into(), missing.clone());
    let config = aggregate::config::AggregateConfig::from_settings(&settings).unwrap();
    reactions::kafka::ensure_topics(
        &config.kafka,
        &[reactions::kafka::TopicSpec {
            name: config.output_topic.clone(),
            partitions: 1,
        }],
        PATIENCE,
    )
    .await
    .unwrap();
    let aggregate = Aggregate::new(config.clone()).await.unwrap();
    let good = log(0, 4, 1, 1_767_225_900_000);
    let batch = batch_with_bad_records(&good, &[3_000]);

    let error = aggregate.handle(&batch).await.unwrap_err();
    assert!(
        matches!(&error, aggregate::AggregateError::DeadLetterTopic { topic, records: 1, .. } if *topic == missing),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains(&missing) && message.contains("DEAD_LETTER_TOPIC"),
        "{message}"
    );
    // Dead letters go first: nothing of the batch was counted, so the retry counts it all.
    let deltas = reactions::window_delta::window_deltas(
        good.iter().map(|(p, r)| (p, r)),
        config.domain.window_width,
    );
    assert!(
        store(&config)
            .await
            .read_windows(&deltas)
            .await
            .unwrap()
            .is_empty()
    );

    reactions::kafka::ensure_topics(
        &config.kafka,
        &[reactions::kafka::TopicSpec {
            name: missing.clone(),
            partitions: 1,
        }],
        PATIENCE,
    )
    .await
    .unwrap();
    let summary = emostream_tests::patience::eventually("the retried batch succeeds", || async {
        aggregate.handle(&batch).await.map_err(|e| e.to_string())
    })
    .await;
    assert_eq!(
        (summary.dead_lettered, summary.dead_letters_already_sent),
        (1, 0)
    );
    assert_eq!(record_count(&config.kafka, &missing), 1);
    assert_exact(&config, &good).await;
}

#[tokio::test]
async fn a_changed_window_width_is_refused_before_anything_is_counted_twice() {
    let setup = setup().await;
    let batch = log(0, 40, 2, 1_767_225_900_000);
    handle(&setup, &batch).await;
    // The same database, the width changed, the batch redelivered (as after a timeout).
    let mut changed = settings(
        &servers().kafka_brokers,
        &servers().mongodb_uri,
        &setup.config.mongo.database,
        &[("WINDOW_WIDTH_MS", "5000")],
    );
    changed.insert("OUTPUT_TOPIC".into(), setup.config.output_topic.clone());
    changed.insert(
        "DEAD_LETTER_TOPIC".into(),
        setup.config.dead_letter_topic.clone(),
    );
    let wider = build(&changed).await;
    let error = wider
        .aggregate
        .handle(&event(&batch, "SelfManagedKafka"))
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("WINDOW_WIDTH_MS is 5000") && message.contains("2000 ms windows"),
        "{message}"
    );
    assert_exact(&setup.config, &batch).await;
    // The original width still writes.
    handle(&setup, &batch).await;
    assert_exact(&setup.config, &batch).await;
}

#[tokio::test]
async fn a_window_past_its_retention_is_never_created_again() {
    // Windows are kept an hour; a replay from the start of a topic kept longer (or a record kept
    // past its window) brings reactions from three hours ago.
    let database = servers().mongo("aggregate").database;
    let setup = build(&settings(
        &servers().kafka_brokers,
        &servers().mongodb_uri,
        &database,
        &[("WINDOW_RETENTION_HOURS", "1")],
    ))
    .await;
    let now = now_ms();
    let mut records = log(0, 20, 2, now - 3 * 3_600_000);
    let recent = log(0, 6, 2, now);
    let first_recent = records.len() as i64;
    records.extend(
        recent
            .into_iter()
            .enumerate()
            .map(|(i, (mut position, r))| {
                position.offset += first_recent + i as i64;
                (position, r)
            }),
    );
    let summary = handle(&setup, &records).await;
    assert_eq!(summary.expired_skipped, 20);
    let recent_taps: u64 = records[20..].iter().map(|(_, r)| u64::from(r.count)).sum();
    assert_eq!(summary.taps_applied, recent_taps);
    // Only the recent windows exist.
    let store = store(&setup.config).await;
    for stream in ["live-0", "live-1"] {
        let stream = reactions::StreamId::parse("stream", stream).unwrap();
        let windows = store
            .list_windows(&stream, Some(0), 100)
            .await
            .unwrap()
            .windows;
        assert!(!windows.is_empty());
        assert!(
            windows.iter().all(|w| w.key.start_ms >= now - 10_000),
            "{windows:?}"
        );
    }
    // The same batch again: nothing is counted or created.
    let again = handle(&setup, &records).await;
    assert_eq!((again.expired_skipped, again.taps_applied), (20, 0));
}

#[tokio::test]
async fn an_invocation_out_of_time_fails_before_lambdas_timeout_and_its_retry_counts_once() {
    let setup = setup().await;
    // Stamped over the last ten seconds (none ahead of the clock).
    let records = log(0, 40, 2, now_ms() - 10_000);
    let batch = aggregate::invocation::Invocation::Batch(event(&records, "SelfManagedKafka"));
    // Lambda's deadline one second away: within the margin, so the invocation stops at once.
    let near = std::time::Instant::now() + std::time::Duration::from_secs(1);
    let refused = setup.aggregate.invoke(&batch, near).await.unwrap_err();
    assert!(
        matches!(
            refused,
            aggregate::AggregateError::OutOfTime { margin_ms: 2_000 }
        ),
        "{refused}"
    );
    assert!(refused.to_string().contains("before its Lambda timeout"));
    // The event source retries it with a full invocation's time: counted once.
    let far = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let answer = setup.aggregate.invoke(&batch, far).await.unwrap();
    let summary = serde_json::to_value(&answer).unwrap();
    let taps: u64 = records.iter().map(|(_, r)| u64::from(r.count)).sum();
    assert_eq!(summary["taps_applied"], taps);
    let again = setup.aggregate.invoke(&batch, far).await.unwrap();
    assert_eq!(serde_json::to_value(&again).unwrap()["taps_applied"], 0);
}
