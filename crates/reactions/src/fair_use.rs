//! Fair use: no viewer's taps count for more than a limit per stream and window, however they
//! are spread over requests and batches. This is the pure half; the tallies live in MongoDB
//! (`mongo::viewer_taps`).
//!
//! A viewer's reactions to a stream share one Kafka key (see `stream_shards`), so they reach
//! aggregate in offset order on one partition, one batch at a time (two deliveries overlap only
//! when a retry starts while the first still runs). Each (stream, window,
//! viewer) tally stores the taps counted so far and, per partition, the highest offset it has
//! accounted for. A batch is capped against the stored tallies in offset order; the capped
//! reactions are written to the windows first and the new tallies after. A redelivered batch
//! therefore finds either the old tally (and recomputes the same caps, which the windows'
//! own offsets then skip) or the new one (and skips the reactions it accounts for), so the
//! limit holds exactly and nothing is counted twice. Two deliveries that overlap with different
//! extents write their tallies so that the one reaching further into the partition wins (see
//! `mongo::viewer_taps`): it accounts for the other's reactions as well.

use crate::ids::{StreamId, UserId};
use crate::kafka_event::RecordPosition;
use crate::reaction::Reaction;
use crate::window::WindowWidth;
use crate::window_delta::PartitionKey;
use std::collections::BTreeMap;

/// The tally of one viewer on one stream in one window, as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Taps counted so far (never more than the limit).
    pub counted: u64,
    /// Per partition, the highest offset this tally accounts for.
    pub offsets: BTreeMap<PartitionKey, i64>,
}

/// Which tally a reaction belongs to: its document id, `stream/window start/viewer` (neither
/// id may contain `/`).
pub fn tally_id(stream: &StreamId, start_ms: i64, user: &UserId) -> String {
    format!("{}/{start_ms}/{}", stream.as_str(), user.as_str())
}

/// A tally to store after the windows were written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TallyWrite {
    pub id: String,
    /// The window's start, for the document's expiry.
    pub start_ms: i64,
    pub partition: PartitionKey,
    /// The highest offset now accounted for.
    pub offset: i64,
    pub counted: u64,
}

/// A batch after the limit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capped {
    /// The reactions to count, with their counts cut to what the limit leaves. Reactions left
    /// with nothing, and those a stored tally already accounts for, stay with a count of 0:
    /// they add no taps but still move their window's offsets, so the window is written and
    /// its state published as for any batch (a redelivery included).
    pub reactions: Vec<(RecordPosition, Reaction)>,
    /// The tallies to store, one per (stream, window, viewer) the batch touched afresh.
    pub writes: Vec<TallyWrite>,
    /// Taps beyond the limit, not counted.
    pub taps_over_limit: u64,
}

/// The tally ids a batch needs read.
pub fn tally_ids(reactions: &[(RecordPosition, Reaction)], width: WindowWidth) -> Vec<String> {
    let mut ids: Vec<String> = reactions
        .iter()
        .map(|(_, r)| tally_id(&r.stream, width.start_of(r.at_ms), &r.user))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Caps `reactions` (one batch, in any order) at `limit` taps per viewer, stream and window,
/// given the `stored` tallies by id. A `limit` of 0 turns fair use off.
pub fn cap_batch(
    mut reactions: Vec<(RecordPosition, Reaction)>,
    width: WindowWidth,
    limit: u64,
    stored: &BTreeMap<String, Tally>,
) -> Capped {
    if limit == 0 {
        return Capped {
            reactions,
            ..Capped::default()
        };
    }
    reactions.sort_by(|(a, _), (b, _)| {
        (a.topic.as_str(), a.partition, a.offset).cmp(&(b.topic.as_str(), b.partition, b.offset))
    });
    let mut writes: BTreeMap<(String, PartitionKey), TallyWrite> = BTreeMap::new();
    let mut counted_now: BTreeMap<String, u64> = BTreeMap::new();
    let mut capped = Capped::default();
    for (position, mut reaction) in reactions {
        let start_ms = width.start_of(reaction.at_ms);
        let id = tally_id(&reaction.stream, start_ms, &reaction.user);
        let partition = PartitionKey::of(&position);
        let tally = stored.get(&id);
        let stored_offset = tally.and_then(|t| t.offsets.get(&partition).copied());
        if stored_offset.is_some_and(|o| position.offset <= o) {
            // Counted (and written to its window) by an earlier delivery.
            reaction.count = 0;
            capped.reactions.push((position, reaction));
            continue;
        }
        let counted = counted_now
            .entry(id.clone())
            .or_insert_with(|| tally.map_or(0, |t| t.counted));
        let allowed = limit
            .saturating_sub(*counted)
            .min(u64::from(reaction.count));
        *counted += allowed;
        capped.taps_over_limit += u64::from(reaction.count) - allowed;
        let write = writes
            .entry((id.clone(), partition.clone()))
            .or_insert_with(|| TallyWrite {
                id: id.clone(),
                start_ms,
                partition,
                offset: position.offset,
                counted: 0,
            });
        write.offset = position.offset;
        // At most the reaction's own count, a u32.
        reaction.count = u32::try_from(allowed).unwrap_or(reaction.count);
        capped.reactions.push((position, reaction));
    }
    capped.writes = writes
        .into_values()
        .map(|mut write| {
            write.counted = counted_now.get(&write.id).copied().unwrap_or(0);
            write
        })
        .collect();
    capped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emoji::EmojiName;
    use proptest::prelude::*;

    const WIDTH: WindowWidth = WindowWidth::DEFAULT;

    fn reaction(offset: i64, user: &str, count: u32, at_ms: i64) -> (RecordPosition, Reaction) {
        (
            RecordPosition {
                topic: "reactions".into(),
                partition: 0,
                offset,
                generation: 0,
            },
            Reaction {
                stream: StreamId::parse("s", "final").unwrap(),
                user: UserId::parse("u", user).unwrap(),
                emoji: EmojiName::parse("fire").unwrap(),
                count,
                at_ms,
                key: None,
            },
        )
    }

    /// Applies `writes` as the store does.
    fn store(stored: &mut BTreeMap<String, Tally>, writes: &[TallyWrite]) {
        for write in writes {
            let tally = stored.entry(write.id.clone()).or_default();
            tally.counted = write.counted;
            tally.offsets.insert(write.partition.clone(), write.offset);
        }
    }

    fn counted(reactions: &[(RecordPosition, Reaction)]) -> BTreeMap<(String, i64), u64> {
        let mut sums = BTreeMap::new();
        for (_, r) in reactions {
            *sums
                .entry((r.user.as_str().to_owned(), WIDTH.start_of(r.at_ms)))
                .or_default() += u64::from(r.count);
        }
        sums
    }

    #[test]
    fn a_viewer_is_cut_at_the_limit_per_window_across_batches() {
        let mut stored = BTreeMap::new();
        let first = vec![
            reaction(1, "a", 30, 0),
            reaction(2, "b", 5, 0),
            reaction(3, "a", 30, 100),
        ];
        let capped = cap_batch(first, WIDTH, 40, &stored);
        assert_eq!(capped.taps_over_limit, 20);
        let counts: Vec<u32> = capped.reactions.iter().map(|(_, r)| r.count).collect();
        assert_eq!(counts, [30, 5, 10]);
        assert_eq!(capped.writes.len(), 2);
        store(&mut stored, &capped.writes);
        // The next batch: "a" has nothing left in window 0, a fresh allowance in window 2000.
        let second = vec![reaction(4, "a", 3, 1_999), reaction(5, "a", 50, 2_000)];
        let capped = cap_batch(second, WIDTH, 40, &stored);
        let counts: Vec<(i64, u32)> = capped
            .reactions
            .iter()
            .map(|(p, r)| (p.offset, r.count))
            .collect();
        assert_eq!(counts, [(4, 0), (5, 40)]);
        assert_eq!(capped.taps_over_limit, 13);
        // Off: everything counts.
        let off = cap_batch(vec![reaction(9, "a", 99, 0)], WIDTH, 0, &stored);
        assert_eq!(off.reactions[0].1.count, 99);
    }

    proptest! {
        /// However a log is cut into batches, and whatever is redelivered (a batch again after
        /// its windows were written but before or after its tallies were), the counted taps are
        /// those of capping the whole log in one pass, and never more than the limit.
        #[test]
        fn redelivery_and_batch_boundaries_change_nothing(
            taps in proptest::collection::vec((0usize..3, 1u32..30, 0i64..6_000), 1..60),
            cuts in proptest::collection::vec(1usize..8, 1..20),
            crash_before_tallies in proptest::collection::vec(any::<bool>(), 20),
            limit in 1u64..60,
        ) {
            let log: Vec<_> = taps
                .iter()
                .enumerate()
                .map(|(i, (user, count, at))| reaction(i as i64, &format!("v{user}"), *count, *at))
                .collect();
            let whole = counted(&cap_batch(log.clone(), WIDTH, limit, &BTreeMap::new()).reactions);
            for sum in whole.values() {
                prop_assert!(*sum <= limit);
            }
            // Windows keep their own per-partition offsets: a reaction counts once.
            let mut window_offsets: BTreeMap<(String, i64), i64> = BTreeMap::new();
            let mut applied: Vec<(RecordPosition, Reaction)> = Vec::new();
            let mut stored = BTreeMap::new();
            let mut start = 0;
            let mut round = 0;
            let mut redelivery = false;
            while start < log.len() {
                let len = cuts[round % cuts.len()];
                let end = (start + len).min(log.len());
                // A batch crashes at most once, then is redelivered whole.
                let crash = !redelivery && crash_before_tallies[round % crash_before_tallies.len()];
                round += 1;
                redelivery = crash;
                let capped = cap_batch(log[start..end].to_vec(), WIDTH, limit, &stored);
                for (position, reaction) in capped.reactions {
                    let key = (reaction.stream.as_str().to_owned(), WIDTH.start_of(reaction.at_ms));
                    let seen = window_offsets.get(&key).copied();
                    if seen.is_none_or(|o| position.offset > o) {
                        window_offsets.insert(key, position.offset);
                        applied.push((position, reaction));
                    }
                }
                if crash {
                    // Redelivered from its start (same cut): the tallies were never written.
                    round -= 1;
                    continue;
                }
                store(&mut stored, &capped.writes);
                if crash_before_tallies[(round * 7) % crash_before_tallies.len()] {
                    // Redelivered after everything was written (the commit was lost).
                    let again = cap_batch(log[start..end].to_vec(), WIDTH, limit, &stored);
                    prop_assert!(again.reactions.iter().all(|(_, r)| r.count == 0));
                    prop_assert!(again.writes.is_empty());
                }
                start = end;
            }
            prop_assert_eq!(counted(&applied), whole);
        }
    }
}
