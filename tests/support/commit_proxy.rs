//! A Postgres proxy that loses the connection right after COMMIT succeeded: the transaction has
//! landed, the client only sees a broken connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

/// A TCP proxy in front of a Postgres server that, for the first `drops` COMMITs it sees
/// succeed (every `every`-th one), closes the client connection instead of passing on the
/// server's `CommandComplete("COMMIT")`: the transaction has landed but the client only sees a
/// broken connection.
pub struct CommitDropProxy {
    /// Port the proxy listens on (127.0.0.1).
    pub port: u16,
    dropped: Arc<AtomicU32>,
    commits: Arc<AtomicU32>,
    task: tokio::task::JoinHandle<()>,
}

impl CommitDropProxy {
    /// Starts the proxy in front of `upstream` (`host:port`).
    pub async fn start(upstream: String, every: u32, drops: u32) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let dropped = Arc::new(AtomicU32::new(0));
        let commits = Arc::new(AtomicU32::new(0));
        let (d, c) = (dropped.clone(), commits.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    continue;
                };
                tokio::spawn(proxy_connection(
                    client,
                    server,
                    every,
                    drops,
                    d.clone(),
                    c.clone(),
                ));
            }
        });
        CommitDropProxy {
            port,
            dropped,
            commits,
            task,
        }
    }

    /// Connections closed right after a successful COMMIT so far.
    pub fn dropped(&self) -> u32 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// COMMITs seen so far.
    pub fn commits(&self) -> u32 {
        self.commits.load(Ordering::Relaxed)
    }
}

impl Drop for CommitDropProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn proxy_connection(
    client: tokio::net::TcpStream,
    server: tokio::net::TcpStream,
    every: u32,
    drops: u32,
    dropped: Arc<AtomicU32>,
    commits: Arc<AtomicU32>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
        let _ = server_write.shutdown().await;
    });
    // Server -> client, message by message: type byte, i32 length (including itself), payload.
    let mut first = true;
    loop {
        let mut kind = [0u8; 1];
        if server_read.read_exact(&mut kind).await.is_err() {
            break;
        }
        if first && (kind[0] == b'N' || kind[0] == b'S') {
            // The one-byte answer to an SSLRequest.
            first = false;
            if client_write.write_all(&kind).await.is_err() {
                break;
            }
            continue;
        }
        first = false;
        let mut len = [0u8; 4];
        if server_read.read_exact(&mut len).await.is_err() {
            break;
        }
        let n = u32::from_be_bytes(len) as usize;
        let mut payload = vec![0u8; n.saturating_sub(4)];
        if server_read.read_exact(&mut payload).await.is_err() {
            break;
        }
        if kind[0] == b'C' && payload.starts_with(b"COMMIT\0") {
            let seen = commits.fetch_add(1, Ordering::Relaxed) + 1;
            if seen.is_multiple_of(every) && dropped.load(Ordering::Relaxed) < drops {
                dropped.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
        let mut message = Vec::with_capacity(5 + payload.len());
        message.extend_from_slice(&kind);
        message.extend_from_slice(&len);
        message.extend_from_slice(&payload);
        if client_write.write_all(&message).await.is_err() {
            break;
        }
    }
    upstream.abort();
}
