//! Moments (see `reactions::moments`), found twice. The `final` pass, holding its topic's
//! turn, feeds each stream's detector the windows it publishes final (in order of end, so a
//! stream's windows come in order) and confirms the moments they make: exact and exactly once,
//! since the same final windows make the same moments and a detector is written only over the
//! state it was read at. A final window comes at least `ALLOWED_LATENESS_MS` after its end,
//! too late for viewers to see a moment as it happens, so after each batch a window still
//! counting whose taps so far already stand out proposes a provisional moment, which the final
//! windows confirm or withdraw. Every change is published on the output topic as a
//! [`MomentRecord`] for notify to push.
//!
//! The pass's steps, in the order that loses nothing: the moments written (guarded by
//! revision), their records produced, the detectors written, then the windows marked final.
//! A pass that fails anywhere is redone from the detectors as they were.

use crate::{Aggregate, AggregateError};
use reactions::kafka::OutgoingRecord;
use reactions::message::VersionedMessage;
use reactions::moments::{Moment, MomentDetector, MomentRule, MomentStatus};
use reactions::mongo::{StoredDetector, StoredMoment, StoredWindow, WriteTimes};
use reactions::{MomentRecord, StreamId};
use std::collections::BTreeMap;

/// The rule a stream's detector starts with (each detector keeps the rule it started with).
pub(crate) const RULE: MomentRule = MomentRule::DEFAULT;

/// The most quiet detectors one pass moves on (the rest in the next pass).
const QUIET_PER_PASS: i64 = 128;

/// A stream's taps per emoji, as the detector reads them.
fn counts_of(window: &StoredWindow) -> BTreeMap<String, u64> {
    window
        .counts
        .iter()
        .map(|(emoji, n)| (emoji.as_str().to_owned(), *n))
        .collect()
}

fn record_of(
    stream: &StreamId,
    moment: Moment,
    status: MomentStatus,
    revision: i64,
) -> OutgoingRecord {
    let record = MomentRecord {
        v: MomentRecord::VERSION,
        stream: stream.clone(),
        moment,
        status,
        revision,
    };
    OutgoingRecord::new(stream.as_str(), record.encode())
}

/// What the final windows did to one stream: its detector moved on, the moments it changed and
/// the provisional ones it withdraws.
struct StreamStep {
    stream: StreamId,
    stored: StoredDetector,
    changed: Vec<Moment>,
    withdrawn: Vec<StoredMoment>,
}

impl StreamStep {
    fn revision(&self) -> i64 {
        self.stored.detector.next_start_ms().unwrap_or(i64::MIN)
    }
}

/// Feeds `detector` the stream's newly final `windows` (in order of start) and, when `through`
/// is known, the silent windows ending by it. Returns the latest change of each moment.
fn step(
    detector: &mut MomentDetector,
    windows: &[&StoredWindow],
    width_ms: i64,
    through: Option<i64>,
) -> Vec<Moment> {
    let mut changed: Vec<Moment> = Vec::new();
    let mut take = |moments: Vec<Moment>| {
        for moment in moments {
            changed.retain(|m| m.detected_from_ms != moment.detected_from_ms);
            changed.push(moment);
        }
    };
    for window in windows {
        take(detector.observe(window.key.start_ms, width_ms, &counts_of(window)));
    }
    if let Some(through) = through {
        take(detector.advance_to(through, width_ms));
    }
    changed
}

impl Aggregate {
    /// Where the `final` pass must reach even with no window open: the end of the next window
    /// of the oldest detector with an open moment.
    pub(crate) async fn open_moments_end(&self) -> Result<Option<i64>, AggregateError> {
        let width = self.config.domain.window_width.millis();
        Ok(self
            .moments
            .oldest_open_next_start()
            .await?
            .map(|next| next.saturating_add(width)))
    }

    /// The moments of the windows a pass publishes final, in order of end. `through` is the end
    /// by which every window is final, when the pass took them all (not cut at its bound):
    /// then the streams quiet since are moved on to it too, so their moments end.
    pub(crate) async fn confirm_moments(
        &self,
        windows: &[StoredWindow],
        through: Option<i64>,
        times: WriteTimes,
    ) -> Result<usize, AggregateError> {
        let width = self.config.domain.window_width.millis();
        let mut by_stream: BTreeMap<StreamId, Vec<&StoredWindow>> = BTreeMap::new();
        for window in windows {
            by_stream
                .entry(window.key.stream.clone())
                .or_default()
                .push(window);
        }
        let streams: Vec<StreamId> = by_stream.keys().cloned().collect();
        let mut detectors = self.moments.detectors(&streams, RULE).await?;
        if let Some(through) = through {
            for (stream, quiet) in self
                .moments
                .open_detectors_before(through, width, QUIET_PER_PASS, RULE)
                .await?
            {
                by_stream.entry(stream.clone()).or_default();
                detectors.entry(stream).or_insert(quiet);
            }
        }
        let all: Vec<StreamId> = by_stream.keys().cloned().collect();
        let mut provisional: BTreeMap<StreamId, Vec<StoredMoment>> = BTreeMap::new();
        for moment in self.moments.provisional_of(&all).await? {
            provisional
                .entry(moment.stream.clone())
                .or_default()
                .push(moment);
        }
        let mut steps = Vec::new();
        for (stream, mut stream_windows) in by_stream {
            stream_windows.sort_by_key(|w| w.key.start_ms);
            let mut stored = detectors
                .remove(&stream)
                .unwrap_or_else(|| StoredDetector::fresh(RULE));
            let before = stored.detector.next_start_ms();
            let changed = step(&mut stored.detector, &stream_windows, width, through);
            let Some(next) = stored.detector.next_start_ms() else {
                continue;
            };
            if before == Some(next) {
                continue;
            }
            let withdrawn = provisional
                .remove(&stream)
                .unwrap_or_default()
                .into_iter()
                .filter(|p| {
                    p.moment.detected_from_ms < next
                        && !changed
                            .iter()
                            .any(|c| c.detected_from_ms == p.moment.detected_from_ms)
                })
                .collect();
            steps.push(StreamStep {
                stream,
                stored,
                changed,
                withdrawn,
            });
        }
        // The moments, then their records, then the detectors: a pass that stops in between
        // is redone from the detectors as they were, and makes the same moments.
        // Only streams with a change write here (a few at a time: moments are rare).
        futures::future::try_join_all(
            steps
                .iter()
                .filter(|step| !step.changed.is_empty() || !step.withdrawn.is_empty())
                .map(|step| self.write_moments(step, times)),
        )
        .await?;
        let records: Vec<OutgoingRecord> = steps
            .iter()
            .flat_map(|step| {
                let revision = step.revision();
                step.changed
                    .iter()
                    .map(move |m| {
                        record_of(&step.stream, m.clone(), MomentStatus::Confirmed, revision)
                    })
                    .chain(step.withdrawn.iter().map(move |w| {
                        record_of(
                            &step.stream,
                            w.moment.clone(),
                            MomentStatus::Withdrawn,
                            revision,
                        )
                    }))
            })
            .collect();
        self.produce(&self.config.output_topic, &records, "publishing moments")
            .await?;
        let detectors: Vec<(&StreamId, &StoredDetector)> =
            steps.iter().map(|s| (&s.stream, &s.stored)).collect();
        let stale = self.moments.save_detectors(&detectors, times).await?;
        if stale > 0 {
            tracing::warn!(
                streams = stale,
                "moment detectors written by another pass since this one read them; left as that pass wrote them"
            );
        }
        let changes = steps.iter().map(|s| s.changed.len()).sum::<usize>();
        if changes > 0 {
            tracing::info!(moments = changes, "moments confirmed");
        }
        Ok(records.len())
    }

    async fn write_moments(
        &self,
        step: &StreamStep,
        times: WriteTimes,
    ) -> Result<(), AggregateError> {
        let revision = step.revision();
        for moment in &step.changed {
            self.moments
                .confirm(&step.stream, moment, revision, times)
                .await?;
        }
        let withdrawn: Vec<i64> = step
            .withdrawn
            .iter()
            .map(|w| w.moment.detected_from_ms)
            .collect();
        self.moments
            .withdraw(&step.stream, &withdrawn, revision)
            .await?;
        Ok(())
    }

    /// After a batch: the windows still counting whose taps so far make a spike propose a
    /// provisional moment, published at once. Best effort: a failure is logged, and the final
    /// windows find the moment all the same. Returns how many were published.
    pub(crate) async fn propose_moments(
        &self,
        windows: &[StoredWindow],
        times: WriteTimes,
    ) -> usize {
        match self.try_propose_moments(windows, times).await {
            Ok(proposed) => proposed,
            Err(error) => {
                tracing::warn!(%error, "provisional moments not proposed after this batch");
                0
            }
        }
    }

    async fn try_propose_moments(
        &self,
        windows: &[StoredWindow],
        times: WriteTimes,
    ) -> Result<usize, AggregateError> {
        let width = self.config.domain.window_width.millis();
        // Only a window already at the least rate can be a spike: the others cost no read.
        let least = (RULE.rate_at_least * width as f64 / 1_000.0).ceil() as u64;
        let mut candidates: Vec<&StoredWindow> = windows
            .iter()
            .filter(|w| !w.is_final && w.total >= least)
            .collect();
        candidates.sort_by_key(|w| w.key.start_ms);
        if candidates.is_empty() {
            return Ok(0);
        }
        let mut streams: Vec<StreamId> = candidates.iter().map(|w| w.key.stream.clone()).collect();
        streams.sort();
        streams.dedup();
        // The provisional moments already proposed: the detector lags the live windows by
        // the lateness, so a spike's second window would otherwise propose it again.
        let (detectors, provisional) = tokio::join!(
            self.moments.detectors(&streams, RULE),
            self.moments.provisional_of(&streams)
        );
        let (detectors, provisional) = (detectors?, provisional?);
        // A moment the detector has not reached yet covers the windows up to its merge gap
        // and the lateness the detector lags by.
        let covers_ms = width
            .saturating_add((RULE.merge_gap_s * 1_000.0) as i64)
            .saturating_add(self.config.allowed_lateness_ms);
        let mut records = Vec::new();
        let mut proposed: Vec<&StreamId> = Vec::new();
        for window in candidates {
            // A stream's first window to spike proposes; a later one would be the same moment.
            let start = window.key.start_ms;
            let open = |p: &StoredMoment| {
                p.stream == window.key.stream
                    && (p.moment.detected_from_ms..=p.moment.detected_from_ms + covers_ms)
                        .contains(&start)
            };
            if proposed.contains(&&window.key.stream) || provisional.iter().any(open) {
                continue;
            }
            let Some(stored) = detectors.get(&window.key.stream) else {
                continue;
            };
            let Some(moment) =
                stored
                    .detector
                    .provisional(window.key.start_ms, width, &counts_of(window))
            else {
                continue;
            };
            proposed.push(&window.key.stream);
            if self
                .moments
                .propose(&window.key.stream, &moment, times)
                .await?
            {
                tracing::info!(
                    stream = window.key.stream.as_str(),
                    detected_from_ms = moment.detected_from_ms,
                    emoji = moment.emoji,
                    "provisional moment"
                );
                records.push(record_of(
                    &window.key.stream,
                    moment,
                    MomentStatus::Provisional,
                    0,
                ));
            }
        }
        self.produce(
            &self.config.output_topic,
            &records,
            "publishing provisional moments",
        )
        .await?;
        Ok(records.len())
    }
}
