//! The local stack for end-to-end tests: the real function binaries (built once per test
//! process), isolated per test by a stack name (consumer groups), topics and a database of its
//! own, against the shared Kafka-wire and MongoDB-wire servers. Also a WebSocket client as a
//! browser would use it.

use crate::{repo_root, servers, unique_name};
use emostream_local::event_api::client::next_text;
use emostream_local::event_source::MappingOptions;
use emostream_local::stack::{LocalStack, StackOptions};
use futures::SinkExt;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// The directory holding freshly built `ingest`, `aggregate` and `notify` binaries. Builds them
/// (a no-op when `cargo test --workspace` already did) on first use.
pub fn function_binaries() -> &'static Path {
    static DIRECTORY: OnceLock<PathBuf> = OnceLock::new();
    DIRECTORY.get_or_init(|| {
        eprintln!("building the function binaries (cargo build --workspace --bins --tests)...");
        let status = Command::new(env!("CARGO"))
            .args(["build", "--workspace", "--bins", "--tests"])
            .current_dir(repo_root())
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build --workspace --bins failed");
        // Test binaries live in target/<profile>/deps; the function binaries one level up.
        let exe = std::env::current_exe().expect("test executable path");
        exe.parent()
            .and_then(Path::parent)
            .expect("target/<profile>")
            .to_path_buf()
    })
}

/// A stack of its own for one test.
pub struct TestStack {
    pub stack: LocalStack,
    /// The MongoDB database the functions use.
    pub database: String,
    pub reaction_topic: String,
    /// Where aggregate publishes window states and moments, and notify reads them.
    pub output_topic: String,
}

impl TestStack {
    /// Starts a stack named after `name`; `adjust` may change any option before start.
    pub async fn start(name: &str, adjust: impl FnOnce(&mut StackOptions)) -> Self {
        let servers = servers();
        let stack_name = unique_name(name);
        let mut database = unique_name(name);
        database.truncate(60);
        let mut options = StackOptions::new(
            repo_root().join("template.yaml"),
            function_binaries().to_path_buf(),
            &servers.kafka_brokers,
            &servers.mongodb_uri,
        );
        let reaction_topic = format!("{stack_name}-reactions");
        let output_topic = format!("{stack_name}-states");
        for (parameter, value) in [
            ("AWS::StackName", stack_name.clone()),
            ("ReactionTopic", reaction_topic.clone()),
            ("OutputTopic", output_topic.clone()),
            ("DeadLetterTopic", format!("{stack_name}-dlq")),
        ] {
            options.local.parameters.insert(parameter.to_owned(), value);
        }
        options
            .local
            .variables
            .insert("MONGODB_DATABASE".into(), database.clone());
        // The sample events' reactions lie in January 2026: with the default 168 h their windows
        // would already be past `expires_at`, and MongoDB's TTL sweep could delete them mid-test.
        options.local.variables.insert(
            "WINDOW_RETENTION_HOURS".into(),
            crate::fixtures::FIXTURE_RETENTION_HOURS.into(),
        );
        // The functions' own produce timeouts (2 s for ingest) are set for an idle broker; on a
        // busy machine they would answer 503 or fail batches by chance. Still under ingest's
        // 10 s function timeout.
        options
            .local
            .variables
            .insert("PRODUCE_TIMEOUT_MS".into(), "8000".into());
        // Tests read back or count everything they sent (fair use sends half a million
        // records): keep every record whatever bound the servers' script suggests.
        options.topic_retention_bytes = Some(0);
        options.mapping = MappingOptions {
            batching_window: Some(Duration::from_millis(50)),
            first_backoff: Duration::from_millis(100),
            ..MappingOptions::default()
        };
        // Function output would bypass the test harness's capture; keep it in files instead.
        options.function_logs = Some(
            function_binaries()
                .join("test-function-logs")
                .join(&stack_name),
        );
        adjust(&mut options);
        let stack = LocalStack::start(options)
            .await
            .expect("local stack starts");
        assert!(
            stack.wait_ready(crate::patience::PATIENCE).await,
            "event source mappings got no partitions"
        );
        Self {
            stack,
            database,
            reaction_topic,
            output_topic,
        }
    }

    /// A client of the `@connections` API, signing (SigV4) as the operator, whose
    /// credentials may call it; the functions sign with their own roles'.
    pub fn connections(&self) -> emostream_local::api_gateway::admin_client::AdminClient {
        let endpoint = self
            .stack
            .management_endpoint
            .as_deref()
            .expect("a WebSocket API");
        emostream_local::api_gateway::admin_client::AdminClient::local(endpoint)
    }

    /// The `@connections` path of connection `id` (escaped as a path segment), for
    /// [`TestStack::connections`].
    pub fn connection_path(&self, id: &str) -> String {
        let escaped = id
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D");
        format!("/@connections/{escaped}")
    }

    /// Where the stack's functions keep their data.
    pub fn mongo(&self) -> reactions::mongo::MongoSettings {
        reactions::mongo::MongoSettings {
            uri: servers().mongodb_uri.clone(),
            database: self.database.clone(),
        }
    }

    /// The WebSocket URL for `stream`.
    pub fn websocket_url(&self, stream: &str) -> String {
        format!(
            "{}?stream={stream}",
            self.stack
                .websocket_url
                .as_deref()
                .expect("a WebSocket API")
        )
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A browser-like WebSocket client.
pub struct WsClient {
    socket: Socket,
}

impl WsClient {
    /// Connects; the handshake's HTTP status when refused.
    pub async fn connect(url: &str) -> Result<Self, u16> {
        match tokio_tungstenite::connect_async(url).await {
            Ok((socket, _)) => Ok(Self { socket }),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                Err(response.status().as_u16())
            }
            Err(other) => panic!("WebSocket connect to {url} failed: {other}"),
        }
    }

    /// Sends a text frame.
    pub async fn send(&mut self, text: &str) {
        self.socket
            .send(Message::Text(text.into()))
            .await
            .expect("send a frame");
    }

    /// The next text frame as JSON, `Err(Some(code))` when the server closed the connection,
    /// `Err(None)` after `timeout`.
    pub async fn next_json(&mut self, timeout: Duration) -> Result<Value, Option<u16>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let text = next_text(&mut self.socket, deadline).await?;
        Ok(serde_json::from_str(&text).expect("frames are JSON"))
    }
}
