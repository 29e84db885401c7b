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
use std::collections::{BTreeMap, HashMap};

/// The rule a stream's detector starts with (each detector keeps the rule it started with).
pub(crate) const RULE: MomentRule = MomentRule::DEFAULT;

/// The most quiet detectors one pass moves on, and orphaned provisional moments it withdraws
/// (the rest in the next pass).
const QUIET_PER_PASS: i64 = 128;

/// The most streams whose detectors a container keeps for the provisional check (see
/// [`DetectorCache`]); past it the cache starts afresh.
const DETECTOR_CACHE_STREAMS: usize = 10_000;

/// Streams' detectors as read for the provisional check, with when: a popular stream's every
/// batch would otherwise read its detector, though the detector changes once a window.
pub(crate) type DetectorCache = std::sync::Mutex<HashMap<StreamId, (i64, Option<MomentDetector>)>>;

/// How long after its first spike window a provisional moment is taken for orphaned once
/// every window is final: its stream's final windows passed it long ago.
const ORPHANED_AFTER_MS: i64 = 60_000;

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

/// What the final windows did to one stream: its detector moved on, the moments it changed,
/// which of those changes are published, and the provisional ones it withdraws.
struct StreamStep {
    stream: StreamId,
    stored: StoredDetector,
    changed: Vec<Moment>,
    /// The changes viewers get.
    published: Vec<Moment>,
    withdrawn: Vec<StoredMoment>,
}

impl StreamStep {
    fn revision(&self) -> i64 {
        self.stored.detector.next_start_ms().unwrap_or(i64::MIN)
    }

    /// When viewers first saw `moment`, if a provisional moment stood for it: one this step
    /// withdraws whose first spike lies in its span but later (the live window's taps so far
    /// stood out a window after the final windows did). That moment was on screen since it was
    /// proposed. Only withdrawn ones count: a provisional moment this step confirms, or one
    /// past the detector, is a moment of its own.
    fn first_seen_of(&self, moment: &Moment) -> Option<i64> {
        self.withdrawn
            .iter()
            .filter(|p| {
                p.moment.detected_from_ms > moment.detected_from_ms
                    && p.moment.detected_from_ms < moment.end_ms
            })
            .map(|p| p.first_seen_ms)
            .min()
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
    /// then the streams quiet since are moved on to it too, so their moments end, and
    /// provisional moments left behind by a race are withdrawn. Returns the streams whose
    /// detector another pass wrote meanwhile: their windows must not be marked final by this
    /// pass, or the stored detector would never take them.
    pub(crate) async fn confirm_moments(
        &self,
        windows: &[StoredWindow],
        through: Option<i64>,
        times: WriteTimes,
    ) -> Result<Vec<StreamId>, AggregateError> {
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
        let mut orphans = Vec::new();
        if let Some(through) = through {
            let (quiet, left) = tokio::join!(
                self.moments
                    .open_detectors_before(through, width, QUIET_PER_PASS, RULE),
                self.moments
                    .provisional_before(through.saturating_sub(ORPHANED_AFTER_MS), QUIET_PER_PASS)
            );
            for (stream, quiet) in quiet? {
                by_stream.entry(stream.clone()).or_default();
                detectors.entry(stream).or_insert(quiet);
            }
            orphans = left?;
        }
        let all: Vec<StreamId> = by_stream.keys().cloned().collect();
        let mut provisional: BTreeMap<StreamId, Vec<StoredMoment>> = BTreeMap::new();
        for moment in self.moments.provisional_of(&all).await? {
            provisional
                .entry(moment.stream.clone())
                .or_default()
                .push(moment);
        }
        orphans.retain(|o| !by_stream.contains_key(&o.stream));
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
            let proposed = provisional.remove(&stream).unwrap_or_default();
            let was_proposed = |m: &Moment| {
                proposed
                    .iter()
                    .any(|p| p.moment.detected_from_ms == m.detected_from_ms)
            };
            // Viewers get a moment when it appears or is confirmed and when it ends, not at
            // every window it grows by (stored all the same).
            let published = changed
                .iter()
                .filter(|m| {
                    m.ended
                        || was_proposed(m)
                        || before.is_none_or(|before| m.detected_from_ms >= before)
                })
                .cloned()
                .collect();
            let withdrawn = proposed
                .iter()
                .filter(|p| {
                    p.moment.detected_from_ms < next
                        && !changed
                            .iter()
                            .any(|c| c.detected_from_ms == p.moment.detected_from_ms)
                })
                .cloned()
                .collect();
            steps.push(StreamStep {
                stream,
                stored,
                changed,
                published,
                withdrawn,
            });
        }
        // The moments, their records, the withdrawals, then the detectors: a pass that stops
        // in between is redone from the detectors as they were, and makes the same moments and
        // publishes the same withdrawals (still provisional until published).
        futures::future::try_join_all(
            steps
                .iter()
                .flat_map(|step| step.changed.iter().map(move |m| (step, m)))
                .map(|(step, moment)| {
                    let first_seen = step.first_seen_of(moment).unwrap_or(times.now_ms);
                    self.moments
                        .confirm(&step.stream, moment, step.revision(), first_seen, times)
                }),
        )
        .await?;
        let orphan_revision = through.unwrap_or(0);
        let records: Vec<OutgoingRecord> = steps
            .iter()
            .flat_map(|step| {
                let revision = step.revision();
                step.published
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
            .chain(orphans.iter().map(|o| {
                record_of(
                    &o.stream,
                    o.moment.clone(),
                    MomentStatus::Withdrawn,
                    orphan_revision,
                )
            }))
            .collect();
        self.produce(&self.config.output_topic, &records, "publishing moments")
            .await?;
        let withdrawals = steps
            .iter()
            .map(|step| (&step.stream, step.withdrawn.as_slice(), step.revision()))
            .chain(
                orphans
                    .iter()
                    .map(|o| (&o.stream, std::slice::from_ref(o), orphan_revision)),
            );
        futures::future::try_join_all(withdrawals.filter(|(_, w, _)| !w.is_empty()).map(
            |(stream, withdrawn, revision)| async move {
                let from: Vec<i64> = withdrawn
                    .iter()
                    .map(|w| w.moment.detected_from_ms)
                    .collect();
                self.moments.withdraw(stream, &from, revision).await
            },
        ))
        .await?;
        let detectors: Vec<(&StreamId, &StoredDetector)> =
            steps.iter().map(|s| (&s.stream, &s.stored)).collect();
        let stale = self.moments.save_detectors(&detectors, times).await?;
        if !stale.is_empty() {
            tracing::warn!(
                streams = stale.len(),
                "moment detectors written by another pass since this one read them; their windows are left open for a later pass"
            );
        }
        let changes = steps.iter().map(|s| s.changed.len()).sum::<usize>();
        if changes > 0 || !orphans.is_empty() {
            tracing::info!(
                moments = changes,
                published = records.len(),
                orphans_withdrawn = orphans.len(),
                "moments confirmed"
            );
        }
        Ok(stale)
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

    /// The detectors of `streams` as read at most a window ago (a miss is read, with those of
    /// the other misses, in one `find`).
    async fn cached_detectors(
        &self,
        streams: &[StreamId],
        now_ms: i64,
    ) -> Result<HashMap<StreamId, Option<MomentDetector>>, AggregateError> {
        let fresh_for = self.config.domain.window_width.millis();
        let mut found = HashMap::new();
        let mut missing = Vec::new();
        {
            let cache = self
                .detector_cache
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for stream in streams {
                match cache.get(stream) {
                    Some((read_at, detector)) if now_ms - read_at < fresh_for => {
                        found.insert(stream.clone(), detector.clone());
                    }
                    _ => missing.push(stream.clone()),
                }
            }
        }
        if missing.is_empty() {
            return Ok(found);
        }
        let mut read = self.moments.detectors(&missing, RULE).await?;
        let mut cache = self
            .detector_cache
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if cache.len() > DETECTOR_CACHE_STREAMS {
            cache.clear();
        }
        for stream in missing {
            let detector = read.remove(&stream).map(|stored| stored.detector);
            cache.insert(stream.clone(), (now_ms, detector.clone()));
            found.insert(stream, detector);
        }
        Ok(found)
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
        let detectors = self.cached_detectors(&streams, times.now_ms).await?;
        // A stream's first window to spike proposes; a later one would be the same moment.
        let mut spikes: Vec<(&StreamId, Moment)> = Vec::new();
        for window in candidates {
            let stream = &window.key.stream;
            if spikes.iter().any(|(s, _)| *s == stream) {
                continue;
            }
            let Some(Some(detector)) = detectors.get(stream) else {
                continue;
            };
            if let Some(moment) =
                detector.provisional(window.key.start_ms, width, &counts_of(window))
            {
                spikes.push((stream, moment));
            }
        }
        if spikes.is_empty() {
            return Ok(0);
        }
        // The detector lags the live windows by the lateness: a moment it has not closed yet,
        // or one proposed that it has not reached, is this spike already.
        let spiking: Vec<StreamId> = spikes.iter().map(|(s, _)| (*s).clone()).collect();
        let unended = self.moments.unended_of(&spiking).await?;
        let covers_ms = width
            .saturating_add((RULE.merge_gap_s * 1_000.0) as i64)
            .saturating_add(self.config.allowed_lateness_ms);
        let mut records = Vec::new();
        for (stream, moment) in spikes {
            let start = moment.detected_from_ms;
            let taken = unended.iter().any(|known| {
                known.stream == *stream
                    && known.moment.detected_from_ms <= start
                    && (known.status == MomentStatus::Confirmed
                        || start <= known.moment.detected_from_ms.saturating_add(covers_ms))
            });
            if taken || !self.moments.propose(stream, &moment, times).await? {
                continue;
            }
            tracing::info!(
                stream = stream.as_str(),
                detected_from_ms = moment.detected_from_ms,
                emoji = moment.emoji,
                "provisional moment"
            );
            records.push(record_of(stream, moment, MomentStatus::Provisional, 0));
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
