//! Connection URLs that carry passwords, held so that formatting never reveals them.
//!
//! Invariant: `Debug` and `Display` of a [`SecretUrl`] show the URL with the password (and the
//! values of password-like query parameters) replaced by `***`. The only way to the real text is
//! [`SecretUrl::expose`], called where a driver needs it.

use std::fmt;

/// Query parameters whose values are masked like the password.
const SECRET_PARAMS: [&str; 7] = [
    "password",
    "passwd",
    "pass",
    "pwd",
    "sslpassword",
    "secret",
    "token",
];

/// A connection URL such as `mysql://repl:PASSWORD@host:3306` whose password never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    /// Wraps a URL (after `${ENV}` interpolation).
    pub fn new(url: impl Into<String>) -> Self {
        SecretUrl(url.into())
    }

    /// The full URL with its password, for the database driver only. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL scheme (`mysql`, `postgres`, ...), if the text has one.
    pub fn scheme(&self) -> Option<&str> {
        self.0.split_once("://").map(|(scheme, _)| scheme)
    }

    /// The URL with secrets replaced by `***`: what `Display` prints.
    pub fn redacted(&self) -> String {
        let Some((scheme, rest)) = self.0.split_once("://") else {
            // Not a URL we understand: show nothing of it rather than risk a secret.
            return "***".to_string();
        };
        let (userinfo, host_and_tail) = split_userinfo(rest);
        let authority_end = host_and_tail
            .find(['/', '?', '#'])
            .unwrap_or(host_and_tail.len());
        let (host, tail) = host_and_tail.split_at(authority_end);
        let authority = match userinfo {
            Some(userinfo) => match userinfo.split_once(':') {
                Some((user, _password)) => format!("{user}:***@{host}"),
                None => format!("{userinfo}@{host}"),
            },
            None => host.to_string(),
        };
        format!("{scheme}://{authority}{}", redact_query(tail))
    }

    /// The password exactly as written in the URL (possibly percent-encoded), if any.
    fn raw_password(&self) -> Option<&str> {
        let rest = self.0.split_once("://")?.1;
        let userinfo = split_userinfo(rest).0?;
        userinfo.split_once(':').map(|(_, password)| password)
    }

    /// Every secret this URL holds (the password, raw and percent-decoded, and the values of
    /// password-like query parameters), non-empty.
    fn secrets(&self) -> Vec<String> {
        let mut secrets = Vec::new();
        if let Some(raw) = self.raw_password() {
            secrets.push(raw.to_string());
            secrets.push(percent_decode(raw));
        }
        if let Some((_, query)) = self.0.split_once('?') {
            let query = query.split('#').next().unwrap_or("");
            for pair in query.split('&') {
                if let Some((key, value)) = pair.split_once('=')
                    && is_secret_param(key)
                {
                    secrets.push(value.to_string());
                    secrets.push(percent_decode(value));
                }
            }
        }
        secrets.retain(|s| !s.is_empty());
        // Longest first, so a secret that contains another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        secrets
    }

    /// Replaces every occurrence of this URL's secrets in `text` (a driver's error message, for
    /// instance) with `***`.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.replace(&self.0, &self.redacted());
        for secret in self.secrets() {
            out = out.replace(&secret, "***");
        }
        out
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SecretUrl").field(&self.redacted()).finish()
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Splits `user:password@host/...` at the last `@`, so a password with unencoded `@`, `/` or `?`
/// is still taken whole (masking too much is safe, too little is not).
fn split_userinfo(rest: &str) -> (Option<&str>, &str) {
    match rest.rfind('@') {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    }
}

fn is_secret_param(key: &str) -> bool {
    SECRET_PARAMS.iter().any(|p| key.eq_ignore_ascii_case(p))
}

/// Masks the values of password-like parameters in a `/path?query#fragment` tail.
fn redact_query(tail: &str) -> String {
    let Some((path, query)) = tail.split_once('?') else {
        return tail.to_string();
    };
    let (query, fragment) = match query.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (query, None),
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if is_secret_param(key) => format!("{key}=***"),
            _ => pair.to_string(),
        })
        .collect();
    let mut out = format!("{path}?{}", query.join("&"));
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

/// Decodes `%XX` escapes; malformed escapes are kept as written.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = text.get(i + 1..i + 3)
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_password_and_params() {
        let url = SecretUrl::new("mysql://repl:hunter%402@db.example:3306/shop?x=1&password=p2#f");
        assert_eq!(
            url.to_string(),
            "mysql://repl:***@db.example:3306/shop?x=1&password=***#f"
        );
        let debug = format!("{url:?}");
        assert!(!debug.contains("hunter"), "{debug}");
        assert_eq!(
            url.expose(),
            "mysql://repl:hunter%402@db.example:3306/shop?x=1&password=p2#f"
        );
        assert_eq!(
            url.scrub("denied for hunter@2 and hunter%402 and p2"),
            "denied for *** and *** and ***"
        );
    }

    #[test]
    fn keeps_urls_without_password() {
        let url = SecretUrl::new("mysql://root@127.0.0.1:3306");
        assert_eq!(url.to_string(), "mysql://root@127.0.0.1:3306");
        assert_eq!(url.scheme(), Some("mysql"));
        assert_eq!(SecretUrl::new("host=x password=y").to_string(), "***");
        let odd = SecretUrl::new("mysql://u:pa/ss?w@h:1/db");
        assert_eq!(odd.to_string(), "mysql://u:***@h:1/db");
    }
}
