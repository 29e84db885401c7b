//! A Kafka event source mapping, as Lambda runs one: a consumer group per mapping reads the
//! topic and, like AWS, each partition gets its own invocation loop, so the partitions of one
//! mapping are processed concurrently (bounded by the function's concurrency) while each
//! partition's batches run one at a time, in order. A partition's loop gathers up to
//! `BatchSize` records for at most the batching window, invokes the function with exactly the
//! KafkaEvent JSON AWS builds (base64 keys and values, byte-array headers, records grouped by
//! topic-partition), and commits that partition's offset only after the invocation succeeded.
//! A failed batch is retried, the same records in the same order, with exponential backoff until
//! it succeeds: at-least-once delivery, like AWS, and one stuck partition holds up no other.
//! Its [`MappingStats`] also tell how many records it is behind its topic ([`MappingLag`]).
//!
//! AWS source: Lambda developer guide, "Apache Kafka event poller scaling modes"
//! (docs.aws.amazon.com/lambda/latest/dg/kafka-scaling-modes.html): pollers scale with the
//! partitions' offset lag, and records of one partition are processed in order.

mod fetch_pacing;
mod lag;

pub use lag::MappingLag;

use crate::lambda::FunctionPool;
use crate::template::{KafkaMapping, StartingPosition};
use fetch_pacing::FetchPacer;
use futures::FutureExt;
use lag::PartitionLag;
use rdkafka::consumer::stream_consumer::StreamPartitionQueue;
use rdkafka::consumer::{CommitMode, Consumer, DefaultConsumerContext, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use reactions::kafka::{KafkaSettings, fetch_partition_ids};
use reactions::kafka_event::{LambdaKafkaRecord, RecordPosition, lambda_kafka_event_bytes};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// Counters for tests and the stack's summary.
#[derive(Debug, Default)]
pub struct MappingStats {
    /// Batches that succeeded and were committed.
    pub batches: AtomicU64,
    /// Records in those batches.
    pub records: AtomicU64,
    /// Invocations that failed (each is retried).
    pub failed_invocations: AtomicU64,
    /// Invocations running now, and the most that ever ran at once (several partitions).
    pub in_flight: AtomicU64,
    pub peak_in_flight: AtomicU64,
    /// Where each partition ends and where its loop is: how far the mapping is behind.
    pub lag: MappingLag,
}

impl MappingStats {
    /// Records the mapping is behind its topic, over every partition (see [`MappingLag`]).
    pub fn records_behind(&self) -> u64 {
        self.lag.records_behind()
    }
}

/// How the mapping runs locally.
#[derive(Debug, Clone, Copy)]
pub struct MappingOptions {
    /// Overrides the template's batching window (which AWS counts in whole seconds).
    pub batching_window: Option<Duration>,
    /// First retry delay after a failed batch; doubles up to `max_backoff`.
    pub first_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for MappingOptions {
    fn default() -> Self {
        Self {
            batching_window: None,
            first_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// Why a mapping could not start.
#[derive(Debug, thiserror::Error)]
#[error("event source mapping {mapping}: {reason}")]
pub struct MappingError {
    pub mapping: String,
    pub reason: String,
}

struct OwnedRecord {
    position: RecordPosition,
    timestamp_ms: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Vec<u8>)>,
}

fn own(message: &rdkafka::message::BorrowedMessage<'_>) -> OwnedRecord {
    let headers = message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|h| {
                    (
                        h.key.to_owned(),
                        h.value.map(<[u8]>::to_vec).unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    OwnedRecord {
        position: RecordPosition {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
            generation: 0,
        },
        timestamp_ms: message.timestamp().to_millis().unwrap_or(0),
        key: message.key().map(<[u8]>::to_vec),
        value: message.payload().map(<[u8]>::to_vec),
        headers,
    }
}

/// A running mapping.
pub struct EventSourceMapping {
    pub mapping: KafkaMapping,
    pub stats: Arc<MappingStats>,
    consumer: Arc<StreamConsumer>,
    /// The coordinator, which stops after its partition loops.
    task: JoinHandle<()>,
}

impl EventSourceMapping {
    /// Joins the consumer group and starts delivering batches to `function`, one invocation
    /// loop per partition of the topic.
    pub fn start(
        mapping: KafkaMapping,
        brokers: &str,
        function: Arc<FunctionPool>,
        options: MappingOptions,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Self, MappingError> {
        let failed = |reason: String| MappingError {
            mapping: mapping.logical_id.clone(),
            reason,
        };
        let mut settings =
            KafkaSettings::new(brokers, format!("emostream-local-{}", mapping.logical_id));
        let fetch_wait_ms = fetch_pacing::EMPTY_FETCH_WAIT.as_millis().to_string();
        for (key, value) in [
            ("group.id", mapping.consumer_group.as_str()),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("isolation.level", "read_committed"),
            (
                "auto.offset.reset",
                match mapping.starting_position {
                    StartingPosition::Earliest => "earliest",
                    StartingPosition::Latest => "latest",
                },
            ),
            ("session.timeout.ms", "10000"),
            // What a real broker would hold an empty fetch for (see `fetch_pacing`).
            ("fetch.wait.max.ms", fetch_wait_ms.as_str()),
            // The local Kafka-wire broker answers a fetch with everything from the offset on,
            // whatever `fetch.max.bytes` asks: behind a backlog of a million records that is
            // 150 MB, which librdkafka refuses above its 100 MB default and fetches again,
            // forever. Accept any size (a real broker keeps to `fetch.max.bytes`).
            ("receive.message.max.bytes", "2147483647"),
        ] {
            settings.extra.push((key.to_owned(), value.to_owned()));
        }
        let consumer: Arc<StreamConsumer> = Arc::new(
            settings
                .client_config()
                .create()
                .map_err(|e| failed(format!("cannot create the consumer: {e}")))?,
        );
        consumer
            .subscribe(&[mapping.topic.as_str()])
            .map_err(|e| failed(format!("cannot subscribe to {}: {e}", mapping.topic)))?;
        let stats = Arc::new(MappingStats::default());
        let window = options.batching_window.unwrap_or(mapping.batching_window);
        tracing::info!(
            mapping = mapping.logical_id,
            topic = mapping.topic,
            group = mapping.consumer_group,
            batch_size = mapping.batch_size,
            window_ms = window.as_millis() as u64,
            "event source mapping started"
        );
        let partitions = Partitions {
            shared: Arc::new(Shared {
                mapping: mapping.clone(),
                brokers: brokers.to_owned(),
                consumer: Arc::clone(&consumer),
                function,
                options,
                window,
                stats: Arc::clone(&stats),
            }),
            split: BTreeSet::new(),
            loops: JoinSet::new(),
            shutdown,
        };
        let task = tokio::spawn(partitions.run());
        Ok(Self {
            mapping,
            stats,
            consumer,
            task,
        })
    }

    /// Waits until the consumer group has assigned partitions to this mapping (a mapping that
    /// starts at `LATEST` misses what is produced before). False after `timeout`.
    pub async fn wait_assigned(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.consumer.assignment().is_ok_and(|a| a.count() > 0) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Keeps the consumer from ever being destroyed, for a mapping dropped without
    /// [`Self::stopped`] (a test that panicked): its partition loops are then dropped wherever
    /// the runtime ends, and if one held the last handle, librdkafka's destroy could hang that
    /// thread (see [`release`]) and with it the test binary. The process is ending anyway.
    pub fn leak_consumer(&self) {
        std::mem::forget(Arc::clone(&self.consumer));
    }

    /// Waits for every partition to finish its current batch and stop (after shutdown was
    /// signalled).
    pub async fn stopped(self) {
        self.task.await.ok();
        release(self.consumer);
    }
}

/// Lets go of a handle on a mapping's consumer. Destroying the consumer, which the last handle
/// does, can hang in librdkafka: its broker thread sometimes never ends (seen once in a test
/// after the fetch pacing's watermark requests; INFRA notes another such hang). So the last
/// handle is destroyed on a thread of its own that nothing waits for, and a stopping mapping,
/// test or stack never hangs on it.
fn release(consumer: Arc<StreamConsumer>) {
    if let Some(consumer) = Arc::into_inner(consumer) {
        std::thread::spawn(move || drop(consumer));
    }
}

/// [`release`] for the consumer of a mapping's shared state.
fn release_shared(shared: Arc<Shared>) {
    if let Some(shared) = Arc::into_inner(shared) {
        release(shared.consumer);
    }
}

/// What every partition loop of a mapping shares.
struct Shared {
    mapping: KafkaMapping,
    brokers: String,
    consumer: Arc<StreamConsumer>,
    function: Arc<FunctionPool>,
    options: MappingOptions,
    window: Duration,
    stats: Arc<MappingStats>,
}

/// Gives each partition its own queue and loop, and serves the consumer's group protocol.
struct Partitions {
    shared: Arc<Shared>,
    split: BTreeSet<i32>,
    loops: JoinSet<()>,
    shutdown: watch::Receiver<bool>,
}

impl Partitions {
    /// Splits every partition the topic has now before the first poll (so none of its records
    /// reach the shared queue), then polls the shared queue, which serves rebalances and
    /// commits. A record that still arrives there belongs to a partition added later: that
    /// partition gets its queue and loop, and is rewound to the record so that loop reads it.
    /// Returns once shutdown was signalled and every partition loop has stopped.
    async fn run(mut self) {
        for partition in self.topic_partitions().await {
            self.split_partition(partition);
        }
        loop {
            let message = tokio::select! {
                message = self.shared.consumer.recv() => message,
                _ = self.shutdown.changed() => break,
            };
            let (partition, offset) = match message {
                Ok(message) => (message.partition(), message.offset()),
                Err(error) => {
                    tracing::warn!(mapping = self.shared.mapping.logical_id, %error, "consumer error");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            if self.split.contains(&partition) {
                // Fetched before the rewind below; the partition's loop reads it again.
                continue;
            }
            self.split_partition(partition);
            let consumer = Arc::clone(&self.shared.consumer);
            let topic = self.shared.mapping.topic.clone();
            let rewound = tokio::task::spawn_blocking(move || {
                consumer.seek(
                    &topic,
                    partition,
                    Offset::Offset(offset),
                    Duration::from_secs(10),
                )
            })
            .await;
            if !matches!(rewound, Ok(Ok(()))) {
                tracing::error!(
                    mapping = self.shared.mapping.logical_id,
                    partition,
                    offset,
                    "cannot rewind a new partition to its first record"
                );
            }
        }
        while self.loops.join_next().await.is_some() {}
        release_shared(self.shared);
    }

    async fn topic_partitions(&self) -> Vec<i32> {
        let consumer = Arc::clone(&self.shared.consumer);
        let topic = self.shared.mapping.topic.clone();
        let metadata = tokio::task::spawn_blocking(move || {
            fetch_partition_ids(consumer.client(), &topic, Duration::from_secs(10))
        })
        .await;
        match metadata {
            Ok(Ok(partitions)) => partitions,
            _ => {
                tracing::warn!(
                    mapping = self.shared.mapping.logical_id,
                    "cannot read the topic's partitions; they get their loops as records arrive"
                );
                Vec::new()
            }
        }
    }

    fn split_partition(&mut self, partition: i32) {
        let Some(queue) = self
            .shared
            .consumer
            .split_partition_queue(&self.shared.mapping.topic, partition)
        else {
            tracing::error!(
                mapping = self.shared.mapping.logical_id,
                partition,
                "cannot give the partition a queue of its own"
            );
            return;
        };
        self.split.insert(partition);
        let lag = self.shared.stats.lag.partition(partition);
        let worker = PartitionLoop {
            shared: Arc::clone(&self.shared),
            partition,
            queue,
            next_offset: None,
            pacer: FetchPacer::new(&self.shared.mapping.topic, partition, Arc::clone(&lag)),
            lag,
        };
        self.loops.spawn(worker.run(self.shutdown.clone()));
    }
}

/// One partition's invocations: one batch at a time, in offset order.
struct PartitionLoop {
    shared: Arc<Shared>,
    partition: i32,
    queue: StreamPartitionQueue<DefaultConsumerContext>,
    /// The offset after the last record taken: a record below it (read again after a rewind
    /// or a pause) is skipped, so no batch carries a record twice.
    next_offset: Option<i64>,
    pacer: FetchPacer,
    /// This partition's place in [`MappingStats::lag`].
    lag: Arc<PartitionLag>,
}

/// How a fetch round ended.
enum Round {
    /// Records were taken (or skipped as already taken).
    Fetched,
    Failed(rdkafka::error::KafkaError),
    /// The batching window closed first.
    Deadline,
    Shutdown,
}

impl PartitionLoop {
    /// Serves the partition until shutdown, then lets go of its handles on the consumer: the
    /// queue's own first, so that the last one goes through [`release`].
    async fn run(mut self, shutdown: watch::Receiver<bool>) {
        self.serve(shutdown).await;
        let PartitionLoop { shared, queue, .. } = self;
        drop(queue);
        release_shared(shared);
    }

    async fn serve(&mut self, mut shutdown: watch::Receiver<bool>) {
        let batch_size = self.shared.mapping.batch_size;
        loop {
            let mut batch = Vec::new();
            match self.fetch_round(None, &mut batch, &mut shutdown).await {
                Round::Fetched => {}
                Round::Failed(error) => {
                    self.consumer_error(&error);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                Round::Deadline => continue,
                Round::Shutdown => return,
            }
            // With no window, take what is already fetched; otherwise wait up to the window.
            let deadline = Instant::now() + self.shared.window.max(Duration::from_millis(2));
            while batch.len() < batch_size {
                if self.pacer.caught_up(self.next_offset) {
                    // Nothing more to fetch: a broker would hold the next fetch until new
                    // records arrive or its wait ends; if the window closes now, the function
                    // runs with the partition paused.
                    self.pacer.pause(&self.shared.consumer);
                    let resume_at = (Instant::now() + fetch_pacing::EMPTY_FETCH_WAIT).min(deadline);
                    tokio::select! {
                        _ = tokio::time::sleep_until(resume_at) => {}
                        // Uncommitted: delivered again when the stack next starts.
                        _ = shutdown.changed() => return,
                    }
                    if Instant::now() >= deadline {
                        break;
                    }
                }
                match self
                    .fetch_round(Some(deadline), &mut batch, &mut shutdown)
                    .await
                {
                    Round::Fetched => {}
                    Round::Failed(error) => {
                        self.consumer_error(&error);
                        break;
                    }
                    Round::Deadline => break,
                    Round::Shutdown => return,
                }
            }
            if self.pacer.caught_up(self.next_offset) {
                // No fetching while the function runs on the last records there are.
                self.pacer.pause(&self.shared.consumer);
            }
            if batch.is_empty() {
                continue;
            }
            if !self.deliver_watching(&batch, &mut shutdown).await {
                return;
            }
            if let Some(last) = batch.last() {
                self.lag.delivered(last.position.offset + 1);
            }
        }
    }

    /// Delivers the batch (see [`Shared::deliver`]) and meanwhile keeps learning where the
    /// partition ends: a loop that never catches up sends no wake-ups, and a slow or failing
    /// batch is when the lag matters most.
    async fn deliver_watching(
        &mut self,
        batch: &[OwnedRecord],
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        let shared = Arc::clone(&self.shared);
        let mut delivery = std::pin::pin!(shared.deliver(batch, shutdown));
        loop {
            self.pacer.refresh(&shared.consumer);
            tokio::select! {
                delivered = &mut delivery => return delivered,
                _ = tokio::time::sleep(fetch_pacing::WATERMARK_REFRESH) => {}
            }
        }
    }

    fn consumer_error(&self, error: &rdkafka::error::KafkaError) {
        tracing::warn!(mapping = self.shared.mapping.logical_id, partition = self.partition, %error, "consumer error");
    }

    /// Takes into `batch` what one fetch brings, up to the batch size: fetching resumes, the
    /// first record is awaited for [`fetch_pacing::PROBE`] (else the partition is caught up
    /// and pauses before it tries again), and then
    /// whatever is queued already is taken. Ends at `deadline` if there is one.
    async fn fetch_round(
        &mut self,
        deadline: Option<Instant>,
        batch: &mut Vec<OwnedRecord>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Round {
        let until = |wait: Duration| {
            let end = Instant::now() + wait;
            deadline.map_or(end, |deadline| deadline.min(end))
        };
        loop {
            self.pacer.resume(&self.shared.consumer);
            tokio::select! {
                next = tokio::time::timeout_at(until(fetch_pacing::PROBE), self.queue.recv()) => match next {
                    Ok(Ok(message)) => {
                        self.pacer.fetched();
                        self.take(own(&message), batch);
                        break;
                    }
                    Ok(Err(error)) => return Round::Failed(error),
                    Err(_) => {}
                },
                _ = shutdown.changed() => return Round::Shutdown,
            }
            if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                return Round::Deadline;
            }
            if !self.pacer.caught_up(self.next_offset) {
                // A fetch may be on its way: wait on, and learn where the partition ends.
                self.pacer.wake(&self.shared.consumer);
                continue;
            }
            self.pacer.pause(&self.shared.consumer);
            let wait = self.pacer.idle_wait();
            tokio::select! {
                _ = tokio::time::sleep_until(until(wait)) => {}
                _ = shutdown.changed() => return Round::Shutdown,
            }
            if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                return Round::Deadline;
            }
        }
        while batch.len() < self.shared.mapping.batch_size {
            match self.queue.recv().now_or_never() {
                Some(Ok(message)) => self.take(own(&message), batch),
                Some(Err(error)) => return Round::Failed(error),
                None => break,
            }
        }
        Round::Fetched
    }

    fn take(&mut self, record: OwnedRecord, batch: &mut Vec<OwnedRecord>) {
        let offset = record.position.offset;
        if self.next_offset.is_some_and(|next| offset < next) {
            return;
        }
        if self.next_offset.is_none() {
            self.lag.took(offset);
        }
        if let Some(next) = self.next_offset.filter(|next| offset > *next) {
            // No producer of this project writes transactions, so offsets of one partition
            // follow each other: a gap is records the broker no longer holds (the topic's
            // retention deleted them before they were read), which the function never sees.
            tracing::error!(
                mapping = self.shared.mapping.logical_id,
                partition = self.partition,
                from = next,
                to = offset,
                "records skipped: the partition no longer holds offsets from..to (deleted by \
                 the topic's retention before they were read?)"
            );
        }
        self.next_offset = Some(offset + 1);
        batch.push(record);
    }
}

impl Shared {
    fn event(&self, batch: &[OwnedRecord]) -> Vec<u8> {
        let records = batch
            .iter()
            .map(|r| {
                LambdaKafkaRecord::new(
                    &r.position,
                    r.timestamp_ms,
                    r.key.as_deref(),
                    r.value.as_deref(),
                    &r.headers,
                )
            })
            .collect();
        lambda_kafka_event_bytes(&self.mapping.event_source, &self.brokers, records)
    }

    async fn invoke(
        &self,
        event: &[u8],
    ) -> Result<Vec<u8>, crate::lambda::runtime_api::InvokeError> {
        let now = self.stats.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.stats.peak_in_flight.fetch_max(now, Ordering::Relaxed);
        let result = self.function.invoke(event).await;
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        result
    }

    /// Invokes until the batch (records of one partition) succeeds, then commits it. False
    /// when shut down meanwhile (the batch stays uncommitted and is delivered again next time).
    async fn deliver(&self, batch: &[OwnedRecord], shutdown: &mut watch::Receiver<bool>) -> bool {
        let event = self.event(batch);
        let mut backoff = self.options.first_backoff;
        loop {
            match self.invoke(&event).await {
                Ok(_) => break,
                Err(error) => {
                    self.stats
                        .failed_invocations
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        mapping = self.mapping.logical_id,
                        records = batch.len(),
                        %error,
                        retry_in_ms = backoff.as_millis() as u64,
                        "batch failed; retrying the same records"
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => return false,
                    }
                    backoff = (backoff * 2).min(self.options.max_backoff);
                }
            }
        }
        let mut offsets = TopicPartitionList::new();
        if let Some(last) = batch.last()
            && let Err(error) = offsets.add_partition_offset(
                &last.position.topic,
                last.position.partition,
                Offset::Offset(last.position.offset + 1),
            )
        {
            tracing::error!(%error, "cannot build the offset to commit");
        }
        loop {
            match self.consumer.commit(&offsets, CommitMode::Sync) {
                Ok(()) => break,
                Err(error) => {
                    // The batch was processed; a lost commit means a redelivery, which the
                    // functions tolerate, but keep trying so progress is not lost.
                    tracing::warn!(mapping = self.mapping.logical_id, %error, "commit failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                        _ = shutdown.changed() => return false,
                    }
                }
            }
        }
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        self.stats
            .records
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        true
    }
}
