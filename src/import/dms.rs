//! AWS DMS table mappings (`{"rules": [...]}`) to one `[[sources]]` entry of tidemark config.
//!
//! What converts: selection rules (`include`, `explicit` and `exclude`, `%` wildcards as `*`)
//! to `include` / `exclude`; transformation rules renaming a schema or adding a prefix or
//! suffix to it to `target_schema`; renaming a table to `table_names`; adding a prefix or suffix
//! to every table to `target_table`; renaming a column to a `rename` column rule; removing a
//! column to an `exclude` column rule; `convert-lowercase` is what tidemark does anyway.
//!
//! Invariant: every rule is either expressed in the fragment or listed in
//! [`Conversion::unexpressed`] with the reason; a rule expressed only in part (a table kept but
//! its `load-order` ignored) is listed too. Nothing is dropped without a word.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{Map, Value};

use crate::config::TablePattern;

/// Why a DMS table-mapping file cannot be converted at all.
#[derive(Debug, thiserror::Error)]
pub enum DmsError {
    /// The text is not JSON.
    #[error("line {line}, column {column}: not valid JSON: {message}")]
    Json {
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// serde_json's description.
        message: String,
    },
    /// JSON, but not a DMS table mapping.
    #[error("not an AWS DMS table mapping: {0}")]
    NotTableMapping(String),
}

/// One rule, or part of one, that the fragment does not express.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unexpressed {
    /// The rule, as `rule 7 ("rename-orders")`.
    pub rule: String,
    /// Why it is not expressed, and what to do instead.
    pub reason: String,
}

/// The result of a conversion.
#[derive(Debug, Clone)]
pub struct Conversion {
    /// The TOML fragment: one `[[sources]]` entry with a comment header.
    pub toml: String,
    /// Rules (or parts of rules) the fragment does not express, in file order.
    pub unexpressed: Vec<Unexpressed>,
    /// Rules expressed by what tidemark does anyway, with how.
    pub notes: Vec<String>,
}

/// How the fragment is introduced.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The `id` of the source; default: derived from the target schema.
    pub source_id: Option<String>,
    /// The file the rules came from, for the header.
    pub file_name: String,
}

/// A name transformation of DMS, on schemas or tables.
#[derive(Debug, Clone)]
enum Naming {
    Rename(String),
    Prefix(String),
    Suffix(String),
}

/// A schema-level transformation and the schemas it applies to.
#[derive(Debug, Clone)]
struct SchemaRule {
    label: String,
    locator: String,
    naming: Naming,
}

/// A column rule of the fragment.
#[derive(Debug, Clone)]
struct ColumnLine {
    table: String,
    column: String,
    rename_to: Option<String>,
}

/// What the rules say, gathered before the fragment is written.
#[derive(Debug, Default)]
struct Gathered {
    rules: usize,
    include: Vec<(String, String)>,
    exclude: Vec<String>,
    schema_rules: Vec<SchemaRule>,
    table_renames: Vec<(String, String, String, String)>,
    table_affixes: Vec<(String, String, Naming)>,
    columns: Vec<ColumnLine>,
    unexpressed: Vec<Unexpressed>,
    notes: Vec<String>,
}

impl Gathered {
    fn unexpressed(&mut self, rule: &str, reason: impl Into<String>) {
        self.unexpressed.push(Unexpressed {
            rule: rule.to_owned(),
            reason: reason.into(),
        });
    }
}

/// Converts DMS table mappings `json` into a `[[sources]]` fragment.
pub fn convert(json: &str, options: &Options) -> Result<Conversion, DmsError> {
    let document: Value = serde_json::from_str(json).map_err(|e| {
        // serde_json's text ends with the position, which the error names apart.
        let position = format!(" at line {} column {}", e.line(), e.column());
        let text = e.to_string();
        DmsError::Json {
            line: e.line(),
            column: e.column(),
            message: text.strip_suffix(&position).unwrap_or(&text).to_owned(),
        }
    })?;
    let rules = document
        .as_object()
        .and_then(|o| o.get("rules"))
        .and_then(Value::as_array)
        .ok_or_else(|| {
            DmsError::NotTableMapping("expected an object with a \"rules\" array".into())
        })?;
    let mut gathered = Gathered {
        rules: rules.len(),
        ..Gathered::default()
    };
    for (i, rule) in rules.iter().enumerate() {
        match rule.as_object() {
            Some(rule) => gather(&mut gathered, rule),
            None => gathered.unexpressed(&format!("rules[{i}]"), "not a JSON object"),
        }
    }
    Ok(write(gathered, options))
}

/// A string field of a rule (DMS writes ids as strings, sometimes as numbers).
fn field(rule: &Map<String, Value>, name: &str) -> Option<String> {
    match rule.get(name)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A field of the rule's object-locator.
fn locator(rule: &Map<String, Value>, name: &str) -> Option<String> {
    rule.get("object-locator")
        .and_then(Value::as_object)
        .and_then(|l| field(l, name))
}

/// A DMS name pattern (`%` any run of characters) as a tidemark glob, or why it cannot be one.
fn glob(pattern: &str) -> Result<String, String> {
    if pattern.contains(['*', '?']) {
        return Err(format!(
            "name pattern `{pattern}` holds `*` or `?`, which tidemark reads as wildcards; write the config by hand"
        ));
    }
    Ok(pattern.replace('%', "*"))
}

fn is_wildcard(pattern: &str) -> bool {
    pattern.contains('%')
}

/// True when the DMS locator `pattern` matches `name` (`%` any run of characters).
fn locator_matches(pattern: &str, name: &str) -> bool {
    TablePattern::parse(&format!("{}.x", pattern.replace('%', "*")))
        .is_ok_and(|p| p.matches(name, "x"))
}

fn gather(g: &mut Gathered, rule: &Map<String, Value>) {
    let id = field(rule, "rule-id").unwrap_or_else(|| "?".into());
    let label = match field(rule, "rule-name") {
        Some(name) if name != id => format!("rule {id} (\"{name}\")"),
        _ => format!("rule {id}"),
    };
    let action = field(rule, "rule-action").unwrap_or_default();
    match field(rule, "rule-type").as_deref() {
        Some("selection") => selection(g, rule, &label, &action),
        Some("transformation") => transformation(g, rule, &label, &action),
        Some("table-settings") => g.unexpressed(
            &label,
            "table-settings (parallel load, LOB handling, ...) have no equivalent: tidemark copies each table in key-range chunks (snapshot_parallelism, snapshot_chunk_rows) and never truncates LOBs",
        ),
        Some(other) => g.unexpressed(
            &label,
            format!("rule-type \"{other}\" has no tidemark equivalent"),
        ),
        None => g.unexpressed(&label, "the rule has no rule-type"),
    }
}

fn selection(g: &mut Gathered, rule: &Map<String, Value>, label: &str, action: &str) {
    let (Some(schema), Some(table)) = (locator(rule, "schema-name"), locator(rule, "table-name"))
    else {
        g.unexpressed(
            label,
            "a selection rule needs object-locator schema-name and table-name",
        );
        return;
    };
    let pattern = match (glob(&schema), glob(&table)) {
        (Ok(s), Ok(t)) => format!("{s}.{t}"),
        (Err(reason), _) | (_, Err(reason)) => {
            g.unexpressed(label, reason);
            return;
        }
    };
    let filtered = rule
        .get("filters")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty());
    if filtered {
        g.unexpressed(
            label,
            format!(
                "row filters are not supported (tidemark replicates whole tables): `{pattern}` is left out; include it by hand if all its rows may go to the warehouse"
            ),
        );
        return;
    }
    match field(rule, "table-type").as_deref() {
        None | Some("table") => {}
        Some("view") => {
            g.unexpressed(
                label,
                format!("views are not replicated (no change log): `{pattern}` is left out"),
            );
            return;
        }
        Some(other) => g.unexpressed(
            label,
            format!(
                "table-type \"{other}\": only the tables of `{pattern}` are replicated, views have no change log"
            ),
        ),
    }
    if let Some(order) = field(rule, "load-order").filter(|o| o != "0") {
        g.unexpressed(
            label,
            format!(
                "load-order {order} is ignored: tidemark copies tables in the order it lists them while streaming changes"
            ),
        );
    }
    match action {
        "include" | "explicit" => g.include.push((label.to_owned(), pattern)),
        "exclude" => g.exclude.push(pattern),
        other => g.unexpressed(
            label,
            format!("selection rule-action \"{other}\" is unknown; expected include, explicit or exclude"),
        ),
    }
}

fn transformation(g: &mut Gathered, rule: &Map<String, Value>, label: &str, action: &str) {
    let target = field(rule, "rule-target").unwrap_or_default();
    let value = field(rule, "value");
    let schema = locator(rule, "schema-name").unwrap_or_else(|| "%".into());
    let table = locator(rule, "table-name").unwrap_or_else(|| "%".into());
    let column = locator(rule, "column-name");
    let naming = |action: &str, value: Option<String>| -> Option<Naming> {
        let value = value?;
        match action {
            "rename" => Some(Naming::Rename(value)),
            "add-prefix" => Some(Naming::Prefix(value)),
            "add-suffix" => Some(Naming::Suffix(value)),
            _ => None,
        }
    };
    match (target.as_str(), action) {
        (_, "convert-lowercase") => g.notes.push(format!(
            "{label}: convert-lowercase on {target} names: tidemark lowercases every warehouse name already"
        )),
        (_, "convert-uppercase") => g.unexpressed(
            label,
            "convert-uppercase: tidemark lowercases every warehouse name (Redshift folds unquoted names to lowercase)",
        ),
        ("schema", "rename" | "add-prefix" | "add-suffix") => {
            match naming(action, value) {
                Some(naming) if !naming_has_braces(&naming) => g.schema_rules.push(SchemaRule {
                    label: label.to_owned(),
                    locator: schema,
                    naming,
                }),
                Some(_) => g.unexpressed(label, "the new name holds `{` or `}`, which tidemark's templates reserve"),
                None => g.unexpressed(label, format!("{action} needs a value")),
            }
        }
        ("table", "rename") => {
            let Some(to) = value else {
                g.unexpressed(label, "rename needs a value");
                return;
            };
            if is_wildcard(&schema) || is_wildcard(&table) {
                g.unexpressed(
                    label,
                    "renaming every table a pattern matches to one name would merge them; table_names takes exact names",
                );
                return;
            }
            g.table_renames
                .push((label.to_owned(), schema, table, to));
        }
        ("table", "add-prefix" | "add-suffix") => {
            let Some(naming) = naming(action, value) else {
                g.unexpressed(label, format!("{action} needs a value"));
                return;
            };
            if table != "%" {
                g.unexpressed(
                    label,
                    format!(
                        "{action} on tables `{table}` only: tidemark's target_table template applies to every table of the source; name these tables in table_names instead"
                    ),
                );
                return;
            }
            if naming_has_braces(&naming) {
                g.unexpressed(label, "the text holds `{` or `}`, which tidemark's templates reserve");
                return;
            }
            g.table_affixes.push((label.to_owned(), schema, naming));
        }
        ("column", "rename" | "remove-column") => {
            let Some(column) = column else {
                g.unexpressed(label, "a column rule needs object-locator column-name");
                return;
            };
            let (table_glob, column_glob) = match (glob(&schema), glob(&table), glob(&column)) {
                (Ok(s), Ok(t), Ok(c)) => (format!("{s}.{t}"), c),
                (Err(reason), ..) | (_, Err(reason), _) | (.., Err(reason)) => {
                    g.unexpressed(label, reason);
                    return;
                }
            };
            let rename_to = if action == "rename" {
                let Some(to) = value else {
                    g.unexpressed(label, "rename needs a value");
                    return;
                };
                if is_wildcard(&column) {
                    g.unexpressed(
                        label,
                        "renaming every column a pattern matches to one name; a rename names one column exactly",
                    );
                    return;
                }
                Some(to)
            } else {
                None
            };
            g.columns.push(ColumnLine {
                table: table_glob,
                column: column_glob,
                rename_to,
            });
        }
        ("column", "add-column") => g.unexpressed(
            label,
            "add-column: tidemark adds only its own metadata columns (_tidemark_*); compute the column in the warehouse (a view)",
        ),
        ("column", "change-data-type") => g.unexpressed(
            label,
            "change-data-type: tidemark maps each source type to the warehouse type that holds every value exactly (docs/types.md); cast in the warehouse (a view)",
        ),
        ("column", a) if a.starts_with("data-masking") => g.unexpressed(
            label,
            format!(
                "{a}: tidemark's column rule action = \"mask\" writes a salted SHA-256 ([group] mask_salt), not DMS's values; add it by hand if a salted hash will do"
            ),
        ),
        (_, "remove-prefix" | "remove-suffix" | "replace-prefix" | "replace-suffix") => g.unexpressed(
            label,
            format!(
                "{action}: tidemark's templates add text to a name but cannot remove or replace part of it; name the tables in table_names instead"
            ),
        ),
        (_, "define-primary-key") => g.unexpressed(
            label,
            "define-primary-key: tidemark keys target tables by the source's primary key (tables without one load in append mode)",
        ),
        (_, "add-before-image-columns") => g.unexpressed(
            label,
            "add-before-image-columns: tidemark writes the row after each change (and _tidemark_op, _tidemark_position, _tidemark_commit_ts), not before-images",
        ),
        (target, action) => g.unexpressed(
            label,
            format!("transformation {action} on rule-target \"{target}\" has no tidemark equivalent"),
        ),
    }
}

fn naming_has_braces(naming: &Naming) -> bool {
    let (Naming::Rename(text) | Naming::Prefix(text) | Naming::Suffix(text)) = naming;
    text.contains(['{', '}'])
}

/// The target schema DMS gives schema `schema` (a literal name): its rename, prefix and suffix
/// rules applied. Returns the name and the labels of the rules that made it.
fn dms_target_schema(rules: &[SchemaRule], schema: &str) -> (String, Vec<String>) {
    let mut name = schema.to_owned();
    let mut prefix = String::new();
    let mut suffix = String::new();
    let mut used = Vec::new();
    for rule in rules.iter().filter(|r| locator_matches(&r.locator, schema)) {
        used.push(rule.label.clone());
        match &rule.naming {
            Naming::Rename(to) => name = to.clone(),
            Naming::Prefix(p) => prefix = p.clone(),
            Naming::Suffix(s) => suffix = s.clone(),
        }
    }
    (format!("{prefix}{name}{suffix}").to_lowercase(), used)
}

/// `target_schema`: the one schema DMS would load every included table into, if there is one.
fn target_schema(g: &mut Gathered) -> Option<String> {
    let mut targets: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut used_rules: Vec<String> = Vec::new();
    let mut unknown: Vec<String> = Vec::new();
    for (_, pattern) in &g.include {
        let schema = pattern.split_once('.').map_or("", |(s, _)| s);
        if schema.contains(['*', '?']) {
            // Every schema the pattern matches lands in one place only if a rule matching all
            // of them names it.
            let all = g
                .schema_rules
                .iter()
                .filter(|r| r.locator == "%")
                .collect::<Vec<_>>();
            if all.iter().any(|r| matches!(r.naming, Naming::Rename(_))) {
                let rules: Vec<SchemaRule> = all.into_iter().cloned().collect();
                let (name, used) = dms_target_schema(&rules, "?");
                used_rules.extend(used);
                targets.entry(name).or_default().push(schema.to_owned());
            } else {
                unknown.push(schema.to_owned());
            }
            continue;
        }
        let (name, used) = dms_target_schema(&g.schema_rules, schema);
        used_rules.extend(used);
        targets.entry(name).or_default().push(schema.to_owned());
    }
    let schema_rule_labels: Vec<String> = g.schema_rules.iter().map(|r| r.label.clone()).collect();
    for label in &schema_rule_labels {
        if !used_rules.contains(label) {
            g.notes.push(format!(
                "{label}: applies to no included schema, so it changes nothing"
            ));
        }
    }
    if !unknown.is_empty() {
        let labels: Vec<&str> = g.include.iter().map(|(l, _)| l.as_str()).collect();
        g.unexpressed(
            &labels.join(", "),
            format!(
                "schemas matching `{}` keep their own names as DMS target schemas, and one tidemark source loads into one schema: list the schemas, or add a schema rename for `%`, or split the source into one [[sources]] per schema",
                unknown.join("`, `")
            ),
        );
        return None;
    }
    if targets.len() > 1 {
        let listing: Vec<String> = targets
            .iter()
            .map(|(target, schemas)| format!("{} -> {target}", schemas.join(", ")))
            .collect();
        let mut labels = schema_rule_labels;
        if labels.is_empty() {
            labels = g.include.iter().map(|(l, _)| l.clone()).collect();
        }
        g.unexpressed(
            &labels.join(", "),
            format!(
                "included schemas land in different DMS target schemas ({}); one tidemark source loads into one schema: split it into one [[sources]] per target schema",
                listing.join("; ")
            ),
        );
        return None;
    }
    let target = targets.into_keys().next()?;
    match crate::config::schema_name_problem(&target) {
        Some(problem) => {
            let labels = if used_rules.is_empty() {
                g.include.iter().map(|(l, _)| l.clone()).collect()
            } else {
                used_rules
            };
            g.unexpressed(
                &labels.join(", "),
                format!("target schema `{target}` {problem}"),
            );
            None
        }
        None => Some(target),
    }
}

/// `target_table`: `{table}` with every table's prefix and suffix.
fn target_table(g: &mut Gathered) -> String {
    let (mut prefix, mut suffix) = (String::new(), String::new());
    let schemas: Vec<String> = g
        .include
        .iter()
        .map(|(_, p)| p.split_once('.').map_or("", |(s, _)| s).to_owned())
        .collect();
    for (label, locator, naming) in std::mem::take(&mut g.table_affixes) {
        let covers_all = locator == "%"
            || schemas
                .iter()
                .all(|s| !s.contains(['*', '?']) && locator_matches(&locator, s));
        if !covers_all {
            g.unexpressed(
                &label,
                format!(
                    "applies to the tables of schema `{locator}` only, and target_table applies to every table of the source; name these tables in table_names instead"
                ),
            );
            continue;
        }
        match naming {
            Naming::Prefix(p) => prefix = p,
            Naming::Suffix(s) => suffix = s,
            Naming::Rename(_) => {}
        }
    }
    format!("{prefix}{{table}}{suffix}")
}

/// True when `schema.table` is replicated by the gathered include/exclude patterns.
fn replicated(g: &Gathered, schema: &str, table: &str) -> bool {
    let matches =
        |pattern: &str| TablePattern::parse(pattern).is_ok_and(|p| p.matches(schema, table));
    g.include.iter().any(|(_, p)| matches(p)) && !g.exclude.iter().any(|p| matches(p))
}

fn quoted(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

fn write(mut g: Gathered, options: &Options) -> Conversion {
    let schema = target_schema(&mut g);
    let table_template = target_table(&mut g);
    let mut table_names: Vec<(String, String)> = Vec::new();
    for (label, schema_name, table, to) in std::mem::take(&mut g.table_renames) {
        if replicated(&g, &schema_name, &table) {
            table_names.push((format!("{schema_name}.{table}"), to.to_lowercase()));
        } else {
            g.notes.push(format!(
                "{label}: renames {schema_name}.{table}, which no selection rule includes, so it changes nothing"
            ));
        }
    }
    if g.include.is_empty() {
        g.unexpressed(
            "selection rules",
            "no selection rule includes a table, so the source would replicate nothing; tidemark's default (every table) is not what DMS does",
        );
    }
    let id = options.source_id.clone().unwrap_or_else(|| {
        schema
            .as_deref()
            .map_or_else(|| "dms-import".to_owned(), |s| s.replace('_', "-"))
    });

    let mut out = String::new();
    let _ = writeln!(
        out,
        "# One tidemark [[sources]] entry converted by `tidemark import dms-rules` from the {} AWS DMS table-mapping rules of {}.",
        g.rules, options.file_name
    );
    let _ = writeln!(
        out,
        "# Add the source's connection keys (kind, url, tenant, region, function, snapshot) below `id`; docs/dms-import.md says how each rule converts."
    );
    if g.unexpressed.is_empty() {
        out.push_str("# Every rule is expressed.\n");
    } else {
        let _ = writeln!(
            out,
            "# NOT EXPRESSED ({} of the rules, or parts of them; decide what to do about each before use):",
            g.unexpressed.len()
        );
        for item in &g.unexpressed {
            let _ = writeln!(out, "#   {}: {}", item.rule, item.reason);
        }
    }
    for note in &g.notes {
        let _ = writeln!(out, "# Note: {note}");
    }
    out.push_str("\n[[sources]]\n");
    let _ = writeln!(out, "id = {}", quoted(&id));
    let parts: Vec<&str> = schema
        .as_deref()
        .map_or(Vec::new(), |s| s.split('_').collect());
    let guess = |i: usize| {
        if parts.len() == 3 {
            quoted(parts[i])
        } else {
            "\"...\"".to_owned()
        }
    };
    let _ = writeln!(
        out,
        "# kind = \"mysql\"                          # or \"postgres\"\n# url = \"mysql://USER:${{PASSWORD}}@HOST:3306\"\n# tenant = {}\n# region = {}\n# function = {}\n# snapshot = \"initial\"",
        guess(0),
        guess(1),
        guess(2)
    );
    let list = |patterns: &[String]| -> String {
        let items: Vec<String> = patterns.iter().map(|p| quoted(p)).collect();
        format!("[{}]", items.join(", "))
    };
    let include: Vec<String> = g.include.iter().map(|(_, p)| p.clone()).collect();
    if !include.is_empty() {
        let _ = writeln!(out, "include = {}", list(&include));
    }
    if !g.exclude.is_empty() {
        let _ = writeln!(out, "exclude = {}", list(&g.exclude));
    }
    if let Some(schema) = &schema {
        let _ = writeln!(out, "target_schema = {}", quoted(schema));
    }
    let _ = writeln!(out, "target_table = {}", quoted(&table_template));
    if !table_names.is_empty() {
        out.push_str("\n[sources.table_names]\n");
        for (from, to) in &table_names {
            let _ = writeln!(out, "{} = {}", quoted(from), quoted(to));
        }
    }
    for rule in &g.columns {
        out.push_str("\n[[sources.columns]]\n");
        let _ = writeln!(out, "table = {}", quoted(&rule.table));
        let _ = writeln!(out, "column = {}", quoted(&rule.column));
        match &rule.rename_to {
            Some(to) => {
                let _ = writeln!(out, "action = \"rename\"\nto = {}", quoted(to));
            }
            None => out.push_str("action = \"exclude\"\n"),
        }
    }
    Conversion {
        toml: out,
        unexpressed: g.unexpressed,
        notes: g.notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(json: &str) -> Conversion {
        convert(
            json,
            &Options {
                source_id: Some("acme-in-txn".into()),
                file_name: "t.json".into(),
            },
        )
        .unwrap()
    }

    #[test]
    fn selection_and_renames_convert() {
        let c = run(r#"{"rules": [
            {"rule-type": "selection", "rule-id": "1", "rule-name": "1",
             "object-locator": {"schema-name": "shop", "table-name": "%"}, "rule-action": "include"},
            {"rule-type": "selection", "rule-id": "2", "rule-name": "2",
             "object-locator": {"schema-name": "shop", "table-name": "tmp%"}, "rule-action": "exclude"},
            {"rule-type": "transformation", "rule-id": "3", "rule-name": "3", "rule-target": "schema",
             "object-locator": {"schema-name": "shop"}, "rule-action": "rename", "value": "ACME_IN_TXN"},
            {"rule-type": "transformation", "rule-id": "4", "rule-name": "4", "rule-target": "table",
             "object-locator": {"schema-name": "shop", "table-name": "cust"}, "rule-action": "rename", "value": "customers"},
            {"rule-type": "transformation", "rule-id": "5", "rule-name": "5", "rule-target": "column",
             "object-locator": {"schema-name": "shop", "table-name": "cust", "column-name": "ssn"}, "rule-action": "remove-column"},
            {"rule-type": "transformation", "rule-id": "6", "rule-name": "6", "rule-target": "column",
             "object-locator": {"schema-name": "shop", "table-name": "%", "column-name": "nm"}, "rule-action": "rename", "value": "name"},
            {"rule-type": "transformation", "rule-id": "7", "rule-name": "7", "rule-target": "table",
             "object-locator": {"schema-name": "%", "table-name": "%"}, "rule-action": "add-prefix", "value": "src_"},
            {"rule-type": "transformation", "rule-id": "8", "rule-name": "8", "rule-target": "schema",
             "object-locator": {"schema-name": "%"}, "rule-action": "convert-lowercase"}
        ]}"#);
        assert!(c.unexpressed.is_empty(), "{:?}", c.unexpressed);
        let toml = &c.toml;
        for line in [
            "id = \"acme-in-txn\"",
            "include = [\"shop.*\"]",
            "exclude = [\"shop.tmp*\"]",
            "target_schema = \"acme_in_txn\"",
            "target_table = \"src_{table}\"",
            "[sources.table_names]\n\"shop.cust\" = \"customers\"",
            "table = \"shop.cust\"\ncolumn = \"ssn\"\naction = \"exclude\"",
            "table = \"shop.*\"\ncolumn = \"nm\"\naction = \"rename\"\nto = \"name\"",
            "# tenant = \"acme\"",
            "Every rule is expressed",
        ] {
            assert!(toml.contains(line), "{line} not in\n{toml}");
        }
        assert!(
            c.notes.iter().any(|n| n.contains("rule 8")),
            "{:?}",
            c.notes
        );
        // The fragment is TOML.
        toml::from_str::<toml::Table>(toml).unwrap();
    }

    #[test]
    fn what_cannot_be_expressed_is_listed_with_its_reason() {
        let c = run(r#"{"rules": [
            {"rule-type": "selection", "rule-id": "1", "rule-name": "sel",
             "object-locator": {"schema-name": "shop", "table-name": "%"}, "rule-action": "include", "load-order": "2"},
            {"rule-type": "selection", "rule-id": "2", "rule-name": "2",
             "object-locator": {"schema-name": "billing", "table-name": "%"}, "rule-action": "include"},
            {"rule-type": "selection", "rule-id": "3", "rule-name": "3",
             "object-locator": {"schema-name": "shop", "table-name": "big"}, "rule-action": "include",
             "filters": [{"filter-type": "source", "column-name": "id", "filter-conditions": []}]},
            {"rule-type": "transformation", "rule-id": "4", "rule-name": "4", "rule-target": "schema",
             "object-locator": {"schema-name": "shop"}, "rule-action": "rename", "value": "a"},
            {"rule-type": "transformation", "rule-id": "5", "rule-name": "5", "rule-target": "column",
             "object-locator": {"schema-name": "shop", "table-name": "t", "column-name": "c"}, "rule-action": "add-column", "value": "x"},
            {"rule-type": "transformation", "rule-id": "6", "rule-name": "6", "rule-target": "table",
             "object-locator": {"schema-name": "shop", "table-name": "%"}, "rule-action": "convert-uppercase"},
            {"rule-type": "table-settings", "rule-id": "7", "rule-name": "7",
             "object-locator": {"schema-name": "shop", "table-name": "t"}, "parallel-load": {"type": "partitions-auto"}}
        ]}"#);
        let rules: Vec<&str> = c.unexpressed.iter().map(|u| u.rule.as_str()).collect();
        assert_eq!(
            rules,
            [
                "rule 1 (\"sel\")",
                "rule 3",
                "rule 5",
                "rule 6",
                "rule 7",
                "rule 4"
            ],
            "{:#?}",
            c.unexpressed
        );
        let reason = |rule: &str| {
            c.unexpressed
                .iter()
                .find(|u| u.rule == rule)
                .map(|u| u.reason.clone())
                .unwrap()
        };
        assert!(reason("rule 1 (\"sel\")").contains("load-order"));
        assert!(reason("rule 3").contains("filters"));
        assert!(
            reason("rule 4").contains("billing -> billing")
                && reason("rule 4").contains("shop -> a")
        );
        assert!(reason("rule 6").contains("lowercases"));
        // Each one is in the fragment too, and the fragment stays TOML.
        for item in &c.unexpressed {
            assert!(c.toml.contains(&format!("#   {}: ", item.rule)));
        }
        assert!(!c.toml.contains("target_schema"));
        toml::from_str::<toml::Table>(&c.toml).unwrap();
    }

    #[test]
    fn bad_files_are_errors_with_the_line() {
        let e = convert("{\n  \"rules\": [\n  {,]\n}", &Options::default()).unwrap_err();
        assert!(matches!(e, DmsError::Json { line: 3, .. }), "{e}");
        assert!(e.to_string().starts_with("line 3, column"), "{e}");
        let e = convert("{\"mappings\": []}", &Options::default()).unwrap_err();
        assert!(matches!(e, DmsError::NotTableMapping(_)), "{e}");
    }
}
