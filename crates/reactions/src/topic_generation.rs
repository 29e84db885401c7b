//! Telling a recreated topic from a redelivery. A topic deleted and created again under the
//! same name restarts its offsets at 0, and exactly-once counting keys what it applied by
//! topic, partition and offset: without this, the new topic's records would be taken for the
//! old one's, already counted, and dropped.
//!
//! The evidence: aggregate records, per partition, the highest offset it counted and the latest
//! record timestamp among everything it counted (`partition_progress`). A redelivered record
//! has an offset at or below that offset and, having been counted, a timestamp at or below that
//! timestamp. A record at or below the offset with a *later* timestamp was never counted: the
//! offsets restarted, and the partition is in a new generation. Generations are part of the
//! partition's key (`PartitionKey::generation`), so the new topic's offsets start afresh in
//! every window, tally and dead-letter mark. This assumes that records produced after the
//! topic was recreated carry later timestamps than the old topic's last records, which holds
//! for clocks kept in sync (Lambda's and the brokers' are).

use crate::event_time::PartitionProgress;

/// The generation of a batch's records of one partition, given that partition's stored
/// progress and the batch's `(offset, timestamp)` pairs.
pub fn generation_of(
    stored: Option<&PartitionProgress>,
    records: impl IntoIterator<Item = (i64, i64)>,
) -> u32 {
    let Some(stored) = stored else {
        return 0;
    };
    let restarted = records
        .into_iter()
        .any(|(offset, timestamp)| offset <= stored.offset && timestamp > stored.max_timestamp_ms);
    match restarted {
        true => stored.generation.saturating_add(1),
        false => stored.generation,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(generation: u32, offset: i64, max_timestamp_ms: i64) -> PartitionProgress {
        PartitionProgress {
            topic: "emoji-reaction-topic".into(),
            partition: 0,
            generation,
            offset,
            max_timestamp_ms,
        }
    }

    #[test]
    fn a_partition_never_counted_is_in_generation_zero() {
        assert_eq!(generation_of(None, [(0, 5_000)]), 0);
    }

    #[test]
    fn redeliveries_and_new_records_keep_the_generation() {
        let progress = stored(1, 500, 90_000);
        // The same batch again, or part of it: counted before, so no later timestamp.
        assert_eq!(
            generation_of(Some(&progress), [(400, 80_000), (500, 90_000)]),
            1
        );
        // The next batch: offsets above the counted one, whatever their timestamps.
        assert_eq!(
            generation_of(Some(&progress), [(501, 95_000), (502, 99_000)]),
            1
        );
        assert_eq!(generation_of(Some(&progress), []), 1);
    }

    #[test]
    fn restarted_offsets_with_later_timestamps_are_a_new_generation() {
        let progress = stored(0, 1_000_000, 90_000);
        assert_eq!(
            generation_of(Some(&progress), [(0, 120_000), (1, 120_001)]),
            1
        );
        // Recreated again later.
        let progress = stored(1, 10, 120_001);
        assert_eq!(generation_of(Some(&progress), [(0, 200_000)]), 2);
    }
}
