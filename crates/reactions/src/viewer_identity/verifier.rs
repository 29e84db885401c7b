//! Checks one token as API Gateway's JWT authorizer does (see the module above), with the
//! issuer's cached keys.

use super::{IdentitySettings, IssuerKeys, TokenRefusal};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};
use std::collections::HashSet;

/// A verified viewer.
#[derive(Debug, Clone, PartialEq)]
pub struct Viewer {
    /// The token's `sub`: the viewer's id.
    pub subject: String,
    /// Every claim of the token, as it carried them.
    pub claims: Map<String, Value>,
}

/// Verifies viewers' tokens for one issuer and audience.
pub struct TokenVerifier {
    settings: IdentitySettings,
    keys: IssuerKeys,
}

fn refusal(error: &jsonwebtoken::errors::Error) -> TokenRefusal {
    match error.kind() {
        ErrorKind::ExpiredSignature => TokenRefusal::Expired,
        ErrorKind::ImmatureSignature => TokenRefusal::NotYetValid,
        ErrorKind::InvalidIssuer => TokenRefusal::WrongIssuer,
        ErrorKind::InvalidSignature => TokenRefusal::BadSignature,
        ErrorKind::MissingRequiredClaim(claim) if claim == "exp" => {
            TokenRefusal::MissingClaim("exp")
        }
        ErrorKind::MissingRequiredClaim(_) => TokenRefusal::MissingClaim("iss"),
        _ => TokenRefusal::Malformed,
    }
}

fn audience_matches(claims: &Map<String, Value>, audience: &str) -> bool {
    // API Gateway checks `client_id` only when there is no `aud`.
    match claims.get("aud") {
        Some(Value::String(aud)) => aud == audience,
        Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(audience)),
        Some(_) => false,
        None => claims.get("client_id").and_then(Value::as_str) == Some(audience),
    }
}

impl TokenVerifier {
    /// A verifier whose keys are fetched from the issuer on first use.
    pub fn new(settings: IdentitySettings) -> Self {
        Self {
            keys: IssuerKeys::new(&settings.issuer),
            settings,
        }
    }

    /// The issuer's key cache.
    pub fn keys(&self) -> &IssuerKeys {
        &self.keys
    }

    /// Verifies `token` at `now_s` (seconds since the epoch).
    pub async fn verify(&self, token: Option<&str>, now_s: i64) -> Result<Viewer, TokenRefusal> {
        let token = token
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(TokenRefusal::Missing)?;
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenRefusal::Malformed)?;
        if !matches!(
            header.alg,
            Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512
        ) {
            return Err(TokenRefusal::UnsupportedAlgorithm(format!(
                "{:?}",
                header.alg
            )));
        }
        let kid = header.kid.as_deref().ok_or(TokenRefusal::NoKeyId)?;
        let key = self.keys.key(kid).await?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = 0;
        validation.validate_nbf = true;
        validation.validate_aud = false; // checked below, with API Gateway's client_id rule
        validation.set_issuer(&[&self.settings.issuer]);
        validation.required_spec_claims = HashSet::from(["exp".to_owned(), "iss".to_owned()]);
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
            .map_err(|e| refusal(&e))?
            .claims;
        if !audience_matches(&claims, &self.settings.audience) {
            return Err(TokenRefusal::WrongAudience);
        }
        let expires_at_s = claims.get("exp").and_then(Value::as_i64).unwrap_or(0);
        if expires_at_s <= now_s {
            return Err(TokenRefusal::Expired);
        }
        if claims
            .get("iat")
            .and_then(Value::as_i64)
            .is_some_and(|iat| iat > now_s)
        {
            return Err(TokenRefusal::NotYetValid);
        }
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or(TokenRefusal::MissingClaim("sub"))?
            .to_owned();
        Ok(Viewer { subject, claims })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_audience_is_aud_else_client_id() {
        let claims = |v: Value| v.as_object().unwrap().clone();
        assert!(audience_matches(&claims(json!({"aud": "web"})), "web"));
        assert!(audience_matches(
            &claims(json!({"aud": ["tv", "web"]})),
            "web"
        ));
        assert!(!audience_matches(&claims(json!({"aud": "tv"})), "web"));
        assert!(audience_matches(
            &claims(json!({"client_id": "web"})),
            "web"
        ));
        assert!(!audience_matches(
            &claims(json!({"aud": "tv", "client_id": "web"})),
            "web"
        ));
        assert!(!audience_matches(&claims(json!({})), "web"));
    }
}
