//! The whole pipeline through the local stack: reactions posted over HTTP reach browsers over a
//! real WebSocket with exact counts; a function instance killed mid-batch leaves counts exact;
//! and the WebSocket API behaves like API Gateway's (refused connects, `@connections`, limits).

use emostream_local::api_gateway::websocket::Limits;
use emostream_tests::http_client::JsonClient;
use emostream_tests::live_counts::{keep_newest, keep_pushed, post_reactions, sum_windows};
use emostream_tests::local_stack::{TestStack, WsClient};
use emostream_tests::patience::PATIENCE;
use futures::TryStreamExt;
use reactions::StreamId;
use reactions::mongo::{ConnectionStore, MongoSettings, WindowStore, connect};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

async fn stored_sums(mongo: &MongoSettings, stream: &str) -> BTreeMap<String, u64> {
    let database = connect(mongo, "e2e-check").await.unwrap();
    let windows = WindowStore::new(&database)
        .list_windows(&StreamId::parse("s", stream).unwrap(), Some(0), 500)
        .await
        .unwrap()
        .windows;
    let mut sums = BTreeMap::new();
    for window in windows {
        for (emoji, n) in window.counts {
            *sums.entry(emoji.as_str().to_owned()).or_insert(0) += n;
        }
    }
    sums
}

#[tokio::test]
async fn reactions_posted_over_http_reach_websocket_clients_exactly() {
    let test = TestStack::start("e2e", |_| {}).await;
    let api = test.stack.http_url.clone();
    let client = JsonClient::default();
    let (status, health) = client.get(&format!("{api}/health")).await;
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));
    let (status, missing) = client.get(&format!("{api}/no-such-route")).await;
    assert_eq!((status, missing), (404, json!({"message": "Not Found"})));

    // Connects the function refuses are refused at the handshake.
    assert_eq!(
        WsClient::connect(test.stack.websocket_url.as_deref().unwrap())
            .await
            .err(),
        Some(400)
    );
    assert_eq!(
        WsClient::connect(&test.websocket_url("bad%20id"))
            .await
            .err(),
        Some(400)
    );

    let mut watcher = WsClient::connect(&test.websocket_url("final"))
        .await
        .unwrap();
    let mut bystander = WsClient::connect(&test.websocket_url("semi"))
        .await
        .unwrap();
    watcher.send(r#"{"action":"ping"}"#).await;
    let pong = watcher.next_json(PATIENCE).await.unwrap();
    assert_eq!(pong["type"], "pong");

    let expected = post_reactions(&client, &api, "final", 20, 25).await;
    let mut newest = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while sum_windows(&newest) != expected {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let frame = watcher.next_json(remaining).await.unwrap_or_else(|e| {
            panic!(
                "no exact counts on the WebSocket ({e:?}): saw {:?}, expected {expected:?}",
                sum_windows(&newest)
            )
        });
        keep_pushed(&mut newest, frame, "final");
    }
    // Nothing beyond the exact counts arrives later (pushes come at most once a second).
    while let Ok(frame) = watcher.next_json(Duration::from_millis(1_500)).await {
        keep_pushed(&mut newest, frame, "final");
    }
    assert_eq!(sum_windows(&newest), expected);
    assert_eq!(stored_sums(&test.mongo(), "final").await, expected);
    // The other stream's watcher saw none of it.
    assert_eq!(
        bystander.next_json(Duration::from_millis(300)).await.err(),
        Some(None)
    );

    // A late joiner gets the history at once.
    let mut late = WsClient::connect(&test.websocket_url("final"))
        .await
        .unwrap();
    late.send(r#"{"action":"sync"}"#).await;
    let snapshot = late.next_json(PATIENCE).await.unwrap();
    assert_eq!(snapshot["type"], "snapshot");
    let mut from_snapshot = BTreeMap::new();
    for state in snapshot["windows"].as_array().unwrap() {
        keep_newest(&mut from_snapshot, state.clone());
    }
    assert_eq!(sum_windows(&from_snapshot), expected);
    test.stack.stop().await;
}

#[tokio::test]
async fn a_function_killed_mid_batch_leaves_counts_exact() {
    // Small batches make many invocations, so kills land inside them. The stream is spread over
    // the three partitions, whose batches run concurrently and write the same windows.
    let test = TestStack::start("crash", |options| {
        options
            .local
            .parameters
            .insert("BatchSize".into(), "40".into());
        options
            .local
            .parameters
            .insert("StreamShards".into(), "3".into());
        options.concurrency = 3;
    })
    .await;
    let api = test.stack.http_url.clone();
    let aggregate = test.stack.function("AggregateFunction").unwrap().clone();
    let mapping = test
        .stack
        .mappings
        .iter()
        .find(|m| m.mapping.function == "AggregateFunction")
        .unwrap();
    // Reactions flow until the kills have failed enough batches (however long that takes on
    // this machine), so there is always a batch to kill.
    let enough_kills = Arc::new(AtomicBool::new(false));
    let posting = tokio::spawn({
        let api = api.clone();
        let enough_kills = Arc::clone(&enough_kills);
        async move {
            let client = JsonClient::default();
            let mut expected = BTreeMap::new();
            let mut round = 0;
            while round < 60 || !enough_kills.load(Ordering::Relaxed) {
                let posted = post_reactions(&client, &api, "crash", 1, 20).await;
                for (emoji, n) in posted {
                    *expected.entry(emoji).or_insert(0) += n;
                }
                round += 1;
            }
            expected
        }
    });
    let mut kills: usize = 0;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let concurrent = || mapping.stats.peak_in_flight.load(Ordering::Relaxed);
    while mapping.stats.failed_invocations.load(Ordering::Relaxed) < 2 || concurrent() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "within {PATIENCE:?}, {kills} kills failed {} batches (need 2) and at most {} \
             partitions were invoked at once (need 2)",
            mapping.stats.failed_invocations.load(Ordering::Relaxed),
            concurrent()
        );
        if aggregate.stats.in_flight.load(Ordering::Relaxed) > 0 {
            // Let the batch get into its MongoDB write, then crash the instance.
            tokio::time::sleep(Duration::from_millis(15 * (kills as u64 % 6 + 1))).await;
            kills += aggregate.kill_instances();
            tokio::time::sleep(Duration::from_millis(150)).await;
        } else {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    enough_kills.store(true, Ordering::Relaxed);
    let expected = posting.await.unwrap();
    let failed = mapping.stats.failed_invocations.load(Ordering::Relaxed);
    assert!(kills >= 1, "no instance was killed");
    assert!(failed >= 1, "no batch failed, so nothing was retried");
    let mongo = test.mongo();
    let mut stored = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while tokio::time::Instant::now() < deadline {
        stored = stored_sums(&mongo, "crash").await;
        if stored == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(stored, expected, "counts after {kills} kills");
    // Still exact a moment later: no retried batch counted twice after the check.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(stored_sums(&mongo, "crash").await, expected);
    // The windows were written from several partitions.
    let database = connect(&mongo, "e2e-check").await.unwrap();
    let partitions = database
        .collection::<mongodb::bson::Document>("windows")
        .find(mongodb::bson::doc! { "stream": "crash" })
        .await
        .unwrap()
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .iter()
        .map(|w| w.get_document("offsets").map_or(0, |o| o.len()))
        .max()
        .unwrap_or(0);
    assert!(partitions >= 2, "no window was written from two partitions");
    eprintln!(
        "{kills} kills, {failed} failed invocations retried, {} cold starts",
        aggregate.stats.cold_starts.load(Ordering::Relaxed)
    );
    test.stack.stop().await;
}

#[tokio::test]
async fn the_websocket_api_behaves_like_api_gateway() {
    let test = TestStack::start("wsapi", |_| {}).await;
    let websocket = test.stack.websocket.clone().unwrap();
    let manager = test.connections();

    // Unsigned calls are refused: the management API takes only IAM-signed ones.
    let (status, body) = JsonClient::default()
        .post(
            &format!(
                "{}/@connections/x",
                test.stack.management_endpoint.as_deref().unwrap()
            ),
            &json!({}),
        )
        .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (403, Some("Missing Authentication Token"))
    );

    // Unknown connections are gone.
    let unknown = test.connection_path("AAAAAAAAAAAAAAA=");
    let (status, _) = manager
        .send("POST", &unknown, Some(&json!({})))
        .await
        .unwrap();
    assert_eq!(status, 410);
    let (status, _) = manager.send("DELETE", &unknown, None).await.unwrap();
    assert_eq!(status, 410);

    let mut browser = WsClient::connect(&test.websocket_url("mgmt"))
        .await
        .unwrap();
    let ids = websocket.connection_ids();
    assert_eq!(ids.len(), 1);
    let id = &ids[0];
    let url = test.connection_path(id);
    let (status, _) = manager
        .send("POST", &url, Some(&json!({"hello": "browser"})))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        browser.next_json(PATIENCE).await.unwrap(),
        json!({"hello": "browser"})
    );
    let (status, described) = manager.send("GET", &url, None).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(described["Identity"]["SourceIp"], "127.0.0.1");
    assert!(described["ConnectedAt"].as_str().unwrap().ends_with('Z'));

    // notify recorded the connection at $connect; DELETE closes it and $disconnect forgets it.
    let mongo = test.mongo();
    let database = connect(&mongo, "e2e-check").await.unwrap();
    let connections = ConnectionStore::new(&database, Duration::from_secs(7_800));
    assert!(connections.find(id).await.unwrap().is_some());
    let (status, _) = manager.send("DELETE", &url, None).await.unwrap();
    assert_eq!(status, 204);
    assert_eq!(browser.next_json(PATIENCE).await.err(), Some(Some(1000)));
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while connections.find(id).await.unwrap().is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "$disconnect did not run"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _) = manager.send("POST", &url, Some(&json!({}))).await.unwrap();
    assert_eq!(status, 410);

    // A malformed message is answered by the function, not dropped.
    let mut chatty = WsClient::connect(&test.websocket_url("mgmt"))
        .await
        .unwrap();
    chatty.send("not json").await;
    let answer = chatty.next_json(PATIENCE).await.unwrap();
    assert_eq!(answer["code"], "not_json");
    test.stack.stop().await;
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_idle_limit_and_an_active_one_is_not() {
    // A short idle limit (API Gateway's is 10 minutes), still several times the gap between the
    // active connection's messages, so a busy machine cannot make that one look idle.
    const IDLE: Duration = Duration::from_secs(5);
    const GAP: Duration = Duration::from_secs(1);
    let test = TestStack::start("idle", |options| {
        options.limits = Limits {
            idle: IDLE,
            ..Limits::default()
        };
    })
    .await;
    let connecting = tokio::time::Instant::now();
    let mut silent = WsClient::connect(&test.websocket_url("idle"))
        .await
        .unwrap();
    let mut chatty = WsClient::connect(&test.websocket_url("idle"))
        .await
        .unwrap();
    let opened = tokio::time::Instant::now();
    let mut pings = 0;
    // Active for longer than the idle limit.
    while opened.elapsed() < IDLE + 2 * GAP {
        tokio::time::sleep(GAP).await;
        chatty.send(r#"{"action":"ping"}"#).await;
        pings += 1;
    }
    assert_eq!(silent.next_json(PATIENCE).await.err(), Some(Some(1001)));
    assert!(connecting.elapsed() >= IDLE, "closed before the idle limit");
    for pong in 0..pings {
        let frame = chatty
            .next_json(PATIENCE)
            .await
            .unwrap_or_else(|e| panic!("pong {pong} of {pings}: {e:?}"));
        assert_eq!(frame["type"], "pong");
    }
    // Still open: it answers.
    chatty.send(r#"{"action":"ping"}"#).await;
    assert_eq!(chatty.next_json(PATIENCE).await.unwrap()["type"], "pong");
    test.stack.stop().await;
}
