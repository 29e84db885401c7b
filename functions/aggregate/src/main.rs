//! Entry point: read configuration and build clients once per container, then serve Kafka
//! events from the event source mappings.

use aggregate::Aggregate;
use aggregate::config::AggregateConfig;
use aws_lambda_events::event::kafka::KafkaEvent;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), Error> {
    reactions::telemetry::init_json_logs();
    let aggregate = Arc::new(Aggregate::new(AggregateConfig::from_env().await?).await?);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<KafkaEvent>| {
        let aggregate = Arc::clone(&aggregate);
        async move { aggregate.handle(&event.payload).await.map_err(Error::from) }
    }))
    .await
}
