//! The notify trigger's lag over a run: how many records of the output topic notify's event
//! source mapping is behind (each partition's high watermark less the next offset it will
//! deliver, the figure AWS graphs as the mapping's `OffsetLag`), sampled once a second from the
//! local stack the run started. A lag that keeps growing over a run of several minutes means
//! notify does not keep up with what aggregate publishes; the largest lag in the first and in
//! the last minute tell at a glance.

use serde::Serialize;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::{Instant, MissedTickBehavior};

/// The template's logical id of the function whose trigger is watched.
pub const NOTIFY_FUNCTION: &str = "NotifyFunction";

/// How far the trigger was behind at one second of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LagSample {
    /// Seconds since the run began: the origin of `latency_over_time`'s seconds (to within
    /// milliseconds), so listener connects and the warm-up come first, then the measured part,
    /// then the settling.
    pub second: u64,
    /// Records behind, over the trigger's partitions.
    pub records: u64,
}

/// Samples a lag once a second on a task of its own until [`LagSampler::finish`].
pub struct LagSampler {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Vec<LagSample>>,
}

impl LagSampler {
    /// Starts sampling `records_behind`: now (second 0), then every second.
    pub fn start(records_behind: impl Fn() -> u64 + Send + 'static) -> Self {
        Self::every(Duration::from_secs(1), records_behind)
    }

    fn every(period: Duration, records_behind: impl Fn() -> u64 + Send + 'static) -> Self {
        let (stop, mut stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let began = Instant::now();
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            let mut samples = Vec::new();
            loop {
                tokio::select! {
                    _ = ticks.tick() => samples.push(LagSample {
                        second: began.elapsed().as_secs(),
                        records: records_behind(),
                    }),
                    _ = &mut stopped => break,
                }
            }
            samples
        });
        Self { stop, task }
    }

    /// Stops sampling and returns the samples, oldest first.
    pub async fn finish(self) -> Vec<LagSample> {
        self.stop.send(()).ok();
        self.task.await.unwrap_or_default()
    }
}

/// The largest lag in the first minute of the samples and in the last (the two overlap in a
/// run shorter than two minutes). None without samples.
pub fn first_and_last_minute(samples: &[LagSample]) -> Option<(u64, u64)> {
    let first = samples.first()?.second;
    let last = samples.last()?.second;
    let largest = |from: u64, to: u64| {
        samples
            .iter()
            .filter(|s| (from..=to).contains(&s.second))
            .map(|s| s.records)
            .max()
            .unwrap_or(0)
    };
    Some((
        largest(first, first + 59),
        largest(last.saturating_sub(59), last),
    ))
}

/// The summary's line for the samples.
pub fn summary(samples: &[LagSample]) -> String {
    let Some((first, last)) = first_and_last_minute(samples) else {
        return "not sampled (the stack has no notify trigger)".to_owned();
    };
    let largest = samples.iter().map(|s| s.records).max().unwrap_or(0);
    format!(
        "largest {first} records behind in the first minute, {last} in the last; {largest} at most over {} samples, one a second",
        samples.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(records: impl IntoIterator<Item = u64>) -> Vec<LagSample> {
        records
            .into_iter()
            .enumerate()
            .map(|(second, records)| LagSample {
                second: second as u64,
                records,
            })
            .collect()
    }

    #[test]
    fn the_first_and_last_minutes_are_told_apart() {
        // Three minutes: a burst at second 30, growth at the end.
        let run = samples((0..180).map(|s| match s {
            30 => 500,
            170.. => s - 160,
            _ => 3,
        }));
        assert_eq!(first_and_last_minute(&run), Some((500, 19)));
        // A short run: both minutes are the whole run.
        assert_eq!(first_and_last_minute(&samples([1, 7, 2])), Some((7, 7)));
        assert_eq!(first_and_last_minute(&[]), None);
        let line = summary(&run);
        assert!(
            line.starts_with("largest 500 records behind in the first minute, 19 in the last"),
            "{line}"
        );
        assert!(line.contains("180 samples"), "{line}");
    }

    #[tokio::test]
    async fn the_sampler_reads_at_once_and_then_every_period_until_finished() {
        let reads = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let reader = std::sync::Arc::clone(&reads);
        let sampler = LagSampler::every(Duration::from_millis(10), move || {
            reader.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let taken = sampler.finish().await;
        assert!(taken.len() >= 3, "{taken:?}");
        let records: Vec<u64> = taken.iter().map(|s| s.records).collect();
        assert_eq!(records, (0..taken.len() as u64).collect::<Vec<_>>());
        assert!(taken.iter().all(|s| s.second == 0), "{taken:?}");
        // Finished: no more reads.
        let after = reads.load(std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(reads.load(std::sync::atomic::Ordering::Relaxed), after);
    }
}
