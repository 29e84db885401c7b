//! The sample events in `events/` (the files the reference, docs/local-stack.md, offers to `sam local invoke -e` and
//! `cargo lambda invoke --data-file`) cover every route and trigger in template.yaml, and each
//! is handled by the real function binary it is meant for.

use emostream_local::template::StackTemplate;
use emostream_tests::local_stack::TestStack;
use emostream_tests::repo_root;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

fn samples() -> BTreeMap<String, Value> {
    std::fs::read_dir(repo_root().join("events"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let value = serde_json::from_slice(&std::fs::read(&path).unwrap())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            (name, value)
        })
        .collect()
}

#[test]
fn every_route_and_trigger_has_a_sample() {
    let template =
        StackTemplate::load_local(&repo_root().join("template.yaml"), &BTreeMap::new()).unwrap();
    let samples = samples();
    let route_keys: BTreeSet<String> = samples
        .values()
        .filter_map(|e| {
            e["routeKey"]
                .as_str()
                .or(e["requestContext"]["routeKey"].as_str())
        })
        .map(str::to_owned)
        .collect();
    for route in &template.http_routes {
        let key = format!("{} {}", route.method, route.path);
        assert!(route_keys.contains(&key), "no sample event for {key}");
    }
    for key in template.websocket.unwrap().routes.keys() {
        assert!(
            route_keys.contains(key),
            "no sample event for WebSocket route {key}"
        );
    }
    for source in ["SelfManagedKafka", "aws:kafka"] {
        assert!(
            samples.values().any(|e| e["eventSource"] == source),
            "no {source} sample"
        );
    }
    // Each sample is named after the function it is for.
    let binaries: BTreeSet<String> = template
        .functions
        .values()
        .map(|f| f.binary.clone())
        .collect();
    for name in samples.keys() {
        let prefix = name.split('-').next().unwrap();
        assert!(binaries.contains(prefix), "{name} names no function");
    }
}

#[tokio::test]
async fn every_sample_is_handled_by_its_function() {
    let test = TestStack::start("samples", |_| {}).await;
    emostream_tests::fixtures::register_live_streams(
        &test.mongo(),
        &["match-1", "match-2"],
        &reactions::EmojiCatalogue::default(),
    )
    .await;
    let function_of = |name: &str| match name.split('-').next().unwrap() {
        "ingest" => "IngestFunction",
        "aggregate" => "AggregateFunction",
        _ => "NotifyFunction",
    };
    // $connect first, so the message routes find their connection; $disconnect last.
    let mut names: Vec<String> = samples().into_keys().collect();
    names.sort_by_key(|n| match n.as_str() {
        "notify-connect.json" => 0,
        "notify-disconnect.json" => 2,
        _ => 1,
    });
    for name in names {
        let bytes = std::fs::read(repo_root().join("events").join(&name)).unwrap();
        let pool = test.stack.function(function_of(&name)).unwrap();
        let answer = pool
            .invoke(&bytes)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let answer: Value = serde_json::from_slice(&answer).unwrap();
        if name == "aggregate-finalize-tick.json" {
            // How many windows are due depends on what else the shared topics hold: the tick's
            // own test (`runs_under_lambda_runtime`) counts them on a topic of its own.
            assert!(answer["windows_finalized"].is_u64(), "{name}: {answer}");
        } else if name.starts_with("aggregate") {
            assert_eq!(answer["dead_lettered"], 1, "{name}: {answer}");
            // Both samples carry the same records: the second is a redelivery, counted once.
            let taps = answer["taps_applied"].as_u64().unwrap();
            if name == "aggregate-msk.json" {
                assert!(taps > 0, "{name}: {answer}");
            } else {
                assert_eq!(taps, 0, "{name}: {answer}");
                assert!(
                    answer["replays_skipped"].as_u64().unwrap() > 0,
                    "{name}: {answer}"
                );
            }
        } else if name == "notify-window-states.json" {
            assert_eq!(answer["window_states"], 1, "{name}: {answer}");
        } else {
            let status = answer["statusCode"].as_u64().unwrap();
            let expected = match name.as_str() {
                "ingest-post-reactions.json" => 202,
                "ingest-options-reactions.json" => 204,
                _ => 200,
            };
            assert_eq!(status, expected, "{name}: {answer}");
        }
    }
    test.stack.stop().await;
}
