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
use tokio_postgres::{Client, Config};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::PostgresSinkError;
use crate::config::SecretUrl;
use crate::secrets::Freshness;
use crate::tls::TlsSettings;

/// A warehouse URL with its secrets resolved, and what connecting with it takes.
pub(super) struct Resolved {
    /// The URL, secrets in it.
    pub url: SecretUrl,
    /// The driver's config (TLS parameters taken out).
    pub config: Config,
    /// The host, for messages about TLS.
    pub host: String,
    /// The TLS settings and the connector made from them; none before the first resolution.
    pub tls: Option<(TlsSettings, MakeRustlsConnect)>,
}

/// The warehouse URL as written and as last resolved, with the driver config made from it.
pub(super) struct CurrentUrl {
    written: SecretUrl,
    current: RwLock<Resolved>,
    /// Fetch the secrets before the next connection: never fetched yet, or a connection failed.
    refetch: AtomicBool,
    /// Whether any connection attempt failed since the last fetch (then fetch fresh values).
    failed: AtomicBool,
    /// Turns a resolved URL into the driver's config (the pool's defaults applied).
    make: fn(&SecretUrl) -> Result<Resolved, PostgresSinkError>,
}

impl CurrentUrl {
    /// Tracks `url`; a URL without references is parsed now, one with references at the first
    /// [`CurrentUrl::refresh`].
    pub(super) fn new(
        url: &SecretUrl,
        make: fn(&SecretUrl) -> Result<Resolved, PostgresSinkError>,
    ) -> Result<Arc<CurrentUrl>, PostgresSinkError> {
        let resolved = if url.is_resolved() {
            make(url)?
        } else {
            Resolved {
                url: url.clone(),
                config: Config::new(),
                host: String::new(),
                tls: None,
            }
        };
        Ok(Arc::new(CurrentUrl {
            written: url.clone(),
            current: RwLock::new(resolved),
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
        let resolved = (self.make)(&url)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = resolved;
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
            .url
            .clone()
    }

    /// A sentence naming host, setting and fix when `reason` (a failed connect) is a TLS
    /// failure.
    pub(super) fn explain_tls(&self, reason: &str) -> Option<String> {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        let (tls, _) = current.tls.as_ref()?;
        tls.explain(&current.host, reason)
    }

    /// The driver config and TLS connector of the next connection.
    fn connect_with(&self) -> (Config, Option<MakeRustlsConnect>) {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        (
            current.config.clone(),
            current.tls.as_ref().map(|(_, connector)| connector.clone()),
        )
    }
}

/// The pool's way to open a connection: with [`CurrentUrl`]'s config and TLS connector rather
/// than the config the pool was built with.
pub(super) struct SecretConnect {
    /// Where the config comes from.
    pub url: Arc<CurrentUrl>,
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl Connect for SecretConnect {
    fn connect(
        &self,
        _pool_config: &Config,
    ) -> BoxFuture<'_, Result<(Client, JoinHandle<()>), tokio_postgres::Error>> {
        let (config, tls) = self.url.connect_with();
        Box::pin(async move {
            // The connection's error surfaces at the client's next call; nothing to log here.
            match tls {
                Some(tls) => {
                    let (client, connection) = config.connect(tls).await?;
                    let task = tokio::spawn(async move {
                        let _ = connection.await;
                    });
                    Ok((client, task))
                }
                // Not resolved yet (`get` resolves first, so only after that failed).
                None => {
                    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
                    let task = tokio::spawn(async move {
                        let _ = connection.await;
                    });
                    Ok((client, task))
                }
            }
        })
    }
}
