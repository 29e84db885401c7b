//! What one Kafka batch adds to each window, remembered per topic-partition and offset. This is
//! the pure half of exactly-once counting: a window document stores, per partition, the highest
//! offset it has applied, and [`WindowDelta::after`] computes what is still to be added given
//! those stored offsets. Replays, overlapping batches and redeliveries after a crash therefore
//! add nothing twice, whatever their boundaries.

use crate::emoji::EmojiName;
use crate::kafka_event::RecordPosition;
use crate::reaction::Reaction;
use crate::window::{EmojiCounts, WindowKey, WindowWidth};
use std::collections::BTreeMap;

/// A topic-partition in one incarnation of the topic: the unit of ordering in Kafka, and of
/// offset bookkeeping here.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionKey {
    pub topic: String,
    pub partition: i32,
    /// 0 for the topic as first seen; raised each time it is seen recreated.
    pub generation: u32,
}

impl PartitionKey {
    /// The topic-partition a record was read from.
    pub fn of(position: &RecordPosition) -> Self {
        Self {
            topic: position.topic.clone(),
            partition: position.partition,
            generation: position.generation,
        }
    }

    /// The field name under which a window document keeps this partition's applied offset.
    /// Kafka topic names may contain `.` (a path separator in MongoDB) but never `~` or `@`, so
    /// `.` is written as `~`, a later generation `g` is appended as `@g`, and the name stays
    /// unambiguous (generation 0 keeps the name it always had).
    pub fn field_name(&self) -> String {
        let topic = self.topic.replace('.', "~");
        match self.generation {
            0 => format!("{topic}:{}", self.partition),
            generation => format!("{topic}@{generation}:{}", self.partition),
        }
    }

    /// Reads a [`PartitionKey::field_name`] back.
    pub fn from_field_name(name: &str) -> Option<Self> {
        let (topic, partition) = name.rsplit_once(':')?;
        let (topic, generation) = match topic.rsplit_once('@') {
            Some((topic, generation)) => (topic, generation.parse().ok()?),
            None => (topic, 0),
        };
        Some(Self {
            topic: topic.replace('~', "."),
            partition: partition.parse().ok()?,
            generation,
        })
    }
}

/// One reaction's contribution, at its position in its partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tap {
    pub offset: i64,
    pub emoji: EmojiName,
    pub count: u32,
}

/// Everything one batch adds to one window, by partition, in offset order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowDelta {
    pub key: WindowKey,
    pub partitions: BTreeMap<PartitionKey, Vec<Tap>>,
}

/// What remains to apply to a window given its stored offsets.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Remaining {
    /// Taps per emoji not applied yet.
    pub counts: EmojiCounts,
    /// For each partition that still contributes: (stored offset it was computed against, if
    /// any; the new highest applied offset).
    pub offsets: BTreeMap<PartitionKey, (Option<i64>, i64)>,
}

impl Remaining {
    /// Sum of the remaining taps.
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    /// Whether the window already holds everything this batch carries (a pure replay).
    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }
}

impl WindowDelta {
    /// The lowest offset per partition: a window whose stored offsets are all below these has
    /// applied none of this batch, the common case that needs no read.
    pub fn first_offsets(&self) -> BTreeMap<PartitionKey, i64> {
        self.partitions
            .iter()
            .filter_map(|(p, taps)| taps.first().map(|t| (p.clone(), t.offset)))
            .collect()
    }

    /// What is left to apply when the window has applied, per partition, every offset up to
    /// and including `stored[partition]`.
    pub fn after(&self, stored: &BTreeMap<PartitionKey, i64>) -> Remaining {
        let mut remaining = Remaining::default();
        for (partition, taps) in &self.partitions {
            let applied = stored.get(partition).copied();
            let fresh = taps.iter().filter(|t| applied.is_none_or(|a| t.offset > a));
            let mut highest = None;
            for tap in fresh {
                // A tap of 0 (cut by fair use) moves the offsets but adds no count entry.
                if tap.count > 0 {
                    *remaining.counts.entry(tap.emoji.clone()).or_default() += u64::from(tap.count);
                }
                highest = Some(tap.offset);
            }
            if let Some(highest) = highest {
                remaining
                    .offsets
                    .insert(partition.clone(), (applied, highest));
            }
        }
        remaining
    }
}

/// Groups a batch's reactions into per-window deltas (sorted by window key).
pub fn window_deltas<'a>(
    records: impl IntoIterator<Item = (&'a RecordPosition, &'a Reaction)>,
    width: WindowWidth,
) -> Vec<WindowDelta> {
    let mut windows: BTreeMap<WindowKey, BTreeMap<PartitionKey, Vec<Tap>>> = BTreeMap::new();
    for (position, reaction) in records {
        let key = WindowKey::containing(reaction.stream.clone(), reaction.at_ms, width);
        let partition = PartitionKey::of(position);
        windows
            .entry(key)
            .or_default()
            .entry(partition)
            .or_default()
            .push(Tap {
                offset: position.offset,
                emoji: reaction.emoji.clone(),
                count: reaction.count,
            });
    }
    windows
        .into_iter()
        .map(|(key, mut partitions)| {
            for taps in partitions.values_mut() {
                taps.sort_by_key(|t| t.offset);
            }
            WindowDelta { key, partitions }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{StreamId, UserId};
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn record(
        partition: i32,
        offset: i64,
        stream: &str,
        emoji: &str,
        count: u32,
        at_ms: i64,
    ) -> (RecordPosition, Reaction) {
        (
            RecordPosition {
                topic: "emoji.reactions".into(),
                partition,
                offset,
                generation: 0,
            },
            Reaction {
                stream: StreamId::parse("s", stream).unwrap(),
                user: UserId::parse("u", "u").unwrap(),
                emoji: EmojiName::parse(emoji).unwrap(),
                count,
                at_ms,
                key: None,
                fair_use_limit: None,
            },
        )
    }

    #[test]
    fn field_names_are_safe_for_mongodb_paths() {
        let key = PartitionKey {
            topic: "emoji.reactions".into(),
            partition: 3,
            generation: 0,
        };
        assert_eq!(key.field_name(), "emoji~reactions:3");
        assert_eq!(
            PartitionKey::from_field_name(&key.field_name()),
            Some(key.clone())
        );
        assert_eq!(PartitionKey::from_field_name("no-partition"), None);
        let recreated = PartitionKey {
            generation: 2,
            ..key.clone()
        };
        assert_eq!(recreated.field_name(), "emoji~reactions@2:3");
        assert_eq!(
            PartitionKey::from_field_name(&recreated.field_name()),
            Some(recreated)
        );
        assert_eq!(PartitionKey::from_field_name("t@x:3"), None);
    }

    #[test]
    fn remaining_skips_applied_offsets_per_partition() {
        let batch = [
            record(0, 10, "m", "fire", 1, 0),
            record(0, 11, "m", "fire", 2, 10),
            record(1, 5, "m", "clap", 4, 20),
            record(0, 12, "m", "joy", 3, 30),
        ];
        let deltas = window_deltas(batch.iter().map(|(p, r)| (p, r)), WindowWidth::DEFAULT);
        assert_eq!(deltas.len(), 1);
        let delta = &deltas[0];
        let p0 = PartitionKey {
            topic: "emoji.reactions".into(),
            partition: 0,
            generation: 0,
        };
        let p1 = PartitionKey {
            topic: "emoji.reactions".into(),
            partition: 1,
            generation: 0,
        };
        assert_eq!(
            delta.first_offsets(),
            BTreeMap::from([(p0.clone(), 10), (p1.clone(), 5)])
        );

        let fresh = delta.after(&BTreeMap::new());
        assert_eq!(fresh.total(), 10);
        assert_eq!(fresh.offsets[&p0], (None, 12));

        let partly = delta.after(&BTreeMap::from([(p0.clone(), 11)]));
        assert_eq!(partly.total(), 3 + 4);
        assert_eq!(partly.offsets[&p0], (Some(11), 12));
        assert_eq!(partly.offsets[&p1], (None, 5));

        let replay = delta.after(&BTreeMap::from([(p0, 12), (p1, 5)]));
        assert!(replay.is_empty());
        assert_eq!(replay.total(), 0);
    }

    /// A window store reduced to its logic: counts and applied offsets per window.
    #[derive(Default)]
    struct FakeWindows {
        docs: HashMap<WindowKey, (u64, BTreeMap<PartitionKey, i64>)>,
    }

    impl FakeWindows {
        fn apply(&mut self, delta: &WindowDelta) {
            let (total, offsets) = self.docs.entry(delta.key.clone()).or_default();
            let remaining = delta.after(offsets);
            *total += remaining.total();
            for (partition, (_, highest)) in remaining.offsets {
                offsets.insert(partition, highest);
            }
        }
    }

    proptest! {
        #[test]
        fn any_sequence_of_overlapping_redelivered_batches_counts_each_record_once(
            partitions in proptest::collection::vec(
                proptest::collection::vec((0..3u8, 1..20u32, 0..8_000i64), 1..40), 1..4),
            cuts in proptest::collection::vec((0..40usize, 0..40usize), 1..12),
        ) {
            // Each partition is a log; a delivery is any contiguous range of one log, starting
            // at or before the last delivered offset + 1 (redeliveries overlap, never skip).
            let logs: Vec<Vec<(RecordPosition, Reaction)>> = partitions.iter().enumerate().map(|(p, items)| {
                items.iter().enumerate().map(|(o, (s, c, t))| {
                    record(p as i32, o as i64, ["a", "b", "c"][*s as usize], "fire", *c, *t)
                }).collect()
            }).collect();
            let mut store = FakeWindows::default();
            let mut delivered_up_to = vec![0usize; logs.len()];
            for (i, (back, len)) in cuts.iter().enumerate() {
                let p = i % logs.len();
                let start = delivered_up_to[p].saturating_sub(*back);
                let end = (start + len + 1).min(logs[p].len());
                let batch = &logs[p][start..end];
                for delta in window_deltas(batch.iter().map(|(pos, r)| (pos, r)), WindowWidth::DEFAULT) {
                    store.apply(&delta);
                }
                delivered_up_to[p] = delivered_up_to[p].max(end);
            }
            // Finally everything is delivered once more, whole.
            for log in &logs {
                for delta in window_deltas(log.iter().map(|(pos, r)| (pos, r)), WindowWidth::DEFAULT) {
                    store.apply(&delta);
                }
            }
            let expected: u64 = partitions.iter().flatten().map(|(_, c, _)| u64::from(*c)).sum();
            let counted: u64 = store.docs.values().map(|(t, _)| *t).sum();
            prop_assert_eq!(counted, expected);
        }
    }
}
