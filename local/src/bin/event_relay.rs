//! `emostream-event-relay`: serves the real-time endpoint of a local stack's AppSync Events API
//! from another process, so one machine can hold more subscribers than one process may have
//! connections (see `emostream_local::event_api::relay`). Subscribers connect to it exactly as to
//! the stack, with the stack's API key; it takes no publishes.

use clap::Parser;
use emostream_local::event_api::relay::{Upstream, relay};
use emostream_local::event_api::{AuthType, EventApi, EventApiLimits, EventApiSpec, NamespaceAuth};
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// Relay a local AppSync Events API's subscriptions.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// The upstream real-time endpoint, ws://{host}/event/realtime.
    #[arg(long)]
    upstream: String,
    /// The upstream API's HTTP host (host:port).
    #[arg(long)]
    upstream_host: String,
    /// The API key subscribers use (the upstream's).
    #[arg(long, env = "EVENT_API_KEY")]
    api_key: String,
    /// Address to serve /event/realtime on.
    #[arg(long, default_value = "127.0.0.1:3003")]
    listen: SocketAddr,
    /// The channel namespace subscribers may subscribe to.
    #[arg(long, default_value = "streams")]
    namespace: String,
    /// New connections per second this relay admits: its share of the API's 2,000 when
    /// several processes serve one API.
    #[arg(long, default_value_t = 1_000)]
    connects_per_second: u32,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    reactions::telemetry::init_json_logs();
    let cli = Cli::parse();
    let spec = EventApiSpec {
        connection: vec![AuthType::ApiKey],
        namespaces: BTreeMap::from([(
            cli.namespace.clone(),
            NamespaceAuth {
                publish: Vec::new(),
                subscribe: vec![AuthType::ApiKey],
                subscribe_segments: None,
            },
        )]),
        openid_connect: None,
    };
    let limits = EventApiLimits {
        connects_per_second: cli.connects_per_second,
        ..EventApiLimits::default()
    };
    let (api, patterns) = EventApi::relayed(spec, &cli.api_key, limits);
    let listener = tokio::net::TcpListener::bind(cli.listen).await?;
    eprintln!(
        "relaying {} on ws://{}/event/realtime",
        cli.upstream,
        listener.local_addr()?
    );
    let upstream = Upstream {
        realtime_url: cli.upstream,
        http_host: cli.upstream_host,
        api_key: cli.api_key,
    };
    let relaying = tokio::spawn(relay(api.clone(), patterns, upstream));
    let serving = axum::serve(
        listener,
        api.realtime_router()
            .into_make_service_with_connect_info::<SocketAddr>(),
    );
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        served = serving => served?,
        _ = relaying => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    eprintln!("{}", api.stats.summary());
    Ok(())
}
