//! The local stack: emulates, on one machine, the AWS services that surround emostream's
//! function binaries, so the binaries `sam deploy` ships run unmodified with no AWS account.
//! Everything is read from template.yaml: the functions and their environment, the HTTP API
//! routes, the WebSocket API routes, the Kafka event source mappings, the schedules, the
//! AppSync Events API and the roles' IAM policies.
//!
//! One module per AWS service emulated, each naming the AWS documents it follows:
//! [`api_gateway`] (HTTP and WebSocket APIs, their authorizers, the account's quotas),
//! [`lambda`] (function pools, the Runtime API, processes and their environment),
//! [`event_source`] (Kafka event source mappings), [`event_api`] (AppSync Events), [`iam`]
//! (principals, policy evaluation and SigV4, called by every other service), [`secrets`]
//! (Secrets Manager and SSM Parameter Store), [`schedule`] (EventBridge schedules) and
//! [`template`] (the SAM template as CloudFormation reads it). [`stack`] puts them together;
//! [`demo_issuer`] stands in for an OpenID Connect identity provider, [`network`] for the
//! network between the functions and a server, with faults on demand, [`demo_crowd`] for
//! an audience tapping the demo's streams, and [`admin_signer`] for the broadcaster console's
//! signing helper (a tool an administrator runs, not an AWS service).

pub mod admin_signer;
pub mod api_gateway;
pub mod cli;
pub mod demo_crowd;
pub mod demo_issuer;
pub mod event_api;
pub mod event_source;
pub mod iam;
pub mod lambda;
pub mod network;
pub mod schedule;
pub mod secrets;
pub mod stack;
pub mod template;

/// The bytes of a sample event from the repository's `events/` directory: the same files the
/// reference (docs/local-stack.md) offers to `sam local invoke -e` and `cargo lambda invoke --data-file`.
pub fn sample_event(name: &str) -> std::io::Result<Vec<u8>> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../events")
        .join(name);
    std::fs::read(&path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}
