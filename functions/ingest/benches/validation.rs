//! Validation throughput at the edge: how many reactions per second `POST /reactions` can parse
//! and validate (JSON parsing, shape checks, ids, catalogue lookup, bounds) on one core, before
//! any Kafka work. Run with `cargo bench -p emostream-ingest --bench validation`.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ingest::reactions_body::parse_reactions;
use reactions::DomainConfig;
use std::hint::black_box;

fn batch_body(size: usize) -> Vec<u8> {
    let glyphs = ["fire", "👏", "joy", "❤️", "party"];
    let items: Vec<String> = (0..size)
        .map(|i| {
            format!(
                r#"{{"stream_id":"match-{}","user_id":"viewer-{i}","emoji":"{}","count":{}}}"#,
                i % 20,
                glyphs[i % glyphs.len()],
                1 + i % 9
            )
        })
        .collect();
    format!(r#"{{"reactions":[{}]}}"#, items.join(",")).into_bytes()
}

fn validation(c: &mut Criterion) {
    let config = DomainConfig::from_settings(&[]).expect("default config");
    let mut group = c.benchmark_group("validate");
    for size in [1_usize, 500] {
        let body = batch_body(size);
        group.throughput(Throughput::Elements(size as u64));
        group.bench_function(format!("batch_of_{size}"), |b| {
            b.iter_batched(
                || body.clone(),
                |body| {
                    let reactions = parse_reactions(
                        Some("application/json"),
                        black_box(&body),
                        &config,
                        1 << 20,
                        1_700_000_000_000,
                    )
                    .expect("valid batch");
                    black_box(reactions.len())
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, validation);
criterion_main!(benches);
