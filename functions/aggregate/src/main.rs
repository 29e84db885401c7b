//! Entry point: read configuration and build clients once per container, then serve Kafka
//! events from the event source mappings and the scheduled finalize tick.

use aggregate::Aggregate;
use aggregate::config::AggregateConfig;
use aggregate::invocation::Invocation;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() -> Result<(), Error> {
    reactions::telemetry::init_json_logs();
    let aggregate = Arc::new(Aggregate::new(AggregateConfig::from_env().await?).await?);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Invocation>| {
        let aggregate = Arc::clone(&aggregate);
        // Lambda's deadline, in ms since the epoch, as an instant of this process's clock.
        let left_ms = i64::try_from(event.context.deadline)
            .unwrap_or(i64::MAX)
            .saturating_sub(reactions::clock::now_ms());
        let deadline = Instant::now() + Duration::from_millis(u64::try_from(left_ms).unwrap_or(0));
        async move {
            aggregate
                .invoke(&event.payload, deadline)
                .await
                .map_err(Error::from)
        }
    }))
    .await
}
