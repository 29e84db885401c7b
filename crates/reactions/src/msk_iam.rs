//! Amazon MSK IAM authentication for Kafka clients: the SASL/OAUTHBEARER token MSK accepts is
//! a SigV4-presigned `kafka-cluster:Connect` URL for the cluster's region, base64url-encoded.
//! librdkafka asks for a fresh token before the old one expires; credentials are read from the
//! environment each time, where Lambda puts the function role's temporary credentials.

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use std::time::{Duration, SystemTime};

/// How long a token is valid (MSK's maximum).
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(900);

/// Characters SigV4 leaves unescaped in query strings.
const QUERY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Why no token could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("MSK IAM needs AWS credentials: {0} is not set")]
    MissingCredentials(&'static str),
    #[error("signing the MSK IAM token failed: {0}")]
    Signing(String),
}

/// A token and when it stops being valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MskToken {
    pub token: String,
    /// Expiry, ms since the epoch.
    pub expires_at_ms: i64,
}

/// The static credentials Lambda provides in the environment.
pub fn credentials_from_env() -> Result<Credentials, TokenError> {
    let var = |name: &'static str| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .ok_or(TokenError::MissingCredentials(name))
    };
    Ok(Credentials::new(
        var("AWS_ACCESS_KEY_ID")?,
        var("AWS_SECRET_ACCESS_KEY")?,
        std::env::var("AWS_SESSION_TOKEN")
            .ok()
            .filter(|t| !t.is_empty()),
        None,
        "environment",
    ))
}

/// Makes the token for `region`, signed with `credentials` at `now`.
pub fn auth_token(
    region: &str,
    credentials: &Credentials,
    now: SystemTime,
) -> Result<MskToken, TokenError> {
    let host = format!("kafka.{region}.amazonaws.com");
    let url = format!("https://{host}/?Action=kafka-cluster%3AConnect");
    let identity = credentials.clone().into();
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(TOKEN_LIFETIME);
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("kafka-cluster")
        .time(now)
        .settings(settings)
        .build()
        .map_err(|e| TokenError::Signing(e.to_string()))?
        .into();
    let request = SignableRequest::new(
        "GET",
        url.as_str(),
        [("host", host.as_str())].into_iter(),
        SignableBody::Bytes(&[]),
    )
    .map_err(|e| TokenError::Signing(e.to_string()))?;
    let (instructions, _) = sign(request, &params)
        .map_err(|e| TokenError::Signing(e.to_string()))?
        .into_parts();
    let mut signed = url;
    for (name, value) in instructions.params() {
        signed.push('&');
        signed.push_str(name);
        signed.push('=');
        signed.extend(utf8_percent_encode(value, QUERY));
    }
    signed.push_str("&User-Agent=emostream-rdkafka");
    let issued_ms = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    Ok(MskToken {
        token: URL_SAFE_NO_PAD.encode(signed),
        expires_at_ms: issued_ms + TOKEN_LIFETIME.as_millis() as i64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_a_presigned_connect_url() {
        let credentials =
            Credentials::new("AKIDEXAMPLE", "secret", Some("tok+en/=".into()), None, "t");
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600);
        let token = auth_token("eu-west-1", &credentials, now).unwrap();
        assert_eq!(token.expires_at_ms, 1_767_225_600_000 + 900_000);
        let url = String::from_utf8(URL_SAFE_NO_PAD.decode(&token.token).unwrap()).unwrap();
        assert!(
            url.starts_with(
                "https://kafka.eu-west-1.amazonaws.com/?Action=kafka-cluster%3AConnect&"
            ),
            "{url}"
        );
        for part in [
            "X-Amz-Algorithm=AWS4-HMAC-SHA256",
            "X-Amz-Credential=AKIDEXAMPLE%2F20260101%2Feu-west-1%2Fkafka-cluster%2Faws4_request",
            "X-Amz-Date=20260101T000000Z",
            "X-Amz-Expires=900",
            "X-Amz-SignedHeaders=host",
            "X-Amz-Security-Token=tok%2Ben%2F%3D",
            "User-Agent=",
        ] {
            assert!(url.contains(part), "{part} missing from {url}");
        }
        let signature = url.split("X-Amz-Signature=").nth(1).unwrap();
        assert_eq!(signature.split('&').next().unwrap().len(), 64);
        // Deterministic for the same inputs, different for another region.
        assert_eq!(auth_token("eu-west-1", &credentials, now).unwrap(), token);
        assert_ne!(
            auth_token("us-east-1", &credentials, now).unwrap().token,
            token.token
        );
    }
}
