//! Replay: a stream's exact counts played back against its recording. Stored windows are
//! merged into buckets of a chosen resolution (a multiple of the window width, so a bucket
//! holds whole windows and its counts are exact) and written in a compact, columnar shape: the
//! emojis once, then per non-empty bucket its index and a count per emoji. A three-hour stream
//! at one-second resolution stays well under a megabyte. The heatmap is the whole stream's
//! taps in a fixed number of segments, each as an intensity from 0 to 1 (its share of the
//! busiest segment), for a player to draw under its scrubber.

use std::collections::BTreeMap;

/// The most buckets one replay answer holds: three hours at one second.
pub const MAX_BUCKETS: i64 = 10_800;

/// The buckets an answer gets when the client names no resolution.
pub const DEFAULT_BUCKETS: i64 = 1_000;

/// The heatmap's segments.
pub const HEATMAP_SEGMENTS: i64 = 100;

/// Why a replay range was refused (each names the parameter to change).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("to ({to_ms}) must be after from ({from_ms})")]
    Empty { from_ms: i64, to_ms: i64 },
    #[error(
        "resolution {resolution_ms} ms is not a multiple of the window width ({width_ms} ms): a bucket must hold whole windows"
    )]
    NotWholeWindows { resolution_ms: i64, width_ms: i64 },
    #[error(
        "the range holds {buckets} buckets of {resolution_ms} ms; at most {MAX_BUCKETS} are answered: ask a resolution of at least {least_ms} ms or a shorter range"
    )]
    TooManyBuckets {
        buckets: i64,
        resolution_ms: i64,
        least_ms: i64,
    },
}

/// A validated range: `[from_ms, to_ms)` on the resolution's grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayRange {
    pub from_ms: i64,
    pub to_ms: i64,
    pub resolution_ms: i64,
}

fn round_up_to(value: i64, step: i64) -> i64 {
    value
        .div_euclid(step)
        .saturating_add(i64::from(value.rem_euclid(step) != 0))
        * step
}

impl ReplayRange {
    /// The range `[from_ms, to_ms)` widened to whole buckets of `resolution_ms` (chosen so that
    /// about [`DEFAULT_BUCKETS`] cover the range when not given).
    pub fn new(
        from_ms: i64,
        to_ms: i64,
        resolution_ms: Option<i64>,
        width_ms: i64,
    ) -> Result<Self, RangeError> {
        if to_ms <= from_ms {
            return Err(RangeError::Empty { from_ms, to_ms });
        }
        let span = to_ms.saturating_sub(from_ms);
        let resolution_ms = match resolution_ms {
            Some(r) if r <= 0 || r % width_ms != 0 => {
                return Err(RangeError::NotWholeWindows {
                    resolution_ms: r,
                    width_ms,
                });
            }
            Some(r) => r,
            None => round_up_to(span.div_euclid(DEFAULT_BUCKETS).max(1), width_ms),
        };
        let from_ms = from_ms - from_ms.rem_euclid(resolution_ms);
        let to_ms = round_up_to(to_ms, resolution_ms);
        let buckets = (to_ms - from_ms) / resolution_ms;
        if buckets > MAX_BUCKETS {
            return Err(RangeError::TooManyBuckets {
                buckets,
                resolution_ms,
                least_ms: round_up_to(round_up_to(span, MAX_BUCKETS) / MAX_BUCKETS, width_ms),
            });
        }
        Ok(Self {
            from_ms,
            to_ms,
            resolution_ms,
        })
    }

    pub fn buckets(&self) -> i64 {
        (self.to_ms - self.from_ms) / self.resolution_ms
    }
}

/// Counts merged into buckets: the emojis (columns, by first appearance) and per non-empty
/// bucket its index from the range's start and its count per column.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Buckets {
    pub emojis: Vec<String>,
    pub rows: Vec<(i64, Vec<u64>)>,
}

/// Builds [`Buckets`] window by window, in ascending start, without allocating per count (a
/// long recording's answer merges a hundred thousand of them).
#[derive(Debug)]
pub struct BucketBuilder {
    range: ReplayRange,
    columns: std::collections::HashMap<String, usize>,
    buckets: Buckets,
}

impl BucketBuilder {
    pub fn new(range: ReplayRange) -> Self {
        Self {
            range,
            columns: std::collections::HashMap::new(),
            buckets: Buckets::default(),
        }
    }

    /// Adds the window starting at `start_ms` with `counts` per emoji (ignored outside the
    /// range).
    pub fn add<'a>(&mut self, start_ms: i64, counts: impl IntoIterator<Item = (&'a str, u64)>) {
        let range = &self.range;
        if !(range.from_ms..range.to_ms).contains(&start_ms) {
            return;
        }
        let index = (start_ms - range.from_ms) / range.resolution_ms;
        let buckets = &mut self.buckets;
        if buckets.rows.last().is_none_or(|(last, _)| *last != index) {
            buckets.rows.push((index, vec![0; buckets.emojis.len()]));
        }
        for (emoji, n) in counts {
            let column = match self.columns.get(emoji) {
                Some(column) => *column,
                None => {
                    buckets.emojis.push(emoji.to_owned());
                    self.columns
                        .insert(emoji.to_owned(), buckets.emojis.len() - 1);
                    buckets.emojis.len() - 1
                }
            };
            let Some((_, row)) = buckets.rows.last_mut() else {
                continue;
            };
            if row.len() <= column {
                row.resize(column + 1, 0);
            }
            row[column] += n;
        }
    }

    /// The buckets, each row with a count per column (rows made before a column appeared
    /// are padded).
    pub fn finish(mut self) -> Buckets {
        let width = self.buckets.emojis.len();
        for (_, row) in &mut self.buckets.rows {
            row.resize(width, 0);
        }
        self.buckets
    }
}

/// The heatmap's span: whole windows from `from_ms` to `to_ms` in at most
/// [`HEATMAP_SEGMENTS`] segments. Returns the segment length.
pub fn heatmap_segment_ms(from_ms: i64, to_ms: i64, width_ms: i64) -> i64 {
    let span = (to_ms - from_ms).max(width_ms);
    round_up_to(
        round_up_to(span, HEATMAP_SEGMENTS) / HEATMAP_SEGMENTS,
        width_ms,
    )
}

/// The taps per heatmap segment of `windows` (start, total), as
/// `WindowStore::segment_totals` sums them: for an answer whose range covers the heatmap's
/// span, which then needs no second read.
pub fn segment_totals(
    windows: impl IntoIterator<Item = (i64, u64)>,
    from_ms: i64,
    to_ms: i64,
    segment_ms: i64,
) -> Vec<(i64, u64)> {
    let mut totals: BTreeMap<i64, u64> = BTreeMap::new();
    for (start, total) in windows {
        if (from_ms..to_ms).contains(&start) {
            *totals.entry((start - from_ms) / segment_ms).or_insert(0) += total;
        }
    }
    totals.into_iter().collect()
}

/// Intensities 0–1 of `HEATMAP_SEGMENTS` segments from per-segment totals (index, taps): each
/// segment's share of the busiest, to three decimals.
pub fn intensities(totals: &[(i64, u64)], segments: i64) -> Vec<f64> {
    let within = |index: &i64| (0..segments).contains(index);
    let busiest = totals
        .iter()
        .filter(|(index, _)| within(index))
        .map(|(_, n)| *n)
        .max()
        .unwrap_or(0);
    let mut intensity = vec![0.0; usize::try_from(segments.max(0)).unwrap_or(0)];
    if busiest == 0 {
        return intensity;
    }
    for (index, n) in totals {
        if let Some(slot) = usize::try_from(*index)
            .ok()
            .and_then(|i| intensity.get_mut(i))
        {
            *slot = (*n as f64 / busiest as f64 * 1_000.0).round() / 1_000.0;
        }
    }
    intensity
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_whole_buckets_of_whole_windows() {
        let range = ReplayRange::new(3_100, 9_000, Some(4_000), 2_000).unwrap();
        assert_eq!(
            (range.from_ms, range.to_ms, range.buckets()),
            (0, 12_000, 3)
        );
        // Three hours at the width of 1 s windows: the most one answer holds.
        let hours = ReplayRange::new(0, 3 * 3_600_000, Some(1_000), 1_000).unwrap();
        assert_eq!(hours.buckets(), MAX_BUCKETS);
        // No resolution: about a thousand buckets of whole windows.
        let chosen = ReplayRange::new(0, 3 * 3_600_000, None, 2_000).unwrap();
        assert_eq!((chosen.resolution_ms, chosen.buckets()), (12_000, 900));
        let short = ReplayRange::new(0, 60_000, None, 2_000).unwrap();
        assert_eq!(short.resolution_ms, 2_000);
        assert_eq!(
            ReplayRange::new(5, 5, None, 2_000),
            Err(RangeError::Empty {
                from_ms: 5,
                to_ms: 5
            })
        );
        assert!(matches!(
            ReplayRange::new(0, 10_000, Some(3_000), 2_000),
            Err(RangeError::NotWholeWindows { .. })
        ));
        assert!(matches!(
            ReplayRange::new(0, 10_000, Some(0), 2_000),
            Err(RangeError::NotWholeWindows { .. })
        ));
        match ReplayRange::new(0, 4 * 3_600_000, Some(1_000), 1_000) {
            Err(RangeError::TooManyBuckets { least_ms, .. }) => {
                assert_eq!(least_ms, 2_000);
                assert!(ReplayRange::new(0, 4 * 3_600_000, Some(least_ms), 1_000).is_ok());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn windows_merge_into_sparse_columnar_buckets() {
        let range = ReplayRange::new(0, 12_000, Some(4_000), 2_000).unwrap();
        let windows: [(i64, &[(&str, u64)]); 4] = [
            (0, &[("fire", 2)]),
            (2_000, &[("clap", 1), ("fire", 3)]),
            (10_000, &[("joy", 7)]),
            (12_000, &[("fire", 100)]),
        ];
        let mut builder = BucketBuilder::new(range);
        for (start, counts) in windows {
            builder.add(start, counts.iter().copied());
        }
        let buckets = builder.finish();
        assert_eq!(buckets.emojis, ["fire", "clap", "joy"]);
        assert_eq!(buckets.rows, [(0, vec![5, 1, 0]), (2, vec![0, 0, 7])]);
        let total: u64 = buckets.rows.iter().flat_map(|(_, r)| r).sum();
        assert_eq!(total, 13, "every tap of the range, none outside it");
    }

    #[test]
    fn segments_sum_the_windows_in_the_span() {
        let totals = segment_totals(
            [(0, 3), (2_000, 4), (6_000, 1), (9_000, 50)],
            0,
            8_000,
            4_000,
        );
        assert_eq!(totals, [(0, 7), (1, 1)]);
    }

    #[test]
    fn heatmap_intensities_are_shares_of_the_busiest_segment() {
        assert_eq!(heatmap_segment_ms(0, 3 * 3_600_000, 2_000), 108_000);
        assert_eq!(heatmap_segment_ms(0, 10_000, 2_000), 2_000);
        let intensity = intensities(&[(0, 10), (3, 40), (4, 13), (200, 99)], 5);
        assert_eq!(intensity, [0.25, 0.0, 0.0, 1.0, 0.325]);
        assert_eq!(intensities(&[], 3), [0.0, 0.0, 0.0]);
    }
}
