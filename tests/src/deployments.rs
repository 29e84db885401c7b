//! The parameter sets a real `sam deploy` of template.yaml is supported with: every Kafka event
//! source and its authentication, in and out of a VPC, both delivery modes, viewer identity on
//! and off, and both places the MongoDB URI can be kept. The IAM checks and the template
//! contract read the template once per set, so a grant that only one combination needs, or
//! breaks, is still checked.

use std::collections::BTreeMap;

/// One supported deployment: a name for messages and its parameter overrides.
#[derive(Debug, Clone)]
pub struct Deployment {
    pub name: String,
    pub parameters: BTreeMap<String, String>,
}

const CLUSTER: &str =
    "arn:aws:kafka:us-east-1:123456789012:cluster/live/0a1b2c3d-4e5f-6789-abcd-ef0123456789-3";
const KAFKA_SECRET: &str =
    "arn:aws:secretsmanager:us-east-1:123456789012:secret:AmazonMSK_emostream-AbCdEf";
const ROOT_CA: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:kafka-root-ca-AbCdEf";

/// How the functions reach Kafka, with the parameters each way needs.
fn kafka_variants() -> Vec<(&'static str, Vec<(&'static str, &'static str)>)> {
    let vpc = [
        ("SubnetIds", "subnet-0a1,subnet-0b2"),
        ("SecurityGroupIds", "sg-0c3"),
    ];
    let endpoints = [("VpcId", "vpc-0d4"), ("VpcCidr", "10.0.0.0/16")];
    let with = |base: &[(&'static str, &'static str)], more: &[(&'static str, &'static str)]| {
        base.iter().chain(more).copied().collect::<Vec<_>>()
    };
    vec![
        (
            "MSK IAM, endpoints",
            with(
                &[("KafkaEventSource", "MSK"), ("MskClusterArn", CLUSTER)],
                &with(&vpc, &endpoints),
            ),
        ),
        (
            "MSK TLS, NAT",
            with(
                &[
                    ("KafkaEventSource", "MSK"),
                    ("MskClusterArn", CLUSTER),
                    ("KafkaSecurity", "tls"),
                    ("VpcEgress", "nat"),
                    ("NotifyInVpc", "true"),
                ],
                &vpc,
            ),
        ),
        (
            "self-managed SCRAM in a VPC",
            with(
                &[
                    ("KafkaEventSource", "SelfManagedKafka"),
                    ("SelfManagedKafkaSecretArn", KAFKA_SECRET),
                ],
                &with(&vpc, &endpoints),
            ),
        ),
        (
            "self-managed mTLS with a private CA",
            vec![
                ("KafkaEventSource", "SelfManagedKafka"),
                ("SelfManagedKafkaAuth", "CLIENT_CERTIFICATE_TLS_AUTH"),
                ("SelfManagedKafkaSecretArn", KAFKA_SECRET),
                ("SelfManagedKafkaRootCaSecretArn", ROOT_CA),
            ],
        ),
        (
            "self-managed plaintext",
            vec![
                ("KafkaEventSource", "SelfManagedKafka"),
                ("SelfManagedKafkaAuth", "PLAINTEXT"),
            ],
        ),
    ]
}

/// Every supported combination.
pub fn supported() -> Vec<Deployment> {
    let mut all = Vec::new();
    for (kafka, kafka_parameters) in kafka_variants() {
        for delivery in ["WebSocketApi", "AppSyncEvents"] {
            for identity in [true, false] {
                for uri in ["secretsmanager", "ssm"] {
                    let mut parameters: BTreeMap<String, String> = kafka_parameters
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect();
                    parameters.insert("Delivery".into(), delivery.into());
                    parameters.insert(
                        "KafkaBootstrapServers".into(),
                        "b-1.live.kafka.us-east-1.amazonaws.com:9098".into(),
                    );
                    parameters.insert("AllowedOrigins".into(), "https://live.example.com".into());
                    if delivery == "AppSyncEvents" {
                        parameters.insert("EventApiKeyExpires".into(), "1830000000".into());
                    }
                    if identity {
                        parameters.insert("JwtIssuer".into(), "https://id.example.com/".into());
                        parameters.insert("JwtAudience".into(), "emostream".into());
                    } else {
                        parameters.insert("AllowAnonymousReactions".into(), "true".into());
                    }
                    parameters.insert("MongoDbUriSource".into(), uri.into());
                    if uri == "ssm" {
                        parameters.insert("MongoDbUriName".into(), "/emostream/mongodb-uri".into());
                    }
                    all.push(Deployment {
                        name: format!(
                            "{kafka}, {delivery}, identity {}, URI in {uri}",
                            if identity { "on" } else { "off" }
                        ),
                        parameters,
                    });
                }
            }
        }
    }
    all
}
