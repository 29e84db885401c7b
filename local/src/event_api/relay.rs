//! A relay of an Event API's real-time endpoint, for audiences larger than one process may hold
//! connections for (each connection is a file descriptor, and a process may have 20,000 here),
//! as AppSync itself spreads subscribers over many hosts. The relay serves the same protocol
//! to its own subscribers; for each channel pattern they subscribe to, it holds one
//! subscription upstream, and delivers what arrives on it to exactly the subscribers of that
//! pattern. Upstream it is an ordinary subscriber: it reconnects and subscribes again when the
//! connection ends. Each delivery takes one extra hop on this machine, so figures measured
//! through a relay are, if anything, slower than with one process.

use super::EventApi;
use super::client::Subscriber;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// The API a relay subscribes to.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// `ws://{host}/event/realtime`.
    pub realtime_url: String,
    /// The upstream API's HTTP host.
    pub http_host: String,
    pub api_key: String,
}

/// Relays `upstream` to the subscribers of `api` (made by [`EventApi::relayed`], which gives
/// `patterns`). Runs until the task is dropped.
pub async fn relay(
    api: Arc<EventApi>,
    mut patterns: mpsc::UnboundedReceiver<Vec<String>>,
    upstream: Upstream,
) {
    let mut known: Vec<Vec<String>> = Vec::new();
    loop {
        let connected = Subscriber::connect(
            &upstream.realtime_url,
            &upstream.http_host,
            &upstream.api_key,
            Duration::from_secs(30),
        )
        .await;
        let mut subscriber = match connected {
            Ok(subscriber) => subscriber,
            Err(error) => {
                tracing::warn!(%error, "relay cannot reach its upstream; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        // Subscription ids upstream are indexes into `known`.
        for (index, pattern) in known.iter().enumerate() {
            subscriber
                .request_subscription(&format!("r{index}"), &format!("/{}", pattern.join("/")))
                .await;
        }
        let by_id = |id: &str| -> Option<usize> { id.strip_prefix('r')?.parse().ok() };
        loop {
            tokio::select! {
                pattern = patterns.recv() => {
                    let Some(pattern) = pattern else { return };
                    let path = format!("/{}", pattern.join("/"));
                    subscriber.request_subscription(&format!("r{}", known.len()), &path).await;
                    known.push(pattern);
                }
                message = subscriber.next_message(Duration::from_secs(3_600)) => match message {
                    Ok(message) if message["type"] == "data" => {
                        let pattern = message["id"].as_str().and_then(by_id).and_then(|i| known.get(i));
                        if let (Some(pattern), Some(event)) = (pattern, message["event"].as_str()) {
                            api.deliver_to_pattern(pattern, &[event]);
                        }
                    }
                    Ok(message) if message["type"] == "subscribe_error" => {
                        tracing::warn!(%message, "relay's upstream subscription refused");
                    }
                    Ok(_) | Err(None) => {}
                    Err(Some(code)) => {
                        tracing::warn!(code, "relay's upstream connection ended; reconnecting");
                        break;
                    }
                },
            }
        }
    }
}
