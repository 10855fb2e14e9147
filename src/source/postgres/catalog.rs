//! What the assembler needs to know about the source's catalog that pgoutput does not send: the
//! base type of a domain, the labels of an enum, the element type of an array of a user type, and
//! the real primary key of a table whose replica identity is FULL (or NOTHING).
//!
//! Two halves: [`Catalog`] is the in-memory form the assembler reads (plain data, so the
//! assembler can be tested without a server), and [`fetch`] fills one from the source with
//! `tokio-postgres`. The assembler says what it is missing for a Relation message
//! ([`crate::source::postgres::assemble::Assembler::catalog_needs`]); the stream fetches that and
//! hands it over ([`crate::source::postgres::assemble::Assembler::learn`]) before feeding the
//! Relation.
//!
//! Limits, by construction: the catalog is read *now*, while the Relation may describe a past
//! position. That is safe for what is read here: pgoutput's text values never depend on it (an
//! enum value arrives as its label, a domain value as its base type's text), a domain's base type
//! cannot change, and enum labels are only ever added or renamed. A table's primary key can
//! change, so it is read again for every Relation message that needs it.

use std::collections::HashMap;

use tokio_postgres::Client;

use crate::error::ErrorKind;

/// What pg_type says about one type that is not built in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeFact {
    /// An enum, with its labels in sort order.
    Enum {
        /// `schema.name`.
        name: String,
        /// Labels in `enumsortorder` order.
        labels: Vec<String>,
    },
    /// A domain over `base_oid` (which may itself be a domain or an array).
    Domain {
        /// `schema.name`.
        name: String,
        /// `pg_type.typbasetype`.
        base_oid: u32,
        /// The domain's own type modifier (`typtypmod`: `numeric(10,2)` for a domain over it);
        /// -1 when none.
        base_typmod: i32,
    },
    /// An array of `element_oid`.
    Array {
        /// `schema.name` (Postgres names array types `_element`).
        name: String,
        /// `pg_type.typelem`.
        element_oid: u32,
    },
    /// Anything else (composite, range, an extension's base type such as `citext`): its values
    /// are carried as text.
    Other {
        /// `schema.name`.
        name: String,
    },
}

impl TypeFact {
    /// `schema.name` of the type.
    pub fn name(&self) -> &str {
        match self {
            TypeFact::Enum { name, .. }
            | TypeFact::Domain { name, .. }
            | TypeFact::Array { name, .. }
            | TypeFact::Other { name } => name,
        }
    }
}

/// Catalog facts the assembler reads: types by OID, primary keys by relation OID.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    types: HashMap<u32, TypeFact>,
    primary_keys: HashMap<u32, Vec<String>>,
}

impl Catalog {
    /// An empty catalog: every non-built-in type is carried as text, and FULL-identity tables
    /// cannot be described until their primary key is learned.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records (or replaces) what type `oid` is.
    pub fn add_type(&mut self, oid: u32, fact: TypeFact) {
        self.types.insert(oid, fact);
    }

    /// What is known about type `oid`.
    pub fn type_fact(&self, oid: u32) -> Option<&TypeFact> {
        self.types.get(&oid)
    }

    /// Records relation `relation_oid`'s primary key columns, by name, in key order; empty when
    /// the table has no primary key.
    pub fn set_primary_key(&mut self, relation_oid: u32, columns: Vec<String>) {
        self.primary_keys.insert(relation_oid, columns);
    }

    /// Relation `relation_oid`'s primary key columns in key order (empty: the table has none);
    /// `None` when never learned.
    pub fn primary_key(&self, relation_oid: u32) -> Option<&[String]> {
        self.primary_keys.get(&relation_oid).map(Vec::as_slice)
    }

    /// Takes every fact of `other`, replacing what this catalog knew about the same OIDs.
    pub fn merge(&mut self, other: Catalog) {
        self.types.extend(other.types);
        self.primary_keys.extend(other.primary_keys);
    }
}

/// What to read from the source catalog before a Relation message can be described.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CatalogNeeds {
    /// Types that are not built in (their base, element and label facts are followed too).
    pub type_oids: Vec<u32>,
    /// The relation whose primary key must be read (REPLICA IDENTITY FULL or NOTHING).
    pub primary_key_of: Option<u32>,
}

impl CatalogNeeds {
    /// True when nothing needs reading.
    pub fn is_empty(&self) -> bool {
        self.type_oids.is_empty() && self.primary_key_of.is_none()
    }
}

/// Reading the catalog failed.
#[derive(Debug, thiserror::Error)]
#[error("reading the source catalog ({what}): {error}")]
pub struct CatalogError {
    /// What was being read.
    pub what: &'static str,
    /// The driver's error.
    #[source]
    pub error: tokio_postgres::Error,
}

impl CatalogError {
    /// How the caller should react: a missing grant needs an operator; anything else (a
    /// dropped connection) is retried.
    pub fn kind(&self) -> ErrorKind {
        match self.error.as_db_error() {
            Some(db) if db.code().code().starts_with("42") => ErrorKind::Operator,
            _ => ErrorKind::Retry,
        }
    }
}

/// Types of one round of [`fetch`]: every type in `$1`, with its enum labels. A true array is
/// its element's `typarray` (`int2vector` and `oidvector` have an element but are not arrays:
/// their text has no braces).
const TYPES_SQL: &str = "SELECT t.oid, n.nspname::text, t.typname::text, t.typtype::text, \
     t.typbasetype, t.typtypmod, t.typelem, \
     COALESCE((SELECT e.typarray FROM pg_catalog.pg_type e WHERE e.oid = t.typelem) = t.oid, false), \
     CASE WHEN t.typtype = 'e' THEN ARRAY(SELECT e.enumlabel::text FROM pg_catalog.pg_enum e \
          WHERE e.enumtypid = t.oid ORDER BY e.enumsortorder) END \
     FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace \
     WHERE t.oid = ANY($1::oid[])";

/// Primary key columns of relation `$1`, in key order (no rows: no primary key).
const PRIMARY_KEY_SQL: &str = "SELECT a.attname::text FROM pg_catalog.pg_index i \
     CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) \
     JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
     WHERE i.indrelid = $1::oid AND i.indisprimary ORDER BY k.ord";

/// Domains over domains and arrays of domains nest; deeper than this is not a real schema.
const MAX_TYPE_ROUNDS: usize = 16;

/// Reads what `needs` asks for. Types are followed to their base and element types (those that
/// are not built in); a type the catalog no longer has is left out (its values are carried as
/// text). The primary key, when asked for, is always recorded, empty when the table has none.
pub async fn fetch(client: &Client, needs: &CatalogNeeds) -> Result<Catalog, CatalogError> {
    let mut catalog = Catalog::new();
    let mut pending: Vec<u32> = needs.type_oids.clone();
    for _ in 0..MAX_TYPE_ROUNDS {
        pending.retain(|oid| catalog.type_fact(*oid).is_none());
        pending.sort_unstable();
        pending.dedup();
        if pending.is_empty() {
            break;
        }
        let rows = client
            .query(TYPES_SQL, &[&pending])
            .await
            .map_err(|error| CatalogError {
                what: "pg_type",
                error,
            })?;
        let mut next = Vec::new();
        for row in rows {
            let read = |error| CatalogError {
                what: "pg_type",
                error,
            };
            let oid: u32 = row.try_get(0).map_err(read)?;
            let namespace: String = row.try_get(1).map_err(read)?;
            let typname: String = row.try_get(2).map_err(read)?;
            let typtype: String = row.try_get(3).map_err(read)?;
            let base_oid: u32 = row.try_get(4).map_err(read)?;
            let base_typmod: i32 = row.try_get(5).map_err(read)?;
            let element_oid: u32 = row.try_get(6).map_err(read)?;
            let is_array: bool = row.try_get(7).map_err(read)?;
            let labels: Option<Vec<String>> = row.try_get(8).map_err(read)?;
            let name = format!("{namespace}.{typname}");
            let fact = match typtype.as_str() {
                "e" => TypeFact::Enum {
                    name,
                    labels: labels.unwrap_or_default(),
                },
                "d" => {
                    next.push(base_oid);
                    TypeFact::Domain {
                        name,
                        base_oid,
                        base_typmod,
                    }
                }
                "b" if is_array => {
                    next.push(element_oid);
                    TypeFact::Array { name, element_oid }
                }
                _ => TypeFact::Other { name },
            };
            catalog.add_type(oid, fact);
        }
        // Built-in types need no fact.
        next.retain(|oid| !super::types::is_builtin(*oid));
        pending = next;
    }
    if let Some(relation_oid) = needs.primary_key_of {
        let rows = client
            .query(PRIMARY_KEY_SQL, &[&relation_oid])
            .await
            .map_err(|error| CatalogError {
                what: "primary key",
                error,
            })?;
        let columns = rows
            .iter()
            .map(|row| row.try_get::<_, String>(0))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| CatalogError {
                what: "primary key",
                error,
            })?;
        catalog.set_primary_key(relation_oid, columns);
    }
    Ok(catalog)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_replaces_facts_of_the_same_oid() {
        let mut catalog = Catalog::new();
        catalog.add_type(
            16_384,
            TypeFact::Enum {
                name: "public.mood".into(),
                labels: vec!["happy".into()],
            },
        );
        catalog.set_primary_key(16_400, vec!["id".into()]);
        let mut newer = Catalog::new();
        newer.add_type(
            16_384,
            TypeFact::Enum {
                name: "public.mood".into(),
                labels: vec!["happy".into(), "sad".into()],
            },
        );
        newer.set_primary_key(16_400, Vec::new());
        catalog.merge(newer);
        assert!(matches!(
            catalog.type_fact(16_384),
            Some(TypeFact::Enum { labels, .. }) if labels.len() == 2
        ));
        assert_eq!(catalog.primary_key(16_400), Some(&[][..]));
        assert_eq!(catalog.primary_key(1), None);
        assert!(CatalogNeeds::default().is_empty());
    }
}
