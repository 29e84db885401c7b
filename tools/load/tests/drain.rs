//! The drain benchmark against the real Kafka-wire broker and MongoDB-wire server, small: a
//! sharded backlog of two streams over three partitions is drained by the aggregate binary
//! through the local event source, with exact counts and the per-batch figures filled in.

use emostream_tests::local_stack::function_binaries;
use emostream_tests::{repo_root, servers};
use load::drain::{DrainPlan, drain};

/// A plan for a small backlog of two streams, sharded over three partitions, logging to `logs`.
fn small_plan(logs: &std::path::Path) -> DrainPlan {
    DrainPlan {
        template: repo_root().join("template.yaml"),
        binaries: function_binaries().to_path_buf(),
        kafka_brokers: servers().kafka_brokers.clone(),
        mongodb_uri: servers().mongodb_uri.clone(),
        records: 3_000,
        streams: 2,
        partitions: 3,
        shards: 3,
        batch_size: 200,
        viewers: 500,
        event_rate: 1_000,
        max_taps_per_viewer: 40,
        keyed: true,
        logs: logs.to_path_buf(),
    }
}

/// Both drains share the template's topic and consumer group, so they run one after the other.
#[tokio::test]
async fn backlogs_drain_with_exact_counts_and_their_figures() {
    a_sharded_backlog_drains_with_exact_counts_and_its_figures().await;
    a_backlog_larger_than_a_quick_fetch_drains().await;
}

async fn a_sharded_backlog_drains_with_exact_counts_and_its_figures() {
    let logs = std::env::temp_dir().join(format!("emostream-drain-test-{}", std::process::id()));
    let plan = small_plan(&logs);
    let report = drain(&plan).await.unwrap();
    assert!(report.exact, "{report}");
    assert!(report.taps_produced > 3_000, "{report}");
    // 3,000 records in batches of at most 200, over the partitions the shards landed on.
    assert!(report.batches >= 15, "{report}");
    // Fair use is on by default: a tally read and a tally write beside the windows' write.
    assert!(report.mongo_round_trips_per_batch >= 3.0, "{report}");
    assert!(report.window_statements_per_batch >= 1.0, "{report}");
    assert!(report.viewer_state_statements_per_batch >= 1.0, "{report}");
    assert!(report.function_ms_per_batch > 0.0, "{report}");
    std::fs::remove_dir_all(logs).ok();
}

/// A backlog too large for the broker to answer in one quick fetch (it answers with every
/// record from the offset on): the event source's fetch pacing must wait for that fetch, not
/// pause the partition and throw its answer away, over and over. One stream with one shard
/// puts all of it on one partition.
async fn a_backlog_larger_than_a_quick_fetch_drains() {
    let logs =
        std::env::temp_dir().join(format!("emostream-drain-large-test-{}", std::process::id()));
    let plan = DrainPlan {
        records: 100_000,
        streams: 1,
        shards: 1,
        batch_size: 5_000,
        ..small_plan(&logs)
    };
    let report = drain(&plan).await.unwrap();
    assert!(report.exact, "{report}");
    assert!(report.batches >= 20, "{report}");
    std::fs::remove_dir_all(logs).ok();
}
