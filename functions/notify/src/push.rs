//! One push per stream per interval, and no waiting for it. A batch's window states are
//! coalesced to the newest per (stream, window) and grouped by stream. A stream whose push
//! slot is open is pushed at once: its freshest stored states (newer ones may have been stored
//! since the batch's) in one `windows` frame to every connection watching it. A stream whose
//! slot is not open is marked owed and left: the batch goes on with the others. Whichever
//! invocation next finds an owed stream's slot open makes the push it owes ([`sweep`]): every
//! batch sweeps after its own streams, and the scheduled sweeper (see [`crate::sweeper`])
//! sweeps when no batch comes, so the last state of a stream whose taps stopped still goes out
//! within about one interval. The trigger's drain rate thus depends neither on the number of
//! streams nor on the push interval.
//!
//! With a push interval of 0 there is no schedule: every batch is pushed at once. In
//! `AppSyncEvents` delivery the frame is published once to the stream's channel instead (see
//! [`crate::publish`]); the interval then never stretches, as the audience costs no posts.

use crate::fanout::{FanoutReport, PostPolicy, newest_states, post_to_audience};
use crate::management::ConnectionsApi;
use crate::protocol::{MAX_FRAME_BYTES, ServerMessage};
use crate::publish::{EventTarget, publish_push};
use crate::schedule::{ACTIVE_WINDOW, BudgetShare};
use futures::{StreamExt, TryStreamExt};
use rand::seq::SliceRandom;
use reactions::clock::{duration_ms, now_ms};
use reactions::mongo::{
    ActiveStream, Claim, ConnectionStore, PushEnd, PushSlots, SlotLease, StoreError, WindowStore,
};
use reactions::{DomainConfig, StreamId, WindowStateRecord};
use std::collections::HashSet;
use std::time::Duration;
use tokio::sync::{OnceCell, Semaphore};
use tokio::time::Instant;

/// Streams pushed at once (their posts share one concurrency bound).
const STREAMS_AT_ONCE: usize = 16;

/// No slot is taken this close to the invocation's deadline: the push could post nothing.
const CLAIM_MARGIN: Duration = Duration::from_secs(1);

/// Open streams a batch pushes itself at most (one wave); it marks the others owed.
const BATCH_PUSHES: usize = STREAMS_AT_ONCE;

/// Owed streams one sweep pushes at most.
pub const SWEEP_LIMIT: i64 = 64;

/// Owed streams a batch pushes at most after its own: the sweeper does the rest, so a batch
/// spends little of its time on other partitions' streams.
const BATCH_SWEEP_LIMIT: i64 = 8;

/// How a batch is pushed.
#[derive(Debug, Clone, Copy)]
pub struct PushPolicy {
    pub post: PostPolicy,
    /// `PUSH_INTERVAL_MS`: the shortest time between two pushes of one stream (0: no schedule).
    pub interval: Duration,
    /// `POST_BUDGET_PER_SECOND`: posts per second all streams may make together.
    pub post_budget_per_second: u32,
    /// `FANOUT_DEADLINE_MS`: nothing is posted this long after a push began.
    pub deadline: Duration,
    /// How long a push holds its stream's slot before another may take it (the holder died):
    /// at least the deadline plus one post's timeout, so a live push never loses its slot.
    pub lease: Duration,
}

/// Where pushes go, how they are scheduled, and where the freshest states are read.
pub struct PushTargets<'a> {
    pub connections: &'a ConnectionStore,
    pub slots: &'a PushSlots,
    pub windows: &'a WindowStore,
    /// The swarm rule and lateness that turn stored windows into states.
    pub domain: &'a DomainConfig,
    pub api: &'a ConnectionsApi,
    /// In `AppSyncEvents` delivery, where pushes are published instead of posted.
    pub events: Option<&'a EventTarget>,
}

/// One invocation's shared context: the posts' concurrency bound and the audiences that share
/// the post budget.
struct Pusher<'a, 'b> {
    targets: &'a PushTargets<'b>,
    policy: PushPolicy,
    /// Whether streams share the post budget: only when they post per viewer (with a push
    /// schedule, in WebSocketApi delivery).
    shares_budget: bool,
    /// The active streams' audiences, read once, when the first push needs its interval: an
    /// invocation or a sweep that pushes nothing never reads them.
    active: OnceCell<Vec<ActiveStream>>,
    permits: Semaphore,
    /// Nothing is posted after this, and no slot is taken: the invocation's pushes all end
    /// within `FANOUT_DEADLINE_MS` of its start (and one post's timeout), so it never nears
    /// the function's timeout however many streams it has.
    deadline: Instant,
}

/// Pushes a batch's coalesced states (see [`crate::fanout::by_stream`]) to every stream's
/// audience whose slot is open, marks the others owed, then sweeps owed streams. Fails only
/// when MongoDB cannot be read or the owed marks cannot be written (the event source then
/// retries the batch).
pub async fn push_batch(
    streams: Vec<(StreamId, Vec<WindowStateRecord>)>,
    targets: &PushTargets<'_>,
    policy: PushPolicy,
    started: Instant,
) -> Result<FanoutReport, StoreError> {
    let pusher = Pusher::new(targets, policy, started).await?;
    let mut total = FanoutReport::default();
    if policy.interval.is_zero() {
        let reports: Vec<FanoutReport> = futures::stream::iter(streams)
            .map(|(stream, windows)| pusher.deliver(stream, 0, windows, None))
            .buffer_unordered(STREAMS_AT_ONCE)
            .map_ok(|(report, _)| report)
            .try_collect()
            .await?;
        reports.iter().for_each(|r| total.add(r));
        return Ok(total);
    }
    if streams.is_empty() {
        return Ok(pusher.sweep_after_batch().await);
    }
    let ids: Vec<StreamId> = streams.iter().map(|(s, _)| s.clone()).collect();
    let not_due: HashSet<String> = targets
        .slots
        .not_due(&ids, now_ms(), policy.lease)
        .await?
        .into_iter()
        .collect();
    let (mut waiting, mut open): (Vec<_>, Vec<_>) = streams
        .into_iter()
        .partition(|(stream, _)| not_due.contains(stream.as_str()));
    // A batch pushes one wave of open streams itself, chosen at random so none waits behind
    // the others every time; the rest are owed like the waiting ones and pushed by sweeps.
    // So a batch costs about the same whatever number of streams it carries, and the
    // trigger's drain rate does not depend on it.
    if open.len() > BATCH_PUSHES {
        open.shuffle(&mut rand::rng());
        waiting.extend(open.split_off(BATCH_PUSHES));
    }
    if let Some(oldest) = oldest_start(waiting.iter().flat_map(|(_, w)| w)) {
        let owed: Vec<String> = waiting.iter().map(|(s, _)| s.as_str().to_owned()).collect();
        targets.slots.mark_owed(&owed, oldest).await?;
        total.streams_owed += owed.len();
    }
    // Every stream's push runs to its end even when another's fails: dropping a fan-out half
    // way would leave its slot held and its viewers unserved. The first failure then fails
    // the batch (its retry finds the pushed streams' slots taken, and marks them owed).
    let results: Vec<Result<FanoutReport, StoreError>> = futures::stream::iter(open)
        .map(|(stream, windows)| pusher.push_if_open(stream, windows))
        .buffer_unordered(STREAMS_AT_ONCE)
        .collect()
        .await;
    total.add(&sum_reports(results)?);
    total.add(&pusher.sweep_after_batch().await);
    Ok(total)
}

/// Pushes up to [`SWEEP_LIMIT`] streams that are owed a push and whose slot is open.
pub async fn sweep(
    targets: &PushTargets<'_>,
    policy: PushPolicy,
) -> Result<FanoutReport, StoreError> {
    if policy.interval.is_zero() {
        return Ok(FanoutReport::default());
    }
    Pusher::new(targets, policy, Instant::now())
        .await?
        .sweep(SWEEP_LIMIT)
        .await
}

/// The sum of every stream's report, or the first failure once all have ended.
fn sum_reports(results: Vec<Result<FanoutReport, StoreError>>) -> Result<FanoutReport, StoreError> {
    let mut total = FanoutReport::default();
    let mut failure = None;
    for result in results {
        match result {
            Ok(report) => total.add(&report),
            Err(error) => failure = failure.or(Some(error)),
        }
    }
    failure.map_or(Ok(total), Err)
}

fn oldest_start<'a>(windows: impl IntoIterator<Item = &'a WindowStateRecord>) -> Option<i64> {
    windows.into_iter().map(|w| w.start_ms).min()
}

impl<'a, 'b> Pusher<'a, 'b> {
    async fn new(
        targets: &'a PushTargets<'b>,
        policy: PushPolicy,
        started: Instant,
    ) -> Result<Self, StoreError> {
        // In AppSyncEvents delivery the interval is never stretched: the audience costs no posts.
        Ok(Self {
            targets,
            policy,
            shares_budget: !policy.interval.is_zero() && targets.events.is_none(),
            active: OnceCell::new(),
            permits: Semaphore::new(policy.post.concurrency.max(1)),
            deadline: started + policy.deadline,
        })
    }

    /// Pushes `stream` if its slot is open now; else marks it owed.
    async fn push_if_open(
        &self,
        stream: StreamId,
        windows: Vec<WindowStateRecord>,
    ) -> Result<FanoutReport, StoreError> {
        let slots = self.targets.slots;
        let claim = if Instant::now() + CLAIM_MARGIN < self.deadline {
            slots.claim(&stream, now_ms(), self.policy.lease).await?
        } else {
            // Past the deadline nothing would be posted: leave the push to the next invocation.
            Claim::NotDue { due_ms: now_ms() }
        };
        match claim {
            Claim::Granted(lease) => self.push_stream(stream, windows, lease).await,
            Claim::NotDue { .. } => {
                if let Some(oldest) = oldest_start(&windows) {
                    slots
                        .mark_owed(&[stream.as_str().to_owned()], oldest)
                        .await?;
                }
                Ok(FanoutReport {
                    streams_owed: 1,
                    ..FanoutReport::default()
                })
            }
        }
    }

    /// A batch's sweep: a few owed streams, while its deadline leaves time. A failure is
    /// logged and counted, never the batch's: its own pushes are made.
    async fn sweep_after_batch(&self) -> FanoutReport {
        if Instant::now() >= self.deadline {
            return FanoutReport::default();
        }
        match self.sweep(BATCH_SWEEP_LIMIT).await {
            Ok(report) => report,
            Err(error) => {
                tracing::warn!(%error, "sweep after the batch failed; the sweeper retries");
                FanoutReport {
                    bookkeeping_failures: 1,
                    ..FanoutReport::default()
                }
            }
        }
    }

    async fn sweep(&self, limit: i64) -> Result<FanoutReport, StoreError> {
        let owed = self.targets.slots.owed_and_due(now_ms(), limit).await?;
        let results: Vec<Result<FanoutReport, StoreError>> = futures::stream::iter(owed)
            .filter_map(|id| async move { StreamId::parse("stream", &id).ok() })
            .map(|stream| async move {
                if Instant::now() + CLAIM_MARGIN >= self.deadline {
                    return Ok(FanoutReport::default());
                }
                match self
                    .targets
                    .slots
                    .claim(&stream, now_ms(), self.policy.lease)
                    .await?
                {
                    Claim::Granted(lease) => {
                        let mut report = self.push_stream(stream, Vec::new(), lease).await?;
                        report.swept += 1;
                        Ok(report)
                    }
                    // Another invocation took the slot first: the push is its to make.
                    Claim::NotDue { .. } => Ok(FanoutReport::default()),
                }
            })
            .buffer_unordered(STREAMS_AT_ONCE)
            .collect()
            .await;
        sum_reports(results)
    }

    /// Makes the push a taken slot owes: the batch's states of `stream` and everything owed,
    /// freshest as stored, then sets the stream's next slot.
    async fn push_stream(
        &self,
        stream: StreamId,
        batch: Vec<WindowStateRecord>,
        lease: SlotLease,
    ) -> Result<FanoutReport, StoreError> {
        let since = oldest_start(&batch)
            .into_iter()
            .chain(lease.owed_from_ms)
            .min();
        let (windows, malformed) = match since {
            Some(since) => self.freshest(&stream, batch, since).await?,
            None => (batch, 0),
        };
        if windows.is_empty() {
            // Nothing to push (what was owed was pushed by the slot's previous holder).
            let mut report = FanoutReport {
                malformed_documents: malformed,
                ..FanoutReport::default()
            };
            if let Err(error) = self
                .targets
                .slots
                .release(&stream, &lease.holder, lease.owed_seq, lease.at_ms)
                .await
            {
                report.bookkeeping_failures += 1;
                tracing::warn!(%stream, %error, "could not give back an unused push slot");
            }
            return Ok(report);
        }
        let (mut report, resume_from) = self
            .deliver(
                stream.clone(),
                lease.seq + 1,
                windows,
                lease.resume_from.as_deref(),
            )
            .await?;
        report.malformed_documents += malformed;
        let mut audience = (report.posts + report.deadline_missed) as u64;
        if report.cut_short {
            audience = audience.max(lease.audience.unwrap_or(0));
        }
        let interval = self.interval(&stream, audience).await;
        // A push that left part of its audience without the frame (the deadline, throttling,
        // a refused publish) keeps the stream owed, so a sweep pushes again once the slot
        // opens, starting where this one stopped. One that reached nobody keeps its number:
        // no viewer saw it, and none should take the next for a gap.
        let incomplete = report.deadline_missed > 0
            || report.throttled_out > 0
            || (self.targets.events.is_some() && report.failed > 0);
        let end = PushEnd {
            audience,
            next_due_ms: lease.at_ms.saturating_add(duration_ms(interval)),
            resume_from,
            seq: if report.delivered > 0 {
                lease.seq + 1
            } else {
                lease.seq
            },
            still_owed_from_ms: incomplete.then_some(since.unwrap_or(lease.at_ms)),
        };
        // The posts are made: a failure to record them is counted, never a reason to post again.
        match self
            .targets
            .slots
            .finish(&stream, &lease.holder, lease.owed_seq, &end)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                report.slots_lost += 1;
                tracing::warn!(%stream, "push outlived its slot's lease; another push took the slot");
            }
            Err(error) => {
                report.bookkeeping_failures += 1;
                tracing::warn!(%stream, %error, "could not set the stream's next push slot; its lease will run out");
            }
        }
        report.interval_ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
        Ok(report)
    }

    /// The interval for `stream` now that it has `audience`: its share of the post budget
    /// beside the other active streams' audiences.
    async fn interval(&self, stream: &StreamId, audience: u64) -> Duration {
        if !self.shares_budget {
            return self.policy.interval;
        }
        let since = now_ms().saturating_sub(duration_ms(ACTIVE_WINDOW));
        let active = match self
            .active
            .get_or_try_init(|| self.targets.slots.active_since(since))
            .await
        {
            Ok(active) => active,
            Err(error) => {
                // The posts are made; the stream alone stands for the audiences this time.
                tracing::warn!(%stream, %error, "cannot read the active streams' audiences");
                return BudgetShare::new(
                    self.policy.post_budget_per_second,
                    self.policy.interval,
                    [audience],
                )
                .interval(self.policy.interval, audience);
            }
        };
        let others = active
            .iter()
            .filter(|a| a.stream != stream.as_str())
            .map(|a| a.audience);
        BudgetShare::new(
            self.policy.post_budget_per_second,
            self.policy.interval,
            others.chain([audience]),
        )
        .interval(self.policy.interval, audience)
    }

    /// Sends one frame of `windows` to the audience of `stream` (or publishes it), starting at
    /// `resume_from`; returns where the next fan-out starts.
    async fn deliver(
        &self,
        stream: StreamId,
        seq: i64,
        windows: Vec<WindowStateRecord>,
        resume_from: Option<&str>,
    ) -> Result<(FanoutReport, Option<String>), StoreError> {
        let deadline = self.deadline;
        let targets = self.targets;
        if let Some(target) = targets.events {
            let report = publish_push(
                &stream,
                seq,
                windows,
                target,
                self.policy.post.throttle_budget,
                deadline,
            )
            .await;
            return Ok((report, None));
        }
        let window_count = windows.len();
        let (frame, dropped) = ServerMessage::Windows {
            stream: stream.clone(),
            seq,
            sent_at_ms: now_ms(),
            windows,
        }
        .to_capped_bytes(MAX_FRAME_BYTES);
        if dropped == window_count {
            // Not even the newest window fits a frame: posting an empty one would tell no one
            // anything.
            tracing::warn!(%stream, "the newest window alone is larger than a frame: not pushed");
            let report = FanoutReport {
                windows_dropped: dropped,
                ..FanoutReport::default()
            };
            return Ok((report, resume_from.map(str::to_owned)));
        }
        let fanout = post_to_audience(
            &stream,
            &frame,
            targets.connections,
            targets.api,
            self.policy.post,
            &self.permits,
            deadline,
            resume_from,
        )
        .await?;
        let mut report = fanout.report;
        report.windows = window_count - dropped;
        report.windows_dropped = dropped;
        Ok((report, fanout.resume_from))
    }

    /// The batch's states of `stream`, each replaced by its stored state if that is newer, plus
    /// the newest windows stored since `since_ms`: what a viewer should see now. Also returns
    /// how many stored documents were skipped as malformed.
    async fn freshest(
        &self,
        stream: &StreamId,
        batch: Vec<WindowStateRecord>,
        since_ms: i64,
    ) -> Result<(Vec<WindowStateRecord>, usize), StoreError> {
        let now = now_ms();
        let stored = self
            .targets
            .windows
            .newest_windows(stream, since_ms, FRESH_WINDOWS)
            .await?;
        let states = stored
            .windows
            .iter()
            .map(|w| w.state_record(self.targets.domain, now));
        Ok((
            newest_states(batch.into_iter().chain(states)),
            stored.malformed,
        ))
    }
}

/// Windows one push reads from MongoDB at most: the newest of those owed.
const FRESH_WINDOWS: u32 = 20;
