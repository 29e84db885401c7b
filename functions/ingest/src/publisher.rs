//! Publishes accepted reactions to Kafka, keyed by stream and shard (see [`StreamShards`]): a
//! hot stream spreads over several partitions, each viewer's reactions stay in order on one. A
//! request is acknowledged only when the broker has acknowledged every one of its records.
//!
//! A reaction's `at_ms` is stamped here, after the partition count is known and just before
//! the records are handed to the producer: aggregate's `ALLOWED_LATENESS_MS` bounds how long
//! after `at_ms` a record may reach the topic, and a metadata request that took most of the
//! budget must not eat into that bound. A request with too little of its budget left is
//! refused (503) without producing anything, rather than produced and then reported failed
//! while its records may still land.

use reactions::clock::now_ms;
use reactions::kafka::{
    KafkaAdapterError, KafkaSettings, OutgoingRecord, RenewingProducer, is_unknown_partition,
};
use reactions::message::{ReactionRecord, VersionedMessage};
use reactions::{Reaction, StreamShards};
use std::time::{Duration, Instant};

/// Less than this left of the produce budget after the metadata step and nothing is produced:
/// the records would live for the producer's whole `message.timeout.ms` all the same, so a
/// produce the request can wait only moments for would be answered 503 while its records may
/// still be written, and the client's retry would count them twice.
pub const LEAST_PRODUCE_BUDGET: Duration = Duration::from_millis(100);

/// Why a request's reactions were not published. Every case answers 503: the client retries.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The stream is sharded and the topic's partition count is unknown: keys hashed by the
    /// producer would scatter one viewer's reactions over partitions, and fair use, which
    /// counts a viewer on one partition, would no longer be exact.
    #[error("the partition count of {topic} is unknown (the broker did not answer in time)")]
    PartitionsUnknown { topic: String },
    /// The metadata step left less than [`LEAST_PRODUCE_BUDGET`] of the produce timeout.
    #[error("only {left:?} of the {budget:?} produce timeout was left after reading metadata")]
    NoTimeLeft { left: Duration, budget: Duration },
    /// The broker did not acknowledge every record in time.
    #[error(transparent)]
    Kafka(#[from] KafkaAdapterError),
}

/// The producer of `emoji-reaction-topic`, built once per container (and again after a fatal
/// error).
pub struct ReactionPublisher {
    topic: String,
    timeout: Duration,
    shards: StreamShards,
    producer: RenewingProducer,
}

/// The records of `reactions`, stamped `at_ms` and with the partitions their shards take on a
/// topic of `partitions` partitions (`None`: not known). An unsharded stream's records go where
/// their keys hash; a sharded one's need the count.
pub fn records_of(
    reactions: &[Reaction],
    shards: StreamShards,
    partitions: Option<i32>,
    at_ms: i64,
    topic: &str,
) -> Result<Vec<OutgoingRecord>, PublishError> {
    if shards.get() > 1 && partitions.is_none_or(|n| n < 1) {
        return Err(PublishError::PartitionsUnknown {
            topic: topic.to_owned(),
        });
    }
    Ok(reactions
        .iter()
        .map(|reaction| {
            let key = shards.key(&reaction.stream, &reaction.user);
            let mut record = ReactionRecord::from(reaction);
            record.at_ms = at_ms;
            let mut outgoing = OutgoingRecord::new(key, record.encode());
            outgoing.partition = shards.partition(&reaction.stream, &reaction.user, partitions);
            outgoing
        })
        .collect())
}

impl ReactionPublisher {
    /// Builds the producer (connecting lazily).
    pub fn new(
        settings: KafkaSettings,
        topic: String,
        timeout: Duration,
        shards: StreamShards,
    ) -> Result<Self, KafkaAdapterError> {
        // Concurrent requests share produce requests within 2 ms.
        let producer = RenewingProducer::new(&settings, timeout, Duration::from_millis(2))?
            .warming_up_on(&topic);
        Ok(Self {
            topic,
            timeout,
            shards,
            producer,
        })
    }

    /// Starts connecting in the background (see [`RenewingProducer::start_warm_up`]).
    pub fn start_warm_up(&self) {
        self.producer.start_warm_up();
    }

    /// The topic written to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Stamps every reaction with the time it is handed to the producer, produces them, and
    /// waits for all acknowledgements, all within the configured timeout. Returns the `at_ms`
    /// stamped. After a produce to a partition the topic does not have, the partition count is
    /// fetched afresh (the topic was created again with fewer); after a fatal producer error the
    /// producer is rebuilt, so one broker incident cannot leave a warm container failing
    /// forever.
    pub async fn publish(&self, reactions: &[Reaction]) -> Result<i64, PublishError> {
        let started = Instant::now();
        let producer = self.producer.current();
        // Known after the warm-up (and for a minute after each fetch); a request that has to
        // ask spends its own budget on it.
        let partitions = if self.shards.get() > 1 {
            producer.partition_count(&self.topic, self.timeout).await
        } else {
            None
        };
        let left = self.timeout.saturating_sub(started.elapsed());
        if left < LEAST_PRODUCE_BUDGET {
            return Err(PublishError::NoTimeLeft {
                left,
                budget: self.timeout,
            });
        }
        let at_ms = now_ms();
        let records = records_of(reactions, self.shards, partitions, at_ms, &self.topic)?;
        let result = self
            .producer
            .produce_all(&producer, &self.topic, &records, left)
            .await;
        if let Err(error) = &result
            && is_unknown_partition(error)
        {
            producer.forget_partition_count(&self.topic);
        }
        result?;
        Ok(at_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reactions::{EmojiName, StreamId, UserId};

    fn reaction(stream: &str, user: &str, at_ms: i64) -> Reaction {
        Reaction {
            stream: StreamId::parse("stream", stream).unwrap(),
            user: UserId::parse("user_id", user).unwrap(),
            emoji: EmojiName::parse("fire").unwrap(),
            count: 2,
            at_ms,
            key: None,
            fair_use_limit: None,
        }
    }

    fn decoded(record: &OutgoingRecord) -> ReactionRecord {
        ReactionRecord::decode(&record.value).unwrap()
    }

    #[test]
    fn records_carry_the_time_they_are_produced_not_the_time_they_were_validated() {
        let reactions = [reaction("s1", "v1", 1_000), reaction("s2", "v2", 1_000)];
        let records = records_of(&reactions, StreamShards::new(1), None, 9_000, "t").unwrap();
        assert_eq!(records.len(), 2);
        for record in &records {
            assert_eq!(decoded(record).at_ms, 9_000);
            assert_eq!(decoded(record).count, 2);
        }
    }

    #[test]
    fn a_sharded_stream_is_not_produced_by_key_hash_when_the_partition_count_is_unknown() {
        let reactions = [reaction("s1", "v1", 0)];
        for partitions in [None, Some(0)] {
            let refused = records_of(&reactions, StreamShards::new(3), partitions, 0, "topic-a");
            assert!(
                matches!(&refused, Err(PublishError::PartitionsUnknown { topic }) if topic == "topic-a"),
                "{partitions:?}: {refused:?}"
            );
        }
        // Known: every record names its partition.
        let records = records_of(&reactions, StreamShards::new(3), Some(3), 0, "t").unwrap();
        assert!(records.iter().all(|r| r.partition.is_some()));
        // Unsharded streams never need the count: the key's hash keeps a viewer on one
        // partition.
        let records = records_of(&reactions, StreamShards::new(1), None, 0, "t").unwrap();
        assert_eq!(records[0].partition, None);
    }
}
