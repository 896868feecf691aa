//! The Kafka watcher: one CloudEvent, one record in binary mode (`ce_*` headers,
//! `content-type`, the data as the value, per the CloudEvents Kafka binding), produced with
//! `acks=all` by an idempotent producer, done when the broker acknowledges it. The record key
//! is the event's `subject` by default (the configuration key, so that one configuration's
//! events keep their order in a partition), or `source`, `id`, `type`, or none. TLS and SASL
//! are the `kafka` gateway's (`tls` and `sasl` blocks), read when the producer is made; when a
//! file of the `tls` block changes, the next send makes a new producer that uses it (records
//! in flight finish on the old one).

use portico::secret::redact_url;
use portico::security::{FILE_CHECK_EVERY, FileWatch};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use portico::cloudevents::CloudEvent;
use portico::watcher::{BoxFuture, DeliveryError, KafkaDispatch, Sender};
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

/// Which attribute keys a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Subject,
    Source,
    Id,
    Type,
    None,
}

/// Produces CloudEvents to a Kafka topic.
pub struct KafkaSender {
    settings: KafkaDispatch,
    producer: Mutex<Producer>,
    topic: String,
    key: Key,
}

/// A producer made, and the TLS files as it read them.
struct Producer {
    producer: FutureProducer,
    files: FileWatch,
    checked: Instant,
}

impl KafkaSender {
    /// A sender for `settings`: checks the key and builds the producer (which connects lazily).
    pub fn new(settings: &KafkaDispatch) -> Result<KafkaSender, String> {
        let key = match settings.key.as_deref().unwrap_or("subject") {
            "subject" => Key::Subject,
            "source" => Key::Source,
            "id" => Key::Id,
            "type" => Key::Type,
            "none" => Key::None,
            other => {
                return Err(format!(
                    "kafka.key `{other}`: expected subject, source, id, type or none"
                ));
            }
        };
        Ok(KafkaSender {
            producer: Mutex::new(produce(settings)?),
            settings: settings.clone(),
            topic: settings.topic.clone(),
            key,
        })
    }

    /// The producer: made again when a TLS file changed since it was made (looked at no
    /// more often than every [`FILE_CHECK_EVERY`]).
    fn producer(&self) -> Result<FutureProducer, DeliveryError> {
        let mut current = self
            .producer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if current.checked.elapsed() >= FILE_CHECK_EVERY {
            current.checked = Instant::now();
            if let Some(changed) = current.files.changed() {
                tracing::info!(file = %changed.display(), "a TLS file of the Kafka watcher changed; making a new producer to use it");
                *current = produce(&self.settings).map_err(DeliveryError::retryable)?;
            }
        }
        Ok(current.producer.clone())
    }
}

/// A producer for `settings`, with the TLS files and secrets read now.
fn produce(settings: &KafkaDispatch) -> Result<Producer, String> {
    let failed = |e: String| format!("kafka producer for `{}`: {e}", redact_url(&settings.url));
    let tls = settings
        .tls
        .as_ref()
        .map(|t| t.check())
        .transpose()
        .map_err(|e| failed(e.to_string()))?;
    let files = FileWatch::new(tls.as_ref().map(|t| t.files()).unwrap_or_default());
    let sasl = settings
        .sasl
        .as_ref()
        .map(|s| s.check())
        .transpose()
        .map_err(|e| failed(e.to_string()))?;
    let mut config = ClientConfig::new();
    portico_gateways::kafka::secure(&mut config, tls.as_ref(), sasl.as_ref())
        .map_err(|e| failed(e.to_string()))?;
    let producer: FutureProducer = config
        .set("bootstrap.servers", &settings.url)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "30000")
        .create()
        .map_err(|e| failed(e.to_string()))?;
    Ok(Producer {
        producer,
        files,
        checked: Instant::now(),
    })
}

impl Sender for KafkaSender {
    fn send<'a>(&'a self, event: &'a CloudEvent) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let (attrs, body) = crate::binary_parts(event, "ce_");
            let mut headers = OwnedHeaders::new_with_capacity(attrs.len());
            for (name, value) in &attrs {
                headers = headers.insert(Header {
                    key: name.as_str(),
                    value: Some(value.as_bytes()),
                });
            }
            let key = match self.key {
                Key::Subject => event.subject.as_deref(),
                Key::Source => Some(event.source.as_str()),
                Key::Id => Some(event.id.as_str()),
                Key::Type => Some(event.ty.as_str()),
                Key::None => None,
            };
            let mut record = FutureRecord::<str, [u8]>::to(&self.topic)
                .payload(&body[..])
                .headers(headers);
            if let Some(k) = key {
                record = record.key(k);
            }
            self.producer()?
                .send(record, Timeout::After(Duration::from_secs(30)))
                .await
                .map(|_| ())
                .map_err(|(e, _)| DeliveryError::retryable(format!("Kafka produce: {e}")))
        })
    }
}
