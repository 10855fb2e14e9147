//! What an error means for the process that meets it: retry, stop for an operator, or stop.
//!
//! Retry loops decide from [`ErrorKind`], never by matching message text.

/// How a failure should be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Transient (network blip, server restart, serialization conflict): retry with backoff.
    Retry,
    /// Needs an operator (bad grant, wrong setting, lost position): report and wait.
    Operator,
    /// Corrupt or impossible input: stop, never skip.
    Fatal,
}
