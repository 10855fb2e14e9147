//! The report `tidemark check` prints for one source: each prerequisite as PASS, INFO, WARN or
//! FAIL, with the statement or setting that fixes it. Shared by the MySQL and Postgres checks.

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

/// Everything found about one source, in check order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// The source's id.
    pub source_id: String,
    /// The source URL with its password masked.
    pub server: String,
    /// One entry per prerequisite.
    pub items: Vec<CheckItem>,
}

impl CheckReport {
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
            "source `{}` ({}): {verdict}: {} failed, {warnings} {}, {} passed",
            self.source_id,
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
