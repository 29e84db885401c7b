//! The real aggregate binary starts under a Lambda Runtime API and handles both Kafka event
//! shapes (MSK and self-managed) against the real servers, dead-lettering the malformed record.

use emostream_local::function_process::invoke_binary_once;
use emostream_tests::patience::PATIENCE;
use emostream_tests::{servers, unique_name};
use std::path::Path;

#[tokio::test]
async fn handles_msk_and_self_managed_events() {
    let binary = Path::new(env!("CARGO_BIN_EXE_aggregate"));
    // Topics are never created by naming them (as on MSK): create both first.
    let (output, dead_letters) = (unique_name("binary-output"), unique_name("binary-dlq"));
    let kafka = reactions::kafka::KafkaSettings::new(servers().kafka_brokers.clone(), "test");
    let topics = [&output, &dead_letters].map(|name| reactions::kafka::TopicSpec {
        name: name.clone(),
        partitions: 1,
    });
    reactions::kafka::ensure_topics(&kafka, &topics, PATIENCE)
        .await
        .unwrap();
    let env: Vec<(String, String)> = vec![
        ("KAFKA_BROKERS".into(), servers().kafka_brokers.clone()),
        ("MONGODB_URI".into(), servers().mongodb_uri.clone()),
        (
            "MONGODB_DATABASE".into(),
            servers().mongo("binary").database,
        ),
        ("OUTPUT_TOPIC".into(), output),
        ("DEAD_LETTER_TOPIC".into(), dead_letters),
    ];
    let mut summaries = Vec::new();
    for event in ["aggregate-self-managed-kafka.json", "aggregate-msk.json"] {
        let sample = emostream_local::sample_event(event).unwrap();
        let answer = invoke_binary_once(binary, "aggregate", &env, &sample, PATIENCE)
            .await
            .unwrap();
        summaries.push(serde_json::from_slice::<serde_json::Value>(&answer).unwrap());
    }
    let first = &summaries[0];
    assert_eq!(
        (
            &first["records"],
            &first["reactions"],
            &first["dead_lettered"],
            &first["windows"]
        ),
        (&5.into(), &4.into(), &1.into(), &3.into())
    );
    assert_eq!(first["taps_applied"], 11);
    assert_eq!(first["states_published"], 3);
    // The MSK sample carries the same records: a replay, so nothing more is counted.
    assert_eq!(summaries[1]["taps_applied"], 0);
    assert_eq!(summaries[1]["replays_skipped"], 3);
}
