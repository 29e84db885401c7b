//! Fair use: no viewer's taps count for more than a limit per stream and window, however they
//! are spread over requests and batches. This is the pure half; the counts live in the viewer's
//! state on the stream (`viewer_state`, stored by `mongo::viewer_taps`).
//!
//! A viewer's reactions to a stream share one Kafka key (see `stream_shards`), so they reach
//! aggregate in offset order on one partition, one batch at a time (two deliveries overlap only
//! when a retry starts while the first still runs). The viewer's state keeps the taps counted
//! per window and, per partition, the highest offset it accounts for. A batch is capped against
//! the stored states in offset order; the capped reactions are written to the windows first and
//! the new states after, so the limit holds exactly and nothing is counted twice (see
//! `viewer_state` for why a redelivery or an overlapping delivery is exact).
//!
//! A state keeps the counts of the windows that can still get taps: those starting no earlier
//! than the viewer's newest window minus the horizon (the allowed lateness and clock skew, which
//! bound how far behind a new record's `at_ms` can be, plus a window).

use crate::kafka_event::RecordPosition;
use crate::reaction::Reaction;
use crate::viewer_state::{StateChanges, ViewerState, in_offset_order};
use crate::window::WindowWidth;
use std::collections::BTreeMap;

/// A batch after the limit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capped {
    /// The reactions to count, with their counts cut to what the limit leaves. Reactions left
    /// with nothing, and those a stored state already accounts for, stay with a count of 0:
    /// they add no taps but still move their window's offsets, so the window is written and
    /// its state published as for any batch (a redelivery included).
    pub reactions: Vec<(RecordPosition, Reaction)>,
    /// The viewer states the batch touched afresh, with their new counts.
    pub changes: StateChanges,
    /// Taps beyond the limit, not counted.
    pub taps_over_limit: u64,
}

/// The limit a reaction is held to: the deployment's `limit` (0: none) or its stream's own
/// ([`Reaction::fair_use_limit`]), whichever is lower; 0 when neither applies.
pub fn limit_of(reaction: &Reaction, limit: u64) -> u64 {
    match (limit, reaction.fair_use_limit.map(u64::from)) {
        (0, Some(stream)) => stream,
        (limit, Some(stream)) => limit.min(stream),
        (limit, None) => limit,
    }
}

/// Caps `reactions` (one batch, in any order) at `limit` taps per viewer, stream and window
/// (or the lower limit a reaction's stream set, see [`limit_of`]), given the `stored` viewer
/// states by id; counts of windows starting more than `horizon_ms` before a viewer's newest are
/// dropped. A `limit` of 0 turns fair use off for the streams that set none.
pub fn cap_batch(
    mut reactions: Vec<(RecordPosition, Reaction)>,
    width: WindowWidth,
    limit: u64,
    horizon_ms: i64,
    stored: &BTreeMap<String, ViewerState>,
) -> Capped {
    if limit == 0 && reactions.iter().all(|(_, r)| r.fair_use_limit.is_none()) {
        return Capped {
            reactions,
            ..Capped::default()
        };
    }
    in_offset_order(&mut reactions);
    let mut capped = Capped::default();
    for (position, mut reaction) in reactions {
        let limit = limit_of(&reaction, limit);
        if limit == 0 {
            // Nothing limits this stream: counted as sent, and no state is kept for it.
            capped.reactions.push((position, reaction));
            continue;
        }
        let Some(state) = capped.changes.deciding(&position, &reaction, stored) else {
            // Counted (and written to its window) by an earlier delivery.
            reaction.count = 0;
            capped.reactions.push((position, reaction));
            continue;
        };
        let counted = state
            .windows
            .entry(width.start_of(reaction.at_ms))
            .or_insert(0);
        let allowed = limit
            .saturating_sub(*counted)
            .min(u64::from(reaction.count));
        *counted += allowed;
        capped.taps_over_limit += u64::from(reaction.count) - allowed;
        // At most the reaction's own count, a u32.
        reaction.count = u32::try_from(allowed).unwrap_or(reaction.count);
        capped.reactions.push((position, reaction));
    }
    for state in capped.changes.states.values_mut() {
        if let Some(&newest) = state.windows.keys().next_back() {
            let oldest_kept = newest.saturating_sub(horizon_ms);
            state.windows.retain(|&start, _| start >= oldest_kept);
        }
    }
    capped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emoji::EmojiName;
    use crate::ids::{StreamId, UserId};
    use crate::viewer_state::StateChanges;
    use proptest::prelude::*;

    const WIDTH: WindowWidth = WindowWidth::DEFAULT;

    const HORIZON_MS: i64 = 60_000;

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
                fair_use_limit: None,
            },
        )
    }

    /// Stores what `capped` changed, as aggregate does.
    fn store(stored: &mut BTreeMap<String, ViewerState>, capped: &Capped) {
        let writes =
            crate::viewer_state::writes(stored, StateChanges::default(), capped.changes.clone());
        crate::viewer_state::store(stored, &writes);
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
        let capped = cap_batch(first, WIDTH, 40, HORIZON_MS, &stored);
        assert_eq!(capped.taps_over_limit, 20);
        let counts: Vec<u32> = capped.reactions.iter().map(|(_, r)| r.count).collect();
        assert_eq!(counts, [30, 5, 10]);
        assert_eq!(capped.changes.offsets.len(), 2);
        store(&mut stored, &capped);
        // The next batch: "a" has nothing left in window 0, a fresh allowance in window 2000.
        let second = vec![reaction(4, "a", 3, 1_999), reaction(5, "a", 50, 2_000)];
        let capped = cap_batch(second, WIDTH, 40, HORIZON_MS, &stored);
        let counts: Vec<(i64, u32)> = capped
            .reactions
            .iter()
            .map(|(p, r)| (p.offset, r.count))
            .collect();
        assert_eq!(counts, [(4, 0), (5, 40)]);
        assert_eq!(capped.taps_over_limit, 13);
        // Off: everything counts.
        let off = cap_batch(vec![reaction(9, "a", 99, 0)], WIDTH, 0, HORIZON_MS, &stored);
        assert_eq!(off.reactions[0].1.count, 99);
    }

    #[test]
    fn a_stream_limit_holds_below_the_deployment_limit_and_when_fair_use_is_off() {
        let limited = |offset, user, count, at_ms| {
            let (position, mut reaction) = reaction(offset, user, count, at_ms);
            reaction.fair_use_limit = Some(5);
            (position, reaction)
        };
        for deployment in [40, 0] {
            let batch = vec![
                limited(1, "a", 4, 0),
                limited(2, "a", 4, 100),
                reaction(3, "b", 30, 0),
                limited(4, "a", 9, 2_000),
            ];
            let capped = cap_batch(batch, WIDTH, deployment, HORIZON_MS, &BTreeMap::new());
            let counts: Vec<u32> = capped.reactions.iter().map(|(_, r)| r.count).collect();
            assert_eq!(counts, [4, 1, 30, 5], "deployment limit {deployment}");
            assert_eq!(capped.taps_over_limit, 3 + 4);
        }
        // A stream limit above the deployment's changes nothing.
        let (position, mut generous) = reaction(1, "a", 60, 0);
        generous.fair_use_limit = Some(100);
        assert_eq!(limit_of(&generous, 40), 40);
        let capped = cap_batch(
            vec![(position, generous)],
            WIDTH,
            40,
            HORIZON_MS,
            &BTreeMap::new(),
        );
        assert_eq!(capped.reactions[0].1.count, 40);
    }

    #[test]
    fn a_state_keeps_only_the_windows_within_the_horizon_of_its_newest() {
        let log = vec![
            reaction(1, "a", 5, 0),
            reaction(2, "a", 5, 4_000),
            reaction(3, "a", 5, 10_000),
        ];
        let capped = cap_batch(log, WIDTH, 40, 6_000, &BTreeMap::new());
        let state = &capped.changes.states["final/a"];
        assert_eq!(state.windows, BTreeMap::from([(4_000, 5), (10_000, 5)]));
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
            let whole = counted(&cap_batch(log.clone(), WIDTH, limit, HORIZON_MS, &BTreeMap::new()).reactions);
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
                let capped = cap_batch(log[start..end].to_vec(), WIDTH, limit, HORIZON_MS, &stored);
                for (position, reaction) in &capped.reactions {
                    let key = (reaction.stream.as_str().to_owned(), WIDTH.start_of(reaction.at_ms));
                    let seen = window_offsets.get(&key).copied();
                    if seen.is_none_or(|o| position.offset > o) {
                        window_offsets.insert(key, position.offset);
                        applied.push((position.clone(), reaction.clone()));
                    }
                }
                if crash {
                    // Redelivered from its start (same cut): the tallies were never written.
                    round -= 1;
                    continue;
                }
                store(&mut stored, &capped);
                if crash_before_tallies[(round * 7) % crash_before_tallies.len()] {
                    // Redelivered after everything was written (the commit was lost).
                    let again = cap_batch(log[start..end].to_vec(), WIDTH, limit, HORIZON_MS, &stored);
                    prop_assert!(again.reactions.iter().all(|(_, r)| r.count == 0));
                    prop_assert!(again.changes.offsets.is_empty());
                }
                start = end;
            }
            prop_assert_eq!(counted(&applied), whole);
        }
    }
}
