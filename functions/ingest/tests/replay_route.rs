//! `GET /streams/{id}/replay` through the ingest handler, against the real MongoDB-wire server:
//! stored windows merged into buckets exactly, the whole stream's heatmap, the cache headers
//! that tell a settled recording from a stream still counting, and clear errors for ranges
//! that cannot be answered.

mod common;

use common::*;
use emostream_tests::servers;
use lambda_http::http::header;
use lambda_http::{Body, Request};
use mongodb::bson::{Document, doc};
use reactions::mongo::{MongoSettings, connect};
use serde_json::{Value, json};

fn get(uri: &str) -> Request {
    lambda_http::http::Request::builder()
        .method("GET")
        .uri(uri)
        .body(Body::Empty)
        .unwrap()
}

async fn database(setup: &Setup) -> mongodb::Database {
    let mongo = MongoSettings {
        uri: servers().mongodb_uri.clone(),
        database: setup.database.clone(),
    };
    connect(&mongo, "replay-route-test").await.unwrap()
}

/// A stored window of `stream` as aggregate writes it (only the fields replay reads).
fn window(stream: &str, start_ms: i64, counts: &[(&str, i64)], is_final: bool) -> Document {
    let mut stored = Document::new();
    for (emoji, n) in counts {
        stored.insert(*emoji, *n);
    }
    doc! {
        "stream": stream,
        "start_ms": start_ms,
        "end_ms": start_ms + 2_000,
        "counts": stored,
        "total": counts.iter().map(|(_, n)| n).sum::<i64>(),
        "final": is_final,
    }
}

/// Makes `stream` one that went live at `started_ms` and ended at `ended_ms`.
async fn set_life(
    database: &mongodb::Database,
    stream: &str,
    started_ms: i64,
    ended_ms: Option<i64>,
) {
    let mut set = doc! { "started_ms": started_ms };
    if let Some(ended) = ended_ms {
        set.insert("ended_ms", ended);
        set.insert("status", "ended");
    }
    database
        .collection::<Document>("streams")
        .update_one(doc! { "_id": stream }, doc! { "$set": set })
        .await
        .unwrap();
}

#[tokio::test]
async fn windows_merge_into_exact_buckets_with_the_streams_heatmap() {
    let setup = setup_with(&[]).await;
    let db = database(&setup).await;
    // Went live three hours ago, on a boundary of the 4 s buckets asked below; ended two hours
    // ago, past the hour after which a range is settled.
    let now = now_ms();
    let started = now - now.rem_euclid(4_000) - 3 * 3_600_000;
    set_life(&db, "final-0", started, Some(now - 2 * 3_600_000)).await;
    let windows = db.collection::<Document>("windows");
    windows
        .insert_many([
            window("final-0", started, &[("fire", 3)], true),
            window(
                "final-0",
                started + 2_000,
                &[("fire", 1), ("clap", 2)],
                true,
            ),
            window("final-0", started + 6_000, &[("joy", 5)], true),
            // Late in the stream: the heatmap's busiest segment.
            window("final-0", started + 2_000_000, &[("clap", 40)], true),
            window("m", started, &[("fire", 99)], false),
        ])
        .await
        .unwrap();

    let uri = format!(
        "/streams/final-0/replay?from={started}&to={}&resolution=4000",
        started + 8_000
    );
    let response = setup.ingest.handle(get(&uri)).await;
    assert_eq!(response.status(), 200);
    let body = body_json(&response);
    assert_eq!(body["from_ms"], started);
    assert_eq!(body["resolution_ms"], 4_000);
    assert_eq!(body["emojis"], json!(["fire", "clap", "joy"]));
    assert_eq!(body["buckets"], json!([[0, 4, 2, 0], [1, 0, 0, 5]]));
    // Settled: ended two hours ago and every window final.
    assert_eq!(body["final"], true);
    assert_eq!(
        response.headers()[header::CACHE_CONTROL],
        "public, max-age=31536000, immutable"
    );
    let heatmap = &body["heatmap"];
    assert_eq!(heatmap["from_ms"], started);
    let intensity: Vec<f64> = heatmap["intensity"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    // At most 100 segments of whole windows over the stream's life.
    let segment = heatmap["segment_ms"].as_i64().unwrap();
    let span = heatmap["to_ms"].as_i64().unwrap() - started;
    assert_eq!(segment % 2_000, 0);
    assert_eq!(intensity.len() as i64, (span + segment - 1) / segment);
    assert!((90..=100).contains(&intensity.len()), "{}", intensity.len());
    assert_eq!(intensity.iter().cloned().fold(0.0, f64::max), 1.0);
    assert_eq!(intensity[0], 0.275, "11 taps of the busiest segment's 40");

    // Without a range: the whole stream, about a thousand buckets of whole windows; its
    // heatmap, summed from the windows read, is the one the server summed for a part.
    let part_heatmap = body["heatmap"].clone();
    let body = body_json(&setup.ingest.handle(get("/streams/final-0/replay")).await);
    assert_eq!(body["heatmap"], part_heatmap);
    let resolution = body["resolution_ms"].as_i64().unwrap();
    assert_eq!(resolution % 2_000, 0);
    let total: i64 = body["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap()[1..].to_vec())
        .map(|n| n.as_i64().unwrap())
        .sum();
    assert_eq!(total, 51, "every tap of the stream, none of another");

    // A stream still counting is cached for a second only.
    set_life(&db, "m", started, None).await;
    let response = setup
        .ingest
        .handle(get(&format!("/streams/m/replay?from={started}&to={now}")))
        .await;
    let body = body_json(&response);
    assert_eq!(body["final"], false, "{body}");
    assert_eq!(
        response.headers()[header::CACHE_CONTROL],
        "public, max-age=1"
    );
}

#[tokio::test]
async fn ranges_that_cannot_be_answered_get_clear_errors() {
    let setup = setup_with(&[]).await;
    let db = database(&setup).await;
    set_life(&db, "final-1", 1_800_000_000_000, None).await;
    let cases = [
        ("/streams/final-1/replay?from=9000&to=9000", 400, Some("to")),
        (
            "/streams/final-1/replay?from=0&to=60000&resolution=3000",
            400,
            Some("resolution"),
        ),
        (
            "/streams/final-1/replay?from=0&to=90000000&resolution=2000",
            400,
            Some("resolution"),
        ),
        (
            "/streams/final-1/replay?from=0&to=900000000&resolution=900000",
            400,
            Some("to"),
        ),
        ("/streams/final-1/replay?from=soon", 400, Some("from")),
        ("/streams/final-1/replay?window=2", 400, Some("window")),
        ("/streams/nobody/replay", 404, None),
    ];
    for (uri, status, field) in cases {
        let response = setup.ingest.handle(get(uri)).await;
        let body: Value = body_json(&response);
        assert_eq!(response.status().as_u16(), status, "{uri}: {body}");
        if let Some(field) = field {
            assert_eq!(body["errors"][0]["field"], field, "{uri}: {body}");
        }
    }
    let body = body_json(
        &setup
            .ingest
            .handle(get(
                "/streams/final-1/replay?from=0&to=90000000&resolution=2000",
            ))
            .await,
    );
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("at least 10000 ms"), "{message}");
    // A stream registered but never live: no start to count from unless `from` is given.
    let scheduled = reactions::StreamId::parse("id", "later").unwrap();
    let changes = reactions::stream_registry::StreamChanges {
        title: Some("Later".into()),
        ..reactions::stream_registry::StreamChanges::default()
    };
    let catalogue = reactions::EmojiCatalogue::parse("fire=🔥").unwrap();
    reactions::mongo::StreamStore::new(&db)
        .put(&scheduled, &changes, &catalogue, now_ms())
        .await
        .unwrap();
    let response = setup.ingest.handle(get("/streams/later/replay")).await;
    let body = body_json(&response);
    assert_eq!(
        (response.status().as_u16(), body["error"].as_str()),
        (409, Some("no_origin")),
        "{body}"
    );
    let response = setup
        .ingest
        .handle(get("/streams/later/replay?from=0&to=4000"))
        .await;
    let body = body_json(&response);
    assert_eq!(response.status(), 200, "{body}");
    assert_eq!(
        (body["buckets"].clone(), body["heatmap"].clone()),
        (json!([]), Value::Null)
    );
}
