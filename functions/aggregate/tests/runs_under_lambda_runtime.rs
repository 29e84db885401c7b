//! The real aggregate binary starts under a Lambda Runtime API and handles both Kafka event
//! shapes (MSK and self-managed) against the real servers, dead-lettering the malformed record,
//! and the scheduled finalize tick, which then finalizes the batches' windows.

use emostream_local::lambda::function_process::invoke_binary_once;
use emostream_tests::patience::PATIENCE;
use emostream_tests::{servers, unique_name};
use std::path::Path;

#[tokio::test]
async fn handles_msk_and_self_managed_events() {
    let binary = Path::new(env!("CARGO_BIN_EXE_aggregate"));
    // Topics are never created by naming them (as on MSK): create both first.
    let (output, dead_letters) = (unique_name("binary-output"), unique_name("binary-dlq"));
    // The tick's input topic: empty, so every partition of it is counted to its end.
    let input = unique_name("binary-input");
    let kafka = reactions::kafka::KafkaSettings::new(servers().kafka_brokers.clone(), "test");
    let topics = [&output, &dead_letters, &input].map(|name| reactions::kafka::TopicSpec {
        name: name.clone(),
        partitions: 1,
    });
    reactions::kafka::ensure_topics(&kafka, &topics, PATIENCE)
        .await
        .unwrap();
    let mut env: Vec<(String, String)> = vec![
        ("KAFKA_BROKERS".into(), servers().kafka_brokers.clone()),
        ("MONGODB_URI".into(), servers().mongodb_uri.clone()),
        (
            "MONGODB_DATABASE".into(),
            servers().mongo("binary").database,
        ),
        ("OUTPUT_TOPIC".into(), output),
        ("DEAD_LETTER_TOPIC".into(), dead_letters),
        // The samples' topic is shared with other tests: no batch finalizes anything here.
        ("ALLOWED_LATENESS_MS".into(), "10000000000000".into()),
        // The samples' windows (January 2026) are kept, not skipped as expired.
        (
            "WINDOW_RETENTION_HOURS".into(),
            emostream_tests::fixtures::FIXTURE_RETENTION_HOURS.into(),
        ),
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

    // The tick, on a topic fully counted: the samples' three windows (January 2026) are final.
    env.retain(|(name, _)| name != "ALLOWED_LATENESS_MS");
    env.push(("REACTION_TOPIC".into(), input));
    let tick = emostream_local::sample_event("aggregate-finalize-tick.json").unwrap();
    let answer = invoke_binary_once(binary, "aggregate", &env, &tick, PATIENCE)
        .await
        .unwrap();
    let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(answer, serde_json::json!({"windows_finalized": 3}));
}
