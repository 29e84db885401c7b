//! How a run's audience is spread over its streams (`--audiences`), so one run can stand for a
//! platform: most streams small, a few large.
//!
//! - `uniform` (the default): every stream gets the same share. Viewer `v` watches stream
//!   `v % streams` and each stream has `--listeners` listeners.
//! - `zipf:S`: a Zipf (discrete power-law) distribution with exponent `S > 0` over the streams'
//!   ranks: stream `k` (0-based index, rank `k + 1`) gets a share proportional to
//!   `1 / (k + 1)^S`, so stream 0 is the largest. Every stream first gets one viewer, and the
//!   rest are shared in proportion to those weights, rounded by largest remainder so that the
//!   counts add up to `--viewers` exactly (which must be at least `--streams`). The listeners,
//!   `--listeners × --streams` in all, are shared the same way, at least one per stream. With
//!   500 streams and `S = 1.1`, 10,000 viewers give the largest stream 1,823 and the median
//!   stream 5; `S = 1` is the classic Zipf's law, a larger `S` a heavier head.
//!
//! Every viewer taps at the same rate, so a stream's taps follow its viewers. Viewers are
//! dealt to the streams in turn (skipping full ones), which spreads each stream's viewers over
//! the sending phases and, for `uniform`, is exactly `v % streams`.

use std::fmt;
use std::str::FromStr;

/// How viewers and listeners are spread over the streams.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Audiences {
    /// The same share for every stream.
    #[default]
    Uniform,
    /// Stream of rank `k` (1-based) gets a share proportional to `1 / k^exponent`.
    Zipf { exponent: f64 },
}

impl FromStr for Audiences {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text == "uniform" {
            return Ok(Self::Uniform);
        }
        let exponent = text
            .strip_prefix("zipf:")
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s > 0.0);
        match exponent {
            Some(exponent) => Ok(Self::Zipf { exponent }),
            None => Err(format!(
                "unknown audiences {text:?}: use uniform, or zipf:S with S a positive number \
                 (e.g. zipf:1.1)"
            )),
        }
    }
}

impl fmt::Display for Audiences {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Uniform => f.write_str("uniform"),
            Self::Zipf { exponent } => write!(f, "zipf:{exponent}"),
        }
    }
}

/// Why the audiences cannot be spread as asked.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AudienceError {
    #[error("there are no streams to spread the audience over (--streams must be positive)")]
    NoStreams,
    #[error(
        "--audiences {audiences} gives every stream at least one viewer: --viewers ({viewers}) \
         must be at least --streams ({streams})"
    )]
    FewerViewersThanStreams {
        audiences: Audiences,
        viewers: usize,
        streams: usize,
    },
}

impl Audiences {
    /// `total` shared over `streams` streams, stream 0 first; the counts add up to `total`.
    /// `uniform` gives the first `total % streams` streams one more; `zipf` gives each stream
    /// one (while there are enough) and the rest by the streams' weights (see the module).
    pub fn split(self, total: usize, streams: usize) -> Vec<usize> {
        if streams == 0 {
            return Vec::new();
        }
        match self {
            Self::Uniform => (0..streams)
                .map(|stream| total / streams + usize::from(stream < total % streams))
                .collect(),
            Self::Zipf { exponent } => zipf_split(total, streams, exponent),
        }
    }
}

/// One each, then the rest by the weights `1 / rank^exponent`, largest remainder first (ties
/// to the larger stream, so the counts never grow with the rank).
fn zipf_split(total: usize, streams: usize, exponent: f64) -> Vec<usize> {
    if total <= streams {
        return (0..streams)
            .map(|stream| usize::from(stream < total))
            .collect();
    }
    let weights: Vec<f64> = (1..=streams)
        .map(|rank| (rank as f64).powf(-exponent))
        .collect();
    let sum: f64 = weights.iter().sum();
    let rest = (total - streams) as f64;
    let ideal: Vec<f64> = weights.iter().map(|weight| rest * weight / sum).collect();
    let mut counts: Vec<usize> = ideal.iter().map(|x| 1 + x.floor() as usize).collect();
    let left = total.saturating_sub(counts.iter().sum());
    let mut by_remainder: Vec<usize> = (0..streams).collect();
    by_remainder.sort_by(|a, b| {
        ideal[*b]
            .fract()
            .total_cmp(&ideal[*a].fract())
            .then(a.cmp(b))
    });
    for stream in by_remainder.into_iter().take(left) {
        counts[stream] += 1;
    }
    counts
}

/// Each stream's viewers and listeners for a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamAudiences {
    /// Simulated (tapping) viewers per stream.
    pub viewers: Vec<usize>,
    /// Listeners per stream.
    pub listeners: Vec<usize>,
}

impl StreamAudiences {
    /// Spreads `viewers` and `listeners_per_stream × streams` listeners over `streams` streams.
    pub fn new(
        audiences: Audiences,
        viewers: usize,
        streams: usize,
        listeners_per_stream: usize,
    ) -> Result<Self, AudienceError> {
        if streams == 0 {
            return Err(AudienceError::NoStreams);
        }
        if matches!(audiences, Audiences::Zipf { .. }) && viewers < streams {
            return Err(AudienceError::FewerViewersThanStreams {
                audiences,
                viewers,
                streams,
            });
        }
        Ok(Self {
            viewers: audiences.split(viewers, streams),
            listeners: audiences.split(listeners_per_stream * streams, streams),
        })
    }

    /// The stream of each viewer (indexed by viewer), dealt in turn to the streams that still
    /// have room: for `uniform`, viewer `v` watches stream `v % streams`.
    pub fn viewer_streams(&self) -> Vec<usize> {
        deal(&self.viewers)
    }
}

/// Deals `counts[s]` places to each stream `s` in turns, a place per stream with room per turn.
fn deal(counts: &[usize]) -> Vec<usize> {
    let mut left = counts.to_vec();
    let mut open: Vec<usize> = (0..counts.len()).filter(|s| counts[*s] > 0).collect();
    let mut order = Vec::with_capacity(counts.iter().sum());
    while !open.is_empty() {
        for &stream in &open {
            order.push(stream);
            left[stream] -= 1;
        }
        open.retain(|stream| left[*stream] > 0);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZIPF: Audiences = Audiences::Zipf { exponent: 1.1 };

    #[test]
    fn audiences_parse_and_print() {
        assert_eq!("uniform".parse::<Audiences>(), Ok(Audiences::Uniform));
        assert_eq!("zipf:1.1".parse::<Audiences>(), Ok(ZIPF));
        assert_eq!(ZIPF.to_string(), "zipf:1.1");
        for bad in [
            "zipf", "zipf:", "zipf:0", "zipf:-1", "zipf:inf", "zipf:NaN", "pareto:2",
        ] {
            assert!(bad.parse::<Audiences>().is_err(), "{bad}");
        }
    }

    #[test]
    fn uniform_is_the_even_split_of_viewer_modulo_streams() {
        for (viewers, streams) in [(200, 4), (10, 3), (2, 5), (7, 7)] {
            let audiences = StreamAudiences::new(Audiences::Uniform, viewers, streams, 2).unwrap();
            let modulo: Vec<usize> = (0..viewers).map(|v| v % streams).collect();
            assert_eq!(audiences.viewer_streams(), modulo);
            for (stream, count) in audiences.viewers.iter().enumerate() {
                assert_eq!(*count, modulo.iter().filter(|s| **s == stream).count());
            }
            assert_eq!(audiences.listeners, vec![2; streams]);
        }
    }

    #[test]
    fn zipf_counts_add_up_never_grow_with_rank_and_give_every_stream_one() {
        for (total, streams, exponent) in [
            (10_000, 500, 1.1),
            (200, 4, 1.1),
            (7, 7, 2.0),
            (1_001, 1_000, 0.5),
            (50, 3, 3.0),
        ] {
            let counts = Audiences::Zipf { exponent }.split(total, streams);
            assert_eq!(counts.len(), streams);
            assert_eq!(counts.iter().sum::<usize>(), total);
            assert!(counts.iter().all(|c| *c >= 1), "{counts:?}");
            assert!(counts.windows(2).all(|w| w[0] >= w[1]), "{counts:?}");
        }
    }

    #[test]
    fn zipf_has_a_heavy_head_and_a_long_small_tail() {
        let counts = ZIPF.split(10_000, 500);
        assert!(counts[0] > 1_000, "the top stream holds {}", counts[0]);
        assert!(
            (2..=10).contains(&counts[249]),
            "the median stream holds {}",
            counts[249]
        );
        assert!(counts[499] <= 5, "the last stream holds {}", counts[499]);
    }

    #[test]
    fn zipf_listeners_follow_the_viewers() {
        let audiences = StreamAudiences::new(ZIPF, 1_000, 10, 4).unwrap();
        assert_eq!(audiences.listeners.iter().sum::<usize>(), 40);
        assert!(audiences.listeners.iter().all(|l| *l >= 1));
        assert!(audiences.listeners[0] > audiences.listeners[9]);
        let streams = audiences.viewer_streams();
        assert_eq!(streams.len(), 1_000);
        for (stream, count) in audiences.viewers.iter().enumerate() {
            assert_eq!(*count, streams.iter().filter(|s| **s == stream).count());
        }
        // No listeners asked for: none anywhere.
        let silent = StreamAudiences::new(ZIPF, 1_000, 10, 0).unwrap();
        assert_eq!(silent.listeners, vec![0; 10]);
    }

    #[test]
    fn zipf_needs_a_viewer_per_stream() {
        assert_eq!(
            StreamAudiences::new(ZIPF, 3, 4, 2),
            Err(AudienceError::FewerViewersThanStreams {
                audiences: ZIPF,
                viewers: 3,
                streams: 4
            })
        );
        assert!(StreamAudiences::new(Audiences::Uniform, 3, 4, 2).is_ok());
        assert_eq!(
            StreamAudiences::new(Audiences::Uniform, 3, 0, 2),
            Err(AudienceError::NoStreams)
        );
    }
}
