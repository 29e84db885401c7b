//! The HTTP API's authorizers, run before a route's function as API Gateway runs them. The IAM
//! authorizer takes only requests SigV4-signed (service `execute-api`) by a principal the local
//! stack knows whose policies allow `execute-api:Invoke` on the route
//! (`{api}/{stage}/{METHOD}/{path}`; [`crate::iam`]), answering 403 otherwise, and tells the
//! function the caller in `requestContext.authorizer.iam`. The JWT authorizer takes only a valid bearer token from the
//! configured issuer and audience (checked as [`reactions::viewer_identity`] describes),
//! answering 401 `{"message":"Unauthorized"}` with API Gateway's `www-authenticate` header
//! otherwise, and tells the function the token's claims in `requestContext.authorizer.jwt`.

use super::gateway_error;
use crate::iam::sigv4::{ReceivedRequest, SignatureError};
use crate::iam::{LOCAL_ACCOUNT_ID, ServiceIam};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use reactions::viewer_identity::{TokenRefusal, TokenVerifier, bearer_token};
use serde_json::{Map, Value, json};
use std::sync::Arc;

/// The authorizer of one bound route.
#[derive(Clone, Default)]
pub enum RouteAuthorizer {
    #[default]
    None,
    /// The IAM authorizer, with the principals and the API's ARN prefix.
    Iam(ServiceIam),
    /// A JWT authorizer, shared by the routes naming it.
    Jwt(Arc<TokenVerifier>),
}

impl RouteAuthorizer {
    /// Runs the authorizer: what it tells the function (`requestContext.authorizer`), or
    /// API Gateway's refusal.
    pub async fn authorize(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Option<Value>, Response> {
        match self {
            RouteAuthorizer::None => Ok(None),
            RouteAuthorizer::Iam(iam) => match iam_caller(iam, method, uri, headers, body) {
                Ok(caller) => Ok(Some(json!({ "iam": caller }))),
                Err(message) => Err(gateway_error(StatusCode::FORBIDDEN, &message)),
            },
            RouteAuthorizer::Jwt(verifier) => jwt_claims(verifier, headers).await.map(Some),
        }
    }
}

/// A claim's value as API Gateway hands JWT claims to a function: text, with arrays as
/// `[a b]`.
fn claim_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(claim_text).collect();
            format!("[{}]", items.join(" "))
        }
        other => other.to_string(),
    }
}

async fn jwt_claims(verifier: &TokenVerifier, headers: &HeaderMap) -> Result<Value, Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .map(bearer_token);
    let now_s = reactions::clock::now_ms().div_euclid(1000);
    match verifier.verify(token, now_s).await {
        Ok(viewer) => {
            let claims: Map<String, Value> = viewer
                .claims
                .iter()
                .map(|(name, value)| (name.clone(), Value::String(claim_text(value))))
                .collect();
            Ok(json!({ "jwt": { "claims": claims, "scopes": null } }))
        }
        Err(refusal) => {
            tracing::info!(%refusal, "JWT authorizer refused a request");
            let mut response = gateway_error(StatusCode::UNAUTHORIZED, "Unauthorized");
            let challenge = match &refusal {
                TokenRefusal::Missing => "Bearer".to_owned(),
                other => format!(
                    "Bearer scope=\"\" error=\"invalid_token\" error_description=\"{other}\""
                ),
            };
            if let Ok(value) = HeaderValue::from_str(&challenge.replace(['\r', '\n'], " ")) {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, value);
            }
            Err(response)
        }
    }
}

/// Checks a request to an IAM-authorized route as API Gateway does. Returns the caller as the
/// authorizer describes it to the function, or the message of API Gateway's 403: `Forbidden`
/// for an unsigned request, the reason for a bad signature.
fn iam_caller(
    iam: &ServiceIam,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Value, String> {
    let received = ReceivedRequest::new(uri, headers);
    let request = received.signed(method.as_str(), body);
    let principal = match iam.principals.authenticate(&request, "execute-api") {
        Ok(principal) => principal,
        Err(SignatureError::Missing) => return Err("Forbidden".to_owned()),
        Err(error) => return Err(error.to_string()),
    };
    let resource = iam.arn(&format!("/{}{}", method.as_str(), uri.path()));
    principal.check("execute-api:Invoke", &resource)?;
    let key = principal.credentials.access_key_id();
    Ok(json!({
        "accessKey": key,
        "accountId": LOCAL_ACCOUNT_ID,
        "callerId": key,
        "userArn": principal.arn,
        "userId": key,
    }))
}
