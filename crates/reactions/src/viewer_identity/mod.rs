//! Viewer identity: who is tapping, proven by a JWT from the broadcaster's identity provider.
//! When the template's `JwtIssuer` is set, the HTTP API's JWT authorizer checks the bearer
//! token of `POST /reactions` (ingest then takes the viewer's id from its `sub`), and notify
//! checks the token a browser opens the WebSocket with. Both check what API Gateway's JWT
//! authorizer checks (its "Authorizing API requests with a JWT authorizer" workflow in the HTTP
//! API developer guide): a `kid` found in the issuer's JWKS, an RSA signature, `iss` equal to
//! the issuer, `aud` (or `client_id` when there is no `aud`) equal to the audience, `exp` in
//! the future, and `nbf` and `iat` not in the future. The local stack's authorizer uses the
//! same checks, so local answers match AWS's.

mod issuer_keys;
mod verifier;

pub use issuer_keys::{IssuerKeys, KEYS_REFRESH_EVERY, UNKNOWN_KEY_REFETCH_AFTER};
pub use verifier::{TokenVerifier, Viewer};

use crate::config::{ConfigError, Settings, text_or};

/// The identity provider viewers sign in with: `JWT_ISSUER` and `JWT_AUDIENCE` (template
/// parameters `JwtIssuer` and `JwtAudience`). Both empty: identity is off, as before it existed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentitySettings {
    /// The issuer URL, exactly as tokens carry it in `iss`; its keys are found through
    /// `{issuer}/.well-known/openid-configuration`.
    pub issuer: String,
    /// The audience tokens must be issued for (`aud`, else `client_id`).
    pub audience: String,
}

impl IdentitySettings {
    /// Reads `JWT_ISSUER` and `JWT_AUDIENCE`: `None` when both are empty or unset.
    pub fn from_settings(settings: &impl Settings) -> Result<Option<Self>, ConfigError> {
        let issuer = text_or(settings, "JWT_ISSUER", "").trim().to_owned();
        let audience = text_or(settings, "JWT_AUDIENCE", "").trim().to_owned();
        match (issuer.is_empty(), audience.is_empty()) {
            (true, true) => Ok(None),
            (true, false) => Err(ConfigError {
                var: "JWT_ISSUER",
                reason: "is empty but JWT_AUDIENCE is set: set both to turn viewer identity on, \
                         or neither"
                    .into(),
            }),
            (false, true) => Err(ConfigError {
                var: "JWT_AUDIENCE",
                reason: "is empty but JWT_ISSUER is set: tokens must name an audience".into(),
            }),
            (false, false) => {
                if !(issuer.starts_with("https://") || issuer.starts_with("http://")) {
                    return Err(ConfigError {
                        var: "JWT_ISSUER",
                        reason: format!("must be an http(s) URL, got {issuer:?}"),
                    });
                }
                Ok(Some(Self { issuer, audience }))
            }
        }
    }
}

/// Why a token was refused. Every refusal is API Gateway's 401; the text is what its
/// `www-authenticate` header's `error_description` says, and goes to logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefusal {
    #[error("no token was given")]
    Missing,
    #[error("the token is not a signed JWT")]
    Malformed,
    #[error("the token has no kid header")]
    NoKeyId,
    #[error("the token's algorithm {0} is not an RSA signature algorithm")]
    UnsupportedAlgorithm(String),
    #[error("the token's kid {0:?} is not in the issuer's JWKS")]
    UnknownKey(String),
    #[error("the token's signature does not match the issuer's key")]
    BadSignature,
    #[error("the token does not have a valid issuer")]
    WrongIssuer,
    #[error("the token does not have a valid audience")]
    WrongAudience,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token has no {0} claim")]
    MissingClaim(&'static str),
    #[error("the issuer's keys cannot be read: {0}")]
    KeysUnavailable(String),
}

impl TokenRefusal {
    /// Whether the refusal is about the token (401) rather than the issuer being unreachable.
    pub fn is_the_tokens_fault(&self) -> bool {
        !matches!(self, TokenRefusal::KeysUnavailable(_))
    }
}

/// The token in an `Authorization` value: `Bearer <token>` or the bare token, as API
/// Gateway's JWT authorizer takes either.
pub fn bearer_token(authorization: &str) -> &str {
    let value = authorization.trim();
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        _ => value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_off_unless_issuer_and_audience_are_both_set() {
        let read = |issuer: &str, audience: &str| {
            IdentitySettings::from_settings(&[("JWT_ISSUER", issuer), ("JWT_AUDIENCE", audience)])
        };
        assert_eq!(read("", ""), Ok(None));
        assert_eq!(read("  ", ""), Ok(None));
        assert_eq!(
            read("https://id.example.com", "emostream"),
            Ok(Some(IdentitySettings {
                issuer: "https://id.example.com".into(),
                audience: "emostream".into()
            }))
        );
        assert_eq!(read("", "emostream").unwrap_err().var, "JWT_ISSUER");
        assert_eq!(
            read("https://id.example.com", "").unwrap_err().var,
            "JWT_AUDIENCE"
        );
        let not_a_url = read("id.example.com", "emostream").unwrap_err();
        assert!(not_a_url.reason.contains("http(s) URL"), "{not_a_url}");
    }

    #[test]
    fn the_token_is_read_with_or_without_its_scheme() {
        assert_eq!(bearer_token("Bearer abc.def.ghi"), "abc.def.ghi");
        assert_eq!(bearer_token("bearer  abc"), "abc");
        assert_eq!(bearer_token("abc.def.ghi"), "abc.def.ghi");
        assert_eq!(bearer_token(""), "");
    }
}
