//! Portico's internal metrics: one typed vocabulary, so names never drift.
//!
//! Everything a gateway counts is declared here and registered once in a
//! `prometheus_client` registry that `GET /metrics` encodes. Code on the hot path fetches its
//! label set once (per configuration, per watcher) and keeps the handles.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use std::fmt::Write as _;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::error::DispatchError;

/// Labels of a per-configuration metric.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct SrcLabels {
    /// The configuration key.
    pub src: String,
}

/// Labels of a per-watcher metric.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct WatcherLabels {
    /// The watcher's name (`url:http://…`, `sensor:name`, `stdout`).
    pub watcher: String,
}

/// Labels of a rejected event.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RejectLabels {
    /// The configuration key.
    pub(crate) src: String,
    /// Why.
    pub(crate) reason: RejectReason,
}

/// Why an event was refused before it was accepted: the `reason` label of
/// `portico_events_rejected_total`.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum RejectReason {
    /// `full`: the gateway was full; the source got 503 or, in `atMostOnce`, dropped the
    /// event.
    Full,
    /// `disk`: the durable outbox could not write to its disk.
    Disk,
    /// `invalid`: the event cannot become a valid CloudEvent.
    Invalid,
    /// `stopped`: the configuration or the gateway was stopping.
    Stopped,
    /// `missed`: calendar ticks that fell due while the gateway was full, never produced.
    Missed,
    /// `unauthorized`: a webhook delivery refused with 401 (bad or missing signature or
    /// token).
    Unauthorized,
    /// `filtered`: the configuration's `filter` did not pass the event, which was not stored
    /// (the source was told it was taken).
    Filtered,
    /// `limited`: the configuration's `rateLimit` had no room before an HTTP caller's wait
    /// ended; the caller got 429 and `Retry-After`.
    Limited,
}

impl RejectReason {
    /// Every reason, in the order the metrics list them.
    pub const ALL: [RejectReason; 8] = [
        RejectReason::Full,
        RejectReason::Disk,
        RejectReason::Invalid,
        RejectReason::Stopped,
        RejectReason::Missed,
        RejectReason::Unauthorized,
        RejectReason::Filtered,
        RejectReason::Limited,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Full => "full",
            RejectReason::Disk => "disk",
            RejectReason::Invalid => "invalid",
            RejectReason::Stopped => "stopped",
            RejectReason::Missed => "missed",
            RejectReason::Unauthorized => "unauthorized",
            RejectReason::Filtered => "filtered",
            RejectReason::Limited => "limited",
        }
    }

    /// The reason of a refusal.
    pub(crate) fn of(e: &DispatchError) -> RejectReason {
        match e {
            DispatchError::Full { .. } => RejectReason::Full,
            DispatchError::Disk(_) => RejectReason::Disk,
            DispatchError::Invalid(_) => RejectReason::Invalid,
            DispatchError::Stopped => RejectReason::Stopped,
            DispatchError::Limited { .. } => RejectReason::Limited,
        }
    }
}

impl EncodeLabelValue for RejectReason {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

/// Labels of the nodes-by-phase gauge.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PhaseLabels {
    /// The phase.
    pub phase: String,
}

fn latency_histogram() -> Histogram {
    // 100 µs … ~26 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 19))
}

/// Distinct `src` label values before the rest are counted under [`OTHER_SRC`].
const MAX_SRC_LABELS: usize = 4096;
/// Distinct `src` label values named by callers of the ingest API (a posted event's `src`,
/// a posted CloudEvent's source), counted apart from the configured ones: junk cannot push a
/// configuration's own label out.
const MAX_POSTED_SRC_LABELS: usize = 256;
/// The `src` label of sources past [`MAX_SRC_LABELS`].
const OTHER_SRC: &str = "_other";

/// The sources with a label of their own.
#[derive(Default)]
struct Srcs {
    /// Their counters, by key.
    known: HashMap<String, SrcMetrics>,
    /// How many of them were named by callers.
    posted: usize,
}

/// Every metric of a gateway.
pub(crate) struct Metrics {
    registry: Registry,
    /// The counters of every configuration key seen, up to `MAX_SRC_LABELS` (made once: the
    /// ingest API looks them up per request).
    srcs: Mutex<Srcs>,
    /// Events produced by configurations (or posted to the ingest API).
    pub received: Family<SrcLabels, Counter>,
    /// Events turned into CloudEvents.
    pub transformed: Family<SrcLabels, Counter>,
    /// Events refused before acceptance.
    pub rejected: Family<RejectLabels, Counter>,
    /// Events a watcher took (2xx).
    pub delivered: Family<WatcherLabels, Counter>,
    /// Events a watcher never took after every attempt.
    pub failed: Family<WatcherLabels, Counter>,
    /// Attempts repeated after a retryable failure.
    pub retried: Family<WatcherLabels, Counter>,
    /// Time from acceptance to delivery.
    pub delivery_latency: Family<WatcherLabels, Histogram, fn() -> Histogram>,
    /// Events waiting or in flight per watcher.
    pub queue_depth: Family<WatcherLabels, Gauge>,
    /// Nodes per phase.
    pub nodes: Family<PhaseLabels, Gauge>,
    /// Deliveries of a configuration's events that a watcher took (one per watcher).
    pub src_delivered: Family<SrcLabels, Counter>,
    /// Deliveries of a configuration's events given up on after every attempt.
    pub src_failed: Family<SrcLabels, Counter>,
    /// Delivery attempts of a configuration's events repeated after a retryable failure.
    pub src_retried: Family<SrcLabels, Counter>,
    /// Events sent to the dead-letter destination after every attempt or `maxAge`.
    pub dead_lettered: Family<WatcherLabels, Counter>,
    /// Events a watcher's filter kept from it.
    pub filtered: Family<WatcherLabels, Counter>,
    /// Seconds a watcher's deliveries waited for its rate limit.
    pub rate_limited: Family<WatcherLabels, Counter<f64, AtomicU64>>,
    /// Seconds a configuration's events waited for its rate limit.
    pub src_rate_limited: Family<SrcLabels, Counter<f64, AtomicU64>>,
    /// The durable outbox: fsyncs, records appended, bytes on disk.
    pub outbox: OutboxMetrics,
    /// Replicas sharing configurations: requests, buckets held and moved, takeovers.
    pub coordination: CoordinationMetrics,
}

impl Metrics {
    /// A fresh set of metrics in its own registry.
    pub(crate) fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("portico");
        let m = Metrics {
            received: Family::default(),
            transformed: Family::default(),
            rejected: Family::default(),
            delivered: Family::default(),
            failed: Family::default(),
            retried: Family::default(),
            delivery_latency: Family::new_with_constructor(latency_histogram),
            queue_depth: Family::default(),
            nodes: Family::default(),
            src_delivered: Family::default(),
            src_failed: Family::default(),
            src_retried: Family::default(),
            dead_lettered: Family::default(),
            filtered: Family::default(),
            rate_limited: Family::default(),
            src_rate_limited: Family::default(),
            outbox: Default::default(),
            coordination: Default::default(),
            registry: Registry::default(),
            srcs: Mutex::new(Srcs::default()),
        };
        registry.register(
            "events_received",
            "Events produced by configurations or posted to the ingest API",
            m.received.clone(),
        );
        registry.register(
            "events_transformed",
            "Events turned into CloudEvents",
            m.transformed.clone(),
        );
        registry.register(
            "events_rejected",
            "Events refused before acceptance, by reason",
            m.rejected.clone(),
        );
        registry.register(
            "events_delivered",
            "Events a watcher accepted",
            m.delivered.clone(),
        );
        registry.register(
            "events_failed",
            "Events a watcher never accepted after every attempt",
            m.failed.clone(),
        );
        registry.register(
            "events_retried",
            "Delivery attempts repeated after a retryable failure",
            m.retried.clone(),
        );
        registry.register(
            "delivery_latency_seconds",
            "Time from acceptance to delivery",
            m.delivery_latency.clone(),
        );
        registry.register(
            "watcher_queue_depth",
            "Events waiting or in flight per watcher",
            m.queue_depth.clone(),
        );
        registry.register("nodes", "Nodes per phase", m.nodes.clone());
        registry.register(
            "src_events_delivered",
            "Deliveries of a configuration's events that a watcher accepted (one per watcher)",
            m.src_delivered.clone(),
        );
        registry.register(
            "src_events_failed",
            "Deliveries of a configuration's events never accepted after every attempt",
            m.src_failed.clone(),
        );
        registry.register(
            "src_events_retried",
            "Delivery attempts of a configuration's events repeated after a retryable failure",
            m.src_retried.clone(),
        );
        registry.register(
            "events_dead_lettered",
            "Events sent to the dead-letter destination after every attempt or maxAge",
            m.dead_lettered.clone(),
        );
        registry.register(
            "events_filtered",
            "Events a watcher's filter kept from it (not sent, not retried)",
            m.filtered.clone(),
        );
        registry.register(
            "watcher_rate_limited_seconds",
            "Seconds a watcher's deliveries waited for its rate limit (rateLimit)",
            m.rate_limited.clone(),
        );
        let spans = crate::trace::counters();
        registry.register(
            "spans_exported",
            "Trace spans the OpenTelemetry collector took (OTLP)",
            spans.exported.clone(),
        );
        registry.register(
            "spans_dropped",
            "Trace spans dropped: the export queue was full, or the collector failed or refused them",
            spans.dropped.clone(),
        );
        registry.register(
            "src_rate_limited_seconds",
            "Seconds a configuration's events waited for its rate limit (rateLimit)",
            m.src_rate_limited.clone(),
        );
        registry.register(
            "outbox_fsyncs",
            "fsyncs of the durable outbox (group commit: one per batch of appends)",
            m.outbox.fsyncs.clone(),
        );
        registry.register(
            "outbox_commit_seconds",
            "Seconds each group commit of the durable outbox took: writing its batch of events and fsyncing it (what an atLeastOnce source waits for beyond the gateway's own work)",
            m.outbox.commit_seconds.clone(),
        );
        registry.register(
            "outbox_appends",
            "Events written to the durable outbox",
            m.outbox.appends.clone(),
        );
        registry.register(
            "outbox_bytes",
            "Bytes of the durable outbox on disk",
            m.outbox.bytes.clone(),
        );
        registry.register(
            "outbox_damaged_records",
            "Records found damaged in the durable outbox at start (lost; their bytes are in the outbox's quarantine directory)",
            m.outbox.damaged_records.clone(),
        );
        registry.register(
            "outbox_write_errors",
            "Batches of events the durable outbox could not write to its disk (their sources were answered 503)",
            m.outbox.write_errors.clone(),
        );
        registry.register(
            "coordination_requests",
            "Requests this replica made to the coordination store (member and bucket records)",
            m.coordination.requests.clone(),
        );
        registry.register(
            "coordination_buckets_held",
            "Buckets of configurations this replica holds",
            m.coordination.held.clone(),
        );
        registry.register(
            "coordination_bucket_moves",
            "Buckets this replica acquired, released (handed over) or lost (not renewed in time)",
            m.coordination.moves.clone(),
        );
        registry.register(
            "coordination_takeover_seconds",
            "Seconds from the last renewal of a bucket by a replica that stopped to its takeover by this one",
            m.coordination.takeover.clone(),
        );
        Arc::new(Metrics { registry, ..m })
    }

    /// The metrics in the OpenMetrics text format.
    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The metrics in the Prometheus text format 0.0.4, for scrapers that do not ask for
    /// OpenMetrics.
    pub(crate) fn encode_prometheus(&self) -> String {
        openmetrics_to_prometheus(&self.encode())
    }

    /// The counters of one configuration of the gateway: labelled by its key, up to
    /// [`MAX_SRC_LABELS`] keys (then [`OTHER_SRC`]).
    pub(crate) fn for_src(&self, src: &str) -> SrcMetrics {
        self.src_metrics(src, MAX_SRC_LABELS, false)
    }

    /// The counters of a source named by a caller (the `src` of an event posted to the ingest
    /// API, the source of a posted CloudEvent): its own label while fewer than
    /// [`MAX_POSTED_SRC_LABELS`] such names were seen, [`OTHER_SRC`] after. The
    /// configurations' own labels are kept apart, so a caller posting junk names cannot push
    /// them into [`OTHER_SRC`].
    pub(crate) fn for_posted_src(&self, src: &str) -> SrcMetrics {
        self.src_metrics(src, MAX_POSTED_SRC_LABELS, true)
    }

    /// Gives the configuration keys `keys` their own labels while there is room (as
    /// [`Metrics::for_src`] would, under one lock, and stopping once the cap is reached).
    pub(crate) fn own_srcs<'a>(&self, keys: impl IntoIterator<Item = &'a str>) {
        let mut srcs = self.srcs.lock().unwrap_or_else(|p| p.into_inner());
        for key in keys {
            if srcs.known.len() - srcs.posted >= MAX_SRC_LABELS {
                return;
            }
            if !srcs.known.contains_key(key) {
                self.make_src_metrics(&mut srcs, key, MAX_SRC_LABELS, false);
            }
        }
    }

    fn src_metrics(&self, src: &str, cap: usize, posted: bool) -> SrcMetrics {
        let mut srcs = self.srcs.lock().unwrap_or_else(|p| p.into_inner());
        match srcs.known.get(src) {
            Some(m) => m.clone(),
            None => self.make_src_metrics(&mut srcs, src, cap, posted),
        }
    }

    /// The counters of `src`, not known yet: kept in `srcs` with a label of its own while
    /// fewer than `cap` such sources are, labelled [`OTHER_SRC`] after.
    fn make_src_metrics(&self, srcs: &mut Srcs, src: &str, cap: usize, posted: bool) -> SrcMetrics {
        let count = if posted {
            srcs.posted
        } else {
            srcs.known.len() - srcs.posted
        };
        let room = count < cap;
        let labels = SrcLabels {
            src: if room { src } else { OTHER_SRC }.to_string(),
        };
        let m = Arc::new(SrcCounters {
            src: Arc::from(src),
            label: Arc::from(labels.src.as_str()),
            received: self.received.get_or_create(&labels).clone(),
            transformed: self.transformed.get_or_create(&labels).clone(),
            delivery: Arc::new(DeliveryCounters {
                delivered: self.src_delivered.get_or_create(&labels).clone(),
                failed: self.src_failed.get_or_create(&labels).clone(),
                retried: self.src_retried.get_or_create(&labels).clone(),
            }),
        });
        if room {
            srcs.known.insert(src.to_string(), m.clone());
            if posted {
                srcs.posted += 1;
            }
        }
        m
    }

    /// Calls `f` with the key and received-event count of every source with a label of its
    /// own (for the status page's rates).
    pub(crate) fn each_src_received(&self, mut f: impl FnMut(&str, u64)) {
        let srcs = self.srcs.lock().unwrap_or_else(|p| p.into_inner());
        for (key, m) in &srcs.known {
            f(key, m.received.get());
        }
    }

    /// The metrics of one watcher.
    pub(crate) fn for_watcher(&self, watcher: &str) -> WatcherMetrics {
        let labels = WatcherLabels {
            watcher: watcher.to_string(),
        };
        WatcherMetrics {
            delivered: self.delivered.get_or_create(&labels).clone(),
            failed: self.failed.get_or_create(&labels).clone(),
            retried: self.retried.get_or_create(&labels).clone(),
            latency: self.delivery_latency.get_or_create(&labels).clone(),
            queue_depth: self.queue_depth.get_or_create(&labels).clone(),
            dead_lettered: self.dead_lettered.get_or_create(&labels).clone(),
            filtered: self.filtered.get_or_create(&labels).clone(),
            rate_limited: self.rate_limited.get_or_create(&labels).clone(),
        }
    }

    /// Counts `seconds` that an event of `src` waited for the configuration's rate limit.
    pub(crate) fn count_limited(&self, src: &SrcMetrics, seconds: f64) {
        self.src_rate_limited
            .get_or_create(&SrcLabels {
                src: src.label.to_string(),
            })
            .inc_by(seconds);
    }

    /// Counts an event of `src` refused for `reason`.
    pub(crate) fn reject(&self, src: &SrcMetrics, reason: RejectReason) {
        self.reject_many(src, reason, 1);
    }

    /// Counts `n` events of `src` refused for `reason`.
    pub(crate) fn reject_many(&self, src: &SrcMetrics, reason: RejectReason, n: u64) {
        self.rejected
            .get_or_create(&RejectLabels {
                src: src.label.to_string(),
                reason,
            })
            .inc_by(n);
    }
}

/// The durable outbox's metrics.
#[derive(Debug, Clone)]
pub(crate) struct OutboxMetrics {
    /// fsyncs of the log.
    pub fsyncs: Counter,
    /// Seconds each group commit took: writing its batch and fsyncing it.
    pub commit_seconds: Histogram,
    /// Records appended.
    pub appends: Counter,
    /// Bytes of the log on disk.
    pub bytes: Gauge,
    /// Batches the disk refused.
    pub write_errors: Counter,
    /// Records found damaged in the log (lost; their bytes quarantined).
    pub damaged_records: Counter,
}

impl Default for OutboxMetrics {
    fn default() -> Self {
        OutboxMetrics {
            fsyncs: Counter::default(),
            // 25 µs … ~3.3 s: a local SSD's fsync is tens of microseconds, a busy or networked
            // disk's can be seconds.
            commit_seconds: Histogram::new(exponential_buckets(0.000025, 2.0, 18)),
            appends: Counter::default(),
            bytes: Gauge::default(),
            write_errors: Counter::default(),
            damaged_records: Counter::default(),
        }
    }
}

/// Labels of a bucket move between replicas.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct MoveLabels {
    /// `acquired`, `released` or `lost`.
    pub kind: &'static str,
}

/// The metrics of replicas sharing configurations.
#[derive(Debug, Clone)]
pub(crate) struct CoordinationMetrics {
    /// Requests to the coordination store.
    pub requests: Counter,
    /// Buckets this replica holds.
    pub held: Gauge,
    /// Buckets this replica took, released or lost.
    pub moves: Family<MoveLabels, Counter>,
    /// Seconds from the last renewal of a bucket by a replica that stopped to its takeover here.
    pub takeover: Histogram,
}

impl Default for CoordinationMetrics {
    fn default() -> Self {
        CoordinationMetrics {
            requests: Counter::default(),
            held: Gauge::default(),
            moves: Family::default(),
            // 50 ms … ~100 s.
            takeover: Histogram::new(exponential_buckets(0.05, 2.0, 12)),
        }
    }
}

impl CoordinationMetrics {
    /// Counts a bucket move.
    pub(crate) fn moved(&self, kind: &'static str) {
        self.moves.get_or_create(&MoveLabels { kind }).inc();
    }
}

/// Handles of one configuration's counters, shared: handing them to each of its events (and
/// its delivery counters to each queued event) takes one reference count, not one per counter.
pub(crate) type SrcMetrics = Arc<SrcCounters>;

/// One configuration's counters (see [`SrcMetrics`]).
#[derive(Debug)]
pub(crate) struct SrcCounters {
    /// Its key.
    pub(crate) src: Arc<str>,
    /// Its `src` label (`_other` past the cap).
    label: Arc<str>,
    /// Events produced.
    pub received: Counter,
    /// Events transformed.
    pub transformed: Counter,
    /// What became of its events at the watchers.
    pub delivery: SrcDelivery,
}

/// Handles of one configuration's delivery counters, carried with each of its queued events.
pub(crate) type SrcDelivery = Arc<DeliveryCounters>;

/// One configuration's delivery counters (see [`SrcDelivery`]).
#[derive(Debug)]
pub(crate) struct DeliveryCounters {
    /// Deliveries a watcher took.
    pub delivered: Counter,
    /// Deliveries given up on.
    pub failed: Counter,
    /// Attempts repeated.
    pub retried: Counter,
}

/// Handles of one watcher's metrics.
#[derive(Debug, Clone)]
pub(crate) struct WatcherMetrics {
    /// Delivered.
    pub delivered: Counter,
    /// Given up on.
    pub failed: Counter,
    /// Retried.
    pub retried: Counter,
    /// Acceptance → delivery.
    pub latency: Histogram,
    /// Waiting or in flight.
    pub queue_depth: Gauge,
    /// Sent to the dead-letter destination.
    pub dead_lettered: Counter,
    /// Kept from it by its filter.
    pub filtered: Counter,
    /// Seconds waited for its rate limit.
    pub rate_limited: Counter<f64, AtomicU64>,
}

/// The media type of [`Metrics::encode`].
pub(crate) const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The media type of [`Metrics::encode_prometheus`].
pub(crate) const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether a scraper's `Accept` header asks for OpenMetrics (with a weight above zero).
pub(crate) fn wants_openmetrics(accept: &str) -> bool {
    accept.split(',').any(|range| {
        let mut params = range.split(';').map(str::trim);
        params
            .next()
            .is_some_and(|t| t.eq_ignore_ascii_case("application/openmetrics-text"))
            && !params.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            })
    })
}

/// Rewrites what this registry writes in OpenMetrics into the Prometheus text format 0.0.4:
/// a counter's HELP and TYPE name its samples' `_total` name, `_created` samples, UNIT lines,
/// exemplars and `# EOF` go. Only the metric types this registry holds (counters, gauges,
/// histograms) are written.
fn openmetrics_to_prometheus(text: &str) -> String {
    let counters: std::collections::HashSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| Some((p, line.strip_prefix(p)?)));
        if let Some((prefix, rest)) = meta {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            out.push_str(prefix);
            out.push_str(name);
            if counters.contains(name) {
                out.push_str("_total");
            }
            out.push(' ');
            out.push_str(tail);
            out.push('\n');
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        if line[..name_end]
            .strip_suffix("_created")
            .is_some_and(|base| counters.contains(base))
        {
            continue;
        }
        // An exemplar follows ` # ` after the value.
        out.push_str(line.split(" # ").next().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_names_counters_by_their_samples() {
        let m = Metrics::new();
        m.for_src("s").received.inc();
        m.for_watcher("w").latency.observe(0.01);
        let text = m.encode_prometheus();
        assert!(
            text.contains("# HELP portico_events_received_total Events produced"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE portico_events_received_total counter"),
            "{text}"
        );
        assert!(
            text.contains("portico_events_received_total{src=\"s\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE portico_delivery_latency_seconds histogram"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE portico_watcher_queue_depth gauge"),
            "{text}"
        );
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
    }

    #[test]
    fn openmetrics_is_chosen_only_when_asked_for() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert!(wants_openmetrics(prometheus));
        assert!(!wants_openmetrics("text/plain;version=0.0.4"));
        assert!(!wants_openmetrics("*/*"));
        assert!(!wants_openmetrics("application/openmetrics-text; q=0"));
    }

    #[test]
    fn every_metric_has_help_and_every_counter_ends_in_total() {
        let m = Metrics::new();
        // One sample of each labelled family, so that every family shows a sample line.
        m.for_src("s").received.inc();
        m.for_watcher("w").delivered.inc();
        for reason in RejectReason::ALL {
            m.reject(&m.for_src("s"), reason);
        }
        let text = m.encode();
        let mut families = 0;
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("# TYPE ") else {
                continue;
            };
            families += 1;
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "{name} has no HELP text"
            );
            if kind == "counter" {
                let samples: Vec<&str> = text
                    .lines()
                    .filter(|l| !l.starts_with('#') && l.starts_with(name))
                    .collect();
                assert!(!samples.is_empty(), "{name}: no sample");
                for s in samples {
                    assert!(
                        s.starts_with(&format!("{name}_total")),
                        "{name}: sample {s} does not end in _total"
                    );
                }
            }
        }
        assert!(families >= 16, "{text}");
        for reason in RejectReason::ALL {
            assert!(
                text.contains(&format!("reason=\"{}\"", reason.as_str())),
                "{reason:?}"
            );
        }
    }

    #[test]
    fn names_posted_by_callers_cannot_push_configurations_out() {
        let m = Metrics::new();
        m.for_src("real").received.inc();
        for i in 0..10_000 {
            let junk = m.for_posted_src(&format!("junk{i}"));
            junk.received.inc();
            m.reject(&junk, RejectReason::Invalid);
        }
        m.for_src("late-config").received.inc();
        let text = m.encode();
        assert!(
            text.contains("portico_events_received_total{src=\"real\"} 1"),
            "{text}"
        );
        assert!(text.contains("portico_events_received_total{src=\"late-config\"} 1"));
        let junk_labels = text
            .lines()
            .filter(|l| l.starts_with("portico_events_received_total{src=\"junk"))
            .count();
        assert_eq!(junk_labels, MAX_POSTED_SRC_LABELS);
        assert!(text.contains(&format!(
            "portico_events_received_total{{src=\"_other\"}} {}",
            10_000 - MAX_POSTED_SRC_LABELS
        )));
    }

    #[test]
    fn src_labels_are_bounded() {
        let m = Metrics::new();
        for i in 0..MAX_SRC_LABELS + 10 {
            m.for_src(&format!("s{i}")).received.inc();
        }
        m.for_src("s0").received.inc();
        m.for_src(&format!("s{}", MAX_SRC_LABELS + 1))
            .delivery
            .delivered
            .inc();
        let text = m.encode();
        assert!(
            text.contains("portico_events_received_total{src=\"s0\"} 2"),
            "{text}"
        );
        assert!(text.contains("portico_events_received_total{src=\"_other\"} 10"));
        assert!(
            !text.contains(&format!("src=\"s{}\"", MAX_SRC_LABELS + 1)),
            "delivery counters past the cap made a label"
        );
    }
}
