//! A Kafka event source mapping, as Lambda runs one: a consumer group per mapping reads the
//! topic, gathers up to `BatchSize` records for at most the batching window, invokes the
//! function with exactly the KafkaEvent JSON AWS builds (base64 keys and values, byte-array
//! headers, records grouped by topic-partition), and commits the offsets only after the
//! invocation succeeded. A failed batch is retried, the same records in the same order, with
//! exponential backoff until it succeeds: at-least-once delivery, like AWS. Batches of one
//! mapping never overlap, so each partition's records arrive as contiguous, ordered ranges.

use crate::lambda::FunctionPool;
use crate::template::{KafkaMapping, StartingPosition};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use reactions::kafka::KafkaSettings;
use reactions::kafka_event::{RecordPosition, lambda_kafka_event_json, lambda_kafka_record_json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::watch;
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
    task: tokio::task::JoinHandle<()>,
}

impl EventSourceMapping {
    /// Joins the consumer group and starts delivering batches to `function`.
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
            ("fetch.wait.max.ms", "10"),
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
        let runner = Runner {
            mapping: mapping.clone(),
            brokers: brokers.to_owned(),
            consumer: Arc::clone(&consumer),
            function,
            options,
            stats: Arc::clone(&stats),
        };
        let task = tokio::spawn(runner.run(shutdown));
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

    /// Waits for the mapping to finish its current batch and stop (after shutdown was signalled).
    pub async fn stopped(self) {
        self.task.await.ok();
    }
}

struct Runner {
    mapping: KafkaMapping,
    brokers: String,
    consumer: Arc<StreamConsumer>,
    function: Arc<FunctionPool>,
    options: MappingOptions,
    stats: Arc<MappingStats>,
}

impl Runner {
    async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let window = self
            .options
            .batching_window
            .unwrap_or(self.mapping.batching_window);
        tracing::info!(
            mapping = self.mapping.logical_id,
            topic = self.mapping.topic,
            group = self.mapping.consumer_group,
            batch_size = self.mapping.batch_size,
            window_ms = window.as_millis() as u64,
            "event source mapping started"
        );
        loop {
            let first = tokio::select! {
                message = self.consumer.recv() => message,
                _ = shutdown.changed() => return,
            };
            let first = match first {
                Ok(message) => own(&message),
                Err(error) => {
                    tracing::warn!(mapping = self.mapping.logical_id, %error, "consumer error");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let mut batch = vec![first];
            // With no window, take what is already fetched; otherwise wait up to the window.
            let deadline = Instant::now() + window.max(Duration::from_millis(2));
            while batch.len() < self.mapping.batch_size {
                match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                    Ok(Ok(message)) => batch.push(own(&message)),
                    Ok(Err(error)) => {
                        tracing::warn!(mapping = self.mapping.logical_id, %error, "consumer error");
                        break;
                    }
                    Err(_) => break,
                }
            }
            if !self.deliver(&batch, &mut shutdown).await {
                return;
            }
        }
    }

    fn event(&self, batch: &[OwnedRecord]) -> Vec<u8> {
        let records = batch
            .iter()
            .map(|r| {
                lambda_kafka_record_json(
                    &r.position,
                    r.timestamp_ms,
                    r.key.as_deref(),
                    r.value.as_deref(),
                    &r.headers,
                )
            })
            .collect();
        let event = lambda_kafka_event_json(&self.mapping.event_source, &self.brokers, records);
        serde_json::to_vec(&event).unwrap_or_default()
    }

    /// Invokes until the batch succeeds, then commits it. False when shut down meanwhile (the
    /// batch stays uncommitted and is delivered again next time).
    async fn deliver(&self, batch: &[OwnedRecord], shutdown: &mut watch::Receiver<bool>) -> bool {
        let event = self.event(batch);
        let mut backoff = self.options.first_backoff;
        loop {
            match self.function.invoke(&event).await {
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
        let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for record in batch {
            let key = (record.position.topic.clone(), record.position.partition);
            let entry = next.entry(key).or_insert(0);
            *entry = (*entry).max(record.position.offset + 1);
        }
        let mut offsets = TopicPartitionList::new();
        for ((topic, partition), offset) in &next {
            if let Err(error) =
                offsets.add_partition_offset(topic, *partition, Offset::Offset(*offset))
            {
                tracing::error!(%error, "cannot build the offsets to commit");
            }
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
