//! The ingest function: the HTTP edge of emostream (API Gateway HTTP API, payload v2), and the
//! only place untrusted input enters. It validates reactions against the stream registry (the
//! stream must be registered and live, the emoji in its catalogue), produces them to Kafka and
//! answers only once the broker has acknowledged them; it also serves the registry (public and
//! admin routes) and the stored windows of a stream. Every answer is JSON; client mistakes are
//! precise 4xx, never a 500.

pub mod api_error;
pub mod config;
pub mod cors;
pub mod moments_route;
pub mod publisher;
pub mod query_string;
pub mod reactions_body;
pub mod replay_route;
pub mod stream_directory;
pub mod streams_route;
pub mod windows_route;

use api_error::{ApiError, RETRY_AFTER_SECONDS};
use config::IngestConfig;
use lambda_http::http::{HeaderValue, Method, StatusCode, header};
use lambda_http::{Body, Request, RequestExt, Response};
use publisher::ReactionPublisher;
use reactions::clock::{elapsed_ms, now_ms};
use reactions::idempotency::{self, IdempotencyKey};
use reactions::metrics::MetricsLine;
use reactions::mongo::{
    IndexesOnce, MomentStore, StoreError, StreamStore, ViewerTapStore, WindowStore,
};
use reactions::stream_registry::Transition;
use reactions::viewer_state::viewer_state_ids;
use reactions::{Catalogues, EmojiCatalogue, Reaction, StreamEntry, StreamId};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use stream_directory::StreamDirectory;
use streams_route::Registry;

/// Why the function could not start.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Config(#[from] reactions::ConfigError),
    #[error(transparent)]
    Kafka(#[from] reactions::kafka::KafkaAdapterError),
    #[error(transparent)]
    Mongo(#[from] StoreError),
}

/// The routes this function answers (`METHOD /path`, with `{id}` for the stream id; `OPTIONS`
/// preflights too). template.yaml's HttpApi events must list exactly these, which a test checks.
pub const ROUTES: [&str; 13] = [
    "POST /reactions",
    "OPTIONS /reactions",
    "GET /emojis",
    "GET /streams",
    "GET /streams/{id}",
    "GET /streams/{id}/windows",
    "GET /streams/{id}/moments",
    "GET /streams/{id}/replay",
    "GET /health",
    "GET /admin/streams",
    "PUT /admin/streams/{id}",
    "POST /admin/streams/{id}/start",
    "POST /admin/streams/{id}/end",
];

/// Routes under this path are for the broadcaster's staff: template.yaml puts them behind the
/// HTTP API's IAM authorizer (SigV4-signed requests from principals allowed
/// `execute-api:Invoke`), and this function refuses them without a verified IAM caller too.
pub const ADMIN_PATH_PREFIX: &str = "/admin/";

/// How long the check for a reused idempotency key may take before it is skipped.
pub const KEY_CHECK_LIMIT: std::time::Duration = std::time::Duration::from_millis(300);

/// The function's long-lived state: configuration and clients, built once per container.
pub struct Ingest {
    config: IngestConfig,
    publisher: ReactionPublisher,
    windows: WindowStore,
    streams: StreamStore,
    directory: StreamDirectory<StreamStore>,
    stream_indexes: IndexesOnce,
    /// The viewers' idempotency keys as aggregate stores them (read only).
    viewer_taps: ViewerTapStore,
    /// The streams' moments as aggregate stores them (read only).
    moments: MomentStore,
}

/// What one request did, for its log line and metrics line.
#[derive(Debug, Default)]
struct Outcome {
    accepted: u64,
    rejected: u64,
    reasons: Vec<&'static str>,
    produce_ms: Option<f64>,
}

fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    let mut response = Response::new(Body::Text(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn error_response(error: &ApiError) -> Response<Body> {
    let mut response = json_response(error.status(), &error.body());
    if let ApiError::Unavailable { .. } = error {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
    }
    response
}

fn body_bytes(body: &Body) -> &[u8] {
    match body {
        Body::Empty => &[],
        Body::Text(text) => text.as_bytes(),
        Body::Binary(bytes) => bytes,
        _ => &[],
    }
}

/// The live streams one request names, with their catalogues and fair-use limits as read (a
/// catalogue changing later does not affect a reaction already validated: aggregate counts any
/// well-formed name).
#[derive(Default)]
struct LiveStreams(HashMap<StreamId, Arc<StreamEntry>>);

impl Catalogues for LiveStreams {
    fn catalogue_of(&self, stream: &StreamId) -> Option<&EmojiCatalogue> {
        self.0.get(stream).map(|entry| &entry.catalogue)
    }
}

/// Whether API Gateway's IAM authorizer verified the caller (it puts the caller's identity in
/// the request context; a route without the authorizer has none).
fn signed_by_iam(request: &Request) -> bool {
    match request.request_context_ref() {
        Some(lambda_http::request::RequestContext::ApiGatewayV2(context)) => context
            .authorizer
            .as_ref()
            .and_then(|authorizer| authorizer.iam.as_ref())
            .is_some_and(|iam| iam.access_key.is_some() || iam.user_arn.is_some()),
        _ => false,
    }
}

/// The viewer the HTTP API's JWT authorizer verified: the token's `sub`.
fn verified_viewer(request: &Request) -> Option<String> {
    match request.request_context_ref() {
        Some(lambda_http::request::RequestContext::ApiGatewayV2(context)) => context
            .authorizer
            .as_ref()
            .and_then(|authorizer| authorizer.jwt.as_ref())
            .and_then(|jwt| jwt.claims.get("sub"))
            .filter(|sub| !sub.is_empty())
            .cloned(),
        _ => None,
    }
}

impl Ingest {
    /// Builds the clients. Neither is waited for here: the producer starts connecting in the
    /// background and MongoDB connects on first use, so Kafka and MongoDB problems surface per
    /// request as 503 and an outage of one does not stop the other's routes.
    pub async fn new(config: IngestConfig) -> Result<Self, InitError> {
        let publisher = ReactionPublisher::new(
            config.kafka.clone(),
            config.reaction_topic.clone(),
            config.produce_timeout,
            config.stream_shards,
        )?;
        publisher.start_warm_up();
        let database = reactions::mongo::open(&config.mongo, "emostream-ingest").await?;
        let streams = StreamStore::new(&database);
        Ok(Self {
            windows: WindowStore::new(&database),
            viewer_taps: ViewerTapStore::new(&database),
            moments: MomentStore::new(&database),
            directory: StreamDirectory::new(streams.clone(), config.stream_cache_ttl),
            streams,
            stream_indexes: IndexesOnce::default(),
            publisher,
            config,
        })
    }

    /// How many times this container read the stream registry (cache misses).
    pub fn registry_reads(&self) -> u64 {
        self.directory.reads()
    }

    /// Handles one request: routes it, adds CORS headers, and writes one log line and one
    /// metrics line.
    pub async fn handle(&self, request: Request) -> Response<Body> {
        let started = Instant::now();
        let request_id = request
            .lambda_context_ref()
            .map(|c| c.request_id.clone())
            .unwrap_or_else(|| "local".to_owned());
        let origin = request
            .headers()
            .get(header::ORIGIN)
            .and_then(|o| o.to_str().ok())
            .map(str::to_owned);
        let preflight = request.method() == Method::OPTIONS;
        let mut outcome = Outcome::default();
        let mut response = match self.route(&request, &mut outcome).await {
            Ok(response) => response,
            Err(error) => {
                if outcome.rejected == 0 {
                    outcome.rejected = 1;
                }
                match &error {
                    ApiError::Invalid(errors) => {
                        outcome.reasons.extend(errors.iter().map(|e| e.rule.code()))
                    }
                    other => outcome.reasons.push(other.code()),
                }
                error_response(&error)
            }
        };
        response.headers_mut().extend(cors::cors_headers(
            &self.config.allowed_origins,
            origin.as_deref(),
            preflight,
        ));
        let status = response.status().as_u16();
        let latency_ms = elapsed_ms(started);
        tracing::info!(
            request_id,
            method = %request.method(),
            path = request.uri().path(),
            status,
            accepted = outcome.accepted,
            rejected = outcome.rejected,
            latency_ms,
            "request"
        );
        let mut metrics = MetricsLine::new("ingest")
            .count("Accepted", outcome.accepted)
            .count("Rejected", outcome.rejected)
            .property("RequestId", request_id)
            .property("Status", status);
        for reason in &outcome.reasons {
            metrics = metrics.count(&format!("Rejected.{reason}"), 1);
        }
        if let Some(ms) = outcome.produce_ms {
            metrics = metrics.millis("ProduceLatency", ms);
        }
        metrics.emit();
        response
    }

    async fn route(
        &self,
        request: &Request,
        outcome: &mut Outcome,
    ) -> Result<Response<Body>, ApiError> {
        let method = request.method();
        let path = request.uri().path().trim_end_matches('/');
        let segments: Vec<&str> = path.split('/').skip(1).collect();
        let not_allowed = |allowed| ApiError::MethodNotAllowed {
            method: method.to_string(),
            allowed,
        };
        if method == Method::OPTIONS {
            return Ok(Response::builder()
                .status(StatusCode::NO_CONTENT)
                .body(Body::Empty)
                .unwrap_or_default());
        }
        if request.uri().path().starts_with(ADMIN_PATH_PREFIX) && !signed_by_iam(request) {
            return Err(ApiError::Forbidden);
        }
        let registry = Registry {
            store: &self.streams,
            directory: &self.directory,
            default_catalogue: &self.config.domain.catalogue,
            indexes: &self.stream_indexes,
        };
        let ok = |body: Value| Ok(json_response(StatusCode::OK, &body));
        match (segments.as_slice(), method) {
            (["health"], &Method::GET) => ok(json!({ "status": "ok" })),
            (["emojis"], &Method::GET) => {
                ok(json!({ "emojis": self.config.domain.catalogue.emojis() }))
            }
            (["reactions"], &Method::POST) => self.post_reactions(request, outcome).await,
            (["streams"], &Method::GET) => ok(streams_route::list_live(&registry).await?),
            (["streams", stream], &Method::GET) => {
                ok(streams_route::get_stream(&registry, stream).await?)
            }
            (["streams", stream, "windows"], &Method::GET) => {
                let query = windows_route::parse_query(stream, request.uri().query())?;
                let body = windows_route::list_windows(
                    &self.windows,
                    &query,
                    self.config.domain.window_width,
                )
                .await?;
                ok(body)
            }
            (["streams", stream, "moments"], &Method::GET) => {
                let query = moments_route::parse_query(request.uri().query())?;
                let format = query.format.unwrap_or_else(|| {
                    moments_route::MomentsFormat::from_accept(
                        request
                            .headers()
                            .get(header::ACCEPT)
                            .and_then(|v| v.to_str().ok()),
                    )
                });
                self.moments_answer(&registry, stream, query.origin, format)
                    .await
            }
            (["streams", stream, "replay"], &Method::GET) => {
                let query = replay_route::parse_query(request.uri().query())?;
                let entry = streams_route::entry(&registry, stream).await?;
                let width = self.config.domain.window_width.millis();
                let now = now_ms();
                let range = replay_route::range_of(&entry, &query, width, now)?;
                let (body, settled) =
                    replay_route::replay(&self.windows, &entry, range, width, now).await?;
                let mut response = Response::new(Body::Text(body));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                let cache = match settled {
                    true => replay_route::SETTLED_CACHE,
                    false => replay_route::LIVE_CACHE,
                };
                response
                    .headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
                Ok(response)
            }
            (["admin", "streams"], &Method::GET) => {
                ok(streams_route::admin_list(&registry, request.uri().query()).await?)
            }
            (["admin", "streams", stream], &Method::PUT) => {
                let (status, body) = streams_route::admin_put(
                    &registry,
                    stream,
                    body_bytes(request.body()),
                    now_ms(),
                )
                .await?;
                Ok(json_response(status, &body))
            }
            (["admin", "streams", stream, action @ ("start" | "end")], &Method::POST) => {
                let transition = if *action == "start" {
                    Transition::Start
                } else {
                    Transition::End
                };
                ok(
                    streams_route::admin_transition(&registry, stream, transition, now_ms())
                        .await?,
                )
            }
            (
                ["health"]
                | ["emojis"]
                | ["streams"]
                | ["streams", _]
                | ["streams", _, "windows"]
                | ["streams", _, "moments"]
                | ["streams", _, "replay"]
                | ["admin", "streams"],
                _,
            ) => Err(not_allowed("GET")),
            (["reactions"], _) => Err(not_allowed("POST")),
            (["admin", "streams", _], _) => Err(not_allowed("PUT")),
            (["admin", "streams", _, "start" | "end"], _) => Err(not_allowed("POST")),
            _ => Err(ApiError::NotFound {
                method: method.to_string(),
                path: path.chars().take(200).collect(),
            }),
        }
    }

    /// Looks up every stream a body names, stopping at the first that is not registered, not
    /// live or paused, so a body full of made-up ids costs one registry read.
    async fn live_streams(&self, ids: &[StreamId]) -> Result<LiveStreams, ApiError> {
        let mut live = LiveStreams::default();
        for id in ids {
            let entry = self.directory.get(id).await.map_err(|error| {
                tracing::error!(%error, "reading the stream registry failed");
                ApiError::Unavailable { service: "MongoDB" }
            })?;
            let Some(entry) = entry else {
                return Err(ApiError::UnknownStream {
                    stream: id.as_str().to_owned(),
                });
            };
            if !entry.is_live() {
                return Err(ApiError::StreamNotLive {
                    stream: id.as_str().to_owned(),
                    status: entry.status,
                });
            }
            if entry.reactions_paused {
                return Err(ApiError::ReactionsPaused {
                    stream: id.as_str().to_owned(),
                });
            }
            live.0.insert(id.clone(), entry);
        }
        Ok(live)
    }

    /// Refuses (422) a request whose key the viewer used before for another body, as far as
    /// the viewer's keys are counted already; a first use still in Kafka is caught by aggregate
    /// (dead letter `idempotency_key_reused`). The check is a courtesy to the client, so
    /// MongoDB being slow or down skips it after [`KEY_CHECK_LIMIT`] rather than refusing taps.
    async fn refuse_reused_key(&self, reactions: &[Reaction]) -> Result<(), ApiError> {
        let Some(tap) = reactions.first().and_then(|r| r.key) else {
            return Ok(());
        };
        let ids = viewer_state_ids(reactions.iter());
        let read = reactions::mongo::within(
            KEY_CHECK_LIMIT,
            "reading the viewer's idempotency keys",
            self.viewer_taps.read(&ids),
        )
        .await;
        match read {
            Ok(stored)
                if stored.values().any(|state| {
                    idempotency::reused_for_another_body(state, tap.key, tap.body)
                }) =>
            {
                Err(ApiError::KeyReused {
                    field: idempotency::HEADER,
                })
            }
            Ok(_) => Ok(()),
            Err(error) => {
                tracing::warn!(%error, "idempotency key check skipped; aggregate still refuses a reused key");
                Ok(())
            }
        }
    }

    /// `GET /streams/{id}/moments`, as JSON or WebVTT chapters (see `moments_route`). An
    /// ended stream whose moments are all confirmed and over answers the same from now on, so
    /// a CDN may keep it for longer.
    async fn moments_answer(
        &self,
        registry: &Registry<'_>,
        stream: &str,
        origin: Option<i64>,
        format: moments_route::MomentsFormat,
    ) -> Result<Response<Body>, ApiError> {
        let entry = streams_route::entry(registry, stream).await?;
        let moments = moments_route::read(&self.moments, &entry).await?;
        // Once the stream's last windows are final and its last moment found, well after its
        // end, the list no longer changes.
        let settled = entry
            .ended_ms
            .is_some_and(|end| now_ms() >= end.saturating_add(replay_route::SETTLED_AFTER_END_MS))
            && moments
                .iter()
                .all(|m| m.moment.ended && m.status == reactions::moments::MomentStatus::Confirmed);
        let mut response = match format {
            moments_route::MomentsFormat::Json => json_response(
                StatusCode::OK,
                &moments_route::to_json(&entry, &moments, origin),
            ),
            moments_route::MomentsFormat::WebVtt => {
                let origin = origin
                    .or(entry.started_ms)
                    .ok_or_else(|| ApiError::NoOrigin {
                        stream: entry.id.as_str().to_owned(),
                        parameter: "origin",
                    })?;
                let mut response = Response::new(Body::Text(moments_route::to_webvtt(
                    &entry, &moments, origin,
                )));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/vtt; charset=utf-8"),
                );
                response
            }
        };
        let cache = if settled {
            "public, max-age=3600"
        } else {
            "public, max-age=5"
        };
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
        headers.insert(header::VARY, HeaderValue::from_static("Accept"));
        Ok(response)
    }

    async fn post_reactions(
        &self,
        request: &Request,
        outcome: &mut Outcome,
    ) -> Result<Response<Body>, ApiError> {
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let viewer = match &self.config.jwt_issuer {
            Some(_) => Some(verified_viewer(request).ok_or(ApiError::Unauthorized)?),
            None => None,
        };
        let key = request
            .headers()
            .get(idempotency::HEADER)
            .map(|value| IdempotencyKey::parse(value.as_bytes()))
            .transpose()
            .map_err(|error| ApiError::Invalid(vec![error]))?;
        let mut body = reactions_body::read_body(
            content_type.as_deref(),
            body_bytes(request.body()),
            self.config.max_body_bytes,
        )?;
        if let Some(viewer) = &viewer {
            body.bind_viewer(viewer)?;
        }
        let live = self.live_streams(&body.stream_ids()).await?;
        let mut reactions = body.validate(&self.config.domain, &live, now_ms())?;
        // The stream's own fair-use limit travels with its reactions to aggregate.
        for reaction in &mut reactions {
            reaction.fair_use_limit = live.0.get(&reaction.stream).and_then(|e| e.fair_use_limit);
        }
        if let Some(key) = &key {
            idempotency::stamp(&mut reactions, key)
                .map_err(|error| ApiError::Invalid(vec![error]))?;
            self.refuse_reused_key(&reactions).await?;
        }
        let started = Instant::now();
        let published = self.publisher.publish(&reactions).await;
        outcome.produce_ms = Some(elapsed_ms(started));
        match published {
            Ok(_at_ms) => {
                outcome.accepted = reactions.len() as u64;
                Ok(json_response(
                    StatusCode::ACCEPTED,
                    &json!({ "accepted": reactions.len() }),
                ))
            }
            Err(error) => {
                tracing::error!(%error, topic = self.publisher.topic(), "producing reactions failed");
                outcome.rejected = reactions.len() as u64;
                Err(ApiError::Unavailable { service: "Kafka" })
            }
        }
    }
}
