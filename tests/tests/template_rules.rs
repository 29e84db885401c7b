//! Every `Rules` entry of template.yaml refuses the parameter sets it exists for, in the local
//! stack's template reader with the rule's own message (as CloudFormation refuses them before
//! creating anything), and every supported deployment passes them all. A rule added to the
//! template without a case here fails the test.

use emostream_local::template::{StackTemplate, TemplateError};
use emostream_tests::deployments::supported;
use emostream_tests::repo_root;
use std::collections::{BTreeMap, BTreeSet};

/// For each rule, parameters (over a valid MSK deployment) that it must refuse.
fn violations() -> Vec<(&'static str, Vec<(&'static str, &'static str)>)> {
    vec![
        (
            "MskIamNeedsMsk",
            vec![
                ("KafkaEventSource", "SelfManagedKafka"),
                ("KafkaSecurity", "iam"),
            ],
        ),
        (
            "KafkaBootstrapServersGiven",
            vec![("KafkaBootstrapServers", "")],
        ),
        ("MskNeedsCluster", vec![("MskClusterArn", "")]),
        (
            "MskNeedsCluster",
            vec![("SubnetIds", ""), ("SecurityGroupIds", "")],
        ),
        (
            "SelfManagedKafkaNeedsItsSecret",
            vec![("KafkaEventSource", "SelfManagedKafka")],
        ),
        (
            "ProducersAuthenticateLikeTheTrigger",
            vec![
                ("KafkaEventSource", "SelfManagedKafka"),
                (
                    "SelfManagedKafkaSecretArn",
                    "arn:aws:secretsmanager:us-east-1:123456789012:secret:k-AbCdEf",
                ),
                ("KafkaSecurity", "tls"),
            ],
        ),
        (
            "RootCaNeedsTls",
            vec![
                ("KafkaEventSource", "SelfManagedKafka"),
                ("SelfManagedKafkaAuth", "PLAINTEXT"),
                (
                    "SelfManagedKafkaRootCaSecretArn",
                    "arn:aws:secretsmanager:us-east-1:123456789012:secret:ca-AbCdEf",
                ),
            ],
        ),
        ("SecurityGroupsWithSubnets", vec![("SecurityGroupIds", "")]),
        ("EndpointsNeedTheVpc", vec![("VpcId", "")]),
        ("EndpointsNeedTheVpc", vec![("VpcCidr", "")]),
        ("NotifyInVpcNeedsNat", vec![("NotifyInVpc", "true")]),
        (
            "IdentityOrExplicitlyAnonymous",
            vec![("AllowAnonymousReactions", "false")],
        ),
        (
            "AudienceWithIssuer",
            vec![
                ("JwtIssuer", "https://id.example.com/"),
                ("JwtAudience", ""),
            ],
        ),
        (
            "EventApiKeyNeedsExpiry",
            vec![("Delivery", "AppSyncEvents"), ("EventApiKeyExpires", "0")],
        ),
        (
            "HttpAndPostsWithinAccountQuota",
            vec![("HttpRateLimit", "2500"), ("PostBudgetPerSecond", "8000")],
        ),
        (
            "HttpAndPostsWithinAccountQuota",
            vec![("HttpRateLimit", "9000"), ("PostBudgetPerSecond", "1000")],
        ),
    ]
}

/// A deployment every rule accepts: MSK IAM, functions in a VPC with endpoints, anonymous.
fn valid() -> BTreeMap<String, String> {
    supported()
        .into_iter()
        .find(|d| d.name == "MSK IAM, endpoints, WebSocketApi, identity off, URI in secretsmanager")
        .expect("the base deployment")
        .parameters
}

/// Each rule's assertion descriptions, by rule name, as template.yaml writes them.
fn descriptions() -> BTreeMap<String, BTreeSet<String>> {
    let text = std::fs::read_to_string(repo_root().join("template.yaml")).unwrap();
    let root: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    root["Rules"]
        .as_mapping()
        .unwrap()
        .iter()
        .map(|(name, rule)| {
            let messages = rule["Assertions"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|a| a["AssertDescription"].as_str().unwrap().to_owned())
                .collect();
            (name.as_str().unwrap().to_owned(), messages)
        })
        .collect()
}

#[test]
fn each_rule_refuses_what_cannot_work_with_its_message() {
    let path = repo_root().join("template.yaml");
    let descriptions = descriptions();
    let mut proven = BTreeSet::new();
    for (rule, changes) in violations() {
        let mut parameters = valid();
        for (name, value) in &changes {
            parameters.insert((*name).to_owned(), (*value).to_owned());
        }
        match StackTemplate::load(&path, &parameters) {
            Err(TemplateError::Rule {
                rule: refused_by,
                message,
            }) => {
                assert_eq!(refused_by, rule, "{changes:?}");
                assert!(
                    descriptions[rule].contains(&message),
                    "{rule}: {message:?} is not one of its AssertDescriptions"
                );
            }
            other => panic!("{rule} does not refuse {changes:?}: {other:?}"),
        }
        proven.insert(rule.to_owned());
    }
    let rules: BTreeSet<String> = descriptions.keys().cloned().collect();
    assert_eq!(proven, rules, "every rule of template.yaml has a case here");
}

#[test]
fn every_supported_deployment_and_the_local_stack_pass_every_rule() {
    let path = repo_root().join("template.yaml");
    for deployment in supported() {
        if let Err(error) = StackTemplate::load(&path, &deployment.parameters) {
            panic!("{}: {error}", deployment.name);
        }
    }
    StackTemplate::load_local(&path, &BTreeMap::new()).unwrap();
    // The template's own defaults are not a deployment: they name no origin, no identity
    // and no choice of anonymity.
    assert!(StackTemplate::load(&path, &BTreeMap::new()).is_err());
}
