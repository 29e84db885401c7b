//! The MongoDB adapter against a real MongoDB-wire server: indexes, exactly-once application of
//! window deltas under replays, overlapping batches, redelivery after a crash and concurrent
//! partitions, the number of writes per batch, the bulk retry of a crashed batch, writes the
//! server cannot confirm at the write concern, and clear errors when MongoDB is unusable.

use emostream_tests::patience::assert_bounded;
use emostream_tests::{closed_port, servers};
use mongodb::Database;
use mongodb::bson::{Document, doc};
use reactions::idempotency::SeenKey;
use reactions::kafka_event::RecordPosition;
use reactions::mongo::{
    MongoSettings, StoreError, ViewerTapStore, WindowStore, WriteTimes, connect, is_duplicate_key,
};
use reactions::viewer_state::{ViewerState, ViewerStateWrite, viewer_state_id};
use reactions::window_delta::PartitionKey;
use reactions::window_delta::window_deltas;
use reactions::{Reaction, WindowCounts, WindowWidth, count_batch};
use std::collections::BTreeMap;
use std::time::Duration;

const WIDTH: WindowWidth = WindowWidth::DEFAULT;

const RETENTION: Duration = emostream_tests::fixtures::FIXTURE_RETENTION;

fn times() -> WriteTimes {
    WriteTimes {
        now_ms: 1_000,
        retention: RETENTION,
    }
}

fn log(topic: &str, partition: i32, len: usize, streams: usize) -> Vec<(RecordPosition, Reaction)> {
    emostream_tests::fixtures::reaction_log(topic, partition, len, streams, 0)
}

async fn fresh_store(prefix: &str) -> (Database, WindowStore) {
    let database = connect(&servers().mongo(prefix), "window-store-test")
        .await
        .unwrap();
    let store = WindowStore::new(&database);
    store.ensure_indexes().await.unwrap();
    (database, store)
}

async fn apply(
    store: &WindowStore,
    records: &[(RecordPosition, Reaction)],
) -> reactions::mongo::ApplyReport {
    let deltas = window_deltas(records.iter().map(|(p, r)| (p, r)), WIDTH);
    store.apply_batch(&deltas, WIDTH, times()).await.unwrap()
}

/// Asserts the store holds exactly the counts of `records`, window by window.
async fn assert_exact(store: &WindowStore, records: &[(RecordPosition, Reaction)]) {
    let expected: WindowCounts = count_batch(records.iter().map(|(_, r)| r), WIDTH);
    let deltas = window_deltas(records.iter().map(|(p, r)| (p, r)), WIDTH);
    let stored = store.read_windows(&deltas).await.unwrap();
    assert_eq!(stored.len(), expected.len());
    for window in stored {
        let counts = &expected[&window.key];
        assert_eq!(&window.counts, counts, "{:?}", window.key);
        assert_eq!(window.total, counts.values().sum::<u64>());
        assert_eq!(window.end_ms, window.key.start_ms + WIDTH.millis());
    }
}

/// Runs `write` once per item, all at once on tasks of their own, and waits for every one.
async fn concurrently<T, F, Fut>(store: &WindowStore, items: &[T], write: F)
where
    T: Clone,
    F: Fn(WindowStore, T) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let writers: Vec<_> = items
        .iter()
        .cloned()
        .map(|item| tokio::spawn(write(store.clone(), item)))
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
}

#[tokio::test]
async fn the_same_batch_twice_counts_once() {
    let (database, store) = fresh_store("twice").await;
    let batch = log("emoji-reaction-topic", 0, 60, 3);
    let first = apply(&store, &batch).await;
    assert_eq!((first.conflicts, first.replays_skipped), (0, 0));
    let again = apply(&store, &batch).await;
    assert_eq!(
        again.conflicts, again.windows,
        "every window sees the replay"
    );
    assert_eq!(
        (again.replays_skipped, again.taps_applied),
        (again.windows, 0)
    );
    assert_exact(&store, &batch).await;
    database.drop().await.unwrap();
}

#[tokio::test]
async fn overlapping_batches_with_different_boundaries_count_once() {
    let (database, store) = fresh_store("overlap").await;
    let partition = log("emoji.reaction.topic", 2, 120, 4);
    for (start, end) in [(0, 40), (25, 70), (60, 61), (10, 100), (95, 120), (0, 120)] {
        apply(&store, &partition[start..end]).await;
    }
    assert_exact(&store, &partition).await;
    database.drop().await.unwrap();
}

#[tokio::test]
async fn redelivery_after_a_crash_between_write_and_commit_counts_once() {
    let (database, store) = fresh_store("crash").await;
    let partition = log("emoji-reaction-topic", 0, 90, 2);
    // The first delivery is written, then the function dies before the batch is acknowledged:
    // the event source redelivers from the same offset, with more records behind it.
    apply(&store, &partition[..50]).await;
    let redelivered = apply(&store, &partition[..90]).await;
    assert!(redelivered.conflicts > 0);
    let expected_new: u64 = partition[50..]
        .iter()
        .map(|(_, r)| u64::from(r.count))
        .sum();
    assert_eq!(redelivered.taps_applied, expected_new);
    assert_exact(&store, &partition).await;
    database.drop().await.unwrap();
}

#[tokio::test]
async fn two_partitions_writing_the_same_windows_concurrently_count_once() {
    let (database, store) = fresh_store("concurrent").await;
    let logs = [
        log("emoji-reaction-topic", 0, 200, 2),
        log("emoji-reaction-topic", 1, 200, 2),
    ];
    concurrently(&store, &logs, |store, partition| async move {
        // Small batches, each delivered twice, as after a timeout.
        for start in (0..partition.len()).step_by(20) {
            let batch = &partition[start..(start + 20).min(partition.len())];
            apply(&store, batch).await;
            apply(&store, batch).await;
        }
    })
    .await;
    let everything: Vec<_> = logs.concat();
    assert_exact(&store, &everything).await;
    database.drop().await.unwrap();
}

async fn apply_and_read(
    store: &WindowStore,
    records: &[(RecordPosition, Reaction)],
) -> (
    reactions::mongo::ApplyReport,
    Vec<reactions::mongo::StoredWindow>,
) {
    let deltas = window_deltas(records.iter().map(|(p, r)| (p, r)), WIDTH);
    store.apply_and_read(&deltas, WIDTH, times()).await.unwrap()
}

#[tokio::test]
async fn a_batch_of_few_windows_is_written_and_read_in_one_round_trip() {
    let (database, store) = fresh_store("one-trip").await;
    // 30 records 53 ms apart span one 2 s window of one stream.
    let batch = log("emoji-reaction-topic", 0, 30, 1);
    let (report, windows) = apply_and_read(&store, &batch).await;
    assert_eq!((report.windows, report.round_trips), (1, 1));
    let expected: WindowCounts = count_batch(batch.iter().map(|(_, r)| r), WIDTH);
    let key = &windows[0].key;
    assert_eq!(windows[0].counts, expected[key]);
    // The replay is noticed, skipped, and still returns the state.
    let (again, replayed) = apply_and_read(&store, &batch).await;
    assert_eq!(
        (again.conflicts, again.replays_skipped, again.taps_applied),
        (1, 1, 0)
    );
    assert!(again.round_trips > 1);
    assert_eq!(replayed, windows);
    // A batch over many windows takes the bulk update and one read.
    let wide = log("emoji-reaction-topic", 1, 200, 5);
    let (report, windows) = apply_and_read(&store, &wide).await;
    assert!(report.windows > 4);
    assert_eq!((report.round_trips, windows.len()), (2, report.windows));
    assert_exact(&store, &[batch, wide].concat()).await;
    database.drop().await.unwrap();
}

#[tokio::test]
async fn three_partitions_writing_and_reading_one_stream_concurrently_count_once() {
    let (database, store) = fresh_store("concurrent-read").await;
    let logs: Vec<_> = (0..3)
        .map(|p| log("emoji-reaction-topic", p, 240, 1))
        .collect();
    concurrently(&store, &logs, |store, partition| async move {
        let mut newest = std::collections::BTreeMap::new();
        // Small batches, each delivered twice, as after a timeout; every state read back is
        // at least the last one this writer saw of its window.
        for start in (0..partition.len()).step_by(15) {
            let batch = &partition[start..(start + 15).min(partition.len())];
            for _ in 0..2 {
                let (_, windows) = apply_and_read(&store, batch).await;
                for window in windows {
                    let seen = newest.entry(window.key.clone()).or_insert(0);
                    assert!(window.total >= *seen, "a window's total went down");
                    *seen = window.total;
                }
            }
        }
    })
    .await;
    assert_exact(&store, &logs.concat()).await;
    database.drop().await.unwrap();
}

#[tokio::test]
async fn racing_inserts_of_a_new_window_lose_nothing() {
    let (database, store) = fresh_store("race").await;
    let partitions: Vec<_> = (0..16)
        .map(|p| log("emoji-reaction-topic", p, 1, 1))
        .collect();
    concurrently(&store, &partitions, |store, batch| async move {
        apply(&store, &batch).await;
    })
    .await;
    assert_exact(&store, &partitions.concat()).await;
    database.drop().await.unwrap();
}

#[tokio::test]
async fn one_write_per_window_for_10000_reactions_over_20_streams() {
    let (database, store) = fresh_store("writes").await;
    let batch = log("emoji-reaction-topic", 0, 10_000, 20);
    let deltas = window_deltas(batch.iter().map(|(p, r)| (p, r)), WIDTH);
    let started = std::time::Instant::now();
    let report = store.apply_batch(&deltas, WIDTH, times()).await.unwrap();
    let elapsed = started.elapsed();
    println!(
        "MongoDB writes for one batch of 10000 reactions over 20 streams: {} update statements in 1 round trip for {} distinct windows ({elapsed:?})",
        report.bulk_statements, report.windows
    );
    assert_eq!(report.bulk_statements, deltas.len());
    assert_eq!(report.conflicts, 0);
    assert_exact(&store, &batch).await;
    database.drop().await.unwrap();
}

#[tokio::test]
async fn indexes_enforce_one_document_per_window_and_retention() {
    let (database, store) = fresh_store("indexes").await;
    store.ensure_indexes().await.unwrap();
    apply(&store, &log("emoji-reaction-topic", 0, 1, 1)).await;
    let raw = database.collection::<Document>(WindowStore::COLLECTION);
    let stored = raw.find_one(doc! {}).await.unwrap().unwrap();
    let end_ms = stored.get_i64("end_ms").unwrap();
    let expires = stored
        .get_datetime("expires_at")
        .unwrap()
        .timestamp_millis();
    assert_eq!(expires, end_ms + RETENTION.as_millis() as i64);
    let duplicate = raw
        .insert_one(doc! { "stream": stored.get_str("stream").unwrap(), "start_ms": stored.get_i64("start_ms").unwrap() })
        .await
        .unwrap_err();
    assert!(is_duplicate_key(&duplicate), "{duplicate}");
    let names = raw.list_index_names().await.unwrap();
    assert!(
        names.contains(&"stream_start_unique".to_owned())
            && names.contains(&"expires_at_ttl".to_owned()),
        "{names:?}"
    );
    database.drop().await.unwrap();
}

#[tokio::test]
async fn bad_uris_and_dead_servers_are_clear_errors() {
    let bad = MongoSettings {
        uri: "postgres://nope".into(),
        database: "x".into(),
    };
    assert!(matches!(
        connect(&bad, "t").await,
        Err(StoreError::Config(_))
    ));

    let down = MongoSettings {
        uri: format!(
            "mongodb://127.0.0.1:{}/?directConnection=true",
            closed_port()
        ),
        database: "x".into(),
    };
    let started = std::time::Instant::now();
    let err = connect(&down, "t").await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Server {
                operation: "ping",
                ..
            }
        ),
        "{err}"
    );
    // The adapter's server selection timeout is 3 s (the driver's default would be 30 s).
    assert_bounded(
        started.elapsed(),
        Duration::from_secs(3),
        "a connect to a dead server",
    );
}

#[tokio::test]
async fn a_crashed_batch_of_10000_reactions_over_200_streams_is_retried_in_three_round_trips() {
    let (database, store) = fresh_store("crash-wide").await;
    let batch = log("emoji-reaction-topic", 0, 10_000, 200);
    // The first delivery held the first 5,000 records; it was written, then the function died
    // before the event source heard of it. The retry brings the same offsets and more: every
    // window it touches already holds part of it.
    apply(&store, &batch[..5_000]).await;
    let deltas = window_deltas(batch.iter().map(|(p, r)| (p, r)), WIDTH);
    let started = std::time::Instant::now();
    let retried = store.apply_batch(&deltas, WIDTH, times()).await.unwrap();
    let elapsed = started.elapsed();
    // The aggregate function's timeout in template.yaml (Globals: Function: Timeout).
    let timeout = Duration::from_secs(30);
    println!(
        "retry of a crashed batch of 10000 reactions over 200 streams: {} windows, {} conflicting, {} round trips, {elapsed:?} ({:.2}% of the function's {timeout:?} timeout; local MongoDB-wire server, debug build)",
        retried.windows,
        retried.conflicts,
        retried.round_trips,
        100.0 * elapsed.as_secs_f64() / timeout.as_secs_f64(),
    );
    let later_taps: u64 = batch[5_000..].iter().map(|(_, r)| u64::from(r.count)).sum();
    assert_eq!(retried.windows, 600);
    assert_eq!((retried.conflicts, retried.replays_skipped), (600, 0));
    assert_eq!(retried.taps_applied, later_taps);
    // The bulk update, one read of every conflicting window, one compare-and-set update.
    assert_eq!(retried.round_trips, 3);
    assert_exact(&store, &batch).await;
    database.drop().await.unwrap();
}

/// `settings` with a write concern no server can confirm: a tag no replica set member has.
/// The server applies each write on the primary and answers it with a `writeConcernError`, as
/// when a majority does not confirm in time.
fn unconfirmable(settings: &MongoSettings) -> MongoSettings {
    let separator = if settings.uri.contains('?') { '&' } else { '?' };
    MongoSettings {
        uri: format!("{}{separator}w=no-such-tag", settings.uri),
        database: settings.database.clone(),
    }
}

fn is_not_durable(result: &Result<impl std::fmt::Debug, StoreError>) -> bool {
    matches!(result, Err(StoreError::NotDurable { code: 79, message, .. }) if message.contains("no-such-tag"))
}

#[tokio::test]
async fn writes_the_server_cannot_confirm_fail_the_batch_and_the_retry_counts_once() {
    let settings = servers().mongo("not-durable");
    let database = connect(&settings, "window-store-test").await.unwrap();
    // Without `w` in the URI, writes wait for a majority.
    assert_eq!(
        database.write_concern().and_then(|c| c.w.clone()),
        Some(mongodb::options::Acknowledgment::Majority)
    );
    let store = WindowStore::new(&database);
    store.ensure_indexes().await.unwrap();
    let shaky = connect(&unconfirmable(&settings), "window-store-test")
        .await
        .unwrap();
    let shaky_store = WindowStore::new(&shaky);

    // The bulk `update` (a raw command: the driver leaves its reply to the caller).
    let wide = log("emoji-reaction-topic", 0, 300, 5);
    let wide_deltas = window_deltas(wide.iter().map(|(p, r)| (p, r)), WIDTH);
    let failed = shaky_store.apply_batch(&wide_deltas, WIDTH, times()).await;
    assert!(is_not_durable(&failed), "{failed:?}");
    // The same batch through the compare-and-set path (every window conflicts now).
    let failed = shaky_store.apply_batch(&wide_deltas, WIDTH, times()).await;
    assert!(is_not_durable(&failed), "{failed:?}");
    // `findAndModify`, for a batch of few windows.
    let narrow = log("emoji-reaction-topic", 1, 20, 1);
    let narrow_deltas = window_deltas(narrow.iter().map(|(p, r)| (p, r)), WIDTH);
    let failed = shaky_store
        .apply_and_read(&narrow_deltas, WIDTH, times())
        .await;
    assert!(is_not_durable(&failed), "{failed:?}");
    // Viewers' states (fair use and idempotency keys).
    let partition = PartitionKey {
        topic: "emoji-reaction-topic".into(),
        partition: 0,
        generation: 0,
    };
    let state = ViewerStateWrite {
        id: "live-0/viewer-1".into(),
        offsets: BTreeMap::from([(partition, 1_000)]),
        state: counted_in_window_0(3),
    };
    let failed = ViewerTapStore::new(&shaky).write(&[state], times()).await;
    assert!(is_not_durable(&failed), "{failed:?}");

    // The primary did apply those writes. The event source retries the failed batches; the
    // retries find them applied and add nothing.
    let retried = store
        .apply_batch(&wide_deltas, WIDTH, times())
        .await
        .unwrap();
    assert_eq!(retried.taps_applied, 0);
    let (retried, _) = store
        .apply_and_read(&narrow_deltas, WIDTH, times())
        .await
        .unwrap();
    assert_eq!(retried.taps_applied, 0);
    assert_exact(&store, &[wide, narrow].concat()).await;
    database.drop().await.unwrap();
}

/// A viewer state that counted `counted` taps in the window starting at 0.
fn counted_in_window_0(counted: u64) -> ViewerState {
    ViewerState {
        windows: BTreeMap::from([(0, counted)]),
        ..ViewerState::default()
    }
}

#[tokio::test]
async fn a_viewer_state_is_written_only_over_the_revision_it_was_computed_from() {
    let (database, _) = fresh_store("viewer-states").await;
    let states = ViewerTapStore::new(&database);
    states.ensure_indexes().await.unwrap();
    let partition = |n: i32| PartitionKey {
        topic: "emoji-reaction-topic".into(),
        partition: n,
        generation: 0,
    };
    // A write computed from `read`: offsets up to `offset` of partition `on`, `counted` taps.
    let write = |id: &str, read: &ViewerState, on: i32, offset: i64, counted: u64| {
        let mut state = read.clone();
        state.windows = BTreeMap::from([(0, counted)]);
        ViewerStateWrite {
            id: id.into(),
            offsets: BTreeMap::from([(partition(on), offset)]),
            state,
        }
    };
    let read = |id: &str| {
        let states = states.clone();
        let id = id.to_owned();
        async move {
            states
                .read(std::slice::from_ref(&id))
                .await
                .unwrap()
                .remove(&id)
                .unwrap_or_default()
        }
    };
    let fresh = ViewerState::default();
    // Two deliveries of one partition that overlap with different extents (a retry while the
    // first still runs), both computed from the same (absent) state: up to offset 10 counting
    // 5, and up to 20 counting 9.
    // The wider first: the narrower finds its work accounted for and changes nothing.
    states
        .write(&[write("wide-first", &fresh, 0, 20, 9)], times())
        .await
        .unwrap();
    states
        .write(&[write("wide-first", &fresh, 0, 10, 5)], times())
        .await
        .unwrap();
    let stored = read("wide-first").await;
    assert_eq!(
        (
            stored.windows[&0],
            stored.offsets[&partition(0)],
            stored.rev
        ),
        (9, 20, 1)
    );
    // The narrower first: the wider finds a revision it did not read and is refused (its batch
    // is retried), then, computed again from what is stored, written.
    states
        .write(&[write("narrow-first", &fresh, 0, 10, 5)], times())
        .await
        .unwrap();
    let refused = states
        .write(&[write("narrow-first", &fresh, 0, 20, 9)], times())
        .await;
    assert!(
        matches!(refused, Err(StoreError::Raced { count: 1, .. })),
        "{refused:?}"
    );
    let now = read("narrow-first").await;
    states
        .write(&[write("narrow-first", &now, 0, 20, 9)], times())
        .await
        .unwrap();
    let stored = read("narrow-first").await;
    assert_eq!(
        (
            stored.windows[&0],
            stored.offsets[&partition(0)],
            stored.rev
        ),
        (9, 20, 2)
    );
    // One viewer's records on two partitions (after a change of partition count), decided by two
    // invocations from the same state: the second is refused instead of erasing the first's.
    states
        .write(&[write("two-partitions", &fresh, 0, 7, 3)], times())
        .await
        .unwrap();
    let refused = states
        .write(&[write("two-partitions", &fresh, 1, 4, 2)], times())
        .await;
    assert!(
        matches!(refused, Err(StoreError::Raced { .. })),
        "{refused:?}"
    );
    let now = read("two-partitions").await;
    states
        .write(&[write("two-partitions", &now, 1, 4, 5)], times())
        .await
        .unwrap();
    let stored = read("two-partitions").await;
    assert_eq!(
        (
            stored.windows[&0],
            stored.offsets[&partition(0)],
            stored.offsets[&partition(1)]
        ),
        (5, 7, 4)
    );
    // Both at once, inserting a state neither found: one is written, and the other is either
    // accounted for or refused; retried from what is stored, the wider one's effect stands.
    for i in 0..40 {
        let id = format!("racing-{i}");
        let (narrow, wide) = (
            [write(&id, &fresh, 0, 10, 5)],
            [write(&id, &fresh, 0, 20, 9)],
        );
        let (_, wide) = tokio::join!(states.write(&narrow, times()), states.write(&wide, times()));
        if wide.is_err() {
            let now = read(&id).await;
            states
                .write(&[write(&id, &now, 0, 20, 9)], times())
                .await
                .unwrap();
        }
        let stored = read(&id).await;
        assert_eq!(
            (stored.windows[&0], stored.offsets[&partition(0)]),
            (9, 20),
            "{id}"
        );
    }
    database.drop().await.unwrap();
}

#[tokio::test]
async fn a_viewer_state_round_trips_with_its_windows_keys_and_offsets() {
    let (database, _) = fresh_store("viewer-state-shape").await;
    let store = ViewerTapStore::new(&database);
    store.ensure_indexes().await.unwrap();
    let partition = PartitionKey {
        topic: "emoji-reaction-topic".into(),
        partition: 3,
        generation: 1,
    };
    let stream = reactions::StreamId::parse("s", "live-0").unwrap();
    let viewer = reactions::UserId::parse("u", "viewer-1").unwrap();
    let id = viewer_state_id(&stream, &viewer);
    let state = ViewerState {
        rev: 0,
        offsets: BTreeMap::new(),
        windows: BTreeMap::from([(1_767_225_600_000, 40), (1_767_225_602_000, 3)]),
        keys: vec![
            SeenKey {
                key: i64::MIN,
                body: i64::MAX,
                items: vec![0b101, 0xff],
            },
            SeenKey {
                key: 9,
                body: -9,
                items: vec![1],
            },
        ],
    };
    let write = ViewerStateWrite {
        id: id.clone(),
        offsets: BTreeMap::from([(partition.clone(), 20)]),
        state: state.clone(),
    };
    store
        .write(std::slice::from_ref(&write), times())
        .await
        .unwrap();
    let read = store.read(std::slice::from_ref(&id)).await.unwrap();
    let mut expected = state.clone();
    expected.offsets.insert(partition.clone(), 20);
    expected.rev = 1;
    assert_eq!(read[&id], expected);
    database.drop().await.unwrap();
}
