//! How a local stack is started ([`StackOptions`]) and why it may not start ([`StackError`]).

use crate::api_gateway::quotas::QuotaSettings;
use crate::api_gateway::websocket::Limits;
use crate::demo_issuer::DEFAULT_TOKEN_TTL;
use crate::event_api::EventApiLimits;
use crate::event_source::{MappingError, MappingOptions};
use crate::lambda::environment::{LocalValues, UnresolvedVariable};
use crate::template::TemplateError;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// Where functions run when not as local processes.
#[derive(Debug, Clone)]
pub struct InvokeEndpoint {
    /// Base URL of a Lambda Invoke API, e.g. `http://127.0.0.1:9000` (`cargo lambda watch`).
    pub url: String,
    /// Address functions by logical id (`sam local start-lambda`) instead of binary name
    /// (`cargo lambda watch`).
    pub by_logical_id: bool,
}

/// The environment variable that bounds the topics the stack creates when
/// [`StackOptions::topic_retention_bytes`] is not set: `local/servers.sh` sets it (to 2 MiB) for
/// the local Kafka-wire broker it starts, and only for that one.
///
/// Why that broker needs a bound: noida-db saves its whole log to one JSON file about once a
/// second, so its CPU grows with every byte it holds (measured alone on 2 cores: 0.13 of a core
/// at a 52 MB file, about 4 bytes of file per byte of record, growing with it until the saving
/// takes a whole core). Unbounded, a five-minute run of 500 streams made its CPU grow from 10 to
/// 25 CPU-seconds a minute and the pipeline slowed down for a reason AWS does not have: a Kafka
/// broker appends to segment files at a cost that does not depend on what it holds. Other
/// brokers (Redpanda from docker-compose, a Kafka of one's own, MSK) keep their own retention;
/// Kafka 4 would refuse the small segments this bound asks for.
pub const TOPIC_RETENTION_VARIABLE: &str = "EMOSTREAM_TOPIC_RETENTION_BYTES";

/// How to start the stack.
#[derive(Debug, Clone)]
pub struct StackOptions {
    pub template: PathBuf,
    /// Directory holding the function binaries (`target/debug`, `target/release`).
    pub binaries: PathBuf,
    pub kafka_brokers: String,
    pub mongodb_uri: String,
    /// Address to listen on.
    pub host: IpAddr,
    /// Ports (0 picks a free one).
    pub http_port: u16,
    pub websocket_port: u16,
    /// Port of the AppSync Events API (its HTTP and real-time endpoints), when there is one.
    pub event_api_port: u16,
    /// Its keep-alive, timeout and rates (AWS's by default; the rates follow `quotas`).
    pub event_api_limits: EventApiLimits,
    /// Its API key for subscribers (a new random one when not given).
    pub event_api_key: Option<String>,
    /// The browser client's directory and port.
    pub web: Option<(PathBuf, u16)>,
    /// Instances per function.
    pub concurrency: usize,
    /// Parameter overrides and extra environment variables.
    pub local: LocalValues,
    pub mapping: MappingOptions,
    /// Partitions of the topics the stack creates.
    pub partitions: i32,
    /// The most each partition of a topic the stack creates keeps (Kafka's `retention.bytes`);
    /// 0 keeps everything; `None` takes [`TOPIC_RETENTION_VARIABLE`] (absent: everything).
    pub topic_retention_bytes: Option<u64>,
    pub invoke_endpoint: Option<InvokeEndpoint>,
    pub limits: Limits,
    /// The account's throttle, connect rate and `@connections` latency (AWS's by default).
    pub quotas: QuotaSettings,
    /// A directory for each function's output (`<logical id>.log`); else it goes to ours.
    pub function_logs: Option<PathBuf>,
    /// Runs the demo identity provider and turns viewer identity on with it (the template's
    /// `JwtIssuer` and `JwtAudience` become its URL and [`DEMO_AUDIENCE`]).
    pub demo_issuer: Option<DemoIssuerOptions>,
    /// Invoke every scheduled event (`Type: Schedule`) this often instead of at its template
    /// rate (`None`: the template's, as EventBridge does). For tests that cannot wait a minute.
    pub schedule_every: Option<Duration>,
}

/// Where the demo identity provider listens and how long its tokens last.
#[derive(Debug, Clone, Copy)]
pub struct DemoIssuerOptions {
    /// Port (0 picks a free one).
    pub port: u16,
    pub token_ttl: Duration,
}

impl Default for DemoIssuerOptions {
    fn default() -> Self {
        Self {
            port: 0,
            token_ttl: DEFAULT_TOKEN_TTL,
        }
    }
}

impl StackOptions {
    /// Defaults for the given template, binaries and servers.
    pub fn new(
        template: PathBuf,
        binaries: PathBuf,
        kafka_brokers: &str,
        mongodb_uri: &str,
    ) -> Self {
        Self {
            template,
            binaries,
            kafka_brokers: kafka_brokers.to_owned(),
            mongodb_uri: mongodb_uri.to_owned(),
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            http_port: 0,
            websocket_port: 0,
            event_api_port: 0,
            event_api_limits: EventApiLimits::default(),
            event_api_key: None,
            web: None,
            concurrency: 3,
            local: LocalValues::default(),
            mapping: MappingOptions::default(),
            partitions: 3,
            topic_retention_bytes: None,
            invoke_endpoint: None,
            limits: Limits::default(),
            quotas: QuotaSettings::default(),
            function_logs: None,
            demo_issuer: None,
            schedule_every: None,
        }
    }
}

impl StackOptions {
    /// The topic-level settings of the topics the stack creates: `retention.bytes`, and
    /// segments an eighth of it, since a broker deletes whole segments and never the one being
    /// written (a partition holds at most the retention, one segment and what arrives between
    /// the broker's retention checks).
    pub(crate) fn topic_config(&self) -> Result<Vec<(&'static str, String)>, StackError> {
        let bytes = match self.topic_retention_bytes {
            Some(bytes) => bytes,
            None => match std::env::var(TOPIC_RETENTION_VARIABLE) {
                Err(std::env::VarError::NotPresent) => 0,
                Ok(value) if value.trim().is_empty() => 0,
                Ok(value) => value.trim().parse().map_err(|_| {
                    StackError::Setting(format!(
                        "{TOPIC_RETENTION_VARIABLE}={value:?} is not a number of bytes (0 keeps everything)"
                    ))
                })?,
                Err(error) => {
                    return Err(StackError::Setting(format!(
                        "{TOPIC_RETENTION_VARIABLE}: {error}"
                    )));
                }
            },
        };
        Ok(match bytes {
            0 => Vec::new(),
            bytes => vec![
                ("retention.bytes", bytes.to_string()),
                (
                    "segment.bytes",
                    (bytes / 8).max(MIN_SEGMENT_BYTES).to_string(),
                ),
            ],
        })
    }
}

/// The smallest segment asked for: smaller ones only multiply the broker's files.
const MIN_SEGMENT_BYTES: u64 = 64 * 1024;

/// Why the stack could not start.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    Environment(#[from] UnresolvedVariable),
    #[error(transparent)]
    Mapping(#[from] MappingError),
    #[error("{0}")]
    Missing(String),
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the Kafka topics: {0}")]
    Topics(String),
    #[error("{0}")]
    Setting(String),
    #[error(transparent)]
    Issuer(#[from] crate::demo_issuer::IssuerError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(retention: u64) -> StackOptions {
        let mut options = StackOptions::new("t.yaml".into(), "bin".into(), "k:9092", "mongodb://m");
        options.topic_retention_bytes = Some(retention);
        options
    }

    #[test]
    fn a_bound_sets_the_retention_and_segments_of_an_eighth() {
        assert_eq!(
            options(2 * 1024 * 1024).topic_config().unwrap(),
            vec![
                ("retention.bytes", "2097152".to_owned()),
                ("segment.bytes", "262144".to_owned()),
            ]
        );
    }

    #[test]
    fn no_bound_sets_nothing_and_a_tiny_bound_keeps_a_sensible_segment() {
        assert!(options(0).topic_config().unwrap().is_empty());
        assert_eq!(
            options(100_000).topic_config().unwrap()[1],
            ("segment.bytes", "65536".to_owned())
        );
    }
}
