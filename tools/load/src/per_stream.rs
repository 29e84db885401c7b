//! Tap-to-screen latency per stream. Over a platform's audiences (`--audiences zipf:S`) the
//! whole-run percentiles are dominated by the few large streams; the figures per stream, and
//! the worst stream's p99, show whether a small stream or the largest one waits longer.

use crate::audiences::StreamAudiences;
use crate::report::{OnScreen, weighted_percentiles};
use serde::Serialize;

/// One stream's audience and tap-to-screen latency over the measured part of a run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StreamLatency {
    /// The stream's index: its id is `{run-id}-s{stream}`, and under `zipf` stream 0 is the
    /// largest.
    pub stream: usize,
    pub viewers: usize,
    pub listeners: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Taps times the listeners they were measured on (each tap counts once per listener).
    pub samples: u64,
}

/// The figures of every stream of `audiences`, from the measured part's `latencies`.
pub fn stream_latencies(latencies: &[OnScreen], audiences: &StreamAudiences) -> Vec<StreamLatency> {
    let mut samples: Vec<Vec<(f64, u64)>> = vec![Vec::new(); audiences.viewers.len()];
    for on_screen in latencies {
        if let Some(stream) = samples.get_mut(on_screen.stream) {
            stream.push((on_screen.latency_ms, on_screen.taps));
        }
    }
    samples
        .into_iter()
        .enumerate()
        .map(|(stream, samples)| {
            let figures = weighted_percentiles(samples);
            StreamLatency {
                stream,
                viewers: audiences.viewers[stream],
                listeners: audiences.listeners.get(stream).copied().unwrap_or(0),
                p50_ms: figures.p50,
                p99_ms: figures.p99,
                samples: figures.samples,
            }
        })
        .collect()
}

/// The stream with the largest p99 among those that had samples (the larger stream on a tie).
pub fn worst_stream(streams: &[StreamLatency]) -> Option<&StreamLatency> {
    streams
        .iter()
        .filter(|s| s.samples > 0)
        .reduce(|worst, s| if s.p99_ms > worst.p99_ms { s } else { worst })
}

/// Which listeners (in connect order, each stream's together) feed the tap-to-screen latency:
/// at most about `at_most` per stream, spread evenly over the stream's listeners. The pairs of
/// requests and listeners would otherwise grow past memory with thousands of listeners.
pub fn measured_listeners(
    listener_streams: &[usize],
    listeners: &[usize],
    at_most: usize,
) -> Vec<bool> {
    let mut ranks = vec![0usize; listeners.len()];
    listener_streams
        .iter()
        .map(|&stream| {
            let (Some(count), Some(rank)) = (listeners.get(stream), ranks.get_mut(stream)) else {
                return false;
            };
            let step = (*count).max(1).div_ceil(at_most.max(1));
            let measured = (*rank).is_multiple_of(step);
            *rank += 1;
            measured
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on_screen(stream: usize, latency_ms: f64, taps: u64) -> OnScreen {
        OnScreen {
            stream,
            sent_at_ms: 0.0,
            latency_ms,
            taps,
        }
    }

    #[test]
    fn each_stream_has_its_percentiles_and_the_worst_is_found() {
        let audiences = StreamAudiences {
            viewers: vec![5, 2, 1],
            listeners: vec![4, 2, 1],
        };
        let latencies = [
            on_screen(0, 100.0, 98),
            on_screen(0, 900.0, 2),
            on_screen(1, 300.0, 1),
            on_screen(1, 400.0, 1),
        ];
        let streams = stream_latencies(&latencies, &audiences);
        assert_eq!(streams.len(), 3);
        assert_eq!(
            (streams[0].p50_ms, streams[0].p99_ms, streams[0].samples),
            (100.0, 900.0, 100)
        );
        assert_eq!((streams[1].p50_ms, streams[1].p99_ms), (300.0, 400.0));
        assert_eq!((streams[2].viewers, streams[2].listeners), (1, 1));
        // Stream 2 had no samples: it is no one's worst, whatever its zero figures.
        assert_eq!(streams[2].samples, 0);
        assert_eq!(worst_stream(&streams).map(|s| s.stream), Some(0));
        assert_eq!(worst_stream(&streams[1..]).map(|s| s.stream), Some(1));
        assert_eq!(worst_stream(&streams[2..]), None);
    }

    #[test]
    fn uniform_listeners_are_measured_as_before() {
        // Before audiences: listener i measured when (i % per_stream) % step == 0.
        for (per_stream, streams) in [(3, 2), (250, 2), (1_000, 3)] {
            let listener_streams: Vec<usize> =
                (0..per_stream * streams).map(|i| i / per_stream).collect();
            let measured = measured_listeners(&listener_streams, &vec![per_stream; streams], 100);
            let step = per_stream.div_ceil(100);
            let before: Vec<bool> = (0..per_stream * streams)
                .map(|i| (i % per_stream).is_multiple_of(step))
                .collect();
            assert_eq!(measured, before);
        }
    }

    #[test]
    fn a_large_stream_is_sampled_and_a_small_one_measured_whole() {
        let listeners = [1_000, 10];
        let listener_streams: Vec<usize> = (0..1_010).map(|i| usize::from(i >= 1_000)).collect();
        let measured = measured_listeners(&listener_streams, &listeners, 100);
        assert_eq!(measured[..1_000].iter().filter(|m| **m).count(), 100);
        assert!(measured[1_000..].iter().all(|m| *m));
    }
}
