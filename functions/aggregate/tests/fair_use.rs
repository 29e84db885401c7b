//! Fair use through the aggregate handler against the real servers: a viewer tapping far past
//! `MAX_TAPS_PER_VIEWER_PER_WINDOW` is counted up to the limit in every window, however the
//! taps are cut into batches and whatever is redelivered, while another viewer on the same
//! stream is counted in full; a stream's own lower limit, carried by its reactions, holds the
//! same way, with fair use off for the deployment too.

mod common;

use common::*;
use emostream_tests::servers;
use mongodb::bson::{Document, doc};
use reactions::kafka_event::RecordPosition;
use reactions::mongo::{ViewerTapStore, connect};
use reactions::window_delta::window_deltas;
use reactions::{EmojiName, Reaction, StreamId, UserId};

const BASE_MS: i64 = 1_767_225_600_000;

/// 300 reactions at offsets 0..300 of partition 0, over three 2 s windows: every fourth from
/// "fan" (1 tap: 25 a window, under the limit), the rest from "spammer" (100 taps each).
fn abusive_log() -> Vec<(RecordPosition, Reaction)> {
    (0..300)
        .map(|i: i64| {
            let fan = i % 4 == 0;
            (
                RecordPosition {
                    topic: TOPIC.into(),
                    partition: 0,
                    offset: i,
                    generation: 0,
                },
                Reaction {
                    stream: StreamId::parse("s", "final").unwrap(),
                    user: UserId::parse("u", if fan { "fan" } else { "spammer" }).unwrap(),
                    emoji: EmojiName::parse(if fan { "clap" } else { "fire" }).unwrap(),
                    count: if fan { 1 } else { 100 },
                    at_ms: BASE_MS + i * 20,
                    key: None,
                    fair_use_limit: None,
                },
            )
        })
        .collect()
}

/// Each of the log's three windows holds exactly `limit` of the spammer's taps ("fire") and
/// every one of the fan's ("clap").
async fn assert_spammer_capped(
    setup: &Setup,
    mongo: &mongodb::Database,
    log: &[(RecordPosition, Reaction)],
    limit: u64,
) {
    let width = setup.config.domain.window_width;
    let deltas = window_deltas(log.iter().map(|(p, r)| (p, r)), width);
    let windows = reactions::mongo::WindowStore::new(mongo)
        .read_windows(&deltas)
        .await
        .unwrap();
    assert_eq!(windows.len(), 3);
    for window in &windows {
        let fan_taps: u64 = log
            .iter()
            .filter(|(_, r)| {
                r.user.as_str() == "fan" && width.start_of(r.at_ms) == window.key.start_ms
            })
            .map(|(_, r)| u64::from(r.count))
            .sum();
        let count = |name: &str| window.counts[&EmojiName::parse(name).unwrap()];
        assert_eq!(count("fire"), limit, "{:?}", window.key);
        assert_eq!(count("clap"), fan_taps, "{:?}", window.key);
        assert_eq!(window.total, limit + fan_taps);
    }
}

#[tokio::test]
async fn a_spammer_counts_for_at_most_the_limit_per_window_under_redelivery() {
    let database = servers().mongo("fair-use").database;
    let setup = build(&settings(
        &servers().kafka_brokers,
        &servers().mongodb_uri,
        &database,
        &[("MAX_TAPS_PER_VIEWER_PER_WINDOW", "40")],
    ))
    .await;
    let log = abusive_log();
    // Batches with a full redelivery, an overlap and a redelivery of the last one.
    let mut over_limit = 0;
    let mut state_statements = 0;
    for range in [0..50, 0..50, 30..170, 170..300, 170..300] {
        let summary = handle(&setup, &log[range]).await;
        over_limit += summary.taps_over_limit;
        state_statements += summary.viewer_state_statements;
    }
    assert!(over_limit > 0 && state_statements > 0);

    let mongo = connect(&setup.config.mongo, "fair-use-test").await.unwrap();
    assert_spammer_capped(&setup, &mongo, &log, 40).await;
    let collection = mongo.collection::<Document>(ViewerTapStore::COLLECTION);
    let count = collection.count_documents(doc! {}).await.unwrap();
    assert_eq!(count, 2, "one state per viewer and stream");
    let mut cursor = collection.find(doc! {}).await.unwrap();
    while cursor.advance().await.unwrap() {
        let state = cursor.deserialize_current().unwrap();
        let windows = state.get_document("windows").unwrap();
        // The three windows lie within the horizon of the newest.
        assert_eq!(windows.len(), 3, "{state}");
        for (_, counted) in windows {
            assert!(counted.as_i64().unwrap() <= 40, "{state}");
        }
        assert!(state.get_datetime("expires_at").is_ok(), "{state}");
    }
}

#[tokio::test]
async fn a_streams_own_limit_holds_under_redelivery_even_with_the_deployments_off() {
    let database = servers().mongo("fair-use-stream").database;
    let setup = build(&settings(
        &servers().kafka_brokers,
        &servers().mongodb_uri,
        &database,
        &[("MAX_TAPS_PER_VIEWER_PER_WINDOW", "0")],
    ))
    .await;
    // The spammer's stream set a limit of 7 (ingest stamps it on every reaction); the fan's
    // reactions predate it and carry none.
    let log: Vec<_> = abusive_log()
        .into_iter()
        .map(|(position, mut reaction)| {
            if reaction.user.as_str() == "spammer" {
                reaction.fair_use_limit = Some(7);
            }
            (position, reaction)
        })
        .collect();
    for range in [0..80, 40..200, 200..300, 200..300] {
        handle(&setup, &log[range]).await;
    }
    let mongo = connect(&setup.config.mongo, "fair-use-stream-test")
        .await
        .unwrap();
    assert_spammer_capped(&setup, &mongo, &log, 7).await;
}
