//! Database connections of every subcommand (`migrate`, `stream`, `import`, `listen`,
//! `notify`), with TLS.
//!
//! `DATABASE_URL` is a libpq connection string, URL (`postgres://u@h:5432/db?sslmode=verify-full`)
//! or key=value (`host=h dbname=db sslmode=verify-full sslrootcert=/etc/ca.pem`). Everything
//! but the TLS options is parsed by tokio-postgres; TLS is rustls through
//! `tokio-postgres-rustls`, with libpq's semantics:
//!
//! | `sslmode` | encrypted | server certificate checked |
//! |---|---|---|
//! | `disable` | never | — |
//! | `prefer` (default) | if the server supports it | no |
//! | `require` | always (fails if the server has `ssl = off`) | no — but **with a root certificate** (`sslrootcert`, or `~/.postgresql/root.crt` present) like `verify-ca`, as libpq does |
//! | `verify-ca` | always | chain up to `sslrootcert` |
//! | `verify-full` | always | chain up to `sslrootcert` and host name (DNS or IP SAN) = `host` |
//!
//! - `sslrootcert=PATH`: PEM file with one or more CA certificates (default
//!   `~/.postgresql/root.crt`; `verify-ca`/`verify-full` without it fail with libpq's message).
//!   `sslrootcert=system`: the Mozilla root store (`webpki-roots`); as in libpq 16 the default
//!   sslmode becomes `verify-full` and weaker modes are refused.
//! - `sslcert=PATH` + `sslkey=PATH`: PEM client certificate chain and key (PKCS#8, PKCS#1 or
//!   SEC1) for `clientcert` / `cert` authentication.
//! - `sslnegotiation=direct` (PostgreSQL 17) is passed to tokio-postgres; ALPN `postgresql` is
//!   always offered.
//!
//! TLS is not used on Unix sockets (PostgreSQL does not offer it there). Certificate and
//! handshake failures are [`DbError::Tls`] (not retryable: the same server answers the same
//! way), with the mode, the root certificate and rustls' reason in the message.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::StreamExt;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_postgres::config::SslMode as PgSslMode;
use tokio_postgres::error::SqlState;
use tokio_postgres::{AsyncMessage, Client, Config, Notification};
use tokio_postgres_rustls::MakeRustlsConnect;
use tracing::{debug, warn};

/// libpq's `sslmode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Result<SslMode, DbError> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            // libpq also knows "allow" (try plain first): plain-first gives no protection and
            // tokio-postgres cannot express it
            other => {
                return Err(DbError::Config(format!(
                    "invalid sslmode \"{other}\" (expected disable, prefer, require, verify-ca \
                     or verify-full)"
                )))
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// Where trusted CA certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCert {
    /// A PEM file.
    File(PathBuf),
    /// `sslrootcert=system`: the Mozilla root store.
    System,
}

/// The TLS part of a connection string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsOptions {
    /// The effective mode (`require` with a root certificate is reported as `require`, and
    /// verifies like `verify-ca`; see [`TlsOptions::verification`]).
    pub mode: SslMode,
    pub root_cert: Option<RootCert>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

/// How the server certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// Encryption only (prefer, require without a root certificate).
    None,
    /// Chain up to the root certificate(s).
    Chain,
    /// Chain and host name.
    ChainAndHost,
}

impl TlsOptions {
    pub fn verification(&self) -> Verification {
        match self.mode {
            SslMode::Disable | SslMode::Prefer => Verification::None,
            SslMode::Require if self.root_cert.is_some() => Verification::Chain,
            SslMode::Require => Verification::None,
            SslMode::VerifyCa => Verification::Chain,
            SslMode::VerifyFull => Verification::ChainAndHost,
        }
    }

    fn describe(&self) -> String {
        let root = match &self.root_cert {
            None => String::new(),
            Some(RootCert::System) => ", sslrootcert=system".to_string(),
            Some(RootCert::File(p)) => format!(", sslrootcert={}", p.display()),
        };
        format!("sslmode={}{root}", self.mode.as_str())
    }
}

/// A parsed connection string.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Everything but TLS options, as tokio-postgres parsed it (its `ssl_mode` is set from
    /// [`TlsOptions::mode`]).
    pub pg: Config,
    pub tls: TlsOptions,
}

/// Connection failures.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The connection string is invalid (never contains the password).
    #[error("invalid connection string: {0}")]
    Config(String),
    /// A TLS file is missing or unreadable, or holds no usable certificate/key.
    #[error("TLS setup: {0}")]
    TlsSetup(String),
    /// The TLS handshake failed: untrusted certificate, wrong host name, server without TLS.
    #[error("TLS ({options}): {reason}")]
    Tls { options: String, reason: String },
    /// Anything else while connecting (refused, authentication, timeouts...).
    #[error("connect: {0}")]
    Connect(#[source] tokio_postgres::Error),
    /// The connection pool could not be built or gave no connection.
    #[error("connection pool: {0}")]
    Pool(String),
}

impl DbError {
    /// Connection loss and transient server states are retryable; configuration, TLS and
    /// authentication errors are not.
    pub fn is_retryable(&self) -> bool {
        match self {
            DbError::Config(_) | DbError::TlsSetup(_) | DbError::Tls { .. } => false,
            DbError::Connect(e) => is_retryable_pg(e),
            DbError::Pool(_) => true,
        }
    }
}

/// Classifies a tokio-postgres error: true for connection loss and transient server states
/// (retry with back-off), false for errors the same statement would hit again.
pub fn is_retryable_pg(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        // No SQLSTATE: I/O, connect refused, timeouts.
        None => std::error::Error::source(e).is_none_or(|s| s.is::<std::io::Error>()),
        Some(code) => {
            let c = code.code();
            c.starts_with("08") // connection exception
                || c.starts_with("53") // insufficient resources
                || *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CRASH_SHUTDOWN
                || *code == SqlState::CANNOT_CONNECT_NOW
                || *code == SqlState::T_R_SERIALIZATION_FAILURE
                || *code == SqlState::T_R_DEADLOCK_DETECTED
                || *code == SqlState::LOCK_NOT_AVAILABLE
        }
    }
}

const TLS_KEYS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

/// Splits `database_url` into tokio-postgres' config and the TLS options.
pub fn parse(database_url: &str) -> Result<ConnectOptions, DbError> {
    let (rest, tls_pairs) = split_tls_options(database_url)?;
    let mut pg: Config = rest
        .parse()
        .map_err(|e: tokio_postgres::Error| DbError::Config(e.to_string()))?;
    let mut mode = None;
    let mut root_cert = None;
    let mut client_cert = None;
    let mut client_key = None;
    for (k, v) in tls_pairs {
        match k.as_str() {
            "sslmode" => mode = Some(SslMode::parse(&v)?),
            "sslrootcert" if v == "system" => root_cert = Some(RootCert::System),
            "sslrootcert" => root_cert = Some(RootCert::File(PathBuf::from(v))),
            "sslcert" => client_cert = Some(PathBuf::from(v)),
            "sslkey" => client_key = Some(PathBuf::from(v)),
            _ => unreachable!("split_tls_options returns only TLS_KEYS"),
        }
    }
    let mode = match (mode, &root_cert) {
        (None, Some(RootCert::System)) => SslMode::VerifyFull,
        (Some(m), Some(RootCert::System)) if m != SslMode::VerifyFull => {
            return Err(DbError::Config(format!(
                "weak sslmode \"{}\" may not be used with sslrootcert=system (use \
                 \"verify-full\")",
                m.as_str()
            )))
        }
        (m, _) => m.unwrap_or(SslMode::Prefer),
    };
    // libpq's default root certificate file, used only if it exists
    if root_cert.is_none() && matches!(mode, SslMode::Require) {
        if let Some(p) = default_root_cert().filter(|p| p.is_file()) {
            root_cert = Some(RootCert::File(p));
        }
    }
    if root_cert.is_none() && matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) {
        let p = default_root_cert().unwrap_or_else(|| PathBuf::from("~/.postgresql/root.crt"));
        if p.is_file() {
            root_cert = Some(RootCert::File(p));
        } else {
            return Err(DbError::TlsSetup(format!(
                "root certificate file \"{}\" does not exist; either provide the file (or \
                 sslrootcert=PATH), use the system's trusted roots with sslrootcert=system, or \
                 change sslmode to disable server certificate verification",
                p.display()
            )));
        }
    }
    if client_cert.is_some() != client_key.is_some() {
        return Err(DbError::TlsSetup(
            "sslcert and sslkey must be given together".to_string(),
        ));
    }
    pg.ssl_mode(match mode {
        SslMode::Disable => PgSslMode::Disable,
        SslMode::Prefer => PgSslMode::Prefer,
        _ => PgSslMode::Require,
    });
    Ok(ConnectOptions {
        pg,
        tls: TlsOptions {
            mode,
            root_cert,
            client_cert,
            client_key,
        },
    })
}

fn default_root_cert() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|h| Path::new(&h).join(".postgresql/root.crt"))
}

/// The connection string without the TLS keys (for tokio-postgres) and the TLS pairs
/// (decoded values), in order.
fn split_tls_options(s: &str) -> Result<(String, Vec<(String, String)>), DbError> {
    let trimmed = s.trim_start();
    if trimmed.starts_with("postgres://") || trimmed.starts_with("postgresql://") {
        let Some((base, query)) = s.split_once('?') else {
            return Ok((s.to_string(), Vec::new()));
        };
        let mut kept = Vec::new();
        let mut tls = Vec::new();
        for part in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            let key = decode(k)?;
            if TLS_KEYS.contains(&key.as_str()) {
                tls.push((key, decode(v)?));
            } else {
                kept.push(part);
            }
        }
        let rest = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        Ok((rest, tls))
    } else {
        let mut kept = Vec::new();
        let mut tls = Vec::new();
        for (key, value, raw) in tokenize_key_values(s)? {
            if TLS_KEYS.contains(&key.as_str()) {
                tls.push((key, value));
            } else {
                kept.push(raw);
            }
        }
        Ok((kept.join(" "), tls))
    }
}

fn decode(s: &str) -> Result<String, DbError> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| DbError::Config("invalid percent-encoding in URL query".to_string()))
}

/// libpq key=value syntax: `key = value`, value unquoted (backslash escapes the next
/// character) or single-quoted (`\'` and `\\` escapes). Returns (key, decoded value, the
/// pair's raw text).
fn tokenize_key_values(s: &str) -> Result<Vec<(String, String, String)>, DbError> {
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    let skip_ws = |i: &mut usize| {
        while *i < chars.len() && chars[*i].is_whitespace() {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i >= chars.len() {
            return Ok(out);
        }
        let start = i;
        while i < chars.len() && chars[i] != '=' && !chars[i].is_whitespace() {
            i += 1;
        }
        let key: String = chars[start..i].iter().collect();
        skip_ws(&mut i);
        if i >= chars.len() || chars[i] != '=' {
            return Err(DbError::Config(format!(
                "missing \"=\" after \"{key}\" in connection info string"
            )));
        }
        i += 1;
        skip_ws(&mut i);
        let mut value = String::new();
        if i < chars.len() && chars[i] == '\'' {
            i += 1;
            loop {
                match chars.get(i) {
                    None => {
                        return Err(DbError::Config(
                            "unterminated quoted string in connection info string".to_string(),
                        ))
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some('\\') if i + 1 < chars.len() => {
                        value.push(chars[i + 1]);
                        i += 2;
                    }
                    Some(c) => {
                        value.push(*c);
                        i += 1;
                    }
                }
            }
        } else {
            while i < chars.len() && !chars[i].is_whitespace() {
                if chars[i] == '\\' && i + 1 < chars.len() {
                    value.push(chars[i + 1]);
                    i += 2;
                } else {
                    value.push(chars[i]);
                    i += 1;
                }
            }
        }
        let raw: String = chars[start..i].iter().collect();
        out.push((key, value, raw));
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the rustls client configuration for `tls` (reads the certificate files).
pub fn client_config(tls: &TlsOptions) -> Result<rustls::ClientConfig, DbError> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| DbError::TlsSetup(e.to_string()))?;
    let verifier: Arc<dyn ServerCertVerifier> = match tls.verification() {
        Verification::None => Arc::new(EncryptOnly(provider.clone())),
        v => {
            let roots = Arc::new(root_store(tls.root_cert.as_ref())?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| DbError::TlsSetup(format!("root certificates: {e}")))?;
            if v == Verification::Chain {
                Arc::new(ChainOnly(webpki))
            } else {
                webpki
            }
        }
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| DbError::TlsSetup(format!("sslcert {}: {e}", cert.display())))?;
            if chain.is_empty() {
                return Err(DbError::TlsSetup(format!(
                    "sslcert {}: no certificate found",
                    cert.display()
                )));
            }
            let key_der = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| DbError::TlsSetup(format!("sslkey {}: {e}", key.display())))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| DbError::TlsSetup(format!("sslcert/sslkey: {e}")))?
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(config)
}

fn root_store(root: Option<&RootCert>) -> Result<RootCertStore, DbError> {
    let mut store = RootCertStore::empty();
    match root {
        Some(RootCert::System) => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(RootCert::File(path)) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| DbError::TlsSetup(format!("sslrootcert {}: {e}", path.display())))?;
            let (added, ignored) = store.add_parsable_certificates(certs);
            if added == 0 {
                return Err(DbError::TlsSetup(format!(
                    "sslrootcert {}: no usable CA certificate ({ignored} unparsable)",
                    path.display()
                )));
            }
        }
        None => unreachable!("verification needs a root certificate (checked in parse)"),
    }
    Ok(store)
}

/// `prefer` / `require`: the handshake is still checked (signatures with the server's key),
/// the certificate is not (libpq does not check it either in these modes).
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
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

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: WebPKI chain validation; a certificate whose chain is valid but whose names
/// do not match the host is accepted (webpki checks the name only after the chain).
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
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

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The raw tokio-postgres connection type of [`connect_raw`].
pub type Connection = tokio_postgres::Connection<
    tokio_postgres::Socket,
    <MakeRustlsConnect as tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>>::Stream,
>;

/// Connects; the caller drives the returned connection.
pub async fn connect_raw(database_url: &str) -> Result<(Client, Connection), DbError> {
    let opts = parse(database_url)?;
    let tls = MakeRustlsConnect::new(client_config(&opts.tls)?);
    opts.pg
        .connect(tls)
        .await
        .map_err(|e| classify(e, &opts.tls))
}

/// Connects and drives the connection on a task (which ends when the client is dropped or
/// the connection fails).
pub async fn connect(database_url: &str) -> Result<(Client, JoinHandle<()>), DbError> {
    let (client, connection) = connect_raw(database_url).await?;
    let handle = tokio::spawn(async move {
        if let Err(error) = connection.await {
            warn!(%error, "database connection closed");
        }
    });
    Ok((client, handle))
}

/// A connection of a [`DbPool`]; it goes back to the pool when dropped (a closed one is
/// discarded). Derefs to a `tokio_postgres::Client`.
pub type PooledClient = deadpool_postgres::Object;

/// A bounded pool of connections (deadpool-postgres), each made exactly as [`connect`] makes
/// one: the same connection string, `sslmode` and certificates ([`client_config`]), the same
/// TLS error messages. Connections are opened when first needed, at most `max_size` at once,
/// kept open and reused; a task asking for one while all are in use waits for one.
#[derive(Clone)]
pub struct DbPool {
    pool: deadpool_postgres::Pool,
    tls: TlsOptions,
}

impl std::fmt::Debug for DbPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbPool")
            .field("status", &self.pool.status())
            .finish()
    }
}

impl DbPool {
    /// A pool of at most `max_size` connections to `database_url` (none is opened yet).
    pub fn new(database_url: &str, max_size: usize) -> Result<DbPool, DbError> {
        let opts = parse(database_url)?;
        let tls = MakeRustlsConnect::new(client_config(&opts.tls)?);
        let manager = deadpool_postgres::Manager::from_config(
            opts.pg,
            tls,
            deadpool_postgres::ManagerConfig::default(),
        );
        let pool = deadpool_postgres::Pool::builder(manager)
            .max_size(max_size.max(1))
            .build()
            .map_err(|e| DbError::Pool(e.to_string()))?;
        Ok(DbPool {
            pool,
            tls: opts.tls,
        })
    }

    /// A connection: an idle one, a new one while fewer than `max_size` are open, else the
    /// first one given back.
    pub async fn get(&self) -> Result<PooledClient, DbError> {
        self.pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(e) => classify(e, &self.tls),
            other => DbError::Pool(other.to_string()),
        })
    }

    /// Connections open now (idle or in use) and the most allowed.
    pub fn size(&self) -> (usize, usize) {
        let s = self.pool.status();
        (s.size, s.max_size)
    }
}

/// What the connection task of [`connect_listening`] forwards.
pub type NotificationRx = mpsc::UnboundedReceiver<Result<Notification, tokio_postgres::Error>>;

/// Connects and forwards every notification (and finally the connection error, if any) to
/// the returned channel; the channel closes when the connection ends.
pub async fn connect_listening(
    database_url: &str,
) -> Result<(Client, NotificationRx, JoinHandle<()>), DbError> {
    let (client, mut connection) = connect_raw(database_url).await?;
    let (tx, rx) = mpsc::unbounded_channel();
    let handle = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(m) = messages.next().await {
            match m {
                Ok(AsyncMessage::Notification(n)) => {
                    if tx.send(Ok(n)).is_err() {
                        break;
                    }
                }
                Ok(AsyncMessage::Notice(n)) => debug!(notice = %n.message(), "server notice"),
                Ok(_) => {}
                Err(e) => {
                    let _ = tx.send(Err(e));
                    break;
                }
            }
        }
    });
    Ok((client, rx, handle))
}

/// A connection string with its password replaced by `***` (URL form, `?password=` query
/// parameter, and key=value form).
pub fn redact_database_url(s: &str) -> String {
    if s.contains("://") {
        if let Ok(mut u) = url::Url::parse(s) {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            if u.query_pairs().any(|(k, _)| k == "password") {
                let pairs: Vec<(String, String)> = u
                    .query_pairs()
                    .map(|(k, v)| {
                        let v = if k == "password" {
                            "***".to_string()
                        } else {
                            v.into_owned()
                        };
                        (k.into_owned(), v)
                    })
                    .collect();
                u.query_pairs_mut().clear().extend_pairs(pairs);
            }
            return u.to_string();
        }
        return "<unparsable database url>".to_string();
    }
    // key=value form: password=secret or password='sec ret'
    let mut out = String::new();
    let mut rest = s;
    while let Some(pos) = rest.find("password") {
        let (before, after) = rest.split_at(pos);
        out.push_str(before);
        let after_key = after["password".len()..].trim_start();
        if let Some(value) = after_key.strip_prefix('=') {
            out.push_str("password=***");
            let value = value.trim_start();
            let end = if let Some(quoted) = value.strip_prefix('\'') {
                quoted.find('\'').map(|i| i + 2).unwrap_or(value.len())
            } else {
                value.find(char::is_whitespace).unwrap_or(value.len())
            };
            rest = &value[end..];
        } else {
            out.push_str("password");
            rest = &after["password".len()..];
        }
    }
    out.push_str(rest);
    out
}

/// Turns handshake failures into [`DbError::Tls`] with the reason rustls gave.
fn classify(e: tokio_postgres::Error, tls: &TlsOptions) -> DbError {
    let mut source = std::error::Error::source(&e);
    let mut tls_reason = None;
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if let Some(r) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                tls_reason = Some(describe_rustls(r, tls));
                break;
            }
        }
        if let Some(r) = s.downcast_ref::<rustls::Error>() {
            tls_reason = Some(describe_rustls(r, tls));
            break;
        }
        let text = s.to_string();
        if text.contains("server does not support TLS") {
            tls_reason = Some(format!(
                "the server does not support TLS (ssl = off), but sslmode={} requires it",
                tls.mode.as_str()
            ));
            break;
        }
        if text.contains("no hostname provided for TLS") {
            tls_reason = Some("TLS needs a host name (not a Unix socket)".to_string());
            break;
        }
        source = s.source();
    }
    match tls_reason {
        Some(reason) => DbError::Tls {
            options: tls.describe(),
            reason,
        },
        None => DbError::Connect(e),
    }
}

fn describe_rustls(e: &rustls::Error, tls: &TlsOptions) -> String {
    match e {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => format!(
            "server certificate not trusted: it is not signed by a CA in {} ({e})",
            match &tls.root_cert {
                Some(RootCert::File(p)) => p.display().to_string(),
                Some(RootCert::System) => "the system root store".to_string(),
                None => "the root store".to_string(),
            }
        ),
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => format!(
            "server certificate does not match the host name (sslmode=verify-full checks it; \
             verify-ca does not): {e}"
        ),
        other => format!("handshake failed: {other}"),
    }
}

/// A double-quoted SQL identifier.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// The server's message of a database error (`ERROR:  ...` without the SQLSTATE prefix), or the
/// client error's text.
pub fn error_message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_else(|| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_url_redaction() {
        let cases = [
            (
                "postgres://u:secret@h:5432/db",
                "postgres://u:***@h:5432/db",
            ),
            ("postgres://u@h/db", "postgres://u@h/db"),
            (
                "postgres://h/db?user=u&password=secret",
                "postgres://h/db?user=u&password=***",
            ),
            (
                "host=h user=u password=secret dbname=d",
                "host=h user=u password=*** dbname=d",
            ),
            (
                "host=h password = 'se cret' dbname=d",
                "host=h password=*** dbname=d",
            ),
        ];
        for (input, want) in cases {
            let got = redact_database_url(input);
            assert_eq!(got, want, "{input}");
            assert!(!got.contains("secret") && !got.contains("cret'"));
        }
    }

    fn tls_of(s: &str) -> TlsOptions {
        parse(s).unwrap_or_else(|e| panic!("{s}: {e}")).tls
    }

    #[test]
    fn url_and_key_value_forms() {
        // TC1: default is prefer, nothing to verify
        let t = tls_of("postgres://u:pw@h:5432/db");
        assert_eq!(t.mode, SslMode::Prefer);
        assert_eq!(t.verification(), Verification::None);
        // TC2: URL query, percent-encoded path, other options kept for tokio-postgres
        let o = parse(
            "postgres://u:pw@h:5432/db?application_name=x&sslmode=verify-full&sslrootcert=%2Ftmp%2Fca%20x.pem",
        );
        let o = match o {
            Err(DbError::TlsSetup(_)) | Ok(_) => o,
            Err(e) => panic!("{e}"),
        };
        // the file does not exist, but parse only checks the default file's existence
        let o = o.unwrap();
        assert_eq!(o.tls.mode, SslMode::VerifyFull);
        assert_eq!(
            o.tls.root_cert,
            Some(RootCert::File(PathBuf::from("/tmp/ca x.pem")))
        );
        assert_eq!(o.pg.get_application_name(), Some("x"));
        assert_eq!(o.pg.get_ssl_mode(), PgSslMode::Require);
        // TC3: key=value with quotes and escapes
        let o = parse(
            "host=h user=u password='p w\\'x' sslmode = verify-ca sslrootcert='/tmp/my ca.pem' dbname=d",
        )
        .unwrap();
        assert_eq!(o.tls.mode, SslMode::VerifyCa);
        assert_eq!(
            o.tls.root_cert,
            Some(RootCert::File(PathBuf::from("/tmp/my ca.pem")))
        );
        assert_eq!(o.pg.get_password(), Some(&b"p w'x"[..]));
        assert_eq!(o.pg.get_dbname(), Some("d"));
        // TC4: require with a root certificate verifies the chain (libpq)
        let t = tls_of("host=h sslmode=require sslrootcert=/tmp/ca.pem");
        assert_eq!(t.verification(), Verification::Chain);
        assert_eq!(
            tls_of("host=h sslmode=verify-full sslrootcert=/tmp/ca.pem").verification(),
            Verification::ChainAndHost
        );
        assert_eq!(
            tls_of("host=h sslmode=disable").verification(),
            Verification::None
        );
        // TC5: sslrootcert=system: verify-full by default, weaker modes refused
        assert_eq!(
            tls_of("host=h sslrootcert=system").mode,
            SslMode::VerifyFull
        );
        let e = parse("host=h sslrootcert=system sslmode=require").unwrap_err();
        assert!(e.to_string().contains("weak sslmode"), "{e}");
    }

    #[test]
    fn errors_are_clear() {
        let e = parse("postgres://h/db?sslmode=allow").unwrap_err();
        assert!(e.to_string().contains("invalid sslmode \"allow\""), "{e}");
        let e = parse("host=h sslmode=verify-ca").unwrap_err();
        let msg = e.to_string();
        if !default_root_cert().is_some_and(|p| p.is_file()) {
            assert!(
                msg.contains("root certificate file") && msg.contains("does not exist"),
                "{msg}"
            );
        }
        let e = parse("host=h sslcert=/a.pem").unwrap_err();
        assert!(e.to_string().contains("sslcert and sslkey"), "{e}");
        let e = parse("host=h password='unterminated").unwrap_err();
        assert!(e.to_string().contains("unterminated"), "{e}");
        assert!(!e.to_string().contains("unterminated'"));
        let e = parse("postgres://u:secret@h/db?bogus=1").unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
        assert!(!DbError::Config(String::new()).is_retryable());
    }

    #[test]
    fn missing_root_file_is_a_setup_error() {
        let t = tls_of("host=h sslmode=verify-full sslrootcert=/nonexistent/ca.pem");
        let e = client_config(&t).unwrap_err();
        assert!(
            matches!(e, DbError::TlsSetup(ref m) if m.contains("/nonexistent/ca.pem")),
            "{e}"
        );
    }
}
