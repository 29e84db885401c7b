//! Load profiles: the target reaction rate at each moment of a run. `steady` holds the rate,
//! `ramp` climbs from a tenth of it to all of it, and `spike` is a live match: the rate, then a
//! wicket at 40 % of the run sends it to four times for five seconds, decaying back over five.
//! `spikes` is what moment detection is measured against: a baseline that wanders ±25 % over
//! four minutes and jitters ±15 % from second to second, with a scripted spike every 90 s from
//! the first minute on, 10 s long, of 3, 4, 6 or 10 times the baseline, and between them bumps
//! of 1.5 times that must not be taken for moments (see [`ScriptedSpike`]). `noisy` is the same
//! baseline without spikes or bumps: what false moments are counted on.

use std::str::FromStr;
use std::time::Duration;

/// The shape of the rate over a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Steady,
    Ramp,
    Spike,
    Spikes,
    Noisy,
}

/// A change of rate the `spikes` profile scripts, in seconds from the start of the measured
/// run: a spike (`factor` ≥ 3, to be found as a moment) or a bump (1.5, not to be).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScriptedSpike {
    pub start_s: f64,
    pub end_s: f64,
    pub factor: f64,
}

/// How long each scripted spike or bump lasts.
pub const SPIKE_S: f64 = 10.0;
/// The first scripted spike (past the detector's warm-up and a minute of baseline), and the
/// time between one and the next spike; a bump lies halfway between two spikes.
const FIRST_SPIKE_S: f64 = 60.0;
const SPIKE_EVERY_S: f64 = 90.0;
const SPIKE_FACTORS: [f64; 4] = [3.0, 4.0, 6.0, 10.0];
const BUMP_FACTOR: f64 = 1.5;

impl FromStr for Profile {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "steady" => Ok(Self::Steady),
            "ramp" => Ok(Self::Ramp),
            "spike" => Ok(Self::Spike),
            "spikes" => Ok(Self::Spikes),
            "noisy" => Ok(Self::Noisy),
            other => Err(format!(
                "unknown profile {other:?}: use steady, ramp, spike, spikes or noisy"
            )),
        }
    }
}

impl Profile {
    /// The highest rate of a run as a multiple of its nominal rate (a spike's 4x).
    pub fn peak_factor(self) -> f64 {
        match self {
            Profile::Steady | Profile::Ramp => 1.0,
            Profile::Spike => 4.0,
            // The largest spike on the highest point of the wander and jitter.
            Profile::Spikes => 10.0 * 1.25 * 1.15,
            Profile::Noisy => 1.25 * 1.15,
        }
    }

    /// The spikes and bumps `spikes` scripts over a run of `duration` (none for the others).
    pub fn scripted(self, duration: Duration) -> Vec<ScriptedSpike> {
        if self != Profile::Spikes {
            return Vec::new();
        }
        let total = duration.as_secs_f64();
        let mut changes = Vec::new();
        let mut k = 0;
        loop {
            let start_s = FIRST_SPIKE_S + k as f64 * SPIKE_EVERY_S;
            if start_s + SPIKE_S > total {
                break;
            }
            changes.push(ScriptedSpike {
                start_s,
                end_s: start_s + SPIKE_S,
                factor: SPIKE_FACTORS[k % SPIKE_FACTORS.len()],
            });
            let bump_s = start_s + SPIKE_EVERY_S / 2.0;
            if bump_s + SPIKE_S <= total {
                changes.push(ScriptedSpike {
                    start_s: bump_s,
                    end_s: bump_s + SPIKE_S,
                    factor: BUMP_FACTOR,
                });
            }
            k += 1;
        }
        changes
    }

    /// Reactions per second wanted at `elapsed` into a run of `duration` at nominal `rate`.
    pub fn rate_at(self, rate: f64, elapsed: Duration, duration: Duration) -> f64 {
        let t = elapsed.as_secs_f64();
        let total = duration.as_secs_f64().max(f64::EPSILON);
        match self {
            Profile::Steady => rate,
            Profile::Ramp => rate * (0.1 + 0.9 * (t / total).min(1.0)),
            Profile::Spikes | Profile::Noisy => {
                let wander = 1.0 + 0.25 * (std::f64::consts::TAU * t / 240.0).sin();
                let factor = self
                    .scripted(duration)
                    .iter()
                    .find(|s| (s.start_s..s.end_s).contains(&t))
                    .map_or(1.0, |s| s.factor);
                rate * wander * jitter(t.floor() as u64) * factor
            }
            Profile::Spike => {
                let wicket = 0.4 * total;
                if t < wicket {
                    rate
                } else if t < wicket + 5.0 {
                    rate * 4.0
                } else if t < wicket + 10.0 {
                    rate * (4.0 - 3.0 * (t - wicket - 5.0) / 5.0)
                } else {
                    rate
                }
            }
        }
    }
}

/// A factor of 0.85 to 1.15 for second `second` of a run, the same in every run (a small
/// integer hash, not a random number generator: the scripted run is repeatable).
fn jitter(second: u64) -> f64 {
    let mut x = second.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x2545_F491_4F6C_DD1D;
    x ^= x >> 29;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 32;
    let unit = (x >> 11) as f64 / (1u64 << 53) as f64;
    0.85 + 0.3 * unit
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUN: Duration = Duration::from_secs(60);

    #[test]
    fn profiles_have_their_shapes() {
        let at = |p: Profile, s: f64| p.rate_at(1_000.0, Duration::from_secs_f64(s), RUN);
        assert_eq!(at(Profile::Steady, 0.0), 1_000.0);
        assert_eq!(at(Profile::Steady, 59.0), 1_000.0);
        assert_eq!(at(Profile::Ramp, 0.0), 100.0);
        assert_eq!(at(Profile::Ramp, 60.0), 1_000.0);
        assert!(at(Profile::Ramp, 30.0) > 500.0 && at(Profile::Ramp, 30.0) < 600.0);
        assert_eq!(at(Profile::Spike, 10.0), 1_000.0);
        assert_eq!(at(Profile::Spike, 25.0), 4_000.0);
        assert!((at(Profile::Spike, 31.5) - 2_500.0).abs() < 1.0);
        assert_eq!(at(Profile::Spike, 40.0), 1_000.0);
        assert!("wave".parse::<Profile>().is_err());
    }

    #[test]
    fn spikes_are_scripted_every_90_s_with_bumps_between() {
        let run = Duration::from_secs(600);
        let scripted = Profile::Spikes.scripted(run);
        let spikes: Vec<(f64, f64)> = scripted
            .iter()
            .filter(|s| s.factor >= 3.0)
            .map(|s| (s.start_s, s.factor))
            .collect();
        assert_eq!(
            spikes,
            [
                (60.0, 3.0),
                (150.0, 4.0),
                (240.0, 6.0),
                (330.0, 10.0),
                (420.0, 3.0),
                (510.0, 4.0)
            ]
        );
        assert_eq!(scripted.iter().filter(|s| s.factor == 1.5).count(), 6);
        let rate = |s: f64| Profile::Spikes.rate_at(100.0, Duration::from_secs_f64(s), run);
        // Inside a spike, three times the baseline of that second.
        let base = 100.0 * (1.0 + 0.25 * (std::f64::consts::TAU * 65.0 / 240.0).sin()) * jitter(65);
        assert!((rate(65.0) - 3.0 * base).abs() < 1e-9);
        for s in 0..600 {
            let r = rate(s as f64);
            assert!(
                r > 100.0 * 0.75 * 0.85 * 0.99 && r <= 100.0 * Profile::Spikes.peak_factor(),
                "{s}: {r}"
            );
        }
        assert!(Profile::Steady.scripted(run).is_empty());
        assert!(Profile::Noisy.scripted(run).is_empty());
        let noisy = |s: f64| Profile::Noisy.rate_at(100.0, Duration::from_secs_f64(s), run);
        assert!(
            (noisy(65.0) - base).abs() < 1e-9,
            "the same baseline, no spike"
        );
    }

    /// The default detection rule, fed the profile's rates in 2 s windows with Poisson-wide
    /// arrival noise, at either phase of the window grid, for both stream rates the figures
    /// use, on 20 streams each: every spike of 3x or more is found within 3 s of its start,
    /// and nothing else is (the bumps of 1.5x included).
    #[test]
    fn the_detection_rule_finds_every_scripted_spike_and_no_bump() {
        use reactions::moments::{MomentDetector, MomentRule};
        use std::collections::BTreeMap;
        let run = Duration::from_secs(600);
        let scripted = Profile::Spikes.scripted(run);
        let spikes: Vec<&ScriptedSpike> = scripted.iter().filter(|s| s.factor >= 3.0).collect();
        for nominal in [40.0, 200.0] {
            for stream in 0..20_u64 {
                let phase_s = (stream % 2) as i64;
                let mut noise = stream.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                let mut unit = move || {
                    noise = noise
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    (noise >> 11) as f64 / (1u64 << 53) as f64
                };
                let mut detector = MomentDetector::new(MomentRule::DEFAULT);
                let mut starts = Vec::new();
                // The load generator's warm-up runs at the profile's first rate.
                let mut t = -6 - phase_s;
                while t + 2 <= 600 {
                    let taps: f64 = (t..t + 2)
                        .map(|s| {
                            let at = Duration::from_secs_f64(s.max(0) as f64);
                            Profile::Spikes.rate_at(nominal, at, run)
                        })
                        .sum();
                    // About normal, variance 1 (four uniforms), scaled to Poisson's spread.
                    let normal = ((0..4).map(|_| unit()).sum::<f64>() - 2.0) * 3.0_f64.sqrt();
                    let n = (taps + normal * taps.sqrt()).round().max(0.0) as u64;
                    let counts = BTreeMap::from([("fire".to_owned(), n)]);
                    for moment in detector.observe(t * 1_000, 2_000, &counts) {
                        if !starts.contains(&moment.detected_from_ms) {
                            starts.push(moment.detected_from_ms);
                        }
                    }
                    t += 2;
                }
                for spike in &spikes {
                    let found = starts.iter().any(|&ms| {
                        let s = ms as f64 / 1_000.0;
                        s >= spike.start_s - 2.0 && s + 2.0 <= spike.start_s + 3.0
                    });
                    assert!(
                        found,
                        "{nominal}/s, stream {stream}: {spike:?} missed in {starts:?}"
                    );
                }
                assert_eq!(
                    starts.len(),
                    spikes.len(),
                    "{nominal}/s, stream {stream}: {starts:?}"
                );
            }
        }
    }
}
