//! Listeners: WebSocket clients watching a stream as browsers do, over the API Gateway WebSocket
//! API or as subscribers of the stream's AppSync Events channel. Each keeps the largest total
//! per window and records when the cumulative count over the stream's windows rises. A connect
//! refused with 429 (API Gateway admits 500 new connections per second per account, AppSync
//! Events 2,000) is tried again after a jittered backoff, as the browser client does.

use crate::repair::{RepairClock, fetch_history};
use crate::report::Seen;
use emostream_local::event_api::client::{
    ConnectError, EventCredential, Subscriber, data_event, small_reads,
};
use futures::SinkExt;
use futures::StreamExt;
use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rand::Rng;
use reactions::StreamId;
use reactions::event_channel::stream_channel;
use serde::Deserialize;
use std::borrow::Cow;
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
    /// For each push that said when notify sent it (`sent_at_ms`), how long it took to arrive.
    pub delivery_ms: Vec<f64>,
    /// Pushes found missing (a push number skipped), and the repairs made for them.
    pub gaps: u64,
    pub repairs: u64,
    /// States of a window with a larger total than a `final` state of it seen before: a
    /// window that grew after it was published final.
    pub grown_after_final: u64,
    /// Times the connection closed under the listener and it connected again.
    pub reconnects: u64,
}

/// How often the page pings (`KEEPALIVE_MS` in web/app.js):
/// API Gateway closes a connection after 10 minutes without a message from the client
/// (<https://docs.aws.amazon.com/apigateway/latest/developerguide/limits.html>, "Idle Connection
/// Timeout for WebSocket APIs"), and pushes to it do not count.
pub const PAGE_KEEPALIVE: Duration = Duration::from_secs(5 * 60);

/// How long a connection must have lived for its close to restart the backoff.
const LIVED: Duration = Duration::from_secs(30);

/// How long a listener's own message may take to go out before it is given up.
const SEND_WITHIN: Duration = Duration::from_secs(5);

/// Sends a `sync` when the repair clock wants one and allows it; one that does not go out is
/// wanted again.
async fn sync_if_due(
    socket: &mut tokio_tungstenite::WebSocketStream<MaybeTlsStream<TcpStream>>,
    repair: &mut RepairClock,
) {
    if repair.take(Instant::now()) {
        let sync = Message::text(r#"{"action":"sync"}"#);
        let sent = tokio::time::timeout(SEND_WITHIN, socket.send(sync)).await;
        if !matches!(sent, Ok(Ok(()))) {
            repair.refused();
        }
    }
}

/// Connects a closed listener again, until it is in or the run stops. `quick_closes` counts
/// the connections in a row that closed within [`LIVED`]: the pause before the attempt grows
/// with it (and with failed attempts), so a server that closes every connection at once is
/// not hammered.
async fn reconnect(
    url: &str,
    quick_closes: u64,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> Option<tokio_tungstenite::WebSocketStream<MaybeTlsStream<TcpStream>>> {
    for attempt in quick_closes.. {
        if attempt > 0 {
            tokio::select! {
                () = connect_backoff(attempt) => {}
                _ = stop.changed() => return None,
            }
        }
        if *stop.borrow() {
            return None;
        }
        let give_up = Instant::now() + Duration::from_secs(30);
        tokio::select! {
            connected = connect_throttled(url, give_up) => {
                if let Ok((socket, _)) = connected {
                    return Some(socket);
                }
            }
            _ = stop.changed() => return None,
        }
    }
    None
}

/// Where listeners get live updates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveUpdates {
    /// The WebSocket API's URL (without `?stream=`), the viewer token its connects carry
    /// when viewer identity is on, and how often a listener pings ([`PAGE_KEEPALIVE`], as the
    /// page does).
    WebSocketApi {
        url: String,
        token: Option<String>,
        keepalive: Duration,
    },
    /// An AppSync Events API: its real-time URL, HTTP host, what subscribers authorize with
    /// (the API key, or a viewer token when viewer identity is on) and namespace.
    AppSyncEvents {
        realtime_url: String,
        http_host: String,
        credential: EventCredential,
        namespace: String,
    },
}

/// Keeps the largest total per window of one stream and records when the cumulative count
/// rises.
struct Recorder {
    stream_id: String,
    started: Instant,
    shown: Arc<AtomicU64>,
    windows: HashMap<i64, u64>,
    /// The total of each window's first `final` state seen.
    finals: HashMap<i64, u64>,
    cumulative: u64,
    observed: Observed,
    repair: RepairClock,
}

/// What a listener reads of a push: its stream, when notify sent it and each window's total.
/// Every other field (counts per emoji, swarm sizes) is skipped without being built.
#[derive(Deserialize)]
struct Push<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    stream: Cow<'a, str>,
    /// The stream's push number (a `windows` push of a server with a push schedule).
    seq: Option<i64>,
    /// An `error` frame's code (`sync_too_soon` answers a repair sent too early).
    #[serde(default, borrow)]
    code: Cow<'a, str>,
    sent_at_ms: Option<i64>,
    #[serde(default)]
    windows: Vec<WindowTotal>,
    /// An older server's single `window` frame carries its window at the top level.
    start_ms: Option<i64>,
    total: Option<u64>,
}

#[derive(Deserialize)]
struct WindowTotal {
    start_ms: Option<i64>,
    total: Option<u64>,
    #[serde(default, rename = "final")]
    is_final: bool,
}

impl Recorder {
    /// Takes one frame: a `windows` push (or an older server's single `window`) of the stream,
    /// or a `snapshot` answering a repair's `sync`.
    fn record(&mut self, frame: &str) {
        let Ok(push) = serde_json::from_str::<Push<'_>>(frame) else {
            return;
        };
        if push.stream != self.stream_id.as_str() {
            return;
        }
        let states = match push.kind.as_ref() {
            "windows" => push.windows,
            "window" => vec![WindowTotal {
                start_ms: push.start_ms,
                total: push.total,
                is_final: false,
            }],
            "snapshot" => {
                self.take_states(push.windows);
                return;
            }
            "error" if push.code == "sync_too_soon" => {
                self.repair.refused();
                return;
            }
            _ => return,
        };
        self.repair.saw_push(push.seq);
        self.observed.updates += 1;
        if let Some(sent_at_ms) = push.sent_at_ms {
            let now_ms = reactions::clock::now_ms();
            self.observed
                .delivery_ms
                .push(now_ms.saturating_sub(sent_at_ms) as f64);
        }
        self.take_states(states);
    }

    /// Takes the stored windows a repair read over HTTP (`{"windows":[…]}`).
    fn record_history(&mut self, body: &str) {
        #[derive(Deserialize)]
        struct History {
            #[serde(default)]
            windows: Vec<WindowTotal>,
        }
        if let Ok(history) = serde_json::from_str::<History>(body) {
            self.take_states(history.windows);
        }
    }

    fn take_states(&mut self, states: Vec<WindowTotal>) {
        for state in states {
            let (Some(start), Some(total)) = (state.start_ms, state.total) else {
                continue;
            };
            match self.finals.get(&start) {
                Some(&final_total) if total > final_total => self.observed.grown_after_final += 1,
                None if state.is_final => {
                    self.finals.insert(start, total);
                }
                _ => {}
            }
            let kept = self.windows.entry(start).or_insert(0);
            if total > *kept {
                self.cumulative += total - *kept;
                *kept = total;
                self.shown.store(self.cumulative, Ordering::Relaxed);
                self.observed.seen.push((
                    self.started.elapsed().as_secs_f64() * 1_000.0,
                    self.cumulative,
                ));
            }
        }
    }
}

impl Recorder {
    /// What the listener observed, with its repairs.
    fn finish(mut self) -> Observed {
        self.observed.gaps = self.repair.gaps;
        self.observed.repairs = self.repair.repairs;
        self.observed
    }
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Full jitter up to a cap growing from 100 ms to 2 s, for the `attempt`th throttled connect.
async fn connect_backoff(attempt: u64) {
    let cap_ms = (100u64 << attempt.min(5)).min(2_000);
    let delay = rand::rng().random_range(1..=cap_ms);
    tokio::time::sleep(Duration::from_millis(delay)).await;
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
        match tokio_tungstenite::connect_async_with_config(url, Some(small_reads()), false).await {
            Ok((socket, _)) => return Ok((socket, throttled)),
            Err(WsError::Http(response))
                if response.status() == 429 && Instant::now() < give_up =>
            {
                throttled += 1;
                connect_backoff(throttled).await;
            }
            Err(error) => return Err(format!("WebSocket {url}: {error}")),
        }
    }
}

/// Connects an AppSync Events subscriber to `stream_id`'s channel, trying again while connects
/// are throttled (429) until `give_up`.
async fn subscribe_throttled(
    live: &LiveUpdates,
    stream_id: &str,
    give_up: Instant,
) -> Result<(Subscriber, u64), String> {
    let LiveUpdates::AppSyncEvents {
        realtime_url,
        http_host,
        credential,
        namespace,
    } = live
    else {
        return Err("not an AppSync Events API".into());
    };
    let stream = StreamId::parse("stream", stream_id).map_err(|e| e.to_string())?;
    let channel = stream_channel(namespace, &stream);
    let timeout = Duration::from_secs(60);
    let mut throttled = 0u64;
    loop {
        match Subscriber::connect_with(realtime_url, http_host, credential, timeout).await {
            Ok(mut subscriber) => {
                let answer = subscriber
                    .subscribe("listener", &channel, timeout)
                    .await
                    .map_err(|code| {
                        format!("{realtime_url}: closed while subscribing ({code:?})")
                    })?;
                if answer["type"] != "subscribe_success" {
                    return Err(format!("{channel}: {answer}"));
                }
                return Ok((subscriber, throttled));
            }
            Err(ConnectError::Refused(429)) if Instant::now() < give_up => {
                throttled += 1;
                connect_backoff(throttled).await;
            }
            Err(error) => return Err(format!("{realtime_url}: {error}")),
        }
    }
}

/// Connects a listener to `stream_id`'s live updates; returns once connected (and subscribed).
/// A missed push is repaired as the web page does it (see [`crate::repair`]): with a `sync`,
/// or in AppSyncEvents delivery by reading `history_url` (the stream's stored windows).
pub async fn listen(
    live: &LiveUpdates,
    stream: usize,
    stream_id: String,
    history_url: String,
    started: Instant,
    give_up: Instant,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<Listener, String> {
    let shown = Arc::new(AtomicU64::new(0));
    let mut recorder = Recorder {
        stream_id: stream_id.clone(),
        started,
        shown: Arc::clone(&shown),
        windows: HashMap::new(),
        finals: HashMap::new(),
        cumulative: 0,
        observed: Observed {
            stream,
            ..Observed::default()
        },
        repair: RepairClock::default(),
    };
    let (task, throttled_connects) = match live {
        LiveUpdates::WebSocketApi {
            url,
            token,
            keepalive,
        } => {
            let keepalive = *keepalive;
            let url = match token {
                Some(token) => format!("{url}?stream={stream_id}&token={token}"),
                None => format!("{url}?stream={stream_id}"),
            };
            let (mut socket, throttled) = connect_throttled(&url, give_up).await?;
            let task = tokio::spawn(async move {
                let mut ping_at = tokio::time::Instant::now() + keepalive;
                let (mut connected_at, mut quick_closes) = (Instant::now(), 0u64);
                loop {
                    let repair_at = recorder.repair.due().map(tokio::time::Instant::from_std);
                    let message = tokio::select! {
                        message = socket.next() => message,
                        _ = stop.changed() => break,
                        () = sleep_until_some(repair_at) => {
                            sync_if_due(&mut socket, &mut recorder.repair).await;
                            continue;
                        }
                        () = tokio::time::sleep_until(ping_at) => {
                            ping_at = tokio::time::Instant::now() + keepalive;
                            let ping = Message::text(r#"{"action":"ping"}"#);
                            tokio::time::timeout(SEND_WITHIN, socket.send(ping)).await.ok();
                            continue;
                        }
                    };
                    match message {
                        Some(Ok(Message::Text(text))) => recorder.record(&text),
                        Some(Ok(_)) => {}
                        None | Some(Err(_)) => {
                            // Closed (API Gateway's two-hour limit, a fault on the way): like
                            // the page, connect again and catch up with a `sync`.
                            quick_closes = match connected_at.elapsed() < LIVED {
                                true => quick_closes + 1,
                                false => 0,
                            };
                            let Some(again) = reconnect(&url, quick_closes, &mut stop).await else {
                                break;
                            };
                            socket = again;
                            connected_at = Instant::now();
                            recorder.observed.reconnects += 1;
                            recorder.repair.reconnected();
                            ping_at = tokio::time::Instant::now() + keepalive;
                            sync_if_due(&mut socket, &mut recorder.repair).await;
                        }
                    }
                }
                recorder.finish()
            });
            (task, throttled)
        }
        LiveUpdates::AppSyncEvents { .. } => {
            let (mut subscriber, throttled) =
                subscribe_throttled(live, &stream_id, give_up).await?;
            let task = tokio::spawn(async move {
                let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
                loop {
                    let repair_at = recorder.repair.due().map(tokio::time::Instant::from_std);
                    let message = tokio::select! {
                        message = subscriber.next_raw(Duration::from_secs(3_600)) => message,
                        _ = stop.changed() => break,
                        () = sleep_until_some(repair_at) => {
                            if recorder.repair.take(Instant::now()) {
                                let read = tokio::time::timeout(
                                    Duration::from_secs(5),
                                    fetch_history(&client, &history_url),
                                );
                                match read.await {
                                    Ok(Some(body)) => recorder.record_history(&body),
                                    _ => recorder.repair.refused(),
                                }
                            }
                            continue;
                        }
                    };
                    match message {
                        Ok(message) => {
                            if let Some(event) = data_event(&message) {
                                recorder.record(&event);
                            }
                        }
                        Err(None) => {}
                        Err(Some(_)) => break,
                    }
                }
                recorder.finish()
            });
            (task, throttled)
        }
    };
    Ok(Listener {
        stream,
        shown,
        throttled_connects,
        task,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorder_of(stream: &str) -> Recorder {
        Recorder {
            stream_id: stream.to_owned(),
            started: Instant::now(),
            shown: Arc::new(AtomicU64::new(0)),
            windows: HashMap::new(),
            finals: HashMap::new(),
            cumulative: 0,
            observed: Observed::default(),
            repair: RepairClock::default(),
        }
    }

    #[test]
    fn a_push_raises_the_count_by_each_windows_growth_and_keeps_its_send_time() {
        let mut recorder = recorder_of("final-1");
        let push = r#"{"type":"windows","stream":"final-1","sent_at_ms":1000,"windows":[
            {"v":1,"stream":"final-1","start_ms":0,"end_ms":2000,"counts":{"fire":3},"total":3,
             "swarm":{"fire":1},"final":false},
            {"v":1,"stream":"final-1","start_ms":2000,"end_ms":4000,"counts":{},"total":0,
             "swarm":{},"final":false}]}"#;
        recorder.record(push);
        recorder.record(&push.replace(r#""total":3"#, r#""total":5"#));
        // A stale state (smaller total) changes nothing.
        recorder.record(push);
        assert_eq!(recorder.cumulative, 5);
        assert_eq!(recorder.shown.load(Ordering::Relaxed), 5);
        assert_eq!(recorder.observed.updates, 3);
        assert_eq!(recorder.observed.delivery_ms.len(), 3);
        let seen: Vec<u64> = recorder.observed.seen.iter().map(|(_, n)| *n).collect();
        assert_eq!(seen, [3, 5]);
    }

    #[test]
    fn a_window_that_grows_after_its_final_state_is_counted() {
        let mut recorder = recorder_of("s");
        let state = |total: u64, is_final: bool| {
            format!(
                r#"{{"type":"windows","stream":"s","windows":[{{"start_ms":0,"total":{total},"final":{is_final}}}]}}"#
            )
        };
        recorder.record(&state(3, false));
        recorder.record(&state(5, true));
        // The same final state again, and an older one, are not growth.
        recorder.record(&state(5, true));
        recorder.record(&state(3, false));
        assert_eq!(recorder.observed.grown_after_final, 0);
        recorder.record(&state(6, false));
        recorder.record(&state(7, true));
        assert_eq!(recorder.observed.grown_after_final, 2);
    }

    #[test]
    fn frames_of_other_streams_other_types_and_broken_text_are_ignored() {
        let mut recorder = recorder_of("a");
        recorder.record(r#"{"type":"windows","stream":"b","windows":[{"start_ms":0,"total":9}]}"#);
        recorder.record(r#"{"type":"pong","at_ms":5}"#);
        recorder.record("not json");
        assert_eq!(recorder.observed.updates, 0);
        // An older server's single window, and a stream id that needs escaping.
        let mut quoted = recorder_of("a\"b");
        quoted.record(r#"{"type":"window","stream":"a\"b","start_ms":0,"total":4}"#);
        assert_eq!(quoted.cumulative, 4);
    }
}
