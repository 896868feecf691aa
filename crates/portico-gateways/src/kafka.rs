//! The `kafka` gateway: records of a Kafka topic, read in a consumer group.
//!
//! Its configuration, what its events carry and how it acknowledges its sources: [`KafkaConfig`].
//!
//! Broker loss: when the client (librdkafka) reports the brokers unreachable, the node shows
//! `Error` with the reason, the consumer is dropped (what was stored is committed if it still
//! can be) and a new one is made with capped backoff (100 ms to 5 s) until the brokers answer;
//! then `Running` again. Starting over rather than resuming also avoids librdkafka 2.12
//! crashing on fetch responses that name a topic the restarted broker no longer knows by id
//! (seen with tansu's memory engine).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{TimeZone, Utc};
use portico::Placement;
use portico::security::Sasl;
use portico::{ConfigContext, ConfigError, ConfigExecutor, Event};
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::broker::{self, Progress, SessionError, SessionResult, accepted};
use crate::webhook::NumberOrText;

/// A `kafka` configuration.
///
/// Payload: the record value, untouched; `datacontenttype` from a `content-type` header; the
/// record's timestamp as the event time. Extensions: `topic`, `partition`, `offset`, `key`
/// (the record key as text, when it has one) and one `h<name>` per other header
/// (`X-Trace-Id` ⇒ `hxtraceid`).
///
/// A record's offset is stored for commit only after its CloudEvent is accepted for delivery
/// (`enable.auto.offset.store=false`; stored offsets are committed every second and when the
/// configuration stops): records not accepted before a stop are read again: at least once.
///
/// Security: TLS with a `tls` block (the CA, and a client certificate for mutual TLS), SASL
/// with a `sasl` block (`PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`, a user and its password
/// from a file or an environment variable, never shown), or both (SASL over TLS). The files
/// and the password are read whenever the consumer is made: at the start, and after the
/// brokers were lost or refused it.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KafkaConfig {
    /// One or more brokers, `host:port` separated by commas (a `kafka://` prefix is
    /// allowed).
    pub url: String,
    /// The topic.
    pub topic: String,
    /// Read only this partition (assigned, not balanced in the group); a number or a string
    /// holding one (Argo Events wrote `"0"`).
    #[serde(default)]
    pub partition: Option<NumberOrText>,
    /// The consumer group whose committed offsets say where to resume; required unless
    /// `partition` is given. A `partition` without a group reads as Argo Events' kafka gateway
    /// did: from `startOffset` at every start, committing nothing, so records produced while
    /// the configuration is stopped are not read (a warning says so).
    #[serde(default)]
    pub consumer_group: Option<String>,
    /// Where a group with no committed offset starts.
    #[serde(default)]
    pub start_offset: StartOffset,
    /// TLS toward the brokers: their CA (the system's roots by default) and a client
    /// certificate for mutual TLS. The brokers' certificates must name the hosts of `url`
    /// (`serverName` is not supported by the Kafka client).
    #[serde(default)]
    pub tls: Option<broker::TlsConfig>,
    /// SASL authentication, over TLS when `tls` is given.
    #[serde(default)]
    pub sasl: Option<portico::security::SaslConfig>,
}

/// Where a consumer group with no committed offset starts reading.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StartOffset {
    /// At the end: only records produced from now on.
    #[default]
    Newest,
    /// At the beginning of the partition.
    Oldest,
}

/// A checked `kafka` configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    brokers: String,
    topic: String,
    partition: Option<i32>,
    /// `None`: a partition read without a group (nothing committed).
    group: Option<String>,
    reset: &'static str,
    tls: Option<broker::Tls>,
    sasl: Option<Sasl>,
}

impl KafkaConfig {
    /// Checks what the fields' types do not; errors name the field.
    pub fn check(self) -> Result<Settings, ConfigError> {
        let mut brokers = Vec::new();
        for b in self.url.split(',').map(str::trim).filter(|b| !b.is_empty()) {
            let hostport = b
                .strip_prefix("kafka://")
                .unwrap_or(b)
                .trim_end_matches('/');
            let ok = hostport.rsplit_once(':').is_some_and(|(h, p)| {
                !h.is_empty() && !h.contains('/') && p.parse::<u16>().is_ok()
            });
            if !ok {
                return Err(ConfigError::invalid(format!(
                    "url: `{b}` is not a broker address like `127.0.0.1:9092`"
                )));
            }
            brokers.push(hostport.to_string());
        }
        if brokers.is_empty() {
            return Err(ConfigError::invalid(
                "url: empty (required): the brokers, like `127.0.0.1:9092`",
            ));
        }
        let partition = match &self.partition {
            None => None,
            Some(p) => {
                let (n, written) = match p {
                    NumberOrText::Number(n) => (i32::try_from(*n).ok(), n.to_string()),
                    NumberOrText::Text(t) => (t.trim().parse::<i32>().ok(), t.clone()),
                };
                Some(n.filter(|n| *n >= 0).ok_or_else(|| {
                    ConfigError::invalid(format!(
                        "partition: `{written}` is not a partition number (0, 1, …)"
                    ))
                })?)
            }
        };
        let group = broker::optional(self.consumer_group);
        if group.is_none() && partition.is_none() {
            return Err(ConfigError::invalid(
                "consumerGroup: missing (required unless `partition` is given)",
            ));
        }
        let tls = self
            .tls
            .as_ref()
            .map(broker::TlsConfig::check)
            .transpose()?;
        if tls.as_ref().is_some_and(|t| t.server_name.is_some()) {
            return Err(ConfigError::invalid(
                "tls.serverName: not supported by the kafka gateway (its client checks the certificates against the hosts of url)",
            ));
        }
        let sasl = self.sasl.as_ref().map(|s| s.check()).transpose()?;
        Ok(Settings {
            tls,
            sasl,
            brokers: brokers.join(","),
            topic: broker::non_blank("topic", &self.topic)?.to_string(),
            partition,
            group,
            reset: match self.start_offset {
                StartOffset::Newest => "latest",
                StartOffset::Oldest => "earliest",
            },
        })
    }
}

/// The `kafka` gateway's executor.
#[derive(Debug, Default, Clone, Copy)]
pub struct Kafka;

impl ConfigExecutor for Kafka {
    type Config = Settings;

    /// A consumer group shares partitions out among the replicas; a partition read without a group would be read by each.
    fn placement(&self, c: &Settings) -> Placement {
        if c.group.is_some() {
            Placement::Everywhere
        } else {
            Placement::Sharded
        }
    }

    fn validate(&self, ctx: &ConfigContext) -> Result<Settings, ConfigError> {
        let settings = ctx.parse::<KafkaConfig>()?.check()?;
        if settings.group.is_none() {
            ctx.warn(
                "partition without consumerGroup (Argo Events' kafka shape): it is read from startOffset at every start and nothing is committed, so records produced while the configuration is stopped are not read; give a consumerGroup to resume where it stopped",
            );
        }
        Ok(settings)
    }

    async fn start_config(&self, ctx: ConfigContext, c: Settings) -> Result<(), ConfigError> {
        broker::run_sessions_until_they_stop(&ctx, c.tls.as_ref(), |progress| {
            session(&ctx, &c, progress)
        })
        .await
    }
}

/// Hears librdkafka's errors: marks the brokers down and reports it on the node.
struct Watch {
    ctx: ConfigContext,
    down: Arc<AtomicBool>,
    lost: Arc<tokio::sync::Notify>,
    /// What the client said last of a lost or refused connection, for the node's message
    /// when the brokers cannot be reached at all.
    said: Arc<std::sync::Mutex<Option<String>>>,
}

impl ClientContext for Watch {
    fn error(&self, error: KafkaError, reason: &str) {
        use rdkafka::types::RDKafkaErrorCode as Code;
        let said = match error.rdkafka_error_code() {
            Some(Code::AllBrokersDown | Code::BrokerTransportFailure | Code::Resolve) => {
                format!("Kafka brokers unreachable: {reason}")
            }
            Some(Code::SSL) => format!("TLS with the Kafka brokers failed: {reason}"),
            Some(Code::Authentication) => format!("Kafka refused the SASL login: {reason}"),
            _ => {
                tracing::warn!(src = self.ctx.src(), "kafka: {error}: {reason}");
                return;
            }
        };
        tracing::warn!(src = self.ctx.src(), "{said}");
        self.down.store(true, Ordering::SeqCst);
        self.lost.notify_one();
        self.ctx.report_error(said.clone());
        *self.said.lock().unwrap_or_else(|e| e.into_inner()) = Some(said);
    }
}

impl ConsumerContext for Watch {}

/// Sets the client settings of `tls` and `sasl` on `config`, the password read now: for the
/// `kafka` gateway and the Kafka event-bus watcher.
pub fn secure(
    config: &mut ClientConfig,
    tls: Option<&broker::Tls>,
    sasl: Option<&Sasl>,
) -> Result<(), SessionError> {
    let protocol = match (tls, sasl) {
        (None, None) => return Ok(()),
        (Some(_), None) => "ssl",
        (None, Some(_)) => "sasl_plaintext",
        (Some(_), Some(_)) => "sasl_ssl",
    };
    config.set("security.protocol", protocol);
    if let Some(tls) = tls {
        match &tls.ca {
            Some(ca) => config.set("ssl.ca.location", ca.display().to_string()),
            // The system's CA store, wherever this system keeps it.
            None => config.set("ssl.ca.location", "probe"),
        };
        if let Some((cert, key)) = &tls.client {
            config
                .set("ssl.certificate.location", cert.display().to_string())
                .set("ssl.key.location", key.display().to_string());
        }
    }
    if let Some(sasl) = sasl {
        config
            .set("sasl.mechanisms", sasl.mechanism.name())
            .set("sasl.username", &sasl.user)
            .set(
                "sasl.password",
                broker::credential(&sasl.password, "sasl.password")?,
            );
    }
    Ok(())
}

fn event_of<M: Message>(m: &M) -> Event {
    let mut event = Event::new(m.payload().map(<[u8]>::to_vec).unwrap_or_default())
        .with_extension("topic", m.topic())
        .with_extension("partition", m.partition().to_string())
        .with_extension("offset", m.offset().to_string());
    if let Some(key) = m.key() {
        event = event.with_extension("key", String::from_utf8_lossy(key));
    }
    if let Some(ms) = m.timestamp().to_millis()
        && let Some(t) = Utc.timestamp_millis_opt(ms).single()
    {
        event = event.with_time(t);
    }
    if let Some(headers) = m.headers() {
        for h in headers.iter() {
            let value = h
                .value
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default();
            if broker::is_content_type(h.key) {
                event.content_type = Some(value);
            } else {
                event = event.with_extension(broker::header_extension("h", h.key), value);
            }
        }
    }
    event
}

async fn session(ctx: &ConfigContext, c: &Settings, progress: Progress) -> SessionResult {
    let down = Arc::new(AtomicBool::new(false));
    let lost = Arc::new(tokio::sync::Notify::new());
    let said = Arc::new(std::sync::Mutex::new(None));
    let client_id = format!("portico-{}-{}", ctx.gateway().name(), ctx.src());
    let mut config = ClientConfig::new();
    secure(&mut config, c.tls.as_ref(), c.sasl.as_ref())?;
    let consumer: StreamConsumer<Watch> = config
        .set("bootstrap.servers", &c.brokers)
        // Without a group of the configuration's, an id of its own that commits nothing.
        .set("group.id", c.group.as_deref().unwrap_or(&client_id))
        .set("client.id", &client_id)
        .set(
            "enable.auto.commit",
            if c.group.is_some() { "true" } else { "false" },
        )
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", c.reset)
        .set("reconnect.backoff.ms", "100")
        .set("reconnect.backoff.max.ms", "5000")
        .set("topic.metadata.refresh.interval.ms", "2000")
        .create_with_context(Watch {
            ctx: ctx.clone(),
            down: down.clone(),
            lost: lost.clone(),
            said: said.clone(),
        })
        // The url was checked: what fails here is what the client reads (the TLS files).
        .map_err(|e| SessionError::broker("cannot make the Kafka consumer", e))?;
    let consumer = Arc::new(consumer);
    match c.partition {
        Some(p) => {
            let from = match (&c.group, c.reset) {
                (Some(_), _) => Offset::Stored,
                (None, "earliest") => Offset::Beginning,
                (None, _) => Offset::End,
            };
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&c.topic, p, from)
                .map_err(|e| SessionError::broker("cannot assign the partition", e))?;
            consumer
                .assign(&tpl)
                .map_err(|e| SessionError::broker("cannot assign the partition", e))?;
        }
        None => consumer
            .subscribe(&[c.topic.as_str()])
            .map_err(|e| SessionError::broker(format!("cannot subscribe to `{}`", c.topic), e))?,
    }
    // Running once the brokers answer.
    let reached = tokio::select! {
        r = probe(&consumer, &c.topic) => r,
        _ = ctx.stopped() => return Ok(()),
    };
    if let Err(e) = reached {
        // librdkafka hands its errors (a refused login, a failed TLS handshake) to the context
        // only while the consumer is polled: poll it a moment so that the node can say why. A
        // record it may return is not stored, so it is read again by the next session.
        let _ = tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await;
        let said = said.lock().unwrap_or_else(|e| e.into_inner()).take();
        return Err(match said {
            Some(said) => SessionError::Broker(said),
            None => SessionError::broker(
                format!("cannot reach the Kafka brokers at {}", c.brokers),
                e,
            ),
        });
    }
    progress.running(ctx);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let result: SessionResult = async {
        loop {
            tokio::select! {
                m = consumer.recv() => match m {
                    Ok(m) => {
                        if down.swap(false, Ordering::SeqCst) {
                            ctx.running();
                        }
                        if !accepted(ctx.dispatch(event_of(&m)).await)? {
                            return Ok(());
                        }
                        if c.group.is_some()
                            && let Err(e) = consumer.store_offset_from_message(&m)
                        {
                            tracing::warn!(src = ctx.src(), "cannot store the offset {}: {e}", m.offset());
                        }
                    }
                    Err(e) => {
                        tracing::debug!(src = ctx.src(), "kafka: {e}");
                    }
                },
                _ = tick.tick() => {
                    if down.load(Ordering::SeqCst) && probe(&consumer, &c.topic).await.is_ok() {
                        down.store(false, Ordering::SeqCst);
                        ctx.running();
                    }
                }
                // The brokers are gone: start over with a new consumer once they are back,
                // rather than resume with state (topic ids) they may no longer know.
                _ = lost.notified() => {
                    return Err(SessionError::Broker(format!(
                        "Kafka brokers at {} unreachable", c.brokers
                    )));
                }
                _ = ctx.stopped() => return Ok(()),
            }
        }
    }
    .await;
    // Commit what was stored, then leave the group (closing the consumer off the runtime).
    let closing = consumer.clone();
    drop(consumer);
    let commit = c.group.is_some();
    let close = tokio::task::spawn_blocking(move || {
        if commit {
            let _ = closing.commit_consumer_state(rdkafka::consumer::CommitMode::Sync);
        }
        drop(closing);
    });
    if result.is_ok() {
        let _ = close.await;
    }
    result
}

/// Asks the brokers for the topic's metadata (a blocking call, run off the runtime).
async fn probe(consumer: &Arc<StreamConsumer<Watch>>, topic: &str) -> Result<(), String> {
    let consumer = consumer.clone();
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        consumer
            .fetch_metadata(Some(&topic), Duration::from_secs(2))
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(yaml: &str) -> Result<Settings, ConfigError> {
        portico::testing::parse_config::<KafkaConfig>(yaml)?.check()
    }

    #[test]
    fn validation_names_the_field() {
        let ok = check(
            "url: 127.0.0.1:9092,kafka://h:9093\ntopic: t\nconsumerGroup: g\nstartOffset: oldest",
        )
        .unwrap();
        assert_eq!(ok.brokers, "127.0.0.1:9092,h:9093");
        assert_eq!(ok.reset, "earliest");
        let e = check("topic: t\nconsumerGroup: g").unwrap_err();
        assert!(e.message().contains("missing field `url`"), "{e}");
        let e = check("url: nohost\ntopic: t\nconsumerGroup: g").unwrap_err();
        assert!(e.message().starts_with("url:"), "{e}");
        let e = check("url: h:1\nconsumerGroup: g").unwrap_err();
        assert!(e.message().contains("missing field `topic`"), "{e}");
        let e = check("url: h:1\ntopic: t").unwrap_err();
        assert!(e.message().starts_with("consumerGroup:"), "{e}");
        let e = check("url: h:1\ntopic: t\nconsumerGroup: g\nstartOffset: middle").unwrap_err();
        assert!(
            e.message().contains("line 4") && e.message().contains("oldest"),
            "{e}"
        );
        let e = check("url: h:1\ntopic: t\nconsumerGroup: g\npartition: -1").unwrap_err();
        assert!(e.message().starts_with("partition:"), "{e}");
        // Argo Events' shape: the partition as text, no group.
        let s = check("url: h:1\ntopic: t\npartition: \"0\"").unwrap();
        assert_eq!((s.partition, s.group), (Some(0), None));
    }
}
