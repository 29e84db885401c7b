//! Fan-out of a stream's window states to the connections watching it. A Kafka batch may carry
//! several states of one window (aggregate publishes after every batch it applies); only the
//! newest, the one with the largest total, is pushed. Connections are read through the
//! by-stream index with a cursor, page by page, so memory does not grow with the audience;
//! posts run with bounded concurrency and stop at a deadline well inside the function timeout
//! (what is left is counted, and the stream's next push starts with those connections, so no
//! viewer misses two pushes in a row because of the deadline). A 410 forgets exactly that
//! connection, unless it registered moments ago and is still completing its handshake; a 429
//! is retried with jittered exponential backoff until the throttle budget runs out. No single
//! connection, malformed connection record or failed clean-up can fail the batch.

use crate::management::{ConnectionsApi, PostError};
use futures::StreamExt;
use rand::Rng;
use reactions::clock::{duration_ms, now_ms};
use reactions::mongo::{ConnectionStore, StoreError, WatchingConnection};
use reactions::{StreamId, WindowStateRecord};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// Keeps, per (stream, window start), the state with the largest total. On equal totals the
/// final one wins, then the later one: it carries the same counts and more knowledge.
pub fn newest_states(
    states: impl IntoIterator<Item = WindowStateRecord>,
) -> Vec<WindowStateRecord> {
    let mut newest: BTreeMap<(StreamId, i64), WindowStateRecord> = BTreeMap::new();
    for state in states {
        let key = (state.stream.clone(), state.start_ms);
        let rank = |s: &WindowStateRecord| (s.total, s.is_final, s.updated_at_ms);
        match newest.get(&key) {
            Some(kept) if rank(kept) >= rank(&state) => {}
            _ => {
                newest.insert(key, state);
            }
        }
    }
    newest.into_values().collect()
}

/// The newest states of a batch grouped by stream, each stream's windows oldest first.
pub fn by_stream(
    states: impl IntoIterator<Item = WindowStateRecord>,
) -> Vec<(StreamId, Vec<WindowStateRecord>)> {
    let mut streams: Vec<(StreamId, Vec<WindowStateRecord>)> = Vec::new();
    for state in newest_states(states) {
        match streams.last_mut() {
            Some((stream, windows)) if *stream == state.stream => windows.push(state),
            _ => streams.push((state.stream.clone(), vec![state])),
        }
    }
    streams
}

/// How posts are sent.
#[derive(Debug, Clone, Copy)]
pub struct PostPolicy {
    /// Posts in flight at once for one stream (the batch's semaphore bounds them all).
    pub concurrency: usize,
    /// How long after the fan-out starts a throttled post may still be retried.
    pub throttle_budget: Duration,
    /// Connections read from MongoDB per cursor batch.
    pub page: u32,
    /// A 410 from a connection registered this recently means its handshake is still
    /// completing (API Gateway answers 410 until `$connect` has returned), not that it is gone.
    pub handshake_grace: Duration,
}

/// What the pushes of one batch did; also part of the invocation's response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FanoutReport {
    /// Streams pushed (one frame per connection each).
    pub streams: usize,
    /// Distinct windows carried after coalescing.
    pub windows: usize,
    /// Posts attempted (one per connection per pushed stream).
    pub posts: usize,
    /// Posts that reached their connection.
    pub delivered: usize,
    /// Connections that answered 410 and were forgotten.
    pub gone: usize,
    /// 410s from connections still completing their handshake: kept.
    pub pending: usize,
    /// Retries after a 429.
    pub throttle_retries: usize,
    /// Posts still throttled when the budget ran out.
    pub throttled_out: usize,
    /// Posts that failed otherwise (counted and logged).
    pub failed: usize,
    /// Connections not posted to because the fan-out's deadline had passed (the next push
    /// supersedes what they missed).
    pub deadline_missed: usize,
    /// Streams whose slot was not open: marked owed, pushed by whichever invocation next finds
    /// the slot open.
    pub streams_owed: usize,
    /// Owed streams pushed by a sweep (not by a batch of their own states).
    pub swept: usize,
    /// Windows left out of frames to keep them under API Gateway's 128 KB (oldest first).
    pub windows_dropped: usize,
    /// Stored documents (windows, connections) skipped because they do not parse.
    pub malformed_documents: usize,
    /// Bookkeeping after posting that failed (forgetting gone connections, setting the next
    /// slot): logged and counted; the posts stand and the slot's lease runs out.
    pub bookkeeping_failures: usize,
    /// Pushes whose slot lease ran out before they finished (another push took the slot).
    pub slots_lost: usize,
    /// Whether a fan-out stopped reading its audience at the deadline and could not count the
    /// rest (its audience is then taken from the previous push).
    #[serde(skip)]
    pub cut_short: bool,
    /// The longest push interval set for a stream, in ms (longer than the configured one when
    /// an audience needed more than its share of the post budget).
    pub interval_ms: u64,
}

impl FanoutReport {
    /// Adds another stream's report to this one.
    pub fn add(&mut self, other: &FanoutReport) {
        self.streams += other.streams;
        self.windows += other.windows;
        self.posts += other.posts;
        self.delivered += other.delivered;
        self.gone += other.gone;
        self.pending += other.pending;
        self.throttle_retries += other.throttle_retries;
        self.throttled_out += other.throttled_out;
        self.failed += other.failed;
        self.deadline_missed += other.deadline_missed;
        self.streams_owed += other.streams_owed;
        self.swept += other.swept;
        self.windows_dropped += other.windows_dropped;
        self.malformed_documents += other.malformed_documents;
        self.bookkeeping_failures += other.bookkeeping_failures;
        self.slots_lost += other.slots_lost;
        self.cut_short |= other.cut_short;
        self.interval_ms = self.interval_ms.max(other.interval_ms);
    }
}

enum Outcome {
    Delivered,
    Gone(WatchingConnection),
    ThrottledOut,
    Failed(String, String),
    /// Not posted: the deadline had passed. Carries the connection's place in this fan-out's
    /// order and its id, so the next push can start with it.
    DeadlineMissed(usize, String),
    /// A connection record that does not parse: skipped.
    Malformed,
}

/// The delay before retry number `attempt` (1-based) after a 429: "full jitter", uniformly
/// random up to an exponentially growing cap, so throttled posts spread out instead of
/// retrying in lockstep.
pub fn backoff_delay(attempt: u32, rng: &mut impl Rng) -> Duration {
    const BASE_MS: u64 = 20;
    const CAP_MS: u64 = 1_000;
    let ceiling = BASE_MS.saturating_mul(1u64 << attempt.min(16)).min(CAP_MS);
    Duration::from_millis(rng.random_range(1..=ceiling))
}

async fn post_with_backoff(
    api: &ConnectionsApi,
    connection: WatchingConnection,
    frame: &[u8],
    retry_until: Instant,
) -> (Outcome, usize) {
    let mut retries = 0usize;
    loop {
        match api.post_to_connection(&connection.id, frame.to_vec()).await {
            Ok(()) => return (Outcome::Delivered, retries),
            Err(PostError::Gone) => return (Outcome::Gone(connection), retries),
            Err(PostError::Failed(reason)) => {
                return (Outcome::Failed(connection.id, reason), retries);
            }
            Err(PostError::Throttled) => {
                let delay = backoff_delay(retries as u32 + 1, &mut rand::rng());
                if Instant::now() + delay > retry_until {
                    return (Outcome::ThrottledOut, retries);
                }
                retries += 1;
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Connections forgotten in one delete, so memory stays bounded however many are gone.
const FORGET_CHUNK: usize = 1_000;

/// What one fan-out did, and where the stream's next fan-out starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fanout {
    pub report: FanoutReport,
    /// The first connection (in this fan-out's order) the deadline kept from its post.
    pub resume_from: Option<String>,
}

/// Where a fan-out reads its audience.
#[derive(Debug)]
pub enum Audience<'s> {
    /// Read already, whole (a wave's small audiences come in one read).
    Read(Vec<Result<WatchingConnection, StoreError>>),
    /// Read page by page from MongoDB in id order, from this connection (when given) round to
    /// it again.
    Paged(Option<&'s str>),
}

/// Sends `frame` once to every connection of `audience` watching `stream`, with at most
/// `permits` posts in flight (shared by every stream of the batch). Nothing is posted after `deadline`; a connection that is gone
/// is forgotten. Fails only when MongoDB cannot be read, so the event source retries the batch.
#[allow(clippy::too_many_arguments)]
pub async fn post_to_audience(
    stream: &StreamId,
    frame: &[u8],
    connections: &ConnectionStore,
    api: &ConnectionsApi,
    policy: PostPolicy,
    permits: &Semaphore,
    deadline: Instant,
    audience: Audience<'_>,
) -> Result<Fanout, StoreError> {
    let retry_until = (Instant::now() + policy.throttle_budget).min(deadline);
    let mut report = FanoutReport {
        streams: 1,
        ..FanoutReport::default()
    };
    let (audience, whole) = match audience {
        Audience::Read(read) => {
            let whole = read.len();
            (futures::stream::iter(read).boxed(), Some(whole))
        }
        Audience::Paged(start_at) => (
            connections
                .watching(stream, policy.page, start_at)
                .await?
                .boxed(),
            None,
        ),
    };
    // Past the deadline no further connection is read: the first one left is where the next
    // fan-out starts.
    let cut_at: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);
    let until_deadline = audience.enumerate().take_while(|(_, connection)| {
        let open = Instant::now() < deadline;
        if !open && let (Ok(connection), Ok(mut cut)) = (connection, cut_at.lock()) {
            *cut = Some(connection.id.clone());
        }
        futures::future::ready(open)
    });
    let mut outcomes = std::pin::pin!(
        until_deadline
            .map(|(place, connection)| async move {
                let connection = match connection {
                    Ok(connection) => connection,
                    Err(StoreError::Malformed(reason)) => {
                        tracing::warn!(%stream, reason, "skipping a malformed connection record");
                        return Ok((Outcome::Malformed, 0));
                    }
                    Err(error) => return Err(error),
                };
                if Instant::now() >= deadline {
                    return Ok((Outcome::DeadlineMissed(place, connection.id), 0));
                }
                let Ok(_permit) = permits.acquire().await else {
                    return Ok((Outcome::DeadlineMissed(place, connection.id), 0));
                };
                if Instant::now() >= deadline {
                    return Ok((Outcome::DeadlineMissed(place, connection.id), 0));
                }
                Ok(post_with_backoff(api, connection, frame, retry_until).await)
            })
            .buffer_unordered(policy.concurrency.max(1))
    );
    let mut gone = Vec::new();
    let mut first_missed: Option<(usize, String)> = None;
    while let Some(outcome) = outcomes.next().await {
        let (outcome, retries): (Outcome, usize) = match outcome {
            Ok(outcome) => outcome,
            // Before any post, the batch can be retried; after some, that would post again to
            // everyone reached: the rest of the audience is left to the next push instead.
            Err(error) if report.posts == 0 => return Err(error),
            Err(error) => {
                report.bookkeeping_failures += 1;
                tracing::warn!(%stream, %error, "reading the audience failed mid-fan-out; the next push covers the rest");
                break;
            }
        };
        if !matches!(outcome, Outcome::DeadlineMissed(..) | Outcome::Malformed) {
            report.posts += 1;
        }
        report.throttle_retries += retries;
        match outcome {
            Outcome::Delivered => report.delivered += 1,
            Outcome::Gone(connection) => {
                let age_ms = now_ms().saturating_sub(connection.connected_at_ms);
                if age_ms < duration_ms(policy.handshake_grace) {
                    report.pending += 1;
                } else {
                    gone.push(connection.id);
                }
            }
            Outcome::ThrottledOut => report.throttled_out += 1,
            Outcome::Failed(id, reason) => {
                report.failed += 1;
                tracing::warn!(connection_id = id, reason, "post to connection failed");
            }
            Outcome::DeadlineMissed(place, id) => {
                report.deadline_missed += 1;
                if first_missed
                    .as_ref()
                    .is_none_or(|(first, _)| place < *first)
                {
                    first_missed = Some((place, id));
                }
            }
            Outcome::Malformed => report.malformed_documents += 1,
        }
        if gone.len() >= FORGET_CHUNK {
            forget(connections, &mut gone, &mut report).await;
        }
    }
    forget(connections, &mut gone, &mut report).await;
    let cut = cut_at.lock().ok().and_then(|mut cut| cut.take());
    if cut.is_some() {
        // The connections never read missed this push too: count them.
        let read = report.posts + report.deadline_missed + report.malformed_documents;
        let counted = match whole {
            Some(whole) => Ok(whole as u64),
            None => connections.count_watching(stream).await,
        };
        match counted {
            Ok(audience) => {
                report.deadline_missed += usize::try_from(audience)
                    .unwrap_or(usize::MAX)
                    .saturating_sub(read);
            }
            Err(error) => {
                report.cut_short = true;
                tracing::warn!(%stream, %error, "cannot count the audience a fan-out left");
            }
        }
    }
    Ok(Fanout {
        report,
        resume_from: first_missed.map(|(_, id)| id).or(cut),
    })
}

/// Deletes the records of connections that are gone. A failure is logged and counted, not
/// returned: the posts were made, and a record left behind costs one more 410 next time (and
/// expires by TTL), while failing the batch would post to everyone again.
async fn forget(connections: &ConnectionStore, gone: &mut Vec<String>, report: &mut FanoutReport) {
    gone.sort_unstable();
    gone.dedup();
    match connections.remove_all(gone).await {
        Ok(_) => report.gone += gone.len(),
        Err(error) => {
            report.bookkeeping_failures += 1;
            tracing::warn!(%error, connections = gone.len(), "could not forget gone connections");
        }
    }
    gone.clear();
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    /// A window state of `stream` with `total` fire taps.
    pub(crate) fn state(
        stream: &str,
        start_ms: i64,
        total: u64,
        updated_at_ms: i64,
    ) -> WindowStateRecord {
        let emoji = reactions::EmojiName::parse("fire").unwrap();
        WindowStateRecord {
            v: 1,
            stream: StreamId::parse("s", stream).unwrap(),
            start_ms,
            end_ms: start_ms + 2_000,
            counts: [(emoji, total)].into_iter().collect(),
            total,
            swarm: Default::default(),
            is_final: false,
            updated_at_ms,
        }
    }

    #[test]
    fn coalescing_keeps_the_largest_total_per_window_whatever_the_order() {
        let states = vec![
            state("a", 0, 5, 10),
            state("a", 0, 9, 11),
            state("a", 0, 7, 12), // late duplicate of an older state
            state("a", 2_000, 1, 13),
            state("b", 0, 3, 14),
            state("b", 0, 3, 15), // same total, later: kept
        ];
        let newest = newest_states(states.clone());
        let summary: Vec<_> = newest
            .iter()
            .map(|s| {
                (
                    s.stream.as_str().to_owned(),
                    s.start_ms,
                    s.total,
                    s.updated_at_ms,
                )
            })
            .collect();
        let expected = vec![
            ("a".to_owned(), 0, 9, 11),
            ("a".to_owned(), 2_000, 1, 13),
            ("b".to_owned(), 0, 3, 15),
        ];
        assert_eq!(summary, expected);
        let mut reversed = states;
        reversed.reverse();
        assert_eq!(newest_states(reversed), newest);
    }

    #[test]
    fn backoff_grows_is_capped_and_never_zero() {
        let mut rng = StdRng::seed_from_u64(7);
        for attempt in 1..40 {
            for _ in 0..50 {
                let delay = backoff_delay(attempt, &mut rng);
                let ceiling = (20u64 << attempt.min(16)).min(1_000);
                assert!(delay >= Duration::from_millis(1));
                assert!(
                    delay <= Duration::from_millis(ceiling),
                    "{attempt}: {delay:?}"
                );
            }
        }
        let early: u128 = (0..200)
            .map(|_| backoff_delay(1, &mut rng).as_millis())
            .sum();
        let late: u128 = (0..200)
            .map(|_| backoff_delay(8, &mut rng).as_millis())
            .sum();
        assert!(late > early * 5, "{early} vs {late}");
    }
}
