//! The raw event a configuration produces, before the transformer makes it a CloudEvent.
//!
//! An executor builds an [`Event`] from whatever it received (a tick, an HTTP body, a broker
//! message) and hands it to [`ConfigContext::dispatch`](crate::ConfigContext::dispatch). The
//! transformer adds what the gateway knows: id, source, type, subject, and the extensions.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;

/// One event of one configuration: payload bytes and what is known about them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Event {
    /// The payload, passed through untouched.
    pub payload: Bytes,
    /// What the payload is (`application/json`, …); `None` when unknown (never guessed).
    pub content_type: Option<String>,
    /// When the event happened; the transformer uses "now" when `None`.
    pub time: Option<DateTime<Utc>>,
    /// Transport metadata to carry as CloudEvent extensions (name → value). Names are
    /// made valid by the transformer (lower-case a–z and 0–9, at most 20 characters).
    pub extensions: Vec<(String, String)>,
}

impl Event {
    /// An event with this payload and nothing else known about it.
    pub fn new(payload: impl Into<Bytes>) -> Event {
        Event {
            payload: payload.into(),
            ..Event::default()
        }
    }

    /// An `application/json` event holding `value` serialized.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Event, serde_json::Error> {
        Ok(Event::new(serde_json::to_vec(value)?).with_content_type("application/json"))
    }

    /// Sets what the payload is.
    pub fn with_content_type(mut self, content_type: impl Into<String>) -> Event {
        self.content_type = Some(content_type.into());
        self
    }

    /// Sets when the event happened.
    pub fn with_time(mut self, time: DateTime<Utc>) -> Event {
        self.time = Some(time);
        self
    }

    /// Adds one extension.
    pub fn with_extension(mut self, name: impl Into<String>, value: impl Into<String>) -> Event {
        self.extensions.push((name.into(), value.into()));
        self
    }
}

impl From<Bytes> for Event {
    fn from(payload: Bytes) -> Event {
        Event::new(payload)
    }
}

impl From<Vec<u8>> for Event {
    fn from(payload: Vec<u8>) -> Event {
        Event::new(payload)
    }
}

impl From<String> for Event {
    fn from(payload: String) -> Event {
        Event::new(payload)
    }
}

impl From<&'static str> for Event {
    fn from(payload: &'static str) -> Event {
        Event::new(Bytes::from_static(payload.as_bytes()))
    }
}

impl From<&'static [u8]> for Event {
    fn from(payload: &'static [u8]) -> Event {
        Event::new(Bytes::from_static(payload))
    }
}
