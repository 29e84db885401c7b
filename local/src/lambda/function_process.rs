//! Runs a function binary as Lambda would: a child process with the Lambda environment
//! variables, polling a [`RuntimeApi`](crate::lambda::runtime_api::RuntimeApi). The process is killed
//! when the handle is dropped, so no test or demo leaves functions behind.

use std::path::Path;
use std::process::Stdio;
use tokio::process::{Child, Command};

/// The access key id, secret key and session token every local function gets, as Lambda gives
/// each function its role's credentials; the local Event API accepts signatures made with them.
pub const LOCAL_CREDENTIALS: (&str, &str, &str) = ("local", "local", "local");

/// [`LOCAL_CREDENTIALS`] as the SigV4 signer and checker take them.
pub fn local_credentials() -> aws_credential_types::Credentials {
    let (key, secret, token) = LOCAL_CREDENTIALS;
    aws_credential_types::Credentials::new(key, secret, Some(token.to_owned()), None, "local")
}

/// A running function process.
pub struct FunctionProcess {
    child: Child,
}

impl FunctionProcess {
    /// Starts `binary` against the Runtime API at `runtime_api` (`host:port`), with the
    /// function's own environment `env` on top of the Lambda-provided variables. Its output
    /// (CloudWatch's, in AWS) is appended to `log_file` when given, else shared with ours.
    pub fn spawn(
        binary: &Path,
        function_name: &str,
        runtime_api: &str,
        env: &[(String, String)],
        log_file: Option<&Path>,
    ) -> std::io::Result<Self> {
        let (stdout, stderr) = match log_file {
            Some(path) => {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?;
                (Stdio::from(file.try_clone()?), Stdio::from(file))
            }
            None => (Stdio::inherit(), Stdio::inherit()),
        };
        // Like Lambda, the function sees only its own configuration, not the caller's environment.
        let inherited = ["PATH", "RUST_LOG", "RUST_BACKTRACE", "TZ"]
            .into_iter()
            .filter_map(|var| std::env::var(var).ok().map(|value| (var, value)));
        let child = Command::new(binary)
            .env_clear()
            .envs(inherited)
            .env("AWS_LAMBDA_RUNTIME_API", runtime_api)
            .env("AWS_LAMBDA_FUNCTION_NAME", function_name)
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env(
                "AWS_LAMBDA_LOG_GROUP_NAME",
                format!("/aws/lambda/{function_name}"),
            )
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "local")
            .env("AWS_REGION", "local")
            .env("AWS_DEFAULT_REGION", "local")
            // Lambda hands every function its role's temporary credentials; locally they only
            // sign requests to the local stack (its Event API checks the signatures).
            .env("AWS_ACCESS_KEY_ID", LOCAL_CREDENTIALS.0)
            .env("AWS_SECRET_ACCESS_KEY", LOCAL_CREDENTIALS.1)
            .env("AWS_SESSION_TOKEN", LOCAL_CREDENTIALS.2)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(stdout)
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()?;
        Ok(Self { child })
    }

    /// Whether the process has exited (and how), without waiting.
    pub fn exit_status(&mut self) -> std::io::Result<Option<std::process::ExitStatus>> {
        self.child.try_wait()
    }

    /// The operating system's process id, while the process runs.
    pub fn id(&self) -> Option<u32> {
        self.child.id()
    }

    /// Waits for the process to exit.
    pub async fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.child.wait().await
    }

    /// Kills the process and waits for it.
    pub async fn stop(mut self) -> std::io::Result<()> {
        self.child.kill().await
    }
}

/// Why a one-off invocation of a binary failed.
#[derive(Debug, thiserror::Error)]
pub enum RunOnceError {
    /// The binary could not be started.
    #[error("could not start the function: {0}")]
    Spawn(#[from] std::io::Error),
    /// The process exited before answering (Lambda's `Runtime.ExitError`).
    #[error("function process exited before answering: {0}")]
    Exited(std::process::ExitStatus),
    /// The invocation itself failed.
    #[error(transparent)]
    Invoke(#[from] crate::lambda::runtime_api::InvokeError),
}

/// Starts `binary` under a fresh Runtime API, invokes it once with `event`, and stops it: the
/// smallest faithful "does this binary work under Lambda" check.
pub async fn invoke_binary_once(
    binary: &Path,
    function_name: &str,
    env: &[(String, String)],
    event: &[u8],
    timeout: std::time::Duration,
) -> Result<Vec<u8>, RunOnceError> {
    let api = crate::lambda::runtime_api::RuntimeApi::start(function_name).await?;
    let mut process = FunctionProcess::spawn(binary, function_name, &api.address(), env, None)?;
    let outcome = tokio::select! {
        answer = api.invoke(event, timeout) => answer.map_err(RunOnceError::from),
        exited = process.child.wait() => Err(RunOnceError::Exited(exited?)),
    };
    process.stop().await.ok();
    outcome
}
