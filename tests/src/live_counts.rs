//! What the end-to-end tests post and how they read live counts: reactions posted over the HTTP
//! API with the taps expected per emoji, and window states kept by largest total, summed per
//! emoji, whichever way they were delivered.

use crate::http_client::JsonClient;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The emojis posted, in turn.
const EMOJIS: [&str; 4] = ["fire", "clap", "joy", "heart"];

/// Posts `requests` batches of `per_request` reactions for `stream`; returns the taps per emoji
/// that were accepted (202). Each call taps as viewers of its own, at most 3 taps each, so
/// fair use (40 per viewer and window) never cuts what a test expects, however fast it posts.
pub async fn post_reactions(
    client: &JsonClient,
    api: &str,
    stream: &str,
    requests: usize,
    per_request: usize,
) -> BTreeMap<String, u64> {
    emostream_local::api_gateway::admin_client::AdminClient::local(api)
        .register_live(stream, stream, None)
        .await
        .expect("stream registered and started");
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut expected = BTreeMap::new();
    for r in 0..requests {
        let reactions: Vec<Value> = (0..per_request)
            .map(|i| {
                let n = r * per_request + i;
                json!({
                    "stream_id": stream,
                    "user_id": format!("viewer-{call}-{n}"),
                    "emoji": EMOJIS[n % EMOJIS.len()],
                    "count": 1 + n % 3,
                })
            })
            .collect();
        let (status, answer) = client
            .post(
                &format!("{api}/reactions"),
                &json!({ "reactions": reactions }),
            )
            .await;
        assert_eq!(status, 202, "{answer}");
        for reaction in &reactions {
            *expected
                .entry(reaction["emoji"].as_str().unwrap().to_owned())
                .or_insert(0) += reaction["count"].as_u64().unwrap();
        }
    }
    expected
}

/// Sums the newest state (largest total) of every window, per emoji.
pub fn sum_windows(newest: &BTreeMap<i64, Value>) -> BTreeMap<String, u64> {
    let mut sums = BTreeMap::new();
    for state in newest.values() {
        for (emoji, n) in state["counts"].as_object().unwrap() {
            *sums.entry(emoji.clone()).or_insert(0) += n.as_u64().unwrap();
        }
    }
    sums
}

/// Keeps `state` if its window has no state yet or a smaller total.
pub fn keep_newest(newest: &mut BTreeMap<i64, Value>, state: Value) {
    let start = state["start_ms"].as_i64().unwrap();
    let total = state["total"].as_u64().unwrap();
    let kept = newest.get(&start).and_then(|s| s["total"].as_u64());
    if kept.is_none_or(|k| total > k) {
        newest.insert(start, state);
    }
}

/// Keeps the newest state of every window a push carries; a push is one `windows` frame for
/// `stream`.
pub fn keep_pushed(newest: &mut BTreeMap<i64, Value>, frame: Value, stream: &str) {
    assert_eq!(frame["type"], "windows", "{frame}");
    assert_eq!(frame["stream"], stream);
    for state in frame["windows"].as_array().unwrap() {
        keep_newest(newest, state.clone());
    }
}
