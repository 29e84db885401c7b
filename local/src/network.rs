//! The network between the functions and a server, with faults on demand: a TCP proxy in front
//! of the real server that can delay every chunk it passes, stall (keep connections open and
//! pass nothing, as a server hung mid-failover or a path that drops packets looks to a client)
//! and cut every open connection (as a failover or a NAT timeout does). Tests and the fault run
//! (`make chaos`) put it between the functions and MongoDB. It is not put in front of the
//! Kafka-wire broker: Kafka clients reach the broker at the address its metadata advertises,
//! not through the bootstrap address, so the broker is frozen or restarted instead.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does to traffic now.
#[derive(Debug, Default)]
struct Faults {
    stalled: AtomicBool,
    delay_us: AtomicU64,
}

/// The proxy; dropping it stops accepting (open connections end with their clients).
pub struct FaultProxy {
    address: SocketAddr,
    faults: Arc<Faults>,
    /// Raised to cut every open connection.
    cut: watch::Sender<u64>,
    accepting: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Starts passing connections to `upstream` (host:port) on a free loopback port.
    pub async fn start(upstream: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let faults = Arc::new(Faults::default());
        let (cut, _) = watch::channel(0u64);
        let upstream = upstream.to_owned();
        let (shared, cuts) = (Arc::clone(&faults), cut.clone());
        let accepting = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue; // the server is down: the client sees its connection closed
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                for (from, to) in [(client_read, server_write), (server_read, client_write)] {
                    let (faults, mut cut) = (Arc::clone(&shared), cuts.subscribe());
                    cut.mark_unchanged();
                    tokio::spawn(async move {
                        tokio::select! {
                            () = pass(from, to, faults) => {}
                            _ = cut.changed() => {} // both halves dropped: the connection closes
                        }
                    });
                }
            }
        });
        Ok(Self {
            address,
            faults,
            cut,
            accepting,
        })
    }

    /// A proxy in front of the one server `mongodb_uri` names (`mongodb://host:port/...`), and
    /// the same URI through it, connecting directly to that server.
    pub async fn for_mongodb(mongodb_uri: &str) -> std::io::Result<(Self, String)> {
        let upstream = mongodb_uri
            .trim_start_matches("mongodb://")
            .split(['/', '?'])
            .next()
            .unwrap_or_default()
            .to_owned();
        let proxy = Self::start(&upstream).await?;
        let proxied = mongodb_uri.replacen(&upstream, &proxy.address().to_string(), 1);
        let uri = if proxied.contains("directConnection=true") {
            proxied
        } else if proxied.contains('?') {
            format!("{proxied}&directConnection=true")
        } else {
            format!("{proxied}/?directConnection=true")
        };
        Ok((proxy, uri))
    }

    /// Where clients connect.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Stalls (true) or resumes (false) every connection, old and new: while stalled, nothing
    /// is passed either way and connections stay open.
    pub fn stall(&self, stalled: bool) {
        self.faults.stalled.store(stalled, Ordering::SeqCst);
    }

    /// Holds every chunk this long before passing it on (zero: none).
    pub fn delay(&self, delay: Duration) {
        let micros = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.faults.delay_us.store(micros, Ordering::SeqCst);
    }

    /// Closes every open connection; new ones are passed as before.
    pub fn cut_connections(&self) {
        self.cut.send_modify(|generation| *generation += 1);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

/// Copies `from` to `to` until either ends, as the faults say.
async fn pass(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    faults: Arc<Faults>,
) {
    let mut buffer = vec![0; 64 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        let delay = faults.delay_us.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_micros(delay)).await;
        }
        while faults.stalled.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}
