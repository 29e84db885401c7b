//! The broadcaster console's signing helper: the admin routes take only requests signed with
//! AWS credentials (SigV4 for `execute-api`, checked by the HTTP API's IAM authorizer), and a
//! web page should not hold an administrator's secret key. The console sends its admin calls
//! here instead, on the origin that served it, and the helper signs each with the credentials
//! it was started with (the local operator's for the local stack; an administrator's own, from
//! the environment, against a deployed API) and forwards it to the API's `/admin/...` routes.
//!
//! Anything that can reach the helper acts as that administrator, so it listens where the
//! pages are served (loopback unless told otherwise) and signs only what the console sends: a
//! request must carry the `X-Emostream-Console` header, which a page of another site can only
//! send after a CORS preflight the helper never grants, and any `Origin` or `Sec-Fetch-Site` it
//! carries must say the same origin. Every request must also be addressed to a loopback name
//! (`Host`), so a site whose name an attacker points at 127.0.0.1 (DNS rebinding) is not "the
//! same origin" either, even for a GET, which browsers send without `Origin`. Only the four
//! admin routes of the template pass (`GET streams`, `PUT streams/{id}`, `POST
//! streams/{id}/start|end`, the id a valid stream id), with JSON bodies and no query.
//!
//! The checks hold against browsers. A program on this machine can send any header, so the
//! helper is only served on a loopback listener, and on a machine shared with other users it
//! lends them the administrator too (docs/broadcaster-console.md).

use crate::api_gateway::admin_client::{AdminClient, AdminError};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as RoutePath, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use reactions::ids::StreamId;
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;

/// The header the console sends with every admin call.
pub const CONSOLE_HEADER: &str = "x-emostream-console";

/// Largest body the helper forwards: a catalogue of 64 emojis is a few kilobytes.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// Where the helper is served on the pages' origin (`adminUrl` in their `config.json`).
pub const PATH: &str = "/admin";

/// The pages of `directory` with their `config` at `/config.json` and the helper at
/// [`PATH`], signing with `admin`: the local stack's web server and `emostream-console`.
pub fn site_with_helper(directory: &Path, config: Value, admin: AdminClient) -> Router {
    Router::new()
        .route(
            "/config.json",
            axum::routing::get(move || {
                let config = config.clone();
                async move { axum::Json(config) }
            }),
        )
        .nest(PATH, router(admin))
        .fallback_service(tower_http::services::ServeDir::new(directory))
}

/// The helper's routes, to be nested at [`PATH`] on the origin serving the console.
pub fn router(admin: AdminClient) -> Router {
    Router::new()
        .route("/{*path}", any(forward))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(Arc::new(admin))
}

fn refuse(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({ "error": code, "message": message })),
    )
        .into_response()
}

/// Whether `host` (a `Host` header: name and port) names this machine's loopback interface.
pub fn is_loopback_host(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether the request was addressed to a loopback name and comes from a page of that origin
/// (or from no page).
fn same_origin(headers: &HeaderMap) -> bool {
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let Some(host) = text(header::HOST).filter(|host| is_loopback_host(host)) else {
        return false;
    };
    let origin_ok = text(header::ORIGIN).is_none_or(|origin| {
        origin
            .split_once("://")
            .is_some_and(|(_, authority)| authority == host)
    });
    let site_ok = text(axum::http::HeaderName::from_static("sec-fetch-site"))
        .is_none_or(|site| site == "same-origin" || site == "none");
    origin_ok && site_ok
}

/// The API path of the admin route `method path` names (`path` below `/admin/`), if it is one
/// of the template's: anything else (another path, `..`, an id outside the stream-id rules) is
/// not signed.
fn admin_route(method: &Method, path: &str) -> Option<String> {
    let parts: Vec<&str> = path.split('/').collect();
    let stream_id = |id: &str| StreamId::parse("id", id).is_ok() && id.chars().any(|c| c != '.');
    let known = match parts.as_slice() {
        ["streams"] => *method == Method::GET,
        ["streams", id] => *method == Method::PUT && stream_id(id),
        ["streams", id, "start" | "end"] => *method == Method::POST && stream_id(id),
        _ => false,
    };
    known.then(|| format!("/admin/{path}"))
}

async fn forward(
    State(admin): State<Arc<AdminClient>>,
    method: Method,
    RoutePath(path): RoutePath<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !headers.contains_key(CONSOLE_HEADER) {
        return refuse(
            StatusCode::FORBIDDEN,
            "console_header_missing",
            "the signing helper signs only the console's requests (X-Emostream-Console)",
        );
    }
    if !same_origin(&headers) {
        return refuse(
            StatusCode::FORBIDDEN,
            "cross_origin",
            "the signing helper signs only requests of pages on its own loopback origin (127.0.0.1, localhost)",
        );
    }
    let Some(path) = admin_route(&method, &path).filter(|_| query.is_none()) else {
        return refuse(
            StatusCode::NOT_FOUND,
            "not_an_admin_route",
            &format!(
                "the signing helper signs only GET streams, PUT streams/{{id}} and POST streams/{{id}}/start or /end, without a query (not {method} {path})"
            ),
        );
    };
    let body: Option<Value> = if body.is_empty() {
        None
    } else {
        match serde_json::from_slice(&body) {
            Ok(value) => Some(value),
            Err(error) => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "invalid_json",
                    &format!("body is not valid JSON: {error}"),
                );
            }
        }
    };
    match admin.send(method.as_str(), &path, body.as_ref()).await {
        Ok((status, answer)) => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
            axum::Json(answer),
        )
            .into_response(),
        Err(error @ (AdminError::Transport(..) | AdminError::Refused { .. })) => {
            tracing::warn!(%error, "the signing helper could not reach the admin routes");
            refuse(
                StatusCode::BAD_GATEWAY,
                "api_unreachable",
                &format!("the API did not answer: {error}"),
            )
        }
        Err(error @ AdminError::Request(..)) => refuse(
            StatusCode::BAD_REQUEST,
            "unsignable",
            &format!("the request cannot be signed: {error}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn only_pages_of_the_helpers_own_origin_pass() {
        assert!(same_origin(&headers(&[("host", "127.0.0.1:8080")])));
        assert!(same_origin(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080"),
            ("sec-fetch-site", "same-origin"),
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://attacker.test:8080"),
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("sec-fetch-site", "cross-site"),
        ])));
        assert!(!same_origin(&headers(&[(
            "origin",
            "http://127.0.0.1:8080"
        )])));
        // A name pointed at this machine by its owner's DNS is not this machine's origin.
        assert!(!same_origin(&headers(&[
            ("host", "rebound.test:8080"),
            ("origin", "http://rebound.test:8080"),
        ])));
        assert!(same_origin(&headers(&[
            ("host", "localhost:8081"),
            ("origin", "http://localhost:8081"),
        ])));
        assert!(same_origin(&headers(&[
            ("host", "[::1]:8081"),
            ("origin", "http://[::1]:8081"),
        ])));
        // Browsers send a same-origin GET without Origin: the Host alone must be loopback.
        assert!(!same_origin(&headers(&[
            ("host", "rebound.test:8080"),
            ("sec-fetch-site", "same-origin"),
        ])));
        assert!(!same_origin(&headers(&[])));
    }

    #[test]
    fn only_the_templates_admin_routes_are_signed() {
        let route = |method: Method, path: &str| admin_route(&method, path);
        assert_eq!(
            route(Method::GET, "streams").as_deref(),
            Some("/admin/streams")
        );
        assert_eq!(
            route(Method::PUT, "streams/cup-final").as_deref(),
            Some("/admin/streams/cup-final")
        );
        assert_eq!(
            route(Method::POST, "streams/cup-final/end").as_deref(),
            Some("/admin/streams/cup-final/end")
        );
        for (method, path) in [
            (Method::POST, "streams"),
            (Method::DELETE, "streams/cup-final"),
            (Method::GET, "streams/cup-final/start"),
            (Method::POST, "streams/cup-final/restart"),
            (Method::POST, "streams/../start"),
            (Method::PUT, "streams/.."),
            (Method::GET, "../reactions"),
            (Method::PUT, "streams/a/../b"),
            (Method::PUT, "streams/a?b"),
            (Method::PUT, "streams/"),
            (Method::GET, "streams/"),
        ] {
            assert_eq!(route(method.clone(), path), None, "{method} {path}");
        }
    }
}
