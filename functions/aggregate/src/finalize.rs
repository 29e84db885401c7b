//! Publishing windows as `final`: after a batch is counted, aggregate checks (at most once per
//! `FINALIZE_EVERY_MS` per container, at once after a pass that reached [`FINALS_PER_PASS`])
//! whether every partition of the input topic has now been counted past some open windows'
//! ends plus the allowed lateness (the rule is in `reactions::event_time`). Those windows'
//! states are produced once more with `final: true`, then their documents are marked final. A
//! failure here does not fail the batch: its counts are written, and the next pass finalizes
//! the windows instead. The scheduled tick runs the same pass when no batch comes (see
//! `crate::invocation`). One container at a time runs the pass over a topic
//! (`reactions::mongo::FinalizeTurns`): overlapping passes published the same final states two
//! or three times. A pass publishes at most [`FINALS_PER_PASS`] windows, so the windows of
//! hundreds of streams, which all end at once, reach notify in chunks.

use crate::invocation::TickSummary;
use crate::{Aggregate, AggregateError};
use reactions::WindowKey;
use reactions::clock::now_ms;
use reactions::event_time::{PartitionView, complete_before, complete_by_timestamp};
use reactions::metrics::MetricsLine;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// The most windows one pass publishes final. A platform's streams' windows all end at the
/// same instants, so without a bound every window end would send notify one burst of a final
/// state per stream that tapped (measured with 500 streams: about 430 records at once every
/// 2 s, the whole of the trigger's lag whenever it was sampled then). A pass that reaches the
/// bound lets its container's next batch run the next pass at once, so a few hundred windows
/// go out in chunks over a few batches (a fraction of a second) and a larger backlog drains at
/// this many windows per batch.
pub(crate) const FINALS_PER_PASS: usize = 128;

/// How long a tick starts passes for (well within the function's timeout); a larger backlog
/// is left to the next batch or tick.
const TICK_PASSES_FOR: Duration = Duration::from_secs(20);

/// What a pass's turn lasts beyond its Kafka steps' timeouts: its MongoDB round trips.
const TURN_LEASE_MARGIN: Duration = Duration::from_secs(5);

/// Whole days until the Event API key expiring at `expires_s` lapses (0 once it has), or `None`
/// when there is no key.
pub(crate) fn key_days_left(expires_s: u64, now_ms: i64) -> Option<u64> {
    let now_s = u64::try_from(now_ms.div_euclid(1000)).unwrap_or(0);
    (expires_s > 0).then(|| expires_s.saturating_sub(now_s) / 86_400)
}

/// Logs and counts a pass that could not decide (`FinalizeFailures`, watched by an alarm).
pub(crate) fn failed(error: &AggregateError) {
    tracing::warn!(%error, "windows not finalized in this pass");
    MetricsLine::new("aggregate")
        .count("FinalizeFailures", 1)
        .emit();
}

impl Aggregate {
    /// The scheduled tick: a pass over `REACTION_TOPIC` as its partitions' progress is stored.
    /// A failure fails the invocation (and counts in `FinalizeFailures`); the next tick retries.
    pub async fn finalize_tick(&self) -> Result<TickSummary, AggregateError> {
        self.finalize_tick_before(None).await
    }

    /// [`Aggregate::finalize_tick`], starting no pass that could still run at `stop`.
    pub async fn finalize_tick_before(
        &self,
        stop: Option<std::time::Instant>,
    ) -> Result<TickSummary, AggregateError> {
        if let Some(days) = key_days_left(self.config.event_api_key_expires_s, now_ms()) {
            MetricsLine::new("aggregate")
                .count("EventApiKeyDaysLeft", days)
                .emit();
        }
        let outcome = async {
            self.ensure_indexes().await?;
            // No batch may come soon to run the next pass: the tick runs them all.
            let started = std::time::Instant::now();
            let mut windows_finalized = 0;
            while started.elapsed() < TICK_PASSES_FOR && self.time_for_a_pass(stop) {
                let pass = self.finalize(&self.config.reaction_topic, now_ms()).await?;
                windows_finalized += pass;
                if pass < FINALS_PER_PASS {
                    break;
                }
            }
            Ok(windows_finalized)
        }
        .await;
        match outcome {
            Ok(windows_finalized) => {
                // Zero records and windows every minute: the series the broken-trigger alarms
                // compare exist even while nothing is counted.
                MetricsLine::new("aggregate")
                    .count("WindowsFinalized", windows_finalized as u64)
                    .count("Records", 0)
                    .count("Windows", 0)
                    .emit();
                Ok(TickSummary { windows_finalized })
            }
            Err(error) => {
                failed(&error);
                Err(error)
            }
        }
    }

    /// Runs a pass if one is due in this container; returns how many windows became final.
    pub(crate) async fn finalize_if_due(&self, topic: &str) -> Result<usize, AggregateError> {
        let now = now_ms();
        let every = i64::try_from(self.config.finalize_every.as_millis()).unwrap_or(i64::MAX);
        let last = self.last_finalize_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) < every
            || self
                .last_finalize_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return Ok(0);
        }
        let finalized = self.finalize(topic, now).await?;
        if finalized >= FINALS_PER_PASS {
            // More windows wait: this container's next batch runs the next pass.
            self.last_finalize_ms.store(i64::MIN, Ordering::Relaxed);
        }
        Ok(finalized)
    }

    /// The pass. `now` is read before the partitions' ends are (see `event_time`).
    async fn finalize(&self, topic: &str, now: i64) -> Result<usize, AggregateError> {
        let lateness = self.config.allowed_lateness_ms;
        // A stream gone quiet in a moment has no window to finalize, but its moment ends only
        // when a pass moves its detector on.
        let (open_windows, open_moments) =
            tokio::join!(self.store.earliest_open_end(), self.open_moments_end());
        let Some(earliest) = [open_windows?, open_moments?].into_iter().flatten().min() else {
            return Ok(0);
        };
        if earliest > now.saturating_sub(lateness) {
            return Ok(0);
        }
        let taken_at = now_ms();
        let lease = i64::try_from(self.turn_lease().as_millis()).unwrap_or(i64::MAX);
        let until = taken_at.saturating_add(lease);
        let Some(turn) = self.finalize_turns.take(topic, taken_at, until).await? else {
            // Another container's pass is publishing these windows now.
            return Ok(0);
        };
        let outcome = self.finalize_holding_turn(topic, now, earliest).await;
        if let Err(error) = self.finalize_turns.give_back(&turn).await {
            tracing::warn!(%error, topic, "the final pass's turn was not given back; it lapses with its lease");
        }
        outcome
    }

    /// How long a pass may hold the turn: each of its four Kafka steps (the partition count,
    /// the partitions' ends, producing the states, producing the moments) is bounded by
    /// `PRODUCE_TIMEOUT_MS`, plus a margin for its MongoDB round trips (which have no time limit of their own yet: a pass
    /// stuck on MongoDB past its lease may overlap the next, whose final states then repeat
    /// some of its own, which is harmless). A container that dies holding the turn delays the
    /// next pass by at most this.
    pub(crate) fn turn_lease(&self) -> Duration {
        self.config.produce_timeout * 4 + TURN_LEASE_MARGIN
    }

    /// The pass proper, once this container holds the turn.
    async fn finalize_holding_turn(
        &self,
        topic: &str,
        now: i64,
        earliest: i64,
    ) -> Result<usize, AggregateError> {
        let lateness = self.config.allowed_lateness_ms;
        let timeout = self.config.produce_timeout;
        // Fresh, not the container's cached count: a window must not be final while a partition
        // added since holds some of its taps. (Stored progress does not add partitions: a topic
        // created again with fewer keeps the progress of those it lost, which would then hold
        // every window back.)
        let producer = self.producer.current();
        let partitions = producer
            .fresh_partition_count(topic, timeout)
            .await
            .ok_or_else(|| AggregateError::Finalize {
                topic: topic.to_owned(),
                reason: crate::UNKNOWN_TOPIC.into(),
            })?;
        let progress = self.progress.stored(topic).await?;
        let counted: BTreeMap<i32, (i64, i64)> = progress
            .iter()
            .map(|p| (p.partition, (p.offset, p.max_timestamp_ms)))
            .collect();
        // A partition whose counted timestamps already pass the earliest open window needs no
        // look at its log; the others are complete only if nothing in their log is uncounted.
        let unsure: Vec<i32> = (0..partitions)
            .filter(|p| !complete_by_timestamp(counted.get(p).copied(), earliest, lateness))
            .collect();
        let logs: BTreeMap<i32, (i64, i64)> = match unsure.is_empty() {
            true => BTreeMap::new(),
            false => producer
                .log_ends(topic, &unsure, timeout)
                .await
                .map_err(|source| AggregateError::Kafka {
                    what: "reading the input partitions' ends",
                    source,
                })?
                .into_iter()
                .map(|(partition, low, high)| (partition, (low, high)))
                .collect(),
        };
        let views: Vec<PartitionView> = (0..partitions)
            .map(|p| PartitionView {
                counted: counted.get(&p).copied(),
                log: logs.get(&p).copied(),
            })
            .collect();
        let complete = complete_before(&views, now, lateness);
        if complete < earliest {
            return Ok(0);
        }
        let windows = self
            .store
            .open_windows_ending_by(complete, FINALS_PER_PASS as i64)
            .await?;
        let states = self.state_records(&windows, now);
        self.produce(
            &self.config.output_topic,
            &states,
            "publishing final window states",
        )
        .await?;
        // Before the windows are marked final: a pass stopped in between publishes them again
        // and their moments are redone from the detectors as they were.
        let times = reactions::mongo::WriteTimes {
            now_ms: now,
            retention: self.config.retention,
        };
        let every_window = windows.len() < FINALS_PER_PASS;
        let held_back = self
            .confirm_moments(&windows, every_window.then_some(complete), times)
            .await?;
        // Only the windows published: a reaction later than the allowed lateness may have
        // opened another one ending by `complete` since they were read.
        // Nor the windows of a stream whose detector another pass moved on meanwhile: a later
        // pass takes them with the detector as stored.
        let keys: Vec<WindowKey> = windows
            .iter()
            .filter(|w| !held_back.contains(&w.key.stream))
            .map(|w| w.key.clone())
            .collect();
        self.store.mark_windows_final(&keys).await?;
        tracing::info!(
            windows = windows.len(),
            complete_before_ms = complete,
            "windows final"
        );
        Ok(windows.len())
    }
}

#[cfg(test)]
mod tests {
    use super::key_days_left;

    #[test]
    fn days_left_of_the_event_api_key() {
        let now_ms = 1_800_000_000_000;
        assert_eq!(key_days_left(0, now_ms), None);
        assert_eq!(key_days_left(1_800_000_000 + 14 * 86_400, now_ms), Some(14));
        assert_eq!(key_days_left(1_800_000_000 + 86_399, now_ms), Some(0));
        assert_eq!(key_days_left(1_700_000_000, now_ms), Some(0));
    }
}
