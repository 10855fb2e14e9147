//! Connection URLs that carry passwords, held so that formatting never reveals them.
//!
//! Invariant: `Debug` and `Display` of a [`SecretUrl`] show the URL with the password (and the
//! values of password-like query parameters) replaced by `***`. The only way to the real text is
//! [`SecretUrl::expose`], called where a driver needs it.
//!
//! A URL written with secret references (`${aws-sm:db#password}`, `${file:pw}`) keeps them:
//! [`SecretUrl::resolve`] fetches their values into a new `SecretUrl` each time a connection is
//! about to open, so rotated secrets are picked up. Such a URL prints as written (its references,
//! never their values), and its [`SecretUrl::scrub`] also masks every value it was resolved with.

use std::fmt;
use std::sync::Arc;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::env::Piece;
use crate::secrets::{Freshness, SecretError, SecretStore};

/// Characters escaped in a secret placed inside a URL (a user name, a password): all but the
/// unreserved ones, so the value is always data and never URL syntax.
pub(crate) const USERINFO: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

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
#[derive(Clone)]
pub struct SecretUrl {
    /// The URL a driver gets: resolved; for a template not resolved yet, its references as
    /// written (which no driver accepts, and which hold no secret).
    text: String,
    /// The URL as written, when it has secret references.
    template: Option<Arc<Template>>,
    /// False for a URL with references not fetched yet.
    resolved: bool,
    /// The values the references were resolved to, raw and as placed in the URL, for
    /// [`SecretUrl::scrub`].
    values: Vec<String>,
}

/// A URL with secret references, and what resolves them.
struct Template {
    pieces: Vec<Piece>,
    /// The URL with its references as written: what prints and what equality compares.
    written: String,
    /// `file.toml:LINE: key `sources[0].url``, for resolution errors.
    origin: String,
    store: Arc<SecretStore>,
}

impl PartialEq for SecretUrl {
    /// Equal when written alike: a rotated secret is not a changed config.
    fn eq(&self, other: &Self) -> bool {
        self.written() == other.written()
    }
}

impl Eq for SecretUrl {}

impl SecretUrl {
    /// Wraps a URL (after `${ENV}` interpolation).
    pub fn new(url: impl Into<String>) -> Self {
        SecretUrl {
            text: url.into(),
            template: None,
            resolved: true,
            values: Vec::new(),
        }
    }

    /// A URL with secret references among `pieces`, resolved by `store`; `origin` names where
    /// it is written (`file.toml:LINE: key `k``) for resolution errors.
    pub(crate) fn with_references(
        pieces: Vec<Piece>,
        origin: String,
        store: Arc<SecretStore>,
    ) -> Self {
        let written: String = pieces
            .iter()
            .map(|piece| match piece {
                Piece::Text(text) => text.clone(),
                Piece::Secret(reference) => format!("${{{reference}}}"),
            })
            .collect();
        SecretUrl {
            text: written.clone(),
            template: Some(Arc::new(Template {
                pieces,
                written,
                origin,
                store,
            })),
            resolved: false,
            values: Vec::new(),
        }
    }

    /// The same URL with resolution errors naming `origin` instead (an inventory line).
    pub(crate) fn with_origin(&self, origin: String) -> Self {
        let mut url = self.clone();
        if let Some(template) = &self.template {
            url.template = Some(Arc::new(Template {
                pieces: template.pieces.clone(),
                written: template.written.clone(),
                origin,
                store: template.store.clone(),
            }));
        }
        url
    }

    /// True when the URL has secret references (`${file:...}`, `${aws-sm:...}`).
    pub fn has_references(&self) -> bool {
        self.template.is_some()
    }

    /// True when [`SecretUrl::expose`] gives a URL a driver can use: it has no references, or
    /// they were fetched.
    pub fn is_resolved(&self) -> bool {
        self.resolved
    }

    /// A stand-in URL to check the syntax of at load time (each reference replaced by a
    /// placeholder); `None` when the whole URL is one reference.
    pub(crate) fn probe(&self) -> Option<String> {
        let Some(template) = &self.template else {
            return Some(self.text.clone());
        };
        if let [Piece::Secret(_)] = template.pieces.as_slice() {
            return None;
        }
        Some(
            template
                .pieces
                .iter()
                .map(|piece| match piece {
                    Piece::Text(text) => text.as_str(),
                    Piece::Secret(_) => "secret",
                })
                .collect(),
        )
    }

    /// This URL with its secret references fetched (itself when it has none), keeping them
    /// for the next call. A reference that is the whole URL gives the URL; one inside a URL is
    /// percent-encoded, so a password with `@`, `/` or `#` stays a password.
    pub async fn resolve(&self, freshness: Freshness) -> Result<SecretUrl, SecretError> {
        let Some(template) = &self.template else {
            return Ok(self.clone());
        };
        // Boxed: the AWS SDK's futures are deep, and every connect path awaits this one.
        Box::pin(self.fetch(template, freshness)).await
    }

    async fn fetch(
        &self,
        template: &Arc<Template>,
        freshness: Freshness,
    ) -> Result<SecretUrl, SecretError> {
        let whole = template.pieces.len() == 1;
        let mut text = String::new();
        let mut values = Vec::new();
        for piece in &template.pieces {
            match piece {
                Piece::Text(part) => text.push_str(part),
                Piece::Secret(reference) => {
                    let value = template
                        .store
                        .value(reference, freshness, &template.origin)
                        .await?;
                    let value = value.expose();
                    if whole {
                        text.push_str(value);
                    } else {
                        let encoded = utf8_percent_encode(value, USERINFO).to_string();
                        text.push_str(&encoded);
                        values.push(encoded);
                    }
                    values.push(value.to_owned());
                }
            }
        }
        values.retain(|v| !v.is_empty());
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        values.dedup();
        Ok(SecretUrl {
            text,
            template: Some(template.clone()),
            resolved: true,
            values,
        })
    }

    /// The URL as written: with its references, never their values.
    fn written(&self) -> &str {
        match &self.template {
            Some(template) => &template.written,
            None => &self.text,
        }
    }

    /// The full URL with its password, for the database driver only. Never log it.
    pub fn expose(&self) -> &str {
        &self.text
    }

    /// The URL scheme (`mysql`, `postgres`, ...), if the text has one.
    pub fn scheme(&self) -> Option<&str> {
        self.written().split_once("://").map(|(scheme, _)| scheme)
    }

    /// The URL with secrets replaced by `***`: what `Display` prints. A URL with references
    /// prints as written (references in place of their values).
    pub fn redacted(&self) -> String {
        let Some(template) = &self.template else {
            return redact(&self.text);
        };
        // References hold `:` and `#`, which would confuse the URL split: redact with a
        // placeholder in each reference's place, then show the references that remain.
        let placeholder = |i: usize| format!("tidemarkref{i}x");
        let mut text = String::new();
        let mut references = Vec::new();
        for piece in &template.pieces {
            match piece {
                Piece::Text(part) => text.push_str(part),
                Piece::Secret(reference) => {
                    text.push_str(&placeholder(references.len()));
                    references.push(format!("${{{reference}}}"));
                }
            }
        }
        let mut out = redact(&text);
        for (i, reference) in references.iter().enumerate() {
            out = out.replace(&placeholder(i), reference);
        }
        out
    }

    /// The password exactly as written in the URL (possibly percent-encoded), if any.
    fn raw_password(&self) -> Option<&str> {
        let rest = self.text.split_once("://")?.1;
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
        if let Some((_, query)) = self.text.split_once('?') {
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
        let mut out = text.replace(&self.text, &self.redacted());
        let mut secrets: Vec<String> = self.values.iter().cloned().chain(self.secrets()).collect();
        // Longest first, so a secret that contains another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        for secret in secrets {
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

/// `url` with its password and password-like query values replaced by `***`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
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

    #[tokio::test]
    async fn references_resolve_encoded_print_as_written_and_are_scrubbed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "p@ss/w#rd\n").unwrap();
        let store = SecretStore::new(Default::default());
        let pieces = super::super::env::interpolate_pieces(
            "mysql://repl:${file:pw}@db:3306",
            &|_| None,
            dir.path(),
        )
        .unwrap();
        let url =
            SecretUrl::with_references(pieces, "t.toml:4: key `sources[0].url`".into(), store);
        assert!(url.has_references());
        assert_eq!(url.probe().as_deref(), Some("mysql://repl:secret@db:3306"));
        let resolved = url.resolve(Freshness::Cached).await.unwrap();
        assert_eq!(resolved.expose(), "mysql://repl:p%40ss%2Fw%23rd@db:3306");
        assert_eq!(resolved, url, "a rotated value is not a changed URL");
        let printed = format!("{resolved} {resolved:?}");
        assert!(
            !printed.contains("ss/w") && !printed.contains("%40ss"),
            "{printed}"
        );
        assert_eq!(
            resolved.scrub("denied: p@ss/w#rd, p%40ss%2Fw%23rd"),
            "denied: ***, ***"
        );
        std::fs::write(&file, "rotated\n").unwrap();
        let again = resolved.resolve(Freshness::Recheck).await.unwrap();
        assert_eq!(again.expose(), "mysql://repl:rotated@db:3306");
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
