//! The raw event a configuration produces, before the transformer makes it a CloudEvent.
//!
//! An executor builds an [`Event`] from whatever it received (a tick, an HTTP body, a broker
//! message) and hands it to [`ConfigContext::dispatch`](crate::ConfigContext::dispatch). The
//! transformer adds what the gateway knows: id, source, type, subject, and the extensions.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;

/// One event of one configuration: payload bytes and what is known about them.
#[derive(Debug, Clone, Default)]
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
    /// The CloudEvent id, for a source whose events have one of their own that stays the same
    /// when the source sends the event again (a position in a log); the transformer makes a
    /// random UUID when `None`.
    pub id: Option<String>,
    /// The payload as [`Event::json`] wrote it, kept so that the transformer can tell the
    /// payload is still that JSON (same bytes: `Bytes` cannot change) and not check it again.
    written_json: Option<Bytes>,
}

/// Two events are equal when their payload, content type, time, extensions and id are.
impl PartialEq for Event {
    fn eq(&self, other: &Event) -> bool {
        self.payload == other.payload
            && self.content_type == other.content_type
            && self.time == other.time
            && self.extensions == other.extensions
            && self.id == other.id
    }
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
        Event::json_sized(value, 128)
    }

    /// [`Event::json`] into a buffer of `capacity` bytes to begin with: a payload whose size is
    /// known beforehand is written without growing the buffer.
    pub fn json_sized<T: Serialize + ?Sized>(
        value: &T,
        capacity: usize,
    ) -> Result<Event, serde_json::Error> {
        let mut out = Vec::with_capacity(capacity);
        serde_json::to_writer(&mut out, value)?;
        let payload = Bytes::from(out);
        Ok(Event {
            written_json: Some(payload.clone()),
            ..Event::new(payload).with_content_type("application/json")
        })
    }

    /// True when the payload is still the JSON that [`Event::json`] wrote (the field may have
    /// been replaced since): it need not be checked again.
    pub(crate) fn is_written_json(&self) -> bool {
        self.written_json
            .as_ref()
            .is_some_and(|w| w.as_ptr() == self.payload.as_ptr() && w.len() == self.payload.len())
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

    /// Sets the CloudEvent id (not empty), instead of a random one.
    pub fn with_id(mut self, id: impl Into<String>) -> Event {
        self.id = Some(id.into());
        self
    }

    /// Adds one extension.
    pub fn with_extension(mut self, name: impl Into<String>, value: impl Into<String>) -> Event {
        self.extensions.push((name.into(), value.into()));
        self
    }

    /// The same event with the W3C trace context it came with (a `traceparent` header, and
    /// `tracestate` if any), carried as the CloudEvents distributed tracing extension. Values
    /// that are not valid trace contexts are left out.
    pub fn with_trace_context(
        mut self,
        traceparent: Option<&str>,
        tracestate: Option<&str>,
    ) -> Event {
        if let Some(tp) = traceparent.filter(|tp| crate::trace::parse(tp, None).is_some()) {
            self.extensions
                .retain(|(k, _)| k != crate::trace::TRACEPARENT && k != crate::trace::TRACESTATE);
            self.extensions
                .push((crate::trace::TRACEPARENT.to_string(), tp.to_string()));
            if let Some(ts) = tracestate.filter(|ts| !ts.is_empty()) {
                self.extensions
                    .push((crate::trace::TRACESTATE.to_string(), ts.to_string()));
            }
        }
        self
    }

    /// The same event with the trace context of an HTTP request's `traceparent` and
    /// `tracestate` headers, if it has one.
    pub fn with_trace_headers(self, headers: &http::HeaderMap) -> Event {
        let get = |name| headers.get(name).and_then(|v| v.to_str().ok());
        self.with_trace_context(
            get(&crate::trace::TRACEPARENT_HEADER),
            get(&crate::trace::TRACESTATE_HEADER),
        )
    }

    /// The trace context the event carries, if any.
    pub(crate) fn trace_context(&self) -> Option<opentelemetry::Context> {
        let get = |name: &str| {
            self.extensions
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        crate::trace::parse(
            get(crate::trace::TRACEPARENT)?,
            get(crate::trace::TRACESTATE),
        )
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
