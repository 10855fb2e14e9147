//! What config loading needs to know about a family of kinds (source kinds, warehouse kinds):
//! their names, what each is in words, and which keys belong to which kind.
//!
//! Each family keeps one table of its kinds (`ALL`); parsing `kind`, the message listing the
//! choices, and the check that every kind-specific key sits on a table of its own kind all read
//! that table, so adding a kind is one row.

use std::fmt::Display;

/// A family of kinds, as config loading sees it. `Display` writes the name used in the file.
pub(crate) trait KindTable: Copy + Eq + Display + 'static {
    /// Every kind of the family, in the order messages list them.
    const ALL: &'static [Self];
    /// What the family's tables are called in messages (`sources`, `warehouses`).
    const TABLES: &'static str;

    /// The kind named `name` in the config file.
    fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .iter()
            .copied()
            .find(|kind| kind.to_string() == name)
    }

    /// What this kind is, in words (`MySQL or MariaDB`), for messages.
    fn product(self) -> &'static str;

    /// The keys only tables of this kind accept (besides `kind` and the keys every kind has).
    fn keys(self) -> &'static [&'static str];

    /// The kind whose tables accept `key`, if one does.
    fn owner_of(key: &str) -> Option<Self> {
        Self::ALL
            .iter()
            .copied()
            .find(|kind| kind.keys().contains(&key))
    }
}
