//! Fan-out of window states to the connections watching their streams. A Kafka batch may carry
//! several states of one window (aggregate publishes after every batch it applies); only the
//! newest, the one with the largest total, is pushed, once per connection. Connections are read
//! per stream through the by-stream index, posts run with bounded concurrency, a 410 forgets
//! exactly that connection, and a 429 is retried with jittered exponential backoff until the
//! batch's throttle budget runs out. No single connection can fail the batch.

use crate::management::{ConnectionsApi, PostError};
use crate::protocol::ServerMessage;
use futures::StreamExt;
use rand::Rng;
use reactions::mongo::{ConnectionStore, StoreError};
use reactions::{StreamId, WindowStateRecord};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
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

/// How posts are sent.
#[derive(Debug, Clone, Copy)]
pub struct PostPolicy {
    /// Posts in flight at once.
    pub concurrency: usize,
    /// How long after the fan-out starts a throttled post may still be retried.
    pub throttle_budget: Duration,
}

/// What one fan-out did; also part of the invocation's response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FanoutReport {
    /// Distinct windows pushed after coalescing.
    pub windows: usize,
    /// Posts attempted (one per connection per window).
    pub posts: usize,
    /// Posts that reached their connection.
    pub delivered: usize,
    /// Connections that answered 410 and were forgotten.
    pub gone: usize,
    /// Retries after a 429.
    pub throttle_retries: usize,
    /// Posts still throttled when the budget ran out.
    pub throttled_out: usize,
    /// Posts that failed otherwise (counted and logged).
    pub failed: usize,
}

enum Outcome {
    Delivered,
    Gone(String),
    ThrottledOut,
    Failed(String, String),
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
    connection_id: String,
    frame: &[u8],
    deadline: Instant,
) -> (Outcome, usize) {
    let mut retries = 0usize;
    loop {
        match api.post_to_connection(&connection_id, frame.to_vec()).await {
            Ok(()) => return (Outcome::Delivered, retries),
            Err(PostError::Gone) => return (Outcome::Gone(connection_id), retries),
            Err(PostError::Failed(reason)) => {
                return (Outcome::Failed(connection_id, reason), retries);
            }
            Err(PostError::Throttled) => {
                let delay = backoff_delay(retries as u32 + 1, &mut rand::rng());
                if Instant::now() + delay > deadline {
                    return (Outcome::ThrottledOut, retries);
                }
                retries += 1;
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Pushes each state (already coalesced) to every connection watching its stream, then
/// forgets the connections that are gone. Fails only when MongoDB cannot be read or written,
/// so the event source retries the batch.
pub async fn fan_out(
    states: &[WindowStateRecord],
    connections: &ConnectionStore,
    api: &ConnectionsApi,
    policy: PostPolicy,
) -> Result<FanoutReport, StoreError> {
    let deadline = Instant::now() + policy.throttle_budget;
    let mut watchers: HashMap<&StreamId, Vec<String>> = HashMap::new();
    for state in states {
        if !watchers.contains_key(&state.stream) {
            watchers.insert(
                &state.stream,
                connections.ids_watching(&state.stream).await?,
            );
        }
    }
    let frames: Vec<Vec<u8>> = states
        .iter()
        .map(|s| ServerMessage::Window(s.clone()).to_bytes())
        .collect();
    let posts: Vec<(String, &[u8])> = states
        .iter()
        .zip(&frames)
        .flat_map(|(state, frame)| {
            watchers
                .get(&state.stream)
                .into_iter()
                .flatten()
                .map(move |id| (id.clone(), frame.as_slice()))
        })
        .collect();
    let mut report = FanoutReport {
        windows: states.len(),
        posts: posts.len(),
        ..FanoutReport::default()
    };
    let mut gone = Vec::new();
    let mut outcomes = futures::stream::iter(posts)
        .map(|(id, frame)| post_with_backoff(api, id, frame, deadline))
        .buffer_unordered(policy.concurrency.max(1));
    while let Some((outcome, retries)) = outcomes.next().await {
        report.throttle_retries += retries;
        match outcome {
            Outcome::Delivered => report.delivered += 1,
            Outcome::Gone(id) => gone.push(id),
            Outcome::ThrottledOut => report.throttled_out += 1,
            Outcome::Failed(id, reason) => {
                report.failed += 1;
                tracing::warn!(connection_id = id, reason, "post to connection failed");
            }
        }
    }
    gone.sort_unstable();
    gone.dedup();
    report.gone = gone.len();
    connections.remove_all(&gone).await?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn state(stream: &str, start_ms: i64, total: u64, updated_at_ms: i64) -> WindowStateRecord {
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
