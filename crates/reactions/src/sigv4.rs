//! SigV4 signing of an HTTP request in its headers, as AWS services check it: shared by what
//! signs (notify's AppSync Events publishes) and what checks (the local stack's Event API signs
//! the request it received again and compares). MSK IAM tokens are presigned URLs instead
//! (`msk_iam`).

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use std::time::SystemTime;

/// A request to sign: its method, full URL, headers to sign and body.
#[derive(Debug, Clone, Copy)]
pub struct RequestToSign<'a> {
    pub method: &'a str,
    pub url: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
}

/// The headers the signature adds to `request` (`authorization`, `x-amz-date`, and
/// `x-amz-security-token` when the credentials have a session token), for `service` in `region`
/// at `time`.
pub fn signature_headers(
    request: RequestToSign<'_>,
    credentials: &Credentials,
    region: &str,
    service: &str,
    time: SystemTime,
) -> Result<Vec<(String, String)>, String> {
    let identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| format!("signing parameters: {e}"))?
        .into();
    let signable = SignableRequest::new(
        request.method,
        request.url,
        request.headers.iter().copied(),
        SignableBody::Bytes(request.body),
    )
    .map_err(|e| format!("request to sign: {e}"))?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| format!("signing: {e}"))?
        .into_parts();
    Ok(instructions
        .headers()
        .map(|(name, value)| (name.to_ascii_lowercase(), value.to_owned()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn the_signature_names_its_scope_and_changes_with_the_body() {
        let credentials =
            Credentials::new("AKIDEXAMPLE", "secret", Some("token".into()), None, "t");
        let time = UNIX_EPOCH + Duration::from_secs(1_767_225_600);
        let request = |body: &'static [u8]| RequestToSign {
            method: "POST",
            url: "https://x.appsync-api.eu-west-1.amazonaws.com/event",
            headers: &[("host", "x.appsync-api.eu-west-1.amazonaws.com")],
            body,
        };
        let headers =
            signature_headers(request(b"{}"), &credentials, "eu-west-1", "appsync", time).unwrap();
        let get = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("x-amz-date"), Some("20260101T000000Z"));
        assert_eq!(get("x-amz-security-token"), Some("token"));
        let authorization = get("authorization").unwrap();
        assert!(
            authorization.starts_with(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/eu-west-1/appsync/aws4_request"
            ),
            "{authorization}"
        );
        let other =
            signature_headers(request(b"[]"), &credentials, "eu-west-1", "appsync", time).unwrap();
        assert_ne!(headers, other);
    }
}
