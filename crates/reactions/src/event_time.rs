//! When a window is complete: the rule behind `final`. Windows are cut by the time ingest
//! accepted a reaction (`at_ms`), but Kafka orders records by when they were appended, and
//! aggregate counts each partition in that order, a batch at a time, retrying a failed batch
//! until it succeeds. So "no retry can still add to window W" is a statement about every
//! partition's counted offsets, decided here from what the `partition_progress` collection and
//! the brokers say.
//!
//! The bound that makes it decidable: ingest stamps `at_ms` just before producing and gives up
//! on a record after `PRODUCE_TIMEOUT_MS`, so a reaction is taken to be appended at most
//! `ALLOWED_LATENESS_MS` (which covers that timeout twice, the second as a margin for the
//! broker, and the clock skew between ingest containers and the brokers) after its `at_ms`;
//! aggregate dead-letters a reaction whose `at_ms` disagrees with its record's timestamp by
//! more. Hence, on one partition:
//! - once a record whose timestamp (set when it was produced, not before `at_ms` less the
//!   skew) is `t` has
//!   been counted, every reaction with `at_ms < t - lateness` was appended before it, so it has
//!   a lower offset and was counted too;
//! - once every record appended before time `now` has been counted (the counted offset has
//!   reached the partition's end), every reaction with `at_ms < now - lateness` has been.
//!
//! The topic is complete before the smallest of those times over all its partitions, and a
//! window ending at or before it is final.

use crate::topic_generation::AheadRecords;

/// How far one partition has been counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionProgress {
    pub topic: String,
    pub partition: i32,
    /// The incarnation of the topic the offsets belong to: 0 until the topic is seen deleted
    /// and created again (its offsets restarted; see `crate::topic_generation`).
    pub generation: u32,
    /// The highest offset of a batch that was counted.
    pub offset: i64,
    /// The latest record timestamp among the counted records, each capped at
    /// [`timestamp_ceiling`] when it was counted.
    pub max_timestamp_ms: i64,
    /// The counted records whose timestamps were capped (see `crate::topic_generation`).
    pub ahead: AheadRecords,
}

/// The latest record timestamp a batch counted at `now_ms` believes: a record is produced
/// before it is counted, so a later timestamp is the producer's clock running ahead (by more
/// than the allowed `skew_ms` when past this) or not a clock at all. Taken as it is, one such
/// record would tell `final` that its partition is complete for hours or years to come, and
/// hide a recreated topic on it; so progress counts it at this ceiling instead.
pub fn timestamp_ceiling(now_ms: i64, skew_ms: i64) -> i64 {
    now_ms.saturating_add(skew_ms)
}

/// What is known of one partition when deciding `final`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionView {
    /// The highest counted offset and the latest counted record timestamp; `None` if nothing
    /// of the partition has been counted yet.
    pub counted: Option<(i64, i64)>,
    /// The partition's first and next offsets (low and high watermarks), read at `now` or
    /// later; `None` if not read (the counted timestamp already decides).
    pub log: Option<(i64, i64)>,
}

impl PartitionView {
    /// True when every record in the partition's log has been counted: the log is empty, or
    /// ends right after the counted offset. A log ending *below* it holds records of a
    /// recreated topic that are not counted yet (see `crate::topic_generation`).
    fn caught_up(&self) -> bool {
        match (self.counted, self.log) {
            (_, None) => false,
            (_, Some((low, high))) if high <= low => true,
            (None, Some(_)) => false,
            (Some((offset, _)), Some((_, high))) => high == offset.saturating_add(1),
        }
    }

    /// Every reaction of this partition stamped before the returned time has been counted.
    fn complete_before(&self, now_ms: i64, lateness_ms: i64) -> i64 {
        let by_timestamp = self.counted.map_or(i64::MIN, |(_, timestamp)| {
            timestamp.saturating_sub(lateness_ms)
        });
        match self.caught_up() {
            true => by_timestamp.max(now_ms.saturating_sub(lateness_ms)),
            false => by_timestamp,
        }
    }
}

/// Every reaction stamped before the returned time has been counted, on every partition of
/// the topic (`i64::MIN` if there are none). `now_ms` must be read before the logs' ends were.
pub fn complete_before(partitions: &[PartitionView], now_ms: i64, lateness_ms: i64) -> i64 {
    partitions
        .iter()
        .map(|p| p.complete_before(now_ms, lateness_ms))
        .min()
        .unwrap_or(i64::MIN)
}

/// Whether a partition's counted timestamp alone shows it complete before `end_ms`, so its log
/// end need not be read.
pub fn complete_by_timestamp(counted: Option<(i64, i64)>, end_ms: i64, lateness_ms: i64) -> bool {
    counted.is_some_and(|(_, timestamp)| timestamp.saturating_sub(lateness_ms) >= end_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LATENESS: i64 = 5_000;

    fn counted(offset: i64, timestamp: i64) -> PartitionView {
        PartitionView {
            counted: Some((offset, timestamp)),
            log: None,
        }
    }

    #[test]
    fn a_partition_is_complete_up_to_its_latest_counted_timestamp_less_the_lateness() {
        assert_eq!(
            complete_before(&[counted(99, 60_000)], 70_000, LATENESS),
            55_000
        );
        assert!(complete_by_timestamp(Some((99, 60_000)), 55_000, LATENESS));
        assert!(!complete_by_timestamp(Some((99, 60_000)), 55_001, LATENESS));
        assert!(!complete_by_timestamp(None, i64::MIN + 1, LATENESS));
    }

    #[test]
    fn the_slowest_partition_decides() {
        let views = [counted(10, 60_000), counted(7, 41_000), counted(3, 90_000)];
        assert_eq!(complete_before(&views, 100_000, LATENESS), 36_000);
        assert_eq!(complete_before(&[], 100_000, LATENESS), i64::MIN);
    }

    #[test]
    fn a_caught_up_partition_is_complete_up_to_now_less_the_lateness() {
        let idle = PartitionView {
            counted: Some((41, 10_000)),
            log: Some((0, 42)),
        };
        assert_eq!(complete_before(&[idle], 100_000, LATENESS), 95_000);
        // Never counted and empty (or emptied by retention): nothing to wait for.
        let empty = PartitionView {
            counted: None,
            log: Some((17, 17)),
        };
        assert_eq!(complete_before(&[empty], 100_000, LATENESS), 95_000);
    }

    #[test]
    fn a_partition_with_records_not_yet_counted_holds_everything_back() {
        // One record appended after the last counted batch: it may belong to any window the
        // counted timestamp does not already close.
        let behind = PartitionView {
            counted: Some((41, 10_000)),
            log: Some((0, 43)),
        };
        assert_eq!(complete_before(&[behind], 100_000, LATENESS), 5_000);
        let never_counted = PartitionView {
            counted: None,
            log: Some((0, 1)),
        };
        assert_eq!(
            complete_before(&[never_counted, counted(1, 90_000)], 100_000, LATENESS),
            i64::MIN
        );
        let unread = PartitionView {
            counted: None,
            log: None,
        };
        assert_eq!(complete_before(&[unread], 100_000, LATENESS), i64::MIN);
        // The topic was recreated and its new log is shorter than what was counted of the old
        // one: its records are not counted yet.
        let recreated = PartitionView {
            counted: Some((41, 10_000)),
            log: Some((0, 7)),
        };
        assert_eq!(complete_before(&[recreated], 100_000, LATENESS), 5_000);
        let recreated_empty = PartitionView {
            counted: Some((41, 10_000)),
            log: Some((0, 0)),
        };
        assert_eq!(
            complete_before(&[recreated_empty], 100_000, LATENESS),
            95_000
        );
    }
}
