//! Retry-safe taps end to end through the local stack: a request sent again with its
//! `Idempotency-Key` (its first answer lost) is counted once; the key used again for other taps
//! is refused with 422 once the first use is counted, and never counted even when the two race;
//! a malformed key is a 400 naming the header.

use emostream_local::api_gateway::admin_client::AdminClient;
use emostream_tests::http_client::JsonClient;
use emostream_tests::local_stack::TestStack;
use emostream_tests::patience::PATIENCE;
use mongodb::bson::{Document, doc};
use serde_json::{Value, json};
use std::time::Duration;

/// The stream's stored counts, summed over its windows.
async fn counted(
    windows: &mongodb::Collection<Document>,
) -> std::collections::BTreeMap<String, i64> {
    let mut sums = std::collections::BTreeMap::new();
    let mut cursor = windows.find(doc! { "stream": "final" }).await.unwrap();
    while cursor.advance().await.unwrap() {
        let window = cursor.deserialize_current().unwrap();
        for (emoji, n) in window.get_document("counts").unwrap() {
            *sums.entry(emoji.clone()).or_default() += n.as_i64().unwrap();
        }
    }
    sums
}

/// Waits until the fan's taps (sent last, unkeyed, on the stream's one partition) are counted:
/// everything sent before them is then counted too.
async fn wait_for_fan(windows: &mongodb::Collection<Document>, clap: i64) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while counted(windows).await.get("clap").copied().unwrap_or(0) < clap {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the fan's taps were not counted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_retried_request_counts_once_and_a_reused_key_is_refused() {
    let test = TestStack::start("retry-safe", |options| {
        options
            .local
            .parameters
            .insert("StreamShards".into(), "1".into());
    })
    .await;
    let api = test.stack.http_url.clone();
    AdminClient::local(&api)
        .register_live("final", "Cup final", None)
        .await
        .unwrap();
    let client = JsonClient::default();
    let url = format!("{api}/reactions");
    let post = |key: Option<&'static str>, body: Value| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let headers: Vec<(&str, &str)> =
                key.map(|k| ("idempotency-key", k)).into_iter().collect();
            client.post_with(&url, &headers, &body).await
        }
    };
    let taps = |emoji: &str, count: u32| {
        json!({ "reactions": [
            {"stream_id": "final", "user_id": "viewer", "emoji": emoji, "count": count},
            {"stream_id": "final", "user_id": "viewer", "emoji": "joy", "count": 1},
        ]})
    };
    let fan = json!({"stream_id": "final", "user_id": "fan", "emoji": "clap"});

    // Sent three times with one key, as a client does whose answers were lost.
    for _ in 0..3 {
        let (status, answer) = post(Some("\"tab-1:1\""), taps("fire", 5)).await;
        assert_eq!((status, &answer["accepted"]), (202, &json!(2)), "{answer}");
    }
    let (status, _) = post(Some("tab-1:2"), taps("party", 2)).await;
    assert_eq!(status, 202);
    let (status, _) = post(None, fan.clone()).await;
    assert_eq!(status, 202);
    let mongo = reactions::mongo::connect(&test.mongo(), "retry-safe-test")
        .await
        .unwrap();
    let windows = mongo.collection::<Document>("windows");
    wait_for_fan(&windows, 1).await;
    let expected = |fire, party, wow, clap| {
        [
            ("clap", clap),
            ("fire", fire),
            ("joy", 2),
            ("party", party),
            ("wow", wow),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(e, n)| (e.to_owned(), n))
        .collect::<std::collections::BTreeMap<String, i64>>()
    };
    assert_eq!(counted(&windows).await, expected(5, 2, 0, 1));

    // The first key again, for other taps: refused, naming the header; nothing is counted.
    let (status, answer) = post(Some("tab-1:1"), taps("wow", 9)).await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["error"], "idempotency_key_reused");
    assert_eq!(answer["field"], "Idempotency-Key");
    // Two requests with a new key and different taps, racing: whichever reaches Kafka second
    // is refused by ingest (422) or, when its first use is not counted yet, by aggregate.
    let (first, second) = tokio::join!(
        post(Some("tab-1:3"), taps("wow", 9)),
        post(Some("tab-1:3"), taps("cricket", 4))
    );
    for (status, answer) in [&first, &second] {
        assert!([202, 422].contains(status), "{status} {answer}");
    }
    let (status, _) = post(None, fan.clone()).await;
    assert_eq!(status, 202);
    wait_for_fan(&windows, 2).await;
    let stored = counted(&windows).await;
    let raced_joy = stored["joy"] - 2;
    assert_eq!(
        raced_joy, 1,
        "one of the racing requests counts: {stored:?}"
    );
    let wow_or_cricket = (
        stored.get("wow").copied().unwrap_or(0),
        stored.get("cricket").copied().unwrap_or(0),
    );
    assert!([(9, 0), (0, 4)].contains(&wow_or_cricket), "{stored:?}");

    // A malformed key: 400 naming the header; nothing is accepted.
    let (status, answer) = post(Some("two words"), taps("fire", 1)).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["errors"][0]["field"], "Idempotency-Key");
    test.stack.stop().await;
}
