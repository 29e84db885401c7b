//! The broadcaster console in real headless Chromium against the local stack
//! (web/tests/console.mjs does the clicking): sign-in through the stack's signing helper,
//! creating, editing, starting and ending a stream, its live count, the moderation switches as
//! the API enforces them, and the summary with its moments linked into the replay.

use emostream_tests::browser_script::{BrowserScript, expect_passed, require_browser_tools};
use emostream_tests::local_stack::TestStack;
use emostream_tests::repo_root;
use reactions::StreamId;
use reactions::mongo::connect;
use std::time::Duration;

#[tokio::test]
async fn the_console_runs_a_stream_from_creation_to_its_summary() {
    require_browser_tools();
    let test = TestStack::start("console", |options| {
        options.web = Some((repo_root().join("web"), 0));
    })
    .await;
    let artifacts = repo_root().join("target/test-artifacts/console");
    let stream = emostream_tests::unique_name("console");
    let database = connect(&test.mongo(), "console-test")
        .await
        .expect("MongoDB");
    let web_url = test.stack.web_url.clone().unwrap();
    let mut script = BrowserScript::start(
        "console.mjs",
        &[
            ("WEB_URL", &web_url),
            ("API_URL", &test.stack.http_url),
            ("STREAM", &stream),
            ("ARTIFACTS", &artifacts.display().to_string()),
        ],
    );
    let conversation = async {
        while let Some(line) = script.next_line().await {
            if let Some(stream) = line.strip_prefix("store-moment ") {
                store_moment(&database, stream.trim()).await;
                script.answer("stored").await;
            }
        }
        script.finish().await
    };
    expect_passed(conversation, "console test").await;
    assert!(artifacts.join("console.png").is_file());
    test.stack.stop().await;
}

/// Confirms a moment of `stream` starting a second after it went live, as aggregate does.
async fn store_moment(database: &mongodb::Database, stream: &str) {
    use mongodb::bson::{Document, doc};
    let entry = database
        .collection::<Document>("streams")
        .find_one(doc! { "_id": stream })
        .await
        .expect("MongoDB")
        .expect("the stream is registered");
    let started = entry.get_i64("started_ms").expect("the stream went live");
    let from = started + 1_000;
    let moment = reactions::moments::Moment {
        detected_from_ms: from,
        start_ms: started,
        end_ms: from + 7_000,
        peak_rate: 60.0,
        emoji: "goal".into(),
        ended: true,
    };
    let now = reactions::clock::now_ms();
    let times = reactions::mongo::WriteTimes {
        now_ms: now,
        retention: Duration::from_secs(7 * 86_400),
    };
    reactions::mongo::MomentStore::new(database)
        .confirm(
            &StreamId::parse("stream", stream).expect("a stream id"),
            &moment,
            now,
            now,
            times,
        )
        .await
        .expect("MongoDB");
}
