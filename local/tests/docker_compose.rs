//! Docker cannot run on the machines this is developed on, so local/docker-compose.yml and
//! local/Dockerfile are checked here: the services and their health checks, the stack's
//! command accepted by the real command-line parser, the environment it reads, published ports
//! matching its flags, and every path the Dockerfile copies.

use clap::Parser;
use emostream_local::cli::Cli;
use serde_yaml_ng::Value;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn compose() -> Value {
    let text = std::fs::read_to_string(root().join("local/docker-compose.yml")).unwrap();
    serde_yaml_ng::from_str(&text).unwrap()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn the_stack_service_is_a_valid_invocation_of_the_local_stack() {
    let compose = compose();
    let services = compose["services"].as_mapping().unwrap();
    let names: Vec<&str> = services.keys().map(|k| k.as_str().unwrap()).collect();
    assert_eq!(names, ["redpanda", "mongodb", "stack"]);
    for backing in ["redpanda", "mongodb"] {
        assert!(
            compose["services"][backing]["image"]
                .as_str()
                .unwrap()
                .contains(':')
        );
        assert!(compose["services"][backing]["healthcheck"]["test"].is_sequence());
        assert_eq!(
            compose["services"]["stack"]["depends_on"][backing]["condition"],
            "service_healthy"
        );
    }
    let stack = &compose["services"]["stack"];
    let dockerfile = stack["build"]["dockerfile"].as_str().unwrap();
    assert!(root().join(dockerfile).is_file(), "{dockerfile}");
    assert_eq!(stack["build"]["context"], "..");

    // The command parses with the binary's own parser, with the environment compose sets.
    let environment = &stack["environment"];
    let kafka = environment["KAFKA_BROKERS"].as_str().unwrap();
    let mongo = environment["MONGODB_URI"].as_str().unwrap();
    assert_eq!(kafka, "redpanda:9092");
    assert!(mongo.starts_with("mongodb://mongodb:27017"));
    let mut command = strings(&stack["command"]);
    assert_eq!(command[0], "emostream-local");
    command.push(format!("--kafka-brokers={kafka}"));
    command.push(format!("--mongodb-uri={mongo}"));
    let cli = Cli::try_parse_from(&command).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cli.host.to_string(), "0.0.0.0");
    assert_eq!(cli.batching_window_ms, Some(100));

    // Every port the stack listens on is published as itself (the browser client is told
    // these URLs).
    let published = strings(&stack["ports"]);
    for port in [cli.http_port, cli.websocket_port, cli.web_port] {
        assert!(
            published.contains(&format!("{port}:{port}")),
            "{port} in {published:?}"
        );
    }
    // Redpanda advertises the in-network address the stack uses.
    let redpanda = strings(&compose["services"]["redpanda"]["command"]);
    assert!(
        redpanda
            .iter()
            .any(|a| a.contains("internal://redpanda:9092"))
    );
}

#[test]
fn the_dockerfile_copies_what_exists_and_builds_every_binary() {
    let dockerfile = std::fs::read_to_string(root().join("local/Dockerfile")).unwrap();
    for package in [
        "emostream-ingest",
        "emostream-aggregate",
        "emostream-notify",
        "emostream-local",
    ] {
        assert!(dockerfile.contains(&format!("-p {package}")), "{package}");
    }
    for binary in ["ingest", "aggregate", "notify", "emostream-local"] {
        assert!(
            dockerfile.contains(&format!("/src/target/release/{binary} ")),
            "{binary}"
        );
    }
    for source in ["template.yaml", "web"] {
        assert!(dockerfile.contains(&format!("COPY {source} ")), "{source}");
        assert!(root().join(source).exists(), "{source}");
    }
    // The image's default command parses too.
    let cmd = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("CMD "))
        .unwrap();
    let mut command: Vec<String> = serde_json::from_str(cmd).unwrap();
    command.push("--kafka-brokers=k:9092".into());
    command.push("--mongodb-uri=mongodb://m".into());
    Cli::try_parse_from(&command).unwrap_or_else(|e| panic!("{e}"));
}
