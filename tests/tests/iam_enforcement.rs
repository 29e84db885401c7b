//! The local stack enforces template.yaml's IAM as AWS does: each function signs with its own
//! role's credentials, and a grant removed from a copy of the template makes exactly that
//! call fail locally with AWS's AccessDenied answer, which the function logs with the action
//! named. The grants themselves are checked against AWS's reference in `iam_reference` and
//! against the code in `iam_contract`.

use emostream_local::iam::Principals;
use emostream_local::secrets::SecretsApi;
use emostream_local::template::StackTemplate;
use emostream_tests::http_client::JsonClient;
use emostream_tests::live_counts::post_reactions;
use emostream_tests::local_stack::{TestStack, WsClient, function_binaries};
use emostream_tests::patience::eventually;
use emostream_tests::{repo_root, unique_name};
use reactions::secrets::SecretReference;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// template.yaml with `grant` (whole lines, wherever they are) replaced by `instead`, written
/// to a file of its own.
fn template_without(grant: &str, instead: &str) -> PathBuf {
    let text = std::fs::read_to_string(repo_root().join("template.yaml")).unwrap();
    assert!(text.contains(grant), "{grant:?} is in the template");
    let path = function_binaries().join(format!("{}.yaml", unique_name("template")));
    std::fs::write(&path, text.replace(grant, instead)).unwrap();
    path
}

/// The SDK configuration a function gets: its role's credentials, the local endpoint.
fn function_sdk(principals: &Principals, function: &str, endpoint: &str) -> aws_config::SdkConfig {
    let principal = principals.function(function).expect("a function role");
    aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("local"))
        .endpoint_url(endpoint)
        .credentials_provider(
            aws_credential_types::provider::SharedCredentialsProvider::new(
                principal.credentials.clone(),
            ),
        )
        .build()
}

#[tokio::test]
async fn each_role_reads_only_the_secret_its_policy_names() {
    let template =
        StackTemplate::load_local(&repo_root().join("template.yaml"), &BTreeMap::new()).unwrap();
    let principals = Principals::for_template(&template).unwrap();
    let api = SecretsApi::with_principals(principals.clone(), &template.local_arns());
    api.put_secret("emostream/mongodb-uri", "mongodb://allowed");
    api.put_secret("someone-elses/secret", "mongodb://not-yours");
    let endpoint = api.spawn_local().await.unwrap();
    let sdk = function_sdk(&principals, "IngestFunction", &endpoint);
    let read = SecretReference::SecretsManager("emostream/mongodb-uri".into())
        .fetch(&sdk)
        .await
        .unwrap();
    assert_eq!(read, "mongodb://allowed");
    let refused = SecretReference::SecretsManager("someone-elses/secret".into())
        .fetch(&sdk)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("AccessDeniedException")
            && refused.contains("is not authorized to perform: secretsmanager:GetSecretValue on resource: arn:aws:secretsmanager:local:000000000000:secret:someone-elses/secret-")
            && refused.contains("IngestFunction"),
        "{refused}"
    );
}

#[tokio::test]
async fn without_manage_connections_notify_is_refused_and_logs_the_action() {
    let template = template_without(
        "              Action: execute-api:ManageConnections\n",
        "              Action: execute-api:Invoke\n",
    );
    let logs = function_binaries()
        .join("test-function-logs")
        .join(unique_name("iam-denied"));
    let options_logs = logs.clone();
    let test = TestStack::start("iamdenied", move |options| {
        options.template = template;
        options.function_logs = Some(options_logs);
    })
    .await;
    let _viewer = WsClient::connect(&test.websocket_url("denied"))
        .await
        .unwrap();
    let client = JsonClient::default();
    let log = eventually("notify logs the refused post", || {
        let path = logs.join("NotifyFunction.log");
        let (client, url) = (&client, &test.stack.http_url);
        async move {
            // Taps on every attempt: notify's trigger starts at the topic's end (LATEST), so
            // states published before its consumer was up are never delivered to it, and a
            // final state alone waits for the minute's sweep.
            post_reactions(client, url, "denied", 2, 5).await;
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            text.lines()
                .find(|l| l.contains("AccessDeniedException"))
                .map(str::to_owned)
                .ok_or_else(|| format!("{} holds no AccessDenied yet", path.display()))
        }
    })
    .await;
    assert!(
        log.contains("is not authorized to perform: execute-api:ManageConnections on resource: arn:aws:execute-api:local:000000000000:")
            && log.contains("/live/POST/@connections/"),
        "{log}"
    );
    test.stack.stop().await;
}
