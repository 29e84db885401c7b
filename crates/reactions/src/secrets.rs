//! The MongoDB connection string read at start-up from AWS Secrets Manager or SSM Parameter
//! Store, so it is never a plaintext environment variable that anyone allowed
//! `lambda:GetFunctionConfiguration` can read. A function names where it is
//! (`MONGODB_URI_SECRET_ID` or `MONGODB_URI_PARAMETER`); at init the value is fetched once, with
//! the function role's credentials, and kept for the container's life as `MONGODB_URI` in the
//! settings the function's configuration then reads. `MONGODB_URI` given directly (the local
//! stack, tests) wins and nothing is fetched, so running locally needs no AWS. A self-managed
//! Kafka cluster's credentials are read the same way: the secret `KAFKA_CREDENTIALS_SECRET_ID`
//! names (SASL/SCRAM user and password, or a client certificate and key, the secret its Kafka
//! trigger uses) becomes `KAFKA_CREDENTIALS`, and `KAFKA_ROOT_CA_SECRET_ID`'s `KAFKA_ROOT_CA`.

use crate::config::Settings;
use std::collections::BTreeMap;

/// Where the MongoDB URI is kept, as the function's settings say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretReference {
    /// A Secrets Manager secret (name or ARN) whose string value is the URI.
    SecretsManager(String),
    /// An SSM parameter (String or SecureString) whose value is the URI.
    Parameter(String),
}

/// Why the URI could not be read at start-up.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// Both places are named: which one is meant is not clear.
    #[error("set one of MONGODB_URI_SECRET_ID and MONGODB_URI_PARAMETER, not both")]
    Ambiguous,
    /// The service refused or failed the read.
    #[error("cannot read {place}: {reason}")]
    Read { place: String, reason: String },
    /// The secret or parameter has no string value.
    #[error("{place} holds no text value (store the whole value as its text)")]
    Empty { place: String },
    /// A Kafka cluster's secret could not be read.
    #[error("cannot read the Kafka cluster's secret ({var}): {source}")]
    Kafka {
        var: &'static str,
        #[source]
        source: Box<SecretError>,
    },
}

impl From<SecretError> for crate::config::ConfigError {
    fn from(error: SecretError) -> Self {
        let var = match &error {
            SecretError::Kafka { var, .. } => var,
            SecretError::Read { place, .. } | SecretError::Empty { place }
                if place.starts_with("SSM") =>
            {
                "MONGODB_URI_PARAMETER"
            }
            _ => "MONGODB_URI_SECRET_ID",
        };
        Self {
            var,
            reason: error.to_string(),
        }
    }
}

impl SecretReference {
    /// The reference the settings name, if `MONGODB_URI` is not given directly.
    pub fn from_settings(settings: &impl Settings) -> Result<Option<Self>, SecretError> {
        if settings.get("MONGODB_URI").is_some() {
            return Ok(None);
        }
        match (
            settings.get("MONGODB_URI_SECRET_ID"),
            settings.get("MONGODB_URI_PARAMETER"),
        ) {
            (Some(_), Some(_)) => Err(SecretError::Ambiguous),
            (Some(id), None) => Ok(Some(Self::SecretsManager(id))),
            (None, Some(name)) => Ok(Some(Self::Parameter(name))),
            (None, None) => Ok(None),
        }
    }

    fn place(&self) -> String {
        match self {
            Self::SecretsManager(id) => format!("Secrets Manager secret {id:?}"),
            Self::Parameter(name) => format!("SSM parameter {name:?}"),
        }
    }

    /// Reads the value with the SDK configuration `sdk` (region, credentials, endpoint).
    pub async fn fetch(&self, sdk: &aws_config::SdkConfig) -> Result<String, SecretError> {
        let place = self.place();
        let failed = |reason: String| SecretError::Read {
            place: place.clone(),
            reason,
        };
        let value = match self {
            Self::SecretsManager(id) => {
                aws_sdk_secretsmanager::Client::new(sdk)
                    .get_secret_value()
                    .secret_id(id)
                    .send()
                    .await
                    .map_err(|e| failed(service_error_text(&e)))?
                    .secret_string
            }
            Self::Parameter(name) => aws_sdk_ssm::Client::new(sdk)
                .get_parameter()
                .name(name)
                .with_decryption(true)
                .send()
                .await
                .map_err(|e| failed(service_error_text(&e)))?
                .parameter
                .and_then(|parameter| parameter.value),
        };
        match value {
            Some(text) if !text.trim().is_empty() => Ok(text.trim().to_owned()),
            _ => Err(SecretError::Empty { place }),
        }
    }
}

/// The SDK error with its service code and message, not only "service error".
fn service_error_text<E, R>(error: &aws_sdk_secretsmanager::error::SdkError<E, R>) -> String
where
    E: std::error::Error + aws_sdk_secretsmanager::error::ProvideErrorMetadata + 'static,
    R: std::fmt::Debug,
{
    use aws_sdk_secretsmanager::error::ProvideErrorMetadata;
    match (error.code(), error.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_owned(),
        _ => aws_sdk_secretsmanager::error::DisplayErrorContext(error).to_string(),
    }
}

/// Settings with the fetched secret laid over them: `MONGODB_URI` answers from the fetched
/// value, everything else from the underlying settings.
#[derive(Debug, Clone)]
pub struct WithSecrets<S> {
    settings: S,
    fetched: BTreeMap<String, String>,
}

impl<S: Settings> Settings for WithSecrets<S> {
    fn get(&self, var: &str) -> Option<String> {
        self.fetched
            .get(var)
            .cloned()
            .or_else(|| self.settings.get(var))
    }
}

/// The Kafka cluster's secrets the settings name, each with the setting its value becomes
/// (`KAFKA_CREDENTIALS`, `KAFKA_ROOT_CA`); a value given directly wins and is not fetched.
pub fn kafka_secret_references(
    settings: &impl Settings,
) -> Vec<(&'static str, &'static str, SecretReference)> {
    [
        ("KAFKA_CREDENTIALS_SECRET_ID", "KAFKA_CREDENTIALS"),
        ("KAFKA_ROOT_CA_SECRET_ID", "KAFKA_ROOT_CA"),
    ]
    .into_iter()
    .filter_map(|(named_by, target)| {
        let id = settings.get(named_by)?;
        settings.get(target).is_none().then_some((
            named_by,
            target,
            SecretReference::SecretsManager(id),
        ))
    })
    .collect()
}

/// Reads the MongoDB URI and the Kafka cluster's secrets from where `settings` say they are,
/// unless given directly, with the SDK's default configuration (the function role's
/// credentials in Lambda).
pub async fn with_fetched_secrets<S: Settings>(settings: S) -> Result<WithSecrets<S>, SecretError> {
    let mut fetched = BTreeMap::new();
    let mongo = SecretReference::from_settings(&settings)?;
    let kafka = kafka_secret_references(&settings);
    if mongo.is_some() || !kafka.is_empty() {
        let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        if let Some(reference) = mongo {
            fetched.insert("MONGODB_URI".to_owned(), reference.fetch(&sdk).await?);
        }
        for (var, target, reference) in kafka {
            let value = reference
                .fetch(&sdk)
                .await
                .map_err(|source| SecretError::Kafka {
                    var,
                    source: Box::new(source),
                })?;
            fetched.insert(target.to_owned(), value);
        }
    }
    Ok(WithSecrets { settings, fetched })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_uri_needs_no_fetch_and_two_places_are_refused() {
        let given = vec![
            ("MONGODB_URI", "mongodb://x"),
            ("MONGODB_URI_SECRET_ID", "s"),
        ];
        assert_eq!(SecretReference::from_settings(&given).unwrap(), None);
        let secret = vec![("MONGODB_URI_SECRET_ID", "emostream/mongodb-uri")];
        assert_eq!(
            SecretReference::from_settings(&secret).unwrap(),
            Some(SecretReference::SecretsManager(
                "emostream/mongodb-uri".into()
            ))
        );
        let parameter = vec![("MONGODB_URI_PARAMETER", "/emostream/mongodb-uri")];
        assert_eq!(
            SecretReference::from_settings(&parameter).unwrap(),
            Some(SecretReference::Parameter("/emostream/mongodb-uri".into()))
        );
        let both = vec![
            ("MONGODB_URI_SECRET_ID", "a"),
            ("MONGODB_URI_PARAMETER", "b"),
        ];
        assert!(matches!(
            SecretReference::from_settings(&both),
            Err(SecretError::Ambiguous)
        ));
        let neither: Vec<(&str, &str)> = Vec::new();
        assert_eq!(SecretReference::from_settings(&neither).unwrap(), None);
    }

    #[test]
    fn kafka_secrets_are_named_by_their_ids_unless_given() {
        let named = vec![
            (
                "KAFKA_CREDENTIALS_SECRET_ID",
                "arn:aws:secretsmanager:r:1:secret:k-AbCdEf",
            ),
            ("KAFKA_ROOT_CA_SECRET_ID", "ca"),
            ("KAFKA_ROOT_CA", "{\"certificate\":\"given\"}"),
        ];
        assert_eq!(
            kafka_secret_references(&named),
            [(
                "KAFKA_CREDENTIALS_SECRET_ID",
                "KAFKA_CREDENTIALS",
                SecretReference::SecretsManager(
                    "arn:aws:secretsmanager:r:1:secret:k-AbCdEf".into()
                )
            )]
        );
        let none: Vec<(&str, &str)> = vec![("KAFKA_CREDENTIALS_SECRET_ID", "")];
        assert!(kafka_secret_references(&none).is_empty());
    }
}
