//! The real ingest binary starts under a Lambda Runtime API and answers an HTTP API event;
//! bad or missing configuration stops its init.

use emostream_local::function_process::{RunOnceError, invoke_binary_once};
use emostream_tests::patience::PATIENCE;
use emostream_tests::servers;
use std::path::Path;

fn sample(name: &str) -> Vec<u8> {
    emostream_local::sample_event(name).unwrap()
}

fn server_env() -> Vec<(String, String)> {
    vec![
        ("KAFKA_BROKERS".to_owned(), servers().kafka_brokers.clone()),
        ("MONGODB_URI".to_owned(), servers().mongodb_uri.clone()),
    ]
}

async fn invoke(env: &[(String, String)]) -> Result<Vec<u8>, RunOnceError> {
    let binary = Path::new(env!("CARGO_BIN_EXE_ingest"));
    invoke_binary_once(
        binary,
        "ingest",
        env,
        &sample("ingest-get-health.json"),
        PATIENCE,
    )
    .await
}

#[tokio::test]
async fn answers_the_health_route() {
    let answer = invoke(&server_env()).await.unwrap();
    let response: serde_json::Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(response["statusCode"], 200, "{response}");
    let body: serde_json::Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["status"], "ok");
}

#[tokio::test]
async fn refuses_to_start_with_bad_or_missing_configuration() {
    let mut bad_catalogue = server_env();
    bad_catalogue.push(("EMOJI_CATALOGUE".to_owned(), "not a catalogue".to_owned()));
    let missing_brokers = vec![("MONGODB_URI".to_owned(), "mongodb://127.0.0.1:1".to_owned())];
    for env in [bad_catalogue, missing_brokers] {
        let result = invoke(&env).await;
        assert!(
            matches!(result, Err(RunOnceError::Exited(status)) if !status.success()),
            "{env:?}: {result:?}"
        );
    }
}
