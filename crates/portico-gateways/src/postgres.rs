//! The `postgres` gateway: PostgreSQL's `LISTEN`/`NOTIFY`, one event per notification.
//!
//! Its configuration, what its events carry and what PostgreSQL guarantees (little):
//! [`PostgresConfig`].
//!
//! One `tokio-postgres` connection per configuration, set up without TLS; the gateway drives it
//! itself ([`tokio_postgres::Connection::poll_message`]) in the configuration's task, so the
//! notifications come in order and no task of the client outlives the configuration.

use std::time::Duration;

use futures::StreamExt;
use portico::{
    ConfigContext, ConfigError, ConfigErrorKind, ConfigExecutor, Event, Secret, SecretSource,
};
use schemars::JsonSchema;
use serde::Deserialize;
use tokio_postgres::{AsyncMessage, NoTls, Notification};

use crate::broker::{self, Progress, SessionError, SessionResult, accepted};
use crate::kube_secret::{SecretFrom, SecretKeySelector};

/// The longest name of a channel: PostgreSQL's identifiers (`NAMEDATALEN - 1` bytes).
const MAX_CHANNEL: usize = 63;
/// How long connecting (TCP and authentication) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// TCP keepalive: an idle connection is probed after this long, so a server that vanished
/// without closing the connection is noticed.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);

/// A `postgres` configuration: the notifications of PostgreSQL channels (`LISTEN`/`NOTIFY`).
///
/// Payload: the notification's payload (the second argument of `NOTIFY channel, 'payload'` or
/// of `pg_notify(channel, payload)`), as text; `datacontenttype` is `application/json` when it
/// parses as JSON, `text/plain` otherwise. Extensions: `channel` (the channel it was sent on)
/// and `pid` (the process id of the server backend that sent it).
///
/// Delivery: **at most once, with no acknowledgement**, as `NOTIFY` itself: PostgreSQL sends
/// a notification to the sessions listening at the moment its transaction commits and keeps it
/// for no one else. A notification sent while the gateway is not listening (before it is
/// `Running`, while it reconnects, while it is stopped) is lost; a notification the gateway
/// received is accepted for delivery like any other event. Use a table (or logical
/// replication) for what must not be lost.
///
/// Connection: plain TCP (no TLS); the session's `application_name` is
/// `portico/<gateway>/<configuration>` (PostgreSQL keeps its first 63 bytes), so the
/// gateway's connections show in `pg_stat_activity`. A lost
/// connection (the server restarted, the backend was terminated) puts the node in `Error`
/// naming the server; the gateway connects again with capped backoff (0.1 s to 5 s),
/// listens again, and the node is `Running` once it listens.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PostgresConfig {
    /// The server, `postgres://user@host:port/database` (also `postgresql://`; port 5432 and
    /// database = user when absent). The URL carries no password and no parameters: give the
    /// password with `passwordFile`, `passwordEnv` or `password`.
    pub url: String,
    /// The channels to listen to (`LISTEN`), at least one. Each name is taken as written
    /// (quoted), so case matters: `NOTIFY Orders` (an unquoted name, folded to lower case)
    /// reaches channel `orders`; `pg_notify('Orders', …)` reaches `Orders`.
    pub channels: Vec<String>,
    /// A file holding the password (a mounted Secret), read at every connection; trailing
    /// newlines are not part of it.
    #[serde(default)]
    pub password_file: Option<String>,
    /// An environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// A key of a Kubernetes Secret holding the password, in the gateway's namespace, read at
    /// every connection (needs the gateway to run in a cluster, or `KUBECONFIG`).
    #[serde(default)]
    pub password: Option<SecretKeySelector>,
}

/// A checked `postgres` configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    host: String,
    port: u16,
    user: String,
    database: String,
    channels: Vec<String>,
    password: Option<SecretFrom>,
}

fn invalid(field: &str, what: impl std::fmt::Display) -> ConfigError {
    ConfigError::invalid(format!("{field}: {what}"))
}

impl PostgresConfig {
    /// Checks what the fields' types do not; errors name the field.
    pub fn check(self) -> Result<Settings, ConfigError> {
        let text = broker::non_blank("url", &self.url)?;
        let url = broker::check_url("url", text, &["postgres", "postgresql"])?;
        let shown = portico::secret::redact_url(text);
        if url.password().is_some() {
            return Err(invalid(
                "url",
                format!(
                    "`{shown}` carries a password: give it with passwordFile, passwordEnv or password"
                ),
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid(
                "url",
                format!(
                    "`{shown}` has parameters; only postgres://user@host:port/database is taken"
                ),
            ));
        }
        let decode = |what: &str, s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|s| s.into_owned())
                .map_err(|_| invalid("url", format!("`{shown}`: the {what} is not UTF-8")))
        };
        let user = decode("user", url.username())?;
        if user.is_empty() {
            return Err(invalid(
                "url",
                format!("`{shown}` names no user: expected postgres://user@host:port/database"),
            ));
        }
        let path = url.path().trim_start_matches('/');
        if path.contains('/') {
            return Err(invalid(
                "url",
                format!("`{shown}`: the path is one database name"),
            ));
        }
        let database = match decode("database", path)? {
            d if d.is_empty() => user.clone(),
            d => d,
        };
        let host = url
            .host_str()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = url.port().unwrap_or(5432);

        if self.channels.is_empty() {
            return Err(invalid(
                "channels",
                "missing or empty (required): the channels to LISTEN to",
            ));
        }
        let mut channels = Vec::with_capacity(self.channels.len());
        for (i, c) in self.channels.iter().enumerate() {
            let field = format!("channels[{i}]");
            if c.trim().is_empty() {
                return Err(invalid(&field, "empty"));
            }
            if c.len() > MAX_CHANNEL {
                return Err(invalid(
                    &field,
                    format!("`{c}` is longer than {MAX_CHANNEL} bytes (PostgreSQL's identifiers)"),
                ));
            }
            if c.contains('\0') {
                return Err(invalid(&field, "contains a NUL character"));
            }
            if !channels.contains(c) {
                channels.push(c.clone());
            }
        }

        let password = SecretFrom::from_fields(
            "password",
            self.password_file.as_deref(),
            self.password_env.as_deref(),
            self.password,
        )?;
        Ok(Settings {
            host,
            port,
            user,
            database,
            channels,
            password,
        })
    }
}

impl Settings {
    /// The server as shown in errors and logs: `host:port/database` (no user, no password).
    fn server(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("PostgreSQL at {host}:{}/{}", self.port, self.database)
    }

    /// `LISTEN "a"; LISTEN "b"; …`, each name quoted as an identifier.
    fn listen_sql(&self) -> String {
        self.channels
            .iter()
            .map(|c| format!("LISTEN \"{}\";", c.replace('"', "\"\"")))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The `postgres` gateway's executor.
#[derive(Debug, Default, Clone, Copy)]
pub struct Postgres;

impl ConfigExecutor for Postgres {
    type Config = Settings;

    fn validate(&self, ctx: &ConfigContext) -> Result<Settings, ConfigError> {
        ctx.parse::<PostgresConfig>()?.check()
    }

    async fn start_config(&self, ctx: ConfigContext, c: Settings) -> Result<(), ConfigError> {
        broker::run_sessions_until_they_stop(&ctx, |progress| session(&ctx, &c, progress)).await
    }
}

/// The password, read again at every connection (a rotated Secret is picked up).
async fn load_password(ctx: &ConfigContext, source: &SecretFrom) -> Result<Secret, ConfigError> {
    match source {
        SecretFrom::Local(s) => s.load().map_err(|e| {
            let field = match s {
                SecretSource::File(_) => "passwordFile",
                SecretSource::Env(_) => "passwordEnv",
            };
            match e.kind() {
                ConfigErrorKind::Invalid => invalid(field, e.message()),
                _ => ConfigError::failed(format!("{field}: {}", e.message())),
            }
        }),
        SecretFrom::Kube(sel) => crate::kube_secret::read_selected(ctx, "password", sel).await,
    }
}

/// The event of one notification.
fn event_of(n: &Notification) -> Event {
    let payload = n.payload();
    let is_json = serde_json::from_str::<serde::de::IgnoredAny>(payload).is_ok();
    let mut event = Event::new(bytes::Bytes::copy_from_slice(payload.as_bytes()))
        .with_extension("channel", n.channel())
        .with_extension("pid", n.process_id().to_string());
    event.content_type = Some(
        if is_json {
            "application/json"
        } else {
            "text/plain"
        }
        .into(),
    );
    event
}

/// One connection: connect, `LISTEN`, then turn notifications into events until the
/// configuration stops (`Ok`) or the connection is lost.
async fn session(ctx: &ConfigContext, c: &Settings, progress: Progress) -> SessionResult {
    let server = c.server();
    let password = match &c.password {
        None => None,
        Some(source) => Some(
            load_password(ctx, source)
                .await
                .map_err(|e| match e.kind() {
                    ConfigErrorKind::Invalid => SessionError::Fatal(e),
                    _ => SessionError::Broker(e.message().to_string()),
                })?,
        ),
    };
    let mut config = tokio_postgres::Config::new();
    config
        .host(&c.host)
        .port(c.port)
        .user(&c.user)
        .dbname(&c.database)
        .application_name(format!("portico/{}/{}", ctx.gateway().name(), ctx.src()))
        .connect_timeout(CONNECT_TIMEOUT)
        .keepalives(true)
        .keepalives_idle(KEEPALIVE_IDLE);
    if let Some(p) = &password {
        config.password(p.expose());
    }
    let connected = tokio::select! {
        r = config.connect(NoTls) => r,
        _ = ctx.stopped() => return Ok(()),
    };
    let (client, mut connection) =
        connected.map_err(|e| SessionError::broker(format!("cannot connect to {server}"), e))?;
    let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
    let lost = |e: Option<tokio_postgres::Error>| match e {
        Some(e) => SessionError::broker(format!("lost the connection to {server}"), e),
        None => SessionError::Broker(format!("lost the connection to {server} (closed)")),
    };

    // LISTEN, driving the connection meanwhile; a notification that comes in before the
    // answer is kept.
    let mut early = Vec::new();
    {
        let listen_sql = c.listen_sql();
        let listen = client.batch_execute(&listen_sql);
        tokio::pin!(listen);
        loop {
            tokio::select! {
                r = &mut listen => {
                    r.map_err(|e| SessionError::broker(format!("cannot LISTEN at {server}"), e))?;
                    break;
                }
                m = messages.next() => match m {
                    Some(Ok(AsyncMessage::Notification(n))) => early.push(n),
                    Some(Ok(other)) => tracing::debug!(src = ctx.src(), "PostgreSQL: {other:?}"),
                    Some(Err(e)) => return Err(lost(Some(e))),
                    None => return Err(lost(None)),
                },
                _ = ctx.stopped() => return Ok(()),
            }
        }
    }
    progress.running(ctx);
    for n in &early {
        if !accepted(ctx.dispatch(event_of(n)).await)? {
            return Ok(());
        }
    }
    loop {
        let m = tokio::select! {
            m = messages.next() => m,
            _ = ctx.stopped() => return Ok(()),
        };
        match m {
            Some(Ok(AsyncMessage::Notification(n))) => {
                if !accepted(ctx.dispatch(event_of(&n)).await)? {
                    return Ok(());
                }
            }
            Some(Ok(other)) => tracing::debug!(src = ctx.src(), "PostgreSQL: {other:?}"),
            Some(Err(e)) => return Err(lost(Some(e))),
            None => return Err(lost(None)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(yaml: &str) -> Result<Settings, ConfigError> {
        portico::testing::parse_config::<PostgresConfig>(yaml)?.check()
    }

    #[test]
    fn validation_names_the_field() {
        let s = check("url: postgres://root@127.0.0.1/test\nchannels: [a, B, a]").unwrap();
        assert_eq!(
            (s.host.as_str(), s.port, s.user.as_str()),
            ("127.0.0.1", 5432, "root")
        );
        assert_eq!(s.database, "test");
        assert_eq!(s.channels, ["a", "B"]);
        assert_eq!(s.listen_sql(), r#"LISTEN "a"; LISTEN "B";"#);
        let s = check("url: postgresql://postgres@[::1]:5433\nchannels: ['x\"y']").unwrap();
        assert_eq!((s.host.as_str(), s.port), ("::1", 5433));
        assert_eq!(s.database, "postgres");
        assert_eq!(s.server(), "PostgreSQL at [::1]:5433/postgres");
        assert_eq!(s.listen_sql(), r#"LISTEN "x""y";"#);

        for (yaml, field) in [
            ("channels: [a]", "missing field `url`"),
            ("url: http://root@h/db\nchannels: [a]", "url:"),
            ("url: postgres://h/db\nchannels: [a]", "url:"),
            (
                "url: postgres://root@h/db?sslmode=require\nchannels: [a]",
                "url:",
            ),
            ("url: postgres://root@h/db", "missing field `channels`"),
            ("url: postgres://root@h/db\nchannels: []", "channels:"),
            (
                "url: postgres://root@h/db\nchannels: [a, '']",
                "channels[1]:",
            ),
            (
                "url: postgres://root@h/db\nchannels: [a]\npasswordFile: ''",
                "passwordFile:",
            ),
            (
                "url: postgres://root@h/db\nchannels: [a]\npasswordEnv: P\npasswordFile: f",
                "passwordFile and passwordEnv",
            ),
            (
                "url: postgres://root@h/db\nchannels: [a]\npasswordEnv: P\npassword: {name: s, key: k}",
                "password:",
            ),
            (
                "url: postgres://root@h/db\nchannels: [a]\npassword: {name: s, key: ''}",
                "password.key:",
            ),
        ] {
            let e = check(yaml).unwrap_err();
            assert!(e.message().contains(field), "{yaml}: {e}");
        }
        let long = "c".repeat(64);
        let e = check(&format!("url: postgres://root@h/db\nchannels: [{long}]")).unwrap_err();
        assert!(e.message().starts_with("channels[0]:"), "{e}");
    }

    #[test]
    fn a_password_in_the_url_is_refused_and_not_shown() {
        let e = check("url: postgres://root:hunter2@h/db\nchannels: [a]").unwrap_err();
        assert!(e.message().starts_with("url:"), "{e}");
        assert!(!e.message().contains("hunter2"), "{e}");
    }
}
