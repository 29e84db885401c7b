//! Listeners' self-repair, as the web page does it: a push whose number skips one (a push lost
//! on the way) is repaired with a `sync` (WebSocketApi) or a read of the stored windows over
//! HTTP (AppSyncEvents), at most once per [`REPAIR_EVERY`] (notify answers one `sync` per
//! connection per 5 s); a repair asked for sooner is made when that allows, once.

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use std::time::{Duration, Instant};

/// The shortest time between two repairs of one listener.
pub const REPAIR_EVERY: Duration = Duration::from_secs(5);

/// Tracks the push numbers a listener saw and when it may repair next.
#[derive(Debug, Default)]
pub struct RepairClock {
    last_seq: Option<i64>,
    last_repair: Option<Instant>,
    pending: bool,
    /// Pushes found missing (numbers skipped).
    pub gaps: u64,
    /// Repairs made.
    pub repairs: u64,
}

impl RepairClock {
    /// Takes a push's number; true when it shows a push was missed.
    pub fn saw_push(&mut self, seq: Option<i64>) -> bool {
        let Some(seq) = seq.filter(|s| *s > 0) else {
            return false;
        };
        let gap = self.last_seq.is_some_and(|last| seq > last + 1);
        if gap {
            self.gaps += 1;
            self.pending = true;
        }
        self.last_seq = Some(self.last_seq.map_or(seq, |last| last.max(seq)));
        gap
    }

    /// When a wanted repair may be made (`None`: none is wanted).
    pub fn due(&self) -> Option<Instant> {
        self.pending.then(|| {
            self.last_repair
                .map_or_else(Instant::now, |at| at + REPAIR_EVERY)
        })
    }

    /// The last repair did not go through (refused as too soon, or its read failed): it is
    /// made again when the rate allows.
    pub fn refused(&mut self) {
        self.pending = true;
        self.repairs = self.repairs.saturating_sub(1);
    }

    /// The listener connected again: what it missed meanwhile is no push lost on the way,
    /// and the new connection catches up with a repair at once.
    pub fn reconnected(&mut self) {
        self.last_seq = None;
        self.last_repair = None;
        self.pending = true;
    }

    /// Whether a repair is wanted and allowed now; if so, it counts as made.
    pub fn take(&mut self, now: Instant) -> bool {
        let allowed = self.last_repair.is_none_or(|at| at + REPAIR_EVERY <= now);
        if self.pending && allowed {
            self.pending = false;
            self.last_repair = Some(now);
            self.repairs += 1;
            return true;
        }
        false
    }
}

/// The stored windows of a stream (`GET {api}/streams/{id}/windows`), as text; `None` when the
/// API did not answer 200.
pub async fn fetch_history(
    client: &Client<HttpConnector, Empty<Bytes>>,
    url: &str,
) -> Option<String> {
    let uri: hyper::Uri = url.parse().ok()?;
    let response = client.get(uri).await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    let body = response.into_body().collect().await.ok()?.to_bytes();
    String::from_utf8(body.to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_skipped_number_asks_for_one_repair_within_the_rate() {
        let mut clock = RepairClock::default();
        assert!(!clock.saw_push(Some(4)));
        assert!(!clock.saw_push(Some(5)));
        assert!(!clock.saw_push(None));
        assert_eq!(clock.due(), None);
        assert!(clock.saw_push(Some(7)));
        let now = Instant::now();
        assert!(clock.take(now));
        assert!(!clock.take(now), "one repair per gap");
        // Another gap soon after waits for the rate limit, then is repaired once.
        assert!(clock.saw_push(Some(9)));
        assert!(!clock.take(now + Duration::from_secs(1)));
        assert!(clock.take(now + REPAIR_EVERY));
        assert_eq!((clock.gaps, clock.repairs), (2, 2));
        // A late, older push is no gap.
        assert!(!clock.saw_push(Some(8)));
        // A refused repair is made again when the rate allows, and counted once.
        clock.refused();
        assert!(!clock.take(now + REPAIR_EVERY + Duration::from_secs(1)));
        assert!(clock.take(now + REPAIR_EVERY * 2));
        assert_eq!(clock.repairs, 2);
    }
}
