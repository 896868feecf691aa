//! Traces: where an event came from and what became of it, with OpenTelemetry.
//!
//! Every event carries the W3C trace context in the CloudEvents distributed tracing extension
//! (`traceparent`, `tracestate`). A context that arrives with the event (the `traceparent`
//! header of a webhook or ingest request, a broker message's header, a posted CloudEvent's
//! extension) is kept as it is: in a multi-hop transmission the extension carries the trace
//! the event started in. An event that arrives without one gets a new one.
//!
//! When `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set,
//! Portico also records spans and exports them with OTLP, following the OpenTelemetry SDK's
//! environment variables (`OTEL_EXPORTER_OTLP_PROTOCOL`: `grpc` or `http/protobuf`,
//! `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`, `OTEL_BSP_SCHEDULE_DELAY`,
//! `OTEL_BSP_MAX_QUEUE_SIZE`, `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`, `OTEL_SDK_DISABLED`):
//! - `receive` (a server span, child of the context the event came with): the event entering
//!   the pipeline, with its children `transform` and `outbox append` (`enqueue` when the
//!   gateway keeps no outbox);
//! - `deliver` (a client span, child of the event's `traceparent`): one per delivery attempt,
//!   whose context goes to an HTTP watcher in the `traceparent` header (the event's own
//!   context goes as its `ce-traceparent` attribute).
//!
//! Spans wait in a bounded queue and are exported in batches by a task of the gateway's
//! runtime; what the queue cannot hold or the collector does not take is dropped and counted
//! (`portico_spans_exported_total`, `portico_spans_dropped_total`), never waited for.

use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{
    SpanContext, SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, SpanData, SpanExporter as _};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;

use crate::cloudevents::{CloudEvent, ExtensionName, ExtensionValue};
use crate::ratelog::Throttle;

/// The extension (and header) names of the W3C trace context.
pub(crate) const TRACEPARENT: &str = "traceparent";
/// See [`TRACEPARENT`].
pub(crate) const TRACESTATE: &str = "tracestate";
/// [`TRACEPARENT`] as a header name, made once: a lookup by text parses the name each time.
pub(crate) static TRACEPARENT_HEADER: http::HeaderName = http::HeaderName::from_static(TRACEPARENT);
/// [`TRACESTATE`] as a header name.
pub(crate) static TRACESTATE_HEADER: http::HeaderName = http::HeaderName::from_static(TRACESTATE);

/// The process's exporting tracer, once started.
struct Tracing {
    tracer: SdkTracer,
    provider: SdkTracerProvider,
    /// Asks the export task to send what it holds and end.
    flush: tokio::sync::mpsc::Sender<tokio::sync::oneshot::Sender<()>>,
}

static TRACING: OnceLock<Tracing> = OnceLock::new();

/// Spans exported and dropped, by every gateway of the process.
#[derive(Clone, Default, Debug)]
pub(crate) struct SpanCounters {
    /// Spans the collector took.
    pub exported: Counter,
    /// Spans dropped: the queue was full, or the collector failed or refused them.
    pub dropped: Counter,
}

/// The process's span counters (registered in every gateway's metrics).
pub(crate) fn counters() -> &'static SpanCounters {
    static COUNTERS: OnceLock<SpanCounters> = OnceLock::new();
    COUNTERS.get_or_init(SpanCounters::default)
}

/// Why spans cannot be exported as the environment says.
#[derive(Debug, thiserror::Error)]
#[error("OpenTelemetry: {0}")]
pub(crate) struct TraceSetupError(String);

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn env_number(name: &str, default: u64) -> Result<u64, TraceSetupError> {
    match env(name) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| TraceSetupError(format!("{name} is `{v}`: expected a whole number"))),
    }
}

/// Starts exporting spans when the environment asks for it (an OTLP endpoint is set and
/// `OTEL_SDK_DISABLED` is not `true`); needs a Tokio runtime. Returns whether it did. The
/// resource says `service.name` `portico` unless `OTEL_SERVICE_NAME` says otherwise, and
/// the gateway's name and namespace.
pub(crate) fn start_from_env(gateway: &str, namespace: &str) -> Result<bool, TraceSetupError> {
    let endpoint = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or(env("OTEL_EXPORTER_OTLP_ENDPOINT"));
    let disabled = env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if endpoint.is_none() || disabled || TRACING.get().is_some() {
        return Ok(false);
    }
    let delay = Duration::from_millis(env_number("OTEL_BSP_SCHEDULE_DELAY", 5000)?);
    let queue = env_number("OTEL_BSP_MAX_QUEUE_SIZE", 2048)?.max(1) as usize;
    let batch = env_number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512)?.max(1) as usize;
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .build()
        .map_err(|e| TraceSetupError(e.to_string()))?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if env("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("portico");
    }
    let resource = resource
        .with_attributes([
            KeyValue::new("portico.gateway", gateway.to_string()),
            KeyValue::new("k8s.namespace.name", namespace.to_string()),
        ])
        .build();
    exporter.set_resource(&resource);
    let (tx, rx) = mpsc::channel(queue);
    let (flush, flushes) = mpsc::channel(1);
    tokio::spawn(export(exporter, rx, flushes, delay, batch));
    let provider = SdkTracerProvider::builder()
        .with_span_processor(Queue { tx })
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("portico");
    let _ = TRACING.set(Tracing {
        tracer,
        provider,
        flush,
    });
    Ok(true)
}

/// Exports what is left and stops exporting, waiting at most `timeout`.
pub(crate) async fn flush(timeout: Duration) {
    let Some(t) = TRACING.get() else { return };
    let (done, finished) = tokio::sync::oneshot::channel();
    if t.flush.send(done).await.is_ok() {
        let _ = tokio::time::timeout(timeout, finished).await;
    }
    let _ = t.provider.force_flush();
}

/// Hands finished spans to the export task without ever waiting.
#[derive(Debug)]
struct Queue {
    tx: mpsc::Sender<SpanData>,
}

impl opentelemetry_sdk::trace::SpanProcessor for Queue {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if self.tx.try_send(span).is_err() {
            counters().dropped.inc();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// The export task: a batch when it is full or `delay` after its first span.
async fn export(
    exporter: opentelemetry_otlp::SpanExporter,
    mut spans: mpsc::Receiver<SpanData>,
    mut flushes: mpsc::Receiver<tokio::sync::oneshot::Sender<()>>,
    delay: Duration,
    max: usize,
) {
    let mut batch = Vec::with_capacity(max);
    loop {
        let mut flushed = None;
        tokio::select! {
            first = spans.recv() => match first {
                Some(span) => batch.push(span),
                None => return,
            },
            f = flushes.recv() => flushed = f,
        }
        if flushed.is_none() {
            let deadline = tokio::time::sleep(delay);
            tokio::pin!(deadline);
            while batch.len() < max {
                tokio::select! {
                    span = spans.recv() => match span {
                        Some(span) => batch.push(span),
                        None => break,
                    },
                    _ = &mut deadline => break,
                    f = flushes.recv() => {
                        flushed = f;
                        break;
                    }
                }
            }
        }
        if flushed.is_some() {
            while let Ok(span) = spans.try_recv() {
                batch.push(span);
            }
        }
        for chunk in std::mem::take(&mut batch).chunks(max) {
            let n = chunk.len() as u64;
            match exporter.export(chunk.to_vec()).await {
                Ok(()) => {
                    counters().exported.inc_by(n);
                }
                Err(e) => {
                    counters().dropped.inc_by(n);
                    static FAILED: Throttle = Throttle::new();
                    if let Some(suppressed) = FAILED.check() {
                        tracing::warn!(
                            spans = n,
                            suppressed,
                            "spans not exported, dropped: {e} (suppressed: how many such failures were not logged since the last line)"
                        );
                    }
                }
            }
        }
        if let Some(done) = flushed {
            let _ = done.send(());
        }
    }
}

/// The tracer, when spans are exported.
fn tracer() -> Option<&'static SdkTracer> {
    TRACING.get().map(|t| &t.tracer)
}

/// Whether spans are recorded (and exported).
pub(crate) fn enabled() -> bool {
    TRACING.get().is_some()
}

/// The two values the W3C trace context propagator reads, borrowed: nothing is copied.
struct Carrier<'a> {
    traceparent: &'a str,
    tracestate: Option<&'a str>,
}

impl opentelemetry::propagation::Extractor for Carrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            TRACEPARENT => Some(self.traceparent),
            TRACESTATE => self.tracestate,
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT, TRACESTATE]
    }
}

/// The trace context written in `traceparent` (and `tracestate`), if it is a valid one.
pub(crate) fn parse(traceparent: &str, tracestate: Option<&str>) -> Option<Context> {
    let cx = TraceContextPropagator::new().extract(&Carrier {
        traceparent,
        tracestate,
    });
    cx.span().span_context().is_valid().then_some(cx)
}

/// The `traceparent` of a span context.
pub(crate) fn format(sc: &SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags().to_u8()
    )
}

/// A new trace context for an event that came without one: sampled, so that the watchers'
/// own tracing records what follows. Its ids are random UUIDs' hex (122 random bits, never
/// zero): written straight into the string, with no formatting machinery.
fn fresh() -> String {
    let mut out = String::with_capacity(55);
    let mut buf = [0u8; uuid::fmt::Simple::LENGTH];
    out.push_str("00-");
    out.push_str(uuid::Uuid::new_v4().simple().encode_lower(&mut buf));
    out.push('-');
    // The first 16 digits hold the version digit `4`: never all zeros.
    out.push_str(&uuid::Uuid::new_v4().simple().encode_lower(&mut buf)[..16]);
    out.push_str("-01");
    out
}

/// The trace context a CloudEvent carries, if any.
pub(crate) fn of_event(ce: &CloudEvent) -> Option<Context> {
    let get = |name: &str| {
        ce.extensions
            .iter()
            .find(|(k, _)| k.as_str() == name)
            .and_then(|(_, v)| match v {
                ExtensionValue::String(s) => Some(s.as_str()),
                _ => None,
            })
    };
    parse(get(TRACEPARENT)?, get(TRACESTATE))
}

/// The trace id of an event, for log lines.
pub(crate) fn trace_id(ce: &CloudEvent) -> String {
    of_event(ce)
        .map(|cx| cx.span().span_context().trace_id().to_string())
        .unwrap_or_default()
}

/// The `traceparent` of the span the current task runs in, if one is recorded.
pub(crate) fn current() -> Option<String> {
    tracer()?;
    let cx = Context::current();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| format(&sc))
}

/// A span in progress; it ends when dropped. Nothing when spans are not exported.
#[derive(Default)]
pub(crate) struct Spanned(Option<Context>);

impl Spanned {
    /// A span `name` of `kind`, child of `parent` (a new trace when there is none).
    pub(crate) fn start(
        name: &'static str,
        kind: SpanKind,
        parent: Option<&Context>,
        attributes: impl FnOnce() -> Vec<KeyValue>,
    ) -> Spanned {
        let Some(tracer) = tracer() else {
            return Spanned(None);
        };
        let root = Context::new();
        let parent = parent.unwrap_or(&root);
        let span = tracer
            .span_builder(name)
            .with_kind(kind)
            .with_attributes(attributes())
            .start_with_context(tracer, parent);
        Spanned(Some(parent.with_span(span)))
    }

    /// A child span of this one.
    pub(crate) fn child(&self, name: &'static str) -> Spanned {
        match &self.0 {
            Some(cx) => Spanned::start(name, SpanKind::Internal, Some(cx), Vec::new),
            None => Spanned(None),
        }
    }

    /// Runs `work` in this span's context (what [`current`] reads), when it is recorded.
    pub(crate) async fn around<T>(&self, work: impl std::future::Future<Output = T>) -> T {
        match &self.0 {
            Some(cx) => opentelemetry::context::FutureExt::with_context(work, cx.clone()).await,
            None => work.await,
        }
    }

    /// Its context, when it is recorded.
    pub(crate) fn context(&self) -> Option<&Context> {
        self.0.as_ref()
    }

    /// Marks it failed with `why`.
    pub(crate) fn fail(&self, why: &str) {
        if let Some(cx) = &self.0 {
            cx.span().set_status(Status::error(why.to_string()));
        }
    }

    /// Adds an attribute.
    pub(crate) fn set(&self, attribute: KeyValue) {
        if let Some(cx) = &self.0 {
            cx.span().set_attribute(attribute);
        }
    }
}

/// Gives `ce` the trace context of the request it came in (`traceparent`, `tracestate`) if
/// it has none of its own and that one is valid.
pub(crate) fn adopt(ce: &mut CloudEvent, traceparent: &str, tracestate: Option<&str>) {
    if ce.extensions.contains_key(TRACEPARENT) || parse(traceparent, None).is_none() {
        return;
    }
    for (name, value) in [(TRACEPARENT, Some(traceparent)), (TRACESTATE, tracestate)] {
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            ce.extensions.insert(
                ExtensionName::known(name),
                ExtensionValue::String(value.to_string()),
            );
        }
    }
}

/// Gives `ce` a trace context if it has none: the `receive` span's when it is recorded, a new
/// one otherwise.
pub(crate) fn ensure_context(ce: &mut CloudEvent, receive: &Spanned) {
    if of_event(ce).is_some() {
        return;
    }
    // One that is not a valid trace context (a broker header's garbage) is replaced.
    ce.extensions.remove(TRACEPARENT);
    ce.extensions.remove(TRACESTATE);
    let value = match receive.context() {
        Some(cx) => format(cx.span().span_context()),
        None => fresh(),
    };
    ce.extensions.insert(
        ExtensionName::known(TRACEPARENT),
        ExtensionValue::String(value),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_is_read_and_written_back_the_same() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cx = parse(tp, Some("vendor=x")).unwrap();
        assert_eq!(format(cx.span().span_context()), tp);
        assert!(
            parse(
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                None
            )
            .is_none()
        );
        assert!(parse("garbage", None).is_none());
    }

    #[test]
    fn an_event_without_context_gets_a_new_one_and_keeps_one_it_has() {
        let mut ce = CloudEvent::new("1", "s", "t");
        ensure_context(&mut ce, &Spanned::default());
        let cx = of_event(&ce).expect("a valid context");
        assert!(cx.span().span_context().is_sampled());
        let first = trace_id(&ce);
        assert_eq!(first.len(), 32);
        ensure_context(&mut ce, &Spanned::default());
        assert_eq!(trace_id(&ce), first);
        let mut other = CloudEvent::new("2", "s", "t");
        ensure_context(&mut other, &Spanned::default());
        assert_ne!(trace_id(&other), first);
    }
}
