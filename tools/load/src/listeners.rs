//! Listeners: WebSocket clients watching a stream as browsers do. Each keeps the largest total
//! per window and records when the cumulative count over the stream's windows rises.

use crate::report::Seen;
use futures::StreamExt;
use std::collections::HashMap;
use std::time::Instant;
use tokio_tungstenite::tungstenite::Message;

/// What one listener observed.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub stream: usize,
    /// Window frames received (duplicates and stale ones included).
    pub updates: u64,
    pub seen: Seen,
}

/// Connects a listener to `url` (already carrying `?stream=`); returns once connected, with a
/// task that records until `stop` fires.
pub async fn listen(
    url: String,
    stream: usize,
    stream_id: String,
    started: Instant,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<Observed>, String> {
    let (mut socket, _) = tokio_tungstenite::connect_async(&url)
        .await
        .map_err(|e| format!("WebSocket {url}: {e}"))?;
    Ok(tokio::spawn(async move {
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
            if frame["type"] != "window" || frame["stream"] != stream_id.as_str() {
                continue;
            }
            observed.updates += 1;
            let (Some(start), Some(total)) = (frame["start_ms"].as_i64(), frame["total"].as_u64())
            else {
                continue;
            };
            let kept = windows.entry(start).or_insert(0);
            if total > *kept {
                cumulative += total - *kept;
                *kept = total;
                observed
                    .seen
                    .push((started.elapsed().as_secs_f64() * 1_000.0, cumulative));
            }
        }
        observed
    }))
}
