//! Reading back what a test produced: every record of a topic from the beginning, with a bound
//! on the wait so a missing record fails the test instead of hanging it.

use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use reactions::kafka::KafkaSettings;
use std::time::Duration;

/// Reads exactly `count` records from `topic` (all partitions, from the start), failing if they
/// do not arrive within `timeout`.
pub async fn read_records(
    settings: &KafkaSettings,
    topic: &str,
    count: usize,
    timeout: Duration,
) -> Vec<OwnedMessage> {
    let consumer: StreamConsumer = settings
        .client_config()
        .set("group.id", crate::unique_name("reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("create consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut records = Vec::with_capacity(count);
    let deadline = tokio::time::Instant::now() + timeout;
    while records.len() < count {
        let message = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "only {} of {count} records arrived on {topic}",
                    records.len()
                )
            })
            .expect("consume");
        records.push(message.detach());
    }
    records
}

/// The number of records in `topic` (sum of high watermarks over its partitions).
pub fn record_count(settings: &KafkaSettings, topic: &str) -> i64 {
    let consumer: BaseConsumer = settings.client_config().create().expect("create consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), crate::patience::PATIENCE)
        .expect("metadata");
    metadata.topics()[0]
        .partitions()
        .iter()
        .map(|p| {
            let (low, high) = consumer
                .fetch_watermarks(topic, p.id(), crate::patience::PATIENCE)
                .expect("watermarks");
            high - low
        })
        .sum()
}

/// The key of a record as text.
pub fn key_text(message: &OwnedMessage) -> String {
    String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned()
}

/// A record's header `name` as text, if it has one.
pub fn header_text(message: &OwnedMessage, name: &str) -> Option<String> {
    use rdkafka::message::Headers;
    message
        .headers()?
        .iter()
        .find(|header| header.key == name)
        .and_then(|header| header.value)
        .map(|value| String::from_utf8_lossy(value).into_owned())
}
