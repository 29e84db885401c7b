//! Entry point: read configuration once, then serve Kafka events.

use aggregate::Aggregate;
use aws_lambda_events::event::kafka::KafkaEvent;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use reactions::DomainConfig;
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), Error> {
    reactions::telemetry::init_json_logs();
    let aggregate = Arc::new(Aggregate {
        config: DomainConfig::from_env()?,
    });
    lambda_runtime::run(service_fn(move |event: LambdaEvent<KafkaEvent>| {
        let aggregate = Arc::clone(&aggregate);
        async move { Ok::<_, Error>(aggregate.handle(&event.payload)) }
    }))
    .await
}
