//! One push per stream per interval, and no waiting for it. A batch's window states are
//! coalesced to the newest per (stream, window) and grouped by stream. A stream whose push
//! slot is open is pushed at once: its freshest stored states (newer ones may have been stored
//! since the batch's) in one `windows` frame to every connection watching it. A stream whose
//! slot is not open is marked owed and left: the batch goes on with the others. A stream with
//! nothing but final states in the batch is marked owed too, its push held back one interval
//! so that a push for a newer state carries its final windows (see [`push_batch`]). Whichever
//! invocation next finds an owed stream's slot open makes the push it owes ([`sweep`]): every
//! batch sweeps after its own streams, and the scheduled sweeper (see [`crate::sweeper`])
//! sweeps when no batch comes, so the last state of a stream whose taps stopped still goes out
//! within about one interval. The trigger's drain rate thus depends neither on the number of
//! streams nor on the push interval.
//!
//! Streams are pushed in waves: a wave's slots are taken, its windows and its small audiences
//! read, and its slots given back in a handful of MongoDB round trips whatever the number of
//! streams in it, so hundreds of streams pushed each second do not cost several round trips
//! each.
//!
//! With a push interval of 0 there is no schedule: every batch is pushed at once. In
//! `AppSyncEvents` delivery the frame is published once to the stream's channel instead (see
//! [`crate::publish`]); the interval then never stretches, as the audience costs no posts.

use crate::fanout::{Audience, FanoutReport, PostPolicy, newest_states, post_to_audience};
use crate::management::ConnectionsApi;
use crate::protocol::{MAX_FRAME_BYTES, ServerMessage};
use crate::publish::{EventTarget, publish_push};
use crate::schedule::{ACTIVE_WINDOW, BudgetShare};
use futures::{StreamExt, TryStreamExt};
use rand::seq::SliceRandom;
use reactions::clock::{duration_ms, now_ms};
use reactions::mongo::{
    ActiveStream, ConnectionStore, FinishedPush, PushEnd, PushSlots, SlotLease, StoreError,
    WindowStore,
};
use reactions::{DomainConfig, StreamId, WindowStateRecord};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, Semaphore};
use tokio::time::Instant;

/// Streams whose fan-outs run at once in the interval-0 mode (their posts share one
/// concurrency bound).
const STREAMS_AT_ONCE: usize = 16;

/// No slot is taken this close to the invocation's deadline: the push could post nothing.
const CLAIM_MARGIN: Duration = Duration::from_secs(1);

/// Open streams a batch pushes itself at most (one wave); it marks the others owed.
const BATCH_PUSHES: usize = 16;

/// Owed streams one sweep pushes at most (one wave).
pub const SWEEP_LIMIT: i64 = 256;

/// Owed streams a batch pushes at most after its own: the sweeper does the rest, so a batch
/// spends little of its time on other partitions' streams.
const BATCH_SWEEP_LIMIT: i64 = 8;

/// Connections a wave reads in its one audience read: the audiences that fit are posted from
/// it, a larger one is read page by page on its own.
const WAVE_AUDIENCE_READ: u32 = 2_000;

/// A stream whose last push reached more connections than this reads its audience on its own,
/// so one large audience never fills the wave's read and leaves the small ones out of it.
const WAVE_AUDIENCE_AT_MOST: u64 = 500;

/// Fan-outs of one wave in flight at once (their posts share the invocation's bound as well).
const FANOUTS_AT_ONCE: usize = 64;

/// Pushes of a wave ended in one write as soon as they are done: a long fan-out does not keep
/// the slots of the wave's quick ones taken.
const ENDS_AT_ONCE: usize = 64;

/// How long the active streams' audiences, once read, stand for the budget's sharing: the
/// sweeper, sweeping ten times a second, reads them at most once a second.
const AUDIENCES_FRESH_FOR: Duration = Duration::from_secs(1);

/// Windows one push reads from MongoDB at most: the newest of those owed.
const FRESH_WINDOWS: u32 = 20;

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

/// The audiences of the streams that share the post budget, read when a push first needs its
/// interval and again once older than [`AUDIENCES_FRESH_FOR`]: an invocation or a sweep that
/// pushes nothing never reads them.
#[derive(Debug, Default)]
pub struct ActiveAudiences {
    /// When they were last read, and what was read (`None`: the read failed).
    read: Mutex<Option<(Instant, Option<Audiences>)>>,
}

/// The active streams' audiences, shared by the pushes that use them.
type Audiences = Arc<Vec<ActiveStream>>;

impl ActiveAudiences {
    /// The audiences, or `None` while they cannot be read (a failed read is not tried again
    /// for [`AUDIENCES_FRESH_FOR`] either).
    async fn get(&self, slots: &PushSlots) -> Option<Audiences> {
        let mut read = self.read.lock().await;
        if let Some((at, active)) = read.as_ref()
            && at.elapsed() < AUDIENCES_FRESH_FOR
        {
            return active.clone();
        }
        let since = now_ms().saturating_sub(duration_ms(ACTIVE_WINDOW));
        let active = match slots.active_since(since).await {
            Ok(active) => Some(Arc::new(active)),
            Err(error) => {
                // The posts are made; each stream alone stands for the audiences meanwhile.
                tracing::warn!(%error, "cannot read the active streams' audiences");
                None
            }
        };
        *read = Some((Instant::now(), active.clone()));
        active
    }
}

/// One invocation's (or one sweep's) shared context: the posts' concurrency bound and the
/// audiences that share the post budget.
struct Pusher<'a, 'b> {
    targets: &'a PushTargets<'b>,
    policy: PushPolicy,
    /// Whether streams share the post budget: only when they post per viewer (with a push
    /// schedule, in WebSocketApi delivery).
    shares_budget: bool,
    active: &'a ActiveAudiences,
    permits: Semaphore,
    /// Nothing is posted after this, and no slot is taken: the invocation's pushes all end
    /// within `FANOUT_DEADLINE_MS` of its start (and one post's timeout), so it never nears
    /// the function's timeout however many streams it has.
    deadline: Instant,
}

/// A stream whose slot a wave took, with the batch's states of it (none when swept).
struct Taken {
    lease: SlotLease,
    batch: Vec<WindowStateRecord>,
}

/// A taken slot with something to push: the windows and the oldest window start it owes.
struct Due {
    lease: SlotLease,
    windows: Vec<WindowStateRecord>,
    since_ms: Option<i64>,
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
    let active = ActiveAudiences::default();
    let pusher = Pusher::new(targets, policy, &active, started);
    let mut total = FanoutReport::default();
    if policy.interval.is_zero() {
        let reports: Vec<FanoutReport> = futures::stream::iter(streams)
            .map(|(stream, windows)| pusher.deliver(stream, 0, windows, Audience::Paged(None)))
            .buffer_unordered(STREAMS_AT_ONCE)
            .map_ok(|(report, _)| report)
            .try_collect()
            .await?;
        reports.iter().for_each(|r| total.add(r));
        return Ok(total);
    }
    // A stream with nothing but final states in the batch (windows that closed a few seconds
    // ago; their counts rarely change then) is owed a push, held back for one interval: a
    // push made meanwhile for a newer state carries them. So a final state takes no slot that
    // a live state would then wait a whole interval for, and small streams, whose every
    // window ends with one, are pushed about half as often.
    // The marks also keep the end of the latest final window the batch saw, so the push that
    // makes them shows final what aggregate has not yet marked final in its documents. A
    // window can only be final once it has ended: an end still ahead (a clock far off) is not
    // kept, as the marks keep the largest for good.
    let settled_by = now_ms();
    let final_through = streams
        .iter()
        .flat_map(|(_, windows)| windows)
        .filter(|w| w.is_final && w.end_ms <= settled_by)
        .map(|w| w.end_ms)
        .max();
    let (settled, streams): (Vec<_>, Vec<_>) = streams
        .into_iter()
        .partition(|(_, windows)| windows.iter().all(|w| w.is_final));
    let held_back_until = now_ms().saturating_add(duration_ms(policy.interval));
    let owed_later = OwedMark {
        not_before_ms: held_back_until,
        final_through_ms: final_through,
    };
    total.streams_owed += mark_owed(targets.slots, &settled, owed_later).await?;
    if streams.is_empty() {
        total.add(&pusher.sweep_after_batch().await);
        return Ok(total);
    }
    let ids: Vec<StreamId> = streams.iter().map(|(s, _)| s.clone()).collect();
    let view = targets.slots.view(&ids, now_ms(), policy.lease).await?;
    let (mut waiting, mut open): (Vec<_>, Vec<_>) = streams
        .into_iter()
        .partition(|(stream, _)| view.not_due.contains(stream.as_str()));
    // A batch pushes one wave of open streams itself, chosen at random so none waits behind
    // the others every time; the rest are owed like the waiting ones and pushed by sweeps.
    // So a batch costs about the same whatever number of streams it carries, and the
    // trigger's drain rate does not depend on it.
    if open.len() > BATCH_PUSHES {
        open.shuffle(&mut rand::rng());
        waiting.extend(open.split_off(BATCH_PUSHES));
    }
    if !pusher.may_claim() {
        // Past the deadline nothing would be posted: the pushes are left to the next invocation.
        waiting.append(&mut open);
    }
    let new: Vec<String> = view
        .unscheduled
        .into_iter()
        .filter(|id| open.iter().any(|(stream, _)| stream.as_str() == id))
        .collect();
    targets.slots.schedule(&new).await?;
    // The owed marks are written before any slot is taken: a failure then leaves no slot held.
    let owed_now = OwedMark {
        not_before_ms: 0,
        final_through_ms: final_through,
    };
    total.streams_owed += mark_owed(targets.slots, &waiting, owed_now).await?;
    let open_ids: Vec<StreamId> = open.iter().map(|(s, _)| s.clone()).collect();
    let mut leases = targets
        .slots
        .claim_all(&open_ids, now_ms(), policy.lease)
        .await?;
    let mut taken = Vec::with_capacity(leases.len());
    let mut lost = Vec::new();
    for (stream, batch) in open {
        match leases.iter().position(|lease| lease.stream == stream) {
            Some(at) => taken.push(Taken {
                lease: leases.swap_remove(at),
                batch,
            }),
            // Another invocation took the slot first: owed, like the waiting ones.
            None => lost.push((stream, batch)),
        }
    }
    match mark_owed(targets.slots, &lost, owed_now).await {
        Ok(owed) => total.streams_owed += owed,
        Err(error) => {
            let leases: Vec<&SlotLease> = taken.iter().map(|t| &t.lease).collect();
            pusher.give_back(&leases).await;
            return Err(error);
        }
    }
    total.add(&pusher.push_wave(taken).await?);
    total.add(&pusher.sweep_after_batch().await);
    Ok(total)
}

/// Pushes, in one wave, up to [`SWEEP_LIMIT`] streams that are owed a push and whose slot is
/// open. `active` keeps the audiences that share the post budget from one sweep to the next.
pub async fn sweep(
    targets: &PushTargets<'_>,
    policy: PushPolicy,
    active: &ActiveAudiences,
) -> Result<FanoutReport, StoreError> {
    if policy.interval.is_zero() {
        return Ok(FanoutReport::default());
    }
    Pusher::new(targets, policy, active, Instant::now())
        .sweep(SWEEP_LIMIT)
        .await
}

/// How a batch marks streams owed (see [`PushSlots::mark_owed`]).
#[derive(Debug, Clone, Copy)]
struct OwedMark {
    /// The push is made no sooner than this (0: as soon as the slot opens).
    not_before_ms: i64,
    /// The end of the latest window the batch saw final.
    final_through_ms: Option<i64>,
}

/// Marks `streams` owed from the oldest start of their windows, in two writes; returns how
/// many.
async fn mark_owed(
    slots: &PushSlots,
    streams: &[(StreamId, Vec<WindowStateRecord>)],
    mark: OwedMark,
) -> Result<usize, StoreError> {
    let Some(oldest) = oldest_start(streams.iter().flat_map(|(_, w)| w)) else {
        return Ok(0);
    };
    let owed: Vec<String> = streams.iter().map(|(s, _)| s.as_str().to_owned()).collect();
    slots
        .mark_owed(&owed, oldest, mark.not_before_ms, mark.final_through_ms)
        .await?;
    Ok(owed.len())
}

fn oldest_start<'a>(windows: impl IntoIterator<Item = &'a WindowStateRecord>) -> Option<i64> {
    windows.into_iter().map(|w| w.start_ms).min()
}

impl<'a, 'b> Pusher<'a, 'b> {
    fn new(
        targets: &'a PushTargets<'b>,
        policy: PushPolicy,
        active: &'a ActiveAudiences,
        started: Instant,
    ) -> Self {
        // In AppSyncEvents delivery the interval is never stretched: the audience costs no posts.
        Self {
            targets,
            policy,
            shares_budget: !policy.interval.is_zero() && targets.events.is_none(),
            active,
            permits: Semaphore::new(policy.post.concurrency.max(1)),
            deadline: started + policy.deadline,
        }
    }

    /// Whether a slot may still be taken: a push started now has time to post.
    fn may_claim(&self) -> bool {
        Instant::now() + CLAIM_MARGIN < self.deadline
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
        if !self.may_claim() {
            return Ok(FanoutReport::default());
        }
        let slots = self.targets.slots;
        let owed: Vec<StreamId> = slots
            .owed_and_due(now_ms(), limit)
            .await?
            .iter()
            .filter_map(|id| StreamId::parse("stream", id).ok())
            .collect();
        // A stream another invocation takes first is left out: the push is its to make.
        let leases = slots.claim_all(&owed, now_ms(), self.policy.lease).await?;
        let swept = leases.len();
        let taken = leases
            .into_iter()
            .map(|lease| Taken {
                lease,
                batch: Vec::new(),
            })
            .collect();
        let mut report = self.push_wave(taken).await?;
        report.swept += swept;
        Ok(report)
    }

    /// Makes the pushes the taken slots owe: each stream's batch states and everything owed,
    /// freshest as stored, to its audience; then sets each stream's next slot, the pushes that
    /// are done together as they end. Every push runs to its end even when another's fails:
    /// dropping a fan-out half way would leave its slot held and its viewers unserved. The first
    /// failure is then returned (a batch's retry finds the pushed streams' slots taken, and
    /// marks them owed). When the wave's reads fail, nothing is posted and its slots are given
    /// back (the streams stay owed).
    async fn push_wave(&self, taken: Vec<Taken>) -> Result<FanoutReport, StoreError> {
        let mut report = FanoutReport::default();
        if taken.is_empty() {
            return Ok(report);
        }
        let leases: Vec<SlotLease> = taken.iter().map(|t| t.lease.clone()).collect();
        let give_back_all = |error: StoreError| async {
            self.give_back(&leases.iter().collect::<Vec<_>>()).await;
            error
        };
        let (due, idle) = match self.freshest(taken, &mut report).await {
            Ok(read) => read,
            Err(error) => return Err(give_back_all(error).await),
        };
        let audiences = match self.audiences(&due).await {
            Ok(read) => read,
            Err(error) => return Err(give_back_all(error).await),
        };
        // Nothing to push (what was owed was pushed by the slot's previous holder).
        let idle: Vec<&SlotLease> = idle.iter().collect();
        if let Err(error) = self.targets.slots.release_all(&idle).await {
            report.bookkeeping_failures += idle.len();
            tracing::warn!(%error, streams = idle.len(), "could not give back unused push slots");
        }
        if due.is_empty() {
            return Ok(report);
        }
        // Read before any fan-out, so no bookkeeping read waits behind paused fan-outs.
        let active = self.active_audiences().await;
        let active = active.as_ref().map(|a| a.as_slice());
        // The fan-outs and the writes that end them run side by side: a chunk's end is written
        // while the other fan-outs go on (they hold MongoDB connections mid-read, so pausing
        // them for the write could leave it waiting for a connection forever).
        let (done, ended) = futures::channel::mpsc::unbounded();
        let due = &due;
        let fanouts = async move {
            futures::stream::iter(due.iter().zip(audiences))
                .map(|(push, audience)| async move {
                    let delivered = self
                        .deliver(
                            push.lease.stream.clone(),
                            push.lease.seq + 1,
                            push.windows.clone(),
                            audience,
                        )
                        .await;
                    (push, delivered)
                })
                .buffer_unordered(FANOUTS_AT_ONCE)
                .for_each(|outcome| {
                    // The receiver lives until every sender is gone.
                    let _ = done.unbounded_send(outcome);
                    futures::future::ready(())
                })
                .await;
        };
        let ends = ended.ready_chunks(ENDS_AT_ONCE).fold(
            (report, None, Vec::new()),
            |(mut report, mut failure, mut failed), chunk| async move {
                let mut ends = Vec::with_capacity(chunk.len());
                for (push, delivered) in chunk {
                    match delivered {
                        Ok((pushed, resume_from)) => {
                            let (end, interval) = self.end_of(push, &pushed, resume_from, active);
                            report.add(&pushed);
                            report.interval_ms = report
                                .interval_ms
                                .max(u64::try_from(interval.as_millis()).unwrap_or(u64::MAX));
                            ends.push(FinishedPush {
                                lease: &push.lease,
                                end,
                            });
                        }
                        Err(error) => {
                            failure = failure.or(Some(error));
                            failed.push(&push.lease);
                        }
                    }
                }
                self.finish(&ends, &mut report).await;
                (report, failure, failed)
            },
        );
        let ((), (report, failure, failed)) = futures::join!(fanouts, ends);
        // A fan-out that failed did so before its first post: its slot opens again at once,
        // its stream still owed (or its batch retried).
        self.give_back(&failed).await;
        failure.map_or(Ok(report), Err)
    }

    /// Sets the next slots of pushes that have ended. The posts are made: a failure to record
    /// them is counted, never a reason to post again.
    async fn finish(&self, ends: &[FinishedPush<'_>], report: &mut FanoutReport) {
        match self.targets.slots.finish_all(ends).await {
            Ok(held) => {
                let lost = (ends.len() as u64).saturating_sub(held) as usize;
                if lost > 0 {
                    report.slots_lost += lost;
                    tracing::warn!(
                        streams = lost,
                        "pushes outlived their slot's lease; other pushes took the slots"
                    );
                }
            }
            Err(error) => {
                report.bookkeeping_failures += ends.len();
                tracing::warn!(%error, streams = ends.len(), "could not set the streams' next push slots; their leases will run out");
            }
        }
    }

    /// Gives back slots taken for pushes that cannot be made (a read failed): they open at
    /// once, and what the streams are owed stays owed (a batch's own states come again with its
    /// retry). If even that fails, the leases run out.
    async fn give_back(&self, leases: &[&SlotLease]) {
        if let Err(error) = self.targets.slots.reopen_all(leases).await {
            tracing::warn!(%error, streams = leases.len(), "could not give back the slots of a failed wave; their leases will run out");
        }
    }

    /// The active streams' audiences, when pushes share the post budget: read once for the
    /// pushes that end together. None when they cannot be read (each stream then stands alone).
    async fn active_audiences(&self) -> Option<Audiences> {
        match self.shares_budget {
            true => self.active.get(self.targets.slots).await,
            false => None,
        }
    }

    /// How a push ended: its audience, its stream's next slot (after the interval the stream's
    /// share of the post budget allows), where the next one starts, and whether the stream is
    /// still owed; and that interval.
    fn end_of(
        &self,
        push: &Due,
        pushed: &FanoutReport,
        resume_from: Option<String>,
        active: Option<&[ActiveStream]>,
    ) -> (PushEnd, Duration) {
        let lease = &push.lease;
        let mut audience = (pushed.posts + pushed.deadline_missed) as u64;
        if pushed.cut_short {
            audience = audience.max(lease.audience.unwrap_or(0));
        }
        let interval = self.interval(active, &lease.stream, audience);
        // A push that left part of its audience without the frame (the deadline, throttling,
        // a refused publish) keeps the stream owed, so a sweep pushes again once the slot
        // opens, starting where this one stopped. One that reached nobody keeps its number:
        // no viewer saw it, and none should take the next for a gap.
        let incomplete = pushed.deadline_missed > 0
            || pushed.throttled_out > 0
            || (self.targets.events.is_some() && pushed.failed > 0);
        let end = PushEnd {
            audience,
            next_due_ms: lease.at_ms.saturating_add(duration_ms(interval)),
            resume_from,
            seq: if pushed.delivered > 0 {
                lease.seq + 1
            } else {
                lease.seq
            },
            still_owed_from_ms: incomplete.then_some(push.since_ms.unwrap_or(lease.at_ms)),
        };
        (end, interval)
    }

    /// Each taken slot's batch states, each replaced by its stored state if that is newer,
    /// plus the newest windows stored since the oldest window it owes: what its viewers should
    /// see now. One read for the wave. Returns the slots with something to push, and those
    /// without; stored documents skipped as malformed are counted in `report`.
    async fn freshest(
        &self,
        taken: Vec<Taken>,
        report: &mut FanoutReport,
    ) -> Result<(Vec<Due>, Vec<SlotLease>), StoreError> {
        let since: Vec<Option<i64>> = taken
            .iter()
            .map(|t| {
                oldest_start(&t.batch)
                    .into_iter()
                    .chain(t.lease.owed_from_ms)
                    .min()
            })
            .collect();
        let wants: Vec<(StreamId, i64)> = taken
            .iter()
            .zip(&since)
            .filter_map(|(t, since)| Some((t.lease.stream.clone(), (*since)?)))
            .collect();
        let mut stored = self
            .targets
            .windows
            .newest_windows_of(&wants, FRESH_WINDOWS)
            .await?
            .into_iter();
        let now = now_ms();
        let (mut due, mut idle) = (Vec::new(), Vec::new());
        for (Taken { lease, batch }, since_ms) in taken.into_iter().zip(since) {
            let fresh = match since_ms {
                Some(_) => stored.next().unwrap_or_default(),
                None => Default::default(),
            };
            report.malformed_documents += fresh.malformed;
            let final_through = lease.final_through_ms;
            let states = fresh.windows.iter().map(|w| {
                let mut state = w.state_record(self.targets.domain, now);
                // Published final, its document not marked yet (see `SlotLease`).
                state.is_final |= final_through.is_some_and(|end| w.end_ms <= end);
                state
            });
            let windows = newest_states(batch.into_iter().chain(states));
            if windows.is_empty() {
                idle.push(lease);
            } else {
                due.push(Due {
                    lease,
                    windows,
                    since_ms,
                });
            }
        }
        Ok((due, idle))
    }

    /// Where each push reads its audience: in WebSocketApi delivery, the small audiences of the
    /// pushes that start at the beginning in one read (those that fit in it), the others page
    /// by page (from where the last push stopped).
    async fn audiences<'p>(&self, due: &'p [Due]) -> Result<Vec<Audience<'p>>, StoreError> {
        let paged = |push: &'p Due| Audience::Paged(push.lease.resume_from.as_deref());
        if self.targets.events.is_some() {
            return Ok(due.iter().map(paged).collect());
        }
        let in_wave_read = |push: &Due| {
            push.lease.resume_from.is_none()
                && push.lease.audience.unwrap_or(0) <= WAVE_AUDIENCE_AT_MOST
        };
        let whole: Vec<StreamId> = due
            .iter()
            .filter(|push| in_wave_read(push))
            .map(|push| push.lease.stream.clone())
            .collect();
        let mut read = if whole.is_empty() {
            Vec::new().into_iter()
        } else {
            self.targets
                .connections
                .audiences(&whole, WAVE_AUDIENCE_READ)
                .await?
                .into_iter()
        };
        Ok(due
            .iter()
            .map(|push| match in_wave_read(push) {
                true => read.next().flatten().map_or(paged(push), Audience::Read),
                false => paged(push),
            })
            .collect())
    }

    /// The interval for `stream` now that it has `audience`: its share of the post budget
    /// beside the other `active` streams' audiences (the stream alone when they are unknown).
    fn interval(
        &self,
        active: Option<&[ActiveStream]>,
        stream: &StreamId,
        audience: u64,
    ) -> Duration {
        if !self.shares_budget {
            return self.policy.interval;
        }
        let others = active
            .unwrap_or_default()
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

    /// Sends one frame of `windows` to `audience`, the connections watching `stream` (or
    /// publishes it); returns where the next fan-out starts.
    async fn deliver(
        &self,
        stream: StreamId,
        seq: i64,
        windows: Vec<WindowStateRecord>,
        audience: Audience<'_>,
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
            let resume_from = match audience {
                Audience::Paged(start_at) => start_at.map(str::to_owned),
                Audience::Read(_) => None,
            };
            return Ok((report, resume_from));
        }
        let fanout = post_to_audience(
            &stream,
            &frame,
            targets.connections,
            targets.api,
            self.policy.post,
            &self.permits,
            deadline,
            audience,
        )
        .await?;
        let mut report = fanout.report;
        report.windows = window_count - dropped;
        report.windows_dropped = dropped;
        Ok((report, fanout.resume_from))
    }
}
