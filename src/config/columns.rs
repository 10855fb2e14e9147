//! Per-source column rules (`[[sources.columns]]`) and the salt of masked values.
//!
//! Invariants of loaded rules: every `table` is a valid table pattern, a `rename` names one
//! column exactly and has a `to` that no other rename of the same table pattern uses, and a
//! source with a `mask` rule has a salt. What a rule does to a table's columns is decided
//! per table at run time (`pipeline::columns`), when the table's shape is known: only then can
//! a rule excluding a key column be told apart.
//!
//! The salt is a secret: [`MaskSalt`] never shows it in `Debug` output, and no message prints it.

use std::fmt;
use std::sync::Arc;

use super::source::{TablePattern, glob_match};

/// What a column rule does to the columns it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnAction {
    /// The column never reaches the warehouse: not in the target table, not in staged rows.
    Exclude,
    /// The value is replaced by the lowercase hex SHA-256 of the salt followed by the value's
    /// canonical bytes; the target column is text; NULL stays NULL.
    Mask,
    /// The target column gets this name.
    Rename(String),
}

impl ColumnAction {
    /// The name used in the config file.
    pub fn as_str(&self) -> &'static str {
        match self {
            ColumnAction::Exclude => "exclude",
            ColumnAction::Mask => "mask",
            ColumnAction::Rename(_) => "rename",
        }
    }
}

/// One `[[sources.columns]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnRule {
    /// Source tables the rule applies to (`database.table` glob, as `include`).
    pub table: TablePattern,
    /// Column name, exact or a glob (`*` any run of characters, `?` one), case-sensitive.
    pub column: String,
    /// What happens to a matching column.
    pub action: ColumnAction,
}

impl ColumnRule {
    /// True when the rule applies to some column of `schema.table`.
    pub fn applies_to_table(&self, schema: &str, table: &str) -> bool {
        self.table.matches(schema, table)
    }

    /// True when the rule applies to column `column` (of a table it applies to).
    pub fn matches_column(&self, column: &str) -> bool {
        glob_match(&self.column, column)
    }
}

/// The salt of masked values (`[group] mask_salt`): a secret, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct MaskSalt(Arc<[u8]>);

impl MaskSalt {
    /// Wraps the salt's text (after `${ENV}` interpolation).
    pub fn new(salt: &str) -> Self {
        MaskSalt(Arc::from(salt.as_bytes()))
    }

    /// The salt's bytes, for the hash only. Never log them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for MaskSalt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MaskSalt(***)")
    }
}

/// A source's column rules, in file order (the first rule matching a column wins), with the
/// group's salt when some rule masks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ColumnRules {
    /// The rules, in file order.
    pub rules: Vec<ColumnRule>,
    /// `[group] mask_salt`; always present when a rule masks.
    pub salt: Option<MaskSalt>,
}

impl ColumnRules {
    /// True when the source has no column rule: its rows reach the warehouse as read.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rules that apply to some column of `schema.table`, in order.
    pub fn for_table(&self, schema: &str, table: &str) -> Vec<ColumnRule> {
        self.rules
            .iter()
            .filter(|rule| rule.applies_to_table(schema, table))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_salt_never_prints() {
        let salt = MaskSalt::new("s3cr3t-salt");
        assert_eq!(format!("{salt:?}"), "MaskSalt(***)");
        let rules = ColumnRules {
            rules: Vec::new(),
            salt: Some(salt.clone()),
        };
        assert!(!format!("{rules:?}").contains("s3cr3t"));
        assert_eq!(salt.expose(), b"s3cr3t-salt");
    }

    #[test]
    fn rules_match_tables_and_columns_by_glob() {
        let rule = ColumnRule {
            table: TablePattern::parse("shop.cust*").unwrap(),
            column: "*_email".into(),
            action: ColumnAction::Mask,
        };
        assert!(rule.applies_to_table("shop", "customers"));
        assert!(!rule.applies_to_table("shop", "orders"));
        assert!(rule.matches_column("work_email"));
        assert!(!rule.matches_column("email"));
        let rules = ColumnRules {
            rules: vec![rule],
            salt: None,
        };
        assert_eq!(rules.for_table("shop", "customers").len(), 1);
        assert!(rules.for_table("other", "customers").is_empty());
    }
}
