//! New warehouse connections with the warehouse URL's current secrets.
//!
//! A `url` with secret references (`${aws-sm:...}`, `${file:...}`) is fetched before the pool's
//! first connection, and fetched again after a connection attempt failed (a rotated password
//! fails to log in), so the next connection uses the new value without a restart. Connections
//! already open keep working: Postgres checks a password only at login.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use deadpool_postgres::Connect;
use tokio::task::JoinHandle;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{Client, Config, Socket};

use super::PostgresSinkError;
use crate::config::SecretUrl;
use crate::secrets::Freshness;

/// The warehouse URL as written and as last resolved, with the driver config made from it.
pub(super) struct CurrentUrl {
    written: SecretUrl,
    current: RwLock<(SecretUrl, Config)>,
    /// Fetch the secrets before the next connection: never fetched yet, or a connection failed.
    refetch: AtomicBool,
    /// Whether any connection attempt failed since the last fetch (then fetch fresh values).
    failed: AtomicBool,
    /// Turns a resolved URL into the driver's config (the pool's defaults applied).
    make: fn(&SecretUrl) -> Result<Config, PostgresSinkError>,
}

impl CurrentUrl {
    /// Tracks `url`; a URL without references is parsed now, one with references at the first
    /// [`CurrentUrl::refresh`].
    pub(super) fn new(
        url: &SecretUrl,
        make: fn(&SecretUrl) -> Result<Config, PostgresSinkError>,
    ) -> Result<Arc<CurrentUrl>, PostgresSinkError> {
        let config = if url.is_resolved() {
            make(url)?
        } else {
            Config::new()
        };
        Ok(Arc::new(CurrentUrl {
            written: url.clone(),
            current: RwLock::new((url.clone(), config)),
            refetch: AtomicBool::new(!url.is_resolved()),
            failed: AtomicBool::new(false),
            make,
        }))
    }

    /// Fetches the URL's secrets when the next connection needs them.
    pub(super) async fn refresh(&self) -> Result<(), PostgresSinkError> {
        if !self.refetch.load(Ordering::Acquire) {
            return Ok(());
        }
        let freshness = if self.failed.swap(false, Ordering::AcqRel) {
            Freshness::Recheck
        } else {
            Freshness::Cached
        };
        let url = self
            .written
            .resolve(freshness)
            .await
            .map_err(|e| PostgresSinkError::Secret(Box::new(e)))?;
        let config = (self.make)(&url)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = (url, config);
        self.refetch.store(false, Ordering::Release);
        Ok(())
    }

    /// A connection attempt failed: fetch the secrets again (fresh) before the next one.
    pub(super) fn connect_failed(&self) {
        if self.written.has_references() {
            self.failed.store(true, Ordering::Release);
            self.refetch.store(true, Ordering::Release);
        }
    }

    /// The URL as last resolved (to scrub its values from messages).
    pub(super) fn url(&self) -> SecretUrl {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .clone()
    }

    fn config(&self) -> Config {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clone()
    }
}

/// The pool's way to open a connection: with [`CurrentUrl`]'s config rather than the one the
/// pool was built with.
pub(super) struct SecretConnect<T> {
    /// The TLS connector.
    pub tls: T,
    /// Where the config comes from.
    pub url: Arc<CurrentUrl>,
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl<T> Connect for SecretConnect<T>
where
    T: MakeTlsConnect<Socket> + Clone + Sync + Send + 'static,
    T::Stream: Sync + Send,
    T::TlsConnect: Sync + Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    fn connect(
        &self,
        _pool_config: &Config,
    ) -> BoxFuture<'_, Result<(Client, JoinHandle<()>), tokio_postgres::Error>> {
        let tls = self.tls.clone();
        let config = self.url.config();
        Box::pin(async move {
            let (client, connection) = config.connect(tls).await?;
            // The connection's error surfaces at the client's next call; nothing to log here.
            let task = tokio::spawn(async move {
                let _ = connection.await;
            });
            Ok((client, task))
        })
    }
}
