//! The controller (`portico controller`): makes each Gateway labelled
//! `portico.dev/controller-instance-id=<its id>` into a StatefulSet of `spec.replicas` pods with
//! a headless Service (and a Service when `serviceSpec` is given) and shows the gateway's phase. Argo Events v0.6's Gateways
//! (`argoproj.io/v1alpha1`, the same spec) are reconciled the same way when labelled
//! `gateways.argoproj.io/gateway-controller-instanceid=<its id>`, as v0.6's controller selected
//! them, so that a cluster moves from Argo Events by replacing its controller.
//!
//! Reconcile is a function of the Gateway and the world (kube-runtime's `Controller`): it
//! computes the desired StatefulSet and Services, applies them with server-side apply (owned by
//! the Gateway through a controller owner reference), and writes `status.phase` and
//! `status.message` when they change. It runs on every change of the Gateway and of what it
//! owns, so a deleted or edited StatefulSet or Service is put back (the original reconciled
//! once and never again). A Gateway that fails validation gets phase `Error` with the reason
//! and is requeued with capped exponential backoff.
//!
//! Names: the StatefulSet is `<gateway>-gateway` (`<gateway>-gateway-deployment` for an
//! `argoproj.io` Gateway, the name of v0.6's Deployment), the headless Service
//! `<gateway>-gateway-pods`, the Service `<gateway>-gateway-svc` (the address other gateways'
//! watchers resolve to). Each replica's outbox is a volume at `/var/lib/portico/outbox`: a
//! PersistentVolumeClaim per replica when `spec.delivery.outbox.storage` is set, an emptyDir
//! (and a warning in the Gateway's status) otherwise. The pods of an `argoproj.io` Gateway also carry the
//! Gateway's own labels and `gateway-name: <gateway>`, which v0.6's `serviceSpec` selectors
//! name. Every container of `deploySpec` gets the
//! environment of the gateway's style (docs/contract.md); a variable of the contract replaces
//! one of the same name in the spec. The pod gets a memory-backed volume, mounted at
//! `/var/run/portico` in every container, where the first `portico` to start writes the
//! ingest token (`PORTICO_INGEST_TOKEN_FILE`) that the other containers send when they post
//! events.
//!
//! With a page listener (`--port`, default 9301), the controller also serves `/` (a page of
//! every Gateway it manages: phase, message and nodes by phase, as its watches see them),
//! `/status` (the same as JSON) and `/healthz` (see [`page`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    EmptyDirVolumeSource, EnvVar, EnvVarSource, ObjectFieldSelector, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodTemplateSpec, Service, ServicePort, ServiceSpec, Volume,
    VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};

/// The pod volume the ingest token is shared through.
const RUN_VOLUME: &str = "portico-run";

use crate::spec::watchers::{Environment, resolve_watchers};
use crate::spec::{Gateway, GatewayGroup, Problems, status_of};

/// Label on a gateway's StatefulSet, pods and Services naming the gateway.
pub(crate) const GATEWAY_LABEL: &str = "portico.dev/gateway";
/// Label Argo Events v0.6 put on a gateway's pods (its examples' Service selectors name it).
const ARGO_GATEWAY_NAME_LABEL: &str = "gateway-name";
/// Field manager of the controller's server-side applies.
const FIELD_MANAGER: &str = "portico-controller";
/// Phase of a Gateway whose StatefulSet (and Services) are applied.
const PHASE_RUNNING: &str = "Running";
/// Phase of a Gateway that fails validation or cannot be applied.
const PHASE_ERROR: &str = "Error";

/// How the controller runs.
#[derive(Debug, Clone)]
pub(crate) struct ControllerOptions {
    /// Its instance id: only Gateways labelled with it (with their group's label) are
    /// reconciled.
    pub instance_id: String,
    /// Only this namespace (`None`: every namespace).
    pub namespace: Option<String>,
    /// `TRANSFORMER_PORT` given to the gateways' containers.
    pub transformer_port: u16,
    /// First requeue delay of a failing Gateway (doubled up to `max_backoff`).
    pub initial_backoff: Duration,
    /// Longest requeue delay of a failing Gateway.
    pub max_backoff: Duration,
    /// Requeue delay of a healthy Gateway (a periodic check besides the watches).
    pub resync: Duration,
}

impl ControllerOptions {
    /// Options for instance `instance_id`, every namespace, default delays.
    pub(crate) fn new(instance_id: impl Into<String>) -> ControllerOptions {
        ControllerOptions {
            instance_id: instance_id.into(),
            namespace: None,
            transformer_port: crate::env::DEFAULT_TRANSFORMER_PORT,
            initial_backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(300),
            resync: Duration::from_secs(600),
        }
    }
}

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReconcileError {
    /// The Gateway is not valid; its status says why.
    #[error("gateway is not valid: {0}")]
    Invalid(Problems),
    /// The API server refused or failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

struct Context {
    client: Client,
    options: ControllerOptions,
    /// The group of the Gateways this context reconciles.
    group: GatewayGroup,
    /// Consecutive failures by `namespace/name`, for the backoff.
    failures: Mutex<HashMap<String, u32>>,
}

/// What a Gateway should become.
#[derive(Debug, Clone, PartialEq)]
struct Desired {
    /// The StatefulSet of its replicas.
    pub workload: StatefulSet,
    /// The headless Service that gives each replica a stable name.
    pub headless: Service,
    /// The Service, when `serviceSpec` is set.
    pub service: Option<Service>,
    /// What the Gateway's status should warn about.
    pub warnings: Vec<String>,
}

/// The pod volume (and claim template) of the replicas' outboxes.
const OUTBOX_VOLUME: &str = "outbox";
/// Where the outbox volume is mounted in every container.
const OUTBOX_MOUNT: &str = "/var/lib/portico/outbox";
/// Seconds a replica has to stop: its configurations' grace (10 s), the drain of its outbox
/// (10 s), releasing its buckets, with room to spare.
const TERMINATION_GRACE_SECONDS: i64 = 45;

/// Name of a gateway's StatefulSet (the name v0.6 gave its Deployment, for an `argoproj.io`
/// Gateway).
fn workload_name(group: GatewayGroup, gateway: &str) -> String {
    match group {
        GatewayGroup::Portico => format!("{gateway}-gateway"),
        GatewayGroup::Argo => format!("{gateway}-gateway-deployment"),
    }
}

/// Name of a gateway's Service (what `watchers.gateways` resolve to).
fn service_name(gateway: &str) -> String {
    format!("{gateway}-gateway-svc")
}

/// Name of a gateway's headless Service (`<pod>.<this>` is each replica's stable name).
fn headless_name(gateway: &str) -> String {
    format!("{gateway}-gateway-pods")
}

/// Checks a Gateway object for what the controller needs and computes its StatefulSet and
/// Services.
fn desired(
    object: &DynamicObject,
    group: GatewayGroup,
    options: &ControllerOptions,
) -> Result<Desired, Problems> {
    let gateway =
        Gateway::from_object(group, object).map_err(|e| Problems(vec![format!("spec: {e}")]))?;
    let owner = owner_reference(object, group)
        .ok_or_else(|| Problems(vec!["the Gateway has no uid yet".to_string()]))?;
    desired_of(&gateway, owner, options)
}

/// The controller owner reference to `object`.
fn owner_reference(object: &DynamicObject, group: GatewayGroup) -> Option<OwnerReference> {
    object.controller_owner_ref(&group.api_resource())
}

/// [`desired`] of a parsed gateway.
fn desired_of(
    gateway: &Gateway,
    owner: OwnerReference,
    options: &ControllerOptions,
) -> Result<Desired, Problems> {
    let group = gateway.group();
    let spec = &gateway.spec;
    let name = &gateway.metadata.name;
    let mut problems = Vec::new();
    if spec.gateway_type.trim().is_empty() {
        problems.push("expected `spec.type` (the CloudEvent type)".to_string());
    }
    if spec.rpc_port.is_some() && spec.http_server_port.is_some() {
        problems.push(
            "`rpcPort` and `httpServerPort` are both set: choose one processor style".to_string(),
        );
    }
    let cluster = Environment {
        in_cluster: true,
        k_sink: None,
        sensor_url: None,
        gateway_url: None,
        checking: false,
    };
    if let Err(p) = resolve_watchers(gateway, &cluster) {
        problems.extend(p.0);
    }
    let pod = match &spec.deploy_spec {
        Some(pod) if !pod.containers.is_empty() => Some(pod.clone()),
        Some(_) => {
            problems.push(
                "`spec.deploySpec.containers` is empty: expected at least one container"
                    .to_string(),
            );
            None
        }
        None => {
            problems.push("expected `spec.deploySpec` (the pod of the gateway)".to_string());
            None
        }
    };
    let (Some(mut pod), true) = (pod, problems.is_empty()) else {
        return Err(Problems(problems));
    };
    let labels = BTreeMap::from([
        (GATEWAY_LABEL.to_string(), name.clone()),
        (
            group.instance_label().to_string(),
            options.instance_id.clone(),
        ),
    ]);
    let mut pod_labels = labels.clone();
    if group == GatewayGroup::Argo {
        for (k, v) in &gateway.metadata.labels {
            pod_labels.entry(k.clone()).or_insert_with(|| v.clone());
        }
        pod_labels.insert(ARGO_GATEWAY_NAME_LABEL.to_string(), name.clone());
    }
    let mut contract = gateway.contract(options.transformer_port, Some(&options.instance_id));
    contract.push((
        crate::env::PORTICO_INGEST_TOKEN_FILE,
        crate::env::POD_INGEST_TOKEN_FILE.to_string(),
    ));
    let run_dir = std::path::Path::new(crate::env::POD_INGEST_TOKEN_FILE)
        .parent()
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    for container in &mut pod.containers {
        let mut env = container.env.take().unwrap_or_default();
        env.retain(|e| !contract.iter().any(|(k, _)| *k == e.name));
        env.extend(contract.iter().map(|(k, v)| EnvVar {
            name: (*k).to_string(),
            value: Some(v.clone()),
            value_from: None,
        }));
        // Each replica is named after its pod (the replicas sharing the configurations
        // tell each other apart by it).
        env.retain(|e| e.name != crate::env::PORTICO_REPLICA);
        env.push(EnvVar {
            name: crate::env::PORTICO_REPLICA.to_string(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    api_version: None,
                    field_path: "metadata.name".to_string(),
                }),
                ..Default::default()
            }),
        });
        container.env = Some(env);
        let env = container.env.get_or_insert_with(Vec::new);
        env.retain(|e| e.name != crate::env::PORTICO_OUTBOX_DIR);
        env.push(EnvVar {
            name: crate::env::PORTICO_OUTBOX_DIR.to_string(),
            value: Some(OUTBOX_MOUNT.to_string()),
            value_from: None,
        });
        let mounts = container.volume_mounts.get_or_insert_with(Vec::new);
        if !mounts.iter().any(|m| m.mount_path == run_dir) {
            mounts.push(VolumeMount {
                name: RUN_VOLUME.to_string(),
                mount_path: run_dir.clone(),
                ..Default::default()
            });
        }
        if !mounts.iter().any(|m| m.mount_path == OUTBOX_MOUNT) {
            mounts.push(VolumeMount {
                name: OUTBOX_VOLUME.to_string(),
                mount_path: OUTBOX_MOUNT.to_string(),
                ..Default::default()
            });
        }
    }
    pod.termination_grace_period_seconds = Some(
        pod.termination_grace_period_seconds
            .unwrap_or(TERMINATION_GRACE_SECONDS)
            .max(TERMINATION_GRACE_SECONDS),
    );
    let mut warnings = Vec::new();
    let storage = spec
        .delivery
        .outbox
        .as_ref()
        .and_then(|o| o.storage.clone());
    let claims = match &storage {
        Some(st) => Some(vec![PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(OUTBOX_VOLUME.to_string()),
                ..Default::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec!["ReadWriteOnce".to_string()]),
                storage_class_name: st.storage_class_name.clone(),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([(
                        "storage".to_string(),
                        Quantity(st.size.clone()),
                    )])),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            status: None,
        }]),
        None => {
            if spec.delivery.mode != Some(crate::spec::DeliveryMode::AtMostOnce) {
                warnings.push(
                    "spec.delivery.outbox.storage is not set: each replica's outbox is an emptyDir, lost with its pod (events it accepted but had not delivered go with it)"
                        .to_string(),
                );
            }
            None
        }
    };
    let volumes = pod.volumes.get_or_insert_with(Vec::new);
    if claims.is_none() && !volumes.iter().any(|v| v.name == OUTBOX_VOLUME) {
        volumes.push(Volume {
            name: OUTBOX_VOLUME.to_string(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        });
    }
    if !volumes.iter().any(|v| v.name == RUN_VOLUME) {
        volumes.push(Volume {
            name: RUN_VOLUME.to_string(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: Some("Memory".to_string()),
                size_limit: None,
            }),
            ..Default::default()
        });
    }
    let meta = |n: String| ObjectMeta {
        name: Some(n),
        namespace: gateway.metadata.namespace.clone(),
        labels: Some(labels.clone()),
        owner_references: Some(vec![owner.clone()]),
        ..Default::default()
    };
    let selector = BTreeMap::from([(GATEWAY_LABEL.to_string(), name.clone())]);
    let headless = Service {
        metadata: meta(headless_name(name)),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_string()),
            selector: Some(selector.clone()),
            publish_not_ready_addresses: Some(true),
            ports: Some(vec![ServicePort {
                name: Some("transformer".to_string()),
                port: i32::from(options.transformer_port),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    };
    let workload = StatefulSet {
        metadata: meta(workload_name(group, name)),
        spec: Some(StatefulSetSpec {
            replicas: Some(spec.replicas.unwrap_or(1).min(i32::MAX as u32) as i32),
            service_name: Some(headless_name(name)),
            // Replicas start and stop together: each takes its share of the buckets as it
            // comes, and none waits for another to be ready.
            pod_management_policy: Some("Parallel".to_string()),
            volume_claim_templates: claims,
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                match_expressions: None,
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    ..Default::default()
                }),
                spec: Some(pod),
            },
            ..Default::default()
        }),
        status: None,
    };
    let service = spec.service_spec.clone().map(|mut s| {
        if s.selector.as_ref().is_none_or(|sel| sel.is_empty()) {
            s.selector = Some(selector.clone());
        }
        Service {
            metadata: meta(service_name(name)),
            spec: Some(s),
            status: None,
        }
    });
    Ok(Desired {
        workload,
        headless,
        service,
        warnings,
    })
}

fn key(g: &DynamicObject) -> String {
    format!("{}/{}", g.namespace().unwrap_or_default(), g.name_any())
}

async fn set_status(
    api: &Api<DynamicObject>,
    gateway: &DynamicObject,
    phase: &str,
    message: &str,
) -> Result<(), kube::Error> {
    let current = status_of(gateway);
    if current.phase.as_deref() == Some(phase) && current.message.as_deref() == Some(message) {
        return Ok(());
    }
    let patch = serde_json::json!({"status": {"phase": phase, "message": message}});
    api.patch_status(
        &gateway.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map(|_| ())
}

async fn reconcile(
    gateway: Arc<DynamicObject>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let ns = gateway.namespace().unwrap_or_else(|| "default".to_string());
    let name = gateway.name_any();
    let gateways: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), &ns, &ctx.group.api_resource());
    if gateway.metadata.deletion_timestamp.is_some() {
        // Owner references let the garbage collector remove what it owned.
        return Ok(Action::await_change());
    }
    let desired = match desired(&gateway, ctx.group, &ctx.options) {
        Ok(d) => d,
        Err(problems) => {
            let reason = problems.to_string();
            tracing::warn!(gateway = %name, namespace = %ns, "gateway is not valid: {reason}");
            set_status(&gateways, &gateway, PHASE_ERROR, &reason).await?;
            return Err(ReconcileError::Invalid(problems));
        }
    };
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), &ns);
    let headless_name = headless_name(&name);
    if let Err(e) = services
        .patch(&headless_name, &apply, &Patch::Apply(&desired.headless))
        .await
    {
        let message = format!("cannot apply Service `{headless_name}`: {e}");
        set_status(&gateways, &gateway, PHASE_ERROR, &message).await?;
        return Err(e.into());
    }
    let workloads: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &ns);
    let workload_name = workload_name(ctx.group, &name);
    if let Err(e) = workloads
        .patch(&workload_name, &apply, &Patch::Apply(&desired.workload))
        .await
    {
        let message = format!("cannot apply StatefulSet `{workload_name}`: {e}");
        set_status(&gateways, &gateway, PHASE_ERROR, &message).await?;
        return Err(e.into());
    }
    let service_name = service_name(&name);
    let replicas = desired
        .workload
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let mut message = format!(
        "StatefulSet `{workload_name}` ({replicas} replica{}) and Service `{headless_name}` are up to date",
        if replicas == 1 { "" } else { "s" }
    );
    match &desired.service {
        Some(service) => {
            if let Err(e) = services
                .patch(&service_name, &apply, &Patch::Apply(service))
                .await
            {
                let message = format!("cannot apply Service `{service_name}`: {e}");
                set_status(&gateways, &gateway, PHASE_ERROR, &message).await?;
                return Err(e.into());
            }
            message.push_str(&format!(", Service `{service_name}` too"));
        }
        None => {
            // `serviceSpec` removed: remove the Service this gateway owns, if any.
            if let Ok(Some(existing)) = services.get_opt(&service_name).await {
                let owned = existing
                    .owner_references()
                    .iter()
                    .any(|o| Some(&o.uid) == gateway.metadata.uid.as_ref());
                if owned {
                    services
                        .delete(&service_name, &DeleteParams::default())
                        .await?;
                }
            }
        }
    }
    for w in &desired.warnings {
        message.push_str(&format!("; warning: {w}"));
    }
    set_status(&gateways, &gateway, PHASE_RUNNING, &message).await?;
    ctx.failures
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&key(&gateway));
    Ok(Action::requeue(ctx.options.resync))
}

/// Requeue delay after the `failures`-th consecutive failure: `initial_backoff` doubled each
/// time, capped at `max_backoff`.
fn retry_delay(options: &ControllerOptions, failures: u32) -> Duration {
    options
        .initial_backoff
        .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(16)))
        .min(options.max_backoff)
}

fn error_policy(gateway: Arc<DynamicObject>, error: &ReconcileError, ctx: Arc<Context>) -> Action {
    let n = {
        let mut failures = ctx.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = failures.entry(key(&gateway)).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    let delay = retry_delay(&ctx.options, n);
    tracing::warn!(
        gateway = %gateway.name_any(), attempt = n,
        "reconcile failed, retrying in {delay:?}: {error}"
    );
    Action::requeue(delay)
}

/// Runs the controller until `shutdown` resolves: one for the Gateways of each group, both
/// with the same instance id; with `page`, serves the controller's status page on it.
pub(crate) async fn run(
    client: Client,
    options: ControllerOptions,
    page: Option<tokio::net::TcpListener>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    use futures::FutureExt;
    tracing::info!(
        instance_id = %options.instance_id,
        namespace = options.namespace.as_deref().unwrap_or("(all)"),
        "controller starting"
    );
    let shutdown = shutdown.shared();
    let controllers = GatewayGroup::ALL.map(|group| controller_of(client.clone(), &options, group));
    let page_stop = tokio_util::sync::CancellationToken::new();
    let page_task = page.map(|listener| {
        let seen = page::Seen {
            instance_id: options.instance_id.clone(),
            namespace: options.namespace.clone(),
            started_at: chrono::Utc::now(),
            stores: controllers
                .iter()
                .map(|(controller, ctx)| (ctx.group, controller.store()))
                .collect(),
        };
        tokio::spawn(crate::server::serve(
            listener,
            page::router(Arc::new(seen)),
            crate::http1::Limits::default(),
            page_stop.clone(),
        ))
    });
    futures::future::join_all(
        controllers.map(|(controller, ctx)| drive(controller, ctx, shutdown.clone())),
    )
    .await;
    page_stop.cancel();
    if let Some(task) = page_task {
        let _ = task.await;
    }
    tracing::info!("controller stopped");
}

/// The controller of one group's Gateways, and its context.
fn controller_of(
    client: Client,
    options: &ControllerOptions,
    group: GatewayGroup,
) -> (Controller<DynamicObject>, Arc<Context>) {
    let selector = format!("{}={}", group.instance_label(), options.instance_id);
    let resource = group.api_resource();
    let (gateways, workloads, services) = match &options.namespace {
        Some(ns) => (
            Api::<DynamicObject>::namespaced_with(client.clone(), ns, &resource),
            Api::<StatefulSet>::namespaced(client.clone(), ns),
            Api::<Service>::namespaced(client.clone(), ns),
        ),
        None => (
            Api::<DynamicObject>::all_with(client.clone(), &resource),
            Api::<StatefulSet>::all(client.clone()),
            Api::<Service>::all(client.clone()),
        ),
    };
    let owned = watcher::Config::default().labels(&selector);
    let ctx = Arc::new(Context {
        client,
        options: options.clone(),
        group,
        failures: Mutex::new(HashMap::new()),
    });
    let controller = Controller::new_with(
        gateways,
        watcher::Config::default().labels(&selector),
        resource,
    )
    .owns(workloads, owned.clone())
    .owns(services, owned);
    (controller, ctx)
}

/// Runs one group's controller until `shutdown` resolves.
async fn drive(
    controller: Controller<DynamicObject>,
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let group = ctx.group;
    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => {
                    tracing::debug!(group = group.group(), gateway = %object.name, "reconciled")
                }
                Err(e) => tracing::debug!(group = group.group(), "reconcile: {e}"),
            }
        })
        .await;
}

/// Binds the controller's page address, saying which port it got (port 0 picks a free one).
pub(crate) async fn bind_page(
    addr: std::net::SocketAddr,
) -> Result<tokio::net::TcpListener, crate::http1::ListenError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| crate::http1::ListenError { addr, source })?;
    if let Ok(local) = listener.local_addr() {
        tracing::info!(addr = %local, "controller page listening");
    }
    Ok(listener)
}

/// The controller's status page: every Gateway it manages, as its watches see them.
mod page {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use axum::Router;
    use axum::extract::State;
    use axum::response::{IntoResponse, Response};
    use axum::routing::get;
    use chrono::{DateTime, Utc};
    use kube::ResourceExt;
    use kube::api::DynamicObject;
    use kube::runtime::reflector::Store;
    use serde::Serialize;

    use crate::spec::{GatewayGroup, status_of};

    /// What the page shows, read at each request.
    pub(super) struct Seen {
        /// The controller's instance id.
        pub instance_id: String,
        /// The only namespace it watches, if one.
        pub namespace: Option<String>,
        /// When it started.
        pub started_at: DateTime<Utc>,
        /// The Gateways each group's watch holds.
        pub stores: Vec<(GatewayGroup, Store<DynamicObject>)>,
    }

    /// `GET /status`.
    #[derive(Debug, Serialize)]
    #[serde(rename_all = "camelCase")]
    pub(super) struct ControllerStatus {
        /// The controller.
        pub controller: ControllerInfo,
        /// Every Gateway it manages, by namespace and name.
        pub gateways: Vec<GatewaySummary>,
    }

    /// The controller on `GET /status`.
    #[derive(Debug, Serialize)]
    #[serde(rename_all = "camelCase")]
    pub(super) struct ControllerInfo {
        /// Its instance id.
        pub instance_id: String,
        /// The only namespace it watches (`null`: every namespace).
        pub namespace: Option<String>,
        /// When it started.
        pub started_at: DateTime<Utc>,
    }

    /// One Gateway on `GET /status`.
    #[derive(Debug, Serialize)]
    #[serde(rename_all = "camelCase")]
    pub(super) struct GatewaySummary {
        /// `portico.dev` or `argoproj.io`.
        pub group: &'static str,
        /// Its namespace.
        pub namespace: String,
        /// Its name.
        pub name: String,
        /// `spec.type`.
        #[serde(rename = "type")]
        pub gateway_type: String,
        /// `status.phase` (`Running`, `Error`), absent until the controller wrote one.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub phase: Option<String>,
        /// `status.message`.
        pub message: String,
        /// How many of its nodes (`status.nodes`) are in each phase.
        pub nodes: BTreeMap<String, usize>,
        /// How many nodes it has.
        pub node_count: usize,
    }

    pub(super) fn router(seen: Arc<Seen>) -> Router {
        Router::new()
            .route("/", get(html))
            .route("/status", get(json))
            .route("/healthz", get(|| async { "ok" }))
            .with_state(seen)
    }

    fn summary(group: GatewayGroup, g: &DynamicObject) -> GatewaySummary {
        let status = status_of(g);
        let mut nodes = BTreeMap::new();
        for node in status.nodes.values() {
            *nodes.entry(node.phase.clone()).or_insert(0) += 1;
        }
        GatewaySummary {
            group: group.group(),
            namespace: g.namespace().unwrap_or_default(),
            name: g.name_any(),
            gateway_type: g.data["spec"]["type"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            phase: status.phase,
            message: status.message.unwrap_or_default(),
            node_count: status.nodes.len(),
            nodes,
        }
    }

    pub(super) fn status(seen: &Seen) -> ControllerStatus {
        let mut gateways: Vec<GatewaySummary> = seen
            .stores
            .iter()
            .flat_map(|(group, store)| store.state().into_iter().map(|g| summary(*group, &g)))
            .collect();
        gateways.sort_by(|a, b| {
            (&a.namespace, &a.name, a.group).cmp(&(&b.namespace, &b.name, b.group))
        });
        ControllerStatus {
            controller: ControllerInfo {
                instance_id: seen.instance_id.clone(),
                namespace: seen.namespace.clone(),
                started_at: seen.started_at,
            },
            gateways,
        }
    }

    async fn json(State(seen): State<Arc<Seen>>) -> Response {
        axum::Json(status(&seen)).into_response()
    }

    async fn html(State(seen): State<Arc<Seen>>) -> Response {
        crate::server::html_page(render(&status(&seen)))
    }

    /// `text` with the characters that mean something in HTML escaped.
    pub(super) fn escape(text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        for c in text.chars() {
            match c {
                '&' => out.push_str("&amp;"),
                '<' => out.push_str("&lt;"),
                '>' => out.push_str("&gt;"),
                '"' => out.push_str("&quot;"),
                '\'' => out.push_str("&#39;"),
                c => out.push(c),
            }
        }
        out
    }

    /// The page's HTML: the template with the summary and one row per Gateway, every text
    /// escaped.
    pub(super) fn render(s: &ControllerStatus) -> String {
        use std::fmt::Write as _;
        let mut by_phase: BTreeMap<&str, usize> = BTreeMap::new();
        for g in &s.gateways {
            *by_phase
                .entry(g.phase.as_deref().unwrap_or("Pending"))
                .or_insert(0) += 1;
        }
        let mut summary = format!(
            "<span>instance <b>{}</b></span><span>namespace <b>{}</b></span><span>gateways <b id=\"gateway-count\">{}</b></span>",
            escape(&s.controller.instance_id),
            escape(s.controller.namespace.as_deref().unwrap_or("(all)")),
            s.gateways.len()
        );
        for (phase, n) in &by_phase {
            let _ = write!(summary, "<span>{} <b>{n}</b></span>", escape(phase));
        }
        let mut rows = String::new();
        for g in &s.gateways {
            let phase = g.phase.as_deref().unwrap_or("Pending");
            let mut nodes = String::new();
            for (p, n) in &g.nodes {
                let _ = write!(
                    nodes,
                    "<span class=\"count\" data-phase=\"{p}\">{n} {p}</span> ",
                    p = escape(p)
                );
            }
            if g.node_count == 0 {
                nodes.push_str("<span class=\"none\">none reported</span>");
            }
            let _ = write!(
                rows,
                "<tr data-gateway=\"{ns}/{name}\" data-phase=\"{ph}\" class=\"phase-{ph}\"><td class=\"name\">{ns}/{name}</td><td>{group}</td><td>{ty}</td><td><span class=\"phase\" data-phase=\"{ph}\">{ph}</span></td><td class=\"msg\">{msg}</td><td class=\"num\">{count}</td><td>{nodes}</td></tr>",
                ns = escape(&g.namespace),
                name = escape(&g.name),
                group = escape(g.group),
                ty = escape(&g.gateway_type),
                ph = escape(phase),
                msg = escape(&g.message),
                count = g.node_count,
            );
        }
        if s.gateways.is_empty() {
            rows.push_str("<tr><td colspan=\"7\" class=\"none\">No Gateway labelled with this controller's instance id.</td></tr>");
        }
        TEMPLATE
            .replace("<!--SUMMARY-->", &summary)
            .replace("<!--ROWS-->", &rows)
    }

    /// The page, with `<!--SUMMARY-->` and `<!--ROWS-->` to fill.
    const TEMPLATE: &str = include_str!("../assets/controller.html");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_back_off_exponentially_up_to_the_cap() {
        let o = ControllerOptions::new("a");
        let delays: Vec<u64> = [1, 2, 3, 4, 8, 9, 1000]
            .iter()
            .map(|n| retry_delay(&o, *n).as_secs())
            .collect();
        assert_eq!(delays, [2, 4, 8, 16, 256, 300, 300]);
    }

    #[test]
    fn an_invalid_gateway_says_what_is_missing() {
        let mut g = DynamicObject::new("g", &GatewayGroup::Portico.api_resource())
            .data(serde_json::json!({"spec": {}}));
        g.metadata.uid = Some("u".into());
        let e = desired(&g, GatewayGroup::Portico, &ControllerOptions::new("a"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("spec.type"), "{e}");
        assert!(e.contains("spec.deploySpec"), "{e}");
    }

    #[test]
    fn a_spec_that_cannot_be_read_is_an_error_naming_the_field() {
        let mut g = DynamicObject::new("g", &GatewayGroup::Argo.api_resource())
            .data(serde_json::json!({"spec": {"type": "webhook", "bogus": 1}}));
        g.metadata.uid = Some("u".into());
        let e = desired(&g, GatewayGroup::Argo, &ControllerOptions::new("a"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("bogus"), "{e}");
    }
}
