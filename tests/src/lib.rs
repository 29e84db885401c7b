//! The test harness: gives every integration test a real Kafka-wire broker and a real
//! MongoDB-wire server. It reuses the servers named by `KAFKA_BROKERS` and `MONGODB_URI` (what
//! `make test` sets), and otherwise starts a private pair through `local/servers.sh`, which stops
//! them when this test process exits. Tests isolate themselves with unique topic and database
//! names, so they can run in parallel against one pair of servers.

pub mod broker_process;
pub mod browser_script;
pub mod connections_server;
pub mod deployments;
pub mod fixtures;
pub mod http_client;
pub mod iam_reference;
pub mod live_counts;
pub mod local_stack;
pub mod patience;
pub mod topic_admin;
pub mod topic_reader;

use reactions::kafka::KafkaSettings;
use reactions::mongo::MongoSettings;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Addresses of the servers under test.
#[derive(Debug, Clone)]
pub struct TestServers {
    /// `host:port` of the Kafka-wire broker.
    pub kafka_brokers: String,
    /// MongoDB connection string.
    pub mongodb_uri: String,
}

/// The repository root (this crate lives in `tests/`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The path of a tool `local/aws-tools.sh` installs (its `NAME=` line), installing what is
/// missing first.
pub fn aws_tool(name: &str) -> String {
    let output = Command::new(repo_root().join("local/aws-tools.sh"))
        .output()
        .expect("run local/aws-tools.sh");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let prefix = format!("{name}=");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| panic!("local/aws-tools.sh names no {name}"))
}

fn start_private_servers() -> TestServers {
    let script = repo_root().join("local/servers.sh");
    let output = Command::new(&script)
        .arg("start")
        .arg("--owner-pid")
        .arg(std::process::id().to_string())
        .output()
        .unwrap_or_else(|e| panic!("could not run {}: {e}", script.display()));
    assert!(
        output.status.success(),
        "{} start failed:\n{}",
        script.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let value = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("servers.sh printed no {name}: {stdout}"))
            .to_owned()
    };
    TestServers {
        kafka_brokers: value("KAFKA_BROKERS"),
        mongodb_uri: value("MONGODB_URI"),
    }
}

/// The servers for this test process, started on first use unless given by the environment.
pub fn servers() -> &'static TestServers {
    static SERVERS: OnceLock<TestServers> = OnceLock::new();
    SERVERS.get_or_init(|| {
        let given = |var: &str| std::env::var(var).ok().filter(|v| !v.is_empty());
        match (given("KAFKA_BROKERS"), given("MONGODB_URI")) {
            (Some(kafka_brokers), Some(mongodb_uri)) => TestServers {
                kafka_brokers,
                mongodb_uri,
            },
            _ => start_private_servers(),
        }
    })
}

/// A name no other test (in this or a concurrent run) uses: for topics, groups and databases.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

impl TestServers {
    /// Kafka settings for a client named `client_id`.
    pub fn kafka(&self, client_id: &str) -> KafkaSettings {
        KafkaSettings::new(&self.kafka_brokers, client_id)
    }

    /// MongoDB settings for a fresh database of its own.
    pub fn mongo(&self, database_prefix: &str) -> MongoSettings {
        // MongoDB database names are limited to 64 bytes.
        let mut database = unique_name(database_prefix);
        database.truncate(60);
        MongoSettings {
            uri: self.mongodb_uri.clone(),
            database,
        }
    }
}

/// A loopback port with nothing listening on it: for "server is down" tests.
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let port = listener.local_addr().expect("local address").port();
    drop(listener);
    port
}
