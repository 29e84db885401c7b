//! The issuer's signing keys, found through its OpenID discovery document and cached per
//! container: a `$connect` or an authorized request costs no fetch once the keys are known.
//! A token naming an unknown `kid` triggers a refetch (the issuer may have rotated its keys),
//! at most once per [`UNKNOWN_KEY_REFETCH_AFTER`], so tokens with made-up key ids cannot make
//! every request a fetch.

use super::TokenRefusal;
use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::JwkSet;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// Keys are read again this long after the last fetch, so a rotation reaches every container.
pub const KEYS_REFRESH_EVERY: Duration = Duration::from_secs(3600);
/// A token with an unknown `kid` refetches the keys only if they are at least this old.
pub const UNKNOWN_KEY_REFETCH_AFTER: Duration = Duration::from_secs(60);
/// A discovery or JWKS request that takes longer than this fails.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Cached {
    keys: HashMap<String, Arc<DecodingKey>>,
    fetched_at: Option<Instant>,
    fetches: u64,
}

/// The keys of one issuer.
pub struct IssuerKeys {
    issuer: String,
    http: reqwest::Client,
    cached: Mutex<Cached>,
}

#[derive(Deserialize)]
struct Discovery {
    jwks_uri: String,
}

impl IssuerKeys {
    /// Keys of `issuer`, fetched on first use.
    pub fn new(issuer: &str) -> Self {
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .build()
            .unwrap_or_default();
        Self {
            issuer: issuer.trim_end_matches('/').to_owned(),
            http,
            cached: Mutex::new(Cached::default()),
        }
    }

    /// How many times the keys were fetched (for tests and metrics).
    pub async fn fetches(&self) -> u64 {
        self.cached.lock().await.fetches
    }

    /// The key `kid` names: from the cache when it is fresh, else after one fetch.
    pub async fn key(&self, kid: &str) -> Result<Arc<DecodingKey>, TokenRefusal> {
        let mut cached = self.cached.lock().await;
        let age = cached.fetched_at.map(|at| at.elapsed());
        let fresh = age.is_some_and(|age| age < KEYS_REFRESH_EVERY);
        if fresh && let Some(key) = cached.keys.get(kid) {
            return Ok(Arc::clone(key));
        }
        // Stale keys (older than the refresh) are always old enough to refetch.
        if age.is_some_and(|age| age < UNKNOWN_KEY_REFETCH_AFTER) {
            return Err(TokenRefusal::UnknownKey(kid.chars().take(64).collect()));
        }
        cached.keys = self.fetch().await?;
        cached.fetched_at = Some(Instant::now());
        cached.fetches += 1;
        cached
            .keys
            .get(kid)
            .cloned()
            .ok_or_else(|| TokenRefusal::UnknownKey(kid.chars().take(64).collect()))
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, TokenRefusal> {
        let unavailable = |what: String| TokenRefusal::KeysUnavailable(format!("{url}: {what}"));
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        if !response.status().is_success() {
            return Err(unavailable(format!("status {}", response.status())));
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        serde_json::from_slice(&body).map_err(|e| unavailable(e.to_string()))
    }

    async fn fetch(&self) -> Result<HashMap<String, Arc<DecodingKey>>, TokenRefusal> {
        let discovery: Discovery = self
            .get_json(&format!("{}/.well-known/openid-configuration", self.issuer))
            .await?;
        let set: JwkSet = self.get_json(&discovery.jwks_uri).await?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = &jwk.common.key_id else {
                continue;
            };
            // Keys of types this verifier cannot use (or malformed ones) are skipped, as a
            // token naming them could not be verified anyway.
            if let Ok(key) = DecodingKey::from_jwk(jwk) {
                keys.insert(kid.clone(), Arc::new(key));
            }
        }
        tracing::info!(issuer = %self.issuer, keys = keys.len(), "fetched the issuer's keys");
        Ok(keys)
    }
}
