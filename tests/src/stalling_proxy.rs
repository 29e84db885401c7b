//! A TCP proxy in front of a real server that can stall: once told to, it stops passing bytes
//! either way while keeping every connection open, as a server that hangs mid-failover or a
//! network that drops packets does. A client then sees no error, only silence, which is what
//! its own time limits must handle.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The proxy; dropping it stops accepting (open connections end with their clients).
pub struct StallingProxy {
    address: SocketAddr,
    stalled: Arc<AtomicBool>,
    accepting: tokio::task::JoinHandle<()>,
}

impl StallingProxy {
    /// Starts passing connections to `upstream` (host:port).
    pub async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a local port");
        let address = listener.local_addr().expect("a bound address");
        let stalled = Arc::new(AtomicBool::new(false));
        let upstream = upstream.to_owned();
        let flag = Arc::clone(&stalled);
        let accepting = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(pass(client_read, server_write, Arc::clone(&flag)));
                tokio::spawn(pass(server_read, client_write, Arc::clone(&flag)));
            }
        });
        Self {
            address,
            stalled,
            accepting,
        }
    }

    /// A proxy in front of the one server `mongodb_uri` names (`mongodb://host:port/...`), and
    /// the same URI through it, connecting directly to that server.
    pub async fn for_mongodb(mongodb_uri: &str) -> (Self, String) {
        let upstream = mongodb_uri
            .trim_start_matches("mongodb://")
            .split(['/', '?'])
            .next()
            .expect("a host in the URI")
            .to_owned();
        let proxy = Self::start(&upstream).await;
        let proxied = mongodb_uri.replacen(&upstream, &proxy.address().to_string(), 1);
        let uri = if proxied.contains("directConnection=true") {
            proxied
        } else if proxied.contains('?') {
            format!("{proxied}&directConnection=true")
        } else {
            format!("{proxied}/?directConnection=true")
        };
        (proxy, uri)
    }

    /// Where clients connect.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// From now on, nothing more is passed on any connection, old or new.
    pub fn stall(&self) {
        self.stalled.store(true, Ordering::SeqCst);
    }
}

impl Drop for StallingProxy {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

/// Copies `from` to `to` until either ends; once stalled, holds what it read and waits.
async fn pass(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    stalled: Arc<AtomicBool>,
) {
    let mut buffer = vec![0; 64 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        if stalled.load(Ordering::SeqCst) {
            // Silence, with the connection kept open, until the test ends.
            std::future::pending::<()>().await;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}
