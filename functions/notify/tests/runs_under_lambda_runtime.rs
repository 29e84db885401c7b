//! The real notify binary starts under a Lambda Runtime API, with only the environment Lambda
//! gives it: it registers a connection from the sample `$connect` event, pushes the sample
//! window state to it through the management API, and reports unknown events as errors.

use emostream_local::lambda::function_process::{RunOnceError, invoke_binary_once};
use emostream_local::lambda::runtime_api::InvokeError;
use emostream_tests::connections_server::ConnectionsServer;
use emostream_tests::patience::PATIENCE;
use emostream_tests::servers;
use std::path::Path;

fn sample(name: &str) -> Vec<u8> {
    emostream_local::sample_event(name).unwrap()
}

async fn invoke(event: &[u8], env: &[(String, String)]) -> Result<serde_json::Value, RunOnceError> {
    let binary = Path::new(env!("CARGO_BIN_EXE_notify"));
    let answer = invoke_binary_once(binary, "notify", env, event, PATIENCE).await?;
    Ok(serde_json::from_slice(&answer).unwrap())
}

fn environment(server: &ConnectionsServer) -> Vec<(String, String)> {
    let mongo = servers().mongo("notify-bin");
    vec![
        ("MONGODB_URI".into(), mongo.uri),
        ("MONGODB_DATABASE".into(), mongo.database),
        ("MANAGEMENT_API_ENDPOINT".into(), server.endpoint()),
    ]
}

#[tokio::test]
async fn connects_and_pushes_window_states() {
    let server = ConnectionsServer::start().await;
    let env = environment(&server);
    let connect = invoke(&sample("notify-connect.json"), &env).await.unwrap();
    assert_eq!(connect["statusCode"], 200);
    let summary = invoke(&sample("notify-window-states.json"), &env)
        .await
        .unwrap();
    assert_eq!(summary["window_states"], 1);
    assert_eq!(summary["delivered"], 1, "{summary}");
    let frames = server.frames_to("Zx1ConnA=");
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0]["type"], "windows");
    assert_eq!(frames[0]["stream"], "match-1");
    assert_eq!(frames[0]["windows"][0]["total"], 4);
}

#[tokio::test]
async fn reports_unknown_events_and_missing_configuration_as_errors() {
    let server = ConnectionsServer::start().await;
    let result = invoke(br#"{"hello": "world"}"#, &environment(&server)).await;
    assert!(
        matches!(&result, Err(RunOnceError::Invoke(InvokeError::Function { error_message, .. })) if error_message.contains("neither")),
        "{result:?}"
    );
    let result = invoke(&sample("notify-connect.json"), &[]).await;
    assert!(
        matches!(&result, Err(RunOnceError::Exited(status)) if !status.success()),
        "{result:?}"
    );
}
