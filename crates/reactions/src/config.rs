//! Configuration shared by every function, read once from environment variables at start-up
//! into a typed struct. A bad value stops the function's init with a message naming the
//! variable, rather than surfacing later as odd counts.

use crate::emoji::{DEFAULT_CATALOGUE, EmojiCatalogue};
use crate::reaction::ReactionLimits;
use crate::swarm::SwarmRule;
use crate::window::WindowWidth;
use std::fmt::Display;
use std::ops::{Bound, RangeBounds};
use std::str::FromStr;

/// A variable that is missing or does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("environment variable {var}: {reason}")]
pub struct ConfigError {
    /// The variable's name.
    pub var: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

/// Where settings come from: the process environment in production, a map in tests.
pub trait Settings {
    /// The raw value of `var`, if set and not empty.
    fn get(&self, var: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Settings for ProcessEnv {
    fn get(&self, var: &str) -> Option<String> {
        std::env::var(var).ok().filter(|v| !v.trim().is_empty())
    }
}

fn find_pair(pairs: &[(&str, &str)], var: &str) -> Option<String> {
    // The last pair wins, so a test can override a base list by appending.
    pairs
        .iter()
        .rev()
        .find(|(k, _)| *k == var)
        .map(|(_, v)| (*v).to_owned())
        .filter(|v| !v.trim().is_empty())
}

impl<const N: usize> Settings for [(&str, &str); N] {
    fn get(&self, var: &str) -> Option<String> {
        find_pair(self, var)
    }
}

impl Settings for Vec<(&str, &str)> {
    fn get(&self, var: &str) -> Option<String> {
        find_pair(self, var)
    }
}

impl Settings for std::collections::HashMap<String, String> {
    fn get(&self, var: &str) -> Option<String> {
        std::collections::HashMap::get(self, var)
            .filter(|v| !v.trim().is_empty())
            .cloned()
    }
}

/// Reads `var` and parses it, or falls back to `default` when unset.
pub fn parse_or<T>(
    settings: &impl Settings,
    var: &'static str,
    default: T,
) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: Display,
{
    match settings.get(var) {
        None => Ok(default),
        Some(raw) => raw.trim().parse().map_err(|e: T::Err| ConfigError {
            var,
            reason: format!("{raw:?}: {e}"),
        }),
    }
}

/// Reads `var` like [`parse_or`] and checks that it lies in `range`, so every bounded setting
/// is refused the same way with the same message.
pub fn parse_in<T, R>(
    settings: &impl Settings,
    var: &'static str,
    default: T,
    range: R,
) -> Result<T, ConfigError>
where
    T: FromStr + PartialOrd + Display,
    T::Err: Display,
    R: RangeBounds<T>,
{
    let value = parse_or(settings, var, default)?;
    if range.contains(&value) {
        return Ok(value);
    }
    let reason = match (range.start_bound(), range.end_bound()) {
        (Bound::Included(min), Bound::Included(max)) => {
            format!("must be between {min} and {max}, got {value}")
        }
        (Bound::Included(min), Bound::Unbounded) => format!("must be at least {min}, got {value}"),
        _ => format!("{value} is out of range"),
    };
    Err(ConfigError { var, reason })
}

/// Reads a text `var`, or `default` when unset.
pub fn text_or(settings: &impl Settings, var: &str, default: &str) -> String {
    settings.get(var).unwrap_or_else(|| default.to_owned())
}

/// Reads a required `var`.
pub fn required(settings: &impl Settings, var: &'static str) -> Result<String, ConfigError> {
    settings.get(var).ok_or(ConfigError {
        var,
        reason: "is required but not set".into(),
    })
}

/// The domain settings every function agrees on. The names are the same in template.yaml,
/// the local stack and docs/configuration.md.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainConfig {
    /// `WINDOW_WIDTH_MS` (default 2000).
    pub window_width: WindowWidth,
    /// `EMOJI_CATALOGUE`, `name=glyph,...` (default: a ten-emoji set).
    pub catalogue: EmojiCatalogue,
    /// `SWARM_RULE`: `ratio:N`, `log:B` or `top:K[:N]` (default `ratio:10`).
    pub swarm_rule: SwarmRule,
    /// `MAX_BATCH_SIZE` (default 500) and `MAX_REACTION_COUNT` (default 100).
    pub limits: ReactionLimits,
}

impl DomainConfig {
    /// Reads the domain settings.
    pub fn from_settings(settings: &impl Settings) -> Result<Self, ConfigError> {
        let width_ms = parse_or(settings, "WINDOW_WIDTH_MS", WindowWidth::DEFAULT.millis())?;
        let window_width = WindowWidth::from_millis(width_ms).map_err(|e| ConfigError {
            var: "WINDOW_WIDTH_MS",
            reason: e.to_string(),
        })?;
        let catalogue_spec = text_or(settings, "EMOJI_CATALOGUE", DEFAULT_CATALOGUE);
        let catalogue = EmojiCatalogue::parse(&catalogue_spec).map_err(|e| ConfigError {
            var: "EMOJI_CATALOGUE",
            reason: e.to_string(),
        })?;
        let defaults = ReactionLimits::default();
        let max_batch = parse_in(settings, "MAX_BATCH_SIZE", defaults.max_batch, 1..)?;
        let max_count = parse_in(settings, "MAX_REACTION_COUNT", defaults.max_count, 1..)?;
        Ok(Self {
            window_width,
            catalogue,
            swarm_rule: parse_or(settings, "SWARM_RULE", SwarmRule::default())?,
            limits: ReactionLimits {
                max_batch,
                max_count,
            },
        })
    }

    /// Reads the domain settings from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_settings(&ProcessEnv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let config = DomainConfig::from_settings(&[]).unwrap();
        assert_eq!(config.window_width, WindowWidth::DEFAULT);
        assert_eq!(config.catalogue, EmojiCatalogue::default());
        assert_eq!(config.swarm_rule, SwarmRule::Ratio { per: 10 });
        assert_eq!(config.limits, ReactionLimits::default());
    }

    #[test]
    fn every_variable_is_read() {
        let config = DomainConfig::from_settings(&[
            ("WINDOW_WIDTH_MS", "500"),
            ("EMOJI_CATALOGUE", "goal=⚽"),
            ("SWARM_RULE", "log:2"),
            ("MAX_BATCH_SIZE", "50"),
            ("MAX_REACTION_COUNT", "5"),
        ])
        .unwrap();
        assert_eq!(config.window_width.millis(), 500);
        assert_eq!(config.catalogue.emojis().len(), 1);
        assert_eq!(config.swarm_rule, SwarmRule::Logarithmic { base: 2 });
        assert_eq!(
            config.limits,
            ReactionLimits {
                max_batch: 50,
                max_count: 5
            }
        );
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (var, value) in [
            ("WINDOW_WIDTH_MS", "2s"),
            ("WINDOW_WIDTH_MS", "10"),
            ("EMOJI_CATALOGUE", "nope"),
            ("SWARM_RULE", "ratio:0"),
            ("MAX_BATCH_SIZE", "-1"),
            ("MAX_BATCH_SIZE", "0"),
            ("MAX_REACTION_COUNT", "0"),
        ] {
            let settings = [(var, value)];
            let err = DomainConfig::from_settings(&settings).unwrap_err();
            assert_eq!(err.var, var, "{value}");
            assert!(
                err.to_string()
                    .starts_with(&format!("environment variable {var}"))
            );
        }
        let timeout = parse_in(&[("T", "99")], "T", 2_000_u64, 100..=60_000).unwrap_err();
        assert_eq!(timeout.reason, "must be between 100 and 60000, got 99");
        let floor = parse_in(&[("N", "0")], "N", 1_u64, 1..).unwrap_err();
        assert_eq!(floor.reason, "must be at least 1, got 0");
        assert_eq!(parse_in(&[], "N", 7_u64, 1..), Ok(7));
        let missing = required(&[], "KAFKA_BROKERS").unwrap_err();
        assert_eq!(
            missing.to_string(),
            "environment variable KAFKA_BROKERS: is required but not set"
        );
    }
}
