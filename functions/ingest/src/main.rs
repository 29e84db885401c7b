//! Entry point: read configuration once, then serve API Gateway events.

use ingest::Ingest;
use lambda_http::{Error, Request, service_fn};
use reactions::DomainConfig;
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), Error> {
    reactions::telemetry::init_json_logs();
    let ingest = Arc::new(Ingest {
        config: DomainConfig::from_env()?,
    });
    lambda_http::run(service_fn(move |request: Request| {
        let ingest = Arc::clone(&ingest);
        async move { Ok::<_, Error>(ingest.handle(request).await) }
    }))
    .await
}
