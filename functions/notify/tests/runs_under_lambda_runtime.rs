//! The real notify binary starts under a Lambda Runtime API and tells its two event kinds apart.

use emostream_local::function_process::{RunOnceError, invoke_binary_once};
use emostream_local::runtime_api::InvokeError;
use std::path::Path;
use std::time::Duration;

fn sample(name: &str) -> Vec<u8> {
    emostream_local::sample_event(name).unwrap()
}

async fn invoke(event: &[u8]) -> Result<serde_json::Value, RunOnceError> {
    let binary = Path::new(env!("CARGO_BIN_EXE_notify"));
    let answer = invoke_binary_once(binary, "notify", &[], event, Duration::from_secs(20)).await?;
    Ok(serde_json::from_slice(&answer).unwrap())
}

#[tokio::test]
async fn handles_websocket_routes_and_window_states() {
    let connect = invoke(&sample("notify-connect.json")).await.unwrap();
    assert_eq!(connect["statusCode"], 200);
    let states = invoke(&sample("notify-window-states.json")).await.unwrap();
    assert_eq!(
        states,
        serde_json::json!({"window_states": 1, "malformed": 0})
    );
}

#[tokio::test]
async fn reports_unknown_events_as_function_errors() {
    let result = invoke(br#"{"hello": "world"}"#).await;
    assert!(
        matches!(&result, Err(RunOnceError::Invoke(InvokeError::Function { error_message, .. })) if error_message.contains("neither")),
        "{result:?}"
    );
}
