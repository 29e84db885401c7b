//! `emostream-replay`: how fast `GET /streams/{id}/replay` answers for a long recording, and how
//! large the answer is. It stores a finished stream of `--hours` with taps in every window of
//! `--window-ms` (every emoji of the default catalogue in each), starts the local stack (release
//! binaries, AWS quotas on) with that window width, asks for the whole stream at the window's
//! resolution `--requests` times one after another, and prints the latency percentiles and the
//! body size. Run under `local/servers.sh run` (or `make replay-figures`).

use clap::Parser;
use emostream_local::stack::{LocalStack, StackOptions};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use indicatif::ProgressBar;
use mongodb::bson::{Document, doc};
use reactions::emoji::DEFAULT_CATALOGUE;
use reactions::mongo::{MongoSettings, StreamStore, connect};
use reactions::stream_registry::{StreamChanges, Transition};
use reactions::{EmojiCatalogue, StreamId};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
#[command(name = "emostream-replay")]
struct Cli {
    /// Length of the stored stream.
    #[arg(long, default_value_t = 3.0)]
    hours: f64,
    /// The window width (WINDOW_WIDTH_MS), which is also the resolution asked.
    #[arg(long, default_value_t = 1_000)]
    window_ms: i64,
    /// Requests to time.
    #[arg(long, default_value_t = 200)]
    requests: usize,
    #[arg(long, default_value = "template.yaml")]
    template: PathBuf,
    /// Where the release function binaries are.
    #[arg(long, default_value = "target/release")]
    binaries: PathBuf,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    if std::env::var_os("RUST_LOG").is_none() {
        // SAFETY: set before any other thread exists.
        unsafe { std::env::set_var("RUST_LOG", "warn") };
    }
    reactions::telemetry::init_json_logs();
    let env = |name: &str| {
        std::env::var(name)
            .map_err(|_| format!("{name} is not set (run under local/servers.sh run)"))
    };
    if cli.hours <= 0.0 || cli.window_ms < 100 || cli.requests == 0 {
        return Err("--hours, --window-ms (at least 100) and --requests must be positive".into());
    }
    let mongodb_uri = env("MONGODB_URI")?;
    let database_name = format!("replay_{}", std::process::id());
    let mongo = MongoSettings {
        uri: mongodb_uri.clone(),
        database: database_name.clone(),
    };
    let database = connect(&mongo, "emostream-replay").await?;
    let stream = "recording";
    let windows = (cli.hours * 3_600_000.0 / cli.window_ms as f64).round() as i64;
    let now = reactions::clock::now_ms();
    // Ended two hours ago, so the range is settled (and cached for good by a CDN).
    let ended = now - now.rem_euclid(cli.window_ms) - 2 * 3_600_000;
    let started = ended - windows * cli.window_ms;
    let catalogue = EmojiCatalogue::parse(DEFAULT_CATALOGUE)?;
    let emojis: Vec<String> = catalogue
        .emojis()
        .iter()
        .map(|e| e.name.as_str().to_owned())
        .collect();
    let id = StreamId::parse("stream", stream)?;
    let registry = StreamStore::new(&database);
    let changes = StreamChanges {
        title: Some("A recording".into()),
        ..StreamChanges::default()
    };
    registry.put(&id, &changes, &catalogue, started).await?;
    registry.transition(&id, Transition::Start, started).await?;
    registry.transition(&id, Transition::End, ended).await?;
    eprintln!("storing {windows} windows of {} ms...", cli.window_ms);
    let progress = ProgressBar::new(u64::try_from(windows)?);
    let collection = database.collection::<Document>("windows");
    for chunk in (0..windows).collect::<Vec<_>>().chunks(1_000) {
        let documents: Vec<Document> = chunk
            .iter()
            .map(|w| {
                let start = started + w * cli.window_ms;
                let mut counts = Document::new();
                let mut total = 0_i64;
                for (i, emoji) in emojis.iter().enumerate() {
                    // Varied, two- to four-digit counts: a busy stream's window.
                    let n = 10 + (w * 7 + i as i64 * 13) % 990;
                    counts.insert(emoji.as_str(), n);
                    total += n;
                }
                doc! {
                    "stream": stream, "start_ms": start, "end_ms": start + cli.window_ms,
                    "counts": counts, "total": total, "final": true,
                }
            })
            .collect();
        collection.insert_many(documents).await?;
        progress.inc(chunk.len() as u64);
    }
    progress.finish_and_clear();

    let mut options = StackOptions::new(
        cli.template.clone(),
        cli.binaries.clone(),
        &env("KAFKA_BROKERS")?,
        &mongodb_uri,
    );
    options.function_logs = Some(PathBuf::from("target/replay-logs"));
    options
        .local
        .variables
        .insert("MONGODB_DATABASE".into(), database_name.clone());
    options
        .local
        .parameters
        .insert("WindowWidthMs".into(), cli.window_ms.to_string());
    eprintln!("starting the local stack...");
    let stack = LocalStack::start(options).await?;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let url = format!(
        "{}/streams/{stream}/replay?resolution={}",
        stack.http_url, cli.window_ms
    );
    let get = || async {
        let request = hyper::Request::get(&url).body(Full::new(Bytes::new()))?;
        let started = Instant::now();
        let response = client.request(request).await?;
        let status = response.status();
        let cache = response
            .headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = response.into_body().collect().await?.to_bytes();
        let took = started.elapsed();
        if !status.is_success() {
            return Err(format!("{url}: HTTP {status}: {}", String::from_utf8_lossy(&body)).into());
        }
        Ok::<_, Box<dyn std::error::Error>>((took, body, cache))
    };
    // The first answer is checked whole; a few warm the function's connections.
    let (_, body, cache) = get().await?;
    let answer: serde_json::Value = serde_json::from_slice(&body)?;
    let buckets = answer["buckets"].as_array().map_or(0, Vec::len);
    if buckets as i64 != windows {
        return Err(format!("expected {windows} buckets, got {buckets}").into());
    }
    for _ in 0..5 {
        get().await?;
    }
    let progress = ProgressBar::new(cli.requests as u64);
    let mut took: Vec<Duration> = Vec::with_capacity(cli.requests);
    for _ in 0..cli.requests {
        took.push(get().await?.0);
        progress.inc(1);
    }
    progress.finish_and_clear();
    took.sort();
    let at = |q: f64| took[((took.len() as f64 * q).ceil() as usize).clamp(1, took.len()) - 1];
    let ms = |d: Duration| d.as_secs_f64() * 1_000.0;
    println!(
        "GET /streams/{{id}}/replay, a {:.1}-hour stream of {} ms windows ({windows} windows, {} emojis each) at {} ms resolution, with its heatmap",
        cli.hours,
        cli.window_ms,
        emojis.len(),
        cli.window_ms
    );
    println!(
        "  {} requests one at a time through the local stack (release ingest, AWS quotas on): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        took.len(),
        ms(at(0.50)),
        ms(at(0.99)),
        ms(at(1.0))
    );
    println!(
        "  body {} bytes ({:.2} MB); Cache-Control: {cache}",
        body.len(),
        body.len() as f64 / 1_048_576.0
    );
    stack.stop().await;
    database.drop().await?;
    Ok(())
}
