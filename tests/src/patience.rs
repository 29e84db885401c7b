//! How long tests wait, in one place, so that no test fails because the machine is busy.
//!
//! A test waits for a condition by polling it against a deadline of [`PATIENCE`] (tens of
//! seconds: far beyond what an idle machine needs, and still short enough that a real hang
//! fails the run). Where the behaviour under test is itself about time ("a down broker is a
//! timeout, not a hang"), the elapsed time is compared with the configured bound plus [`SLACK`]:
//! loose enough for a machine whose cores are busy with something else, and still far below
//! the unbounded alternative the test rules out (librdkafka's 300 s message timeout, the
//! MongoDB driver's 30 s server selection, a retry loop without a budget).

use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

/// The longest a test waits for a condition: a process to listen, a record to arrive, a count
/// to become exact.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// What a busy machine may add to a configured timeout before the test calls it a hang.
pub const SLACK: Duration = Duration::from_secs(10);

/// How often a condition is polled.
const POLL_EVERY: Duration = Duration::from_millis(50);

/// Polls `check` until it returns `Some`, for at most [`PATIENCE`]; panics naming `what` and
/// the last thing `check` reported otherwise.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(last) => {
                assert!(
                    Instant::now() < deadline,
                    "{what}: not within {PATIENCE:?}; last seen: {last}"
                );
            }
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// Waits until `address` (`host:port`) accepts TCP connections, for at most [`PATIENCE`].
pub async fn wait_for_listener(address: &str) {
    eventually(&format!("a listener on {address}"), || async {
        tokio::net::TcpStream::connect(address)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    })
    .await
}

/// Asserts that `elapsed` stayed within `configured` (the timeout or budget the code under test
/// was given) plus [`SLACK`].
pub fn assert_bounded(elapsed: Duration, configured: Duration, what: &str) {
    assert!(
        elapsed < configured + SLACK,
        "{what} took {elapsed:?}: not bounded by its {configured:?} (+{SLACK:?} for a busy machine)"
    );
}
