//! The aggregate function's configuration, read once per container from environment variables.
//! The same names appear in template.yaml, the local stack and docs/configuration.md.

use reactions::DomainConfig;
use reactions::config::{ConfigError, ProcessEnv, Settings, parse_in, text_or};
use reactions::kafka::KafkaSettings;
use reactions::mongo::MongoSettings;
use std::time::Duration;

/// Everything the aggregate function is configured with.
#[derive(Debug, Clone)]
pub struct AggregateConfig {
    /// Shared domain settings (window width, catalogue, swarm rule).
    pub domain: DomainConfig,
    /// `KAFKA_BROKERS` (required): where window states and dead letters are produced.
    pub kafka: KafkaSettings,
    /// `REACTION_TOPIC` (default `emoji-reaction-topic`): the input topic, whose partitions the
    /// scheduled finalize tick checks (a batch names its own).
    pub reaction_topic: String,
    /// `OUTPUT_TOPIC` (default `emoji-output-topic`).
    pub output_topic: String,
    /// `DEAD_LETTER_TOPIC` (default `emoji-reaction-dlq`).
    pub dead_letter_topic: String,
    /// `PRODUCE_TIMEOUT_MS` (default 5000).
    pub produce_timeout: Duration,
    /// `MONGODB_URI` (required) and `MONGODB_DATABASE` (default `emostream`).
    pub mongo: MongoSettings,
    /// `WINDOW_RETENTION_HOURS` (default 168): how long a window is kept after its end.
    pub retention: Duration,
    /// `MAX_TAPS_PER_VIEWER_PER_WINDOW` (default 40, 0 turns fair use off): a viewer's taps on
    /// one stream beyond this in one window are not counted. 40 per 2 s window is 20 taps a
    /// second, more than a person keeps up (fast tapping is 6 to 10 a second); a script
    /// easily exceeds it.
    pub max_taps_per_viewer: u64,
    /// `FINALIZE_EVERY_MS` (default 1000, 0 after every batch): how often a container checks
    /// whether windows became final (a look at the open windows, and when some may be, at the
    /// input partitions' ends). Rare enough not to slow a backlog drain, often enough that
    /// `final` follows the moment it becomes true by about this much.
    pub finalize_every: Duration,
    /// `ALLOWED_LATENESS_MS` (default 5000): how long after a reaction's `at_ms` its record can
    /// still be appended to the input topic. It must cover ingest's `PRODUCE_TIMEOUT_MS` and
    /// the clock skew between ingest and the brokers: `final` relies on it (see
    /// `reactions::event_time`). A window is final no sooner than this long after its end.
    /// Checked at start-up against [`AggregateConfig::latest_landing_ms`].
    pub allowed_lateness_ms: i64,
    /// `INGEST_PRODUCE_TIMEOUT_MS` (default 2000): ingest's `PRODUCE_TIMEOUT_MS`, which the
    /// template sets to the same value, for the start-up check of the lateness. 0 only where
    /// no ingest writes the input topic (tests that produce its records themselves).
    pub ingest_produce_timeout_ms: i64,
    /// `MAX_CLOCK_SKEW_MS` (default 1000): how far ingest's clock may be from the brokers'
    /// (NTP-synchronised Lambda and MSK hosts stay within milliseconds; a second is margin).
    pub max_clock_skew_ms: i64,
    /// `EVENT_API_KEY_EXPIRES` (seconds since the epoch; default 0, no key): when the AppSync
    /// Events subscribers' API key expires. The scheduled tick, which runs every minute whatever
    /// the traffic, reports the days left as `EventApiKeyDaysLeft`, which an alarm watches, so
    /// the key is renewed before it refuses every new viewer.
    pub event_api_key_expires_s: u64,
}

impl AggregateConfig {
    /// Reads the configuration from `settings`.
    pub fn from_settings(settings: &impl Settings) -> Result<Self, ConfigError> {
        let produce_timeout_ms: u64 =
            parse_in(settings, "PRODUCE_TIMEOUT_MS", 5_000, 100..=60_000)?;
        let retention_hours: u64 = parse_in(settings, "WINDOW_RETENTION_HOURS", 168, 1..)?;
        let max_taps_per_viewer: u64 = parse_in(
            settings,
            "MAX_TAPS_PER_VIEWER_PER_WINDOW",
            40,
            0..=1_000_000,
        )?;
        let finalize_every_ms: u64 = parse_in(settings, "FINALIZE_EVERY_MS", 1_000, 0..=60_000)?;
        let text = |var: &str, default: &str| text_or(settings, var, default);
        let config = Self {
            domain: DomainConfig::from_settings(settings)?,
            kafka: KafkaSettings::from_settings(settings, "emostream-aggregate")?,
            reaction_topic: text("REACTION_TOPIC", "emoji-reaction-topic"),
            output_topic: text("OUTPUT_TOPIC", "emoji-output-topic"),
            dead_letter_topic: text("DEAD_LETTER_TOPIC", "emoji-reaction-dlq"),
            produce_timeout: Duration::from_millis(produce_timeout_ms),
            mongo: MongoSettings::from_settings(settings)?,
            retention: Duration::from_secs(retention_hours * 3_600),
            max_taps_per_viewer,
            finalize_every: Duration::from_millis(finalize_every_ms),
            allowed_lateness_ms: parse_in(settings, "ALLOWED_LATENESS_MS", 5_000, 0..)?,
            event_api_key_expires_s: parse_in(settings, "EVENT_API_KEY_EXPIRES", 0, 0..)?,
            ingest_produce_timeout_ms: parse_in(
                settings,
                "INGEST_PRODUCE_TIMEOUT_MS",
                2_000,
                0..=60_000,
            )?,
            max_clock_skew_ms: parse_in(settings, "MAX_CLOCK_SKEW_MS", 1_000, 0..=60_000)?,
        };
        if config.allowed_lateness_ms < config.latest_landing_ms() {
            return Err(ConfigError {
                var: "ALLOWED_LATENESS_MS",
                reason: format!(
                    "{} ms is less than {} ms, how late a reaction is allowed to reach the topic (INGEST_PRODUCE_TIMEOUT_MS {} ms, twice: once for the producer, once as margin for a broker that appends a request the producer gave up on, plus MAX_CLOCK_SKEW_MS {} ms): windows could be published final before their last taps",
                    config.allowed_lateness_ms,
                    config.latest_landing_ms(),
                    config.ingest_produce_timeout_ms,
                    config.max_clock_skew_ms
                ),
            });
        }
        Ok(config)
    }

    /// How late after its `at_ms` a reaction's record is allowed for. Ingest stamps `at_ms`
    /// just before it hands the records to its producer, and librdkafka gives up on a record
    /// `message.timeout.ms` (the produce timeout) after that: a produce request in flight times
    /// out at its first record's remaining message timeout. But the broker may still append a
    /// request the producer gave up on, and no client setting bounds when, so the lateness
    /// keeps as much again as a margin. Ingest's clock may be behind the brokers' by the skew.
    pub fn latest_landing_ms(&self) -> i64 {
        self.ingest_produce_timeout_ms
            .saturating_mul(2)
            .saturating_add(self.max_clock_skew_ms)
    }

    /// Reads the configuration from the process environment.
    /// Reads the process environment, with the MongoDB URI fetched from Secrets Manager or
    /// SSM first when the environment names it there (see `reactions::secrets`).
    pub async fn from_env() -> Result<Self, ConfigError> {
        let settings = reactions::secrets::with_fetched_secrets(ProcessEnv).await?;
        Self::from_settings(&settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bad_values() {
        let base = [("KAFKA_BROKERS", "k:9092"), ("MONGODB_URI", "mongodb://m")];
        let config = AggregateConfig::from_settings(&base).unwrap();
        assert_eq!(config.output_topic, "emoji-output-topic");
        assert_eq!(config.dead_letter_topic, "emoji-reaction-dlq");
        assert_eq!(config.retention, Duration::from_secs(168 * 3_600));
        assert_eq!(config.allowed_lateness_ms, 5_000);
        assert_eq!(config.max_taps_per_viewer, 40);
        assert_eq!(config.finalize_every, Duration::from_secs(1));
        for (var, value) in [
            ("WINDOW_RETENTION_HOURS", "0"),
            ("ALLOWED_LATENESS_MS", "-1"),
            ("PRODUCE_TIMEOUT_MS", "99"),
            ("OUTPUT_TOPIC", ""),
            ("MAX_TAPS_PER_VIEWER_PER_WINDOW", "-1"),
            ("EVENT_API_KEY_EXPIRES", "soon"),
            ("INGEST_PRODUCE_TIMEOUT_MS", "-1"),
            ("MAX_CLOCK_SKEW_MS", "-1"),
        ] {
            let settings = [("KAFKA_BROKERS", "k"), ("MONGODB_URI", "m"), (var, value)];
            match AggregateConfig::from_settings(&settings) {
                Err(err) => assert_eq!(err.var, var),
                // An empty value counts as unset.
                Ok(config) => assert_eq!(
                    (var, config.output_topic.as_str()),
                    ("OUTPUT_TOPIC", "emoji-output-topic")
                ),
            }
        }
        assert_eq!(config.latest_landing_ms(), 5_000);
        assert_eq!(
            AggregateConfig::from_settings(&[("KAFKA_BROKERS", "k")])
                .unwrap_err()
                .var,
            "MONGODB_URI"
        );
    }

    #[test]
    fn a_lateness_shorter_than_a_reaction_can_take_to_land_is_refused_at_start_up() {
        let base = [("KAFKA_BROKERS", "k"), ("MONGODB_URI", "m")];
        let with = |extra: &[(&'static str, &'static str)]| {
            let settings: Vec<(&str, &str)> = base.iter().chain(extra).copied().collect();
            AggregateConfig::from_settings(&settings)
        };
        // Ingest's produce timeout raised alone: a reaction may now land 7 s late.
        let refused = with(&[("INGEST_PRODUCE_TIMEOUT_MS", "3000")]).unwrap_err();
        assert_eq!(refused.var, "ALLOWED_LATENESS_MS");
        assert!(
            refused.reason.contains("5000 ms is less than 7000 ms"),
            "{}",
            refused.reason
        );
        // The lateness raised with it: accepted.
        let config = with(&[
            ("INGEST_PRODUCE_TIMEOUT_MS", "3000"),
            ("ALLOWED_LATENESS_MS", "7000"),
        ])
        .unwrap();
        assert_eq!(config.latest_landing_ms(), 7_000);
        assert!(with(&[("MAX_CLOCK_SKEW_MS", "1001")]).is_err());
        assert!(with(&[("ALLOWED_LATENESS_MS", "4999")]).is_err());
    }
}
