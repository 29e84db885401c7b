//! A small HTTP/1.1 JSON client for the end-to-end tests, as a browser or `curl` would talk to
//! the local stack's HTTP API.

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// A JSON client.
#[derive(Clone)]
pub struct JsonClient {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Default for JsonClient {
    fn default() -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }
}

impl JsonClient {
    async fn send(&self, request: hyper::Request<Full<Bytes>>) -> (u16, Value) {
        let response = self.client.request(request).await.expect("HTTP request");
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("HTTP body")
            .to_bytes();
        let value = serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
        (status, value)
    }

    /// `POST url` with a JSON body; the status and the JSON (or text) answer.
    pub async fn post(&self, url: &str, body: &Value) -> (u16, Value) {
        self.post_with(url, &[], body).await
    }

    /// `POST url` with a JSON body and an `Authorization` header.
    pub async fn post_authorized(
        &self,
        url: &str,
        authorization: &str,
        body: &Value,
    ) -> (u16, Value) {
        self.post_with(url, &[("authorization", authorization)], body)
            .await
    }

    /// `POST url` with a JSON body and `headers`.
    pub async fn post_with(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        body: &Value,
    ) -> (u16, Value) {
        let mut request = hyper::Request::post(url).header("content-type", "application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("request");
        self.send(request).await
    }

    /// `GET url`.
    pub async fn get(&self, url: &str) -> (u16, Value) {
        let request = hyper::Request::get(url)
            .body(Full::new(Bytes::new()))
            .expect("request");
        self.send(request).await
    }

    /// Any method, no body.
    pub async fn call(&self, method: &str, url: &str) -> (u16, Value) {
        let request = hyper::Request::builder()
            .method(method)
            .uri(url)
            .body(Full::new(Bytes::new()))
            .expect("request");
        self.send(request).await
    }
}
