//! Redshift's rules, checked before a statement reaches Postgres, and the rewrites that let
//! Postgres run what Redshift accepts.
//!
//! A statement is tokenized and parsed with sqlparser's `RedshiftSqlDialect`. Statement shapes
//! (ON CONFLICT, MERGE clauses, TRUNCATE / ALTER COLUMN TYPE in a batch, DELETE aliases, the
//! COPY form) are checked on the AST; operators and identifier lengths on the tokens, which
//! cover every expression and name without walking the whole AST, and never look inside
//! string literals or comments. Rewrites replace token spans in the original text, so the rest
//! of the statement (string literals with their backslash escapes above all) reaches Postgres
//! byte for byte.

use sqlparser::ast::{
    AlterColumnOperation, AlterTableOperation, CopyLegacyOption, CopySource, CopyTarget, Delete,
    FromTable, Ident, Merge, MergeClauseKind, ObjectNamePart, OnInsert, Statement, TableFactor,
};
use sqlparser::dialect::RedshiftSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer};

/// The longest identifier Redshift accepts, in bytes.
const MAX_IDENTIFIER_BYTES: usize = 127;

/// What to run for a statement that passed the checks.
#[derive(Debug)]
pub enum Plan {
    /// SQL for Postgres, already rewritten.
    Sql(String),
    /// A Redshift `COPY ... FROM 's3://...' MANIFEST GZIP FORMAT AS CSV`, emulated.
    Copy(CopyFromS3),
}

/// The parts of a Redshift COPY from a manifest that the emulation needs.
#[derive(Debug)]
pub struct CopyFromS3 {
    /// The target table as written (quotes kept), to name it to Postgres.
    pub table: String,
    /// The table's own name without schema or quotes, for error messages like Redshift's.
    pub table_label: String,
    /// The column list in order (empty: every column of the table).
    pub columns: Vec<CopyColumn>,
    /// `s3://bucket/key` of the manifest.
    pub manifest_url: String,
}

/// One column of a COPY column list.
#[derive(Debug)]
pub struct CopyColumn {
    /// As written (quotes kept), to name it to Postgres.
    pub sql: String,
    /// Its name as the catalog stores it (unquoted names fold to lowercase).
    pub name: String,
}

/// Checks `sql` (one statement; `in_batch` when it is part of a BatchExecuteStatement) and
/// returns what to run, or the statement's error text when Redshift would reject it or the
/// server cannot emulate it.
pub fn plan(sql: &str, in_batch: bool) -> Result<Plan, String> {
    let dialect = RedshiftSqlDialect {};
    let tokens = Tokenizer::new(&dialect, sql)
        .tokenize_with_location()
        .map_err(|e| reject(e.to_string()))?;
    check_tokens(&tokens)?;
    let statements = Parser::parse_sql(&dialect, sql).map_err(|e| reject(e.to_string()))?;
    let statement = match statements.as_slice() {
        [statement] => statement,
        [] => return Err(reject("the SQL holds no statement".into())),
        more => {
            return Err(reject(format!(
                "a Data API statement is one SQL statement, this holds {}",
                more.len()
            )));
        }
    };
    check_statement(statement, in_batch)?;
    if let Statement::Copy { .. } = statement {
        return copy_plan(statement).map(Plan::Copy);
    }
    Ok(Plan::Sql(rewrite(sql, &tokens)))
}

/// The error text of a statement Redshift would not run.
fn reject(reason: String) -> String {
    format!("Redshift would reject this: {reason}")
}

/// The error text of a statement Redshift may run but this server does not emulate.
fn unsupported(reason: String) -> String {
    format!("the Redshift test server does not emulate this: {reason}")
}

/// Rejects identifiers longer than Redshift allows and Postgres-only JSON operators.
fn check_tokens(tokens: &[TokenWithSpan]) -> Result<(), String> {
    for token in tokens {
        match &token.token {
            Token::Word(word) if word.value.len() > MAX_IDENTIFIER_BYTES => {
                let start: String = word.value.chars().take(32).collect();
                return Err(reject(format!(
                    "identifier \"{start}...\" is {} bytes long, the limit is {MAX_IDENTIFIER_BYTES}",
                    word.value.len()
                )));
            }
            op @ (Token::Arrow
            | Token::LongArrow
            | Token::HashArrow
            | Token::HashLongArrow
            | Token::HashMinus
            | Token::AtArrow
            | Token::ArrowAt
            | Token::AtQuestion
            | Token::AtAt
            | Token::Question
            | Token::QuestionAnd
            | Token::QuestionPipe) => {
                return Err(reject(format!(
                    "operator {op} is a Postgres jsonb operator; Redshift has none \
                     (use SUPER navigation or JSON_EXTRACT_PATH_TEXT)"
                )));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Rejects statement shapes Postgres runs but Redshift does not.
fn check_statement(statement: &Statement, in_batch: bool) -> Result<(), String> {
    match statement {
        Statement::Insert(insert) => match &insert.on {
            Some(OnInsert::OnConflict(_)) => Err(reject(
                "INSERT ... ON CONFLICT is Postgres-only; Redshift has no upsert clause (use MERGE)"
                    .into(),
            )),
            Some(OnInsert::DuplicateKeyUpdate(_)) => Err(reject(
                "INSERT ... ON DUPLICATE KEY UPDATE is MySQL-only (use MERGE)".into(),
            )),
            _ => Ok(()),
        },
        Statement::Merge(merge) => check_merge(merge),
        Statement::Delete(delete) => check_delete(delete),
        // TRUNCATE commits the open transaction in Redshift, so a batch would no longer be atomic.
        Statement::Truncate(_) if in_batch => Err(reject(
            "TRUNCATE commits the transaction it runs in, so it cannot be part of a \
             BatchExecuteStatement"
                .into(),
        )),
        Statement::AlterTable(alter)
            if in_batch
                && alter.operations.iter().any(|op| {
                    matches!(
                        op,
                        AlterTableOperation::AlterColumn {
                            op: AlterColumnOperation::SetDataType { .. },
                            ..
                        }
                    )
                }) =>
        {
            Err(reject(
                "ALTER TABLE ... ALTER COLUMN ... TYPE cannot run inside a transaction block \
                 (BatchExecuteStatement)"
                    .into(),
            ))
        }
        _ => Ok(()),
    }
}

/// Redshift's MERGE (AWS docs, r_MERGE): `MERGE INTO target USING source [[AS] alias] ON ...
/// WHEN MATCHED THEN {UPDATE|DELETE} WHEN NOT MATCHED THEN INSERT ...`: the target takes no
/// alias, the source is a table, both clauses in that order, without AND conditions, and none
/// of the BY SOURCE / BY TARGET forms.
fn check_merge(merge: &Merge) -> Result<(), String> {
    if let TableFactor::Table {
        name,
        alias: Some(alias),
        ..
    } = &merge.table
    {
        return Err(reject(format!(
            "MERGE takes no alias for its target table ({name} AS {}): qualify its columns with \
             the table name",
            alias.name
        )));
    }
    if !matches!(merge.source, TableFactor::Table { .. }) {
        return Err(reject("MERGE's source is a table, not a subquery".into()));
    }
    if merge.clauses.iter().any(|c| c.predicate.is_some()) {
        return Err(reject(
            "MERGE clauses take no AND condition (WHEN MATCHED AND ...)".into(),
        ));
    }
    let kinds: Vec<&MergeClauseKind> = merge.clauses.iter().map(|c| &c.clause_kind).collect();
    if let Some(kind) = kinds.iter().find(|k| {
        matches!(
            k,
            MergeClauseKind::NotMatchedBySource | MergeClauseKind::NotMatchedByTarget
        )
    }) {
        return Err(reject(format!("MERGE has no WHEN {kind} clause")));
    }
    match kinds.as_slice() {
        [MergeClauseKind::Matched, MergeClauseKind::NotMatched] => Ok(()),
        _ if merge
            .clauses
            .iter()
            .filter(|c| c.clause_kind == MergeClauseKind::Matched)
            .count()
            > 1 =>
        {
            Err(reject("MERGE takes one WHEN MATCHED clause".into()))
        }
        _ => Err(reject(
            "MERGE takes one WHEN MATCHED clause followed by one WHEN NOT MATCHED clause".into(),
        )),
    }
}

/// Redshift's DELETE names its target table without an alias.
fn check_delete(delete: &Delete) -> Result<(), String> {
    let targets = match &delete.from {
        FromTable::WithFromKeyword(tables) | FromTable::WithoutKeyword(tables) => tables,
    };
    for target in targets {
        if let TableFactor::Table {
            name,
            alias: Some(alias),
            ..
        } = &target.relation
        {
            return Err(reject(format!(
                "DELETE takes no alias for its target table ({name} AS {})",
                alias.name
            )));
        }
    }
    Ok(())
}

/// The COPY form the sink sends, or why it is not that form.
fn copy_plan(statement: &Statement) -> Result<CopyFromS3, String> {
    let Statement::Copy {
        source,
        to,
        target,
        options,
        legacy_options,
        ..
    } = statement
    else {
        return Err(unsupported("not a COPY".into()));
    };
    if *to {
        return Err(reject("Redshift has no COPY ... TO (use UNLOAD)".into()));
    }
    let CopySource::Table {
        table_name,
        columns,
    } = source
    else {
        return Err(reject("Redshift copies into a table, not a query".into()));
    };
    let manifest_url = match target {
        CopyTarget::File { filename } if filename.starts_with("s3://") => filename.clone(),
        CopyTarget::File { filename } => {
            return Err(unsupported(format!("COPY from '{filename}' (only s3://)")));
        }
        CopyTarget::Stdin => return Err(reject("COPY ... FROM STDIN is Postgres-only".into())),
        other => return Err(reject(format!("COPY from {other}"))),
    };
    if !options.is_empty() {
        return Err(reject(
            "COPY ... WITH (...) options are Postgres syntax".into(),
        ));
    }
    check_copy_options(legacy_options)?;
    let table_label = match table_name.0.last() {
        Some(ObjectNamePart::Identifier(ident)) => ident.value.clone(),
        _ => table_name.to_string(),
    };
    Ok(CopyFromS3 {
        table: table_name.to_string(),
        table_label,
        columns: columns
            .iter()
            .map(|ident| CopyColumn {
                sql: ident.to_string(),
                name: catalog_name(ident),
            })
            .collect(),
        manifest_url,
    })
}

/// The name Redshift stores for `ident`: unquoted names fold to lowercase.
fn catalog_name(ident: &Ident) -> String {
    match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_lowercase(),
    }
}

/// Accepts the options of the one COPY form the emulation implements: an IAM role, a manifest
/// of gzip CSV files, NULL as the NUL byte, automatic time and date formats.
fn check_copy_options(options: &[CopyLegacyOption]) -> Result<(), String> {
    let (mut iam_role, mut manifest, mut gzip, mut csv, mut null) =
        (false, false, false, false, false);
    for option in options {
        match option {
            CopyLegacyOption::IamRole(_) => iam_role = true,
            CopyLegacyOption::Manifest { .. } => manifest = true,
            CopyLegacyOption::Gzip => gzip = true,
            CopyLegacyOption::Csv(csv_options) if csv_options.is_empty() => csv = true,
            CopyLegacyOption::Null(s) if s == "\0" => null = true,
            CopyLegacyOption::Region(_)
            | CopyLegacyOption::CompUpdate { .. }
            | CopyLegacyOption::StatUpdate(_) => {}
            CopyLegacyOption::TimeFormat(format) | CopyLegacyOption::DateFormat(format)
                if format
                    .as_deref()
                    .is_none_or(|f| f.eq_ignore_ascii_case("auto")) => {}
            other => return Err(unsupported(format!("COPY option {other}"))),
        }
    }
    if !iam_role {
        return Err(reject(
            "COPY from S3 needs IAM_ROLE (or CREDENTIALS) to read the files".into(),
        ));
    }
    let missing: Vec<&str> = [
        (manifest, "MANIFEST"),
        (gzip, "GZIP"),
        (csv, "FORMAT AS CSV"),
        (null, "NULL AS '\\0'"),
    ]
    .into_iter()
    .filter_map(|(present, name)| (!present).then_some(name))
    .collect();
    if !missing.is_empty() {
        return Err(unsupported(format!(
            "COPY without {} (only MANIFEST GZIP FORMAT AS CSV NULL AS '\\0' is emulated)",
            missing.join(", ")
        )));
    }
    Ok(())
}

/// `sql` with the Redshift-only spellings Postgres lacks replaced, outside string literals
/// and comments (the tokens say where those are):
/// - `varbyte(N)` -> `varbyte`: the domain has no size;
/// - `SYSDATE` -> the transaction's start as a timestamp without zone (the session is UTC);
/// - `GETDATE()` -> the statement's start, whole seconds, without zone.
fn rewrite(sql: &str, tokens: &[TokenWithSpan]) -> String {
    let code: Vec<&TokenWithSpan> = tokens
        .iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_)))
        .collect();
    let token = |i: usize| code.get(i).map(|t| &t.token);
    let word = |i: usize, name: &str| match token(i) {
        Some(Token::Word(w)) => w.quote_style.is_none() && w.value.eq_ignore_ascii_case(name),
        _ => false,
    };
    // After a `.` a word names a column or a member, not the keyword.
    let after_period = |i: usize| i > 0 && matches!(token(i - 1), Some(Token::Period));
    let mut edits: Vec<(Location, Location, &str)> = Vec::new();
    for i in 0..code.len() {
        if word(i, "varbyte")
            && matches!(token(i + 1), Some(Token::LParen))
            && matches!(token(i + 2), Some(Token::Number(..)))
            && matches!(token(i + 3), Some(Token::RParen))
        {
            edits.push((code[i + 1].span.start, code[i + 3].span.end, ""));
        } else if word(i, "sysdate")
            && !after_period(i)
            && !matches!(token(i + 1), Some(Token::LParen))
        {
            edits.push((
                code[i].span.start,
                code[i].span.end,
                "(transaction_timestamp()::timestamp)",
            ));
        } else if word(i, "getdate")
            && !after_period(i)
            && matches!(token(i + 1), Some(Token::LParen))
            && matches!(token(i + 2), Some(Token::RParen))
        {
            edits.push((
                code[i].span.start,
                code[i + 2].span.end,
                "(date_trunc('second', statement_timestamp())::timestamp)",
            ));
        }
    }
    let offsets = LineOffsets::new(sql);
    let mut out = String::with_capacity(sql.len());
    let mut done = 0;
    for (start, end, replacement) in edits {
        let (start, end) = (offsets.byte(start), offsets.byte(end));
        out.push_str(&sql[done..start]);
        out.push_str(replacement);
        done = end;
    }
    out.push_str(&sql[done..]);
    out
}

/// Turns the tokenizer's 1-based line and column (counted in characters) into byte offsets.
struct LineOffsets<'a> {
    sql: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> LineOffsets<'a> {
    fn new(sql: &'a str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(sql.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        LineOffsets { sql, line_starts }
    }

    /// The byte offset of `location` (the end of the text if it lies beyond).
    fn byte(&self, location: Location) -> usize {
        let line = usize::try_from(location.line).unwrap_or(usize::MAX);
        let column = usize::try_from(location.column).unwrap_or(usize::MAX);
        let Some(&start) = line.checked_sub(1).and_then(|l| self.line_starts.get(l)) else {
            return self.sql.len();
        };
        self.sql[start..]
            .char_indices()
            .nth(column.saturating_sub(1))
            .map_or(self.sql.len(), |(i, _)| start + i)
    }
}
