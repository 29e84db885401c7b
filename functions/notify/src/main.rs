//! Entry point: read configuration and build clients once per container, then serve WebSocket
//! route events and output-topic Kafka events.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use notify::Notify;
use notify::config::NotifyConfig;
use serde_json::Value;
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), Error> {
    reactions::telemetry::init_json_logs();
    let config = NotifyConfig::from_env().await?;
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let notify = Arc::new(Notify::new(config, &sdk).await?);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let notify = Arc::clone(&notify);
        async move { notify.handle(event.payload).await.map_err(Error::from) }
    }))
    .await
}
