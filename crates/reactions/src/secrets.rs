//! The MongoDB connection string read at start-up from AWS Secrets Manager or SSM Parameter
//! Store, so it is never a plaintext environment variable that anyone allowed
//! `lambda:GetFunctionConfiguration` can read. A function names where it is
//! (`MONGODB_URI_SECRET_ID` or `MONGODB_URI_PARAMETER`); at init the value is fetched once, with
//! the function role's credentials, and kept for the container's life as `MONGODB_URI` in the
//! settings the function's configuration then reads. `MONGODB_URI` given directly (the local
//! stack, tests) wins and nothing is fetched, so running locally needs no AWS.

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
    #[error("cannot read the MongoDB URI from {place}: {reason}")]
    Read { place: String, reason: String },
    /// The secret or parameter has no string value.
    #[error("{place} holds no text value (store the whole connection string as its value)")]
    Empty { place: String },
}

impl From<SecretError> for crate::config::ConfigError {
    fn from(error: SecretError) -> Self {
        let var = match &error {
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

/// Reads the MongoDB URI from where `settings` say it is, if they do not give it directly, with
/// the SDK's default configuration (the function role's credentials in Lambda).
pub async fn with_fetched_secrets<S: Settings>(settings: S) -> Result<WithSecrets<S>, SecretError> {
    let mut fetched = BTreeMap::new();
    if let Some(reference) = SecretReference::from_settings(&settings)? {
        let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        fetched.insert("MONGODB_URI".to_owned(), reference.fetch(&sdk).await?);
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
}
