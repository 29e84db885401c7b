//! One push per stream per interval. A batch's window states are coalesced and grouped by
//! stream; each stream then waits for its next push slot (see [`crate::schedule`]) and sends
//! every connection watching it one `windows` frame carrying all of its windows that changed.
//! With a push interval of 0 there is no schedule: every batch is pushed at once, as before.

use crate::fanout::{FanoutReport, PostPolicy, by_stream, post_to_audience};
use crate::management::ConnectionsApi;
use crate::protocol::ServerMessage;
use crate::schedule::{ACTIVE_WINDOW, Slot, stretched_interval, take_slot};
use futures::{StreamExt, TryStreamExt};
use reactions::clock::now_ms;
use reactions::mongo::{ConnectionStore, PushSlots, StoreError};
use reactions::{StreamId, WindowStateRecord};
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

/// Where pushes go and how they are scheduled.
pub struct PushTargets<'a> {
    pub connections: &'a ConnectionStore,
    pub slots: &'a PushSlots,
    pub api: &'a ConnectionsApi,
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
    let active_streams = if policy.interval.is_zero() {
        1
    } else {
        let since = now_ms().saturating_sub(millis(ACTIVE_WINDOW));
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
    let window_count = windows.len();
    let frame = ServerMessage::Windows {
        stream: stream.clone(),
        windows,
    }
    .to_bytes();
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
    if let Some(at_ms) = slot_taken_at_ms {
        let audience = (report.posts + report.deadline_missed) as u64;
        let interval = stretched_interval(
            policy.interval,
            audience,
            policy.post_budget_per_second,
            active_streams,
        );
        targets
            .slots
            .finish(&stream, audience, at_ms.saturating_add(millis(interval)))
            .await?;
        report.interval_ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
    }
    Ok(report)
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
