//! Moments: the stretches of a stream its crowd reacted to, found from the exact counts of its
//! windows as they become final. A stream keeps an online baseline of its reaction rate (an
//! exponentially weighted mean and variance over about a minute); a window whose rate stands
//! far above it is a spike, and a run of spikes (short gaps merged) is a moment, labelled with
//! the emoji that rose most and padded so that a clip starts before the crowd did.
//!
//! Everything here is a function of the sequence of window counts: fed the same final windows,
//! any container computes the same moments, so a redelivery or a second container cannot make
//! a second one. The detector's state is plain data, to be stored beside the stream between
//! windows.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The rule's parameters (see [`MomentRule::DEFAULT`] for why each value).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MomentRule {
    /// The baseline's time constant: a window's weight is `1 - exp(-width / horizon)`.
    pub horizon_s: f64,
    /// How many standard deviations above the mean a spike is.
    pub z_at_least: f64,
    /// The least rate (taps per second) a spike has: a handful of viewers never make one.
    pub rate_at_least: f64,
    /// How many times the mean a spike's rate is at least.
    pub ratio_at_least: f64,
    /// The weight a spike window is fed back into the baseline with, relative to a quiet
    /// one: a long celebration does not become the new normal.
    pub spike_weight: f64,
    /// Seconds of baseline seen before anything is called a spike: a stream's first taps are
    /// its baseline, not a moment.
    pub warm_up_s: f64,
    /// Spikes this close (seconds between one's end and the next's start) are one moment.
    pub merge_gap_s: f64,
    /// How much a moment starts before its first spike, and ends after its last.
    pub pad_before_s: f64,
    pub pad_after_s: f64,
}

impl MomentRule {
    /// The recommended rule. `z = (x − μ) / √(max(σ², μ) + 1)` treats counts as at
    /// least Poisson-noisy (variance no smaller than the mean), so a quiet stream going from 0
    /// to 3 taps a second is not 3σ; twice the mean keeps a slowly rising stream from firing
    /// on noise; spikes enter the baseline at a tenth of the weight. The least rate is 30 taps
    /// a second rather than the 20: fair use lets one viewer count 40 taps per 2 s
    /// window, 20 a second, and one viewer alone is no crowd reacting.
    pub const DEFAULT: Self = Self {
        horizon_s: 60.0,
        z_at_least: 4.0,
        rate_at_least: 30.0,
        ratio_at_least: 2.0,
        spike_weight: 0.1,
        warm_up_s: 20.0,
        merge_gap_s: 5.0,
        pad_before_s: 10.0,
        pad_after_s: 5.0,
    };

    /// The z-score of a rate `x` against a baseline.
    pub fn z(mean: f64, variance: f64, x: f64) -> f64 {
        (x - mean) / (variance.max(mean) + 1.0).sqrt()
    }

    fn is_spike(&self, baseline: &Baseline, rate: f64) -> bool {
        baseline.seen_s >= self.warm_up_s
            && rate >= self.rate_at_least
            && rate >= self.ratio_at_least * baseline.mean
            && Self::z(baseline.mean, baseline.variance, rate) >= self.z_at_least
    }
}

/// A moment: what viewers and clips see.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Moment {
    /// The first spike window's start: with the stream, the moment's identity.
    pub detected_from_ms: i64,
    /// The span to show or clip: the spikes, padded.
    pub start_ms: i64,
    pub end_ms: i64,
    /// The highest rate of its windows (taps per second).
    pub peak_rate: f64,
    /// The emoji whose taps rose most above their baseline over the moment.
    pub emoji: String,
    /// Whether the moment is over (no spike for longer than the merge gap).
    pub ended: bool,
}

/// Where a moment stands. A window still being counted can show a moment early
/// (`provisional`, see [`MomentDetector::provisional`]); the final windows confirm it, or
/// make another moment in its place and withdraw it. Clients keep, per moment, the change with
/// the highest revision, and drop a withdrawn one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MomentStatus {
    Provisional,
    Confirmed,
    Withdrawn,
}

impl MomentStatus {
    /// The stored and published name.
    pub fn as_str(self) -> &'static str {
        match self {
            MomentStatus::Provisional => "provisional",
            MomentStatus::Confirmed => "confirmed",
            MomentStatus::Withdrawn => "withdrawn",
        }
    }

    /// Reads a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "provisional" => Some(MomentStatus::Provisional),
            "confirmed" => Some(MomentStatus::Confirmed),
            "withdrawn" => Some(MomentStatus::Withdrawn),
            _ => None,
        }
    }
}

/// A stream's baseline: exponentially weighted mean and variance of its rate, and per emoji
/// the mean rate (to tell which rose).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Baseline {
    mean: f64,
    variance: f64,
    emoji_means: BTreeMap<String, f64>,
    seen_s: f64,
}

impl Baseline {
    /// Takes a window's rates with `weight`. A spike moves the mean only (at its reduced
    /// weight): were its distance from the mean taken into the variance, a celebration would
    /// widen the baseline until it no longer stood out, and end as a moment while it lasts.
    fn feed(
        &mut self,
        weight: f64,
        spike: bool,
        rate: f64,
        emoji_rates: &BTreeMap<String, f64>,
        width_s: f64,
    ) {
        let difference = rate - self.mean;
        let step = weight * difference;
        self.mean += step;
        if !spike {
            self.variance = (1.0 - weight) * (self.variance + difference * step);
        }
        for mean in self.emoji_means.values_mut() {
            *mean *= 1.0 - weight;
        }
        for (emoji, rate) in emoji_rates {
            *self.emoji_means.entry(emoji.clone()).or_insert(0.0) += weight * rate;
        }
        // Emojis whose mean has decayed to nothing are forgotten, so the map stays small.
        self.emoji_means.retain(|_, mean| *mean > 1e-6);
        self.seen_s += width_s;
    }
}

/// The moment being built: its spikes so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct OpenMoment {
    first_spike_ms: i64,
    last_spike_end_ms: i64,
    peak_rate: f64,
    /// Per emoji, taps above its baseline summed over the spikes.
    rise: BTreeMap<String, f64>,
}

/// The detector of one stream. Feed it the stream's windows in order of start, each once,
/// with [`MomentDetector::observe`]; persist it between windows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MomentDetector {
    rule: MomentRule,
    baseline: Baseline,
    open: Option<OpenMoment>,
    /// The end of the last window observed: the next window starts there or later.
    next_start_ms: Option<i64>,
}

impl MomentDetector {
    pub fn new(rule: MomentRule) -> Self {
        Self {
            rule,
            baseline: Baseline::default(),
            open: None,
            next_start_ms: None,
        }
    }

    /// Where the next window must start, at or after (`None` before the first).
    pub fn next_start_ms(&self) -> Option<i64> {
        self.next_start_ms
    }

    /// Takes the window `[start_ms, start_ms + width_ms)` with `counts` taps per emoji. A
    /// window starting before the last one's end was seen already and changes nothing
    /// (returns nothing). Windows skipped since (no taps stored for them) count as silent;
    /// after a silence as long as the baseline's horizon the stream starts over.
    /// Returns the moments this window started, grew or ended, oldest first.
    pub fn observe(
        &mut self,
        start_ms: i64,
        width_ms: i64,
        counts: &BTreeMap<String, u64>,
    ) -> Vec<Moment> {
        if width_ms <= 0 || self.next_start_ms.is_some_and(|next| start_ms < next) {
            return Vec::new();
        }
        let mut changed = self.silence_until(start_ms, width_ms);
        changed.extend(self.take(start_ms, width_ms, counts));
        self.next_start_ms = Some(start_ms + width_ms);
        latest_of_each(changed)
    }

    /// Whether a window still being counted already stands out as a moment's start: its taps
    /// so far (`counts`, which only grow) make a spike against the baseline as it stands, and
    /// no moment is open. Viewers then see the moment within a window of its
    /// start, without waiting for the window to be final; the moment the final windows make
    /// (from [`MomentDetector::observe`]) confirms it or replaces it. Returns the provisional
    /// moment, its first spike this window.
    pub fn provisional(
        &self,
        start_ms: i64,
        width_ms: i64,
        counts: &BTreeMap<String, u64>,
    ) -> Option<Moment> {
        // While a moment is open nothing new is proposed: the detector lags the live windows
        // by the allowed lateness, more than the merge gap, so a window of a celebration going
        // on would otherwise look like a new moment (proposed, then withdrawn, every few
        // seconds for as long as it lasts).
        if width_ms <= 0
            || self.open.is_some()
            || self.next_start_ms.is_none_or(|next| start_ms < next)
        {
            return None;
        }
        let width_s = width_ms as f64 / 1_000.0;
        let rate = counts.values().sum::<u64>() as f64 / width_s;
        if !self.rule.is_spike(&self.baseline, rate) {
            return None;
        }
        let mut open = OpenMoment {
            first_spike_ms: start_ms,
            last_spike_end_ms: start_ms + width_ms,
            peak_rate: rate,
            rise: BTreeMap::new(),
        };
        for (emoji, n) in counts {
            let usual = self.baseline.emoji_means.get(emoji).copied().unwrap_or(0.0);
            open.rise.insert(emoji.clone(), *n as f64 - usual * width_s);
        }
        Some(moment_of(&open, &self.rule, false))
    }

    /// Whether a moment is open (its stream has spiked within the merge gap of the last
    /// window observed): such a stream's detector must be moved on through silent windows
    /// ([`MomentDetector::advance_to`]) for its moment to end.
    pub fn has_open_moment(&self) -> bool {
        self.open.is_some()
    }

    /// Takes every window ending by `end_ms` that was not observed as silent: they are final
    /// with no taps, so a moment whose stream went quiet ends without waiting for a window
    /// with taps. Returns the moments that changed, as [`MomentDetector::observe`].
    pub fn advance_to(&mut self, end_ms: i64, width_ms: i64) -> Vec<Moment> {
        let Some(next) = self.next_start_ms else {
            return Vec::new();
        };
        if width_ms <= 0 || end_ms < next + width_ms {
            return Vec::new();
        }
        let until = next + (end_ms - next) / width_ms * width_ms;
        let changed = self.silence_until(until, width_ms);
        self.next_start_ms = Some(until);
        latest_of_each(changed)
    }

    /// Feeds the silent windows from the next expected one up to `start_ms` (after a silence as
    /// long as the horizon, starts the stream over instead).
    fn silence_until(&mut self, start_ms: i64, width_ms: i64) -> Vec<Moment> {
        let mut changed = Vec::new();
        let Some(next) = self.next_start_ms else {
            return changed;
        };
        let missing = (start_ms - next) / width_ms;
        // Silent for a whole horizon: the stream starts over, its first taps a baseline again,
        // not a moment.
        if (missing * width_ms) as f64 >= self.rule.horizon_s * 1_000.0 {
            changed.extend(self.close());
            self.baseline = Baseline::default();
        } else {
            for i in 0..missing {
                changed.extend(self.take(next + i * width_ms, width_ms, &BTreeMap::new()));
            }
        }
        changed
    }
}

/// One change per moment: the latest.
fn latest_of_each(changed: Vec<Moment>) -> Vec<Moment> {
    let mut latest: Vec<Moment> = Vec::new();
    for moment in changed {
        match latest
            .iter_mut()
            .find(|m| m.detected_from_ms == moment.detected_from_ms)
        {
            Some(known) => *known = moment,
            None => latest.push(moment),
        }
    }
    latest
}

impl MomentDetector {
    fn take(
        &mut self,
        start_ms: i64,
        width_ms: i64,
        counts: &BTreeMap<String, u64>,
    ) -> Option<Moment> {
        let width_s = width_ms as f64 / 1_000.0;
        let emoji_rates: BTreeMap<String, f64> = counts
            .iter()
            .map(|(emoji, n)| (emoji.clone(), *n as f64 / width_s))
            .collect();
        let rate: f64 = emoji_rates.values().sum();
        let weight = 1.0 - (-width_s / self.rule.horizon_s).exp();
        let spike = self.rule.is_spike(&self.baseline, rate);
        let changed = if spike {
            let baseline = &self.baseline;
            let open = self.open.get_or_insert_with(|| OpenMoment {
                first_spike_ms: start_ms,
                last_spike_end_ms: start_ms + width_ms,
                peak_rate: 0.0,
                rise: BTreeMap::new(),
            });
            open.last_spike_end_ms = start_ms + width_ms;
            open.peak_rate = open.peak_rate.max(rate);
            for (emoji, rate) in &emoji_rates {
                let usual = baseline.emoji_means.get(emoji).copied().unwrap_or(0.0);
                *open.rise.entry(emoji.clone()).or_insert(0.0) += (rate - usual) * width_s;
            }
            Some(moment_of(open, &self.rule, false))
        } else {
            let gap_ms = (self.rule.merge_gap_s * 1_000.0) as i64;
            match &self.open {
                Some(open) if start_ms + width_ms - open.last_spike_end_ms > gap_ms => self.close(),
                _ => None,
            }
        };
        let weight = match spike {
            true => weight * self.rule.spike_weight,
            false => weight,
        };
        self.baseline
            .feed(weight, spike, rate, &emoji_rates, width_s);
        changed
    }

    /// Ends the open moment, if any.
    fn close(&mut self) -> Option<Moment> {
        self.open
            .take()
            .map(|open| moment_of(&open, &self.rule, true))
    }
}

fn moment_of(open: &OpenMoment, rule: &MomentRule, ended: bool) -> Moment {
    let emoji = open
        .rise
        .iter()
        .max_by(|a, b| a.1.total_cmp(b.1).then_with(|| b.0.cmp(a.0)))
        .map(|(emoji, _)| emoji.clone())
        .unwrap_or_default();
    Moment {
        detected_from_ms: open.first_spike_ms,
        start_ms: open.first_spike_ms - (rule.pad_before_s * 1_000.0) as i64,
        end_ms: open.last_spike_end_ms + (rule.pad_after_s * 1_000.0) as i64,
        peak_rate: open.peak_rate,
        emoji,
        ended,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const WIDTH: i64 = 2_000;

    fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs.iter().map(|(e, n)| ((*e).to_owned(), *n)).collect()
    }

    /// A deterministic noisy rate around `mean` taps per second (a small LCG; roughly
    /// Poisson-wide: ± 2√mean).
    struct Noise(u64);
    impl Noise {
        fn around(&mut self, mean: f64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let unit = (self.0 >> 11) as f64 / (1u64 << 53) as f64;
            let spread = 2.0 * mean.sqrt();
            let rate = (mean + (unit * 2.0 - 1.0) * spread).max(0.0);
            (rate * WIDTH as f64 / 1_000.0).round() as u64
        }
    }

    /// Feeds `windows` (taps per emoji of each window, from time 0) and returns every change.
    fn run(windows: &[BTreeMap<String, u64>]) -> Vec<Moment> {
        let mut detector = MomentDetector::new(MomentRule::DEFAULT);
        windows
            .iter()
            .enumerate()
            .flat_map(|(i, c)| detector.observe(i as i64 * WIDTH, WIDTH, c))
            .collect()
    }

    fn ended(changes: &[Moment]) -> Vec<Moment> {
        changes.iter().filter(|m| m.ended).cloned().collect()
    }

    #[test]
    fn a_quiet_stream_going_from_nothing_to_a_few_taps_is_no_moment() {
        let mut windows = vec![counts(&[]); 30];
        windows.extend(vec![counts(&[("fire", 6)]); 10]);
        assert!(run(&windows).is_empty());
    }

    #[test]
    fn a_spike_three_times_the_baseline_is_one_moment_labelled_by_the_emoji_that_rose() {
        let mut noise = Noise(7);
        let mut windows: Vec<_> = (0..60)
            .map(|_| counts(&[("clap", noise.around(30.0)), ("fire", noise.around(10.0))]))
            .collect();
        // 6 s at three times the rate, the rise all fire.
        for _ in 0..3 {
            windows.push(counts(&[
                ("clap", noise.around(30.0)),
                ("fire", noise.around(90.0)),
            ]));
        }
        windows.extend(
            (0..20).map(|_| counts(&[("clap", noise.around(30.0)), ("fire", noise.around(10.0))])),
        );
        let changes = run(&windows);
        let first = changes.first().expect("a moment");
        assert_eq!(
            first.detected_from_ms,
            60 * WIDTH,
            "found in the spike's first window"
        );
        assert!(!first.ended);
        let moments = ended(&changes);
        assert_eq!(moments.len(), 1, "{changes:?}");
        let moment = &moments[0];
        assert_eq!(moment.emoji, "fire");
        assert_eq!(moment.start_ms, 60 * WIDTH - 10_000);
        assert_eq!(moment.end_ms, 63 * WIDTH + 5_000);
        assert!(moment.peak_rate >= 100.0);
    }

    #[test]
    fn spikes_close_together_are_one_moment_and_apart_two() {
        let base = || counts(&[("clap", 40)]);
        let spike = || counts(&[("wow", 400)]);
        let mut windows = vec![base(); 30];
        // Two spikes 4 s apart (two quiet windows), then one 12 s later.
        windows.extend([spike(), base(), base(), spike()]);
        windows.extend(vec![base(); 6]);
        windows.push(spike());
        windows.extend(vec![base(); 10]);
        let moments = ended(&run(&windows));
        assert_eq!(moments.len(), 2, "{moments:?}");
        assert_eq!(moments[0].detected_from_ms, 30 * WIDTH);
        assert_eq!(moments[0].end_ms, 34 * WIDTH + 5_000);
        assert_eq!(moments[1].detected_from_ms, 40 * WIDTH);
    }

    #[test]
    fn a_long_celebration_stays_one_moment_and_does_not_become_the_baseline() {
        let mut noise = Noise(3);
        let mut windows: Vec<_> = (0..40)
            .map(|_| counts(&[("clap", noise.around(25.0))]))
            .collect();
        windows.extend((0..60).map(|_| counts(&[("party", noise.around(150.0))])));
        windows.extend((0..30).map(|_| counts(&[("clap", noise.around(25.0))])));
        // The same spike again after the celebration: still a moment of its own.
        windows.extend((0..3).map(|_| counts(&[("party", noise.around(150.0))])));
        windows.extend((0..10).map(|_| counts(&[("clap", noise.around(25.0))])));
        let moments = ended(&run(&windows));
        assert_eq!(moments.len(), 2, "{moments:?}");
        assert_eq!(moments[0].detected_from_ms, 40 * WIDTH);
        assert_eq!(
            moments[0].end_ms,
            100 * WIDTH + 5_000,
            "two minutes, one moment"
        );
        assert_eq!(moments[1].detected_from_ms, 130 * WIDTH);
    }

    #[test]
    fn a_stream_does_not_start_with_a_moment_and_gaps_are_silence() {
        // Busy from its first window: that is its baseline.
        let windows = vec![counts(&[("clap", 200)]); 20];
        assert!(run(&windows).is_empty());

        // Missing windows are silent ones; a window seen before changes nothing.
        let mut detector = MomentDetector::new(MomentRule::DEFAULT);
        for i in 0..20 {
            assert!(
                detector
                    .observe(i * WIDTH, WIDTH, &counts(&[("clap", 40)]))
                    .is_empty()
            );
        }
        let before = detector.clone();
        assert!(
            detector
                .observe(5 * WIDTH, WIDTH, &counts(&[("clap", 4_000)]))
                .is_empty()
        );
        assert_eq!(detector, before, "an old window is ignored");
        // A pause shorter than the horizon is silence: taps at the old rate after it are no
        // moment. Ten minutes later, a stream that had gone quiet starts over.
        let soon = 20 * WIDTH + 20_000;
        assert!(
            detector
                .observe(soon, WIDTH, &counts(&[("clap", 40)]))
                .is_empty()
        );
        let later = soon + WIDTH + 600_000;
        assert!(
            detector
                .observe(later, WIDTH, &counts(&[("clap", 40)]))
                .is_empty()
        );
        assert_eq!(detector.next_start_ms(), Some(later + WIDTH));
    }

    #[test]
    fn one_viewer_at_the_fair_use_limit_is_no_moment() {
        let mut windows = vec![counts(&[("clap", 2)]); 30];
        windows.extend(vec![counts(&[("fire", 40)]); 10]);
        assert!(run(&windows).is_empty());
    }

    #[test]
    fn a_moment_ends_when_its_stream_goes_quiet_without_another_tap() {
        let mut detector = MomentDetector::new(MomentRule::DEFAULT);
        for i in 0..30 {
            detector.observe(i * WIDTH, WIDTH, &counts(&[("clap", 60)]));
        }
        let started = detector.observe(30 * WIDTH, WIDTH, &counts(&[("wow", 600)]));
        assert_eq!(started.len(), 1);
        assert!(!started[0].ended);
        // Final and empty up to 4 s after the spike: within the merge gap, still open.
        assert!(detector.advance_to(33 * WIDTH, WIDTH).is_empty());
        let ended = detector.advance_to(34 * WIDTH + 1_000, WIDTH);
        assert_eq!(ended.len(), 1, "{ended:?}");
        assert!(ended[0].ended);
        assert_eq!(ended[0].end_ms, 31 * WIDTH + 5_000);
        assert_eq!(detector.next_start_ms(), Some(34 * WIDTH));
        // Windows already taken as silent are not taken again.
        assert!(
            detector
                .observe(32 * WIDTH, WIDTH, &counts(&[("wow", 600)]))
                .is_empty()
        );
    }

    #[test]
    fn a_window_still_counting_is_a_provisional_moment_once_its_taps_so_far_are_a_spike() {
        let base = || counts(&[("clap", 60)]);
        let mut detector = MomentDetector::new(MomentRule::DEFAULT);
        for i in 0..30 {
            assert!(detector.observe(i * WIDTH, WIDTH, &base()).is_empty());
        }
        let live = 30 * WIDTH;
        // Nothing before the detector's next window, nor while the taps so far are ordinary.
        assert_eq!(
            detector.provisional(29 * WIDTH, WIDTH, &counts(&[("wow", 900)])),
            None
        );
        assert_eq!(
            detector.provisional(live, WIDTH, &counts(&[("clap", 70)])),
            None
        );
        // Part of the window's taps in, already far above: the moment the final window makes.
        let so_far = counts(&[("clap", 30), ("wow", 200)]);
        let provisional = detector.provisional(live, WIDTH, &so_far).expect("a spike");
        let confirmed = detector.observe(live, WIDTH, &counts(&[("clap", 60), ("wow", 500)]));
        assert_eq!(confirmed.len(), 1);
        assert_eq!(provisional.detected_from_ms, confirmed[0].detected_from_ms);
        assert_eq!(
            (provisional.emoji.as_str(), provisional.start_ms),
            ("wow", confirmed[0].start_ms)
        );
        assert!(detector.has_open_moment());
        // While the moment is open, no window proposes another, near or far (the detector
        // lags the live windows by more than the merge gap).
        for later in [live + 2 * WIDTH, live + 6 * WIDTH] {
            let spike = counts(&[("wow", 500)]);
            assert_eq!(detector.provisional(later, WIDTH, &spike), None);
        }
        // A detector that saw no window yet has no baseline to stand out from.
        let fresh = MomentDetector::new(MomentRule::DEFAULT);
        assert_eq!(
            fresh.provisional(live, WIDTH, &counts(&[("wow", 5_000)])),
            None
        );
    }

    #[test]
    fn a_flat_noisy_hour_has_no_moment() {
        for seed in 1..=5 {
            let mut noise = Noise(seed);
            for mean in [5.0, 50.0, 500.0] {
                let windows: Vec<_> = (0..1_800)
                    .map(|_| counts(&[("clap", noise.around(mean))]))
                    .collect();
                assert!(run(&windows).is_empty(), "seed {seed}, {mean}/s");
            }
        }
    }

    proptest! {
        /// The same windows give the same moments, whether one detector sees them all or the
        /// work is handed over (the state stored and read back) at any window, and whatever
        /// windows are delivered again.
        #[test]
        fn moments_depend_only_on_the_windows(
            rates in proptest::collection::vec(0u64..600, 1..120),
            hand_over in 0usize..120,
            repeat in proptest::collection::vec(0usize..120, 0..10),
        ) {
            let windows: Vec<_> = rates.iter().map(|n| counts(&[("clap", *n)])).collect();
            let whole = run(&windows);
            let mut detector = MomentDetector::new(MomentRule::DEFAULT);
            let mut changes = Vec::new();
            for (i, window) in windows.iter().enumerate() {
                if i == hand_over {
                    let stored = serde_json::to_value(&detector).unwrap();
                    detector = serde_json::from_value(stored).unwrap();
                }
                changes.extend(detector.observe(i as i64 * WIDTH, WIDTH, window));
                for &again in repeat.iter().filter(|&&r| r <= i) {
                    changes.extend(detector.observe(again as i64 * WIDTH, WIDTH, &windows[again]));
                }
            }
            prop_assert_eq!(changes, whole);
        }
    }
}
