//! Retry-safe taps through the aggregate handler against the real servers: a request whose
//! first attempt reached Kafka in part, retried twice with the same idempotency key (in a later
//! window, as ingest stamps each attempt), is counted once in full, however the log is cut into
//! batches and redelivered; a key used again for another body is dead-lettered once and not
//! counted; a viewer's key does not stand for another viewer's.

mod common;

use common::*;
use emostream_tests::patience::PATIENCE;
use emostream_tests::topic_reader::{header_text, read_records};
use rdkafka::message::Message;
use reactions::idempotency::{IdempotencyKey, KEY_REUSED, stamp};
use reactions::kafka_event::RecordPosition;
use reactions::{EmojiName, Reaction, StreamId, UserId};

const BASE_MS: i64 = 1_767_225_600_000;

fn request(user: &str, emojis: &[(&str, u32)], key: &str, at_ms: i64) -> Vec<Reaction> {
    let mut reactions: Vec<Reaction> = emojis
        .iter()
        .map(|(emoji, count)| Reaction {
            stream: StreamId::parse("s", "final").unwrap(),
            user: UserId::parse("u", user).unwrap(),
            emoji: EmojiName::parse(emoji).unwrap(),
            count: *count,
            at_ms,
            key: None,
            fair_use_limit: None,
        })
        .collect();
    if !key.is_empty() {
        stamp(
            &mut reactions,
            &IdempotencyKey::parse(key.as_bytes()).unwrap(),
        )
        .unwrap();
    }
    reactions
}

fn positioned(reactions: Vec<Reaction>) -> Vec<(RecordPosition, Reaction)> {
    reactions
        .into_iter()
        .enumerate()
        .map(|(offset, reaction)| {
            let position = RecordPosition {
                topic: TOPIC.into(),
                partition: 0,
                offset: offset as i64,
                generation: 0,
            };
            (position, reaction)
        })
        .collect()
}

#[tokio::test]
async fn a_retried_request_counts_once_and_a_reused_key_is_dead_lettered() {
    let setup = setup_named("retry-safe", &[]).await;
    let first = request("v", &[("fire", 3), ("clap", 1), ("joy", 5)], "s:1", BASE_MS);
    let retry = request(
        "v",
        &[("fire", 3), ("clap", 1), ("joy", 5)],
        "s:1",
        BASE_MS + 2_500,
    );
    let again = request(
        "v",
        &[("fire", 3), ("clap", 1), ("joy", 5)],
        "s:1",
        BASE_MS + 2_600,
    );
    let reused = request("v", &[("wow", 7)], "s:1", BASE_MS + 2_700);
    let next = request("v", &[("party", 2)], "s:2", BASE_MS + 2_800);
    // Another viewer may use the same key for its own taps.
    let other_viewer = request("w", &[("cricket", 4)], "s:1", BASE_MS + 100);
    let unkeyed = request("fan", &[("clap", 1)], "", BASE_MS + 200);
    // The first attempt reached Kafka with items 0 and 2 only (the client was told 503).
    let mut reactions = vec![first[0].clone(), first[2].clone()];
    reactions.extend(other_viewer.clone());
    reactions.extend(unkeyed.clone());
    reactions.extend(retry.clone());
    reactions.extend(again);
    reactions.extend(reused);
    reactions.extend(next.clone());
    let log = positioned(reactions);
    assert_eq!(log.len(), 12);

    // Batches with a redelivery, overlaps of different extents, and a redelivery of the end.
    let mut retried_taps = 0;
    let mut dead_lettered = 0;
    for range in [0..4, 0..4, 2..9, 4..12, 9..12, 0..12] {
        let summary = handle(&setup, &log[range]).await;
        retried_taps += summary.retried_taps;
        dead_lettered += summary.dead_lettered - summary.dead_letters_already_sent;
    }
    // fire and joy of the first attempt were skipped once in the first retry, and all three
    // items in the second; redeliveries skip nothing more (their state accounts for them).
    assert_eq!(retried_taps, 3 + 5 + 3 + 1 + 5);
    assert_eq!(dead_lettered, 1);

    // Counted: the first attempt's two items in the first window, the retry's missing item in
    // the second, the other viewer, the fan and the next request.
    let mut expected = vec![first[0].clone(), first[2].clone(), retry[1].clone()];
    expected.extend(other_viewer);
    expected.extend(unkeyed);
    expected.extend(next);
    assert_exact(&setup.config, &positioned(expected)).await;

    let letters = read_records(
        &setup.config.kafka,
        &setup.config.dead_letter_topic,
        1,
        PATIENCE,
    )
    .await;
    assert_eq!(letters.len(), 1);
    let header = |name: &str| header_text(&letters[0], name);
    assert_eq!(header("dlq.reason").as_deref(), Some(KEY_REUSED));
    assert_eq!(header("dlq.offset").as_deref(), Some("10"));
    let value = String::from_utf8_lossy(letters[0].payload().unwrap()).into_owned();
    assert!(value.contains(r#""emoji":"wow","count":7"#), "{value}");

    // Keys cost no MongoDB round trip: the same first delivery on fresh streams, with and
    // without keys, waits for as many (the keys ride on fair use's read and write of the viewer's state).
    let fresh = |stream: &str, keyed: bool, offset: i64| -> Vec<(RecordPosition, Reaction)> {
        log.iter()
            .map(|(position, reaction)| {
                let mut reaction = reaction.clone();
                reaction.stream = StreamId::parse("s", stream).unwrap();
                if !keyed {
                    reaction.key = None;
                }
                let mut position = position.clone();
                position.offset += offset;
                (position, reaction)
            })
            .collect()
    };
    let keyed = handle(&setup, &fresh("keyed", true, 100)).await;
    let plain = handle(&setup, &fresh("plain", false, 200)).await;
    assert_eq!(keyed.mongo_round_trips, plain.mongo_round_trips);
    assert_eq!(keyed.retried_taps, 3 + 5 + 3 + 1 + 5);
}
