//! The partitions' progress as a container knows it: the `partition_progress` collection, with
//! what this container last wrote or read of each partition kept in memory, so a warm container
//! spends no round trip reading it before each batch.
//!
//! A remembered figure may lag the stored one (another container counted later batches of the
//! partition meanwhile). That is safe for telling a recreated topic (`progress::batch_progress`):
//! every record at or below a remembered offset was counted, with a timestamp at or below the
//! remembered one, so a lagging figure never takes a redelivery for a new topic; it can only see
//! a restart, and a seen restart is checked against the store before it is believed.

use crate::progress::{batch_progress, merged};
use reactions::event_time::PartitionProgress;
use reactions::kafka_event::RecordPosition;
use reactions::mongo::{Database, PartitionProgressStore, StoreError};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

/// One batch's progress.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchProgress {
    /// Per partition of the batch: its generation, highest offset and latest timestamp.
    pub counted: Vec<PartitionProgress>,
    /// The partitions seen recreated by this batch, with what had been counted before.
    pub restarted: Vec<(PartitionProgress, PartitionProgress)>,
    /// What the batch's partitions were known at before it.
    known: Vec<PartitionProgress>,
}

/// The store, and what this container knows of it.
#[derive(Debug)]
pub struct KnownProgress {
    store: PartitionProgressStore,
    remembered: Mutex<BTreeMap<(String, i32), PartitionProgress>>,
}

impl KnownProgress {
    pub fn new(database: &Database) -> Self {
        Self {
            store: PartitionProgressStore::new(database),
            remembered: Mutex::default(),
        }
    }

    /// Every partition of `topic` as stored (what the `final` pass decides from).
    pub async fn stored(&self, topic: &str) -> Result<Vec<PartitionProgress>, StoreError> {
        self.store.read(topic).await
    }

    /// The batch's progress, judged against what is remembered of its partitions, or read when
    /// a partition is not remembered or seems recreated.
    pub async fn of_batch(
        &self,
        record_times: &[(RecordPosition, i64)],
    ) -> Result<BatchProgress, StoreError> {
        let partitions: BTreeSet<(&str, i32)> = record_times
            .iter()
            .map(|(p, _)| (p.topic.as_str(), p.partition))
            .collect();
        let remembered: Vec<PartitionProgress> = self
            .remembered
            .lock()
            .map(|known| {
                partitions
                    .iter()
                    .filter_map(|(topic, partition)| {
                        known.get(&((*topic).to_owned(), *partition)).cloned()
                    })
                    .collect()
            })
            .unwrap_or_default();
        if remembered.len() == partitions.len() {
            let batch = judge(record_times, remembered);
            if batch.restarted.is_empty() {
                return Ok(batch);
            }
        }
        let topics: BTreeSet<&str> = partitions.iter().map(|(topic, _)| *topic).collect();
        let mut stored = Vec::new();
        for topic in topics {
            stored.extend(self.store.read(topic).await?);
        }
        Ok(judge(record_times, stored))
    }

    /// Records the batch as counted, in the store and then in memory.
    pub async fn advance(&self, batch: &BatchProgress, now_ms: i64) -> Result<(), StoreError> {
        self.store.advance(&batch.counted, now_ms).await?;
        if let Ok(mut known) = self.remembered.lock() {
            for progress in merged(&batch.known, &batch.counted) {
                known.insert((progress.topic.clone(), progress.partition), progress);
            }
        }
        Ok(())
    }
}

fn judge(record_times: &[(RecordPosition, i64)], known: Vec<PartitionProgress>) -> BatchProgress {
    let counted = batch_progress(record_times, &known);
    let restarted = counted
        .iter()
        .filter_map(|now| {
            known
                .iter()
                .find(|before| before.topic == now.topic && before.partition == now.partition)
                .filter(|before| before.generation < now.generation)
                .map(|before| (before.clone(), now.clone()))
        })
        .collect();
    BatchProgress {
        counted,
        restarted,
        known,
    }
}
