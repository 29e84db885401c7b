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
//!
//! A record stamped ahead of the clock (another producer, a clock error) would break that
//! evidence for good if its timestamp were taken as it is: no later record would pass it, so
//! no recreation would be seen on the partition again. So the counted timestamp is capped at
//! the clock plus the allowed skew (`crate::event_time::timestamp_ceiling`), and the records
//! it was capped for are listed ([`AheadRecords`]), so that their own redelivery, which does
//! carry a later timestamp than the capped one, is not taken for a new topic.

use crate::event_time::PartitionProgress;

/// How many capped records a partition lists; beyond, only the range of their offsets and
/// their latest timestamp are kept.
pub const AHEAD_LISTED: usize = 32;

/// The counted records of one partition whose timestamps were ahead of the clock, and so
/// capped in its progress: `(offset, timestamp)` as the record carries them. A record listed
/// here, or within [`UnlistedAhead`] (those beyond [`AHEAD_LISTED`]), is no evidence of a new
/// topic. An entry at or below the partition's counted timestamp says nothing more and may
/// be dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AheadRecords {
    pub listed: Vec<(i64, i64)>,
    pub unlisted: Option<UnlistedAhead>,
}

/// Capped records beyond the list: the first and last of their offsets, and their latest
/// timestamp. A record in that range stamped no later may be one of them; one outside it, at
/// a lower offset (a recreated topic starts at 0), is still seen for what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnlistedAhead {
    pub first_offset: i64,
    pub last_offset: i64,
    pub max_timestamp_ms: i64,
}

impl UnlistedAhead {
    fn of(records: &[(i64, i64)]) -> Option<Self> {
        Some(Self {
            first_offset: records.iter().map(|r| r.0).min()?,
            last_offset: records.iter().map(|r| r.0).max()?,
            max_timestamp_ms: records.iter().map(|r| r.1).max()?,
        })
    }
}

impl AheadRecords {
    /// Whether the record `(offset, timestamp)` may be one of these, already counted.
    pub fn may_hold(&self, offset: i64, timestamp: i64) -> bool {
        self.listed.contains(&(offset, timestamp))
            || self.unlisted.is_some_and(|u| {
                (u.first_offset..=u.last_offset).contains(&offset)
                    && timestamp <= u.max_timestamp_ms
            })
    }

    /// The entries that still say something once the counted timestamp is `counted_ms`.
    pub fn live(&self, counted_ms: i64) -> impl Iterator<Item = &(i64, i64)> {
        self.listed.iter().filter(move |(_, t)| *t > counted_ms)
    }

    /// The batch's own capped records, split between the list (while fewer than
    /// [`AHEAD_LISTED`] of `stored`'s stay live) and the unlisted range.
    pub fn of_batch(mut found: Vec<(i64, i64)>, stored: &Self, counted_ms: i64) -> Self {
        found.sort_unstable();
        found.dedup();
        found.retain(|entry| !stored.listed.contains(entry));
        let room = AHEAD_LISTED.saturating_sub(stored.live(counted_ms).count());
        let unlisted = found.split_off(room.min(found.len()));
        Self {
            listed: found,
            unlisted: UnlistedAhead::of(&unlisted),
        }
    }
}

/// The generation of a batch's records of one partition, given that partition's stored
/// progress and the batch's `(offset, timestamp)` pairs, timestamps as the records carry them.
pub fn generation_of(
    stored: Option<&PartitionProgress>,
    records: impl IntoIterator<Item = (i64, i64)>,
) -> u32 {
    let Some(stored) = stored else {
        return 0;
    };
    let restarted = records.into_iter().any(|(offset, timestamp)| {
        offset <= stored.offset
            && timestamp > stored.max_timestamp_ms
            && !stored.ahead.may_hold(offset, timestamp)
    });
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
            ahead: AheadRecords::default(),
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

    #[test]
    fn a_capped_record_redelivered_is_no_new_topic_but_a_restart_still_is() {
        // Counted up to offset 500, its timestamps capped at 90,000: offset 480 was stamped
        // far ahead, and offsets beyond the list only left their latest timestamp.
        let mut progress = stored(0, 500, 90_000);
        progress.ahead = AheadRecords {
            listed: vec![(480, 10_000_000)],
            unlisted: Some(UnlistedAhead {
                first_offset: 485,
                last_offset: 495,
                max_timestamp_ms: 95_000,
            }),
        };
        assert_eq!(generation_of(Some(&progress), [(480, 10_000_000)]), 0);
        assert_eq!(generation_of(Some(&progress), [(490, 94_000)]), 0);
        // A record at an offset already counted, later than all of that, or outside the
        // unlisted range: a new topic.
        assert_eq!(generation_of(Some(&progress), [(490, 96_000)]), 1);
        assert_eq!(generation_of(Some(&progress), [(3, 94_000)]), 1);
        assert_eq!(generation_of(Some(&progress), [(480, 9_000_000)]), 1);
    }

    #[test]
    fn a_batch_lists_its_capped_records_while_there_is_room() {
        let none = AheadRecords::default();
        let batch = AheadRecords::of_batch(vec![(7, 900), (5, 800), (7, 900)], &none, 100);
        assert_eq!(batch.listed, [(5, 800), (7, 900)]);
        assert_eq!(batch.unlisted, None);

        // A full list of live entries: the next ones only raise the unlisted maximum. Entries
        // the counted timestamp has passed leave room.
        let full = AheadRecords {
            listed: (0..AHEAD_LISTED as i64).map(|o| (o, 1_000 + o)).collect(),
            unlisted: None,
        };
        let batch = AheadRecords::of_batch(vec![(100, 5_000), (101, 4_000)], &full, 100);
        assert!(batch.listed.is_empty());
        assert_eq!(
            batch.unlisted,
            Some(UnlistedAhead {
                first_offset: 100,
                last_offset: 101,
                max_timestamp_ms: 5_000
            })
        );
        let batch = AheadRecords::of_batch(vec![(100, 5_000), (101, 4_000)], &full, 1_000);
        assert_eq!(batch.listed, [(100, 5_000)]);
        assert_eq!(
            batch.unlisted,
            Some(UnlistedAhead {
                first_offset: 101,
                last_offset: 101,
                max_timestamp_ms: 4_000
            })
        );
        // An entry listed already is not listed twice (a redelivered batch).
        let again = AheadRecords::of_batch(vec![(3, 1_003)], &full, 100);
        assert_eq!(again, AheadRecords::default());
    }
}
