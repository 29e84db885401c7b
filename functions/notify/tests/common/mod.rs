//! What notify's tests against the real servers share: a notify handler on a fresh database
//! with a test `@connections` server, WebSocket events, window states and Kafka events. Each
//! test file uses some of it.
#![allow(dead_code)]

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_apigatewaymanagement::config::Credentials;
use emostream_local::api_gateway::websocket_event::{
    ConnectionContext, connect_event, message_event,
};
use emostream_tests::connections_server::ConnectionsServer;
use emostream_tests::servers;
use notify::Notify;
use notify::config::NotifyConfig;
use reactions::kafka_event::{RecordPosition, lambda_kafka_event_json, lambda_kafka_record_json};
use reactions::message::VersionedMessage;
use reactions::moments::{Moment, MomentStatus};
use reactions::mongo::{ConnectionStore, MongoSettings, connect};
use reactions::{EmojiName, MomentRecord, StreamId, WindowStateRecord};
use serde_json::{Value, json};
use std::time::Duration;

async fn instance(
    mongo: &MongoSettings,
    server: &ConnectionsServer,
    extra: &[(&str, &str)],
) -> Notify {
    instance_signing_with(mongo, server, extra, &sdk().await).await
}

async fn instance_signing_with(
    mongo: &MongoSettings,
    server: &ConnectionsServer,
    extra: &[(&str, &str)],
    sdk: &SdkConfig,
) -> Notify {
    let endpoint = server.endpoint();
    let mut settings: Vec<(&str, &str)> = vec![
        ("MONGODB_URI", &mongo.uri),
        ("MONGODB_DATABASE", &mongo.database),
        ("MANAGEMENT_API_ENDPOINT", &endpoint),
    ];
    settings.extend_from_slice(extra);
    let config = NotifyConfig::from_settings(&settings).unwrap();
    Notify::new(config, sdk).await.unwrap()
}

pub async fn sdk() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("local"))
        .credentials_provider(Credentials::new("local", "local", None, None, "tests"))
        .load()
        .await
}

pub struct Fixture {
    pub notify: Notify,
    pub server: ConnectionsServer,
    pub mongo: MongoSettings,
}

impl Fixture {
    pub async fn start(extra: &[(&str, &str)]) -> Self {
        let server = ConnectionsServer::start().await;
        let mongo = servers().mongo("notify");
        let notify = instance(&mongo, &server, extra).await;
        Fixture {
            notify,
            server,
            mongo,
        }
    }

    /// Another notify instance (a second container, or this one restarted) on the same
    /// database and `@connections` server.
    pub async fn another_instance(&self, extra: &[(&str, &str)]) -> Notify {
        instance(&self.mongo, &self.server, extra).await
    }

    /// Another instance whose AWS requests are signed with `sdk`'s credentials.
    pub async fn instance_signing_with(&self, extra: &[(&str, &str)], sdk: &SdkConfig) -> Notify {
        instance_signing_with(&self.mongo, &self.server, extra, sdk).await
    }

    pub async fn connections(&self) -> ConnectionStore {
        let database = connect(&self.mongo, "notify-test").await.unwrap();
        ConnectionStore::new(&database, Duration::from_secs(7_800))
    }

    pub async fn route(&self, event: Value) -> Value {
        self.notify.handle(event).await.unwrap()
    }

    pub async fn connect(&self, id: &str, query: &[(&str, &str)]) -> Value {
        let query: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.route(connect_event(&context(id), &query, &[], now(), "r-connect"))
            .await
    }

    pub async fn send(&self, id: &str, body: &str) -> Value {
        let route = serde_json::from_str::<Value>(body)
            .ok()
            .and_then(|v| v["action"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "$default".to_owned());
        self.route(message_event(
            &context(id),
            &route,
            body,
            now(),
            "r-message",
        ))
        .await
    }

    /// Every frame posted to `id` so far; `windows` frames without their send time (checked
    /// to be recent), so they compare with the states they carry.
    pub fn frames(&self, id: &str) -> Vec<Value> {
        self.server
            .frames_to(id)
            .into_iter()
            .map(without_send_time)
            .collect()
    }
}

/// A frame as it compares with the states it carries: a `windows` frame without its send time
/// (checked to be recent) and its push number (checked to be one).
pub fn without_send_time(mut frame: Value) -> Value {
    if frame["type"] == "windows" {
        let sent = frame["sent_at_ms"]
            .as_i64()
            .expect("a push says when it was sent");
        assert!(
            (now() - 600_000..=now()).contains(&sent),
            "sent_at_ms {sent} is not recent"
        );
        assert!(
            frame["seq"].as_i64().is_some(),
            "a push is numbered: {frame}"
        );
        frame.as_object_mut().map(|f| {
            f.remove("sent_at_ms");
            f.remove("seq")
        });
    }
    frame
}

/// Writes the windows of `log` with the real adapter (indexes first, fixture retention, so the
/// TTL sweep leaves past windows alone) and returns the store.
pub async fn store_windows(
    mongo: &MongoSettings,
    log: &[(reactions::kafka_event::RecordPosition, reactions::Reaction)],
) -> reactions::mongo::WindowStore {
    use reactions::WindowWidth;
    let database = connect(mongo, "notify-test").await.unwrap();
    let windows = reactions::mongo::WindowStore::new(&database);
    windows.ensure_indexes().await.unwrap();
    let deltas = reactions::window_delta::window_deltas(
        log.iter().map(|(p, r)| (p, r)),
        WindowWidth::DEFAULT,
    );
    let times = reactions::mongo::WriteTimes {
        now_ms: now(),
        retention: emostream_tests::fixtures::FIXTURE_RETENTION,
    };
    windows
        .apply_batch(&deltas, WindowWidth::DEFAULT, times)
        .await
        .unwrap();
    windows
}

/// Stores `states` as aggregate would before publishing them: a push reads the freshest state
/// of a window from MongoDB.
pub async fn store_states(mongo: &MongoSettings, states: &[WindowStateRecord]) {
    use mongodb::bson::{Document, doc};
    let database = connect(mongo, "notify-test").await.unwrap();
    let windows = database.collection::<Document>(reactions::mongo::WindowStore::COLLECTION);
    for state in states {
        let counts: Document = state
            .counts
            .iter()
            .map(|(emoji, n)| {
                (
                    emoji.as_str().to_owned(),
                    mongodb::bson::Bson::Int64(*n as i64),
                )
            })
            .collect();
        windows
            .update_one(
                doc! { "stream": state.stream.as_str(), "start_ms": state.start_ms },
                doc! { "$set": {
                    "end_ms": state.end_ms,
                    "total": state.total as i64,
                    "counts": counts,
                    "final": state.is_final,
                } },
            )
            .upsert(true)
            .await
            .unwrap();
    }
}

/// Sweeps until `done` holds for what the connections got, or panics after a generous time.
pub async fn sweep_until(f: &Fixture, what: &str, done: impl Fn(&Fixture) -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !done(f) {
        assert!(std::time::Instant::now() < deadline, "never swept: {what}");
        f.notify.sweep_once().await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The push schedule of `stream_id` as stored.
pub async fn stored_slot(database: &mongodb::Database, stream_id: &str) -> mongodb::bson::Document {
    use mongodb::bson::{Document, doc};
    database
        .collection::<Document>(reactions::mongo::PushSlots::COLLECTION)
        .find_one(doc! { "_id": stream_id })
        .await
        .unwrap()
        .unwrap()
}

pub fn now() -> i64 {
    reactions::clock::now_ms()
}

pub fn context(id: &str) -> ConnectionContext {
    ConnectionContext {
        connection_id: id.to_owned(),
        api_id: "local".into(),
        stage: "test".into(),
        domain_name: "localhost".into(),
        connected_at_ms: now(),
        source_ip: "127.0.0.1".into(),
    }
}

pub fn stream(s: &str) -> StreamId {
    StreamId::parse("stream", s).unwrap()
}

pub fn state(
    stream_id: &str,
    start_ms: i64,
    counts: &[(&str, u64)],
    updated_at_ms: i64,
) -> WindowStateRecord {
    let counts: reactions::EmojiCounts = counts
        .iter()
        .map(|(e, n)| (EmojiName::parse(e).unwrap(), *n))
        .collect();
    WindowStateRecord {
        v: 1,
        stream: stream(stream_id),
        start_ms,
        end_ms: start_ms + 2_000,
        total: counts.values().sum(),
        swarm: reactions::SwarmRule::default().downscale(&counts),
        counts,
        is_final: false,
        updated_at_ms,
    }
}

pub fn kafka_event(states: &[WindowStateRecord]) -> Value {
    let records = states
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let position = RecordPosition {
                topic: "emoji-output-topic".into(),
                partition: 0,
                offset: i as i64,
                generation: 0,
            };
            lambda_kafka_record_json(
                &position,
                s.updated_at_ms,
                Some(s.stream.as_str().as_bytes()),
                Some(&s.encode()),
                &[],
            )
        })
        .collect();
    lambda_kafka_event_json("SelfManagedKafka", "127.0.0.1:9092", records)
}

/// A batch of raw records (stream key, value), as Lambda delivers the output topic's.
pub fn raw_kafka_event(records: &[(&str, Vec<u8>)]) -> Value {
    let records = records
        .iter()
        .enumerate()
        .map(|(i, (key, value))| {
            let position = RecordPosition {
                topic: "emoji-output-topic".into(),
                partition: 0,
                offset: i as i64,
                generation: 0,
            };
            lambda_kafka_record_json(&position, now(), Some(key.as_bytes()), Some(value), &[])
        })
        .collect();
    lambda_kafka_event_json("SelfManagedKafka", "127.0.0.1:9092", records)
}

/// A change of the moment of `stream` first spiking at `from_ms`, as aggregate publishes it.
pub fn moment_record(
    stream_id: &str,
    from_ms: i64,
    status: MomentStatus,
    revision: i64,
) -> MomentRecord {
    MomentRecord {
        v: MomentRecord::VERSION,
        stream: stream(stream_id),
        moment: Moment {
            detected_from_ms: from_ms,
            start_ms: from_ms - 10_000,
            end_ms: from_ms + 7_000,
            peak_rate: 150.0,
            emoji: "fire".into(),
            ended: false,
        },
        status,
        revision,
    }
}

/// The push a connection of `state`'s stream gets for a batch whose only change is `state`.
pub fn window_frame(state: &WindowStateRecord) -> Value {
    json!({
        "type": "windows",
        "stream": state.stream.as_str(),
        "windows": [serde_json::to_value(state).unwrap()],
    })
}

/// A connection that has been live for a minute: past any handshake.
pub fn a_minute_ago() -> i64 {
    now() - 60_000
}
