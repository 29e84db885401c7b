//! What the ingest tests share: an ingest handler on a fresh topic and database with a few live
//! streams registered, and request and response helpers.
#![allow(dead_code)]

use emostream_tests::fixtures::register_live_streams;
use emostream_tests::patience::PATIENCE;
use emostream_tests::{servers, unique_name};
use ingest::Ingest;
use ingest::config::IngestConfig;
use lambda_http::http::header;
use lambda_http::{Body, Request, Response};
use reactions::kafka::{KafkaSettings, TopicSpec, ensure_topics};
use serde_json::Value;
use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

pub struct Setup {
    pub ingest: Ingest,
    pub topic: String,
    pub kafka: KafkaSettings,
    pub database: String,
    /// The configuration the handler was built from.
    pub settings: HashMap<String, String>,
}

impl Setup {
    /// Another ingest container on the same servers, topic and database, with `overrides`
    /// on top of this one's configuration.
    pub async fn another_container(&self, overrides: &[(&str, &str)]) -> Ingest {
        let mut settings = self.settings.clone();
        for (k, v) in overrides {
            settings.insert((*k).into(), (*v).into());
        }
        Ingest::new(IngestConfig::from_settings(&settings).unwrap())
            .await
            .unwrap()
    }
}

/// An ingest handler on a fresh topic (3 partitions) and database, against `brokers` and
/// `mongodb_uri`, with `overrides` on top of the base configuration.
pub async fn setup_on(brokers: &str, mongodb_uri: &str, overrides: &[(&str, &str)]) -> Setup {
    let topic = unique_name("reactions");
    let mongo = servers().mongo("ingest");
    let mut settings: HashMap<String, String> = HashMap::from([
        ("KAFKA_BROKERS".into(), brokers.to_owned()),
        ("MONGODB_URI".into(), mongodb_uri.to_owned()),
        ("MONGODB_DATABASE".into(), mongo.database.clone()),
        ("REACTION_TOPIC".into(), topic.clone()),
    ]);
    for (k, v) in overrides {
        settings.insert((*k).into(), (*v).into());
    }
    let config = IngestConfig::from_settings(&settings).unwrap();
    if mongodb_uri == servers().mongodb_uri {
        let mongo = reactions::mongo::MongoSettings {
            uri: mongodb_uri.to_owned(),
            database: mongo.database.clone(),
        };
        let streams = ["m", "final-0", "final-1", "final-2"];
        register_live_streams(&mongo, &streams, &config.domain.catalogue).await;
    }
    let kafka = config.kafka.clone();
    let spec = TopicSpec {
        name: topic.clone(),
        partitions: 3,
    };
    ensure_topics(&kafka, &[spec], PATIENCE).await.unwrap();
    Setup {
        ingest: Ingest::new(config).await.unwrap(),
        topic,
        kafka,
        database: mongo.database,
        settings,
    }
}

pub async fn setup_with(overrides: &[(&str, &str)]) -> Setup {
    setup_on(&servers().kafka_brokers, &servers().mongodb_uri, overrides).await
}

pub fn request(
    method: &str,
    uri: &str,
    content_type: Option<&str>,
    body: impl Into<Body>,
) -> Request {
    let mut builder = lambda_http::http::Request::builder()
        .method(method)
        .uri(uri);
    if let Some(content_type) = content_type {
        builder = builder.header(header::CONTENT_TYPE, content_type);
    }
    builder.body(body.into()).unwrap()
}

pub fn post_json(body: &str) -> Request {
    request(
        "POST",
        "/reactions",
        Some("application/json"),
        body.to_owned(),
    )
}

pub fn body_json(response: &Response<Body>) -> Value {
    match response.body() {
        Body::Text(text) => serde_json::from_str(text).unwrap(),
        Body::Empty => Value::Null,
        other => panic!("unexpected body {other:?}"),
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
