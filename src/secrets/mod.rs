//! Secrets that config strings reference instead of holding: `${file:PATH}` and
//! `${aws-sm:SECRET_ID}`, each optionally `#field` of a JSON secret.
//!
//! Config loading stays synchronous and offline: it only parses references
//! ([`SecretRef::parse`]). A [`SecretStore`] fetches their values when a connection is about to
//! be opened, and again at every reconnect, so a rotated secret is picked up without a restart.
//! AWS Secrets Manager values are cached for a short time ([`Freshness`]) and fetched once for
//! all concurrent callers, so a thousand sources sharing one secret make one call.
//!
//! Invariant: a fetched value is held in a [`SecretValue`], whose `Debug` prints `***` and
//! which has no `Display`; errors name the config file, line, key and reference, never a
//! value (nor a JSON parser's message, which can quote the text).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_config::BehaviorVersion;

use crate::error::ErrorKind;

/// How long a fetched Secrets Manager value is used before it is fetched again, at most.
pub const CACHE_TTL: Duration = Duration::from_secs(60);
/// How old a cached value may be when a connection is opened again after a failure: a rotated
/// secret is re-read, while a thousand sources restarting together still make one call.
pub const RECHECK_AGE: Duration = Duration::from_secs(5);

/// `[secrets]`: where `${aws-sm:...}` references are fetched from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretsSettings {
    /// AWS region of Secrets Manager; the default AWS chain's region (`AWS_REGION`, profile)
    /// when absent.
    pub region: Option<String>,
    /// Secrets Manager endpoint URL (a VPC endpoint, or a test server); AWS's when absent.
    pub endpoint: Option<String>,
}

/// A reference to a secret kept outside the config file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SecretRef {
    /// `${file:PATH}`: the file's content, trailing newline trimmed (path resolved against the
    /// config file's directory).
    File {
        /// The file.
        path: PathBuf,
        /// `#field`: one field of a JSON document.
        field: Option<String>,
    },
    /// `${aws-sm:SECRET_ID}`: an AWS Secrets Manager secret (name or ARN).
    AwsSm {
        /// Name or ARN.
        id: String,
        /// `#field`: one field of a JSON secret.
        field: Option<String>,
    },
}

/// The reference kinds, for messages.
pub(crate) const KINDS: &str = "${NAME} (environment), ${file:PATH} or ${aws-sm:SECRET_ID}";

impl SecretRef {
    /// Parses the body of `${KIND:REST}`; `Ok(None)` when `kind` is not a secret reference kind.
    /// A relative file path is resolved against `base`.
    pub(crate) fn parse(kind: &str, rest: &str, base: &Path) -> Result<Option<SecretRef>, String> {
        let (target, field) = match rest.split_once('#') {
            Some((target, "")) => {
                return Err(format!(
                    "`${{{kind}:{target}#}}` has an empty field name after `#`"
                ));
            }
            Some((target, field)) => (target, Some(field.to_owned())),
            None => (rest, None),
        };
        if target.is_empty() {
            return Err(format!(
                "`${{{kind}:}}` names no {}",
                if kind == "file" { "file" } else { "secret" }
            ));
        }
        match kind {
            "file" => Ok(Some(SecretRef::File {
                path: base.join(target),
                field,
            })),
            "aws-sm" => Ok(Some(SecretRef::AwsSm {
                id: target.to_owned(),
                field,
            })),
            _ => Ok(None),
        }
    }

    fn field(&self) -> Option<&str> {
        match self {
            SecretRef::File { field, .. } | SecretRef::AwsSm { field, .. } => field.as_deref(),
        }
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::File { path, .. } => write!(f, "file:{}", path.display())?,
            SecretRef::AwsSm { id, .. } => write!(f, "aws-sm:{id}")?,
        }
        match self.field() {
            Some(field) => write!(f, "#{field}"),
            None => Ok(()),
        }
    }
}

/// A fetched secret: never printed (`Debug` shows `***`; there is no `Display`).
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(String);

impl SecretValue {
    /// The value, for the one place that needs it (a URL handed to a driver). Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// How recent a fetched value must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// A value fetched within [`CACHE_TTL`] will do: a first connection.
    Cached,
    /// Only one fetched within [`RECHECK_AGE`]: a reconnect after a failure, which may be a
    /// rotated password.
    Recheck,
}

impl Freshness {
    fn max_age(self) -> Duration {
        match self {
            Freshness::Cached => CACHE_TTL,
            Freshness::Recheck => RECHECK_AGE,
        }
    }
}

/// Why a secret reference could not be resolved. `Display` is one line naming the config key
/// and line and the reference, never a value.
#[derive(Debug, thiserror::Error)]
#[error("{origin}: secret {reference}: {problem}")]
pub struct SecretError {
    /// `file.toml:LINE: key `sources[0].url`` (or the inventory line and column).
    origin: String,
    /// The reference as written (`aws-sm:ID#field`).
    reference: String,
    /// What went wrong.
    problem: String,
    /// Whether waiting can fix it.
    kind: ErrorKind,
}

impl SecretError {
    /// Whether waiting can fix it: a network failure can, a missing secret or field needs an
    /// operator.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Where the reference is written (file, line, key).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// What went wrong, without the origin.
    pub fn problem(&self) -> &str {
        &self.problem
    }
}

/// What one fetch produced, with when.
struct Fetched {
    text: SecretValue,
    at: Instant,
}

/// A document one fetch returns: the unit of caching, so `#username` and `#password` of one
/// secret cost one call.
type Slot = Arc<tokio::sync::Mutex<Option<Fetched>>>;

/// Fetches referenced secrets, caching Secrets Manager values briefly. One per loaded config;
/// every URL of that config shares it.
pub struct SecretStore {
    settings: SecretsSettings,
    client: tokio::sync::OnceCell<aws_sdk_secretsmanager::Client>,
    cache: Mutex<HashMap<String, Slot>>,
    calls: std::sync::atomic::AtomicU64,
}

impl fmt::Debug for SecretStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretStore")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl SecretStore {
    /// A store fetching with `settings`; nothing is contacted until a value is needed.
    pub fn new(settings: SecretsSettings) -> Arc<SecretStore> {
        Arc::new(SecretStore {
            settings,
            client: tokio::sync::OnceCell::new(),
            cache: Mutex::new(HashMap::new()),
            calls: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The settings it fetches with.
    pub fn settings(&self) -> &SecretsSettings {
        &self.settings
    }

    /// Secrets Manager calls made so far (for tests of the cache).
    pub fn aws_calls(&self) -> u64 {
        self.calls.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The value of `reference` (its `#field` taken), no older than `freshness` allows. `origin`
    /// names where it is written, for the error.
    pub async fn value(
        &self,
        reference: &SecretRef,
        freshness: Freshness,
        origin: &str,
    ) -> Result<SecretValue, SecretError> {
        let fail = |problem: String, kind: ErrorKind| SecretError {
            origin: origin.to_owned(),
            reference: reference.to_string(),
            problem,
            kind,
        };
        let document = match reference {
            // A local file is cheap to read: always read it, so a rotated file is seen at once.
            SecretRef::File { path, .. } => read_file(path).map_err(|(p, k)| fail(p, k))?,
            SecretRef::AwsSm { id, .. } => self
                .aws_document(id, freshness)
                .await
                .map_err(|(p, k)| fail(p, k))?,
        };
        match reference.field() {
            None => Ok(document),
            Some(field) => {
                pick_field(document.expose(), field).map_err(|p| fail(p, ErrorKind::Operator))
            }
        }
    }

    /// The whole secret `id`, from the cache when fresh enough, else fetched once for every
    /// caller waiting on it.
    async fn aws_document(
        &self,
        id: &str,
        freshness: Freshness,
    ) -> Result<SecretValue, (String, ErrorKind)> {
        let slot = {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            cache.entry(id.to_owned()).or_default().clone()
        };
        let mut slot = slot.lock().await;
        if let Some(fetched) = slot.as_ref()
            && fetched.at.elapsed() < freshness.max_age()
        {
            return Ok(fetched.text.clone());
        }
        let text = self.fetch(id).await?;
        *slot = Some(Fetched {
            text: text.clone(),
            at: Instant::now(),
        });
        Ok(text)
    }

    async fn client(&self) -> &aws_sdk_secretsmanager::Client {
        self.client
            .get_or_init(|| async {
                let mut loader = aws_config::defaults(BehaviorVersion::latest());
                if let Some(region) = &self.settings.region {
                    loader = loader.region(aws_config::Region::new(region.clone()));
                }
                let aws = loader.load().await;
                let mut builder = aws_sdk_secretsmanager::config::Builder::from(&aws);
                if let Some(endpoint) = &self.settings.endpoint {
                    builder = builder.endpoint_url(endpoint);
                }
                aws_sdk_secretsmanager::Client::from_conf(builder.build())
            })
            .await
    }

    async fn fetch(&self, id: &str) -> Result<SecretValue, (String, ErrorKind)> {
        use aws_sdk_secretsmanager::error::{DisplayErrorContext, SdkError};
        use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError;

        self.calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let output = self
            .client()
            .await
            .get_secret_value()
            .secret_id(id)
            .send()
            .await
            .map_err(|error| {
                let kind = match &error {
                    SdkError::ServiceError(e) => match e.err() {
                        GetSecretValueError::ResourceNotFoundException(_)
                        | GetSecretValueError::InvalidParameterException(_)
                        | GetSecretValueError::InvalidRequestException(_)
                        | GetSecretValueError::DecryptionFailure(_) => ErrorKind::Operator,
                        e if e.meta().code() == Some("AccessDeniedException") => {
                            ErrorKind::Operator
                        }
                        _ => ErrorKind::Retry,
                    },
                    _ => ErrorKind::Retry,
                };
                // The SDK's message names the secret and the failure, never a value.
                (
                    format!(
                        "AWS Secrets Manager GetSecretValue failed: {}",
                        DisplayErrorContext(&error)
                    ),
                    kind,
                )
            })?;
        match (output.secret_string(), output.secret_binary()) {
            (Some(text), _) => Ok(SecretValue(text.to_owned())),
            (None, Some(_)) => Err((
                "is a binary secret (SecretBinary); tidemark reads text secrets (SecretString)"
                    .to_owned(),
                ErrorKind::Operator,
            )),
            (None, None) => Err((
                "has no value (SecretString is empty)".to_owned(),
                ErrorKind::Operator,
            )),
        }
    }
}

/// A file's content, trailing newline (`\n` or `\r\n`) trimmed.
fn read_file(path: &Path) -> Result<SecretValue, (String, ErrorKind)> {
    let mut text = std::fs::read_to_string(path).map_err(|e| {
        let kind = match e.kind() {
            // A mounted secret may be replaced non-atomically: a moment later it is there.
            std::io::ErrorKind::Interrupted => ErrorKind::Retry,
            _ => ErrorKind::Operator,
        };
        (format!("cannot read {}: {e}", path.display()), kind)
    })?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(SecretValue(text))
}

/// Field `field` of the secret `document`: a string (or number, or boolean) field of a JSON
/// object; `username` and `password` also of a `user:password` text.
fn pick_field(document: &str, field: &str) -> Result<SecretValue, String> {
    let trimmed = document.trim();
    if !trimmed.starts_with('{') {
        if let Some((user, password)) = trimmed.split_once(':')
            && !user.is_empty()
        {
            match field {
                "username" => return Ok(SecretValue(user.to_owned())),
                "password" => return Ok(SecretValue(password.to_owned())),
                _ => {}
            }
        }
        return Err(format!(
            "is not a JSON object, so it has no field `{field}` (a `user:password` text has only `username` and `password`)"
        ));
    }
    // serde_json's message can quote the text: never show it.
    let value: serde_json::Value = serde_json::from_str(trimmed)
        .map_err(|_| "is not valid JSON (it starts with `{`)".to_owned())?;
    match value.get(field) {
        Some(serde_json::Value::String(text)) => Ok(SecretValue(text.clone())),
        Some(serde_json::Value::Number(n)) => Ok(SecretValue(n.to_string())),
        Some(serde_json::Value::Bool(b)) => Ok(SecretValue(b.to_string())),
        Some(_) => Err(format!(
            "field `{field}` is not a string, number or boolean"
        )),
        None => {
            let mut keys: Vec<&str> = value
                .as_object()
                .map(|o| o.keys().map(String::as_str).collect())
                .unwrap_or_default();
            keys.sort_unstable();
            Err(format!(
                "has no field `{field}`; its fields are: {}",
                keys.join(", ")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_with_fields_and_relative_paths() {
        let base = Path::new("/etc/tidemark");
        assert_eq!(
            SecretRef::parse("file", "pw.txt", base).unwrap(),
            Some(SecretRef::File {
                path: "/etc/tidemark/pw.txt".into(),
                field: None
            })
        );
        assert_eq!(
            SecretRef::parse(
                "aws-sm",
                "arn:aws:secretsmanager:us-east-1:1:secret:db-Ab#password",
                base
            )
            .unwrap(),
            Some(SecretRef::AwsSm {
                id: "arn:aws:secretsmanager:us-east-1:1:secret:db-Ab".into(),
                field: Some("password".into())
            })
        );
        assert_eq!(SecretRef::parse("vault", "x", base).unwrap(), None);
        assert!(SecretRef::parse("aws-sm", "", base).is_err());
        assert!(SecretRef::parse("aws-sm", "db#", base).is_err());
    }

    #[test]
    fn fields_of_json_and_user_password_secrets_never_quote_the_value() {
        let json = r#"{"username": "app", "password": "s3cr3t!", "port": 5432}"#;
        assert_eq!(pick_field(json, "password").unwrap().expose(), "s3cr3t!");
        assert_eq!(pick_field(json, "port").unwrap().expose(), "5432");
        let missing = pick_field(json, "pasword").unwrap_err();
        assert!(missing.contains("`pasword`") && missing.contains("password, port, username"));
        assert!(!missing.contains("s3cr3t"), "{missing}");
        let broken = pick_field(r#"{"password": "s3cr3t!""#, "password").unwrap_err();
        assert!(!broken.contains("s3cr3t"), "{broken}");
        assert_eq!(pick_field("repl:p:w", "password").unwrap().expose(), "p:w");
        assert_eq!(pick_field("repl:p:w", "username").unwrap().expose(), "repl");
        let plain = pick_field("hunter2", "password").unwrap_err();
        assert!(!plain.contains("hunter2"), "{plain}");
        assert_eq!(format!("{:?}", SecretValue("hunter2".into())), "***");
    }

    #[tokio::test]
    async fn files_are_trimmed_and_reread_and_a_missing_one_names_its_origin() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "first\n").unwrap();
        let store = SecretStore::new(SecretsSettings::default());
        let reference = SecretRef::File {
            path: path.clone(),
            field: None,
        };
        let origin = "t.toml:3: key `sources[0].url`";
        let value = store.value(&reference, Freshness::Cached, origin).await;
        assert_eq!(value.unwrap().expose(), "first");
        std::fs::write(&path, "second\r\n").unwrap();
        let value = store.value(&reference, Freshness::Cached, origin).await;
        assert_eq!(value.unwrap().expose(), "second");
        std::fs::remove_file(&path).unwrap();
        let error = store
            .value(&reference, Freshness::Cached, origin)
            .await
            .unwrap_err();
        let text = error.to_string();
        assert!(
            text.starts_with("t.toml:3: key `sources[0].url`: secret file:"),
            "{text}"
        );
        assert!(!text.contains("second"), "{text}");
        assert_eq!(error.kind(), ErrorKind::Operator);
    }
}
