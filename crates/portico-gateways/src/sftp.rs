//! The `sftp` gateway: new and changed files in a directory of an SFTP server, polled.
//!
//! Its configuration, what its events carry and how a change is told: [`SftpConfig`].
//!
//! Every `interval` the directory is listed (not recursively) over one kept SSH connection;
//! each regular file whose name matches `pattern` and whose size or modification time differs
//! from the last listing is read and emitted, one event per file, the file's content as the
//! payload. The listing is kept in a small JSON file (`stateFile`), written atomically once
//! the event is accepted, so a restart emits only what changed meanwhile. `afterAccept:
//! delete` or `move` acts on the file only once its event is accepted (in `ackAfterDelivery`,
//! once every watcher took it).
//!
//! A failed poll (no connection, authentication refused, a host key that does not match, a
//! file that cannot be read) shows the node as `Error` naming the server, and polling goes on
//! at the interval; the next success shows it `Running` again. The private key or password is
//! shown nowhere.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use globset::{GlobBuilder, GlobMatcher};
use portico::secret::scrub;
use portico::{ConfigContext, ConfigError, ConfigExecutor, DispatchError, Event, Submit};
use portico::{Secret, SecretSource};
use russh::client;
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh_sftp::client::SftpSession;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::broker;
use crate::webhook::{NumberOrText, parse_size};

/// The shortest `interval`.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Default of `interval`.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
/// Default of `maxFileSize`: 16 MiB.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 16 * 1024 * 1024;
/// How long connecting, authenticating and one SFTP request may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// What to do with a file once its event is accepted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum AfterAccept {
    /// Leave it where it is (the default); it is emitted again when it changes.
    #[default]
    Keep,
    /// Remove it from the server.
    Delete,
    /// Rename it into the directory `moveTo` (same name).
    Move,
}

/// An `sftp` configuration: a directory on an SFTP server, listed every `interval`; each new
/// or changed file is emitted once.
///
/// Payload: the file's content, untouched. Extensions: `path` (the file's path on the server),
/// `size` (bytes) and `mtime` (its modification time, RFC 3339, like
/// `2026-01-02T03:04:05+00:00`).
///
/// Change detection: the directory is listed (not recursively: subdirectories, links and
/// special files are left out) and each file's size and modification time are compared with
/// the last listing; a new file, or one whose size or time changed, is read and emitted. The
/// listing is kept in `stateFile`, written (a new file renamed over the old one) once the
/// event is accepted, so a restart of the gateway or of the configuration emits only what
/// changed meanwhile. A file larger than `maxFileSize` is logged and skipped (until it changes
/// again). A change the gateway could not accept (full, in `atMostOnce`) is emitted by the
/// next poll.
///
/// `afterAccept: delete` or `move` acts on a file once its event is accepted (with
/// `spec.delivery.mode: ackAfterDelivery`, once every watcher took it).
///
/// The server is authenticated by `hostKey` or `knownHostsFile`; without one the
/// configuration is refused, unless `insecureIgnoreHostKey: true` (warned about). The user is
/// authenticated by a private key (`privateKeyFile` or `privateKeyEnv`, OpenSSH format,
/// without a passphrase) or a password (`passwordFile` or `passwordEnv`), shown nowhere: not
/// in events, the node's message, logs or metrics.
///
/// The first poll is made at start, the next ones every `interval`, over one SSH connection
/// kept between polls. A failed poll (connection refused, authentication refused, a host key
/// that does not match, a file that cannot be read) shows the node as `Error` with `SFTP
/// <user>@<address>: <reason>`, and polling goes on at the interval (with a new connection);
/// the next successful poll shows it `Running` again.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SftpConfig {
    /// The SFTP server, `host:port` (like `files.example.com:22`).
    pub address: String,
    /// The user to log in as.
    pub user: String,
    /// The directory to list, as the server names it (absolute, or relative to the user's
    /// home directory).
    pub directory: String,
    /// A glob the file names must match, like `*.csv` (default: every file).
    #[serde(default)]
    pub pattern: Option<String>,
    /// How often to list the directory: a duration like `30s` (the default), `5m` or `1h`; at
    /// least `1s`.
    #[serde(default)]
    pub interval: Option<String>,
    /// A file holding the user's private key (OpenSSH format, not encrypted), like a mounted
    /// Kubernetes Secret.
    #[serde(default)]
    pub private_key_file: Option<String>,
    /// An environment variable holding the user's private key, instead of `privateKeyFile`.
    #[serde(default)]
    pub private_key_env: Option<String>,
    /// A file holding the user's password (trailing newlines are not part of it), instead of
    /// a private key.
    #[serde(default)]
    pub password_file: Option<String>,
    /// An environment variable holding the user's password, instead of `passwordFile`.
    #[serde(default)]
    pub password_env: Option<String>,
    /// The server's host key, as a line of `known_hosts` or `ssh-keyscan` prints it without
    /// the host: `ssh-ed25519 AAAA…` (a trailing comment is ignored).
    #[serde(default)]
    pub host_key: Option<String>,
    /// A `known_hosts` file that lists the server (by `host` for port 22, `[host]:port`
    /// otherwise), instead of `hostKey`.
    #[serde(default)]
    pub known_hosts_file: Option<String>,
    /// Accept any host key (default false): anyone between the gateway and the server can
    /// read the files and the credentials. For tests only; warned about.
    #[serde(default)]
    pub insecure_ignore_host_key: bool,
    /// What to do with a file once its event is accepted: `keep` (the default), `delete`, or
    /// `move` (to `moveTo`).
    #[serde(default)]
    pub after_accept: AfterAccept,
    /// The directory files are moved to with `afterAccept: move` (on the same server; not
    /// `directory` itself).
    #[serde(default)]
    pub move_to: Option<String>,
    /// The largest file read: bytes, or `512KiB`, `16MiB` (the default), `1GB`…; a larger
    /// file is logged and skipped.
    #[serde(default)]
    pub max_file_size: Option<NumberOrText>,
    /// The file the last listing is kept in (its directory is made when missing). Default:
    /// `portico-sftp-<configuration id>.json` in the system's temporary directory (`$TMPDIR`
    /// or `/tmp`); the id changes with the configuration's value, so a changed configuration
    /// starts over and emits every file again. Give a path on a persistent volume to keep the
    /// listing across restarts of a pod.
    #[serde(default)]
    pub state_file: Option<String>,
}

/// How the user logs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Login {
    /// A private key, from this source.
    Key(SecretSource),
    /// A password, from this source.
    Password(SecretSource),
}

/// How the server's host key is checked.
#[derive(Debug, Clone, PartialEq)]
pub enum HostCheck {
    /// It must be this key.
    Key(PublicKey),
    /// It must be listed for the server in this `known_hosts` file.
    KnownHosts(PathBuf),
    /// Not checked (`insecureIgnoreHostKey`).
    Insecure,
}

/// What happens to a file once its event is accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum After {
    /// Nothing.
    Keep,
    /// Removed.
    Delete,
    /// Moved into this directory.
    Move(String),
}

/// A checked `sftp` configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The host.
    pub host: String,
    /// The port.
    pub port: u16,
    /// The user.
    pub user: String,
    /// The directory, without a trailing `/`.
    pub directory: String,
    /// The file names taken, `None`: all.
    pub pattern: Option<GlobMatcher>,
    /// Between polls.
    pub interval: Duration,
    /// How the user logs in.
    pub login: Login,
    /// How the host key is checked.
    pub host_check: HostCheck,
    /// After acceptance.
    pub after: After,
    /// The largest file read.
    pub max_file_size: u64,
    /// Where the listing is kept, `None`: the default for the configuration's id.
    pub state_file: Option<PathBuf>,
}

fn invalid(field: &str, what: impl fmt::Display) -> ConfigError {
    ConfigError::invalid(format!("{field}: {what}"))
}

fn required(field: &str, text: &str, example: &str) -> Result<String, ConfigError> {
    match text.trim() {
        "" => Err(invalid(field, format!("empty (required): {example}"))),
        t => Ok(t.to_string()),
    }
}

/// A directory as given, without its trailing `/` (but `/` stays `/`).
fn trim_dir(d: &str) -> String {
    let t = d.trim_end_matches('/');
    if t.is_empty() { "/".into() } else { t.into() }
}

/// `dir/name`.
fn join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// Parses a public key line `ssh-ed25519 AAAA… [comment]`.
fn parse_host_key(text: &str) -> Result<PublicKey, String> {
    let mut words = text.split_whitespace();
    let (Some(alg), Some(b64)) = (words.next(), words.next()) else {
        return Err("is not a key line like `ssh-ed25519 AAAA…`".into());
    };
    let key = PublicKey::from_openssh(&format!("{alg} {b64}"))
        .map_err(|e| format!("is not a key line like `ssh-ed25519 AAAA…`: {e}"))?;
    Ok(key)
}

impl SftpConfig {
    /// Checks what the fields' types do not; errors name the field.
    pub fn check(self) -> Result<Settings, ConfigError> {
        let address = required(
            "address",
            &self.address,
            "the server, like files.example.com:22",
        )?;
        let (host, port) = address
            .rsplit_once(':')
            .ok_or_else(|| invalid("address", format!("`{address}` is not host:port")))?;
        let port: u16 =
            port.parse().ok().filter(|p| *p != 0).ok_or_else(|| {
                invalid("address", format!("`{address}`: `{port}` is not a port"))
            })?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(invalid("address", format!("`{address}` has no host")));
        }
        let user = required("user", &self.user, "the user to log in as")?;
        let directory = trim_dir(&required(
            "directory",
            &self.directory,
            "the directory to list, like /incoming",
        )?);
        let pattern = match self.pattern.as_deref().map(str::trim) {
            None => None,
            Some("") => {
                return Err(invalid(
                    "pattern",
                    "is empty: leave it out to take every file",
                ));
            }
            Some(p) if p.contains('/') => {
                return Err(invalid(
                    "pattern",
                    format!("`{p}` has a `/`: the directory is not listed recursively"),
                ));
            }
            Some(p) => Some(
                GlobBuilder::new(p)
                    .literal_separator(true)
                    .build()
                    .map_err(|e| invalid("pattern", format!("`{p}` is not a valid glob: {e}")))?
                    .compile_matcher(),
            ),
        };
        let interval = match self.interval.as_deref() {
            None => DEFAULT_INTERVAL,
            Some(t) => humantime::parse_duration(t.trim()).map_err(|e| {
                invalid(
                    "interval",
                    format!("`{t}` is not a duration like `30s` or `5m`: {e}"),
                )
            })?,
        };
        if interval < MIN_INTERVAL {
            return Err(invalid("interval", "is shorter than 1s"));
        }
        let key = SecretSource::from_fields(
            "privateKey",
            self.private_key_file.as_deref(),
            self.private_key_env.as_deref(),
        )?;
        let password = SecretSource::from_fields(
            "password",
            self.password_file.as_deref(),
            self.password_env.as_deref(),
        )?;
        let login = match (key, password) {
            (Some(k), None) => Login::Key(k),
            (None, Some(p)) => Login::Password(p),
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "password",
                    "both a private key and a password are given: give one",
                ));
            }
            (None, None) => {
                return Err(invalid(
                    "privateKeyFile",
                    "no credential: give privateKeyFile, privateKeyEnv, passwordFile or passwordEnv",
                ));
            }
        };
        let host_key = self.host_key.as_deref().map(str::trim);
        let known = self.known_hosts_file.as_deref().map(str::trim);
        let host_check = match (host_key, known, self.insecure_ignore_host_key) {
            (Some(_), Some(_), _) => {
                return Err(invalid(
                    "knownHostsFile",
                    "both hostKey and knownHostsFile are given: give one",
                ));
            }
            (Some(k), None, false) => {
                HostCheck::Key(parse_host_key(k).map_err(|e| invalid("hostKey", e))?)
            }
            (None, Some(""), _) => return Err(invalid("knownHostsFile", "is empty")),
            (None, Some(f), false) => HostCheck::KnownHosts(PathBuf::from(f)),
            (None, None, true) => HostCheck::Insecure,
            (_, _, true) => {
                return Err(invalid(
                    "insecureIgnoreHostKey",
                    "is true while a host key is given: leave it out",
                ));
            }
            (None, None, false) => {
                return Err(invalid(
                    "hostKey",
                    "the server's host key is needed (hostKey: the `ssh-ed25519 AAAA…` line, or knownHostsFile); insecureIgnoreHostKey: true accepts any, for tests",
                ));
            }
        };
        let after = match (self.after_accept, self.move_to.as_deref().map(str::trim)) {
            (AfterAccept::Move, None | Some("")) => {
                return Err(invalid(
                    "moveTo",
                    "is needed with afterAccept: move (the directory to move files to)",
                ));
            }
            (AfterAccept::Move, Some(m)) => {
                let m = trim_dir(m);
                if m == directory {
                    return Err(invalid("moveTo", "is the directory itself"));
                }
                After::Move(m)
            }
            (_, Some(_)) => {
                return Err(invalid("moveTo", "is given without afterAccept: move"));
            }
            (AfterAccept::Keep, None) => After::Keep,
            (AfterAccept::Delete, None) => After::Delete,
        };
        let max_file_size = match &self.max_file_size {
            None => DEFAULT_MAX_FILE_SIZE,
            Some(NumberOrText::Number(n)) => *n,
            Some(NumberOrText::Text(t)) => parse_size(t).map(|n| n as u64).ok_or_else(|| {
                invalid(
                    "maxFileSize",
                    format!("`{t}` is not a size like 1048576, 512KiB or 16MiB"),
                )
            })?,
        };
        if max_file_size == 0 {
            return Err(invalid("maxFileSize", "must be more than 0"));
        }
        let state_file = match self.state_file.as_deref().map(str::trim) {
            None => None,
            Some("") => {
                return Err(invalid(
                    "stateFile",
                    "is empty: leave it out for the default",
                ));
            }
            Some(f) => Some(PathBuf::from(f)),
        };
        Ok(Settings {
            host: host.to_string(),
            port,
            user,
            directory,
            pattern,
            interval,
            login,
            host_check,
            after,
            max_file_size,
            state_file,
        })
    }
}

impl Settings {
    /// How the server is named in messages: `user@host:port`.
    fn server(&self) -> String {
        if self.host.contains(':') {
            format!("{}@[{}]:{}", self.user, self.host, self.port)
        } else {
            format!("{}@{}:{}", self.user, self.host, self.port)
        }
    }

    /// What the state file belongs to: a listing of another server or directory is not used.
    fn listing_of(&self) -> String {
        format!("{}{}", self.server(), join_display(&self.directory))
    }
}

fn join_display(dir: &str) -> String {
    if dir.starts_with('/') {
        dir.to_string()
    } else {
        format!(":{dir}")
    }
}

/// The `sftp` gateway's executor.
#[derive(Debug, Default, Clone, Copy)]
pub struct Sftp;

impl ConfigExecutor for Sftp {
    type Config = Settings;

    fn validate(&self, ctx: &ConfigContext) -> Result<Settings, ConfigError> {
        let s = ctx.parse::<SftpConfig>()?.check()?;
        if s.host_check == HostCheck::Insecure {
            ctx.warn(
                "insecureIgnoreHostKey: any host key is accepted: anyone between the gateway and the server can read the files and the credentials",
            );
        }
        Ok(s)
    }

    async fn start_config(&self, ctx: ConfigContext, s: Settings) -> Result<(), ConfigError> {
        let state_file = s.state_file.clone().unwrap_or_else(|| {
            std::env::temp_dir().join(format!("portico-sftp-{}.json", ctx.id()))
        });
        let mut poller = Poller {
            listing: crate::listing::load(&ctx, &state_file, &s.listing_of(), "file"),
            state_file,
            conn: None,
            health: broker::PollHealth::default(),
        };
        let mut ticks = tokio::time::interval(s.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let result = loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = ctx.stopped() => break Ok(()),
            }
            let outcome = tokio::select! {
                r = poller.poll(&ctx, &s) => r,
                _ = ctx.stopped() => break Ok(()),
            };
            match outcome {
                Ok(true) => poller.health.succeeded(&ctx),
                Ok(false) => break Ok(()),
                Err(Failure::Fatal(e)) => break Err(e),
                Err(Failure::Poll(reason)) => {
                    poller.conn = None;
                    poller.failed(&ctx, &s, reason);
                }
            }
        };
        if let Some(conn) = poller.conn.take() {
            conn.close().await;
        }
        result
    }
}

/// What the last listing saw of one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Seen {
    size: u64,
    mtime: u32,
}

/// Why a poll ended early.
enum Failure {
    /// The poll failed (reported; the next poll tries again with a new connection).
    Poll(String),
    /// The configuration cannot go on.
    Fatal(ConfigError),
}

impl From<String> for Failure {
    fn from(s: String) -> Failure {
        Failure::Poll(s)
    }
}

/// The SSH client's side of the server: its host key check.
struct Client {
    check: HostCheck,
    host: String,
    port: u16,
    /// Why the host key was refused, for the error.
    refused: Arc<Mutex<Option<String>>>,
}

impl client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        offered: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = offered else {
            *self.refused.lock().unwrap_or_else(|e| e.into_inner()) =
                Some("the server offered a certificate, not a host key".into());
            return Ok(false);
        };
        let fingerprint = key.fingerprint(HashAlg::Sha256);
        let refusal = match &self.check {
            HostCheck::Insecure => None,
            HostCheck::Key(want) if want.key_data() == key.key_data() => None,
            HostCheck::Key(want) => Some(format!(
                "host key mismatch: the server offered {} {fingerprint}, not the hostKey configured ({} {}); someone may be in between, or the server's key changed",
                key.algorithm(),
                want.algorithm(),
                want.fingerprint(HashAlg::Sha256)
            )),
            HostCheck::KnownHosts(path) => {
                match russh::keys::check_known_hosts_path(&self.host, self.port, key, path) {
                    Ok(true) => None,
                    Ok(false) => Some(format!(
                        "host key not known: {} lists no {} key for the server (offered {fingerprint})",
                        path.display(),
                        key.algorithm()
                    )),
                    Err(russh::keys::Error::KeyChanged { line }) => Some(format!(
                        "host key mismatch: the server offered {} {fingerprint}, not the key on line {line} of {}; someone may be in between, or the server's key changed",
                        key.algorithm(),
                        path.display()
                    )),
                    Err(e) => Some(format!(
                        "cannot read knownHostsFile {}: {e}",
                        path.display()
                    )),
                }
            }
        };
        let ok = refusal.is_none();
        *self.refused.lock().unwrap_or_else(|e| e.into_inner()) = refusal;
        Ok(ok)
    }
}

/// One SSH connection with its SFTP session.
struct Conn {
    handle: client::Handle<Client>,
    sftp: SftpSession,
}

impl Conn {
    async fn close(self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let _ = self.sftp.close().await;
            let _ = self
                .handle
                .disconnect(russh::Disconnect::ByApplication, "", "en")
                .await;
        })
        .await;
    }
}

/// Connects, checks the host key, logs in and opens the SFTP session.
async fn connect(s: &Settings) -> Result<Conn, String> {
    let secret = match &s.login {
        Login::Key(src) | Login::Password(src) => src.load().map_err(|e| {
            let field = match &s.login {
                Login::Key(_) => "privateKey",
                Login::Password(_) => "password",
            };
            format!("{field}: {}", e.message())
        })?,
    };
    let scrubbed = |text: String| scrub(&text, &[&secret]);
    let refused = Arc::new(Mutex::new(None));
    let handler = Client {
        check: s.host_check.clone(),
        host: s.host.clone(),
        port: s.port,
        refused: refused.clone(),
    };
    let config = Arc::new(client::Config {
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(15)),
        keepalive_max: 3,
        ..Default::default()
    });
    let connected = tokio::time::timeout(
        TIMEOUT,
        client::connect(config, (s.host.as_str(), s.port), handler),
    )
    .await
    .map_err(|_| format!("no answer within {}s", TIMEOUT.as_secs()))?;
    let mut handle = match connected {
        Ok(h) => h,
        Err(e) => {
            if let Some(why) = refused.lock().unwrap_or_else(|e| e.into_inner()).take() {
                return Err(why);
            }
            return Err(format!("cannot connect: {e}"));
        }
    };
    let auth = tokio::time::timeout(TIMEOUT, login(&mut handle, s, &secret))
        .await
        .map_err(|_| format!("no answer to the login within {}s", TIMEOUT.as_secs()))??;
    if !auth.success() {
        return Err(format!(
            "authentication refused: the server does not take the {} given for user {}",
            match s.login {
                Login::Key(_) => "private key",
                Login::Password(_) => "password",
            },
            s.user
        ));
    }
    let sftp = tokio::time::timeout(TIMEOUT, async {
        let channel = handle
            .channel_open_session()
            .await
            .map_err(|e| format!("cannot open a session: {e}"))?;
        channel
            .request_subsystem(true, "sftp")
            .await
            .map_err(|e| format!("cannot start the sftp subsystem: {e}"))?;
        SftpSession::new(channel.into_stream())
            .await
            .map_err(|e| format!("cannot start the sftp subsystem: {e}"))
    })
    .await
    .map_err(|_| "the sftp subsystem did not start in time".to_string())?
    .map_err(scrubbed)?;
    sftp.set_timeout(TIMEOUT.as_secs());
    Ok(Conn { handle, sftp })
}

async fn login(
    handle: &mut client::Handle<Client>,
    s: &Settings,
    secret: &Secret,
) -> Result<russh::client::AuthResult, String> {
    match &s.login {
        Login::Key(_) => {
            let text = secret
                .expose_text("privateKey")
                .map_err(|e| e.message().to_string())?;
            let key = russh::keys::decode_secret_key(text, None).map_err(|_| {
                "privateKey: not a private key in OpenSSH format without a passphrase".to_string()
            })?;
            let key = PrivateKeyWithHashAlg::new(Arc::new(key), Some(HashAlg::Sha512));
            handle
                .authenticate_publickey(&s.user, key)
                .await
                .map_err(|e| format!("login failed: {e}"))
        }
        Login::Password(_) => {
            let text = secret
                .expose_text("password")
                .map_err(|e| e.message().to_string())?;
            handle
                .authenticate_password(&s.user, text)
                .await
                .map_err(|e| scrub(&format!("login failed: {e}"), &[secret]))
        }
    }
}

/// What one configuration keeps between polls.
struct Poller {
    /// The last listing: name → size and time.
    listing: BTreeMap<String, Seen>,
    state_file: PathBuf,
    conn: Option<Conn>,
    health: broker::PollHealth,
}

/// A file to emit.
struct Changed {
    name: String,
    seen: Seen,
}

impl Poller {
    fn failed(&mut self, ctx: &ConfigContext, s: &Settings, reason: String) {
        self.health
            .failed(ctx, format!("SFTP {}: {reason}", s.server()), s.interval);
    }

    /// One poll: list, emit what changed. `Ok(false)`: the configuration is stopping.
    async fn poll(&mut self, ctx: &ConfigContext, s: &Settings) -> Result<bool, Failure> {
        if self.conn.is_none() {
            self.conn = Some(connect(s).await?);
        }
        let Some(conn) = self.conn.as_ref() else {
            return Err(Failure::from(format!("SFTP {}: not connected", s.server())));
        };
        let entries = conn
            .sftp
            .read_dir(s.directory.as_str())
            .await
            .map_err(|e| format!("cannot list {}: {e}", s.directory))?;
        let mut now: BTreeMap<String, Seen> = BTreeMap::new();
        for entry in entries {
            let name = entry.file_name();
            if name == "." || name == ".." || !entry.file_type().is_file() {
                continue;
            }
            if let Some(p) = &s.pattern
                && !p.is_match(&name)
            {
                continue;
            }
            let m = entry.metadata();
            now.insert(
                name,
                Seen {
                    size: m.size.unwrap_or(0),
                    mtime: m.mtime.unwrap_or(0),
                },
            );
        }
        // Files gone from the directory are forgotten (one made again is new).
        let before = self.listing.len();
        self.listing.retain(|name, _| now.contains_key(name));
        if self.listing.len() != before {
            self.save(s).await?;
        }
        let changed: Vec<Changed> = now
            .into_iter()
            .filter(|(name, seen)| self.listing.get(name) != Some(seen))
            .map(|(name, seen)| Changed { name, seen })
            .collect();
        for file in changed {
            if !self.emit(ctx, s, file).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    async fn save(&self, s: &Settings) -> Result<(), Failure> {
        crate::listing::save(&self.state_file, &s.listing_of(), &self.listing)
            .await
            .map_err(Failure::Poll)
    }

    /// Reads and emits one file, then acts on it and remembers it once accepted.
    /// `Ok(false)`: the configuration is stopping.
    async fn emit(
        &mut self,
        ctx: &ConfigContext,
        s: &Settings,
        file: Changed,
    ) -> Result<bool, Failure> {
        let path = join(&s.directory, &file.name);
        if file.seen.size > s.max_file_size {
            tracing::warn!(
                src = ctx.src(),
                "SFTP {}: {path} is {} bytes, more than maxFileSize ({} bytes): skipped",
                s.server(),
                file.seen.size,
                s.max_file_size
            );
            self.listing.insert(file.name, file.seen);
            self.save(s).await?;
            return Ok(true);
        }
        let Some(conn) = self.conn.as_ref() else {
            return Err(Failure::from(format!("SFTP {}: not connected", s.server())));
        };
        let content = conn
            .sftp
            .read(path.as_str())
            .await
            .map_err(|e| format!("cannot read {path}: {e}"))?;
        if content.len() as u64 > s.max_file_size {
            // It grew since the listing: the next poll sees its new size.
            return Ok(true);
        }
        let mtime = chrono::DateTime::from_timestamp(i64::from(file.seen.mtime), 0)
            .unwrap_or_default()
            .to_rfc3339();
        let event = Event::new(content)
            .with_extension("path", path.as_str())
            .with_extension("size", file.seen.size.to_string())
            .with_extension("mtime", mtime);
        let delivered = match ctx.submit(event, Submit::ACK_AFTER_DELIVERY).await {
            Ok(d) => d,
            Err(DispatchError::Stopped) => return Ok(false),
            Err(e @ (DispatchError::Full { .. } | DispatchError::Limited { .. })) => {
                tracing::warn!(
                    src = ctx.src(),
                    "{path} is not emitted now ({e}); the next poll tries again"
                );
                return Ok(true);
            }
            Err(DispatchError::Disk(why)) => {
                return Err(Failure::Poll(format!(
                    "the gateway cannot store events ({why}); the next poll tries again"
                )));
            }
            Err(e) => return Err(Failure::Fatal(e.into())),
        };
        let done = delivered.is_done()
            || tokio::select! {
                ok = delivered.wait() => ok,
                _ = ctx.stopped() => false,
            };
        if !done {
            return Ok(false);
        }
        let acted = match &s.after {
            After::Keep => Ok(()),
            After::Delete => conn
                .sftp
                .remove_file(path.as_str())
                .await
                .map_err(|e| format!("cannot delete {path} (its event was emitted): {e}")),
            After::Move(to) => {
                let target = join(to, &file.name);
                conn.sftp
                    .rename(path.as_str(), target.as_str())
                    .await
                    .map_err(|e| {
                        format!("cannot move {path} to {target} (its event was emitted): {e}")
                    })
            }
        };
        // Kept, or left in place by a failed delete or move: remembered, so that it is not
        // emitted again at every poll (only when it changes).
        if s.after == After::Keep || acted.is_err() {
            self.listing.insert(file.name, file.seen);
            self.save(s).await?;
        }
        acted?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(yaml: &str) -> Result<Settings, ConfigError> {
        portico::testing::parse_config::<SftpConfig>(yaml)?.check()
    }

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
    fn ok() -> String {
        format!(
            "address: 127.0.0.1:2222\nuser: bob\ndirectory: /in/\nprivateKeyFile: /k\nhostKey: {KEY} bob@host"
        )
    }

    #[test]
    fn a_minimal_configuration_has_the_defaults() {
        let s = check(&ok()).unwrap();
        assert_eq!((s.host.as_str(), s.port), ("127.0.0.1", 2222));
        assert_eq!(s.directory, "/in");
        assert_eq!(s.interval, DEFAULT_INTERVAL);
        assert_eq!(s.max_file_size, DEFAULT_MAX_FILE_SIZE);
        assert_eq!(s.after, After::Keep);
        assert!(matches!(s.host_check, HostCheck::Key(_)));
        assert_eq!(s.login, Login::Key(SecretSource::File("/k".into())));
        assert_eq!(s.listing_of(), "bob@127.0.0.1:2222/in");
        let s = check(&format!(
            "{}\npattern: '*.csv'\ninterval: 5s\nafterAccept: move\nmoveTo: /done\nmaxFileSize: 1MiB",
            ok()
        ))
        .unwrap();
        assert!(s.pattern.unwrap().is_match("a.csv"));
        assert_eq!(s.after, After::Move("/done".into()));
        assert_eq!(s.max_file_size, 1 << 20);
    }

    #[test]
    fn validation_names_the_field() {
        let base = "address: h:22\nuser: u\ndirectory: /d\npasswordEnv: P";
        let cases = [
            ("user: u\ndirectory: /d", "missing field `address`"),
            (
                "address: h\nuser: u\ndirectory: /d\npasswordEnv: P\ninsecureIgnoreHostKey: true",
                "address:",
            ),
            (
                "address: h:0\nuser: u\ndirectory: /d\npasswordEnv: P\ninsecureIgnoreHostKey: true",
                "address:",
            ),
            (
                "address: h:22\nuser: ''\ndirectory: /d\npasswordEnv: P\ninsecureIgnoreHostKey: true",
                "user:",
            ),
            (
                "address: h:22\nuser: u\ndirectory: ''\npasswordEnv: P\ninsecureIgnoreHostKey: true",
                "directory:",
            ),
            (base, "hostKey:"),
            (&format!("{base}\nhostKey: nonsense"), "hostKey:"),
            (&format!("{base}\nhostKey: ssh-ed25519 AAAA"), "hostKey:"),
            (
                &format!("{base}\nhostKey: {KEY}\nknownHostsFile: /k"),
                "knownHostsFile:",
            ),
            (
                &format!("{base}\nhostKey: {KEY}\ninsecureIgnoreHostKey: true"),
                "insecureIgnoreHostKey:",
            ),
            (
                "address: h:22\nuser: u\ndirectory: /d\ninsecureIgnoreHostKey: true",
                "privateKeyFile:",
            ),
            (
                "address: h:22\nuser: u\ndirectory: /d\ninsecureIgnoreHostKey: true\npasswordEnv: P\nprivateKeyEnv: K",
                "password:",
            ),
            (
                "address: h:22\nuser: u\ndirectory: /d\ninsecureIgnoreHostKey: true\npasswordEnv: P\npasswordFile: /f",
                "passwordFile and passwordEnv",
            ),
            (
                &format!("{base}\ninsecureIgnoreHostKey: true\ninterval: 10ms"),
                "interval:",
            ),
            (
                &format!("{base}\ninsecureIgnoreHostKey: true\ninterval: soon"),
                "interval:",
            ),
            (
                &format!("{base}\ninsecureIgnoreHostKey: true\npattern: 'a/*'"),
                "pattern:",
            ),
            (
                &format!("{base}\ninsecureIgnoreHostKey: true\npattern: '[a'"),
                "pattern:",
            ),
            (
                &format!("{base}\ninsecureIgnoreHostKey: true\nafterAccept: move"),
                "moveTo:",
            ),
            (
                &format!("{base}\ninsecureIgnoreHostKey: true\nafterAccept: move\nmoveTo: /d/"),
                "moveTo:",
            ),
            (
                &format!("{base}\ninsecureIgnoreHostKey: true\nmoveTo: /x"),
                "moveTo:",
            ),
            (
                &format!("{base}\ninsecureIgnoreHostKey: true\nafterAccept: shred"),
                "afterAccept",
            ),
            (
                &format!("{base}\ninsecureIgnoreHostKey: true\nmaxFileSize: huge"),
                "maxFileSize:",
            ),
            (
                &format!("{base}\ninsecureIgnoreHostKey: true\nstateFile: ''"),
                "stateFile:",
            ),
            (
                &format!("{base}\ninsecureIgnoreHostKey: true\nbogus: 1"),
                "bogus",
            ),
        ];
        for (yaml, word) in cases {
            let e = check(yaml).unwrap_err().message().to_string();
            assert!(e.contains(word), "{yaml:?}: {e:?} should name {word:?}");
        }
    }
}
