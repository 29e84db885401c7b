//! The real aggregate binary starts under a Lambda Runtime API and decodes both Kafka event
//! shapes (MSK and self-managed), counting malformed records instead of failing.

use emostream_local::function_process::invoke_binary_once;
use std::path::Path;
use std::time::Duration;

fn sample(name: &str) -> Vec<u8> {
    emostream_local::sample_event(name).unwrap()
}

#[tokio::test]
async fn decodes_msk_and_self_managed_events() {
    let binary = Path::new(env!("CARGO_BIN_EXE_aggregate"));
    for event in ["aggregate-self-managed-kafka.json", "aggregate-msk.json"] {
        let answer = invoke_binary_once(
            binary,
            "aggregate",
            &[],
            &sample(event),
            Duration::from_secs(20),
        )
        .await
        .unwrap();
        let summary: serde_json::Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(
            summary,
            serde_json::json!({"reactions": 4, "malformed": 1, "windows": 3}),
            "{event}"
        );
    }
}
