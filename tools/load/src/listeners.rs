//! Listeners: WebSocket clients watching a stream as browsers do. Each keeps the largest total
//! per window and records when the cumulative count over the stream's windows rises. A connect
//! refused with 429 (API Gateway admits 500 new connections per second per account) is tried
//! again after a jittered backoff, as the browser client does.

use crate::report::Seen;
use futures::StreamExt;
use rand::Rng;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// What one listener observed.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub stream: usize,
    /// Pushes received (frames of window states, duplicates and stale ones included).
    pub updates: u64,
    pub seen: Seen,
}

/// A connected listener.
pub struct Listener {
    pub stream: usize,
    /// The cumulative count it shows now, for waiting until it caught up.
    pub shown: Arc<AtomicU64>,
    /// Connect attempts refused with 429 before it got in.
    pub throttled_connects: u64,
    /// Records until the stop signal; yields what it observed.
    pub task: tokio::task::JoinHandle<Observed>,
}

/// Connects to `url`, trying again while the connect is throttled (429) until `give_up`.
/// Returns the socket and how many throttled attempts it took.
async fn connect_throttled(
    url: &str,
    give_up: Instant,
) -> Result<
    (
        tokio_tungstenite::WebSocketStream<MaybeTlsStream<TcpStream>>,
        u64,
    ),
    String,
> {
    let mut throttled = 0u64;
    loop {
        match tokio_tungstenite::connect_async(url).await {
            Ok((socket, _)) => return Ok((socket, throttled)),
            Err(WsError::Http(response))
                if response.status() == 429 && Instant::now() < give_up =>
            {
                throttled += 1;
                // Full jitter up to a cap growing from 100 ms to 2 s.
                let cap_ms = (100u64 << throttled.min(5)).min(2_000);
                let delay = rand::rng().random_range(1..=cap_ms);
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            Err(error) => return Err(format!("WebSocket {url}: {error}")),
        }
    }
}

/// Connects a listener to `url` (already carrying `?stream=`); returns once connected.
pub async fn listen(
    url: String,
    stream: usize,
    stream_id: String,
    started: Instant,
    give_up: Instant,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<Listener, String> {
    let (mut socket, throttled_connects) = connect_throttled(&url, give_up).await?;
    let shown = Arc::new(AtomicU64::new(0));
    let shown_by_task = Arc::clone(&shown);
    let task = tokio::spawn(async move {
        let mut observed = Observed {
            stream,
            ..Observed::default()
        };
        let mut windows: HashMap<i64, u64> = HashMap::new();
        let mut cumulative = 0u64;
        loop {
            let message = tokio::select! {
                message = socket.next() => message,
                _ = stop.changed() => break,
            };
            let Some(Ok(Message::Text(text))) = message else {
                if matches!(message, None | Some(Err(_))) {
                    break;
                }
                continue;
            };
            let Ok(frame) = serde_json::from_str::<serde_json::Value>(&text) else {
                continue;
            };
            if frame["stream"] != stream_id.as_str() {
                continue;
            }
            // One push carries every changed window (`windows`); older servers push one
            // window per frame (`window`).
            let kind = frame["type"].as_str().map(str::to_owned);
            let states = match kind.as_deref() {
                Some("windows") => frame["windows"].as_array().cloned().unwrap_or_default(),
                Some("window") => vec![frame],
                _ => continue,
            };
            observed.updates += 1;
            for state in states {
                let (Some(start), Some(total)) =
                    (state["start_ms"].as_i64(), state["total"].as_u64())
                else {
                    continue;
                };
                let kept = windows.entry(start).or_insert(0);
                if total > *kept {
                    cumulative += total - *kept;
                    *kept = total;
                    shown_by_task.store(cumulative, Ordering::Relaxed);
                    observed
                        .seen
                        .push((started.elapsed().as_secs_f64() * 1_000.0, cumulative));
                }
            }
        }
        observed
    });
    Ok(Listener {
        stream,
        shown,
        throttled_connects,
        task,
    })
}
