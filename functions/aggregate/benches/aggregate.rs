//! Decoding and aggregating one 10,000-record Kafka event, as Lambda delivers it (JSON with
//! base64 values): parse the event, decode every record, check it, cap it at the fair-use limit
//! and count it into per-window deltas. Everything the aggregate function does per batch except
//! its network round trips.
//! Run with `cargo bench -p emostream-aggregate --bench aggregate`; criterion prints records/s.

use aggregate::batch::{AtMsRange, prepare_batch};
use aws_lambda_events::event::kafka::KafkaEvent;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use reactions::DomainConfig;
use reactions::fair_use::cap_batch;
use reactions::idempotency::skip_retries;
use reactions::kafka_event::{RecordPosition, lambda_kafka_event_json, lambda_kafka_record_json};
use reactions::viewer_state;
use reactions::window_delta::window_deltas;
use std::collections::BTreeMap;
use std::hint::black_box;

const RECORDS: usize = 10_000;

fn event_json() -> String {
    let emojis = ["fire", "clap", "joy", "heart", "party"];
    let records = (0..RECORDS)
        .map(|i| {
            let stream = format!("match-{}", i % 20);
            let value = format!(
                r#"{{"v":1,"stream":"{stream}","user":"viewer-{i}","emoji":"{}","count":{},"at_ms":{}}}"#,
                emojis[i % emojis.len()],
                1 + i % 5,
                1_767_225_600_000 + (i as i64 * 7) % 10_000
            );
            let position = RecordPosition {
                topic: "emoji-reaction-topic".into(),
                partition: (i % 6) as i32,
                offset: i as i64,
                generation: 0,
            };
            lambda_kafka_record_json(&position, 0, Some(stream.as_bytes()), Some(value.as_bytes()), &[])
        })
        .collect();
    lambda_kafka_event_json("aws:kafka", "b-1:9098", records).to_string()
}

fn aggregate(c: &mut Criterion) {
    let config = DomainConfig::from_settings(&[]).expect("default config");
    let json = event_json();
    let mut group = c.benchmark_group("aggregate");
    group.throughput(Throughput::Elements(RECORDS as u64));
    group.sample_size(20);
    group.bench_function("decode_and_count_10000_records", |b| {
        b.iter(|| {
            let event: KafkaEvent = serde_json::from_str(black_box(&json)).expect("event");
            let range = AtMsRange {
                lateness_ms: 5_000,
                skew_ms: 1_000,
            };
            let batch = prepare_batch(&event, range);
            assert_eq!(batch.reactions.len(), RECORDS);
            // Retries taken out and fair use at its default, against no stored viewer states
            // (each batch's first read).
            let stored = BTreeMap::new();
            let deduplicated = skip_retries(batch.reactions, &stored);
            let capped = cap_batch(
                deduplicated.reactions,
                config.window_width,
                40,
                8_000,
                &stored,
            );
            let deltas = window_deltas(
                capped.reactions.iter().map(|(p, r)| (p, r)),
                config.window_width,
            );
            let writes = viewer_state::writes(&stored, deduplicated.changes, capped.changes);
            black_box((deltas.len(), writes.len()))
        })
    });
    group.finish();
}

criterion_group!(benches, aggregate);
criterion_main!(benches);
