//! The partitions' progress as a batch needs it: the `partition_progress` collection, read
//! afresh for every batch. A container's memory of it would be cheaper but could be stale in
//! the one way that matters: after another container saw the topic recreated and counted the
//! new topic's first batches, a container remembering the old topic would take the new
//! topic's next records, above the offsets it remembers, for the old topic's and count them
//! under the old generation, where their redelivery would count them again. The read goes
//! out with the viewers' states, so a batch waits for no extra round trip.

use crate::progress::batch_progress;
use reactions::event_time::PartitionProgress;
use reactions::kafka_event::RecordPosition;
use reactions::mongo::{Database, PartitionProgressStore, StoreError};
use std::collections::BTreeSet;

/// One batch's progress.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchProgress {
    /// Per partition of the batch: its generation, highest offset and latest timestamp.
    pub counted: Vec<PartitionProgress>,
    /// The partitions seen recreated by this batch, with what had been counted before.
    pub restarted: Vec<(PartitionProgress, PartitionProgress)>,
    /// Records whose timestamps were capped (ahead of the clock by more than the skew).
    pub capped: usize,
    /// Partitions whose stored capped records this batch's timestamps pass (dropped once the
    /// batch is counted).
    passed_ahead: Vec<PartitionProgress>,
}

/// The store of the partitions' progress.
#[derive(Debug)]
pub struct KnownProgress {
    store: PartitionProgressStore,
}

impl KnownProgress {
    pub fn new(database: &Database) -> Self {
        Self {
            store: PartitionProgressStore::new(database),
        }
    }

    /// Every partition of `topic` as stored (what the `final` pass decides from).
    pub async fn stored(&self, topic: &str) -> Result<Vec<PartitionProgress>, StoreError> {
        self.store.read(topic).await
    }

    /// The batch's progress, judged against the stored progress of its partitions, with
    /// timestamps capped at `ceiling_ms`.
    pub async fn of_batch(
        &self,
        record_times: &[(RecordPosition, i64)],
        ceiling_ms: i64,
    ) -> Result<BatchProgress, StoreError> {
        let topics: BTreeSet<&str> = record_times.iter().map(|(p, _)| p.topic.as_str()).collect();
        let mut stored = Vec::new();
        for topic in topics {
            stored.extend(self.store.read(topic).await?);
        }
        Ok(judge(record_times, &stored, ceiling_ms))
    }

    /// Records the batch as counted. Dropping the capped records its timestamps pass only
    /// keeps their list short: a failure is logged, and a later batch drops them.
    pub async fn advance(&self, batch: &BatchProgress, now_ms: i64) -> Result<(), StoreError> {
        self.store.advance(&batch.counted, now_ms).await?;
        if let Err(error) = self.store.drop_passed_ahead(&batch.passed_ahead).await {
            tracing::warn!(%error, "cannot drop capped records the counted timestamps passed; a later batch will");
        }
        Ok(())
    }
}

fn judge(
    record_times: &[(RecordPosition, i64)],
    stored: &[PartitionProgress],
    ceiling_ms: i64,
) -> BatchProgress {
    let counted = batch_progress(record_times, stored, ceiling_ms);
    let before = |now: &PartitionProgress| {
        stored
            .iter()
            .find(|before| before.topic == now.topic && before.partition == now.partition)
    };
    let restarted = counted
        .iter()
        .filter_map(|now| {
            before(now)
                .filter(|before| before.generation < now.generation)
                .map(|before| (before.clone(), now.clone()))
        })
        .collect();
    let passed_ahead = counted
        .iter()
        .filter(|now| {
            before(now).is_some_and(|before| {
                before.generation == now.generation
                    && before
                        .ahead
                        .listed
                        .iter()
                        .any(|(_, t)| *t <= now.max_timestamp_ms)
            })
        })
        .cloned()
        .collect();
    BatchProgress {
        counted,
        restarted,
        capped: record_times.iter().filter(|(_, t)| *t > ceiling_ms).count(),
        passed_ahead,
    }
}
