//! The HTTP API: turns each HTTP request into an API Gateway payload-v2 event for the function
//! whose template route matches (method and path, with `{name}` and `{proxy+}` parameters),
//! and the function's answer back into an HTTP response, as API Gateway does: structured
//! answers (`statusCode`, `headers`, `cookies`, `body`, `isBase64Encoded`) are honoured, other
//! JSON is returned as a 200 body, unmatched routes get 404, function errors 500 and timeouts
//! 503, requests beyond the account throttle 429, each with API Gateway's `{"message": ...}`
//! body. Routes with an authorizer run it first ([`crate::api_gateway::authorizers`]).

use super::{gateway_error, query_pairs};
use crate::api_gateway::authorizers::RouteAuthorizer;
use crate::api_gateway::quotas::AwsQuotas;
use crate::api_gateway::websocket_event::http_date;
use crate::lambda::FunctionPool;
use crate::lambda::runtime_api::InvokeError;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// API Gateway's payload limit for HTTP APIs.
pub const MAX_PAYLOAD_BYTES: usize = 10 * 1024 * 1024;

/// One route bound to its function.
pub struct BoundRoute {
    pub method: String,
    pub path: String,
    pub function: Arc<FunctionPool>,
    /// Its authorizer.
    pub auth: RouteAuthorizer,
}

/// The HTTP API's routes.
pub struct HttpApi {
    routes: Vec<BoundRoute>,
    quotas: Arc<AwsQuotas>,
    next_request: AtomicU64,
}

/// Matches `path` against a route pattern; returns the path parameters.
pub fn match_path(pattern: &str, path: &str) -> Option<BTreeMap<String, String>> {
    let mut parameters = BTreeMap::new();
    let mut segments = path.trim_start_matches('/').split('/');
    let mut patterns = pattern.trim_start_matches('/').split('/').peekable();
    while let Some(part) = patterns.next() {
        if let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix("+}")) {
            let rest: Vec<&str> = segments.by_ref().collect();
            if rest.is_empty() || patterns.peek().is_some() {
                return None;
            }
            parameters.insert(name.to_owned(), rest.join("/"));
            return Some(parameters);
        }
        let segment = segments.next()?;
        match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            Some(name) if !segment.is_empty() => {
                parameters.insert(name.to_owned(), segment.to_owned());
            }
            Some(_) => return None,
            None if part == segment => {}
            None => return None,
        }
    }
    segments.next().is_none().then_some(parameters)
}

fn query_parameters(raw: &str) -> Map<String, Value> {
    // API Gateway joins repeated parameters with commas.
    let mut map: Map<String, Value> = Map::new();
    for (name, value) in query_pairs(raw) {
        match map.get_mut(&name) {
            Some(Value::String(existing)) => {
                existing.push(',');
                existing.push_str(&value);
            }
            _ => {
                map.insert(name, Value::String(value));
            }
        }
    }
    map
}

impl HttpApi {
    /// An API over `routes`, each request counted against the account's `quotas`.
    pub fn new(routes: Vec<BoundRoute>, quotas: Arc<AwsQuotas>) -> Arc<Self> {
        Arc::new(Self {
            routes,
            quotas,
            next_request: AtomicU64::new(1),
        })
    }

    fn find(&self, method: &Method, path: &str) -> Option<(&BoundRoute, BTreeMap<String, String>)> {
        self.routes.iter().find_map(|route| {
            let method_matches = route.method == "ANY" || route.method == method.as_str();
            if !method_matches {
                return None;
            }
            match_path(&route.path, path).map(|parameters| (route, parameters))
        })
    }

    /// Builds the payload-v2 event for a request matched to `route`.
    #[allow(clippy::too_many_arguments)]
    pub fn event(
        &self,
        route: &BoundRoute,
        parameters: &BTreeMap<String, String>,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
        peer: SocketAddr,
        now_ms: i64,
    ) -> Value {
        let request_id = format!(
            "local-http-{:010}",
            self.next_request.fetch_add(1, Ordering::Relaxed)
        );
        let mut header_map: Map<String, Value> = Map::new();
        let mut cookies = Vec::new();
        for (name, value) in headers {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            if name == "cookie" {
                cookies.extend(value.split(';').map(|c| Value::from(c.trim())));
                continue;
            }
            match header_map.get_mut(name.as_str()) {
                Some(Value::String(existing)) => {
                    existing.push(',');
                    existing.push_str(&value);
                }
                _ => {
                    header_map.insert(name.as_str().to_owned(), Value::String(value));
                }
            }
        }
        let route_key = format!("{} {}", route.method, route.path);
        let raw_query = uri.query().unwrap_or("");
        let host = headers
            .get("host")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost")
            .to_owned();
        let mut event = json!({
            "version": "2.0",
            "routeKey": route_key,
            "rawPath": uri.path(),
            "rawQueryString": raw_query,
            "headers": header_map,
            "requestContext": {
                "accountId": "000000000000",
                "apiId": "local",
                "domainName": host,
                "domainPrefix": host.split('.').next().unwrap_or("local"),
                "http": {
                    "method": method.as_str(),
                    "path": uri.path(),
                    "protocol": "HTTP/1.1",
                    "sourceIp": peer.ip().to_string(),
                    "userAgent": headers.get("user-agent").and_then(|h| h.to_str().ok()).unwrap_or(""),
                },
                "requestId": request_id,
                "routeKey": route_key,
                "stage": "$default",
                "time": http_date(now_ms),
                "timeEpoch": now_ms,
            },
            "isBase64Encoded": false,
        });
        if !cookies.is_empty() {
            event["cookies"] = Value::Array(cookies);
        }
        if !raw_query.is_empty() {
            event["queryStringParameters"] = Value::Object(query_parameters(raw_query));
        }
        if !parameters.is_empty() {
            event["pathParameters"] = json!(parameters);
        }
        if !body.is_empty() {
            match std::str::from_utf8(body) {
                Ok(text) => event["body"] = Value::from(text),
                Err(_) => {
                    event["body"] = Value::from(STANDARD.encode(body));
                    event["isBase64Encoded"] = Value::Bool(true);
                }
            }
        }
        event
    }
}

/// Turns a function's answer into the HTTP response API Gateway would send.
pub fn response_from(answer: &[u8]) -> Response {
    let Ok(value) = serde_json::from_slice::<Value>(answer) else {
        return gateway_error(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error");
    };
    let structured = value.get("statusCode").is_some();
    if !structured {
        return (StatusCode::OK, axum::Json(value)).into_response();
    }
    let status = value["statusCode"]
        .as_u64()
        .and_then(|s| StatusCode::from_u16(s as u16).ok())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = match value.get("body") {
        Some(Value::String(text)) if value["isBase64Encoded"] == true => {
            STANDARD.decode(text).unwrap_or_default()
        }
        Some(Value::String(text)) => text.clone().into_bytes(),
        Some(Value::Null) | None => Vec::new(),
        Some(other) => other.to_string().into_bytes(),
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if let Some(Value::Object(map)) = value.get("headers") {
        for (name, value) in map {
            let text = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(&text),
            ) {
                headers.insert(name, value);
            }
        }
    }
    if let Some(Value::Array(cookies)) = value.get("cookies") {
        for cookie in cookies.iter().filter_map(Value::as_str) {
            if let Ok(value) = HeaderValue::from_str(cookie) {
                headers.append("set-cookie", value);
            }
        }
    }
    response
}

/// The axum handler for every request.
pub async fn handle(
    State(api): State<Arc<HttpApi>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !api.quotas.admit_request() {
        return gateway_error(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests");
    }
    let Some((route, parameters)) = api.find(&method, uri.path()) else {
        return gateway_error(StatusCode::NOT_FOUND, "Not Found");
    };
    let authorizer = match route.auth.authorize(&method, &uri, &headers, &body).await {
        Ok(authorizer) => authorizer,
        Err(refusal) => return refusal,
    };
    let mut event = api.event(
        route,
        &parameters,
        &method,
        &uri,
        &headers,
        &body,
        peer,
        reactions::clock::now_ms(),
    );
    if let Some(authorizer) = authorizer {
        event["requestContext"]["authorizer"] = authorizer;
    }
    let bytes = serde_json::to_vec(&event).unwrap_or_default();
    match route.function.invoke(&bytes).await {
        Ok(answer) => response_from(&answer),
        Err(InvokeError::Timeout(_)) => {
            gateway_error(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable")
        }
        Err(_) => gateway_error(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_patterns_match_like_api_gateway() {
        let params = |pattern, path| match_path(pattern, path);
        assert_eq!(params("/reactions", "/reactions"), Some(BTreeMap::new()));
        assert_eq!(params("/reactions", "/reactions/x"), None);
        assert_eq!(params("/reactions", "/emojis"), None);
        let found = params("/streams/{id}/windows", "/streams/final/windows").unwrap();
        assert_eq!(found["id"], "final");
        assert_eq!(params("/streams/{id}/windows", "/streams//windows"), None);
        let greedy = params("/files/{proxy+}", "/files/a/b/c").unwrap();
        assert_eq!(greedy["proxy"], "a/b/c");
        assert_eq!(params("/files/{proxy+}", "/files"), None);
    }

    #[test]
    fn queries_are_decoded_and_repeats_joined() {
        let map = query_parameters("since=10&limit=5&tag=a&tag=b%20c&q=x+y");
        assert_eq!(map["since"], "10");
        assert_eq!(map["tag"], "a,b c");
        assert_eq!(map["q"], "x y");
        let escapes = query_parameters("e=%F0%9F%94%A5&p=100%");
        assert_eq!(escapes["e"], "🔥");
        assert_eq!(escapes["p"], "100%");
    }

    #[test]
    fn structured_and_plain_answers_become_responses() {
        let answer = br#"{"statusCode":202,"headers":{"content-type":"application/json","retry-after":"1"},"cookies":["a=1"],"body":"{\"accepted\":1}"}"#;
        let response = response_from(answer);
        assert_eq!(response.status(), 202);
        assert_eq!(response.headers()["retry-after"], "1");
        assert_eq!(response.headers()["set-cookie"], "a=1");
        let plain = response_from(br#"{"hello":"world"}"#);
        assert_eq!(plain.status(), 200);
        assert_eq!(response_from(b"not json").status(), 500);
        let binary = response_from(br#"{"statusCode":200,"isBase64Encoded":true,"body":"aGk="}"#);
        assert_eq!(binary.status(), 200);
    }
}
