//! template.yaml against the code it deploys: every environment variable a function's
//! configuration reads is set by the template (or by Lambda) and every variable the template sets
//! is read; each function starts from the template's values; the HTTP routes and WebSocket
//! routes are exactly what the handlers answer; the event sources feed each function the topic
//! its producer writes. The template is read by the local stack's own reader, so the local stack
//! sees the same values.

use emostream_local::lambda::environment::LocalValues;
use emostream_local::template::{RouteAuth, StackTemplate, TemplateValue, resolve_in};
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
    template_with(&[])
}

/// The template with parameter overrides over the local stack's parameters, as
/// `sam deploy --parameter-overrides` gives them.
fn template_with(parameters: &[(&str, &str)]) -> StackTemplate {
    let overrides = parameters
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    StackTemplate::load_local(&repo_root().join("template.yaml"), &overrides).unwrap()
}

/// A function's environment as deployed with default parameters: what only AWS resolves (the
/// WebSocket endpoint, the Event API's) gets a stand-in of the right shape.
fn deployed_environment(template: &StackTemplate, function: &str) -> BTreeMap<String, String> {
    let spec = &template.functions[function];
    let mut local = LocalValues::default();
    for (name, value) in &spec.environment {
        if let TemplateValue::Expression(expression) = value
            && resolve_in(expression, template).is_none()
        {
            let text = serde_yaml_ng::to_string(expression).unwrap();
            if text.contains(".execute-api.") {
                local.variables.insert(
                    name.clone(),
                    "https://abc123.execute-api.us-east-1.amazonaws.com/live".into(),
                );
            } else if text.contains("EventApi.Dns.Http") {
                local.variables.insert(
                    name.clone(),
                    "https://abc123.appsync-api.us-east-1.amazonaws.com/event".into(),
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

/// Starts `function`'s configuration from the template's environment, checks that everything it
/// reads is set (or a documented default), and returns what the template sets that it did not
/// read (a variable of the other delivery mode may go unread in one).
fn check_reads(
    template: &StackTemplate,
    function: &str,
    start: impl Fn(&Recording) -> Result<(), String>,
) -> BTreeSet<String> {
    let mut environment = deployed_environment(template, function);
    // At init the function reads the MongoDB URI from where the template says it is kept and
    // lays it over its environment (`reactions::secrets`): a stand-in here.
    let probe = Recording {
        values: environment.clone(),
        read: Mutex::new(BTreeSet::new()),
    };
    let reference = reactions::secrets::SecretReference::from_settings(&probe)
        .unwrap_or_else(|e| panic!("{function}: {e}"));
    // The Kafka cluster's secrets are named the same way (and fetched the same way at init).
    let _ = reactions::secrets::kafka_secret_references(&probe);
    assert!(
        reference.is_some(),
        "{function} must read its MongoDB URI from Secrets Manager or SSM, not a plaintext variable"
    );
    // What init fetches from the secrets the environment names.
    let mut fetched = BTreeSet::from([
        "MONGODB_URI".to_owned(),
        "KAFKA_CREDENTIALS".to_owned(),
        "KAFKA_ROOT_CA".to_owned(),
    ]);
    environment.insert("MONGODB_URI".into(), "mongodb://from-the-secret".into());
    let recording = Recording {
        values: environment.clone(),
        read: Mutex::new(probe.read.into_inner().unwrap()),
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
    let unread: BTreeSet<String> = set
        .iter()
        .filter(|v| !read.contains(*v) && v.as_str() != "RUST_LOG")
        .map(|v| format!("{function}: {v}"))
        .collect();
    fetched.retain(|v| read.contains(v));
    assert!(
        !fetched.is_empty(),
        "{function} does not use the fetched MONGODB_URI"
    );
    let unset: Vec<&String> = read
        .iter()
        .filter(|v| {
            !set.contains(*v) && !fetched.contains(*v) && !LAMBDA_PROVIDED.contains(&v.as_str())
        })
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
        // Init looks for a Kafka cluster's secrets in every function; only the producers' are set.
        "KAFKA_CREDENTIALS_SECRET_ID",
        "KAFKA_ROOT_CA_SECRET_ID",
    ]
    .into();
    for var in unset {
        assert!(
            expected_defaults.contains(var.as_str()),
            "{function} reads {var}, which template.yaml does not set"
        );
    }
    unread
}

#[test]
fn every_variable_read_is_set_and_every_variable_set_is_read() {
    // In both delivery modes: AppSyncEvents makes notify read the Event API's settings. A
    // variable must be read in at least one of them.
    let mut unread_in_every_mode: Option<BTreeSet<String>> = None;
    for delivery in ["WebSocketApi", "AppSyncEvents"] {
        let template = template_with(&[("Delivery", delivery)]);
        let mut unread = BTreeSet::new();
        unread.extend(check_reads(&template, "IngestFunction", |s| {
            ingest::config::IngestConfig::from_settings(s)
                .map(|_| ())
                .map_err(|e| e.to_string())
        }));
        unread.extend(check_reads(&template, "AggregateFunction", |s| {
            aggregate::config::AggregateConfig::from_settings(s)
                .map(|_| ())
                .map_err(|e| e.to_string())
        }));
        // notify's binary runs as the trigger's function and as the WebSocket routes'.
        for notify in ["NotifyFunction", "NotifyRoutesFunction"] {
            unread.extend(check_reads(&template, notify, |s| {
                let config =
                    notify::config::NotifyConfig::from_settings(s).map_err(|e| e.to_string())?;
                match (&config.delivery, delivery) {
                    (notify::config::Delivery::WebSocketApi, "WebSocketApi") => Ok(()),
                    (notify::config::Delivery::AppSyncEvents(settings), "AppSyncEvents") => {
                        // notify publishes to the namespace the template creates.
                        let api = template.event_api.as_ref().ok_or("no Event API")?;
                        if api.namespaces.contains_key(&settings.namespace) {
                            Ok(())
                        } else {
                            Err(format!(
                                "no namespace {} in the template",
                                settings.namespace
                            ))
                        }
                    }
                    (other, _) => Err(format!("Delivery={delivery} gave notify {other:?}")),
                }
            }));
        }
        unread_in_every_mode = Some(match unread_in_every_mode {
            None => unread,
            Some(before) => before.intersection(&unread).cloned().collect(),
        });
    }
    let unread = unread_in_every_mode.unwrap_or_default();
    assert!(
        unread.is_empty(),
        "template sets {unread:?}, which nothing reads in either delivery mode"
    );
}

#[test]
fn routes_and_event_sources_match_the_handlers() {
    let template = template();
    let http: BTreeSet<String> = template
        .http_routes
        .iter()
        .map(|r| {
            assert_eq!(r.function, "IngestFunction");
            // Exactly the admin routes sit behind the IAM authorizer, and with identity off
            // (the default) nothing else has an authorizer.
            let expected = if r.path.starts_with(ingest::ADMIN_PATH_PREFIX) {
                RouteAuth::Iam
            } else {
                RouteAuth::None
            };
            assert_eq!(r.auth, expected, "{} {}", r.method, r.path);
            format!("{} {}", r.method, r.path)
        })
        .collect();
    let handled: BTreeSet<String> = ingest::ROUTES.iter().map(|r| r.to_string()).collect();
    assert_eq!(http, handled);

    // With viewer identity on, POST /reactions alone gains the JWT authorizer.
    let identity = template_with(&[
        ("JwtIssuer", "https://id.example.com"),
        ("JwtAudience", "emostream"),
    ]);
    for route in &identity.http_routes {
        let jwt = matches!(route.auth, RouteAuth::Jwt(_));
        let post_reactions = route.method == "POST" && route.path == "/reactions";
        assert_eq!(jwt, post_reactions, "{} {}", route.method, route.path);
    }

    let websocket = template.websocket.as_ref().unwrap();
    let keys: BTreeSet<&str> = websocket.routes.keys().map(String::as_str).collect();
    let handled: BTreeSet<&str> = notify::ROUTE_KEYS.into_iter().collect();
    assert_eq!(keys, handled);
    assert_eq!(websocket.route_selection, "$request.body.action");

    // Each consumer reads the topic its producer writes, with exactly the event source the
    // parameters choose, in every supported deployment.
    for deployment in emostream_tests::deployments::supported() {
        let template =
            StackTemplate::load(&repo_root().join("template.yaml"), &deployment.parameters)
                .unwrap_or_else(|e| panic!("{}: {e}", deployment.name));
        let expected = match deployment.parameters["KafkaEventSource"].as_str() {
            "MSK" => "aws:kafka",
            _ => "SelfManagedKafka",
        };
        let ingest_env = deployed_environment(&template, "IngestFunction");
        let aggregate_env = deployed_environment(&template, "AggregateFunction");
        // aggregate's start-up check of its lateness reads ingest's produce timeout.
        assert_eq!(
            aggregate_env["INGEST_PRODUCE_TIMEOUT_MS"], ingest_env["PRODUCE_TIMEOUT_MS"],
            "{}: aggregate's INGEST_PRODUCE_TIMEOUT_MS must be ingest's PRODUCE_TIMEOUT_MS",
            deployment.name
        );
        for (function, topic) in [
            ("AggregateFunction", &ingest_env["REACTION_TOPIC"]),
            ("NotifyFunction", &aggregate_env["OUTPUT_TOPIC"]),
        ] {
            let sources: Vec<&str> = template
                .kafka_mappings
                .iter()
                .filter(|m| m.function == function)
                .map(|m| {
                    assert_eq!(&m.topic, topic, "{}", m.logical_id);
                    m.event_source.as_str()
                })
                .collect();
            assert_eq!(sources, [expected], "{}: {function}", deployment.name);
        }
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

/// The `emostream` metrics template.yaml's alarms and dashboard name, each once.
fn emf_metrics_in_template(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    // Alarms: `Namespace: emostream` with `MetricName: X` on the next line.
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    for pair in lines.windows(2) {
        if pair[0] == "Namespace: emostream"
            && let Some(name) = pair[1].strip_prefix("MetricName: ")
        {
            names.insert(name.to_owned());
        }
    }
    // The dashboard's JSON: ["emostream","X",...].
    for piece in text.split("[\"emostream\",\"").skip(1) {
        if let Some((name, _)) = piece.split_once('"') {
            names.insert(name.to_owned());
        }
    }
    names
}

/// Every metric the functions write, from their `MetricsLine` calls (`.count("X"`, `.millis("X"`).
fn emf_metrics_written() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut sources = Vec::new();
    for function in ["ingest", "aggregate", "notify"] {
        let dir = repo_root().join("functions").join(function).join("src");
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "rs") {
                sources.push(std::fs::read_to_string(path).unwrap());
            }
        }
    }
    for source in sources {
        for call in [".count(\"", ".millis(\""] {
            for piece in source.split(call).skip(1) {
                if let Some((name, _)) = piece.split_once('"') {
                    names.insert(name.to_owned());
                }
            }
        }
    }
    names
}

#[test]
fn alarms_and_the_dashboard_watch_metrics_the_functions_write() {
    let text = std::fs::read_to_string(repo_root().join("template.yaml")).unwrap();
    let watched = emf_metrics_in_template(&text);
    let written = emf_metrics_written();
    // The test itself must see both sides.
    assert!(watched.len() >= 10, "{watched:?}");
    assert!(written.contains("DeadLetterFailures"), "{written:?}");
    let unknown: Vec<_> = watched.difference(&written).collect();
    assert!(
        unknown.is_empty(),
        "template.yaml watches metrics no function writes: {unknown:?}"
    );
    // Every alarm notifies the optional topic, both ways.
    let alarms = text.matches("Type: AWS::CloudWatch::Alarm").count();
    assert!(alarms >= 12, "{alarms} alarms");
    assert_eq!(
        text.matches("AlarmActions: !If [HasAlarmTopic, [!Ref AlarmTopicArn], !Ref AWS::NoValue]")
            .count(),
        alarms
    );
    assert_eq!(
        text.matches("OKActions: !If [HasAlarmTopic, [!Ref AlarmTopicArn], !Ref AWS::NoValue]")
            .count(),
        alarms
    );
}
