//! `emostream-local`: runs the unmodified function binaries behind local emulations of the
//! HTTP API, the WebSocket API and the Kafka event source mappings described in template.yaml.
//! Ctrl-C (or SIGTERM) stops everything it started and prints what the functions did.

use clap::Parser;
use emostream_local::cli::Cli;
use emostream_local::stack::LocalStack;
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    reactions::telemetry::init_json_logs();
    let cli = Cli::parse();
    let live_streams = cli.live_streams.clone();
    let crowds = cli.demo_crowds.clone();
    let recordings = cli.demo_recordings.clone();
    let options = cli.into_options();
    let quotas = options.quotas;
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
    let admin = emostream_local::api_gateway::admin_client::AdminClient::local(&stack.http_url);
    for id in live_streams.iter().chain(&crowds).chain(&recordings) {
        if let Err(error) = admin.register_live(id, id, None).await {
            eprintln!("emostream-local: could not register stream {id}: {error}");
            std::process::exit(2);
        }
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
    if let (Some(url), Some(api)) = (&stack.event_realtime_url, &stack.event_api) {
        eprintln!(
            "  AppSync Events  {url} (API key {}), publish on http://{}/event",
            api.api_key(),
            stack.event_http_host.as_deref().unwrap_or("")
        );
        eprintln!(
            "  delivery        AppSyncEvents: notify publishes once per stream to /streams/<id>"
        );
    } else {
        eprintln!("  delivery        WebSocketApi: notify posts to each connection");
    }
    if let Some(issuer) = &stack.demo_issuer {
        eprintln!(
            "  identity        demo issuer {} (sign in: POST {}/sign-in {{\"viewer\": \"<name>\"}})",
            issuer.issuer(),
            issuer.issuer()
        );
    }
    if let Some(url) = &stack.web_url {
        eprintln!("  browser client  {url}");
        eprintln!("  console         {url}console.html (admin calls signed as the local operator)");
    }
    if !live_streams.is_empty() {
        eprintln!("  live streams    {}", live_streams.join(", "));
    }
    for id in &crowds {
        tokio::spawn(emostream_local::demo_crowd::run(
            stack.http_url.clone(),
            id.clone(),
            stack.demo_issuer.clone(),
            None,
        ));
        eprintln!(
            "  demo crowd      {id}: about 30 taps/s, five times that for 10 s every two minutes from 75 s (a moment each)"
        );
    }
    for id in &recordings {
        let (api, admin) = (stack.http_url.clone(), admin.clone());
        let (id, issuer) = (id.clone(), stack.demo_issuer.clone());
        let recording = emostream_local::demo_crowd::RECORDING_FOR;
        eprintln!(
            "  demo recording  {id}: a crowd for {} s with two moments, then the stream ends (replay: {}replay.html?stream={id})",
            recording.as_secs(),
            stack.web_url.clone().unwrap_or_default()
        );
        tokio::spawn(async move {
            emostream_local::demo_crowd::run(api, id.clone(), issuer, Some(recording)).await;
            if let Err(error) = admin.end(&id).await {
                eprintln!("emostream-local: could not end stream {id}: {error}");
            }
        });
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
    if quotas.account_rps == 0 && quotas.post_latency.is_zero() {
        eprintln!("  AWS quotas      off (--no-aws-quotas): faster than AWS");
    } else {
        eprintln!(
            "  AWS quotas      {} requests/s (burst {}) shared by both APIs and @connections, {} connects/s, {} ms per @connections call",
            quotas.account_rps,
            quotas.account_burst,
            quotas.connects_per_second,
            quotas.post_latency.as_millis()
        );
    }
    eprintln!("Press Ctrl-C to stop.");
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        stopped = tokio::signal::ctrl_c() => stopped?,
        _ = terminate.recv() => {}
    }
    eprintln!("stopping...");
    for line in stack.summary() {
        eprintln!("  {line}");
    }
    eprintln!("  {}", stack.quotas.refusals());
    if let Some(api) = &stack.event_api {
        eprintln!("  {}", api.stats.summary());
    }
    stack.stop().await;
    Ok(())
}
