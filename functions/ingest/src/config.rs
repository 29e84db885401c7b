//! The ingest function's configuration, read once per container from environment variables.
//! The same names appear in template.yaml, the local stack and docs/configuration.md.

use reactions::config::{ConfigError, ProcessEnv, Settings, parse_in, text_or};
use reactions::kafka::KafkaSettings;
use reactions::mongo::MongoSettings;
use reactions::{DomainConfig, StreamShards};
use std::time::Duration;

/// Which browser origins may call the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// `*`: any origin (the API takes no cookies, so this is safe for public reactions).
    Any,
    /// Exactly these origins, e.g. `https://watch.example.com`.
    List(Vec<String>),
}

impl AllowedOrigins {
    fn parse(raw: &str) -> Self {
        let origins: Vec<String> = raw
            .split(',')
            .map(|o| o.trim().trim_end_matches('/').to_owned())
            .filter(|o| !o.is_empty())
            .collect();
        if origins.iter().any(|o| o == "*") {
            AllowedOrigins::Any
        } else {
            AllowedOrigins::List(origins)
        }
    }
}

/// Everything the ingest function is configured with.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Shared domain settings (catalogue, limits, window width).
    pub domain: DomainConfig,
    /// `KAFKA_BROKERS` (required).
    pub kafka: KafkaSettings,
    /// `REACTION_TOPIC` (default `emoji-reaction-topic`).
    pub reaction_topic: String,
    /// `PRODUCE_TIMEOUT_MS` (default 2000): the longest a request waits for the broker before
    /// answering 503.
    pub produce_timeout: Duration,
    /// `MONGODB_URI` (required) and `MONGODB_DATABASE` (default `emostream`).
    pub mongo: MongoSettings,
    /// `MAX_BODY_BYTES` (default 131072): larger bodies get 413 before any parsing.
    pub max_body_bytes: usize,
    /// `ALLOWED_ORIGINS` (default `*`): comma-separated origins for CORS.
    pub allowed_origins: AllowedOrigins,
    /// `STREAM_SHARDS` (default 3, 1 to 256): how many Kafka keys, and so partitions, one
    /// stream's reactions are spread over (see [`StreamShards`]).
    pub stream_shards: StreamShards,
    /// `STREAM_CACHE_TTL_MS` (default 5000, 0 to 300000): how long a container trusts what it
    /// read from the stream registry, including "no such stream". A stream going live or a new
    /// catalogue reaches every container within this time.
    pub stream_cache_ttl: Duration,
    /// `JWT_ISSUER` (default empty): when set, viewer identity is on. The HTTP API's JWT
    /// authorizer has verified the token before ingest runs; ingest takes the viewer id from
    /// the token's `sub` and refuses a request that reaches it without one.
    pub jwt_issuer: Option<String>,
}

impl IngestConfig {
    /// Reads the configuration from `settings`.
    pub fn from_settings(settings: &impl Settings) -> Result<Self, ConfigError> {
        let produce_timeout_ms: u64 =
            parse_in(settings, "PRODUCE_TIMEOUT_MS", 2_000, 100..=60_000)?;
        let max_body_bytes: usize = parse_in(settings, "MAX_BODY_BYTES", 131_072, 256..)?;
        let stream_shards: u16 = parse_in(settings, "STREAM_SHARDS", 3, 1..=StreamShards::MAX)?;
        let stream_cache_ttl_ms: u64 =
            parse_in(settings, "STREAM_CACHE_TTL_MS", 5_000, 0..=300_000)?;
        Ok(Self {
            domain: DomainConfig::from_settings(settings)?,
            kafka: KafkaSettings::from_settings(settings, "emostream-ingest")?,
            reaction_topic: text_or(settings, "REACTION_TOPIC", "emoji-reaction-topic"),
            produce_timeout: Duration::from_millis(produce_timeout_ms),
            mongo: MongoSettings::from_settings(settings)?,
            max_body_bytes,
            allowed_origins: AllowedOrigins::parse(&text_or(settings, "ALLOWED_ORIGINS", "*")),
            stream_shards: StreamShards::new(stream_shards),
            stream_cache_ttl: Duration::from_millis(stream_cache_ttl_ms),
            jwt_issuer: Some(text_or(settings, "JWT_ISSUER", "").trim().to_owned())
                .filter(|issuer| !issuer.is_empty()),
        })
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
    fn required_variables_are_named_when_missing() {
        let err = IngestConfig::from_settings(&[("MONGODB_URI", "mongodb://x")]).unwrap_err();
        assert_eq!(err.var, "KAFKA_BROKERS");
        let err = IngestConfig::from_settings(&[("KAFKA_BROKERS", "k:9092")]).unwrap_err();
        assert_eq!(err.var, "MONGODB_URI");
    }

    #[test]
    fn defaults_and_overrides() {
        let base = [("KAFKA_BROKERS", "k:9092"), ("MONGODB_URI", "mongodb://m")];
        let config = IngestConfig::from_settings(&base).unwrap();
        assert_eq!(config.reaction_topic, "emoji-reaction-topic");
        assert_eq!(config.produce_timeout, Duration::from_secs(2));
        assert_eq!(config.mongo.database, "emostream");
        assert_eq!(config.allowed_origins, AllowedOrigins::Any);

        let config = IngestConfig::from_settings(&[
            ("KAFKA_BROKERS", "k:9092"),
            ("MONGODB_URI", "mongodb://m"),
            ("REACTION_TOPIC", "r"),
            ("PRODUCE_TIMEOUT_MS", "500"),
            ("ALLOWED_ORIGINS", "https://a.example/, https://b.example"),
            ("MAX_BODY_BYTES", "1024"),
        ])
        .unwrap();
        assert_eq!(config.reaction_topic, "r");
        assert_eq!(config.produce_timeout, Duration::from_millis(500));
        assert_eq!(config.max_body_bytes, 1024);
        assert_eq!(
            config.allowed_origins,
            AllowedOrigins::List(vec!["https://a.example".into(), "https://b.example".into()])
        );
        for (var, value) in [("PRODUCE_TIMEOUT_MS", "5"), ("MAX_BODY_BYTES", "10")] {
            let settings = [("KAFKA_BROKERS", "k"), ("MONGODB_URI", "m"), (var, value)];
            assert_eq!(IngestConfig::from_settings(&settings).unwrap_err().var, var);
        }
    }
}
