//! The local stack's forwarding to an external Lambda Invoke API, against AWS's own Lambda
//! Runtime Interface Emulator (shipped with SAM CLI, installed by local/aws-tools.sh) running
//! the real ingest binary: responses come back, and a function error is reported as one.

use emostream_local::lambda::runtime_api::InvokeError;
use emostream_local::lambda::{FunctionPool, Runner};
use emostream_tests::local_stack::function_binaries;
use emostream_tests::patience::{PATIENCE, wait_for_listener};
use emostream_tests::{aws_tool, closed_port, servers};

fn emulator() -> String {
    aws_tool("RIE")
}

#[tokio::test]
async fn invocations_are_forwarded_to_the_runtime_interface_emulator() {
    let port = closed_port();
    let mut emulator = tokio::process::Command::new(emulator())
        .arg("--runtime-interface-emulator-address")
        .arg(format!("127.0.0.1:{port}"))
        .arg(function_binaries().join("ingest"))
        .env("KAFKA_BROKERS", &servers().kafka_brokers)
        .env("MONGODB_URI", &servers().mongodb_uri)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the emulator");
    let pool = FunctionPool::new(
        "IngestFunction",
        Runner::InvokeApi {
            endpoint: format!("http://127.0.0.1:{port}"),
            // The emulator serves one function, always named `function`.
            name: "function".into(),
        },
        PATIENCE,
        1,
    );
    // The emulator takes a moment to listen, longer on a busy machine.
    wait_for_listener(&format!("127.0.0.1:{port}")).await;
    let health = emostream_local::sample_event("ingest-get-health.json").unwrap();
    let answer = pool.invoke(&health).await;
    let answer: serde_json::Value = serde_json::from_slice(&answer.unwrap()).unwrap();
    assert_eq!(answer["statusCode"], 200, "{answer}");
    assert!(answer["body"].as_str().unwrap().contains("ok"));

    let error = pool.invoke(br#"{"not": "an HTTP API event"}"#).await;
    assert!(
        matches!(&error, Err(InvokeError::Function { error_message, .. }) if error_message.contains("deserialize")),
        "{error:?}"
    );
    emulator.kill().await.ok();
}
