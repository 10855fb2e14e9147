//! TLS for every database connection tidemark opens: MySQL/MariaDB sources, Postgres sources
//! (SQL and replication connections) and the Postgres warehouse.
//!
//! Users say what they want in the connection URL, the way each database's own clients read it:
//! Postgres URLs take libpq's `sslmode` (`disable`, `prefer`, `require`, `verify-ca`,
//! `verify-full`) and `sslrootcert` (a PEM CA file, or `system` for the Mozilla roots built into
//! tidemark); MySQL URLs take the MySQL client's `ssl-mode` (`DISABLED`, `REQUIRED`,
//! `VERIFY_IDENTITY`) and `ssl-ca`. This module strips those parameters before a driver sees the
//! URL (tokio-postgres knows no `verify-*` nor `sslrootcert`, mysql_async no `ssl-mode`) and
//! builds each driver's TLS setup from one [`TlsSettings`], so the three drivers verify alike.
//!
//! Guarantees: without a TLS parameter a connection is plain, as before TLS existed (unlike
//! libpq's default `prefer`, which encrypts without checking who answers). `verify-full` /
//! `VERIFY_IDENTITY` accept only a server whose certificate chains to the configured CA and
//! names the host of the URL; a failure says which host, which setting, and the fix, and never
//! contains the URL's password.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use percent_encoding::percent_decode_str;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore};

use crate::config::SecretUrl;

/// How much a connection checks the server it talks to, from none to chain and host name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain TCP (the default when the URL sets nothing).
    Disable,
    /// TLS when the server offers it, plain otherwise; nothing verified (Postgres only).
    Prefer,
    /// TLS required; the certificate is not verified (encryption against passive listeners only).
    Require,
    /// TLS required; the certificate must chain to the CA, whatever host it names.
    VerifyCa,
    /// TLS required; the certificate must chain to the CA and name the host of the URL.
    VerifyFull,
}

/// Which database's names the settings were written with, so messages quote the user's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// libpq's `sslmode` / `sslrootcert`.
    Postgres,
    /// The MySQL client's `ssl-mode` / `ssl-ca`.
    Mysql,
}

/// Where the trusted CA certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaSource {
    /// A PEM file of one or more CA certificates.
    File(PathBuf),
    /// The Mozilla root set built into tidemark (webpki-roots): public CAs only.
    BuiltIn,
}

/// The TLS part of one connection URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// What is verified.
    pub mode: TlsMode,
    /// The trusted CAs, when the mode verifies.
    pub ca: Option<CaSource>,
    /// The parameter names the URL used.
    pub dialect: Dialect,
}

/// Why a URL's TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A TLS parameter has a value tidemark does not know or cannot honour.
    #[error("{param}={value} is not supported: {hint}")]
    Unsupported {
        /// The parameter as written (`sslmode`, `ssl-mode`).
        param: &'static str,
        /// The value as written.
        value: String,
        /// What to write instead.
        hint: &'static str,
    },
    /// A verifying mode without a CA to verify against.
    #[error(
        "{param}={value} needs the CA that signed the server's certificate: add {ca_param}=/path/to/ca.pem{system}"
    )]
    MissingCa {
        /// The mode parameter as written.
        param: &'static str,
        /// The mode as written.
        value: String,
        /// The CA parameter to add.
        ca_param: &'static str,
        /// The alternative of the built-in roots, where the dialect has one.
        system: &'static str,
    },
    /// The CA file cannot be read.
    #[error("cannot read the CA file {path} ({param}): {error}")]
    ReadCa {
        /// The CA parameter as written.
        param: &'static str,
        /// The file.
        path: PathBuf,
        /// Why reading failed.
        error: std::io::Error,
    },
    /// The CA file holds no usable certificate.
    #[error(
        "the CA file {path} ({param}) holds no usable PEM certificate{detail}: it must contain -----BEGIN CERTIFICATE----- blocks"
    )]
    BadCa {
        /// The CA parameter as written.
        param: &'static str,
        /// The file.
        path: PathBuf,
        /// What rustls said about it, if anything.
        detail: String,
    },
    /// rustls refused the configuration (no usable protocol versions or verifier).
    #[error("cannot set up TLS: {0}")]
    Setup(String),
    /// The rest of the URL is not one the driver accepts (the message is scrubbed of secrets).
    #[error("{0}")]
    Url(String),
}

impl TlsSettings {
    /// Plain connections, as a URL without TLS parameters asks for.
    pub fn disabled(dialect: Dialect) -> Self {
        TlsSettings {
            mode: TlsMode::Disable,
            ca: None,
            dialect,
        }
    }

    /// The settings as the user wrote them, for `tidemark check` and messages:
    /// `sslmode=verify-full sslrootcert=/etc/ca.pem`.
    pub fn describe(&self) -> String {
        let (mode_param, ca_param) = self.param_names();
        let mode = match (self.dialect, self.mode) {
            (Dialect::Postgres, TlsMode::Disable) => "disable",
            (Dialect::Postgres, TlsMode::Prefer) => "prefer",
            (Dialect::Postgres, TlsMode::Require) => "require",
            (Dialect::Postgres, TlsMode::VerifyCa) => "verify-ca",
            (Dialect::Postgres, TlsMode::VerifyFull) => "verify-full",
            (Dialect::Mysql, TlsMode::Disable) => "DISABLED",
            (Dialect::Mysql, TlsMode::Prefer) => "PREFERRED",
            (Dialect::Mysql, TlsMode::Require) => "REQUIRED",
            (Dialect::Mysql, TlsMode::VerifyCa) => "VERIFY_CA",
            (Dialect::Mysql, TlsMode::VerifyFull) => "VERIFY_IDENTITY",
        };
        match &self.ca {
            Some(CaSource::File(path)) => {
                format!("{mode_param}={mode} {ca_param}={}", path.display())
            }
            Some(CaSource::BuiltIn) => format!("{mode_param}={mode} {ca_param}=system"),
            None => format!("{mode_param}={mode}"),
        }
    }

    fn param_names(&self) -> (&'static str, &'static str) {
        match self.dialect {
            Dialect::Postgres => ("sslmode", "sslrootcert"),
            Dialect::Mysql => ("ssl-mode", "ssl-ca"),
        }
    }

    /// A tokio-postgres connector for these settings (also for `disable`, where it stays unused:
    /// tokio-postgres then never starts TLS).
    pub fn postgres_connector(&self) -> Result<tokio_postgres_rustls::MakeRustlsConnect, TlsError> {
        Ok(tokio_postgres_rustls::MakeRustlsConnect::new(
            self.client_config()?,
        ))
    }

    /// The replication connection's TLS setup (pgwire-replication has its own rustls code with
    /// the same modes). `host` is the URL's host: with `verify-full` on an IP address it is
    /// passed as the name to verify, because pgwire-replication otherwise refuses IP hosts,
    /// while the certificate may well carry that IP (as libpq accepts since Postgres 14).
    pub fn replication(&self, host: &str) -> pgwire_replication::TlsConfig {
        use pgwire_replication::TlsConfig;
        install_provider();
        let ca = match &self.ca {
            Some(CaSource::File(path)) => Some(path.clone()),
            _ => None,
        };
        let config = match self.mode {
            TlsMode::Disable => TlsConfig::disabled(),
            TlsMode::Prefer => TlsConfig {
                mode: pgwire_replication::SslMode::Prefer,
                ..TlsConfig::disabled()
            },
            TlsMode::Require => TlsConfig::require(),
            TlsMode::VerifyCa => TlsConfig::verify_ca(ca),
            TlsMode::VerifyFull => TlsConfig::verify_full(ca),
        };
        if self.mode == TlsMode::VerifyFull && host.parse::<std::net::IpAddr>().is_ok() {
            config.with_sni_hostname(host)
        } else {
            config
        }
    }

    /// mysql_async's TLS options, `None` for a plain connection.
    fn mysql_ssl_opts(&self) -> Option<mysql_async::SslOpts> {
        let opts = mysql_async::SslOpts::default();
        let opts = match &self.ca {
            Some(CaSource::File(path)) => opts
                .with_root_certs(vec![path.clone().into()])
                .with_disable_built_in_roots(true),
            _ => opts,
        };
        match self.mode {
            TlsMode::Disable => None,
            // Refused when parsed: mysql_async has no "TLS if offered".
            TlsMode::Prefer => None,
            TlsMode::Require => Some(
                opts.with_danger_accept_invalid_certs(true)
                    .with_danger_skip_domain_validation(true),
            ),
            // Refused when parsed (see `split_mysql_url`); kept honest should it be reached.
            TlsMode::VerifyCa => Some(opts.with_danger_skip_domain_validation(true)),
            TlsMode::VerifyFull => Some(opts),
        }
    }

    /// The rustls client configuration these settings describe.
    fn client_config(&self) -> Result<ClientConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setup(e.to_string()))?;
        let verifier: Arc<dyn ServerCertVerifier> = match self.mode {
            TlsMode::Disable | TlsMode::Prefer | TlsMode::Require => {
                Arc::new(AnyCertificate(provider))
            }
            TlsMode::VerifyCa | TlsMode::VerifyFull => {
                let webpki =
                    WebPkiServerVerifier::builder_with_provider(Arc::new(self.roots()?), provider)
                        .build()
                        .map_err(|e| TlsError::Setup(e.to_string()))?;
                if self.mode == TlsMode::VerifyCa {
                    Arc::new(AnyName(webpki))
                } else {
                    webpki
                }
            }
        };
        Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth())
    }

    /// The trusted CAs: the configured file, or the built-in Mozilla roots.
    fn roots(&self) -> Result<RootCertStore, TlsError> {
        let (_, ca_param) = self.param_names();
        match &self.ca {
            Some(CaSource::File(path)) => read_ca_file(path, ca_param),
            Some(CaSource::BuiltIn) | None => Ok(RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            }),
        }
    }

    /// A sentence for a connection failure caused by TLS, naming the host, the setting and the
    /// fix, or `None` when `error` (the driver's message) is not a TLS failure.
    ///
    /// The drivers report TLS failures differently (pgwire-replication only as text), so this
    /// reads rustls's and the drivers' wording, in one place; callers only add the sentence to
    /// the message and never decide a retry from it.
    pub fn explain(&self, host: &str, error: &str) -> Option<String> {
        let (mode_param, ca_param) = self.param_names();
        let setting = self.describe();
        let ca = match &self.ca {
            Some(CaSource::File(path)) => format!("the CA in {}", path.display()),
            _ => "the built-in public roots".to_string(),
        };
        if error.contains("not valid for name") || error.contains("NotValidForName") {
            return Some(format!(
                "TLS: the certificate of the server at {host} does not name {host} ({setting}): \
                 connect with a host name the certificate lists (see its subjectAltName), or \
                 have the server's certificate re-issued for {host}; {mode_param}=verify-ca \
                 (Postgres) skips the name check but lets any server holding a certificate of \
                 that CA pose as this one"
            ));
        }
        if error.contains("UnknownIssuer")
            || error.contains("unknown issuer")
            || error.contains("BadSignature")
            || error.contains("invalid peer certificate")
        {
            return Some(format!(
                "TLS: the certificate of the server at {host} is not signed by {ca} ({setting}): \
                 set {ca_param} to the CA file that signed the server's certificate (the \
                 provider's CA bundle, or ask the server's operator), or check that {host} is \
                 the server you mean"
            ));
        }
        let refused = [
            "server does not support TLS",
            "server does not support SSL",
            "SSLRequest rejected",
            "doesn't support SSL",
            "does not support SSL",
        ];
        if self.mode != TlsMode::Disable && refused.iter().any(|r| error.contains(r)) {
            return Some(format!(
                "TLS: the server at {host} does not offer TLS, which {setting} requires: enable \
                 TLS on the server (MySQL/MariaDB ssl_cert/ssl_key, Postgres ssl=on), or \
                 connect to a server that has it"
            ));
        }
        None
    }
}

/// Installs aws-lc-rs as the process's rustls crypto provider, once.
///
/// Both rustls providers are compiled in (the AWS SDK brings aws-lc-rs, pgwire-replication
/// ring), and rustls then refuses `ClientConfig::builder()` (which mysql_async calls) unless a
/// process default exists; pgwire-replication installs ring itself if nothing else did. One
/// provider for the whole process keeps every connection's TLS alike. Cheap to call again.
pub fn install_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err means another provider is already installed: that one is used, which is fine.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    });
}

fn read_ca_file(path: &Path, param: &'static str) -> Result<RootCertStore, TlsError> {
    let bytes = std::fs::read(path).map_err(|error| TlsError::ReadCa {
        param,
        path: path.to_path_buf(),
        error,
    })?;
    let bad = |detail: String| TlsError::BadCa {
        param,
        path: path.to_path_buf(),
        detail,
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&bytes) {
        let cert = cert.map_err(|e| bad(format!(" ({e})")))?;
        roots.add(cert).map_err(|e| bad(format!(" ({e})")))?;
    }
    if roots.is_empty() {
        return Err(bad(String::new()));
    }
    Ok(roots)
}

/// `verify-ca`: the chain must be valid; the host name is not checked.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `prefer` / `require`: any certificate (libpq's meaning); the handshake's signatures are
/// still checked, so the session is encrypted to whoever holds the certificate's key.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// One `key=value` of a URL's query, as written and decoded.
struct Param<'a> {
    raw: &'a str,
    key: &'a str,
    value: String,
}

/// Splits `url` into its text without the query, its query parameters and its fragment.
fn split_query(url: &str) -> (&str, Vec<Param<'_>>, &str) {
    let (rest, fragment) = match url.find('#') {
        Some(i) => url.split_at(i),
        None => (url, ""),
    };
    let Some((base, query)) = rest.split_once('?') else {
        return (rest, Vec::new(), fragment);
    };
    let params = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|raw| {
            let (key, value) = raw.split_once('=').unwrap_or((raw, ""));
            Param {
                raw,
                key,
                value: percent_decode_str(value).decode_utf8_lossy().into_owned(),
            }
        })
        .collect();
    (base, params, fragment)
}

/// Joins a URL back from its parts, keeping the parameters' original spelling.
fn join_query(base: &str, params: &[&str], fragment: &str) -> String {
    if params.is_empty() {
        format!("{base}{fragment}")
    } else {
        format!("{base}?{}{fragment}", params.join("&"))
    }
}

/// Reads libpq's `sslmode` and `sslrootcert` from a Postgres URL and returns the URL to hand to
/// tokio-postgres (which knows only `disable`, `prefer` and `require` and no `sslrootcert`).
///
/// As in libpq, `require` with a CA file verifies the chain like `verify-ca`.
pub fn split_postgres_url(url: &str) -> Result<(String, TlsSettings), TlsError> {
    let (base, params, fragment) = split_query(url);
    let mut mode = TlsMode::Disable;
    let mut mode_text = String::from("disable");
    let mut ca = None;
    let mut kept = Vec::new();
    for param in &params {
        match param.key {
            "sslmode" => {
                mode = match param.value.as_str() {
                    "disable" => TlsMode::Disable,
                    "prefer" => TlsMode::Prefer,
                    "require" => TlsMode::Require,
                    "verify-ca" => TlsMode::VerifyCa,
                    "verify-full" => TlsMode::VerifyFull,
                    "allow" => {
                        return Err(TlsError::Unsupported {
                            param: "sslmode",
                            value: param.value.clone(),
                            hint: "use disable, prefer, require, verify-ca or verify-full",
                        });
                    }
                    _ => {
                        return Err(TlsError::Unsupported {
                            param: "sslmode",
                            value: param.value.clone(),
                            hint: "libpq's values are disable, prefer, require, verify-ca and verify-full",
                        });
                    }
                };
                mode_text = param.value.clone();
            }
            "sslrootcert" => {
                ca = Some(if param.value == "system" {
                    CaSource::BuiltIn
                } else {
                    CaSource::File(PathBuf::from(&param.value))
                });
            }
            _ => kept.push(param.raw),
        }
    }
    if mode == TlsMode::Require && ca.is_some() {
        mode = TlsMode::VerifyCa;
    }
    if matches!(mode, TlsMode::VerifyCa | TlsMode::VerifyFull) && ca.is_none() {
        return Err(TlsError::MissingCa {
            param: "sslmode",
            value: mode_text,
            ca_param: "sslrootcert",
            system: " (or sslrootcert=system for a certificate from a public CA)",
        });
    }
    let driver_mode = match mode {
        TlsMode::Disable => "disable",
        TlsMode::Prefer => "prefer",
        TlsMode::Require | TlsMode::VerifyCa | TlsMode::VerifyFull => "require",
    };
    let sslmode = format!("sslmode={driver_mode}");
    kept.push(&sslmode);
    let settings = TlsSettings {
        mode,
        ca: if mode == TlsMode::Disable { None } else { ca },
        dialect: Dialect::Postgres,
    };
    Ok((join_query(base, &kept, fragment), settings))
}

/// Reads the MySQL client's `ssl-mode` and `ssl-ca` from a MySQL URL and returns the URL to hand
/// to mysql_async.
///
/// `PREFERRED` and `VERIFY_CA` are refused: mysql_async has no fall-back to plain, and with the
/// rustls of this build its "skip the name check" no longer recognises rustls's name errors, so
/// `VERIFY_CA` would act as `VERIFY_IDENTITY` (or worse, silently differently in a later
/// release). Failing loud beats a mode that does not do what it says.
pub fn split_mysql_url(url: &str) -> Result<(String, TlsSettings), TlsError> {
    let (base, params, fragment) = split_query(url);
    let mut mode = TlsMode::Disable;
    let mut mode_text = String::from("DISABLED");
    let mut ca = None;
    let mut kept = Vec::new();
    for param in &params {
        match param.key {
            "ssl-mode" => {
                mode = match param.value.to_ascii_uppercase().as_str() {
                    "DISABLED" => TlsMode::Disable,
                    "REQUIRED" => TlsMode::Require,
                    "VERIFY_IDENTITY" => TlsMode::VerifyFull,
                    "PREFERRED" => {
                        return Err(TlsError::Unsupported {
                            param: "ssl-mode",
                            value: param.value.clone(),
                            hint: "tidemark does not fall back to a plain connection: use REQUIRED or VERIFY_IDENTITY (or DISABLED)",
                        });
                    }
                    "VERIFY_CA" => {
                        return Err(TlsError::Unsupported {
                            param: "ssl-mode",
                            value: param.value.clone(),
                            hint: "use VERIFY_IDENTITY with a host name the server's certificate lists (or REQUIRED)",
                        });
                    }
                    _ => {
                        return Err(TlsError::Unsupported {
                            param: "ssl-mode",
                            value: param.value.clone(),
                            hint: "the values are DISABLED, REQUIRED and VERIFY_IDENTITY",
                        });
                    }
                };
                mode_text = param.value.clone();
            }
            "ssl-ca" => ca = Some(CaSource::File(PathBuf::from(&param.value))),
            _ => kept.push(param.raw),
        }
    }
    if ca.is_some() && mode == TlsMode::Disable && mode_text == "DISABLED" {
        // The MySQL client verifies against --ssl-ca when it is given: do so too.
        mode = TlsMode::VerifyFull;
    }
    let settings = TlsSettings {
        mode,
        ca: match (mode, ca) {
            (TlsMode::Disable, _) => None,
            (_, Some(ca)) => Some(ca),
            (_, None) => Some(CaSource::BuiltIn),
        },
        dialect: Dialect::Mysql,
    };
    Ok((join_query(base, &kept, fragment), settings))
}

/// The mysql_async options for a source URL, with its TLS settings applied.
pub fn mysql_opts(url: &SecretUrl) -> Result<(mysql_async::Opts, TlsSettings), TlsError> {
    let (driver_url, settings) = split_mysql_url(url.expose())?;
    let opts = mysql_async::Opts::from_url(&driver_url)
        .map_err(|e| TlsError::Url(format!("invalid MySQL URL: {}", url.scrub(&e.to_string()))))?;
    if settings.mode == TlsMode::Disable {
        return Ok((opts, settings));
    }
    if let Some(CaSource::File(path)) = &settings.ca {
        // Read now, so a missing or broken file is reported as such, not as a handshake error.
        read_ca_file(path, "ssl-ca")?;
    }
    install_provider();
    let opts = mysql_async::OptsBuilder::from_opts(opts)
        .ssl_opts(settings.mysql_ssl_opts())
        .into();
    Ok((opts, settings))
}

/// The tokio-postgres configuration for a Postgres URL, and its TLS settings.
pub fn postgres_config(url: &SecretUrl) -> Result<(tokio_postgres::Config, TlsSettings), TlsError> {
    let (driver_url, settings) = split_postgres_url(url.expose())?;
    let config = driver_url
        .parse::<tokio_postgres::Config>()
        .map_err(|e| TlsError::Url(url.scrub(&e.to_string())))?;
    if let Some(CaSource::File(path)) = &settings.ca {
        read_ca_file(path, "sslrootcert")?;
    }
    Ok((config, settings))
}

/// An error's message followed by its causes (`a: b: c`): tokio-postgres says only "error
/// performing TLS handshake" and keeps rustls's reason in its source.
pub fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        text.push_str(&format!(": {next}"));
        cause = next.source();
    }
    text
}

/// The first host of a tokio-postgres configuration, for messages and TLS names.
pub fn postgres_host(config: &tokio_postgres::Config) -> String {
    match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_owned(),
    }
}

impl fmt::Display for TlsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_verify_full_is_stripped_to_require_for_the_driver() {
        let (url, tls) = split_postgres_url(
            "postgres://u:pw@db:5432/app?application_name=x&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem",
        )
        .unwrap();
        assert_eq!(
            url,
            "postgres://u:pw@db:5432/app?application_name=x&sslmode=require"
        );
        assert_eq!(tls.mode, TlsMode::VerifyFull);
        assert_eq!(tls.ca, Some(CaSource::File("/etc/ca.pem".into())));
        assert_eq!(
            tls.describe(),
            "sslmode=verify-full sslrootcert=/etc/ca.pem"
        );
    }

    #[test]
    fn postgres_without_tls_parameters_stays_plain() {
        let (url, tls) = split_postgres_url("postgres://u@db/app").unwrap();
        assert_eq!(url, "postgres://u@db/app?sslmode=disable");
        assert_eq!(tls.mode, TlsMode::Disable);
    }

    #[test]
    fn postgres_require_with_a_ca_verifies_the_chain_as_libpq_does() {
        let (_, tls) =
            split_postgres_url("postgres://u@db/app?sslmode=require&sslrootcert=/ca").unwrap();
        assert_eq!(tls.mode, TlsMode::VerifyCa);
    }

    #[test]
    fn postgres_verify_without_a_ca_names_the_fix() {
        let err = split_postgres_url("postgres://u@db/app?sslmode=verify-full").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("sslrootcert=/path/to/ca.pem"), "{text}");
        assert!(text.contains("sslrootcert=system"), "{text}");
        let err = split_postgres_url("postgres://u@db/app?sslmode=allow").unwrap_err();
        assert!(err.to_string().contains("sslmode=allow"), "{err}");
    }

    #[test]
    fn mysql_verify_identity_is_stripped_for_the_driver() {
        let (url, tls) = split_mysql_url(
            "mysql://repl:pw@db:3306/?ssl-mode=verify_identity&ssl-ca=/ca.pem&prefer_socket=false",
        )
        .unwrap();
        assert_eq!(url, "mysql://repl:pw@db:3306/?prefer_socket=false");
        assert_eq!(tls.mode, TlsMode::VerifyFull);
        assert_eq!(tls.describe(), "ssl-mode=VERIFY_IDENTITY ssl-ca=/ca.pem");
        let (url, tls) = split_mysql_url("mysql://repl@db:3306").unwrap();
        assert_eq!(url, "mysql://repl@db:3306");
        assert_eq!(tls.mode, TlsMode::Disable);
    }

    #[test]
    fn mysql_modes_it_cannot_honour_are_refused() {
        for mode in ["PREFERRED", "VERIFY_CA", "sometimes"] {
            let err = split_mysql_url(&format!("mysql://r@db?ssl-mode={mode}")).unwrap_err();
            assert!(
                err.to_string().contains(&format!("ssl-mode={mode}")),
                "{err}"
            );
        }
    }

    #[test]
    fn a_missing_ca_file_is_named() {
        let url = SecretUrl::new(
            "postgres://u:hunter2@db/app?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
        );
        let err = postgres_config(&url).unwrap_err().to_string();
        assert!(
            err.contains("/nonexistent/ca.pem") && err.contains("sslrootcert"),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn explain_names_host_setting_and_fix() {
        let (_, tls) =
            split_postgres_url("postgres://u@db/app?sslmode=verify-full&sslrootcert=/ca.pem")
                .unwrap();
        let text = tls
            .explain(
                "db",
                "error performing TLS handshake: invalid peer certificate: UnknownIssuer",
            )
            .unwrap();
        assert!(text.contains("db") && text.contains("sslmode=verify-full sslrootcert=/ca.pem"));
        assert!(text.contains("set sslrootcert to the CA file"), "{text}");
        let text = tls
            .explain(
                "db",
                "invalid peer certificate: certificate not valid for name \"db\"",
            )
            .unwrap();
        assert!(text.contains("does not name db"), "{text}");
        assert_eq!(tls.explain("db", "connection refused"), None);
    }
}
