//! An AWS AppSync Events API, as the template's `AWS::AppSync::Api` describes it, for the
//! `AppSyncEvents` delivery mode: the HTTP publish endpoint (`POST /event`, see [`publish`]) and
//! the real-time WebSocket endpoint (`/event/realtime`, see [`realtime`]) on one port, with the
//! template's channel namespaces and their auth modes (API key, IAM with real SigV4 checks).
//! One publish reaches every subscription whose channel or wildcard matches, as AWS fans out.
//!
//! Limits that change behaviour are AWS's (AWS AppSync Events Developer Guide: "Service
//! quotas", "AWS AppSync Events concepts" and "Understanding the Event API WebSocket protocol"):
//! 2,000 new connections/s, 10,000 inbound events/s per API, 5 events per publish, 240 KB per
//! event, and `connectionTimeoutMs` 300,000 in the `connection_ack`. Two are this emulation's
//! own, as the guide gives no figure: a `ka` every minute (AWS's client library alerts after
//! 65 s without one) and 100 subscriptions per connection (AppSync's GraphQL real-time quota).
//! A subscriber that stops reading is dropped: one that answers no WebSocket ping for the
//! connection timeout, or whose unsent frames pile up past [`EventApiLimits::outbox_frames`].

pub mod client;
pub mod publish;
pub mod realtime;
mod registry;
pub mod relay;

use crate::api_gateway::quotas::TokenBucket;
use crate::iam::ServiceIam;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{any, post};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::mpsc;

/// The limits the emulation enforces; the defaults are AWS's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EventApiLimits {
    /// Interval of the `ka` message (and of the WebSocket ping that checks the subscriber).
    pub keep_alive: Duration,
    /// A subscriber silent this long (not even a pong) is dropped; also `connectionTimeoutMs`.
    pub connection_timeout: Duration,
    /// New WebSocket connections per second; 0 = none.
    pub connects_per_second: u32,
    /// Events published per second to the API; 0 = none.
    pub inbound_events_per_second: u32,
    /// Subscriptions one connection may hold.
    pub subscriptions_per_connection: usize,
    /// Frames queued for one subscriber before it is dropped as too slow.
    pub outbox_frames: usize,
    /// How long a publish takes before subscribers get it and the publisher its answer: a
    /// signed HTTPS request from Lambda to a regional AWS endpoint, as for `@connections` calls
    /// (10 ms, the low end; AWS gives no figure).
    pub publish_latency: Duration,
}

impl Default for EventApiLimits {
    fn default() -> Self {
        Self {
            keep_alive: Duration::from_secs(60),
            connection_timeout: Duration::from_secs(300),
            connects_per_second: 2_000,
            inbound_events_per_second: 10_000,
            subscriptions_per_connection: 100,
            outbox_frames: 1_024,
            publish_latency: Duration::from_millis(10),
        }
    }
}

impl EventApiLimits {
    /// No connect or publish rate and no publish latency: faster than AWS (`--no-aws-quotas`).
    pub fn without_rates(self) -> Self {
        Self {
            connects_per_second: 0,
            inbound_events_per_second: 0,
            publish_latency: Duration::ZERO,
            ..self
        }
    }
}

/// An authorization mode of the template (`AuthType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AuthType {
    ApiKey,
    Iam,
    /// A JWT from the API's OpenID Connect issuer, for its client id.
    OpenIdConnect,
}

impl AuthType {
    /// The template's name for it; other modes (Cognito, Lambda) are not emulated.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "API_KEY" => Some(Self::ApiKey),
            "AWS_IAM" => Some(Self::Iam),
            "OPENID_CONNECT" => Some(Self::OpenIdConnect),
            _ => None,
        }
    }
}

/// Who may publish to and subscribe on a namespace's channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceAuth {
    pub publish: Vec<AuthType>,
    pub subscribe: Vec<AuthType>,
    /// The channel rule of the namespace's onSubscribe handler: subscriptions must name
    /// exactly this many segments (its `CHANNEL_SEGMENTS`) and no wildcard, else the handler
    /// calls `util.unauthorized()`.
    pub subscribe_segments: Option<usize>,
}

/// The Event API as the template describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventApiSpec {
    /// Modes a WebSocket connection may authorize with.
    pub connection: Vec<AuthType>,
    pub namespaces: BTreeMap<String, NamespaceAuth>,
    /// The OPENID_CONNECT provider's issuer and client id, when the API has one.
    pub openid_connect: Option<OpenIdConnectSpec>,
}

/// An OPENID_CONNECT auth provider (`OpenIDConnectConfig`): tokens must come from `issuer`
/// and be issued for `client_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenIdConnectSpec {
    pub issuer: String,
    pub client_id: String,
}

/// An AppSync error as it appears in answers: `{"errorType","message"}`.
pub fn error_entry(error_type: &str, message: &str) -> Value {
    json!({ "errorType": error_type, "message": message })
}

/// The message AppSync gives for every refused authorization.
pub const UNAUTHORIZED: &str = "You are not authorized to make this call.";

pub(crate) enum Outgoing {
    /// Shared, not copied, when one `data` message goes to many subscribers.
    Text(axum::extract::ws::Utf8Bytes),
    /// A WebSocket ping: a live client's WebSocket stack answers it while it reads.
    Ping,
    Close(u16, &'static str),
}

/// What the API did so far (for the stack's summary, tests and figures).
#[derive(Debug, Default)]
pub struct EventApiStats {
    /// Publish requests answered 200.
    pub publishes: AtomicU64,
    /// Events accepted from publishes.
    pub events: AtomicU64,
    /// `data` messages queued to subscribers.
    pub deliveries: AtomicU64,
    /// Publishes answered 429 (inbound events per second).
    pub throttled_publishes: AtomicU64,
    /// Connections refused by the connects-per-second quota.
    pub refused_connects: AtomicU64,
    /// Subscribers dropped for not answering keep-alive pings.
    pub dropped_unresponsive: AtomicU64,
    /// Subscribers dropped because their unsent frames piled up.
    pub dropped_slow: AtomicU64,
}

impl EventApiStats {
    /// One line for the stack's summary.
    pub fn summary(&self) -> String {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        format!(
            "AppSync Events: {} publishes ({} events), {} deliveries, {} publishes throttled, {} connects refused, {} subscribers dropped unresponsive, {} too slow",
            get(&self.publishes),
            get(&self.events),
            get(&self.deliveries),
            get(&self.throttled_publishes),
            get(&self.refused_connects),
            get(&self.dropped_unresponsive),
            get(&self.dropped_slow),
        )
    }
}

/// The emulated Event API.
pub struct EventApi {
    spec: EventApiSpec,
    api_key: String,
    /// Checks OPENID_CONNECT tokens, when the API has that provider.
    openid_connect: Option<reactions::viewer_identity::TokenVerifier>,
    /// Who may publish with IAM, and the channel namespaces' ARN prefix
    /// (`arn:aws:appsync:{region}:{account}:apis/{api-id}/channelNamespace/`).
    iam: ServiceIam,
    limits: EventApiLimits,
    connects: Option<TokenBucket>,
    inbound: Option<TokenBucket>,
    registry: RwLock<registry::Registry>,
    next_connection: AtomicU64,
    /// Patterns that got their first subscriber, for a relay to subscribe upstream.
    new_patterns: Option<mpsc::UnboundedSender<Vec<String>>>,
    pub stats: EventApiStats,
    /// Channels (`/namespace/segment`) whose next publish is lost on the way (accepted,
    /// delivered to nobody), as a network fault would. Set by tests of clients' self-repair.
    losing: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl EventApi {
    /// An API for `spec` whose API key is `api_key`; IAM requests must be signed by the
    /// operator (the local credentials).
    pub fn new(spec: EventApiSpec, api_key: &str, limits: EventApiLimits) -> Arc<Self> {
        let iam = ServiceIam::operator_only(
            "arn:aws:appsync:local:000000000000:apis/local/channelNamespace/",
        );
        Self::build(spec, api_key, limits, iam, None)
    }

    /// An API for `spec` whose IAM publishers are `iam`'s principals, each allowed
    /// `appsync:EventPublish` on a namespace by its policies.
    pub fn with_iam(
        spec: EventApiSpec,
        api_key: &str,
        limits: EventApiLimits,
        iam: ServiceIam,
    ) -> Arc<Self> {
        Self::build(spec, api_key, limits, iam, None)
    }

    /// An API whose subscribers are served from an upstream API through a relay: it announces
    /// each channel pattern that gets its first subscriber on the receiver (see [`relay`]).
    pub fn relayed(
        spec: EventApiSpec,
        api_key: &str,
        limits: EventApiLimits,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<Vec<String>>) {
        let (hook, patterns) = mpsc::unbounded_channel();
        let iam = ServiceIam::operator_only(
            "arn:aws:appsync:local:000000000000:apis/local/channelNamespace/",
        );
        (
            Self::build(spec, api_key, limits, iam, Some(hook)),
            patterns,
        )
    }

    fn build(
        spec: EventApiSpec,
        api_key: &str,
        limits: EventApiLimits,
        iam: ServiceIam,
        new_patterns: Option<mpsc::UnboundedSender<Vec<String>>>,
    ) -> Arc<Self> {
        let bucket = |rate: u32| (rate > 0).then(|| TokenBucket::new(rate, rate));
        let openid_connect = spec.openid_connect.as_ref().map(|provider| {
            reactions::viewer_identity::TokenVerifier::new(
                reactions::viewer_identity::IdentitySettings {
                    issuer: provider.issuer.clone(),
                    audience: provider.client_id.clone(),
                },
            )
        });

        Arc::new(Self {
            openid_connect,
            spec,
            api_key: api_key.to_owned(),
            iam,
            limits,
            connects: bucket(limits.connects_per_second),
            inbound: bucket(limits.inbound_events_per_second),
            registry: RwLock::default(),
            next_connection: AtomicU64::new(1),
            new_patterns,
            stats: EventApiStats::default(),
            losing: std::sync::Mutex::default(),
        })
    }

    /// Whether connections authorize with OPENID_CONNECT tokens (viewer identity on).
    pub fn takes_tokens(&self) -> bool {
        self.spec.connection.contains(&AuthType::OpenIdConnect)
    }

    /// Whether the onSubscribe handler of `namespace` lets a subscription to the channel
    /// `segments` (the namespace first) through.
    pub fn subscription_allowed(&self, namespace: &str, segments: &[&str]) -> bool {
        self.spec
            .namespaces
            .get(namespace)
            .and_then(|auth| auth.subscribe_segments)
            .is_none_or(|count| segments.len() == count && segments.last() != Some(&"*"))
    }

    /// `GET /event/realtime` only: a relay takes no publishes of its own.
    pub fn realtime_router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/event/realtime", any(realtime::upgrade))
            .with_state(Arc::clone(self))
    }

    /// `POST /event` and `GET /event/realtime`.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/event", post(publish::handle))
            .layer(DefaultBodyLimit::max(publish::MAX_REQUEST_BYTES))
            .with_state(Arc::clone(self))
            .merge(self.realtime_router())
    }

    /// Serves the API on `address` by itself, without the rest of a stack (tests and tools).
    pub async fn serve_on(
        self: &Arc<Self>,
        address: std::net::SocketAddr,
    ) -> std::io::Result<ServedEventApi> {
        let listener = tokio::net::TcpListener::bind(address).await?;
        let host = listener.local_addr()?.to_string();
        let router = self.router();
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.ok();
        });
        Ok(ServedEventApi {
            api: Arc::clone(self),
            host,
            task,
        })
    }

    /// The API key subscribers use.
    pub fn api_key(&self) -> &str {
        &self.api_key
    }

    /// Open WebSocket connections.
    pub fn open_connections(&self) -> usize {
        self.registry
            .read()
            .map(|r| r.connections.len())
            .unwrap_or(0)
    }

    /// Makes the next publish to `channel` (`/namespace/segment`) get lost: accepted and
    /// delivered to nobody. For tests of clients that must notice a missed push.
    pub fn lose_next_publish(&self, channel: &str) {
        if let Ok(mut losing) = self.losing.lock() {
            losing.insert(channel.to_owned());
        }
    }

    /// How many publishes [`Self::lose_next_publish`] asked to lose are still to come.
    pub fn publishes_to_lose(&self) -> usize {
        self.losing.lock().map(|losing| losing.len()).unwrap_or(0)
    }

    /// Whether this publish to `segments` is one [`Self::lose_next_publish`] asked to lose.
    fn loses_publish(&self, segments: &[&str]) -> bool {
        let channel = format!("/{}", segments.join("/"));
        self.losing
            .lock()
            .is_ok_and(|mut losing| losing.remove(&channel))
    }

    /// Closes every connection (1001 Going away), as when AppSync moves connections off a host;
    /// clients must connect and subscribe again. The number closed.
    pub fn disconnect_all(&self) -> usize {
        self.registry
            .read()
            .map(|registry| registry.kick_all(1001, "Going away"))
            .unwrap_or(0)
    }

    /// Subscriptions held by all connections.
    pub fn subscriptions(&self) -> usize {
        self.registry
            .read()
            .map(|r| r.connections.values().map(|c| c.subscriptions.len()).sum())
            .unwrap_or(0)
    }

    fn namespace(&self, segments: &[&str]) -> Option<&NamespaceAuth> {
        self.spec.namespaces.get(*segments.first()?)
    }

    fn register(
        &self,
        outbox: mpsc::Sender<Outgoing>,
        kick: tokio::sync::watch::Sender<registry::Kick>,
    ) -> u64 {
        let id = self.next_connection.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut registry) = self.registry.write() {
            registry.register(id, outbox, kick);
        }
        id
    }

    fn unregister(&self, connection: u64) {
        if let Ok(mut registry) = self.registry.write() {
            registry.unregister(connection);
        }
    }

    /// Adds a subscription; the error is AppSync's `errorType`. A pattern no one held before is
    /// announced to the relay hook, if any.
    fn subscribe(
        &self,
        connection: u64,
        id: &str,
        pattern: Vec<String>,
    ) -> Result<(), &'static str> {
        let mut registry = self.registry.write().map_err(|_| "InternalFailure")?;
        let limit = self.limits.subscriptions_per_connection;
        let first = registry.subscribe(connection, id, pattern.clone(), limit)?;
        if first && let Some(hook) = &self.new_patterns {
            hook.send(pattern).ok();
        }
        Ok(())
    }

    fn unsubscribe(&self, connection: u64, id: &str) -> bool {
        self.registry
            .write()
            .is_ok_and(|mut registry| registry.unsubscribe(connection, id))
    }

    /// Queues each event to every subscription matching `channel`.
    fn deliver(&self, channel: &[&str], events: &[&str]) {
        if let Ok(registry) = self.registry.read() {
            let delivery = registry.send(registry.matching(channel), events);
            self.count(delivery);
        }
    }

    /// Queues each event to every subscription to exactly `pattern` (a relay's upstream
    /// subscription stands for them).
    pub fn deliver_to_pattern(&self, pattern: &[String], events: &[&str]) {
        if let Ok(registry) = self.registry.read() {
            let delivery = registry.send(registry.holding(pattern), events);
            self.count(delivery);
        }
    }

    fn count(&self, delivery: registry::Delivery) {
        self.stats
            .deliveries
            .fetch_add(delivery.delivered, Ordering::Relaxed);
        self.stats
            .dropped_slow
            .fetch_add(delivery.dropped_slow, Ordering::Relaxed);
    }
}

/// An Event API serving on a port of its own until dropped.
pub struct ServedEventApi {
    pub api: Arc<EventApi>,
    /// `host:port`: the HTTP host subscribers name, and where both endpoints are.
    pub host: String,
    task: tokio::task::JoinHandle<()>,
}

impl ServedEventApi {
    /// The publish endpoint, `http://{host}/event`.
    pub fn publish_url(&self) -> String {
        format!("http://{}/event", self.host)
    }

    /// The real-time endpoint, `ws://{host}/event/realtime`.
    pub fn realtime_url(&self) -> String {
        format!("ws://{}/event/realtime", self.host)
    }
}

impl Drop for ServedEventApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}
