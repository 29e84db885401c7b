//! Publishes accepted reactions to Kafka, keyed by stream and shard (see [`StreamShards`]): a
//! hot stream spreads over several partitions, each viewer's reactions stay in order on one. A
//! request is acknowledged only when the broker has acknowledged every one of its records.

use reactions::kafka::{AckedProducer, KafkaAdapterError, KafkaSettings, OutgoingRecord};
use reactions::message::{ReactionRecord, VersionedMessage};
use reactions::{Reaction, StreamShards};
use std::sync::RwLock;
use std::time::{Duration, Instant};

/// The producer of `emoji-reaction-topic`, built once per container.
pub struct ReactionPublisher {
    settings: KafkaSettings,
    topic: String,
    timeout: Duration,
    shards: StreamShards,
    producer: RwLock<AckedProducer>,
}

impl ReactionPublisher {
    /// Builds the producer (connecting lazily).
    pub fn new(
        settings: KafkaSettings,
        topic: String,
        timeout: Duration,
        shards: StreamShards,
    ) -> Result<Self, KafkaAdapterError> {
        let producer = AckedProducer::new(&settings, timeout)?;
        Ok(Self {
            settings,
            topic,
            timeout,
            shards,
            producer: RwLock::new(producer),
        })
    }

    /// Starts connecting in the background (see [`AckedProducer::start_warm_up`]).
    pub fn start_warm_up(&self) {
        self.current().start_warm_up(&self.topic, self.timeout);
    }

    /// The topic written to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    fn current(&self) -> AckedProducer {
        match self.producer.read() {
            Ok(producer) => producer.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Produces every reaction and waits for all acknowledgements, within the configured
    /// timeout. After a fatal producer error the producer is rebuilt, so one broker incident
    /// cannot leave a warm container failing forever.
    pub async fn publish(&self, reactions: &[Reaction]) -> Result<(), KafkaAdapterError> {
        let started = Instant::now();
        let producer = self.current();
        // Known after the warm-up; a request that has to ask spends its own timeout on it.
        let partitions = if self.shards.get() > 1 {
            producer.partition_count(&self.topic, self.timeout).await
        } else {
            None
        };
        let timeout = self.timeout.saturating_sub(started.elapsed());
        let records: Vec<OutgoingRecord> = reactions
            .iter()
            .map(|r| {
                let key = self.shards.key(&r.stream, &r.user);
                let mut record = OutgoingRecord::new(key, ReactionRecord::from(r).encode());
                record.partition = self.shards.partition(&r.stream, &r.user, partitions);
                record
            })
            .collect();
        let result = producer.produce_all(&self.topic, &records, timeout).await;
        if result.is_err()
            && let Some(fatal) = producer.fatal_error()
        {
            tracing::error!(fatal, "Kafka producer hit a fatal error; rebuilding it");
            let fresh = AckedProducer::new(&self.settings, self.timeout)?;
            match self.producer.write() {
                Ok(mut slot) => *slot = fresh,
                Err(poisoned) => *poisoned.into_inner() = fresh,
            }
        }
        result.map(|_| ())
    }
}
