//! Riding out lost connections, the same way for every kind of source.
//!
//! A kind's reader only reports a lost connection (an error of kind
//! [`ErrorKind::Retry`]); [`Reconnecting`] then ends a transaction it cut off with `Rollback`,
//! waits with the one backoff policy ([`Backoff`]) and opens the kind's reader again at the
//! position after the last transaction it handed out. The transaction that was cut off is then
//! read again whole: nothing skipped, nothing doubled.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use super::{RECONNECT_FIRST, RECONNECT_LONGEST, ReadError, Source, SourceFuture};
use crate::error::ErrorKind;
use crate::event::{ResumePoint, SourceMessage};
use crate::observe::{health, seconds};
use crate::retry::Backoff;

/// Opens a kind's reader again right after a resume point.
pub type Reopen =
    Box<dyn Fn(ResumePoint) -> SourceFuture<'static, Box<dyn Source>> + Send + Sync + 'static>;

/// A [`Source`] that reconnects by itself: errors reach its caller only when reconnecting
/// cannot fix them.
pub struct Reconnecting {
    source_id: Arc<str>,
    current: Option<Box<dyn Source>>,
    reopen: Reopen,
    /// Where reading resumes when `current` is gone.
    resume: ResumePoint,
    /// A `Begin` was handed out and its `Commit` or `Rollback` was not.
    in_transaction: bool,
    backoff: Backoff,
    reconnects: u64,
}

impl std::fmt::Debug for Reconnecting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconnecting")
            .field("source_id", &self.source_id)
            .field("resume", &self.resume)
            .field("reconnects", &self.reconnects)
            .finish_non_exhaustive()
    }
}

impl Reconnecting {
    /// Wraps a reader just opened; `reopen` opens another after a lost connection, with waits
    /// from 100 ms growing to 30 s (jittered) until one succeeds.
    pub fn new(source_id: Arc<str>, first: Box<dyn Source>, reopen: Reopen) -> Reconnecting {
        Reconnecting::with_backoff(source_id, first, reopen, RECONNECT_FIRST, RECONNECT_LONGEST)
    }

    /// [`Reconnecting::new`] with other waits between attempts.
    pub fn with_backoff(
        source_id: Arc<str>,
        first: Box<dyn Source>,
        reopen: Reopen,
        first_wait: Duration,
        longest_wait: Duration,
    ) -> Reconnecting {
        Reconnecting {
            source_id,
            resume: first.resume_point(),
            current: Some(first),
            reopen,
            in_transaction: false,
            backoff: Backoff::new(first_wait, longest_wait),
            reconnects: 0,
        }
    }

    /// How many times the connection was opened again.
    pub fn reconnects(&self) -> u64 {
        self.reconnects
    }

    async fn read(&mut self, out: &mut Vec<SourceMessage>) -> Result<(), ReadError> {
        loop {
            let Some(current) = self.current.as_mut() else {
                self.reconnect().await?;
                continue;
            };
            let start = out.len();
            let read = current.next_batch(out).await;
            if let Some(open) = transaction_open_after(&out[start..]) {
                self.in_transaction = open;
            }
            let error = match read {
                Ok(()) => {
                    // Progress: a later loss waits the shortest time again.
                    self.backoff.reset();
                    return Ok(());
                }
                Err(error) if error.kind() == ErrorKind::Retry => error,
                Err(error) => return Err(error),
            };
            warn!(source = %self.source_id, error = %error, "source connection lost; reconnecting");
            self.resume = current.resume_point();
            if let Some(lost) = self.current.take() {
                // The connection is gone; closing only frees what is left of it.
                tokio::spawn(lost.close());
            }
            if self.in_transaction {
                out.push(SourceMessage::Rollback);
                self.in_transaction = false;
            }
            if out.len() > start {
                return Ok(());
            }
        }
    }

    async fn reconnect(&mut self) -> Result<(), ReadError> {
        let mut failed_attempts: u64 = 0;
        loop {
            let wait = self.backoff.next_wait();
            tokio::time::sleep(wait).await;
            match (self.reopen)(self.resume.clone()).await {
                Ok(source) => {
                    self.reconnects += 1;
                    if failed_attempts > 0 {
                        health::recovered(&self.source_id);
                    }
                    info!(source = %self.source_id, position = %self.resume, "source reconnected");
                    self.current = Some(source);
                    return Ok(());
                }
                Err(error) if error.kind() == ErrorKind::Retry => {
                    failed_attempts += 1;
                    health::trouble(&self.source_id, error.to_string());
                    warn!(source = %self.source_id, error = %error, attempt = failed_attempts, waited_s = seconds(wait), "reconnecting failed");
                }
                Err(error) => return Err(error),
            }
        }
    }
}

/// Whether a transaction is open after `appended`, or `None` when it holds no boundary: only
/// the last boundary counts.
fn transaction_open_after(appended: &[SourceMessage]) -> Option<bool> {
    appended.iter().rev().find_map(|message| match message {
        SourceMessage::Begin(_) => Some(true),
        SourceMessage::Commit(_) | SourceMessage::Rollback => Some(false),
        _ => None,
    })
}

impl Source for Reconnecting {
    fn resume_point(&self) -> ResumePoint {
        match &self.current {
            Some(current) => current.resume_point(),
            None => self.resume.clone(),
        }
    }

    fn next_batch<'a>(&'a mut self, out: &'a mut Vec<SourceMessage>) -> SourceFuture<'a, ()> {
        Box::pin(self.read(out))
    }

    fn close(self: Box<Self>) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        match self.current {
            Some(current) => current.close(),
            None => Box::pin(async {}),
        }
    }
}
