//! The local stack: emulates, on one machine, the AWS services that surround emostream's
//! function binaries, so the binaries `sam deploy` ships run unmodified with no AWS account.
//! Everything is read from template.yaml: the functions and their environment, the HTTP API
//! routes, the WebSocket API routes, and the Kafka event source mappings.

pub mod admin_client;
pub mod aws_quotas;
pub mod cli;
pub mod demo_issuer;
pub mod environment;
pub mod event_api;
pub mod event_source;
pub mod function_process;
pub mod http_api;
pub mod http_authorizers;
pub mod iam;
pub mod lambda;
pub mod runtime_api;
pub mod schedule;
pub mod secrets_api;
pub mod sigv4_check;
pub mod stack;
pub mod template;
pub mod websocket_api;
pub mod websocket_event;

/// The bytes of a sample event from the repository's `events/` directory: the same files the
/// reference (docs/local-stack.md) offers to `sam local invoke -e` and `cargo lambda invoke --data-file`.
pub fn sample_event(name: &str) -> std::io::Result<Vec<u8>> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../events")
        .join(name);
    std::fs::read(&path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}
