//! A Lambda Runtime API server (the `/2018-06-01/runtime/...` endpoints a function's runtime
//! client polls). It lets the local stack and the tests invoke the real function binaries the
//! same way Lambda does: one invocation at a time per process, responses and errors posted back.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{Mutex, mpsc, oneshot};

/// How an invocation ended, other than with a response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvokeError {
    /// The function posted an error for this invocation.
    #[error("function error {error_type}: {error_message}")]
    Function {
        error_type: String,
        error_message: String,
    },
    /// The function reported an initialisation error.
    #[error("function init error {error_type}: {error_message}")]
    Init {
        error_type: String,
        error_message: String,
    },
    /// No answer within the function's timeout.
    #[error("invocation timed out after {0:?}")]
    Timeout(Duration),
    /// The server was shut down.
    #[error("runtime API stopped")]
    Stopped,
    /// The function process exited during the invocation (Lambda's `Runtime.ExitError`).
    #[error("Runtime.ExitError: the function process exited ({0})")]
    Exited(String),
    /// The function process could not be started.
    #[error("could not start the function process: {0}")]
    Spawn(String),
}

struct Pending {
    request_id: String,
    event: Vec<u8>,
    deadline_ms: u128,
}

type Outcome = Result<Vec<u8>, InvokeError>;

struct Shared {
    queue: Mutex<mpsc::Receiver<Pending>>,
    waiting: Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
    init_error: Mutex<Option<InvokeError>>,
    function_arn: String,
    /// When the function first asked for an invocation: the end of its init phase.
    first_poll: std::sync::OnceLock<std::time::Instant>,
}

/// A running Runtime API server.
pub struct RuntimeApi {
    addr: SocketAddr,
    sender: mpsc::Sender<Pending>,
    shared: Arc<Shared>,
    next_id: AtomicU64,
    server: tokio::task::JoinHandle<()>,
}

fn error_from(body: &[u8], init: bool) -> InvokeError {
    let parsed: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let text = |field: &str| {
        parsed
            .get(field)
            .and_then(serde_json::Value::as_str)
            .unwrap_or("unknown")
            .to_owned()
    };
    let (error_type, error_message) = (text("errorType"), text("errorMessage"));
    if init {
        InvokeError::Init {
            error_type,
            error_message,
        }
    } else {
        InvokeError::Function {
            error_type,
            error_message,
        }
    }
}

async fn next_invocation(State(shared): State<Arc<Shared>>) -> Response {
    shared.first_poll.get_or_init(std::time::Instant::now);
    let next = shared.queue.lock().await.recv().await;
    let Some(pending) = next else {
        return StatusCode::GONE.into_response();
    };
    let mut headers = HeaderMap::new();
    let mut put = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    };
    put("lambda-runtime-aws-request-id", pending.request_id);
    put(
        "lambda-runtime-deadline-ms",
        pending.deadline_ms.to_string(),
    );
    put(
        "lambda-runtime-invoked-function-arn",
        shared.function_arn.clone(),
    );
    put(
        "lambda-runtime-trace-id",
        "Root=1-00000000-000000000000000000000000;Sampled=0".to_owned(),
    );
    put("content-type", "application/json".to_owned());
    (StatusCode::OK, headers, pending.event).into_response()
}

async fn complete(shared: &Shared, request_id: &str, outcome: Outcome) -> StatusCode {
    match shared.waiting.lock().await.remove(request_id) {
        Some(sender) => {
            let _ = sender.send(outcome);
            StatusCode::ACCEPTED
        }
        None => StatusCode::BAD_REQUEST,
    }
}

async fn invocation_response(
    State(shared): State<Arc<Shared>>,
    Path(request_id): Path<String>,
    body: Bytes,
) -> StatusCode {
    complete(&shared, &request_id, Ok(body.to_vec())).await
}

async fn invocation_error(
    State(shared): State<Arc<Shared>>,
    Path(request_id): Path<String>,
    body: Bytes,
) -> StatusCode {
    complete(&shared, &request_id, Err(error_from(&body, false))).await
}

async fn init_error(State(shared): State<Arc<Shared>>, body: Bytes) -> StatusCode {
    let error = error_from(&body, true);
    tracing::warn!(%error, "function reported an init error");
    *shared.init_error.lock().await = Some(error.clone());
    // Every waiting invocation fails with it, as Lambda does.
    for (_, sender) in shared.waiting.lock().await.drain() {
        let _ = sender.send(Err(error.clone()));
    }
    StatusCode::ACCEPTED
}

impl RuntimeApi {
    /// Starts a server on a free loopback port for a function named `function_name`.
    pub async fn start(function_name: &str) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (sender, receiver) = mpsc::channel(1024);
        let shared = Arc::new(Shared {
            queue: Mutex::new(receiver),
            waiting: Mutex::new(HashMap::new()),
            init_error: Mutex::new(None),
            first_poll: std::sync::OnceLock::new(),
            function_arn: format!("arn:aws:lambda:local:000000000000:function:{function_name}"),
        });
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next_invocation))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(invocation_response),
            )
            .route(
                "/2018-06-01/runtime/invocation/{id}/error",
                post(invocation_error),
            )
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(Arc::clone(&shared));
        let server = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::error!(%error, "runtime API server stopped");
            }
        });
        Ok(Self {
            addr,
            sender,
            shared,
            next_id: AtomicU64::new(1),
            server,
        })
    }

    /// When the function first polled for an invocation (its init ended), if it has.
    pub fn first_poll(&self) -> Option<std::time::Instant> {
        self.shared.first_poll.get().copied()
    }

    /// `host:port`, the value of `AWS_LAMBDA_RUNTIME_API` for the function process.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Invokes the function with `event` and waits for its response or error, up to `timeout`.
    pub async fn invoke(&self, event: &[u8], timeout: Duration) -> Result<Vec<u8>, InvokeError> {
        if let Some(error) = self.shared.init_error.lock().await.clone() {
            return Err(error);
        }
        let request_id = format!("local-{:08}", self.next_id.fetch_add(1, Ordering::Relaxed));
        let deadline_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| (d + timeout).as_millis())
            .unwrap_or(0);
        let (done, outcome) = oneshot::channel();
        self.shared
            .waiting
            .lock()
            .await
            .insert(request_id.clone(), done);
        let pending = Pending {
            request_id: request_id.clone(),
            event: event.to_vec(),
            deadline_ms,
        };
        if self.sender.send(pending).await.is_err() {
            return Err(InvokeError::Stopped);
        }
        match tokio::time::timeout(timeout, outcome).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(InvokeError::Stopped),
            Err(_) => {
                self.shared.waiting.lock().await.remove(&request_id);
                Err(InvokeError::Timeout(timeout))
            }
        }
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}
