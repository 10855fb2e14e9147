//! A fleet's sources from its inventory: one CSV line per tenant database, filled into the
//! `[fleet.template]` source.
//!
//! Invariant: a line that cannot become a source is reported with its line number and left
//! out; the other lines still become sources. Only a file that cannot be read as an inventory
//! at all (unreadable, a bad header) is an error of the whole config.
//!
//! The columns are documented in `docs/fleet.md`.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use percent_encoding::utf8_percent_encode;
use toml::Spanned;

use super::raw::{RawSource, Str};
use super::secret::USERINFO;
use super::template;

/// Columns every inventory has.
pub(crate) const REQUIRED_COLUMNS: [&str; 8] = [
    "tenant",
    "region",
    "function",
    "kind",
    "host",
    "port",
    "databases",
    "credentials",
];

/// Columns an inventory may have: a source's id, whether it runs, and the source keys a line
/// may set for itself (overriding the template).
pub(crate) const OPTIONAL_COLUMNS: [&str; 14] = [
    "id",
    "enabled",
    "snapshot",
    "target_schema",
    "target_table",
    "include",
    "exclude",
    "heartbeat",
    "snapshot_parallelism",
    "snapshot_chunk_rows",
    "server_id",
    "slot",
    "publication",
    "publish_all_tables",
];

/// The placeholders of the `[fleet] mysql_url` / `postgres_url` templates.
pub(crate) const URL_PLACEHOLDERS: &[&str] = &["user", "password", "host", "port", "database"];
/// Default `[fleet] mysql_url`.
pub(crate) const DEFAULT_MYSQL_URL: &str = "mysql://{user}:{password}@{host}:{port}";
/// Default `[fleet] postgres_url`.
pub(crate) const DEFAULT_POSTGRES_URL: &str =
    "postgres://{user}:{password}@{host}:{port}/{database}";

/// An inventory line that did not become a source, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryProblem {
    /// The inventory file.
    pub path: PathBuf,
    /// Its 1-based line.
    pub line: usize,
    /// What is wrong, naming the column (never a secret's value).
    pub message: String,
}

impl fmt::Display for InventoryProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}; the line is skipped, the other sources run",
            self.path.display(),
            self.line,
            self.message
        )
    }
}

/// One data line of the inventory: its line number and its non-empty values by column.
#[derive(Debug)]
pub(crate) struct InventoryLine {
    /// 1-based line number in the file.
    pub line: usize,
    values: HashMap<String, String>,
}

impl InventoryLine {
    /// The value of `column`, trimmed; `None` when empty or absent.
    pub fn get(&self, column: &str) -> Option<&str> {
        self.values.get(column).map(String::as_str)
    }

    /// The value of a required column.
    fn required(&self, column: &str) -> Result<&str, String> {
        self.get(column)
            .ok_or_else(|| format!("column `{column}` is empty"))
    }
}

/// Reads the inventory `text`: a header naming the columns, then one line per source. Lines
/// that are empty or start with `#` are skipped. `Err` is `(line, message)` for a file that is
/// not an inventory (a missing or unknown column, unreadable CSV).
pub(crate) fn parse(text: &str) -> Result<Vec<InventoryLine>, (usize, String)> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .trim(csv::Trim::All)
        .comment(Some(b'#'))
        .from_reader(text.as_bytes());
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| {
            (
                csv_line(&e).unwrap_or(1),
                format!("cannot read the header: {e}"),
            )
        })?
        .iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    for (i, name) in headers.iter().enumerate() {
        if !REQUIRED_COLUMNS.contains(&name.as_str()) && !OPTIONAL_COLUMNS.contains(&name.as_str())
        {
            return Err((
                1,
                format!(
                    "unknown column `{name}`; the columns are {} (required) and {}",
                    REQUIRED_COLUMNS.join(", "),
                    OPTIONAL_COLUMNS.join(", ")
                ),
            ));
        }
        if headers[..i].contains(name) {
            return Err((1, format!("column `{name}` appears twice")));
        }
    }
    if let Some(missing) = REQUIRED_COLUMNS
        .iter()
        .find(|c| !headers.iter().any(|h| h == *c))
    {
        return Err((
            1,
            format!(
                "the header has no column `{missing}`; an inventory needs {}",
                REQUIRED_COLUMNS.join(", ")
            ),
        ));
    }
    let mut lines = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e.position().map_or(0, |p| line_at(text, p.byte()));
            (line, format!("cannot read the line: {e}"))
        })?;
        // csv's own line count skips comment lines: count the file's newlines instead.
        let line = record.position().map_or(0, |p| line_at(text, p.byte()));
        let values = headers
            .iter()
            .zip(record.iter())
            .filter(|(_, value)| !value.is_empty())
            .map(|(name, value)| (name.clone(), value.to_string()))
            .collect();
        lines.push(InventoryLine { line, values });
    }
    Ok(lines)
}

fn csv_line(error: &csv::Error) -> Option<usize> {
    error.position().map(|p| p.line() as usize)
}

/// The 1-based line of the record that csv places at byte `offset` of `text`: csv counts
/// neither comment lines nor blank ones and places a record where they begin, so those are
/// stepped over.
fn line_at(text: &str, offset: u64) -> usize {
    let end = usize::try_from(offset).map_or(text.len(), |o| o.min(text.len()));
    let first = 1 + memchr::memchr_iter(b'\n', &text.as_bytes()[..end]).count();
    let skipped = text[end..]
        .lines()
        .take_while(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
        .count();
    first + skipped
}

/// The URL templates of `[fleet]`, checked.
#[derive(Debug, Clone)]
pub(crate) struct UrlTemplates {
    /// For `kind = mysql` lines.
    pub mysql: String,
    /// For `kind = postgres` lines.
    pub postgres: String,
}

/// What a line's `credentials` reference resolves to: the user name and password as they go
/// into the URL (percent-encoded), or, for a Secrets Manager secret, references to its fields,
/// fetched at each connect.
struct Credentials {
    user: String,
    password: String,
}

impl Credentials {
    /// A known user name and password, escaped for a URL's user info.
    fn encoded(user: &str, password: &str) -> Credentials {
        Credentials {
            user: utf8_percent_encode(user, USERINFO).to_string(),
            password: utf8_percent_encode(password, USERINFO).to_string(),
        }
    }
}

/// Resolves a credentials reference: `env:NAME` (the variable holds the secret), `file:PATH`
/// (the file does; relative to `base`) or `aws-sm:SECRET_ID` (an AWS Secrets Manager secret).
/// The secret is JSON with `username` and `password` (the form AWS Secrets Manager keeps
/// database secrets in) or `user:password`. A file is read now (a line whose file is missing
/// or malformed is skipped with why) and becomes `${file:...}` references read again at each
/// connect, as a Secrets Manager secret is fetched: both can be rotated without a restart.
fn credentials(
    reference: &str,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Credentials, String> {
    let read = read_credentials(reference, base, env)?;
    let Some(path) = reference.strip_prefix("file:") else {
        return Ok(read);
    };
    // A path the reference syntax cannot hold keeps the values read now.
    match std::path::absolute(base.join(path)) {
        Ok(path) if !path.to_string_lossy().contains(['#', '{', '}', '$']) => {
            let path = path.display();
            Ok(Credentials {
                user: format!("${{file:{path}#username}}"),
                password: format!("${{file:{path}#password}}"),
            })
        }
        _ => Ok(read),
    }
}

/// The credentials `reference` holds now (see [`credentials`]).
fn read_credentials(
    reference: &str,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Credentials, String> {
    if let Some(id) = reference.strip_prefix("aws-sm:") {
        if id.is_empty() || id.contains(['#', '{', '}', '$']) {
            return Err(
                "column `credentials`: aws-sm: takes a secret name or ARN (no `#`, `{`, `}` or `$`)"
                    .to_owned(),
            );
        }
        // `#username`/`#password` take JSON fields, or the parts of a `user:password` text.
        return Ok(Credentials {
            user: format!("${{aws-sm:{id}#username}}"),
            password: format!("${{aws-sm:{id}#password}}"),
        });
    }
    let secret = if let Some(name) = reference.strip_prefix("env:") {
        env(name).ok_or_else(|| {
            format!("column `credentials`: environment variable {name} is not set")
        })?
    } else if let Some(path) = reference.strip_prefix("file:") {
        let path = base.join(path);
        std::fs::read_to_string(&path)
            .map_err(|e| format!("column `credentials`: cannot read {}: {e}", path.display()))?
    } else {
        return Err(format!(
            "column `credentials` must be env:VARIABLE, file:PATH or aws-sm:SECRET_ID, not `{}`",
            reference.split(':').next().unwrap_or_default()
        ));
    };
    let secret = secret.trim();
    if secret.starts_with('{') {
        let value: serde_json::Value = serde_json::from_str(secret).map_err(|_| {
            // serde_json's message can quote the text: never show a secret.
            format!("column `credentials`: the secret {reference} is not valid JSON")
        })?;
        let field = |name: &str| value.get(name).and_then(|v| v.as_str()).map(str::to_owned);
        match (field("username"), field("password")) {
            (Some(user), Some(password)) => Ok(Credentials::encoded(&user, &password)),
            _ => Err(format!(
                "column `credentials`: the JSON secret {reference} needs string fields `username` and `password`"
            )),
        }
    } else {
        match secret.split_once(':') {
            Some((user, password)) if !user.is_empty() => Ok(Credentials::encoded(user, password)),
            _ => Err(format!(
                "column `credentials`: the secret {reference} must be `user:password` or JSON with username and password"
            )),
        }
    }
}

/// The raw source of `line`: the template's keys, then the line's (which win). `span` is
/// given to values from the line, so messages about them point at the `[fleet]` table.
pub(crate) fn raw_source(
    line: &InventoryLine,
    template: Option<&RawSource>,
    urls: &UrlTemplates,
    base: &Path,
    span: Range<usize>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<RawSource, String> {
    let value = |text: &str| -> Str { Spanned::new(span.clone(), text.to_owned()) };
    let list = |text: &str| -> Spanned<Vec<Str>> {
        Spanned::new(
            span.clone(),
            text.split([' ', ';'])
                .filter(|p| !p.is_empty())
                .map(value)
                .collect(),
        )
    };
    let integer = |column: &str| -> Result<Option<Spanned<i64>>, String> {
        line.get(column)
            .map(|text| {
                text.parse::<i64>()
                    .map(|n| Spanned::new(span.clone(), n))
                    .map_err(|_| format!("column `{column}` must be an integer, not `{text}`"))
            })
            .transpose()
    };
    let boolean = |column: &str| -> Result<Option<Spanned<bool>>, String> {
        line.get(column)
            .map(|text| match text.to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" | "on" => Ok(Spanned::new(span.clone(), true)),
                "false" | "no" | "0" | "off" => Ok(Spanned::new(span.clone(), false)),
                _ => Err(format!(
                    "column `{column}` must be true or false (yes/no, 1/0), not `{text}`"
                )),
            })
            .transpose()
    };

    let tenant = line.required("tenant")?;
    let region = line.required("region")?;
    let function = line.required("function")?;
    let kind = line.required("kind")?.to_ascii_lowercase();
    let host = line.required("host")?;
    let port = line.required("port")?;
    if port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(format!(
            "column `port` must be a port number from 1 to 65535, not `{port}`"
        ));
    }
    let databases: Vec<&str> = line
        .required("databases")?
        .split([' ', ';'])
        .filter(|d| !d.is_empty())
        .collect();
    let url_template = match kind.as_str() {
        "mysql" => &urls.mysql,
        "postgres" => {
            if databases.len() != 1 {
                return Err(format!(
                    "column `databases`: a Postgres source reads one database, this line names {}; give each database its own line",
                    databases.len()
                ));
            }
            &urls.postgres
        }
        other => {
            return Err(format!(
                "column `kind` must be mysql (MySQL or MariaDB) or postgres, not `{other}`"
            ));
        }
    };
    let credentials = credentials(line.required("credentials")?, base, env)?;
    let url = template::render(
        url_template,
        &[
            ("user", &credentials.user),
            ("password", &credentials.password),
            ("host", host),
            ("port", port),
            ("database", databases[0]),
        ],
    );
    let id = match line.get("id") {
        Some(id) => id.to_owned(),
        None => format!("{tenant}-{region}-{function}").to_lowercase(),
    };

    let mut raw = template.cloned().unwrap_or_default();
    raw.id = Some(value(&id));
    raw.kind = Some(value(&kind));
    raw.url = Some(value(&url));
    raw.tenant = Some(value(tenant));
    raw.region = Some(value(region));
    raw.function = Some(value(function));
    if let Some(text) = line.get("include") {
        raw.include = Some(list(text));
    } else if raw.include.is_none() && kind == "mysql" {
        // A MySQL line's databases are what it replicates.
        let patterns: Vec<String> = databases.iter().map(|d| format!("{d}.*")).collect();
        raw.include = Some(list(&patterns.join(" ")));
    }
    if let Some(text) = line.get("exclude") {
        raw.exclude = Some(list(text));
    }
    for (column, slot) in [
        ("snapshot", &mut raw.snapshot),
        ("target_schema", &mut raw.target_schema),
        ("target_table", &mut raw.target_table),
        ("heartbeat", &mut raw.heartbeat),
        ("slot", &mut raw.slot),
        ("publication", &mut raw.publication),
    ] {
        if let Some(text) = line.get(column) {
            *slot = Some(value(text));
        }
    }
    for (column, slot) in [
        ("snapshot_parallelism", &mut raw.snapshot_parallelism),
        ("snapshot_chunk_rows", &mut raw.snapshot_chunk_rows),
        ("server_id", &mut raw.server_id),
    ] {
        if let Some(number) = integer(column)? {
            *slot = Some(number);
        }
    }
    for (column, slot) in [
        ("publish_all_tables", &mut raw.publish_all_tables),
        ("enabled", &mut raw.enabled),
    ] {
        if let Some(flag) = boolean(column)? {
            *slot = Some(flag);
        }
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls() -> UrlTemplates {
        UrlTemplates {
            mysql: DEFAULT_MYSQL_URL.into(),
            postgres: DEFAULT_POSTGRES_URL.into(),
        }
    }

    fn env(name: &str) -> Option<String> {
        match name {
            "ACME" => Some("repl:p@ss w/rd".into()),
            "JSON" => Some(r#"{"username": "app", "password": "s3cr%t"}"#.into()),
            _ => None,
        }
    }

    const HEADER: &str = "tenant,region,function,kind,host,port,databases,credentials,enabled\n";

    #[test]
    fn a_line_becomes_a_source_with_its_databases_and_escaped_credentials() {
        let lines = parse(&format!(
            "{HEADER}acme,in,txn,mysql,10.0.0.5,3306,shop;billing,env:ACME,\n"
        ))
        .unwrap();
        assert_eq!(lines[0].line, 2);
        let raw = raw_source(&lines[0], None, &urls(), Path::new("."), 0..0, &env).unwrap();
        assert_eq!(raw.id.unwrap().into_inner(), "acme-in-txn");
        assert_eq!(
            raw.url.unwrap().into_inner(),
            "mysql://repl:p%40ss%20w%2Frd@10.0.0.5:3306"
        );
        let include: Vec<String> = raw
            .include
            .unwrap()
            .into_inner()
            .into_iter()
            .map(Spanned::into_inner)
            .collect();
        assert_eq!(include, ["shop.*", "billing.*"]);
        assert!(raw.enabled.is_none());
    }

    #[test]
    fn json_credentials_and_a_postgres_database() {
        let lines = parse(&format!(
            "{HEADER}globex,sg,txn,postgres,db.internal,5432,app,env:JSON,no\n"
        ))
        .unwrap();
        let raw = raw_source(&lines[0], None, &urls(), Path::new("."), 0..0, &env).unwrap();
        assert_eq!(
            raw.url.unwrap().into_inner(),
            "postgres://app:s3cr%25t@db.internal:5432/app"
        );
        assert_eq!(raw.enabled.map(Spanned::into_inner), Some(false));
    }

    #[test]
    fn bad_lines_name_their_column_and_never_a_secret() {
        let text = format!(
            "{HEADER}a,in,txn,mysql,h,99999,shop,env:ACME,\n\
             b,in,txn,oracle,h,1521,shop,env:ACME,\n\
             c,in,txn,postgres,h,5432,x y,env:ACME,\n\
             d,in,txn,mysql,h,3306,shop,env:NOPE,\n\
             e,in,txn,mysql,h,3306,shop,env:ACME,maybe\n\
             f,in,txn,mysql,h,3306,shop,vault:x,\n"
        );
        let lines = parse(&text).unwrap();
        let problems: Vec<String> = lines
            .iter()
            .map(|l| raw_source(l, None, &urls(), Path::new("."), 0..0, &env).unwrap_err())
            .collect();
        for (problem, column) in problems.iter().zip([
            "port",
            "kind",
            "databases",
            "credentials",
            "enabled",
            "credentials",
        ]) {
            assert!(problem.contains(&format!("`{column}`")), "{problem}");
            assert!(!problem.contains("p@ss"), "{problem}");
        }
        assert_eq!(
            lines.iter().map(|l| l.line).collect::<Vec<_>>(),
            [2, 3, 4, 5, 6, 7]
        );
    }

    #[test]
    fn aws_sm_credentials_become_references_fetched_at_connect() {
        let lines = parse(&format!(
            "{HEADER}acme,in,txn,mysql,h,3306,shop,aws-sm:prod/acme-db,\n\
             b,in,txn,mysql,h,3306,shop,aws-sm:x#y,\n"
        ))
        .unwrap();
        let raw = raw_source(&lines[0], None, &urls(), Path::new("."), 0..0, &env).unwrap();
        assert_eq!(
            raw.url.unwrap().into_inner(),
            "mysql://${aws-sm:prod/acme-db#username}:${aws-sm:prod/acme-db#password}@h:3306"
        );
        let problem = raw_source(&lines[1], None, &urls(), Path::new("."), 0..0, &env).unwrap_err();
        assert!(problem.contains("`credentials`"), "{problem}");
    }

    #[test]
    fn file_credentials_are_checked_now_and_read_again_at_connect() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("acme.creds"), "repl:s3cr3t\n").unwrap();
        let lines = parse(&format!(
            "{HEADER}acme,in,txn,mysql,h,3306,shop,file:acme.creds,\n\
             b,in,txn,mysql,h,3306,shop,file:gone.creds,\n"
        ))
        .unwrap();
        let raw = raw_source(&lines[0], None, &urls(), dir.path(), 0..0, &env).unwrap();
        let path = dir.path().join("acme.creds");
        assert_eq!(
            raw.url.unwrap().into_inner(),
            format!(
                "mysql://${{file:{0}#username}}:${{file:{0}#password}}@h:3306",
                path.display()
            )
        );
        let problem = raw_source(&lines[1], None, &urls(), dir.path(), 0..0, &env).unwrap_err();
        assert!(
            problem.contains("`credentials`") && problem.contains("gone.creds"),
            "{problem}"
        );
    }

    #[test]
    fn header_problems_refuse_the_file() {
        assert!(
            parse("tenant,region\n")
                .unwrap_err()
                .1
                .contains("`function`")
        );
        let (line, message) = parse(&HEADER.replace("enabled", "colour")).unwrap_err();
        assert_eq!(line, 1);
        assert!(message.contains("unknown column `colour`"), "{message}");
    }

    #[test]
    fn comments_and_blank_lines_are_skipped_and_numbering_follows_the_file() {
        let text =
            format!("{HEADER}# paused tenants below\n\nacme,in,txn,mysql,h,3306,shop,env:ACME,\n");
        let lines = parse(&text).unwrap();
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].line, 4);
    }
}
