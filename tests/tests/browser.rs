//! The browser client in real headless Chromium against the local stack (web/tests/browser.mjs
//! does the clicking; `make test` installs Chromium and playwright-core with
//! local/web-deps.sh), and the client's pure logic under `node --test`.

use emostream_tests::local_stack::TestStack;
use emostream_tests::repo_root;
use std::process::Command;

fn require_browser_tools() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let playwright = repo_root().join("web/tests/node_modules/playwright-core");
    assert!(
        std::path::Path::new(&chromium).is_file() && playwright.is_dir(),
        "the browser test needs {chromium} and {}: run local/web-deps.sh (make test does)",
        playwright.display()
    );
}

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
async fn two_pages_show_the_same_exact_counts_and_a_late_joiner_sees_history() {
    require_browser_tools();
    let test = TestStack::start("browser", |options| {
        options.web = Some((repo_root().join("web"), 0));
    })
    .await;
    let artifacts = repo_root().join("target/test-artifacts/browser");
    let web_url = test.stack.web_url.clone().unwrap();
    let api_url = test.stack.http_url.clone();
    let output = tokio::process::Command::new("node")
        .arg("browser.mjs")
        .current_dir(repo_root().join("web/tests"))
        .env("WEB_URL", &web_url)
        .env("API_URL", &api_url)
        .env("ARTIFACTS", &artifacts)
        .kill_on_drop(true)
        .output();
    // A backstop only: the script's own waits are bounded (60 s each).
    let output = tokio::time::timeout(std::time::Duration::from_secs(600), output)
        .await
        .expect("the browser test finishes within 10 minutes")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{stdout}{stderr}");
    assert!(
        output.status.success(),
        "browser test failed:\n{stdout}{stderr}"
    );
    assert!(artifacts.join("tapper.png").is_file());
    assert!(artifacts.join("late-joiner.png").is_file());
    test.stack.stop().await;
}
