//! The account-level quotas and latencies of API Gateway that change how emostream behaves, so
//! that local figures never flatter AWS:
//!
//! - One request throttle per account and Region, shared by HTTP API requests, WebSocket
//!   messages and `@connections` calls: 10,000 requests/s with a burst of 5,000, enforced with a
//!   token bucket; beyond it API Gateway answers 429 (`LimitExceededException` on
//!   `@connections`). Source: "Amazon API Gateway quotas" (account-level throttle) and "Protect
//!   your WebSocket APIs in API Gateway" (token bucket, 429 Too Many Requests) in the API
//!   Gateway Developer Guide.
//! - 500 new WebSocket connections per second per account. Source: "Quotas for configuring and
//!   running a WebSocket API in API Gateway".
//! - A `PostToConnection` from a Lambda function in the same Region takes about 10–30 ms; the
//!   local stack answers each `@connections` call after `post_latency` (10 ms by default).
//!
//! `AwsQuotas::off()` turns them all off (`emostream-local --no-aws-quotas`).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// The figures the local stack emulates; the defaults are AWS's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuotaSettings {
    /// Added before each `@connections` call is answered.
    pub post_latency: Duration,
    /// Steady account-wide request rate (HTTP API, WebSocket messages, `@connections`); 0 = none.
    pub account_rps: u32,
    /// Requests the account may make at once above the steady rate.
    pub account_burst: u32,
    /// New WebSocket connections per second; 0 = none.
    pub connects_per_second: u32,
}

impl Default for QuotaSettings {
    fn default() -> Self {
        Self {
            post_latency: Duration::from_millis(10),
            account_rps: 10_000,
            account_burst: 5_000,
            connects_per_second: 500,
        }
    }
}

impl QuotaSettings {
    /// No latency and no throttles: faster than AWS, for debugging only.
    pub fn off() -> Self {
        Self {
            post_latency: Duration::ZERO,
            account_rps: 0,
            account_burst: 0,
            connects_per_second: 0,
        }
    }
}

/// A token bucket: `rate` tokens per second, at most `capacity` saved up.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    capacity: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: u32, capacity: u32) -> Self {
        let capacity = f64::from(capacity.max(1));
        Self {
            rate: f64::from(rate),
            capacity,
            state: Mutex::new((capacity, Instant::now())),
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&self) -> bool {
        self.try_take_at(Instant::now())
    }

    fn try_take_at(&self, now: Instant) -> bool {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (tokens, last) = *state;
        let refilled = (tokens + now.saturating_duration_since(last).as_secs_f64() * self.rate)
            .min(self.capacity);
        if refilled >= 1.0 {
            *state = (refilled - 1.0, now);
            true
        } else {
            *state = (refilled, now);
            false
        }
    }
}

/// The quotas in force for one stack, shared by its HTTP and WebSocket APIs.
#[derive(Debug)]
pub struct AwsQuotas {
    pub settings: QuotaSettings,
    account: Option<TokenBucket>,
    connects: Option<TokenBucket>,
    requests_refused: AtomicU64,
    connects_refused: AtomicU64,
}

/// What the quotas refused so far, so a run can say how often the emulated AWS throttled it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Refusals {
    /// Requests answered 429 by the account throttle (HTTP API, WebSocket messages and
    /// connects, `@connections` calls).
    pub requests: u64,
    /// New WebSocket connections refused by the connects-per-second quota.
    pub connects: u64,
}

/// Takes a token from `bucket` (none: no quota), counting a refusal in `refused`.
fn admit(bucket: Option<&TokenBucket>, refused: &AtomicU64) -> bool {
    let admitted = bucket.is_none_or(TokenBucket::try_take);
    if !admitted {
        refused.fetch_add(1, Ordering::Relaxed);
    }
    admitted
}

impl std::fmt::Display for Refusals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "AWS quotas: {} requests answered 429 by the account throttle, {} connects refused",
            self.requests, self.connects
        )
    }
}

impl AwsQuotas {
    pub fn new(settings: QuotaSettings) -> Self {
        let bucket = |rate: u32, burst: u32| (rate > 0).then(|| TokenBucket::new(rate, burst));
        Self {
            settings,
            account: bucket(settings.account_rps, settings.account_burst),
            // API Gateway documents no burst for new connections: a second's worth.
            connects: bucket(settings.connects_per_second, settings.connects_per_second),
            requests_refused: AtomicU64::new(0),
            connects_refused: AtomicU64::new(0),
        }
    }

    /// One request against the account throttle; false means answer 429.
    pub fn admit_request(&self) -> bool {
        admit(self.account.as_ref(), &self.requests_refused)
    }

    /// One new WebSocket connection; false means refuse it with 429.
    pub fn admit_connect(&self) -> bool {
        admit(self.connects.as_ref(), &self.connects_refused)
    }

    /// The refusals so far.
    pub fn refusals(&self) -> Refusals {
        Refusals {
            requests: self.requests_refused.load(Ordering::Relaxed),
            connects: self.connects_refused.load(Ordering::Relaxed),
        }
    }

    /// Waits as long as a `@connections` call takes in AWS.
    pub async fn post_latency(&self) {
        if !self.settings.post_latency.is_zero() {
            tokio::time::sleep(self.settings.post_latency).await;
        }
    }
}

impl Default for AwsQuotas {
    fn default() -> Self {
        Self::new(QuotaSettings::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let bucket = TokenBucket::new(10, 5);
        let start = Instant::now();
        let taken = (0..20).filter(|_| bucket.try_take_at(start)).count();
        assert_eq!(taken, 5, "the burst");
        // Half a second refills five tokens at 10/s.
        let later = start + Duration::from_millis(500);
        let taken = (0..20).filter(|_| bucket.try_take_at(later)).count();
        assert_eq!(taken, 5);
        // Never more than the capacity, however long it rested.
        let much_later = later + Duration::from_secs(3_600);
        let taken = (0..20).filter(|_| bucket.try_take_at(much_later)).count();
        assert_eq!(taken, 5);
    }

    #[test]
    fn off_admits_everything_at_once() {
        let quotas = AwsQuotas::new(QuotaSettings::off());
        assert!((0..100_000).all(|_| quotas.admit_request() && quotas.admit_connect()));
        assert_eq!(quotas.refusals(), Refusals::default());
    }

    #[test]
    fn the_defaults_are_aws_figures() {
        let quotas = AwsQuotas::default();
        let now = Instant::now();
        let account = quotas.account.as_ref().unwrap();
        assert_eq!(
            (0..6_000).filter(|_| account.try_take_at(now)).count(),
            5_000
        );
        let second = now + Duration::from_secs(1);
        assert_eq!(
            (0..20_000).filter(|_| account.try_take_at(second)).count(),
            5_000
        );
        let connects = quotas.connects.as_ref().unwrap();
        assert_eq!((0..600).filter(|_| connects.try_take_at(now)).count(), 500);
        assert_eq!(quotas.settings.post_latency, Duration::from_millis(10));
        // Refusals through the public calls are counted.
        let quotas = AwsQuotas::new(QuotaSettings {
            account_rps: 1,
            account_burst: 1,
            connects_per_second: 1,
            ..QuotaSettings::default()
        });
        let admitted = (0..10).filter(|_| quotas.admit_request()).count() as u64;
        let connected = (0..10).filter(|_| quotas.admit_connect()).count() as u64;
        assert_eq!(
            quotas.refusals(),
            Refusals {
                requests: 10 - admitted,
                connects: 10 - connected,
            }
        );
        assert!(admitted >= 1 && connected >= 1);
    }
}
