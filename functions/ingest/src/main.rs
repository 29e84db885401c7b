//! Entry point: read configuration and build clients once per container, then serve API
//! Gateway HTTP API events.

use ingest::Ingest;
use ingest::config::IngestConfig;
use lambda_http::{Error, Request, service_fn};
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), Error> {
    reactions::telemetry::init_json_logs();
    let ingest = Arc::new(Ingest::new(IngestConfig::from_env().await?).await?);
    lambda_http::run(service_fn(move |request: Request| {
        let ingest = Arc::clone(&ingest);
        async move { Ok::<_, Error>(ingest.handle(request).await) }
    }))
    .await
}
