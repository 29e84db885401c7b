//! AWS Lambda, as it runs the functions: after "Using the Lambda runtime API for custom
//! runtimes" ([`runtime_api`]), "Understanding the Lambda execution environment lifecycle"
//! and "Defined runtime environment variables" ([`function_process`], [`environment`]).
//!
//! This module is Lambda for one function: a pool of instances, each a function process polling
//! its own Runtime API, one invocation at a time per instance. Instances start on demand up to a
//! concurrency limit (the first invocation of an instance is its cold start) and warm ones are
//! reused first. An instance that exits or times out is killed and replaced, and its invocation
//! fails with `Runtime.ExitError` or a timeout as in Lambda. Alternatively, invocations are
//! forwarded to an external Lambda Invoke API (`cargo lambda watch`, `sam local start-lambda`).

pub mod environment;
pub mod function_process;
pub mod runtime_api;

use crate::lambda::function_process::FunctionProcess;
use crate::lambda::runtime_api::{InvokeError, RuntimeApi};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{Mutex, Semaphore};

struct Instance {
    api: RuntimeApi,
    process: FunctionProcess,
    started: std::time::Instant,
    init_recorded: bool,
}

#[derive(Default)]
struct Slot {
    instance: Mutex<Option<Instance>>,
    /// The process id of the instance, for [`FunctionPool::kill_instances`].
    pid: AtomicU32,
}

/// How the function runs.
#[derive(Debug, Clone)]
pub enum Runner {
    /// Child processes of this binary against local Runtime APIs.
    Processes {
        binary: PathBuf,
        environment: Vec<(String, String)>,
        /// Where the processes' output goes (else this process's stdout and stderr).
        log_file: Option<PathBuf>,
    },
    /// `POST {endpoint}/2015-03-31/functions/{name}/invocations`.
    InvokeApi { endpoint: String, name: String },
}

/// Counters for tests and the stack's summary.
#[derive(Debug, Default)]
pub struct PoolStats {
    pub invocations: AtomicU64,
    pub errors: AtomicU64,
    /// Invocations that ran into the function's timeout (Lambda's `Task timed out`).
    pub timeouts: AtomicU64,
    pub cold_starts: AtomicU64,
    pub in_flight: AtomicUsize,
    /// The longest init seen: process start to its first poll of the Runtime API, in µs.
    pub max_init_us: AtomicU64,
    /// The largest peak resident set (VmHWM) seen of any instance, in KiB.
    pub peak_rss_kib: AtomicU64,
    /// Invocation durations added up, each rounded up to the millisecond as Lambda bills them
    /// (a cold start's init included, as Lambda bills it for custom runtimes).
    pub billed_ms: AtomicU64,
}

/// True for Lambda's error object: `errorMessage` with at most `errorType`, `stackTrace` and
/// `requestId` beside it.
fn is_error_object(body: &[u8]) -> bool {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(map)) => {
            map.contains_key("errorMessage")
                && map.keys().all(|k| {
                    ["errorMessage", "errorType", "stackTrace", "requestId"].contains(&k.as_str())
                })
        }
        _ => false,
    }
}

/// VmHWM (peak resident set) of a process in KiB, from /proc.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// One function's instances.
pub struct FunctionPool {
    name: String,
    runner: Runner,
    timeout: Duration,
    slots: Vec<Slot>,
    free: std::sync::Mutex<Vec<usize>>,
    permits: Semaphore,
    http: Client<HttpConnector, Full<Bytes>>,
    pub stats: PoolStats,
}

impl FunctionPool {
    /// A pool for function `name` with at most `concurrency` instances, each invocation limited
    /// to `timeout`. Nothing starts until the first invocation.
    pub fn new(name: &str, runner: Runner, timeout: Duration, concurrency: usize) -> Arc<Self> {
        let concurrency = concurrency.max(1);
        Arc::new(Self {
            name: name.to_owned(),
            runner,
            timeout,
            slots: (0..concurrency).map(|_| Slot::default()).collect(),
            // Popped from the end: slot 0 first, so warm instances are reused before new ones.
            free: std::sync::Mutex::new((0..concurrency).rev().collect()),
            permits: Semaphore::new(concurrency),
            http: Client::builder(TokioExecutor::new()).build_http(),
            stats: PoolStats::default(),
        })
    }

    /// The function's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Invokes the function with `event` and returns its response payload.
    pub async fn invoke(&self, event: &[u8]) -> Result<Vec<u8>, InvokeError> {
        self.stats.invocations.fetch_add(1, Ordering::Relaxed);
        self.stats.in_flight.fetch_add(1, Ordering::Relaxed);
        let result = match &self.runner {
            Runner::Processes { .. } => self.invoke_instance(event).await,
            Runner::InvokeApi { endpoint, name } => self.invoke_remote(endpoint, name, event).await,
        };
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        if let Err(error) = &result {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            if matches!(error, InvokeError::Timeout(_)) {
                self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
            }
            tracing::warn!(function = self.name, %error, "invocation failed");
        }
        result
    }

    async fn invoke_instance(&self, event: &[u8]) -> Result<Vec<u8>, InvokeError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| InvokeError::Stopped)?;
        let index = self
            .free
            .lock()
            .map_err(|_| InvokeError::Stopped)?
            .pop()
            .ok_or(InvokeError::Stopped)?;
        let slot = &self.slots[index];
        let result = {
            let mut guard = slot.instance.lock().await;
            self.invoke_in(slot, &mut guard, event).await
        };
        if let Ok(mut free) = self.free.lock() {
            free.push(index);
        }
        result
    }

    async fn start_instance(&self) -> Result<Instance, InvokeError> {
        let Runner::Processes {
            binary,
            environment,
            log_file,
        } = &self.runner
        else {
            return Err(InvokeError::Stopped);
        };
        let api = RuntimeApi::start(&self.name)
            .await
            .map_err(|e| InvokeError::Spawn(e.to_string()))?;
        let process = FunctionProcess::spawn(
            binary,
            &self.name,
            &api.address(),
            environment,
            log_file.as_deref(),
        )
        .map_err(|e| InvokeError::Spawn(format!("{}: {e}", binary.display())))?;
        self.stats.cold_starts.fetch_add(1, Ordering::Relaxed);
        Ok(Instance {
            api,
            process,
            started: std::time::Instant::now(),
            init_recorded: false,
        })
    }

    async fn invoke_in(
        &self,
        slot: &Slot,
        guard: &mut Option<Instance>,
        event: &[u8],
    ) -> Result<Vec<u8>, InvokeError> {
        let exited = match guard.as_mut() {
            Some(instance) => !matches!(instance.process.exit_status(), Ok(None)),
            None => true,
        };
        if exited {
            *guard = None;
            let instance = self.start_instance().await?;
            slot.pid
                .store(instance.process.id().unwrap_or(0), Ordering::Relaxed);
            *guard = Some(instance);
        }
        let Some(instance) = guard.as_mut() else {
            return Err(InvokeError::Stopped);
        };
        let invoked = std::time::Instant::now();
        let outcome = tokio::select! {
            answer = instance.api.invoke(event, self.timeout) => answer,
            status = instance.process.wait() => Err(InvokeError::Exited(match status {
                Ok(status) => status.to_string(),
                Err(error) => error.to_string(),
            })),
        };
        let billed_ms = invoked.elapsed().as_micros().div_ceil(1_000) as u64;
        self.stats.billed_ms.fetch_add(billed_ms, Ordering::Relaxed);
        if !instance.init_recorded
            && let Some(polled) = instance.api.first_poll()
        {
            instance.init_recorded = true;
            let init = polled
                .saturating_duration_since(instance.started)
                .as_micros() as u64;
            self.stats.max_init_us.fetch_max(init, Ordering::Relaxed);
        }
        // /proc reads are cheap, but not free at thousands of invocations a second.
        if self.stats.invocations.load(Ordering::Relaxed) % 32 == 1 {
            self.sample_memory();
        }
        if matches!(
            outcome,
            Err(InvokeError::Exited(_) | InvokeError::Timeout(_) | InvokeError::Init { .. })
        ) {
            // Like Lambda, a sandbox that crashed, timed out or failed its init is discarded.
            if let Some(instance) = guard.take() {
                instance.process.stop().await.ok();
            }
            slot.pid.store(0, Ordering::Relaxed);
        }
        outcome
    }

    async fn invoke_remote(
        &self,
        endpoint: &str,
        name: &str,
        event: &[u8],
    ) -> Result<Vec<u8>, InvokeError> {
        let url = format!(
            "{}/2015-03-31/functions/{name}/invocations",
            endpoint.trim_end_matches('/')
        );
        let request = hyper::Request::post(&url)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::copy_from_slice(event)))
            .map_err(|e| InvokeError::Spawn(format!("{url}: {e}")))?;
        let response = tokio::time::timeout(self.timeout, self.http.request(request))
            .await
            .map_err(|_| InvokeError::Timeout(self.timeout))?
            .map_err(|e| InvokeError::Spawn(format!("{url}: {e}")))?;
        let mut function_error = response.headers().contains_key("x-amz-function-error");
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| InvokeError::Spawn(format!("{url}: {e}")))?
            .to_bytes()
            .to_vec();
        // The Runtime Interface Emulator answers a function error with 200 and no
        // X-Amz-Function-Error header; its body is still Lambda's error object.
        function_error |= is_error_object(&body);
        if function_error || !status.is_success() {
            let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let text = |field: &str| parsed[field].as_str().unwrap_or("unknown").to_owned();
            return Err(InvokeError::Function {
                error_type: text("errorType"),
                error_message: if status.is_success() {
                    text("errorMessage")
                } else {
                    format!("HTTP {status}: {}", String::from_utf8_lossy(&body))
                },
            });
        }
        Ok(body)
    }

    /// Records the peak resident set of the running instances.
    pub fn sample_memory(&self) {
        for slot in &self.slots {
            let pid = slot.pid.load(Ordering::Relaxed);
            if pid != 0
                && let Some(kib) = peak_rss_kib(pid)
            {
                self.stats.peak_rss_kib.fetch_max(kib, Ordering::Relaxed);
            }
        }
    }

    /// Kills every running instance with SIGKILL, as a crash would: an invocation in flight
    /// fails with `Runtime.ExitError` and the next one cold-starts a new instance.
    pub fn kill_instances(&self) -> usize {
        let mut killed = 0;
        for slot in &self.slots {
            let pid = slot.pid.load(Ordering::Relaxed);
            if pid != 0
                && std::process::Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status()
                    .is_ok_and(|s| s.success())
            {
                killed += 1;
            }
        }
        killed
    }

    /// Stops every instance.
    pub async fn shutdown(&self) {
        for slot in &self.slots {
            if let Some(instance) = slot.instance.lock().await.take() {
                instance.process.stop().await.ok();
            }
        }
    }
}
