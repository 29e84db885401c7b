//! Moments: the stretches of a stream its crowd reacted to, found from the exact counts of its
//! windows as they become final. A stream keeps an online baseline of its reaction rate (an
//! exponentially weighted level that follows the rate within seconds, and the variance of the
//! rate around that level over about a minute); a window whose rate stands far above the level
//! is a spike, and a run of spikes (short gaps merged) is a moment, labelled with
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
    /// The baseline's long time constant (a window's weight is `1 - exp(-width / horizon)`):
    /// of the variance, of each emoji's mean, and of the level while the stream spikes.
    pub horizon_s: f64,
    /// The level's time constant between spikes: short, so that a spike is measured against
    /// the rate just before it. A minute-long mean lags a baseline that drifts (an audience
    /// thinning out at half-time), and the drift widens the variance around it: measured on
    /// the load generator's wandering baseline, a 3x spike at its lowest point then reached
    /// only z = 2.3 to 3.5 and was missed. A silence this long starts the stream over: the
    /// level has forgotten the rate before it, and taps resuming after a pause or an outage
    /// would otherwise stand out as a moment. Detectors stored before this field existed used
    /// the long horizon for the level (and the silence) too, and keep doing so.
    #[serde(default = "MomentRule::level_horizon_of_stored_rules")]
    pub level_horizon_s: f64,
    /// Whether a silence of the level's horizon starts the stream over, counted window by
    /// window however the silent windows come (observed after a gap, or moved on to by the
    /// tick), and the first window with taps, a stream's very first too, is then its level:
    /// starting from zero makes the variance of its first minute the square of its rate.
    /// Detectors stored before started from zero and started over only after a minute seen
    /// as one gap, and keep doing so, so an older aggregate and this one make the same moments
    /// from the same detector during a deployment.
    #[serde(default)]
    pub restarts_after_silence: bool,
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
    /// on noise; spikes enter the baseline at a tenth of the (long horizon's) weight. The level
    /// follows the rate over 10 s and the variance is taken around it (see
    /// [`MomentRule::level_horizon_s`]). The least rate is 30 taps
    /// a second rather than the 20: fair use lets one viewer count 40 taps per 2 s
    /// window, 20 a second, and one viewer alone is no crowd reacting.
    pub const DEFAULT: Self = Self {
        horizon_s: 60.0,
        level_horizon_s: 10.0,
        restarts_after_silence: true,
        z_at_least: 4.0,
        rate_at_least: 30.0,
        ratio_at_least: 2.0,
        spike_weight: 0.1,
        warm_up_s: 20.0,
        merge_gap_s: 5.0,
        pad_before_s: 10.0,
        pad_after_s: 5.0,
    };

    fn level_horizon_of_stored_rules() -> f64 {
        60.0
    }

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

/// A stream's baseline: the exponentially weighted level of its rate and the variance around
/// it, and per emoji the mean rate (to tell which rose).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Baseline {
    /// The level (see [`MomentRule::level_horizon_s`]).
    mean: f64,
    variance: f64,
    emoji_means: BTreeMap<String, f64>,
    seen_s: f64,
    /// Seconds of silent windows since the last taps (see
    /// [`MomentRule::restarts_after_silence`]).
    #[serde(default)]
    silent_s: f64,
}

impl Baseline {
    /// Takes a window's rates. A spike moves the level only, at a tenth of the long
    /// horizon's weight: were its distance from the level taken into the variance, or the level
    /// to follow it as fast as it follows the baseline, a celebration would become the baseline
    /// and end as a moment while it lasts. A stream's first window is its level where the
    /// rule says so ([`MomentRule::restarts_after_silence`]).
    fn feed(
        &mut self,
        rule: &MomentRule,
        spike: bool,
        rate: f64,
        emoji_rates: &BTreeMap<String, f64>,
        width_s: f64,
    ) {
        if rule.restarts_after_silence && self.seen_s == 0.0 {
            self.mean = rate;
            self.variance = 0.0;
            self.emoji_means = emoji_rates.clone();
            self.emoji_means.retain(|_, mean| *mean > 1e-6);
            self.seen_s = width_s;
            return;
        }
        let long = 1.0 - (-width_s / rule.horizon_s).exp();
        let (weight, level_weight) = match spike {
            true => (long * rule.spike_weight, long * rule.spike_weight),
            false => (long, 1.0 - (-width_s / rule.level_horizon_s).exp()),
        };
        let difference = rate - self.mean;
        self.mean += level_weight * difference;
        if !spike {
            self.variance = (1.0 - weight) * (self.variance + weight * difference * difference);
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
    /// after a silence as long as the level's horizon the stream starts over (see
    /// [`MomentRule::restarts_after_silence`]).
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

    /// Feeds the silent windows from the next expected one up to `start_ms`, the stream starting
    /// over after a silence as long as the level's horizon.
    fn silence_until(&mut self, start_ms: i64, width_ms: i64) -> Vec<Moment> {
        let mut changed = Vec::new();
        let Some(next) = self.next_start_ms else {
            return changed;
        };
        let missing = (start_ms - next) / width_ms;
        if self.rule.restarts_after_silence {
            // Window by window, so a silence split by the tick counts as one; once the stream
            // starts over, more silence changes nothing.
            for i in 0..missing {
                if self.baseline.seen_s == 0.0 {
                    break;
                }
                changed.extend(self.take(next + i * width_ms, width_ms, &BTreeMap::new()));
            }
            return changed;
        }
        // Silent for a whole horizon (as one gap): the stream starts over, its first taps a
        // baseline again, not a moment.
        if (missing * width_ms) as f64 >= self.rule.horizon_s * 1_000.0 {
            changed.extend(self.start_over());
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
        if self.rule.restarts_after_silence {
            if rate > 0.0 {
                self.baseline.silent_s = 0.0;
            } else if self.baseline.seen_s == 0.0 {
                // A baseline starting (over) takes no silence: its first taps are its level.
                return None;
            } else {
                self.baseline.silent_s += width_s;
                if self.baseline.silent_s >= self.rule.level_horizon_s {
                    return self.start_over();
                }
            }
        }
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
        self.baseline
            .feed(&self.rule, spike, rate, &emoji_rates, width_s);
        changed
    }

    /// Starts the stream over after a silence: ends its open moment, if any, and forgets its
    /// baseline.
    fn start_over(&mut self) -> Option<Moment> {
        let ended = self.close();
        self.baseline = Baseline::default();
        ended
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
mod tests;
