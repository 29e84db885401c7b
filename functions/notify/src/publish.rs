//! `AppSyncEvents` delivery of one stream's push: the same `windows` frame a WebSocket viewer
//! gets, published once to the stream's channel, whatever the audience. A frame too large for
//! one event is split by window; throttled and failed publishes are retried with jittered
//! backoff until the throttle budget or the deadline runs out, a refused one (bad auth, too
//! large) is counted and logged, and nothing a publish answers can fail the batch.

use crate::event_api::{EventApi, PublishError, into_publishes};
use crate::fanout::{FanoutReport, backoff_delay};
use crate::protocol::ServerMessage;
use reactions::event_channel::{MAX_EVENT_BYTES, stream_channel};
use reactions::{StreamId, WindowStateRecord};
use std::time::Duration;
use tokio::time::Instant;

/// Where a stream's pushes are published.
#[derive(Debug, Clone)]
pub struct EventTarget {
    pub api: EventApi,
    /// The channel namespace (`APPSYNC_NAMESPACE`).
    pub namespace: String,
}

/// The events of one push: one `windows` frame, or one per window when the whole frame is
/// larger than an event may be.
pub fn push_events(stream: &StreamId, seq: i64, windows: Vec<WindowStateRecord>) -> Vec<String> {
    let frame = |windows: Vec<WindowStateRecord>| ServerMessage::Windows {
        stream: stream.clone(),
        seq,
        sent_at_ms: reactions::clock::now_ms(),
        windows,
    };
    let whole = frame(windows);
    let text = whole.to_text();
    match whole {
        ServerMessage::Windows { windows, .. }
            if text.len() > MAX_EVENT_BYTES && windows.len() > 1 =>
        {
            windows
                .into_iter()
                .map(|w| frame(vec![w]).to_text())
                .collect()
        }
        _ => vec![text],
    }
}

/// Publishes `windows` of `stream` to its channel. `posts` counts publish requests, `delivered`
/// the events AppSync took, `failed` the events it refused or that could not be sent.
pub async fn publish_push(
    stream: &StreamId,
    seq: i64,
    windows: Vec<WindowStateRecord>,
    target: &EventTarget,
    throttle_budget: Duration,
    deadline: Instant,
) -> FanoutReport {
    let report = FanoutReport {
        streams: 1,
        windows: windows.len(),
        ..FanoutReport::default()
    };
    let events = push_events(stream, seq, windows);
    publish_events(stream, events, target, throttle_budget, deadline, report).await
}

/// Publishes `events` (frames as text) to `stream`'s channel, adding to `report` what became of
/// them.
pub async fn publish_events(
    stream: &StreamId,
    events: Vec<String>,
    target: &EventTarget,
    throttle_budget: Duration,
    deadline: Instant,
    mut report: FanoutReport,
) -> FanoutReport {
    let channel = stream_channel(&target.namespace, stream);
    let (publishes, too_large) = into_publishes(events);
    if !too_large.is_empty() {
        tracing::warn!(%stream, events = too_large.len(), "frame larger than an AppSync event: not published");
        report.failed += too_large.len();
    }
    let retry_until = (Instant::now() + throttle_budget).min(deadline);
    for events in publishes {
        if Instant::now() >= deadline {
            report.deadline_missed += events.len();
            continue;
        }
        let mut attempt = 0u32;
        loop {
            report.posts += 1;
            match target.api.publish(&channel, &events).await {
                Ok(published) => {
                    report.delivered += published.successful;
                    report.failed += events.len().saturating_sub(published.successful);
                    if published.failed > 0 {
                        tracing::warn!(%stream, %channel, failed = published.failed, "AppSync refused events of a publish");
                    }
                    break;
                }
                Err(error) => {
                    attempt += 1;
                    let delay = backoff_delay(attempt, &mut rand::rng());
                    if error.is_retryable() && Instant::now() + delay <= retry_until {
                        if error == PublishError::Throttled {
                            report.throttle_retries += 1;
                        }
                        tracing::debug!(%stream, %channel, %error, "publish failed, retrying");
                        tokio::time::sleep(delay).await;
                        continue;
                    }
                    if error == PublishError::Throttled {
                        report.throttled_out += events.len();
                    } else {
                        report.failed += events.len();
                    }
                    tracing::warn!(%stream, %channel, %error, "publish not delivered");
                    break;
                }
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::fanout::tests::state;

    #[test]
    fn one_event_per_push_unless_too_large() {
        let stream = StreamId::parse("stream", "s").unwrap();
        let events = push_events(
            &stream,
            1,
            vec![state("s", 0, 2, 1), state("s", 2_000, 3, 1)],
        );
        assert_eq!(events.len(), 1);
        let frame: serde_json::Value = serde_json::from_str(&events[0]).unwrap();
        assert_eq!(frame["type"], "windows");
        assert_eq!(frame["windows"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn a_frame_too_large_for_one_event_is_split_by_window() {
        let stream = StreamId::parse("stream", "s").unwrap();
        // About 300 KB of counts over two windows: each window alone fits an event.
        let wide = |start_ms| {
            let mut state = state("s", start_ms, 1, 1);
            state.counts = (0..9_000)
                .map(|i| {
                    (
                        reactions::EmojiName::parse(&format!("emoji_{i}")).unwrap(),
                        1,
                    )
                })
                .collect();
            state
        };
        let events = push_events(&stream, 1, vec![wide(0), wide(2_000)]);
        assert_eq!(events.len(), 2);
        for (event, start) in events.iter().zip([0, 2_000]) {
            assert!(event.len() <= MAX_EVENT_BYTES, "{}", event.len());
            let frame: serde_json::Value = serde_json::from_str(event).unwrap();
            assert_eq!(frame["windows"][0]["start_ms"], start);
        }
    }
}
