//! How many records a mapping is behind its topic, as Lambda reports a Kafka mapping's
//! `OffsetLag`: summed over the partitions, each partition's end (its high watermark) less the
//! offset of the next record the partition's loop will deliver. A loop learns the end from the
//! watermark requests of its fetch pacing (at least once a second while it has records to
//! deliver) and moves its next offset when it takes its first record and after each delivered
//! batch. Nothing here blocks a loop: the figures are atomics that a reader sums.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Where one partition ends and where its loop is, for [`MappingLag`].
#[derive(Debug)]
pub(super) struct PartitionLag {
    /// The partition's high watermark as last learned (-1: not known yet).
    end: AtomicI64,
    /// The offset of the next record the loop will deliver: its first record's until a batch
    /// is delivered, then the one after that batch (-1: no record taken yet).
    next: AtomicI64,
}

impl PartitionLag {
    fn new() -> Self {
        Self {
            end: AtomicI64::new(-1),
            next: AtomicI64::new(-1),
        }
    }

    /// The partition ends before `high` (its high watermark, just learned).
    pub(super) fn ends_at(&self, high: i64) {
        self.end.store(high, Ordering::Release);
    }

    /// The loop took the record at `offset` into a batch: before any batch was delivered, the
    /// first such record is the next to deliver.
    pub(super) fn took(&self, offset: i64) {
        self.next
            .compare_exchange(-1, offset, Ordering::AcqRel, Ordering::Acquire)
            .ok();
    }

    /// A batch was delivered (and committed) up to before `next`.
    pub(super) fn delivered(&self, next: i64) {
        self.next.store(next, Ordering::Release);
    }

    /// Records between the next to deliver and the partition's end; 0 while either is unknown
    /// (a partition whose loop has taken no record yet counts as caught up).
    fn behind(&self) -> u64 {
        let end = self.end.load(Ordering::Acquire);
        let next = self.next.load(Ordering::Acquire);
        if end < 0 || next < 0 {
            return 0;
        }
        u64::try_from(end - next).unwrap_or(0)
    }
}

/// The positions of every partition of one mapping, so a load run can watch whether a trigger
/// keeps up (the figure AWS graphs as `OffsetLag`).
#[derive(Debug, Default)]
pub struct MappingLag {
    partitions: Mutex<BTreeMap<i32, Arc<PartitionLag>>>,
}

impl MappingLag {
    /// The position of `partition`, shared with its loop (the same one if asked again).
    pub(super) fn partition(&self, partition: i32) -> Arc<PartitionLag> {
        let mut partitions = self
            .partitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Arc::clone(
            partitions
                .entry(partition)
                .or_insert_with(|| Arc::new(PartitionLag::new())),
        )
    }

    /// Records the mapping is behind, summed over its partitions: each partition's high
    /// watermark (as last learned, at most about a second old while records flow) less the
    /// next offset its loop will deliver.
    pub fn records_behind(&self) -> u64 {
        self.partitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|partition| partition.behind())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mapping_is_behind_by_what_its_partitions_have_not_delivered() {
        let lag = MappingLag::default();
        let (first, second) = (lag.partition(0), lag.partition(1));
        assert!(Arc::ptr_eq(&first, &lag.partition(0)));
        // Nothing known yet: caught up.
        first.ends_at(100);
        assert_eq!(lag.records_behind(), 0);
        // The first record taken is the next to deliver, until a batch is delivered.
        first.took(40);
        first.took(41);
        assert_eq!(lag.records_behind(), 60);
        first.delivered(90);
        second.ends_at(30);
        second.took(10);
        assert_eq!(lag.records_behind(), 10 + 20);
        // A watermark learned before the last delivery never counts as negative.
        first.delivered(120);
        assert_eq!(lag.records_behind(), 20);
    }
}
