//! The MongoDB adapters behind `final` and recreated topics, against a real MongoDB-wire server:
//! the partitions' progress (monotonic within a generation, replaced by a newer one, untouched
//! by an older one) and the open windows (found by end, marked final once, never reopened).

use emostream_tests::servers;
use reactions::event_time::PartitionProgress;
use reactions::kafka_event::RecordPosition;
use reactions::mongo::{PartitionProgressStore, WindowStore, WriteTimes, connect};
use reactions::topic_generation::{AheadRecords, UnlistedAhead};
use reactions::window_delta::window_deltas;
use reactions::{Reaction, WindowWidth};

const WIDTH: WindowWidth = WindowWidth::DEFAULT;

fn progress(partition: i32, generation: u32, offset: i64, max: i64) -> PartitionProgress {
    PartitionProgress {
        topic: "emoji.reactions".into(),
        partition,
        generation,
        offset,
        max_timestamp_ms: max,
        ahead: AheadRecords::default(),
    }
}

#[tokio::test]
async fn progress_only_grows_within_a_generation_and_a_newer_generation_replaces_it() {
    let database = connect(&servers().mongo("progress"), "progress-test")
        .await
        .unwrap();
    let store = PartitionProgressStore::new(&database);
    assert!(store.read("emoji.reactions").await.unwrap().is_empty());

    store
        .advance(&[progress(0, 0, 100, 5_000), progress(1, 0, 7, 4_000)], 1)
        .await
        .unwrap();
    // A redelivered batch: lower figures lower nothing.
    store
        .advance(&[progress(0, 0, 50, 3_000)], 2)
        .await
        .unwrap();
    let read = |store: PartitionProgressStore| async move {
        let mut all = store.read("emoji.reactions").await.unwrap();
        all.sort_by_key(|p| p.partition);
        all
    };
    assert_eq!(
        read(store.clone()).await,
        [progress(0, 0, 100, 5_000), progress(1, 0, 7, 4_000)]
    );

    // Partition 0 recreated: its figures restart.
    store.advance(&[progress(0, 1, 3, 9_000)], 3).await.unwrap();
    // A late write of the old generation changes nothing.
    store
        .advance(&[progress(0, 0, 500, 8_000)], 4)
        .await
        .unwrap();
    assert_eq!(
        read(store.clone()).await,
        [progress(0, 1, 3, 9_000), progress(1, 0, 7, 4_000)]
    );
    assert!(store.read("other-topic").await.unwrap().is_empty());
}

fn with_ahead(
    mut progress: PartitionProgress,
    listed: &[(i64, i64)],
    unlisted: Option<(i64, i64, i64)>,
) -> PartitionProgress {
    progress.ahead = AheadRecords {
        listed: listed.to_vec(),
        unlisted: unlisted.map(|(first, last, max)| UnlistedAhead {
            first_offset: first,
            last_offset: last,
            max_timestamp_ms: max,
        }),
    };
    progress
}

#[tokio::test]
async fn capped_records_are_kept_until_the_counted_timestamp_passes_them() {
    let database = connect(&servers().mongo("progress-ahead"), "progress-test")
        .await
        .unwrap();
    let store = PartitionProgressStore::new(&database);
    let topic = "emoji.reactions";
    let read = |store: PartitionProgressStore| async move {
        let mut all = store.read(topic).await.unwrap();
        all.sort_by_key(|p| p.partition);
        for p in &mut all {
            p.ahead.listed.sort_unstable();
        }
        all
    };
    // Two overlapping deliveries of one batch each list theirs: the union is kept, and the
    // unlisted ranges are joined.
    let first = with_ahead(
        progress(0, 0, 10, 5_000),
        &[(4, 90_000)],
        Some((7, 8, 60_000)),
    );
    store.advance(&[first], 1).await.unwrap();
    let second = with_ahead(
        progress(0, 0, 12, 5_000),
        &[(4, 90_000), (11, 80_000)],
        Some((9, 12, 70_000)),
    );
    store.advance(&[second], 2).await.unwrap();
    assert_eq!(
        read(store.clone()).await,
        [with_ahead(
            progress(0, 0, 12, 5_000),
            &[(4, 90_000), (11, 80_000)],
            Some((7, 12, 70_000))
        )]
    );
    // The counted timestamp passes one of them: it is dropped, the other stays.
    let passing = progress(0, 0, 20, 85_000);
    store
        .advance(std::slice::from_ref(&passing), 3)
        .await
        .unwrap();
    store.drop_passed_ahead(&[passing]).await.unwrap();
    assert_eq!(
        read(store.clone()).await,
        [with_ahead(
            progress(0, 0, 20, 85_000),
            &[(4, 90_000)],
            Some((7, 12, 70_000))
        )]
    );
    // A new generation starts with its own list, and nothing unlisted.
    store
        .advance(
            &[with_ahead(progress(0, 1, 2, 9_000), &[(1, 50_000)], None)],
            4,
        )
        .await
        .unwrap();
    assert_eq!(
        read(store.clone()).await,
        [with_ahead(progress(0, 1, 2, 9_000), &[(1, 50_000)], None)]
    );
}

fn reaction_at(offset: i64, at_ms: i64) -> (RecordPosition, Reaction) {
    let (mut position, mut reaction) =
        emostream_tests::fixtures::reaction_log("t", 0, 1, 1, 0).remove(0);
    position.offset = offset;
    reaction.at_ms = at_ms;
    (position, reaction)
}

#[tokio::test]
async fn open_windows_are_found_by_end_and_marked_final_once() {
    let database = connect(&servers().mongo("open-windows"), "final-test")
        .await
        .unwrap();
    let store = WindowStore::new(&database);
    store.ensure_indexes().await.unwrap();
    let times = WriteTimes {
        now_ms: 1,
        retention: emostream_tests::fixtures::FIXTURE_RETENTION,
    };
    let apply = |records: Vec<(RecordPosition, Reaction)>| {
        let store = store.clone();
        async move {
            let deltas = window_deltas(records.iter().map(|(p, r)| (p, r)), WIDTH);
            store.apply_batch(&deltas, WIDTH, times).await.unwrap()
        }
    };
    assert_eq!(store.earliest_open_end().await.unwrap(), None);
    apply(vec![reaction_at(0, 10_000), reaction_at(1, 14_000)]).await;
    let first_end = 10_000 + WIDTH.millis();
    let second_end = 14_000 + WIDTH.millis();
    assert_eq!(store.earliest_open_end().await.unwrap(), Some(first_end));

    let due = store.open_windows_ending_by(first_end, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    // At most the limit, the earliest ending first.
    let earliest = store.open_windows_ending_by(second_end, 1).await.unwrap();
    assert_eq!(earliest, due);
    assert_eq!(
        store
            .open_windows_ending_by(second_end, 10)
            .await
            .unwrap()
            .len(),
        2
    );
    assert!(due[0].is_final, "read as it is to be published");
    assert_eq!(store.mark_final(first_end).await.unwrap(), 1);
    assert_eq!(store.mark_final(first_end).await.unwrap(), 0, "once");
    assert_eq!(store.earliest_open_end().await.unwrap(), Some(second_end));
    let first = store.find_window(&due[0].key).await.unwrap().unwrap();
    assert!(first.is_final);

    // A write after final (only a reaction later than the allowed lateness could make one) is
    // counted, and the window stays final rather than open again.
    apply(vec![reaction_at(2, 10_500)]).await;
    let first = store.find_window(&due[0].key).await.unwrap().unwrap();
    assert!(first.is_final);
    assert_eq!(first.total, due[0].total + 1);
    assert_eq!(store.earliest_open_end().await.unwrap(), Some(second_end));
    assert!(
        store
            .open_windows_ending_by(first_end, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // Windows marked final one by one (a pass that published only some of those due).
    let second = store.open_windows_ending_by(second_end, 10).await.unwrap();
    assert_eq!(second.len(), 1);
    let keys = [second[0].key.clone()];
    assert_eq!(store.mark_windows_final(&keys).await.unwrap(), 1);
    assert_eq!(store.mark_windows_final(&keys).await.unwrap(), 0, "once");
    assert!(store.find_window(&keys[0]).await.unwrap().unwrap().is_final);
    assert_eq!(store.earliest_open_end().await.unwrap(), None);
}
