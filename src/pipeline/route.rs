//! Which warehouse table each source table lands in (`target_schema`, `table_names`,
//! `target_table`), and the shape its rows take there (`columns` rules).
//!
//! Invariant: within one source, two different source tables never share a target table;
//! the second one to claim a name is an error naming both, never a silent merge of two tables.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use super::columns::{ColumnRuleError, TableColumns};
use crate::config::SourceConfig;
use crate::event::{ChangeEvent, TableId};
use crate::sink::TargetTable;

/// Two source tables that would land in one target table.
#[derive(Debug, thiserror::Error)]
#[error(
    "source tables {first} and {second} both map to target table {target}; set target_table for source {source_id} so that names stay distinct (e.g. \"{{database}}__{{table}}\"), or exclude one of them"
)]
pub struct RouteConflict {
    /// The source.
    pub source_id: String,
    /// The table that claimed the name first.
    pub first: TableId,
    /// The table that wanted it too.
    pub second: TableId,
    /// The contested name.
    pub target: TargetTable,
}

/// Routes one source's tables; remembers every decision so each table is resolved once.
#[derive(Debug)]
pub struct Router {
    source: SourceConfig,
    schema: String,
    routes: HashMap<TableId, Option<TargetTable>>,
    claims: HashMap<TargetTable, TableId>,
    /// Tables whose changes are no longer applied: routed nowhere.
    set_aside: HashSet<TableId>,
    /// The column rules of each table met, when the source has any.
    columns: HashMap<TableId, Option<TableColumns>>,
}

impl Router {
    /// A router for `source`'s tables.
    pub fn new(source: &SourceConfig) -> Router {
        Router {
            schema: source.staging_schema(),
            source: source.clone(),
            routes: HashMap::new(),
            claims: HashMap::new(),
            set_aside: HashSet::new(),
            columns: HashMap::new(),
        }
    }

    /// The column rules that apply to `table`, if any (resolved once per table).
    pub fn columns(&mut self, table: &TableId) -> Option<&mut TableColumns> {
        if self.source.columns.is_empty() {
            return None;
        }
        self.columns
            .entry(table.clone())
            .or_insert_with(|| TableColumns::new(&self.source, table))
            .as_mut()
    }

    /// `event` as the warehouse gets it: its table's column rules applied (borrowed as it is
    /// when none apply).
    pub fn shape<'a>(
        &mut self,
        event: &'a ChangeEvent,
    ) -> Result<Cow<'a, ChangeEvent>, Box<ColumnRuleError>> {
        match self.columns(&event.table.id) {
            Some(columns) => columns.shape(event),
            None => Ok(Cow::Borrowed(event)),
        }
    }

    /// Routes `table` nowhere from now on (its changes could not be applied).
    pub fn set_aside(&mut self, table: &TableId) {
        self.set_aside.insert(table.clone());
        self.routes.remove(table);
    }

    /// Routes `table` as its config says again.
    pub fn bring_back(&mut self, table: &TableId) {
        self.set_aside.remove(table);
        self.routes.remove(table);
    }

    /// The target of `table`, or `None` when the source's include/exclude leave it out.
    pub fn route(&mut self, table: &TableId) -> Result<Option<&TargetTable>, Box<RouteConflict>> {
        if !self.routes.contains_key(table) {
            let target = self.target_of(table);
            if let Some(target) = &target {
                self.claim(table, target)?;
            }
            self.routes.insert(table.clone(), target);
        }
        Ok(self.routes.get(table).and_then(Option::as_ref))
    }

    /// Follows a source rename: returns the target tables to rename, when both names are
    /// replicated (a table renamed out of the include set keeps its target table as it is; one
    /// renamed into it starts a new target table at its first change).
    pub fn rename(
        &mut self,
        from: &TableId,
        to: &TableId,
    ) -> Result<Option<(TargetTable, TargetTable)>, Box<RouteConflict>> {
        let old = self.target_of(from);
        let new = self.target_of(to);
        self.routes.remove(from);
        self.routes.remove(to);
        self.columns.remove(from);
        self.columns.remove(to);
        if let Some(old) = &old {
            self.claims.remove(old);
        }
        match (old, new) {
            (Some(old), Some(new)) if old != new => {
                self.claim(to, &new)?;
                self.routes.insert(to.clone(), Some(new.clone()));
                Ok(Some((old, new)))
            }
            _ => Ok(None),
        }
    }

    fn target_of(&self, table: &TableId) -> Option<TargetTable> {
        if self.set_aside.contains(table) {
            return None;
        }
        self.source
            .includes_table(&table.namespace, &table.name)
            .then(|| TargetTable {
                schema: self.schema.clone(),
                table: self.source.target_table_name(&table.namespace, &table.name),
            })
    }

    fn claim(&mut self, table: &TableId, target: &TargetTable) -> Result<(), Box<RouteConflict>> {
        match self.claims.get(target) {
            Some(first) if first != table => Err(Box::new(RouteConflict {
                source_id: self.source.id.clone(),
                first: first.clone(),
                second: table.clone(),
                target: target.clone(),
            })),
            _ => {
                self.claims.insert(target.clone(), table.clone());
                Ok(())
            }
        }
    }
}
