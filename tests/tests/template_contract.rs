//! template.yaml against the code it deploys: every environment variable a function's
//! configuration reads is set by the template (or by Lambda) and every variable the template sets
//! is read; each function starts from the template's values; the HTTP routes and WebSocket
//! routes are exactly what the handlers answer; the event sources feed each function the topic
//! its producer writes. The template is read by the local stack's own reader, so the local stack
//! sees the same values.

use emostream_local::environment::LocalValues;
use emostream_local::template::{StackTemplate, TemplateValue};
use emostream_tests::repo_root;
use reactions::config::Settings;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

/// Variables Lambda itself sets for every function.
const LAMBDA_PROVIDED: [&str; 4] = [
    "AWS_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
];

/// Settings that answer from a fixed map and remember every name asked for.
struct Recording {
    values: BTreeMap<String, String>,
    read: Mutex<BTreeSet<String>>,
}

impl Settings for Recording {
    fn get(&self, var: &str) -> Option<String> {
        if let Ok(mut read) = self.read.lock() {
            read.insert(var.to_owned());
        }
        self.values.get(var).filter(|v| !v.is_empty()).cloned()
    }
}

fn template() -> StackTemplate {
    StackTemplate::load(&repo_root().join("template.yaml"), &BTreeMap::new()).unwrap()
}

/// A function's environment as deployed with default parameters: what only AWS resolves (the
/// MongoDB secret, the WebSocket endpoint) gets a stand-in of the right shape.
fn deployed_environment(template: &StackTemplate, function: &str) -> BTreeMap<String, String> {
    let spec = &template.functions[function];
    let mut local = LocalValues::default();
    for (name, value) in &spec.environment {
        if let TemplateValue::Expression(expression) = value {
            let text = serde_yaml_ng::to_string(expression).unwrap();
            if text.contains("{{resolve:") {
                local
                    .variables
                    .insert(name.clone(), "mongodb://from-secrets-manager".into());
            } else if text.contains(".execute-api.") {
                local.variables.insert(
                    name.clone(),
                    "https://abc123.execute-api.us-east-1.amazonaws.com/live".into(),
                );
            }
        }
    }
    let mut environment: BTreeMap<String, String> = local
        .environment_of(template, spec)
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .collect();
    environment.insert("AWS_REGION".into(), "us-east-1".into());
    environment
}

fn check_reads(function: &str, start: impl Fn(&Recording) -> Result<(), String>) {
    let template = template();
    let environment = deployed_environment(&template, function);
    let recording = Recording {
        values: environment.clone(),
        read: Mutex::new(BTreeSet::new()),
    };
    start(&recording)
        .unwrap_or_else(|e| panic!("{function} does not start from template.yaml: {e}"));
    let read = recording.read.into_inner().unwrap();
    let set: BTreeSet<String> = template.functions[function]
        .environment
        .keys()
        .cloned()
        .collect();
    // RUST_LOG is read by the logging set-up, not the configuration.
    let unread: Vec<&String> = set
        .iter()
        .filter(|v| !read.contains(*v) && v.as_str() != "RUST_LOG")
        .collect();
    assert!(
        unread.is_empty(),
        "{function}: template sets {unread:?}, which nothing reads"
    );
    let unset: Vec<&String> = read
        .iter()
        .filter(|v| !set.contains(*v) && !LAMBDA_PROVIDED.contains(&v.as_str()))
        .collect();
    // Variables read but not set fall back to documented defaults; list them so a new one is a
    // deliberate decision.
    let expected_defaults: BTreeSet<&str> = [
        "EMOJI_CATALOGUE",
        "SWARM_RULE",
        "MAX_BATCH_SIZE",
        "MAX_REACTION_COUNT",
        "ALLOWED_LATENESS_MS",
        "MAX_BODY_BYTES",
        "POST_TIMEOUT_MS",
        "CONNECTION_TTL_MINUTES",
        "SYNC_WINDOWS",
    ]
    .into();
    for var in unset {
        assert!(
            expected_defaults.contains(var.as_str()),
            "{function} reads {var}, which template.yaml does not set"
        );
    }
}

#[test]
fn every_variable_read_is_set_and_every_variable_set_is_read() {
    check_reads("IngestFunction", |s| {
        ingest::config::IngestConfig::from_settings(s)
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    check_reads("AggregateFunction", |s| {
        aggregate::config::AggregateConfig::from_settings(s)
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    check_reads("NotifyFunction", |s| {
        notify::config::NotifyConfig::from_settings(s)
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
}

#[test]
fn routes_and_event_sources_match_the_handlers() {
    let template = template();
    let http: BTreeSet<String> = template
        .http_routes
        .iter()
        .map(|r| {
            assert_eq!(r.function, "IngestFunction");
            format!("{} {}", r.method, r.path)
        })
        .collect();
    let handled: BTreeSet<String> = ingest::ROUTES.iter().map(|r| r.to_string()).collect();
    assert_eq!(http, handled);

    let websocket = template.websocket.as_ref().unwrap();
    let keys: BTreeSet<&str> = websocket.routes.keys().map(String::as_str).collect();
    let handled: BTreeSet<&str> = notify::ROUTE_KEYS.into_iter().collect();
    assert_eq!(keys, handled);
    assert_eq!(websocket.route_selection, "$request.body.action");

    // Each consumer reads the topic its producer writes, for both kinds of event source.
    let ingest_env = deployed_environment(&template, "IngestFunction");
    let aggregate_env = deployed_environment(&template, "AggregateFunction");
    for (function, topic) in [
        ("AggregateFunction", &ingest_env["REACTION_TOPIC"]),
        ("NotifyFunction", &aggregate_env["OUTPUT_TOPIC"]),
    ] {
        let sources: BTreeSet<&str> = template
            .kafka_mappings
            .iter()
            .filter(|m| m.function == function)
            .map(|m| {
                assert_eq!(&m.topic, topic, "{}", m.logical_id);
                m.event_source.as_str()
            })
            .collect();
        assert_eq!(
            sources,
            BTreeSet::from(["SelfManagedKafka", "aws:kafka"]),
            "{function}"
        );
    }
    // aggregate starts from the oldest record (nothing uncounted), notify from now.
    for mapping in template.local_mappings() {
        let expected = if mapping.function == "AggregateFunction" {
            emostream_local::template::StartingPosition::Earliest
        } else {
            emostream_local::template::StartingPosition::Latest
        };
        assert_eq!(
            mapping.starting_position, expected,
            "{}",
            mapping.logical_id
        );
    }
}
