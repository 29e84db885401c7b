//! The `streams` collection against a real MongoDB-wire server: create, update the title and
//! catalogue, the life of a stream (scheduled, live, ended, never back), listing by status,
//! and clear errors for unknown streams and refused transitions.

use emostream_tests::servers;
use mongodb::bson::doc;
use reactions::mongo::{RegistryError, StreamStore, connect};
use reactions::stream_registry::{StreamChanges, Transition};
use reactions::{EmojiCatalogue, StreamId, StreamStatus};

async fn fresh_store(prefix: &str) -> (mongodb::Database, StreamStore) {
    let database = connect(&servers().mongo(prefix), "stream-registry-test")
        .await
        .unwrap();
    let store = StreamStore::new(&database);
    store.ensure_indexes().await.unwrap();
    (database, store)
}

fn id(text: &str) -> StreamId {
    StreamId::parse("id", text).unwrap()
}

fn titled(title: &str) -> StreamChanges {
    StreamChanges {
        title: Some(title.to_owned()),
        catalogue: None,
    }
}

#[tokio::test]
async fn streams_are_created_updated_and_move_forward_only() {
    let (_database, store) = fresh_store("registry-life").await;
    let default = EmojiCatalogue::default();
    let final_id = id("cup-final");
    assert_eq!(store.get(&final_id).await.unwrap(), None);

    let (created, is_new) = store
        .put(&final_id, &titled("Cup final"), &default, 1_000)
        .await
        .unwrap();
    assert!(is_new);
    assert_eq!(created.status, StreamStatus::Scheduled);
    assert_eq!(created.catalogue, default);
    assert_eq!((created.created_ms, created.updated_ms), (1_000, 1_000));
    assert_eq!(store.get(&final_id).await.unwrap().as_ref(), Some(&created));

    let custom = EmojiCatalogue::parse("goal=⚽,red_card=🟥").unwrap();
    let (updated, is_new) = store
        .put(
            &final_id,
            &StreamChanges {
                title: None,
                catalogue: Some(custom.clone()),
            },
            &default,
            2_000,
        )
        .await
        .unwrap();
    assert!(!is_new);
    assert_eq!(updated.catalogue, custom);
    assert_eq!(updated.title, "Cup final");
    assert_eq!((updated.created_ms, updated.updated_ms), (1_000, 2_000));
    let (retitled, is_new) = store
        .put(&final_id, &titled("The cup final"), &default, 3_000)
        .await
        .unwrap();
    assert!(!is_new);
    assert_eq!(retitled.title, "The cup final");
    assert_eq!(
        retitled.catalogue, custom,
        "a title change keeps the catalogue"
    );

    let live = store
        .transition(&final_id, Transition::Start, 4_000)
        .await
        .unwrap();
    assert_eq!(
        (live.status, live.started_ms),
        (StreamStatus::Live, Some(4_000))
    );
    let again = store
        .transition(&final_id, Transition::Start, 5_000)
        .await
        .unwrap();
    assert_eq!(
        again.started_ms,
        Some(4_000),
        "a repeated start changes nothing"
    );
    let ended = store
        .transition(&final_id, Transition::End, 6_000)
        .await
        .unwrap();
    assert_eq!(
        (ended.status, ended.ended_ms),
        (StreamStatus::Ended, Some(6_000))
    );
    let refused = store
        .transition(&final_id, Transition::Start, 7_000)
        .await
        .unwrap_err();
    assert!(matches!(refused, RegistryError::Refused(_)), "{refused:?}");
    assert_eq!(
        store.get(&final_id).await.unwrap().unwrap().status,
        StreamStatus::Ended
    );
}

#[tokio::test]
async fn unknown_streams_and_untitled_creations_are_refused() {
    let (_database, store) = fresh_store("registry-unknown").await;
    let ghost = id("ghost");
    let untitled = StreamChanges {
        title: None,
        catalogue: Some(EmojiCatalogue::default()),
    };
    let error = store
        .put(&ghost, &untitled, &EmojiCatalogue::default(), 1)
        .await
        .unwrap_err();
    assert!(matches!(error, RegistryError::TitleRequired), "{error:?}");
    let error = store
        .transition(&ghost, Transition::Start, 1)
        .await
        .unwrap_err();
    assert!(
        matches!(error, RegistryError::UnknownStream(_)),
        "{error:?}"
    );
    assert_eq!(
        store.get(&ghost).await.unwrap(),
        None,
        "nothing was created"
    );
}

#[tokio::test]
async fn listings_filter_by_status_and_bad_documents_are_reported() {
    let (database, store) = fresh_store("registry-list").await;
    let default = EmojiCatalogue::default();
    for name in ["c", "a", "b"] {
        store
            .put(&id(name), &titled(name), &default, 1)
            .await
            .unwrap();
    }
    store
        .transition(&id("b"), Transition::Start, 2)
        .await
        .unwrap();
    store
        .transition(&id("c"), Transition::End, 2)
        .await
        .unwrap();
    let all: Vec<String> = store
        .list(None)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id.as_str().to_owned())
        .collect();
    assert_eq!(all, ["a", "b", "c"]);
    let live = store.list(Some(StreamStatus::Live)).await.unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].id.as_str(), "b");

    // A document written by hand with a catalogue today's rules refuse is an error, not a
    // stream that takes any emoji.
    database
        .collection::<mongodb::bson::Document>(StreamStore::COLLECTION)
        .insert_one(
            doc! { "_id": "hand", "title": "h", "status": "live", "emojis": [],
            "created_ms": 1_i64, "updated_ms": 1_i64 },
        )
        .await
        .unwrap();
    let error = store.get(&id("hand")).await.unwrap_err();
    assert!(error.to_string().contains("emoji"), "{error}");
}
