//! The ingest function: the HTTP edge of emostream (API Gateway HTTP API, payload v2). It is
//! the only place untrusted input enters, so every route answers a precise JSON status and
//! never panics. This version serves `GET /health`; the reaction routes are being built.

use lambda_http::http::{Method, StatusCode};
use lambda_http::{Body, Request, Response};
use reactions::DomainConfig;
use serde_json::json;

/// Everything the handler needs, built once per container in `main`.
#[derive(Debug, Clone)]
pub struct Ingest {
    /// Domain settings (catalogue, limits, window width).
    pub config: DomainConfig,
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response<Body> {
    let mut response = Response::new(Body::Text(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        lambda_http::http::header::CONTENT_TYPE,
        lambda_http::http::HeaderValue::from_static("application/json"),
    );
    response
}

impl Ingest {
    /// Routes one request.
    pub async fn handle(&self, request: Request) -> Response<Body> {
        match (request.method(), request.uri().path()) {
            (&Method::GET, "/health") => json_response(
                StatusCode::OK,
                json!({ "status": "ok", "emojis": self.config.catalogue.emojis().len() }),
            ),
            (method, path) => json_response(
                StatusCode::NOT_FOUND,
                json!({ "error": "not_found", "message": format!("no route for {method} {path}") }),
            ),
        }
    }
}
