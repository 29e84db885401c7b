//! The drain benchmark: how fast aggregate empties a backlog. A backlog of reaction records is
//! produced first (one or more streams, keyed as ingest keys them with `STREAM_SHARDS`), then
//! the release aggregate binary is driven by the local stack's own event source mapping (one
//! invocation loop per partition, commit after success), exactly as in a running stack. It
//! reports the steady drain rate, MongoDB round trips and time per batch from the function's
//! own `batch applied` log lines, and checks that the stored counts equal what was produced.

use emostream_local::event_source::{EventSourceMapping, MappingOptions};
use emostream_local::lambda::environment::LocalValues;
use emostream_local::lambda::{FunctionPool, Runner};
use emostream_local::template::StackTemplate;
use indicatif::ProgressBar;
use reactions::idempotency::{IdempotencyKey, TapKey};
use reactions::kafka::{AckedProducer, KafkaSettings, OutgoingRecord, TopicSpec, ensure_topics};
use reactions::message::{ReactionRecord, VersionedMessage};
use reactions::mongo::{MongoSettings, WindowStore, connect};
use reactions::{EmojiName, Reaction, StreamId, StreamShards, UserId};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// What to drain.
#[derive(Debug, Clone)]
pub struct DrainPlan {
    pub template: PathBuf,
    pub binaries: PathBuf,
    pub kafka_brokers: String,
    pub mongodb_uri: String,
    pub records: u64,
    pub streams: u32,
    pub partitions: i32,
    pub shards: u16,
    pub batch_size: usize,
    /// Distinct viewers per stream.
    pub viewers: u32,
    /// Reactions per second of event time the backlog stands for (sets how many windows it
    /// spans).
    pub event_rate: u64,
    /// Fair use's limit for the function (`MAX_TAPS_PER_VIEWER_PER_WINDOW`; 0: off).
    pub max_taps_per_viewer: u64,
    /// Whether each record carries an idempotency key (a request of its own, as the page
    /// sends them), so aggregate keeps the viewers' keys too.
    pub keyed: bool,
    /// Where the function's output goes.
    pub logs: PathBuf,
}

/// What the drain measured.
#[derive(Debug, Clone, Serialize)]
pub struct DrainReport {
    pub records: u64,
    pub streams: u32,
    pub partitions: i32,
    pub stream_shards: u16,
    pub batch_size: usize,
    /// Whether the records carried idempotency keys.
    pub keyed: bool,
    pub produce_seconds: f64,
    /// From the first committed batch to the last.
    pub drain_seconds: f64,
    pub records_per_second: f64,
    pub batches: u64,
    pub peak_concurrent_invocations: u64,
    pub mongo_round_trips_per_batch: f64,
    /// Window update statements per batch (one per window touched).
    pub window_statements_per_batch: f64,
    /// Viewer state update statements per batch (fair use's counts and the idempotency keys;
    /// one per stream and viewer).
    pub viewer_state_statements_per_batch: f64,
    /// Means over the batches, as the function measured them.
    pub function_ms_per_batch: f64,
    pub mongo_ms_per_batch: f64,
    pub publish_ms_per_batch: f64,
    pub taps_produced: u64,
    pub taps_stored: u64,
    pub exact: bool,
}

/// Why the drain could not run.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    #[error("{0}")]
    Setup(String),
    #[error("the backlog was not drained: {0}")]
    Stalled(String),
}

fn setup<E: std::fmt::Display>(what: &str) -> impl Fn(E) -> DrainError + '_ {
    move |e| DrainError::Setup(format!("{what}: {e}"))
}

const EMOJIS: [&str; 5] = ["fire", "clap", "joy", "heart", "party"];

/// The `i`th record of the backlog, and its taps.
fn backlog_record(
    plan: &DrainPlan,
    streams: &[StreamId],
    i: u64,
    start_ms: i64,
) -> (OutgoingRecord, u64) {
    let stream = &streams[(i % streams.len() as u64) as usize];
    let user = UserId::parse(
        "user_id",
        &format!("viewer-{}", i % u64::from(plan.viewers)),
    )
    .expect("generated viewer ids are valid");
    let count = 1 + (i % 5) as u32;
    let at_ms = start_ms + (i * 1_000 / plan.event_rate.max(1)) as i64;
    let reaction = Reaction {
        stream: stream.clone(),
        user: user.clone(),
        emoji: EmojiName::parse(EMOJIS[(i % EMOJIS.len() as u64) as usize])
            .expect("catalogue names are valid"),
        count,
        at_ms,
        // Each record a request of its own: the most keys per viewer for the records.
        key: plan.keyed.then(|| TapKey {
            key: IdempotencyKey::parse(format!("drain:{i}").as_bytes())
                .map(|key| key.id())
                .unwrap_or_default(),
            item: 0,
            body: i as i64,
        }),
        fair_use_limit: None,
    };
    // Encoded as ingest encodes it (the record version follows the key).
    let record = ReactionRecord::from(&reaction);
    // Keyed and partitioned as ingest does it.
    let shards = StreamShards::new(plan.shards);
    let mut outgoing = OutgoingRecord::new(shards.key(stream, &user), record.encode());
    outgoing.partition = shards.partition(stream, &user, Some(plan.partitions));
    // As ingest would have produced it: just after stamping it (aggregate checks the two
    // agree).
    outgoing.timestamp_ms = Some(at_ms);
    (outgoing, u64::from(count))
}

fn bar(length: u64, what: &str) -> ProgressBar {
    crate::progress_bar(
        length,
        &format!("{what} {{bar:40}} {{pos}}/{{len}} records ({{per_sec}}, {{elapsed}})"),
    )
}

/// Means of the function's `batch applied` lines in `log`.
#[derive(Debug, Default)]
struct BatchLines {
    batches: u64,
    round_trips: f64,
    window_statements: f64,
    viewer_state_statements: f64,
    function_ms: f64,
    mongo_ms: f64,
    publish_ms: f64,
}

fn read_batch_lines(log: &Path) -> BatchLines {
    let mut lines = BatchLines::default();
    let text = std::fs::read_to_string(log).unwrap_or_default();
    for line in text.lines() {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if value["message"] != "batch applied" {
            continue;
        }
        let number = |field: &str| value[field].as_f64().unwrap_or(0.0);
        lines.batches += 1;
        lines.round_trips += number("mongo_round_trips");
        lines.window_statements += number("window_statements");
        lines.viewer_state_statements += number("viewer_state_statements");
        lines.function_ms += number("batch_ms");
        lines.mongo_ms += number("mongo_ms");
        lines.publish_ms += number("publish_ms");
    }
    let n = lines.batches.max(1) as f64;
    BatchLines {
        batches: lines.batches,
        round_trips: lines.round_trips / n,
        window_statements: lines.window_statements / n,
        viewer_state_statements: lines.viewer_state_statements / n,
        function_ms: lines.function_ms / n,
        mongo_ms: lines.mongo_ms / n,
        publish_ms: lines.publish_ms / n,
    }
}

/// Produces the backlog, drains it with the aggregate function, and checks the counts.
pub async fn drain(plan: &DrainPlan) -> Result<DrainReport, DrainError> {
    let run = format!(
        "drain-{}-{}",
        std::process::id(),
        reactions::clock::now_ms()
    );
    let topics = [
        ("ReactionTopic", format!("{run}-reactions")),
        ("OutputTopic", format!("{run}-states")),
        ("DeadLetterTopic", format!("{run}-dlq")),
    ];
    let mut local = LocalValues::default();
    for (parameter, topic) in &topics {
        local.parameters.insert((*parameter).into(), topic.clone());
    }
    local
        .parameters
        .insert("BatchSize".into(), plan.batch_size.to_string());
    let limit = plan.max_taps_per_viewer.to_string();
    for (name, value) in [
        ("MAX_TAPS_PER_VIEWER_PER_WINDOW", limit.as_str()),
        ("KAFKA_BROKERS", plan.kafka_brokers.as_str()),
        ("KAFKA_SECURITY", "none"),
        ("MONGODB_URI", plan.mongodb_uri.as_str()),
        ("MONGODB_DATABASE", run.as_str()),
    ] {
        local.variables.insert(name.into(), value.into());
    }
    let template = StackTemplate::load_local(&plan.template, &local.parameters)
        .map_err(setup("reading the template"))?;
    let spec = template
        .functions
        .get("AggregateFunction")
        .ok_or_else(|| DrainError::Setup("no AggregateFunction in the template".into()))?;
    let mapping = template
        .local_mappings()
        .into_iter()
        .find(|m| m.function == "AggregateFunction")
        .ok_or_else(|| DrainError::Setup("no event source mapping for aggregate".into()))?;
    let environment = local
        .environment_of(&template, spec)
        .map_err(setup("aggregate's environment"))?;
    let binary = plan.binaries.join(&spec.binary);
    if !binary.is_file() {
        return Err(DrainError::Setup(format!(
            "no aggregate binary at {} (cargo build --release --bin aggregate)",
            binary.display()
        )));
    }

    let kafka = KafkaSettings::new(&plan.kafka_brokers, "emostream-drain");
    let specs: Vec<TopicSpec> = topics
        .iter()
        .map(|(_, name)| TopicSpec {
            name: name.clone(),
            partitions: plan.partitions,
        })
        .collect();
    ensure_topics(&kafka, &specs, Duration::from_secs(15))
        .await
        .map_err(setup("creating the topics"))?;

    // The backlog.
    let streams: Vec<StreamId> = (0..plan.streams.max(1))
        .map(|s| StreamId::parse("stream_id", &format!("{run}-{s}")).expect("valid stream id"))
        .collect();
    let producer =
        AckedProducer::new(&kafka, Duration::from_secs(30)).map_err(setup("the producer"))?;
    let start_ms = reactions::clock::now_ms() - 3_600_000;
    let produced = Instant::now();
    let progress = bar(plan.records, "producing");
    let mut taps_produced = 0;
    let mut next = 0;
    while next < plan.records {
        let end = (next + 10_000).min(plan.records);
        let chunk: Vec<OutgoingRecord> = (next..end)
            .map(|i| {
                let (record, taps) = backlog_record(plan, &streams, i, start_ms);
                taps_produced += taps;
                record
            })
            .collect();
        producer
            .produce_all(&mapping.topic, &chunk, Duration::from_secs(30))
            .await
            .map_err(setup("producing the backlog"))?;
        progress.inc(end - next);
        next = end;
    }
    progress.finish();
    let produce_seconds = produced.elapsed().as_secs_f64();

    // The drain.
    let log = plan.logs.join("AggregateFunction.log");
    std::fs::create_dir_all(&plan.logs).map_err(setup("creating the log directory"))?;
    std::fs::remove_file(&log).ok();
    let pool = FunctionPool::new(
        "AggregateFunction",
        Runner::Processes {
            binary,
            environment,
            log_file: Some(log.clone()),
        },
        spec.timeout,
        plan.partitions.max(1) as usize,
    );
    let (shutdown, watch_shutdown) = tokio::sync::watch::channel(false);
    let mapping = EventSourceMapping::start(
        mapping,
        &plan.kafka_brokers,
        Arc::clone(&pool),
        MappingOptions {
            batching_window: Some(Duration::ZERO),
            ..MappingOptions::default()
        },
        watch_shutdown,
    )
    .map_err(setup("starting the event source mapping"))?;
    let stats = Arc::clone(&mapping.stats);
    let progress = bar(plan.records, "draining ");
    let mut first: Option<(Instant, u64)> = None;
    let mut last_progress = Instant::now();
    let mut seen = 0;
    loop {
        let records = stats.records.load(Ordering::Relaxed);
        if records != seen {
            seen = records;
            last_progress = Instant::now();
            progress.set_position(records);
        }
        if first.is_none() && records > 0 {
            first = Some((Instant::now(), records));
        }
        if records >= plan.records {
            break;
        }
        if last_progress.elapsed() > Duration::from_secs(120) {
            shutdown.send(true).ok();
            return Err(DrainError::Stalled(format!(
                "{records} of {} records after two minutes without progress; see {}",
                plan.records,
                log.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let finished = Instant::now();
    progress.finish();
    shutdown.send(true).ok();
    mapping.stopped().await;
    pool.shutdown().await;
    let (first_at, first_records) = first.unwrap_or((finished, 0));
    let drain_seconds = finished.duration_since(first_at).as_secs_f64();

    // The counts.
    let database = connect(
        &MongoSettings {
            uri: plan.mongodb_uri.clone(),
            database: run.clone(),
        },
        "emostream-drain",
    )
    .await
    .map_err(setup("connecting to MongoDB"))?;
    let store = WindowStore::new(&database);
    let mut taps_stored = 0;
    for stream in &streams {
        for window in store
            .list_windows(stream, Some(0), 10_000)
            .await
            .map_err(setup("reading the windows"))?
            .windows
        {
            taps_stored += window.total;
        }
    }
    database.drop().await.ok();

    let lines = read_batch_lines(&log);
    Ok(DrainReport {
        records: plan.records,
        streams: plan.streams,
        partitions: plan.partitions,
        stream_shards: plan.shards,
        batch_size: plan.batch_size,
        keyed: plan.keyed,
        produce_seconds,
        drain_seconds,
        records_per_second: (plan.records - first_records) as f64 / drain_seconds.max(1e-9),
        batches: stats.batches.load(Ordering::Relaxed),
        peak_concurrent_invocations: stats.peak_in_flight.load(Ordering::Relaxed),
        mongo_round_trips_per_batch: lines.round_trips,
        window_statements_per_batch: lines.window_statements,
        viewer_state_statements_per_batch: lines.viewer_state_statements,
        function_ms_per_batch: lines.function_ms,
        mongo_ms_per_batch: lines.mongo_ms,
        publish_ms_per_batch: lines.publish_ms,
        taps_produced,
        taps_stored,
        exact: taps_stored == taps_produced,
    })
}

impl std::fmt::Display for DrainReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "drained {} records of {} stream(s) over {} partition(s), STREAM_SHARDS {}, BatchSize {}, {}",
            self.records,
            self.streams,
            self.partitions,
            self.stream_shards,
            self.batch_size,
            if self.keyed {
                "each record with an idempotency key"
            } else {
                "no idempotency keys"
            }
        )?;
        writeln!(
            f,
            "  rate:        {:.0} records/s ({:.2} s from the first committed batch to the last)",
            self.records_per_second, self.drain_seconds
        )?;
        writeln!(
            f,
            "  batches:     {} (at most {} invoked at once)",
            self.batches, self.peak_concurrent_invocations
        )?;
        writeln!(
            f,
            "  per batch:   {:.2} MongoDB round trips, {:.1} window and {:.1} viewer state (fair use and keys) update statements; in the function {:.2} ms, of which MongoDB {:.2} ms and publishing {:.2} ms",
            self.mongo_round_trips_per_batch,
            self.window_statements_per_batch,
            self.viewer_state_statements_per_batch,
            self.function_ms_per_batch,
            self.mongo_ms_per_batch,
            self.publish_ms_per_batch
        )?;
        write!(
            f,
            "  counts:      {} taps produced, {} stored: {}",
            self.taps_produced,
            self.taps_stored,
            if self.exact { "exact" } else { "NOT EXACT" }
        )
    }
}
