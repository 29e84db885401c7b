//! Load profiles: the target reaction rate at each moment of a run. `steady` holds the rate,
//! `ramp` climbs from a tenth of it to all of it, and `spike` is a live match: the rate, then a
//! wicket at 40 % of the run sends it to four times for five seconds, decaying back over five.

use std::str::FromStr;
use std::time::Duration;

/// The shape of the rate over a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Steady,
    Ramp,
    Spike,
}

impl FromStr for Profile {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "steady" => Ok(Self::Steady),
            "ramp" => Ok(Self::Ramp),
            "spike" => Ok(Self::Spike),
            other => Err(format!(
                "unknown profile {other:?}: use steady, ramp or spike"
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
        }
    }

    /// Reactions per second wanted at `elapsed` into a run of `duration` at nominal `rate`.
    pub fn rate_at(self, rate: f64, elapsed: Duration, duration: Duration) -> f64 {
        let t = elapsed.as_secs_f64();
        let total = duration.as_secs_f64().max(f64::EPSILON);
        match self {
            Profile::Steady => rate,
            Profile::Ramp => rate * (0.1 + 0.9 * (t / total).min(1.0)),
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
}
