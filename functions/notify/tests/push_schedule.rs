//! notify's push schedule against the real MongoDB-wire server and a test `@connections`
//! server: at most one push per stream per interval, across instances and restarts, with no
//! invocation waiting for a slot (a stream whose slot is not open is marked owed, and a sweep
//! makes the push); the last states of a stream whose taps stopped still delivered; the
//! interval stretched for an audience larger than its share of the post budget; a fan-out that
//! stops at its deadline and resumes there; connections still completing their handshake kept
//! on a 410; a slot held by a dead instance or a clock far ahead delaying a stream boundedly; a
//! finish guarded by the slot's holder; bookkeeping failures and malformed documents counted.
//!
//! Time here only ever has lower bounds ("no sooner than the interval") or generous upper
//! bounds, so a busy machine cannot fail these tests.

mod common;

use common::*;
use emostream_tests::patience::assert_bounded;
use mongodb::bson::{Document, doc};
use reactions::mongo::{Claim, PushEnd, PushSlots, connect};
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

/// The largest total `connection_id` was shown for the first window.
fn largest_total(f: &Fixture, connection_id: &str) -> Option<u64> {
    f.frames(connection_id)
        .iter()
        .filter_map(|frame| frame["windows"][0]["total"].as_u64())
        .max()
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

async fn slots(f: &Fixture) -> (mongodb::Database, PushSlots) {
    let database = connect(&f.mongo, "notify-test").await.unwrap();
    let slots = PushSlots::new(&database);
    (database, slots)
}

#[tokio::test]
async fn several_instances_push_a_stream_at_most_once_per_interval_without_waiting() {
    let f = Fixture::start(&[("PUSH_INTERVAL_MS", "1000")]).await;
    register(&f, "v", "final", 20, a_minute_ago()).await;
    let second = f.another_instance(&[("PUSH_INTERVAL_MS", "1000")]).await;
    let third = f.another_instance(&[("PUSH_INTERVAL_MS", "1000")]).await;
    let start = 1_800_000_000_000;
    let states: Vec<_> = (1..=6)
        .map(|n| state("final", start, &[("fire", n)], n as i64))
        .collect();
    store_states(&f.mongo, &states).await;
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
    // Each batch either pushed the stream or marked it owed; none waited for the slot.
    let summaries = [&a, &b, &c, &d, &e, &g];
    let pushed = summaries.iter().filter(|s| s["streams"] == 1).count();
    let owed = summaries.iter().filter(|s| s["streams_owed"] == 1).count();
    assert_eq!(pushed + owed, 6, "{summaries:?}");
    assert!(owed >= 1, "{summaries:?}");
    // A sweep makes the push the owed batches left, once the slot opens.
    sweep_until(&f, "the newest state", |f| {
        (0..20).all(|i| largest_total(f, &format!("v-{i}")) == Some(6))
    })
    .await;
    assert_spaced(&push_times(&f, "v-0"), before, INTERVAL);
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
    store_states(&f.mongo, std::slice::from_ref(&first)).await;
    let before = Instant::now();
    f.route(kafka_event(std::slice::from_ref(&first))).await;
    // The last batch arrives within the interval: it is marked owed, not waited for.
    store_states(&f.mongo, &[last.clone(), next_window.clone()]).await;
    let summary = f
        .route(kafka_event(&[last.clone(), next_window.clone()]))
        .await;
    if summary["streams"] == 0 {
        assert_eq!(summary["streams_owed"], 1, "{summary}");
    }
    // No batch comes again; a sweep pushes both windows that changed, in one frame.
    sweep_until(&f, "the last states", |f| {
        (0..5).all(|i| f.frames(&format!("w-{i}")).len() >= 2)
    })
    .await;
    for i in 0..5 {
        let frames = f.frames(&format!("w-{i}"));
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[1]["type"], "windows");
        let windows = frames[1]["windows"].as_array().unwrap();
        assert_eq!(windows.len(), 2);
        assert_eq!(windows[0]["total"], 9);
        assert_eq!(windows[0]["final"], true);
        assert_eq!(windows[1]["counts"]["clap"], 1);
        // Pushes are numbered one after the other: a client that missed one would see a gap.
        let numbers: Vec<_> = f
            .server
            .frames_to(&format!("w-{i}"))
            .iter()
            .map(|frame| frame["seq"].as_i64().unwrap())
            .collect();
        assert_eq!(numbers[1], numbers[0] + 1, "{numbers:?}");
    }
    assert_spaced(&push_times(&f, "w-0"), before, INTERVAL);
}

#[tokio::test]
async fn a_restarted_instance_keeps_the_schedule() {
    let f = Fixture::start(&[("PUSH_INTERVAL_MS", "2000")]).await;
    register(&f, "r", "restart", 3, a_minute_ago()).await;
    let first = state("restart", 0, &[("fire", 1)], 1);
    let second = state("restart", 0, &[("fire", 2)], 2);
    store_states(&f.mongo, std::slice::from_ref(&first)).await;
    let before = Instant::now();
    f.route(kafka_event(std::slice::from_ref(&first))).await;
    let restarted = f.another_instance(&[("PUSH_INTERVAL_MS", "2000")]).await;
    store_states(&f.mongo, std::slice::from_ref(&second)).await;
    restarted.handle(kafka_event(&[second])).await.unwrap();
    sweep_until(&f, "the second push", |f| push_times(f, "r-0").len() >= 2).await;
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
    let first = state("big", 0, &[("fire", 1)], 1);
    let second = state("big", 0, &[("fire", 2)], 2);
    store_states(&f.mongo, std::slice::from_ref(&first)).await;
    let before = Instant::now();
    let summary = f.route(kafka_event(std::slice::from_ref(&first))).await;
    assert_eq!(summary["interval_ms"], 3_000, "{summary}");
    store_states(&f.mongo, std::slice::from_ref(&second)).await;
    f.route(kafka_event(&[second])).await;
    sweep_until(&f, "the second push", |f| push_times(f, "big-0").len() >= 2).await;
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
async fn a_fan_out_cut_short_by_its_deadline_resumes_where_it_stopped() {
    // Eight posts at a time, 200 ms each, a 2 s deadline: at most 80 of 100 connections per
    // push. The next push starts with the ones the first missed, so within two pushes every
    // connection has one.
    let f = Fixture::start(&[
        ("PUSH_INTERVAL_MS", "1000"),
        ("FANOUT_CONCURRENCY", "8"),
        ("FANOUT_DEADLINE_MS", "2000"),
    ])
    .await;
    register(&f, "c", "rotate", 100, a_minute_ago()).await;
    f.server.set_latency(Duration::from_millis(200));
    let first = state("rotate", 0, &[("fire", 1)], 1);
    store_states(&f.mongo, std::slice::from_ref(&first)).await;
    let round_one = f.route(kafka_event(&[first])).await;
    assert!(
        round_one["deadline_missed"].as_u64().unwrap() > 0,
        "{round_one}"
    );
    let reached_once: Vec<String> = (0..100)
        .map(|i| format!("c-{i}"))
        .filter(|id| !f.frames(id).is_empty())
        .collect();
    let second = state("rotate", 0, &[("fire", 2)], 2);
    store_states(&f.mongo, std::slice::from_ref(&second)).await;
    let summary = f.route(kafka_event(&[second])).await;
    // One more push: this batch's if the slot was open again, else a sweep's once it opens.
    let mut round_two = if summary["streams"] == 1 {
        summary
    } else {
        Value::Null
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while round_two.is_null() {
        assert!(Instant::now() < deadline, "the owed push was never made");
        let report = f.notify.sweep_once().await.unwrap();
        if report.swept > 0 {
            round_two = serde_json::to_value(report).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let missed_twice: Vec<String> = (0..100)
        .map(|i| format!("c-{i}"))
        .filter(|id| f.frames(id).is_empty())
        .collect();
    assert!(
        missed_twice.is_empty(),
        "missed both pushes: {missed_twice:?} (first reached {}, second {round_two})",
        reached_once.len()
    );
}

#[tokio::test]
async fn a_slot_held_by_a_dead_instance_or_a_clock_far_ahead_delays_a_stream_boundedly() {
    let f = Fixture::start(&[("PUSH_INTERVAL_MS", "1000")]).await;
    register(&f, "k", "stuck", 2, a_minute_ago()).await;
    register(&f, "z", "dead", 2, a_minute_ago()).await;
    let (database, slots) = slots(&f).await;
    // An instance with a clock an hour ahead took the slot: the slot it left is an hour away,
    // further than any push sets one, so it is taken at once.
    slots
        .claim(&stream("stuck"), now() + 3_600_000, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(
        stored_slot(&database, "stuck")
            .await
            .get_i64("next_due_ms")
            .unwrap()
            > now() + 3_000_000
    );
    let stuck = state("stuck", 0, &[("fire", 1)], 1);
    store_states(&f.mongo, std::slice::from_ref(&stuck)).await;
    let summary = f.route(kafka_event(&[stuck])).await;
    assert_eq!(summary["delivered"], 2, "{summary}");
    // An instance took the slot and died mid-push: the stream is owed, and pushed once the
    // lease runs out.
    let lease = Duration::from_millis(500);
    let taken = Instant::now();
    slots.claim(&stream("dead"), now(), lease).await.unwrap();
    let dead = state("dead", 0, &[("fire", 1)], 1);
    store_states(&f.mongo, std::slice::from_ref(&dead)).await;
    let summary = f.route(kafka_event(&[dead])).await;
    assert_eq!(summary["streams_owed"], 1, "{summary}");
    sweep_until(&f, "the push after the lease", |f| {
        !f.frames("z-0").is_empty()
    })
    .await;
    assert!(taken.elapsed() >= lease);
}

#[tokio::test]
async fn only_the_holder_of_a_slot_sets_the_next_one() {
    let f = Fixture::start(&[("PUSH_INTERVAL_MS", "1000")]).await;
    let (database, slots) = slots(&f).await;
    let s = stream("held");
    let at = now();
    let Claim::Granted(old) = slots
        .claim(&s, at, Duration::from_millis(100))
        .await
        .unwrap()
    else {
        panic!("a new stream's slot is open");
    };
    // The holder outlives its lease: another push takes the slot.
    let Claim::Granted(new) = slots
        .claim(&s, at + 200, Duration::from_secs(30))
        .await
        .unwrap()
    else {
        panic!("an expired lease frees the slot");
    };
    assert_ne!(old.holder, new.holder);
    let late = PushEnd {
        audience: 7,
        next_due_ms: at + 1_000,
        resume_from: None,
        seq: old.seq + 1,
        still_owed_from_ms: None,
    };
    assert!(!slots.finish(&old, late.clone()).await.unwrap());
    let stored = stored_slot(&database, "held").await;
    assert_eq!(stored.get_i64("next_due_ms").unwrap(), at + 200 + 30_000);
    assert!(stored.get_i64("audience").is_err(), "{stored}");
    let end = PushEnd {
        audience: 3,
        next_due_ms: at + 1_200,
        resume_from: Some("c-5".to_owned()),
        seq: new.seq + 1,
        still_owed_from_ms: None,
    };
    // A batch marks the stream owed while the push is under way: its end keeps the mark.
    slots
        .mark_owed(&["held".to_owned()], 4_000, 0, None)
        .await
        .unwrap();
    assert!(slots.finish(&new, end.clone()).await.unwrap());
    let stored = stored_slot(&database, "held").await;
    assert_eq!(stored.get_i64("next_due_ms").unwrap(), at + 1_200);
    assert_eq!(stored.get_str("resume_from").unwrap(), "c-5");
    assert_eq!(stored.get_i64("owed_from_ms").unwrap(), 4_000);
    // The next claim takes the place to resume from.
    let Claim::Granted(next) = slots
        .claim(&s, at + 1_300, Duration::from_secs(1))
        .await
        .unwrap()
    else {
        panic!("the slot is due");
    };
    assert_eq!(next.resume_from.as_deref(), Some("c-5"));
    assert_eq!(next.owed_from_ms, Some(4_000));
    assert_eq!(next.seq, 1, "pushes are numbered");
    // The push that made what was owed clears the mark.
    let end = PushEnd {
        audience: 3,
        next_due_ms: at + 2_300,
        resume_from: None,
        seq: next.seq + 1,
        still_owed_from_ms: None,
    };
    assert!(slots.finish(&next, end.clone()).await.unwrap());
    let stored = stored_slot(&database, "held").await;
    assert!(stored.get_i64("owed_from_ms").is_err(), "{stored}");
    assert!(stored.get_str("resume_from").is_err(), "{stored}");
}

#[tokio::test]
async fn a_bookkeeping_failure_after_posting_is_counted_not_retried() {
    let f = Fixture::start(&[("PUSH_INTERVAL_MS", "1000")]).await;
    register(&f, "b", "books", 2, a_minute_ago()).await;
    let (database, _) = slots(&f).await;
    // Setting the stream's next slot will fail: another document already has the audience this
    // push will record, and the field is made unique.
    let pushes = database.collection::<Document>(PushSlots::COLLECTION);
    pushes
        .insert_one(doc! { "_id": "other", "audience": 2_i64, "next_due_ms": 0_i64 })
        .await
        .unwrap();
    pushes
        .create_index(
            mongodb::IndexModel::builder()
                .keys(doc! { "audience": 1 })
                .options(
                    mongodb::options::IndexOptions::builder()
                        .unique(true)
                        .build(),
                )
                .build(),
        )
        .await
        .unwrap();
    let books = state("books", 0, &[("fire", 1)], 1);
    store_states(&f.mongo, std::slice::from_ref(&books)).await;
    let summary = f.route(kafka_event(&[books])).await;
    assert_eq!(summary["delivered"], 2, "{summary}");
    assert_eq!(summary["bookkeeping_failures"], 1, "{summary}");
    assert_eq!(f.server.posts().len(), 2, "posted once, not retried");
}

#[tokio::test]
async fn malformed_stored_documents_are_skipped_and_counted() {
    let f = Fixture::start(&[("PUSH_INTERVAL_MS", "1000")]).await;
    register(&f, "m", "mangled", 2, a_minute_ago()).await;
    let database = connect(&f.mongo, "notify-test").await.unwrap();
    // A window whose total is text, and a connection whose id is a number.
    database
        .collection::<Document>(reactions::mongo::WindowStore::COLLECTION)
        .insert_one(doc! { "stream": "mangled", "start_ms": 4_000_i64, "end_ms": 6_000_i64, "total": "many" })
        .await
        .unwrap();
    database
        .collection::<Document>("connections")
        .insert_one(doc! { "_id": 17_i64, "stream": "mangled", "connected_at_ms": a_minute_ago() })
        .await
        .unwrap();
    let good = state("mangled", 0, &[("fire", 1)], 1);
    store_states(&f.mongo, std::slice::from_ref(&good)).await;
    let summary = f.route(kafka_event(&[good])).await;
    assert_eq!(summary["delivered"], 2, "{summary}");
    assert_eq!(summary["malformed_documents"], 2, "{summary}");
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
        .unwrap()
        .windows;
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

#[tokio::test]
async fn owed_streams_whose_slot_opened_are_found_through_the_indexes() {
    let f = Fixture::start(&[("PUSH_INTERVAL_MS", "1000")]).await;
    let (_, slots) = slots(&f).await;
    slots.ensure_indexes().await.unwrap();
    let s = stream("indexed");
    let at = now();
    let Claim::Granted(lease) = slots.claim(&s, at, Duration::from_secs(30)).await.unwrap() else {
        panic!("a new stream's slot is open");
    };
    let end = PushEnd {
        audience: 1,
        next_due_ms: at + 500,
        resume_from: None,
        seq: lease.seq + 1,
        still_owed_from_ms: None,
    };
    assert!(slots.finish(&lease, end.clone()).await.unwrap());
    slots
        .mark_owed(&["indexed".to_owned()], 2_000, 0, None)
        .await
        .unwrap();
    assert!(slots.owed_and_due(at + 499, 10).await.unwrap().is_empty());
    assert_eq!(
        slots.owed_and_due(at + 500, 10).await.unwrap(),
        ["indexed".to_owned()]
    );
}

#[tokio::test]
async fn the_sweeper_pushes_what_streams_are_owed_while_it_runs() {
    let settings = [("PUSH_INTERVAL_MS", "1000"), ("SWEEP_FOR_MS", "4000")];
    let f = Fixture::start(&settings).await;
    register(&f, "s", "swept", 2, a_minute_ago()).await;
    let first = state("swept", 0, &[("fire", 1)], 1);
    let second = state("swept", 0, &[("fire", 2)], 2);
    store_states(&f.mongo, std::slice::from_ref(&first)).await;
    let sweeper = f.another_instance(&settings).await;
    let (summary, _) = tokio::join!(
        sweeper.handle(serde_json::json!({"emostream": "sweep"})),
        async {
            f.route(kafka_event(std::slice::from_ref(&first))).await;
            store_states(&f.mongo, std::slice::from_ref(&second)).await;
            let owed = f.route(kafka_event(std::slice::from_ref(&second))).await;
            assert_eq!(owed["streams_owed"], 1, "{owed}");
        }
    );
    let summary = summary.unwrap();
    assert!(summary["swept"].as_u64().unwrap() >= 1, "{summary}");
    assert_eq!(largest_total(&f, "s-0"), Some(2));
}

#[tokio::test]
async fn a_batch_of_many_streams_pushes_one_wave_and_leaves_the_rest_owed() {
    let f = Fixture::start(&[("PUSH_INTERVAL_MS", "1000")]).await;
    let states: Vec<_> = (0..40)
        .map(|i| state(&format!("many-{i}"), 0, &[("fire", 1)], 1))
        .collect();
    for i in 0..40 {
        register(
            &f,
            &format!("m{i}"),
            &format!("many-{i}"),
            1,
            a_minute_ago(),
        )
        .await;
    }
    store_states(&f.mongo, &states).await;
    let summary = f.route(kafka_event(&states)).await;
    let pushed = summary["streams"].as_u64().unwrap();
    // One wave of the batch's own, and the small sweep after it; never all forty.
    assert!((16..=24).contains(&pushed), "{summary}");
    assert!(summary["streams_owed"].as_u64().unwrap() >= 16, "{summary}");
    // Streams that never had a schedule were marked too: sweeps push every one.
    sweep_until(&f, "every stream's push", |f| {
        (0..40).all(|i| largest_total(f, &format!("m{i}-0")) == Some(1))
    })
    .await;
}

#[tokio::test]
async fn a_final_state_alone_is_held_back_for_a_newer_states_push_to_carry() {
    // The longest interval: whenever the held-back push falls due, the live state's push
    // below has made it.
    let f = Fixture::start(&[("PUSH_INTERVAL_MS", "10000")]).await;
    register(&f, "h", "settling", 3, a_minute_ago()).await;
    // A window that has ended: one still ahead of the clock cannot be final.
    let start = (now() - 60_000) / 2_000 * 2_000;
    let mut closed = state("settling", start, &[("fire", 4)], 1);
    // aggregate publishes the final state before it marks the document final: the push below
    // reads the document still open, and shows the window final all the same.
    store_states(&f.mongo, std::slice::from_ref(&closed)).await;
    closed.is_final = true;
    // The slot is open (a new stream), but the final state alone is not pushed.
    let summary = f.route(kafka_event(std::slice::from_ref(&closed))).await;
    assert_eq!(summary["streams"], 0, "{summary}");
    assert_eq!(summary["streams_owed"], 1, "{summary}");
    assert!(f.frames("h-0").is_empty());
    // A live state of the next window is pushed at once, with the final one.
    let live = state("settling", start + 2_000, &[("clap", 2)], 2);
    store_states(&f.mongo, std::slice::from_ref(&live)).await;
    let summary = f.route(kafka_event(std::slice::from_ref(&live))).await;
    assert_eq!(summary["streams"], 1, "{summary}");
    for i in 0..3 {
        let frames = f.frames(&format!("h-{i}"));
        assert_eq!(frames.len(), 1, "{frames:?}");
        let windows = frames[0]["windows"].as_array().unwrap();
        assert_eq!(windows.len(), 2, "{windows:?}");
        assert_eq!(windows[0]["final"], true);
        assert_eq!(windows[0]["total"], 4);
        assert_eq!(windows[1]["counts"]["clap"], 2);
    }
    // That push made what the stream was owed: nothing is left for a sweep.
    let (_, slots) = slots(&f).await;
    assert!(
        slots
            .owed_and_due(now() + 3_600_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_final_state_alone_still_arrives_an_interval_later() {
    let f = Fixture::start(&[("PUSH_INTERVAL_MS", "1000")]).await;
    register(&f, "l", "ended", 2, a_minute_ago()).await;
    let mut last = state("ended", 1_800_000_000_000, &[("fire", 7)], 1);
    last.is_final = true;
    store_states(&f.mongo, std::slice::from_ref(&last)).await;
    let before = Instant::now();
    let summary = f.route(kafka_event(std::slice::from_ref(&last))).await;
    assert_eq!(summary["streams_owed"], 1, "{summary}");
    sweep_until(&f, "the final state", |f| {
        (0..2).all(|i| !f.frames(&format!("l-{i}")).is_empty())
    })
    .await;
    let frames = f.frames("l-0");
    assert_eq!(frames[0]["windows"][0]["final"], true);
    assert_eq!(frames[0]["windows"][0]["total"], 7);
    // Held back for one interval (a lower bound: a busy machine only adds to it).
    let pushed = push_times(&f, "l-0")[0];
    assert!(
        pushed.duration_since(before) + Duration::from_millis(2) >= INTERVAL,
        "pushed {:?} after the batch",
        pushed.duration_since(before)
    );
}
