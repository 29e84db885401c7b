//! Checks a SigV4 signature as AWS services check requests signed with IAM credentials (the
//! Event API's publishes, service `appsync`; the HTTP API's IAM-authorized routes, service
//! `execute-api`): the `Authorization` header names the access key, the date, region and
//! service and the signed headers; the signature is computed again over the same request and
//! must match. Only the local credentials are known, and a request dated more than 5 minutes
//! from now is refused (AWS's allowed clock skew).

use aws_credential_types::Credentials;
use reactions::sigv4::{RequestToSign, signature_headers};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Largest difference between a request's date and now.
const MAX_SKEW: Duration = Duration::from_secs(300);

/// What a signed request looks like to the checker.
pub struct SignedRequest<'a> {
    pub method: &'a str,
    /// The full URL as the client addressed it (`http://{host}/event`).
    pub url: &'a str,
    /// Every header, lower-case names.
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

/// A request as an HTTP handler received it (the URL rebuilt from its `Host`), held so that
/// [`ReceivedRequest::signed`] can lend it to [`verify`].
pub struct ReceivedRequest {
    url: String,
    headers: Vec<(String, String)>,
}

impl ReceivedRequest {
    pub fn new(uri: &axum::http::Uri, headers: &axum::http::HeaderMap) -> Self {
        let host = headers
            .get("host")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost");
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        Self {
            url: format!("http://{host}{path}"),
            headers: headers
                .iter()
                .map(|(name, value)| {
                    (
                        name.as_str().to_owned(),
                        String::from_utf8_lossy(value.as_bytes()).into_owned(),
                    )
                })
                .collect(),
        }
    }

    /// The request to check, with its method and body.
    pub fn signed<'a>(&'a self, method: &'a str, body: &'a [u8]) -> SignedRequest<'a> {
        SignedRequest {
            method,
            url: &self.url,
            headers: &self.headers,
            body,
        }
    }
}

/// Why a signature is refused; the text is what the emulation answers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no AWS4-HMAC-SHA256 Authorization header")]
    Missing,
    #[error("malformed Authorization header: {0}")]
    Malformed(&'static str),
    #[error("unknown access key {0:?}")]
    UnknownKey(String),
    #[error("the security token included in the request is invalid")]
    BadToken,
    #[error("the credential scope is not for the {0} service")]
    WrongService(&'static str),
    #[error("signature expired or dated in the future (more than 5 minutes from now)")]
    Skewed,
    #[error("the request signature we calculated does not match the signature you provided")]
    Mismatch,
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// `20261127T193000Z` as a time.
fn parse_amz_date(text: &str) -> Option<SystemTime> {
    let digits = |range: std::ops::Range<usize>| text.get(range)?.parse::<i64>().ok();
    if text.len() != 16 || text.as_bytes()[8] != b'T' || !text.ends_with('Z') {
        return None;
    }
    let (year, month, day) = (digits(0..4)?, digits(4..6)?, digits(6..8)?);
    let (hour, minute, second) = (digits(9..11)?, digits(11..13)?, digits(13..15)?);
    // Days from 1970-01-01 to the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second;
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(seconds).ok()?))
}

/// Checks `request`, signed for `service`, against `credentials` (the only identity the
/// emulation knows).
pub fn verify(
    request: &SignedRequest<'_>,
    credentials: &Credentials,
    service: &'static str,
) -> Result<(), SignatureError> {
    let authorization = header(request.headers, "authorization")
        .and_then(|a| a.strip_prefix("AWS4-HMAC-SHA256 "))
        .ok_or(SignatureError::Missing)?;
    let field = |name: &str| {
        authorization
            .split(',')
            .map(str::trim)
            .find_map(|part| part.strip_prefix(name)?.strip_prefix('='))
    };
    let credential = field("Credential").ok_or(SignatureError::Malformed("no Credential"))?;
    let signed_headers =
        field("SignedHeaders").ok_or(SignatureError::Malformed("no SignedHeaders"))?;
    let signature = field("Signature").ok_or(SignatureError::Malformed("no Signature"))?;
    let scope: Vec<&str> = credential.split('/').collect();
    let [key, _date, region, scope_service, "aws4_request"] = scope[..] else {
        return Err(SignatureError::Malformed(
            "Credential is not key/date/region/service/aws4_request",
        ));
    };
    if key != credentials.access_key_id() {
        return Err(SignatureError::UnknownKey(key.to_owned()));
    }
    if scope_service != service {
        return Err(SignatureError::WrongService(service));
    }
    let time = header(request.headers, "x-amz-date")
        .and_then(parse_amz_date)
        .ok_or(SignatureError::Malformed("no valid X-Amz-Date"))?;
    let now = SystemTime::now();
    let skew = now.duration_since(time).unwrap_or_else(|e| e.duration());
    if skew > MAX_SKEW {
        return Err(SignatureError::Skewed);
    }
    let token = header(request.headers, "x-amz-security-token");
    if token.is_some() && token != credentials.session_token() {
        return Err(SignatureError::BadToken);
    }
    let credentials = Credentials::new(
        credentials.access_key_id(),
        credentials.secret_access_key(),
        token.map(str::to_owned),
        None,
        "local",
    );
    // Sign the same request again: the signer adds X-Amz-Date and the session token itself.
    let resigned: Vec<(&str, &str)> = signed_headers
        .split(';')
        .filter(|name| !matches!(*name, "x-amz-date" | "x-amz-security-token"))
        .map(|name| (name, header(request.headers, name).unwrap_or("")))
        .collect();
    let again = RequestToSign {
        method: request.method,
        url: request.url,
        headers: &resigned,
        body: request.body,
    };
    let added = signature_headers(again, &credentials, region, service, time)
        .map_err(|_| SignatureError::Mismatch)?;
    let expected = header(&added, "authorization")
        .and_then(|value| value.rsplit("Signature=").next())
        .ok_or(SignatureError::Mismatch)?;
    if expected == signature {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign_request(
        credentials: &Credentials,
        body: &[u8],
        time: SystemTime,
    ) -> Vec<(String, String)> {
        let base = [
            ("host", "127.0.0.1:3002"),
            ("content-type", "application/json"),
        ];
        let request = RequestToSign {
            method: "POST",
            url: "http://127.0.0.1:3002/event",
            headers: &base,
            body,
        };
        let added = signature_headers(request, credentials, "local", "appsync", time).unwrap();
        base.iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .chain(added)
            .collect()
    }

    fn request<'a>(headers: &'a [(String, String)], body: &'a [u8]) -> SignedRequest<'a> {
        SignedRequest {
            method: "POST",
            url: "http://127.0.0.1:3002/event",
            headers,
            body,
        }
    }

    #[test]
    fn a_good_signature_passes_and_any_change_fails() {
        let credentials = Credentials::new("local", "local", Some("local".into()), None, "t");
        let body = br#"{"channel":"/streams/a","events":["1"]}"#;
        let headers = sign_request(&credentials, body, SystemTime::now());
        assert_eq!(
            verify(&request(&headers, body), &credentials, "appsync"),
            Ok(())
        );

        let tampered = br#"{"channel":"/streams/b","events":["1"]}"#;
        assert_eq!(
            verify(&request(&headers, tampered), &credentials, "appsync"),
            Err(SignatureError::Mismatch)
        );
        let other = Credentials::new("local", "not-local", Some("local".into()), None, "t");
        let headers = sign_request(&other, body, SystemTime::now());
        assert_eq!(
            verify(&request(&headers, body), &credentials, "appsync"),
            Err(SignatureError::Mismatch)
        );
        let without_token = Credentials::new("local", "local", None, None, "t");
        let headers = sign_request(&without_token, body, SystemTime::now());
        assert_eq!(
            verify(&request(&headers, body), &credentials, "appsync"),
            Ok(())
        );
        let other_token = Credentials::new("local", "local", Some("forged".into()), None, "t");
        let headers = sign_request(&other_token, body, SystemTime::now());
        assert_eq!(
            verify(&request(&headers, body), &credentials, "appsync"),
            Err(SignatureError::BadToken)
        );
        let stranger = Credentials::new("AKIDOTHER", "local", None, None, "t");
        let headers = sign_request(&stranger, body, SystemTime::now());
        assert!(matches!(
            verify(&request(&headers, body), &credentials, "appsync"),
            Err(SignatureError::UnknownKey(_))
        ));
        let old = SystemTime::now() - Duration::from_secs(600);
        let headers = sign_request(&credentials, body, old);
        assert_eq!(
            verify(&request(&headers, body), &credentials, "appsync"),
            Err(SignatureError::Skewed)
        );
        assert_eq!(
            verify(&request(&[], body), &credentials, "appsync"),
            Err(SignatureError::Missing)
        );
        let headers = sign_request(&credentials, body, SystemTime::now());
        assert_eq!(
            verify(&request(&headers, body), &credentials, "execute-api"),
            Err(SignatureError::WrongService("execute-api"))
        );
    }

    #[test]
    fn amz_dates() {
        assert_eq!(
            parse_amz_date("20260101T000000Z"),
            Some(UNIX_EPOCH + Duration::from_secs(1_767_225_600))
        );
        assert_eq!(
            parse_amz_date("19700101T000001Z"),
            Some(UNIX_EPOCH + Duration::from_secs(1))
        );
        assert_eq!(parse_amz_date("2026-01-01T00:00:00Z"), None);
    }
}
