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
            invoke_endpoint: None,
            limits: Limits::default(),
            quotas: QuotaSettings::default(),
            function_logs: None,
            demo_issuer: None,
            schedule_every: None,
        }
    }
}

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
    #[error(transparent)]
    Issuer(#[from] crate::demo_issuer::IssuerError),
}
