//! Prints the fan-out rate: pushes per second from one notify container to the connections of
//! one stream (`FANOUT_CONNECTIONS`, default 10,000), against the real MongoDB-wire server (the
//! by-stream cursor) and the test `@connections` server answering each post after
//! `POST_LATENCY_MS` (default 10, like a `PostToConnection` from Lambda in AWS), with the default
//! concurrency of 128 (`FANOUT_CONCURRENCY`) and deadline of 20 s. Run with `make bench`.
//!
//! The test server runs on a thread of its own, so the CPU time notify spends per post can be
//! told apart from the server's. Lambda gives a function CPU in proportion to its memory (one
//! vCPU at 1,769 MB), so that figure, not this machine's rate, bounds the fan-out in AWS: the
//! benchmark prints what it implies at notify's memory size in template.yaml.

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

/// Lambda's CPU share per MB of memory: one vCPU at 1,769 MB ("Lambda function memory",
/// AWS Lambda Developer Guide).
const MB_PER_VCPU: f64 = 1_769.0;

/// CPU seconds (user, system) from a `/proc/.../stat` line.
fn cpu_seconds(stat_path: &str) -> (f64, f64) {
    let stat = std::fs::read_to_string(stat_path).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may contain spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name and state.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) / 100.0, ticks(12) / 100.0)
}

/// notify's memory size, as template.yaml gives it (the global size unless notify sets one).
fn notify_memory_mb() -> f64 {
    let root = emostream_tests::repo_root();
    emostream_local::template::StackTemplate::load_local(
        &root.join("template.yaml"),
        &Default::default(),
    )
    .ok()
    .and_then(|t| t.functions.get("NotifyFunction").map(|f| f.memory_mb))
    .map_or(f64::NAN, f64::from)
}

/// Starts the test server on a thread and runtime of its own; returns it with that thread's
/// `/proc` stat path.
fn server_on_its_own_thread() -> (ConnectionsServer, String) {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            let server = ConnectionsServer::start().await;
            let thread = std::fs::read_link("/proc/thread-self")
                .map(|p| format!("/proc/{}/stat", p.display()))
                .unwrap_or_default();
            sender.send((server, thread)).ok();
            std::future::pending::<()>().await;
        });
    });
    receiver.recv().expect("the server starts")
}

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
        generation: 0,
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
    let (server, server_stat) = server_on_its_own_thread();
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
    let mut cpu_per_post_us = Vec::new();
    for round in 1..=ROUNDS {
        server.clear_posts();
        let event = batch(&window_state(&stream, round as u64));
        let (process_cpu, server_cpu) = (cpu_seconds("/proc/self/stat"), cpu_seconds(&server_stat));
        let started = Instant::now();
        let summary = notify.handle_batch(&event).await.expect("fan-out");
        let seconds = started.elapsed().as_secs_f64();
        let (process_after, server_after) =
            (cpu_seconds("/proc/self/stat"), cpu_seconds(&server_stat));
        let notify_user = (process_after.0 - process_cpu.0) - (server_after.0 - server_cpu.0);
        let notify_system = (process_after.1 - process_cpu.1) - (server_after.1 - server_cpu.1);
        let notify_cpu = notify_user + notify_system;
        let report = &summary.fanout;
        assert_eq!(
            report.delivered + report.deadline_missed,
            connections,
            "{summary:?}"
        );
        let rate = report.delivered as f64 / seconds;
        let per_post_us = notify_cpu * 1e6 / report.posts.max(1) as f64;
        println!(
            "round {round}: {} pushes in {seconds:.3} s = {rate:.0} pushes/s, {} missed the deadline; notify used {notify_cpu:.2} CPU s ({per_post_us:.0} us per post, {:.0}% in the kernel)",
            report.delivered,
            report.deadline_missed,
            100.0 * notify_system / notify_cpu.max(1e-9)
        );
        rates.push(rate);
        cpu_per_post_us.push(per_post_us);
    }
    cpu_per_post_us.sort_by(f64::total_cmp);
    rates.sort_by(f64::total_cmp);
    // notify and the test server share this process: its peak bounds notify's.
    let peak_rss_mb = emostream_local::lambda::peak_rss_kib(std::process::id())
        .map_or(f64::NAN, |kib| kib as f64 / 1_024.0);
    println!(
        "peak RSS of the process (notify and the test @connections server): {peak_rss_mb:.1} MB"
    );
    println!(
        "fan-out to {connections} connections at {latency:?} per post, concurrency {concurrency}: median {:.0} pushes/s (best {:.0})",
        rates[ROUNDS / 2],
        rates[ROUNDS - 1]
    );
    let per_post_us = cpu_per_post_us[ROUNDS / 2];
    let memory_mb = notify_memory_mb();
    // CPU grows with memory past one vCPU too (six at 10,240 MB); notify's runtime uses them all.
    let vcpu = memory_mb / MB_PER_VCPU;
    // In AWS a fan-out is bounded by the slower of its CPU and its post latency.
    let cpu_bound = per_post_us / 1e6 / vcpu;
    let latency_bound = latency.as_secs_f64() / concurrency as f64;
    println!(
        "notify CPU per post: median {per_post_us:.0} us. In Lambda at notify's {memory_mb:.0} MB ({vcpu:.2} vCPU) that allows at most {:.0} posts/s: {connections} connections take at least {:.2} s per fan-out",
        1.0 / cpu_bound.max(latency_bound),
        connections as f64 * cpu_bound.max(latency_bound),
    );
    let needed_mb = connections as f64 * per_post_us / 1e6 / 1.5 * MB_PER_VCPU;
    println!(
        "memory notify needs for the CPU of {connections} posts within 1.5 s: {needed_mb:.0} MB (NotifyMemorySize)"
    );
}
