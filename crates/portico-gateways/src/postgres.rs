//! The `postgres` gateway: PostgreSQL's `LISTEN`/`NOTIFY`, one event per notification, or the
//! row changes of tables through logical replication, one event per row change.
//!
//! Its configuration, what its events carry and what PostgreSQL guarantees:
//! [`PostgresConfig`] and [`ReplicationConfig`]; how the replication slot is read: the
//! `replication` module (`pgoutput` decodes its messages).
//!
//! One `tokio-postgres` connection per configuration, set up without TLS; the gateway drives it
//! itself ([`tokio_postgres::Connection::poll_message`]) in the configuration's task, so the
//! notifications come in order and no task of the client outlives the configuration.

mod pgoutput;
mod replication;

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

/// The longest name of a channel, slot, publication or table: PostgreSQL's identifiers
/// (`NAMEDATALEN - 1` bytes).
const MAX_CHANNEL: usize = 63;
/// How long to wait between reads of a replication slot that found nothing new, by default.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// The most changes one read of a replication slot returns, by default.
const MAX_CHANGES: u32 = 1000;
/// How long connecting (TCP and authentication) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// TCP keepalive: an idle connection is probed after this long, so a server that vanished
/// without closing the connection is noticed.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);

/// A `postgres` configuration: the notifications of PostgreSQL channels (`LISTEN`/`NOTIFY`),
/// or, with `replication`, the row changes of tables (logical replication). A configuration
/// takes one of the two: `channels` or `replication` (two configurations for both).
///
/// With `channels`:
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
/// received is accepted for delivery like any other event. Use `replication` for
/// row changes that must not be lost.
///
/// With `replication`: see `ReplicationConfig` below.
///
/// Connection: plain TCP (no TLS); the session's `application_name` is
/// `portico/<gateway>/<configuration>` (PostgreSQL keeps its first 63 bytes), so the
/// gateway's connections show in `pg_stat_activity`. A lost
/// connection (the server restarted, the backend was terminated) puts the node in `Error`
/// naming the server; the gateway connects again with capped backoff (0.1 s to 5 s),
/// listens again (or checks its slot again), and the node is `Running` once it does.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PostgresConfig {
    /// The server, `postgres://user@host:port/database` (also `postgresql://`; port 5432 and
    /// database = user when absent). The URL carries no password and no parameters: give the
    /// password with `passwordFile`, `passwordEnv` or `password`.
    pub url: String,
    /// The channels to listen to (`LISTEN`), at least one unless `replication` is given. Each
    /// name is taken as written (quoted), so case matters: `NOTIFY Orders` (an unquoted name,
    /// folded to lower case) reaches channel `orders`; `pg_notify('Orders', …)` reaches
    /// `Orders`.
    #[serde(default)]
    pub channels: Vec<String>,
    /// Row changes through logical replication instead of `channels`.
    #[serde(default)]
    pub replication: Option<ReplicationConfig>,
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

/// Row changes of tables, read from a logical replication slot with the `pgoutput` plugin.
///
/// Setup: PostgreSQL needs `wal_level = logical`. The gateway uses the `slot` (creating it
/// when it is missing, unless `createSlot: false`) and the `publication` (creating it with
/// `CREATE PUBLICATION … FOR TABLE` when it is missing and `tables` are given; an existing one
/// is used as it is). The user needs the `REPLICATION` attribute (or to be a superuser), and to
/// own the tables to create the publication. The publication must be older than the slot:
/// `pgoutput` reads it as it was when each change was made, so a slot made before its
/// publication fails with "publication … does not exist" (the gateway makes the publication
/// first). A slot keeps the WAL the gateway has not read:
/// drop a slot that is no longer used (`SELECT pg_drop_replication_slot('<slot>')`), or the
/// server's disk fills up. A missing slot or publication, or another `wal_level`, puts the
/// node in `Error` saying so, and the gateway tries again with backoff.
///
/// Events: one per row change, in commit order (a transaction's changes in the order they
/// were made). Payload (`application/json`): `{"op": "insert", "schema": "public", "table":
/// "orders", "new": {…}}`, where `op` is `insert`, `update`, `delete` or `truncate`; `new` is
/// the row after an insert or update; `old` is the row before an update or delete: all of it
/// with `REPLICA IDENTITY FULL`, else its key columns, and for an update only when the key
/// changed. A truncate has neither, but `cascade` and `restartIdentity` (booleans), and gives
/// one event per table. Column values are JSON booleans for `boolean`, numbers for `smallint`,
/// `integer`, `bigint`, `oid`, `real` and `double precision` (not `NaN` or infinities, which
/// stay text), parsed JSON for `json` and `jsonb`, `null` for SQL `NULL`, and their text
/// otherwise (`numeric` too, to keep every digit); a TOASTed value the change did not touch is
/// left out of `new`. The event's `id` is `<commit LSN>:<n>` (like `0/16B3748:0`, `n` the
/// change's place in its transaction from 0), the same each time the change is read, so a
/// change sent again after a restart has the id it had. Its `time` is the commit's.
/// Extensions: `operation` (as `op`), `database`, `schema`, `table`, `lsn` (the commit LSN)
/// and `xid` (the transaction id). The source and subject are the configuration's, as for
/// every gateway.
///
/// Delivery: **at least once**. The slot is read without being consumed
/// (`pg_logical_slot_peek_binary_changes`) and advanced (`pg_replication_slot_advance`) only
/// past transactions whose every event was accepted for delivery (written to the outbox), or,
/// with `spec.delivery.mode: ackAfterDelivery`, delivered to every watcher. A change read but
/// not yet accepted when the gateway stops or loses the connection is read again, with the
/// same id; within one run a change is handed over once. The slot is read every
/// `pollInterval` while there is nothing new, and at once after a notification on
/// `wakeChannel`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplicationConfig {
    /// The logical replication slot: lower-case letters, digits and `_`, at most 63 bytes.
    /// Used by one configuration at a time.
    pub slot: String,
    /// The publication whose tables' changes are read (`publication_names` of `pgoutput`),
    /// taken as written (quoted).
    pub publication: String,
    /// The tables of the publication when the gateway creates it (`CREATE PUBLICATION … FOR
    /// TABLE …`): each `table` or `schema.table`, taken as written (quoted). Not used when the
    /// publication exists.
    #[serde(default)]
    pub tables: Vec<String>,
    /// Create the slot when it is missing (default `true`); with `false` a missing slot is an
    /// error.
    #[serde(default)]
    pub create_slot: Option<bool>,
    /// How long to wait before reading the slot again when it had nothing new; a duration
    /// like `1s` or `500ms` (default `1s`).
    #[serde(default)]
    pub poll_interval: Option<String>,
    /// The most changes one read of the slot returns (default 1000; whole transactions, so a
    /// read may return more).
    #[serde(default)]
    pub max_changes: Option<u32>,
    /// A channel whose notifications (`NOTIFY`) make the gateway read the slot at once
    /// instead of at the next `pollInterval` (a trigger may send one).
    #[serde(default)]
    pub wake_channel: Option<String>,
}

/// What a configuration reads.
#[derive(Debug, Clone)]
enum Mode {
    /// Notifications of these channels.
    Listen(Vec<String>),
    /// Row changes of a replication slot.
    Replicate(replication::Replication),
}

/// A checked `postgres` configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    host: String,
    port: u16,
    user: String,
    database: String,
    mode: Mode,
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

        let mode = match self.replication {
            Some(_) if !self.channels.is_empty() => {
                return Err(invalid(
                    "channels",
                    "given with replication: a configuration takes one of the two",
                ));
            }
            Some(r) => Mode::Replicate(r.check()?),
            None if self.channels.is_empty() => {
                return Err(invalid(
                    "channels",
                    "missing or empty (required without replication): the channels to LISTEN to",
                ));
            }
            None => {
                let mut channels = Vec::with_capacity(self.channels.len());
                for (i, c) in self.channels.iter().enumerate() {
                    let c = identifier(&format!("channels[{i}]"), c)?;
                    if !channels.contains(&c) {
                        channels.push(c);
                    }
                }
                Mode::Listen(channels)
            }
        };

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
            mode,
            password,
        })
    }
}

/// A name taken as written (quoted): not blank, at most 63 bytes, no NUL.
fn identifier(field: &str, name: &str) -> Result<String, ConfigError> {
    if name.trim().is_empty() {
        return Err(invalid(field, "empty"));
    }
    if name.len() > MAX_CHANNEL {
        return Err(invalid(
            field,
            format!("`{name}` is longer than {MAX_CHANNEL} bytes (PostgreSQL's identifiers)"),
        ));
    }
    if name.contains('\0') {
        return Err(invalid(field, "contains a NUL character"));
    }
    Ok(name.to_string())
}

impl ReplicationConfig {
    /// Checks what the fields' types do not; errors name `replication.<field>`.
    fn check(self) -> Result<replication::Replication, ConfigError> {
        let slot = broker::non_blank("replication.slot", &self.slot)?;
        if slot.len() > MAX_CHANNEL
            || !slot
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(invalid(
                "replication.slot",
                format!(
                    "`{slot}`: a slot name is lower-case letters, digits and `_`, at most {MAX_CHANNEL} bytes"
                ),
            ));
        }
        let publication = identifier("replication.publication", &self.publication)?;
        let mut tables = Vec::with_capacity(self.tables.len());
        for (i, t) in self.tables.iter().enumerate() {
            let field = format!("replication.tables[{i}]");
            let parts: Vec<&str> = t.split('.').collect();
            if parts.len() > 2 {
                return Err(invalid(
                    &field,
                    format!("`{t}`: expected `table` or `schema.table`"),
                ));
            }
            let mut quoted = Vec::with_capacity(parts.len());
            for part in parts {
                quoted.push(replication::ident(&identifier(&field, part)?));
            }
            let quoted = quoted.join(".");
            if !tables.contains(&quoted) {
                tables.push(quoted);
            }
        }
        let poll_interval = match broker::optional(self.poll_interval) {
            None => POLL_INTERVAL,
            Some(text) => {
                let d = humantime::parse_duration(&text).map_err(|e| {
                    invalid(
                        "replication.pollInterval",
                        format!("`{text}` is not a duration like `1s` or `500ms`: {e}"),
                    )
                })?;
                if d < Duration::from_millis(10) {
                    return Err(invalid(
                        "replication.pollInterval",
                        format!("`{text}` is shorter than 10ms"),
                    ));
                }
                d
            }
        };
        let max_changes = self.max_changes.unwrap_or(MAX_CHANGES);
        let max_changes = i32::try_from(max_changes)
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| {
                invalid(
                    "replication.maxChanges",
                    format!("{max_changes}: expected 1 to {}", i32::MAX),
                )
            })?;
        let wake_channel = match &self.wake_channel {
            None => None,
            Some(c) => Some(identifier("replication.wakeChannel", c)?),
        };
        Ok(replication::Replication {
            slot: slot.to_string(),
            publication,
            tables,
            create_slot: self.create_slot.unwrap_or(true),
            poll_interval,
            max_changes,
            wake_channel,
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
}

/// `LISTEN "a"; LISTEN "b"; …`, each name quoted as an identifier.
fn listen_sql(channels: &[String]) -> String {
    channels
        .iter()
        .map(|c| format!("LISTEN {};", replication::ident(c)))
        .collect::<Vec<_>>()
        .join(" ")
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
        match &c.mode {
            Mode::Listen(channels) => {
                broker::run_sessions_until_they_stop(&ctx, None, |progress| {
                    session(&ctx, &c, channels, progress)
                })
                .await
            }
            Mode::Replicate(r) => {
                let done = replication::Done::default();
                broker::run_sessions(&ctx, None, |progress| {
                    replication_session(&ctx, &c, r, &done, progress)
                })
                .await
            }
        }
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

/// A connection to the server, `None` when the configuration stopped first.
async fn connect(
    ctx: &ConfigContext,
    c: &Settings,
) -> Result<Option<(tokio_postgres::Client, Connection)>, SessionError> {
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
        _ = ctx.stopped() => return Ok(None),
    };
    connected
        .map(Some)
        .map_err(|e| SessionError::broker(format!("cannot connect to {server}"), e))
}

/// The connection of a client.
type Connection =
    tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>;

/// One connection with `replication`: see [`replication::session`].
async fn replication_session(
    ctx: &ConfigContext,
    c: &Settings,
    r: &replication::Replication,
    done: &replication::Done,
    progress: Progress,
) -> SessionResult {
    let Some((client, mut connection)) = connect(ctx, c).await? else {
        return Ok(());
    };
    let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
    let server = c.server();
    replication::session(
        ctx,
        &server,
        &c.database,
        r,
        &client,
        &mut messages,
        done,
        progress,
    )
    .await
}

/// One connection: connect, `LISTEN`, then turn notifications into events until the
/// configuration stops (`Ok`) or the connection is lost.
async fn session(
    ctx: &ConfigContext,
    c: &Settings,
    channels: &[String],
    progress: Progress,
) -> SessionResult {
    let server = c.server();
    let Some((client, mut connection)) = connect(ctx, c).await? else {
        return Ok(());
    };
    let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
    let lost = |e: Option<tokio_postgres::Error>| match e {
        Some(e) => SessionError::broker(format!("lost the connection to {server}"), e),
        None => SessionError::Broker(format!("lost the connection to {server} (closed)")),
    };

    // LISTEN, driving the connection meanwhile; a notification that comes in before the
    // answer is kept.
    let mut early = Vec::new();
    {
        let listen_sql = listen_sql(channels);
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
        let Mode::Listen(channels) = &s.mode else {
            panic!("{s:?}")
        };
        assert_eq!(channels, &["a", "B"]);
        assert_eq!(listen_sql(channels), r#"LISTEN "a"; LISTEN "B";"#);
        let s = check("url: postgresql://postgres@[::1]:5433\nchannels: ['x\"y']").unwrap();
        assert_eq!((s.host.as_str(), s.port), ("::1", 5433));
        assert_eq!(s.database, "postgres");
        assert_eq!(s.server(), "PostgreSQL at [::1]:5433/postgres");
        let Mode::Listen(channels) = &s.mode else {
            panic!("{s:?}")
        };
        assert_eq!(listen_sql(channels), r#"LISTEN "x""y";"#);

        for (yaml, field) in [
            ("channels: [a]", "missing field `url`"),
            ("url: http://root@h/db\nchannels: [a]", "url:"),
            ("url: postgres://h/db\nchannels: [a]", "url:"),
            (
                "url: postgres://root@h/db?sslmode=require\nchannels: [a]",
                "url:",
            ),
            ("url: postgres://root@h/db", "channels: missing or empty"),
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
    fn a_replication_block_is_checked() {
        let s = check(
            "url: postgres://root@h/db\nreplication: {slot: s_1, publication: Pub, \
             tables: [orders, 'sales.Items', orders], pollInterval: 250ms, maxChanges: 10, \
             wakeChannel: w}",
        )
        .unwrap();
        let Mode::Replicate(r) = &s.mode else {
            panic!("{s:?}")
        };
        assert_eq!((r.slot.as_str(), r.publication.as_str()), ("s_1", "Pub"));
        assert_eq!(r.tables, [r#""orders""#, r#""sales"."Items""#]);
        assert_eq!(r.poll_interval, Duration::from_millis(250));
        assert_eq!(r.max_changes, 10);
        assert_eq!(r.wake_channel.as_deref(), Some("w"));
        assert!(r.create_slot);
        let s = check("url: postgres://root@h/db\nreplication: {slot: s, publication: p}").unwrap();
        let Mode::Replicate(r) = &s.mode else {
            panic!("{s:?}")
        };
        assert_eq!((r.poll_interval, r.max_changes), (POLL_INTERVAL, 1000));
        assert!(r.tables.is_empty() && r.wake_channel.is_none());

        let base = "url: postgres://root@h/db\n";
        for (yaml, field) in [
            ("replication: {publication: p}", "missing field `slot`"),
            ("replication: {slot: s}", "missing field `publication`"),
            (
                "replication: {slot: s, publication: p, extra: 1}",
                "unknown field `extra`",
            ),
            (
                "channels: [a]\nreplication: {slot: s, publication: p}",
                "channels: given with replication",
            ),
            (
                "replication: {slot: '', publication: p}",
                "replication.slot:",
            ),
            (
                "replication: {slot: Big, publication: p}",
                "replication.slot:",
            ),
            (
                "replication: {slot: s, publication: ''}",
                "replication.publication:",
            ),
            (
                "replication: {slot: s, publication: p, tables: [a.b.c]}",
                "replication.tables[0]:",
            ),
            (
                "replication: {slot: s, publication: p, tables: [a, '.b']}",
                "replication.tables[1]:",
            ),
            (
                "replication: {slot: s, publication: p, pollInterval: soon}",
                "replication.pollInterval:",
            ),
            (
                "replication: {slot: s, publication: p, pollInterval: 1ms}",
                "replication.pollInterval:",
            ),
            (
                "replication: {slot: s, publication: p, maxChanges: 0}",
                "replication.maxChanges:",
            ),
            (
                "replication: {slot: s, publication: p, wakeChannel: ''}",
                "replication.wakeChannel:",
            ),
        ] {
            let e = check(&format!("{base}{yaml}")).unwrap_err();
            assert!(e.message().contains(field), "{yaml}: {e}");
        }
    }

    #[test]
    fn a_password_in_the_url_is_refused_and_not_shown() {
        let e = check("url: postgres://root:hunter2@h/db\nchannels: [a]").unwrap_err();
        assert!(e.message().starts_with("url:"), "{e}");
        assert!(!e.message().contains("hunter2"), "{e}");
    }
}
