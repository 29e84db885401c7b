//! The template's Kafka event source mappings (`AWS::Lambda::EventSourceMapping`, and a
//! function's `MSK` and `SelfManagedKafka` events) as the local stack runs them: topic, batch
//! size, batching window, starting position and consumer group ("AWS::Lambda::EventSourceMapping"
//! in the AWS CloudFormation User Guide).

use super::{StackTemplate, TemplateError, get, invalid, path, resolve};
use serde_yaml_ng::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// Where a new consumer group starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartingPosition {
    /// `TRIM_HORIZON`: the oldest record kept.
    Earliest,
    /// `LATEST`: records produced from now on.
    Latest,
}

/// One Kafka event source mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaMapping {
    pub logical_id: String,
    /// Logical id of the function.
    pub function: String,
    pub topic: String,
    pub batch_size: usize,
    pub batching_window: Duration,
    pub starting_position: StartingPosition,
    pub consumer_group: String,
    /// `SelfManagedKafka` or `aws:kafka` (MSK), as in the events it builds.
    pub event_source: String,
}

impl StackTemplate {
    pub(super) fn read_mapping(
        &self,
        id: &str,
        function: &str,
        msk: bool,
        properties: &Value,
    ) -> Result<KafkaMapping, TemplateError> {
        let value = |key: &str| get(properties, key).and_then(|v| resolve(v, &self.parameters));
        let topic = match get(properties, "Topics") {
            Some(Value::Sequence(topics)) if topics.len() == 1 => {
                resolve(&topics[0], &self.parameters)
            }
            _ => None,
        }
        .ok_or_else(|| invalid(id, "Topics must hold exactly one topic"))?;
        let batch_size = value("BatchSize").unwrap_or_else(|| "100".into());
        let batch_size: usize = batch_size
            .parse()
            .map_err(|_| invalid(id, format!("BatchSize {batch_size:?} is not a number")))?;
        let window = value("MaximumBatchingWindowInSeconds").unwrap_or_else(|| "0".into());
        let window: f64 = window.parse().map_err(|_| {
            invalid(
                id,
                format!("MaximumBatchingWindowInSeconds {window:?} is not a number"),
            )
        })?;
        let starting_position = match value("StartingPosition").as_deref() {
            Some("TRIM_HORIZON") => StartingPosition::Earliest,
            Some("LATEST") | None => StartingPosition::Latest,
            Some(other) => {
                return Err(invalid(
                    id,
                    format!("StartingPosition {other} is not supported"),
                ));
            }
        };
        let group_path: &[&str] = if msk {
            &["AmazonManagedKafkaEventSourceConfig", "ConsumerGroupId"]
        } else {
            &["SelfManagedKafkaEventSourceConfig", "ConsumerGroupId"]
        };
        let consumer_group = path(properties, group_path)
            .and_then(|v| resolve(v, &self.parameters))
            .unwrap_or_else(|| format!("emostream-local-{id}"));
        Ok(KafkaMapping {
            logical_id: id.to_owned(),
            function: function.to_owned(),
            topic,
            batch_size,
            batching_window: Duration::from_secs_f64(window.max(0.0)),
            starting_position,
            consumer_group,
            event_source: if msk { "aws:kafka" } else { "SelfManagedKafka" }.to_owned(),
        })
    }

    /// The mappings the local stack runs: one per function and topic. A template may declare an
    /// MSK and a self-managed mapping for the same pair under exclusive conditions; locally the
    /// broker is self-managed, so that one wins.
    pub fn local_mappings(&self) -> Vec<KafkaMapping> {
        let mut chosen: BTreeMap<(String, String), KafkaMapping> = BTreeMap::new();
        for mapping in &self.kafka_mappings {
            let key = (mapping.function.clone(), mapping.topic.clone());
            let replace = match chosen.get(&key) {
                None => true,
                Some(existing) => {
                    existing.event_source != "SelfManagedKafka"
                        && mapping.event_source == "SelfManagedKafka"
                }
            };
            if replace {
                chosen.insert(key, mapping.clone());
            }
        }
        chosen.into_values().collect()
    }
}
