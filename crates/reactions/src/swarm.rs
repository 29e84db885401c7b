//! The swarm: how many emojis a browser draws for a window. Drawing every tap of a million
//! viewers would melt a phone, so counts are downscaled by a configurable rule (Hotstar's
//! "emoji swarm" idea). The rule is a pure function of the absolute counts, so every browser
//! draws the same swarm for the same state.

use crate::emoji::EmojiName;
use crate::window::EmojiCounts;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// Emojis to draw per emoji.
pub type Swarm = BTreeMap<EmojiName, u64>;

/// A downscaling rule. Every rule maps a count of at least 1 to at least 1 emoji, so a single
/// tap is always visible, and 0 to 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum SwarmRule {
    /// One emoji per `per` taps, rounded up: 1..=per taps draw 1.
    Ratio { per: u64 },
    /// `1 + floor(log_base(count))`: 1..base-1 taps draw 1, base..base²-1 draw 2, and so on.
    Logarithmic { base: u64 },
    /// Only the `k` most-tapped emojis (ties by name), each downscaled by `per` as in `Ratio`.
    TopK { k: usize, per: u64 },
}

impl Default for SwarmRule {
    fn default() -> Self {
        SwarmRule::Ratio { per: 10 }
    }
}

fn ratio(count: u64, per: u64) -> u64 {
    count.div_ceil(per)
}

fn logarithmic(count: u64, base: u64) -> u64 {
    if count == 0 {
        return 0;
    }
    let mut drawn = 1;
    let mut rest = count;
    while rest >= base {
        rest /= base;
        drawn += 1;
    }
    drawn
}

impl SwarmRule {
    /// Applies the rule to one window's counts. Emojis that draw nothing are left out.
    pub fn downscale(&self, counts: &EmojiCounts) -> Swarm {
        let positive = counts.iter().filter(|(_, n)| **n > 0);
        match *self {
            SwarmRule::Ratio { per } => {
                positive.map(|(e, n)| (e.clone(), ratio(*n, per))).collect()
            }
            SwarmRule::Logarithmic { base } => positive
                .map(|(e, n)| (e.clone(), logarithmic(*n, base)))
                .collect(),
            SwarmRule::TopK { k, per } => {
                let mut ranked: Vec<_> = positive.collect();
                // Largest count first; BTreeMap order already sorts ties by name.
                ranked.sort_by(|a, b| b.1.cmp(a.1));
                ranked
                    .into_iter()
                    .take(k)
                    .map(|(e, n)| (e.clone(), ratio(*n, per)))
                    .collect()
            }
        }
    }
}

/// Why a `SWARM_RULE` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("swarm rule {0:?} must be ratio:N (N >= 1), log:B (B >= 2) or top:K[:N] (K >= 1, N >= 1)")]
pub struct BadSwarmRule(pub String);

impl FromStr for SwarmRule {
    type Err = BadSwarmRule;

    /// Parses `ratio:10`, `log:2`, `top:3` or `top:3:10`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadSwarmRule(s.to_owned());
        let parts: Vec<&str> = s.trim().split(':').collect();
        let number = |i: usize| -> Result<u64, BadSwarmRule> {
            parts.get(i).ok_or_else(bad)?.parse().map_err(|_| bad())
        };
        let rule = match parts.first().copied() {
            Some("ratio") if parts.len() == 2 => SwarmRule::Ratio { per: number(1)? },
            Some("log") if parts.len() == 2 => SwarmRule::Logarithmic { base: number(1)? },
            Some("top") if parts.len() == 2 || parts.len() == 3 => SwarmRule::TopK {
                k: usize::try_from(number(1)?).map_err(|_| bad())?,
                per: if parts.len() == 3 { number(2)? } else { 1 },
            },
            _ => return Err(bad()),
        };
        let valid = match rule {
            SwarmRule::Ratio { per } => per >= 1,
            SwarmRule::Logarithmic { base } => base >= 2,
            SwarmRule::TopK { k, per } => k >= 1 && per >= 1,
        };
        if valid { Ok(rule) } else { Err(bad()) }
    }
}

impl fmt::Display for SwarmRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SwarmRule::Ratio { per } => write!(f, "ratio:{per}"),
            SwarmRule::Logarithmic { base } => write!(f, "log:{base}"),
            SwarmRule::TopK { k, per } => write!(f, "top:{k}:{per}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn counts(pairs: &[(&str, u64)]) -> EmojiCounts {
        pairs
            .iter()
            .map(|(e, n)| (EmojiName::parse(e).unwrap(), *n))
            .collect()
    }

    fn drawn(swarm: &Swarm, emoji: &str) -> u64 {
        swarm
            .get(&EmojiName::parse(emoji).unwrap())
            .copied()
            .unwrap_or(0)
    }

    #[test]
    fn ratio_rounds_up_so_a_single_tap_is_visible() {
        let rule = SwarmRule::Ratio { per: 10 };
        for (count, expected) in [
            (1, 1),
            (9, 1),
            (10, 1),
            (11, 2),
            (20, 2),
            (21, 3),
            (1000, 100),
        ] {
            assert_eq!(
                drawn(&rule.downscale(&counts(&[("fire", count)])), "fire"),
                expected,
                "{count}"
            );
        }
        assert!(rule.downscale(&counts(&[("fire", 0)])).is_empty());
    }

    #[test]
    fn logarithmic_grows_by_one_per_power() {
        let rule = SwarmRule::Logarithmic { base: 10 };
        for (count, expected) in [(1, 1), (9, 1), (10, 2), (99, 2), (100, 3), (1_000_000, 7)] {
            assert_eq!(
                drawn(&rule.downscale(&counts(&[("joy", count)])), "joy"),
                expected,
                "{count}"
            );
        }
        assert_eq!(logarithmic(u64::MAX, 2), 64);
    }

    #[test]
    fn top_k_keeps_the_largest_with_ties_by_name() {
        let rule = SwarmRule::TopK { k: 2, per: 5 };
        let swarm = rule.downscale(&counts(&[
            ("clap", 7),
            ("fire", 30),
            ("joy", 7),
            ("sad", 1),
        ]));
        assert_eq!(swarm.len(), 2);
        assert_eq!(drawn(&swarm, "fire"), 6);
        assert_eq!(drawn(&swarm, "clap"), 2);
        assert_eq!(drawn(&swarm, "joy"), 0);
    }

    #[test]
    fn rules_parse_and_print_round_trip() {
        for text in ["ratio:1", "ratio:25", "log:2", "top:3:10"] {
            let rule: SwarmRule = text.parse().unwrap();
            assert_eq!(rule.to_string(), text);
        }
        assert_eq!(
            "top:3".parse::<SwarmRule>().unwrap(),
            SwarmRule::TopK { k: 3, per: 1 }
        );
        for bad in [
            "",
            "ratio",
            "ratio:0",
            "log:1",
            "top:0",
            "top:2:0",
            "ratio:x",
            "cube:3",
            "ratio:1:2",
        ] {
            assert!(bad.parse::<SwarmRule>().is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn every_rule_draws_at_least_one_and_never_more_than_the_count(
            count in 1..u64::MAX / 2, per in 1..1000u64, base in 2..100u64, k in 1..5usize,
        ) {
            let c = counts(&[("fire", count)]);
            for rule in [SwarmRule::Ratio { per }, SwarmRule::Logarithmic { base }, SwarmRule::TopK { k, per }] {
                let n = drawn(&rule.downscale(&c), "fire");
                prop_assert!(n >= 1 && n <= count, "{rule} drew {n} for {count}");
            }
        }
    }
}
