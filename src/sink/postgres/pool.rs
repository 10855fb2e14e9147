//! The bounded pool of warehouse connections that every sink of a group draws from.
//!
//! A sink holds a connection only while it works (a batch, a progress read), so a thousand
//! sources that mostly wait on their logs share a handful of connections: the warehouse sees at
//! most `max_connections` of them from one process. A connection that failed mid-statement is
//! never handed out again (its state is unknown); one that a sink returned in good order is.

use std::sync::Arc;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod};

use super::secret_connect::{CurrentUrl, Resolved, SecretConnect};
use super::{CONNECT_TIMEOUT, PostgresSinkError, describe};
use crate::config::SecretUrl;

/// Connections a pool holds unless the config says otherwise (`[warehouse] max_connections`).
pub const DEFAULT_MAX_CONNECTIONS: usize = 16;

/// A shared, bounded set of connections to one Postgres warehouse; cloning shares it.
#[derive(Clone)]
pub struct WarehousePool {
    pool: Pool,
    url: SecretUrl,
    /// The URL's secrets as last fetched (fetched again after a failed connect), its driver
    /// config and TLS settings.
    current: Arc<CurrentUrl>,
}

impl std::fmt::Debug for WarehousePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarehousePool")
            .field("url", &self.url)
            .field("max_connections", &self.pool.status().max_size)
            .finish()
    }
}

impl WarehousePool {
    /// A pool of at most `max_connections` connections to `url`, opened as sinks ask for them.
    pub fn new(url: &SecretUrl, max_connections: usize) -> Result<Self, PostgresSinkError> {
        let target = url.redacted();
        // Each new connection takes the URL's current secrets (fetched again after a failed
        // connect): a rotated password is picked up without a restart.
        let current = CurrentUrl::new(url, resolved)?;
        // Fast recycling checks only that the connection is open: a sink gives a connection
        // back only after its statements finished cleanly (see `PostgresSink::release`).
        let manager = Manager::from_connect(
            tokio_postgres::Config::new(),
            SecretConnect {
                url: current.clone(),
            },
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(max_connections.max(1))
            .build()
            .map_err(|e| PostgresSinkError::Pool {
                target: target.clone(),
                reason: e.to_string(),
            })?;
        Ok(WarehousePool {
            pool,
            url: url.clone(),
            current,
        })
    }

    /// A connection of the pool, waiting while all of them are in use.
    pub(super) async fn get(&self) -> Result<Object, PostgresSinkError> {
        self.current.refresh().await?;
        let url = self.current.url();
        self.pool.get().await.map_err(|e| match e {
            PoolError::Backend(error) => {
                self.current.connect_failed();
                let reason = url.scrub(&describe(&error));
                match self.current.explain_tls(&reason) {
                    Some(explained) => PostgresSinkError::Tls {
                        target: url.redacted(),
                        reason: explained,
                    },
                    None => PostgresSinkError::Connect {
                        target: url.redacted(),
                        reason,
                        error,
                    },
                }
            }
            other => PostgresSinkError::Pool {
                target: url.redacted(),
                reason: url.scrub(&other.to_string()),
            },
        })
    }

    /// The warehouse URL (its password never prints).
    pub fn url(&self) -> &SecretUrl {
        &self.url
    }

    /// Connections open now (in use or idle), at most the pool's size.
    pub fn open_connections(&self) -> usize {
        self.pool.status().size
    }
}

/// The driver config, TLS settings and connector of a (resolved) warehouse URL, with the pool's
/// defaults.
fn resolved(url: &SecretUrl) -> Result<Resolved, PostgresSinkError> {
    let tls_error = |reason: String| PostgresSinkError::Tls {
        target: url.redacted(),
        reason,
    };
    let (mut config, tls) =
        crate::tls::postgres_config(url).map_err(|e| tls_error(e.to_string()))?;
    let connector = tls
        .postgres_connector()
        .map_err(|e| tls_error(e.to_string()))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("tidemark");
    }
    Ok(Resolved {
        url: url.clone(),
        host: crate::tls::postgres_host(&config),
        config,
        tls: Some((tls, connector)),
    })
}
