//! A demo identity provider for the local stack, so `make demo` shows viewer identity without
//! an account anywhere: a viewer signs in by name and gets an RS256 JWT for that name. It
//! publishes what a real OpenID provider publishes for API Gateway's JWT authorizer (a
//! discovery document and a JWKS), so the local authorizer and notify find its keys the way
//! they find a real issuer's. Its key pair is made at start-up and lives only in memory.
//! Routes: `GET /.well-known/openid-configuration`, `GET /.well-known/jwks.json`, and
//! `POST /sign-in` with `{"viewer": "<name>"}`, answering `{"token", "viewer", "expires_at"}`.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reactions::UserId;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// The audience the demo issuer's tokens are for (the local template's `JwtAudience`).
pub const DEMO_AUDIENCE: &str = "emostream-demo";
/// How long a demo token lasts unless told otherwise; the page signs in again when it expires.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(15 * 60);
/// Longest viewer name, in characters.
const MAX_NAME_LEN: usize = 40;

/// Why the issuer could not start.
#[derive(Debug, thiserror::Error)]
pub enum IssuerError {
    #[error("cannot make the demo issuer's RSA key: {0}")]
    Key(String),
    #[error("the demo issuer cannot listen: {0}")]
    Listen(#[from] std::io::Error),
}

/// The demo issuer: its URL, audience and signing key.
pub struct DemoIssuer {
    issuer: String,
    audience: String,
    token_ttl: Duration,
    key_id: String,
    signing_key: EncodingKey,
    public_keys: JwkSet,
}

impl std::fmt::Debug for DemoIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoIssuer")
            .field("issuer", &self.issuer)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// A new RSA-2048 key pair: the signing key and its public JWK named `key_id`.
pub fn rsa_key_pair(key_id: &str) -> Result<(EncodingKey, Jwk), IssuerError> {
    let failed = |e: &dyn std::fmt::Display| IssuerError::Key(e.to_string());
    let pair = KeyPair::generate(KeySize::Rsa2048).map_err(|e| failed(&e))?;
    let pkcs8 = pair.as_der().map_err(|e| failed(&e))?;
    let body = STANDARD.encode(pkcs8.as_ref());
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .filter_map(|line| std::str::from_utf8(line).ok())
        .collect();
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        lines.join("\n")
    );
    let signing_key = EncodingKey::from_rsa_pem(pem.as_bytes()).map_err(|e| failed(&e))?;
    let mut jwk = Jwk::from_encoding_key(&signing_key, Algorithm::RS256).map_err(|e| failed(&e))?;
    jwk.common.key_id = Some(key_id.to_owned());
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    jwk.common.key_algorithm = Some(KeyAlgorithm::RS256);
    Ok((signing_key, jwk))
}

/// Signs `claims` with `key` as RS256 under `key_id`.
pub fn sign(claims: &Value, key: &EncodingKey, key_id: &str) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(key_id.to_owned());
    jsonwebtoken::encode(&header, claims, key).unwrap_or_default()
}

/// The viewer id a name signs in as: lower case, spaces as `-`; `None` when it is not a
/// usable name (empty, too long, or other than letters, digits, spaces, `-`, `_` and `.`).
pub fn viewer_id(name: &str) -> Option<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_LEN {
        return None;
    }
    let id: String = name
        .chars()
        .map(|c| {
            if c == ' ' {
                '-'
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect();
    let id = format!("viewer:{id}");
    UserId::parse("viewer", &id).ok().map(|_| id)
}

fn now_s() -> i64 {
    reactions::clock::now_ms().div_euclid(1000)
}

impl DemoIssuer {
    /// An issuer at `issuer` (its base URL) for `audience`, with a fresh key.
    pub fn new(issuer: &str, audience: &str, token_ttl: Duration) -> Result<Self, IssuerError> {
        let key_id = format!("demo-{:08x}", rand::random::<u32>());
        let (signing_key, jwk) = rsa_key_pair(&key_id)?;
        Ok(Self {
            issuer: issuer.trim_end_matches('/').to_owned(),
            audience: audience.to_owned(),
            token_ttl,
            key_id,
            signing_key,
            public_keys: JwkSet { keys: vec![jwk] },
        })
    }

    /// Starts an issuer for `audience` on a free port of 127.0.0.1, serving until the runtime
    /// stops (tests and tools that need one without a whole stack).
    pub async fn spawn_local(
        audience: &str,
        token_ttl: Duration,
    ) -> Result<Arc<Self>, IssuerError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let issuer = Arc::new(Self::new(&url, audience, token_ttl)?);
        let router = issuer.router();
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, router).await {
                tracing::error!(%error, "demo issuer stopped");
            }
        });
        Ok(issuer)
    }

    /// The issuer URL (`iss`).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The audience (`aud`).
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// The claims of a token for `subject` issued now: what a real provider puts in an
    /// access token, for tests to alter before [`Self::mint`].
    pub fn claims_for(&self, subject: &str) -> Value {
        let now = now_s();
        json!({
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject,
            "iat": now,
            "nbf": now,
            "exp": now + self.token_ttl.as_secs() as i64,
        })
    }

    /// Signs any `claims` with the issuer's key.
    pub fn mint(&self, claims: &Value) -> String {
        sign(claims, &self.signing_key, &self.key_id)
    }

    /// A token for the viewer `subject`, valid for the issuer's token lifetime.
    pub fn token_for(&self, subject: &str) -> String {
        self.mint(&self.claims_for(subject))
    }

    /// The issuer's routes, with CORS open to any page (the browser client signs in from
    /// another origin).
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/.well-known/jwks.json", get(jwks))
            .route("/sign-in", post(sign_in).options(preflight))
            .with_state(Arc::clone(self))
    }
}

fn with_cors(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("content-type"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, OPTIONS"),
    );
    response
}

async fn discovery(State(issuer): State<Arc<DemoIssuer>>) -> Response {
    with_cors(
        axum::Json(json!({
            "issuer": issuer.issuer,
            "jwks_uri": format!("{}/.well-known/jwks.json", issuer.issuer),
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["token"],
            "subject_types_supported": ["public"],
        }))
        .into_response(),
    )
}

async fn jwks(State(issuer): State<Arc<DemoIssuer>>) -> Response {
    with_cors(axum::Json(&issuer.public_keys).into_response())
}

async fn preflight(_method: Method) -> Response {
    with_cors(StatusCode::NO_CONTENT.into_response())
}

async fn sign_in(State(issuer): State<Arc<DemoIssuer>>, body: axum::body::Bytes) -> Response {
    let refuse = |message: String| {
        with_cors(
            (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({ "error": "bad_viewer", "message": message })),
            )
                .into_response(),
        )
    };
    let name = match serde_json::from_slice::<Value>(&body) {
        Ok(value) => value
            .get("viewer")
            .and_then(Value::as_str)
            .map(str::to_owned),
        Err(error) => return refuse(format!("the body is not JSON: {error}")),
    };
    let Some(name) = name else {
        return refuse(r#"send {"viewer": "<your name>"}"#.to_owned());
    };
    let Some(subject) = viewer_id(&name) else {
        return refuse(format!(
            "a viewer name is 1 to {MAX_NAME_LEN} letters, digits, spaces, '-', '_' or '.'"
        ));
    };
    let claims = issuer.claims_for(&subject);
    with_cors(
        axum::Json(json!({
            "token": issuer.mint(&claims),
            "viewer": subject,
            "expires_at": claims["exp"],
        }))
        .into_response(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viewer_names_become_viewer_ids() {
        assert_eq!(viewer_id(" Alice B "), Some("viewer:alice-b".into()));
        assert_eq!(viewer_id("bob_2.0"), Some("viewer:bob_2.0".into()));
        assert_eq!(viewer_id(""), None);
        assert_eq!(viewer_id("a/b"), None);
        assert_eq!(viewer_id("ünï"), None);
        assert_eq!(viewer_id(&"x".repeat(41)), None);
    }
}
