//! `emostream-console`: the broadcaster console for a deployed API. Serves the pages of `web/`
//! on this machine with a `config.json` naming the API, and the signing helper
//! (`emostream_local::admin_signer`) that signs the console's admin calls with the
//! administrator's own AWS credentials, read from the environment (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`; `aws configure export-credentials --format env`
//! prints them for a profile or an SSO session), for the region in the API's name. It listens on
//! loopback only. The local stack serves the same console and helper itself, signing as its
//! operator (whose credentials are the local stack's well-known ones).

use clap::Parser;
use emostream_local::admin_signer;
use emostream_local::api_gateway::admin_client::AdminClient;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Serve the broadcaster console for a deployed emostream API.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// The HTTP API's URL (the stack's `HttpApiUrl` output).
    #[arg(long)]
    api: String,
    /// The WebSocket API's URL, for the console's links to the live page.
    #[arg(long)]
    websocket: Option<String>,
    /// Directory of the pages.
    #[arg(long, default_value = "web")]
    web: PathBuf,
    /// Where to serve the console, a loopback address: anything that reaches it acts as the
    /// administrator.
    #[arg(long, default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    reactions::telemetry::init_json_logs();
    let cli = Cli::parse();
    if !cli.listen.ip().is_loopback() {
        eprintln!(
            "emostream-console: --listen {} is not a loopback address: anything that reaches the console acts as the administrator",
            cli.listen
        );
        std::process::exit(2);
    }
    let api = cli.api.trim_end_matches('/').to_owned();
    let admin = match AdminClient::for_administrator(&api) {
        Ok(admin) => admin,
        Err(error) => {
            eprintln!("emostream-console: {error}");
            std::process::exit(2);
        }
    };
    let shown_key: String = admin.access_key_id().chars().take(8).collect();
    let config = serde_json::json!({
        "apiUrl": api,
        "websocketUrl": cli.websocket,
        "adminUrl": admin_signer::PATH,
        "adminIdentity": format!("the credentials of access key {shown_key}… in the environment"),
    });
    let router = admin_signer::site_with_helper(&cli.web, config, admin);
    let listener = tokio::net::TcpListener::bind(cli.listen).await?;
    eprintln!(
        "broadcaster console: http://{}/console.html (admin calls signed for {api})",
        listener.local_addr()?
    );
    axum::serve(listener, router).await?;
    Ok(())
}
