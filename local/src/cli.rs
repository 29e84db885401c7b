//! The command line of `emostream-local`, kept in the library so the docker-compose file's
//! command and the docs' examples can be checked against it.

use crate::api_gateway::quotas::QuotaSettings;
use crate::event_source::MappingOptions;
use crate::lambda::environment::LocalValues;
use crate::stack::{DemoIssuerOptions, InvokeEndpoint, StackOptions};
use clap::Parser;
use std::path::PathBuf;
use std::time::Duration;

/// Run emostream's functions locally, wired as template.yaml wires them in AWS.
#[derive(Debug, Parser)]
#[command(version)]
pub struct Cli {
    /// The SAM template to read functions, routes and event sources from.
    #[arg(long, default_value = "template.yaml")]
    pub template: PathBuf,
    /// Directory with the function binaries.
    #[arg(long, default_value = "target/release")]
    pub binaries: PathBuf,
    /// Kafka bootstrap servers.
    #[arg(long, env = "KAFKA_BROKERS")]
    pub kafka_brokers: String,
    /// MongoDB connection string.
    #[arg(long, env = "MONGODB_URI")]
    pub mongodb_uri: String,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: std::net::IpAddr,
    /// Port of the HTTP API (0 = any free port).
    #[arg(long, default_value_t = 3000)]
    pub http_port: u16,
    /// Port of the WebSocket API and its @connections API.
    #[arg(long, default_value_t = 3001)]
    pub websocket_port: u16,
    /// Port of the AppSync Events API (HTTP publish and real-time endpoints), started when the
    /// template creates one (`--parameter Delivery=AppSyncEvents`).
    #[arg(long, default_value_t = 3002)]
    pub event_api_port: u16,
    /// The Event API's key for subscribers (default: a new random one each start).
    #[arg(long, env = "EVENT_API_KEY")]
    pub event_api_key: Option<String>,
    /// New Event API connections per second (AWS: 2,000); with relays, this process's share.
    #[arg(long, default_value_t = 2_000)]
    pub event_connects_per_second: u32,
    /// How long an Event API publish takes before it is delivered and answered.
    #[arg(long, default_value_t = 10)]
    pub event_publish_latency_ms: u64,
    /// Directory of the browser client to serve.
    #[arg(long)]
    pub web: Option<PathBuf>,
    /// Port of the browser client.
    #[arg(long, default_value_t = 8080)]
    pub web_port: u16,
    /// Instances per function (Lambda concurrency).
    #[arg(long, default_value_t = 3)]
    pub concurrency: usize,
    /// Partitions of the topics the stack creates.
    #[arg(long, default_value_t = 3)]
    pub partitions: i32,
    /// The most each partition of a topic the stack creates keeps, in bytes (Kafka's
    /// `retention.bytes`; 0 keeps everything). Default: EMOSTREAM_TOPIC_RETENTION_BYTES, which
    /// local/servers.sh sets for the local broker it starts (whose CPU grows with what it holds).
    #[arg(long)]
    pub topic_retention_bytes: Option<u64>,
    /// Batching window of every event source mapping in milliseconds, instead of the template's
    /// whole seconds.
    #[arg(long)]
    pub batching_window_ms: Option<u64>,
    /// A template parameter, NAME=VALUE (repeatable).
    #[arg(long = "parameter", value_parser = pair)]
    pub parameters: Vec<(String, String)>,
    /// An environment variable for every function, NAME=VALUE (repeatable).
    #[arg(long = "env", value_parser = pair)]
    pub env: Vec<(String, String)>,
    /// Forward invocations to this Lambda Invoke API instead of running the binaries
    /// (`cargo lambda watch`: http://127.0.0.1:9000).
    #[arg(long)]
    pub invoke_endpoint: Option<String>,
    /// Once up, register stream ID in the stream registry and start it (through the admin
    /// routes, signed like any admin call), so pages can react to it. Repeatable.
    #[arg(long = "live-stream", value_name = "ID")]
    pub live_streams: Vec<String>,
    /// Once up, a simulated crowd taps stream ID (registered and started like --live-stream)
    /// for as long as the stack runs, with a scripted spike every two minutes: the demo's
    /// moments. Repeatable.
    #[arg(long = "demo-crowd", value_name = "ID")]
    pub demo_crowds: Vec<String>,
    /// Like --demo-crowd, but the crowd stops after four minutes (two spikes) and the stream is
    /// ended: a finished stream to replay. Repeatable.
    #[arg(long = "demo-recording", value_name = "ID")]
    pub demo_recordings: Vec<String>,
    /// Run the demo identity provider and turn viewer identity on with it: viewers sign in by
    /// name, POST /reactions and WebSocket connects need its token.
    #[arg(long)]
    pub demo_issuer: bool,
    /// The demo identity provider's port.
    #[arg(long, default_value_t = 3003)]
    pub demo_issuer_port: u16,
    /// How long the demo identity provider's tokens last, in seconds.
    #[arg(long, default_value_t = 900, value_parser = clap::value_parser!(u64).range(10..))]
    pub token_ttl_s: u64,
    /// With --invoke-endpoint, name functions by logical id (`sam local start-lambda`).
    #[arg(long)]
    pub invoke_by_logical_id: bool,
    /// Write each function's output to DIR/<logical id>.log instead of this terminal.
    #[arg(long)]
    pub function_logs: Option<PathBuf>,
    /// How long each @connections call takes, like a PostToConnection from Lambda in AWS.
    #[arg(long, default_value_t = 10)]
    pub post_latency_ms: u64,
    /// The account-wide request throttle shared by HTTP API requests, WebSocket messages and
    /// @connections calls, in requests per second (AWS: 10,000).
    #[arg(long, default_value_t = 10_000)]
    pub account_rps: u32,
    /// The burst of that throttle (AWS: 5,000).
    #[arg(long, default_value_t = 5_000)]
    pub account_burst: u32,
    /// New WebSocket connections per second (AWS: 500).
    #[arg(long, default_value_t = 500)]
    pub connects_per_second: u32,
    /// No @connections latency, throttle or connect rate: faster than AWS, so figures measured
    /// this way flatter it.
    #[arg(long)]
    pub no_aws_quotas: bool,
}

pub fn pair(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .filter(|(name, _)| !name.is_empty())
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .ok_or_else(|| format!("expected NAME=VALUE, got {text:?}"))
}

impl Cli {
    /// The stack options these arguments describe.
    pub fn into_options(self) -> StackOptions {
        let mut options = StackOptions::new(
            self.template,
            self.binaries,
            &self.kafka_brokers,
            &self.mongodb_uri,
        );
        options.host = self.host;
        options.http_port = self.http_port;
        options.websocket_port = self.websocket_port;
        options.event_api_port = self.event_api_port;
        options.event_api_key = self.event_api_key;
        options.event_api_limits.connects_per_second = self.event_connects_per_second;
        options.event_api_limits.publish_latency =
            Duration::from_millis(self.event_publish_latency_ms);
        options.web = self.web.map(|dir| (dir, self.web_port));
        options.concurrency = self.concurrency;
        options.partitions = self.partitions;
        options.topic_retention_bytes = self.topic_retention_bytes;
        options.mapping = MappingOptions {
            batching_window: self.batching_window_ms.map(Duration::from_millis),
            ..MappingOptions::default()
        };
        options.local = LocalValues {
            parameters: self.parameters.into_iter().collect(),
            variables: self.env.into_iter().collect(),
        };
        options.function_logs = self.function_logs;
        options.demo_issuer = self.demo_issuer.then_some(DemoIssuerOptions {
            port: self.demo_issuer_port,
            token_ttl: Duration::from_secs(self.token_ttl_s),
        });
        options.quotas = if self.no_aws_quotas {
            QuotaSettings::off()
        } else {
            QuotaSettings {
                post_latency: Duration::from_millis(self.post_latency_ms),
                account_rps: self.account_rps,
                account_burst: self.account_burst,
                connects_per_second: self.connects_per_second,
            }
        };
        options.invoke_endpoint = self.invoke_endpoint.map(|url| InvokeEndpoint {
            url,
            by_logical_id: self.invoke_by_logical_id,
        });
        options
    }
}
