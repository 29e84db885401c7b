//! Connect tokens: an optional gate on `$connect`. A token is `{expiry}.{signature}`, where the
//! expiry is in seconds since the epoch and the signature is an HMAC-SHA256 (base64url) over the
//! stream id and the expiry with a secret shared by whoever issues tokens (the site that embeds
//! the player) and notify. A token opens one stream until it expires; it cannot be reused for
//! another stream or extended without the secret.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use reactions::StreamId;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Why a `$connect` token was refused. The message goes to logs, never to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no token given but one is required")]
    Missing,
    #[error("token is not of the form <expiry>.<signature>")]
    Malformed,
    #[error("token expired at {expired_at_s} (now {now_s})")]
    Expired { expired_at_s: i64, now_s: i64 },
    #[error("token signature does not match the stream")]
    BadSignature,
}

/// The token checker (and issuer), keyed once per container with the shared secret.
#[derive(Clone)]
pub struct ConnectTokens {
    keyed: HmacSha256,
}

impl std::fmt::Debug for ConnectTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key material.
        f.write_str("ConnectTokens(..)")
    }
}

/// The secret could not key an HMAC (HMAC takes keys of any length, so this is theoretical).
#[derive(Debug, thiserror::Error)]
#[error("CONNECT_TOKEN_SECRET cannot key HMAC-SHA256")]
pub struct BadSecret;

impl ConnectTokens {
    /// Keys the checker with `secret`.
    pub fn new(secret: &str) -> Result<Self, BadSecret> {
        Ok(Self {
            keyed: HmacSha256::new_from_slice(secret.as_bytes()).map_err(|_| BadSecret)?,
        })
    }

    fn mac(&self, stream: &StreamId, expires_at_s: i64) -> HmacSha256 {
        let mut mac = self.keyed.clone();
        mac.update(format!("emostream-connect\n{}\n{expires_at_s}", stream.as_str()).as_bytes());
        mac
    }

    /// Issues a token for `stream` that expires at `expires_at_s` (seconds since the epoch).
    pub fn sign(&self, stream: &StreamId, expires_at_s: i64) -> String {
        let signature = self.mac(stream, expires_at_s).finalize().into_bytes();
        format!("{expires_at_s}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    /// Checks `token` for `stream` at `now_ms`, in constant time over the signature.
    pub fn verify(
        &self,
        stream: &StreamId,
        token: Option<&str>,
        now_ms: i64,
    ) -> Result<(), TokenError> {
        let token = token.filter(|t| !t.is_empty()).ok_or(TokenError::Missing)?;
        let (expiry, signature) = token.split_once('.').ok_or(TokenError::Malformed)?;
        let expires_at_s: i64 = expiry.parse().map_err(|_| TokenError::Malformed)?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| TokenError::Malformed)?;
        self.mac(stream, expires_at_s)
            .verify_slice(&signature)
            .map_err(|_| TokenError::BadSignature)?;
        let now_s = now_ms.div_euclid(1_000);
        if now_s >= expires_at_s {
            return Err(TokenError::Expired {
                expired_at_s: expires_at_s,
                now_s,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(s: &str) -> StreamId {
        StreamId::parse("stream", s).unwrap()
    }

    #[test]
    fn a_signed_token_opens_its_stream_until_it_expires() {
        let tokens = ConnectTokens::new("secret").unwrap();
        let token = tokens.sign(&stream("final"), 1_000);
        assert_eq!(
            tokens.verify(&stream("final"), Some(&token), 999_999),
            Ok(())
        );
        assert_eq!(
            tokens.verify(&stream("final"), Some(&token), 1_000_000),
            Err(TokenError::Expired {
                expired_at_s: 1_000,
                now_s: 1_000
            })
        );
    }

    #[test]
    fn forged_or_misused_tokens_are_refused() {
        let token = ConnectTokens::new("secret")
            .unwrap()
            .sign(&stream("final"), 1_000);
        let check = |secret, s, t: Option<&str>| {
            ConnectTokens::new(secret).unwrap().verify(&stream(s), t, 0)
        };
        assert_eq!(
            check("secret", "semi", Some(&token)),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            check("other", "final", Some(&token)),
            Err(TokenError::BadSignature)
        );
        let extended = token.replacen("1000", "9999", 1);
        assert_eq!(
            check("secret", "final", Some(&extended)),
            Err(TokenError::BadSignature)
        );
        assert_eq!(check("secret", "final", None), Err(TokenError::Missing));
        assert_eq!(check("secret", "final", Some("")), Err(TokenError::Missing));
        for garbage in ["abc", "12.!!", "x.abc", "1000"] {
            assert_eq!(
                check("secret", "final", Some(garbage)),
                Err(TokenError::Malformed),
                "{garbage}"
            );
        }
    }
}
