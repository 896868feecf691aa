//! The `Gateway` and `ConfigMap` manifests (SPEC §2), and how a gateway file is read.
//!
//! A gateway file is multi-document YAML that `kubectl apply -f` takes as is: one `Gateway`
//! and, optionally, the `ConfigMap` it names. Every document is read into one [`Document`]
//! shape (so that parse errors keep their exact line and column), then checked for what a
//! parser cannot check: kinds, API versions, names, ports, watchers. Every error names the
//! file, the line and column, and what was expected.
//!
//! The same [`GatewaySpec`] is the spec of the `Gateway` custom resource in a cluster: its
//! derive makes [`GatewayResource`] (group `portico.dev`, version `v1alpha1`, kind `Gateway`,
//! status subresource [`GatewayStatus`]) and the CRD that `portico crd` prints.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{PodSpec, ServiceSpec};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};
use serde_saphyr::Spanned;

/// API groups whose `v1alpha1` Gateway Portico accepts (the second is the original's).
pub const GATEWAY_API_VERSIONS: [&str; 2] = ["portico.dev/v1alpha1", "argoproj.io/v1alpha1"];

/// The configurations of a gateway: key (`src`) → value (YAML or JSON text).
pub type ConfigMapData = BTreeMap<String, String>;

/// Object metadata, the part of Kubernetes' `ObjectMeta` a gateway file uses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    /// Name of the object.
    #[serde(default)]
    pub name: String,
    /// Namespace; `default` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The desired state of a gateway: the `spec` of a gateway file's Gateway and of the
/// `Gateway` custom resource alike.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, CustomResource, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[kube(
    group = "portico.dev",
    version = "v1alpha1",
    kind = "Gateway",
    root = "GatewayResource",
    namespaced,
    status = "GatewayStatus",
    derive = "PartialEq",
    category = "portico",
    doc = "A Portico gateway: its type, processor, configurations (a ConfigMap) and watchers.",
    printcolumn = r#"{"name": "Type", "type": "string", "jsonPath": ".spec.type"}"#,
    printcolumn = r#"{"name": "Phase", "type": "string", "jsonPath": ".status.phase"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
pub struct GatewaySpec {
    /// CloudEvent `type` of every event; names the built-in executor in core style.
    #[serde(rename = "type", default)]
    pub gateway_type: String,
    /// Value of the `eventtypeversion` extension.
    #[serde(default = "default_event_version")]
    pub event_version: String,
    /// Name of the ConfigMap holding the configurations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<String>,
    /// gRPC style: port of the user's gRPC server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpc_port: Option<Port>,
    /// gRPC style: which contract the user's server speaks. `portico` (the default) is
    /// `proto/portico/v1/gateway.proto` (`GatewayProcessor.RunGateway`, optional
    /// `ValidateGateway`); `argo-generic` is Argo Events' generic event source
    /// (`generic.Eventing.StartEventSource`, `proto/argo/generic.proto`), so that servers
    /// written for Argo run unchanged: each configuration is sent as `{name: key, config:
    /// value}` and each `Event.payload` becomes a CloudEvent's data (no content type).
    #[serde(default, skip_serializing_if = "GrpcProtocol::is_default")]
    pub grpc_protocol: GrpcProtocol,
    /// HTTP style: port of the user's HTTP server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_server_port: Option<Port>,
    /// How events leave the gateway.
    #[serde(default)]
    pub dispatch_mechanism: DispatchMechanism,
    /// Where events go.
    #[serde(default)]
    pub watchers: Watchers,
    /// Delivery settings shared by every watcher (each watcher may override them).
    #[serde(default)]
    pub delivery: WatcherSettings,
    /// `dispatchMechanism: NATS`: the JetStream subject events are published to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nats: Option<NatsDispatch>,
    /// `dispatchMechanism: Kafka`: the topic events are produced to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<KafkaDispatch>,
    /// The pod of the gateway's Deployment (used by the controller, which adds the
    /// environment of SPEC §3 to every container).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy_spec: Option<PodSpec>,
    /// The gateway's Service `<name>-gateway-svc` (used by the controller; the selector
    /// defaults to the gateway's pods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_spec: Option<ServiceSpec>,
    /// Original field kept for compatibility with Argo manifests; unused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    /// Original field kept for compatibility with Argo manifests; unused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Original field kept for compatibility with Argo manifests; unused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processor_port: Option<Port>,
}

/// The gRPC contract a gRPC-style gateway's server speaks (`spec.grpcProtocol`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum GrpcProtocol {
    /// Portico's `GatewayProcessor` service (`proto/portico/v1/gateway.proto`).
    #[default]
    #[serde(rename = "portico")]
    Portico,
    /// Argo Events' generic event source (`proto/argo/generic.proto`).
    #[serde(rename = "argo-generic")]
    ArgoGeneric,
}

impl GrpcProtocol {
    fn is_default(&self) -> bool {
        *self == GrpcProtocol::Portico
    }
}

fn default_event_version() -> String {
    "1.0".to_string()
}

/// A TCP port, written as a string (as the original did) or a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "String")]
pub struct Port(pub u16);

impl JsonSchema for Port {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Port".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A TCP port (1 to 65535), as a number or a string.",
            "x-kubernetes-int-or-string": true
        })
    }
}

impl From<Port> for String {
    fn from(p: Port) -> String {
        p.0.to_string()
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        let n = match Raw::deserialize(d)? {
            Raw::Number(n) => n,
            Raw::Text(s) => s.trim().parse::<u64>().map_err(|_| {
                serde::de::Error::custom(format!("expected a port number, got `{s}`"))
            })?,
        };
        match u16::try_from(n) {
            Ok(p) if p > 0 => Ok(Port(p)),
            _ => Err(serde::de::Error::custom(format!(
                "expected a port number from 1 to 65535, got {n}"
            ))),
        }
    }
}

/// How events leave the gateway (SPEC §7).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DispatchMechanism {
    /// HTTP watchers (sensors, gateways, URLs, `K_SINK`), or stdout when there are none.
    #[default]
    #[serde(rename = "HTTP")]
    Http,
    /// A NATS JetStream stream.
    #[serde(rename = "NATS")]
    Nats,
    /// A Kafka topic.
    #[serde(rename = "Kafka")]
    Kafka,
}

/// `dispatchMechanism: NATS`: each CloudEvent is published to a JetStream subject in binary
/// mode (`ce-*` headers, the data as the body) and counts as delivered once JetStream acks it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NatsDispatch {
    /// Server URL (`nats://host:4222`).
    pub url: String,
    /// Subject events are published to.
    pub subject: String,
    /// A stream to create (or keep) over `subject`; without it, a stream must already capture
    /// the subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
}

/// `dispatchMechanism: Kafka`: each CloudEvent is produced to a topic in binary mode (`ce_*`
/// headers, the data as the value), with `acks=all` and an idempotent producer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KafkaDispatch {
    /// Bootstrap brokers (`host:9092`, comma-separated for several).
    pub url: String,
    /// Topic events are produced to.
    pub topic: String,
    /// What the record key is: `subject` (default: the configuration key), `source`, `id`, `type`
    /// or `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// Where events go.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Watchers {
    /// Sensors: `http://<name>-sensor-svc.<namespace>.svc:9300/` in a cluster, `url` elsewhere.
    #[serde(default)]
    pub sensors: Vec<SensorWatcher>,
    /// Other gateways: `http://<name>-gateway-svc.<namespace>.svc:<port><endpoint>` in a
    /// cluster, `url` elsewhere.
    #[serde(default)]
    pub gateways: Vec<GatewayWatcher>,
    /// Plain URLs, as strings or as `{url, …settings}`.
    #[serde(default)]
    pub urls: Vec<UrlWatcher>,
}

impl Watchers {
    /// True when no watcher of any kind is given.
    pub fn is_empty(&self) -> bool {
        self.sensors.is_empty() && self.gateways.is_empty() && self.urls.is_empty()
    }
}

/// A sensor watcher.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SensorWatcher {
    /// Name of the sensor.
    pub name: String,
    /// Where to send outside a cluster (or to override the cluster address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Delivery settings for this watcher.
    #[serde(flatten)]
    pub settings: WatcherSettings,
}

/// A gateway watcher.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayWatcher {
    /// Name of the gateway.
    pub name: String,
    /// Port of the gateway's service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<Port>,
    /// HTTP path on that gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Where to send outside a cluster (or to override the cluster address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Delivery settings for this watcher.
    #[serde(flatten)]
    pub settings: WatcherSettings,
}

/// A URL watcher: a bare URL string or a URL with its own settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
#[allow(clippy::large_enum_variant)] // parsed once per file; boxing would only add noise
pub enum UrlWatcher {
    /// `"http://…"`.
    Url(String),
    /// `{url: "http://…", encoding: binary, …}`.
    Detailed {
        /// The URL.
        url: String,
        /// Delivery settings for this watcher.
        #[serde(flatten)]
        settings: WatcherSettings,
    },
}

impl JsonSchema for UrlWatcher {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "UrlWatcher".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        // A string or an object: not expressible as one structural schema, so the API server
        // keeps it as given and the gateway checks it when it reads its spec.
        schemars::json_schema!({
            "description": "A URL (`http://…`), or `{url, encoding, timeout, queueSize, concurrency, retry}`.",
            "x-kubernetes-preserve-unknown-fields": true
        })
    }
}

/// How CloudEvents are written on an HTTP request (SPEC §6).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Encoding {
    /// `application/cloudevents+json`.
    #[default]
    Structured,
    /// `ce-*` headers and the data as the body.
    Binary,
    /// The original's CloudEvents 0.1 JSON, for old consumers.
    Legacy,
}

/// Delivery settings: gateway-wide in `spec.delivery`, and per watcher, where every field
/// falls back to the gateway's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WatcherSettings {
    /// How events are written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<Encoding>,
    /// Timeout of one delivery attempt (`5s`, `500ms`).
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Duration>,
    /// Events waiting or in flight for this watcher before sources are pushed back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_size: Option<usize>,
    /// Deliveries in flight at once to this watcher.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<usize>,
    /// Retry policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetrySettings>,
    /// Delivery mode of the gateway (`spec.delivery` only): `atLeastOnce` (default),
    /// `atMostOnce` or `ackAfterDelivery`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<DeliveryMode>,
    /// The durable outbox of an `atLeastOnce` gateway (`spec.delivery` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbox: Option<OutboxSettings>,
    /// Where events go that exhaust their retries (`maxAttempts` or `maxAge`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<DeadLetterSettings>,
}

/// How events are delivered (SPEC §7).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum DeliveryMode {
    /// Every event is written to the durable outbox (fsynced) before its source is told it was
    /// accepted; events not yet delivered are replayed after a restart.
    #[default]
    AtLeastOnce,
    /// Events are queued in memory only: nothing survives a crash, and a source never waits
    /// for a disk. A source that cannot be slowed down without loss never waits for room
    /// either: an event that finds the gateway full is dropped and counted
    /// (`portico_events_rejected{reason="full"}`): calendar ticks, broker messages, file and
    /// resource events. Sources that push back without loss still do: HTTP callers are held up
    /// to `--admission-wait` then get 503, a gRPC stream is slowed by its flow control.
    AtMostOnce,
    /// `atLeastOnce`, except that sources which acknowledge their own messages one by one
    /// (the `nats` gateway's JetStream consumers, the `redis` gateway's Streams consumer
    /// groups) ack each one only after every watcher took it (or it was dead-lettered), and
    /// their events skip the outbox: the broker keeps them until then. Every other source goes
    /// through the outbox as in `atLeastOnce`.
    AckAfterDelivery,
}

/// The durable outbox of a gateway.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutboxSettings {
    /// Its directory. Default: `$XDG_STATE_HOME/portico/<namespace>/<gateway>/outbox`
    /// (`~/.local/state/…` when `XDG_STATE_HOME` is unset); `--outbox-dir` /
    /// `PORTICO_OUTBOX_DIR` override both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// Bytes on disk past which sources are pushed back (503, no broker ack). Default 1 GiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
}

/// A dead-letter destination: a file (one CloudEvent in JSON a line) or a URL (the CloudEvent
/// POSTed in structured mode). Each event carries the extensions `deadletterwatcher` and
/// `deadletterreason`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeadLetterSettings {
    /// A file events are appended to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// A URL events are POSTed to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// Retries with capped exponential backoff and jitter.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetrySettings {
    /// Attempts in all, the first included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<usize>,
    /// Wait before the first retry.
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<String>")]
    pub initial_backoff: Option<Duration>,
    /// Longest wait between two attempts.
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<String>")]
    pub max_backoff: Option<Duration>,
    /// Longest time an event is retried, counted from its acceptance (also across restarts);
    /// then it goes to the dead-letter destination.
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<String>")]
    pub max_age: Option<Duration>,
}

/// `humantime` durations (`250ms`, `5s`, `1m`) in manifests.
pub(crate) mod opt_duration {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        text.map(|t| {
            humantime::parse_duration(t.trim()).map_err(|e| {
                serde::de::Error::custom(format!(
                    "expected a duration like `500ms`, `5s` or `1m`, got `{t}`: {e}"
                ))
            })
        })
        .transpose()
    }
}

/// The observed state of a `Gateway` in a cluster: the controller writes `phase` and
/// `message`, the gateway writes `nodes`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayStatus {
    /// What the controller made of the gateway: `Running` or `Error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Why the gateway is in that phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The nodes of the gateway's configurations, by configuration id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub nodes: BTreeMap<String, NodeStatus>,
}

/// One node (SPEC §1) as `Gateway.status.nodes` shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    /// The configuration id (hex).
    pub id: String,
    /// The configuration key (`src`).
    pub name: String,
    /// `Initialized`, `Running`, `Completed` or `Error`.
    pub phase: String,
    /// Why it is in that phase.
    #[serde(default)]
    pub message: String,
    /// When the node was created (RFC 3339).
    #[serde(default)]
    pub started_at: String,
    /// When the phase or message last changed (RFC 3339).
    #[serde(default)]
    pub updated_at: String,
    /// How often the configuration was restarted after a failure.
    #[serde(default)]
    pub restarts: u32,
}

/// A `Gateway` resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Gateway {
    /// `portico.dev/v1alpha1` or `argoproj.io/v1alpha1`.
    pub api_version: String,
    /// `Gateway`.
    pub kind: String,
    /// Name, namespace, labels.
    pub metadata: ObjectMeta,
    /// The desired state.
    pub spec: GatewaySpec,
}

impl Gateway {
    /// Namespace of the gateway (`default` when unset).
    pub fn namespace(&self) -> &str {
        self.metadata.namespace.as_deref().unwrap_or("default")
    }
}

impl From<&GatewayResource> for Gateway {
    /// The gateway of a custom resource read from the API server.
    fn from(r: &GatewayResource) -> Gateway {
        let m = &r.metadata;
        Gateway {
            api_version: "portico.dev/v1alpha1".to_string(),
            kind: "Gateway".to_string(),
            metadata: ObjectMeta {
                name: m.name.clone().unwrap_or_default(),
                namespace: m.namespace.clone(),
                labels: m.labels.clone().unwrap_or_default(),
                annotations: m.annotations.clone().unwrap_or_default(),
            },
            spec: r.spec.clone(),
        }
    }
}

/// The `Gateway` CustomResourceDefinition, as `portico crd` prints it and `deploy/crd.yaml`
/// holds it.
pub fn crd()
-> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    use kube::CustomResourceExt;
    GatewayResource::crd()
}

/// [`crd`] as YAML text.
pub fn crd_yaml() -> Result<String, String> {
    serde_saphyr::to_string(&crd()).map_err(|e| format!("cannot write the CRD as YAML: {e}"))
}

/// A gateway file, read and checked: the gateway and its configurations.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// The gateway.
    pub gateway: Gateway,
    /// The configurations of the ConfigMap the gateway names (empty when the file has none).
    pub configurations: ConfigMapData,
}

/// One YAML document of a gateway file, in the one shape that fits both kinds, so that
/// serde-saphyr reports every error at its exact place.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Document {
    api_version: Option<Spanned<String>>,
    kind: Option<Spanned<String>>,
    #[serde(default)]
    metadata: Option<Spanned<ObjectMeta>>,
    spec: Option<Spanned<GatewaySpec>>,
    data: Option<ConfigMapData>,
    #[serde(default, rename = "binaryData")]
    _binary_data: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "status")]
    _status: Option<serde::de::IgnoredAny>,
}

/// What is wrong with a gateway file, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// The file.
    pub path: PathBuf,
    /// 1-based line, when known.
    pub line: Option<u64>,
    /// 1-based column, when known.
    pub column: Option<u64>,
    /// What was wrong and what was expected.
    pub message: String,
    /// The lines around the place, when the parser rendered them.
    pub snippet: Option<String>,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let (Some(l), Some(c)) = (self.line, self.column) {
            write!(f, ":{l}:{c}")?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(s) = &self.snippet {
            write!(f, "\n{s}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecError {}

/// Every problem found in one gateway file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecErrors(pub Vec<SpecError>);

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecErrors {}

impl GatewayFile {
    /// Reads and checks a gateway file.
    pub fn load(path: &Path) -> Result<GatewayFile, SpecErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            SpecErrors(vec![SpecError {
                path: path.to_path_buf(),
                line: None,
                column: None,
                message: format!("cannot read the file: {e}"),
                snippet: None,
            }])
        })?;
        Self::parse(path, &text)
    }

    /// Parses and checks the text of a gateway file; `path` is only used in messages.
    pub fn parse(path: &Path, text: &str) -> Result<GatewayFile, SpecErrors> {
        let docs: Vec<Document> = serde_saphyr::from_multiple(text).map_err(|e| {
            let loc = e.location();
            let rendered = e.to_string();
            // The first line repeats "line L column C: message"; keep the message alone and
            // the rendered lines around the place as the snippet.
            let mut lines = rendered.lines();
            let first = lines.next().unwrap_or_default();
            let message = first
                .split_once(": ")
                .map(|(_, rest)| rest)
                .unwrap_or(first)
                .trim_start_matches("error: ")
                .to_string();
            let message = message
                .split_once(": ")
                .filter(|(head, _)| head.starts_with("line "))
                .map(|(_, m)| m.to_string())
                .unwrap_or(message);
            let snippet: Vec<&str> = lines.collect();
            SpecErrors(vec![SpecError {
                path: path.to_path_buf(),
                line: loc.map(|l| l.line()),
                column: loc.map(|l| l.column()),
                message,
                snippet: (!snippet.is_empty()).then(|| {
                    snippet
                        .join("\n")
                        .replace("<input>", &path.display().to_string())
                }),
            }])
        })?;
        Checker::new(path).check(docs)
    }
}

struct Checker<'a> {
    path: &'a Path,
    errors: Vec<SpecError>,
}

impl<'a> Checker<'a> {
    fn new(path: &'a Path) -> Self {
        Checker {
            path,
            errors: Vec::new(),
        }
    }

    fn err(&mut self, at: Option<serde_saphyr::Location>, message: impl Into<String>) {
        self.errors.push(SpecError {
            path: self.path.to_path_buf(),
            line: at.map(|l| l.line()),
            column: at.map(|l| l.column()),
            message: message.into(),
            snippet: None,
        });
    }

    fn check(mut self, docs: Vec<Document>) -> Result<GatewayFile, SpecErrors> {
        let mut gateways = Vec::new();
        let mut config_maps: Vec<(String, Option<serde_saphyr::Location>, ConfigMapData)> =
            Vec::new();
        let mut seen_docs = 0;
        for (index, doc) in docs.into_iter().enumerate() {
            let n = index + 1;
            let (Some(kind), Some(api_version)) = (doc.kind.as_ref(), doc.api_version.as_ref())
            else {
                if doc.kind.is_none() && doc.api_version.is_none() && doc.spec.is_none() {
                    // An empty document (a stray `---`) is harmless.
                    if doc.metadata.is_none() && doc.data.is_none() {
                        continue;
                    }
                }
                let at = doc
                    .kind
                    .as_ref()
                    .map(|k| k.referenced)
                    .or(doc.api_version.as_ref().map(|a| a.referenced))
                    .or(doc.metadata.as_ref().map(|m| m.referenced));
                self.err(
                    at,
                    format!("document {n}: expected both `apiVersion` and `kind`"),
                );
                continue;
            };
            seen_docs += 1;
            let meta = doc.metadata.as_ref().map(|m| m.value.clone());
            match kind.value.as_str() {
                "Gateway" => {
                    if !GATEWAY_API_VERSIONS.contains(&api_version.value.as_str()) {
                        self.err(
                            Some(api_version.referenced),
                            format!(
                                "apiVersion `{}` is not a Gateway version: expected one of {}",
                                api_version.value,
                                GATEWAY_API_VERSIONS.join(", ")
                            ),
                        );
                        continue;
                    }
                    let Some(meta) = meta.filter(|m| !m.name.is_empty()) else {
                        self.err(
                            Some(kind.referenced),
                            "Gateway: expected `metadata.name`".to_string(),
                        );
                        continue;
                    };
                    let Some(spec) = doc.spec else {
                        self.err(
                            Some(kind.referenced),
                            format!("Gateway `{}`: expected a `spec`", meta.name),
                        );
                        continue;
                    };
                    gateways.push((
                        Gateway {
                            api_version: api_version.value.clone(),
                            kind: kind.value.clone(),
                            metadata: meta,
                            spec: spec.value,
                        },
                        spec.referenced,
                    ));
                }
                "ConfigMap" => {
                    if api_version.value != "v1" {
                        self.err(
                            Some(api_version.referenced),
                            format!(
                                "apiVersion `{}` is not a ConfigMap version: expected v1",
                                api_version.value
                            ),
                        );
                        continue;
                    }
                    let Some(meta) = meta.filter(|m| !m.name.is_empty()) else {
                        self.err(
                            Some(kind.referenced),
                            "ConfigMap: expected `metadata.name`".to_string(),
                        );
                        continue;
                    };
                    config_maps.push((
                        meta.name,
                        Some(kind.referenced),
                        doc.data.unwrap_or_default(),
                    ));
                }
                other => self.err(
                    Some(kind.referenced),
                    format!("kind `{other}` is not expected here: expected Gateway or ConfigMap"),
                ),
            }
        }
        if gateways.len() > 1 {
            let at = gateways.get(1).map(|(_, at)| *at);
            self.err(at, "expected one Gateway in the file, found more");
        }
        let Some((gateway, spec_at)) = gateways.into_iter().next() else {
            if self.errors.is_empty() {
                let what = if seen_docs == 0 {
                    "the file holds no document"
                } else {
                    "the file holds no Gateway"
                };
                self.err(None, format!("{what}: expected a `kind: Gateway` document"));
            }
            return Err(SpecErrors(self.errors));
        };
        self.check_spec(&gateway, spec_at);
        let configurations = match &gateway.spec.config_map {
            Some(name) => match config_maps.iter().find(|(n, _, _)| n == name) {
                Some((_, _, data)) => data.clone(),
                None if config_maps.is_empty() => ConfigMapData::new(),
                None => {
                    let found: Vec<&str> = config_maps.iter().map(|(n, _, _)| n.as_str()).collect();
                    let at = config_maps.first().and_then(|(_, at, _)| *at);
                    self.err(
                        at,
                        format!(
                            "Gateway `{}` names ConfigMap `{name}`, but the file's ConfigMap is named {}",
                            gateway.metadata.name,
                            found.join(", ")
                        ),
                    );
                    ConfigMapData::new()
                }
            },
            None => match config_maps.len() {
                0 => ConfigMapData::new(),
                1 => config_maps.swap_remove(0).2,
                _ => {
                    self.err(
                        Some(spec_at),
                        "the file has several ConfigMaps: name the gateway's with `spec.configMap`",
                    );
                    ConfigMapData::new()
                }
            },
        };
        if self.errors.is_empty() {
            Ok(GatewayFile {
                path: self.path.to_path_buf(),
                gateway,
                configurations,
            })
        } else {
            Err(SpecErrors(self.errors))
        }
    }

    fn check_spec(&mut self, gateway: &Gateway, at: serde_saphyr::Location) {
        let spec = &gateway.spec;
        let name = &gateway.metadata.name;
        if spec.gateway_type.trim().is_empty() {
            self.err(
                Some(at),
                format!("Gateway `{name}`: expected `spec.type` (the CloudEvent type)"),
            );
        }
        if spec.rpc_port.is_some() && spec.http_server_port.is_some() {
            self.err(
                Some(at),
                format!(
                    "Gateway `{name}`: `rpcPort` and `httpServerPort` are both set: choose one processor style"
                ),
            );
        }
        if spec.grpc_protocol != GrpcProtocol::Portico && spec.rpc_port.is_none() {
            self.err(
                Some(at),
                format!(
                    "Gateway `{name}`: `grpcProtocol` is set but `rpcPort` is not: set `rpcPort` to the gRPC server's port, or drop `grpcProtocol`"
                ),
            );
        }
        let problems = crate::dispatch::watcher_problems(spec);
        for p in problems {
            self.err(Some(at), format!("Gateway `{name}`: {p}"));
        }
    }
}

/// Parses one configuration's value (YAML or JSON text) into `T`, with the place of any error.
pub fn parse_config<T: serde::de::DeserializeOwned>(src: &str, text: &str) -> Result<T, String> {
    serde_saphyr::from_str::<T>(text).map_err(|e| {
        let msg = e.to_string();
        let first = msg.lines().next().unwrap_or_default().to_string();
        let first = first.trim_start_matches("error: ").to_string();
        format!("configuration `{src}`: {first}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<GatewayFile, SpecErrors> {
        GatewayFile::parse(Path::new("gw.yaml"), text)
    }

    const GOOD: &str = "apiVersion: portico.dev/v1alpha1
kind: Gateway
metadata:
  name: cal
spec:
  type: calendar
  configMap: cal-cm
  watchers:
    urls: [\"http://127.0.0.1:1/x\", {url: \"http://127.0.0.1:2/y\", encoding: binary, timeout: 2s}]
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: cal-cm
data:
  a: |
    interval: 1s
";

    #[test]
    fn reads_a_gateway_and_its_configmap() {
        let f = parse(GOOD).unwrap();
        assert_eq!(f.gateway.metadata.name, "cal");
        assert_eq!(f.gateway.spec.gateway_type, "calendar");
        assert_eq!(f.gateway.spec.event_version, "1.0");
        assert_eq!(f.configurations.get("a").unwrap(), "interval: 1s\n");
        assert_eq!(f.gateway.spec.watchers.urls.len(), 2);
        match &f.gateway.spec.watchers.urls[1] {
            UrlWatcher::Detailed { url, settings } => {
                assert_eq!(url, "http://127.0.0.1:2/y");
                assert_eq!(settings.encoding, Some(Encoding::Binary));
                assert_eq!(settings.timeout, Some(Duration::from_secs(2)));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn accepts_the_argoproj_group_and_numeric_ports() {
        let text = GOOD
            .replace("portico.dev/v1alpha1", "argoproj.io/v1alpha1")
            .replace(
                "  configMap: cal-cm",
                "  configMap: cal-cm\n  rpcPort: 9898",
            );
        let f = parse(&text).unwrap();
        assert_eq!(f.gateway.spec.rpc_port, Some(Port(9898)));
    }

    #[test]
    fn grpc_protocol_selects_the_argo_generic_contract_and_needs_rpc_port() {
        let text = GOOD.replace(
            "  configMap: cal-cm",
            "  configMap: cal-cm\n  rpcPort: 9898\n  grpcProtocol: argo-generic",
        );
        let f = parse(&text).unwrap();
        assert_eq!(f.gateway.spec.grpc_protocol, GrpcProtocol::ArgoGeneric);
        assert_eq!(
            parse(GOOD).unwrap().gateway.spec.grpc_protocol,
            GrpcProtocol::Portico
        );
        let text = GOOD.replace(
            "  configMap: cal-cm",
            "  configMap: cal-cm\n  grpcProtocol: argo-generic",
        );
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("`rpcPort` is not"), "{e}");
        let text = GOOD.replace(
            "  configMap: cal-cm",
            "  configMap: cal-cm\n  rpcPort: 9898\n  grpcProtocol: grpc-web",
        );
        let e = parse(&text).unwrap_err().to_string();
        assert!(
            e.contains("argo-generic"),
            "the error lists the choices: {e}"
        );
    }

    #[test]
    fn a_syntax_error_names_file_line_and_column() {
        let text = GOOD.replace("  type: calendar", "  type: [calendar");
        let e = parse(&text).unwrap_err();
        assert_eq!(e.0.len(), 1);
        let e = &e.0[0];
        assert_eq!(e.line, Some(6));
        assert!(e.column.is_some());
        assert!(e.to_string().starts_with("gw.yaml:6:"), "{e}");
    }

    #[test]
    fn an_unknown_field_is_reported_with_what_was_expected() {
        let text = GOOD.replace("  type: calendar", "  tpye: calendar");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("gw.yaml:6:3"), "{e}");
        assert!(e.contains("unknown field `tpye`"), "{e}");
    }

    #[test]
    fn a_bad_port_names_its_place() {
        let text = GOOD.replace(
            "  configMap: cal-cm",
            "  configMap: cal-cm\n  rpcPort: \"99999\"",
        );
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("gw.yaml:8:"), "{e}");
        assert!(e.contains("port number"), "{e}");
    }

    #[test]
    fn a_wrong_api_version_and_kind_are_errors() {
        let text = GOOD.replace("portico.dev/v1alpha1", "portico.dev/v9");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("gw.yaml:1:13"), "{e}");
        assert!(e.contains("portico.dev/v1alpha1"), "{e}");
        let text = GOOD.replace("kind: ConfigMap", "kind: Secret");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("kind `Secret`"), "{e}");
    }

    #[test]
    fn a_configmap_value_must_be_text() {
        let text = GOOD.replace("  a: |\n    interval: 1s\n", "  a:\n    interval: 1s\n");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("gw.yaml:17:"), "{e}");
    }

    #[test]
    fn the_named_configmap_must_be_the_files() {
        let text = GOOD.replace("  name: cal-cm", "  name: other");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("names ConfigMap `cal-cm`"), "{e}");
    }

    #[test]
    fn a_sensor_needs_a_url_outside_a_cluster() {
        let text = GOOD.replace("    urls:", "    sensors: [{name: s1}]\n    urls:");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("watchers.sensors[0] `s1`"), "{e}");
        assert!(e.contains("url"), "{e}");
    }

    #[test]
    fn an_empty_file_is_an_error() {
        let e = parse("").unwrap_err().to_string();
        assert!(e.contains("no document"), "{e}");
    }

    #[test]
    fn parse_config_reports_the_configuration() {
        #[derive(Deserialize, Debug)]
        #[allow(dead_code)]
        struct C {
            interval: String,
        }
        let e = parse_config::<C>("cal.a", "intreval: 1s").unwrap_err();
        assert!(
            e.starts_with("configuration `cal.a`: line 1 column 1"),
            "{e}"
        );
    }
}
