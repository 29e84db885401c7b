//! The notify function's configuration, read once per container from environment variables.
//! The same names appear in template.yaml, the local stack and docs/configuration.md.

use reactions::DomainConfig;
use reactions::config::{ConfigError, ProcessEnv, Settings, parse_in, required, text_or};
use reactions::event_channel::is_segment;
use reactions::mongo::MongoSettings;
use reactions::viewer_identity::IdentitySettings;
use std::time::Duration;

/// Everything the notify function is configured with.
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    /// Shared domain settings (swarm rule and lateness for `sync` snapshots).
    pub domain: DomainConfig,
    /// `MONGODB_URI` (required) and `MONGODB_DATABASE` (default `emostream`).
    pub mongo: MongoSettings,
    /// `MANAGEMENT_API_ENDPOINT` (required): the WebSocket API's `@connections` endpoint,
    /// `https://{api}.execute-api.{region}.amazonaws.com/{stage}` in AWS, the local stack's URL
    /// locally. Never guessed: a wrong endpoint would silently push nowhere.
    pub management_endpoint: String,
    /// `FANOUT_CONCURRENCY` (default 128, 1..=1024): posts in flight at once.
    pub fanout_concurrency: usize,
    /// `THROTTLE_BUDGET_MS` (default 2000): how long one post may keep retrying after 429s.
    pub throttle_budget: Duration,
    /// `POST_TIMEOUT_MS` (default 3000): one `PostToConnection` attempt.
    pub post_timeout: Duration,
    /// `JWT_ISSUER` and `JWT_AUDIENCE` (both empty by default): when set, `$connect` needs a
    /// valid viewer token from that issuer in its `token` query parameter.
    pub identity: Option<IdentitySettings>,
    /// `CONNECTION_TTL_MINUTES` (default 130): API Gateway's 2-hour limit plus a margin.
    pub connection_ttl: Duration,
    /// `SYNC_WINDOWS` (default 30, at most 150): windows a `sync` sends when it names none.
    pub sync_windows: u32,
    /// `SYNC_EVERY_MS` (default 5000, at most 3600000): one connection gets at most one `sync`
    /// snapshot this often (a snapshot is a read of up to 150 windows); 0 answers every one.
    pub sync_every: Duration,
    /// `PUSH_INTERVAL_MS` (default 1000, at most 10000): the shortest time between two pushes
    /// of one stream; 0 pushes after every batch.
    pub push_interval: Duration,
    /// `POST_BUDGET_PER_SECOND` (default 8000): posts per second all streams may make together,
    /// below the account's 10,000 requests/s so the HTTP API keeps its share.
    pub post_budget_per_second: u32,
    /// `FANOUT_DEADLINE_MS` (default 20000): nothing is posted this long after a batch began;
    /// keep it well inside the function's timeout.
    pub fanout_deadline: Duration,
    /// `DELIVERY` (default `WebSocketApi`): how window states reach browsers.
    pub delivery: Delivery,
    /// `SWEEP_FOR_MS` (default 60000, at most 840000): how long one scheduled sweeper
    /// invocation sweeps; the schedule starts one a minute, so the default leaves no gap. Keep
    /// it inside the function's timeout.
    pub sweep_for: Duration,
}

/// How window states reach browsers: the template's `Delivery` parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// One `PostToConnection` per viewer through API Gateway's `@connections` API.
    WebSocketApi,
    /// One publish per stream to an AWS AppSync Events channel, which reaches every subscriber.
    AppSyncEvents(EventApiSettings),
}

/// Where `AppSyncEvents` delivery publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventApiSettings {
    /// `APPSYNC_EVENT_ENDPOINT` (required in that mode): the Event API's HTTP publish URL,
    /// `https://{id}.appsync-api.{region}.amazonaws.com/event` in AWS, the local stack's locally.
    pub endpoint: String,
    /// `APPSYNC_NAMESPACE` (default `streams`): the channel namespace; a stream's channel is
    /// `/{namespace}/{stream}`.
    pub namespace: String,
}

impl Delivery {
    fn from_settings(settings: &impl Settings) -> Result<Self, ConfigError> {
        match text_or(settings, "DELIVERY", "WebSocketApi").as_str() {
            "WebSocketApi" => Ok(Self::WebSocketApi),
            "AppSyncEvents" => {
                let endpoint = required(settings, "APPSYNC_EVENT_ENDPOINT")?;
                if !(endpoint.starts_with("https://") || endpoint.starts_with("http://")) {
                    return Err(ConfigError {
                        var: "APPSYNC_EVENT_ENDPOINT",
                        reason: format!("expected an http(s) URL, got {endpoint:?}"),
                    });
                }
                let namespace = text_or(settings, "APPSYNC_NAMESPACE", "streams");
                if !is_segment(&namespace) {
                    return Err(ConfigError {
                        var: "APPSYNC_NAMESPACE",
                        reason: format!(
                            "{namespace:?} is not a channel namespace name (1 to 50 letters, \
                             digits or inner dashes)"
                        ),
                    });
                }
                Ok(Self::AppSyncEvents(EventApiSettings {
                    endpoint,
                    namespace,
                }))
            }
            other => Err(ConfigError {
                var: "DELIVERY",
                reason: format!("expected WebSocketApi or AppSyncEvents, got {other:?}"),
            }),
        }
    }
}

/// The most windows one `sync` may ask for (a snapshot that would exceed API Gateway's 128 KB
/// frame leaves out its oldest windows).
pub const MAX_SYNC_WINDOWS: u32 = 150;

impl NotifyConfig {
    /// Reads the configuration from `settings`.
    pub fn from_settings(settings: &impl Settings) -> Result<Self, ConfigError> {
        let throttle_budget_ms: u64 = parse_in(settings, "THROTTLE_BUDGET_MS", 2_000, 0..=60_000)?;
        let post_timeout_ms: u64 = parse_in(settings, "POST_TIMEOUT_MS", 3_000, 100..=30_000)?;
        let ttl_minutes: u64 = parse_in(settings, "CONNECTION_TTL_MINUTES", 130, 121..)?;
        let push_interval_ms: u64 = parse_in(
            settings,
            "PUSH_INTERVAL_MS",
            1_000,
            0..=crate::schedule::MAX_PUSH_INTERVAL.as_millis() as u64,
        )?;
        let deadline_ms: u64 = parse_in(settings, "FANOUT_DEADLINE_MS", 20_000, 1_000..=840_000)?;
        Ok(Self {
            domain: DomainConfig::from_settings(settings)?,
            mongo: MongoSettings::from_settings(settings)?,
            management_endpoint: required(settings, "MANAGEMENT_API_ENDPOINT")?,
            fanout_concurrency: parse_in(settings, "FANOUT_CONCURRENCY", 128, 1..=1_024)?,
            throttle_budget: Duration::from_millis(throttle_budget_ms),
            post_timeout: Duration::from_millis(post_timeout_ms),
            identity: IdentitySettings::from_settings(settings)?,
            connection_ttl: Duration::from_secs(ttl_minutes * 60),
            sync_windows: parse_in(settings, "SYNC_WINDOWS", 30, 1..=MAX_SYNC_WINDOWS)?,
            sync_every: Duration::from_millis(parse_in(
                settings,
                "SYNC_EVERY_MS",
                5_000,
                0..=3_600_000,
            )?),
            push_interval: Duration::from_millis(push_interval_ms),
            post_budget_per_second: parse_in(
                settings,
                "POST_BUDGET_PER_SECOND",
                8_000,
                1..=1_000_000,
            )?,
            fanout_deadline: Duration::from_millis(deadline_ms),
            delivery: Delivery::from_settings(settings)?,
            sweep_for: Duration::from_millis(parse_in(
                settings,
                "SWEEP_FOR_MS",
                60_000,
                0..=840_000,
            )?),
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

    const BASE: [(&str, &str); 2] = [
        ("MONGODB_URI", "mongodb://m"),
        ("MANAGEMENT_API_ENDPOINT", "http://127.0.0.1:1/local"),
    ];

    #[test]
    fn defaults() {
        let config = NotifyConfig::from_settings(&BASE).unwrap();
        assert_eq!(config.fanout_concurrency, 128);
        assert_eq!(config.throttle_budget, Duration::from_secs(2));
        assert_eq!(config.connection_ttl, Duration::from_secs(130 * 60));
        assert_eq!(config.sync_windows, 30);
        assert_eq!(config.sync_every, Duration::from_secs(5));
        assert_eq!(config.identity, None);
        assert_eq!(config.push_interval, Duration::from_secs(1));
        assert_eq!(config.post_budget_per_second, 8_000);
        assert_eq!(config.fanout_deadline, Duration::from_secs(20));
        assert_eq!(config.delivery, Delivery::WebSocketApi);
        assert_eq!(config.sweep_for, Duration::from_secs(60));
    }

    #[test]
    fn appsync_events_delivery_needs_its_endpoint() {
        let mode = ("DELIVERY", "AppSyncEvents");
        let error = NotifyConfig::from_settings(&[BASE[0], BASE[1], mode]).unwrap_err();
        assert_eq!(error.var, "APPSYNC_EVENT_ENDPOINT");
        let endpoint = (
            "APPSYNC_EVENT_ENDPOINT",
            "https://x.appsync-api.eu-west-1.amazonaws.com/event",
        );
        let config = NotifyConfig::from_settings(&[BASE[0], BASE[1], mode, endpoint]).unwrap();
        assert_eq!(
            config.delivery,
            Delivery::AppSyncEvents(EventApiSettings {
                endpoint: endpoint.1.to_owned(),
                namespace: "streams".to_owned(),
            })
        );
        for (var, value) in [
            ("APPSYNC_NAMESPACE", "bad_name"),
            ("APPSYNC_EVENT_ENDPOINT", "x.appsync-api.amazonaws.com"),
            ("DELIVERY", "Carrier-pigeon"),
        ] {
            let settings = [BASE[0], BASE[1], mode, endpoint, (var, value)];
            assert_eq!(NotifyConfig::from_settings(&settings).unwrap_err().var, var);
        }
    }

    #[test]
    fn bad_and_missing_values_name_the_variable() {
        for (var, value) in [
            ("FANOUT_CONCURRENCY", "0"),
            ("FANOUT_CONCURRENCY", "5000"),
            ("THROTTLE_BUDGET_MS", "soon"),
            ("CONNECTION_TTL_MINUTES", "60"),
            ("SYNC_WINDOWS", "151"),
            ("POST_TIMEOUT_MS", "10"),
            ("PUSH_INTERVAL_MS", "10001"),
            ("POST_BUDGET_PER_SECOND", "0"),
            ("FANOUT_DEADLINE_MS", "999"),
            ("SWEEP_FOR_MS", "900000"),
        ] {
            let settings = [BASE[0], BASE[1], (var, value)];
            assert_eq!(NotifyConfig::from_settings(&settings).unwrap_err().var, var);
        }
        assert_eq!(
            NotifyConfig::from_settings(&[BASE[0]]).unwrap_err().var,
            "MANAGEMENT_API_ENDPOINT"
        );
        let identity = [
            BASE[0],
            BASE[1],
            ("JWT_ISSUER", "https://id.example.com"),
            ("JWT_AUDIENCE", "emostream"),
        ];
        let config = NotifyConfig::from_settings(&identity).unwrap();
        assert_eq!(
            config.identity.map(|i| i.issuer).as_deref(),
            Some("https://id.example.com")
        );
        let half = [BASE[0], BASE[1], ("JWT_ISSUER", "https://id.example.com")];
        assert_eq!(
            NotifyConfig::from_settings(&half).unwrap_err().var,
            "JWT_AUDIENCE"
        );
    }
}
