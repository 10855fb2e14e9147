//! A source's column rules applied to one table: the target shape (columns excluded, masked
//! or renamed) and each row in it.
//!
//! Streamed changes and snapshot copies both pass through [`TableColumns::shape`] before they
//! are encoded, so a rule applies the same way to every row of a table, however it was read.
//!
//! Invariants: an excluded column is in neither the shape nor any row; a masked value is the
//! lowercase hex SHA-256 of the salt followed by the value's canonical bytes
//! ([`canonical_bytes`]), NULL stays NULL and a value the change left unchanged stays unchanged;
//! the key follows its columns (a masked key column holds hashes, a renamed one its new name);
//! a rule that would exclude a key column, or two columns that would get one name, is a
//! [`ColumnRuleError`] at the table's first change, never a silently different table.

use std::borrow::Cow;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::config::{ColumnAction, ColumnRule, MaskSalt, SourceConfig};
use crate::event::{
    ChangeEvent, Column, ColumnType, TableId, TableSchema, Value, format_time_micros,
    format_timestamp_micros, to_hex,
};

/// Bytes of a masked value: 64 hex digits.
const MASKED_BYTES: u64 = 64;

/// A table whose column rules cannot apply to its shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ColumnRuleError {
    /// A rule excludes a column of the table's primary key.
    #[error(
        "source {source_id}, table {table}: column rule columns[{rule}] excludes key column `{column}`, but the warehouse applies changes by key; mask or rename the key column instead, or narrow the rule's table or column so it leaves the key alone"
    )]
    KeyExcluded {
        /// The source.
        source_id: String,
        /// The source table.
        table: TableId,
        /// The key column.
        column: String,
        /// Index of the rule in the source's `columns`.
        rule: usize,
    },
    /// Two columns would land in one target column.
    #[error(
        "source {source_id}, table {table}: columns `{first}` and `{second}` would both be column `{target}` in the warehouse (names are lowercased there); change the rename rules"
    )]
    NameClash {
        /// The source.
        source_id: String,
        /// The source table.
        table: TableId,
        /// The source column that got the name first.
        first: String,
        /// The source column that would get it too.
        second: String,
        /// The contested (lowercased) name.
        target: String,
    },
}

impl ColumnRuleError {
    /// The source table the rules cannot apply to.
    pub fn table(&self) -> &TableId {
        match self {
            ColumnRuleError::KeyExcluded { table, .. }
            | ColumnRuleError::NameClash { table, .. } => table,
        }
    }
}

/// The target shape of one source shape, and where each target column comes from.
#[derive(Debug)]
struct Shape {
    /// The table as the warehouse gets it.
    schema: Arc<TableSchema>,
    /// Per target column: the source column's index, and whether its values are masked.
    sources: Vec<(usize, bool)>,
    /// True when no rule touches a column: rows pass through as they are.
    unchanged: bool,
}

/// The column rules of one source table, with the last shape worked out (sources send one
/// shape for many changes).
#[derive(Debug, Clone)]
pub struct TableColumns {
    source_id: Arc<str>,
    /// The rules that apply to this table, with their index in the source's `columns`.
    rules: Arc<[(usize, ColumnRule)]>,
    salt: Option<MaskSalt>,
    last: Option<(Arc<TableSchema>, Arc<Shape>)>,
}

impl TableColumns {
    /// The rules of `source` for `table`, or `None` when no rule applies to it.
    pub fn new(source: &SourceConfig, table: &TableId) -> Option<TableColumns> {
        let rules: Vec<(usize, ColumnRule)> = source
            .columns
            .rules
            .iter()
            .enumerate()
            .filter(|(_, rule)| rule.applies_to_table(&table.namespace, &table.name))
            .map(|(i, rule)| (i, rule.clone()))
            .collect();
        (!rules.is_empty()).then(|| TableColumns {
            source_id: Arc::from(source.id.as_str()),
            rules: rules.into(),
            salt: source.columns.salt.clone(),
            last: None,
        })
    }

    /// `schema` as the warehouse gets it.
    pub fn shape_schema(
        &mut self,
        schema: &Arc<TableSchema>,
    ) -> Result<Arc<TableSchema>, Box<ColumnRuleError>> {
        Ok(self.shape_of(schema)?.schema.clone())
    }

    /// `event` as the warehouse gets it: its table's target shape, its rows in that shape.
    pub fn shape<'a>(
        &mut self,
        event: &'a ChangeEvent,
    ) -> Result<Cow<'a, ChangeEvent>, Box<ColumnRuleError>> {
        let shape = self.shape_of(&event.table)?;
        if shape.unchanged {
            return Ok(Cow::Borrowed(event));
        }
        let salt = self.salt.as_ref();
        let row = |row: &Option<Vec<Value>>| {
            row.as_ref().map(|values| {
                shape
                    .sources
                    .iter()
                    .filter_map(|&(i, masked)| {
                        let value = values.get(i)?;
                        Some(match (masked, salt) {
                            (true, Some(salt)) => mask(salt, value),
                            _ => value.clone(),
                        })
                    })
                    .collect()
            })
        };
        Ok(Cow::Owned(ChangeEvent {
            source: event.source.clone(),
            table: shape.schema.clone(),
            op: event.op,
            before: row(&event.before),
            after: row(&event.after),
            position: event.position,
            transaction: event.transaction.clone(),
        }))
    }

    /// The shape for `schema`: the last one when the source's shape did not change.
    fn shape_of(&mut self, schema: &Arc<TableSchema>) -> Result<Arc<Shape>, Box<ColumnRuleError>> {
        if let Some((seen, shape)) = &self.last
            && (Arc::ptr_eq(seen, schema) || seen == schema)
        {
            return Ok(shape.clone());
        }
        let shape = Arc::new(self.work_out(schema)?);
        self.last = Some((schema.clone(), shape.clone()));
        Ok(shape)
    }

    fn work_out(&self, schema: &Arc<TableSchema>) -> Result<Shape, Box<ColumnRuleError>> {
        let mut columns = Vec::with_capacity(schema.columns.len());
        let mut sources = Vec::with_capacity(schema.columns.len());
        let mut unchanged = true;
        for (i, column) in schema.columns.iter().enumerate() {
            let rule = self
                .rules
                .iter()
                .find(|(_, rule)| rule.matches_column(&column.name));
            let Some((index, rule)) = rule else {
                columns.push(column.clone());
                sources.push((i, false));
                continue;
            };
            unchanged = false;
            match &rule.action {
                ColumnAction::Exclude => {
                    if schema.primary_key.contains(&i) {
                        return Err(Box::new(ColumnRuleError::KeyExcluded {
                            source_id: self.source_id.to_string(),
                            table: schema.id.clone(),
                            column: column.name.to_string(),
                            rule: *index,
                        }));
                    }
                }
                ColumnAction::Mask => {
                    columns.push(Column {
                        name: column.name.clone(),
                        ty: ColumnType::Text {
                            max_bytes: Some(MASKED_BYTES),
                            charset: Arc::from("ascii"),
                        },
                        nullable: column.nullable,
                    });
                    sources.push((i, true));
                }
                ColumnAction::Rename(to) => {
                    columns.push(Column {
                        name: Arc::from(to.as_str()),
                        ty: column.ty.clone(),
                        nullable: column.nullable,
                    });
                    sources.push((i, false));
                }
            }
        }
        if unchanged {
            return Ok(Shape {
                schema: schema.clone(),
                sources,
                unchanged,
            });
        }
        for (a, column) in columns.iter().enumerate() {
            let target = column.name.to_lowercase();
            if let Some(b) = columns[..a]
                .iter()
                .position(|c| c.name.to_lowercase() == target)
            {
                return Err(Box::new(ColumnRuleError::NameClash {
                    source_id: self.source_id.to_string(),
                    table: schema.id.clone(),
                    first: schema.columns[sources[b].0].name.to_string(),
                    second: schema.columns[sources[a].0].name.to_string(),
                    target,
                }));
            }
        }
        // Every key column is kept (an excluded one was refused above): find its new place.
        let primary_key = schema
            .primary_key
            .iter()
            .filter_map(|k| sources.iter().position(|&(i, _)| i == *k))
            .collect();
        Ok(Shape {
            schema: Arc::new(TableSchema {
                id: schema.id.clone(),
                columns,
                primary_key,
            }),
            sources,
            unchanged,
        })
    }
}

/// `value` masked: the lowercase hex SHA-256 of the salt followed by its canonical bytes. NULL
/// stays NULL, and a value the change did not carry stays so.
pub fn mask(salt: &MaskSalt, value: &Value) -> Value {
    match value {
        Value::Null | Value::Unchanged => value.clone(),
        _ => {
            let mut hash = Sha256::new();
            hash.update(salt.expose());
            hash.update(canonical_bytes(value));
            Value::Text(to_hex(&hash.finalize()))
        }
    }
}

/// The bytes a masked value hashes: binary values (`BINARY`, `BLOB`, `bytea`) as stored;
/// every other value as UTF-8 text in the form of tidemark's change-event JSON, without
/// quotes: text, decimals, enums and JSON documents as they are, integers in decimal, booleans
/// `true`/`false`, dates `2024-01-02`, datetimes `2024-01-02 03:04:05.000006`, timestamps
/// `2024-01-02T03:04:05.000006Z`, sets as their labels joined by `,`, bits as `0`/`1` digits of
/// their width, geometries `SRID=n;` and their WKB in hex. NULL has none (it is never hashed).
pub fn canonical_bytes(value: &Value) -> Cow<'_, [u8]> {
    let text = match value {
        Value::Null | Value::Unchanged => return Cow::Borrowed(&[]),
        Value::Bytes(bytes) => return Cow::Borrowed(bytes),
        Value::Text(text) | Value::Decimal(text) | Value::Enum(text) | Value::Json(text) => {
            return Cow::Borrowed(text.as_bytes());
        }
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => u.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Double(f) => f.to_string(),
        Value::Date(d) => d.to_string(),
        Value::DateTime(dt) => dt.to_string(),
        Value::Timestamp(us) => format_timestamp_micros(*us),
        Value::Time(us) => format_time_micros(*us),
        Value::Year(y) => y.to_string(),
        Value::Set(labels) => labels.join(","),
        Value::Bit { bits, width } => format!("{:0w$b}", bits, w = usize::from(*width)),
        Value::Geometry { srid, wkb } => format!("SRID={srid};{}", to_hex(wkb)),
        Value::Interval { .. } | Value::Infinity { .. } | Value::Vector(_) => {
            // The JSON envelope's form (a string, or an array of numbers for vectors).
            let json = serde_json::to_string(value).unwrap_or_default();
            json.trim_matches('"').to_owned()
        }
    };
    Cow::Owned(text.into_bytes())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;
    use crate::event::{Op, Position, Transaction};

    fn configured(rules: &str) -> SourceConfig {
        let text = format!(
            "[group]\nname = \"g\"\nmask_salt = \"pepper\"\n[warehouse]\nkind = \"null\"\n\
             [[sources]]\nid = \"s\"\nkind = \"mysql\"\nurl = \"mysql://src\"\ntenant = \"t\"\n\
             region = \"r\"\nfunction = \"f\"\ninclude = [\"shop.*\"]\nsnapshot = \"never\"\n{rules}"
        );
        match Config::from_str_with_env(&text, Path::new("t.toml"), &|_| None) {
            Ok(config) => config.sources.into_iter().next().expect("a source"),
            Err(e) => panic!("{e}"),
        }
    }

    fn int() -> ColumnType {
        ColumnType::Int {
            bits: 32,
            unsigned: false,
        }
    }

    fn text() -> ColumnType {
        ColumnType::Text {
            max_bytes: None,
            charset: Arc::from("utf8mb4"),
        }
    }

    fn customers() -> Arc<TableSchema> {
        let column = |name: &str, ty: ColumnType| Column {
            name: name.into(),
            ty,
            nullable: true,
        };
        Arc::new(TableSchema {
            id: TableId::new("shop", "customers"),
            columns: vec![
                column("note", text()),
                column("id", int()),
                column("email", text()),
                column("ssn", text()),
                column("Name", text()),
            ],
            primary_key: vec![1],
        })
    }

    fn change(table: &Arc<TableSchema>, after: Vec<Value>) -> ChangeEvent {
        ChangeEvent {
            source: "s".into(),
            table: table.clone(),
            op: Op::Insert,
            before: None,
            after: Some(after),
            position: Position { txn: 1, seq: 0 },
            transaction: Arc::new(Transaction {
                id: "1".into(),
                gtid: None,
                commit_ts_micros: 0,
                log_coordinate: 1,
            }),
        }
    }

    fn sha256_hex(bytes: &[u8]) -> String {
        to_hex(&Sha256::digest(bytes))
    }

    const RULES: &str = r#"
[[sources.columns]]
table = "shop.cust*"
column = "ssn"
action = "exclude"
[[sources.columns]]
table = "shop.customers"
column = "email"
action = "mask"
[[sources.columns]]
table = "shop.*"
column = "Name"
action = "rename"
to = "full_name"
[[sources.columns]]
table = "shop.*"
column = "*"
action = "mask"
"#;

    #[test]
    fn first_matching_rule_wins_and_rows_follow_the_shape() {
        let source = configured(RULES);
        let table = customers();
        let mut columns = TableColumns::new(&source, &table.id).expect("rules apply");
        let event = change(
            &table,
            vec![
                Value::Null,
                Value::Int(7),
                Value::Text("a@example.com".into()),
                Value::Text("123-45-6789".into()),
                Value::Text("Ann".into()),
            ],
        );
        let shaped = columns.shape(&event).unwrap();
        let names: Vec<&str> = shaped.table.columns.iter().map(|c| &*c.name).collect();
        assert_eq!(names, ["note", "id", "email", "full_name"]);
        // The catch-all mask took `note` and the key `id`; the key follows its column.
        assert_eq!(shaped.table.primary_key, vec![1]);
        assert!(matches!(
            shaped.table.columns[1].ty,
            ColumnType::Text { .. }
        ));
        assert_eq!(shaped.table.columns[3].ty, text());
        let after = shaped.after.as_ref().unwrap();
        assert_eq!(after[0], Value::Null, "NULL stays NULL");
        assert_eq!(after[1], Value::Text(sha256_hex(b"pepper7")));
        assert_eq!(after[2], Value::Text(sha256_hex(b"peppera@example.com")));
        assert_eq!(after[3], Value::Text("Ann".into()));
        // The shape is worked out once per source shape.
        let again = columns.shape(&event).unwrap();
        assert!(Arc::ptr_eq(&again.table, &shaped.table));
    }

    #[test]
    fn tables_without_rules_pass_through() {
        let source = configured(RULES);
        assert!(TableColumns::new(&source, &TableId::new("other", "customers")).is_none());
        let source = configured(
            "[[sources.columns]]\ntable = \"shop.*\"\ncolumn = \"nope\"\naction = \"exclude\"\n",
        );
        let table = customers();
        let mut columns = TableColumns::new(&source, &table.id).unwrap();
        let event = change(&table, vec![Value::Null; 5]);
        assert!(matches!(columns.shape(&event).unwrap(), Cow::Borrowed(_)));
    }

    #[test]
    fn excluding_a_key_column_or_clashing_names_is_an_error_naming_table_and_column() {
        let table = customers();
        let source = configured(
            "[[sources.columns]]\ntable = \"shop.*\"\ncolumn = \"i?\"\naction = \"exclude\"\n",
        );
        let mut columns = TableColumns::new(&source, &table.id).unwrap();
        let e = columns.shape_schema(&table).unwrap_err();
        assert_eq!(e.table(), &table.id);
        let message = e.to_string();
        assert!(
            message.contains("source s, table shop.customers") && message.contains("`id`"),
            "{message}"
        );

        let source = configured(
            "[[sources.columns]]\ntable = \"shop.*\"\ncolumn = \"email\"\naction = \"rename\"\nto = \"NAME\"\n",
        );
        let mut columns = TableColumns::new(&source, &table.id).unwrap();
        let e = columns.shape_schema(&table).unwrap_err();
        assert!(
            matches!(*e, ColumnRuleError::NameClash { ref target, .. } if target == "name"),
            "{e}"
        );
    }

    #[test]
    fn canonical_bytes_are_the_values_text_or_raw_bytes() {
        assert_eq!(&*canonical_bytes(&Value::Bytes(vec![0, 255])), &[0, 255]);
        assert_eq!(&*canonical_bytes(&Value::Int(-5)), b"-5");
        assert_eq!(
            &*canonical_bytes(&Value::UInt(u64::MAX)),
            b"18446744073709551615"
        );
        assert_eq!(&*canonical_bytes(&Value::Decimal("1.50".into())), b"1.50");
        assert_eq!(&*canonical_bytes(&Value::Bool(true)), b"true");
        assert_eq!(
            &*canonical_bytes(&Value::Set(vec!["a".into(), "b".into()])),
            b"a,b"
        );
        assert_eq!(
            &*canonical_bytes(&Value::Timestamp(0)),
            format_timestamp_micros(0).as_bytes()
        );
        assert_eq!(
            &*canonical_bytes(&Value::Infinity { negative: true }),
            b"-infinity"
        );
        let salt = MaskSalt::new("s");
        assert_eq!(mask(&salt, &Value::Unchanged), Value::Unchanged);
        assert_eq!(mask(&salt, &Value::Null), Value::Null);
    }
}
