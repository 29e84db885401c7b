//! The MongoDB adapter against a real MongoDB-wire server: idempotent index creation, upserts
//! with `$inc` on the unique (stream, window start) key, racing upserts, and clear errors.

use emostream_tests::{closed_port, servers};
use mongodb::bson::doc;
use reactions::mongo::{MongoSettings, StoreError, WindowStore, connect, is_duplicate_key};
use reactions::{EmojiCounts, EmojiName, StreamId, WindowCounts, WindowKey, WindowWidth};

fn counts(pairs: &[(&str, u64)]) -> EmojiCounts {
    pairs
        .iter()
        .map(|(e, n)| (EmojiName::parse(e).unwrap(), *n))
        .collect()
}

fn key(stream: &str, start_ms: i64) -> WindowKey {
    WindowKey {
        stream: StreamId::parse("s", stream).unwrap(),
        start_ms,
    }
}

#[tokio::test]
async fn upserts_add_up_on_the_unique_window_key() {
    let database = connect(&servers().mongo("adapter"), "mongo-adapter-test")
        .await
        .unwrap();
    let store = WindowStore::new(&database);
    store.ensure_indexes().await.unwrap();
    store.ensure_indexes().await.unwrap();

    let width = WindowWidth::DEFAULT;
    let mut batch = WindowCounts::new();
    batch.insert(key("m1", 0), counts(&[("fire", 3), ("clap", 1)]));
    batch.insert(key("m1", 2_000), counts(&[("fire", 1)]));
    store.add_counts(&batch, width).await.unwrap();
    store.add_counts(&batch, width).await.unwrap();

    let first = store.find_window(&key("m1", 0)).await.unwrap().unwrap();
    assert_eq!(first.counts, counts(&[("fire", 6), ("clap", 2)]));
    assert_eq!((first.total, first.end_ms), (8, 2_000));
    let second = store.find_window(&key("m1", 2_000)).await.unwrap().unwrap();
    assert_eq!(second.total, 2);
    assert!(store.find_window(&key("m2", 0)).await.unwrap().is_none());

    // The index really is unique: a second document for the same window is refused with E11000.
    let raw = database.collection::<mongodb::bson::Document>(WindowStore::COLLECTION);
    let duplicate = raw
        .insert_one(doc! { "stream": "m1", "start_ms": 0_i64 })
        .await
        .unwrap_err();
    assert!(is_duplicate_key(&duplicate), "{duplicate}");
    assert_eq!(raw.count_documents(doc! {}).await.unwrap(), 2);
    database.drop().await.unwrap();
}

#[tokio::test]
async fn racing_upserts_of_a_new_window_lose_nothing() {
    let database = connect(&servers().mongo("race"), "mongo-race-test")
        .await
        .unwrap();
    let store = WindowStore::new(&database);
    store.ensure_indexes().await.unwrap();
    let writers: Vec<_> = (0..16)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut batch = WindowCounts::new();
                batch.insert(key("race", 4_000), counts(&[("joy", 5)]));
                store.add_counts(&batch, WindowWidth::DEFAULT).await
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap().unwrap();
    }
    let stored = store
        .find_window(&key("race", 4_000))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.total, 80);
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
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}
