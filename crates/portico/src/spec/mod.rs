//! The gateway model: the `Gateway` and `ConfigMap` manifests, read from a file ([`file`]) or
//! from the API server, and the watchers a gateway resolves to ([`watchers`]).
//!
//! The same [`GatewaySpec`] is the spec of the `Gateway` custom resource in a cluster: its
//! derive makes [`GatewayResource`] (group `portico.dev`, version `v1alpha1`, kind `Gateway`,
//! status subresource [`GatewayStatus`]) and the CRD that `portico crd` prints. The same
//! schema is served a second time in Argo Events' group `argoproj.io` ([`GatewayGroup`]), so
//! that the Gateways of a cluster moving from Argo Events v0.6 run unchanged.

pub(crate) mod file;
pub(crate) mod watchers;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{PodSpec, ServiceSpec};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

use crate::env;

pub(crate) use file::{GatewayFile, SpecErrors, parse_config, parse_value_as_written};

/// The API group of a Gateway: Portico's own, or Argo Events v0.6's (`argoproj.io`), whose
/// objects a cluster moving from Argo keeps. Both have version `v1alpha1`, kind `Gateway` and
/// the same spec; they differ in the label that gives a Gateway to a controller instance and
/// in how watchers receive events unless told otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum GatewayGroup {
    /// `portico.dev/v1alpha1`.
    Portico,
    /// `argoproj.io/v1alpha1`, Argo Events v0.6's.
    Argo,
}

impl GatewayGroup {
    /// Both groups, Portico's first.
    pub(crate) const ALL: [GatewayGroup; 2] = [GatewayGroup::Portico, GatewayGroup::Argo];

    /// The API group.
    pub(crate) fn group(self) -> &'static str {
        match self {
            GatewayGroup::Portico => "portico.dev",
            GatewayGroup::Argo => "argoproj.io",
        }
    }

    /// `<group>/v1alpha1`.
    pub(crate) fn api_version(self) -> &'static str {
        match self {
            GatewayGroup::Portico => "portico.dev/v1alpha1",
            GatewayGroup::Argo => "argoproj.io/v1alpha1",
        }
    }

    /// The group of a Gateway's `apiVersion`, if it is one of the two.
    pub(crate) fn of(api_version: &str) -> Option<GatewayGroup> {
        GatewayGroup::ALL
            .into_iter()
            .find(|g| g.api_version() == api_version)
    }

    /// The label that gives a Gateway of this group to the controller of an instance id:
    /// `portico.dev/controller-instance-id`, or Argo Events' own
    /// `gateways.argoproj.io/gateway-controller-instanceid`.
    pub(crate) fn instance_label(self) -> &'static str {
        match self {
            GatewayGroup::Portico => INSTANCE_LABEL,
            GatewayGroup::Argo => ARGO_INSTANCE_LABEL,
        }
    }

    /// How HTTP watchers receive events when neither they nor `spec.delivery` name an
    /// encoding: CloudEvents 1.0 structured, or, for Argo's group, the CloudEvents 0.1 JSON
    /// that Argo Events v0.6's sensors read.
    pub(crate) fn default_encoding(self) -> Encoding {
        match self {
            GatewayGroup::Portico => Encoding::Structured,
            GatewayGroup::Argo => Encoding::Legacy,
        }
    }

    /// The resource, for API calls on Gateways of this group.
    pub(crate) fn api_resource(self) -> kube::core::ApiResource {
        let gvk = kube::core::GroupVersionKind::gvk(self.group(), "v1alpha1", "Gateway");
        kube::core::ApiResource::from_gvk_with_plural(&gvk, "gateways")
    }

    /// The CustomResourceDefinition of this group's Gateway: the same schema, names and
    /// columns in both groups.
    pub(crate) fn crd(
        self,
    ) -> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition
    {
        use kube::CustomResourceExt;
        let mut crd = GatewayResource::crd();
        if self == GatewayGroup::Argo {
            crd.metadata.name = Some(format!("gateways.{}", self.group()));
            crd.spec.group = self.group().to_string();
            crd.spec.names.categories =
                Some(vec!["argo-events".to_string(), "portico".to_string()]);
        }
        crd
    }
}

/// The configurations of a gateway: key (`src`) → value (YAML or JSON text).
pub(crate) type ConfigMapData = BTreeMap<String, String>;

/// Object metadata, the part of Kubernetes' `ObjectMeta` a gateway file uses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ObjectMeta {
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
pub(crate) struct GatewaySpec {
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
    /// The pod of the gateway's StatefulSet (used by the controller, which adds the
    /// gateway's environment (docs/contract.md) to every container). A Kubernetes PodSpec,
    /// kept open in the CRD's schema: the API server checks it when the controller applies
    /// the StatefulSet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "open_pod_spec")]
    pub deploy_spec: Option<PodSpec>,
    /// The gateway's Service `<name>-gateway-svc` (used by the controller; the selector
    /// defaults to the gateway's pods). A Kubernetes ServiceSpec, kept open in the CRD's
    /// schema like `deploySpec`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "open_service_spec")]
    pub service_spec: Option<ServiceSpec>,
    /// What the gateway demands of its configurations' security.
    #[serde(default, skip_serializing_if = "Security::is_default")]
    pub security: Security,
    /// Argo Events v0.6: the tag of its framework images. Taken, with a warning: Portico's
    /// image is the one `deploySpec` names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_version: Option<String>,
    /// Argo Events (before v0.6): taken, with a warning; set `imagePullPolicy` on the
    /// containers of `deploySpec`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    /// Argo Events (before v0.6): taken, with a warning; set `serviceAccountName` in
    /// `deploySpec`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Argo Events (before v0.6): taken, with a warning; the processor's port is
    /// `rpcPort` or `httpServerPort`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processor_port: Option<Port>,
    /// Replicas of the gateway (default 1). With more than one, the replicas share the
    /// configurations: each sharded configuration runs on one replica at a time, the others
    /// on every replica (`placement`). In a cluster they coordinate through Leases unless
    /// `coordination` names a NATS server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    /// How the replicas share configurations. Outside a cluster, `coordination.nats` makes
    /// every `portico run` of this gateway that names the same bucket one of its replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordination: Option<CoordinationSpec>,
    /// Where every configuration runs when replicas share them, over its type's own
    /// placement: `sharded` (on one replica at a time) or `everywhere`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<crate::coordination::Placement>,
}

/// `spec.coordination`: how a gateway's replicas share its configurations.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct CoordinationSpec {
    /// A NATS JetStream key-value bucket holding the member and bucket records (the
    /// default in a cluster is Leases in the gateway's namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nats: Option<crate::coordination::NatsCoordination>,
    /// Buckets the configurations are hashed into (default 32, 1–4096): the unit that moves
    /// between replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buckets: Option<u32>,
    /// How long a replica's hold on its buckets lasts after its last renewal (default `15s`):
    /// a replica that dies is replaced within this and one renew period.
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<String>")]
    pub lease_duration: Option<Duration>,
    /// How often a replica renews its records (default `5s`; less than a third of
    /// `leaseDuration`).
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<String>")]
    pub renew_period: Option<Duration>,
}

impl CoordinationSpec {
    /// The settings it gives, or what is wrong with it.
    pub(crate) fn settings(&self) -> Result<crate::coordination::Settings, String> {
        let d = crate::coordination::Settings::default();
        let s = crate::coordination::Settings {
            buckets: self.buckets.unwrap_or(d.buckets),
            lease: self.lease_duration.unwrap_or(d.lease),
            renew: self.renew_period.unwrap_or(d.renew),
        };
        if !(1..=4096).contains(&s.buckets) {
            return Err(format!(
                "coordination.buckets is {}: give 1 to 4096",
                s.buckets
            ));
        }
        if s.renew < Duration::from_millis(100) {
            return Err("coordination.renewPeriod is under 100ms".to_string());
        }
        if s.renew.saturating_mul(3) > s.lease {
            return Err(format!(
                "coordination.renewPeriod ({}) must be at most a third of leaseDuration ({}): a replica renews several times before its hold expires",
                humantime::format_duration(s.renew),
                humantime::format_duration(s.lease)
            ));
        }
        if let Some(n) = &self.nats {
            if n.bucket.is_empty()
                || !n
                    .bucket
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(format!(
                    "coordination.nats.bucket `{}`: a key-value bucket's name is letters, digits, `-` and `_`",
                    n.bucket
                ));
            }
            if !n.url.starts_with("nats://") && !n.url.starts_with("tls://") {
                return Err(format!(
                    "coordination.nats.url `{}`: expected nats://host:port",
                    n.url
                ));
            }
        }
        Ok(s)
    }
}

impl GatewaySpec {
    /// The fields of Argo Events' Gateway that this spec takes but that have no effect, each
    /// with why and what to use instead.
    pub(crate) fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut say = |set: bool, field: &str, why: &str| {
            if set {
                out.push(format!(
                    "spec.{field}: a field of Argo Events' Gateway that has no effect here: {why}"
                ));
            }
        };
        say(
            self.image_version.is_some(),
            "imageVersion",
            "the gateway's image is the one its deploySpec names",
        );
        say(
            self.image_pull_policy.is_some(),
            "imagePullPolicy",
            "set imagePullPolicy on the containers of deploySpec",
        );
        say(
            self.service_account_name.is_some(),
            "serviceAccountName",
            "set serviceAccountName in deploySpec",
        );
        say(
            self.processor_port.is_some(),
            "processorPort",
            "the processor's port is rpcPort or httpServerPort",
        );
        out
    }
}

/// The label that gives a `portico.dev` Gateway to the controller of that instance id.
pub(crate) const INSTANCE_LABEL: &str = "portico.dev/controller-instance-id";
/// The label that gives an `argoproj.io` Gateway to the controller of that instance id (Argo
/// Events' own).
pub(crate) const ARGO_INSTANCE_LABEL: &str = "gateways.argoproj.io/gateway-controller-instanceid";

/// `spec.security`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Security {
    /// Refuse a configuration that would take events from anyone who reaches its port (a
    /// webhook with no secret): an error instead of a warning. Default `false`.
    #[serde(default)]
    pub require_auth: bool,
}

impl Security {
    fn is_default(&self) -> bool {
        *self == Security::default()
    }
}

/// The gRPC contract a gRPC-style gateway's server speaks (`spec.grpcProtocol`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub(crate) enum GrpcProtocol {
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

/// How events leave the gateway.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub(crate) enum DispatchMechanism {
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
    /// Which events are sent: a filter, as a URL watcher's `filter` takes (a CEL expression
    /// or a CloudEvents Subscriptions API filter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "filter_schema")]
    pub filter: Option<crate::filter::FilterSpec>,
    /// TLS toward the server (as with a `tls://` URL): its CA, a client certificate for
    /// mutual TLS, and `serverName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<crate::security::TlsConfig>,
    /// A user name, with `passwordFile` or `passwordEnv`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// A file holding the user's password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<String>,
    /// An environment variable holding the user's password, instead of `passwordFile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// A file holding an authentication token, instead of a user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<String>,
    /// An environment variable holding the token, instead of `tokenFile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// A NATS credentials file (a user JWT and its nkey seed), instead of a user or a token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_file: Option<String>,
    /// A file holding an nkey seed (`SU…`), instead of a user or a token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nkey_file: Option<String>,
}

impl NatsDispatch {
    /// The one way to authenticate the fields give.
    pub fn auth(&self) -> Result<crate::security::NatsAuth, crate::ConfigError> {
        crate::security::NatsAuthFields {
            user: self.user.as_deref(),
            password_file: self.password_file.as_deref(),
            password_env: self.password_env.as_deref(),
            token_file: self.token_file.as_deref(),
            token_env: self.token_env.as_deref(),
            credentials_file: self.credentials_file.as_deref(),
            nkey_file: self.nkey_file.as_deref(),
        }
        .check()
    }
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
    /// Which events are sent: a filter, as a URL watcher's `filter` takes (a CEL expression
    /// or a CloudEvents Subscriptions API filter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "filter_schema")]
    pub filter: Option<crate::filter::FilterSpec>,
    /// TLS toward the brokers: their CA (the system's roots by default) and a client
    /// certificate for mutual TLS (no `serverName`: the client checks the hosts of `url`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<crate::security::TlsConfig>,
    /// SASL authentication (`PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`), over TLS with `tls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl: Option<crate::security::SaslConfig>,
}

/// Where events go.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Watchers {
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

/// A sensor watcher.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SensorWatcher {
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
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GatewayWatcher {
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
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
#[allow(clippy::large_enum_variant)] // parsed once per file; boxing would only add noise
pub(crate) enum UrlWatcher {
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

/// The keys of [`WatcherSettings`] as they are written (a test checks them against its schema).
pub(crate) const SETTINGS_KEYS: &[&str] = &[
    "encoding",
    "timeout",
    "queueSize",
    "concurrency",
    "maxEvents",
    "maxDelay",
    "retry",
    "mode",
    "outbox",
    "deadLetter",
    "movedFrom",
    "bearerTokenFile",
    "bearerTokenEnv",
    "headers",
    "filter",
    "rateLimit",
];

/// A watcher entry as written: its own keys (`own`) and its delivery settings. Every key must
/// be one of them: any other is an error where it is written (serde's `flatten` would let it
/// pass unseen).
fn watcher_entry<'de, D, T>(
    d: D,
    what: &'static str,
    own: &'static [&'static str],
) -> Result<(T, WatcherSettings), D::Error>
where
    D: Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    use serde::de::{Error, MapAccess, Visitor};
    use serde_json::{Map, Value};

    struct Entry {
        what: &'static str,
        own: &'static [&'static str],
    }

    impl<'de> Visitor<'de> for Entry {
        type Value = (Map<String, Value>, Map<String, Value>);

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{}", self.what)
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let (mut own, mut settings) = (Map::new(), Map::new());
            while let Some(key) = map.next_key::<String>()? {
                if self.own.contains(&key.as_str()) {
                    own.insert(key, map.next_value()?);
                } else if SETTINGS_KEYS.contains(&key.as_str()) {
                    settings.insert(key, map.next_value()?);
                } else {
                    let expected: Vec<&str> =
                        self.own.iter().chain(SETTINGS_KEYS).copied().collect();
                    return Err(A::Error::custom(format!(
                        "unknown field `{key}`, expected one of {}",
                        expected.join(", ")
                    )));
                }
            }
            Ok((own, settings))
        }
    }

    let (own, settings) = d.deserialize_map(Entry { what, own })?;
    let own: T = serde_json::from_value(Value::Object(own)).map_err(D::Error::custom)?;
    let settings: WatcherSettings =
        serde_json::from_value(Value::Object(settings)).map_err(D::Error::custom)?;
    Ok((own, settings))
}

impl<'de> Deserialize<'de> for SensorWatcher {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Own {
            name: String,
            #[serde(default)]
            url: Option<String>,
        }
        let (own, settings): (Own, _) = watcher_entry(
            d,
            "a sensor watcher: `{name, url, …settings}`",
            &["name", "url"],
        )?;
        Ok(SensorWatcher {
            name: own.name,
            url: own.url,
            settings,
        })
    }
}

impl<'de> Deserialize<'de> for GatewayWatcher {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Own {
            name: String,
            #[serde(default)]
            port: Option<Port>,
            #[serde(default)]
            endpoint: Option<String>,
            #[serde(default)]
            url: Option<String>,
        }
        let (own, settings): (Own, _) = watcher_entry(
            d,
            "a gateway watcher: `{name, port, endpoint, url, …settings}`",
            &["name", "port", "endpoint", "url"],
        )?;
        Ok(GatewayWatcher {
            name: own.name,
            port: own.port,
            endpoint: own.endpoint,
            url: own.url,
            settings,
        })
    }
}

impl<'de> Deserialize<'de> for UrlWatcher {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{MapAccess, Visitor, value::MapAccessDeserializer};

        struct Either;

        impl<'de> Visitor<'de> for Either {
            type Value = UrlWatcher;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a URL, or `{url, …settings}`")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<UrlWatcher, E> {
                Ok(UrlWatcher::Url(v.to_string()))
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<UrlWatcher, A::Error> {
                #[derive(Deserialize)]
                struct Own {
                    url: String,
                }
                let (own, settings): (Own, _) = watcher_entry(
                    MapAccessDeserializer::new(map),
                    "`{url, …settings}`",
                    &["url"],
                )?;
                Ok(UrlWatcher::Detailed {
                    url: own.url,
                    settings,
                })
            }
        }

        d.deserialize_any(Either)
    }
}

/// The schema of an embedded Kubernetes object kept open (as Argo Events does): inlining the
/// whole PodSpec and ServiceSpec schemas makes a CRD that client-side `kubectl apply` cannot
/// store (its last-applied annotation would pass the API server's 256 KiB limit).
fn open_object(description: &str) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "description": description,
        "x-kubernetes-preserve-unknown-fields": true
    })
}

fn open_pod_spec(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    open_object("A Kubernetes PodSpec: the pod of the gateway's StatefulSet.")
}

fn open_service_spec(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    open_object("A Kubernetes ServiceSpec: the gateway's Service.")
}

impl JsonSchema for UrlWatcher {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "UrlWatcher".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        // A string or an object: not expressible as one structural schema, so the API server
        // keeps it as given and the gateway checks it when it reads its spec.
        schemars::json_schema!({
            "description": "A URL (`http://…`), or `{url, encoding, timeout, queueSize, concurrency, maxEvents, maxDelay, retry, …}`.",
            "x-kubernetes-preserve-unknown-fields": true
        })
    }
}

/// How CloudEvents are written on an HTTP request.
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
    /// `application/cloudevents-batch+json`: up to `maxEvents` events in one request, sent
    /// once `maxEvents` are waiting or `maxDelay` after the first. The watcher's answer is for
    /// the whole batch; a failed batch is retried as it is, and the watcher has one batch in
    /// flight at a time, so events arrive in the order they were accepted (`concurrency` does
    /// not apply).
    Batch,
}

/// Delivery settings: gateway-wide in `spec.delivery`, and per watcher, where every field
/// falls back to the gateway's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct WatcherSettings {
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
    /// With `encoding: batch`: the most events in one request (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_events: Option<usize>,
    /// With `encoding: batch`: how long the first event of a batch waits for more before the
    /// batch is sent (default `5ms`).
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<String>")]
    pub max_delay: Option<Duration>,
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
    /// `urls` only: the URL this watcher had before its address changed. The events still
    /// pending for the old address are delivered to the new one; without it they go to the
    /// dead letters (reason `watcher removed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved_from: Option<String>,
    /// A watcher's own: a file holding a bearer token, sent with every delivery as
    /// `Authorization: Bearer <token>` (a mounted Kubernetes Secret or a projected service
    /// account token; read again when the file changes). The token is never shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_file: Option<String>,
    /// A watcher's own: an environment variable holding the bearer token, instead of
    /// `bearerTokenFile` (from a Secret with `valueFrom.secretKeyRef`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_env: Option<String>,
    /// A watcher's own: headers sent with every delivery. A value from a file or an
    /// environment variable is a secret: never shown.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderSetting>,
    /// A watcher's own: which events it gets. A CEL expression over the CloudEvent (its
    /// attributes and extensions by name, its data as `data`: `type == "order.created" &&
    /// data.total > 100`), or a CloudEvents Subscriptions API filter (`{exact: {type:
    /// order.created}}`, `prefix`, `suffix`, `all`, `any`, `not`). Events that do not pass
    /// are not sent to it, and counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "filter_schema")]
    pub filter: Option<crate::filter::FilterSpec>,
    /// Deliveries per second at most (`{perSecond: 50, burst: 10}`). Events past it wait in
    /// the watcher's queue, and sources are pushed back once that is full: none is dropped
    /// because of the limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitSettings>,
}

/// A rate limit: so many per second on average, so many at once.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RateLimitSettings {
    /// How many per second on average (at least 0.001; `0.5` is one every two seconds).
    pub per_second: f64,
    /// How many may go at once after a quiet spell. Default: 1 (evenly paced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

/// The slowest rate limit: one every 1,000 seconds.
const MIN_PER_SECOND: f64 = 0.001;

impl RateLimitSettings {
    /// What is wrong with it, if anything.
    pub(crate) fn problem(&self) -> Option<String> {
        if !(self.per_second.is_finite() && self.per_second >= MIN_PER_SECOND) {
            return Some(format!(
                "rateLimit.perSecond is {}: give a number above 0, at least {MIN_PER_SECOND} (one every 1000 s)",
                self.per_second
            ));
        }
        if self.burst == Some(0) {
            return Some("rateLimit.burst is 0: give at least 1".to_string());
        }
        None
    }

    /// Its limiter (meant for a limit without a [`RateLimitSettings::problem`]; any other is
    /// taken as the slowest).
    pub(crate) fn limiter(&self) -> governor::DefaultDirectRateLimiter {
        // At most 1,000 s: `from_secs_f64` cannot overflow.
        let period = Duration::from_secs_f64(1.0 / self.per_second.max(MIN_PER_SECOND))
            .max(Duration::from_nanos(1));
        let burst =
            std::num::NonZeroU32::new(self.burst.unwrap_or(1)).unwrap_or(std::num::NonZeroU32::MIN);
        let quota = governor::Quota::with_period(period)
            .expect("a period of at least 1 ns")
            .allow_burst(burst);
        governor::RateLimiter::direct(quota)
    }
}

/// A filter's schema: a string or an object, kept as given (the gateway checks it).
fn filter_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "A CEL expression over the CloudEvent, or a CloudEvents Subscriptions API filter (`{exact: {type: …}}`, `prefix`, `suffix`, `all`, `any`, `not`).",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// A header an HTTP watcher sends with every delivery: its value written out, or read from a
/// file (read again when it changes) or an environment variable.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct HeaderSetting {
    /// The header's name (`X-Api-Key`).
    pub name: String,
    /// The value, written out (not a secret: it is in the gateway file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// A file holding the value (trailing newlines are not part of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_file: Option<String>,
    /// An environment variable holding the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_env: Option<String>,
}

/// How events are delivered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) enum DeliveryMode {
    /// Every event is written to the durable outbox (fsynced) before its source is told it was
    /// accepted; events not yet delivered are replayed after a restart.
    #[default]
    AtLeastOnce,
    /// Events are queued in memory only: nothing survives a crash, and a source never waits
    /// for a disk. A source that cannot be slowed down without loss never waits for room
    /// either: an event that finds the gateway full is dropped and counted
    /// (`portico_events_rejected_total{reason="full"}`): calendar ticks, broker messages, file and
    /// resource events. Sources that push back without loss still do: HTTP callers are held up
    /// to `--admission-wait` then get 503, a gRPC stream is slowed by its flow control.
    AtMostOnce,
    /// `atLeastOnce`, except that sources which acknowledge their own messages one by one
    /// (the `nats` gateway's JetStream consumers, the `redis` gateway's Streams consumer
    /// groups, the `artifact` gateway's SQS queue) ack each one only after every watcher took
    /// it (or it was dead-lettered), and
    /// their events skip the outbox: the broker keeps them until then. Every other source goes
    /// through the outbox as in `atLeastOnce`.
    AckAfterDelivery,
}

/// The durable outbox of a gateway.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct OutboxSettings {
    /// Its directory. Default: `$XDG_STATE_HOME/portico/<namespace>/<gateway>/outbox`
    /// (`~/.local/state/…` when `XDG_STATE_HOME` is unset); `--outbox-dir` /
    /// `PORTICO_OUTBOX_DIR` override both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// Bytes on disk past which sources are pushed back (503, no broker ack). Default 1 GiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    /// In a cluster: a PersistentVolumeClaim per replica for its outbox (the controller's
    /// StatefulSet makes them), so that a replica coming back under its name replays what it
    /// had not delivered. Without it, each replica's outbox is an emptyDir, lost with its pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<OutboxStorage>,
}

/// `spec.delivery.outbox.storage`: the volume of each replica's outbox.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct OutboxStorage {
    /// Its size, as a Kubernetes quantity (`1Gi`).
    pub size: String,
    /// Its StorageClass (the cluster's default when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

/// A dead-letter destination: a file (one CloudEvent in JSON a line) or a URL (the CloudEvent
/// POSTed in structured mode). Each event carries the extensions `deadletterwatcher` and
/// `deadletterreason`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct DeadLetterSettings {
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
pub(crate) struct RetrySettings {
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

    pub(crate) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
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
pub(crate) struct GatewayStatus {
    /// What the controller made of the gateway: `Running` or `Error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Why the gateway is in that phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The nodes of the gateway's configurations, by configuration id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub nodes: BTreeMap<String, NodeStatus>,
    /// With several replicas: each live replica, by name, and the buckets of configurations
    /// it holds.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub members: BTreeMap<String, MemberStatus>,
}

/// One replica as `Gateway.status.members` shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MemberStatus {
    /// The buckets it holds (a configuration's bucket is a hash of its key).
    #[serde(default)]
    pub buckets: Vec<u32>,
}

/// One node as `Gateway.status.nodes` shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct NodeStatus {
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
    /// The replica that runs it (`PORTICO_REPLICA`, the pod's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
}

/// A `Gateway` resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Gateway {
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
    /// The API group of the gateway (Portico's when its `apiVersion` is neither).
    pub(crate) fn group(&self) -> GatewayGroup {
        GatewayGroup::of(&self.api_version).unwrap_or(GatewayGroup::Portico)
    }

    /// Namespace of the gateway (`default` when unset).
    pub(crate) fn namespace(&self) -> &str {
        self.metadata.namespace.as_deref().unwrap_or("default")
    }

    /// Where the gateway's outbox lives unless told otherwise:
    /// `$XDG_STATE_HOME/portico/<namespace>/<gateway>/outbox`, with `XDG_STATE_HOME`
    /// defaulting to `~/.local/state`; without a home directory,
    /// `./.portico/<namespace>/<gateway>/outbox`.
    pub(crate) fn default_outbox_dir(&self) -> PathBuf {
        let base = env::var("XDG_STATE_HOME")
            .map(PathBuf::from)
            .or_else(|| env::var("HOME").map(|h| PathBuf::from(h).join(".local/state")))
            .map(|s| s.join("portico"))
            .unwrap_or_else(|| PathBuf::from(".portico"));
        base.join(self.namespace())
            .join(&self.metadata.name)
            .join("outbox")
    }

    /// The environment a gateway's user process gets: the controller puts these variables
    /// on every container of the gateway's pod, `portico run FILE -- COMMAND` on the child.
    /// The five variables every gateway process had in Argo Events are always there (empty
    /// when there is no value): the controller's instance id is `instance_id`, else the
    /// gateway's instance label (`portico.dev/controller-instance-id`, or
    /// `gateways.argoproj.io/gateway-controller-instanceid` for an `argoproj.io` Gateway).
    pub(crate) fn contract(
        &self,
        transformer_port: u16,
        instance_id: Option<&str>,
    ) -> Vec<(&'static str, String)> {
        let spec = &self.spec;
        let mut vars = vec![
            (env::TRANSFORMER_PORT, transformer_port.to_string()),
            (env::GATEWAY_NAMESPACE, self.namespace().to_string()),
            (env::GATEWAY_NAME, self.metadata.name.clone()),
        ];
        vars.push((
            env::GATEWAY_PROCESSOR_CONFIG_MAP,
            spec.config_map.clone().unwrap_or_default(),
        ));
        let instance = instance_id
            .map(str::to_string)
            .or_else(|| {
                let label = self.group().instance_label();
                self.metadata.labels.get(label).cloned()
            })
            .unwrap_or_default();
        vars.push((env::GATEWAY_CONTROLLER_INSTANCE_ID, instance));
        if let Some(p) = spec.rpc_port {
            vars.push((env::GATEWAY_PROCESSOR_GRPC_SERVER_PORT, p.to_string()));
        }
        if let Some(p) = spec.http_server_port {
            vars.push((env::GATEWAY_PROCESSOR_SERVER_HTTP_PORT, p.to_string()));
            vars.push((
                env::GATEWAY_PROCESSOR_CLIENT_HTTP_PORT,
                env::DEFAULT_PROCESSOR_CLIENT_HTTP_PORT.to_string(),
            ));
            for (name, default) in [
                (
                    env::GATEWAY_HTTP_CONFIG_START,
                    env::DEFAULT_HTTP_CONFIG_START,
                ),
                (env::GATEWAY_HTTP_CONFIG_STOP, env::DEFAULT_HTTP_CONFIG_STOP),
                (
                    env::GATEWAY_HTTP_CONFIG_EVENT,
                    env::DEFAULT_HTTP_CONFIG_EVENT,
                ),
                (
                    env::GATEWAY_HTTP_CONFIG_RUNNING,
                    env::DEFAULT_HTTP_CONFIG_RUNNING,
                ),
                (
                    env::GATEWAY_HTTP_CONFIG_ERROR,
                    env::DEFAULT_HTTP_CONFIG_ERROR,
                ),
            ] {
                vars.push((name, default.to_string()));
            }
        }
        vars
    }
}

impl Gateway {
    /// The gateway of a Gateway object of `group` read from the API server.
    pub(crate) fn from_object(
        group: GatewayGroup,
        object: &kube::core::DynamicObject,
    ) -> Result<Gateway, serde_json::Error> {
        let m = &object.metadata;
        let spec = object
            .data
            .get("spec")
            .cloned()
            .unwrap_or_else(|| serde_json::Value::Object(Default::default()));
        Ok(Gateway {
            api_version: group.api_version().to_string(),
            kind: "Gateway".to_string(),
            metadata: ObjectMeta {
                name: m.name.clone().unwrap_or_default(),
                namespace: m.namespace.clone(),
                labels: m.labels.clone().unwrap_or_default(),
                annotations: m.annotations.clone().unwrap_or_default(),
            },
            spec: serde_json::from_value(spec)?,
        })
    }
}

/// The status of a Gateway object read from the API server (empty when it has none or it
/// cannot be read).
pub(crate) fn status_of(object: &kube::core::DynamicObject) -> GatewayStatus {
    object
        .data
        .get("status")
        .and_then(|s| serde_json::from_value(s.clone()).ok())
        .unwrap_or_default()
}

/// The `Gateway` CustomResourceDefinitions of both groups as YAML documents, as `portico crd`
/// prints them and `deploy/crd.yaml` holds them.
pub(crate) fn crd_yaml(groups: &[GatewayGroup]) -> Result<String, serde_saphyr::SerializeError> {
    let mut out = String::new();
    for group in groups {
        if !out.is_empty() {
            out.push_str("---\n");
        }
        out.push_str(&serde_saphyr::to_string(&group.crd())?);
    }
    Ok(out)
}

/// Every problem found with a gateway, each saying what is wrong and where.
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub(crate) struct Problems(pub(crate) Vec<String>);
