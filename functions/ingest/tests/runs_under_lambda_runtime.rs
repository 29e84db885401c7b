//! The real ingest binary starts under a Lambda Runtime API and answers an HTTP API event;
//! bad or missing configuration stops its init; its MongoDB URI may come from Secrets Manager
//! (the local stack's emulation), and a missing secret stops the init with the reason.

use emostream_local::lambda::function_process::{RunOnceError, invoke_binary_once};
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

/// The emulated Secrets Manager, holding the URI as `emostream/mongodb-uri`; its endpoint.
async fn secrets_endpoint() -> String {
    let api = emostream_local::secrets::SecretsApi::new();
    api.put_secret("emostream/mongodb-uri", &servers().mongodb_uri);
    api.spawn_local().await.unwrap()
}

fn secret_env(endpoint: &str, secret: &str) -> Vec<(String, String)> {
    vec![
        ("KAFKA_BROKERS".to_owned(), servers().kafka_brokers.clone()),
        ("MONGODB_URI_SECRET_ID".to_owned(), secret.to_owned()),
        (
            "AWS_ENDPOINT_URL_SECRETS_MANAGER".to_owned(),
            endpoint.to_owned(),
        ),
    ]
}

#[tokio::test]
async fn starts_with_its_mongodb_uri_read_from_secrets_manager() {
    let endpoint = secrets_endpoint().await;
    let answer = invoke(&secret_env(&endpoint, "emostream/mongodb-uri"))
        .await
        .unwrap();
    let response: serde_json::Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(response["statusCode"], 200, "{response}");
}

#[tokio::test]
async fn a_missing_secret_stops_the_init_with_the_reason() {
    let endpoint = secrets_endpoint().await;
    // The init fails before the runtime is asked for an event: run the binary alone and read
    // what it says.
    let (key, secret, token) = emostream_local::lambda::function_process::LOCAL_CREDENTIALS;
    // Only the function's own environment (the test's has MONGODB_URI, which would win).
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_ingest"))
        .env_clear()
        .envs(secret_env(&endpoint, "emostream/missing"))
        .env("AWS_REGION", "local")
        .env("AWS_ACCESS_KEY_ID", key)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_SESSION_TOKEN", token)
        .env("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:1")
        .env("AWS_LAMBDA_FUNCTION_NAME", "ingest")
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        said.contains("MONGODB_URI_SECRET_ID")
            && said.contains("emostream/missing")
            && said.contains("ResourceNotFoundException"),
        "{said}"
    );
}
