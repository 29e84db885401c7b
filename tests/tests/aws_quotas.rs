//! The local stack enforces API Gateway's account quotas like AWS: one request throttle shared
//! by HTTP API requests, WebSocket messages and `@connections` calls (429, with AWS's bodies),
//! a new-connection rate (429 at the handshake), and a latency on every `@connections` call.
//! The quotas here are tiny so that each is reached in a few requests; every loop stops at the
//! first refusal, so a slow machine (which refills the bucket between requests) only makes a
//! loop longer, never the test wrong.

use emostream_local::api_gateway::quotas::QuotaSettings;
use emostream_tests::http_client::JsonClient;
use emostream_tests::local_stack::{TestStack, WsClient};
use serde_json::json;
use std::time::{Duration, Instant};

/// Requests sent before a test gives up on seeing a refusal: at one token a second, a refusal
/// comes within the first few unless each request took more than a second.
const TRIES: usize = 200;

/// A connection id in API Gateway's format that no connection has.
const UNKNOWN: &str = "AAAAAAAAAAAAAAA=";

fn tiny(settings: QuotaSettings) -> impl FnOnce(&mut emostream_local::stack::StackOptions) {
    move |options| options.quotas = settings
}

#[tokio::test]
async fn the_account_throttle_is_shared_by_http_websocket_and_connections_calls() {
    let test = TestStack::start(
        "quota",
        tiny(QuotaSettings {
            account_rps: 1,
            account_burst: 3,
            ..QuotaSettings::default()
        }),
    )
    .await;
    let client = JsonClient::default();
    let health = format!("{}/health", test.stack.http_url);

    // HTTP API: the burst, then 429 with API Gateway's body.
    let mut admitted = 0;
    let refusal = loop {
        let (status, body) = client.get(&health).await;
        if status != 200 {
            break (status, body);
        }
        admitted += 1;
        assert!(admitted < TRIES, "never throttled");
    };
    assert_eq!(refusal, (429, json!({"message": "Too Many Requests"})));
    assert!(admitted >= 3, "the burst of 3 was not granted: {admitted}");

    // @connections: the same account, so also throttled, as LimitExceededException.
    let manager = test.connections();
    let url = test.connection_path(UNKNOWN);
    let mut statuses = Vec::new();
    for _ in 0..TRIES {
        let (status, body) = manager.send("POST", &url, Some(&json!({}))).await.unwrap();
        statuses.push(status);
        if status == 429 {
            assert_eq!(body["message"], "Rate exceeded");
            break;
        }
        assert_eq!(status, 410, "an unknown connection is gone");
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    test.stack.stop().await;
}

#[tokio::test]
async fn websocket_messages_beyond_the_throttle_are_answered_too_many_requests() {
    let test = TestStack::start(
        "quota-ws",
        tiny(QuotaSettings {
            account_rps: 1,
            account_burst: 4,
            ..QuotaSettings::default()
        }),
    )
    .await;
    let mut socket = WsClient::connect(&test.websocket_url("quota"))
        .await
        .unwrap();
    // A burst of pings: some are answered with pongs (each of which is itself a `@connections`
    // call against the same throttle), the rest with API Gateway's throttling frame, which the
    // API sends itself.
    for _ in 0..20 {
        socket.send(r#"{"action":"ping"}"#).await;
    }
    let mut throttled = false;
    while let Ok(frame) = socket.next_json(emostream_tests::patience::PATIENCE).await {
        if frame["message"] == "Too Many Requests" {
            assert!(frame["connectionId"].is_string(), "{frame}");
            throttled = true;
            break;
        }
        assert_eq!(frame["type"], "pong", "{frame}");
    }
    assert!(throttled, "no message was throttled");
    test.stack.stop().await;
}

#[tokio::test]
async fn new_connections_beyond_the_rate_are_refused_and_posts_take_their_latency() {
    let test = TestStack::start(
        "quota-connect",
        tiny(QuotaSettings {
            connects_per_second: 1,
            post_latency: Duration::from_millis(300),
            ..QuotaSettings::default()
        }),
    )
    .await;
    let mut open = Vec::new();
    let refused = loop {
        match WsClient::connect(&test.websocket_url("rate")).await {
            Ok(socket) => open.push(socket),
            Err(status) => break status,
        }
        assert!(open.len() < TRIES, "never refused");
    };
    assert_eq!(refused, 429);
    assert!(!open.is_empty());

    // Every @connections call takes at least the emulated latency.
    let manager = test.connections();
    let started = Instant::now();
    let (status, _) = manager
        .send("POST", &test.connection_path(UNKNOWN), Some(&json!({})))
        .await
        .unwrap();
    assert_eq!(status, 410);
    assert!(started.elapsed() >= Duration::from_millis(300));
    test.stack.stop().await;
}
