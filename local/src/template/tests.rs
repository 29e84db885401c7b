//! The template reader against the project's template.yaml and small templates.

use super::*;

fn project_template() -> StackTemplate {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../template.yaml");
    StackTemplate::load_local(&path, &BTreeMap::new()).unwrap()
}

#[test]
fn the_project_template_describes_its_functions_and_their_triggers() {
    let template = project_template();
    let binaries: Vec<&str> = template
        .functions
        .values()
        .map(|f| f.binary.as_str())
        .collect();
    // notify's binary runs twice: the output-topic trigger, and the WebSocket routes.
    assert_eq!(binaries, ["aggregate", "ingest", "notify", "notify"]);
    assert_eq!(
        template.schedules,
        [
            ScheduledEvent {
                logical_id: "AggregateFunction.FinalizeTick".into(),
                function: "AggregateFunction".into(),
                every: Duration::from_secs(60),
                input: br#"{"emostream":"finalize"}"#.to_vec(),
            },
            ScheduledEvent {
                logical_id: "NotifyFunction.SweepTick".into(),
                function: "NotifyFunction".into(),
                every: Duration::from_secs(60),
                input: br#"{"emostream":"sweep"}"#.to_vec(),
            }
        ]
    );
    let ingest = &template.functions["IngestFunction"];
    assert_eq!(ingest.timeout, Duration::from_secs(10));
    assert!(matches!(
        ingest.environment["REACTION_TOPIC"],
        TemplateValue::Expression(_)
    ));
    assert_eq!(
        ingest.environment["PRODUCE_TIMEOUT_MS"],
        TemplateValue::Literal("2000".into())
    );
    assert_eq!(
        ingest.environment["RUST_LOG"],
        TemplateValue::Literal("info".into())
    );
    assert!(template.http_routes.contains(&HttpRoute {
        method: "GET".into(),
        path: "/streams/{id}/windows".into(),
        function: "IngestFunction".into(),
        auth: RouteAuth::None,
    }));
    assert!(template.http_routes.contains(&HttpRoute {
        method: "PUT".into(),
        path: "/admin/streams/{id}".into(),
        function: "IngestFunction".into(),
        auth: RouteAuth::Iam,
    }));
    let post = |template: &StackTemplate| {
        template
            .http_routes
            .iter()
            .find(|r| r.method == "POST" && r.path == "/reactions")
            .map(|r| r.auth.clone())
    };
    assert_eq!(
        post(&template),
        Some(RouteAuth::None),
        "identity is off by default"
    );
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../template.yaml");
    let with_identity = StackTemplate::load_local(
        &path,
        &BTreeMap::from([
            ("JwtIssuer".to_owned(), "https://id.example.com".to_owned()),
            ("JwtAudience".to_owned(), "emostream".to_owned()),
        ]),
    )
    .unwrap();
    assert_eq!(
        post(&with_identity),
        Some(RouteAuth::Jwt(JwtAuthorizerSpec {
            name: "ViewerJwt".into(),
            issuer: "https://id.example.com".into(),
            audience: vec!["emostream".into()],
        }))
    );
    let websocket = template.websocket.as_ref().unwrap();
    assert_eq!(websocket.route_selection, "$request.body.action");
    assert_eq!(websocket.stage, "live");
    let keys: Vec<&str> = websocket.routes.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "$connect",
            "$default",
            "$disconnect",
            "ping",
            "subscribe",
            "sync"
        ]
    );
    assert!(
        websocket
            .routes
            .values()
            .all(|f| f == "NotifyRoutesFunction")
    );
    let mappings = template.local_mappings();
    let summary: Vec<(&str, &str, StartingPosition)> = mappings
        .iter()
        .map(|m| (m.function.as_str(), m.topic.as_str(), m.starting_position))
        .collect();
    assert_eq!(
        summary,
        [
            (
                "AggregateFunction",
                "emoji-reaction-topic",
                StartingPosition::Earliest
            ),
            (
                "NotifyFunction",
                "emoji-output-topic",
                StartingPosition::Latest
            )
        ]
    );
    assert_eq!(mappings[0].batch_size, 5000);
    assert_eq!(mappings[0].consumer_group, "emostream-local-aggregate");
    let overrides = BTreeMap::from([
        ("AWS::StackName".to_owned(), "test-7".to_owned()),
        ("ReactionTopic".to_owned(), "r7".to_owned()),
    ]);
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../template.yaml");
    let renamed = StackTemplate::load_local(&path, &overrides)
        .unwrap()
        .local_mappings();
    assert_eq!(renamed[0].consumer_group, "test-7-aggregate");
    assert_eq!(renamed[0].topic, "r7");
}

#[test]
fn short_and_long_intrinsics_and_dangling_references() {
    let long = r#"
Parameters: { Topic: { Type: String, Default: t1 } }
Resources:
  F:
    Type: AWS::Serverless::Function
    Metadata: { BuildProperties: { Binary: f } }
    Properties:
      Events:
        K:
          Type: SelfManagedKafka
          Properties: { Topics: [{ Ref: Topic }], BatchSize: 7 }
"#;
    let template = StackTemplate::parse(long, &BTreeMap::new()).unwrap();
    assert_eq!(template.kafka_mappings[0].topic, "t1");
    assert_eq!(template.kafka_mappings[0].batch_size, 7);
    assert_eq!(
        template.kafka_mappings[0].consumer_group,
        "emostream-local-F.K"
    );

    let dangling = r#"
Resources:
  M:
    Type: AWS::Lambda::EventSourceMapping
    Properties: { FunctionName: !Ref Nope, Topics: [t] }
"#;
    let error = StackTemplate::parse(dangling, &BTreeMap::new())
        .unwrap_err()
        .to_string();
    assert!(error.contains("Nope"), "{error}");
    let no_binary = "Resources: { F: { Type: AWS::Serverless::Function } }";
    let error = StackTemplate::parse(no_binary, &BTreeMap::new())
        .unwrap_err()
        .to_string();
    assert!(error.contains("Binary"), "{error}");
    assert!(StackTemplate::parse("Resources: [", &BTreeMap::new()).is_err());
}

#[test]
fn the_event_api_exists_only_in_appsync_events_delivery() {
    use crate::event_api::{AuthType, NamespaceAuth};
    let template = project_template();
    assert_eq!(template.event_api, None);
    assert!(!template.conditions["UseAppSyncEvents"]);
    let notify = &template.functions["NotifyFunction"];
    let endpoint = match &notify.environment["APPSYNC_EVENT_ENDPOINT"] {
        TemplateValue::Expression(expression) => resolve_in(expression, &template),
        TemplateValue::Literal(literal) => Some(literal.clone()),
    };
    assert_eq!(endpoint.as_deref(), Some(""), "no endpoint without the API");

    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../template.yaml");
    let overrides = BTreeMap::from([("Delivery".to_owned(), "AppSyncEvents".to_owned())]);
    let template = StackTemplate::load_local(&path, &overrides).unwrap();
    let api = template.event_api.clone().expect("an Event API");
    assert_eq!(api.connection, [AuthType::ApiKey]);
    assert_eq!(
        api.namespaces,
        BTreeMap::from([(
            "streams".to_owned(),
            NamespaceAuth {
                publish: vec![AuthType::Iam],
                subscribe: vec![AuthType::ApiKey],
                subscribe_segments: Some(2),
            }
        )])
    );
    assert_eq!(api.openid_connect, None);
    // With viewer identity, subscribers sign in with the issuer's tokens instead of a key.
    let with_identity = StackTemplate::load_local(
        &path,
        &BTreeMap::from([
            ("Delivery".to_owned(), "AppSyncEvents".to_owned()),
            ("JwtIssuer".to_owned(), "https://id.example.com".to_owned()),
            ("JwtAudience".to_owned(), "emostream".to_owned()),
        ]),
    )
    .unwrap()
    .event_api
    .expect("an Event API");
    assert_eq!(with_identity.connection, [AuthType::OpenIdConnect]);
    assert_eq!(
        with_identity.namespaces["streams"].subscribe,
        [AuthType::OpenIdConnect]
    );
    assert_eq!(
        with_identity.openid_connect,
        Some(crate::event_api::OpenIdConnectSpec {
            issuer: "https://id.example.com".into(),
            client_id: "emostream".into(),
        })
    );
    let notify = &template.functions["NotifyFunction"];
    let TemplateValue::Expression(expression) = &notify.environment["APPSYNC_EVENT_ENDPOINT"]
    else {
        panic!("the endpoint is the API's attribute");
    };
    assert_eq!(resolve_in(expression, &template), None, "only AWS knows it");
}
