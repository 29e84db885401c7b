//! AWS Secrets Manager's `GetSecretValue` and SSM Parameter Store's `GetParameter`, as far as
//! the functions use them: at init, each reads the MongoDB URI from where the template keeps it
//! (`reactions::secrets`). The local stack serves the URI here and points the functions' SDK at
//! this endpoint (`AWS_ENDPOINT_URL_SECRETS_MANAGER`, `AWS_ENDPOINT_URL_SSM`), so they start
//! the way they start in AWS, without an AWS account. Both are JSON 1.1 APIs (`POST /` with an
//! `X-Amz-Target` header); requests must be SigV4-signed for the right service, and the answers, errors included, have AWS's shapes ("GetSecretValue" in the
//! AWS Secrets Manager API Reference, "GetParameter" in the AWS Systems Manager API Reference).
//! The signer's identity policies must allow `secretsmanager:GetSecretValue` on the secret's
//! ARN (`secret:{name}-` and six random characters) or `ssm:GetParameter` on the parameter's
//! (`parameter/{name without its leading slash}`); otherwise both answer 400
//! `AccessDeniedException` naming the principal, the action and the resource ([`crate::iam`]).

use crate::iam::sigv4::{ReceivedRequest, SignatureError};
use crate::iam::{LOCAL_ACCOUNT_ID, Principals};
use crate::template::LocalArns;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

/// The secrets and parameters the emulation holds, by name, and who may read them.
#[derive(Debug, Clone)]
pub struct SecretsApi {
    secrets: Arc<RwLock<BTreeMap<String, String>>>,
    parameters: Arc<RwLock<BTreeMap<String, String>>>,
    principals: Arc<Principals>,
    /// `arn:aws:secretsmanager:{region}:{account}:`.
    secret_arns: String,
    /// `arn:aws:ssm:{region}:{account}:`.
    parameter_arns: String,
}

/// The suffix Secrets Manager appends to a secret's name in its ARN.
const SECRET_ARN_SUFFIX: &str = "-AbCdEf";

impl Default for SecretsApi {
    /// An emulation only the operator may read from, in the local region and account.
    fn default() -> Self {
        Self {
            secrets: Arc::default(),
            parameters: Arc::default(),
            principals: Principals::operator_only(),
            secret_arns: format!("arn:aws:secretsmanager:local:{LOCAL_ACCOUNT_ID}:"),
            parameter_arns: format!("arn:aws:ssm:local:{LOCAL_ACCOUNT_ID}:"),
        }
    }
}

impl SecretsApi {
    /// An emulation only the operator may read from.
    pub fn new() -> Self {
        Self::default()
    }

    /// An emulation whose callers are `principals`, its secrets and parameters named as
    /// `arns` says (the template's region and account).
    pub fn with_principals(principals: Arc<Principals>, arns: &LocalArns) -> Self {
        Self {
            principals,
            secret_arns: arns.secrets_manager.clone(),
            parameter_arns: arns.ssm.clone(),
            ..Self::default()
        }
    }

    /// Stores a Secrets Manager secret's string value.
    pub fn put_secret(&self, name: &str, value: &str) {
        if let Ok(mut secrets) = self.secrets.write() {
            secrets.insert(name.to_owned(), value.to_owned());
        }
    }

    /// Stores an SSM parameter's value (as a SecureString).
    pub fn put_parameter(&self, name: &str, value: &str) {
        if let Ok(mut parameters) = self.parameters.write() {
            parameters.insert(name.to_owned(), value.to_owned());
        }
    }

    /// Serves [`SecretsApi::router`] on a free loopback port until the runtime stops; returns
    /// its endpoint URL (for tests and tools outside a stack).
    pub async fn spawn_local(&self) -> std::io::Result<String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let router = self.router();
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, router).await {
                tracing::warn!(%error, "the Secrets Manager emulation stopped");
            }
        });
        Ok(format!("http://{address}"))
    }

    /// The endpoint both services answer on.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/", post(handle))
            .with_state(self.clone())
    }
}

fn aws_error(status: StatusCode, kind: &str, message: &str) -> Response {
    (
        status,
        [("content-type", "application/x-amz-json-1.1")],
        json!({ "__type": kind, "message": message, "Message": message }).to_string(),
    )
        .into_response()
}

fn answer(body: Value) -> Response {
    (
        StatusCode::OK,
        [("content-type", "application/x-amz-json-1.1")],
        body.to_string(),
    )
        .into_response()
}

/// A refused signature, as the services answer it.
fn refused(error: &SignatureError) -> Response {
    match error {
        SignatureError::Missing => aws_error(
            StatusCode::BAD_REQUEST,
            "MissingAuthenticationTokenException",
            "Missing Authentication Token",
        ),
        SignatureError::UnknownKey(_) | SignatureError::BadToken => aws_error(
            StatusCode::BAD_REQUEST,
            "UnrecognizedClientException",
            &error.to_string(),
        ),
        _ => aws_error(
            StatusCode::BAD_REQUEST,
            "InvalidSignatureException",
            &error.to_string(),
        ),
    }
}

async fn handle(
    State(api): State<SecretsApi>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|t| t.to_str().ok())
        .unwrap_or_default();
    let service = match target {
        "secretsmanager.GetSecretValue" => "secretsmanager",
        "AmazonSSM.GetParameter" => "ssm",
        _ => {
            return aws_error(
                StatusCode::BAD_REQUEST,
                "UnknownOperationException",
                &format!("this emulation answers GetSecretValue and GetParameter, not {target:?}"),
            );
        }
    };
    let received = ReceivedRequest::new(&uri, &headers);
    let request = received.signed("POST", &body);
    let principal = match api.principals.authenticate(&request, service) {
        Ok(principal) => principal,
        Err(error) => return refused(&error),
    };
    let Ok(input) = serde_json::from_slice::<Value>(&body) else {
        return aws_error(
            StatusCode::BAD_REQUEST,
            "SerializationException",
            "the body is not JSON",
        );
    };
    let secrets_manager = service == "secretsmanager";
    let name = input[if secrets_manager { "SecretId" } else { "Name" }]
        .as_str()
        .unwrap_or_default();
    let (action, resource, store) = if secrets_manager {
        let arn = if name.starts_with("arn:") {
            name.to_owned()
        } else {
            format!("{}secret:{name}{SECRET_ARN_SUFFIX}", api.secret_arns)
        };
        ("secretsmanager:GetSecretValue", arn, &api.secrets)
    } else {
        let arn = format!(
            "{}parameter/{}",
            api.parameter_arns,
            name.trim_start_matches('/')
        );
        ("ssm:GetParameter", arn, &api.parameters)
    };
    if let Err(message) = principal.check(action, &resource) {
        return aws_error(StatusCode::BAD_REQUEST, "AccessDeniedException", &message);
    }
    let value = store.read().ok().and_then(|s| s.get(name).cloned());
    match (secrets_manager, value) {
        (true, Some(value)) => answer(json!({
            "ARN": resource,
            "Name": name,
            "SecretString": value,
            "VersionId": "00000000-0000-0000-0000-000000000001",
            "VersionStages": ["AWSCURRENT"],
            "CreatedDate": 1_767_225_600.0,
        })),
        (true, None) => aws_error(
            StatusCode::BAD_REQUEST,
            "ResourceNotFoundException",
            "Secrets Manager can't find the specified secret.",
        ),
        (false, Some(value)) => answer(json!({
            "Parameter": {
                "Name": name,
                "Type": "SecureString",
                "Value": value,
                "Version": 1,
                "ARN": resource,
                "DataType": "text",
            }
        })),
        (false, None) => aws_error(StatusCode::BAD_REQUEST, "ParameterNotFound", ""),
    }
}
