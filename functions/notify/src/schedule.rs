//! When a stream may be pushed: at most once per push interval, the interval stretched for a
//! stream whose audience would need more posts than its share of the account's post budget.
//! The schedule lives in MongoDB ([`PushSlots`]), so it holds across instances and restarts;
//! an instance whose batch arrives before the stream's next slot waits for it, and then pushes
//! the newest states it has, so the last states of a stream whose taps stopped still go out.

use reactions::StreamId;
use reactions::clock::now_ms;
use reactions::mongo::{Claim, PushSlots, StoreError};
use std::time::Duration;
use tokio::time::Instant;

/// The longest interval a stream is ever stretched to, and the longest one wait for a slot:
/// a clock far ahead on another instance cannot stall a stream for longer.
pub const MAX_PUSH_INTERVAL: Duration = Duration::from_secs(10);

/// How far back a push makes a stream count as active, sharing the post budget.
pub const ACTIVE_WINDOW: Duration = Duration::from_secs(10);

/// The interval for a stream with `audience` connections when `active_streams` streams share
/// `budget_per_second` posts: never shorter than `base`, never longer than
/// [`MAX_PUSH_INTERVAL`]. A 50,000-viewer stream alone under a budget of 8,000 posts/s gets a
/// push every 6.25 s instead of a storm of 429s.
pub fn stretched_interval(
    base: Duration,
    audience: u64,
    budget_per_second: u32,
    active_streams: u64,
) -> Duration {
    let share = f64::from(budget_per_second.max(1)) / active_streams.max(1) as f64;
    let needed = Duration::from_secs_f64(audience as f64 / share);
    base.max(needed).min(MAX_PUSH_INTERVAL)
}

/// What waiting for a slot gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Push now (the slot was taken at `at_ms`), then set the next slot.
    Taken { at_ms: i64 },
    /// The slot would come after `deadline`: this batch's states are not pushed (the next
    /// push of the stream carries newer ones).
    Missed,
}

/// Waits for the next push slot of `stream` and takes it, unless that would pass `deadline`.
/// While another push holds the slot, the schedule is read again every `poll` (the push
/// interval), so a slot freed early is not waited out. The slot is held for
/// [`MAX_PUSH_INTERVAL`] until the push sets the next one.
pub async fn take_slot(
    slots: &PushSlots,
    stream: &StreamId,
    poll: Duration,
    deadline: Instant,
) -> Result<Slot, StoreError> {
    let poll = poll.max(Duration::from_millis(50));
    // The stored slot last seen and how long it has been waited for: once the wait reaches it,
    // or has lasted MAX_PUSH_INTERVAL (a clock far behind the one that set it), it is taken by
    // its stored value rather than by this instance's clock.
    let mut waited: Option<(i64, Duration)> = None;
    loop {
        let now = now_ms();
        let seen = waited
            .filter(|(due, waited)| now >= *due || *waited >= MAX_PUSH_INTERVAL)
            .map(|(due, _)| due);
        match slots.claim(stream, now, seen, MAX_PUSH_INTERVAL).await? {
            Claim::Granted => return Ok(Slot::Taken { at_ms: now }),
            Claim::NotBefore { due_ms } => {
                let until_due =
                    Duration::from_millis(u64::try_from(due_ms.saturating_sub(now)).unwrap_or(0));
                let wait = until_due.min(poll).min(MAX_PUSH_INTERVAL);
                if Instant::now() + wait > deadline {
                    return Ok(Slot::Missed);
                }
                tokio::time::sleep(wait).await;
                let before = match waited {
                    Some((due, so_far)) if due == due_ms => so_far,
                    _ => Duration::ZERO,
                };
                waited = Some((due_ms, before + wait.max(Duration::from_millis(1))));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn small_audiences_keep_the_base_interval() {
        assert_eq!(stretched_interval(SECOND, 100, 8_000, 1), SECOND);
        assert_eq!(stretched_interval(SECOND, 8_000, 8_000, 1), SECOND);
        assert_eq!(
            stretched_interval(Duration::ZERO, 0, 8_000, 3),
            Duration::ZERO
        );
    }

    #[test]
    fn large_audiences_stretch_in_proportion_to_their_share() {
        assert_eq!(
            stretched_interval(SECOND, 50_000, 8_000, 1),
            Duration::from_millis(6_250)
        );
        // Two active streams: each has 4,000 posts/s.
        assert_eq!(
            stretched_interval(SECOND, 8_000, 8_000, 2),
            Duration::from_secs(2)
        );
        assert_eq!(
            stretched_interval(SECOND, 10_000_000, 8_000, 1),
            MAX_PUSH_INTERVAL
        );
    }
}
