//! notify against a real MongoDB-wire server and a test `@connections` server: connection
//! bookkeeping, viewer tokens, subscribe and sync, malformed client messages, and fan-out to 1,000
//! connections with some gone and some throttled, and moments to every viewer of their stream.

use aws_lambda_events::event::kafka::KafkaEvent;
use emostream_local::api_gateway::websocket_event::{connect_event, disconnect_event};
use emostream_local::demo_issuer::{DemoIssuer, rsa_key_pair, sign};
use emostream_tests::closed_port;
use emostream_tests::patience::{assert_bounded, eventually};
use mongodb::bson::doc;
use notify::config::NotifyConfig;
use notify::{BatchSummary, Notify, NotifyError};
use reactions::WindowStateRecord;
use reactions::kafka_event::{RecordPosition, lambda_kafka_record_json};
use reactions::message::VersionedMessage;
use reactions::moments::MomentStatus;
use reactions::mongo::connect;
use serde_json::{Value, json};
use std::time::Duration;

mod common;

use common::*;

#[tokio::test]
async fn connect_and_disconnect_keep_the_connections_collection() {
    let f = Fixture::start(&[]).await;
    let store = f.connections().await;
    assert_eq!(
        f.connect("c-1", &[("stream", "final")]).await["statusCode"],
        200
    );
    assert_eq!(
        f.connect("c-2", &[("stream", "final")]).await["statusCode"],
        200
    );
    assert_eq!(
        f.connect("c-3", &[("stream", "semi")]).await["statusCode"],
        200
    );
    let registered = store.find("c-1").await.unwrap().unwrap();
    assert_eq!(registered.stream, stream("final"));
    assert!((now() - registered.connected_at_ms).abs() < 60_000);
    let mut watching = store.ids_watching(&stream("final")).await.unwrap();
    watching.sort();
    assert_eq!(watching, ["c-1", "c-2"]);

    // Refused connects register nothing.
    let missing = f.connect("c-4", &[]).await;
    assert_eq!(missing["statusCode"], 400);
    assert!(missing["body"].as_str().unwrap().contains("`stream`"));
    assert_eq!(
        f.connect("c-5", &[("stream", "a b")]).await["statusCode"],
        400
    );
    assert_eq!(store.find("c-4").await.unwrap(), None);
    assert_eq!(store.find("c-5").await.unwrap(), None);

    let bye = disconnect_event(&context("c-1"), 1001, "Going away", now(), "r-bye");
    assert_eq!(f.route(bye.clone()).await["statusCode"], 200);
    assert_eq!(store.find("c-1").await.unwrap(), None);
    assert!(store.find("c-2").await.unwrap().is_some());
    // A repeated or unknown disconnect is harmless.
    assert_eq!(f.route(bye).await["statusCode"], 200);

    // The collection is indexed by stream and expires by TTL (indexes are created in the
    // background, off the request path).
    let database = connect(&f.mongo, "notify-test").await.unwrap();
    let collection = database.collection::<mongodb::bson::Document>("connections");
    let indexes = eventually("the connections indexes", || async {
        let names = collection
            .list_index_names()
            .await
            .map_err(|e| e.to_string())?;
        if names.len() >= 3 {
            Ok(names)
        } else {
            Err(format!("{names:?}"))
        }
    })
    .await;
    assert!(
        indexes.contains(&"stream_connection".to_owned()),
        "{indexes:?}"
    );
    assert!(
        indexes.contains(&"expires_at_ttl".to_owned()),
        "{indexes:?}"
    );
    let document = database
        .collection::<mongodb::bson::Document>("connections")
        .find_one(doc! { "_id": "c-2" })
        .await
        .unwrap()
        .unwrap();
    let expires = document
        .get_datetime("expires_at")
        .unwrap()
        .timestamp_millis();
    let ttl = expires - document.get_i64("connected_at_ms").unwrap();
    assert_eq!(ttl, 130 * 60_000);
}

#[tokio::test]
async fn viewer_tokens_gate_connect_when_identity_is_on() {
    let issuer = DemoIssuer::spawn_local("emostream-test", Duration::from_secs(600))
        .await
        .unwrap();
    let f = Fixture::start(&[
        ("JWT_ISSUER", issuer.issuer()),
        ("JWT_AUDIENCE", "emostream-test"),
    ])
    .await;
    let good = issuer.token_for("viewer:ann");
    let mut expired = issuer.claims_for("viewer:ann");
    expired["exp"] = json!(now() / 1_000 - 1);
    let mut other_audience = issuer.claims_for("viewer:ann");
    other_audience["aud"] = json!("someone-else");
    let stranger =
        DemoIssuer::new(issuer.issuer(), "emostream-test", Duration::from_secs(600)).unwrap();
    let forged = stranger.token_for("viewer:ann");
    let (forger_key, _) = rsa_key_pair("whatever").unwrap();
    let forged_same_kid = {
        let header = jsonwebtoken::decode_header(&good).unwrap();
        sign(
            &issuer.claims_for("viewer:ann"),
            &forger_key,
            header.kid.as_deref().unwrap(),
        )
    };

    assert_eq!(
        f.connect("t-0", &[("stream", "final")]).await["statusCode"],
        401
    );
    let refused = [
        ("t-1", issuer.mint(&expired)),
        ("t-2", issuer.mint(&other_audience)),
        ("t-3", forged),
        ("t-4", forged_same_kid),
        ("t-5", "x.y.z".to_owned()),
    ];
    for (id, token) in &refused {
        let answer = f
            .connect(id, &[("stream", "final"), ("token", token)])
            .await;
        assert_eq!(answer["statusCode"], 401, "{id}");
    }
    let store = f.connections().await;
    for id in ["t-0", "t-1", "t-2", "t-3", "t-4", "t-5"] {
        assert_eq!(store.find(id).await.unwrap(), None, "{id}");
    }
    assert_eq!(
        f.connect("t-6", &[("stream", "final"), ("token", &good)])
            .await["statusCode"],
        200
    );
    // The verified connection may switch streams without another token.
    f.send("t-6", r#"{"action":"subscribe","stream":"semi"}"#)
        .await;
    assert_eq!(
        store.find("t-6").await.unwrap().unwrap().stream,
        stream("semi")
    );
}

#[tokio::test]
async fn subscribe_ping_and_sync_answer_on_the_connection() {
    // An hour between snapshots, so the second `sync` below is too soon however slow the machine.
    let f = Fixture::start(&[("SYNC_WINDOWS", "3"), ("SYNC_EVERY_MS", "3600000")]).await;
    // Five windows of stream live-0 (and others) in MongoDB, written by the real adapter.
    let base_ms = 1_700_000_000_000;
    let log: Vec<_> = (0..5)
        .flat_map(|w| emostream_tests::fixtures::reaction_log("t", 0, 40, 2, base_ms + w * 6_000))
        .enumerate()
        .map(|(i, (mut position, reaction))| {
            position.offset = i as i64;
            (position, reaction)
        })
        .collect();
    // The windows lie in 2023: stored with the fixture retention, so the TTL sweep leaves them.
    let windows = store_windows(&f.mongo, &log).await;
    let stored = windows
        .list_windows(&stream("live-0"), None, 100)
        .await
        .unwrap()
        .windows;
    assert!(stored.len() >= 5, "{}", stored.len());
    // Aggregate has found every window but the latest final (see `reactions::event_time`).
    let last_final_end = stored[stored.len() - 2].end_ms;
    windows.mark_final(last_final_end).await.unwrap();

    f.connect("s-1", &[("stream", "other")]).await;
    f.send("s-1", r#"{"action":"subscribe","stream":"live-0"}"#)
        .await;
    f.send("s-1", r#"{"action":"ping"}"#).await;
    f.send("s-1", r#"{"action":"sync"}"#).await;
    f.send("s-1", r#"{"action":"sync","windows":150}"#).await;
    let frames = f.frames("s-1");
    assert_eq!(frames.len(), 4, "{frames:?}");
    assert_eq!(frames[0], json!({"type": "subscribed", "stream": "live-0"}));
    assert_eq!(frames[1]["type"], "pong");
    assert!((frames[1]["at_ms"].as_i64().unwrap() - now()).abs() < 60_000);

    // The default snapshot is the latest SYNC_WINDOWS windows, oldest first, with exact counts.
    let snapshot = &frames[2];
    assert_eq!(snapshot["type"], "snapshot");
    assert_eq!(snapshot["stream"], "live-0");
    assert_eq!(snapshot["window_width_ms"], 2_000);
    let latest: Vec<_> = stored[stored.len() - 3..].to_vec();
    let sent = snapshot["windows"].as_array().unwrap();
    assert_eq!(sent.len(), 3);
    for (frame, window) in sent.iter().zip(&latest) {
        assert_eq!(frame["start_ms"], window.key.start_ms);
        assert_eq!(frame["total"], window.total);
        assert_eq!(
            frame["counts"],
            serde_json::to_value(&window.counts).unwrap()
        );
        assert_eq!(
            frame["final"],
            window.end_ms <= last_final_end,
            "as stored, not by age"
        );
        let state: WindowStateRecord = serde_json::from_value(frame.clone()).unwrap();
        assert_eq!(state.check(), Ok(()));
    }
    // A second `sync` on the same connection is refused until the interval has passed.
    assert_eq!(frames[3]["type"], "error", "{:?}", frames[3]);
    assert_eq!(frames[3]["code"], "sync_too_soon");
    let message = frames[3]["message"].as_str().unwrap();
    assert!(message.contains("3600000 ms"), "{message}");
    // Another connection may ask; asking for more than exist sends them all.
    f.connect("s-2", &[("stream", "live-0")]).await;
    f.send("s-2", r#"{"action":"sync","windows":150}"#).await;
    let frames = f.frames("s-2");
    assert_eq!(frames[0]["windows"].as_array().unwrap().len(), stored.len());
}

#[tokio::test]
async fn malformed_client_messages_get_an_error_frame_and_no_crash() {
    let f = Fixture::start(&[]).await;
    f.connect("m-1", &[("stream", "final")]).await;
    let cases = [
        ("", "empty_message"),
        ("hello", "not_json"),
        ("[]", "not_json"),
        ("{}", "missing_action"),
        (r#"{"action":"dance"}"#, "unknown_action"),
        (
            r#"{"action":"subscribe","stream":"no spaces"}"#,
            "bad_field",
        ),
        (r#"{"action":"sync","windows":-1}"#, "bad_field"),
    ];
    for (body, _) in cases {
        assert_eq!(f.send("m-1", body).await["statusCode"], 200, "{body}");
    }
    let huge = format!(r#"{{"action":"ping","pad":"{}"}}"#, "x".repeat(10_000));
    f.send("m-1", &huge).await;
    let codes: Vec<String> = f
        .frames("m-1")
        .iter()
        .map(|m| {
            assert_eq!(m["type"], "error");
            assert!(!m["message"].as_str().unwrap().is_empty());
            m["code"].as_str().unwrap().to_owned()
        })
        .collect();
    let mut expected: Vec<&str> = cases.iter().map(|(_, code)| *code).collect();
    expected.push("message_too_large");
    assert_eq!(codes, expected);
    // The connection is still registered and still works.
    f.send("m-1", r#"{"action":"ping"}"#).await;
    assert_eq!(f.frames("m-1").last().unwrap()["type"], "pong");
    // A sync from a connection notify never saw is answered, not crashed on.
    f.send("never-connected", r#"{"action":"sync"}"#).await;
    assert_eq!(f.frames("never-connected")[0]["code"], "unknown_connection");
}

#[tokio::test]
async fn fan_out_reaches_every_live_connection_exactly_once_with_the_newest_state() {
    // This test is about who gets what, not about time: the throttle budget and the post
    // timeout are the longest allowed, so no busy machine can run them out (the budget running
    // out is the next test's question).
    let f = Fixture::start(&[
        ("FANOUT_CONCURRENCY", "64"),
        ("THROTTLE_BUDGET_MS", "60000"),
        ("POST_TIMEOUT_MS", "30000"),
    ])
    .await;
    let store = f.connections().await;
    let ids: Vec<String> = (0..1_000).map(|i| format!("conn-{i:04}")).collect();
    for id in &ids {
        store
            .register(id, &stream("final"), a_minute_ago())
            .await
            .unwrap();
    }
    for i in 0..10 {
        store
            .register(&format!("semi-{i}"), &stream("semi"), a_minute_ago())
            .await
            .unwrap();
    }
    let gone: Vec<&String> = ids.iter().step_by(20).collect(); // 50
    let throttled: Vec<&String> = ids.iter().skip(1).step_by(10).collect(); // 100
    for id in &gone {
        f.server.mark_gone(id);
    }
    for id in &throttled {
        f.server.throttle(id, 2);
    }

    let start = 1_800_000_000_000;
    let newest = state("final", start, &[("fire", 6), ("clap", 3)], 30);
    let semi = state("semi", start, &[("joy", 1)], 31);
    let batch = vec![
        state("final", start, &[("fire", 4), ("clap", 1)], 10),
        newest.clone(),
        semi.clone(),
        state("final", start, &[("fire", 5), ("clap", 3)], 20), // arrives late, older
    ];
    let event: KafkaEvent = serde_json::from_value(kafka_event(&batch)).unwrap();
    let summary: BatchSummary = f.notify.handle_batch(&event).await.unwrap();
    assert_eq!(summary.window_states, 4);
    assert_eq!(summary.malformed, 0);
    assert_eq!(summary.fanout.windows, 2);
    assert_eq!(summary.fanout.streams, 2);
    assert_eq!(summary.fanout.posts, 1_010);
    assert_eq!(
        (summary.fanout.deadline_missed, summary.fanout.pending),
        (0, 0)
    );
    assert_eq!(summary.fanout.delivered, 1_010 - 50);
    assert_eq!(summary.fanout.gone, 50);
    assert_eq!(summary.fanout.throttle_retries, 200);
    assert_eq!(
        (summary.fanout.throttled_out, summary.fanout.failed),
        (0, 0)
    );
    assert_eq!(f.server.refusals(), (200, 50));

    // Every live connection received exactly one frame: the newest state of its stream.
    let posts = f.server.posts();
    assert_eq!(posts.len(), 960);
    let mut per_connection: std::collections::HashMap<&str, Vec<Value>> = Default::default();
    for post in &posts {
        per_connection
            .entry(post.connection_id.as_str())
            .or_default()
            .push(without_send_time(
                serde_json::from_slice(&post.body).unwrap(),
            ));
    }
    for id in &ids {
        let frames = per_connection.get(id.as_str());
        if gone.contains(&id) {
            assert!(frames.is_none(), "{id}");
        } else {
            assert_eq!(frames.unwrap(), &vec![window_frame(&newest)], "{id}");
        }
    }
    for i in 0..10 {
        let frames = &per_connection[format!("semi-{i}").as_str()];
        assert_eq!(frames, &vec![window_frame(&semi)]);
    }

    // Exactly the gone connections were forgotten.
    let mut remaining = store.ids_watching(&stream("final")).await.unwrap();
    remaining.sort();
    let expected: Vec<String> = ids
        .iter()
        .filter(|id| !gone.contains(id))
        .cloned()
        .collect();
    assert_eq!(remaining, expected);
}

#[tokio::test]
async fn throttling_past_the_budget_and_other_failures_are_counted_not_fatal() {
    // b-0 is throttled far longer than any budget: without one its post would retry for about
    // 1,000 s (backoff capped at 1 s). The budget is long enough for a busy machine to make
    // several retries and short enough to keep the test quick.
    const BUDGET: Duration = Duration::from_secs(3);
    let budget_ms = BUDGET.as_millis().to_string();
    let f = Fixture::start(&[("THROTTLE_BUDGET_MS", &budget_ms)]).await;
    let store = f.connections().await;
    for i in 0..20 {
        store
            .register(&format!("b-{i}"), &stream("final"), now())
            .await
            .unwrap();
    }
    f.server.throttle("b-0", 1_000);
    let started = std::time::Instant::now();
    let states = [state("final", 0, &[("fire", 1)], 1)];
    let summary: Value = f.route(kafka_event(&states)).await;
    assert_bounded(
        started.elapsed(),
        BUDGET,
        "a fan-out with a post throttled for ever",
    );
    assert_eq!(summary["delivered"], 19);
    assert_eq!(summary["throttled_out"], 1);
    let retries = summary["throttle_retries"].as_u64().unwrap();
    assert!(retries >= 2, "{summary}");
    // Every 429 but the last was followed by a retry; after the last one, nothing more was sent.
    assert_eq!(f.server.refusals(), (retries + 1, 0), "{summary}");
    // A throttled connection is not gone: it stays registered.
    assert!(store.find("b-0").await.unwrap().is_some());

    // A management endpoint that does not answer: every post fails, none is fatal.
    let port = closed_port();
    let endpoint = format!("http://127.0.0.1:{port}/test");
    let mongo = f.mongo.clone();
    let settings = [
        ("MONGODB_URI", mongo.uri.as_str()),
        ("MONGODB_DATABASE", mongo.database.as_str()),
        ("MANAGEMENT_API_ENDPOINT", endpoint.as_str()),
    ];
    let unreachable = Notify::new(
        NotifyConfig::from_settings(&settings).unwrap(),
        &sdk().await,
    )
    .await
    .unwrap();
    let summary = unreachable.handle(kafka_event(&states)).await.unwrap();
    assert_eq!(
        (summary["failed"].as_u64(), summary["delivered"].as_u64()),
        (Some(20), Some(0))
    );
    assert_eq!(
        store.ids_watching(&stream("final")).await.unwrap().len(),
        20
    );
}

#[tokio::test]
async fn posts_stay_within_the_concurrency_bound() {
    let f = Fixture::start(&[("FANOUT_CONCURRENCY", "8")]).await;
    let store = f.connections().await;
    for i in 0..200 {
        store
            .register(&format!("p-{i}"), &stream("final"), now())
            .await
            .unwrap();
    }
    f.server.set_latency(Duration::from_millis(10));
    let summary: Value = f
        .route(kafka_event(&[state("final", 0, &[("fire", 2)], 1)]))
        .await;
    assert_eq!(summary["delivered"], 200);
    let peak = f.server.max_in_flight();
    assert!((2..=8).contains(&peak), "peak in flight {peak}");
}

#[tokio::test]
async fn malformed_records_are_skipped_and_mongodb_outages_fail_the_batch() {
    let f = Fixture::start(&[]).await;
    f.connections()
        .await
        .register("k-1", &stream("final"), now())
        .await
        .unwrap();
    let good = state("final", 0, &[("fire", 2)], 1);
    let mut event = kafka_event(std::slice::from_ref(&good));
    let bad = lambda_kafka_record_json(
        &RecordPosition {
            topic: "emoji-output-topic".into(),
            partition: 1,
            offset: 9,
            generation: 0,
        },
        0,
        None,
        Some(br#"{"v":1,"stream":"final"}"#),
        &[],
    );
    event["records"]["emoji-output-topic-1"] = json!([bad]);
    let summary = f.route(event.clone()).await;
    assert_eq!(
        (
            summary["window_states"].as_u64(),
            summary["malformed"].as_u64()
        ),
        (Some(1), Some(1))
    );
    assert_eq!(f.frames("k-1"), vec![window_frame(&good)]);

    let down = format!(
        "mongodb://127.0.0.1:{}/?serverSelectionTimeoutMS=500",
        closed_port()
    );
    let endpoint = f.server.endpoint();
    let settings = [
        ("MONGODB_URI", down.as_str()),
        ("MANAGEMENT_API_ENDPOINT", endpoint.as_str()),
    ];
    let outage = Notify::new(
        NotifyConfig::from_settings(&settings).unwrap(),
        &sdk().await,
    )
    .await
    .unwrap();
    let error = outage.handle(event).await.unwrap_err();
    assert!(matches!(error, NotifyError::Store(_)), "{error}");
    let connect = outage
        .handle(connect_event(
            &context("k-2"),
            &[("stream".into(), "x".into())],
            &[],
            now(),
            "r",
        ))
        .await;
    assert!(
        connect.is_err(),
        "a connect that cannot be recorded must fail"
    );
}

#[tokio::test]
async fn moments_reach_every_viewer_of_their_stream_once_per_change() {
    let f = Fixture::start(&[("PUSH_INTERVAL_MS", "0")]).await;
    let store = f.connections().await;
    for id in ["live-a", "live-b", "live-c"] {
        store
            .register(id, &stream("live"), a_minute_ago())
            .await
            .unwrap();
    }
    store
        .register("other-a", &stream("other"), a_minute_ago())
        .await
        .unwrap();
    // The moment proposed, then confirmed, in one batch; another stream's; a window state;
    // and a record that is neither.
    let start = 1_800_000_000_000;
    let proposed = moment_record("live", start, MomentStatus::Provisional, 0);
    let confirmed = moment_record("live", start, MomentStatus::Confirmed, start + 4_000);
    let elsewhere = moment_record("other", start, MomentStatus::Withdrawn, start + 2_000);
    let window = state("live", start, &[("fire", 6)], start + 100);
    let event = raw_kafka_event(&[
        ("live", confirmed.encode()),
        ("live", proposed.encode()),
        ("live", window.encode()),
        ("other", elsewhere.encode()),
        ("live", br#"{"v":1,"kind":"mystery"}"#.to_vec()),
    ]);
    let event: KafkaEvent = serde_json::from_value(event).unwrap();
    let summary: BatchSummary = f.notify.handle_batch(&event).await.unwrap();
    assert_eq!(
        (summary.window_states, summary.moments, summary.malformed),
        (1, 3, 1)
    );
    let moment_frames = |id: &str| -> Vec<Value> {
        f.frames(id)
            .into_iter()
            .filter(|frame| frame["type"] == "moment")
            .collect()
    };
    for id in ["live-a", "live-b", "live-c"] {
        let frames = moment_frames(id);
        assert_eq!(frames.len(), 1, "{id}: the newest change only: {frames:?}");
        assert_eq!(
            (
                frames[0]["stream"].as_str(),
                frames[0]["status"].as_str(),
                frames[0]["revision"].as_i64(),
                frames[0]["moment"]["detected_from_ms"].as_i64()
            ),
            (
                Some("live"),
                Some("confirmed"),
                Some(start + 4_000),
                Some(start)
            )
        );
        assert_eq!(f.frames(id).len(), 2, "{id}: and the window");
    }
    let frames = moment_frames("other-a");
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0]["status"], "withdrawn");
}
