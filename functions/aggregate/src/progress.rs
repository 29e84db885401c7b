//! A batch's place in its partitions' progress: which incarnation of the topic its records
//! belong to (see `reactions::topic_generation`), and how far it takes each partition once it
//! is counted (what `final` is decided from, see `reactions::event_time`).

use crate::batch::PreparedBatch;
use reactions::event_time::PartitionProgress;
use reactions::kafka_event::RecordPosition;
use reactions::topic_generation::{AheadRecords, generation_of};
use std::collections::BTreeMap;

/// For each partition of the batch: its generation, judged against `stored` (the progress
/// read before the batch), its highest offset, its latest timestamp capped at `ceiling_ms`
/// (see `reactions::event_time::timestamp_ceiling`) and the records that were capped.
pub fn batch_progress(
    record_times: &[(RecordPosition, i64)],
    stored: &[PartitionProgress],
    ceiling_ms: i64,
) -> Vec<PartitionProgress> {
    let mut by_partition: BTreeMap<(&str, i32), Vec<(i64, i64)>> = BTreeMap::new();
    for (position, timestamp) in record_times {
        by_partition
            .entry((position.topic.as_str(), position.partition))
            .or_default()
            .push((position.offset, *timestamp));
    }
    by_partition
        .into_iter()
        .map(|((topic, partition), records)| {
            let known = stored
                .iter()
                .find(|p| p.topic == topic && p.partition == partition);
            let generation = generation_of(known, records.iter().copied());
            let max_timestamp_ms = records
                .iter()
                .map(|r| r.1.min(ceiling_ms))
                .max()
                .unwrap_or(i64::MIN);
            let capped = records
                .iter()
                .filter(|r| r.1 > ceiling_ms)
                .copied()
                .collect();
            let same_generation = known.filter(|k| k.generation == generation);
            let none = AheadRecords::default();
            let (stored_ahead, counted_ms) = match same_generation {
                Some(k) => (&k.ahead, k.max_timestamp_ms.max(max_timestamp_ms)),
                None => (&none, max_timestamp_ms),
            };
            PartitionProgress {
                topic: topic.to_owned(),
                partition,
                generation,
                offset: records.iter().map(|r| r.0).max().unwrap_or(-1),
                max_timestamp_ms,
                ahead: AheadRecords::of_batch(capped, stored_ahead, counted_ms),
            }
        })
        .collect()
}

/// Puts every record of `batch` in its partition's generation, so the offsets it is counted
/// and dead-lettered under are those of the topic's current incarnation.
pub fn assign_generations(batch: &mut PreparedBatch, progress: &[PartitionProgress]) {
    let generation = |position: &RecordPosition| {
        progress
            .iter()
            .find(|p| p.topic == position.topic && p.partition == position.partition)
            .map_or(0, |p| p.generation)
    };
    for (position, _) in &mut batch.reactions {
        position.generation = generation(position);
    }
    for letter in &mut batch.dead_letters {
        letter.position.generation = generation(&letter.position);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(partition: i32, offset: i64) -> RecordPosition {
        RecordPosition {
            topic: "t".into(),
            partition,
            offset,
            generation: 0,
        }
    }

    fn progress(partition: i32, generation: u32, offset: i64, max: i64) -> PartitionProgress {
        PartitionProgress {
            topic: "t".into(),
            partition,
            generation,
            offset,
            max_timestamp_ms: max,
            ahead: AheadRecords::default(),
        }
    }

    const NO_CEILING: i64 = i64::MAX;

    #[test]
    fn each_partition_gets_its_generation_and_its_highest_offset_and_timestamp() {
        let stored = [progress(0, 0, 1_000, 50_000), progress(1, 0, 10, 50_000)];
        let records = [
            // Partition 0 recreated: offsets restarted, later timestamps.
            (at(0, 0), 60_000),
            (at(0, 1), 59_000),
            // Partition 1 goes on.
            (at(1, 11), 61_000),
            (at(1, 12), 60_500),
            // Partition 2 never counted.
            (at(2, 5), 1_000),
        ];
        assert_eq!(
            batch_progress(&records, &stored, NO_CEILING),
            [
                progress(0, 1, 1, 60_000),
                progress(1, 0, 12, 61_000),
                progress(2, 0, 5, 1_000)
            ]
        );
    }

    #[test]
    fn timestamps_ahead_of_the_clock_are_capped_and_listed() {
        let stored = [progress(0, 0, 10, 50_000)];
        let records = [(at(0, 11), 60_000), (at(0, 12), 9_000_000)];
        let mut expected = progress(0, 0, 12, 70_000);
        expected.ahead.listed = vec![(12, 9_000_000)];
        let batch = batch_progress(&records, &stored, 70_000);
        assert_eq!(batch, [expected.clone()]);

        // Redelivered once that is stored, even with the clock further on: no new topic, and
        // the listed record is not listed again.
        let mut counted = progress(0, 0, 12, 70_000);
        counted.ahead.listed = vec![(12, 9_000_000)];
        let again = batch_progress(&records, &[counted], 80_000);
        assert_eq!(again[0].generation, 0);
        assert_eq!(again[0].max_timestamp_ms, 80_000);
        assert!(again[0].ahead.listed.is_empty());
        // Without the list, the capped record would have been taken for a new topic.
        assert_eq!(
            batch_progress(&records, &[progress(0, 0, 12, 70_000)], 80_000)[0].generation,
            1
        );
    }
}
