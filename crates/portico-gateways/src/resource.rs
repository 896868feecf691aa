//! The `resource` gateway: events when Kubernetes objects of any kind are added, updated or
//! deleted.
//!
//! Its configuration, what its events carry and how it acknowledges its sources: [`ResourceConfig`].

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::core::GroupVersionKind;
use kube::discovery::{Scope, pinned_kind};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use portico::{ConfigContext, ConfigError, ConfigExecutor, DispatchError, Event};
use schemars::JsonSchema;
use serde::Deserialize;

/// A kind of change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, JsonSchema)]
pub enum EventType {
    /// An object appeared.
    #[serde(rename = "ADD")]
    Add,
    /// An object changed.
    #[serde(rename = "UPDATE")]
    Update,
    /// An object was deleted.
    #[serde(rename = "DELETE")]
    Delete,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Add => "ADD",
            EventType::Update => "UPDATE",
            EventType::Delete => "DELETE",
        }
    }
}

/// Which objects count.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceFilter {
    /// Only objects whose name starts with this.
    #[serde(default)]
    pub prefix: Option<String>,
    /// `{key: value}`: only objects with these labels (a label selector on the server).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `{key: value}`: only objects with these annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// `{path: value}`: a field selector on the server (`metadata.name`, `status.phase`, …).
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    /// An RFC 3339 time: only objects created at or after it.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub created_by: Option<DateTime<Utc>>,
}

/// A `resource` configuration.
///
/// Payload: `{"type": "ADD" | "UPDATE" | "DELETE", "object": {…}}` as `application/json`.
///
/// The watch is kube-runtime's watcher: it reconnects with backoff and re-lists after a
/// broken watch or `410 Gone`. The gateway remembers the objects it has seen, so a re-list
/// emits only what really changed meanwhile (`ADD` for new objects, `UPDATE` for changed
/// ones, `DELETE` for those gone) and never repeats an event. Objects that exist when the
/// configuration starts are reported as `ADD`, as the original's informer did.
///
/// The Kubernetes client is the gateway's ([`portico::GatewayConfig::kube_client`], set in a
/// cluster); outside one it is made from `KUBECONFIG`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceConfig {
    /// Only this namespace (absent or empty: every namespace).
    #[serde(default)]
    pub namespace: Option<String>,
    /// The API group (empty or absent for the core group).
    #[serde(default)]
    pub group: String,
    /// The API version (`v1`).
    pub version: String,
    /// The kind (`ConfigMap`, `Deployment`, a custom kind), found through discovery.
    pub kind: String,
    /// Which objects count.
    #[serde(default)]
    pub filter: ResourceFilter,
    /// Which changes make events: any of `ADD`, `UPDATE`, `DELETE` (default: all three).
    #[serde(default)]
    pub event_types: Vec<EventType>,
}

impl ResourceConfig {
    /// Checks what the fields' types do not; errors name the field.
    pub fn check(self) -> Result<ResourceConfig, ConfigError> {
        if self.version.trim().is_empty() {
            return Err(ConfigError::invalid("version: empty (required), like `v1`"));
        }
        if self.kind.trim().is_empty() {
            return Err(ConfigError::invalid(
                "kind: empty (required), like `ConfigMap`",
            ));
        }
        for (k, v) in self.filter.labels.iter().chain(&self.filter.fields) {
            if k.trim().is_empty() || k.contains([',', '=', '!']) || v.contains([',', '=', '!']) {
                return Err(ConfigError::invalid(format!(
                    "filter: `{k}: {v}` is not a valid selector term (no `,`, `=` or `!`, and a key)"
                )));
            }
        }
        Ok(self)
    }

    fn selector(map: &BTreeMap<String, String>) -> Option<String> {
        (!map.is_empty()).then(|| {
            map.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        })
    }

    /// Does this configuration want `ty` events of `obj` (the filters the server does not
    /// apply)?
    pub fn wants(&self, ty: EventType, obj: &DynamicObject) -> bool {
        if !self.event_types.is_empty() && !self.event_types.contains(&ty) {
            return false;
        }
        let f = &self.filter;
        if let Some(prefix) = &f.prefix
            && !obj.name_any().starts_with(prefix.as_str())
        {
            return false;
        }
        let annotations = obj.annotations();
        if f.annotations
            .iter()
            .any(|(k, v)| annotations.get(k) != Some(v))
        {
            return false;
        }
        let labels = obj.labels();
        if f.labels.iter().any(|(k, v)| labels.get(k) != Some(v)) {
            return false;
        }
        if let Some(after) = f.created_by {
            let created = obj
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_millisecond());
            if created.is_none_or(|c| c < after.timestamp_millis()) {
                return false;
            }
        }
        true
    }
}

/// The `resource` executor.
#[derive(Clone, Default)]
pub struct Resource {
    client: Option<Client>,
}

impl Resource {
    /// An executor that uses `client` instead of the gateway's (for tests).
    pub fn with_client(client: Client) -> Resource {
        Resource {
            client: Some(client),
        }
    }

    async fn client(&self, ctx: &ConfigContext) -> Result<Client, ConfigError> {
        if let Some(c) = self.client.clone().or_else(|| ctx.gateway().kube_client()) {
            return Ok(c);
        }
        Client::try_default().await.map_err(|e| {
            ConfigError::failed(format!(
                "cannot configure a Kubernetes client: {e} (run in a cluster or set KUBECONFIG)"
            ))
        })
    }
}

fn key(obj: &DynamicObject) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

/// What the gateway has seen, to tell ADD from UPDATE and to find deletions missed while
/// the watch was broken.
#[derive(Default)]
struct Seen {
    objects: HashMap<String, DynamicObject>,
    /// Keys found by a re-list in progress.
    relist: Option<HashSet<String>>,
}

impl Seen {
    /// The change `obj` is, if any.
    fn applied(&mut self, obj: DynamicObject) -> Option<(EventType, DynamicObject)> {
        let k = key(&obj);
        if let Some(r) = self.relist.as_mut() {
            r.insert(k.clone());
        }
        let ty = match self.objects.get(&k) {
            None => EventType::Add,
            Some(old) if old.resource_version() == obj.resource_version() => {
                return None;
            }
            Some(_) => EventType::Update,
        };
        self.objects.insert(k, obj.clone());
        Some((ty, obj))
    }

    fn deleted(&mut self, obj: DynamicObject) -> (EventType, DynamicObject) {
        self.objects.remove(&key(&obj));
        (EventType::Delete, obj)
    }

    /// Ends a re-list: what it did not find was deleted meanwhile.
    fn relisted(&mut self) -> Vec<(EventType, DynamicObject)> {
        let Some(found) = self.relist.take() else {
            return Vec::new();
        };
        let gone: Vec<String> = self
            .objects
            .keys()
            .filter(|k| !found.contains(*k))
            .cloned()
            .collect();
        gone.into_iter()
            .filter_map(|k| self.objects.remove(&k))
            .map(|o| (EventType::Delete, o))
            .collect()
    }
}

impl ConfigExecutor for Resource {
    /// `filter` is its label and field filter, as in Argo Events v0.6.
    fn own_keys(&self) -> &'static [&'static str] {
        &["filter"]
    }

    type Config = ResourceConfig;

    fn validate(&self, ctx: &ConfigContext) -> Result<ResourceConfig, ConfigError> {
        ctx.parse::<ResourceConfig>()?.check()
    }

    async fn start_config(
        &self,
        ctx: ConfigContext,
        config: ResourceConfig,
    ) -> Result<(), ConfigError> {
        let client = self.client(&ctx).await?;
        let gvk = GroupVersionKind::gvk(&config.group, &config.version, &config.kind);
        let what = format!(
            "{}/{} {}",
            if config.group.is_empty() {
                "core"
            } else {
                &config.group
            },
            config.version,
            config.kind
        );
        let (resource, caps) = tokio::select! {
            _ = ctx.stopped() => return Ok(()),
            r = pinned_kind(&client, &gvk) => r.map_err(|e| match &e {
                kube::Error::Api(s) if s.code == 404 => ConfigError::invalid(format!(
                    "the API server does not serve {what}: {e}"
                )),
                _ => ConfigError::failed(format!("discovery of {what} failed: {e}")),
            })?,
        };
        let api: Api<DynamicObject> = match config.namespace.as_deref().filter(|n| !n.is_empty()) {
            Some(ns) if caps.scope == Scope::Namespaced => {
                Api::namespaced_with(client, ns, &resource)
            }
            _ => Api::all_with(client, &resource),
        };
        let mut wc = watcher::Config::default();
        if let Some(labels) = ResourceConfig::selector(&config.filter.labels) {
            wc = wc.labels(&labels);
        }
        if let Some(fields) = ResourceConfig::selector(&config.filter.fields) {
            wc = wc.fields(&fields);
        }
        let mut stream = std::pin::pin!(watcher(api, wc).default_backoff());
        let mut seen = Seen::default();
        let mut failing = false;
        ctx.running();
        loop {
            let event = tokio::select! {
                _ = ctx.stopped() => return Ok(()),
                e = stream.next() => e,
            };
            let changes = match event {
                None => return Err(ConfigError::failed(format!("the watch of {what} ended"))),
                Some(Err(e)) => {
                    failing = true;
                    ctx.report_error(format!("watching {what} failed, retrying: {e}"));
                    continue;
                }
                Some(Ok(watcher::Event::Init)) => {
                    seen.relist = Some(HashSet::new());
                    Vec::new()
                }
                Some(Ok(watcher::Event::InitApply(obj) | watcher::Event::Apply(obj))) => {
                    seen.applied(obj).into_iter().collect()
                }
                Some(Ok(watcher::Event::InitDone)) => seen.relisted(),
                Some(Ok(watcher::Event::Delete(obj))) => vec![seen.deleted(obj)],
            };
            if failing {
                failing = false;
                ctx.running();
            }
            for (ty, obj) in changes {
                if !config.wants(ty, &obj) {
                    continue;
                }
                let payload = serde_json::json!({"type": ty.as_str(), "object": obj});
                match ctx.dispatch(Event::json(&payload)?).await {
                    // atMostOnce, gateway full: dropped (and counted) by design.
                    Ok(()) | Err(DispatchError::Full { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(name: &str, labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> DynamicObject {
        let v = serde_json::json!({
            "apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {
                "name": name, "namespace": "ns", "resourceVersion": "1",
                "creationTimestamp": "2026-01-02T00:00:00Z",
                "labels": labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
                "annotations": annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
            },
        });
        serde_json::from_value(v).unwrap()
    }

    fn config(text: &str) -> ResourceConfig {
        serde_saphyr::from_str(text).unwrap()
    }

    #[test]
    fn filters_and_event_types_apply() {
        let c = config(
            "version: v1\nkind: Widget\nfilter:\n  prefix: w\n  annotations: {team: a}\n  createdBy: 2026-01-01T00:00:00Z\neventTypes: [ADD, DELETE]\n",
        );
        let good = obj("w1", &[], &[("team", "a")]);
        assert!(c.wants(EventType::Add, &good));
        assert!(c.wants(EventType::Delete, &good));
        assert!(!c.wants(EventType::Update, &good));
        assert!(!c.wants(EventType::Add, &obj("x1", &[], &[("team", "a")])));
        assert!(!c.wants(EventType::Add, &obj("w1", &[], &[("team", "b")])));
        let late =
            config("version: v1\nkind: Widget\nfilter:\n  createdBy: 2026-06-01T00:00:00Z\n");
        assert!(!late.wants(EventType::Add, &good));
    }

    fn check(text: &str) -> Result<ResourceConfig, String> {
        portico::testing::parse_config::<ResourceConfig>(text)
            .and_then(ResourceConfig::check)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn validation_names_the_field() {
        assert!(
            check("kind: Widget\n")
                .unwrap_err()
                .contains("missing field `version`")
        );
        assert!(
            check("version: v1\n")
                .unwrap_err()
                .contains("missing field `kind`")
        );
        assert!(
            check("version: ' '\nkind: W\n")
                .unwrap_err()
                .starts_with("version:")
        );
        assert!(
            check("version: v1\nkind: W\nfilter:\n  labels: {\"a,b\": c}\n")
                .unwrap_err()
                .starts_with("filter:")
        );
        assert_eq!(
            ResourceConfig::selector(
                &config("version: v1\nkind: W\nfilter:\n  labels: {a: b, c: d}\n")
                    .filter
                    .labels
            ),
            Some("a=b,c=d".to_string())
        );
    }

    #[test]
    fn a_relist_reports_only_real_changes() {
        let mut seen = Seen::default();
        assert_eq!(seen.applied(obj("a", &[], &[])).unwrap().0, EventType::Add);
        assert_eq!(seen.applied(obj("b", &[], &[])).unwrap().0, EventType::Add);
        assert!(
            seen.applied(obj("a", &[], &[])).is_none(),
            "same version: no event"
        );
        seen.relist = Some(HashSet::new());
        assert!(seen.applied(obj("a", &[], &[])).is_none());
        let mut c = obj("c", &[], &[]);
        c.metadata.resource_version = Some("2".into());
        assert_eq!(seen.applied(c).unwrap().0, EventType::Add);
        let gone = seen.relisted();
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].0, EventType::Delete);
        assert_eq!(gone[0].1.name_any(), "b");
    }
}
