//! The one error type of config loading: every message names the file, the line and the key.
//!
//! Invariant: a [`ConfigError`]'s `Display` is a single line an operator can act on, of the form
//! `path/to/file.toml:LINE: key `sources[1].kind`: message`, and it never contains a secret
//! (values are quoted only for keys that cannot hold one).

use std::fmt;
use std::path::{Path, PathBuf};

/// What kind of mistake a [`ConfigError`] reports, for callers and tests that must not match text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigErrorKind {
    /// The file could not be read.
    Read,
    /// The text is not valid TOML.
    Syntax,
    /// A key that tidemark does not know (a typo, or a key of another section).
    UnknownKey,
    /// A required key is absent.
    MissingKey,
    /// A value has the wrong TOML type (a number where a string is expected, ...).
    WrongType,
    /// A `${VAR}` names an environment variable that is not set, or is malformed.
    Env,
    /// A value is well-typed but not acceptable (bad duration, duplicate id, invalid name, ...).
    Invalid,
    /// A value names a feature that is documented but not implemented yet.
    Unsupported,
}

/// Why a config file was rejected.
///
/// `Display` is the one-line operator message `file.toml:LINE: key `a.b`: message` (line and key
/// are left out when unknown). The `tidemark` CLI prints it and exits with status 2
/// (configuration error), as it does for every `ConfigError`.
#[derive(Debug)]
pub struct ConfigError {
    path: PathBuf,
    line: Option<usize>,
    key: Option<String>,
    kind: ConfigErrorKind,
    message: String,
    source: Option<std::io::Error>,
}

impl ConfigError {
    /// An error about `key` at `line` of `path`.
    pub(crate) fn new(
        kind: ConfigErrorKind,
        path: &Path,
        line: Option<usize>,
        key: Option<String>,
        message: impl Into<String>,
    ) -> Self {
        ConfigError {
            path: path.to_path_buf(),
            line,
            key,
            kind,
            message: one_line(&message.into()),
            source: None,
        }
    }

    /// The file at `path` could not be read.
    pub(crate) fn read(path: &Path, source: std::io::Error) -> Self {
        ConfigError {
            path: path.to_path_buf(),
            line: None,
            key: None,
            kind: ConfigErrorKind::Read,
            message: format!("cannot read the config file: {source}"),
            source: Some(source),
        }
    }

    /// The config file the error is about.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The 1-based line of the offending key or value, when known.
    pub fn line(&self) -> Option<usize> {
        self.line
    }

    /// The dotted key path (`sources[1].kind`, zero-based indexes), when known.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// What kind of mistake this is.
    pub fn kind(&self) -> ConfigErrorKind {
        self.kind
    }

    /// The message alone, without file, line and key.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": key `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Folds a possibly multi-line message (toml's, for instance) onto one line.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}
