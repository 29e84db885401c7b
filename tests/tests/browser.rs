//! The browser client in real headless Chromium against the local stack (web/tests/browser.mjs
//! does the clicking; `make test` installs Chromium and playwright-core with
//! local/web-deps.sh), and the client's pure logic under `node --test`.

use emostream_local::stack::DemoIssuerOptions;
use emostream_tests::browser_script::{BrowserScript, expect_passed, require_browser_tools};
use emostream_tests::local_stack::TestStack;
use emostream_tests::patience::{PATIENCE, eventually};
use emostream_tests::repo_root;
use reactions::StreamId;
use reactions::mongo::{ConnectionStore, connect};
use std::process::Command;
use std::time::Duration;

#[test]
fn the_client_logic_passes_its_unit_tests() {
    let output = Command::new("node")
        .args(["--test", "web/"])
        .current_dir(repo_root())
        .output()
        .expect("node is installed");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(text.contains("# fail 0"), "{text}");
}

#[tokio::test]
async fn pages_show_exact_counts_and_history_and_recover_a_forgotten_connection() {
    browser_test("WebSocketApi").await;
}

#[tokio::test]
async fn pages_over_appsync_events_show_exact_counts_and_history_and_recover_a_dropped_connection()
{
    browser_test("AppSyncEvents").await;
}

/// Runs web/tests/browser.mjs against a stack delivering with `delivery`, answering its
/// requests to forget connections (WebSocketApi) or drop subscribers (AppSyncEvents).
async fn browser_test(delivery: &str) {
    require_browser_tools();
    let test = TestStack::start(&format!("browser-{delivery}"), |options| {
        options.web = Some((repo_root().join("web"), 0));
        options
            .local
            .parameters
            .insert("Delivery".into(), delivery.into());
        // Viewer identity on, with tokens short enough to expire during the test.
        options.demo_issuer = Some(DemoIssuerOptions {
            port: 0,
            token_ttl: Duration::from_secs(15),
        });
    })
    .await;
    let artifacts = repo_root().join(format!("target/test-artifacts/browser-{delivery}"));
    let web_url = test.stack.web_url.clone().unwrap();
    let api_url = test.stack.http_url.clone();
    let stream = emostream_tests::unique_name("browser");
    let admin = emostream_local::api_gateway::admin_client::AdminClient::local(&api_url);
    for suffix in [
        "",
        "-forgotten",
        "-dropped",
        "-switched",
        "-renewed",
        "-lost",
        "-moment",
        "-replay",
    ] {
        let id = format!("{stream}{suffix}");
        admin
            .register_live(&id, &id, None)
            .await
            .expect("stream registered");
    }
    let database = connect(&test.mongo(), "browser-test")
        .await
        .expect("MongoDB");
    store_recording(&database, &format!("{stream}-replay")).await;
    let artifacts_text = artifacts.display().to_string();
    let mut script = BrowserScript::start(
        "browser.mjs",
        &[
            ("WEB_URL", &web_url),
            ("API_URL", &api_url),
            ("STREAM", &stream),
            ("ARTIFACTS", &artifacts_text),
            ("DELIVERY", delivery),
        ],
    );
    let connections = ConnectionStore::new(&database, Duration::from_secs(7_800));
    // A backstop only: the script's own waits are bounded (60 s each).
    let conversation = async {
        while let Some(line) = script.next_line().await {
            // The script asks for a stream's connections to be forgotten, as a fan-out that
            // took a 410 for them would.
            if let Some(stream) = line.strip_prefix("forget-connections ") {
                let stream = StreamId::parse("stream", stream.trim()).expect("a stream id");
                let ids = connections.ids_watching(&stream).await.expect("MongoDB");
                assert!(!ids.is_empty(), "no connection registered for {stream:?}");
                connections.remove_all(&ids).await.expect("MongoDB");
                script.answer("forgotten").await;
            }
            // The script asks for the next push to a stream's viewers to be lost on the way.
            if let Some(stream) = line.strip_prefix("lose-next-push ") {
                let stream = StreamId::parse("stream", stream.trim()).expect("a stream id");
                match (&test.stack.websocket, &test.stack.event_api) {
                    (_, Some(api)) if delivery == "AppSyncEvents" => {
                        api.lose_next_publish(&reactions::event_channel::stream_channel(
                            "streams", &stream,
                        ));
                    }
                    (Some(websocket), _) => {
                        let ids = connections.ids_watching(&stream).await.expect("MongoDB");
                        assert!(!ids.is_empty(), "no connection registered for {stream:?}");
                        websocket.lose_next_push(&ids);
                    }
                    _ => panic!("no delivery to lose a push of"),
                }
                script.answer("losing").await;
            }
            // ... and to hear once it was lost.
            if line.trim() == "push-lost" {
                let pending = || match (&test.stack.websocket, &test.stack.event_api) {
                    (_, Some(api)) if delivery == "AppSyncEvents" => api.publishes_to_lose(),
                    (Some(websocket), _) => websocket.pushes_to_lose(),
                    _ => 0,
                };
                eventually("the push to be lost", || async {
                    match pending() {
                        0 => Ok(()),
                        n => Err(format!("{n} still to lose")),
                    }
                })
                .await;
                script.answer("lost").await;
            }
            // The script asks for a moment of a stream to be published, as aggregate does when
            // a window still counting stands out.
            if let Some(stream) = line.strip_prefix("publish-moment ") {
                publish_moment(&test, stream.trim()).await;
                script.answer("published").await;
            }
            if line.trim() == "drop-subscribers" {
                let api = test.stack.event_api.as_ref().expect("an Event API");
                assert!(api.disconnect_all() > 0, "no subscriber to drop");
                script.answer("dropped").await;
            }
        }
        script.finish().await
    };
    expect_passed(conversation, "browser test").await;
    assert!(artifacts.join("tapper.png").is_file());
    assert!(artifacts.join("late-joiner.png").is_file());
    assert!(artifacts.join("reconnected.png").is_file());
    test.stack.stop().await;
}

/// The recording the replay page plays: `stream` went live ten minutes ago and ended two
/// minutes later, with taps in every 2 s window (counts that differ from window to window, so
/// a page showing the wrong window is caught) and one moment a minute in.
async fn store_recording(database: &mongodb::Database, stream: &str) {
    use mongodb::bson::{Document, doc};
    let now = reactions::clock::now_ms();
    let started = now - now.rem_euclid(2_000) - 600_000;
    let ended = started + 120_000;
    database
        .collection::<Document>("streams")
        .update_one(
            doc! { "_id": stream },
            doc! { "$set": { "status": "ended", "started_ms": started, "ended_ms": ended } },
        )
        .await
        .expect("MongoDB");
    let windows: Vec<Document> = (0..60_i64)
        .map(|w| {
            let start = started + w * 2_000;
            let (fire, clap) = (1 + w % 7, (w * 5) % 11);
            let mut counts = doc! { "fire": fire };
            if clap > 0 {
                counts.insert("clap", clap);
            }
            doc! {
                "stream": stream, "start_ms": start, "end_ms": start + 2_000,
                "counts": counts, "total": fire + clap, "final": true, "expires_at":
                mongodb::bson::DateTime::from_millis(start + 7 * 86_400_000),
            }
        })
        .collect();
    database
        .collection::<Document>("windows")
        .insert_many(windows)
        .await
        .expect("MongoDB");
    let store = reactions::mongo::MomentStore::new(database);
    let from = started + 60_000;
    let moment = reactions::moments::Moment {
        detected_from_ms: from,
        start_ms: from - 10_000,
        end_ms: from + 6_000 + 5_000,
        peak_rate: 120.0,
        emoji: "fire".into(),
        ended: true,
    };
    let times = reactions::mongo::WriteTimes {
        now_ms: now,
        retention: Duration::from_secs(7 * 86_400),
    };
    store
        .confirm(
            &StreamId::parse("stream", stream).unwrap(),
            &moment,
            from + 8_000,
            now,
            times,
        )
        .await
        .expect("MongoDB");
}

/// Publishes a provisional moment of `stream` on the stack's output topic, starting in the
/// window counting now.
async fn publish_moment(test: &TestStack, stream: &str) {
    use reactions::message::VersionedMessage;
    let now = reactions::clock::now_ms();
    let from = now - now.rem_euclid(2_000);
    let record = reactions::MomentRecord {
        v: reactions::MomentRecord::VERSION,
        stream: StreamId::parse("stream", stream).expect("a stream id"),
        moment: reactions::moments::Moment {
            detected_from_ms: from,
            start_ms: from - 10_000,
            end_ms: from + 2_000 + 5_000,
            peak_rate: 90.0,
            emoji: "fire".into(),
            ended: false,
        },
        status: reactions::moments::MomentStatus::Provisional,
        revision: 0,
    };
    let settings = reactions::kafka::KafkaSettings::new(
        emostream_tests::servers().kafka_brokers.clone(),
        "browser-test",
    );
    let producer = reactions::kafka::AckedProducer::new(&settings, PATIENCE).expect("a producer");
    producer
        .produce_all(
            &test.output_topic,
            &[reactions::kafka::OutgoingRecord::new(
                stream,
                record.encode(),
            )],
            PATIENCE,
        )
        .await
        .expect("the moment is published");
}
