//! Prints the fan-out rate: pushes per second from one notify container to the connections of
//! one stream (`FANOUT_CONNECTIONS`, default 10,000), against the real MongoDB-wire server (the
//! by-stream cursor) and the test `@connections` server answering each post after
//! `POST_LATENCY_MS` (default 10, like a `PostToConnection` from Lambda in AWS), with the default
//! concurrency of 128 (`FANOUT_CONCURRENCY`) and deadline of 20 s. Run with `make bench`.

use aws_config::{BehaviorVersion, Region};
use aws_lambda_events::event::kafka::KafkaEvent;
use aws_sdk_apigatewaymanagement::config::Credentials;
use emostream_tests::connections_server::ConnectionsServer;
use emostream_tests::servers;
use futures::StreamExt;
use notify::Notify;
use notify::config::NotifyConfig;
use reactions::kafka_event::{RecordPosition, lambda_kafka_event_json, lambda_kafka_record_json};
use reactions::message::VersionedMessage;
use reactions::mongo::{ConnectionStore, connect};
use reactions::{EmojiName, StreamId, WindowStateRecord};
use std::time::{Duration, Instant};

const ROUNDS: usize = 5;

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn window_state(stream: &StreamId, total: u64) -> WindowStateRecord {
    let counts: reactions::EmojiCounts = [(EmojiName::parse("fire").expect("emoji"), total)]
        .into_iter()
        .collect();
    WindowStateRecord {
        v: 1,
        stream: stream.clone(),
        start_ms: 0,
        end_ms: 2_000,
        swarm: reactions::SwarmRule::default().downscale(&counts),
        counts,
        total,
        is_final: false,
        updated_at_ms: total as i64,
    }
}

fn batch(state: &WindowStateRecord) -> KafkaEvent {
    let position = RecordPosition {
        topic: "emoji-output-topic".into(),
        partition: 0,
        offset: state.total as i64,
    };
    let record = lambda_kafka_record_json(&position, 0, None, Some(&state.encode()), &[]);
    serde_json::from_value(lambda_kafka_event_json(
        "SelfManagedKafka",
        "local",
        vec![record],
    ))
    .expect("a Kafka event")
}

#[tokio::main]
async fn main() {
    let connections = setting("FANOUT_CONNECTIONS", 10_000) as usize;
    let concurrency = setting("FANOUT_CONCURRENCY", 128).to_string();
    let latency = Duration::from_millis(setting("POST_LATENCY_MS", 10));
    let server = ConnectionsServer::start().await;
    server.set_latency(latency);
    let mongo = servers().mongo("fanout-bench");
    let endpoint = server.endpoint();
    let settings = [
        ("MONGODB_URI", mongo.uri.as_str()),
        ("MONGODB_DATABASE", mongo.database.as_str()),
        ("MANAGEMENT_API_ENDPOINT", endpoint.as_str()),
        // Every round is pushed at once: this measures the fan-out, not the schedule.
        ("PUSH_INTERVAL_MS", "0"),
        ("FANOUT_CONCURRENCY", concurrency.as_str()),
    ];
    let config = NotifyConfig::from_settings(&settings).expect("configuration");
    let concurrency = config.fanout_concurrency;
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("local"))
        .credentials_provider(Credentials::new("local", "local", None, None, "bench"))
        .load()
        .await;
    let notify = Notify::new(config, &sdk).await.expect("notify");

    let database = connect(&mongo, "fanout-bench").await.expect("MongoDB");
    let store = ConnectionStore::new(&database, Duration::from_secs(7_800));
    let stream = StreamId::parse("stream", "bench").expect("stream id");
    let started = Instant::now();
    futures::stream::iter(0..connections)
        .map(|i| {
            let (store, stream) = (&store, &stream);
            async move {
                let id = format!("bench-{i:05}");
                // Connected now: a connection time in the past would put `expires_at` in the
                // past too, and the TTL sweep would delete connections mid-benchmark.
                let connected = reactions::clock::now_ms() - 60_000;
                store
                    .register(&id, stream, connected)
                    .await
                    .expect("register");
            }
        })
        .buffer_unordered(32)
        .collect::<()>()
        .await;
    println!(
        "registered {connections} connections in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let mut rates = Vec::new();
    for round in 1..=ROUNDS {
        server.clear_posts();
        let event = batch(&window_state(&stream, round as u64));
        let started = Instant::now();
        let summary = notify.handle_batch(&event).await.expect("fan-out");
        let seconds = started.elapsed().as_secs_f64();
        let report = &summary.fanout;
        assert_eq!(
            report.delivered + report.deadline_missed,
            connections,
            "{summary:?}"
        );
        let rate = report.delivered as f64 / seconds;
        println!(
            "round {round}: {} pushes in {seconds:.3} s = {rate:.0} pushes/s, {} missed the deadline",
            report.delivered, report.deadline_missed
        );
        rates.push(rate);
    }
    rates.sort_by(f64::total_cmp);
    // notify and the test server share this process: its peak bounds notify's.
    let peak_rss_mb = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kib| kib / 1_024.0);
    println!(
        "peak RSS of the process (notify and the test @connections server): {peak_rss_mb:.1} MB"
    );
    println!(
        "fan-out to {connections} connections at {latency:?} per post, concurrency {concurrency}: median {:.0} pushes/s (best {:.0})",
        rates[ROUNDS / 2],
        rates[ROUNDS - 1]
    );
}
