//! The figures of a run, computed from what the viewers sent and what the listeners saw.
//!
//! Tap-to-screen latency of a request is the time from its send until a listener of its stream
//! first shows a cumulative count (the sum over windows of each window's largest total) at
//! least as large as the taps of every accepted request sent up to and including it. Requests
//! sent earlier but answered later are thus waited for too, so the figure never flatters.

use serde::Serialize;

/// One accepted request, as the viewers recorded it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sent {
    pub stream: usize,
    /// Send time, ms since the run started.
    pub at_ms: f64,
    pub taps: u64,
}

/// What one listener saw: (ms since start, cumulative count), the count rising.
pub type Seen = Vec<(f64, u64)>;

/// p50, p99 and the maximum of a sample, in its unit.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    pub samples: u64,
}

/// Percentiles of samples weighted by a count (a request's latency counts once per tap).
pub fn weighted_percentiles(mut samples: Vec<(f64, u64)>) -> Percentiles {
    samples.retain(|(_, w)| *w > 0);
    if samples.is_empty() {
        return Percentiles::default();
    }
    samples.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total: u64 = samples.iter().map(|(_, w)| w).sum();
    let at = |q: f64| {
        let rank = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (value, weight) in &samples {
            seen += weight;
            if seen >= rank {
                return *value;
            }
        }
        samples[samples.len() - 1].0
    };
    Percentiles {
        p50: at(0.50),
        p99: at(0.99),
        max: samples[samples.len() - 1].0,
        samples: total,
    }
}

/// A request's tap-to-screen latency as seen by one listener.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OnScreen {
    /// The request's stream, for the figures per stream.
    pub stream: usize,
    /// When the request was sent, ms since the start.
    pub sent_at_ms: f64,
    pub latency_ms: f64,
    pub taps: u64,
}

/// Tap-to-screen latencies of `sent` against each of its stream's listeners. Taps no listener
/// ever caught up with are counted in the second value.
pub fn tap_to_screen(sent: &[Sent], seen: &[(usize, Seen)]) -> (Vec<OnScreen>, u64) {
    let streams = sent.iter().map(|s| s.stream + 1).max().unwrap_or(0);
    let mut latencies = Vec::new();
    let mut never = 0;
    for stream in 0..streams {
        let mut requests: Vec<Sent> = sent
            .iter()
            .copied()
            .filter(|s| s.stream == stream)
            .collect();
        requests.sort_by(|a, b| a.at_ms.total_cmp(&b.at_ms));
        let mut cumulative = 0;
        let needed: Vec<(f64, u64, u64)> = requests
            .iter()
            .map(|r| {
                cumulative += r.taps;
                (r.at_ms, r.taps, cumulative)
            })
            .collect();
        for (_, series) in seen.iter().filter(|(s, _)| *s == stream) {
            for (at_ms, taps, count) in &needed {
                let shown = series.partition_point(|(_, seen)| seen < count);
                match series.get(shown) {
                    Some((when, _)) => latencies.push(OnScreen {
                        stream,
                        sent_at_ms: *at_ms,
                        latency_ms: (when - at_ms).max(0.0),
                        taps: *taps,
                    }),
                    None => never += taps,
                }
            }
        }
    }
    (latencies, never)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_respect_weights() {
        let p = weighted_percentiles(vec![(10.0, 98), (500.0, 1), (900.0, 1)]);
        assert_eq!((p.p50, p.p99, p.max, p.samples), (10.0, 500.0, 900.0, 100));
        assert_eq!(weighted_percentiles(vec![]), Percentiles::default());
        let even = weighted_percentiles((1..=100).map(|v| (v as f64, 1)).collect());
        assert_eq!((even.p50, even.p99), (50.0, 99.0));
    }

    #[test]
    fn a_request_is_on_screen_once_everything_sent_before_it_is() {
        let sent = vec![
            Sent {
                stream: 0,
                at_ms: 0.0,
                taps: 2,
            },
            Sent {
                stream: 0,
                at_ms: 10.0,
                taps: 3,
            },
            Sent {
                stream: 1,
                at_ms: 5.0,
                taps: 1,
            },
        ];
        // Stream 0's listener shows 2 at 100 ms and 5 at 250 ms; stream 1's never shows anything.
        let seen = vec![(0, vec![(100.0, 2), (250.0, 5)]), (1, vec![])];
        let pairs = |l: Vec<OnScreen>| -> Vec<(f64, u64)> {
            l.iter().map(|o| (o.latency_ms, o.taps)).collect()
        };
        let (latencies, never) = tap_to_screen(&sent, &seen);
        assert_eq!(latencies[1].sent_at_ms, 10.0);
        assert!(latencies.iter().all(|o| o.stream == 0));
        assert_eq!(pairs(latencies), vec![(100.0, 2), (240.0, 3)]);
        assert_eq!(never, 1);
        // A listener that shows the later total first covers both requests at once.
        let seen = vec![(0, vec![(80.0, 5)])];
        let (latencies, _) = tap_to_screen(&sent, &seen);
        assert_eq!(pairs(latencies), vec![(80.0, 2), (70.0, 3)]);
    }
}
