//! CORS: which browser origins may read the API's answers. API Gateway can add these headers
//! too, but the function adds them itself so the local stack and any HTTP front behave alike.

use crate::config::AllowedOrigins;
use lambda_http::http::{HeaderMap, HeaderValue, header};

/// Headers to add to a response for a request from `origin`, if that origin is allowed.
pub fn cors_headers(allowed: &AllowedOrigins, origin: Option<&str>, preflight: bool) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let allow = match (allowed, origin) {
        (AllowedOrigins::Any, _) => Some(HeaderValue::from_static("*")),
        (AllowedOrigins::List(list), Some(origin)) if list.iter().any(|o| o == origin) => {
            HeaderValue::from_str(origin).ok()
        }
        _ => None,
    };
    if let AllowedOrigins::List(_) = allowed {
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    let Some(allow) = allow else {
        return headers;
    };
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("retry-after"),
    );
    if preflight {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            // `authorization`: viewers' bearer tokens when viewer identity is on;
            // `idempotency-key`: the page's retry-safe taps.
            HeaderValue::from_static("content-type, authorization, idempotency-key"),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_origin_gets_a_star() {
        let headers = cors_headers(&AllowedOrigins::Any, Some("https://x.example"), false);
        assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert!(!headers.contains_key(header::ACCESS_CONTROL_ALLOW_METHODS));
    }

    #[test]
    fn listed_origins_are_echoed_and_others_get_nothing() {
        let allowed = AllowedOrigins::List(vec!["https://watch.example".into()]);
        let ok = cors_headers(&allowed, Some("https://watch.example"), true);
        assert_eq!(
            ok[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://watch.example"
        );
        assert_eq!(
            ok[header::ACCESS_CONTROL_ALLOW_METHODS],
            "GET, POST, OPTIONS"
        );
        assert_eq!(ok[header::VARY], "Origin");
        let other = cors_headers(&allowed, Some("https://evil.example"), true);
        assert!(!other.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
        assert!(
            cors_headers(&allowed, None, false)
                .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
                .is_none()
        );
    }
}
