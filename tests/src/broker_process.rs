//! A private Kafka-wire broker that one test owns and can stop and restart on the same port and
//! data directory: for proving behaviour while the broker is down and after it returns.

use crate::patience::PATIENCE;
use crate::repo_root;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A broker process under the test's control. Stopped (and its data deleted) on drop.
pub struct BrokerProcess {
    binary: PathBuf,
    port: u16,
    data_dir: PathBuf,
    child: Option<Child>,
}

fn noida_binary() -> PathBuf {
    let output = Command::new(repo_root().join("local/deps.sh"))
        .arg("paths")
        .output()
        .expect("run local/deps.sh paths");
    assert!(
        output.status.success(),
        "servers are not installed: run local/deps.sh"
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("NOIDA_BIN="))
        .map(PathBuf::from)
        .expect("deps.sh prints NOIDA_BIN")
}

impl BrokerProcess {
    /// Starts a broker on a free loopback port and waits until it accepts connections.
    pub fn start() -> Self {
        let data_dir = std::env::temp_dir().join(crate::unique_name("emostream-broker"));
        let mut broker = Self {
            binary: noida_binary(),
            port: crate::closed_port(),
            data_dir,
            child: None,
        };
        broker.restart();
        broker
    }

    /// `host:port` to bootstrap from.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops the broker the way an operator would (SIGTERM, letting it flush its log), killing
    /// it only if it has not exited within [`PATIENCE`], and waits until the port is closed.
    pub fn stop(&mut self) {
        assert!(
            self.signal_and_wait("-TERM"),
            "broker still listening on {} {PATIENCE:?} after it was stopped",
            self.address()
        );
    }

    /// Kills the broker abruptly, as a crash would. Records it acknowledged but had not yet
    /// flushed may be lost, as with a single unreplicated Kafka broker.
    pub fn kill(&mut self) {
        // Also called from drop, where a panic would abort: a port still open is reported by
        // the next start on it instead.
        self.signal_and_wait("-KILL");
    }

    /// Signals the broker's process group and waits until its port is closed; false if it is
    /// still open after [`PATIENCE`].
    fn signal_and_wait(&mut self, signal: &str) -> bool {
        if let Some(mut child) = self.child.take() {
            // The launcher runs the broker in its own process group; signal the whole group.
            let group = format!("-{}", child.id());
            let _ = Command::new("kill")
                .args([signal, "--", &group])
                .stderr(Stdio::null())
                .status();
            // Wait for every process of the group (the launcher exits before the broker has
            // saved its data), not just the launcher.
            let group_alive = || {
                Command::new("kill")
                    .args(["-0", "--", &group])
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            };
            let deadline = Instant::now() + PATIENCE;
            while Instant::now() < deadline {
                let _ = child.try_wait();
                if !group_alive() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = Command::new("kill")
                .args(["-KILL", "--", &group])
                .stderr(Stdio::null())
                .status();
            let _ = child.wait();
        }
        let deadline = Instant::now() + PATIENCE;
        while std::net::TcpStream::connect(self.address()).is_ok() {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        true
    }

    /// Starts the broker again on the same port with the same data.
    pub fn restart(&mut self) {
        self.stop();
        std::fs::create_dir_all(&self.data_dir).expect("create broker data dir");
        let log = std::fs::File::create(self.data_dir.with_extension("log")).expect("broker log");
        let child = Command::new(&self.binary)
            .args([
                "start",
                "--only",
                "kafka",
                "--host",
                "127.0.0.1",
                "--kafka-port",
            ])
            .arg(self.port.to_string())
            .arg("--data-dir")
            .arg(&self.data_dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("start the broker");
        self.child = Some(child);
        let deadline = Instant::now() + PATIENCE;
        while std::net::TcpStream::connect(self.address()).is_err() {
            assert!(
                Instant::now() < deadline,
                "broker did not start on {}",
                self.address()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.data_dir);
        let _ = std::fs::remove_file(self.data_dir.with_extension("log"));
    }
}
