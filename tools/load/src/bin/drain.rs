//! `emostream-drain`: the aggregate drain benchmark (see `load::drain`). Run under
//! `local/servers.sh run` (or `make drain`) so the broker and MongoDB are up.

use clap::Parser;
use load::drain::{DrainPlan, drain};
use std::path::PathBuf;

/// Produce a backlog of reactions, drain it with the release aggregate binary through the local
/// event source mapping, and print the rate, MongoDB round trips per batch and whether the
/// counts are exact.
#[derive(Debug, Parser)]
#[command(name = "emostream-drain")]
struct Cli {
    /// Records in the backlog.
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Streams the records are spread over.
    #[arg(long, default_value_t = 1)]
    streams: u32,
    /// Partitions of the reaction topic.
    #[arg(long, default_value_t = 3)]
    partitions: i32,
    /// Keys per stream, as ingest's STREAM_SHARDS.
    #[arg(long, default_value_t = 1)]
    shards: u16,
    /// Most records per invocation (the template's BatchSize).
    #[arg(long, default_value_t = 500)]
    batch_size: usize,
    /// Distinct viewers per stream.
    #[arg(long, default_value_t = 100_000)]
    viewers: u32,
    /// Reactions per second of event time the backlog stands for.
    #[arg(long, default_value_t = 20_000)]
    event_rate: u64,
    /// The aggregate function's MAX_TAPS_PER_VIEWER_PER_WINDOW (fair use; 0 turns it off).
    #[arg(long, default_value_t = 40)]
    max_taps_per_viewer: u64,
    /// Records without idempotency keys (by default each carries one, as the page sends them).
    #[arg(long)]
    unkeyed: bool,
    #[arg(long, default_value = "template.yaml")]
    template: PathBuf,
    /// Where the release function binaries are.
    #[arg(long, default_value = "target/release")]
    binaries: PathBuf,
    /// Also write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    // Warnings of the event source and the Kafka client (RUST_LOG to see more).
    if std::env::var_os("RUST_LOG").is_none() {
        // SAFETY: set before any other thread exists.
        unsafe { std::env::set_var("RUST_LOG", "warn") };
    }
    reactions::telemetry::init_json_logs();
    let env = |name: &str| {
        std::env::var(name)
            .map_err(|_| format!("{name} is not set (run under local/servers.sh run)"))
    };
    if cli.records == 0 || cli.batch_size == 0 || cli.partitions < 1 || cli.viewers == 0 {
        return Err("--records, --batch-size, --partitions and --viewers must be positive".into());
    }
    let plan = DrainPlan {
        template: cli.template,
        binaries: cli.binaries,
        kafka_brokers: env("KAFKA_BROKERS")?,
        mongodb_uri: env("MONGODB_URI")?,
        records: cli.records,
        streams: cli.streams,
        partitions: cli.partitions,
        shards: cli.shards,
        batch_size: cli.batch_size,
        viewers: cli.viewers,
        event_rate: cli.event_rate,
        max_taps_per_viewer: cli.max_taps_per_viewer,
        keyed: !cli.unkeyed,
        logs: PathBuf::from("target/drain-logs"),
    };
    let report = drain(&plan).await?;
    println!("{report}");
    if let Some(path) = cli.json {
        std::fs::write(&path, serde_json::to_vec_pretty(&report)?)?;
    }
    if !report.exact {
        std::process::exit(1);
    }
    Ok(())
}
