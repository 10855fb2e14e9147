//! `${VAR}` and `${VAR:-default}` interpolation of string values, and the secret references
//! `${file:PATH}` / `${aws-sm:SECRET_ID}` beside them.
//!
//! Runs on string values after TOML parsing, so a variable's value is never parsed as TOML and
//! cannot add keys. Substituted text is not scanned again. `$${` writes a literal `${`; any
//! other `$` is kept as it is. Secret references are not substituted here: they are kept as
//! [`Piece::Secret`] and fetched when a connection opens (see `crate::secrets`).

use std::path::Path;

use crate::secrets::{self, SecretRef};

/// Why a string could not be interpolated. The caller adds the file, line and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EnvError {
    /// `${NAME}` with `NAME` unset (or not valid UTF-8) and no default.
    Missing(String),
    /// `${` without a closing `}` or with a malformed variable name.
    Malformed(String),
    /// `${KIND:...}` with a kind that is neither `file` nor `aws-sm`.
    UnknownKind(String),
    /// A secret reference in a key that is not read at connect time.
    SecretNotAllowed,
}

impl std::fmt::Display for EnvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EnvError::Missing(name) => write!(
                f,
                "environment variable {name} is not set (export it, or write ${{{name}:-default}} to give a default)"
            ),
            EnvError::Malformed(why) => write!(f, "{why}"),
            EnvError::UnknownKind(kind) => write!(
                f,
                "unknown reference kind `{kind}` in `${{{kind}:...}}`; expected {}",
                secrets::KINDS
            ),
            EnvError::SecretNotAllowed => write!(
                f,
                "secret references (${{file:...}}, ${{aws-sm:...}}) are read when a connection opens, so only the `url` of a source or of the warehouse takes them (an inventory line: its credentials column); use ${{NAME}} (an environment variable) here"
            ),
        }
    }
}

/// A part of an interpolated string: text, or a secret fetched later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece {
    /// Literal and environment-substituted text.
    Text(String),
    /// A `${file:...}` / `${aws-sm:...}` reference.
    Secret(SecretRef),
}

/// Replaces every `${NAME}` / `${NAME:-default}` in `input` using `lookup`; a secret reference
/// is an error ([`EnvError::SecretNotAllowed`]).
///
/// `${NAME:-default}` uses `default` when `NAME` is unset or empty, like the shell.
pub(crate) fn interpolate(
    input: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, EnvError> {
    let mut out = String::new();
    for piece in interpolate_pieces(input, lookup, Path::new("."))? {
        match piece {
            Piece::Text(text) => out.push_str(&text),
            Piece::Secret(_) => return Err(EnvError::SecretNotAllowed),
        }
    }
    Ok(out)
}

/// Like [`interpolate`], keeping secret references (file paths resolved against `base`) as
/// pieces between the texts.
pub(crate) fn interpolate_pieces(
    input: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    base: &Path,
) -> Result<Vec<Piece>, EnvError> {
    let mut pieces = Vec::new();
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let Some(close) = tail.find('}') else {
                return Err(EnvError::Malformed(
                    "`${` without a closing `}` (write `$${` for a literal `${`)".into(),
                ));
            };
            let body = &tail[..close];
            if let Some((kind, reference)) = body.split_once(':')
                && !reference.starts_with('-')
            {
                if !valid_kind(kind) {
                    return Err(EnvError::Malformed(format!(
                        "`${{{kind}:...}}` is not a reference: write ${{NAME}}, ${{file:PATH}} or ${{aws-sm:SECRET_ID}} (write `$${{` for a literal `${{`)"
                    )));
                }
                match SecretRef::parse(kind, reference, base).map_err(EnvError::Malformed)? {
                    Some(secret) => {
                        if !out.is_empty() {
                            pieces.push(Piece::Text(std::mem::take(&mut out)));
                        }
                        pieces.push(Piece::Secret(secret));
                    }
                    None => return Err(EnvError::UnknownKind(kind.to_owned())),
                }
                rest = &tail[close + 1..];
                continue;
            }
            let (name, default) = match body.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (body, None),
            };
            if !valid_name(name) {
                return Err(EnvError::Malformed(format!(
                    "`${{{body}}}` is not a variable reference: names are letters, digits and _, not starting with a digit (write `$${{` for a literal `${{`)"
                )));
            }
            let value = match (lookup(name), default) {
                (Some(v), Some(d)) if v.is_empty() => d.to_string(),
                (Some(v), _) => v,
                (None, Some(d)) => d.to_string(),
                (None, None) => return Err(EnvError::Missing(name.to_string())),
            };
            out.push_str(&value);
            rest = &tail[close + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    if !out.is_empty() || pieces.is_empty() {
        pieces.push(Piece::Text(out));
    }
    Ok(pieces)
}

/// A reference kind: letters, digits, `-` and `_` (`aws-sm`).
fn valid_kind(kind: &str) -> bool {
    !kind.is_empty()
        && kind
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "USER_PW" => Some("s3cr$t}".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn substitutes_and_defaults() {
        assert_eq!(interpolate("a:${USER_PW}@h", &env).unwrap(), "a:s3cr$t}@h");
        assert_eq!(interpolate("${NOPE:-x:y}", &env).unwrap(), "x:y");
        assert_eq!(interpolate("${EMPTY:-d}", &env).unwrap(), "d");
        assert_eq!(interpolate("${EMPTY}", &env).unwrap(), "");
        assert_eq!(
            interpolate("$${USER_PW} $5", &env).unwrap(),
            "${USER_PW} $5"
        );
    }

    #[test]
    fn missing_and_malformed() {
        assert_eq!(
            interpolate("${NOPE}", &env),
            Err(EnvError::Missing("NOPE".into()))
        );
        assert!(matches!(
            interpolate("${NOPE", &env),
            Err(EnvError::Malformed(_))
        ));
        assert!(matches!(
            interpolate("${1A}", &env),
            Err(EnvError::Malformed(_))
        ));
    }

    #[test]
    fn secret_references_stay_pieces_and_unknown_kinds_are_errors() {
        let pieces = interpolate_pieces(
            "mysql://u:${aws-sm:db#password}@${H:-h}/x",
            &env,
            Path::new("/c"),
        )
        .unwrap();
        assert_eq!(
            pieces,
            [
                Piece::Text("mysql://u:".into()),
                Piece::Secret(SecretRef::AwsSm {
                    id: "db".into(),
                    field: Some("password".into())
                }),
                Piece::Text("@h/x".into()),
            ]
        );
        assert_eq!(
            interpolate_pieces("${file:pw}", &env, Path::new("/c")).unwrap(),
            [Piece::Secret(SecretRef::File {
                path: "/c/pw".into(),
                field: None
            })]
        );
        assert_eq!(
            interpolate("${vault:kv/db}", &env),
            Err(EnvError::UnknownKind("vault".into()))
        );
        assert_eq!(
            interpolate("${file:pw}", &env),
            Err(EnvError::SecretNotAllowed)
        );
        let message = EnvError::UnknownKind("vault".into()).to_string();
        assert!(message.contains("${aws-sm:SECRET_ID}"), "{message}");
    }
}
