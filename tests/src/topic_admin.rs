//! Changing a topic under a running test the way an operator would: adding partitions to it.

use crate::patience::PATIENCE;
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions};
use rdkafka::client::DefaultClientContext;
use reactions::kafka::KafkaSettings;

/// Grows `topic` to `partitions` partitions (Kafka's CreatePartitions), failing the test if
/// the broker refuses.
pub async fn add_partitions(settings: &KafkaSettings, topic: &str, partitions: usize) {
    let admin: AdminClient<DefaultClientContext> =
        settings.client_config().create().expect("an admin client");
    let options = AdminOptions::new()
        .operation_timeout(Some(PATIENCE))
        .request_timeout(Some(PATIENCE));
    for result in admin
        .create_partitions(&[NewPartitions::new(topic, partitions)], &options)
        .await
        .expect("a CreatePartitions answer")
    {
        if let Err((topic, code)) = result {
            panic!("{topic} not grown to {partitions} partitions: {code}");
        }
    }
}
