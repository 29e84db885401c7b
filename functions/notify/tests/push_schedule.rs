//! notify's push schedule against the real MongoDB-wire server and a test `@connections`
//! server: at most one push per stream per interval, across instances and restarts; the last
//! states of a stream whose taps stopped still delivered; the interval stretched for an
//! audience larger than its share of the post budget; a fan-out that stops at its deadline
//! instead of failing; connections still completing their handshake kept on a 410; and a slot
//! held by a dead instance or a clock far ahead delaying a stream by at most the longest
//! interval.
//!
//! Time here only ever has lower bounds ("no sooner than the interval") or generous upper
//! bounds, so a busy machine cannot fail these tests.

mod common;

use common::*;
use emostream_tests::patience::assert_bounded;
use mongodb::bson::doc;
use notify::schedule::MAX_PUSH_INTERVAL;
use reactions::mongo::{PushSlots, connect};
use serde_json::Value;
use std::time::{Duration, Instant};

const INTERVAL: Duration = Duration::from_millis(1_000);

async fn register(f: &Fixture, prefix: &str, stream_id: &str, n: usize, connected_at_ms: i64) {
    let store = f.connections().await;
    for i in 0..n {
        store
            .register(
                &format!("{prefix}-{i}"),
                &stream(stream_id),
                connected_at_ms,
            )
            .await
            .unwrap();
    }
}

async fn handle(notify: &notify::Notify, state: &reactions::WindowStateRecord) -> Value {
    notify
        .handle(kafka_event(std::slice::from_ref(state)))
        .await
        .unwrap()
}

/// When each push reached `connection_id`, in order.
fn push_times(f: &Fixture, connection_id: &str) -> Vec<Instant> {
    f.server
        .posts()
        .into_iter()
        .filter(|p| p.connection_id == connection_id)
        .map(|p| p.at)
        .collect()
}

/// Asserts that the `n`th push (1-based) cannot have come sooner than `n - 1` intervals after
/// `before`, an instant before the first push's slot was taken: each slot is taken at least
/// one interval after the previous one. (A lower bound: a busy machine only adds to it.)
fn assert_spaced(times: &[Instant], before: Instant, interval: Duration) {
    // Slots are stored in whole milliseconds.
    let rounding = Duration::from_millis(2);
    for (n, at) in times.iter().enumerate() {
        let earliest = interval * n as u32;
        assert!(
            at.duration_since(before) + rounding * (n as u32 + 1) >= earliest,
            "push {} came {:?} after the start, before {earliest:?}",
            n + 1,
            at.duration_since(before)
        );
    }
}

#[tokio::test]
async fn several_instances_push_a_stream_at_most_once_per_interval() {
    let f = Fixture::start(&[("PUSH_INTERVAL_MS", "1000")]).await;
    register(&f, "v", "final", 20, a_minute_ago()).await;
    let second = f.another_instance(&[("PUSH_INTERVAL_MS", "1000")]).await;
    let third = f.another_instance(&[("PUSH_INTERVAL_MS", "1000")]).await;
    let start = 1_800_000_000_000;
    let states: Vec<_> = (1..=6)
        .map(|n| state("final", start, &[("fire", n)], n as i64))
        .collect();
    // Three instances handle batches of the same stream at the same time, twice each.
    let before = Instant::now();
    let ((a, b, c), (d, e, g)) = (
        tokio::join!(
            handle(&f.notify, &states[0]),
            handle(&second, &states[1]),
            handle(&third, &states[2])
        ),
        tokio::join!(
            handle(&f.notify, &states[3]),
            handle(&second, &states[4]),
            handle(&third, &states[5])
        ),
    );
    for summary in [&a, &b, &c, &d, &e, &g] {
        assert_eq!(summary["streams_missed"], 0, "{summary}");
        assert_eq!(summary["delivered"], 20, "{summary}");
    }
    let times = push_times(&f, "v-0");
    assert_eq!(times.len(), 6, "every batch was pushed");
    assert_spaced(&times, before, INTERVAL);
    // Every connection ends with the newest state.
    for i in 0..20 {
        let frames = f.frames(&format!("v-{i}"));
        let largest = frames
            .iter()
            .map(|frame| frame["windows"][0]["total"].as_u64().unwrap())
            .max();
        assert_eq!(largest, Some(6));
    }
}

#[tokio::test]
async fn the_last_states_of_a_stream_still_arrive_when_taps_stop() {
    let f = Fixture::start(&[("PUSH_INTERVAL_MS", "1000")]).await;
    register(&f, "w", "quiet", 5, a_minute_ago()).await;
    let start = 1_800_000_000_000;
    let first = state("quiet", start, &[("fire", 3)], 1);
    let mut last = state("quiet", start, &[("fire", 9)], 2);
    last.is_final = true;
    let next_window = state("quiet", start + 2_000, &[("clap", 1)], 3);
    f.route(kafka_event(std::slice::from_ref(&first))).await;
    // The last batch arrives within the interval: it waits for the next slot instead of being
    // dropped, and carries both windows that changed in one frame.
    let summary = f
        .route(kafka_event(&[last.clone(), next_window.clone()]))
        .await;
    assert_eq!(summary["windows"], 2);
    for i in 0..5 {
        let frames = f.frames(&format!("w-{i}"));
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[1]["type"], "windows");
        let windows = frames[1]["windows"].as_array().unwrap();
        assert_eq!(windows.len(), 2);
        assert_eq!(windows[0]["total"], 9);
        assert_eq!(windows[0]["final"], true);
        assert_eq!(windows[1]["counts"]["clap"], 1);
    }
}

#[tokio::test]
async fn a_restarted_instance_keeps_the_schedule() {
    let f = Fixture::start(&[("PUSH_INTERVAL_MS", "2000")]).await;
    register(&f, "r", "restart", 3, a_minute_ago()).await;
    let before = Instant::now();
    f.route(kafka_event(&[state("restart", 0, &[("fire", 1)], 1)]))
        .await;
    let restarted = f.another_instance(&[("PUSH_INTERVAL_MS", "2000")]).await;
    restarted
        .handle(kafka_event(&[state("restart", 0, &[("fire", 2)], 2)]))
        .await
        .unwrap();
    let times = push_times(&f, "r-0");
    assert_eq!(times.len(), 2);
    assert_spaced(&times, before, Duration::from_secs(2));
}

#[tokio::test]
async fn an_audience_beyond_its_share_of_the_budget_gets_a_longer_interval() {
    // 300 connections under a budget of 100 posts/s: a push every 3 s, not one a second.
    let settings = [
        ("PUSH_INTERVAL_MS", "1000"),
        ("POST_BUDGET_PER_SECOND", "100"),
    ];
    let f = Fixture::start(&settings).await;
    register(&f, "big", "big", 300, a_minute_ago()).await;
    let before = Instant::now();
    let summary = f
        .route(kafka_event(&[state("big", 0, &[("fire", 1)], 1)]))
        .await;
    assert_eq!(summary["interval_ms"], 3_000, "{summary}");
    f.route(kafka_event(&[state("big", 0, &[("fire", 2)], 2)]))
        .await;
    let times = push_times(&f, "big-0");
    assert_eq!(times.len(), 2);
    assert_spaced(&times, before, Duration::from_secs(3));
}

#[tokio::test]
async fn a_fan_out_stops_at_its_deadline_and_counts_what_it_missed() {
    // One post at a time, 100 ms each: 200 connections would take 20 s; the deadline is 1 s.
    let f = Fixture::start(&[
        ("PUSH_INTERVAL_MS", "0"),
        ("FANOUT_CONCURRENCY", "1"),
        ("FANOUT_DEADLINE_MS", "1000"),
    ])
    .await;
    register(&f, "d", "slow", 200, a_minute_ago()).await;
    f.server.set_latency(Duration::from_millis(100));
    let started = Instant::now();
    let summary = f
        .route(kafka_event(&[state("slow", 0, &[("fire", 1)], 1)]))
        .await;
    assert_bounded(
        started.elapsed(),
        Duration::from_secs(1) + Duration::from_millis(100),
        "a fan-out past its deadline",
    );
    let delivered = summary["delivered"].as_u64().unwrap();
    let missed = summary["deadline_missed"].as_u64().unwrap();
    assert!(missed > 0, "{summary}");
    assert_eq!(delivered + missed, 200, "{summary}");
    assert_eq!(f.server.posts().len() as u64, delivered);
    // Nothing was forgotten: the missed connections get the next push.
    let store = f.connections().await;
    assert_eq!(
        store.ids_watching(&stream("slow")).await.unwrap().len(),
        200
    );
}

#[tokio::test]
async fn a_410_during_the_handshake_keeps_the_connection() {
    let f = Fixture::start(&[("PUSH_INTERVAL_MS", "0")]).await;
    let store = f.connections().await;
    // Registered by `$connect` a moment ago: API Gateway answers 410 until the handshake is
    // done. Registered a minute ago: gone for good.
    store.register("new", &stream("hs"), now()).await.unwrap();
    store
        .register("old", &stream("hs"), a_minute_ago())
        .await
        .unwrap();
    store
        .register("live", &stream("hs"), a_minute_ago())
        .await
        .unwrap();
    f.server.mark_gone("new");
    f.server.mark_gone("old");
    let summary = f
        .route(kafka_event(&[state("hs", 0, &[("fire", 1)], 1)]))
        .await;
    assert_eq!(
        (&summary["delivered"], &summary["pending"], &summary["gone"]),
        (&Value::from(1), &Value::from(1), &Value::from(1)),
        "{summary}"
    );
    assert!(store.find("new").await.unwrap().is_some());
    assert_eq!(store.find("old").await.unwrap(), None);
}

#[tokio::test]
async fn a_slot_held_by_a_dead_instance_or_a_clock_far_ahead_delays_a_stream_boundedly() {
    let f = Fixture::start(&[("PUSH_INTERVAL_MS", "1000")]).await;
    register(&f, "k", "stuck", 2, a_minute_ago()).await;
    let database = connect(&f.mongo, "notify-test").await.unwrap();
    let slots = PushSlots::new(&database);
    // An instance took the slot and died mid-push, with a clock an hour ahead: the slot it
    // left is an hour away.
    slots
        .claim(&stream("stuck"), now() + 3_600_000, None, MAX_PUSH_INTERVAL)
        .await
        .unwrap();
    let stored = database
        .collection::<mongodb::bson::Document>(PushSlots::COLLECTION)
        .find_one(doc! { "_id": "stuck" })
        .await
        .unwrap()
        .unwrap();
    assert!(stored.get_i64("next_due_ms").unwrap() > now() + 3_000_000);
    let started = Instant::now();
    let summary = f
        .route(kafka_event(&[state("stuck", 0, &[("fire", 1)], 1)]))
        .await;
    assert_eq!(summary["delivered"], 2, "{summary}");
    assert_bounded(
        started.elapsed(),
        MAX_PUSH_INTERVAL + INTERVAL,
        "a push behind a slot an hour away",
    );
    assert!(
        started.elapsed() >= MAX_PUSH_INTERVAL,
        "the held slot was not waited for"
    );
}

#[tokio::test]
async fn a_push_carries_the_freshest_stored_state_not_the_batchs_older_one() {
    let f = Fixture::start(&[("PUSH_INTERVAL_MS", "1000")]).await;
    register(&f, "fresh", "live-0", 2, a_minute_ago()).await;
    // aggregate has stored more than the batch in hand says (it kept writing while this batch
    // waited for its slot).
    let log = emostream_tests::fixtures::reaction_log("t", 0, 30, 1, 1_700_000_000_000);
    let windows = store_windows(&f.mongo, &log).await;
    let stored = windows
        .list_windows(&stream("live-0"), Some(0), 100)
        .await
        .unwrap();
    let first = &stored[0];
    assert!(first.total > 1);
    let stale = state("live-0", first.key.start_ms, &[("fire", 1)], 1);
    f.route(kafka_event(&[stale])).await;
    let frame = &f.frames("fresh-0")[0];
    let pushed = frame["windows"].as_array().unwrap();
    // Every stored window from the batch's on, each at its stored total.
    assert_eq!(pushed.len(), stored.len());
    for (state, window) in pushed.iter().zip(&stored) {
        assert_eq!(state["start_ms"], window.key.start_ms);
        assert_eq!(state["total"], window.total);
    }
}
