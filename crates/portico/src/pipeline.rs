//! The pipeline: where every source hands its events over. A raw event of a configuration
//! becomes a CloudEvent (the transformer below), then the dispatcher accepts it for every
//! watcher, and only then does the source hear "accepted": the moment it may acknowledge its
//! own sender.
//!
//! Raw events come in one way, [`Pipeline::submit`]: core executors reach it through their
//! [`Intake`] (held by their `ConfigContext`), the gRPC and HTTP processors through the same
//! call. What differs between sources is a parameter: how long the source may wait for room
//! ([`Wait`]) and when it acknowledges its messages ([`Ack`]). CloudEvents posted to the ingest
//! API, already made, come in through [`Pipeline::submit_all`], in one outbox append per
//! request.
//!
//! The CloudEvent every raw event becomes:
//!
//! | attribute | value |
//! |---|---|
//! | `id` | a fresh UUID v4, kept on every retry |
//! | `source` | `<gateway name>/<configuration key>` |
//! | `type` | `spec.type` |
//! | `subject` | the configuration key |
//! | `time` | when the event happened (now, when the executor does not say) |
//! | `datacontenttype` | what the executor says the payload is; never a guess |
//! | `eventtypeversion` | `spec.eventVersion` |
//!
//! Knative's `K_CE_OVERRIDES` extensions are set on every event last, so they win.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::cloudevents::{CloudEvent, Data, ExtensionName, ExtensionValue, is_json_content_type};
use crate::dispatch::{Ack, Delivered, Dispatcher};
use crate::error::{Admission, DispatchError};
use crate::event::Event;
use crate::metrics::{Metrics, RejectReason, SrcMetrics};
use crate::policy::{Gate, Policies};
use crate::trace::Spanned;
use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;

/// How long HTTP callers (ingest API, webhooks, the HTTP style's `/event`) wait for room by
/// default before they get 503.
pub(crate) const DEFAULT_ADMISSION_WAIT: Duration = Duration::from_millis(500);

/// How long a source waits for room when the gateway is full.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Wait {
    /// What the delivery mode says: in `atLeastOnce` and `ackAfterDelivery`, until there is
    /// room or the configuration stops; in `atMostOnce`, not at all (the event is refused with
    /// [`DispatchError::Full`], counted, and the source drops it).
    #[default]
    ByMode,
    /// At most the gateway's admission wait (`--admission-wait`), then
    /// [`DispatchError::Full`]: for a source that can tell its caller to retry (an HTTP
    /// caller gets 503 and `Retry-After`).
    Briefly,
    /// Until there is room or the configuration stops, in every mode: for a source whose
    /// producer can be slowed down without loss (a gRPC stream, with its flow control).
    UntilStopped,
}

/// How an event is handed over: how long the source waits for room, and when it may
/// acknowledge its own sender.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Submit {
    /// How long the source waits for room.
    pub wait: Wait,
    /// What the returned [`Delivered`] waits for.
    pub ack: Ack,
}

impl Submit {
    /// The submission of an HTTP caller: [`Wait::Briefly`].
    pub const BRIEFLY: Submit = Submit {
        wait: Wait::Briefly,
        ack: Ack::OnAcceptance,
    };
    /// The submission of a broker message acknowledged one by one: [`Ack::AfterDelivery`].
    pub const ACK_AFTER_DELIVERY: Submit = Submit {
        wait: Wait::ByMode,
        ack: Ack::AfterDelivery,
    };
    /// The submission of a flow-controlled producer: [`Wait::UntilStopped`].
    pub const FLOW_CONTROLLED: Submit = Submit {
        wait: Wait::UntilStopped,
        ack: Ack::OnAcceptance,
    };
}

/// Transformer and dispatcher of one gateway.
pub(crate) struct Pipeline {
    transformer: Transformer,
    dispatcher: Dispatcher,
    metrics: Arc<Metrics>,
    /// Milliseconds HTTP callers wait for room before 503 (0: refused at once).
    admission_wait_ms: AtomicU64,
    /// Every accepted event in the JSON event format, for whoever follows them live (`GET
    /// /events`); written only while someone does.
    tail: broadcast::Sender<Arc<str>>,
    /// How many follow them: read for every event, so an atomic rather than the channel's
    /// own count (behind a lock).
    followers: Arc<AtomicUsize>,
    /// The configurations' own filters and rate limits.
    policies: Policies,
}

/// A follower of the accepted events ([`Pipeline::follow`]); counted while it lives.
pub(crate) struct Follower {
    /// The events.
    pub rx: broadcast::Receiver<Arc<str>>,
    followers: Arc<AtomicUsize>,
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.followers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Accepted events kept for a follower that reads slower than they come; past it, the
/// follower is told how many it missed.
const TAIL_CAPACITY: usize = 1024;

impl Pipeline {
    /// A pipeline from its parts.
    pub(crate) fn new(
        transformer: Transformer,
        dispatcher: Dispatcher,
        metrics: Arc<Metrics>,
    ) -> Arc<Pipeline> {
        Arc::new(Pipeline {
            transformer,
            dispatcher,
            metrics,
            admission_wait_ms: AtomicU64::new(DEFAULT_ADMISSION_WAIT.as_millis() as u64),
            tail: broadcast::channel(TAIL_CAPACITY).0,
            followers: Arc::default(),
            policies: Policies::default(),
        })
    }

    /// Sets how long HTTP callers wait for room before they get 503 (zero: at once).
    pub(crate) fn set_admission_wait(&self, wait: Duration) {
        self.admission_wait_ms.store(
            wait.as_millis().min(u64::MAX as u128) as u64,
            Ordering::Relaxed,
        );
    }

    /// The gateway's metrics.
    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The configurations' filters and rate limits.
    pub(crate) fn policies(&self) -> &Policies {
        &self.policies
    }

    /// Hands a raw event of configuration `src` over as `how` says: its configuration's filter
    /// and rate limit first, then [`Pipeline::submit`]. A filtered event is taken: what it
    /// returns is done at once. A wait ends when `stop`, if any, is cancelled.
    pub(crate) async fn submit_raw(
        &self,
        src: &SrcMetrics,
        event: Event,
        how: Submit,
        stop: Option<&CancellationToken>,
    ) -> Result<Delivered, DispatchError> {
        if self.gate(src, &event, how.wait, stop).await? == Gate::Filtered {
            return Ok(Delivered::now());
        }
        let admission = self.admission(how.wait, stop);
        self.submit(src, event, admission, how.ack).await
    }

    /// Applies configuration `src`'s filter and rate limit to a raw event before it is
    /// submitted, waiting for the limit as `wait` says; counts what it filtered, refused and
    /// waited. [`Gate::Filtered`]: the event is taken and goes no further.
    async fn gate(
        &self,
        src: &SrcMetrics,
        event: &Event,
        wait: Wait,
        stop: Option<&CancellationToken>,
    ) -> Result<Gate, DispatchError> {
        // An HTTP caller waits at most the admission wait; any other source until the limit
        // lets the event through: a rate limit slows a source, it never drops its events.
        let at_most = (wait == Wait::Briefly)
            .then(|| Duration::from_millis(self.admission_wait_ms.load(Ordering::Relaxed)));
        match self.policies.gate(&src.src, event, at_most, stop).await {
            Ok((gate, waited)) => {
                if gate == Gate::Filtered {
                    src.received.inc();
                    self.metrics.reject(src, RejectReason::Filtered);
                }
                if !waited.is_zero() {
                    self.metrics.count_limited(src, waited.as_secs_f64());
                }
                Ok(gate)
            }
            Err(e) => {
                src.received.inc();
                self.metrics.reject(src, RejectReason::of(&e));
                Err(e)
            }
        }
    }

    /// The dispatcher.
    pub(crate) fn dispatcher(&self) -> &Dispatcher {
        &self.dispatcher
    }

    /// Follows every event accepted from now on, in the JSON event format.
    pub(crate) fn follow(&self) -> Follower {
        self.followers.fetch_add(1, Ordering::Relaxed);
        Follower {
            rx: self.tail.subscribe(),
            followers: self.followers.clone(),
        }
    }

    /// What `wait` means in this gateway, for a source that stops with `stop`.
    pub(crate) fn admission<'a>(
        &self,
        wait: Wait,
        stop: Option<&'a CancellationToken>,
    ) -> Admission<'a> {
        match wait {
            Wait::ByMode if self.dispatcher.never_waits() => Admission::NoWait,
            Wait::ByMode | Wait::UntilStopped => Admission::Wait(stop),
            Wait::Briefly => match self.admission_wait_ms.load(Ordering::Relaxed) {
                0 => Admission::NoWait,
                ms => Admission::Until(tokio::time::Instant::now() + Duration::from_millis(ms)),
            },
        }
    }

    /// Hands `event` of configuration `src` over: makes it a CloudEvent, then waits (as
    /// `admission` says) until every watcher's queue took it, and in `atLeastOnce` until it is
    /// in the outbox on disk. What it returns resolves once the event is delivered when `ack`
    /// is [`Ack::AfterDelivery`] in `ackAfterDelivery`, at once otherwise. Every refusal is
    /// counted by its reason.
    pub(crate) async fn submit(
        &self,
        src: &SrcMetrics,
        event: Event,
        admission: Admission<'_>,
        ack: Ack,
    ) -> Result<Delivered, DispatchError> {
        let (event, receive) = self.receive(src, event)?;
        let followed = self.followed(&event);
        let append = self.append_span(&receive);
        // Shared from here on (the watchers' queues hold it), so that it is not moved again
        // by value down the calls that queue it.
        let accepted = self
            .dispatcher
            .accept(Arc::new(event), admission, Some(src.delivery.clone()), ack)
            .await;
        self.settle(src, accepted.as_ref().err(), followed, &receive, &append);
        accepted
    }

    /// [`Pipeline::submit`] for CloudEvents posted together (a batch), each counted under its
    /// own source: accepted in their order, those that have room written to the outbox
    /// together. Gives how many were accepted (a prefix of
    /// `events`) and why the next one was not, if one was not.
    pub(crate) async fn submit_all(
        &self,
        events: Vec<CloudEvent>,
        admission: Admission<'_>,
    ) -> (usize, Option<DispatchError>) {
        let mut made = Vec::with_capacity(events.len());
        let mut own = Vec::with_capacity(events.len());
        for event in events {
            let src = self.metrics.for_posted_src(&event.source);
            let (event, receive) = self.receive_made(&src, event);
            let followed = self.followed(&event);
            let append = self.append_span(&receive);
            made.push((event, Some(src.delivery.clone())));
            own.push((src, followed, receive, append));
        }
        let (accepted, refused) = self.dispatcher.accept_all(made, admission).await;
        for (i, (src, followed, receive, append)) in own.into_iter().enumerate() {
            let failed = if i < accepted { None } else { refused.as_ref() };
            self.settle(&src, failed, followed, &receive, &append);
        }
        (accepted, refused)
    }

    /// Counts `event` as received and makes it a CloudEvent with a trace context; the
    /// "receive" span covers its way in.
    fn receive(
        &self,
        src: &SrcMetrics,
        event: Event,
    ) -> Result<(CloudEvent, Spanned), DispatchError> {
        src.received.inc();
        // Read only when spans are recorded: otherwise nothing is a child of it.
        let parent = crate::trace::enabled()
            .then(|| event.trace_context())
            .flatten();
        let receive = self.receive_span(src, parent.as_ref());
        let transform = receive.child("transform");
        match self.transformer.transform(&src.src, event) {
            Ok(mut ce) => {
                src.transformed.inc();
                self.traced(&mut ce, &receive);
                Ok((ce, receive))
            }
            Err(e) => {
                transform.fail(&e.to_string());
                receive.fail(&e.to_string());
                self.metrics.reject(src, RejectReason::of(&e));
                Err(e)
            }
        }
    }

    /// [`Pipeline::receive`] of a CloudEvent already made, which cannot fail.
    fn receive_made(&self, src: &SrcMetrics, mut ce: CloudEvent) -> (CloudEvent, Spanned) {
        src.received.inc();
        let parent = crate::trace::enabled()
            .then(|| crate::trace::of_event(&ce))
            .flatten();
        let receive = self.receive_span(src, parent.as_ref());
        self.traced(&mut ce, &receive);
        (ce, receive)
    }

    fn receive_span(&self, src: &SrcMetrics, parent: Option<&opentelemetry::Context>) -> Spanned {
        Spanned::start("receive", SpanKind::Server, parent, || {
            vec![KeyValue::new("portico.src", src.src.to_string())]
        })
    }

    /// Gives `event` the trace context of `receive` if it has none.
    fn traced(&self, event: &mut CloudEvent, receive: &Spanned) {
        crate::trace::ensure_context(event, receive);
        if crate::trace::enabled() {
            receive.set(KeyValue::new("cloudevents.event_id", event.id.clone()));
        }
    }

    /// `event` in the JSON event format for the followers, while there are some: the hot path
    /// pays a load.
    fn followed(&self, event: &CloudEvent) -> Option<Arc<str>> {
        (self.followers.load(Ordering::Relaxed) > 0)
            .then(|| Arc::<str>::from(String::from_utf8_lossy(&event.to_json())))
    }

    fn append_span(&self, receive: &Spanned) -> Spanned {
        receive.child(if self.dispatcher.has_outbox() {
            "outbox append"
        } else {
            "enqueue"
        })
    }

    /// After the dispatcher accepted an event (`failed`: or refused it): the followers see it,
    /// or the refusal is counted by its reason and ends its spans.
    fn settle(
        &self,
        src: &SrcMetrics,
        failed: Option<&DispatchError>,
        followed: Option<Arc<str>>,
        receive: &Spanned,
        append: &Spanned,
    ) {
        match failed {
            None => {
                if let Some(json) = followed {
                    let _ = self.tail.send(json);
                }
            }
            Some(e) => {
                append.fail(&e.to_string());
                receive.fail(&e.to_string());
                self.metrics.reject(src, RejectReason::of(e))
            }
        }
    }
}

/// What a configuration holds to hand its events over: the gateway's pipeline and the
/// configuration's own counters, fetched once.
#[derive(Clone)]
pub(crate) struct Intake {
    pipeline: Arc<Pipeline>,
    src: SrcMetrics,
}

impl Intake {
    /// The intake of configuration `src`.
    pub(crate) fn new(pipeline: &Arc<Pipeline>, src: &str) -> Intake {
        Intake {
            src: pipeline.metrics.for_src(src),
            pipeline: pipeline.clone(),
        }
    }

    /// Submits `event` as `how` says; a wait for room ends when `stop` is cancelled.
    pub(crate) async fn submit(
        &self,
        event: Event,
        how: Submit,
        stop: &CancellationToken,
    ) -> Result<Delivered, DispatchError> {
        self.pipeline
            .submit_raw(&self.src, event, how, Some(stop))
            .await
    }

    /// Counts `n` events of this configuration refused for `reason`.
    pub(crate) fn count_rejected(&self, reason: RejectReason, n: u64) {
        self.pipeline.metrics.reject_many(&self.src, reason, n);
    }
}

fn invalid(e: impl std::fmt::Display) -> DispatchError {
    DispatchError::Invalid(e.to_string())
}

/// Turns raw events into CloudEvents for one gateway.
#[derive(Debug, Clone)]
pub(crate) struct Transformer {
    gateway: String,
    event_type: String,
    event_version: ExtensionValue,
    overrides: Vec<(ExtensionName, ExtensionValue)>,
    /// Why the attributes every event gets from the gateway (type, version, overrides) do not
    /// make a valid event, if they do not: checked once, not for every event.
    fixed_invalid: Option<String>,
}

/// The name of the extension that carries `spec.eventVersion`.
const EVENT_TYPE_VERSION: ExtensionName = ExtensionName::known("eventtypeversion");

impl Transformer {
    /// A transformer for gateway `gateway` of type `event_type` and version `event_version`.
    pub(crate) fn new(gateway: &str, event_type: &str, event_version: &str) -> Transformer {
        Transformer {
            gateway: gateway.to_string(),
            event_type: event_type.to_string(),
            event_version: ExtensionValue::String(event_version.to_string()),
            overrides: Vec::new(),
            fixed_invalid: None,
        }
        .checked()
    }

    /// Sets extensions on every event, after all others (`K_CE_OVERRIDES`).
    pub(crate) fn with_overrides(
        mut self,
        overrides: Vec<(ExtensionName, ExtensionValue)>,
    ) -> Self {
        self.overrides = overrides;
        self.checked()
    }

    /// Checks the attributes that are the same for every event: an event with them alone
    /// (and a valid id, source and subject) must be valid.
    fn checked(mut self) -> Self {
        let mut probe = CloudEvent::new("probe", "probe/probe", self.event_type.clone());
        probe
            .extensions
            .insert(EVENT_TYPE_VERSION, self.event_version.clone());
        for (name, value) in &self.overrides {
            probe.extensions.insert(name.clone(), value.clone());
        }
        self.fixed_invalid = probe.validate_attributes().err().map(|e| e.to_string());
        self
    }

    /// The CloudEvent of `event`, produced by configuration `src`.
    pub(crate) fn transform(&self, src: &str, event: Event) -> Result<CloudEvent, DispatchError> {
        if let Some(why) = &self.fixed_invalid {
            return Err(DispatchError::Invalid(why.clone()));
        }
        let written_json = event.is_written_json();
        let mut extensions = BTreeMap::new();
        extensions.insert(EVENT_TYPE_VERSION, self.event_version.clone());
        for (name, value) in event.extensions {
            let Some(valid) = ExtensionName::new(&name)
                .ok()
                .or_else(|| ExtensionName::sanitize(&name))
            else {
                return Err(DispatchError::Invalid(format!(
                    "extension name `{name}` cannot be made valid (a–z and 0–9 only)"
                )));
            };
            let value = ExtensionValue::String(value);
            value.check(&valid).map_err(invalid)?;
            extensions.insert(valid, value);
        }
        for (name, value) in &self.overrides {
            extensions.insert(name.clone(), value.clone());
        }
        let data = match event.content_type.as_deref() {
            // JSON that serde_json wrote is one JSON value without surrounding whitespace.
            Some(ct) if written_json && is_json_content_type(ct) => Data::Json(event.payload),
            ct => Data::from_payload(event.payload, ct),
        };
        // Written straight into their strings: `to_string` and `format!` go through the
        // formatting machinery (about 600 instructions of an event's 55,000, callgrind).
        let mut id = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let mut source = String::with_capacity(self.gateway.len() + 1 + src.len());
        source.push_str(&self.gateway);
        source.push('/');
        source.push_str(src);
        let id = match event.id {
            Some(id) if id.is_empty() => {
                return Err(DispatchError::Invalid("the event's id is empty".into()));
            }
            Some(id) => id,
            None => uuid::Uuid::new_v4()
                .hyphenated()
                .encode_lower(&mut id)
                .to_owned(),
        };
        let ce = CloudEvent {
            id,
            source,
            ty: self.event_type.clone(),
            datacontenttype: event.content_type,
            dataschema: None,
            subject: Some(src.to_string()),
            time: Some(event.time.unwrap_or_else(Utc::now)),
            extensions,
            data: Some(data),
        };
        // A key or content type from outside (the ingest API) may not make a valid event. The
        // id is a UUID or the source's own (checked not empty above), and the rest was checked in `checked` (the event's own extensions above).
        ce.validate_source_subject_content_type().map_err(invalid)?;
        Ok(ce)
    }
}

/// `K_CE_OVERRIDES` is not what Knative sets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct BadOverrides(String);

/// Parses `K_CE_OVERRIDES` (`{"extensions": {"name": value, …}}`).
pub(crate) fn parse_overrides(
    text: &str,
) -> Result<Vec<(ExtensionName, ExtensionValue)>, BadOverrides> {
    #[derive(serde::Deserialize)]
    struct Overrides {
        #[serde(default)]
        extensions: BTreeMap<String, serde_json::Value>,
    }
    let o: Overrides = serde_json::from_str(text).map_err(|e| {
        BadOverrides(format!(
            "K_CE_OVERRIDES is not `{{\"extensions\": {{…}}}}` JSON: {e}"
        ))
    })?;
    o.extensions
        .into_iter()
        .map(|(name, value)| {
            let n = ExtensionName::new(&name)
                .map_err(|e| BadOverrides(format!("K_CE_OVERRIDES: extension `{name}`: {e}")))?;
            let v = match value {
                serde_json::Value::String(s) => ExtensionValue::String(s),
                serde_json::Value::Bool(b) => ExtensionValue::Boolean(b),
                serde_json::Value::Number(n) if n.as_i64().is_some() => {
                    ExtensionValue::Integer(n.as_i64().unwrap_or_default())
                }
                other => ExtensionValue::String(other.to_string()),
            };
            Ok((n, v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn the_extension_names_the_gateway_sets_are_valid() {
        for name in [
            EVENT_TYPE_VERSION,
            ExtensionName::known(crate::trace::TRACEPARENT),
            ExtensionName::known(crate::trace::TRACESTATE),
        ] {
            assert_eq!(ExtensionName::new(name.as_str()).unwrap(), name);
        }
    }

    #[test]
    fn builds_the_attributes_of_spec_6() {
        let t = Transformer::new("cal", "calendar", "1.0");
        let ev = Event::json(&serde_json::json!({"a": 1}))
            .unwrap()
            .with_extension("Routing-Key", "x.y");
        let a = t.transform("every2s", ev.clone()).unwrap();
        let b = t.transform("every2s", ev).unwrap();
        assert_ne!(a.id, b.id);
        assert_eq!(a.source, "cal/every2s");
        assert_eq!(a.ty, "calendar");
        assert_eq!(a.subject.as_deref(), Some("every2s"));
        assert_eq!(a.datacontenttype.as_deref(), Some("application/json"));
        assert!(a.time.is_some());
        assert!(matches!(a.data, Some(Data::Json(_))));
        let ext: BTreeMap<String, ExtensionValue> = a
            .extensions
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.clone()))
            .collect();
        assert_eq!(
            ext.get("eventtypeversion"),
            Some(&ExtensionValue::String("1.0".into()))
        );
        assert_eq!(
            ext.get("routingkey"),
            Some(&ExtensionValue::String("x.y".into()))
        );
        a.validate().unwrap();
    }

    #[test]
    fn an_id_of_the_source_is_kept_and_must_not_be_empty() {
        let t = Transformer::new("pg", "postgres", "1.0");
        let ev = Event::new(Bytes::from_static(b"x")).with_id("0/16B3748:0");
        assert_eq!(t.transform("rows", ev.clone()).unwrap().id, "0/16B3748:0");
        assert_eq!(t.transform("rows", ev).unwrap().id, "0/16B3748:0");
        let e = t
            .transform("rows", Event::new(Bytes::from_static(b"x")).with_id(""))
            .unwrap_err();
        assert!(e.to_string().contains("id is empty"), "{e}");
    }

    #[test]
    fn a_payload_without_content_type_is_not_guessed() {
        let t = Transformer::new("g", "t", "1.0");
        let a = t.transform("s", Event::new(&b"{}"[..])).unwrap();
        assert_eq!(a.datacontenttype, None);
        assert!(matches!(a.data, Some(Data::Binary(_))));
    }

    #[test]
    fn an_event_that_cannot_be_valid_is_refused() {
        let t = Transformer::new("g", "t", "1.0");
        let e = t
            .transform("has space", Event::new(&b"x"[..]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("source"), "{e}");
        let e = t
            .transform("s", Event::new(&b"x"[..]).with_content_type("not a type"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("datacontenttype"), "{e}");
    }

    #[test]
    fn what_the_gateway_sets_is_checked_once_and_refuses_every_event() {
        // Checked when the transformer is made, not per event, with the same errors.
        let e = Transformer::new("g", "", "1.0")
            .transform("s", Event::new(&b"x"[..]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("type"), "{e}");
        let e = Transformer::new("g", "t", "bad\u{1}version")
            .transform("s", Event::new(&b"x"[..]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("eventtypeversion"), "{e}");
        let big = vec![(
            ExtensionName::new("n").unwrap(),
            ExtensionValue::Integer(i64::from(i32::MAX) + 1),
        )];
        let t = Transformer::new("g", "t", "1.0").with_overrides(big);
        assert!(t.transform("s", Event::new(&b"x"[..])).is_err());
        // What comes with the event is checked on every event.
        let t = Transformer::new("g", "t", "1.0");
        let e = t
            .transform(
                "s",
                Event::new(&b"x"[..]).with_extension("routing-key", "a\u{0}b"),
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("routingkey"), "{e}");
        assert!(t.transform("s", Event::new(&b"x"[..])).is_ok());
    }

    #[test]
    fn overrides_win() {
        let o =
            parse_overrides(r#"{"extensions":{"eventtypeversion":"9","team":"a","n":3}}"#).unwrap();
        let t = Transformer::new("g", "t", "1.0").with_overrides(o);
        let a = t.transform("s", Event::new(&b"x"[..])).unwrap();
        let get = |n: &str| {
            a.extensions
                .iter()
                .find(|(k, _)| k.as_str() == n)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(
            get("eventtypeversion"),
            Some(ExtensionValue::String("9".into()))
        );
        assert_eq!(get("team"), Some(ExtensionValue::String("a".into())));
        assert_eq!(get("n"), Some(ExtensionValue::Integer(3)));
        assert!(parse_overrides("{").is_err());
        assert!(parse_overrides(r#"{"extensions":{"Bad_Name":"x"}}"#).is_err());
    }

    #[test]
    fn json_the_event_wrote_is_taken_as_is_a_replaced_payload_is_checked() {
        let t = Transformer::new("g", "t", "1.0");
        let written = Event::json_sized(&serde_json::json!({"a": [1, 2]}), 8).unwrap();
        let ce = t.transform("s", written.clone()).unwrap();
        assert_eq!(
            ce.data,
            Some(Data::Json(Bytes::from_static(br#"{"a":[1,2]}"#)))
        );
        // The public field replaced after the event was written: checked like any payload.
        let mut replaced = written.clone();
        replaced.payload = Bytes::from_static(b"{not json");
        assert_eq!(
            replaced,
            Event::new(&b"{not json"[..]).with_content_type("application/json")
        );
        let ce = t.transform("s", replaced).unwrap();
        assert_eq!(
            ce.data,
            Some(Data::Binary(Bytes::from_static(b"{not json")))
        );
        let mut spaced = written;
        spaced.payload = Bytes::from_static(b" [1] ");
        let ce = t.transform("s", spaced).unwrap();
        assert_eq!(ce.data, Some(Data::Json(Bytes::from_static(b"[1]"))));
    }
}
