//! Running one of web/tests' Playwright scripts in headless Chromium: checking the tools are
//! installed, starting the script with its environment, the conversation over its standard
//! input and output (a script asks the harness for what only the harness can do, such as
//! storing a moment, and waits for the answer line), and its verdict.

use crate::repo_root;
use std::future::Future;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::task::JoinHandle;

/// Fails with how to install them unless Chromium and playwright-core are there.
pub fn require_browser_tools() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let playwright = repo_root().join("web/tests/node_modules/playwright-core");
    assert!(
        std::path::Path::new(&chromium).is_file() && playwright.is_dir(),
        "the browser tests need {chromium} and {}: run local/web-deps.sh (make test does)",
        playwright.display()
    );
}

/// A running script.
pub struct BrowserScript {
    child: Child,
    answers: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    stderr: JoinHandle<String>,
    stdout: String,
}

impl BrowserScript {
    /// Starts `node <script>` in web/tests with `env`.
    pub fn start(script: &str, env: &[(&str, &str)]) -> Self {
        require_browser_tools();
        let mut command = tokio::process::Command::new("node");
        command
            .arg(script)
            .current_dir(repo_root().join("web/tests"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("node runs");
        let mut stderr = child.stderr.take().expect("piped stderr");
        let stderr = tokio::spawn(async move {
            let mut text = String::new();
            stderr.read_to_string(&mut text).await.ok();
            text
        });
        let answers = child.stdin.take().expect("piped stdin");
        let lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        Self {
            child,
            answers,
            lines,
            stderr,
            stdout: String::new(),
        }
    }

    /// The script's next line of output (kept for the verdict), or `None` once it closed it.
    pub async fn next_line(&mut self) -> Option<String> {
        let line = self.lines.next_line().await.expect("node's output")?;
        self.stdout.push_str(&line);
        self.stdout.push('\n');
        Some(line)
    }

    /// Answers the script's request with `line`.
    pub async fn answer(&mut self, line: &str) {
        self.answers
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("node reads");
        self.answers.flush().await.expect("node reads");
    }

    /// Waits for the script to exit; its status and everything it wrote.
    pub async fn finish(mut self) -> (ExitStatus, String) {
        while self.next_line().await.is_some() {}
        let status = self.child.wait().await.expect("node runs");
        let stderr = self.stderr.await.unwrap_or_default();
        (status, format!("{}{stderr}", self.stdout))
    }
}

/// Runs a script's `conversation` (ending in [`BrowserScript::finish`]) and fails the test
/// unless the script passed, showing its output. Ten minutes is a backstop only: the scripts' own
/// waits are bounded (60 s each).
pub async fn expect_passed(conversation: impl Future<Output = (ExitStatus, String)>, what: &str) {
    let (status, output) = tokio::time::timeout(Duration::from_secs(600), conversation)
        .await
        .unwrap_or_else(|_| panic!("the {what} finishes within 10 minutes"));
    eprintln!("{output}");
    assert!(status.success(), "{what} failed:\n{output}");
}
