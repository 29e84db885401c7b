//! The ingest handler against the real Kafka-wire broker and MongoDB-wire server: every route,
//! every kind of bad input, CORS, and what happens while the broker or MongoDB is down.

use emostream_local::network::FaultProxy;
use emostream_tests::broker_process::BrokerProcess;
use emostream_tests::patience::{PATIENCE, assert_bounded};
use emostream_tests::topic_reader::{key_text, read_records, record_count};
use emostream_tests::{closed_port, servers};
use ingest::Ingest;
use lambda_http::http::header;
use lambda_http::{Body, Request};
use rdkafka::Message;
use reactions::kafka_event::RecordPosition;
use reactions::message::{ReactionRecord, VersionedMessage};
use reactions::mongo::REQUEST_READ_LIMIT;
use reactions::mongo::{WindowStore, WriteTimes, connect};
use reactions::window_delta::window_deltas;
use reactions::{EmojiName, Reaction, StreamId, StreamShards, UserId, WindowWidth};
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

mod common;
use common::*;

#[tokio::test]
async fn accepted_reactions_are_produced_keyed_by_stream_and_shard_with_server_time() {
    let setup = setup_with(&[("STREAM_SHARDS", "3")]).await;
    let shards = StreamShards::new(3);
    let before = now_ms();
    let one = setup
        .ingest
        .handle(post_json(
            r#"{"stream_id":"final-1","user_id":"u0","emoji":"🔥","count":3}"#,
        ))
        .await;
    assert_eq!(one.status(), 202);
    assert_eq!(body_json(&one), json!({"accepted": 1}));

    let items: Vec<Value> = (0..20)
        .map(|i| json!({"stream_id": format!("final-{}", i % 3), "user_id": format!("u{i}"), "emoji": "clap", "count": 1 + i % 4}))
        .collect();
    let batch = setup
        .ingest
        .handle(post_json(&json!({ "reactions": items }).to_string()))
        .await;
    assert_eq!(batch.status(), 202);
    assert_eq!(body_json(&batch), json!({"accepted": 20}));
    let after = now_ms();

    let records = read_records(&setup.kafka, &setup.topic, 21, PATIENCE).await;
    let mut taps = 0;
    let mut partition_of_key = HashMap::new();
    let mut keys_of_stream: HashMap<String, BTreeSet<String>> = HashMap::new();
    for message in &records {
        let record = ReactionRecord::decode(message.payload().unwrap()).unwrap();
        assert_eq!(key_text(message), shards.key(&record.stream, &record.user));
        keys_of_stream
            .entry(record.stream.as_str().to_owned())
            .or_default()
            .insert(key_text(message));
        assert!(
            (before..=after).contains(&record.at_ms),
            "server time stamps"
        );
        // With the topic's 3 partitions known, shard k of a stream goes to the k-th partition
        // after the stream's own.
        assert_eq!(
            Some(message.partition()),
            shards.partition(&record.stream, &record.user, Some(3))
        );
        let partition = *partition_of_key
            .entry(key_text(message))
            .or_insert(message.partition());
        assert_eq!(partition, message.partition(), "one partition per key");
        taps += u64::from(record.count);
    }
    // Seven viewers of each stream spread over more than one shard, each shard on a partition
    // of its own.
    assert!(
        keys_of_stream.values().all(|keys| keys.len() > 1),
        "{keys_of_stream:?}"
    );
    for keys in keys_of_stream.values() {
        let partitions: BTreeSet<i32> = keys.iter().map(|k| partition_of_key[k]).collect();
        assert_eq!(partitions.len(), keys.len(), "{keys:?} share a partition");
    }
    let expected: u64 = 3 + (0..20).map(|i| 1 + i % 4).sum::<u64>();
    assert_eq!(taps, expected);
    assert_eq!(record_count(&setup.kafka, &setup.topic), 21);
}

#[tokio::test]
async fn bad_input_gets_a_precise_4xx_and_nothing_reaches_kafka() {
    let setup = setup_with(&[
        ("MAX_BATCH_SIZE", "5"),
        ("MAX_BODY_BYTES", "2048"),
        ("MAX_REACTION_COUNT", "50"),
    ])
    .await;
    let ok = r#"{"stream_id":"m","user_id":"u","emoji":"fire"}"#;
    // (content type, body, status, error code, first field named)
    type Case<'a> = (Option<&'a str>, String, u16, &'a str, Option<&'a str>);
    let cases: Vec<Case> = vec![
        (
            Some("application/json"),
            "{not json".into(),
            400,
            "invalid_json",
            None,
        ),
        (
            Some("application/json"),
            String::new(),
            400,
            "invalid_json",
            None,
        ),
        (
            Some("text/plain"),
            ok.into(),
            415,
            "unsupported_media_type",
            None,
        ),
        (None, ok.into(), 415, "unsupported_media_type", None),
        (
            Some("application/json"),
            r#"{"stream_id":"m","user_id":"u","emoji":"🦄"}"#.into(),
            400,
            "invalid_reactions",
            Some("emoji"),
        ),
        (
            Some("application/json"),
            r#"{"stream_id":"m/1","user_id":"u","emoji":"fire"}"#.into(),
            400,
            "invalid_reactions",
            Some("stream_id"),
        ),
        (
            Some("application/json"),
            format!(
                r#"{{"stream_id":"m","user_id":"{}","emoji":"fire"}}"#,
                "u".repeat(129)
            ),
            400,
            "invalid_reactions",
            Some("user_id"),
        ),
        (
            Some("application/json"),
            r#"{"stream_id":"m","user_id":"u","emoji":"fire","count":0}"#.into(),
            400,
            "invalid_reactions",
            Some("count"),
        ),
        (
            Some("application/json"),
            r#"{"stream_id":"m","user_id":"u","emoji":"fire","count":51}"#.into(),
            400,
            "invalid_reactions",
            Some("count"),
        ),
        (
            Some("application/json"),
            r#"{"stream_id":"m","user_id":"u","emoji":"fire","count":"2"}"#.into(),
            400,
            "invalid_reactions",
            Some("count"),
        ),
        (
            Some("application/json"),
            r#"{"reactions":[]}"#.into(),
            400,
            "invalid_reactions",
            Some("reactions"),
        ),
        (
            Some("application/json"),
            format!(r#"{{"reactions":[{ok},{ok},{ok},{ok},{ok},{ok}]}}"#),
            400,
            "invalid_reactions",
            Some("reactions"),
        ),
        (
            Some("application/json"),
            format!(
                r#"{{"reactions":[{ok},{{"stream_id":"m","user_id":"u","emoji":"nope"}},{ok}]}}"#
            ),
            400,
            "invalid_reactions",
            Some("reactions[1].emoji"),
        ),
        (
            Some("application/json"),
            format!(r#"{{"reactions":["{}"]}}"#, "x".repeat(3000)),
            413,
            "body_too_large",
            None,
        ),
    ];
    for (content_type, body, status, code, field) in cases {
        let response = setup
            .ingest
            .handle(request("POST", "/reactions", content_type, body.clone()))
            .await;
        let json = body_json(&response);
        assert_eq!(response.status().as_u16(), status, "{body}: {json}");
        assert_eq!(json["error"], code, "{body}");
        assert!(json["message"].as_str().is_some_and(|m| !m.is_empty()));
        if let Some(field) = field {
            assert_eq!(json["errors"][0]["field"], field, "{body}: {json}");
            assert!(json["errors"][0]["rule"].is_string());
        }
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    }
    // A batch with two bad items names both.
    let response = setup
        .ingest
        .handle(post_json(&format!(r#"{{"reactions":[{{"stream_id":"","user_id":"u","emoji":"fire"}},{ok},{{"stream_id":"m","user_id":"u","emoji":"fire","count":-4}}]}}"#)))
        .await;
    let fields: Vec<Value> = body_json(&response)["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].clone())
        .collect();
    assert_eq!(
        fields,
        [json!("reactions[0].stream_id"), json!("reactions[2].count")]
    );
    assert_eq!(
        record_count(&setup.kafka, &setup.topic),
        0,
        "nothing invalid reached Kafka"
    );
}

#[tokio::test]
async fn catalogue_health_and_unknown_routes() {
    let setup = setup_with(&[("EMOJI_CATALOGUE", "goal=⚽,six=6️⃣")]).await;
    let emojis = setup
        .ingest
        .handle(request("GET", "/emojis", None, Body::Empty))
        .await;
    assert_eq!(emojis.status(), 200);
    assert_eq!(
        body_json(&emojis),
        json!({"emojis": [{"name": "goal", "glyph": "⚽"}, {"name": "six", "glyph": "6️⃣"}]})
    );
    let routes = [
        ("GET", "/health", 200, json!("ok"), "status"),
        ("GET", "/nope", 404, json!("not_found"), "error"),
        (
            "GET",
            "/reactions",
            405,
            json!("method_not_allowed"),
            "error",
        ),
        (
            "DELETE",
            "/emojis",
            405,
            json!("method_not_allowed"),
            "error",
        ),
    ];
    for (method, path, status, expected, field) in routes {
        let response = setup
            .ingest
            .handle(request(method, path, None, Body::Empty))
            .await;
        assert_eq!(response.status().as_u16(), status, "{method} {path}");
        assert_eq!(body_json(&response)[field], expected, "{method} {path}");
    }
}

#[tokio::test]
async fn stored_windows_are_served_with_since_and_limit() {
    let setup = setup_with(&[]).await;
    let database = connect(
        &reactions::mongo::MongoSettings {
            uri: servers().mongodb_uri.clone(),
            database: setup.database.clone(),
        },
        "t",
    )
    .await
    .unwrap();
    let store = WindowStore::new(&database);
    store.ensure_indexes().await.unwrap();
    let records: Vec<(RecordPosition, Reaction)> = (0..5_i64)
        .map(|i| {
            let position = RecordPosition {
                topic: "t".into(),
                partition: 0,
                offset: i,
                generation: 0,
            };
            let reaction = Reaction {
                stream: StreamId::parse("s", "replay-1").unwrap(),
                user: UserId::parse("u", "u").unwrap(),
                emoji: EmojiName::parse("fire").unwrap(),
                count: (i + 1) as u32,
                at_ms: i * 2_000,
                key: None,
                fair_use_limit: None,
            };
            (position, reaction)
        })
        .collect();
    let deltas = window_deltas(records.iter().map(|(p, r)| (p, r)), WindowWidth::DEFAULT);
    let times = WriteTimes {
        now_ms: 0,
        retention: emostream_tests::fixtures::FIXTURE_RETENTION,
    };
    store
        .apply_batch(&deltas, WindowWidth::DEFAULT, times)
        .await
        .unwrap();
    // Aggregate found every window up to the one ending at 8000 final.
    store.mark_final(8_000).await.unwrap();

    let get = |uri: &str| setup.ingest.handle(request("GET", uri, None, Body::Empty));
    let latest = body_json(&get("/streams/replay-1/windows?limit=2").await);
    assert_eq!(latest["window_width_ms"], 2_000);
    let starts: Vec<i64> = latest["windows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["start_ms"].as_i64().unwrap())
        .collect();
    assert_eq!(starts, [6_000, 8_000], "latest windows, oldest first");
    assert_eq!(latest["windows"][0]["final"], true);
    assert_eq!(
        latest["windows"][1],
        json!({"start_ms": 8000, "end_ms": 10000, "counts": {"fire": 5}, "total": 5, "final": false})
    );

    let since = body_json(&get("/streams/replay-1/windows?since=2000&limit=2").await);
    let starts: Vec<i64> = since["windows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["start_ms"].as_i64().unwrap())
        .collect();
    assert_eq!(starts, [2_000, 4_000]);
    let empty = body_json(&get("/streams/nobody/windows").await);
    assert_eq!(empty["windows"], json!([]));
    for bad in [
        "/streams/a%20b/windows",
        "/streams/replay-1/windows?limit=0",
        "/streams/replay-1/windows?since=x",
    ] {
        let response = get(bad).await;
        assert_eq!(response.status(), 400, "{bad}");
    }
    database.drop().await.unwrap();
}

#[tokio::test]
async fn cors_follows_the_allowed_origins() {
    let setup = setup_with(&[("ALLOWED_ORIGINS", "https://watch.example")]).await;
    let with_origin = |method: &str, origin: &str| {
        let mut r = request(
            method,
            "/reactions",
            Some("application/json"),
            r#"{"stream_id":"m","user_id":"u","emoji":"fire"}"#,
        );
        r.headers_mut()
            .insert(header::ORIGIN, origin.parse().unwrap());
        r
    };
    let preflight = setup
        .ingest
        .handle(with_origin("OPTIONS", "https://watch.example"))
        .await;
    assert_eq!(preflight.status(), 204);
    assert_eq!(
        preflight.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://watch.example"
    );
    assert!(
        preflight.headers()[header::ACCESS_CONTROL_ALLOW_METHODS]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    let allowed = setup
        .ingest
        .handle(with_origin("POST", "https://watch.example"))
        .await;
    assert_eq!(allowed.status(), 202);
    assert_eq!(
        allowed.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://watch.example"
    );
    let foreign = setup
        .ingest
        .handle(with_origin("POST", "https://other.example"))
        .await;
    assert!(
        !foreign
            .headers()
            .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN)
    );
}

/// Posts reactions from `prefix-0`, `prefix-1`, ... until one is acknowledged, allowing only 503
/// in between, and returns the acknowledged user.
async fn accept_within(
    ingest: &Ingest,
    post: &impl Fn(String) -> Request,
    prefix: &str,
    limit: Duration,
) -> String {
    let deadline = Instant::now() + limit;
    for attempt in 0.. {
        let user = format!("{prefix}-{attempt}");
        let status = ingest.handle(post(user.clone())).await.status().as_u16();
        if status == 202 {
            return user;
        }
        assert_eq!(status, 503, "only 503 or 202 while the broker comes up");
        assert!(
            Instant::now() < deadline,
            "no 202 within {limit:?} ({prefix})"
        );
    }
    unreachable!("the attempt counter is unbounded")
}

#[tokio::test]
async fn a_down_broker_gives_503_quickly_and_recovery_gives_202() {
    const PRODUCE_TIMEOUT: Duration = Duration::from_secs(1);
    reactions::telemetry::init_json_logs();
    let mut broker = BrokerProcess::start();
    let Setup {
        ingest,
        topic,
        kafka,
        ..
    } = setup_on(
        &broker.address(),
        &servers().mongodb_uri,
        &[(
            "PRODUCE_TIMEOUT_MS",
            &PRODUCE_TIMEOUT.as_millis().to_string(),
        )],
    )
    .await;
    let post = |user: String| {
        post_json(&json!({"stream_id": "m", "user_id": user, "emoji": "fire"}).to_string())
    };

    // A freshly started broker may need more than the 1 s produce timeout for the producer's
    // first idempotent set-up, so the first acknowledgement is awaited the same way as after
    // the restart below.
    let mut acknowledged = Vec::new();
    let first = accept_within(&ingest, &post, "before", PATIENCE).await;
    acknowledged.push(first);

    broker.stop();
    let started = Instant::now();
    let down = ingest.handle(post("while-down".into())).await;
    let elapsed = started.elapsed();
    assert_eq!(down.status(), 503);
    assert_eq!(down.headers()[header::RETRY_AFTER], "1");
    assert_eq!(body_json(&down)["error"], "unavailable");
    assert_bounded(elapsed, PRODUCE_TIMEOUT, "a 503 while the broker is down");

    broker.restart();
    let after = accept_within(&ingest, &post, "after", PATIENCE).await;
    acknowledged.push(after);
    // Every acknowledged reaction is in the log, the first one having survived the crash.
    let total = record_count(&kafka, &topic) as usize;
    let records = read_records(&kafka, &topic, total, PATIENCE).await;
    let users: Vec<String> = records
        .iter()
        .map(|m| {
            ReactionRecord::decode(m.payload().unwrap())
                .unwrap()
                .user
                .to_string()
        })
        .collect();
    for user in &acknowledged {
        assert!(
            users.contains(user),
            "{user} was acknowledged but is missing from {users:?}"
        );
    }
}

#[tokio::test]
async fn a_down_mongodb_gives_a_quick_503_for_windows_and_the_registry() {
    let dead_mongo = format!(
        "mongodb://127.0.0.1:{}/?directConnection=true",
        closed_port()
    );
    let Setup {
        ingest,
        topic,
        kafka,
        ..
    } = setup_on(&servers().kafka_brokers, &dead_mongo, &[]).await;
    let requests = [
        request("GET", "/streams/m/windows", None, Body::Empty),
        request("GET", "/streams/m", None, Body::Empty),
        // A stream this container has not read yet cannot be vetted: not acknowledged.
        post_json(r#"{"stream_id":"m","user_id":"u","emoji":"fire"}"#),
    ];
    // The adapter's server selection timeout is 3 s (the driver's default would be 30 s).
    each_a_quick_503(
        &ingest,
        requests,
        Duration::from_secs(3),
        "a registry or windows read while MongoDB is down",
    )
    .await;
    assert_eq!(record_count(&kafka, &topic), 0);
}

/// Every request answered 503 with `Retry-After`, each within `bound`.
async fn each_a_quick_503(
    ingest: &Ingest,
    requests: impl IntoIterator<Item = Request>,
    bound: Duration,
    what: &str,
) {
    for request in requests {
        let path = request.uri().path().to_owned();
        let started = Instant::now();
        let response = ingest.handle(request).await;
        assert_eq!(response.status(), 503, "{path}");
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        assert_bounded(started.elapsed(), bound, what);
    }
}

#[tokio::test]
async fn a_mongodb_that_stops_answering_mid_connection_gives_503_within_the_read_limit() {
    // The registry and the windows behind a proxy that goes silent once the container's
    // connections are open: no error, no answer (a hung server, a failover in progress).
    let (proxy, uri) = FaultProxy::for_mongodb(&servers().mongodb_uri)
        .await
        .unwrap();
    let Setup {
        ingest,
        topic,
        kafka,
        ..
    } = setup_on(&servers().kafka_brokers, &uri, &[]).await;
    // Connected and answering.
    let warm = ingest
        .handle(request("GET", "/streams", None, Body::Empty))
        .await;
    assert_eq!(warm.status(), 200);

    proxy.stall(true);
    let requests = [
        request("GET", "/streams/m/windows", None, Body::Empty),
        request("GET", "/streams/m", None, Body::Empty),
        request("GET", "/streams", None, Body::Empty),
        post_json(r#"{"stream_id":"m","user_id":"u","emoji":"fire"}"#),
    ];
    each_a_quick_503(
        &ingest,
        requests,
        REQUEST_READ_LIMIT,
        "a read from a MongoDB that stopped answering",
    )
    .await;
    assert_eq!(record_count(&kafka, &topic), 0);
}
