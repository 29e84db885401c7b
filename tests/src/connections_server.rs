//! A stand-in for API Gateway's `@connections` management API, for notify's tests and
//! benchmark: it records every post, and answers 410 (`GoneException`) for connections marked
//! gone and 429 (`LimitExceededException`) a chosen number of times for throttled ones, like
//! API Gateway does. An optional latency per post makes the sender's concurrency observable.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// One post that was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedPost {
    pub connection_id: String,
    pub body: Vec<u8>,
    /// When it was answered.
    pub at: std::time::Instant,
}

#[derive(Default)]
struct Behaviour {
    posts: Vec<RecordedPost>,
    gone: HashSet<String>,
    throttles_left: HashMap<String, u32>,
    throttled_answers: u64,
    gone_answers: u64,
    latency: Duration,
    in_flight: usize,
    max_in_flight: usize,
}

/// A running test `@connections` server; stops when dropped.
pub struct ConnectionsServer {
    address: std::net::SocketAddr,
    behaviour: Arc<Mutex<Behaviour>>,
    task: tokio::task::JoinHandle<()>,
}

fn error(status: StatusCode, kind: &'static str, message: &'static str) -> Response {
    (
        status,
        [
            ("x-amzn-ErrorType", kind),
            ("content-type", "application/json"),
        ],
        format!(r#"{{"message":"{message}"}}"#),
    )
        .into_response()
}

async fn post_to_connection(
    State(behaviour): State<Arc<Mutex<Behaviour>>>,
    Path((_stage, connection_id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let latency = {
        let mut b = lock(&behaviour);
        b.in_flight += 1;
        b.max_in_flight = b.max_in_flight.max(b.in_flight);
        b.latency
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let mut b = lock(&behaviour);
    b.in_flight -= 1;
    if b.gone.contains(&connection_id) {
        b.gone_answers += 1;
        return error(StatusCode::GONE, "GoneException", "Gone");
    }
    if let Some(left) = b.throttles_left.get_mut(&connection_id)
        && *left > 0
    {
        *left -= 1;
        b.throttled_answers += 1;
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            "LimitExceededException",
            "Rate exceeded",
        );
    }
    b.posts.push(RecordedPost {
        connection_id,
        body: body.to_vec(),
        at: std::time::Instant::now(),
    });
    StatusCode::OK.into_response()
}

fn lock(behaviour: &Mutex<Behaviour>) -> MutexGuard<'_, Behaviour> {
    // A test that panicked while holding the lock has failed already; keep serving.
    behaviour
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ConnectionsServer {
    /// Starts a server on a free loopback port.
    pub async fn start() -> Self {
        let behaviour = Arc::new(Mutex::new(Behaviour::default()));
        let app = Router::new()
            .route("/{stage}/@connections/{id}", post(post_to_connection))
            .with_state(Arc::clone(&behaviour));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let address = listener.local_addr().expect("local address");
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.ok();
        });
        Self {
            address,
            behaviour,
            task,
        }
    }

    /// The management endpoint to configure notify with (stage `test`).
    pub fn endpoint(&self) -> String {
        format!("http://{}/test", self.address)
    }

    /// From now on, answer 410 for `connection_id`.
    pub fn mark_gone(&self, connection_id: &str) {
        lock(&self.behaviour).gone.insert(connection_id.to_owned());
    }

    /// Answer 429 for the next `times` posts to `connection_id`.
    pub fn throttle(&self, connection_id: &str, times: u32) {
        lock(&self.behaviour)
            .throttles_left
            .insert(connection_id.to_owned(), times);
    }

    /// Hold every post this long before answering.
    pub fn set_latency(&self, latency: Duration) {
        lock(&self.behaviour).latency = latency;
    }

    /// Every accepted post so far, in arrival order.
    pub fn posts(&self) -> Vec<RecordedPost> {
        lock(&self.behaviour).posts.clone()
    }

    /// The accepted posts to one connection, parsed as JSON.
    pub fn frames_to(&self, connection_id: &str) -> Vec<serde_json::Value> {
        lock(&self.behaviour)
            .posts
            .iter()
            .filter(|p| p.connection_id == connection_id)
            .map(|p| serde_json::from_slice(&p.body).expect("posts are JSON"))
            .collect()
    }

    /// How many posts were answered 429 and 410 so far.
    pub fn refusals(&self) -> (u64, u64) {
        let b = lock(&self.behaviour);
        (b.throttled_answers, b.gone_answers)
    }

    /// The most posts that were being handled at once.
    pub fn max_in_flight(&self) -> usize {
        lock(&self.behaviour).max_in_flight
    }

    /// Forgets the recorded posts (the gone and throttled marks stay).
    pub fn clear_posts(&self) {
        let mut b = lock(&self.behaviour);
        b.posts.clear();
        b.max_in_flight = 0;
    }
}

impl Drop for ConnectionsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
