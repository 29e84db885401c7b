//! The `streams` collection against a real MongoDB-wire server: create, update the title and
//! catalogue, the life of a stream (scheduled, live, ended, never back), listing by status,
//! the moderation switches (set, cleared, absent from older documents), and clear errors for
//! unknown streams and refused transitions.

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
        ..StreamChanges::default()
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
                ..StreamChanges::default()
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
        ..StreamChanges::default()
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

#[tokio::test]
async fn moderation_switches_are_stored_cleared_and_read_from_older_documents() {
    let (database, store) = fresh_store("registry-moderation").await;
    let default = EmojiCatalogue::default();
    let (created, _) = store
        .put(&id("m"), &titled("M"), &default, 1)
        .await
        .unwrap();
    assert!(!created.reactions_paused);
    assert_eq!(created.fair_use_limit, None);
    let moderate = StreamChanges {
        reactions_paused: Some(true),
        fair_use_limit: Some(Some(5)),
        ..StreamChanges::default()
    };
    let (moderated, _) = store.put(&id("m"), &moderate, &default, 2).await.unwrap();
    assert!(moderated.reactions_paused);
    assert_eq!(moderated.fair_use_limit, Some(5));
    assert_eq!(moderated.title, "M", "the rest is kept");
    let read = store.get(&id("m")).await.unwrap().unwrap();
    assert_eq!(read, moderated);
    let clear = StreamChanges {
        reactions_paused: Some(false),
        fair_use_limit: Some(None),
        ..StreamChanges::default()
    };
    let (cleared, _) = store.put(&id("m"), &clear, &default, 3).await.unwrap();
    assert!(!cleared.reactions_paused);
    assert_eq!(cleared.fair_use_limit, None);
    let stored = database
        .collection::<mongodb::bson::Document>(StreamStore::COLLECTION)
        .find_one(doc! { "_id": "m" })
        .await
        .unwrap()
        .unwrap();
    assert!(!stored.contains_key("fair_use_limit"), "{stored}");

    // Created with the switches set.
    let paused_from_birth = StreamChanges {
        title: Some("P".into()),
        reactions_paused: Some(true),
        fair_use_limit: Some(Some(9)),
        ..StreamChanges::default()
    };
    let (born, created) = store
        .put(&id("p"), &paused_from_birth, &default, 4)
        .await
        .unwrap();
    assert!(created && born.reactions_paused);
    assert_eq!(born.fair_use_limit, Some(9));

    // A document from before the switches reads as neither set; a malformed one is an error.
    let collection = database.collection::<mongodb::bson::Document>(StreamStore::COLLECTION);
    collection
        .insert_one(doc! { "_id": "old", "title": "o", "status": "live",
        "emojis": [{"name": "fire", "glyph": "🔥"}], "created_ms": 1_i64, "updated_ms": 1_i64 })
        .await
        .unwrap();
    let old = store.get(&id("old")).await.unwrap().unwrap();
    assert!(!old.reactions_paused);
    assert_eq!(old.fair_use_limit, None);
    collection
        .insert_one(doc! { "_id": "bad", "title": "b", "status": "live",
        "emojis": [{"name": "fire", "glyph": "🔥"}], "created_ms": 1_i64, "updated_ms": 1_i64,
        "fair_use_limit": "many" })
        .await
        .unwrap();
    let error = store.get(&id("bad")).await.unwrap_err();
    assert!(error.to_string().contains("fair_use_limit"), "{error}");
    // The listing leaves the unreadable one out and keeps the rest.
    let listed: Vec<String> = store
        .list(None)
        .await
        .unwrap()
        .iter()
        .map(|entry| entry.id.as_str().to_owned())
        .collect();
    assert!(listed.contains(&"old".to_owned()), "{listed:?}");
    assert!(!listed.contains(&"bad".to_owned()), "{listed:?}");
    // A limit a shell wrote (a double) reads as the whole number it is.
    collection
        .insert_one(doc! { "_id": "shell", "title": "s", "status": "live",
        "emojis": [{"name": "fire", "glyph": "🔥"}], "created_ms": 1_i64, "updated_ms": 1_i64,
        "fair_use_limit": 5.0 })
        .await
        .unwrap();
    let shell = store.get(&id("shell")).await.unwrap().unwrap();
    assert_eq!(shell.fair_use_limit, Some(5));
    // And one cleared by hand to null is the deployment's again.
    collection
        .update_one(
            doc! { "_id": "shell" },
            doc! { "$set": { "fair_use_limit": null } },
        )
        .await
        .unwrap();
    let cleared = store.get(&id("shell")).await.unwrap().unwrap();
    assert_eq!(cleared.fair_use_limit, None);
}
