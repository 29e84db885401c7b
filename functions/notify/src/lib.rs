//! The notify function: one binary for two kinds of event, told apart by their shape.
//! API Gateway WebSocket route events (`$connect`, `$disconnect`, and the actions `subscribe`,
//! `sync`, `ping`) keep the `connections` collection and answer browsers; Kafka events from
//! `emoji-output-topic` carry absolute window states, which are coalesced and pushed to every
//! connection watching their stream through the `@connections` management API, or, in
//! `AppSyncEvents` delivery, published once per stream to an AWS AppSync Events channel. A
//! scheduled event (`{"emostream":"sweep"}`, every minute) runs the sweeper, which makes the
//! pushes owed to streams that no batch comes for.

pub mod config;
pub mod event_api;
pub mod fanout;
pub mod management;
pub mod moment_push;
pub mod protocol;
pub mod publish;
pub mod push;
pub mod schedule;
mod sweeper;
mod websocket;

use aws_config::SdkConfig;
use aws_lambda_events::event::apigw::ApiGatewayWebsocketProxyRequest;
use aws_lambda_events::event::kafka::KafkaEvent;
use config::{Delivery, NotifyConfig};
use event_api::EventApi;
use fanout::{FanoutReport, PostPolicy};
use management::ConnectionsApi;
use push::{PushPolicy, PushTargets, push_batch};
use reactions::clock::elapsed_ms;
use reactions::decode_kafka_event;
use reactions::message::{MomentRecord, WindowStateRecord};
use reactions::metrics::MetricsLine;
use reactions::mongo::{ConnectionStore, IndexesOnce, PushSlots, StoreError, WindowStore};
use reactions::viewer_identity::TokenVerifier;
use serde::Serialize;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The WebSocket route keys notify handles: template.yaml's routes must be exactly these (a test
/// checks), and every key that is not `$`-prefixed is a client action of [`protocol`].
pub const ROUTE_KEYS: [&str; 6] = [
    "$connect",
    "$disconnect",
    "$default",
    "subscribe",
    "sync",
    "ping",
];

/// The kinds of event notify receives.
#[derive(Debug)]
pub enum NotifyEvent {
    /// An API Gateway WebSocket route event.
    WebSocket(Box<ApiGatewayWebsocketProxyRequest>),
    /// A batch from the output topic.
    Kafka(Box<KafkaEvent>),
    /// The schedule's tick: run the sweeper.
    Sweep,
    /// Anything else: refused with an error.
    Unknown,
}

/// Classifies a raw event by its shape.
pub fn classify(event: Value) -> NotifyEvent {
    if event.get("emostream").and_then(Value::as_str) == Some("sweep") {
        return NotifyEvent::Sweep;
    }
    if event
        .pointer("/requestContext/routeKey")
        .and_then(Value::as_str)
        .is_some()
        && event.pointer("/requestContext/connectionId").is_some()
    {
        return match serde_json::from_value(event) {
            Ok(request) => NotifyEvent::WebSocket(Box::new(request)),
            Err(_) => NotifyEvent::Unknown,
        };
    }
    if event.get("records").is_some()
        && event.get("eventSource").is_some()
        && let Ok(kafka) = serde_json::from_value::<KafkaEvent>(event)
    {
        return NotifyEvent::Kafka(Box::new(kafka));
    }
    NotifyEvent::Unknown
}

/// Why an invocation failed. For Kafka batches an error makes the event source retry the batch;
/// for WebSocket routes API Gateway answers 500 (and refuses a `$connect`).
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// Neither a WebSocket route event nor a Kafka event.
    #[error("event is neither an API Gateway WebSocket event nor a Kafka event")]
    UnknownEvent,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Config(#[from] reactions::ConfigError),
    #[error("cannot build the AppSync Events client: {0}")]
    EventApi(#[from] event_api::PublishError),
}

/// What one Kafka batch did; also the invocation's response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BatchSummary {
    /// Valid window states in the batch.
    pub window_states: usize,
    /// Moment changes in the batch (see `moment_push`).
    pub moments: usize,
    /// Records that were neither window states nor moments (logged and skipped).
    pub malformed: usize,
    /// Distinct (stream, window) states after coalescing.
    pub coalesced: usize,
    #[serde(flatten)]
    pub fanout: FanoutReport,
}

/// Connections read from MongoDB per cursor batch during a fan-out.
const CONNECTIONS_PAGE: u32 = 1_000;

/// A 410 from a connection registered this recently is taken for one whose handshake is still
/// completing (API Gateway answers 410 until `$connect` has returned), and it is kept.
pub const HANDSHAKE_GRACE: Duration = Duration::from_secs(30);

/// What a slot's lease adds to the fan-out deadline and one post's timeout.
const LEASE_MARGIN: Duration = Duration::from_secs(1);

/// The function's long-lived state, built once per container.
pub struct Notify {
    config: NotifyConfig,
    connections: ConnectionStore,
    windows: WindowStore,
    slots: PushSlots,
    api: ConnectionsApi,
    /// `AppSyncEvents` delivery: the publish client and the channel namespace.
    events: Option<publish::EventTarget>,
    /// Viewer identity: checks the token a browser connects with.
    viewers: Option<Arc<TokenVerifier>>,
    indexes: Arc<IndexesOnce>,
}

impl Notify {
    /// Builds the clients from `config` and the AWS configuration `sdk` (region and credentials
    /// for signing management API calls). MongoDB being down does not fail the init.
    pub async fn new(config: NotifyConfig, sdk: &SdkConfig) -> Result<Self, NotifyError> {
        let database = reactions::mongo::open(&config.mongo, "emostream-notify").await?;
        let viewers = config
            .identity
            .clone()
            .map(|identity| Arc::new(TokenVerifier::new(identity)));
        let events = match &config.delivery {
            Delivery::WebSocketApi => None,
            Delivery::AppSyncEvents(settings) => Some(publish::EventTarget {
                api: EventApi::new(sdk, &settings.endpoint, config.post_timeout)?,
                namespace: settings.namespace.clone(),
            }),
        };
        let notify = Self {
            events,
            connections: ConnectionStore::new(&database, config.connection_ttl),
            windows: WindowStore::new(&database),
            slots: PushSlots::new(&database),
            api: ConnectionsApi::new(sdk, &config.management_endpoint, config.post_timeout),
            viewers,
            config,
            indexes: Arc::default(),
        };
        notify.create_indexes_in_background();
        Ok(notify)
    }

    /// Creates the `connections` indexes off the request path. Nothing notify does needs them
    /// to exist yet (they make the by-stream query fast and expire old records), so neither the
    /// init nor an event waits for them. Tried at start-up and, until it succeeds, again on
    /// later events; at most one attempt runs at a time.
    fn create_indexes_in_background(&self) {
        let connections = self.connections.clone();
        let slots = self.slots.clone();
        self.indexes.start_in_background(move || async move {
            connections.ensure_indexes().await?;
            slots.ensure_indexes().await
        });
    }

    fn push_policy(&self) -> PushPolicy {
        let lease = (self.config.fanout_deadline + self.config.post_timeout + LEASE_MARGIN)
            .max(schedule::MAX_PUSH_INTERVAL);
        PushPolicy {
            lease,
            post: PostPolicy {
                concurrency: self.config.fanout_concurrency,
                throttle_budget: self.config.throttle_budget,
                page: CONNECTIONS_PAGE,
                handshake_grace: HANDSHAKE_GRACE,
            },
            interval: self.config.push_interval,
            post_budget_per_second: self.config.post_budget_per_second,
            deadline: self.config.fanout_deadline,
        }
    }

    fn push_targets(&self) -> PushTargets<'_> {
        PushTargets {
            connections: &self.connections,
            slots: &self.slots,
            windows: &self.windows,
            domain: &self.config.domain,
            api: &self.api,
            events: self.events.as_ref(),
        }
    }

    /// Handles one event of any kind.
    pub async fn handle(&self, event: Value) -> Result<Value, NotifyError> {
        match classify(event) {
            NotifyEvent::WebSocket(request) => {
                self.create_indexes_in_background();
                self.handle_route(&request).await
            }
            NotifyEvent::Kafka(kafka) => {
                self.create_indexes_in_background();
                let summary = self.handle_batch(&kafka).await?;
                Ok(serde_json::to_value(summary).unwrap_or_default())
            }
            NotifyEvent::Sweep => {
                self.create_indexes_in_background();
                let summary = self.run_sweeper().await?;
                Ok(serde_json::to_value(summary).unwrap_or_default())
            }
            NotifyEvent::Unknown => Err(NotifyError::UnknownEvent),
        }
    }

    /// Pushes the newest state of every window in a batch to the connections watching it.
    pub async fn handle_batch(&self, event: &KafkaEvent) -> Result<BatchSummary, NotifyError> {
        let started = Instant::now();
        let decoded = decode_kafka_event::<WindowStateRecord>(event);
        let total = decoded.len();
        // Moments share the topic; they are decoded only when some record is not a window.
        let as_moments = match decoded.iter().any(|r| r.message.is_err()) {
            true => decode_kafka_event::<MomentRecord>(event),
            false => Vec::new(),
        };
        let mut valid = Vec::with_capacity(total);
        let mut moments = Vec::new();
        for (i, record) in decoded.into_iter().enumerate() {
            let error = match record.message {
                Ok(state) => {
                    valid.push(state);
                    continue;
                }
                Err(error) => error,
            };
            match as_moments.get(i).map(|m| &m.message) {
                Some(Ok(moment)) => moments.push(moment.clone()),
                _ => tracing::warn!(
                    topic = %record.position.topic,
                    partition = record.position.partition,
                    offset = record.position.offset,
                    reason = error.code(),
                    "skipping record that is neither a window state nor a moment: {error}"
                ),
            }
        }
        let window_states = valid.len();
        let moment_count = moments.len();
        let streams = fanout::by_stream(valid);
        let coalesced = streams.iter().map(|(_, windows)| windows.len()).sum();
        let policy = self.push_policy();
        let mut fanout = push_batch(streams, &self.push_targets(), policy, started).await?;
        if !moments.is_empty() {
            // The batch's own deadline: moments come after its windows, not beside them.
            let deadline = started + policy.deadline;
            let pushed =
                moment_push::push_moments(moments, &self.push_targets(), policy.post, deadline)
                    .await?;
            fanout.add(&pushed);
        }
        let summary = BatchSummary {
            window_states,
            moments: moment_count,
            malformed: total - window_states - moment_count,
            coalesced,
            fanout,
        };
        let report = &summary.fanout;
        tracing::info!(
            records = total,
            malformed = summary.malformed,
            moments = summary.moments,
            coalesced,
            streams = report.streams,
            windows = report.windows,
            posts = report.posts,
            delivered = report.delivered,
            gone = report.gone,
            pending = report.pending,
            throttle_retries = report.throttle_retries,
            throttled_out = report.throttled_out,
            failed = report.failed,
            deadline_missed = report.deadline_missed,
            streams_owed = report.streams_owed,
            swept = report.swept,
            interval_ms = report.interval_ms,
            "window states pushed"
        );
        fanout_metrics(report)
            .count("Records", total as u64)
            .count("Malformed", summary.malformed as u64)
            .count("Moments", summary.moments as u64)
            .millis("FanoutLatency", elapsed_ms(started.into_std()))
            .emit();
        Ok(summary)
    }
}

/// The metrics every push report carries, batch or sweep.
fn fanout_metrics(report: &FanoutReport) -> MetricsLine {
    MetricsLine::new("notify")
        .count("Streams", report.streams as u64)
        .count("Posts", report.posts as u64)
        .count("Delivered", report.delivered as u64)
        .count("Gone", report.gone as u64)
        .count("PendingHandshakes", report.pending as u64)
        .count("ThrottleRetries", report.throttle_retries as u64)
        .count("ThrottledOut", report.throttled_out as u64)
        .count("PostFailures", report.failed as u64)
        .count("DeadlineMissed", report.deadline_missed as u64)
        .count("StreamsOwed", report.streams_owed as u64)
        .count("Swept", report.swept as u64)
        .count("WindowsDropped", report.windows_dropped as u64)
        .count("MalformedDocuments", report.malformed_documents as u64)
        .count("BookkeepingFailures", report.bookkeeping_failures as u64)
        .count("SlotsLost", report.slots_lost as u64)
        .millis("PushInterval", report.interval_ms as f64)
}
