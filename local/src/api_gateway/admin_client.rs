//! A client for the HTTP API's admin routes (`/admin/streams/...`), which sit behind the IAM
//! authorizer: every request is SigV4-signed for `execute-api`. The load generator registers
//! its streams with it and the end-to-end tests use it as an admin would; against the local
//! stack it signs with the local credentials, and the console's signing helper signs with an
//! administrator's own against a deployed API (HTTPS).

use aws_credential_types::Credentials;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use reactions::sigv4::{RequestToSign, signature_headers};
use serde_json::{Value, json};
use std::time::{Duration, SystemTime};

/// How long one admin call may take, answer included: API Gateway itself gives up on an
/// integration after 30 s, and a console waiting longer only hides the failure.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

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
    /// For an `https://` API; an error where the machine has no root certificates.
    tls_client: Result<Client<HttpsConnector<HttpConnector>, Full<Bytes>>, String>,
}

/// Why the administrator's credentials in the environment cannot sign for an API.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error(
        "no AWS credentials in the environment (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY): run\n  eval \"$(aws configure export-credentials --format env)\"\nfirst, with the profile of an administrator allowed execute-api:Invoke on /admin/*"
    )]
    Missing,
    #[error("{0} is set but {1} is not: the credentials in the environment are incomplete")]
    Incomplete(&'static str, &'static str),
    #[error(
        "the API's URL names region {from_url} but AWS_REGION is {from_env}: the signature would be refused"
    )]
    RegionMismatch { from_url: String, from_env: String },
    #[error(
        "the region of {0} is unknown: set AWS_REGION to the API's region (it is part of the signature)"
    )]
    RegionUnknown(String),
    #[error("no TLS root certificates on this machine: {0}")]
    NoRootCertificates(String),
    #[error(
        "{0} is plain HTTP to another machine: the signed requests would cross the network readable; use its https:// URL"
    )]
    Insecure(String),
}

/// An environment variable, unless unset or empty.
fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The credentials in `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`.
fn credentials_from_env() -> Result<Credentials, CredentialsError> {
    match (
        env_var("AWS_ACCESS_KEY_ID"),
        env_var("AWS_SECRET_ACCESS_KEY"),
    ) {
        (Some(key), Some(secret)) => Ok(Credentials::new(
            key,
            secret,
            env_var("AWS_SESSION_TOKEN"),
            None,
            "environment",
        )),
        (Some(_), None) => Err(CredentialsError::Incomplete(
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
        )),
        (None, Some(_)) => Err(CredentialsError::Incomplete(
            "AWS_SECRET_ACCESS_KEY",
            "AWS_ACCESS_KEY_ID",
        )),
        (None, None) => Err(CredentialsError::Missing),
    }
}

/// The region in an `execute-api` endpoint's name (`abc123.execute-api.eu-west-1.amazonaws.com`).
fn region_of_endpoint(base_url: &str) -> Option<&str> {
    let host = base_url.split("://").nth(1)?.split(['/', ':']).next()?;
    let mut labels = host.split('.');
    labels.next()?;
    matches!(labels.next()?, "execute-api" | "execute-api-fips").then_some(())?;
    labels.next().filter(|region| !region.is_empty())
}

/// An HTTPS client with the machine's root certificates.
fn tls_client() -> Result<Client<HttpsConnector<HttpConnector>, Full<Bytes>>, String> {
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| e.to_string())?
        .https_only()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(connector))
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
            tls_client: if base_url.starts_with("https://") {
                tls_client()
            } else {
                Err("not an https:// API".to_owned())
            },
        }
    }

    /// A client signing with an administrator's credentials from the environment
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`) for the region the
    /// API's name holds (or `AWS_REGION`): the console's signing helper against a deployed API,
    /// which refuses to start on credentials that could only earn a puzzling 403.
    pub fn for_administrator(base_url: &str) -> Result<Self, CredentialsError> {
        let credentials = credentials_from_env()?;
        let region = match (region_of_endpoint(base_url), env_var("AWS_REGION")) {
            (Some(from_url), Some(from_env)) if from_url != from_env => {
                return Err(CredentialsError::RegionMismatch {
                    from_url: from_url.to_owned(),
                    from_env,
                });
            }
            (Some(region), _) => region.to_owned(),
            (None, Some(region)) => region,
            (None, None) => return Err(CredentialsError::RegionUnknown(base_url.to_owned())),
        };
        let loopback_http = base_url
            .strip_prefix("http://")
            .and_then(|rest| rest.split('/').next())
            .is_some_and(crate::admin_signer::is_loopback_host);
        if !base_url.starts_with("https://") && !loopback_http {
            return Err(CredentialsError::Insecure(base_url.to_owned()));
        }
        let client = Self::new(base_url, credentials, &region);
        if let Err(why) = &client.tls_client
            && base_url.starts_with("https://")
        {
            return Err(CredentialsError::NoRootCertificates(why.clone()));
        }
        Ok(client)
    }

    /// The access key the client signs with, for showing whose credentials it uses.
    pub fn access_key_id(&self) -> &str {
        self.credentials.access_key_id()
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
        match credentials_from_env() {
            Ok(credentials) => {
                let region = env_var("AWS_REGION").unwrap_or_else(|| "us-east-1".to_owned());
                Self::new(base_url, credentials, &region)
            }
            Err(_) => Self::local(base_url),
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
        // The Host sent is the one signed (the client would drop a default port written in
        // the URL, and the signature with it).
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(&url)
            .header("host", authority.as_str())
            .header("content-type", "application/json");
        for (name, value) in &added {
            request = request.header(name.as_str(), value.as_str());
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| AdminError::Request(what.clone(), e.to_string()))?;
        let exchange = async {
            let response = if url.starts_with("https://") {
                let client = self.tls_client.as_ref().map_err(|why| {
                    AdminError::Transport(what.clone(), format!("no HTTPS client: {why}"))
                })?;
                client.request(request).await
            } else {
                self.client.request(request).await
            }
            .map_err(|e| AdminError::Transport(what.clone(), e.to_string()))?;
            let status = response.status().as_u16();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| AdminError::Transport(what.clone(), e.to_string()))?
                .to_bytes();
            Ok::<_, AdminError>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(CALL_TIMEOUT, exchange)
            .await
            .map_err(|_| {
                AdminError::Transport(
                    what.clone(),
                    format!("no answer within {} s", CALL_TIMEOUT.as_secs()),
                )
            })??;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_region_is_read_from_an_execute_api_endpoint_only() {
        assert_eq!(
            region_of_endpoint("https://abc123.execute-api.eu-west-1.amazonaws.com"),
            Some("eu-west-1")
        );
        assert_eq!(
            region_of_endpoint("https://abc123.execute-api.ap-south-1.amazonaws.com/prod/"),
            Some("ap-south-1")
        );
        assert_eq!(
            region_of_endpoint("https://abc123.execute-api-fips.us-gov-west-1.amazonaws.com"),
            Some("us-gov-west-1")
        );
        assert_eq!(region_of_endpoint("https://api.example.com"), None);
        assert_eq!(region_of_endpoint("http://127.0.0.1:3000"), None);
    }
}
