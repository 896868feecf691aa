//! The built-in gateways of Portico. Each is one core-style [`portico::ConfigExecutor`],
//! written exactly the way a user writes theirs: read them as examples to copy.

pub mod calendar;

pub mod amqp;
mod broker;
pub mod kafka;
pub mod mqtt;
pub mod nats;
pub mod redis;

use std::sync::Arc;

use portico::SharedExecutor;

/// The types of the built-in gateways.
pub const BUILTIN_TYPES: &[&str] = &["amqp", "calendar", "kafka", "mqtt", "nats", "redis"];

/// The executor of built-in gateway `gateway_type`, if there is one.
pub fn builtin(gateway_type: &str) -> Option<SharedExecutor> {
    match gateway_type {
        "calendar" => Some(Arc::new(calendar::Calendar::default())),
        "amqp" => Some(Arc::new(amqp::Amqp)),
        "kafka" => Some(Arc::new(kafka::Kafka)),
        "mqtt" => Some(Arc::new(mqtt::Mqtt)),
        "nats" => Some(Arc::new(nats::Nats)),
        "redis" => Some(Arc::new(redis::Redis)),
        _ => None,
    }
}
