//! The whole pipeline in `AppSyncEvents` delivery through the local stack: reactions posted over
//! HTTP reach subscribers of the stream's AppSync Events channel with exact counts, each push is
//! one publish whatever the audience, other streams' subscribers get nothing, and a late joiner
//! takes the history from `GET /streams/{id}/windows`.

use emostream_local::event_api::client::Subscriber;
use emostream_tests::http_client::JsonClient;
use emostream_tests::live_counts::{keep_newest, keep_pushed, post_reactions, sum_windows};
use emostream_tests::local_stack::TestStack;
use emostream_tests::patience::PATIENCE;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

async fn subscribe(test: &TestStack, channel: &str) -> Subscriber {
    let stack = &test.stack;
    let api = stack.event_api.as_ref().expect("an Event API");
    let mut subscriber = Subscriber::connect(
        stack.event_realtime_url.as_deref().unwrap(),
        stack.event_http_host.as_deref().unwrap(),
        api.api_key(),
        PATIENCE,
    )
    .await
    .expect("a subscriber connects");
    let answer = subscriber
        .subscribe("viewer", channel, PATIENCE)
        .await
        .unwrap();
    assert_eq!(answer["type"], "subscribe_success", "{answer}");
    subscriber
}

#[tokio::test]
async fn reactions_reach_appsync_subscribers_exactly_with_one_publish_per_push() {
    let test = TestStack::start("appsync", |options| {
        options
            .local
            .parameters
            .insert("Delivery".into(), "AppSyncEvents".into());
    })
    .await;
    let api = test.stack.event_api.clone().expect("an Event API");
    let http = test.stack.http_url.clone();
    let client = JsonClient::default();
    let mut viewers = Vec::new();
    for _ in 0..3 {
        viewers.push(subscribe(&test, "/streams/final").await);
    }
    let mut bystander = subscribe(&test, "/streams/semi").await;

    let expected = post_reactions(&client, &http, "final", 10, 20).await;

    // Every viewer reaches the exact counts; each receives one data message per publish.
    let mut received = Vec::new();
    for viewer in &mut viewers {
        let mut newest = BTreeMap::new();
        let mut messages = 0u64;
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let message = viewer
                .next_message(remaining)
                .await
                .unwrap_or_else(|e| panic!("no exact counts ({e:?}), expected {expected:?}"));
            let frame = Subscriber::event_of(&message).expect("a data message");
            messages += 1;
            keep_pushed(&mut newest, frame, "final");
            if sum_windows(&newest) == expected {
                break;
            }
        }
        received.push(messages);
    }
    // Each viewer receives one data message per published event, duplicates included: read
    // until every viewer's count matches the API's (pushes may still be in flight).
    for (viewer, got) in viewers.iter_mut().zip(&mut received) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while *got < api.stats.events.load(Ordering::Relaxed) {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            viewer
                .next_message(remaining)
                .await
                .expect("a data message per published event");
            *got += 1;
        }
    }
    let publishes = api.stats.publishes.load(Ordering::Relaxed);
    assert!(publishes >= 1);
    assert_eq!(
        api.stats.events.load(Ordering::Relaxed),
        publishes,
        "one event per publish"
    );
    for got in &received {
        assert!(*got <= publishes, "no viewer got a publish twice");
    }
    // Three viewers of one stream cost one publish per push: AppSync makes the deliveries.
    assert!(
        api.stats.deliveries.load(Ordering::Relaxed) >= publishes * 3,
        "every publish reached the three viewers"
    );
    assert_eq!(
        bystander
            .next_message(Duration::from_millis(300))
            .await
            .err(),
        Some(None),
        "the other stream's subscriber got nothing"
    );

    // The late joiner's history comes over HTTP.
    let (status, history) = client.get(&format!("{http}/streams/final/windows")).await;
    assert_eq!(status, 200, "{history}");
    let mut newest = BTreeMap::new();
    for state in history["windows"].as_array().unwrap() {
        keep_newest(&mut newest, state.clone());
    }
    assert_eq!(sum_windows(&newest), expected);
    test.stack.stop().await;
}
