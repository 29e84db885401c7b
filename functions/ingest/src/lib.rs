//! The ingest function: the HTTP edge of emostream (API Gateway HTTP API, payload v2), and the
//! only place untrusted input enters. It validates reactions, produces them to Kafka and answers
//! only once the broker has acknowledged them; it also serves the emoji catalogue and the stored
//! windows of a stream. Every answer is JSON; client mistakes are precise 4xx, never a 500.

pub mod api_error;
pub mod config;
pub mod cors;
pub mod publisher;
pub mod reactions_body;
pub mod windows_route;

use api_error::{ApiError, RETRY_AFTER_SECONDS};
use config::IngestConfig;
use lambda_http::http::{HeaderValue, Method, StatusCode, header};
use lambda_http::{Body, Request, RequestExt, Response};
use publisher::ReactionPublisher;
use reactions::clock::{elapsed_ms, now_ms};
use reactions::metrics::MetricsLine;
use reactions::mongo::{StoreError, WindowStore};
use serde_json::{Value, json};
use std::time::Instant;

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
pub const ROUTES: [&str; 5] = [
    "POST /reactions",
    "OPTIONS /reactions",
    "GET /emojis",
    "GET /streams/{id}/windows",
    "GET /health",
];

/// The function's long-lived state: configuration and clients, built once per container.
pub struct Ingest {
    config: IngestConfig,
    publisher: ReactionPublisher,
    windows: WindowStore,
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
        Ok(Self {
            windows: WindowStore::new(&database),
            publisher,
            config,
        })
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
        match (segments.as_slice(), method) {
            (["health"], &Method::GET) => {
                Ok(json_response(StatusCode::OK, &json!({ "status": "ok" })))
            }
            (["emojis"], &Method::GET) => Ok(json_response(
                StatusCode::OK,
                &json!({ "emojis": self.config.domain.catalogue.emojis() }),
            )),
            (["reactions"], &Method::POST) => self.post_reactions(request, outcome).await,
            (["streams", stream, "windows"], &Method::GET) => {
                let query = windows_route::parse_query(stream, request.uri().query())?;
                let body = windows_route::list_windows(
                    &self.windows,
                    &query,
                    self.config.domain.window_width,
                )
                .await?;
                Ok(json_response(StatusCode::OK, &body))
            }
            (["health"] | ["emojis"] | ["streams", _, "windows"], _) => Err(not_allowed("GET")),
            (["reactions"], _) => Err(not_allowed("POST")),
            _ => Err(ApiError::NotFound {
                method: method.to_string(),
                path: path.chars().take(200).collect(),
            }),
        }
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
        let reactions = reactions_body::parse_reactions(
            content_type.as_deref(),
            body_bytes(request.body()),
            &self.config.domain,
            self.config.max_body_bytes,
            now_ms(),
        )?;
        let started = Instant::now();
        let published = self.publisher.publish(&reactions).await;
        outcome.produce_ms = Some(elapsed_ms(started));
        match published {
            Ok(()) => {
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
