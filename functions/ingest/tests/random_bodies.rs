//! Random bodies and content types through the real handler (real broker and MongoDB behind
//! it): never a panic, never a 5xx, only 202 or a 4xx with a JSON error.

use emostream_tests::{servers, unique_name};
use ingest::Ingest;
use ingest::config::IngestConfig;
use lambda_http::Body;
use lambda_http::http::header;
use proptest::prelude::*;
use std::collections::HashMap;
use std::sync::OnceLock;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| tokio::runtime::Runtime::new().unwrap())
}

fn ingest() -> &'static Ingest {
    static INGEST: OnceLock<Ingest> = OnceLock::new();
    INGEST.get_or_init(|| {
        let settings: HashMap<String, String> = HashMap::from([
            ("KAFKA_BROKERS".into(), servers().kafka_brokers.clone()),
            ("MONGODB_URI".into(), servers().mongodb_uri.clone()),
            ("REACTION_TOPIC".into(), unique_name("random-bodies")),
            ("MAX_BATCH_SIZE".into(), "8".into()),
            ("MAX_BODY_BYTES".into(), "4096".into()),
        ]);
        let config = IngestConfig::from_settings(&settings).unwrap();
        runtime().block_on(Ingest::new(config)).unwrap()
    })
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| serde_json::json!(f)),
        prop_oneof![
            Just("fire".to_owned()),
            Just("🔥".to_owned()),
            Just("m-1".to_owned()),
            ".{0,20}"
        ]
        .prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..10).prop_map(serde_json::Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("stream_id".to_owned()),
                    Just("user_id".to_owned()),
                    Just("emoji".to_owned()),
                    Just("count".to_owned()),
                    Just("reactions".to_owned()),
                    "[a-z]{1,6}"
                ],
                inner,
                0..6
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        json_value().prop_map(|v| v.to_string().into_bytes()),
        prop::collection::vec(any::<u8>(), 0..300),
        (1..30usize).prop_map(|n| {
            let item = r#"{"stream_id":"p","user_id":"u","emoji":"joy","count":2}"#;
            format!(r#"{{"reactions":[{}]}}"#, vec![item; n].join(",")).into_bytes()
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]
    #[test]
    fn any_body_gets_202_or_a_4xx(
        body in body(),
        content_type in prop_oneof![Just(Some("application/json")), Just(Some("text/plain")), Just(None), Just(Some("application/json; charset=utf-8"))],
        method in prop_oneof![Just("POST"), Just("GET"), Just("PUT")],
        path in prop_oneof![Just("/reactions"), Just("/emojis"), Just("/streams/p/windows"), Just("/x")],
    ) {
        let mut builder = lambda_http::http::Request::builder().method(method).uri(path);
        if let Some(content_type) = content_type {
            builder = builder.header(header::CONTENT_TYPE, content_type);
        }
        let request = builder.body(Body::Binary(body)).unwrap();
        let response = runtime().block_on(ingest().handle(request));
        let status = response.status().as_u16();
        prop_assert!(matches!(status, 200 | 202 | 400 | 404 | 405 | 413 | 415), "status {status}");
        let Body::Text(text) = response.body() else { panic!("JSON body expected") };
        let json: serde_json::Value = serde_json::from_str(text).unwrap();
        if status >= 400 {
            prop_assert!(json["error"].is_string() && json["message"].is_string());
        }
    }
}
