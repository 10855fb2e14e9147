//! A TCP proxy on loopback whose link can be cut and restored: what a test puts between
//! tidemark and one server to make that one connection fail while the others go on.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;

/// Forwards 127.0.0.1:`port` to an upstream `host:port`. While cut, open connections are closed
/// and new ones are refused (accepted and closed at once). MySQL clients must connect with
/// `prefer_socket=false`, or mysql_async moves a loopback connection to the server's socket.
pub struct CutProxy {
    /// The port to connect to instead of the upstream's.
    pub port: u16,
    cut: Arc<AtomicBool>,
    cuts: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl CutProxy {
    /// Starts forwarding to `upstream`.
    pub async fn start(upstream: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let (cuts, _) = watch::channel(0u64);
        let (is_cut, cut_signal) = (cut.clone(), cuts.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if is_cut.load(Ordering::SeqCst) {
                    continue;
                }
                let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
                    continue;
                };
                let mut cut_now = cut_signal.subscribe();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut_now.changed() => {}
                    }
                });
            }
        });
        CutProxy {
            port,
            cut,
            cuts,
            task,
        }
    }

    /// Closes every open connection and refuses new ones until [`CutProxy::restore`].
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.cuts.send_modify(|n| *n += 1);
    }

    /// Forwards new connections again.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
