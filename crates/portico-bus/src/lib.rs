//! Portico's event-bus watchers: `dispatchMechanism: NATS` publishes every CloudEvent to a
//! JetStream subject, `Kafka` produces it to a topic, each in the broker's own CloudEvents
//! binding (binary mode). They are [`portico::watcher::Sender`]s like the HTTP watcher, so the
//! outbox, retries and dead letters apply to them unchanged.
//!
//! The framework crate depends on no broker client; the `portico` binary registers
//! [`factory`] beside its built-in gateways.

pub mod coordination;
pub mod kafka;
pub mod nats;

use std::sync::Arc;

use portico::watcher::{BoxError, Sender, SenderFactory, Target};

/// Makes NATS JetStream and Kafka senders.
#[derive(Debug, Default)]
pub struct BusSenders;

impl SenderFactory for BusSenders {
    fn sender(&self, target: &Target) -> Option<Result<Arc<dyn Sender>, BoxError>> {
        match target {
            Target::Nats(n) => Some(Ok(Arc::new(nats::JetStreamSender::new(n.clone())))),
            Target::Kafka(k) => Some(
                kafka::KafkaSender::new(k)
                    .map(|s| Arc::new(s) as Arc<dyn Sender>)
                    .map_err(BoxError::from),
            ),
            _ => None,
        }
    }
}

/// The factory of NATS key-value coordination stores.
pub fn stores() -> Arc<dyn portico::coordination::StoreFactory> {
    Arc::new(coordination::NatsStores)
}

/// The factory of NATS JetStream and Kafka senders.
pub fn factory() -> Arc<dyn SenderFactory> {
    Arc::new(BusSenders)
}

/// The binary-mode attributes of `event` as `(name, value)` pairs with `prefix` (`ce-` for
/// NATS, `ce_` for Kafka), `content-type` from `datacontenttype`, and the data as the body.
pub fn binary_parts(
    event: &portico::cloudevents::CloudEvent,
    prefix: &str,
) -> (Vec<(String, String)>, bytes::Bytes) {
    let (headers, body) = portico::cloudevents::http::encode_binary(event);
    let mut out = Vec::with_capacity(headers.len());
    for (name, value) in &headers {
        let name = name.as_str();
        let Ok(value) = value.to_str() else { continue };
        let name = match name.strip_prefix("ce-") {
            Some(attr) => format!("{prefix}{attr}"),
            None => name.to_string(),
        };
        out.push((name, value.to_string()));
    }
    (out, body)
}
