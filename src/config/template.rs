//! `{placeholder}` templates of the `target_schema` and `target_table` keys.
//!
//! A template is literal text with `{name}` placeholders. [`check`] validates one against the
//! names its key allows (at load time, so mistakes name the key and line); [`render`] substitutes
//! values in one pass, so a substituted value is never scanned for placeholders again.

/// Checks that every `{` of `template` opens a placeholder from `allowed` closed by `}`, and that
/// there is no stray `}`. Returns the placeholder names used, in order, or what is wrong.
pub(crate) fn check<'t>(template: &'t str, allowed: &[&str]) -> Result<Vec<&'t str>, String> {
    let list = || {
        let names: Vec<String> = allowed.iter().map(|n| format!("{{{n}}}")).collect();
        match names.split_last() {
            Some((last, [])) => last.clone(),
            Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
            None => "none".to_string(),
        }
    };
    let mut used = Vec::new();
    let mut rest = template;
    while let Some(at) = rest.find(['{', '}']) {
        if rest[at..].starts_with('}') {
            return Err(format!(
                "has a `}}` without an opening `{{`; the placeholders are {}",
                list()
            ));
        }
        let after = &rest[at + 1..];
        let Some(end) = after
            .find(['{', '}'])
            .filter(|&i| after[i..].starts_with('}'))
        else {
            return Err(format!(
                "has a `{{` that is not closed by `}}`; write placeholders as {}",
                list()
            ));
        };
        let name = &after[..end];
        if !allowed.contains(&name) {
            return Err(format!(
                "unknown placeholder `{{{name}}}`; the placeholders are {}",
                list()
            ));
        }
        used.push(name);
        rest = &after[end + 1..];
    }
    Ok(used)
}

/// Replaces each `{name}` of `template` that `values` names with its value, in one pass; any
/// other text, including unknown or unclosed placeholders, is copied as it is.
pub(crate) fn render(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let value = after.find('}').and_then(|close| {
            let name = &after[..close];
            values
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v, close))
        });
        match value {
            Some((value, close)) => {
                out.push_str(value);
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALLOWED: &[&str] = &["tenant", "region", "function", "id"];

    #[test]
    fn check_lists_used_placeholders() {
        assert_eq!(
            check("{tenant}_{region}_{function}", ALLOWED),
            Ok(vec!["tenant", "region", "function"])
        );
        assert_eq!(check("plain", ALLOWED), Ok(vec![]));
        assert_eq!(check("x_{id}", ALLOWED), Ok(vec!["id"]));
    }

    #[test]
    fn check_rejects_bad_placeholders() {
        let e = check("{tenat}_{region}", ALLOWED).unwrap_err();
        assert!(e.contains("unknown placeholder `{tenat}`"), "{e}");
        assert!(e.contains("{tenant}, {region}, {function} and {id}"), "{e}");
        assert!(check("{}", ALLOWED).unwrap_err().contains("`{}`"));
        assert!(check("{TENANT}", ALLOWED).is_err(), "names are exact");
        for unclosed in ["{tenant", "x_{", "{ten{ant}", "{tenant}_{region"] {
            let e = check(unclosed, ALLOWED).unwrap_err();
            assert!(e.contains("not closed"), "{unclosed}: {e}");
        }
        for stray in ["tenant}", "{tenant}}", "}"] {
            let e = check(stray, ALLOWED).unwrap_err();
            assert!(e.contains("without an opening"), "{stray}: {e}");
        }
        let e = check("{tenant}", &["table"]).unwrap_err();
        assert!(e.ends_with("the placeholders are {table}"), "{e}");
    }

    #[test]
    fn render_substitutes_once() {
        let values = [("database", "a{table}"), ("table", "t")];
        assert_eq!(render("{database}__{table}", &values), "a{table}__t");
        assert_eq!(render("{table}", &values), "t");
        assert_eq!(render("x_{other}_{table}", &values), "x_{other}_t");
        assert_eq!(render("{table", &values), "{table");
        assert_eq!(render("}{table}{", &values), "}t{");
        assert_eq!(render("", &values), "");
    }
}
