//! Status in a cluster: the [`StatusSink`] that writes a gateway's nodes into
//! `Gateway.status.nodes` and records each transition as a Kubernetes Event on the Gateway.
//!
//! The board calls [`KubeStatusSink::node_changed`] synchronously, so the sink only notes the
//! change (the newest state of each node, and the transition for an Event) and wakes its
//! writer task. The writer waits a short window so that a burst of changes (a new ConfigMap
//! starting twenty configurations) becomes one JSON merge patch of the status subresource,
//! keyed by configuration id (`null` removes a node). Conflicts, throttling and server or
//! connection errors are retried with capped exponential backoff; what still fails is kept
//! for the next write. Events are core/v1 Events created once each; nothing watches them
//! back (the original read its own Events to learn its state, a fragile round trip).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource};
use serde::ser::SerializeMap;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::ConfigId;
use crate::spec::{GatewayGroup, MemberStatus, NodeStatus};
use crate::status::{Node, NodeChange, Phase, StatusSink};

/// Events waiting to be written beyond which the oldest are dropped (and counted in a log).
const MAX_PENDING_EVENTS: usize = 256;

/// How the sink writes.
#[derive(Debug, Clone)]
pub(crate) struct KubeStatusOptions {
    /// How long the writer gathers changes before one write.
    pub coalesce: Duration,
    /// The component named in Events.
    pub component: String,
}

impl Default for KubeStatusOptions {
    fn default() -> Self {
        KubeStatusOptions {
            coalesce: Duration::from_millis(500),
            component: "portico-gateway".to_string(),
        }
    }
}

/// The Gateway whose status is written.
#[derive(Debug, Clone)]
pub(crate) struct GatewayRef {
    /// Its API group.
    pub group: GatewayGroup,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID, for the Events' `involvedObject`.
    pub uid: Option<String>,
    /// This replica's name, written with each of its nodes.
    pub replica: String,
    /// Ids of the nodes its status shows from an earlier run of the gateway: removed by the
    /// first write unless a configuration of this run has the same id.
    pub previous_nodes: Vec<String>,
}

/// A transition to record as an Event: the node as it became, or as it was when it left the
/// map. Its text is made only when it is written (a map of 100,000 configurations makes
/// 200,000 transitions, of which the newest 256 are kept).
struct Transition {
    node: Arc<Node>,
    removed: bool,
}

impl Transition {
    fn reason(&self) -> &'static str {
        if self.removed {
            "Removed"
        } else {
            self.node.phase.as_str()
        }
    }

    fn warning(&self) -> bool {
        !self.removed && self.node.phase == Phase::Error
    }

    fn message(&self) -> String {
        let node = &self.node;
        if self.removed {
            format!(
                "configuration `{}` ({}) left the ConfigMap",
                node.name, node.id
            )
        } else if node.message.is_empty() {
            format!(
                "configuration `{}` ({}) is {}",
                node.name,
                node.id,
                node.phase.as_str()
            )
        } else {
            format!(
                "configuration `{}` ({}) is {}: {}",
                node.name,
                node.id,
                node.phase.as_str(),
                node.message
            )
        }
    }
}

#[derive(Default)]
struct Pending {
    /// Newest state of each changed node by id; `None` removes it. The node is shared with
    /// its transition, and turned into JSON only as the patch is written.
    nodes: BTreeMap<ConfigId, Option<Arc<Node>>>,
    /// Keys of `status.nodes` from an earlier run that are not configuration ids: removed by
    /// the next write.
    foreign: Vec<String>,
    /// Changed replicas by name; `None` removes one.
    members: BTreeMap<String, Option<MemberStatus>>,
    events: VecDeque<Transition>,
    dropped_events: u64,
}

struct Inner {
    pending: Mutex<Pending>,
    wake: Notify,
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        // Every write under the lock is a single insert or push: a poisoned lock is still good.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Writes nodes into `Gateway.status.nodes` and transitions as Events.
pub(crate) struct KubeStatusSink {
    inner: Arc<Inner>,
}

/// `{key: value}`: a JSON object of one member, written as it is serialized.
struct Member<'a, T>(&'a str, &'a T);

impl<T: serde::Serialize> serde::Serialize for Member<'_, T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(1))?;
        m.serialize_entry(self.0, self.1)?;
        m.end()
    }
}

/// The pending nodes as the merge patch's `status.nodes` (keyed by id, `null` removes one).
/// Each node's JSON is made as it is written, so that waiting nodes hold no copy of it.
struct NodesPatch<'a> {
    nodes: &'a BTreeMap<ConfigId, Option<Arc<Node>>>,
    foreign: &'a [String],
    replica: &'a str,
}

impl serde::Serialize for NodesPatch<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.nodes.len() + self.foreign.len()))?;
        for id in self.foreign {
            m.serialize_entry(id, &())?;
        }
        for (id, node) in self.nodes {
            let node = node.as_deref().map(|n| node_status(n, self.replica));
            m.serialize_entry(&id.to_string(), &node)?;
        }
        m.end()
    }
}

/// A node as `status.nodes` shows it.
fn node_status(node: &Node, replica: &str) -> NodeStatus {
    NodeStatus {
        replica: Some(replica.to_string()),
        id: node.id.to_string(),
        name: node.name.clone(),
        phase: node.phase.as_str().to_string(),
        message: node.message.clone(),
        started_at: node
            .started_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        updated_at: node
            .updated_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        restarts: node.restarts,
    }
}

impl StatusSink for KubeStatusSink {
    fn node_changed(&self, change: &NodeChange) {
        let (node, removed) = match change {
            NodeChange::Updated { node, .. } => (node, false),
            NodeChange::Removed { node } => (node, true),
        };
        let node = Arc::new(node.clone());
        {
            let mut p = self.inner.lock();
            p.nodes.insert(node.id, (!removed).then(|| node.clone()));
            if p.events.len() >= MAX_PENDING_EVENTS {
                p.events.pop_front();
                p.dropped_events += 1;
            }
            p.events.push_back(Transition { node, removed });
        }
        self.inner.wake.notify_one();
    }
}

/// Is this error worth another try (conflict, throttling, server or connection trouble)?
fn transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code == 409 || s.code == 429 || s.code >= 500,
        _ => true,
    }
}

fn backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_secs(5))
        .with_max_times(8)
        .with_jitter()
}

impl KubeStatusSink {
    /// Queues changes of `status.members`: replicas and the buckets they hold (`None` removes
    /// a replica that left or died).
    pub(crate) fn set_members(&self, changes: BTreeMap<String, Option<Vec<u32>>>) {
        if changes.is_empty() {
            return;
        }
        {
            let mut p = self.inner.lock();
            for (name, buckets) in changes {
                p.members
                    .insert(name, buckets.map(|buckets| MemberStatus { buckets }));
            }
        }
        self.inner.wake.notify_one();
    }

    /// A sink for `gateway`, and its writer task, which ends (after a last write) when `stop`
    /// is cancelled.
    pub(crate) fn start(
        client: Client,
        gateway: GatewayRef,
        options: KubeStatusOptions,
        stop: CancellationToken,
    ) -> (Arc<KubeStatusSink>, tokio::task::JoinHandle<()>) {
        let mut pending = Pending::default();
        for id in &gateway.previous_nodes {
            match u64::from_str_radix(id, 16) {
                Ok(n) if id.len() == 16 => {
                    pending.nodes.insert(ConfigId(n), None);
                }
                _ => pending.foreign.push(id.clone()),
            }
        }
        let inner = Arc::new(Inner {
            pending: Mutex::new(pending),
            wake: Notify::new(),
        });
        if !gateway.previous_nodes.is_empty() {
            inner.wake.notify_one();
        }
        let writer = Writer {
            gateways: kube::core::Request::new(DynamicObject::url_path(
                &gateway.group.api_resource(),
                Some(&gateway.namespace),
            )),
            events: Api::namespaced(client.clone(), &gateway.namespace),
            client,
            gateway,
            options,
            inner: inner.clone(),
        };
        let task = tokio::spawn(writer.run(stop));
        (Arc::new(KubeStatusSink { inner }), task)
    }
}

struct Writer {
    client: Client,
    /// Requests of the gateways' collection in the namespace.
    gateways: kube::core::Request,
    events: Api<Event>,
    gateway: GatewayRef,
    options: KubeStatusOptions,
    inner: Arc<Inner>,
}

impl Writer {
    async fn run(self, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = self.inner.wake.notified() => {}
            }
            // Gather the rest of the burst.
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(self.options.coalesce) => {}
            }
            self.flush().await;
        }
        self.flush().await;
    }

    async fn flush(&self) {
        let (nodes, foreign, members, events, dropped) = {
            let mut p = self.inner.lock();
            let dropped = std::mem::take(&mut p.dropped_events);
            (
                std::mem::take(&mut p.nodes),
                std::mem::take(&mut p.foreign),
                std::mem::take(&mut p.members),
                std::mem::take(&mut p.events),
                dropped,
            )
        };
        if !members.is_empty()
            && let Err(e) = self.write_status(&Member("members", &members)).await
        {
            tracing::warn!(gateway = %self.gateway.name, "cannot write the gateway's status.members (kept for the next write): {e}");
            let mut p = self.inner.lock();
            for (name, m) in members {
                p.members.entry(name).or_insert(m);
            }
        }
        if dropped > 0 {
            tracing::warn!(
                gateway = %self.gateway.name,
                "{dropped} node transition(s) were too many to record as Kubernetes Events"
            );
        }
        let patch = NodesPatch {
            nodes: &nodes,
            foreign: &foreign,
            replica: &self.gateway.replica,
        };
        if !(nodes.is_empty() && foreign.is_empty())
            && let Err(e) = self.write_status(&Member("nodes", &patch)).await
        {
            tracing::warn!(
                gateway = %self.gateway.name, namespace = %self.gateway.namespace,
                "cannot write the gateway's status.nodes (kept for the next write): {e}"
            );
            let mut p = self.inner.lock();
            for (id, node) in nodes {
                p.nodes.entry(id).or_insert(node);
            }
            p.foreign.extend(foreign);
        }
        for t in events {
            if let Err(e) = self.record(&t).await {
                tracing::warn!(
                    gateway = %self.gateway.name, reason = t.reason(),
                    "cannot record a Kubernetes Event: {e}"
                );
            }
        }
    }

    /// Merges `status` into the Gateway's status subresource. The patch is serialized
    /// straight from the pending changes, and the object the API server answers with (the
    /// whole Gateway, all of its nodes) is read and dropped, not parsed.
    async fn write_status<T: serde::Serialize>(&self, status: &T) -> Result<(), kube::Error> {
        let patch = Member("status", status);
        let params = PatchParams::default();
        (|| async {
            let request = self
                .gateways
                .patch_subresource("status", &self.gateway.name, &params, &Patch::Merge(&patch))
                .map_err(kube::Error::BuildRequest)?;
            let answer = self.client.request_stream(request).await?;
            // The write took effect once the server answered 2xx; the rest of the body only
            // frees the connection for the next request.
            if let Err(e) = futures::io::copy_buf(answer, &mut futures::io::sink()).await {
                tracing::debug!(gateway = %self.gateway.name, "reading the status write's answer: {e}");
            }
            Ok(())
        })
        .retry(backoff())
        .when(transient)
        .notify(|e, after| {
            tracing::debug!(gateway = %self.gateway.name, "status write failed, retrying in {after:?}: {e}")
        })
        .await
    }

    async fn record(&self, t: &Transition) -> Result<(), kube::Error> {
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let event = Event {
            metadata: ObjectMeta {
                generate_name: Some(format!("{}.", self.gateway.name)),
                namespace: Some(self.gateway.namespace.clone()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some(self.gateway.group.api_version().to_string()),
                kind: Some("Gateway".to_string()),
                name: Some(self.gateway.name.clone()),
                namespace: Some(self.gateway.namespace.clone()),
                uid: self.gateway.uid.clone(),
                ..Default::default()
            },
            reason: Some(t.reason().to_string()),
            message: Some(t.message()),
            type_: Some(if t.warning() { "Warning" } else { "Normal" }.to_string()),
            source: Some(EventSource {
                component: Some(self.options.component.clone()),
                host: None,
            }),
            reporting_component: Some(self.options.component.clone()),
            reporting_instance: crate::env::var("HOSTNAME"),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            count: Some(1),
            ..Default::default()
        };
        let params = PostParams::default();
        (|| async { self.events.create(&params, &event).await.map(|_| ()) })
            .retry(backoff())
            .when(|e| transient(e) && !matches!(e, kube::Error::Api(s) if s.code == 409))
            .await
    }
}
