//! The contract between the code and its grants, written down once in docs/permissions.md: a
//! table of every AWS call and Kafka operation each function makes, with the IAM action and
//! resource it needs. This test holds both sides to it:
//! - the code: every AWS SDK operation (found from the SDK crates' own operation lists), every
//!   SigV4-signed request and every Kafka client or operation in the functions and the domain
//!   crate is a row of the table, and every row names code that exists and that its function
//!   reaches;
//! - the template: for every supported deployment, each function's role allows each row that
//!   applies (its condition holds), evaluated as IAM evaluates it.

use emostream_local::iam::{Decision, decide};
use emostream_local::template::intrinsics::Evaluated;
use emostream_local::template::{DeployedStandIns, StackTemplate};
use emostream_tests::deployments::supported;
use emostream_tests::repo_root;
use serde_yaml_ng::{Mapping, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// One row of the table.
#[derive(Debug, Clone)]
struct Row {
    function: String,
    call: String,
    /// `file: marker`, or `template.yaml: Resource`.
    code: String,
    entry: String,
    action: String,
    resource: String,
    when: String,
}

fn rows() -> Vec<Row> {
    let text = std::fs::read_to_string(repo_root().join("docs/permissions.md")).unwrap();
    let mut rows = Vec::new();
    for line in text.lines() {
        let cells: Vec<&str> = line
            .trim()
            .trim_matches('|')
            .split(" | ")
            .map(str::trim)
            .collect();
        if !line.starts_with("| ") || cells.len() != 7 || cells[0] == "function" {
            continue;
        }
        if cells[0].starts_with("---") {
            continue;
        }
        rows.push(Row {
            function: cells[0].to_owned(),
            call: cells[1].to_owned(),
            code: cells[2].to_owned(),
            entry: cells[3].to_owned(),
            action: cells[4].to_owned(),
            resource: cells[5].to_owned(),
            when: cells[6].to_owned(),
        });
    }
    assert!(rows.len() > 40, "the table was read: {} rows", rows.len());
    rows
}

/// The table's function names, each with its logical id and the crate of its binary.
const FUNCTIONS: [(&str, &str, &str); 4] = [
    ("ingest", "IngestFunction", "ingest"),
    ("aggregate", "AggregateFunction", "aggregate"),
    ("notify", "NotifyFunction", "notify"),
    ("notify-routes", "NotifyRoutesFunction", "notify"),
];

/// Source files (path relative to the repository, text up to its test module).
fn sources(under: &Path) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut stack = vec![under.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                let text = match text.find("#[cfg(test)]") {
                    Some(at) => text[..at].to_owned(),
                    None => text,
                };
                let relative = path
                    .strip_prefix(repo_root())
                    .unwrap()
                    .display()
                    .to_string();
                found.push((relative, text));
            }
        }
    }
    found
}

fn contains_word(text: &str, word: &str) -> bool {
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices(word).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        !before.is_some_and(is_word) && !after.is_some_and(is_word)
    })
}

/// The operations of each AWS SDK crate the workspace builds, by crate name as code writes it
/// (`aws_sdk_ssm`), from the crates' own `src/operation/` modules.
fn sdk_operations() -> BTreeMap<String, BTreeSet<String>> {
    let output = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(repo_root())
        .output()
        .expect("cargo metadata");
    assert!(output.status.success(), "cargo metadata failed");
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let mut operations = BTreeMap::new();
    for package in metadata["packages"].as_array().unwrap() {
        let name = package["name"].as_str().unwrap();
        if !name.starts_with("aws-sdk-") {
            continue;
        }
        let manifest = Path::new(package["manifest_path"].as_str().unwrap());
        let dir = manifest.parent().unwrap().join("src/operation");
        let names: BTreeSet<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(|e| {
                let path = e.ok()?.path();
                path.is_dir()
                    .then(|| path.file_name()?.to_str().map(str::to_owned))
                    .flatten()
            })
            .collect();
        operations.insert(name.replace('-', "_"), names);
    }
    operations
}

/// Kafka clients and operations, as the rdkafka crate names them.
const KAFKA_MARKERS: [&str; 16] = [
    "enable.idempotence",
    "FutureProducer",
    "BaseProducer",
    "ThreadedProducer",
    "StreamConsumer",
    "BaseConsumer",
    "AdminClient",
    "fetch_metadata",
    "fetch_watermarks",
    "fetch_group_list",
    "offsets_for_times",
    "create_topics",
    "delete_topics",
    "create_partitions",
    "init_transactions",
    "send_offsets_to_transaction",
];

/// Every call the code makes: `file: marker`.
fn calls_in_code() -> BTreeSet<String> {
    let root = repo_root();
    let mut files = sources(&root.join("crates/reactions/src"));
    let crates: BTreeSet<&str> = FUNCTIONS.iter().map(|(_, _, krate)| *krate).collect();
    for krate in crates {
        files.extend(sources(&root.join("functions").join(krate).join("src")));
    }
    let operations = sdk_operations();
    let mut calls = BTreeSet::new();
    for (path, text) in &files {
        for (krate, names) in &operations {
            if !text.contains(krate.as_str()) {
                continue;
            }
            for name in names {
                if text.contains(&format!(".{name}()")) {
                    calls.insert(format!("{path}: {name}"));
                }
            }
        }
        let signer = path.ends_with("crates/reactions/src/sigv4.rs");
        if !signer && text.contains("signature_headers(") {
            calls.insert(format!("{path}: signature_headers"));
        }
        if !signer && text.contains("aws_sigv4::") && text.contains("sign(") {
            calls.insert(format!("{path}: sign"));
        }
        if text.contains("rdkafka") {
            for marker in KAFKA_MARKERS {
                let found = if marker.contains('.') {
                    text.contains(&format!("\"{marker}\""))
                } else {
                    contains_word(text, marker)
                };
                if found {
                    calls.insert(format!("{path}: {marker}"));
                }
            }
            for method in ["commit", "committed", "subscribe", "assign", "store_offset"] {
                if text.contains(&format!(".{method}(")) {
                    calls.insert(format!("{path}: {method}"));
                }
            }
        }
    }
    calls
}

#[test]
fn every_call_in_the_code_is_in_the_table_and_every_row_is_in_the_code() {
    let rows = rows();
    let listed: BTreeSet<String> = rows.iter().map(|r| r.code.clone()).collect();
    let calls = calls_in_code();
    for expected in [
        "crates/reactions/src/secrets.rs: get_secret_value",
        "functions/notify/src/management.rs: post_to_connection",
        "crates/reactions/src/kafka/mod.rs: enable.idempotence",
        "functions/notify/src/event_api.rs: signature_headers",
    ] {
        assert!(calls.contains(expected), "the scan misses {expected}");
    }
    let unlisted: Vec<&String> = calls.iter().filter(|c| !listed.contains(*c)).collect();
    assert!(
        unlisted.is_empty(),
        "calls docs/permissions.md does not list: {unlisted:?}"
    );

    let root = repo_root();
    let template: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(root.join("template.yaml")).unwrap())
            .unwrap();
    let function_sources: BTreeMap<&str, String> = FUNCTIONS
        .iter()
        .map(|(name, _, krate)| {
            let text: String = sources(&root.join("functions").join(krate).join("src"))
                .into_iter()
                .map(|(_, text)| text)
                .collect();
            (*name, text)
        })
        .collect();
    let mut functions_of: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for row in &rows {
        let (file, marker) = row.code.split_once(": ").expect("file: marker");
        if file == "template.yaml" {
            assert!(
                template["Resources"].get(marker).is_some(),
                "{row:?}: no resource {marker}"
            );
            assert_eq!(row.entry, "—", "{row:?}");
            continue;
        }
        assert!(
            calls.contains(&row.code),
            "{}: the code makes no such call ({})",
            row.call,
            row.code
        );
        match row.function.as_str() {
            "none" => {
                for (name, text) in &function_sources {
                    assert!(
                        !contains_word(text, &row.entry),
                        "{name} calls {}, which the table says no function calls",
                        row.entry
                    );
                }
            }
            function => {
                assert!(
                    contains_word(&function_sources[function], &row.entry),
                    "{function} does not call {} ({})",
                    row.entry,
                    row.call
                );
                functions_of
                    .entry((row.code.clone(), row.entry.clone()))
                    .or_default()
                    .insert(function.to_owned());
            }
        }
    }
    // A function that reaches a call through an entry must have that call's row too.
    for ((code, entry), listed) in &functions_of {
        let reaching: BTreeSet<String> = function_sources
            .iter()
            .filter(|(_, text)| contains_word(text, entry))
            .map(|(name, _)| (*name).to_owned())
            .collect();
        assert_eq!(
            &reaching, listed,
            "{code} through {entry}: the functions that call it and the table's rows differ"
        );
    }
}

/// The rows a role lacks under `template`'s parameters.
fn missing_grants(template: &StackTemplate, rows: &[Row]) -> Vec<String> {
    let roles = template
        .function_roles(&DeployedStandIns)
        .unwrap_or_else(|e| panic!("{e}"));
    let scope = template.scope(&DeployedStandIns);
    let uri_path = template.parameters["MongoDbUriName"]
        .clone()
        .unwrap_or_default()
        .trim_start_matches('/')
        .to_owned();
    let mut missing = Vec::new();
    for row in rows {
        let Some((_, logical_id, _)) = FUNCTIONS.iter().find(|(name, _, _)| *name == row.function)
        else {
            continue;
        };
        let applies = match row.when.as_str() {
            "always" => true,
            "never" => false,
            condition => match condition.strip_prefix('!') {
                Some(name) => !template.conditions[name],
                None => template.conditions[condition],
            },
        };
        if !applies {
            continue;
        }
        let variables: Value = serde_yaml_ng::from_str(
            r#"
ClusterPath: !Select [1, !Split ["cluster/", !Ref MskClusterArn]]
ClusterArnPrefix: !Select [0, !Split [":cluster/", !Ref MskClusterArn]]
ConnectionId: AbCdEfGhIjKlMnO=
"#,
        )
        .unwrap();
        let mut variables = variables.as_mapping().cloned().unwrap_or_else(Mapping::new);
        variables.insert("MongoDbUriPath".into(), uri_path.clone().into());
        let sub = Value::Mapping(Mapping::from_iter([(
            Value::from("Fn::Sub"),
            Value::Sequence(vec![
                Value::from(row.resource.clone()),
                Value::Mapping(variables),
            ]),
        )]));
        let Some(Evaluated::Text(resource)) = scope.evaluate(&sub) else {
            panic!("{row:?}: the resource cannot be evaluated");
        };
        let role = &roles[*logical_id];
        let granted = match row.action.strip_prefix("managed:") {
            Some(_) => {
                let arn = scope
                    .evaluate(&Value::Mapping(Mapping::from_iter([(
                        Value::from("Fn::Sub"),
                        Value::from(row.action["managed:".len()..].to_owned()),
                    )])))
                    .and_then(Evaluated::text)
                    .unwrap();
                role.managed_policies.contains(&arn)
            }
            None => decide(&role.statements, &row.action, &resource) == Decision::Allowed,
        };
        if !granted {
            missing.push(format!(
                "{} ({}): {} on {resource}",
                row.function, row.call, row.action
            ));
        }
    }
    missing
}

#[test]
fn every_role_allows_what_its_function_does_in_every_deployment() {
    let rows = rows();
    let path = repo_root().join("template.yaml");
    for deployment in supported() {
        let template = StackTemplate::load(&path, &deployment.parameters).unwrap();
        let missing = missing_grants(&template, &rows);
        assert!(
            missing.is_empty(),
            "{}: the roles lack\n{}",
            deployment.name,
            missing.join("\n")
        );
    }
}

/// The check finds a grant the template lost: `execute-api:ManageConnections`, of both roles
/// that post to connections.
#[test]
fn a_missing_grant_is_found() {
    let text = std::fs::read_to_string(repo_root().join("template.yaml")).unwrap();
    let grant = "              Action: execute-api:ManageConnections\n";
    assert_eq!(text.matches(grant).count(), 2);
    let without = text.replace(grant, "              Action: execute-api:Invoke\n");
    let deployment = &supported()[0];
    let template = StackTemplate::parse(&without, &deployment.parameters).unwrap();
    let missing = missing_grants(&template, &rows());
    assert_eq!(missing.len(), 2, "{missing:#?}");
    assert!(
        missing[0].starts_with("notify (push to a viewer (PostToConnection)): execute-api:ManageConnections on arn:aws:execute-api:"),
        "{}",
        missing[0]
    );
    assert!(
        missing[1].starts_with("notify-routes (reply to a connection's sync and ping (PostToConnection)): execute-api:ManageConnections"),
        "{}",
        missing[1]
    );
}
