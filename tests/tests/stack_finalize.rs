//! `final` through the whole local stack: taps posted over HTTP, then nothing more. No batch
//! comes to run the `final` pass, so the template's scheduled tick (EventBridge, emulated by the
//! local stack; here every 500 ms instead of every minute) must, and every window of the stream
//! ends up final with its exact counts, as `GET /streams/{id}/windows` reports.

use emostream_tests::http_client::JsonClient;
use emostream_tests::live_counts::post_reactions;
use emostream_tests::local_stack::TestStack;
use emostream_tests::patience::eventually;
use std::collections::BTreeMap;
use std::time::Duration;

#[tokio::test]
async fn the_last_windows_of_a_stream_become_final_after_its_taps_stop() {
    let test = TestStack::start("finalize", |options| {
        options.schedule_every = Some(Duration::from_millis(500));
        // Every schedule ticks that often: notify's sweepers, too, each sweeping until the next.
        options
            .local
            .variables
            .insert("SWEEP_FOR_MS".into(), "500".into());
    })
    .await;
    let api = test.stack.http_url.clone();
    let client = JsonClient::default();
    let expected = post_reactions(&client, &api, "last-over", 5, 20).await;

    // Every window final (the last one at least ALLOWED_LATENESS_MS, 5 s, after its end), with
    // the exact counts.
    let windows = eventually("every window of the stream final", || async {
        let (status, body) = client
            .get(&format!(
                "{api}/streams/last-over/windows?since=0&limit=500"
            ))
            .await;
        if status != 200 {
            return Err(format!("{status}: {body}"));
        }
        let windows = body["windows"].as_array().cloned().unwrap_or_default();
        let mut sums: BTreeMap<String, u64> = BTreeMap::new();
        for window in &windows {
            for (emoji, n) in window["counts"].as_object().into_iter().flatten() {
                *sums.entry(emoji.clone()).or_insert(0) += n.as_u64().unwrap_or(0);
            }
        }
        let open = windows.iter().filter(|w| w["final"] != true).count();
        match (sums == expected, open) {
            (true, 0) => Ok(windows),
            _ => Err(format!(
                "{open} windows open, counts {sums:?} of {expected:?}"
            )),
        }
    })
    .await;
    assert!(!windows.is_empty());
    test.stack.stop().await;
}
