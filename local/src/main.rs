//! `emostream-local`: runs the unmodified function binaries behind local emulations of the
//! HTTP API, the WebSocket API and the Kafka event source mappings described in template.yaml.
//! Ctrl-C stops everything it started.

use clap::Parser;
use emostream_local::environment::LocalValues;
use emostream_local::event_source::MappingOptions;
use emostream_local::stack::{InvokeEndpoint, LocalStack, StackOptions};
use std::path::PathBuf;
use std::time::Duration;

/// Run emostream's functions locally, wired as template.yaml wires them in AWS.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The SAM template to read functions, routes and event sources from.
    #[arg(long, default_value = "template.yaml")]
    template: PathBuf,
    /// Directory with the function binaries.
    #[arg(long, default_value = "target/release")]
    binaries: PathBuf,
    /// Kafka bootstrap servers.
    #[arg(long, env = "KAFKA_BROKERS")]
    kafka_brokers: String,
    /// MongoDB connection string.
    #[arg(long, env = "MONGODB_URI")]
    mongodb_uri: String,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// Port of the HTTP API (0 = any free port).
    #[arg(long, default_value_t = 3000)]
    http_port: u16,
    /// Port of the WebSocket API and its @connections API.
    #[arg(long, default_value_t = 3001)]
    websocket_port: u16,
    /// Directory of the browser client to serve.
    #[arg(long)]
    web: Option<PathBuf>,
    /// Port of the browser client.
    #[arg(long, default_value_t = 8080)]
    web_port: u16,
    /// Instances per function (Lambda concurrency).
    #[arg(long, default_value_t = 2)]
    concurrency: usize,
    /// Partitions of the topics the stack creates.
    #[arg(long, default_value_t = 3)]
    partitions: i32,
    /// Batching window of every event source mapping in milliseconds, instead of the template's
    /// whole seconds.
    #[arg(long)]
    batching_window_ms: Option<u64>,
    /// A template parameter, NAME=VALUE (repeatable).
    #[arg(long = "parameter", value_parser = pair)]
    parameters: Vec<(String, String)>,
    /// An environment variable for every function, NAME=VALUE (repeatable).
    #[arg(long = "env", value_parser = pair)]
    env: Vec<(String, String)>,
    /// Forward invocations to this Lambda Invoke API instead of running the binaries
    /// (`cargo lambda watch`: http://127.0.0.1:9000).
    #[arg(long)]
    invoke_endpoint: Option<String>,
    /// With --invoke-endpoint, name functions by logical id (`sam local start-lambda`).
    #[arg(long)]
    invoke_by_logical_id: bool,
    /// Write each function's output to DIR/<logical id>.log instead of this terminal.
    #[arg(long)]
    function_logs: Option<PathBuf>,
}

fn pair(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .filter(|(name, _)| !name.is_empty())
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .ok_or_else(|| format!("expected NAME=VALUE, got {text:?}"))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    reactions::telemetry::init_json_logs();
    let args = Args::parse();
    let mut options = StackOptions::new(
        args.template,
        args.binaries,
        &args.kafka_brokers,
        &args.mongodb_uri,
    );
    options.host = args.host;
    options.http_port = args.http_port;
    options.websocket_port = args.websocket_port;
    options.web = args.web.map(|dir| (dir, args.web_port));
    options.concurrency = args.concurrency;
    options.partitions = args.partitions;
    options.mapping = MappingOptions {
        batching_window: args.batching_window_ms.map(Duration::from_millis),
        ..MappingOptions::default()
    };
    options.local = LocalValues {
        parameters: args.parameters.into_iter().collect(),
        variables: args.env.into_iter().collect(),
    };
    options.function_logs = args.function_logs;
    options.invoke_endpoint = args.invoke_endpoint.map(|url| InvokeEndpoint {
        url,
        by_logical_id: args.invoke_by_logical_id,
    });
    let stack = match LocalStack::start(options).await {
        Ok(stack) => stack,
        Err(error) => {
            eprintln!("emostream-local: {error}");
            std::process::exit(2);
        }
    };
    if !stack.wait_ready(Duration::from_secs(30)).await {
        eprintln!("warning: an event source mapping has no partitions after 30 s");
    }
    eprintln!();
    eprintln!("emostream local stack is up:");
    eprintln!("  HTTP API        {}", stack.http_url);
    if let Some(url) = &stack.websocket_url {
        eprintln!("  WebSocket API   {url}?stream=<id>");
    }
    if let Some(url) = &stack.management_endpoint {
        eprintln!("  @connections    {url}/@connections/<id>");
    }
    if let Some(url) = &stack.web_url {
        eprintln!("  browser client  {url}");
    }
    for mapping in &stack.mappings {
        eprintln!(
            "  {} <- {} (batch {}, group {})",
            mapping.mapping.function,
            mapping.mapping.topic,
            mapping.mapping.batch_size,
            mapping.mapping.consumer_group
        );
    }
    eprintln!("Press Ctrl-C to stop.");
    tokio::signal::ctrl_c().await?;
    eprintln!("stopping...");
    stack.stop().await;
    Ok(())
}
