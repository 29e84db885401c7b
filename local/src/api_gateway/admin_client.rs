//! A client for the HTTP API's admin routes (`/admin/streams/...`), which sit behind the IAM
//! authorizer: every request is SigV4-signed for `execute-api`. The load generator registers
//! its streams with it and the end-to-end tests use it as an admin would; against the local
//! stack it signs with the local credentials.

use aws_credential_types::Credentials;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use reactions::sigv4::{RequestToSign, signature_headers};
use serde_json::{Value, json};
use std::time::SystemTime;

/// Why an admin call failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("admin request {0} could not be built: {1}")]
    Request(String, String),
    #[error("admin request {0} failed: {1}")]
    Transport(String, String),
    #[error("admin request {what} answered {status}: {body}")]
    Refused {
        what: String,
        status: u16,
        body: Value,
    },
}

/// Signs and sends admin requests to one HTTP API.
#[derive(Clone)]
pub struct AdminClient {
    base_url: String,
    credentials: Credentials,
    region: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl AdminClient {
    /// A client for the API at `base_url` (`http://127.0.0.1:3000`), signing with
    /// `credentials` for `region`.
    pub fn new(base_url: &str, credentials: Credentials, region: &str) -> Self {
        Self {
            base_url: base_url.trim_end_matches('/').to_owned(),
            credentials,
            region: region.to_owned(),
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// A client signing with the local stack's credentials.
    pub fn local(base_url: &str) -> Self {
        Self::new(
            base_url,
            crate::lambda::function_process::local_credentials(),
            "us-east-1",
        )
    }

    /// A client signing with the credentials in `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`
    /// and `AWS_SESSION_TOKEN` for `AWS_REGION` (a deployed API), else with the local ones.
    pub fn from_env(base_url: &str) -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
            (Some(key), Some(secret)) => {
                let credentials =
                    Credentials::new(key, secret, var("AWS_SESSION_TOKEN"), None, "environment");
                let region = var("AWS_REGION").unwrap_or_else(|| "us-east-1".to_owned());
                Self::new(base_url, credentials, &region)
            }
            _ => Self::local(base_url),
        }
    }

    /// Sends `method path` with `body` (JSON, or none); the status and JSON answer.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), AdminError> {
        let what = format!("{method} {path}");
        let url = format!("{}{path}", self.base_url);
        let body = body.map(Value::to_string).unwrap_or_default();
        let authority = url
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_default()
            .to_owned();
        let signed = [
            ("host", authority.as_str()),
            ("content-type", "application/json"),
        ];
        let to_sign = RequestToSign {
            method,
            url: &url,
            headers: &signed,
            body: body.as_bytes(),
        };
        let added = signature_headers(
            to_sign,
            &self.credentials,
            &self.region,
            "execute-api",
            SystemTime::now(),
        )
        .map_err(|e| AdminError::Request(what.clone(), e))?;
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(&url)
            .header("content-type", "application/json");
        for (name, value) in &added {
            request = request.header(name.as_str(), value.as_str());
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| AdminError::Request(what.clone(), e.to_string()))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| AdminError::Transport(what.clone(), e.to_string()))?;
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| AdminError::Transport(what.clone(), e.to_string()))?
            .to_bytes();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Ok((status, value))
    }

    async fn expect_ok(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, AdminError> {
        let (status, answer) = self.send(method, path, body).await?;
        if (200..300).contains(&status) {
            Ok(answer)
        } else {
            Err(AdminError::Refused {
                what: format!("{method} {path}"),
                status,
                body: answer,
            })
        }
    }

    /// Registers `id` (or updates it) with `title` and, if given, its own catalogue
    /// (`[{"name", "glyph"}]`), then starts it.
    pub async fn register_live(
        &self,
        id: &str,
        title: &str,
        emojis: Option<&Value>,
    ) -> Result<Value, AdminError> {
        let mut changes = json!({ "title": title });
        if let Some(emojis) = emojis {
            changes["emojis"] = emojis.clone();
        }
        self.expect_ok("PUT", &format!("/admin/streams/{id}"), Some(&changes))
            .await?;
        self.expect_ok("POST", &format!("/admin/streams/{id}/start"), None)
            .await
    }

    /// Ends `id`.
    pub async fn end(&self, id: &str) -> Result<Value, AdminError> {
        self.expect_ok("POST", &format!("/admin/streams/{id}/end"), None)
            .await
    }
}
