//! The real ingest binary starts under a Lambda Runtime API and answers an HTTP API event.

use emostream_local::function_process::{RunOnceError, invoke_binary_once};
use std::path::Path;
use std::time::Duration;

fn sample(name: &str) -> Vec<u8> {
    emostream_local::sample_event(name).unwrap()
}

#[tokio::test]
async fn answers_the_health_route() {
    let binary = Path::new(env!("CARGO_BIN_EXE_ingest"));
    let answer = invoke_binary_once(
        binary,
        "ingest",
        &[],
        &sample("ingest-get-health.json"),
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    let response: serde_json::Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(response["statusCode"], 200, "{response}");
    let body: serde_json::Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["emojis"], 10);
}

#[tokio::test]
async fn refuses_to_start_with_a_bad_catalogue() {
    let binary = Path::new(env!("CARGO_BIN_EXE_ingest"));
    let env = [("EMOJI_CATALOGUE".to_owned(), "not a catalogue".to_owned())];
    let result = invoke_binary_once(
        binary,
        "ingest",
        &env,
        &sample("ingest-get-health.json"),
        Duration::from_secs(20),
    )
    .await;
    assert!(
        matches!(result, Err(RunOnceError::Exited(status)) if !status.success()),
        "{result:?}"
    );
}
