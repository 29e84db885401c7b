//! The whole local stack: reads template.yaml, starts a Lambda pool per function, the HTTP API,
//! the WebSocket API with its management API, the Kafka event source mappings, and (optionally)
//! a static server for the browser client, which also answers `/config.json` with the API URLs
//! and carries the console's signing helper at `/admin` ([`crate::admin_signer`]).
//! In `AppSyncEvents` delivery it also starts the AppSync Events API ([`EventApi`]), and with
//! viewer identity on, the demo identity provider ([`DemoIssuer`]) when asked.
//! Dropping or stopping the stack stops everything it started.

use crate::api_gateway::authorizers::RouteAuthorizer;
use crate::api_gateway::http::{self, BoundRoute, HttpApi};
use crate::api_gateway::quotas::{AwsQuotas, QuotaSettings};
use crate::api_gateway::websocket::WebSocketApi;
use crate::demo_issuer::{DEMO_AUDIENCE, DemoIssuer};
use crate::event_api::EventApi;
use crate::event_api::client::EventCredential;
use crate::event_source::{EventSourceMapping, MappingStats};
use crate::iam::{Principals, ServiceIam};
use crate::lambda::{FunctionPool, Runner};
use crate::secrets::SecretsApi;
use crate::template::{RouteAuth, StackTemplate};
use axum::Router;
use axum::extract::DefaultBodyLimit;
use reactions::kafka::{KafkaSettings, TopicSpec, ensure_topics_with};
use reactions::viewer_identity::{IdentitySettings, TokenVerifier};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

mod options;

pub use options::{
    DemoIssuerOptions, InvokeEndpoint, StackError, StackOptions, TOPIC_RETENTION_VARIABLE,
};

/// A running local stack.
pub struct LocalStack {
    /// Base URL of the HTTP API.
    pub http_url: String,
    /// The WebSocket URL browsers connect to (add `?stream=<id>`).
    pub websocket_url: Option<String>,
    /// The `@connections` endpoint the functions are given.
    pub management_endpoint: Option<String>,
    /// The browser client's URL.
    pub web_url: Option<String>,
    /// Lambda pools by function logical id.
    pub functions: BTreeMap<String, Arc<FunctionPool>>,
    /// Each function's memory size (template `MemorySize`), which Lambda bills by.
    pub memory_mb: BTreeMap<String, u32>,
    pub mappings: Vec<EventSourceMapping>,
    pub websocket: Option<Arc<WebSocketApi>>,
    /// The AppSync Events API (`Delivery: AppSyncEvents`).
    pub event_api: Option<Arc<EventApi>>,
    /// Its real-time endpoint, `ws://{host}/event/realtime`.
    pub event_realtime_url: Option<String>,
    /// Its HTTP host (`host:port`), which subscribers name in their authorization.
    pub event_http_host: Option<String>,
    /// The account's emulated quotas, shared by both APIs: what they refused is reported.
    pub quotas: Arc<AwsQuotas>,
    /// The demo identity provider, when it runs (its URL is the issuer).
    pub demo_issuer: Option<Arc<DemoIssuer>>,
    servers: Vec<tokio::task::JoinHandle<()>>,
    shutdown: watch::Sender<bool>,
}

async fn listen(host: IpAddr, port: u16) -> Result<(TcpListener, SocketAddr), StackError> {
    let address = SocketAddr::new(host, port);
    let listener = TcpListener::bind(address)
        .await
        .map_err(|source| StackError::Listen { address, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| StackError::Listen { address, source })?;
    Ok((listener, bound))
}

fn serve(listener: TcpListener, router: Router) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let service = router.into_make_service_with_connect_info::<SocketAddr>();
        if let Err(error) = axum::serve(listener, service).await {
            tracing::error!(%error, "server stopped");
        }
    })
}

fn url_host(address: SocketAddr) -> String {
    match address.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => format!("127.0.0.1:{}", address.port()),
        _ => address.to_string(),
    }
}

/// A fresh API key in AppSync's shape (`da2-` and 26 lower-case letters and digits).
fn local_api_key() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let random: [u8; 26] = rand::random();
    let key: String = random
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect();
    format!("da2-{key}")
}

impl LocalStack {
    /// Starts everything.
    pub async fn start(options: StackOptions) -> Result<Self, StackError> {
        let mut local = options.local.clone();
        let mut demo_issuer = None;
        if let Some(demo) = options.demo_issuer {
            let (listener, address) = listen(options.host, demo.port).await?;
            let url = format!("http://{}", url_host(address));
            let issuer = Arc::new(DemoIssuer::new(&url, DEMO_AUDIENCE, demo.token_ttl)?);
            local.parameters.insert("JwtIssuer".to_owned(), url);
            local
                .parameters
                .insert("JwtAudience".to_owned(), DEMO_AUDIENCE.to_owned());
            demo_issuer = Some((listener, issuer));
        }
        let template = StackTemplate::load_local(&options.template, &local.parameters)?;
        // Each function signs with its own role's credentials, and every emulated service
        // evaluates that role's statements from the template (crate::iam).
        let principals = Principals::for_template(&template)?;
        let arns = template.local_arns();
        let (http_listener, http_address) = listen(options.host, options.http_port).await?;
        let http_url = format!("http://{}", url_host(http_address));

        // The functions read the MongoDB URI at init from where the template keeps it, as in
        // AWS: the emulated Secrets Manager and Parameter Store hold it under its name.
        let (secrets_listener, secrets_address) = listen(options.host, 0).await?;
        let secrets_endpoint = format!("http://{}", url_host(secrets_address));
        let secrets = SecretsApi::with_principals(Arc::clone(&principals), &arns);
        let uri_name = template
            .parameters
            .get("MongoDbUriName")
            .cloned()
            .flatten()
            .unwrap_or_default();
        secrets.put_secret(&uri_name, &options.mongodb_uri);
        secrets.put_parameter(&uri_name, &options.mongodb_uri);
        let mut provided = BTreeMap::from([
            ("KAFKA_BROKERS".to_owned(), options.kafka_brokers.clone()),
            // The local broker is plaintext, whatever the template's default for AWS.
            ("KAFKA_SECURITY".to_owned(), "none".to_owned()),
            (
                "AWS_ENDPOINT_URL_SECRETS_MANAGER".to_owned(),
                secrets_endpoint.clone(),
            ),
            ("AWS_ENDPOINT_URL_SSM".to_owned(), secrets_endpoint),
        ]);
        let mut websocket_listener = None;
        let mut websocket_url = None;
        let mut management_endpoint = None;
        if let Some(spec) = &template.websocket {
            let (listener, address) = listen(options.host, options.websocket_port).await?;
            let host = url_host(address);
            websocket_url = Some(format!("ws://{host}/{}", spec.stage));
            let endpoint = format!("http://{host}/{}", spec.stage);
            provided.insert("MANAGEMENT_API_ENDPOINT".to_owned(), endpoint.clone());
            management_endpoint = Some(endpoint);
            websocket_listener = Some(listener);
        }
        let mut event_listener = None;
        let mut event_http_host = None;
        if template.event_api.is_some() {
            let (listener, address) = listen(options.host, options.event_api_port).await?;
            let host = url_host(address);
            provided.insert(
                "APPSYNC_EVENT_ENDPOINT".to_owned(),
                format!("http://{host}/event"),
            );
            event_http_host = Some(host);
            event_listener = Some(listener);
        }
        for (name, value) in provided {
            local.variables.entry(name).or_insert(value);
        }

        let mut functions = BTreeMap::new();
        let mut memory_mb = BTreeMap::new();
        let mut topics: BTreeSet<String> = BTreeSet::new();
        for (id, spec) in &template.functions {
            let mut environment = local.environment_of(&template, spec)?;
            environment.extend(principals.function_environment(id));
            topics.extend(
                environment
                    .iter()
                    .filter(|(name, value)| name.ends_with("_TOPIC") && !value.is_empty())
                    .map(|(_, value)| value.clone()),
            );
            let runner = match &options.invoke_endpoint {
                Some(endpoint) => Runner::InvokeApi {
                    endpoint: endpoint.url.clone(),
                    name: if endpoint.by_logical_id {
                        id.clone()
                    } else {
                        spec.binary.clone()
                    },
                },
                None => {
                    let binary = options.binaries.join(&spec.binary);
                    if !binary.is_file() {
                        return Err(StackError::Missing(format!(
                            "{id}: no binary at {} (build it with `cargo build --bin {}`, \
                             or point --binaries at the right target directory)",
                            binary.display(),
                            spec.binary
                        )));
                    }
                    Runner::Processes {
                        binary,
                        environment,
                        log_file: options
                            .function_logs
                            .as_ref()
                            .map(|dir| dir.join(format!("{id}.log"))),
                    }
                }
            };
            // A scheduled invocation may run for most of its period (notify's sweeper): it gets
            // an instance of its own, as it does within the function's reserved concurrency in
            // AWS, so it never holds up a partition's batches.
            let scheduled = template
                .schedules
                .iter()
                .filter(|e| &e.function == id)
                .count();
            let pool = FunctionPool::new(id, runner, spec.timeout, options.concurrency + scheduled);
            functions.insert(id.clone(), pool);
            memory_mb.insert(id.clone(), spec.memory_mb);
        }

        let mappings_spec = template.local_mappings();
        topics.extend(mappings_spec.iter().map(|m| m.topic.clone()));
        let specs: Vec<TopicSpec> = topics
            .iter()
            .map(|name| TopicSpec {
                name: name.clone(),
                partitions: options.partitions,
            })
            .collect();
        let topic_config = options.topic_config()?;
        ensure_topics_with(
            &KafkaSettings::new(&options.kafka_brokers, "emostream-local-admin"),
            &specs,
            &topic_config,
            Duration::from_secs(15),
        )
        .await
        .map_err(|e| match topic_config.is_empty() {
            true => StackError::Topics(e.to_string()),
            false => StackError::Topics(format!(
                "{e} (asked for {topic_config:?}: set --topic-retention-bytes 0 or \
                 {TOPIC_RETENTION_VARIABLE}=0 for a broker that refuses them)"
            )),
        })?;

        let pool_of = |id: &str| {
            functions
                .get(id)
                .cloned()
                .ok_or_else(|| StackError::Missing(format!("no function {id} in the template")))
        };
        let mut routes = Vec::new();
        let mut verifiers: BTreeMap<String, Arc<TokenVerifier>> = BTreeMap::new();
        for route in &template.http_routes {
            let auth = match &route.auth {
                RouteAuth::None => RouteAuthorizer::None,
                RouteAuth::Iam => RouteAuthorizer::Iam(ServiceIam {
                    principals: Arc::clone(&principals),
                    arn_prefix: arns.http_api.clone(),
                }),
                RouteAuth::Jwt(spec) => RouteAuthorizer::Jwt(Arc::clone(
                    verifiers.entry(spec.name.clone()).or_insert_with(|| {
                        Arc::new(TokenVerifier::new(IdentitySettings {
                            issuer: spec.issuer.clone(),
                            audience: spec.audience.first().cloned().unwrap_or_default(),
                        }))
                    }),
                )),
            };
            routes.push(BoundRoute {
                method: route.method.clone(),
                path: route.path.clone(),
                function: pool_of(&route.function)?,
                auth,
            });
        }
        // One account: the HTTP and WebSocket APIs share its throttle.
        let quotas = Arc::new(AwsQuotas::new(options.quotas));
        let http_api = HttpApi::new(routes, Arc::clone(&quotas));
        let http_router = Router::new()
            .fallback(http::handle)
            .layer(DefaultBodyLimit::max(http::MAX_PAYLOAD_BYTES))
            .with_state(http_api);
        let mut servers = vec![
            serve(http_listener, http_router),
            serve(secrets_listener, secrets.router()),
        ];
        let demo_issuer = demo_issuer.map(|(listener, issuer)| {
            servers.push(serve(listener, issuer.router()));
            issuer
        });

        let mut websocket = None;
        if let (Some(spec), Some(listener)) = (&template.websocket, websocket_listener) {
            let mut routes = BTreeMap::new();
            for (key, function) in &spec.routes {
                routes.insert(key.clone(), pool_of(function)?);
            }
            let api = WebSocketApi::new(
                &spec.stage,
                &spec.route_selection,
                routes,
                options.limits,
                Arc::clone(&quotas),
                ServiceIam {
                    principals: Arc::clone(&principals),
                    arn_prefix: arns.websocket_api.clone(),
                },
            );
            servers.push(serve(listener, api.router()));
            websocket = Some(api);
        }

        let mut event_api = None;
        let mut event_realtime_url = None;
        if let (Some(spec), Some(listener), Some(host)) =
            (&template.event_api, event_listener, &event_http_host)
        {
            let limits = if options.quotas == QuotaSettings::off() {
                options.event_api_limits.without_rates()
            } else {
                options.event_api_limits
            };
            let key = options.event_api_key.clone().unwrap_or_else(local_api_key);
            let api = EventApi::with_iam(
                spec.clone(),
                &key,
                limits,
                ServiceIam {
                    principals: Arc::clone(&principals),
                    arn_prefix: arns.event_namespaces.clone(),
                },
            );
            servers.push(serve(listener, api.router()));
            event_realtime_url = Some(format!("ws://{host}/event/realtime"));
            event_api = Some(api);
        }

        let mut web_url = None;
        if let Some((directory, port)) = &options.web {
            let (listener, address) = listen(options.host, *port).await?;
            let config = serde_json::json!({
                "apiUrl": http_url,
                "websocketUrl": websocket_url,
                "delivery": if event_api.is_some() { "AppSyncEvents" } else { "WebSocketApi" },
                "eventRealtimeUrl": event_realtime_url,
                "eventHttpHost": event_http_host,
                // With OPENID_CONNECT subscribers, the page subscribes with its viewer token
                // and no key is published.
                "eventAuth": event_api.as_ref().map(|api| {
                    if api.takes_tokens() { "OPENID_CONNECT" } else { "API_KEY" }
                }),
                "eventApiKey": event_api.as_ref()
                    .filter(|api| !api.takes_tokens())
                    .map(|api| api.api_key().to_owned()),
                "eventNamespace": template.event_api.as_ref()
                    .and_then(|spec| spec.namespaces.keys().next().cloned()),
                "signInUrl": demo_issuer.as_ref()
                    .map(|issuer| format!("{}/sign-in", issuer.issuer())),
                // The console's admin calls go to the signing helper on this origin.
                "adminUrl": crate::admin_signer::PATH,
                "adminIdentity": format!(
                    "arn:aws:iam::{}:user/{} (the local operator)",
                    crate::iam::LOCAL_ACCOUNT_ID,
                    crate::iam::OPERATOR
                ),
            });
            let router = crate::admin_signer::site_with_helper(
                directory,
                config,
                crate::api_gateway::admin_client::AdminClient::local(&http_url),
            );
            servers.push(serve(listener, router));
            web_url = Some(format!("http://{}/", url_host(address)));
        }

        for event in &template.schedules {
            let every = options.schedule_every.unwrap_or(event.every);
            let function = pool_of(&event.function)?;
            servers.push(crate::schedule::start(event.clone(), every, function));
        }

        let (shutdown, watch_shutdown) = watch::channel(false);
        let mut mappings = Vec::new();
        for mapping in mappings_spec {
            let function = pool_of(&mapping.function)?;
            mappings.push(EventSourceMapping::start(
                mapping,
                &options.kafka_brokers,
                function,
                options.mapping,
                watch_shutdown.clone(),
            )?);
        }
        Ok(Self {
            http_url,
            websocket_url,
            management_endpoint,
            web_url,
            functions,
            memory_mb,
            mappings,
            websocket,
            event_api,
            event_realtime_url,
            event_http_host,
            quotas,
            demo_issuer,
            servers,
            shutdown,
        })
    }

    /// What an AppSync Events subscriber named `viewer` authorizes with on this stack: a demo
    /// issuer's token when the Event API takes OPENID_CONNECT connections, else the API key.
    pub fn event_credential(&self, viewer: &str) -> Option<EventCredential> {
        let api = self.event_api.as_ref()?;
        Some(match (&self.demo_issuer, api.takes_tokens()) {
            (Some(issuer), true) => EventCredential::Token(issuer.token_for(viewer)),
            _ => EventCredential::ApiKey(api.api_key().to_owned()),
        })
    }

    /// Waits until every event source mapping has its partitions. False after `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        for mapping in &self.mappings {
            if !mapping.wait_assigned(timeout).await {
                return false;
            }
        }
        true
    }

    /// One line per function: invocations, errors (timeouts among them), cold starts, longest
    /// init, peak memory.
    pub fn summary(&self) -> Vec<String> {
        self.functions
            .iter()
            .map(|(id, pool)| {
                pool.sample_memory();
                let s = &pool.stats;
                format!(
                    "{id}: {} invocations, {} errors ({} timed out), {} cold starts, longest init {:.1} ms, peak RSS {:.1} MB",
                    s.invocations.load(std::sync::atomic::Ordering::Relaxed),
                    s.errors.load(std::sync::atomic::Ordering::Relaxed),
                    s.timeouts.load(std::sync::atomic::Ordering::Relaxed),
                    s.cold_starts.load(std::sync::atomic::Ordering::Relaxed),
                    s.max_init_us.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1_000.0,
                    s.peak_rss_kib.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1_024.0,
                )
            })
            .collect()
    }

    /// Invocations and billed GB-seconds of every function so far: each invocation's duration
    /// times its function's memory size, as Lambda bills them.
    pub fn lambda_usage(&self) -> (u64, f64) {
        let mut invocations = 0;
        let mut gb_seconds = 0.0;
        for (id, pool) in &self.functions {
            let memory_gb = f64::from(self.memory_mb.get(id).copied().unwrap_or(128)) / 1_024.0;
            invocations += pool
                .stats
                .invocations
                .load(std::sync::atomic::Ordering::Relaxed);
            let billed_ms = pool
                .stats
                .billed_ms
                .load(std::sync::atomic::Ordering::Relaxed);
            gb_seconds += billed_ms as f64 / 1e3 * memory_gb;
        }
        (invocations, gb_seconds)
    }

    /// The pool of a function by logical id (e.g. `AggregateFunction`).
    pub fn function(&self, logical_id: &str) -> Option<&Arc<FunctionPool>> {
        self.functions.get(logical_id)
    }

    /// How many records the event source mappings that invoke a function (by logical id, e.g.
    /// `NotifyFunction`) are behind their topics, summed: whether the trigger keeps up. None
    /// when no mapping invokes the function.
    pub fn records_behind(&self, function: &str) -> Option<u64> {
        let mut behind = None;
        for mapping in self
            .mappings
            .iter()
            .filter(|m| m.mapping.function == function)
        {
            *behind.get_or_insert(0) += mapping.stats.records_behind();
        }
        behind
    }

    /// The statistics of the event source mappings that invoke a function (by logical id), to
    /// watch from a task of its own while the stack runs (say, [`MappingStats::records_behind`]
    /// once a second).
    pub fn mapping_stats(&self, function: &str) -> Vec<Arc<MappingStats>> {
        self.mappings
            .iter()
            .filter(|m| m.mapping.function == function)
            .map(|m| Arc::clone(&m.stats))
            .collect()
    }

    /// Stops the mappings (after their current batch), the servers and every function instance.
    pub async fn stop(mut self) {
        self.shutdown.send(true).ok();
        for mapping in std::mem::take(&mut self.mappings) {
            mapping.stopped().await;
        }
        for server in &self.servers {
            server.abort();
        }
        for pool in self.functions.values() {
            pool.kill_instances();
            pool.shutdown().await;
        }
    }
}

impl Drop for LocalStack {
    fn drop(&mut self) {
        // Function processes die with their handles (kill on drop); stop the rest too.
        self.shutdown.send(true).ok();
        // Not stopped (a panicking test): its consumers must not be destroyed mid-run.
        for mapping in &self.mappings {
            mapping.leak_consumer();
        }
        for server in &self.servers {
            server.abort();
        }
    }
}
