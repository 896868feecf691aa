//! The environment contract of a gateway's processes, in one place (docs/contract.md states it).
//!
//! The controller sets these variables on every container of a gateway pod, and
//! `portico run FILE -- COMMAND…` sets them on the user's process. Names are the seed's; every
//! default lives here and nowhere else.

/// HTTP port of the transformer (ingest, health, metrics, status).
pub const TRANSFORMER_PORT: &str = "TRANSFORMER_PORT";
/// Namespace of the gateway.
pub const GATEWAY_NAMESPACE: &str = "GATEWAY_NAMESPACE";
/// ConfigMap holding the configurations.
pub const GATEWAY_PROCESSOR_CONFIG_MAP: &str = "GATEWAY_PROCESSOR_CONFIG_MAP";
/// Name of the gateway.
pub const GATEWAY_NAME: &str = "GATEWAY_NAME";
/// Instance id of the controller that owns the gateway.
pub const GATEWAY_CONTROLLER_INSTANCE_ID: &str = "GATEWAY_CONTROLLER_INSTANCE_ID";
/// gRPC style: port of the user's gRPC server.
pub const GATEWAY_PROCESSOR_GRPC_SERVER_PORT: &str = "GATEWAY_PROCESSOR_GRPC_SERVER_PORT";
/// HTTP style: port of the user's HTTP server.
pub const GATEWAY_PROCESSOR_SERVER_HTTP_PORT: &str = "GATEWAY_PROCESSOR_SERVER_HTTP_PORT";
/// HTTP style: port of the framework's HTTP server.
pub const GATEWAY_PROCESSOR_CLIENT_HTTP_PORT: &str = "GATEWAY_PROCESSOR_CLIENT_HTTP_PORT";
/// HTTP style: user endpoint that starts a configuration.
pub const GATEWAY_HTTP_CONFIG_START: &str = "GATEWAY_HTTP_CONFIG_START";
/// HTTP style: user endpoint that stops a configuration.
pub const GATEWAY_HTTP_CONFIG_STOP: &str = "GATEWAY_HTTP_CONFIG_STOP";
/// HTTP style: framework endpoint that takes events.
pub const GATEWAY_HTTP_CONFIG_EVENT: &str = "GATEWAY_HTTP_CONFIG_EVENT";
/// HTTP style: framework endpoint told that a configuration runs.
pub const GATEWAY_HTTP_CONFIG_RUNNING: &str = "GATEWAY_HTTP_CONFIG_RUNNING";
/// HTTP style: framework endpoint told that a configuration failed.
pub const GATEWAY_HTTP_CONFIG_ERROR: &str = "GATEWAY_HTTP_CONFIG_ERROR";
/// Knative: one more watcher URL.
pub const K_SINK: &str = "K_SINK";
/// Knative: `{"extensions":{…}}` set on every outgoing event.
pub const K_CE_OVERRIDES: &str = "K_CE_OVERRIDES";
/// A file holding the bearer token the transformer's ingest API requires (`Authorization:
/// Bearer <token>`); a user process posting events reads it from there.
pub const PORTICO_INGEST_TOKEN_FILE: &str = "PORTICO_INGEST_TOKEN_FILE";
/// The URL of a sensor watcher given by name only, as a template (`{name}`, `{namespace}`).
pub const PORTICO_SENSOR_URL: &str = "PORTICO_SENSOR_URL";
/// The URL of a gateway watcher given by name only, as a template (`{name}`, `{namespace}`,
/// `{port}`, `{endpoint}`).
pub const PORTICO_GATEWAY_URL: &str = "PORTICO_GATEWAY_URL";
/// Set by Kubernetes in every pod: tells that the process runs in a cluster.
pub const KUBERNETES_SERVICE_HOST: &str = "KUBERNETES_SERVICE_HOST";

/// Where the ingest token is in a gateway's pod: the controller mounts a volume shared by
/// the pod's containers at its directory, and the first `portico` to start writes a token
/// there.
pub const POD_INGEST_TOKEN_FILE: &str = "/var/run/portico/ingest-token";
/// Default of [`TRANSFORMER_PORT`].
pub const DEFAULT_TRANSFORMER_PORT: u16 = 9300;
/// Default of [`GATEWAY_PROCESSOR_CLIENT_HTTP_PORT`].
pub const DEFAULT_PROCESSOR_CLIENT_HTTP_PORT: u16 = 9393;
/// Default of [`GATEWAY_HTTP_CONFIG_START`].
pub const DEFAULT_HTTP_CONFIG_START: &str = "/start";
/// Default of [`GATEWAY_HTTP_CONFIG_STOP`].
pub const DEFAULT_HTTP_CONFIG_STOP: &str = "/stop";
/// Default of [`GATEWAY_HTTP_CONFIG_EVENT`].
pub const DEFAULT_HTTP_CONFIG_EVENT: &str = "/event";
/// Default of [`GATEWAY_HTTP_CONFIG_RUNNING`].
pub const DEFAULT_HTTP_CONFIG_RUNNING: &str = "/activated";
/// Default of [`GATEWAY_HTTP_CONFIG_ERROR`].
pub const DEFAULT_HTTP_CONFIG_ERROR: &str = "/error";

/// A variable's value, when it is set and not empty.
pub fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// True when the process runs inside a Kubernetes pod.
pub fn in_cluster() -> bool {
    var(KUBERNETES_SERVICE_HOST).is_some()
}

/// The name of this replica of a gateway (`/status` and the status page show it):
/// `PORTICO_REPLICA` (a pod's name, in a cluster), else the host's name and the process id.
pub fn replica() -> String {
    var(PORTICO_REPLICA).unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .or_else(|| var("HOSTNAME"))
            .unwrap_or_else(|| "localhost".to_string());
        format!("{host}-{}", std::process::id())
    })
}

/// Names this replica of a gateway (see [`replica`]).
pub const PORTICO_REPLICA: &str = "PORTICO_REPLICA";

/// The directory of the durable outbox, over the gateway's `spec.delivery.outbox.path`.
pub const PORTICO_OUTBOX_DIR: &str = "PORTICO_OUTBOX_DIR";
