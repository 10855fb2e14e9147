//! The settings only a Postgres source has (its slot and publication), their defaults and their
//! checks.
//!
//! Invariant: a [`PostgresSettings`] holds a slot and a publication name Postgres accepts
//! (lowercase letters, digits and `_`, at most 63), configured or derived from the source id;
//! config loading (`crate::config`) builds it and reports a bad name with the file, line and key.

/// `[[sources]]` settings of `kind = "postgres"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresSettings {
    /// The logical replication slot (default [`default_slot_name`] of the source id).
    pub slot: String,
    /// The publication the slot streams (default: the slot's name).
    pub publication: String,
    /// Create the publication `FOR ALL TABLES` instead of for the included tables.
    pub publish_all_tables: bool,
}

impl PostgresSettings {
    /// The config keys these settings are read from: keys only a Postgres source accepts.
    pub const KEYS: &'static [&'static str] = &["slot", "publication", "publish_all_tables"];

    /// The settings of source `source_id`, defaults filled in: the slot is named after the id,
    /// the publication after the slot. Names must have passed [`slot_name_problem`].
    pub fn new(
        source_id: &str,
        slot: Option<String>,
        publication: Option<String>,
        publish_all_tables: Option<bool>,
    ) -> PostgresSettings {
        let slot = slot.unwrap_or_else(|| default_slot_name(source_id));
        PostgresSettings {
            publication: publication.unwrap_or_else(|| slot.clone()),
            slot,
            publish_all_tables: publish_all_tables.unwrap_or(false),
        }
    }
}

/// The default slot (and publication) name of source `id`: `tidemark_` + the id with `-` as `_`,
/// lowercased (slot names allow only lowercase letters, digits and underscores).
pub fn default_slot_name(id: &str) -> String {
    format!("tidemark_{}", id.replace('-', "_")).to_lowercase()
}

/// Why `name` cannot be a Postgres replication slot or publication name, if it cannot.
pub fn slot_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() || name.len() > 63 {
        return Some("must be 1 to 63 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Some(
            "may hold only lowercase letters, digits and underscores (Postgres slot name rules)",
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_default_to_the_source_id() {
        assert_eq!(default_slot_name("Acme-1"), "tidemark_acme_1");
        let settings = PostgresSettings::new("Acme-1", None, None, None);
        assert_eq!(settings.slot, "tidemark_acme_1");
        assert_eq!(settings.publication, "tidemark_acme_1");
        assert!(!settings.publish_all_tables);
        let settings = PostgresSettings::new("a", Some("s".into()), None, Some(true));
        assert_eq!(
            (settings.slot.as_str(), settings.publication.as_str()),
            ("s", "s")
        );
        assert!(settings.publish_all_tables);
    }

    #[test]
    fn slot_names_follow_postgres_rules() {
        assert!(slot_name_problem("tidemark_acme_1").is_none());
        assert!(slot_name_problem("").is_some());
        assert!(slot_name_problem(&"a".repeat(64)).is_some());
        assert!(slot_name_problem(&"a".repeat(63)).is_none());
        assert!(slot_name_problem("Acme").is_some());
        assert!(slot_name_problem("acme-1").is_some());
    }
}
