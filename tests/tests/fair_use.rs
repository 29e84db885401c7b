//! Fair use end to end through the local stack: one viewer sending 1,000 requests of 500
//! reactions of 100 taps (50 million taps) moves the stream's count by exactly the limit in
//! each window it tapped in, while another viewer's single tap is counted.

use emostream_local::api_gateway::admin_client::AdminClient;
use emostream_tests::http_client::JsonClient;
use emostream_tests::local_stack::TestStack;
use emostream_tests::patience::PATIENCE;
use futures::StreamExt;
use mongodb::bson::{Document, doc};
use serde_json::json;
use std::time::Duration;

const LIMIT: i64 = 40;

#[tokio::test]
async fn a_scripted_viewer_moves_the_count_by_at_most_the_limit_per_window() {
    let test = TestStack::start("fair-use", |options| {
        // One partition for the stream, so the fan's tap, sent last, is counted last.
        options
            .local
            .parameters
            .insert("StreamShards".into(), "1".into());
        options
            .local
            .parameters
            .insert("MaxTapsPerViewerPerWindow".into(), LIMIT.to_string());
    })
    .await;
    let api = test.stack.http_url.clone();
    AdminClient::local(&api)
        .register_live("final", "Cup final", None)
        .await
        .unwrap();
    let client = JsonClient::default();
    let body = json!({ "reactions": (0..500)
        .map(|_| json!({"stream_id": "final", "user_id": "script", "emoji": "fire", "count": 100}))
        .collect::<Vec<_>>() });
    let accepted = futures::stream::iter(0..1_000)
        .map(|_| {
            let (client, url, body) = (client.clone(), format!("{api}/reactions"), &body);
            async move { client.post(&url, body).await }
        })
        .buffer_unordered(8)
        .fold(0, |accepted, (status, answer)| async move {
            assert_eq!(status, 202, "{answer}");
            accepted + answer["accepted"].as_u64().unwrap()
        })
        .await;
    assert_eq!(accepted, 500_000);
    let (status, _) = client
        .post(
            &format!("{api}/reactions"),
            &json!({"stream_id": "final", "user_id": "fan", "emoji": "clap"}),
        )
        .await;
    assert_eq!(status, 202);

    // Everything before the fan's tap is counted once the tap is.
    let mongo = reactions::mongo::connect(&test.mongo(), "fair-use-test")
        .await
        .unwrap();
    let windows = mongo.collection::<Document>("windows");
    // 500,000 records to drain: on a busy machine with debug builds this takes minutes.
    let deadline = tokio::time::Instant::now() + PATIENCE * 10;
    loop {
        let counted = windows
            .count_documents(doc! { "stream": "final", "counts.clap": 1 })
            .await
            .unwrap();
        if counted == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the fan's tap was not counted"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut cursor = windows.find(doc! { "stream": "final" }).await.unwrap();
    let mut scripted_windows = 0;
    while cursor.advance().await.unwrap() {
        let window = cursor.deserialize_current().unwrap();
        let counts = window.get_document("counts").unwrap();
        // Every request carried 50,000 taps, so each window it landed in is cut to the limit.
        if let Ok(fire) = counts.get_i64("fire") {
            assert_eq!(fire, LIMIT, "{window}");
            scripted_windows += 1;
        }
    }
    assert!(scripted_windows > 0);
    test.stack.stop().await;
}
