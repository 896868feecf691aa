//! Portico's event-bus watchers (SPEC §7): `dispatchMechanism: NATS` publishes every CloudEvent
//! to a JetStream subject, `Kafka` produces it to a topic, each in the broker's own CloudEvents
//! binding (binary mode). They are [`portico::dispatch::Sender`]s like the HTTP watcher, so the
//! outbox, retries and dead letters apply to them unchanged.
//!
//! The framework crate depends on no broker client (ARCHITECTURE.md); the `portico` binary
//! registers [`factory`] in its run options, and so can a user's own gateway binary.

pub mod kafka;
pub mod nats;

use std::sync::Arc;

use portico::dispatch::watchers::Target;
use portico::dispatch::{Sender, SenderFactory};

/// Makes NATS JetStream and Kafka senders.
#[derive(Debug, Default)]
pub struct BusSenders;

impl SenderFactory for BusSenders {
    fn sender(&self, target: &Target) -> Option<Result<Arc<dyn Sender>, String>> {
        match target {
            Target::Nats(n) => Some(Ok(Arc::new(nats::JetStreamSender::new(n.clone())))),
            Target::Kafka(k) => {
                Some(kafka::KafkaSender::new(k).map(|s| Arc::new(s) as Arc<dyn Sender>))
            }
            _ => None,
        }
    }
}

/// The factory to put in `RunOptions::senders`.
pub fn factory() -> portico::runtime::SenderFactories {
    portico::runtime::SenderFactories(Some(Arc::new(BusSenders)))
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
