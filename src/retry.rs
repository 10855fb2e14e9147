//! One retry policy for every link tidemark keeps: a source's connection, a warehouse load, a
//! source that failed and is started again. Exponential backoff with jitter (from `backon`)
//! that starts over once the link has made progress. Whether to retry at all is decided by the
//! error's [`ErrorKind`](crate::error::ErrorKind), never by its message text.
//!
//! Why jitter: a group of a hundred sources that lost the same warehouse must not come back in
//! lockstep. Why start over on progress rather than by time: measured under injected TCP resets,
//! a failure count that never reset climbed to 30 s waits, and 97 s of lag, on a link that
//! dropped soon after each reconnect.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// The waits between attempts on one link: from `first`, doubling up to `longest`, each
/// lengthened by a random part of itself (so a wait is between the step and twice the step).
#[derive(Debug)]
pub struct Backoff {
    builder: ExponentialBuilder,
    waits: ExponentialBackoff,
    longest: Duration,
    /// Set by [`Backoff::reset`]; the waits start over at the next failure. Lazy, so that a
    /// reader may call `reset` for every event it receives at no cost.
    start_over: bool,
}

impl Backoff {
    /// Waits that start at `first` and grow to `longest`.
    pub fn new(first: Duration, longest: Duration) -> Backoff {
        let builder = ExponentialBuilder::new()
            .with_min_delay(first)
            .with_max_delay(longest.max(first))
            .with_jitter()
            .without_max_times();
        Backoff {
            waits: builder.build(),
            builder,
            longest,
            start_over: false,
        }
    }

    /// The wait before the next attempt.
    pub fn next_wait(&mut self) -> Duration {
        if std::mem::take(&mut self.start_over) {
            self.waits = self.builder.build();
        }
        self.waits.next().unwrap_or(self.longest)
    }

    /// The link made progress (events read, a batch committed): the next failure waits the
    /// shortest time again.
    pub fn reset(&mut self) {
        self.start_over = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_with_jitter_up_to_twice_the_longest_step_and_start_over_after_progress() {
        let (first, longest) = (Duration::from_millis(100), Duration::from_secs(30));
        let mut backoff = Backoff::new(first, longest);
        let waits: Vec<Duration> = (0..12).map(|_| backoff.next_wait()).collect();
        assert!(waits[0] >= first && waits[0] < first * 2, "{waits:?}");
        assert!(waits[3] >= first * 8, "grows: {waits:?}");
        assert!(
            waits.iter().all(|w| *w < longest * 2),
            "capped (jitter adds at most as much again): {waits:?}"
        );
        assert!(waits[11] >= longest, "reaches the longest step: {waits:?}");
        backoff.reset();
        let again = backoff.next_wait();
        assert!(again >= first && again < first * 2, "{again:?}");
    }

    #[test]
    fn jitter_spreads_links_that_failed_together() {
        let waits: Vec<Duration> = (0..20)
            .map(|_| {
                let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
                b.next_wait();
                b.next_wait()
            })
            .collect();
        let distinct: std::collections::HashSet<_> = waits.iter().collect();
        assert!(distinct.len() > 10, "{waits:?}");
    }
}
