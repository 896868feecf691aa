//! The `nats` gateway: messages of a NATS subject, by core subscription or from a JetStream
//! stream through a durable consumer.
//!
//! Its configuration, what its events carry and how it acknowledges its sources: [`NatsConfig`].

use portico::secret::redact_url;
use std::time::Duration;

use futures::StreamExt;
use portico::Placement;
use portico::security::{NatsAuth, NatsAuthFields};
use portico::{ConfigContext, ConfigError, ConfigExecutor, Event, Submit};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::broker::{
    self, Progress, RECONNECT_MAX, RECONNECT_MIN, SessionError, SessionResult, accepted,
    accepted_ackable,
};

/// A `nats` configuration.
///
/// Payload: the message body, untouched; `datacontenttype` from a `Content-Type` header.
/// Extensions: `natssubject` (the message's subject; `subject` itself is a core attribute),
/// `traceparent` and `tracestate` from the headers of those names (the W3C trace context), one
/// `h<name>` per other header (the name lower-cased with only a–z and 0–9 kept, at most 20
/// characters: `X-Trace-Id` ⇒ `hxtraceid`; repeated values joined with `,`), and for JetStream
/// `stream` and `streamseq` (the stream sequence number).
///
/// Security: `tls` (a CA, and a client certificate for mutual TLS; the files are read at
/// every connection, and a changed one makes a new connection at once), and one way to
/// authenticate: `user` with a password, a token, a credentials file or an nkey seed, each
/// from a file or an environment variable and never shown.
///
/// Delivery: a core subscription is at-most-once, as NATS itself. A JetStream message is
/// acknowledged only after its CloudEvent is accepted for delivery (written to the outbox), or,
/// with `spec.delivery.mode: ackAfterDelivery`, only after every watcher took it (the event then
/// skips the outbox); one not acknowledged (the gateway stopped, the dispatcher was full until
/// the stop) is delivered again by the server.
///
/// Connection loss: the client reconnects by itself with a capped backoff; the node shows
/// `Error` while disconnected and `Running` once reconnected. A session whose JetStream
/// pull fails is started over with capped backoff. Messages are pulled in batches of 64;
/// when the configuration stops, the messages of the current batch not yet accepted are
/// given back (NAK) so the server redelivers them at once.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NatsConfig {
    /// The server, `nats://host:port` (also `tls://`, `ws://`, `wss://`); several separated
    /// by commas.
    pub url: String,
    /// The subject to read; the wildcards `*` and `>` are allowed.
    pub subject: String,
    /// A queue group (core subscriptions only): the group's members share the messages.
    #[serde(default)]
    pub queue: Option<String>,
    /// A JetStream stream to read from instead of a core subscription.
    #[serde(default)]
    pub stream: Option<String>,
    /// The durable consumer's name; required with `stream` (created when absent).
    #[serde(default)]
    pub durable: Option<String>,
    /// TLS toward the server: its CA, and a client certificate for mutual TLS. Given, the
    /// connection must be TLS (as with a `tls://` URL); a certificate the CA did not sign is
    /// refused and the node says so.
    #[serde(default)]
    pub tls: Option<broker::TlsConfig>,
    /// A user name, with `passwordFile` or `passwordEnv`.
    #[serde(default)]
    pub user: Option<String>,
    /// A file holding the user's password.
    #[serde(default)]
    pub password_file: Option<String>,
    /// An environment variable holding the user's password, instead of `passwordFile`.
    #[serde(default)]
    pub password_env: Option<String>,
    /// A file holding an authentication token, instead of a user.
    #[serde(default)]
    pub token_file: Option<String>,
    /// An environment variable holding the token, instead of `tokenFile`.
    #[serde(default)]
    pub token_env: Option<String>,
    /// A NATS credentials file (a user JWT and its nkey seed, as `nsc` writes it), instead of
    /// a user or a token.
    #[serde(default)]
    pub credentials_file: Option<String>,
    /// A file holding an nkey seed (`SU…`), instead of a user or a token.
    #[serde(default)]
    pub nkey_file: Option<String>,
}

/// A checked `nats` configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    urls: Vec<String>,
    subject: String,
    queue: Option<String>,
    jetstream: Option<(String, String)>,
    tls: Option<broker::Tls>,
    auth: NatsAuth,
}

impl NatsConfig {
    /// Checks what the fields' types do not; errors name the field.
    pub fn check(self) -> Result<Settings, ConfigError> {
        let mut urls = Vec::new();
        for u in self.url.split(',').map(str::trim).filter(|u| !u.is_empty()) {
            broker::check_url("url", u, &["nats", "tls", "ws", "wss"])?;
            urls.push(u.to_string());
        }
        if urls.is_empty() {
            return Err(ConfigError::invalid(
                "url: empty (required): the server, like `nats://127.0.0.1:4222`",
            ));
        }
        let subject = broker::non_blank("subject", &self.subject)?.to_string();
        if subject.contains(char::is_whitespace) {
            return Err(ConfigError::invalid(format!(
                "subject: `{subject}` contains white space"
            )));
        }
        let queue = broker::optional(self.queue);
        let jetstream = match (
            broker::optional(self.stream),
            broker::optional(self.durable),
        ) {
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::invalid(
                    "durable: missing (required with stream)",
                ));
            }
            (Some(stream), Some(durable)) => {
                if queue.is_some() {
                    return Err(ConfigError::invalid(
                        "queue: only for a core subscription, not with stream",
                    ));
                }
                Some((stream, durable))
            }
            (None, Some(_)) => {
                return Err(ConfigError::invalid(
                    "stream: missing (durable needs the JetStream stream to read)",
                ));
            }
        };
        let tls = self
            .tls
            .as_ref()
            .map(broker::TlsConfig::check)
            .transpose()?;
        let auth = NatsAuthFields {
            user: self.user.as_deref(),
            password_file: self.password_file.as_deref(),
            password_env: self.password_env.as_deref(),
            token_file: self.token_file.as_deref(),
            token_env: self.token_env.as_deref(),
            credentials_file: self.credentials_file.as_deref(),
            nkey_file: self.nkey_file.as_deref(),
        }
        .check()?;
        Ok(Settings {
            urls,
            subject,
            queue,
            jetstream,
            tls,
            auth,
        })
    }
}

/// The `nats` gateway's executor.
#[derive(Debug, Default, Clone, Copy)]
pub struct Nats;

impl ConfigExecutor for Nats {
    type Config = Settings;

    /// A queue group or a durable JetStream consumer shares messages out among the replicas; a plain subscription would give each replica every message.
    fn placement(&self, c: &Settings) -> Placement {
        if c.queue.is_some() || c.jetstream.is_some() {
            Placement::Everywhere
        } else {
            Placement::Sharded
        }
    }

    fn validate(&self, ctx: &ConfigContext) -> Result<Settings, ConfigError> {
        ctx.parse::<NatsConfig>()?.check()
    }

    async fn start_config(&self, ctx: ConfigContext, c: Settings) -> Result<(), ConfigError> {
        broker::run_sessions_until_they_stop(&ctx, c.tls.as_ref(), |progress| {
            session(&ctx, &c, progress)
        })
        .await
    }
}

/// `options` with TLS (the files read now) and the authentication (its secret read now): for
/// the `nats` gateway and the NATS event-bus watcher.
pub async fn secure(
    options: async_nats::ConnectOptions,
    tls: Option<&broker::Tls>,
    auth: &NatsAuth,
) -> Result<async_nats::ConnectOptions, broker::SessionError> {
    let mut options = options;
    if let Some(tls) = tls {
        let config = tls.client_config().map_err(SessionError::Broker)?;
        options = options.require_tls(true).tls_client_config(config);
    }
    Ok(match auth {
        NatsAuth::Anonymous => options,
        NatsAuth::User(user, password) => {
            options.user_and_password(user.clone(), broker::credential(password, "password")?)
        }
        NatsAuth::Token(token) => options.token(broker::credential(token, "token")?),
        NatsAuth::Nkey(seed) => {
            options.nkey(broker::credential(seed, "nkeyFile")?.trim().to_string())
        }
        NatsAuth::Credentials(path) => options.credentials_file(path).await.map_err(|e| {
            SessionError::broker(
                format!("cannot read the NATS credentials file {}", path.display()),
                e,
            )
        })?,
    })
}

async fn connect(
    ctx: &ConfigContext,
    c: &Settings,
    progress: &Progress,
) -> Result<async_nats::Client, SessionError> {
    let events_ctx = ctx.clone();
    let events_progress = progress.clone();
    let where_ = c.urls.join(",");
    let options = async_nats::ConnectOptions::new()
        .name(format!("portico/{}/{}", ctx.gateway().name(), ctx.src()))
        .connection_timeout(Duration::from_secs(5))
        .max_reconnects(None)
        .reconnect_delay_callback(|attempts| {
            let exp = RECONNECT_MIN.saturating_mul(1u32 << attempts.min(8) as u32);
            exp.min(RECONNECT_MAX)
        })
        .event_callback(move |event| {
            let ctx = events_ctx.clone();
            let progress = events_progress.clone();
            let where_ = where_.clone();
            async move {
                match event {
                    async_nats::Event::Disconnected => {
                        tracing::warn!(src = ctx.src(), "disconnected from NATS at {where_}");
                        ctx.report_error(format!(
                            "disconnected from NATS at {where_}; reconnecting"
                        ));
                    }
                    // Back after a disconnection (the first connection is reported by the
                    // session once it is subscribed).
                    async_nats::Event::Connected if progress.was_running() => ctx.running(),
                    other => tracing::debug!(src = ctx.src(), "NATS: {other}"),
                }
            }
        });
    let options = secure(options, c.tls.as_ref(), &c.auth).await?;
    let addrs: Vec<async_nats::ServerAddr> = c
        .urls
        .iter()
        .map(|u| u.parse())
        .collect::<Result<_, _>>()
        .map_err(|e| SessionError::Fatal(ConfigError::invalid(format!("url: {e}"))))?;
    options.connect(addrs).await.map_err(|e| {
        let shown: Vec<String> = c.urls.iter().map(|u| redact_url(u)).collect();
        SessionError::broker(format!("cannot connect to NATS at {}", shown.join(",")), e)
    })
}

fn event_of(msg: &async_nats::Message) -> Event {
    let mut event =
        Event::new(msg.payload.clone()).with_extension("natssubject", msg.subject.as_str());
    if let Some(headers) = &msg.headers {
        for (name, values) in headers.iter() {
            let name: &str = name.as_ref();
            let value = values
                .iter()
                .map(|v| v.as_str())
                .collect::<Vec<_>>()
                .join(",");
            if broker::is_content_type(name) {
                event.content_type = Some(value);
            } else {
                event = event.with_extension(broker::header_extension("h", name), value);
            }
        }
    }
    event
}

async fn session(ctx: &ConfigContext, c: &Settings, progress: Progress) -> SessionResult {
    let client = tokio::select! {
        r = connect(ctx, c, &progress) => r?,
        _ = ctx.stopped() => return Ok(()),
    };
    let result = match &c.jetstream {
        None => core(ctx, c, &client, progress).await,
        Some((stream, durable)) => jetstream(ctx, c, &client, stream, durable, progress).await,
    };
    // Leave nothing behind: the connection closes once the client is drained and dropped.
    let _ = tokio::time::timeout(Duration::from_secs(1), client.drain()).await;
    result
}

async fn core(
    ctx: &ConfigContext,
    c: &Settings,
    client: &async_nats::Client,
    progress: Progress,
) -> SessionResult {
    let subscribe = match &c.queue {
        Some(q) => client.queue_subscribe(c.subject.clone(), q.clone()).await,
        None => client.subscribe(c.subject.clone()).await,
    };
    let mut sub = subscribe.map_err(|e| SessionError::broker("cannot subscribe", e))?;
    // The server has the subscription once the flush returns.
    client
        .flush()
        .await
        .map_err(|e| SessionError::broker("cannot subscribe", e))?;
    progress.running(ctx);
    loop {
        let msg = tokio::select! {
            m = sub.next() => m,
            _ = ctx.stopped() => return Ok(()),
        };
        let Some(msg) = msg else {
            return Err(SessionError::Broker(
                "the NATS subscription ended (connection closed)".into(),
            ));
        };
        if !accepted(ctx.dispatch(event_of(&msg)).await)? {
            return Ok(());
        }
    }
}

/// Messages pulled at once from the durable consumer.
const BATCH: usize = 64;
/// How long one pull waits for messages at the server.
const PULL_EXPIRES: Duration = Duration::from_secs(1);

async fn jetstream(
    ctx: &ConfigContext,
    c: &Settings,
    client: &async_nats::Client,
    stream_name: &str,
    durable: &str,
    progress: Progress,
) -> SessionResult {
    use async_nats::jetstream::AckKind;
    let js = async_nats::jetstream::new(client.clone());
    let stream = js.get_stream(stream_name).await.map_err(|e| {
        SessionError::broker(
            format!("cannot read JetStream stream `{stream_name}` (it must exist)"),
            format!("{e} ({:?})", e.kind()),
        )
    })?;
    let config = async_nats::jetstream::consumer::pull::Config {
        durable_name: Some(durable.to_string()),
        filter_subject: c.subject.clone(),
        ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
        ..Default::default()
    };
    let consumer: async_nats::jetstream::consumer::PullConsumer = stream
        .get_or_create_consumer(durable, config)
        .await
        .map_err(|e| {
            SessionError::broker(format!("cannot create durable consumer `{durable}`"), e)
        })?;
    progress.running(ctx);
    // Pull in bounded batches. When stopping, the rest of the current batch is held until the
    // pull is over (at most PULL_EXPIRES), then given back (NAK): the server redelivers it at
    // once to the next consumer, and no pull request is left open.
    let mut stopping = false;
    let mut held = Vec::new();
    // In ackAfterDelivery: messages of this pull whose events are not delivered yet.
    let mut awaiting = Vec::new();
    while !stopping {
        let mut batch = consumer
            .batch()
            .max_messages(BATCH)
            .expires(PULL_EXPIRES)
            .messages()
            .await
            .map_err(|e| SessionError::broker("cannot pull messages", e))?;
        let pull_deadline = tokio::time::Instant::now() + PULL_EXPIRES + Duration::from_millis(200);
        loop {
            let next = if stopping {
                // The pull ends by itself at its expiry; do not wait (much) longer for it.
                match tokio::time::timeout_at(pull_deadline, batch.next()).await {
                    Ok(m) => m,
                    Err(_) => break,
                }
            } else {
                tokio::select! {
                    m = batch.next() => m,
                    _ = ctx.stopped() => { stopping = true; continue; }
                }
            };
            let Some(msg) = next else { break };
            let msg = match msg {
                Ok(m) => m,
                Err(_) if stopping => break,
                Err(e) => return Err(SessionError::broker("JetStream pull failed", e)),
            };
            if !stopping {
                let mut event = event_of(&msg.message);
                if let Ok(info) = msg.info() {
                    event = event
                        .with_extension("stream", info.stream)
                        .with_extension("streamseq", info.stream_sequence.to_string());
                }
                if let Some(delivered) =
                    accepted_ackable(ctx.submit(event, Submit::ACK_AFTER_DELIVERY).await)?
                {
                    if delivered.is_done() {
                        msg.ack()
                            .await
                            .map_err(|e| SessionError::broker("cannot acknowledge a message", e))?;
                    } else {
                        awaiting.push((delivered, msg));
                    }
                    continue;
                }
                stopping = true;
            }
            held.push(msg);
        }
        // ackAfterDelivery: ack this pull's messages as their events are delivered, in order;
        // those still undelivered when the configuration stops are given back.
        for (delivered, msg) in awaiting.drain(..) {
            let done = if stopping {
                false
            } else {
                tokio::select! {
                    d = delivered.wait() => d,
                    _ = ctx.stopped() => { stopping = true; false }
                }
            };
            if done {
                msg.ack()
                    .await
                    .map_err(|e| SessionError::broker("cannot acknowledge a message", e))?;
            } else {
                held.push(msg);
            }
        }
    }
    // The pull is over, so nothing given back now comes back to this consumer.
    for msg in held {
        if let Err(e) = msg.ack_with(AckKind::Nak(None)).await {
            tracing::warn!(src = ctx.src(), "cannot give a message back: {e}");
        }
    }
    if let Err(e) = client.flush().await {
        tracing::warn!(src = ctx.src(), "cannot give messages back: {e}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(yaml: &str) -> Result<Settings, ConfigError> {
        portico::testing::parse_config::<NatsConfig>(yaml)?.check()
    }

    #[test]
    fn validation_names_the_field() {
        assert!(check("url: nats://127.0.0.1:4222\nsubject: a.b").is_ok());
        let e = check("subject: a.b").unwrap_err();
        assert!(e.message().contains("missing field `url`"), "{e}");
        let e = check("url: http://x\nsubject: a").unwrap_err();
        assert!(e.message().starts_with("url:"), "{e}");
        let e = check("url: nats://x").unwrap_err();
        assert!(e.message().contains("missing field `subject`"), "{e}");
        let e = check("url: nats://x\nsubject: a\nstream: S").unwrap_err();
        assert!(e.message().starts_with("durable:"), "{e}");
        let e = check("url: nats://x\nsubject: a\ndurable: d").unwrap_err();
        assert!(e.message().starts_with("stream:"), "{e}");
    }
}
