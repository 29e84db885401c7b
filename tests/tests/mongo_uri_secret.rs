//! The MongoDB URI read at start-up from Secrets Manager or SSM Parameter Store
//! (`reactions::secrets`), against the local stack's emulation of both services (which checks
//! SigV4 signatures as AWS does): the value found and usable, and each way it can fail named
//! clearly. Every function the local stack runs starts this way (the stack serves the URI from
//! the same emulation); `functions/ingest/tests/runs_under_lambda_runtime.rs` shows a binary's
//! init stopping with the reason when the secret is missing.

use emostream_local::lambda::function_process::LOCAL_CREDENTIALS;
use emostream_local::secrets::SecretsApi;
use emostream_tests::servers;
use reactions::config::ConfigError;
use reactions::mongo::{MongoSettings, connect};
use reactions::secrets::{SecretError, SecretReference};

async fn serve(api: &SecretsApi) -> String {
    api.spawn_local().await.unwrap()
}

/// The SDK configuration a function has: its role's credentials (here the local ones, or
/// `key`), a region, and the endpoint both services are reached at.
fn sdk_config(endpoint: &str, key: &str) -> aws_config::SdkConfig {
    let (_, secret, token) = LOCAL_CREDENTIALS;
    let credentials =
        aws_credential_types::Credentials::new(key, secret, Some(token.to_owned()), None, "test");
    aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(
            aws_credential_types::provider::SharedCredentialsProvider::new(credentials),
        )
        .build()
}

#[tokio::test]
async fn the_uri_is_read_from_either_service_and_connects() {
    let api = SecretsApi::new();
    let uri = servers().mongodb_uri.clone();
    api.put_secret("emostream/mongodb-uri", &uri);
    api.put_parameter("/emostream/mongodb-uri", &format!("  {uri}\n"));
    let endpoint = serve(&api).await;
    let sdk = sdk_config(&endpoint, LOCAL_CREDENTIALS.0);
    for reference in [
        SecretReference::SecretsManager("emostream/mongodb-uri".into()),
        SecretReference::Parameter("/emostream/mongodb-uri".into()),
    ] {
        let fetched = reference.fetch(&sdk).await.unwrap();
        assert_eq!(fetched, uri, "{reference:?} (surrounding blanks trimmed)");
        let settings = MongoSettings {
            uri: fetched,
            database: servers().mongo("secret").database,
        };
        connect(&settings, "secret-test").await.unwrap();
    }
}

#[tokio::test]
async fn missing_empty_and_unsigned_reads_are_named_errors() {
    let api = SecretsApi::new();
    api.put_secret("blank", "   ");
    let endpoint = serve(&api).await;
    let sdk = sdk_config(&endpoint, LOCAL_CREDENTIALS.0);

    let missing = SecretReference::SecretsManager("emostream/nope".into())
        .fetch(&sdk)
        .await
        .unwrap_err();
    let text = missing.to_string();
    assert!(
        text.contains("\"emostream/nope\"") && text.contains("ResourceNotFoundException"),
        "{text}"
    );
    let as_config = ConfigError::from(missing);
    assert_eq!(as_config.var, "MONGODB_URI_SECRET_ID");

    let missing = SecretReference::Parameter("/emostream/nope".into())
        .fetch(&sdk)
        .await
        .unwrap_err();
    assert!(
        missing.to_string().contains("ParameterNotFound"),
        "{missing}"
    );
    assert_eq!(ConfigError::from(missing).var, "MONGODB_URI_PARAMETER");

    let blank = SecretReference::SecretsManager("blank".into())
        .fetch(&sdk)
        .await
        .unwrap_err();
    assert!(matches!(blank, SecretError::Empty { .. }), "{blank}");

    // Signed with credentials the service does not know: refused, and the reason says so.
    let stranger = sdk_config(&endpoint, "AKIDSTRANGER");
    let refused = SecretReference::SecretsManager("blank".into())
        .fetch(&stranger)
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("UnrecognizedClientException"),
        "{refused}"
    );
}
