//! One push per stream per interval. A batch's window states are coalesced and grouped by
//! stream; each stream then waits for its next push slot (see [`crate::schedule`]), reads the
//! freshest states of its changed windows (the wait may have let newer ones be stored), and
//! sends every connection watching it one `windows` frame carrying all of them.
//! With a push interval of 0 there is no schedule: every batch is pushed at once, as before.
//! In `AppSyncEvents` delivery the frame is published once to the stream's channel instead
//! (see [`crate::publish`]); the interval then never stretches, as the audience costs no posts.

use crate::fanout::{FanoutReport, PostPolicy, by_stream, newest_states, post_to_audience};
use crate::management::ConnectionsApi;
use crate::protocol::ServerMessage;
use crate::publish::{EventTarget, publish_push};
use crate::schedule::{ACTIVE_WINDOW, Slot, stretched_interval, take_slot};
use futures::{StreamExt, TryStreamExt};
use reactions::clock::{duration_ms, now_ms};
use reactions::mongo::{ConnectionStore, PushSlots, StoreError, WindowStore};
use reactions::{DomainConfig, StreamId, WindowStateRecord};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// Streams of one batch pushed at once (their posts share one concurrency bound).
const STREAMS_AT_ONCE: usize = 16;

/// How a batch is pushed.
#[derive(Debug, Clone, Copy)]
pub struct PushPolicy {
    pub post: PostPolicy,
    /// `PUSH_INTERVAL_MS`: the shortest time between two pushes of one stream (0: no schedule).
    pub interval: Duration,
    /// `POST_BUDGET_PER_SECOND`: posts per second all streams may make together.
    pub post_budget_per_second: u32,
    /// `FANOUT_DEADLINE_MS`: nothing is posted this long after the batch began.
    pub deadline: Duration,
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

/// Pushes the newest states of `states` to every stream's audience. Fails only when MongoDB
/// cannot be read or written.
pub async fn push_batch(
    states: Vec<WindowStateRecord>,
    targets: &PushTargets<'_>,
    policy: PushPolicy,
    started: Instant,
) -> Result<FanoutReport, StoreError> {
    let deadline = started + policy.deadline;
    let streams = by_stream(states);
    if streams.is_empty() {
        return Ok(FanoutReport::default());
    }
    // Streams share the post budget only when they post per viewer: in AppSyncEvents delivery
    // the interval is never stretched, and the count is not needed.
    let active_streams = if policy.interval.is_zero() || targets.events.is_some() {
        1
    } else {
        let since = now_ms().saturating_sub(duration_ms(ACTIVE_WINDOW));
        targets.slots.active_since(since).await?.max(1)
    };
    let permits = Semaphore::new(policy.post.concurrency.max(1));
    let reports: Vec<FanoutReport> = futures::stream::iter(streams)
        .map(|(stream, windows)| {
            push_stream(
                stream,
                windows,
                targets,
                policy,
                active_streams,
                &permits,
                deadline,
            )
        })
        .buffer_unordered(STREAMS_AT_ONCE)
        .try_collect()
        .await?;
    let mut total = FanoutReport::default();
    for report in &reports {
        total.add(report);
    }
    Ok(total)
}

async fn push_stream(
    stream: StreamId,
    windows: Vec<WindowStateRecord>,
    targets: &PushTargets<'_>,
    policy: PushPolicy,
    active_streams: u64,
    permits: &Semaphore,
    deadline: Instant,
) -> Result<FanoutReport, StoreError> {
    // With an interval, wait for the stream's slot; without one, push at once.
    let slot_taken_at_ms = if policy.interval.is_zero() {
        None
    } else {
        match take_slot(targets.slots, &stream, policy.interval, deadline).await? {
            Slot::Taken { at_ms } => Some(at_ms),
            Slot::Missed => {
                return Ok(FanoutReport {
                    streams_missed: 1,
                    ..FanoutReport::default()
                });
            }
        }
    };
    // The wait may have been long enough for newer states to be stored: push the freshest.
    let windows = match slot_taken_at_ms {
        Some(_) => freshest(&stream, windows, targets).await?,
        None => windows,
    };
    let mut report = match targets.events {
        Some(target) => {
            publish_push(
                &stream,
                windows,
                target,
                policy.post.throttle_budget,
                deadline,
            )
            .await
        }
        None => {
            let window_count = windows.len();
            let frame = ServerMessage::Windows {
                stream: stream.clone(),
                sent_at_ms: now_ms(),
                windows,
            }
            .to_bytes();
            let mut report = post_to_audience(
                &stream,
                &frame,
                targets.connections,
                targets.api,
                policy.post,
                permits,
                deadline,
            )
            .await?;
            report.windows = window_count;
            report
        }
    };
    if let Some(at_ms) = slot_taken_at_ms {
        let audience = (report.posts + report.deadline_missed) as u64;
        let interval = if targets.events.is_some() {
            policy.interval
        } else {
            stretched_interval(
                policy.interval,
                audience,
                policy.post_budget_per_second,
                active_streams,
            )
        };
        targets
            .slots
            .finish(
                &stream,
                audience,
                at_ms.saturating_add(duration_ms(interval)),
            )
            .await?;
        report.interval_ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
    }
    Ok(report)
}

/// Windows of one push read from MongoDB at most; a batch's states rarely span more.
const FRESH_WINDOWS: u32 = 20;

/// The batch's states of `stream`, each replaced by its stored state if that is newer, plus any
/// newer windows stored since: what a viewer should see now.
async fn freshest(
    stream: &StreamId,
    batch: Vec<WindowStateRecord>,
    targets: &PushTargets<'_>,
) -> Result<Vec<WindowStateRecord>, StoreError> {
    let Some(oldest) = batch.iter().map(|s| s.start_ms).min() else {
        return Ok(batch);
    };
    let now = now_ms();
    let stored = targets
        .windows
        .list_windows(stream, Some(oldest), FRESH_WINDOWS)
        .await?;
    let stored = stored.iter().map(|w| w.state_record(targets.domain, now));
    Ok(newest_states(batch.into_iter().chain(stored)))
}
