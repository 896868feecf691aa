//! Which watchers a gateway has, resolved from its spec and the environment.
//!
//! In a cluster a sensor `name` is `http://<name>-sensor-svc.<namespace>.svc:9300/` and a
//! gateway `{name, port, endpoint}` is `http://<name>-gateway-svc.<namespace>.svc:<port><endpoint>`
//! (the original looked gateways up under the sensor name). Outside one, both need a `url` or
//! a URL template (`--sensor-url`, `--gateway-url`); a file is checked without one.
//! `K_SINK` is one more URL watcher. With no watcher at all, events go to stdout.
//!
//! HTTP watchers get CloudEvents 1.0 (structured) unless they or `spec.delivery` name an
//! `encoding`; those of an `argoproj.io` Gateway get Argo Events v0.6's CloudEvents 0.1 JSON
//! (`legacy`) instead, what that group's sensors read. `K_SINK` always defaults to 1.0.

use std::time::Duration;

use crate::secret::{SecretSource, redact_url};

use super::{
    DeadLetterSettings, DispatchMechanism, Encoding, Gateway, GatewaySpec, KafkaDispatch,
    NatsDispatch, Port, Problems, RetrySettings, UrlWatcher, WatcherSettings,
};

/// Where one watcher's events go.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// An HTTP endpoint.
    Http {
        /// The URL.
        url: String,
        /// How events are written.
        encoding: Encoding,
        /// Timeout of one attempt.
        timeout: Duration,
        /// Headers sent with every delivery (a bearer token among them).
        headers: Vec<WatcherHeader>,
    },
    /// One JSON line per event on stdout.
    Stdout,
    /// A NATS JetStream subject (the sender comes from a [`crate::watcher::SenderFactory`]).
    Nats(NatsDispatch),
    /// A Kafka topic (the sender comes from a [`crate::watcher::SenderFactory`]).
    Kafka(KafkaDispatch),
}

/// A header an HTTP watcher sends with every delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct WatcherHeader {
    /// Its name.
    pub name: http::HeaderName,
    /// Text before the value (`Bearer ` for a bearer token).
    pub prefix: &'static str,
    /// The value.
    pub value: HeaderValueFrom,
}

/// Where a watcher header's value comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum HeaderValueFrom {
    /// Written out in the gateway file.
    Text(String),
    /// A secret: a file (read again when it changes) or an environment variable.
    Secret(SecretSource),
}

/// Tuning of one watcher's queue and senders.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct QueueSettings {
    /// Events waiting or in flight before sources are pushed back.
    pub queue_size: usize,
    /// Deliveries in flight at once.
    pub concurrency: usize,
    /// Retries.
    pub retry: RetryPolicy,
    /// Which events it gets (every one without).
    pub filter: Option<std::sync::Arc<crate::filter::Filter>>,
    /// Deliveries per second at most.
    pub rate_limit: Option<super::RateLimitSettings>,
    /// How batches are made, when its sender takes batches.
    pub batch: Batching,
}

/// How a watcher that takes batches (`encoding: batch`) makes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Batching {
    /// The most events in one batch.
    pub max_events: usize,
    /// How long the first event of a batch waits for more.
    pub max_delay: Duration,
}

impl Default for Batching {
    fn default() -> Self {
        Batching {
            max_events: 100,
            max_delay: Duration::from_millis(5),
        }
    }
}

/// The most events a batch may be set to hold.
const MAX_BATCH_EVENTS: usize = 10_000;

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            queue_size: 4096,
            concurrency: 32,
            retry: RetryPolicy::default(),
            filter: None,
            rate_limit: None,
            batch: Batching::default(),
        }
    }
}

/// How often and how patiently a delivery is retried: capped exponential backoff with jitter.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub max_attempts: usize,
    /// Wait before the first retry.
    pub initial_backoff: Duration,
    /// Longest wait between two attempts.
    pub max_backoff: Duration,
    /// Longest time an event is retried from its acceptance (no limit when `None`).
    pub max_age: Option<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            max_age: None,
        }
    }
}

impl RetryPolicy {
    /// This policy with the fields `settings` gives replaced.
    pub(crate) fn merged(&self, settings: Option<&RetrySettings>) -> RetryPolicy {
        let Some(s) = settings else {
            return self.clone();
        };
        RetryPolicy {
            max_attempts: s.max_attempts.unwrap_or(self.max_attempts).max(1),
            initial_backoff: s.initial_backoff.unwrap_or(self.initial_backoff),
            max_backoff: s.max_backoff.unwrap_or(self.max_backoff),
            max_age: s.max_age.or(self.max_age),
        }
    }
}

/// One resolved watcher.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct WatcherDef {
    /// Its name in metrics and logs: `sensor:<name>`, `gateway:<name>`, `url:<url>`,
    /// `k_sink:<url>`, `stdout`.
    pub name: String,
    /// Where its events go.
    pub target: Target,
    /// Its queue and retries.
    pub queue: QueueSettings,
    /// Its dead-letter destination, if one is set (its own or the gateway's).
    pub dead_letter: Option<DeadLetterSettings>,
    /// The name of the watcher it replaces (a URL watcher whose address changed).
    pub moved_from: Option<String>,
}

/// What the environment tells about where the gateway runs.
#[derive(Debug, Clone, Default)]
pub(crate) struct Environment {
    /// Inside a Kubernetes pod.
    pub in_cluster: bool,
    /// Knative's `K_SINK`.
    pub k_sink: Option<String>,
    /// The URL of a sensor given by name only (`{name}`, `{namespace}`); in a cluster it
    /// defaults to [`SENSOR_URL_TEMPLATE`].
    pub sensor_url: Option<String>,
    /// The URL of a gateway given by name only (`{name}`, `{namespace}`, `{port}`,
    /// `{endpoint}`); in a cluster it defaults to [`GATEWAY_URL_TEMPLATE`].
    pub gateway_url: Option<String>,
    /// Checking a file, not running it: watchers named only are taken as they are (they
    /// resolve where the gateway runs).
    pub checking: bool,
}

/// Where a sensor named only is in a cluster: its Service, as Argo Events named it.
pub(crate) const SENSOR_URL_TEMPLATE: &str = "http://{name}-sensor-svc.{namespace}.svc:9300/";
/// Where a gateway named only is in a cluster: its Service, port and endpoint.
pub(crate) const GATEWAY_URL_TEMPLATE: &str =
    "http://{name}-gateway-svc.{namespace}.svc:{port}{endpoint}";

impl Environment {
    /// Read from the process environment (`KUBERNETES_SERVICE_HOST`, `K_SINK`,
    /// `PORTICO_SENSOR_URL`, `PORTICO_GATEWAY_URL`).
    pub(crate) fn from_process() -> Environment {
        Environment {
            in_cluster: crate::env::in_cluster(),
            k_sink: crate::env::var(crate::env::K_SINK),
            sensor_url: crate::env::var(crate::env::PORTICO_SENSOR_URL),
            gateway_url: crate::env::var(crate::env::PORTICO_GATEWAY_URL),
            checking: false,
        }
    }

    /// The environment a file is checked in: anywhere.
    pub(crate) fn checking() -> Environment {
        Environment {
            checking: true,
            ..Environment::from_process()
        }
    }

    fn sensor_template(&self) -> Option<&str> {
        self.sensor_url
            .as_deref()
            .or(self.in_cluster.then_some(SENSOR_URL_TEMPLATE))
    }

    fn gateway_template(&self) -> Option<&str> {
        self.gateway_url
            .as_deref()
            .or(self.in_cluster.then_some(GATEWAY_URL_TEMPLATE))
    }
}

/// `template` with `{name}`, `{namespace}`, `{port}` and `{endpoint}` filled in.
fn fill(template: &str, name: &str, namespace: &str, port: Option<Port>, endpoint: &str) -> String {
    template
        .replace("{name}", name)
        .replace("{namespace}", namespace)
        .replace("{port}", &port.map(|p| p.to_string()).unwrap_or_default())
        .replace("{endpoint}", endpoint)
}

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

fn queue_settings(gateway: &WatcherSettings, own: &WatcherSettings) -> QueueSettings {
    let d = QueueSettings::default();
    let retry = RetryPolicy::default()
        .merged(gateway.retry.as_ref())
        .merged(own.retry.as_ref());
    QueueSettings {
        queue_size: own
            .queue_size
            .or(gateway.queue_size)
            .unwrap_or(d.queue_size),
        concurrency: own
            .concurrency
            .or(gateway.concurrency)
            .unwrap_or(d.concurrency),
        retry,
        // A filter that does not compile is reported by `settings_problems`.
        filter: own
            .filter
            .as_ref()
            .and_then(|spec| crate::filter::Filter::compile(spec).ok())
            .map(std::sync::Arc::new),
        rate_limit: own
            .rate_limit
            .clone()
            .or_else(|| gateway.rate_limit.clone())
            .filter(|r| r.problem().is_none()),
        batch: Batching {
            // Out of range is reported by `batch_problems`.
            max_events: own
                .max_events
                .or(gateway.max_events)
                .unwrap_or(d.batch.max_events)
                .clamp(1, MAX_BATCH_EVENTS),
            max_delay: own
                .max_delay
                .or(gateway.max_delay)
                .unwrap_or(d.batch.max_delay),
        },
    }
}

/// What is wrong with the batch settings of `what`, if anything.
fn batch_problems(what: &str, s: &WatcherSettings, problems: &mut Vec<String>) {
    if let Some(n) = s.max_events
        && !(1..=MAX_BATCH_EVENTS).contains(&n)
    {
        problems.push(format!(
            "{what}: maxEvents is {n}: give 1 to {MAX_BATCH_EVENTS}"
        ));
    }
}

/// An HTTP watcher's target. Its encoding is its own, else the gateway's, else `fallback`.
fn http(
    what: &str,
    url: String,
    gateway: &WatcherSettings,
    own: &WatcherSettings,
    fallback: Encoding,
    problems: &mut Vec<String>,
) -> Target {
    Target::Http {
        url,
        encoding: own.encoding.or(gateway.encoding).unwrap_or(fallback),
        timeout: own.timeout.or(gateway.timeout).unwrap_or(DEFAULT_TIMEOUT),
        headers: headers(what, own, problems),
    }
}

/// The headers of a watcher's own settings: its bearer token and its `headers`.
fn headers(what: &str, own: &WatcherSettings, problems: &mut Vec<String>) -> Vec<WatcherHeader> {
    let mut out = Vec::new();
    match SecretSource::from_fields(
        "bearerToken",
        own.bearer_token_file.as_deref(),
        own.bearer_token_env.as_deref(),
    ) {
        Ok(Some(source)) => out.push(WatcherHeader {
            name: http::header::AUTHORIZATION,
            prefix: "Bearer ",
            value: HeaderValueFrom::Secret(source),
        }),
        Ok(None) => {}
        Err(e) => problems.push(format!("{what}: {}", e.message())),
    }
    for (i, h) in own.headers.iter().enumerate() {
        let at = format!("{what}: headers[{i}]");
        let name = match http::HeaderName::from_bytes(h.name.trim().as_bytes()) {
            Ok(n) => n,
            Err(_) => {
                problems.push(format!("{at}: `{}` is not a header name", h.name));
                continue;
            }
        };
        if name == http::header::HOST || name == http::header::CONTENT_LENGTH {
            problems.push(format!("{at}: `{name}` is set by the gateway"));
            continue;
        }
        if out.iter().any(|o| o.name == name) {
            problems.push(format!(
                "{at}: `{name}` is given twice (a bearer token is the `authorization` header)"
            ));
            continue;
        }
        let value = match (
            &h.value,
            SecretSource::from_fields("value", h.value_file.as_deref(), h.value_env.as_deref()),
        ) {
            (_, Err(e)) => {
                problems.push(format!("{at}: {}", e.message()));
                continue;
            }
            (Some(v), Ok(None)) => {
                if http::HeaderValue::from_str(v).is_err() {
                    problems.push(format!(
                        "{at}: the value of `{name}` cannot be sent in a header"
                    ));
                    continue;
                }
                HeaderValueFrom::Text(v.clone())
            }
            (None, Ok(Some(source))) => HeaderValueFrom::Secret(source),
            (Some(_), Ok(Some(_))) => {
                problems.push(format!("{at}: give one of value, valueFile or valueEnv"));
                continue;
            }
            (None, Ok(None)) => {
                problems.push(format!("{at}: give its value, valueFile or valueEnv"));
                continue;
            }
        };
        out.push(WatcherHeader {
            name,
            prefix: "",
            value,
        });
    }
    out
}

fn dead_letter(gateway: &WatcherSettings, own: &WatcherSettings) -> Option<DeadLetterSettings> {
    own.dead_letter
        .clone()
        .or_else(|| gateway.dead_letter.clone())
}

fn dead_letter_problems(what: &str, d: &DeadLetterSettings, problems: &mut Vec<String>) {
    match (&d.file, &d.url) {
        (Some(_), Some(_)) => {
            problems.push(format!("{what}: give either `file` or `url`, not both"))
        }
        (None, None) => problems.push(format!("{what}: give a `file` or a `url`")),
        (None, Some(url)) => {
            if let Err(p) = check_url(what, url) {
                problems.push(p);
            }
        }
        (Some(_), None) => {}
    }
}

/// Settings that only `spec.delivery` may hold, and a watcher's own dead letter.
fn settings_problems(what: &str, own: &WatcherSettings, problems: &mut Vec<String>) {
    if own.mode.is_some() {
        problems.push(format!(
            "{what}: `mode` is a setting of the whole gateway: move it to spec.delivery.mode"
        ));
    }
    if own.outbox.is_some() {
        problems.push(format!(
            "{what}: `outbox` is a setting of the whole gateway: move it to spec.delivery.outbox"
        ));
    }
    if own.moved_from.is_some() && !what.starts_with("watchers.urls") {
        problems.push(format!(
            "{what}: `movedFrom` is for URL watchers (a sensor or gateway watcher keeps its name when its address changes)"
        ));
    }
    if let Some(d) = &own.dead_letter {
        dead_letter_problems(&format!("{what}: deadLetter"), d, problems);
    }
    if let Some(Err(e)) = own.filter.as_ref().map(crate::filter::Filter::compile) {
        problems.push(format!("{what}: filter: {e}"));
    }
    if let Some(p) = own.rate_limit.as_ref().and_then(|r| r.problem()) {
        problems.push(format!("{what}: {p}"));
    }
    batch_problems(what, own, problems);
}

/// The own settings of a bus watcher (NATS, Kafka): only its filter.
fn bus_settings(filter: Option<&crate::filter::FilterSpec>) -> WatcherSettings {
    WatcherSettings {
        filter: filter.cloned(),
        ..WatcherSettings::default()
    }
}

fn bus_filter_problems(
    what: &str,
    filter: Option<&crate::filter::FilterSpec>,
    problems: &mut Vec<String>,
) {
    if let Some(Err(e)) = filter.map(crate::filter::Filter::compile) {
        problems.push(format!("{what}.filter: {e}"));
    }
}

fn check_url(what: &str, url: &str) -> Result<(), String> {
    match reqwest::Url::parse(url) {
        Ok(u) if u.scheme() == "http" || u.scheme() == "https" => Ok(()),
        Ok(u) => Err(format!(
            "{what}: url `{}` has scheme `{}`: expected http or https",
            redact_url(url),
            u.scheme()
        )),
        Err(e) => Err(format!(
            "{what}: url `{}` is not a valid URL: {e}",
            redact_url(url)
        )),
    }
}

/// The watchers of `gateway` in `env`, or every problem found.
pub(crate) fn resolve_watchers(
    gateway: &Gateway,
    env: &Environment,
) -> Result<Vec<WatcherDef>, Problems> {
    let spec = &gateway.spec;
    let ns = gateway.namespace();
    let defaults = &spec.delivery;
    // An `argoproj.io` Gateway's watchers are Argo Events v0.6's sensors and gateways: they
    // get its CloudEvents 0.1 JSON unless told otherwise.
    let encoding = gateway.group().default_encoding();
    let mut problems = Vec::new();
    let mut out = Vec::new();
    if let Some(d) = &defaults.dead_letter {
        dead_letter_problems("delivery.deadLetter", d, &mut problems);
    }
    if defaults.moved_from.is_some() {
        problems.push(
            "delivery: `movedFrom` is a setting of one URL watcher, not of the gateway".into(),
        );
    }
    if defaults.bearer_token_file.is_some()
        || defaults.bearer_token_env.is_some()
        || !defaults.headers.is_empty()
    {
        problems.push(
            "delivery: `bearerTokenFile`, `bearerTokenEnv` and `headers` are settings of one watcher (a credential goes only where it is meant to)"
                .into(),
        );
    }
    if let Some(p) = defaults.rate_limit.as_ref().and_then(|r| r.problem()) {
        problems.push(format!("delivery: {p}"));
    }
    batch_problems("delivery", defaults, &mut problems);
    if defaults.filter.is_some() {
        problems.push(
            "delivery: `filter` is a setting of one watcher: put it on each watcher it is for"
                .into(),
        );
    }
    match (spec.dispatch_mechanism, &spec.nats, &spec.kafka) {
        (DispatchMechanism::Http, _, _) => {}
        (DispatchMechanism::Nats, Some(n), _) => {
            if n.subject.trim().is_empty() {
                problems.push("nats.subject: give the subject events are published to".into());
            }
            if !(n.url.starts_with("nats://") || n.url.starts_with("tls://")) {
                problems.push(format!(
                    "nats.url `{}`: expected nats://host:port or tls://host:port",
                    redact_url(&n.url)
                ));
            }
            bus_filter_problems("nats", n.filter.as_ref(), &mut problems);
            if let Some(Err(e)) = n.tls.as_ref().map(|t| t.check()) {
                problems.push(format!("nats.{e}"));
            }
            if let Err(e) = n.auth() {
                problems.push(format!("nats.{e}"));
            }
            out.push(WatcherDef {
                name: format!("nats:{}", n.subject),
                target: Target::Nats(n.clone()),
                queue: queue_settings(defaults, &bus_settings(n.filter.as_ref())),
                dead_letter: defaults.dead_letter.clone(),
                moved_from: None,
            });
        }
        (DispatchMechanism::Kafka, _, Some(k)) => {
            if k.topic.trim().is_empty() {
                problems.push("kafka.topic: give the topic events are produced to".into());
            }
            if k.url.trim().is_empty() {
                problems.push("kafka.url: give the bootstrap brokers (host:9092)".into());
            }
            bus_filter_problems("kafka", k.filter.as_ref(), &mut problems);
            match k.tls.as_ref().map(|t| t.check()) {
                Some(Err(e)) => problems.push(format!("kafka.{e}")),
                Some(Ok(t)) if t.server_name.is_some() => problems.push(
                    "kafka.tls.serverName: not supported by the Kafka client (it checks the certificates against the hosts of url)".into(),
                ),
                _ => {}
            }
            if let Some(Err(e)) = k.sasl.as_ref().map(|s| s.check()) {
                problems.push(format!("kafka.{e}"));
            }
            out.push(WatcherDef {
                name: format!("kafka:{}", k.topic),
                target: Target::Kafka(k.clone()),
                queue: queue_settings(defaults, &bus_settings(k.filter.as_ref())),
                dead_letter: defaults.dead_letter.clone(),
                moved_from: None,
            });
        }
        (DispatchMechanism::Nats, None, _) => {
            problems.push("dispatchMechanism NATS needs `nats: {url, subject}` in the spec".into())
        }
        (DispatchMechanism::Kafka, _, None) => {
            problems.push("dispatchMechanism Kafka needs `kafka: {url, topic}` in the spec".into())
        }
    }
    for (i, s) in spec.watchers.sensors.iter().enumerate() {
        let what = format!("watchers.sensors[{i}] `{}`", s.name);
        let url = match (&s.url, env.sensor_template()) {
            (Some(u), _) => u.clone(),
            (None, Some(t)) => fill(t, &s.name, ns, None, ""),
            (None, None) if env.checking => {
                settings_problems(&what, &s.settings, &mut problems);
                continue;
            }
            (None, None) => {
                problems.push(format!(
                    "{what}: a sensor named only resolves in a cluster; outside one give its `url`, or a URL template: --sensor-url '{SENSOR_URL_TEMPLATE}' (PORTICO_SENSOR_URL)"
                ));
                continue;
            }
        };
        if let Err(p) = check_url(&what, &url) {
            problems.push(p);
            continue;
        }
        out.push(WatcherDef {
            name: format!("sensor:{}", s.name),
            target: http(&what, url, defaults, &s.settings, encoding, &mut problems),
            queue: queue_settings(defaults, &s.settings),
            dead_letter: dead_letter(defaults, &s.settings),
            moved_from: None,
        });
        settings_problems(&what, &s.settings, &mut problems);
    }
    for (i, g) in spec.watchers.gateways.iter().enumerate() {
        let what = format!("watchers.gateways[{i}] `{}`", g.name);
        let endpoint = g.endpoint.as_deref().unwrap_or("/");
        let endpoint = if endpoint.starts_with('/') {
            endpoint.to_string()
        } else {
            format!("/{endpoint}")
        };
        let url = match (&g.url, env.gateway_template()) {
            (Some(u), _) => u.clone(),
            (None, _) if g.port.is_none() => {
                problems.push(format!("{what}: `port` is required to reach a gateway"));
                continue;
            }
            (None, Some(t)) => fill(t, &g.name, ns, g.port, &endpoint),
            (None, None) if env.checking => {
                settings_problems(&what, &g.settings, &mut problems);
                continue;
            }
            (None, None) => {
                problems.push(format!(
                    "{what}: a gateway named only resolves in a cluster; outside one give its `url`, or a URL template: --gateway-url '{GATEWAY_URL_TEMPLATE}' (PORTICO_GATEWAY_URL)"
                ));
                continue;
            }
        };
        if let Err(p) = check_url(&what, &url) {
            problems.push(p);
            continue;
        }
        out.push(WatcherDef {
            name: format!("gateway:{}", g.name),
            target: http(&what, url, defaults, &g.settings, encoding, &mut problems),
            queue: queue_settings(defaults, &g.settings),
            dead_letter: dead_letter(defaults, &g.settings),
            moved_from: None,
        });
        settings_problems(&what, &g.settings, &mut problems);
    }
    for (i, u) in spec.watchers.urls.iter().enumerate() {
        let (url, own) = match u {
            UrlWatcher::Url(url) => (url.clone(), WatcherSettings::default()),
            UrlWatcher::Detailed { url, settings } => (url.clone(), settings.clone()),
        };
        if let Err(p) = check_url(&format!("watchers.urls[{i}]"), &url) {
            problems.push(p);
            continue;
        }
        let what = format!("watchers.urls[{i}]");
        settings_problems(&what, &own, &mut problems);
        out.push(WatcherDef {
            name: format!("url:{}", redact_url(&url)),
            target: http(&what, url, defaults, &own, encoding, &mut problems),
            queue: queue_settings(defaults, &own),
            dead_letter: dead_letter(defaults, &own),
            moved_from: own
                .moved_from
                .as_deref()
                .map(|old| format!("url:{}", redact_url(old))),
        });
    }
    if let Some(sink) = &env.k_sink {
        match check_url("K_SINK", sink) {
            Ok(()) => out.push(WatcherDef {
                name: format!("k_sink:{}", redact_url(sink)),
                target: http(
                    "K_SINK",
                    sink.clone(),
                    defaults,
                    &WatcherSettings::default(),
                    // Knative's sinks take CloudEvents 1.0, whatever the group.
                    Encoding::default(),
                    &mut problems,
                ),
                queue: queue_settings(defaults, &WatcherSettings::default()),
                dead_letter: defaults.dead_letter.clone(),
                moved_from: None,
            }),
            Err(p) => problems.push(p),
        }
    }
    if out.is_empty() && problems.is_empty() {
        out.push(WatcherDef {
            name: "stdout".to_string(),
            target: Target::Stdout,
            queue: queue_settings(defaults, &WatcherSettings::default()),
            dead_letter: defaults.dead_letter.clone(),
            moved_from: None,
        });
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(Problems(problems))
    }
}

/// Every problem with the watchers of `spec`, wherever it runs (watchers named only are
/// taken: they resolve where it runs).
pub(crate) fn problems(spec: &GatewaySpec) -> Vec<String> {
    let gateway = Gateway {
        api_version: String::new(),
        kind: String::new(),
        metadata: Default::default(),
        spec: spec.clone(),
    };
    resolve_watchers(&gateway, &Environment::checking())
        .err()
        .unwrap_or_default()
        .0
}

/// What to know about the watchers of `spec` before running it here: where each one named
/// only goes, or that `run` needs its URL.
pub(crate) fn notes(gateway: &Gateway) -> Vec<String> {
    let env = Environment::from_process();
    let ns = gateway.namespace();
    let spec = &gateway.spec;
    let mut out = Vec::new();
    if gateway.group() == super::GatewayGroup::Argo && spec.delivery.encoding.is_none() {
        out.push(format!(
            "apiVersion {}: watchers get Argo Events v0.6's CloudEvents 0.1 JSON (encoding: legacy) unless they set `encoding` (structured or binary for CloudEvents 1.0)",
            gateway.api_version
        ));
    }
    for (i, s) in spec.watchers.sensors.iter().enumerate() {
        if s.url.is_none() {
            out.push(match env.sensor_template() {
                Some(t) => format!("watchers.sensors[{i}] `{}` goes to {}", s.name, fill(t, &s.name, ns, None, "")),
                None => format!(
                    "watchers.sensors[{i}] `{}` is named only: it resolves in a cluster ({}); to run it elsewhere give its `url` or --sensor-url",
                    s.name,
                    fill(SENSOR_URL_TEMPLATE, &s.name, ns, None, "")
                ),
            });
        }
    }
    for (i, g) in spec.watchers.gateways.iter().enumerate() {
        if g.url.is_none() && g.port.is_some() {
            let endpoint = g.endpoint.as_deref().unwrap_or("/");
            out.push(match env.gateway_template() {
                Some(t) => format!("watchers.gateways[{i}] `{}` goes to {}", g.name, fill(t, &g.name, ns, g.port, endpoint)),
                None => format!(
                    "watchers.gateways[{i}] `{}` is named only: it resolves in a cluster ({}); to run it elsewhere give its `url` or --gateway-url",
                    g.name,
                    fill(GATEWAY_URL_TEMPLATE, &g.name, ns, g.port, endpoint)
                ),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{GatewayWatcher, ObjectMeta, Port, SensorWatcher};

    fn gateway(watchers: crate::spec::Watchers) -> Gateway {
        Gateway {
            api_version: "portico.dev/v1alpha1".into(),
            kind: "Gateway".into(),
            metadata: ObjectMeta {
                name: "g".into(),
                namespace: Some("ns".into()),
                ..Default::default()
            },
            spec: GatewaySpec {
                gateway_type: "t".into(),
                watchers,
                ..Default::default()
            },
        }
    }

    #[test]
    fn a_rate_limit_too_slow_or_not_a_number_is_a_problem_and_never_a_panic() {
        use crate::spec::RateLimitSettings;
        for per_second in [0.0, -1.0, 1e-300, f64::NAN, f64::INFINITY] {
            let r = RateLimitSettings {
                per_second,
                burst: None,
            };
            let p = r.problem().expect("a problem");
            assert!(p.contains("give a number above 0"), "{p}");
            // Built anyway (it never is), it is the slowest limit.
            let _ = r.limiter();
        }
        let ok = RateLimitSettings {
            per_second: 0.001,
            burst: Some(5),
        };
        assert_eq!(ok.problem(), None);
        let _ = ok.limiter();
    }

    #[test]
    fn the_event_bus_security_settings_are_checked_by_field() {
        use crate::security::{SaslConfig, SaslMechanism, TlsConfig};
        let mut g = gateway(Default::default());
        g.spec.dispatch_mechanism = DispatchMechanism::Nats;
        let nats = NatsDispatch {
            url: "tls://127.0.0.1:4222".into(),
            subject: "events".into(),
            user: Some("gateway".into()),
            password_file: Some("/run/password".into()),
            tls: Some(TlsConfig {
                ca_file: Some("/run/ca.pem".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        g.spec.nats = Some(nats.clone());
        assert!(resolve_watchers(&g, &Environment::default()).is_ok());
        g.spec.nats = Some(NatsDispatch {
            password_file: None,
            tls: Some(TlsConfig {
                cert_file: Some("/run/cert.pem".into()),
                ..Default::default()
            }),
            ..nats
        });
        let problems = resolve_watchers(&g, &Environment::default()).unwrap_err().0;
        assert!(
            problems.iter().any(|p| p.starts_with("nats.tls.keyFile:")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.starts_with("nats.passwordFile:")),
            "{problems:?}"
        );

        g.spec.dispatch_mechanism = DispatchMechanism::Kafka;
        g.spec.kafka = Some(KafkaDispatch {
            url: "127.0.0.1:9092".into(),
            topic: "events".into(),
            sasl: Some(SaslConfig {
                mechanism: SaslMechanism::ScramSha512,
                user: "gateway".into(),
                password_file: None,
                password_env: None,
            }),
            tls: Some(TlsConfig {
                server_name: Some("kafka.internal".into()),
                ..Default::default()
            }),
            ..Default::default()
        });
        let problems = resolve_watchers(&g, &Environment::default()).unwrap_err().0;
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("kafka.sasl.passwordFile:")),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("kafka.tls.serverName:")),
            "{problems:?}"
        );
    }

    #[test]
    fn the_event_bus_takes_a_filter_and_a_bad_one_is_named() {
        use crate::filter::FilterSpec;
        let mut g = gateway(Default::default());
        g.spec.dispatch_mechanism = DispatchMechanism::Nats;
        g.spec.nats = Some(NatsDispatch {
            url: "nats://127.0.0.1:4222".into(),
            subject: "events".into(),
            filter: Some(FilterSpec::Cel(r#"type == "a""#.into())),
            ..Default::default()
        });
        let w = resolve_watchers(&g, &Environment::default()).unwrap();
        let filter = w[0]
            .queue
            .filter
            .as_ref()
            .expect("the bus watcher's filter");
        assert_eq!(filter.text(), r#"type == "a""#);

        g.spec.nats.as_mut().unwrap().filter = Some(FilterSpec::Cel("type ==".into()));
        let problems = resolve_watchers(&g, &Environment::default()).unwrap_err().0;
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("nats.filter: column ")),
            "{problems:?}"
        );
    }

    #[test]
    fn argo_gateways_default_to_the_legacy_encoding_and_watchers_can_opt_out() {
        let sensor = |encoding: Option<Encoding>| SensorWatcher {
            name: "s".into(),
            url: Some("http://127.0.0.1:1/".into()),
            settings: WatcherSettings {
                encoding,
                ..Default::default()
            },
        };
        let mut g = gateway(crate::spec::Watchers {
            sensors: vec![sensor(None), sensor(Some(Encoding::Structured))],
            gateways: vec![],
            urls: vec![UrlWatcher::Url("http://127.0.0.1:2/".into())],
        });
        let env = Environment {
            in_cluster: false,
            k_sink: Some("http://127.0.0.1:3/".into()),
            sensor_url: None,
            gateway_url: None,
            checking: false,
        };
        let encodings = |g: &Gateway| -> Vec<Encoding> {
            resolve_watchers(g, &env)
                .unwrap()
                .into_iter()
                .map(|w| match w.target {
                    Target::Http { encoding, .. } => encoding,
                    other => panic!("{other:?}"),
                })
                .collect()
        };
        // sensor, sensor (structured), url, K_SINK
        assert_eq!(
            encodings(&g),
            [
                Encoding::Structured,
                Encoding::Structured,
                Encoding::Structured,
                Encoding::Structured
            ]
        );
        g.api_version = "argoproj.io/v1alpha1".into();
        assert_eq!(
            encodings(&g),
            [
                Encoding::Legacy,
                Encoding::Structured,
                Encoding::Legacy,
                Encoding::Structured
            ]
        );
        assert!(notes(&g)[0].contains("encoding: legacy"), "{:?}", notes(&g));
        g.spec.delivery.encoding = Some(Encoding::Binary);
        assert_eq!(
            encodings(&g),
            [
                Encoding::Binary,
                Encoding::Structured,
                Encoding::Binary,
                Encoding::Binary
            ]
        );
    }

    #[test]
    fn cluster_names_follow_the_convention() {
        let g = gateway(crate::spec::Watchers {
            sensors: vec![SensorWatcher {
                name: "s".into(),
                url: None,
                settings: Default::default(),
            }],
            gateways: vec![GatewayWatcher {
                name: "relay".into(),
                port: Some(Port(9330)),
                endpoint: Some("/in".into()),
                url: None,
                settings: Default::default(),
            }],
            urls: vec![],
        });
        let env = Environment {
            in_cluster: true,
            k_sink: Some("http://sink.ns.svc/".into()),
            ..Default::default()
        };
        let w = resolve_watchers(&g, &env).unwrap();
        let urls: Vec<_> = w
            .iter()
            .map(|w| match &w.target {
                Target::Http { url, .. } => url.clone(),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            urls,
            vec![
                "http://s-sensor-svc.ns.svc:9300/",
                "http://relay-gateway-svc.ns.svc:9330/in",
                "http://sink.ns.svc/"
            ]
        );
    }

    #[test]
    fn outside_a_cluster_names_need_urls_and_no_watchers_means_stdout() {
        let g = gateway(crate::spec::Watchers {
            sensors: vec![SensorWatcher {
                name: "s".into(),
                url: None,
                settings: Default::default(),
            }],
            ..Default::default()
        });
        let e = resolve_watchers(&g, &Environment::default()).unwrap_err().0;
        assert!(
            e[0].contains("watchers.sensors[0] `s`: a sensor named only resolves in a cluster")
                && e[0].contains("--sensor-url"),
            "{e:?}"
        );
        // A template resolves it; checking a file takes it as it is.
        let env = Environment {
            sensor_url: Some("http://{name}.{namespace}.example:9300/".into()),
            ..Default::default()
        };
        let w = resolve_watchers(&g, &env).unwrap();
        assert_eq!(w[0].name, "sensor:s");
        assert!(
            matches!(&w[0].target, Target::Http { url, .. } if url == "http://s.ns.example:9300/")
        );
        let checking = Environment {
            checking: true,
            ..Default::default()
        };
        assert!(resolve_watchers(&g, &checking).is_ok());
        let g = gateway(Default::default());
        let w = resolve_watchers(&g, &Environment::default()).unwrap();
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].target, Target::Stdout);
    }

    #[test]
    fn a_bad_url_is_named() {
        let g = gateway(crate::spec::Watchers {
            urls: vec![
                UrlWatcher::Url("ftp://x/".into()),
                UrlWatcher::Url("::".into()),
            ],
            ..Default::default()
        });
        let e = resolve_watchers(&g, &Environment::default()).unwrap_err().0;
        assert_eq!(e.len(), 2);
        assert!(
            e[0].contains("watchers.urls[0]") && e[0].contains("scheme `ftp`"),
            "{e:?}"
        );
        assert!(e[1].contains("watchers.urls[1]"), "{e:?}");
    }
}
