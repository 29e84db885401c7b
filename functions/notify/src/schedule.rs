//! How often a stream may be pushed: once per push interval, stretched for a stream whose
//! audience needs more posts than its share of the account's post budget. The budget is shared
//! by audience, max-min fairly ("water-filling"): every stream that needs less than an equal
//! share of what is left gets all it needs, and the streams that need more split the rest
//! equally. So a hundred small streams beside one large one keep their base interval, the
//! large one uses everything they leave, and a stream without viewers takes no share at all.
//! The schedule itself lives in MongoDB (`reactions::mongo::PushSlots`).

use std::time::Duration;

/// The longest interval a stream is ever stretched to.
pub const MAX_PUSH_INTERVAL: Duration = Duration::from_secs(10);

/// How far back a push makes a stream count as active, sharing the post budget: longer than
/// the longest interval plus a push's lease, so a stretched stream never drops out of the
/// set between two pushes.
pub const ACTIVE_WINDOW: Duration = Duration::from_secs(40);

/// The share of the post budget each stream may use, computed once per batch from the
/// audiences of the active streams.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetShare {
    /// Posts per second one stream may make; `None` when every stream fits at its base interval.
    cap_per_second: Option<f64>,
}

impl BudgetShare {
    /// A share with no cap: every stream keeps the base interval.
    pub const UNLIMITED: Self = Self {
        cap_per_second: None,
    };

    /// Shares `budget_per_second` among streams with `audiences` (connections), each of which
    /// wants one post per connection every `base`.
    pub fn new(
        budget_per_second: u32,
        base: Duration,
        audiences: impl IntoIterator<Item = u64>,
    ) -> Self {
        let base_seconds = base.as_secs_f64().max(0.001);
        let mut demands: Vec<f64> = audiences
            .into_iter()
            .filter(|a| *a > 0)
            .map(|a| a as f64 / base_seconds)
            .collect();
        demands.sort_by(f64::total_cmp);
        let mut left = f64::from(budget_per_second.max(1));
        let count = demands.len();
        for (index, demand) in demands.iter().enumerate() {
            let equal = left / (count - index) as f64;
            if *demand > equal {
                return Self {
                    cap_per_second: Some(equal),
                };
            }
            left -= demand;
        }
        Self::UNLIMITED
    }

    /// The interval for a stream of `audience` connections: never shorter than `base`, never
    /// longer than [`MAX_PUSH_INTERVAL`]. A 50,000-viewer stream alone under a budget of 8,000
    /// posts/s gets a push every 6.25 s instead of a storm of 429s.
    pub fn interval(&self, base: Duration, audience: u64) -> Duration {
        match self.cap_per_second {
            None => base,
            Some(cap) => base
                .max(Duration::from_secs_f64(audience as f64 / cap.max(1.0)))
                .min(MAX_PUSH_INTERVAL),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn small_audiences_keep_the_base_interval() {
        let share = BudgetShare::new(8_000, SECOND, [100, 8_000 - 100]);
        assert_eq!(share, BudgetShare::UNLIMITED);
        assert_eq!(share.interval(SECOND, 7_900), SECOND);
        assert_eq!(
            BudgetShare::new(8_000, SECOND, []).interval(SECOND, 0),
            SECOND
        );
    }

    #[test]
    fn a_large_audience_alone_stretches_to_the_budget() {
        let share = BudgetShare::new(8_000, SECOND, [50_000]);
        assert_eq!(share.interval(SECOND, 50_000), Duration::from_millis(6_250));
        let huge = BudgetShare::new(8_000, SECOND, [10_000_000]);
        assert_eq!(huge.interval(SECOND, 10_000_000), MAX_PUSH_INTERVAL);
    }

    #[test]
    fn small_streams_beside_a_large_one_keep_their_interval() {
        // A hundred streams of 10 and one of 10,000: the small ones need 1,000 posts/s, the
        // large one gets the other 7,000 (not 8,000 / 101 = 79).
        let audiences = std::iter::repeat_n(10, 100).chain([10_000]);
        let share = BudgetShare::new(8_000, SECOND, audiences);
        assert_eq!(share.interval(SECOND, 10), SECOND);
        let large = share.interval(SECOND, 10_000);
        assert!(
            (large.as_secs_f64() - 10_000.0 / 7_000.0).abs() < 0.001,
            "{large:?}"
        );
    }

    #[test]
    fn streams_without_viewers_take_no_share() {
        let with_idle = std::iter::repeat_n(0, 1_000).chain([8_000]);
        assert_eq!(
            BudgetShare::new(8_000, SECOND, with_idle),
            BudgetShare::UNLIMITED
        );
    }

    proptest! {
        /// Whatever the audiences, the posts per second the intervals allow fit the budget
        /// (unless intervals are at their ceiling), and no stream is stretched while a smaller
        /// one is not at its base.
        #[test]
        fn shares_fit_the_budget_and_are_fair(
            audiences in proptest::collection::vec(0u64..200_000, 0..60),
            budget in 500u32..20_000,
        ) {
            let share = BudgetShare::new(budget, SECOND, audiences.iter().copied());
            let intervals: Vec<Duration> =
                audiences.iter().map(|a| share.interval(SECOND, *a)).collect();
            let posts: f64 = audiences
                .iter()
                .zip(&intervals)
                .map(|(a, i)| *a as f64 / i.as_secs_f64())
                .sum();
            let capped = intervals.contains(&MAX_PUSH_INTERVAL);
            prop_assert!(capped || posts <= f64::from(budget) * 1.001, "{posts} > {budget}");
            for (a, ia) in audiences.iter().zip(&intervals) {
                prop_assert!(*ia >= SECOND);
                for (b, ib) in audiences.iter().zip(&intervals) {
                    if a <= b {
                        prop_assert!(ia <= ib);
                    }
                }
            }
        }
    }
}
