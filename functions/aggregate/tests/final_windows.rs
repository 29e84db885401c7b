//! `final` and recreated topics against the real Kafka-wire broker and MongoDB-wire server, on
//! input topics of their own (whether a partition is counted to its end is read from the
//! broker): a window is final only once every partition is counted past it, whatever the wall
//! clock says, and a topic deleted and created again is counted afresh, exactly once.

use aggregate::BatchSummary;
use aws_lambda_events::event::kafka::KafkaEvent;
use emostream_tests::patience::{PATIENCE, eventually};
use emostream_tests::topic_admin::add_partitions;
use emostream_tests::topic_reader::{read_records, record_count};
use emostream_tests::{servers, unique_name};
use rdkafka::Message;
use reactions::kafka::{AckedProducer, OutgoingRecord, TopicSpec, ensure_topics};
use reactions::kafka_event::{RecordPosition, lambda_kafka_event_json, lambda_kafka_record_json};
use reactions::message::{ReactionRecord, VersionedMessage, WindowStateRecord};
use reactions::mongo::{FinalizeTurns, connect};
use reactions::topic_generation::AHEAD_LISTED;
use reactions::{Reaction, WindowKey};
use std::collections::HashMap;

mod common;
use common::*;

fn now_ms() -> i64 {
    reactions::clock::now_ms()
}

/// An aggregate reading `topic` (created with `partitions`), deciding `final` after every
/// batch, with the default allowed lateness.
async fn setup_on(topic: &str, partitions: i32) -> Setup {
    setup_with_lateness(topic, partitions, "5000", "1000").await
}

/// An aggregate reading `topic` with the allowed lateness and clock skew given.
async fn setup_with_lateness(
    topic: &str,
    partitions: i32,
    lateness_ms: &str,
    skew_ms: &str,
) -> Setup {
    let database = servers().mongo("final").database;
    let settings = settings(
        &servers().kafka_brokers,
        &servers().mongodb_uri,
        &database,
        &[
            ("ALLOWED_LATENESS_MS", lateness_ms),
            // The test produces the topic's records itself: no ingest's timeout to cover.
            ("INGEST_PRODUCE_TIMEOUT_MS", "0"),
            ("MAX_CLOCK_SKEW_MS", skew_ms),
            ("FINALIZE_EVERY_MS", "0"),
            ("REACTION_TOPIC", topic),
        ],
    );
    let setup = build(&settings).await;
    let spec = TopicSpec {
        name: topic.to_owned(),
        partitions,
    };
    ensure_topics(&setup.config.kafka, &[spec], PATIENCE)
        .await
        .unwrap();
    setup
}

/// `len` reactions to stream `s`, at `at_ms`, on `partition` of `topic` from offset `first`.
fn reactions(
    topic: &str,
    partition: i32,
    first: i64,
    len: usize,
    at_ms: i64,
) -> Vec<(RecordPosition, Reaction)> {
    emostream_tests::fixtures::reaction_log(topic, partition, len, 1, at_ms)
        .into_iter()
        .enumerate()
        .map(|(i, (mut position, mut reaction))| {
            position.offset = first + i as i64;
            reaction.at_ms = at_ms;
            (position, reaction)
        })
        .collect()
}

/// The records as Lambda encodes them, each stamped `timestamp_ms` by Kafka.
fn records_json(
    records: &[(RecordPosition, Reaction)],
    timestamp_ms: i64,
) -> Vec<serde_json::Value> {
    records
        .iter()
        .map(|(position, reaction)| {
            lambda_kafka_record_json(
                position,
                timestamp_ms,
                Some(reaction.stream.as_str().as_bytes()),
                Some(&ReactionRecord::from(reaction).encode()),
                &[],
            )
        })
        .collect()
}

fn kafka_event(records: Vec<serde_json::Value>) -> KafkaEvent {
    serde_json::from_value(lambda_kafka_event_json("SelfManagedKafka", "b", records)).unwrap()
}

/// The batch as Lambda delivers it, every record stamped `timestamp_ms` by Kafka.
fn event_at(records: &[(RecordPosition, Reaction)], timestamp_ms: i64) -> KafkaEvent {
    kafka_event(records_json(records, timestamp_ms))
}

fn total(records: &[(RecordPosition, Reaction)]) -> u64 {
    records.iter().map(|(_, r)| u64::from(r.count)).sum()
}

fn window_of(records: &[(RecordPosition, Reaction)]) -> WindowKey {
    let reaction = &records[0].1;
    WindowKey::containing(
        reaction.stream.clone(),
        reaction.at_ms,
        reactions::WindowWidth::DEFAULT,
    )
}

/// Writes a record to `partition` of `topic` that aggregate is not given: the partition is then
/// not counted to its end.
async fn produce_pending(setup: &Setup, topic: &str, partition: i32) {
    let producer = AckedProducer::new(&setup.config.kafka, PATIENCE).unwrap();
    let pending = OutgoingRecord {
        partition: Some(partition),
        ..OutgoingRecord::new("s", "pending")
    };
    producer
        .produce_all(topic, &[pending], PATIENCE)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_window_is_final_only_once_every_partition_is_counted_past_it() {
    let topic = unique_name("input");
    let setup = setup_on(&topic, 2).await;
    // Partition 1 holds one record that aggregate has not been given yet: a batch still to be
    // delivered (or being retried) that may belong to any window.
    produce_pending(&setup, &topic, 1).await;

    // A window that ended two minutes ago: by the wall clock it would long be final.
    let past = now_ms() - 120_000;
    let first = reactions(&topic, 0, 0, 5, past);
    let late = reactions(&topic, 1, 0, 1, past);
    let window = window_of(&first);
    assert_eq!(window, window_of(&late));
    let store = store(&setup.config).await;

    let before = setup
        .aggregate
        .handle(&event_at(&first, past))
        .await
        .unwrap();
    assert_eq!(before.windows_finalized, 0);
    let stored = store.find_window(&window).await.unwrap().unwrap();
    assert!(!stored.is_final, "partition 1 still has a record to count");

    // The pending record's batch arrives (late, after retries): it adds to the window, and only
    // now is every partition counted past it.
    let summary = setup
        .aggregate
        .handle(&event_at(&late, past))
        .await
        .unwrap();
    assert_eq!(summary.taps_applied, total(&late));
    assert_eq!(summary.windows_finalized, 1);
    let stored = store.find_window(&window).await.unwrap().unwrap();
    assert!(stored.is_final);
    assert_eq!(stored.total, total(&first) + total(&late));

    // A redelivery adds nothing and reports the window final.
    let again = setup
        .aggregate
        .handle(&event_at(&first, past))
        .await
        .unwrap();
    assert_eq!((again.taps_applied, again.windows_finalized), (0, 0));

    // Published, in order (one stream, one key): the two batches' states, the final one, and
    // the redelivery's.
    let published = before.states_published + summary.states_published + 1 + again.states_published;
    let states: Vec<WindowStateRecord> = read_records(
        &setup.config.kafka,
        &setup.config.output_topic,
        published,
        PATIENCE,
    )
    .await
    .iter()
    .map(|m| WindowStateRecord::decode(m.payload().unwrap()).unwrap())
    .collect();
    assert_eq!(states.len(), 4);
    let first_final = states.iter().position(|s| s.is_final).unwrap();
    assert_eq!(
        first_final, 2,
        "the batches' own states were published before the pass"
    );
    for state in &states[first_final..] {
        assert!(state.is_final);
        assert_eq!(
            state.total, stored.total,
            "nothing larger follows a final state"
        );
    }
    assert!(
        states[..first_final]
            .iter()
            .all(|s| s.total <= stored.total)
    );
}

/// A one-partition topic, and three reactions on it in a window that ended two minutes ago
/// (not given to aggregate yet).
struct PastWindow {
    topic: String,
    setup: Setup,
    store: reactions::mongo::WindowStore,
    past: i64,
    first: Vec<(RecordPosition, Reaction)>,
}

async fn past_window_on_one_partition() -> PastWindow {
    let topic = unique_name("input");
    let setup = setup_on(&topic, 1).await;
    let store = store(&setup.config).await;
    let past = now_ms() - 120_000;
    let first = reactions(&topic, 0, 0, 3, past);
    PastWindow {
        topic,
        setup,
        store,
        past,
        first,
    }
}

#[tokio::test]
async fn a_partition_added_to_the_topic_holds_back_final_until_it_is_counted() {
    let PastWindow {
        topic,
        setup,
        store,
        past,
        first,
    } = past_window_on_one_partition().await;
    // The first window becomes final while the topic has one partition: the container has now
    // read the partition count.
    let summary = setup
        .aggregate
        .handle(&event_at(&first, past))
        .await
        .unwrap();
    assert_eq!(summary.windows_finalized, 1);

    // A partition is added, and a reaction lands on it that aggregate has not been given yet.
    add_partitions(&setup.config.kafka, &topic, 2).await;
    produce_pending(&setup, &topic, 1).await;

    // A later window, counted on partition 0: partition 1 may hold its taps, so it is not final.
    let later_at = past + 10_000;
    let later = reactions(&topic, 0, 3, 2, later_at);
    let window = window_of(&later);
    assert_ne!(window, window_of(&first));
    let summary = setup
        .aggregate
        .handle(&event_at(&later, later_at))
        .await
        .unwrap();
    assert_eq!(summary.windows_finalized, 0);
    let stored = store.find_window(&window).await.unwrap().unwrap();
    assert!(
        !stored.is_final,
        "the new partition still has a record to count"
    );

    // Once partition 1 is counted, the window is final.
    let late = reactions(&topic, 1, 0, 1, later_at);
    let summary = setup
        .aggregate
        .handle(&event_at(&late, later_at))
        .await
        .unwrap();
    assert_eq!(summary.windows_finalized, 1);
    let stored = store.find_window(&window).await.unwrap().unwrap();
    assert!(stored.is_final);
    assert_eq!(stored.total, total(&later) + total(&late));
}

#[tokio::test]
async fn a_live_window_is_not_final_before_its_end_plus_the_lateness() {
    let topic = unique_name("input");
    let setup = setup_on(&topic, 1).await;
    let now = now_ms();
    let live = reactions(&topic, 0, 0, 3, now);
    let summary = setup.aggregate.handle(&event_at(&live, now)).await.unwrap();
    assert_eq!(summary.windows_finalized, 0);
    let stored = store(&setup.config)
        .await
        .find_window(&window_of(&live))
        .await
        .unwrap()
        .unwrap();
    assert!(
        !stored.is_final,
        "every partition is counted to its end, but the window's end plus the lateness has not come"
    );
}

/// [`event_at`] with a malformed record (to be dead-lettered) at `bad_offset` of `records`'
/// partition.
fn event_with_bad_record(
    records: &[(RecordPosition, Reaction)],
    bad_offset: i64,
    timestamp_ms: i64,
) -> KafkaEvent {
    let kept: Vec<(RecordPosition, Reaction)> = records
        .iter()
        .filter(|(position, _)| position.offset != bad_offset)
        .cloned()
        .collect();
    let mut json = records_json(&kept, timestamp_ms);
    let bad = RecordPosition {
        offset: bad_offset,
        ..records[0].0.clone()
    };
    json.push(lambda_kafka_record_json(
        &bad,
        timestamp_ms,
        Some(b"s"),
        Some(b"{oops"),
        &[],
    ));
    kafka_event(json)
}

#[tokio::test]
async fn a_recreated_topic_is_counted_afresh_and_exactly_once() {
    let topic = unique_name("input");
    let setup = setup_on(&topic, 1).await;
    let now = now_ms();
    let old = reactions(&topic, 0, 0, 10, now);
    let counted_old = setup
        .aggregate
        .handle(&event_with_bad_record(&old, 3, now))
        .await
        .unwrap();
    assert_eq!(counted_old.dead_lettered, 1);

    // The topic is deleted and created again: its offsets restart at 0, and its records were
    // produced after the old topic's last ones. Same window, same offsets as counted records.
    let recreated = reactions(&topic, 0, 0, 6, now);
    let new_batch = event_with_bad_record(&recreated, 3, now + 1_000);
    let counted = setup.aggregate.handle(&new_batch).await.unwrap();
    let expected_new = total(&recreated) - u64::from(recreated[3].1.count);
    assert_eq!(
        counted.taps_applied, expected_new,
        "counted, not taken for replays"
    );
    assert_eq!(
        (counted.dead_lettered, counted.dead_letters_already_sent),
        (1, 0),
        "the new topic's bad record is dead-lettered too"
    );

    // Redelivered, the new topic's batch adds nothing, and neither do its dead letters.
    let again = setup.aggregate.handle(&new_batch).await.unwrap();
    assert_eq!(again.taps_applied, 0);
    assert_eq!(again.dead_letters_already_sent, 1);
    // The new topic goes on: its next offsets count once.
    let next = reactions(&topic, 0, 6, 2, now);
    let more = setup
        .aggregate
        .handle(&event_at(&next, now + 1_500))
        .await
        .unwrap();
    assert_eq!(more.taps_applied, total(&next));

    let stored = store(&setup.config)
        .await
        .find_window(&window_of(&old))
        .await
        .unwrap()
        .unwrap();
    let expected_old = total(&old) - u64::from(old[3].1.count);
    assert_eq!(stored.total, expected_old + expected_new + total(&next));
    let letters = read_records(
        &setup.config.kafka,
        &setup.config.dead_letter_topic,
        2,
        PATIENCE,
    )
    .await;
    assert_eq!(letters.len(), 2);
    assert_eq!(
        record_count(&setup.config.kafka, &setup.config.dead_letter_topic),
        2
    );
}

#[tokio::test]
async fn the_scheduled_tick_finalizes_the_last_windows_once_the_taps_stop() {
    let topic = unique_name("input");
    // A short lateness, so the live window is due soon after it ends; the clocks may differ by
    // as much, so a reaction stamped up to 3 s ahead is believed.
    let setup = setup_with_lateness(&topic, 1, "3000", "3000").await;
    // At the start of the next window, so it ends at least 2 s after the batch: a batch slowed
    // by a busy machine must not find it ended already.
    let width = reactions::WindowWidth::DEFAULT.millis();
    let now = now_ms();
    let at = now - now.rem_euclid(width) + width;
    let last = reactions(&topic, 0, 0, 3, at);
    let summary = setup.aggregate.handle(&event_at(&last, at)).await.unwrap();
    assert_eq!(summary.windows_finalized, 0, "the window has not ended yet");
    let store = store(&setup.config).await;
    let window = window_of(&last);

    // No batch comes any more; the tick (every minute on AWS, at once here) finalizes it once
    // it has ended.
    let finalized = eventually("the tick finalizes the last window", || async {
        let tick = setup
            .aggregate
            .finalize_tick()
            .await
            .map_err(|e| e.to_string())?;
        match tick.windows_finalized {
            0 => Err("not yet".to_owned()),
            n => Ok(n),
        }
    })
    .await;
    assert_eq!(finalized, 1);
    let stored = store.find_window(&window).await.unwrap().unwrap();
    assert!(stored.is_final);
    assert_eq!(stored.total, total(&last));
    let again = setup.aggregate.finalize_tick().await.unwrap();
    assert_eq!(again.windows_finalized, 0, "once");
}

async fn handle_at(setup: &Setup, records: &[(RecordPosition, Reaction)], at: i64) -> BatchSummary {
    setup
        .aggregate
        .handle(&event_at(records, at))
        .await
        .unwrap()
}

/// Two containers of an aggregate reading `topic`, each deciding `final` after every batch.
async fn two_containers(topic: &str) -> (Setup, Setup) {
    let database = servers().mongo("final").database;
    let settings = settings(
        &servers().kafka_brokers,
        &servers().mongodb_uri,
        &database,
        &[("FINALIZE_EVERY_MS", "0"), ("REACTION_TOPIC", topic)],
    );
    (build(&settings).await, build(&settings).await)
}

#[tokio::test]
async fn containers_that_counted_different_batches_count_exactly_and_see_no_recreated_topic() {
    let topic = unique_name("input");
    // Two containers of the function, on the same partition one after the other.
    let (first, second) = two_containers(&topic).await;
    let now = now_ms();
    let log = reactions(&topic, 0, 0, 30, now);
    let (one, two, three) = (&log[..10], &log[10..20], &log[20..]);
    assert_eq!(handle_at(&first, one, now).await.taps_applied, total(one));
    assert_eq!(
        handle_at(&second, two, now + 10).await.taps_applied,
        total(two)
    );
    // The first container counted only the first batch: the second one, redelivered to it,
    // adds nothing (and is no recreated topic), and the third counts once.
    let again = handle_at(&first, two, now + 10).await;
    assert_eq!(again.taps_applied, 0);
    assert_eq!(
        handle_at(&first, three, now + 20).await.taps_applied,
        total(three)
    );
    let stored = store(&first.config)
        .await
        .find_window(&window_of(&log))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.total, total(&log));
}

#[tokio::test]
async fn a_container_that_counted_the_old_topic_counts_the_recreated_one_in_its_generation() {
    let topic = unique_name("input");
    let (first, second) = two_containers(&topic).await;
    let now = now_ms();
    let old = reactions(&topic, 0, 0, 10, now);
    assert_eq!(handle_at(&first, &old, now).await.taps_applied, total(&old));

    // The topic is recreated. Another container sees it and counts the new topic's first
    // batch; the first container, which counted only the old topic, gets the next one, whose
    // offsets lie above all it counted.
    let recreated = reactions(&topic, 0, 0, 30, now);
    let (early, next) = recreated.split_at(20);
    assert_eq!(
        handle_at(&second, early, now + 1_000).await.taps_applied,
        total(early)
    );
    assert_eq!(
        handle_at(&first, next, now + 1_000).await.taps_applied,
        total(next)
    );
    // Redelivered to the other container, that batch adds nothing: it was counted in the new
    // topic's generation, not the old one's.
    let again = handle_at(&second, next, now + 1_000).await;
    assert_eq!(again.taps_applied, 0);
    let stored = store(&first.config)
        .await
        .find_window(&window_of(&old))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.total, total(&old) + total(&recreated));
}

#[tokio::test]
async fn a_record_stamped_ahead_of_the_clock_neither_finalizes_early_nor_hides_a_recreated_topic() {
    let topic = unique_name("input");
    // A lateness of a minute: the live window cannot become final while the test runs,
    // however slow the machine.
    let setup = setup_with_lateness(&topic, 1, "60000", "1000").await;
    let now = now_ms();
    // A window that ended three minutes ago (so the pass runs and finalizes it), a live
    // window's reactions, and records of another producer stamped a day ahead: more than the
    // progress lists one by one.
    let old_at = now - 180_000;
    let old = reactions(&topic, 0, 0, 2, old_at);
    let live = reactions(&topic, 0, 2, 4, now);
    let mut json = records_json(&old, old_at);
    json.extend(records_json(&live, now));
    let capped_records = AHEAD_LISTED + 8;
    for offset in 6..6 + capped_records as i64 {
        let ahead = RecordPosition {
            offset,
            ..live[0].0.clone()
        };
        json.push(lambda_kafka_record_json(
            &ahead,
            now + 86_400_000 + offset,
            Some(b"s"),
            Some(b"{not a reaction"),
            &[],
        ));
    }
    let batch = kafka_event(json);
    let summary = setup.aggregate.handle(&batch).await.unwrap();
    assert_eq!(summary.taps_applied, total(&old) + total(&live));
    assert_eq!(summary.timestamps_capped, capped_records);
    // Taken as it is, the timestamp would say every window up to tomorrow is complete.
    assert_eq!(summary.windows_finalized, 1, "the old window only");
    let store = store(&setup.config).await;
    assert!(
        store
            .find_window(&window_of(&old))
            .await
            .unwrap()
            .unwrap()
            .is_final
    );
    let window = store.find_window(&window_of(&live)).await.unwrap().unwrap();
    assert!(!window.is_final, "the live window has not even ended");

    // Redelivered: the capped records' own timestamps, later than the capped one, do not
    // make the batch look like a recreated topic's, listed or not.
    let again = setup.aggregate.handle(&batch).await.unwrap();
    assert_eq!(
        (again.taps_applied, again.dead_letters_already_sent),
        (0, capped_records)
    );

    // The topic is recreated: its records, stamped after everything counted (the clock has
    // passed the cap) and at offsets below the capped ones, are seen as a new topic's and
    // counted.
    let progress = reactions::mongo::PartitionProgressStore::new(
        &connect(&setup.config.mongo, "progress").await.unwrap(),
    );
    let capped = progress.read(&topic).await.unwrap()[0].max_timestamp_ms;
    let later = eventually("the clock passes the capped timestamp", || async {
        let now = now_ms();
        match now > capped {
            true => Ok(now),
            false => Err(format!("{now} <= {capped}")),
        }
    })
    .await;
    let recreated = reactions(&topic, 0, 0, 3, later);
    let counted = handle_at(&setup, &recreated, later).await;
    assert_eq!(
        counted.taps_applied,
        total(&recreated),
        "not taken for replays"
    );
}

#[tokio::test]
async fn a_pass_runs_only_while_its_container_holds_the_topics_turn() {
    let topic = unique_name("input");
    let setup = setup_on(&topic, 1).await;
    let turns = FinalizeTurns::new(&connect(&setup.config.mongo, "turns").await.unwrap());
    let store = store(&setup.config).await;
    let past = now_ms() - 120_000;
    let log = reactions(&topic, 0, 0, 4, past);
    let window = window_of(&log);

    // Another container's pass holds the turn: this one counts the batch and publishes its
    // states, but leaves the window to that pass.
    let held = turns
        .take(&topic, now_ms(), now_ms() + 600_000)
        .await
        .unwrap()
        .expect("nobody holds a new topic's turn");
    assert_eq!(
        turns
            .take(&topic, now_ms(), now_ms() + 600_000)
            .await
            .unwrap(),
        None,
        "a held turn is not taken twice"
    );
    let summary = handle_at(&setup, &log, past).await;
    assert_eq!(summary.taps_applied, total(&log));
    assert_eq!(summary.windows_finalized, 0, "the other pass's to publish");
    assert!(!store.find_window(&window).await.unwrap().unwrap().is_final);

    // That pass ends: the next one publishes the window final, once.
    turns.give_back(&held).await.unwrap();
    assert_eq!(
        setup
            .aggregate
            .finalize_tick()
            .await
            .unwrap()
            .windows_finalized,
        1
    );
    assert!(store.find_window(&window).await.unwrap().unwrap().is_final);
    let published = summary.states_published + 1;
    let states = read_records(
        &setup.config.kafka,
        &setup.config.output_topic,
        published,
        PATIENCE,
    )
    .await;
    assert_eq!(states.len(), published);
    assert_eq!(
        record_count(&setup.config.kafka, &setup.config.output_topic),
        published as i64,
        "the final state is published once"
    );

    // A container that died holding the turn keeps it only until its lease runs out; and a
    // pass whose lease ran out cannot give back the turn of the pass that took it over.
    let dead = turns
        .take(&topic, now_ms(), now_ms() - 1)
        .await
        .unwrap()
        .expect("the turn was given back");
    let next = turns
        .take(&topic, now_ms(), now_ms() + 600_000)
        .await
        .unwrap()
        .expect("the dead holder's lease ran out");
    turns.give_back(&dead).await.unwrap();
    assert_eq!(
        turns
            .take(&topic, now_ms(), now_ms() + 600_000)
            .await
            .unwrap(),
        None,
        "the turn is still the live pass's"
    );
    turns.give_back(&next).await.unwrap();
}

/// A container of the function over a new one-partition input topic, its windows final as
/// soon as they end, a pass at most once per `finalize_every_ms`; with the topic's name and
/// the settings, for more containers.
async fn over_a_new_topic(finalize_every_ms: &str) -> (String, HashMap<String, String>, Setup) {
    let topic = unique_name("input");
    let database = servers().mongo("final").database;
    let settings = settings(
        &servers().kafka_brokers,
        &servers().mongodb_uri,
        &database,
        &[
            ("FINALIZE_EVERY_MS", finalize_every_ms),
            ("ALLOWED_LATENESS_MS", "0"),
            ("INGEST_PRODUCE_TIMEOUT_MS", "0"),
            ("MAX_CLOCK_SKEW_MS", "0"),
            ("REACTION_TOPIC", &topic),
        ],
    );
    let setup = build(&settings).await;
    let spec = TopicSpec {
        name: topic.clone(),
        partitions: 1,
    };
    ensure_topics(&setup.config.kafka, &[spec], PATIENCE)
        .await
        .unwrap();
    (topic, settings, setup)
}

#[tokio::test]
async fn two_containers_finalizing_at_once_publish_each_final_state_once() {
    let (topic, settings, first) = over_a_new_topic("0").await;
    // Two containers of the function, publishing to the same output topic.
    let mut shared_output = settings.clone();
    shared_output.insert("OUTPUT_TOPIC".to_owned(), first.config.output_topic.clone());
    let second = build(&shared_output).await;
    // The live windows of ten streams: final once they end (within 2 s).
    let now = now_ms();
    let log: Vec<_> = emostream_tests::fixtures::reaction_log(&topic, 0, 40, 10, now)
        .into_iter()
        .enumerate()
        .map(|(i, (mut position, mut reaction))| {
            position.offset = i as i64;
            reaction.at_ms = now;
            (position, reaction)
        })
        .collect();
    let summary = handle_at(&first, &log, now).await;
    assert_eq!(summary.windows, 10);
    // Both containers' ticks race until the windows are final, and go on racing once after.
    let finalized = std::sync::atomic::AtomicUsize::new(summary.windows_finalized);
    let race = || async {
        let (a, b) = tokio::join!(
            first.aggregate.finalize_tick(),
            second.aggregate.finalize_tick()
        );
        let found = a.map_err(|e| e.to_string())?.windows_finalized
            + b.map_err(|e| e.to_string())?.windows_finalized;
        finalized.fetch_add(found, std::sync::atomic::Ordering::Relaxed);
        Ok::<usize, String>(found)
    };
    eventually("the windows are published final", || async {
        race().await?;
        match finalized.load(std::sync::atomic::Ordering::Relaxed) {
            0 => Err("not yet".to_owned()),
            n => Ok(n),
        }
    })
    .await;
    race().await.unwrap();
    assert_eq!(
        finalized.into_inner(),
        summary.windows,
        "each window published final once"
    );
    let published = summary.states_published + summary.windows;
    read_records(
        &first.config.kafka,
        &first.config.output_topic,
        published,
        PATIENCE,
    )
    .await;
    assert_eq!(
        record_count(&first.config.kafka, &first.config.output_topic),
        published as i64
    );
}

#[tokio::test]
async fn the_windows_of_many_streams_are_published_final_in_chunks_each_once() {
    // A pass at most once a minute, unless the last one left windows behind.
    let (topic, _, setup) = over_a_new_topic("60000").await;
    // One window of each of 300 streams, ended long ago: more than two passes' worth.
    let past = now_ms() - 120_000;
    let streams = 300;
    let log: Vec<_> = emostream_tests::fixtures::reaction_log(&topic, 0, streams, streams, past)
        .into_iter()
        .enumerate()
        .map(|(i, (mut position, mut reaction))| {
            position.offset = i as i64;
            reaction.at_ms = past;
            (position, reaction)
        })
        .collect();
    let first = handle_at(&setup, &log, past).await;
    assert_eq!(first.windows, streams);
    assert_eq!(first.windows_finalized, 128, "one chunk per pass");
    // The container's next batch (taps of a live window) runs the next pass at once.
    let now = now_ms();
    let live = reactions(&topic, 0, streams as i64, 2, now);
    let second = handle_at(&setup, &live, now).await;
    assert_eq!(second.windows_finalized, 128);
    // The scheduled tick runs every pass left (and finalizes the live window too if it has
    // ended by then).
    let tick = setup.aggregate.finalize_tick().await.unwrap();
    assert!(tick.windows_finalized >= streams - 256, "{tick:?}");
    let store = store(&setup.config).await;
    for (_, reaction) in &log {
        let key = WindowKey::containing(
            reaction.stream.clone(),
            past,
            reactions::WindowWidth::DEFAULT,
        );
        assert!(store.find_window(&key).await.unwrap().unwrap().is_final);
    }
    // Every window's final state published once, after the batches' own states.
    let finalized = first.windows_finalized + second.windows_finalized + tick.windows_finalized;
    let published = first.states_published + second.states_published + finalized;
    let states: Vec<WindowStateRecord> = read_records(
        &setup.config.kafka,
        &setup.config.output_topic,
        published,
        PATIENCE,
    )
    .await
    .iter()
    .map(|m| WindowStateRecord::decode(m.payload().unwrap()).unwrap())
    .collect();
    let window_start = WindowKey::containing(
        log[0].1.stream.clone(),
        past,
        reactions::WindowWidth::DEFAULT,
    )
    .start_ms;
    let finals: std::collections::BTreeSet<String> = states
        .iter()
        .filter(|s| s.is_final && s.start_ms == window_start)
        .map(|s| s.stream.as_str().to_owned())
        .collect();
    assert_eq!(
        finals.len(),
        streams,
        "each stream's window published final"
    );
    assert_eq!(finalized, states.iter().filter(|s| s.is_final).count());
    assert_eq!(
        record_count(&setup.config.kafka, &setup.config.output_topic),
        published as i64
    );
}

#[tokio::test]
async fn a_batch_near_its_deadline_leaves_the_final_pass_to_a_later_one() {
    // On a topic counted to its end, a pass would make the window final.
    let PastWindow {
        setup,
        store,
        past,
        first,
        ..
    } = past_window_on_one_partition().await;
    let window = window_of(&first);
    // One second before the stop: less than a pass may take (its turn's lease).
    let stop = std::time::Instant::now() + std::time::Duration::from_secs(1);
    let summary = setup
        .aggregate
        .handle_before(&event_at(&first, past), Some(stop))
        .await
        .unwrap();
    assert_eq!(
        summary.taps_applied,
        total(&first),
        "the counts are written"
    );
    assert_eq!(summary.windows_finalized, 0, "no pass");
    assert!(!store.find_window(&window).await.unwrap().unwrap().is_final);
    // The next invocation, with its time ahead, runs the pass (a pass may take three of the
    // tests' 30 s produce timeouts plus 5 s).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(200);
    let tick = setup
        .aggregate
        .invoke(
            &aggregate::invocation::Invocation::Tick(aggregate::invocation::FinalizeTick {
                emostream: aggregate::invocation::TickAction::Finalize,
            }),
            deadline,
        )
        .await
        .unwrap();
    assert_eq!(
        serde_json::to_value(&tick).unwrap(),
        serde_json::json!({"windows_finalized": 1})
    );
    assert!(store.find_window(&window).await.unwrap().unwrap().is_final);
}
