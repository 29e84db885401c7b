//! What aggregate keeps per viewer and stream, beside the windows: fair use's taps counted per
//! window (see `fair_use`) and the viewer's recent idempotency keys (see `idempotency`), in one
//! document, with per partition the highest offset it accounts for. One document per viewer
//! and stream, not one per window, so a batch reads and writes one statement per viewer it
//! touches whatever it counts there: the keys add nothing to fair use's read, write or
//! statements.
//!
//! A batch reads its viewers' states in one `find`, takes retries out and caps the rest
//! against them, writes the windows, then writes the new states in one `update`, each only
//! over the revision it read. A redelivered batch therefore finds either the state it was
//! computed from (and decides the same, which the windows' own offsets then skip) or a newer
//! one (which accounts for its reactions: they add nothing). A state written by someone else
//! since the read fails its statement: when that write accounts for everything this batch
//! decided (an earlier or wider delivery of the same records), nothing is lost; otherwise (the
//! viewer's records on another partition, after a change of partition count or
//! `STREAM_SHARDS`, or a narrower delivery that wrote first) the batch fails and is retried
//! against the new state, rather than one write erasing the other's counts and keys.

use crate::idempotency::SeenKey;
use crate::ids::{StreamId, UserId};
use crate::kafka_event::RecordPosition;
use crate::reaction::Reaction;
use crate::window_delta::PartitionKey;
use std::collections::BTreeMap;

/// A viewer's state on one stream, as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ViewerState {
    /// Raised by every write; 0 for a state not stored yet.
    pub rev: i64,
    /// Per partition, the highest offset this state accounts for.
    pub offsets: BTreeMap<PartitionKey, i64>,
    /// Fair use: taps counted per window start, for the windows that can still get taps.
    pub windows: BTreeMap<i64, u64>,
    /// The most recent idempotency keys, oldest first.
    pub keys: Vec<SeenKey>,
}

impl ViewerState {
    /// Whether a reaction at `position` is accounted for: counted, cut or skipped by an earlier
    /// delivery of its record.
    pub fn accounts_for(&self, position: &RecordPosition) -> bool {
        self.offsets
            .get(&PartitionKey::of(position))
            .is_some_and(|&offset| position.offset <= offset)
    }
}

/// The document holding `user`'s state on `stream`: `stream/user` (neither id may contain `/`).
pub fn viewer_state_id(stream: &StreamId, user: &UserId) -> String {
    format!("{}/{}", stream.as_str(), user.as_str())
}

/// The ids of the states of `reactions`' viewers, each once.
pub fn viewer_state_ids<'a>(reactions: impl IntoIterator<Item = &'a Reaction>) -> Vec<String> {
    let mut ids: Vec<String> = reactions
        .into_iter()
        .map(|r| viewer_state_id(&r.stream, &r.user))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Sorts a batch in offset order, per partition: the order its reactions are decided in.
pub(crate) fn in_offset_order(reactions: &mut [(RecordPosition, Reaction)]) {
    reactions.sort_by(|(a, _), (b, _)| {
        (a.topic.as_str(), a.partition, a.offset).cmp(&(b.topic.as_str(), b.partition, b.offset))
    });
}

/// What one step of a batch (fair use, or taking retries out) changed in the states it touched.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateChanges {
    /// The touched states as they are after the step, by id.
    pub states: BTreeMap<String, ViewerState>,
    /// Per touched (state, partition), the highest offset the step decided.
    pub offsets: BTreeMap<(String, PartitionKey), i64>,
}

impl StateChanges {
    /// The state of `reaction`'s viewer to decide it against (changed by this step already, or
    /// as stored), with the decision recorded at `position`; `None` when a stored state already
    /// accounts for it (an earlier delivery of its record decided it).
    pub(crate) fn deciding(
        &mut self,
        position: &RecordPosition,
        reaction: &Reaction,
        stored: &BTreeMap<String, ViewerState>,
    ) -> Option<&mut ViewerState> {
        let id = viewer_state_id(&reaction.stream, &reaction.user);
        let state = stored.get(&id);
        if state.is_some_and(|s| s.accounts_for(position)) {
            return None;
        }
        self.offsets
            .insert((id.clone(), PartitionKey::of(position)), position.offset);
        Some(
            self.states
                .entry(id)
                .or_insert_with(|| state.cloned().unwrap_or_default()),
        )
    }
}

/// A state to store after the windows were written: the whole new state, over the revision
/// read (`state.rev`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewerStateWrite {
    pub id: String,
    /// Per partition the batch decided reactions of, the highest offset decided.
    pub offsets: BTreeMap<PartitionKey, i64>,
    pub state: ViewerState,
}

impl ViewerStateWrite {
    /// Whether `stored` already accounts for everything this write decided (an earlier or a
    /// wider delivery of the same records wrote it).
    pub fn accounted_by(&self, stored: &ViewerState) -> bool {
        self.offsets.iter().all(|(partition, offset)| {
            stored
                .offsets
                .get(partition)
                .is_some_and(|stored| stored >= offset)
        })
    }
}

/// The states to write after a batch: `keys`' changes (taking retries out, which runs first)
/// and `fair_use`'s (which ran on its output), one write per state either touched, each with
/// the whole new state.
pub fn writes(
    stored: &BTreeMap<String, ViewerState>,
    keys: StateChanges,
    fair_use: StateChanges,
) -> Vec<ViewerStateWrite> {
    let mut decided: BTreeMap<String, BTreeMap<PartitionKey, i64>> = BTreeMap::new();
    for ((id, partition), offset) in keys.offsets.into_iter().chain(fair_use.offsets) {
        let highest = decided
            .entry(id)
            .or_default()
            .entry(partition)
            .or_insert(offset);
        *highest = (*highest).max(offset);
    }
    decided
        .into_iter()
        .map(|(id, offsets)| {
            let mut state = stored.get(&id).cloned().unwrap_or_default();
            if let Some(changed) = keys.states.get(&id) {
                state.keys = changed.keys.clone();
            }
            if let Some(changed) = fair_use.states.get(&id) {
                state.windows = changed.windows.clone();
            }
            ViewerStateWrite { id, offsets, state }
        })
        .collect()
}

/// Applies `writes` as the store does (each only over the revision it read; one that finds
/// another is left out, as the batch it came from fails): for the property tests of the steps.
#[cfg(test)]
pub(crate) fn store(stored: &mut BTreeMap<String, ViewerState>, writes: &[ViewerStateWrite]) {
    for write in writes {
        let state = stored.entry(write.id.clone()).or_default();
        if state.rev != write.state.rev {
            continue;
        }
        let mut offsets = std::mem::take(&mut state.offsets);
        *state = write.state.clone();
        offsets.extend(write.offsets.clone());
        state.offsets = offsets;
        state.rev += 1;
    }
}
