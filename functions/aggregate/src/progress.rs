//! A batch's place in its partitions' progress: which incarnation of the topic its records
//! belong to (see `reactions::topic_generation`), and how far it takes each partition once it
//! is counted (what `final` is decided from, see `reactions::event_time`).

use crate::batch::PreparedBatch;
use reactions::event_time::PartitionProgress;
use reactions::kafka_event::RecordPosition;
use reactions::topic_generation::generation_of;
use std::collections::BTreeMap;

/// For each partition of the batch: its generation, judged against `stored` (the progress
/// read before the batch), and its highest offset and latest timestamp in the batch.
pub fn batch_progress(
    record_times: &[(RecordPosition, i64)],
    stored: &[PartitionProgress],
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
            PartitionProgress {
                topic: topic.to_owned(),
                partition,
                generation: generation_of(known, records.iter().copied()),
                offset: records.iter().map(|r| r.0).max().unwrap_or(-1),
                max_timestamp_ms: records.iter().map(|r| r.1).max().unwrap_or(i64::MIN),
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

/// `stored` with the batch's progress applied as the store applies it: a newer generation
/// replaces the partition's figures, the same one raises them.
pub fn merged(stored: &[PartitionProgress], batch: &[PartitionProgress]) -> Vec<PartitionProgress> {
    let mut all: BTreeMap<(String, i32), PartitionProgress> = stored
        .iter()
        .map(|p| ((p.topic.clone(), p.partition), p.clone()))
        .collect();
    for counted in batch {
        let key = (counted.topic.clone(), counted.partition);
        match all.get_mut(&key) {
            Some(known) if known.generation == counted.generation => {
                known.offset = known.offset.max(counted.offset);
                known.max_timestamp_ms = known.max_timestamp_ms.max(counted.max_timestamp_ms);
            }
            Some(known) if known.generation > counted.generation => {}
            _ => {
                all.insert(key, counted.clone());
            }
        }
    }
    all.into_values().collect()
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
        }
    }

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
        let batch = batch_progress(&records, &stored);
        assert_eq!(
            batch,
            [
                progress(0, 1, 1, 60_000),
                progress(1, 0, 12, 61_000),
                progress(2, 0, 5, 1_000)
            ]
        );
        assert_eq!(
            merged(&stored, &batch),
            [
                progress(0, 1, 1, 60_000),
                progress(1, 0, 12, 61_000),
                progress(2, 0, 5, 1_000)
            ]
        );
        // An older generation changes nothing; the same one only raises.
        assert_eq!(
            merged(&[progress(0, 2, 7, 9)], &[progress(0, 1, 100, 100)]),
            [progress(0, 2, 7, 9)]
        );
        assert_eq!(
            merged(&[progress(0, 1, 7, 9)], &[progress(0, 1, 5, 100)]),
            [progress(0, 1, 7, 100)]
        );
    }
}
