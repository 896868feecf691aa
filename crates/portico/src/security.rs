//! TLS and authentication toward brokers, shared by the broker gateways and the event-bus
//! watchers: one `tls` block (a CA, a client certificate, a server name), Kafka's SASL, and
//! the ways a NATS client authenticates. Files and secrets are read when a connection is
//! made, never kept in the checked settings, and never shown.

use crate::{ConfigError, SecretSource};

/// TLS toward a broker: the CA that signs its certificate, and the client's own certificate
/// and key when the broker asks for one (mutual TLS). The files are read at every connection,
/// and a connection is made again when their contents change ([`Tls::watch`]), so renewed
/// certificates are taken within seconds.
#[derive(
    Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsConfig {
    /// A PEM file of the CA certificates that sign the broker's certificate (default: the
    /// client library's own roots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// A PEM file of the client's certificate chain, for a broker that asks for one; with
    /// `keyFile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<String>,
    /// The PEM private key of `certFile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
    /// The name the broker's certificate must carry, when it is not the URL's host (a broker
    /// reached by IP address or through a tunnel, with a certificate for its DNS name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

/// A checked `tls` block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tls {
    /// The CA file, if any.
    pub ca: Option<std::path::PathBuf>,
    /// The client's certificate and key, if any.
    pub client: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// The name the broker's certificate is checked against instead of the URL's host.
    pub server_name: Option<rustls::pki_types::ServerName<'static>>,
}

impl TlsConfig {
    /// Checks the block: the paths are absolute or relative to the working directory, and a
    /// client certificate comes with its key. Errors name `tls.<field>`.
    pub fn check(&self) -> Result<Tls, ConfigError> {
        let path = |field: &str, v: &Option<String>| match v.as_deref().map(str::trim) {
            None => Ok(None),
            Some("") => Err(ConfigError::invalid(format!("tls.{field}: is empty"))),
            Some(p) => Ok(Some(std::path::PathBuf::from(p))),
        };
        let ca = path("caFile", &self.ca_file)?;
        let client = match (
            path("certFile", &self.cert_file)?,
            path("keyFile", &self.key_file)?,
        ) {
            (None, None) => None,
            (Some(c), Some(k)) => Some((c, k)),
            (Some(_), None) => {
                return Err(ConfigError::invalid(
                    "tls.keyFile: required with tls.certFile",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::invalid(
                    "tls.certFile: required with tls.keyFile",
                ));
            }
        };
        let server_name = match self.server_name.as_deref().map(str::trim) {
            None => None,
            Some(name) => Some(
                rustls::pki_types::ServerName::try_from(name.to_string()).map_err(|_| {
                    ConfigError::invalid(format!(
                        "tls.serverName: `{name}` is not a DNS name or an IP address"
                    ))
                })?,
            ),
        };
        Ok(Tls {
            ca,
            client,
            server_name,
        })
    }
}

impl Tls {
    /// The files this block names (CA, certificate, key).
    pub fn files(&self) -> Vec<std::path::PathBuf> {
        let mut files: Vec<_> = self.ca.iter().cloned().collect();
        if let Some((cert, key)) = &self.client {
            files.push(cert.clone());
            files.push(key.clone());
        }
        files
    }

    /// A watch on this block's files as they are now, to connect again when they change.
    pub fn watch(&self) -> FileWatch {
        FileWatch::new(self.files())
    }

    /// A rustls client configuration (ring) from the files, read now: the CA's certificates
    /// (Mozilla's roots without `caFile`), the client's certificate and key if given, and with
    /// `serverName` a verifier that checks the broker's certificate against that name whatever
    /// host the client connected to. Errors name the field and the file.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, String> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let chain = |field: &str, path: &std::path::Path| {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| {
                    format!(
                        "tls.{field}: cannot read PEM certificates from {}: {e}",
                        path.display()
                    )
                })?;
            if certs.is_empty() {
                return Err(format!(
                    "tls.{field}: {} holds no certificate",
                    path.display()
                ));
            }
            Ok(certs)
        };
        let mut roots = rustls::RootCertStore::empty();
        match &self.ca {
            Some(ca) => {
                for cert in chain("caFile", ca)? {
                    roots
                        .add(cert)
                        .map_err(|e| format!("tls.caFile: {}: {e}", ca.display()))?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("tls: {e}"))?;
        let builder = match &self.server_name {
            None => builder.with_root_certificates(roots),
            Some(name) => {
                let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
                    std::sync::Arc::new(roots),
                    provider,
                )
                .build()
                .map_err(|e| format!("tls.caFile: {e}"))?;
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(std::sync::Arc::new(NamedVerifier {
                        inner,
                        name: name.clone(),
                    }))
            }
        };
        match &self.client {
            None => Ok(builder.with_no_client_auth()),
            Some((cert, key_file)) => {
                let certs = chain("certFile", cert)?;
                let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| {
                    format!(
                        "tls.keyFile: cannot read a PEM private key from {}: {e}",
                        key_file.display()
                    )
                })?;
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| format!("tls.certFile and tls.keyFile: {e}"))
            }
        }
    }
}

/// How often a [`FileWatch`] looks at its files.
pub const FILE_CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Notices when files change: their contents (or that they cannot be read) against what they
/// were when the watch was made. It reads the files again at each check, so it follows a
/// Kubernetes Secret volume's symbolic links when they are swapped to the new version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileWatch {
    files: Vec<(std::path::PathBuf, Option<u64>)>,
}

impl FileWatch {
    /// A watch on `files` as they are now.
    /// (Certificates and keys are small files: they are read in place, not on a blocking
    /// thread.)
    pub fn new(files: Vec<std::path::PathBuf>) -> FileWatch {
        let files = files
            .into_iter()
            .map(|path| {
                let seen = fingerprint(&path);
                (path, seen)
            })
            .collect();
        FileWatch { files }
    }

    /// Whether a file differs now from when the watch was made; the first that does.
    pub fn changed(&self) -> Option<&std::path::Path> {
        self.files
            .iter()
            .find(|(path, seen)| fingerprint(path) != *seen)
            .map(|(path, _)| path.as_path())
    }

    /// Resolves when a file changes (looked at every [`FILE_CHECK_EVERY`]), with its path;
    /// never when there are no files.
    pub async fn wait(&self) -> &std::path::Path {
        if self.files.is_empty() {
            return std::future::pending().await;
        }
        loop {
            tokio::time::sleep(FILE_CHECK_EVERY).await;
            if let Some(path) = self.changed() {
                return path;
            }
        }
    }
}

/// A hash of a file's contents, `None` when it cannot be read.
fn fingerprint(path: &std::path::Path) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let bytes = std::fs::read(path).ok()?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    Some(hasher.finish())
}

/// The CA's usual checks of a broker's certificate, against `serverName` rather than the host
/// the client connected to.
#[derive(Debug)]
struct NamedVerifier {
    inner: std::sync::Arc<rustls::client::WebPkiServerVerifier>,
    name: rustls::pki_types::ServerName<'static>,
}

impl rustls::client::danger::ServerCertVerifier for NamedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _connected_to: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A `kafka` configuration's SASL authentication.
#[derive(
    Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SaslConfig {
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub mechanism: SaslMechanism,
    /// The user name.
    pub user: String,
    /// A file holding the user's password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<String>,
    /// An environment variable holding the user's password, instead of `passwordFile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
}

/// A SASL mechanism.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub enum SaslMechanism {
    /// The user and password as they are (use it over TLS).
    #[serde(rename = "PLAIN")]
    Plain,
    /// Salted challenge-response with SHA-256: the password never crosses the wire.
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    /// Salted challenge-response with SHA-512.
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    /// The mechanism's name, as SASL says it.
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// A checked `sasl` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sasl {
    /// The mechanism.
    pub mechanism: SaslMechanism,
    /// The user name.
    pub user: String,
    /// Where the password is read from.
    pub password: SecretSource,
}

impl SaslConfig {
    /// Checks the block: a user, and a password from a file or an environment variable.
    /// Errors name `sasl.<field>`.
    pub fn check(&self) -> Result<Sasl, ConfigError> {
        let password = SecretSource::from_fields(
            "sasl.password",
            self.password_file.as_deref(),
            self.password_env.as_deref(),
        )?
        .ok_or_else(|| ConfigError::invalid("sasl.passwordFile: missing (or sasl.passwordEnv)"))?;
        let user = self.user.trim();
        if user.is_empty() {
            return Err(ConfigError::invalid("sasl.user: empty (required)"));
        }
        Ok(Sasl {
            mechanism: self.mechanism,
            user: user.to_string(),
            password,
        })
    }
}

/// How a NATS client authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NatsAuth {
    /// As the server lets anyone.
    Anonymous,
    /// A user and its password.
    User(String, SecretSource),
    /// A token.
    Token(SecretSource),
    /// A credentials file (a user JWT and its nkey seed, as `nsc` writes it).
    Credentials(std::path::PathBuf),
    /// An nkey seed.
    Nkey(SecretSource),
}

/// The NATS authentication fields as a configuration gives them (each optional; at most one
/// way to authenticate).
#[derive(Debug, Clone, Copy, Default)]
pub struct NatsAuthFields<'a> {
    /// `user`.
    pub user: Option<&'a str>,
    /// `passwordFile`.
    pub password_file: Option<&'a str>,
    /// `passwordEnv`.
    pub password_env: Option<&'a str>,
    /// `tokenFile`.
    pub token_file: Option<&'a str>,
    /// `tokenEnv`.
    pub token_env: Option<&'a str>,
    /// `credentialsFile`.
    pub credentials_file: Option<&'a str>,
    /// `nkeyFile`.
    pub nkey_file: Option<&'a str>,
}

impl NatsAuthFields<'_> {
    /// The one way to authenticate the fields give. Errors name the field.
    pub fn check(&self) -> Result<NatsAuth, ConfigError> {
        let some = |v: Option<&str>| {
            v.map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        let password =
            SecretSource::from_fields("password", self.password_file, self.password_env)?;
        let token = SecretSource::from_fields("token", self.token_file, self.token_env)?;
        let credentials = some(self.credentials_file);
        let nkey = some(self.nkey_file);
        let user = some(self.user);
        let given = [
            user.is_some() || password.is_some(),
            token.is_some(),
            credentials.is_some(),
            nkey.is_some(),
        ];
        if given.iter().filter(|g| **g).count() > 1 {
            return Err(ConfigError::invalid(
                "user, tokenFile/tokenEnv, credentialsFile and nkeyFile are different ways to authenticate: give one",
            ));
        }
        Ok(match (user, password, token, credentials, nkey) {
            (Some(u), Some(p), ..) => NatsAuth::User(u, p),
            (Some(_), None, ..) => {
                return Err(ConfigError::invalid(
                    "passwordFile: missing (user needs passwordFile or passwordEnv)",
                ));
            }
            (None, Some(_), ..) => {
                return Err(ConfigError::invalid(
                    "user: missing (a password goes with a user)",
                ));
            }
            (None, None, Some(t), ..) => NatsAuth::Token(t),
            (None, None, None, Some(c), _) => NatsAuth::Credentials(c.into()),
            (None, None, None, None, Some(n)) => NatsAuth::Nkey(SecretSource::File(n.into())),
            (None, None, None, None, None) => NatsAuth::Anonymous,
        })
    }
}
