//! The local AppSync Events API against the protocol AWS documents: connection and subscription
//! auth, channel paths and wildcards, unsubscribe, errors, the HTTP publish endpoint's refusals,
//! keep-alives, and dropping a subscriber that stopped answering. It needs no other server.

use emostream_local::event_api::client::{ConnectError, Subscriber, subprotocols};
use emostream_local::event_api::relay::{Upstream, relay};
use emostream_local::event_api::{
    AuthType, EventApi, EventApiLimits, EventApiSpec, NamespaceAuth, ServedEventApi,
};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

const KEY: &str = "da2-localtestkey";
/// Generous: a busy machine may be slow, and every wait ends as soon as its condition holds.
const PATIENCE: Duration = Duration::from_secs(60);

struct Api {
    served: ServedEventApi,
}

impl std::ops::Deref for Api {
    type Target = ServedEventApi;

    fn deref(&self) -> &ServedEventApi {
        &self.served
    }
}

impl Api {
    async fn start(limits: EventApiLimits) -> Self {
        let spec = EventApiSpec {
            connection: vec![AuthType::ApiKey],
            namespaces: BTreeMap::from([
                (
                    "streams".to_owned(),
                    NamespaceAuth {
                        publish: vec![AuthType::Iam],
                        subscribe: vec![AuthType::ApiKey],
                        subscribe_segments: None,
                    },
                ),
                (
                    "chat".to_owned(),
                    NamespaceAuth {
                        publish: vec![AuthType::ApiKey],
                        subscribe: vec![AuthType::ApiKey],
                        subscribe_segments: None,
                    },
                ),
            ]),
            openid_connect: None,
        };
        let served = EventApi::new(spec, KEY, limits)
            .serve_on("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        Self { served }
    }

    async fn subscriber(&self) -> Subscriber {
        Subscriber::connect(&self.realtime_url(), &self.host, KEY, PATIENCE)
            .await
            .expect("a subscriber connects")
    }

    /// `POST /event` with `headers`; the status and JSON answer.
    async fn publish(&self, body: &Value, headers: &[(&str, &str)]) -> (u16, Value) {
        let client = Client::builder(TokioExecutor::new()).build_http();
        let mut request =
            hyper::Request::post(self.publish_url()).header("content-type", "application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        let response = client.request(request).await.expect("an answer");
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }
}

fn error_type(answer: &Value) -> &str {
    answer["errors"][0]["errorType"].as_str().unwrap_or("")
}

#[tokio::test]
async fn connections_and_subscriptions_are_authorized_and_checked() {
    let api = Api::start(EventApiLimits::default()).await;
    // A bad API key: connection_error, then closed.
    match Subscriber::connect(&api.realtime_url(), &api.host, "da2-wrong", PATIENCE).await {
        Err(ConnectError::ConnectionError(answer)) => {
            assert_eq!(error_type(&answer), "UnauthorizedException", "{answer}");
        }
        other => panic!("expected a connection_error, got {:?}", other.err()),
    }
    // No aws-appsync-event-ws subprotocol: refused at the handshake.
    let plain = tokio_tungstenite::connect_async(api.realtime_url()).await;
    assert!(
        plain.is_err(),
        "a handshake without the subprotocol is refused"
    );
    assert!(subprotocols(&json!({"x-api-key": KEY})).starts_with("aws-appsync-event-ws, header-"));

    let mut subscriber = api.subscriber().await;
    assert_eq!(subscriber.connection_timeout_ms, 300_000);
    let ok = subscriber
        .subscribe("s1", "/streams/final", PATIENCE)
        .await
        .unwrap();
    assert_eq!(ok, json!({"type": "subscribe_success", "id": "s1"}));
    for (id, channel, expected) in [
        ("s1", "/streams/other", "DuplicatedOperationError"),
        ("s2", "/streams/bad_segment", "BadRequestException"),
        ("s3", "/nowhere/a", "BadRequestException"),
        ("s4", "/streams/*/a", "BadRequestException"),
        ("", "/streams/a", "BadRequestException"),
    ] {
        let answer = subscriber.subscribe(id, channel, PATIENCE).await.unwrap();
        assert_eq!(answer["type"], "subscribe_error", "{channel}: {answer}");
        assert_eq!(error_type(&answer), expected, "{channel}: {answer}");
    }
    // The subscription's own authorization is checked too.
    subscriber
        .send(
            &json!({"type": "subscribe", "id": "s5", "channel": "/streams/a",
            "authorization": {"x-api-key": "da2-wrong", "host": api.host}}),
        )
        .await;
    let answer = subscriber.next_message(PATIENCE).await.unwrap();
    assert_eq!(error_type(&answer), "UnauthorizedException", "{answer}");

    subscriber
        .send(&json!({"type": "unsubscribe", "id": "s1"}))
        .await;
    let answer = subscriber.next_message(PATIENCE).await.unwrap();
    assert_eq!(answer, json!({"type": "unsubscribe_success", "id": "s1"}));
    subscriber
        .send(&json!({"type": "unsubscribe", "id": "s1"}))
        .await;
    let answer = subscriber.next_message(PATIENCE).await.unwrap();
    assert_eq!(answer["type"], "unsubscribe_error", "{answer}");
    subscriber.send(&json!({"type": "start", "id": "x"})).await;
    let answer = subscriber.next_message(PATIENCE).await.unwrap();
    assert_eq!(
        (answer["type"].as_str(), error_type(&answer)),
        (Some("error"), "UnsupportedOperation")
    );
    assert_eq!(api.api.subscriptions(), 0);

    // Browsers may not publish to the streams namespace (IAM only) with their key.
    subscriber
        .send(
            &json!({"type": "publish", "id": "p1", "channel": "/streams/final",
            "events": ["1"], "authorization": {"x-api-key": KEY, "host": api.host}}),
        )
        .await;
    let answer = subscriber.next_message(PATIENCE).await.unwrap();
    assert_eq!(
        (answer["type"].as_str(), error_type(&answer)),
        (Some("publish_error"), "UnauthorizedException")
    );
}

#[tokio::test]
async fn a_publish_reaches_exact_and_wildcard_subscriptions_only() {
    let api = Api::start(EventApiLimits::default()).await;
    let mut exact = api.subscriber().await;
    let mut wildcard = api.subscriber().await;
    let mut other = api.subscriber().await;
    for (subscriber, channel) in [
        (&mut exact, "/chat/final"),
        (&mut wildcard, "/chat/*"),
        (&mut other, "/chat/semi"),
    ] {
        let answer = subscriber
            .subscribe("sub", channel, PATIENCE)
            .await
            .unwrap();
        assert_eq!(answer["type"], "subscribe_success", "{answer}");
    }
    let events = ["{\"n\":1}", "[2]"];
    let (status, answer) = api
        .publish(
            &json!({"channel": "/chat/final", "events": events}),
            &[("x-api-key", KEY)],
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["successful"].as_array().unwrap().len(), 2);
    for subscriber in [&mut exact, &mut wildcard] {
        for expected in [json!({"n": 1}), json!([2])] {
            let message = subscriber.next_message(PATIENCE).await.unwrap();
            assert_eq!(message["id"], "sub");
            assert_eq!(Subscriber::event_of(&message), Some(expected));
        }
    }
    // A deeper channel reaches the wildcard, not the exact subscription.
    let (status, _) = api
        .publish(
            &json!({"channel": "/chat/final/replay", "events": ["3"]}),
            &[("x-api-key", KEY)],
        )
        .await;
    assert_eq!(status, 200);
    let message = wildcard.next_message(PATIENCE).await.unwrap();
    assert_eq!(Subscriber::event_of(&message), Some(json!(3)));
    // Over the same connection, a publish by API key where the namespace allows it.
    exact
        .send(
            &json!({"type": "publish", "id": "p1", "channel": "/chat/final",
            "events": ["4"], "authorization": {"x-api-key": KEY, "host": api.host}}),
        )
        .await;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        seen.push(exact.next_message(PATIENCE).await.unwrap()["type"].clone());
    }
    seen.sort_by_key(Value::to_string);
    assert_eq!(seen, [json!("data"), json!("publish_success")]);
    assert_eq!(
        other.next_message(Duration::from_millis(300)).await.err(),
        Some(None),
        "the other channel's subscriber got nothing"
    );
    // Two events and one over HTTP, one over the socket: each publish path counts its events.
    assert_eq!(api.api.stats.events.load(Ordering::Relaxed), 4);
    assert_eq!(api.api.stats.publishes.load(Ordering::Relaxed), 3);
}

#[tokio::test]
async fn the_publish_endpoint_refuses_as_appsync_does() {
    let api = Api::start(EventApiLimits::default()).await;
    let events = |n: usize| (0..n).map(|i| i.to_string()).collect::<Vec<_>>();
    let key = [("x-api-key", KEY)];
    for (body, headers, status, kind) in [
        // The streams namespace takes IAM only: the API key, or no auth, is refused.
        (
            json!({"channel": "/streams/a", "events": events(1)}),
            &key[..],
            401,
            "UnauthorizedException",
        ),
        (
            json!({"channel": "/streams/a", "events": events(1)}),
            &[][..],
            401,
            "UnauthorizedException",
        ),
        (
            json!({"channel": "/streams/a", "events": events(1)}),
            &[
                (
                    "authorization",
                    "AWS4-HMAC-SHA256 Credential=local/20260101/local/appsync/aws4_request, SignedHeaders=host, Signature=00",
                ),
                ("x-amz-date", "20260101T000000Z"),
            ][..],
            401,
            "UnauthorizedException",
        ),
        (
            json!({"channel": "/chat/a", "events": events(6)}),
            &key[..],
            400,
            "BadRequestException",
        ),
        (
            json!({"channel": "/chat/a", "events": []}),
            &key[..],
            400,
            "BadRequestException",
        ),
        (
            json!({"channel": "/chat/a b", "events": events(1)}),
            &key[..],
            400,
            "BadRequestException",
        ),
        (
            json!({"channel": "/none/a", "events": events(1)}),
            &key[..],
            400,
            "BadRequestException",
        ),
        (
            json!({"events": events(1)}),
            &key[..],
            400,
            "BadRequestException",
        ),
    ] {
        let (got, answer) = api.publish(&body, headers).await;
        assert_eq!(
            (got, error_type(&answer)),
            (status, kind),
            "{body}: {answer}"
        );
    }
    // Per event: too large or not JSON fails that event only.
    let large = format!("\"{}\"", "x".repeat(240 * 1024));
    let (status, answer) = api
        .publish(
            &json!({"channel": "/chat/a", "events": ["1", large, "{no"]}),
            &key,
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let indexes = |list: &Value| {
        list.as_array()
            .unwrap()
            .iter()
            .map(|e| e["index"].as_u64().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(indexes(&answer["successful"]), [0]);
    assert_eq!(indexes(&answer["failed"]), [1, 2]);
}

#[tokio::test]
async fn inbound_events_and_connects_are_rate_limited() {
    let api = Api::start(EventApiLimits {
        inbound_events_per_second: 1,
        connects_per_second: 1,
        ..EventApiLimits::default()
    })
    .await;
    // At one event per second, publishes in a row are soon refused, and admitted again later.
    let body = json!({"channel": "/chat/a", "events": ["1"]});
    let mut statuses = Vec::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !(statuses.contains(&429) && statuses.last() == Some(&200)) {
        assert!(tokio::time::Instant::now() < deadline, "{statuses:?}");
        let (status, answer) = api.publish(&body, &[("x-api-key", KEY)]).await;
        if status == 429 {
            assert_eq!(error_type(&answer), "TooManyRequestsException", "{answer}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        statuses.push(status);
    }
    assert_eq!(
        api.api.stats.throttled_publishes.load(Ordering::Relaxed),
        statuses.iter().filter(|s| **s == 429).count() as u64
    );
    // Likewise connects: refused with 429 at the handshake.
    let mut refused = 0;
    while refused == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no connect refused at 1/s"
        );
        if let Err(ConnectError::Refused(429)) =
            Subscriber::connect(&api.realtime_url(), &api.host, KEY, PATIENCE).await
        {
            refused += 1;
        }
    }
    assert_eq!(
        api.api.stats.refused_connects.load(Ordering::Relaxed),
        refused
    );
}

#[tokio::test]
async fn a_subscriber_that_stops_answering_is_dropped_and_a_live_one_is_not() {
    let api = Api::start(EventApiLimits {
        keep_alive: Duration::from_millis(100),
        connection_timeout: Duration::from_millis(1_000),
        ..EventApiLimits::default()
    })
    .await;
    let mut live = api.subscriber().await;
    let silent = api.subscriber().await;
    assert_eq!(live.connection_timeout_ms, 1_000);
    // The silent one never reads again, so it answers no ping; the live one reads (and gets a
    // `ka` every interval, which `next_message` skips) until the silent one is gone.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while api.api.stats.dropped_unresponsive.load(Ordering::Relaxed) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the silent subscriber was never dropped"
        );
        assert_eq!(
            live.next_message(Duration::from_millis(200)).await.err(),
            Some(None),
            "the live subscriber stays connected"
        );
    }
    assert_eq!(
        api.api.stats.dropped_unresponsive.load(Ordering::Relaxed),
        1
    );
    let answer = live
        .subscribe("still-here", "/chat/a", PATIENCE)
        .await
        .unwrap();
    assert_eq!(answer["type"], "subscribe_success");
    drop(silent);
}

#[tokio::test]
async fn a_relay_serves_more_subscribers_with_one_upstream_subscription_per_pattern() {
    let upstream = Api::start(EventApiLimits::default()).await;
    let spec = EventApiSpec {
        connection: vec![AuthType::ApiKey],
        namespaces: BTreeMap::from([(
            "chat".to_owned(),
            NamespaceAuth {
                publish: Vec::new(),
                subscribe: vec![AuthType::ApiKey],
                subscribe_segments: None,
            },
        )]),
        openid_connect: None,
    };
    let (relayed, patterns) = EventApi::relayed(spec, KEY, EventApiLimits::default());
    let served = relayed
        .serve_on("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let relaying = tokio::spawn(relay(
        relayed.clone(),
        patterns,
        Upstream {
            realtime_url: upstream.realtime_url(),
            http_host: upstream.host.clone(),
            api_key: KEY.to_owned(),
        },
    ));
    let connect = || async {
        Subscriber::connect(&served.realtime_url(), &served.host, KEY, PATIENCE)
            .await
            .expect("a relay subscriber connects")
    };
    let mut exact = Vec::new();
    for _ in 0..3 {
        let mut subscriber = connect().await;
        let answer = subscriber
            .subscribe("a", "/chat/final", PATIENCE)
            .await
            .unwrap();
        assert_eq!(answer["type"], "subscribe_success", "{answer}");
        exact.push(subscriber);
    }
    let mut wildcard = connect().await;
    let answer = wildcard.subscribe("w", "/chat/*", PATIENCE).await.unwrap();
    assert_eq!(answer["type"], "subscribe_success", "{answer}");
    // The relay holds one upstream subscription per pattern, whatever its audience.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while upstream.api.subscriptions() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the relay never subscribed upstream"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(upstream.api.subscriptions(), 2);
    assert_eq!(upstream.api.open_connections(), 1);

    let (status, _) = upstream
        .publish(
            &json!({"channel": "/chat/final", "events": ["{\"n\":1}"]}),
            &[("x-api-key", KEY)],
        )
        .await;
    assert_eq!(status, 200);
    for subscriber in exact.iter_mut().chain([&mut wildcard]) {
        let message = subscriber.next_message(PATIENCE).await.unwrap();
        assert_eq!(
            Subscriber::event_of(&message),
            Some(json!({"n": 1})),
            "{message}"
        );
    }
    // Each subscriber got it once.
    assert_eq!(relayed.stats.deliveries.load(Ordering::Relaxed), 4);

    // When the upstream drops the relay, it connects and subscribes again.
    assert_eq!(upstream.api.disconnect_all(), 1);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the relay never came back"
        );
        let (status, _) = upstream
            .publish(
                &json!({"channel": "/chat/final", "events": ["2"]}),
                &[("x-api-key", KEY)],
            )
            .await;
        assert_eq!(status, 200);
        if let Ok(message) = exact[0].next_message(Duration::from_millis(200)).await {
            assert_eq!(Subscriber::event_of(&message), Some(json!(2)));
            break;
        }
    }
    relaying.abort();
}

/// Viewer identity: connections and subscriptions authorize with a token of the API's OpenID
/// Connect issuer for its client id (no API key), and the namespace's onSubscribe rule refuses
/// wildcards and channels off the rule, as the template's handler does.
#[tokio::test]
async fn tokens_of_the_issuer_authorize_and_the_subscribe_rule_refuses_wildcards() {
    use emostream_local::demo_issuer::DemoIssuer;
    use emostream_local::event_api::OpenIdConnectSpec;
    use emostream_local::event_api::client::EventCredential;
    use std::sync::Arc;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer_url = format!("http://{}", listener.local_addr().unwrap());
    let issuer =
        Arc::new(DemoIssuer::new(&issuer_url, "emostream", Duration::from_secs(600)).unwrap());
    let router = issuer.router();
    tokio::spawn(async move { axum::serve(listener, router).await });
    let other = DemoIssuer::new(&issuer_url, "someone-else", Duration::from_secs(600)).unwrap();

    let spec = EventApiSpec {
        connection: vec![AuthType::OpenIdConnect],
        namespaces: BTreeMap::from([(
            "streams".to_owned(),
            NamespaceAuth {
                publish: vec![AuthType::Iam],
                subscribe: vec![AuthType::OpenIdConnect],
                subscribe_segments: Some(2),
            },
        )]),
        openid_connect: Some(OpenIdConnectSpec {
            issuer: issuer_url.clone(),
            client_id: "emostream".to_owned(),
        }),
    };
    let api = EventApi::new(spec, KEY, EventApiLimits::default())
        .serve_on("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let connect = |credential: EventCredential| {
        let (url, host) = (api.realtime_url(), api.host.clone());
        async move { Subscriber::connect_with(&url, &host, &credential, PATIENCE).await }
    };
    // The API key is no longer a way in, nor a token for another audience.
    for refused in [
        EventCredential::ApiKey(KEY.to_owned()),
        EventCredential::Token(other.token_for("viewer")),
        EventCredential::Token("not-a-token".to_owned()),
    ] {
        match connect(refused.clone()).await {
            Err(ConnectError::ConnectionError(answer)) => {
                assert_eq!(error_type(&answer), "UnauthorizedException", "{refused:?}");
            }
            other => panic!("{refused:?} was not refused: {:?}", other.err()),
        }
    }
    let mut viewer = connect(EventCredential::Token(issuer.token_for("viewer")))
        .await
        .expect("a viewer with a token connects");
    for (id, channel) in [
        ("w1", "/streams/*"),
        ("w2", "/streams/a/b"),
        ("w3", "/streams/a/*"),
    ] {
        let answer = viewer.subscribe(id, channel, PATIENCE).await.unwrap();
        assert_eq!(
            (answer["type"].as_str(), error_type(&answer)),
            (Some("subscribe_error"), "UnauthorizedException"),
            "{channel}: {answer}"
        );
    }
    let ok = viewer
        .subscribe("s1", "/streams/final", PATIENCE)
        .await
        .unwrap();
    assert_eq!(ok, json!({"type": "subscribe_success", "id": "s1"}));
}
