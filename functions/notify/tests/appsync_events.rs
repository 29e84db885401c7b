//! notify in `AppSyncEvents` delivery against the local stack's AppSync Events API and the real
//! MongoDB-wire server: a batch becomes one signed publish per stream, whatever the audience,
//! and reaches every subscriber; publishes the API refuses (bad credentials, too many events,
//! throttled) are counted or retried and never fail a batch.

mod common;

use common::{Fixture, kafka_event, moment_record, now, raw_kafka_event, sdk, state};
use emostream_local::event_api::client::Subscriber;
use emostream_local::event_api::{
    AuthType, EventApi, EventApiLimits, EventApiSpec, NamespaceAuth, ServedEventApi,
};
use emostream_tests::patience::PATIENCE;
use notify::event_api::{EventApi as Publisher, PublishError};
use reactions::message::VersionedMessage;
use reactions::moments::MomentStatus;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

const KEY: &str = "da2-notifytests";

/// A local Event API with the template's auth: connect and subscribe with the API key, publish
/// with IAM only.
async fn start(limits: EventApiLimits) -> ServedEventApi {
    let spec = EventApiSpec {
        connection: vec![AuthType::ApiKey],
        namespaces: BTreeMap::from([(
            "streams".to_owned(),
            NamespaceAuth {
                publish: vec![AuthType::Iam],
                subscribe: vec![AuthType::ApiKey],
                subscribe_segments: None,
            },
        )]),
        openid_connect: None,
    };
    EventApi::new(spec, KEY, limits)
        .serve_on("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

async fn subscriber(api: &ServedEventApi, channel: &str) -> Subscriber {
    let mut subscriber = Subscriber::connect(&api.realtime_url(), &api.host, KEY, PATIENCE)
        .await
        .expect("a subscriber connects");
    let answer = subscriber.subscribe("s", channel, PATIENCE).await.unwrap();
    assert_eq!(answer["type"], "subscribe_success", "{answer}");
    subscriber
}

async fn next_frame(subscriber: &mut Subscriber) -> Value {
    let message = subscriber
        .next_message(PATIENCE)
        .await
        .expect("a data message");
    Subscriber::event_of(&message).unwrap_or_else(|| panic!("not an event: {message}"))
}

#[tokio::test]
async fn a_batch_is_one_publish_per_stream_whatever_the_audience() {
    let events = start(EventApiLimits::default()).await;
    let endpoint = events.publish_url();
    let f = Fixture::start(&[
        ("PUSH_INTERVAL_MS", "0"),
        ("DELIVERY", "AppSyncEvents"),
        ("APPSYNC_EVENT_ENDPOINT", &endpoint),
    ])
    .await;
    let mut audience = Vec::new();
    for _ in 0..5 {
        audience.push(subscriber(&events, "/streams/final").await);
    }
    let mut everything = subscriber(&events, "/streams/*").await;
    let t = now();
    let first = state("final", t - t % 2_000, &[("fire", 3)], t);
    let older = state("final", first.start_ms - 2_000, &[("clap", 2)], t);
    let other = state("semi", first.start_ms, &[("joy", 1)], t);
    let answer = f
        .notify
        .handle(kafka_event(&[first.clone(), older.clone(), other.clone()]))
        .await
        .unwrap();
    // Two streams: two publishes of one event each, however many subscribe.
    assert_eq!(answer["streams"], 2, "{answer}");
    assert_eq!(answer["posts"], 2, "{answer}");
    assert_eq!(answer["delivered"], 2, "{answer}");
    assert_eq!(answer["failed"], 0, "{answer}");
    assert_eq!(events.api.stats.publishes.load(Ordering::Relaxed), 2);
    for subscriber in &mut audience {
        let frame = next_frame(subscriber).await;
        assert_eq!(frame["type"], "windows");
        assert_eq!(frame["stream"], "final");
        let starts: Vec<i64> = frame["windows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["start_ms"].as_i64().unwrap())
            .collect();
        assert_eq!(starts, [older.start_ms, first.start_ms], "oldest first");
    }
    let mut streams = vec![
        next_frame(&mut everything).await["stream"].clone(),
        next_frame(&mut everything).await["stream"].clone(),
    ];
    streams.sort_by_key(Value::to_string);
    assert_eq!(streams, ["final", "semi"]);
}

#[tokio::test]
async fn a_moment_is_one_publish_to_its_streams_channel() {
    let events = start(EventApiLimits::default()).await;
    let endpoint = events.publish_url();
    let f = Fixture::start(&[
        ("PUSH_INTERVAL_MS", "0"),
        ("DELIVERY", "AppSyncEvents"),
        ("APPSYNC_EVENT_ENDPOINT", &endpoint),
    ])
    .await;
    let mut audience = Vec::new();
    for _ in 0..3 {
        audience.push(subscriber(&events, "/streams/final").await);
    }
    let t = now();
    let proposed = moment_record("final", t, MomentStatus::Provisional, 0);
    let grown = moment_record("final", t, MomentStatus::Confirmed, t + 2_000);
    let answer = f
        .notify
        .handle(raw_kafka_event(&[
            ("final", proposed.encode()),
            ("final", grown.encode()),
        ]))
        .await
        .unwrap();
    assert_eq!(answer["moments"], 2, "{answer}");
    assert_eq!(
        (answer["posts"].clone(), answer["delivered"].clone()),
        (1.into(), 1.into()),
        "{answer}"
    );
    for subscriber in &mut audience {
        let frame = next_frame(subscriber).await;
        assert_eq!(frame["type"], "moment");
        assert_eq!(frame["status"], "confirmed");
        assert_eq!(frame["revision"], t + 2_000);
        assert_eq!(frame["moment"]["emoji"], "fire");
    }
}

#[tokio::test]
async fn refused_publishes_are_counted_and_never_fail_the_batch() {
    let events = start(EventApiLimits::default()).await;
    let endpoint = events.publish_url();
    // Another API's key, or an unsigned publish, is refused: 401 UnauthorizedException.
    let wrong = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("local"))
        .credentials_provider(aws_sdk_apigatewaymanagement::config::Credentials::new(
            "local",
            "not-the-secret",
            None,
            None,
            "tests",
        ))
        .load()
        .await;
    let publisher = Publisher::new(&wrong, &endpoint, Duration::from_secs(10)).unwrap();
    match publisher.publish("/streams/final", &["1".to_owned()]).await {
        Err(PublishError::Refused {
            status, error_type, ..
        }) => assert_eq!(
            (status, error_type.as_str()),
            (401, "UnauthorizedException")
        ),
        other => panic!("expected a 401, got {other:?}"),
    }
    // More than 5 events: 400 BadRequestException.
    let publisher = Publisher::new(&sdk().await, &endpoint, Duration::from_secs(10)).unwrap();
    let six: Vec<String> = (0..6).map(|i| i.to_string()).collect();
    match publisher.publish("/streams/final", &six).await {
        Err(PublishError::Refused { status, .. }) => assert_eq!(status, 400),
        other => panic!("expected a 400, got {other:?}"),
    }
    let published = publisher
        .publish(
            "/streams/final",
            &["{\"ok\":true}".to_owned(), "{bad".to_owned()],
        )
        .await
        .unwrap();
    assert_eq!((published.successful, published.failed), (1, 1));

    // notify with credentials the API refuses: the batch succeeds and counts the failure.
    let settings = [
        ("PUSH_INTERVAL_MS", "0"),
        ("DELIVERY", "AppSyncEvents"),
        ("APPSYNC_EVENT_ENDPOINT", endpoint.as_str()),
    ];
    let f = Fixture::start(&settings).await;
    let refusing = f.instance_signing_with(&settings, &wrong).await;
    let t = now();
    let answer = refusing
        .handle(kafka_event(&[state(
            "final",
            t - t % 2_000,
            &[("fire", 1)],
            t,
        )]))
        .await
        .expect("a refused publish does not fail the batch");
    assert_eq!(
        (answer["posts"].as_u64(), answer["failed"].as_u64()),
        (Some(1), Some(1)),
        "{answer}"
    );
    assert_eq!(answer["delivered"], 0);
}

#[tokio::test]
async fn a_throttled_publish_is_retried_until_it_goes_through() {
    // One event per second: consecutive pushes are throttled and must be retried.
    let events = start(EventApiLimits {
        inbound_events_per_second: 1,
        ..EventApiLimits::default()
    })
    .await;
    let endpoint = events.publish_url();
    let f = Fixture::start(&[
        ("PUSH_INTERVAL_MS", "0"),
        ("DELIVERY", "AppSyncEvents"),
        ("APPSYNC_EVENT_ENDPOINT", &endpoint),
        // Room for the retries: a second of budget covers the bucket's refill.
        ("THROTTLE_BUDGET_MS", "10000"),
    ])
    .await;
    let mut subscriber = subscriber(&events, "/streams/*").await;
    // Two streams in one batch are published at once: the second is throttled (the bucket
    // holds one event) and must be retried.
    let mut retries = 0;
    let mut delivered = 0;
    let mut pushes = 0;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while retries == 0 {
        assert!(tokio::time::Instant::now() < deadline, "never throttled");
        let t = now();
        let start = t - t % 2_000;
        let batch = [
            state("final", start, &[("fire", 1)], t),
            state("semi", start, &[("joy", 1)], t),
        ];
        let answer = f.notify.handle(kafka_event(&batch)).await.unwrap();
        retries += answer["throttle_retries"].as_u64().unwrap();
        delivered += answer["delivered"].as_u64().unwrap();
        pushes += 2;
        assert_eq!(answer["failed"], 0, "{answer}");
        assert_eq!(answer["throttled_out"], 0, "{answer}");
    }
    assert_eq!(delivered, pushes, "every push went through in the end");
    for _ in 0..pushes {
        next_frame(&mut subscriber).await;
    }
}
