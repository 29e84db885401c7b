//! Entry point: read configuration and build clients once per container, then serve Kafka
//! events from the event source mappings and the scheduled finalize tick.

use aggregate::Aggregate;
use aggregate::config::AggregateConfig;
use aggregate::invocation::Invocation;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), Error> {
    reactions::telemetry::init_json_logs();
    let aggregate = Arc::new(Aggregate::new(AggregateConfig::from_env().await?).await?);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Invocation>| {
        let aggregate = Arc::clone(&aggregate);
        async move { aggregate.invoke(&event.payload).await.map_err(Error::from) }
    }))
    .await
}
