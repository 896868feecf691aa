//! The `amqp` gateway: messages routed to a queue bound to an AMQP 0-9-1 exchange
//! (RabbitMQ).
//!
//! Its configuration, what its events carry and how it acknowledges its sources: [`AmqpConfig`].

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::tcp::{AMQPUriTcpExt, RustlsConnector, TLSConfig};
use lapin::types::{AMQPValue, FieldTable};
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use portico::Placement;
use portico::secret::redact_url;
use portico::{ConfigContext, ConfigError, ConfigExecutor, Event, SecretSource};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::broker::{self, Progress, SessionError, SessionResult, accepted};

/// How many unacknowledged messages the broker sends ahead.
const PREFETCH: u16 = 32;

/// An `amqp` configuration.
///
/// Payload: the message body, untouched; `datacontenttype` from the message's
/// `content-type` property. Extensions: `exchange`, `routingkey`, `redelivered`
/// (`true` when the broker delivers it again), and one `h<name>` per header (`X-Trace-Id` ⇒
/// `hxtraceid`; string, number and boolean values).
///
/// Each message is acknowledged only after its CloudEvent is accepted for delivery. When the
/// configuration stops, what it holds unacknowledged (the message waiting for room and those
/// prefetched) is rejected with requeue, so the broker gives it to the next consumer. With a
/// named `queue` nothing is lost across a restart of the gateway: at least once.
///
/// A lost connection (broker down, connection closed by an operator) is reported on the node
/// and re-established with capped backoff; the exchange, queue and binding are declared
/// again on every connection.
///
/// Security: TLS with an `amqps://` URL (a `tls` block names the CA, a client certificate for
/// mutual TLS, and the name the broker's certificate must carry), and a `user` with its
/// password from a file or an environment variable instead of the URL's; the files are read at
/// every connection (a changed TLS file makes a new connection at once), and the password is
/// never shown.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AmqpConfig {
    /// The broker: `amqp://user:password@host:port/vhost` (or `amqps://`).
    pub url: String,
    /// The exchange to bind to (declared durable when absent).
    pub exchange_name: String,
    /// The exchange's type.
    pub exchange_type: ExchangeType,
    /// The binding key (`#` and `*` wildcards with `topic`); required but for `fanout` and
    /// `headers` exchanges.
    #[serde(default)]
    pub routing_key: Option<String>,
    /// A durable queue to consume from. Without it, a server-named exclusive queue is used,
    /// which lives only as long as the connection; with it, nothing is lost across a restart
    /// of the gateway.
    #[serde(default)]
    pub queue: Option<String>,
    /// TLS toward the broker, with an `amqps://` URL: its CA (Mozilla's roots by default), a
    /// client certificate for mutual TLS, and `serverName`. A certificate the CA did not sign
    /// is refused and the node says so.
    #[serde(default)]
    pub tls: Option<broker::TlsConfig>,
    /// A user name, with `passwordFile` or `passwordEnv`, instead of the URL's.
    #[serde(default)]
    pub user: Option<String>,
    /// A file holding the user's password.
    #[serde(default)]
    pub password_file: Option<String>,
    /// An environment variable holding the user's password, instead of `passwordFile`.
    #[serde(default)]
    pub password_env: Option<String>,
}

/// The type of an AMQP exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExchangeType {
    /// Routes by exact routing key.
    Direct,
    /// Routes to every bound queue.
    Fanout,
    /// Routes by routing-key pattern.
    Topic,
    /// Routes by header values.
    Headers,
}

/// A checked `amqp` configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    url: String,
    uri: AMQPUri,
    exchange: String,
    kind: ExchangeKind,
    routing_key: String,
    queue: Option<String>,
    tls: Option<broker::Tls>,
    user: Option<(String, SecretSource)>,
}

impl AmqpConfig {
    /// Checks what the fields' types do not; errors name the field.
    pub fn check(self) -> Result<Settings, ConfigError> {
        broker::check_url("url", &self.url, &["amqp", "amqps"])?;
        let uri = self
            .url
            .parse::<AMQPUri>()
            .map_err(|e| ConfigError::invalid(format!("url: `{}`: {e}", redact_url(&self.url))))?;
        let tls = match (&self.tls, &uri.scheme) {
            (Some(t), AMQPScheme::AMQPS) => Some(t.check()?),
            (None, AMQPScheme::AMQPS) => Some(broker::Tls::default()),
            (Some(_), AMQPScheme::AMQP) => {
                return Err(ConfigError::invalid(
                    "tls: needs an `amqps://` url (TLS), not `amqp://`",
                ));
            }
            (None, AMQPScheme::AMQP) => None,
        };
        let password = SecretSource::from_fields(
            "password",
            self.password_file.as_deref(),
            self.password_env.as_deref(),
        )?;
        let user = match (broker::optional(self.user), password) {
            (Some(u), Some(p)) => Some((u, p)),
            (Some(_), None) => {
                return Err(ConfigError::invalid(
                    "passwordFile: missing (user needs passwordFile or passwordEnv)",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::invalid(
                    "user: missing (a password goes with a user)",
                ));
            }
            (None, None) => None,
        };
        let kind = match self.exchange_type {
            ExchangeType::Direct => ExchangeKind::Direct,
            ExchangeType::Fanout => ExchangeKind::Fanout,
            ExchangeType::Topic => ExchangeKind::Topic,
            ExchangeType::Headers => ExchangeKind::Headers,
        };
        let routing_key = match broker::optional(self.routing_key) {
            Some(k) => k,
            None if matches!(kind, ExchangeKind::Fanout | ExchangeKind::Headers) => String::new(),
            None => {
                return Err(ConfigError::invalid(format!(
                    "routingKey: required with a `{}` exchange",
                    kind_name(self.exchange_type)
                )));
            }
        };
        Ok(Settings {
            exchange: broker::non_blank("exchangeName", &self.exchange_name)?.to_string(),
            kind,
            routing_key,
            queue: broker::optional(self.queue),
            url: self.url,
            uri,
            tls,
            user,
        })
    }
}

fn kind_name(t: ExchangeType) -> &'static str {
    match t {
        ExchangeType::Direct => "direct",
        ExchangeType::Fanout => "fanout",
        ExchangeType::Topic => "topic",
        ExchangeType::Headers => "headers",
    }
}

/// The `amqp` gateway's executor.
#[derive(Debug, Default, Clone, Copy)]
pub struct Amqp;

impl ConfigExecutor for Amqp {
    type Config = Settings;

    /// Consumers of a named queue share its messages; a queue of the gateway's own (server-named) gets every message on each replica.
    fn placement(&self, c: &Settings) -> Placement {
        if c.queue.is_some() {
            Placement::Everywhere
        } else {
            Placement::Sharded
        }
    }

    fn validate(&self, ctx: &ConfigContext) -> Result<Settings, ConfigError> {
        ctx.parse::<AmqpConfig>()?.check()
    }

    async fn start_config(&self, ctx: ConfigContext, c: Settings) -> Result<(), ConfigError> {
        broker::run_sessions_until_they_stop(&ctx, c.tls.as_ref(), |progress| {
            session(&ctx, &c, progress)
        })
        .await
    }
}

/// The text of a header value, for the ones that have a natural one.
fn header_text(v: &AMQPValue) -> Option<String> {
    Some(match v {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.as_str().to_string(),
        AMQPValue::Boolean(b) => b.to_string(),
        AMQPValue::ShortShortInt(n) => n.to_string(),
        AMQPValue::ShortShortUInt(n) => n.to_string(),
        AMQPValue::ShortInt(n) => n.to_string(),
        AMQPValue::ShortUInt(n) => n.to_string(),
        AMQPValue::LongInt(n) => n.to_string(),
        AMQPValue::LongUInt(n) => n.to_string(),
        AMQPValue::LongLongInt(n) => n.to_string(),
        AMQPValue::Float(n) => n.to_string(),
        AMQPValue::Double(n) => n.to_string(),
        _ => return None,
    })
}

fn event_of(d: &lapin::message::Delivery) -> Event {
    let mut event = Event::new(d.data.clone())
        .with_extension("exchange", d.exchange.as_str())
        .with_extension("routingkey", d.routing_key.as_str())
        .with_extension("redelivered", d.redelivered.to_string());
    if let Some(ct) = d.properties.content_type() {
        event.content_type = Some(ct.as_str().to_string());
    }
    if let Some(headers) = d.properties.headers() {
        for (name, value) in headers.inner() {
            if let Some(text) = header_text(value) {
                event = event.with_extension(broker::header_extension("h", name.as_str()), text);
            }
        }
    }
    event
}

/// Connects to the broker, over TLS with the `tls` block's files (read now) for `amqps://`,
/// and with the password read now when `user` is given.
async fn connect(c: &Settings, props: ConnectionProperties) -> Result<Connection, SessionError> {
    let mut uri = c.uri.clone();
    if let Some((user, source)) = &c.user {
        uri.authority.userinfo.username = user.clone();
        uri.authority.userinfo.password = broker::credential(source, "password")?;
    }
    let tls = match &c.tls {
        None => None,
        Some(tls) => {
            // The URL's host is the name sent (SNI); `serverName`, if any, is checked by the
            // configuration's verifier.
            let config = tls.client_config().map_err(SessionError::Broker)?;
            Some((RustlsConnector::from(config), uri.authority.host.clone()))
        }
    };
    let runtime =
        lapin::runtime::default_runtime().map_err(|e| SessionError::Broker(e.to_string()))?;
    // lapin's own TLS takes a CA and a client identity but not a rustls configuration (no
    // server name): the TCP connection is lapin's, the TLS on it rustls with ours.
    let connected = Connection::connector(
        uri,
        runtime,
        async move |mut uri: AMQPUri, runtime| {
            uri.scheme = AMQPScheme::AMQP;
            let stream = uri
                .connect_with_config_async(TLSConfig::default(), &runtime)
                .await?;
            Ok(match &tls {
                None => stream,
                Some((connector, name)) => stream.into_rustls(connector, name).await?,
            })
        },
        props,
    )
    .await;
    connected.map_err(|e| SessionError::Broker(e.to_string()))
}

async fn setup(
    ctx: &ConfigContext,
    c: &Settings,
) -> Result<(Connection, Channel, lapin::Consumer), SessionError> {
    let name = format!("portico/{}/{}", ctx.gateway().name(), ctx.src());
    let conn = connect(
        c,
        ConnectionProperties::default().with_connection_name(name.into()),
    )
    .await
    .map_err(|e| match e {
        SessionError::Broker(e) => SessionError::Broker(format!(
            "cannot connect to AMQP broker at {}: {e}",
            redact_url(&c.url)
        )),
        e => e,
    })?;
    let declared = async {
        let ch = conn.create_channel().await?;
        ch.basic_qos(PREFETCH, BasicQosOptions::default()).await?;
        ch.exchange_declare(
            c.exchange.as_str().into(),
            c.kind.clone(),
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
        let queue = match &c.queue {
            Some(q) => {
                ch.queue_declare(
                    q.as_str().into(),
                    QueueDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await?
            }
            None => {
                ch.queue_declare(
                    "".into(),
                    QueueDeclareOptions {
                        exclusive: true,
                        auto_delete: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await?
            }
        };
        let queue_name = queue.name().clone();
        ch.queue_bind(
            queue_name.clone(),
            c.exchange.as_str().into(),
            c.routing_key.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
        let consumer = ch
            .basic_consume(
                queue_name,
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok::<_, lapin::Error>((ch, consumer))
    }
    .await;
    match declared {
        Ok((ch, consumer)) => Ok((conn, ch, consumer)),
        Err(e) => {
            let _ = conn.close(200, "setup failed".into()).await;
            Err(SessionError::broker(
                format!(
                    "cannot declare exchange `{}` / queue / binding `{}`",
                    c.exchange, c.routing_key
                ),
                e,
            ))
        }
    }
}

/// The URL without its password, for messages.
async fn session(ctx: &ConfigContext, c: &Settings, progress: Progress) -> SessionResult {
    let (conn, ch, mut consumer) = tokio::select! {
        r = setup(ctx, c) => r?,
        _ = ctx.stopped() => return Ok(()),
    };
    progress.running(ctx);
    let result = async {
        loop {
            let next = tokio::select! {
                d = consumer.next() => d,
                _ = ctx.stopped() => return Ok(()),
            };
            let delivery = match next {
                Some(Ok(d)) => d,
                Some(Err(e)) => return Err(SessionError::broker("AMQP connection lost", e)),
                None => {
                    return Err(SessionError::Broker(
                        "the AMQP consumer was cancelled or its connection closed".into(),
                    ));
                }
            };
            if !accepted(ctx.dispatch(event_of(&delivery)).await)? {
                return Ok(());
            }
            delivery
                .acker
                .ack(BasicAckOptions::default())
                .await
                .map_err(|e| SessionError::broker("cannot acknowledge a message", e))?;
        }
    }
    .await;
    if result.is_ok() {
        // Stopping: give back everything not acknowledged (delivery tag 0 + multiple = all).
        let requeue = BasicNackOptions {
            multiple: true,
            requeue: true,
        };
        if let Err(e) = ch.basic_nack(0, requeue).await {
            tracing::warn!(
                src = ctx.src(),
                "cannot requeue unacknowledged messages: {e}"
            );
        }
    }
    let _ = ch.close(200, "stopping".into()).await;
    let _ = conn.close(200, "stopping".into()).await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(yaml: &str) -> Result<Settings, ConfigError> {
        portico::testing::parse_config::<AmqpConfig>(yaml)?.check()
    }

    #[test]
    fn validation_names_the_field() {
        let base = "url: amqp://guest:guest@127.0.0.1:5672/%2f\nexchangeName: x\n";
        assert!(check(&format!("{base}exchangeType: topic\nroutingKey: a.#")).is_ok());
        assert!(check(&format!("{base}exchangeType: fanout")).is_ok());
        let e = check("exchangeName: x\nexchangeType: topic\nroutingKey: k").unwrap_err();
        assert!(e.message().contains("missing field `url`"), "{e}");
        let e = check("url: http://x\nexchangeName: x\nexchangeType: topic\nroutingKey: k")
            .unwrap_err();
        assert!(e.message().starts_with("url:"), "{e}");
        let e = check(&format!("{base}exchangeType: nope\nroutingKey: k")).unwrap_err();
        assert!(
            e.message().contains("line 3") && e.message().contains("topic"),
            "{e}"
        );
        let e = check(&format!("{base}exchangeType: topic")).unwrap_err();
        assert!(e.message().starts_with("routingKey:"), "{e}");
        let e = check("url: amqp://x\nexchangeType: topic\nroutingKey: k").unwrap_err();
        assert!(e.message().contains("missing field `exchangeName`"), "{e}");
        let e = check("url: amqp://x\nexchangeName: ' '\nexchangeType: topic\nroutingKey: k")
            .unwrap_err();
        assert!(e.message().starts_with("exchangeName:"), "{e}");
    }

    #[test]
    fn security_settings_name_the_field() {
        let base = "exchangeName: x\nexchangeType: fanout\n";
        let tls = format!("url: amqps://10.0.0.5/%2f\n{base}");
        assert!(
            check(&format!(
                "{tls}tls: {{caFile: /ca.pem, serverName: rabbit.internal}}"
            ))
            .is_ok()
        );
        let e = check(&format!("{tls}tls: {{serverName: 'not a name'}}")).unwrap_err();
        assert!(e.message().starts_with("tls.serverName:"), "{e}");
        let e = check(&format!(
            "url: amqp://x/%2f\n{base}tls: {{caFile: /ca.pem}}"
        ))
        .unwrap_err();
        assert!(
            e.message().starts_with("tls:") && e.message().contains("amqps"),
            "{e}"
        );
        let e = check(&format!("{tls}user: u")).unwrap_err();
        assert!(e.message().starts_with("passwordFile:"), "{e}");
        let e = check(&format!("{tls}passwordEnv: P")).unwrap_err();
        assert!(e.message().starts_with("user:"), "{e}");
        assert!(check(&format!("{tls}user: u\npasswordEnv: P")).is_ok());
    }
}
