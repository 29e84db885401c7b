//! The Kafka adapter: topic administration and an acknowledged, idempotent producer, over
//! rdkafka (bundled librdkafka). Functions use it to publish; tests and the local stack use it to
//! create topics with the partition counts the design needs (auto-created topics get one).

mod renewing;
use futures::future::join_all;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext, OAuthToken};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
pub use renewing::RenewingProducer;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Errors from the Kafka adapter.
#[derive(Debug, thiserror::Error)]
pub enum KafkaAdapterError {
    /// The client could not be built from its configuration.
    #[error("kafka client configuration rejected: {0}")]
    Config(#[source] KafkaError),
    /// The broker refused to create a topic for a reason other than it already existing.
    #[error("could not create topic {topic}: {reason}")]
    CreateTopic { topic: String, reason: String },
    /// The admin request itself failed (broker unreachable, timeout).
    #[error("kafka admin request failed: {0}")]
    Admin(#[source] KafkaError),
    /// A partition's offsets could not be read (broker unreachable, no leader, timeout).
    #[error("could not read the offsets of {topic} partition {partition}: {source}")]
    Offsets {
        topic: String,
        partition: i32,
        #[source]
        source: KafkaError,
    },
    /// A record was not acknowledged by the broker.
    #[error("record {index} was not delivered: {source}")]
    Delivery {
        index: usize,
        #[source]
        source: KafkaError,
    },
    /// Not every record was acknowledged within the deadline.
    #[error("records were not acknowledged within {0:?}")]
    Timeout(Duration),
}

/// How clients authenticate and encrypt (`KAFKA_SECURITY`).
#[derive(Clone, PartialEq, Eq, Default)]
pub enum KafkaSecurity {
    /// Plaintext: local brokers, self-managed clusters inside a VPC.
    #[default]
    None,
    /// TLS without client authentication (MSK's TLS listener, port 9094), trusting `ca_pem`
    /// when given, else the system's certificates.
    Tls { ca_pem: Option<String> },
    /// MSK IAM: SASL/OAUTHBEARER over TLS (port 9098) with a SigV4-signed token for `region`.
    MskIam { region: String },
    /// SASL/SCRAM over TLS (`SCRAM-SHA-512` or `SCRAM-SHA-256`), the user and password of the
    /// self-managed cluster's secret, as its Kafka trigger uses them.
    Scram {
        mechanism: &'static str,
        username: String,
        password: String,
        ca_pem: Option<String>,
    },
    /// Mutual TLS with the client certificate and key (PEM) of the cluster's secret.
    MutualTls {
        certificate_pem: String,
        key_pem: String,
        key_password: Option<String>,
        ca_pem: Option<String>,
    },
}

/// Never prints a password or a key.
impl std::fmt::Debug for KafkaSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::None => write!(f, "None"),
            Self::Tls { .. } => write!(f, "Tls"),
            Self::MskIam { region } => write!(f, "MskIam({region})"),
            Self::Scram {
                mechanism,
                username,
                ..
            } => write!(f, "Scram({mechanism}, user {username:?})"),
            Self::MutualTls { .. } => write!(f, "MutualTls"),
        }
    }
}

/// The JSON credentials of a self-managed cluster's secret (`KAFKA_CREDENTIALS`, fetched by
/// `crate::secrets` from the secret `KAFKA_CREDENTIALS_SECRET_ID` names): the shapes Lambda's
/// Kafka triggers read ("Configuring cluster authentication methods", Lambda developer guide).
fn credential_field(
    credentials: &serde_json::Value,
    field: &str,
) -> Result<String, crate::config::ConfigError> {
    credentials[field]
        .as_str()
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| crate::config::ConfigError {
            var: "KAFKA_CREDENTIALS",
            reason: format!("the cluster's secret has no {field:?}"),
        })
}

impl KafkaSecurity {
    /// Reads `KAFKA_SECURITY` (`none`, `tls`, `iam`, `scram-sha-512`, `scram-sha-256` or
    /// `mtls`; default `none`); for `iam` the region from `AWS_REGION` (which Lambda sets); for
    /// SCRAM and mTLS the credentials JSON `KAFKA_CREDENTIALS`; and the cluster's root CA
    /// (`KAFKA_ROOT_CA`, JSON with its PEM `certificate`) when one is given.
    pub fn from_settings(
        settings: &impl crate::config::Settings,
    ) -> Result<Self, crate::config::ConfigError> {
        let json =
            |var: &'static str| -> Result<Option<serde_json::Value>, crate::config::ConfigError> {
                settings
                    .get(var)
                    .map(|text| {
                        serde_json::from_str(&text).map_err(|e| crate::config::ConfigError {
                            var,
                            reason: format!("the secret is not JSON: {e}"),
                        })
                    })
                    .transpose()
            };
        let ca_pem = match json("KAFKA_ROOT_CA")? {
            None => None,
            Some(root) => Some(credential_field(&root, "certificate").map_err(|mut e| {
                e.var = "KAFKA_ROOT_CA";
                e
            })?),
        };
        let credentials = || {
            json("KAFKA_CREDENTIALS")?.ok_or_else(|| crate::config::ConfigError {
                var: "KAFKA_CREDENTIALS",
                reason: "SASL/SCRAM and mutual TLS need the cluster's secret (KAFKA_CREDENTIALS_SECRET_ID)"
                    .to_owned(),
            })
        };
        let scram = |mechanism: &'static str| -> Result<Self, crate::config::ConfigError> {
            let credentials = credentials()?;
            Ok(Self::Scram {
                mechanism,
                username: credential_field(&credentials, "username")?,
                password: credential_field(&credentials, "password")?,
                ca_pem: ca_pem.clone(),
            })
        };
        match settings.get("KAFKA_SECURITY").as_deref() {
            None | Some("none") => Ok(Self::None),
            Some("tls") => Ok(Self::Tls {
                ca_pem: ca_pem.clone(),
            }),
            Some("iam") => Ok(Self::MskIam {
                region: crate::config::required(settings, "AWS_REGION")?,
            }),
            Some("scram-sha-512") => scram("SCRAM-SHA-512"),
            Some("scram-sha-256") => scram("SCRAM-SHA-256"),
            Some("mtls") => {
                let credentials = credentials()?;
                Ok(Self::MutualTls {
                    certificate_pem: credential_field(&credentials, "certificate")?,
                    key_pem: credential_field(&credentials, "privateKey")?,
                    key_password: credentials["privateKeyPassword"]
                        .as_str()
                        .filter(|p| !p.is_empty())
                        .map(str::to_owned),
                    ca_pem,
                })
            }
            Some(other) => Err(crate::config::ConfigError {
                var: "KAFKA_SECURITY",
                reason: format!(
                    "must be none, tls, iam, scram-sha-512, scram-sha-256 or mtls, not {other:?}"
                ),
            }),
        }
    }
}

/// Trust `ca_pem` when given, else look for the system's certificates (the bundled OpenSSL has
/// no trust store configured).
fn trust(config: &mut ClientConfig, ca_pem: &Option<String>) {
    match ca_pem {
        Some(pem) => config.set("ssl.ca.pem", pem),
        None => config.set("ssl.ca.location", "probe"),
    };
}

/// How to reach the cluster. `extra` carries further librdkafka properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSettings {
    /// Comma-separated `host:port` list (`KAFKA_BROKERS`).
    pub brokers: String,
    /// Shown in broker logs and metrics.
    pub client_id: String,
    /// Authentication and encryption.
    pub security: KafkaSecurity,
    /// Further librdkafka properties.
    pub extra: Vec<(String, String)>,
}

impl KafkaSettings {
    /// Settings for `brokers`, plaintext.
    pub fn new(brokers: impl Into<String>, client_id: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            client_id: client_id.into(),
            security: KafkaSecurity::None,
            extra: Vec::new(),
        }
    }

    /// Reads `KAFKA_BROKERS` (required) and `KAFKA_SECURITY`, the same for every function.
    pub fn from_settings(
        settings: &impl crate::config::Settings,
        client_id: &str,
    ) -> Result<Self, crate::config::ConfigError> {
        Ok(Self {
            security: KafkaSecurity::from_settings(settings)?,
            ..Self::new(
                crate::config::required(settings, "KAFKA_BROKERS")?,
                client_id,
            )
        })
    }

    /// The librdkafka configuration shared by every client built from these settings.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", &self.client_id)
            // Never create a topic by naming it: MSK's default configuration has
            // `auto.create.topics.enable=false` ("Default Amazon MSK configuration", MSK
            // developer guide), so a missing topic must fail here as it fails there, and the
            // local broker, which would create it, is not asked to.
            .set("allow.auto.create.topics", "false");
        match &self.security {
            KafkaSecurity::None => {}
            KafkaSecurity::Tls { ca_pem } => {
                config.set("security.protocol", "ssl");
                trust(&mut config, ca_pem);
            }
            KafkaSecurity::MskIam { .. } => {
                config
                    .set("security.protocol", "sasl_ssl")
                    .set("sasl.mechanism", "OAUTHBEARER")
                    .set("ssl.ca.location", "probe");
            }
            KafkaSecurity::Scram {
                mechanism,
                username,
                password,
                ca_pem,
            } => {
                config
                    .set("security.protocol", "sasl_ssl")
                    .set("sasl.mechanism", *mechanism)
                    .set("sasl.username", username)
                    .set("sasl.password", password);
                trust(&mut config, ca_pem);
            }
            KafkaSecurity::MutualTls {
                certificate_pem,
                key_pem,
                key_password,
                ca_pem,
            } => {
                config
                    .set("security.protocol", "ssl")
                    .set("ssl.certificate.pem", certificate_pem)
                    .set("ssl.key.pem", key_pem);
                if let Some(password) = key_password {
                    config.set("ssl.key.password", password);
                }
                trust(&mut config, ca_pem);
            }
        }
        for (key, value) in &self.extra {
            config.set(key, value);
        }
        config
    }

    /// The client context: it supplies MSK IAM tokens when asked.
    pub fn context(&self) -> KafkaContext {
        KafkaContext {
            msk_region: match &self.security {
                KafkaSecurity::MskIam { region } => Some(region.clone()),
                _ => None,
            },
            tokens_issued: Arc::new(AtomicU64::new(0)),
        }
    }
}

/// The rdkafka client context of every emostream client. With MSK IAM it answers librdkafka's
/// token refresh requests with a fresh signed token.
#[derive(Clone)]
pub struct KafkaContext {
    msk_region: Option<String>,
    tokens_issued: Arc<AtomicU64>,
}

impl KafkaContext {
    /// How many tokens this context has issued (for tests and diagnostics).
    pub fn tokens_issued(&self) -> u64 {
        self.tokens_issued.load(Ordering::Relaxed)
    }
}

impl ClientContext for KafkaContext {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn generate_oauth_token(
        &self,
        _oauthbearer_config: Option<&str>,
    ) -> Result<OAuthToken, Box<dyn std::error::Error>> {
        let region = self
            .msk_region
            .as_deref()
            .ok_or("OAUTHBEARER is only configured for MSK IAM (KAFKA_SECURITY=iam)")?;
        let credentials = crate::msk_iam::credentials_from_env()?;
        let token = crate::msk_iam::auth_token(region, &credentials, std::time::SystemTime::now())?;
        self.tokens_issued.fetch_add(1, Ordering::Relaxed);
        Ok(OAuthToken {
            token: token.token,
            principal_name: "emostream".to_owned(),
            lifetime_ms: token.expires_at_ms,
        })
    }
}

/// A topic and its partition count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
}

/// Creates the topics that do not exist yet; existing topics are left as they are, so the
/// call is safe at every start-up.
pub async fn ensure_topics(
    settings: &KafkaSettings,
    topics: &[TopicSpec],
    timeout: Duration,
) -> Result<(), KafkaAdapterError> {
    ensure_topics_with::<&str>(settings, topics, &[], timeout).await
}

/// [`ensure_topics`], creating the missing topics with the given topic-level settings
/// (`retention.bytes`, `segment.bytes`, ...). Topics that exist keep the settings they have.
pub async fn ensure_topics_with<V: AsRef<str>>(
    settings: &KafkaSettings,
    topics: &[TopicSpec],
    topic_config: &[(&str, V)],
    timeout: Duration,
) -> Result<(), KafkaAdapterError> {
    let admin: AdminClient<DefaultClientContext> = settings
        .client_config()
        .create()
        .map_err(KafkaAdapterError::Config)?;
    let new_topics: Vec<NewTopic> = topics
        .iter()
        .map(|t| {
            topic_config.iter().fold(
                NewTopic::new(&t.name, t.partitions, TopicReplication::Fixed(1)),
                |topic, (key, value)| topic.set(key, value.as_ref()),
            )
        })
        .collect();
    // Both timeouts: the operation one bounds the broker's work, the request one bounds the
    // wait for an unreachable broker (60 s by default).
    let options = AdminOptions::new()
        .operation_timeout(Some(timeout))
        .request_timeout(Some(timeout));
    let results = admin
        .create_topics(&new_topics, &options)
        .await
        .map_err(KafkaAdapterError::Admin)?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(KafkaAdapterError::CreateTopic {
                    topic,
                    reason: code.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// The partition ids of `topic` as the cluster's metadata names them (none if the topic does
/// not exist). Blocks for up to `timeout`: call it off the async runtime.
pub fn fetch_partition_ids<C: ClientContext>(
    client: &rdkafka::client::Client<C>,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<i32>, KafkaError> {
    let metadata = client.fetch_metadata(Some(topic), Timeout::After(timeout))?;
    Ok(metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect())
}

/// A record to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingRecord {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// Headers in order (dead letters carry their reason here).
    pub headers: Vec<(String, Vec<u8>)>,
    /// The partition to write to; `None` lets the key's hash choose.
    pub partition: Option<i32>,
    /// The record's `CreateTime`, ms since the epoch; `None`: when it is produced. A backlog
    /// made up at once (`make drain`) gives its records the times they would have had.
    pub timestamp_ms: Option<i64>,
}

impl OutgoingRecord {
    /// A record without headers, partitioned by its key.
    pub fn new(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
            headers: Vec::new(),
            partition: None,
            timestamp_ms: None,
        }
    }
}

/// Where an acknowledged record was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub partition: i32,
    pub offset: i64,
}

/// An idempotent producer that waits for every record to be acknowledged by all in-sync
/// replicas: a caller told "done" can rely on the records surviving a broker failure.
#[derive(Clone)]
pub struct AckedProducer {
    producer: FutureProducer<KafkaContext>,
    context: KafkaContext,
    /// Partition counts of the topics whose metadata was fetched, and when.
    partitions: Arc<std::sync::Mutex<std::collections::HashMap<String, KnownCount>>>,
}

/// How long a fetched partition count stands before [`AckedProducer::partition_count`] asks
/// again: partitions can be added to a topic, and a topic deleted and created again with
/// fewer, while a warm container lives for hours.
pub const PARTITION_COUNT_FRESH_FOR: Duration = Duration::from_secs(60);

/// The longest a request waits to read a known but old partition count again.
pub const STALE_COUNT_REFRESH: Duration = Duration::from_millis(250);

/// How long after a failed refresh the old count is asked for again.
const STALE_COUNT_RETRY_AFTER: Duration = Duration::from_secs(5);

/// Whether a produce failed because a record named a partition the topic does not have (the
/// topic was created again with fewer): the partition count must be read again.
pub fn is_unknown_partition(error: &KafkaAdapterError) -> bool {
    matches!(
        error,
        KafkaAdapterError::Delivery {
            source: KafkaError::MessageProduction(RDKafkaErrorCode::UnknownPartition),
            ..
        }
    )
}

/// A topic's partition count as last fetched.
#[derive(Debug, Clone, Copy)]
struct KnownCount {
    count: i32,
    fetched_at: std::time::Instant,
}

impl AckedProducer {
    /// Builds the producer. Connecting is lazy: an unreachable broker shows up as a delivery
    /// timeout, not here. `delivery_timeout` bounds how long librdkafka keeps trying a record,
    /// so a record the caller was told failed is not delivered much later behind its back.
    pub fn new(
        settings: &KafkaSettings,
        delivery_timeout: Duration,
    ) -> Result<Self, KafkaAdapterError> {
        Self::with_linger(settings, delivery_timeout, Duration::from_millis(2))
    }

    /// [`AckedProducer::new`] with how long records wait to be sent together (`linger.ms`). A
    /// caller that hands over all its records at once and then waits for them (aggregate,
    /// publishing a batch's states) gains nothing from lingering: 0 sends at once. Ingest keeps
    /// 2 ms so that concurrent requests share produce requests.
    pub fn with_linger(
        settings: &KafkaSettings,
        delivery_timeout: Duration,
        linger: Duration,
    ) -> Result<Self, KafkaAdapterError> {
        let linger_ms = linger.as_millis().min(10_000).to_string();
        let timeout_ms = delivery_timeout.as_millis().clamp(100, 300_000).to_string();
        // librdkafka refuses connection set-up timeouts under one second.
        let connect_ms = delivery_timeout
            .as_millis()
            .clamp(1_000, 300_000)
            .to_string();
        let context = settings.context();
        let producer = settings
            .client_config()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", &linger_ms)
            .set("message.timeout.ms", &timeout_ms)
            .set("request.timeout.ms", &timeout_ms)
            .set("socket.connection.setup.timeout.ms", &connect_ms)
            // Reconnect quickly once a broker is back (librdkafka's default backs off to 10 s).
            .set("reconnect.backoff.ms", "50")
            .set("reconnect.backoff.max.ms", "1000")
            .create_with_context(context.clone())
            .map_err(KafkaAdapterError::Config)?;
        Ok(Self {
            producer,
            context,
            partitions: Arc::default(),
        })
    }

    /// The producer's client context.
    pub fn context(&self) -> &KafkaContext {
        &self.context
    }

    /// Connects to the cluster and loads `topic`'s metadata ahead of the first request, so a
    /// cold container's first answer is not slowed by connection set-up. Failure is only
    /// logged: the broker may come up later and requests then answer 503 until it does.
    ///
    /// The metadata is fetched twice. The first answer comes from a bootstrap address, which
    /// librdkafka then replaces with the brokers it names; an idempotent producer gets its
    /// producer id only from one of those, and otherwise retries on a 500 ms timer, so the
    /// first record would wait up to a second. The second fetch waits for a named broker and
    /// its answer makes librdkafka ask for the producer id at once.
    pub async fn warm_up(&self, topic: &str, timeout: Duration) {
        for _ in 0..2 {
            match self.fetch_partition_count(topic, timeout).await {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => {
                    tracing::warn!(%error, "Kafka not reachable at start-up");
                    return;
                }
                Err(error) => {
                    tracing::warn!(%error, "Kafka warm-up did not finish");
                    return;
                }
            }
        }
    }

    /// Fetches `topic`'s metadata and remembers its partition count.
    async fn fetch_partition_count(
        &self,
        topic: &str,
        timeout: Duration,
    ) -> Result<Result<Option<i32>, KafkaError>, tokio::task::JoinError> {
        let producer = self.producer.clone();
        let name = topic.to_owned();
        let fetched = tokio::task::spawn_blocking(move || {
            fetch_partition_ids(producer.client(), &name, timeout)
                .map(|ids| i32::try_from(ids.len()).ok().filter(|n| *n > 0))
        })
        .await;
        if let Ok(Ok(Some(count))) = &fetched {
            self.remember_partition_count(topic, *count, std::time::Instant::now());
        }
        fetched
    }

    /// Keeps `count` as `topic`'s partition count, taken as read at `fetched_at`.
    fn remember_partition_count(&self, topic: &str, count: i32, fetched_at: std::time::Instant) {
        if let Ok(mut known) = self.partitions.lock() {
            known.insert(topic.to_owned(), KnownCount { count, fetched_at });
        }
    }

    /// Forgets `topic`'s partition count, so the next [`AckedProducer::partition_count`]
    /// fetches it: a produce to a partition that no longer exists failed.
    pub fn forget_partition_count(&self, topic: &str) {
        if let Ok(mut known) = self.partitions.lock() {
            known.remove(topic);
        }
    }

    /// How many partitions `topic` has now, fetched within `timeout` whatever is known: for a
    /// decision that a partition added since the last fetch would make wrong (`final`).
    /// `None` if the broker cannot say.
    pub async fn fresh_partition_count(&self, topic: &str, timeout: Duration) -> Option<i32> {
        match self.fetch_partition_count(topic, timeout).await {
            Ok(Ok(count)) => count,
            _ => None,
        }
    }

    /// How many partitions `topic` has: known after the warm-up, else fetched now (within
    /// `timeout`). A count older than [`PARTITION_COUNT_FRESH_FOR`] is fetched again, within
    /// [`STALE_COUNT_REFRESH`] at most, so a slow broker costs a request little of its budget;
    /// when that fetch fails the old count stands and is asked for again a few seconds later
    /// (a wrong one fails the produce, see [`is_unknown_partition`]). `None` if the broker cannot say and nothing is
    /// known.
    pub async fn partition_count(&self, topic: &str, timeout: Duration) -> Option<i32> {
        let known = self
            .partitions
            .lock()
            .ok()
            .and_then(|known| known.get(topic).copied());
        match known {
            Some(known) if known.fetched_at.elapsed() < PARTITION_COUNT_FRESH_FOR => {
                Some(known.count)
            }
            Some(stale) => {
                let refreshed = self
                    .fetch_partition_count(topic, timeout.min(STALE_COUNT_REFRESH))
                    .await;
                match refreshed {
                    Ok(Ok(Some(count))) => Some(count),
                    _ => {
                        tracing::warn!(
                            topic,
                            count = stale.count,
                            "the topic's partition count could not be read again; the known one stands"
                        );
                        // Asked again after a short pause, not at every request.
                        let retry_at = std::time::Instant::now()
                            .checked_sub(PARTITION_COUNT_FRESH_FOR - STALE_COUNT_RETRY_AFTER)
                            .unwrap_or(stale.fetched_at);
                        self.remember_partition_count(topic, stale.count, retry_at);
                        Some(stale.count)
                    }
                }
            }
            None => match self.fetch_partition_count(topic, timeout).await {
                Ok(Ok(count)) => count,
                _ => None,
            },
        }
    }

    /// The first and next offsets (Kafka's low and high watermarks) of each of `partitions`
    /// of `topic`, asked of their leaders one after the other, all within `timeout`: a pass
    /// over many slow partitions takes no longer than one step (what a `final` pass's turn
    /// allows for).
    pub async fn log_ends(
        &self,
        topic: &str,
        partitions: &[i32],
        timeout: Duration,
    ) -> Result<Vec<(i32, i64, i64)>, KafkaAdapterError> {
        let producer = self.producer.clone();
        let (topic, partitions) = (topic.to_owned(), partitions.to_vec());
        let started = std::time::Instant::now();
        tokio::task::spawn_blocking(move || {
            partitions
                .into_iter()
                .map(|partition| {
                    // librdkafka refuses a zero timeout as "none": at least a millisecond.
                    let left = timeout
                        .saturating_sub(started.elapsed())
                        .max(Duration::from_millis(1));
                    producer
                        .client()
                        .fetch_watermarks(&topic, partition, Timeout::After(left))
                        .map(|(low, high)| (partition, low, high))
                        .map_err(|source| KafkaAdapterError::Offsets {
                            topic: topic.clone(),
                            partition,
                            source,
                        })
                })
                .collect()
        })
        .await
        .unwrap_or_else(|_| Err(KafkaAdapterError::Admin(KafkaError::Canceled)))
    }

    /// [`AckedProducer::warm_up`] on a task of its own, for an init that must not wait for the
    /// broker: the first event, fetched meanwhile, finds the connection under way.
    pub fn start_warm_up(&self, topic: &str, timeout: Duration) {
        let (producer, topic) = (self.clone(), topic.to_owned());
        tokio::spawn(async move { producer.warm_up(&topic, timeout).await });
    }

    /// Turns this producer fatal as a broker that lost its sequence state does
    /// (`OutOfOrderSequenceNumber`), with librdkafka's own test hook: for tests of what a
    /// function does next, which a real broker does not do on demand.
    #[doc(hidden)]
    pub fn make_fatal_for_tests(&self) {
        let client = self.producer.client();
        // SAFETY: the handle is live while `self.producer` is, and the reason is a C string
        // literal librdkafka copies.
        unsafe {
            rdkafka::bindings::rd_kafka_test_fatal_error(
                client.native_ptr(),
                rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
                c"made fatal by a test".as_ptr(),
            );
        }
    }

    /// A fatal producer error (e.g. the idempotence state was lost), after which this producer
    /// can no longer deliver and must be replaced.
    pub fn fatal_error(&self) -> Option<String> {
        self.producer
            .client()
            .fatal_error()
            .map(|(code, reason)| format!("{code}: {reason}"))
    }

    /// Produces `records` to `topic` and waits until every one is acknowledged or
    /// `deadline` passes. Records are sent concurrently; per-key order is kept by librdkafka's
    /// idempotent producer.
    pub async fn produce_all(
        &self,
        topic: &str,
        records: &[OutgoingRecord],
        deadline: Duration,
    ) -> Result<Vec<Delivered>, KafkaAdapterError> {
        let sends = records.iter().map(|record| {
            let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
            for (key, value) in &record.headers {
                headers = headers.insert(Header {
                    key,
                    value: Some(value),
                });
            }
            let mut future = FutureRecord::to(topic)
                .key(&record.key)
                .payload(&record.value)
                .headers(headers);
            if let Some(partition) = record.partition {
                future = future.partition(partition);
            }
            if let Some(timestamp) = record.timestamp_ms {
                future = future.timestamp(timestamp);
            }
            self.producer.send(
                future,
                // Time allowed to wait for space in the local queue.
                Timeout::After(deadline),
            )
        });
        let outcome = tokio::time::timeout(deadline, join_all(sends))
            .await
            .map_err(|_| KafkaAdapterError::Timeout(deadline))?;
        outcome
            .into_iter()
            .enumerate()
            .map(|(index, result)| match result {
                Ok(delivery) => Ok(Delivered {
                    partition: delivery.partition,
                    offset: delivery.offset,
                }),
                Err((source, _)) => Err(KafkaAdapterError::Delivery { index, source }),
            })
            .collect()
    }

    /// Waits up to `timeout` for queued records to be sent; call before a process exits.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaAdapterError> {
        self.producer
            .flush(Timeout::After(timeout))
            .map_err(|_| KafkaAdapterError::Timeout(timeout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRAM: &str = r#"{"username":"emostream","password":"s3cret"}"#;
    const CLIENT: &str = r#"{"certificate":"-----BEGIN CERTIFICATE-----x","privateKey":"-----BEGIN PRIVATE KEY-----y"}"#;

    #[test]
    fn each_security_mode_configures_librdkafka_as_its_listener_needs() {
        let settings = |pairs: &[(&'static str, &'static str)]| {
            let mut all = vec![("KAFKA_BROKERS", "b:9096")];
            all.extend_from_slice(pairs);
            KafkaSettings::from_settings(&all, "t")
        };
        let scram = settings(&[
            ("KAFKA_SECURITY", "scram-sha-512"),
            ("KAFKA_CREDENTIALS", SCRAM),
        ])
        .unwrap();
        let config = scram.client_config();
        assert_eq!(config.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(config.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(config.get("sasl.username"), Some("emostream"));
        assert_eq!(config.get("sasl.password"), Some("s3cret"));
        assert_eq!(config.get("ssl.ca.location"), Some("probe"));
        // The password never appears in a debug print.
        assert!(!format!("{scram:?}").contains("s3cret"));

        let mtls = settings(&[
            ("KAFKA_SECURITY", "mtls"),
            ("KAFKA_CREDENTIALS", CLIENT),
            (
                "KAFKA_ROOT_CA",
                r#"{"certificate":"-----BEGIN CERTIFICATE-----ca"}"#,
            ),
        ])
        .unwrap();
        let config = mtls.client_config();
        assert_eq!(config.get("security.protocol"), Some("ssl"));
        assert_eq!(
            config.get("ssl.certificate.pem"),
            Some("-----BEGIN CERTIFICATE-----x")
        );
        assert_eq!(
            config.get("ssl.key.pem"),
            Some("-----BEGIN PRIVATE KEY-----y")
        );
        assert_eq!(
            config.get("ssl.ca.pem"),
            Some("-----BEGIN CERTIFICATE-----ca")
        );
        assert_eq!(config.get("ssl.ca.location"), None);
        assert!(!format!("{mtls:?}").contains("PRIVATE KEY"));

        let scram256 = settings(&[
            ("KAFKA_SECURITY", "scram-sha-256"),
            ("KAFKA_CREDENTIALS", SCRAM),
        ])
        .unwrap();
        assert_eq!(
            scram256.client_config().get("sasl.mechanism"),
            Some("SCRAM-SHA-256")
        );
    }

    #[test]
    fn missing_or_malformed_credentials_are_named() {
        let base = [("KAFKA_BROKERS", "b:9096")];
        for (security, credentials, var, says) in [
            (
                "scram-sha-512",
                None,
                "KAFKA_CREDENTIALS",
                "need the cluster's secret",
            ),
            (
                "scram-sha-512",
                Some("not json"),
                "KAFKA_CREDENTIALS",
                "not JSON",
            ),
            (
                "scram-sha-512",
                Some(r#"{"username":"u"}"#),
                "KAFKA_CREDENTIALS",
                "\"password\"",
            ),
            ("mtls", Some(SCRAM), "KAFKA_CREDENTIALS", "\"certificate\""),
            (
                "sasl-plain",
                Some(SCRAM),
                "KAFKA_SECURITY",
                "must be none, tls",
            ),
        ] {
            let mut pairs = base.to_vec();
            pairs.push(("KAFKA_SECURITY", security));
            if let Some(credentials) = credentials {
                pairs.push(("KAFKA_CREDENTIALS", credentials));
            }
            let error = KafkaSettings::from_settings(&pairs, "t").unwrap_err();
            assert_eq!(error.var, var, "{security}");
            assert!(error.reason.contains(says), "{security}: {}", error.reason);
        }
    }
}
