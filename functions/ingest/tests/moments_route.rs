//! `GET /streams/{id}/moments` through the ingest handler, against the real MongoDB-wire
//! server: moments as aggregate stores them, listed as JSON (withdrawn ones left out) and as
//! WebVTT chapters counted from the stream's start or a given origin, with clear errors for
//! an unknown stream, a bad origin and chapters of a stream that never went live.

mod common;

use common::*;
use emostream_tests::servers;
use lambda_http::http::header;
use lambda_http::{Body, Request};
use reactions::StreamId;
use reactions::moments::Moment;
use reactions::mongo::{MomentStore, MongoSettings, StreamStore, WriteTimes, connect};
use reactions::stream_registry::StreamChanges;
use std::time::Duration;

fn get(uri: &str, accept: Option<&str>) -> Request {
    let mut builder = lambda_http::http::Request::builder().method("GET").uri(uri);
    if let Some(accept) = accept {
        builder = builder.header(header::ACCEPT, accept);
    }
    builder.body(Body::Empty).unwrap()
}

fn text(response: &lambda_http::Response<Body>) -> String {
    match response.body() {
        Body::Text(text) => text.clone(),
        other => panic!("unexpected body {other:?}"),
    }
}

fn moment(from_ms: i64, emoji: &str, ended: bool) -> Moment {
    Moment {
        detected_from_ms: from_ms,
        start_ms: from_ms - 10_000,
        end_ms: from_ms + 6_000 + 5_000,
        peak_rate: 212.4,
        emoji: emoji.to_owned(),
        ended,
    }
}

#[tokio::test]
async fn moments_are_listed_as_json_and_as_webvtt_chapters() {
    let setup = setup_with(&[]).await;
    let mongo = MongoSettings {
        uri: servers().mongodb_uri.clone(),
        database: setup.database.clone(),
    };
    let database = connect(&mongo, "moments-route-test").await.unwrap();
    let streams = StreamStore::new(&database);
    let m = StreamId::parse("id", "m").unwrap();
    let started = streams.get(&m).await.unwrap().unwrap().started_ms.unwrap();
    let store = MomentStore::new(&database);
    let times = WriteTimes {
        now_ms: now_ms(),
        retention: Duration::from_secs(3_600),
    };
    // One confirmed an hour, a minute and a bit in; one still provisional; one withdrawn.
    let confirmed = moment(started + 3_672_500, "fire", true);
    store
        .confirm(&m, &confirmed, 1, times.now_ms, times)
        .await
        .unwrap();
    let provisional = moment(started + 4_000_000, "clap", false);
    assert!(store.propose(&m, &provisional, times).await.unwrap());
    let withdrawn = moment(started + 3_800_000, "joy", false);
    assert!(store.propose(&m, &withdrawn, times).await.unwrap());
    store
        .withdraw(&m, &[withdrawn.detected_from_ms], 2)
        .await
        .unwrap();

    let response = setup.ingest.handle(get("/streams/m/moments", None)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()[header::VARY], "Accept");
    assert_eq!(
        response.headers()[header::CACHE_CONTROL],
        "public, max-age=5"
    );
    let body = body_json(&response);
    assert_eq!(body["origin_ms"], started);
    let listed = body["moments"].as_array().unwrap();
    assert_eq!(listed.len(), 2, "{body}");
    assert_eq!(
        (
            listed[0]["status"].as_str(),
            listed[0]["emoji"].as_str(),
            listed[0]["glyph"].as_str(),
            listed[0]["start_ms"].as_i64()
        ),
        (
            Some("confirmed"),
            Some("fire"),
            Some("🔥"),
            Some(confirmed.start_ms)
        )
    );
    assert_eq!(listed[1]["status"], "provisional");

    // Chapters: the confirmed moment only, its times from the stream's start.
    let response = setup
        .ingest
        .handle(get("/streams/m/moments", Some("text/vtt")))
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/vtt; charset=utf-8"
    );
    assert_eq!(
        text(&response),
        format!(
            "WEBVTT\n\nmoment-{}\n01:01:02.500 --> 01:01:23.500\n🔥 fire · peak 212 taps/s\n",
            confirmed.detected_from_ms
        )
    );
    // A `<track>` element asks with `Accept: */*`: `format=vtt` says what it wants.
    let response = setup
        .ingest
        .handle(get("/streams/m/moments?format=vtt", Some("*/*")))
        .await;
    assert!(
        text(&response).starts_with("WEBVTT\n\nmoment-"),
        "{}",
        text(&response)
    );
    // From a recording that started 61 minutes after the stream did.
    let origin = started + 3_660_000;
    let response = setup
        .ingest
        .handle(get(
            &format!("/streams/m/moments?origin={origin}"),
            Some("text/html, text/vtt;q=0.9"),
        ))
        .await;
    assert!(
        text(&response).contains("\n00:00:02.500 --> 00:00:23.500\n"),
        "{}",
        text(&response)
    );
}

#[tokio::test]
async fn bad_moment_requests_get_clear_errors() {
    let setup = setup_with(&[]).await;
    let cases = [
        ("/streams/nobody/moments", None, 404, "unknown_stream"),
        (
            "/streams/m/moments?origin=yesterday",
            None,
            400,
            "invalid_reactions",
        ),
        ("/streams/m/moments?since=5", None, 400, "invalid_reactions"),
        ("/streams/bad%20id/moments", None, 400, "invalid_reactions"),
    ];
    for (uri, accept, status, code) in cases {
        let response = setup.ingest.handle(get(uri, accept)).await;
        let body = body_json(&response);
        assert_eq!(
            (response.status().as_u16(), body["error"].as_str()),
            (status, Some(code)),
            "{uri}: {body}"
        );
    }
    // A stream registered but never started: JSON has no origin, chapters need one.
    let mongo = MongoSettings {
        uri: servers().mongodb_uri.clone(),
        database: setup.database.clone(),
    };
    let database = connect(&mongo, "moments-route-test").await.unwrap();
    let scheduled = StreamId::parse("id", "later").unwrap();
    let changes = StreamChanges {
        title: Some("Later".into()),
        ..StreamChanges::default()
    };
    let catalogue = reactions::EmojiCatalogue::parse("fire=🔥").unwrap();
    StreamStore::new(&database)
        .put(&scheduled, &changes, &catalogue, now_ms())
        .await
        .unwrap();
    let response = setup
        .ingest
        .handle(get("/streams/later/moments", None))
        .await;
    assert_eq!(response.status(), 200);
    let body = body_json(&response);
    assert_eq!(
        (body["origin_ms"].clone(), body["moments"].clone()),
        (serde_json::Value::Null, serde_json::json!([]))
    );
    let response = setup
        .ingest
        .handle(get("/streams/later/moments", Some("text/vtt")))
        .await;
    let body = body_json(&response);
    assert_eq!(
        (response.status().as_u16(), body["error"].as_str()),
        (409, Some("no_origin"))
    );
    let response = setup
        .ingest
        .handle(get("/streams/later/moments?origin=0", Some("text/vtt")))
        .await;
    assert_eq!(
        (response.status().as_u16(), text(&response)),
        (200, "WEBVTT\n".to_owned())
    );
    let response = setup
        .ingest
        .handle(request("POST", "/streams/m/moments", None, Body::Empty))
        .await;
    assert_eq!(response.status(), 405);
}
