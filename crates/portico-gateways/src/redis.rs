//! The `redis` gateway: Redis pub/sub channels, or a Redis stream read by a consumer group.
//!
//! Its configuration, what its events carry and how it acknowledges its sources: [`RedisConfig`].

use portico::secret::redact_url;
use std::time::Duration;

use futures::StreamExt;
use portico::Placement;
use portico::{ConfigContext, ConfigError, ConfigExecutor, Delivered, Event, SecretSource, Submit};
use redis::AsyncCommands;
use redis::streams::{StreamReadOptions, StreamReadReply};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::broker::{self, Progress, SessionError, SessionResult, accepted, accepted_ackable};

/// A `redis` configuration: pub/sub `channels`, or a `stream` read by a consumer group.
///
/// Pub/sub payload: the message, untouched; extensions `channel` and, for a pattern,
/// `pattern`. At most once, as Redis pub/sub itself.
///
/// Stream payload: the entry's fields as a JSON object of strings (`application/json`);
/// extensions `stream` and `streamid` (the entry id). Each entry is acknowledged (`XACK`)
/// only after its CloudEvent is accepted for delivery (written to the outbox), or, with
/// `spec.delivery.mode: ackAfterDelivery`, once every watcher took it. At start (and after every reconnect)
/// the consumer first reads its own pending entries (delivered before, never acknowledged),
/// then new ones (`XREADGROUP … >`): at least once.
///
/// A lost connection is reported on the node and re-established with capped backoff.
///
/// Security: TLS with a `rediss://` URL (a `tls` block names the CA, and a client certificate
/// for mutual TLS), and an ACL `user` or the server's password from a file or an environment
/// variable, never shown; all are read at every connection.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RedisConfig {
    /// The server, `redis://[user:password@]host:port[/db]` (or `rediss://`).
    pub url: String,
    /// Pub/sub channels; a name with `*`, `?` or `[` is a pattern (`PSUBSCRIBE`).
    #[serde(default)]
    pub channels: Vec<String>,
    /// A stream to read instead of channels.
    #[serde(default)]
    pub stream: Option<String>,
    /// The stream's consumer group; required with `stream` (created at the stream's end,
    /// with the stream, when absent).
    #[serde(default)]
    pub consumer_group: Option<String>,
    /// This consumer's name in the group (default `portico-<gateway>-<configuration>`); keep
    /// it stable so that its pending entries are read again after a restart.
    #[serde(default)]
    pub consumer_name: Option<String>,
    /// Entries pending this long at other consumers of the group (gone for good) are claimed
    /// (`XAUTOCLAIM`) at every connection; a duration like `30s` or `5m` (default `1m`).
    #[serde(default)]
    pub reclaim_after: Option<String>,
    /// TLS toward the server (with a `rediss://` URL): its CA (Mozilla's roots by default),
    /// and a client certificate for mutual TLS; read at every connection. A certificate the CA
    /// did not sign is refused and the node says so.
    #[serde(default)]
    pub tls: Option<broker::TlsConfig>,
    /// An ACL user, instead of one in the URL; with `passwordFile` or `passwordEnv`.
    #[serde(default)]
    pub user: Option<String>,
    /// A file holding the password (of `user`, or the server's `requirepass`), instead of one
    /// in the URL; read at every connection.
    #[serde(default)]
    pub password_file: Option<String>,
    /// An environment variable holding the password, instead of `passwordFile`.
    #[serde(default)]
    pub password_env: Option<String>,
}

#[derive(Debug, Clone)]
enum Mode {
    PubSub(Vec<String>),
    Stream {
        stream: String,
        group: String,
        consumer: Option<String>,
        reclaim_after: Duration,
    },
}

/// A checked `redis` configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    url: String,
    info: redis::ConnectionInfo,
    tls: Option<broker::Tls>,
    user: Option<String>,
    password: Option<SecretSource>,
    mode: Mode,
}

impl Settings {
    /// A client, with the password and the TLS files read now.
    fn client(&self) -> Result<redis::Client, SessionError> {
        let mut redis = self.info.redis_settings().clone();
        if let Some(user) = &self.user {
            redis = redis.set_username(user);
        }
        if let Some(source) = &self.password {
            let text = broker::credential(source, "password")?;
            redis = redis.set_password(text);
        }
        let info = self.info.clone().set_redis_settings(redis);
        let made = match &self.tls {
            None => redis::Client::open(info),
            Some(tls) => {
                let read = |field: &str, p: &std::path::Path| {
                    std::fs::read(p).map_err(|e| {
                        SessionError::Broker(format!(
                            "tls.{field}: cannot read {}: {e}",
                            p.display()
                        ))
                    })
                };
                let root_cert = tls.ca.as_deref().map(|p| read("caFile", p)).transpose()?;
                let client_tls = match &tls.client {
                    None => None,
                    Some((cert, key)) => Some(redis::ClientTlsConfig {
                        client_cert: read("certFile", cert)?,
                        client_key: read("keyFile", key)?,
                    }),
                };
                redis::Client::build_with_tls(
                    info,
                    redis::TlsCertificates {
                        client_tls,
                        root_cert,
                    },
                )
            }
        };
        made.map_err(|e| {
            SessionError::broker(
                format!("cannot set up Redis at {}", redact_url(&self.url)),
                e,
            )
        })
    }
}

impl RedisConfig {
    /// Checks what the fields' types do not; errors name the field.
    pub fn check(self) -> Result<Settings, ConfigError> {
        let url = self.url.trim().to_string();
        let scheme = broker::check_url("url", &url, &["redis", "rediss"])?
            .scheme()
            .to_string();
        let info = redis::IntoConnectionInfo::into_connection_info(url.as_str())
            .map_err(|e| ConfigError::invalid(format!("url: `{}`: {e}", redact_url(&url))))?;
        let tls = self
            .tls
            .as_ref()
            .map(broker::TlsConfig::check)
            .transpose()?;
        if tls.as_ref().is_some_and(|t| t.server_name.is_some()) {
            return Err(ConfigError::invalid(
                "tls.serverName: not supported by the redis gateway (its client checks the certificate against the url's host)",
            ));
        }
        if tls.is_some() && scheme != "rediss" {
            return Err(ConfigError::invalid(
                "tls: needs a `rediss://` url (TLS), not `redis://`",
            ));
        }
        let password = SecretSource::from_fields(
            "password",
            self.password_file.as_deref(),
            self.password_env.as_deref(),
        )?;
        let user = broker::optional(self.user);
        if user.is_some() && password.is_none() {
            return Err(ConfigError::invalid(
                "passwordFile: missing (user needs passwordFile or passwordEnv)",
            ));
        }
        let mode = match (broker::optional(self.stream), self.channels.is_empty()) {
            (Some(_), false) => {
                return Err(ConfigError::invalid(
                    "channels and stream are both set: give one",
                ));
            }
            (None, true) => {
                return Err(ConfigError::invalid(
                    "channels: missing (give `channels` for pub/sub or `stream` + `consumerGroup`)",
                ));
            }
            (None, false) => {
                for (i, c) in self.channels.iter().enumerate() {
                    if c.trim().is_empty() {
                        return Err(ConfigError::invalid(format!("channels[{i}]: empty")));
                    }
                }
                Mode::PubSub(self.channels)
            }
            (Some(stream), true) => Mode::Stream {
                stream,
                group: broker::optional(self.consumer_group).ok_or_else(|| {
                    ConfigError::invalid("consumerGroup: missing (required with stream)")
                })?,
                consumer: broker::optional(self.consumer_name),
                reclaim_after: match broker::optional(self.reclaim_after) {
                    None => Duration::from_secs(60),
                    Some(text) => humantime::parse_duration(&text).map_err(|e| {
                        ConfigError::invalid(format!(
                            "reclaimAfter: `{text}` is not a duration like `30s` or `5m`: {e}"
                        ))
                    })?,
                },
            },
        };
        Ok(Settings {
            url,
            info,
            tls,
            user,
            password,
            mode,
        })
    }
}

/// The `redis` gateway's executor.
#[derive(Debug, Default, Clone, Copy)]
pub struct Redis;

impl ConfigExecutor for Redis {
    type Config = Settings;

    /// A Streams consumer group shares entries out among the replicas; Pub/Sub would give each replica every message.
    fn placement(&self, c: &Settings) -> Placement {
        match c.mode {
            Mode::Stream { .. } => Placement::Everywhere,
            Mode::PubSub(_) => Placement::Sharded,
        }
    }

    fn validate(&self, ctx: &ConfigContext) -> Result<Settings, ConfigError> {
        ctx.parse::<RedisConfig>()?.check()
    }

    async fn start_config(&self, ctx: ConfigContext, c: Settings) -> Result<(), ConfigError> {
        let c = std::sync::Arc::new(c);
        broker::run_sessions(&ctx, c.tls.as_ref(), |progress| {
            let c = c.clone();
            let ctx = ctx.clone();
            async move {
                let client = c.client()?;
                let url = c.url.clone();
                match c.mode.clone() {
                    Mode::PubSub(channels) => {
                        pubsub(&ctx, &client, &url, &channels, progress).await
                    }
                    Mode::Stream {
                        stream,
                        group,
                        consumer,
                        reclaim_after,
                    } => {
                        let consumer = consumer.unwrap_or_else(|| {
                            format!("portico-{}-{}", ctx.gateway().name(), ctx.src())
                        });
                        streams(
                            &ctx,
                            &client,
                            &url,
                            (&stream, &group, &consumer),
                            reclaim_after,
                            progress,
                        )
                        .await
                    }
                }
            }
        })
        .await
    }
}

fn is_pattern(channel: &str) -> bool {
    channel.contains(['*', '?', '['])
}

async fn pubsub(
    ctx: &ConfigContext,
    client: &redis::Client,
    url: &str,
    channels: &[String],
    progress: Progress,
) -> SessionResult {
    let mut ps = client.get_async_pubsub().await.map_err(|e| {
        SessionError::broker(format!("cannot connect to Redis at {}", redact_url(url)), e)
    })?;
    for c in channels {
        let r = if is_pattern(c) {
            ps.psubscribe(c).await
        } else {
            ps.subscribe(c).await
        };
        r.map_err(|e| SessionError::broker(format!("cannot subscribe to `{c}`"), e))?;
    }
    progress.running(ctx);
    let mut messages = ps.on_message();
    while let Some(msg) = messages.next().await {
        let mut event = Event::new(msg.get_payload_bytes().to_vec())
            .with_extension("channel", msg.get_channel_name());
        if msg.from_pattern()
            && let Ok(p) = msg.get_pattern::<String>()
        {
            event = event.with_extension("pattern", p);
        }
        if !accepted(ctx.dispatch(event).await)? {
            return Ok(());
        }
    }
    Err(SessionError::Broker(format!(
        "the connection to Redis at {} was closed",
        redact_url(url)
    )))
}

fn text(v: &redis::Value) -> String {
    match v {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        redis::Value::SimpleString(s) => s.clone(),
        redis::Value::Int(i) => i.to_string(),
        redis::Value::Double(d) => d.to_string(),
        other => format!("{other:?}"),
    }
}

async fn streams(
    ctx: &ConfigContext,
    client: &redis::Client,
    url: &str,
    (stream, group, consumer): (&str, &str, &str),
    reclaim_after: Duration,
    progress: Progress,
) -> SessionResult {
    let config = redis::AsyncConnectionConfig::new()
        .set_response_timeout(Some(Duration::from_secs(10)))
        .set_connection_timeout(Some(Duration::from_secs(5)));
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| {
            SessionError::broker(format!("cannot connect to Redis at {}", redact_url(url)), e)
        })?;
    let created: redis::RedisResult<()> = conn.xgroup_create_mkstream(stream, group, "$").await;
    if let Err(e) = created
        && e.code() != Some("BUSYGROUP")
    {
        return Err(SessionError::broker(
            format!("cannot create consumer group `{group}` of stream `{stream}`"),
            e,
        ));
    }
    // Entries left pending by consumers that are gone become this consumer's pending ones.
    let min_idle = u64::try_from(reclaim_after.as_millis()).unwrap_or(u64::MAX);
    let mut cursor = "0-0".to_string();
    loop {
        let reply: redis::Value = redis::cmd("XAUTOCLAIM")
            .arg(stream)
            .arg(group)
            .arg(consumer)
            .arg(min_idle)
            .arg(&cursor)
            .arg("COUNT")
            .arg(256)
            .arg("JUSTID")
            .query_async(&mut conn)
            .await
            .map_err(|e| {
                SessionError::broker(format!("cannot claim idle entries of `{stream}`"), e)
            })?;
        let next = match &reply {
            redis::Value::Array(items) => items.first().map(text),
            _ => None,
        };
        match next {
            Some(n) if n != "0-0" && n != cursor => cursor = n,
            _ => break,
        }
    }
    progress.running(ctx);
    // First this consumer's pending entries (from id 0), then new ones (`>`).
    let mut pending_from: Option<String> = Some("0".to_string());
    let mut stopping = false;
    loop {
        let opts = StreamReadOptions::default()
            .group(group, consumer)
            .count(64);
        let (id, opts) = match &pending_from {
            Some(from) => (from.clone(), opts),
            None => (">".to_string(), opts.block(1000)),
        };
        let reply: Option<StreamReadReply> = conn
            .xread_options(&[stream], &[id.as_str()], &opts)
            .await
            .map_err(|e| SessionError::broker(format!("cannot read stream `{stream}`"), e))?;
        let entries: Vec<_> = reply
            .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
            .unwrap_or_default();
        if pending_from.is_some() && entries.is_empty() {
            pending_from = None;
            continue;
        }
        // In ackAfterDelivery, entries are acked once their events are delivered (in order,
        // after the batch is dispatched); an entry never acked stays pending and comes back.
        let mut acks = Vec::with_capacity(entries.len());
        for entry in entries {
            if let Some(from) = &mut pending_from {
                from.clone_from(&entry.id);
            }
            // A pending entry deleted from the stream comes back without fields: nothing to send.
            if !entry.map.is_empty() {
                let fields: serde_json::Map<String, serde_json::Value> = entry
                    .map
                    .iter()
                    .map(|(k, v)| (k.clone(), serde_json::Value::String(text(v))))
                    .collect();
                let event = Event::json(&fields)
                    .map_err(|e| SessionError::Fatal(e.into()))?
                    .with_extension("stream", stream)
                    .with_extension("streamid", entry.id.as_str());
                match accepted_ackable(ctx.submit(event, Submit::ACK_AFTER_DELIVERY).await)? {
                    Some(delivered) => acks.push((delivered, entry.id)),
                    None => {
                        stopping = true;
                        break;
                    }
                }
            } else {
                acks.push((Delivered::now(), entry.id));
            }
        }
        for (delivered, id) in acks {
            if !delivered.wait().await {
                return Ok(());
            }
            let _: i64 = conn
                .xack(stream, group, &[id.as_str()])
                .await
                .map_err(|e| SessionError::broker(format!("cannot acknowledge entry {id}"), e))?;
        }
        if stopping {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(yaml: &str) -> Result<Settings, ConfigError> {
        portico::testing::parse_config::<RedisConfig>(yaml)?.check()
    }

    #[test]
    fn validation_names_the_field() {
        assert!(check("url: redis://127.0.0.1:6379\nchannels: [a, 'b*']").is_ok());
        assert!(check("url: redis://127.0.0.1:6379\nstream: s\nconsumerGroup: g").is_ok());
        let e = check("channels: [a]").unwrap_err();
        assert!(e.message().contains("missing field `url`"), "{e}");
        let e = check("url: nats://x\nchannels: [a]").unwrap_err();
        assert!(e.message().starts_with("url:"), "{e}");
        let e = check("url: redis://x").unwrap_err();
        assert!(e.message().starts_with("channels:"), "{e}");
        let e = check("url: redis://x\nstream: s").unwrap_err();
        assert!(e.message().starts_with("consumerGroup:"), "{e}");
        let e =
            check("url: redis://x\nstream: s\nconsumerGroup: g\nreclaimAfter: soon").unwrap_err();
        assert!(e.message().starts_with("reclaimAfter:"), "{e}");
    }
}
