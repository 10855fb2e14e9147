//! `${VAR}` and `${VAR:-default}` interpolation of string values.
//!
//! Runs on string values after TOML parsing, so a variable's value is never parsed as TOML and
//! cannot add keys. Substituted text is not scanned again. `$${` writes a literal `${`; any
//! other `$` is kept as it is.

/// Why a string could not be interpolated. The caller adds the file, line and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EnvError {
    /// `${NAME}` with `NAME` unset (or not valid UTF-8) and no default.
    Missing(String),
    /// `${` without a closing `}` or with a malformed variable name.
    Malformed(String),
}

impl std::fmt::Display for EnvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EnvError::Missing(name) => write!(
                f,
                "environment variable {name} is not set (export it, or write ${{{name}:-default}} to give a default)"
            ),
            EnvError::Malformed(why) => write!(f, "{why}"),
        }
    }
}

/// Replaces every `${NAME}` / `${NAME:-default}` in `input` using `lookup`.
///
/// `${NAME:-default}` uses `default` when `NAME` is unset or empty, like the shell.
pub(crate) fn interpolate(
    input: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, EnvError> {
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
    Ok(out)
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
}
