//! The report `tidemark check` prints for one source or the warehouse: each prerequisite as
//! PASS, INFO, WARN or FAIL, with the statement or setting that fixes it. Shared by every check,
//! and read by `tidemark run` to refuse a source that is not ready.

use std::fmt;

/// Outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CheckStatus {
    /// The prerequisite is met.
    Pass,
    /// Information only (GTID mode, a slot created at first start); never a problem.
    Info,
    /// Works, but risky (short binlog retention, unbounded slot WAL, ...); the fix is advised.
    Warn,
    /// tidemark cannot replicate this source until it is fixed.
    Fail,
}

impl CheckStatus {
    /// Fixed-width label used in the report.
    pub fn label(self) -> &'static str {
        match self {
            CheckStatus::Pass => "PASS",
            CheckStatus::Info => "INFO",
            CheckStatus::Warn => "WARN",
            CheckStatus::Fail => "FAIL",
        }
    }
}

/// One checked prerequisite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckItem {
    /// What was checked: a server setting (`binlog_format`, `wal_level`), `connection`, or a
    /// named prerequisite such as `privilege <NAME>` or `replica identity <table>`.
    pub name: String,
    /// Outcome.
    pub status: CheckStatus,
    /// What was found, in words.
    pub detail: String,
    /// The exact statement or setting that fixes a failure or warning.
    pub fix: Option<String>,
}

impl CheckItem {
    pub(crate) fn new(
        name: impl Into<String>,
        status: CheckStatus,
        detail: impl Into<String>,
    ) -> Self {
        CheckItem {
            name: name.into(),
            status,
            detail: detail.into(),
            fix: None,
        }
    }

    pub(crate) fn with_fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}

/// Name of the item that says whether the server could be reached at all.
pub const CONNECTION_ITEM: &str = "connection";
/// Name of the item that says the checks stopped part-way (a query failed or timed out).
pub const QUERIES_ITEM: &str = "queries";

/// Everything found about one source or the warehouse, in check order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// What was checked, as the report names it: ``source `acme` `` or `warehouse`.
    pub subject: String,
    /// The server's URL with its password masked.
    pub server: String,
    /// One entry per prerequisite.
    pub items: Vec<CheckItem>,
}

impl CheckReport {
    /// An empty report for the source `source_id` on `server` (password already masked).
    pub fn for_source(source_id: &str, server: String) -> CheckReport {
        CheckReport {
            subject: format!("source `{source_id}`"),
            server,
            items: Vec::new(),
        }
    }

    /// An empty report for the warehouse at `server` (password already masked).
    pub fn for_warehouse(server: String) -> CheckReport {
        CheckReport {
            subject: "warehouse".to_owned(),
            server,
            items: Vec::new(),
        }
    }

    /// Failed items other than not reaching the server: the prerequisites an operator must fix.
    /// (A server that cannot be reached is the reader's to retry, like any outage.)
    pub fn unmet_prerequisites(&self) -> Vec<&CheckItem> {
        self.with_status(CheckStatus::Fail)
            .filter(|i| i.name != CONNECTION_ITEM && i.name != QUERIES_ITEM)
            .collect()
    }

    /// The failed items on one line each, with their fixes: what `run` says when it refuses.
    pub fn failures_text(&self) -> String {
        self.unmet_prerequisites()
            .iter()
            .map(|i| match &i.fix {
                Some(fix) => format!("{}: {} (fix: {fix})", i.name, i.detail),
                None => format!("{}: {}", i.name, i.detail),
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// True when no item failed (warnings and info do not count).
    pub fn passed(&self) -> bool {
        !self.items.iter().any(|i| i.status == CheckStatus::Fail)
    }

    /// The first item with this name.
    pub fn item(&self, name: &str) -> Option<&CheckItem> {
        self.items.iter().find(|i| i.name == name)
    }

    /// Items with the given status.
    pub fn with_status(&self, status: CheckStatus) -> impl Iterator<Item = &CheckItem> {
        self.items.iter().filter(move |i| i.status == status)
    }

    fn count(&self, status: CheckStatus) -> usize {
        self.with_status(status).count()
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.passed() { "ready" } else { "NOT READY" };
        let warnings = self.count(CheckStatus::Warn);
        writeln!(
            f,
            "{} ({}): {verdict}: {} failed, {warnings} {}, {} passed",
            self.subject,
            self.server,
            self.count(CheckStatus::Fail),
            if warnings == 1 { "warning" } else { "warnings" },
            self.count(CheckStatus::Pass),
        )?;
        let width = self.items.iter().map(|i| i.name.len()).max().unwrap_or(0);
        for item in &self.items {
            writeln!(
                f,
                "  {}  {:width$}  {}",
                item.status.label(),
                item.name,
                item.detail
            )?;
            if let Some(fix) = &item.fix {
                writeln!(f, "        {:width$}  fix: {fix}", "")?;
            }
        }
        Ok(())
    }
}
