//! Entry point: serve WebSocket route events and output-topic Kafka events.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    reactions::telemetry::init_json_logs();
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| async move {
        notify::handle(event.payload).map_err(Error::from)
    }))
    .await
}
