//! A small fake Kubernetes API server for tests: no API server can run on the machines that
//! test Portico, so the Kubernetes paths (ConfigMap source, Gateway status, the controller,
//! the `resource` gateway) talk to this one over loopback through a real `kube::Client`.
//!
//! It serves the real REST paths and JSON of the API server for the kinds it knows
//! (ConfigMaps, Secrets, Pods, Services, Events, Deployments, StatefulSets, `coordination.k8s.io/v1`
//! Leases, Gateways of `portico.dev/v1alpha1` and of `argoproj.io/v1alpha1`, and one custom
//! kind, `Widget` of `example.com/v1`):
//!
//! - discovery: `/api`, `/api/v1`, `/apis`, `/apis/{group}/{version}`;
//! - list (`fieldSelector` on `metadata.name`/`metadata.namespace`, `labelSelector` with
//!   `k=v`, `k!=v`, `k`, `!k`), with the list's `resourceVersion`;
//! - watch (`watch=true`): chunked JSON lines `{"type","object"}` from a `resourceVersion`,
//!   `BOOKMARK`s when asked, and an `ERROR` event with a `410 Gone` status when the version
//!   is older than the kept history (see [`FakeKube::expire_history`]);
//! - get, create (with `generateName`), replace (with the `resourceVersion` conflict check),
//!   patch (merge, strategic merge taken as merge, and server-side apply taken as a merge that
//!   creates), delete, and the `status` subresource of the kinds that have one;
//! - the pods' proxy subresource (`/api/v1/namespaces/{ns}/pods/{pod}:{port}/proxy/…`),
//!   forwarded to a backend a test registers ([`FakeKube::proxy_pod`]);
//! - injected failures ([`FakeKube::fail_next`], e.g. `409 Conflict`) and a log of requests.
//!
//! Writes that change nothing do not bump the `resourceVersion` nor make a watch event, as on
//! a real API server. Tests also read and write the store directly, as another client would.

// Handlers return ready error responses as `Err`; their size does not matter in a test server.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{Method, StatusCode, header};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc, oneshot};

/// A kind the fake serves (two kinds may share a plural in different groups).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct KindInfo {
    /// API group, empty for the core group.
    pub group: &'static str,
    /// Version.
    pub version: &'static str,
    /// Kind.
    pub kind: &'static str,
    /// Plural (the path segment).
    pub plural: &'static str,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Has a `status` subresource.
    pub status: bool,
}

impl KindInfo {
    fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

/// Every kind the fake serves.
pub const KINDS: &[KindInfo] = &[
    KindInfo {
        group: "",
        version: "v1",
        kind: "ConfigMap",
        plural: "configmaps",
        namespaced: true,
        status: false,
    },
    KindInfo {
        group: "",
        version: "v1",
        kind: "Secret",
        plural: "secrets",
        namespaced: true,
        status: false,
    },
    KindInfo {
        group: "",
        version: "v1",
        kind: "Service",
        plural: "services",
        namespaced: true,
        status: true,
    },
    KindInfo {
        group: "",
        version: "v1",
        kind: "Pod",
        plural: "pods",
        namespaced: true,
        status: true,
    },
    KindInfo {
        group: "",
        version: "v1",
        kind: "Event",
        plural: "events",
        namespaced: true,
        status: false,
    },
    KindInfo {
        group: "apps",
        version: "v1",
        kind: "Deployment",
        plural: "deployments",
        namespaced: true,
        status: true,
    },
    KindInfo {
        group: "portico.dev",
        version: "v1alpha1",
        kind: "Gateway",
        plural: "gateways",
        namespaced: true,
        status: true,
    },
    KindInfo {
        group: "argoproj.io",
        version: "v1alpha1",
        kind: "Gateway",
        plural: "gateways",
        namespaced: true,
        status: true,
    },
    KindInfo {
        group: "apps",
        version: "v1",
        kind: "StatefulSet",
        plural: "statefulsets",
        namespaced: true,
        status: true,
    },
    KindInfo {
        group: "coordination.k8s.io",
        version: "v1",
        kind: "Lease",
        plural: "leases",
        namespaced: true,
        status: false,
    },
    KindInfo {
        group: "example.com",
        version: "v1",
        kind: "Widget",
        plural: "widgets",
        namespaced: true,
        status: false,
    },
];

fn kind_by_path(group: &str, version: &str, plural: &str) -> Option<&'static KindInfo> {
    KINDS
        .iter()
        .find(|k| k.group == group && k.version == version && k.plural == plural)
}

fn kind_by_api_version(api_version: &str, kind: &str) -> Option<&'static KindInfo> {
    KINDS
        .iter()
        .find(|k| k.api_version() == api_version && k.kind == kind)
}

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// `GET`, `POST`, …
    pub method: String,
    /// The path.
    pub path: String,
    /// The query string.
    pub query: String,
    /// The `Content-Type`, when there was one.
    pub content_type: String,
    /// The status the fake answered.
    pub status: u16,
}

#[derive(Debug, Clone)]
struct Injection {
    method: String,
    path_contains: String,
    code: u16,
    remaining: usize,
}

#[derive(Debug, Clone)]
struct LogEntry {
    rv: u64,
    kind: &'static KindInfo,
    namespace: String,
    event: &'static str,
    object: Value,
}

#[derive(Debug, Clone, Copy)]
enum Signal {
    Changed,
    Bookmark,
    Break,
}

type Key = (&'static KindInfo, String, String);

#[derive(Default)]
struct Store {
    rv: u64,
    uid: u64,
    objects: BTreeMap<Key, Value>,
    log: Vec<LogEntry>,
    /// Watches from a version below this get `410 Gone`.
    floor: u64,
    injections: Vec<Injection>,
    requests: Vec<RecordedRequest>,
    /// Answer every request but watches with `Connection: close`.
    no_keep_alive: bool,
    /// Where the pod proxy sends a pod's port: (namespace, pod, port) → address.
    pod_backends: BTreeMap<(String, String, u16), SocketAddr>,
}

struct Shared {
    store: Mutex<Store>,
    signals: broadcast::Sender<Signal>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running fake API server; stops when dropped.
pub struct FakeKube {
    shared: Arc<Shared>,
    addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

/// An error as the API server writes it: a `Status` object.
fn status_error(code: u16, reason: &str, message: impl Into<String>) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message.into(), "reason": reason, "code": code,
    });
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        axum::Json(body),
    )
        .into_response()
}

fn ok_json(code: StatusCode, v: Value) -> Response {
    (code, axum::Json(v)).into_response()
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Default::default());
            }
            if let Value::Object(t) = target {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

fn parse_query(q: &str) -> BTreeMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let dec = |s: &str| percent_decode(&s.replace('+', " "));
            (dec(k), dec(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// Does `obj` pass a `fieldSelector` and a `labelSelector`?
fn selected(obj: &Value, fields: Option<&str>, labels: Option<&str>) -> bool {
    for term in fields.unwrap_or("").split(',').filter(|t| !t.is_empty()) {
        let (path, want, negate) = match term.split_once("!=") {
            Some((p, v)) => (p, v, true),
            None => match term.split_once("==").or_else(|| term.split_once('=')) {
                Some((p, v)) => (p, v, false),
                None => return false,
            },
        };
        let mut cur = obj;
        let mut found = true;
        for part in path.split('.') {
            match cur.get(part) {
                Some(v) => cur = v,
                None => {
                    found = false;
                    break;
                }
            }
        }
        let have = if found {
            match cur {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            }
        } else {
            String::new()
        };
        if (have == want) == negate {
            return false;
        }
    }
    let obj_labels = obj
        .get("metadata")
        .and_then(|m| m.get("labels"))
        .and_then(|l| l.as_object());
    let label = |k: &str| obj_labels.and_then(|l| l.get(k)).and_then(|v| v.as_str());
    for term in labels.unwrap_or("").split(',').filter(|t| !t.is_empty()) {
        let ok = if let Some((k, v)) = term.split_once("!=") {
            label(k) != Some(v)
        } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            label(k) == Some(v)
        } else if let Some(k) = term.strip_prefix('!') {
            label(k).is_none()
        } else {
            label(term).is_some()
        };
        if !ok {
            return false;
        }
    }
    true
}

/// What a request's path names.
struct Target {
    kind: &'static KindInfo,
    namespace: Option<String>,
    name: Option<String>,
    status: bool,
}

enum Route {
    Discovery(Value),
    Resource(Target),
}

fn route(path: &str) -> Option<Route> {
    let seg: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match seg.as_slice() {
        ["api"] => {
            return Some(Route::Discovery(
                json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}),
            ));
        }
        ["apis"] => {
            let mut groups: Vec<Value> = Vec::new();
            for k in KINDS.iter().filter(|k| !k.group.is_empty()) {
                let gv = json!({"groupVersion": k.api_version(), "version": k.version});
                if !groups.iter().any(|g| g["name"] == k.group) {
                    groups.push(json!({"name": k.group, "versions": [gv], "preferredVersion": gv}));
                }
            }
            return Some(Route::Discovery(
                json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
            ));
        }
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    if rest.is_empty() {
        let resources: Vec<Value> = KINDS
            .iter()
            .filter(|k| k.group == group && k.version == version)
            .flat_map(|k| {
                let mut r = vec![json!({
                    "name": k.plural, "singularName": k.kind.to_lowercase(), "namespaced": k.namespaced,
                    "kind": k.kind,
                    "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
                })];
                if k.status {
                    r.push(json!({"name": format!("{}/status", k.plural), "singularName": "", "namespaced": k.namespaced, "kind": k.kind, "verbs": ["get", "patch", "update"]}));
                }
                r
            })
            .collect();
        if resources.is_empty() {
            return None;
        }
        let gv = if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        };
        return Some(Route::Discovery(
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
        ));
    }
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        _ => (None, rest),
    };
    let (plural, name, sub) = match rest {
        [p] => (*p, None, None),
        [p, n] => (*p, Some(n.to_string()), None),
        [p, n, s] => (*p, Some(n.to_string()), Some(*s)),
        _ => return None,
    };
    let kind = kind_by_path(group, version, plural)?;
    match sub {
        None => {}
        Some("status") if kind.status => {}
        Some(_) => return None,
    }
    Some(Route::Resource(Target {
        kind,
        namespace,
        name,
        status: sub.is_some(),
    }))
}

impl Store {
    fn key(kind: &'static KindInfo, ns: &str, name: &str) -> Key {
        let ns = if kind.namespaced { ns } else { "" };
        (kind, ns.to_string(), name.to_string())
    }

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn record(&mut self, kind: &'static KindInfo, event: &'static str, object: Value) {
        let namespace = meta_str(&object, "namespace")
            .unwrap_or_default()
            .to_string();
        let rv = self.rv;
        self.log.push(LogEntry {
            rv,
            kind,
            namespace,
            event,
            object,
        });
    }

    /// Creates an object; `Err` is a ready answer.
    fn create(
        &mut self,
        kind: &'static KindInfo,
        ns: &str,
        mut obj: Value,
    ) -> Result<Value, Response> {
        if !obj.is_object() {
            return Err(status_error(
                400,
                "BadRequest",
                "the body is not a JSON object",
            ));
        }
        let name = match meta_str(&obj, "name") {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => match meta_str(&obj, "generateName") {
                Some(g) => format!("{g}{:05x}", self.uid + 1),
                None => {
                    return Err(status_error(
                        422,
                        "Invalid",
                        "metadata.name: Required value",
                    ));
                }
            },
        };
        let key = Store::key(kind, ns, &name);
        if self.objects.contains_key(&key) {
            return Err(status_error(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", kind.plural),
            ));
        }
        self.uid += 1;
        let uid = format!("00000000-0000-0000-0000-{:012x}", self.uid);
        let rv = self.next_rv();
        obj["apiVersion"] = json!(kind.api_version());
        obj["kind"] = json!(kind.kind);
        let m = &mut obj["metadata"];
        if !m.is_object() {
            *m = json!({});
        }
        m["name"] = json!(name);
        if kind.namespaced {
            m["namespace"] = json!(ns);
        }
        m["uid"] = json!(uid);
        m["resourceVersion"] = json!(rv.to_string());
        m["generation"] = json!(1);
        m["creationTimestamp"] = json!(chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string());
        self.objects.insert(key, obj.clone());
        self.record(kind, "ADDED", obj.clone());
        Ok(obj)
    }

    /// Stores `new` in place of the object at `key` (which exists), keeping what the server
    /// owns; no event when nothing changed.
    fn store_update(&mut self, kind: &'static KindInfo, key: Key, mut new: Value) -> Value {
        let Some(old) = self.objects.get(&key).cloned() else {
            return new;
        };
        for f in [
            "uid",
            "creationTimestamp",
            "name",
            "namespace",
            "generation",
        ] {
            if let Some(v) = old["metadata"].get(f) {
                new["metadata"][f] = v.clone();
            }
        }
        new["apiVersion"] = json!(kind.api_version());
        new["kind"] = json!(kind.kind);
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
        if new == old {
            return old;
        }
        let strip = |v: &Value| {
            let mut v = v.clone();
            if let Some(o) = v.as_object_mut() {
                o.remove("metadata");
                o.remove("status");
            }
            v
        };
        if strip(&new) != strip(&old) {
            let g = old["metadata"]["generation"].as_i64().unwrap_or(1);
            new["metadata"]["generation"] = json!(g + 1);
        }
        let rv = self.next_rv();
        new["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.objects.insert(key, new.clone());
        self.record(kind, "MODIFIED", new.clone());
        new
    }

    fn delete(&mut self, kind: &'static KindInfo, key: &Key) -> Option<Value> {
        let mut obj = self.objects.remove(key)?;
        let rv = self.next_rv();
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.record(kind, "DELETED", obj.clone());
        Some(obj)
    }
}

fn conflict_check(old: &Value, body: &Value) -> Result<(), Response> {
    match meta_str(body, "resourceVersion") {
        Some(rv) if Some(rv) != meta_str(old, "resourceVersion") => Err(status_error(
            409,
            "Conflict",
            "Operation cannot be fulfilled: the object has been modified; please apply your changes to the latest version and try again",
        )),
        _ => Ok(()),
    }
}

/// Keeps only the status of `v` (for `/status` writes) or all but the status (main resource
/// of a kind with a status subresource).
fn split_status(kind: &KindInfo, status_write: bool, old: &Value, new: Value) -> Value {
    if !kind.status {
        return new;
    }
    let mut out = old.clone();
    if status_write {
        match new.get("status") {
            Some(s) => out["status"] = s.clone(),
            None => {
                if let Some(o) = out.as_object_mut() {
                    o.remove("status");
                }
            }
        }
        out
    } else {
        let mut new = new;
        match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(o) = new.as_object_mut() {
                    o.remove("status");
                }
            }
        }
        new
    }
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    let headers = req.headers().clone();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = match axum::body::to_bytes(req.into_body(), 16 << 20).await {
        Ok(b) => b,
        Err(e) => return status_error(400, "BadRequest", format!("cannot read the body: {e}")),
    };
    let mut response = match pod_proxy_path(&path) {
        Some(target) => proxy_to_pod(&shared, target, &method, &query, &headers, body).await,
        None => answer(&shared, &method, &path, &query, &content_type, body),
    };
    let mut store = shared.lock();
    if store.no_keep_alive && !query.contains("watch=") {
        response
            .headers_mut()
            .insert(header::CONNECTION, http::HeaderValue::from_static("close"));
    }
    store.requests.push(RecordedRequest {
        method: method.to_string(),
        path,
        query,
        content_type,
        status: response.status().as_u16(),
    });
    drop(store);
    response
}

/// A request to a pod's proxy subresource: namespace, pod, port, and the path on the pod.
struct PodProxy {
    namespace: String,
    pod: String,
    port: u16,
    path: String,
}

/// `/api/v1/namespaces/{ns}/pods/{[scheme:]name[:port]}/proxy[/{path}]`, the port 80 when
/// not given (as the API server does).
fn pod_proxy_path(path: &str) -> Option<PodProxy> {
    let rest = path.strip_prefix("/api/v1/namespaces/")?;
    let (namespace, rest) = rest.split_once('/')?;
    let (target, rest) = rest.strip_prefix("pods/")?.split_once('/')?;
    let on_pod = match rest.strip_prefix("proxy")? {
        "" => "/",
        p if p.starts_with('/') => p,
        _ => return None,
    };
    let parts: Vec<&str> = target.split(':').collect();
    let (pod, port) = match parts.as_slice() {
        [name] => (*name, None),
        [name, port] | [_, name, port] => (*name, Some(*port)),
        _ => return None,
    };
    let port = match port {
        None | Some("") => 80,
        Some(p) => p.parse().ok()?,
    };
    Some(PodProxy {
        namespace: namespace.to_string(),
        pod: pod.to_string(),
        port,
        path: on_pod.to_string(),
    })
}

/// The pod proxy: the request goes on to the backend registered for the pod's port
/// ([`FakeKube::proxy_pod`]) and its answer comes back as it streams. As the API server does,
/// the `Authorization` header (the client's credential for the API server) is not passed on.
async fn proxy_to_pod(
    shared: &Arc<Shared>,
    target: PodProxy,
    method: &Method,
    query: &str,
    headers: &http::HeaderMap,
    body: Bytes,
) -> Response {
    let kind = kind_by_path("", "v1", "pods").expect("pods are served");
    let backend = {
        let store = shared.lock();
        if !store
            .objects
            .contains_key(&Store::key(kind, &target.namespace, &target.pod))
        {
            return not_found(kind, &target.pod);
        }
        store
            .pod_backends
            .get(&(target.namespace.clone(), target.pod.clone(), target.port))
            .copied()
    };
    let refused = |detail: String| {
        status_error(
            503,
            "ServiceUnavailable",
            format!("error trying to reach service: {detail}"),
        )
    };
    let Some(addr) = backend else {
        return refused(format!(
            "dial tcp {}:{}: connect: connection refused",
            target.pod, target.port
        ));
    };
    let stream = match tokio::net::TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => return refused(format!("dial tcp {addr}: {e}")),
    };
    let (mut sender, connection) =
        match hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await {
            Ok(pair) => pair,
            Err(e) => return refused(e.to_string()),
        };
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let uri = if query.is_empty() {
        target.path.clone()
    } else {
        format!("{}?{query}", target.path)
    };
    let mut request = http::Request::new(Body::from(body));
    *request.method_mut() = method.clone();
    *request.uri_mut() = match uri.parse() {
        Ok(u) => u,
        Err(e) => return status_error(400, "BadRequest", format!("bad proxied path: {e}")),
    };
    for (name, value) in headers {
        if ![
            header::AUTHORIZATION,
            header::HOST,
            header::CONNECTION,
            header::TRANSFER_ENCODING,
            header::CONTENT_LENGTH,
        ]
        .contains(name)
        {
            request.headers_mut().append(name.clone(), value.clone());
        }
    }
    if let Ok(host) = http::HeaderValue::from_str(&addr.to_string()) {
        request.headers_mut().insert(header::HOST, host);
    }
    match sender.send_request(request).await {
        Ok(answer) => {
            let (parts, body) = answer.into_parts();
            Response::from_parts(parts, Body::new(body))
        }
        Err(e) => refused(e.to_string()),
    }
}

fn answer(
    shared: &Arc<Shared>,
    method: &Method,
    path: &str,
    query: &str,
    content_type: &str,
    body: Bytes,
) -> Response {
    {
        let mut store = shared.lock();
        if let Some(inj) = store.injections.iter_mut().find(|i| {
            i.remaining > 0 && i.method == method.as_str() && path.contains(&i.path_contains)
        }) {
            inj.remaining -= 1;
            let code = inj.code;
            let reason = match code {
                409 => "Conflict",
                410 => "Expired",
                500 => "InternalError",
                503 => "ServiceUnavailable",
                _ => "Injected",
            };
            return status_error(
                code,
                reason,
                format!("injected failure {code} for {method} {path}"),
            );
        }
    }
    let route = match route(path) {
        Some(r) => r,
        None => {
            return status_error(
                404,
                "NotFound",
                format!("the server could not find the requested resource ({path})"),
            );
        }
    };
    let t = match route {
        Route::Discovery(v) => return ok_json(StatusCode::OK, v),
        Route::Resource(t) => t,
    };
    let q = parse_query(query);
    let ns = t.namespace.clone().unwrap_or_else(|| "default".to_string());
    let parse_body = || -> Result<Value, Response> {
        serde_json::from_slice::<Value>(&body)
            .map_err(|e| status_error(400, "BadRequest", format!("the body is not JSON: {e}")))
    };
    match (method.clone(), &t.name) {
        (Method::GET, None) => {
            let watch = q.get("watch").is_some_and(|w| w == "true" || w == "1");
            if watch {
                return watch_response(shared.clone(), &t, &q);
            }
            let store = shared.lock();
            let items: Vec<Value> = store
                .objects
                .iter()
                .filter(|((k, ons, _), obj)| {
                    *k == t.kind
                        && t.namespace.as_ref().is_none_or(|n| n == ons)
                        && selected(
                            obj,
                            q.get("fieldSelector").map(String::as_str),
                            q.get("labelSelector").map(String::as_str),
                        )
                })
                .map(|(_, o)| o.clone())
                .collect();
            ok_json(
                StatusCode::OK,
                json!({
                    "kind": format!("{}List", t.kind.kind), "apiVersion": t.kind.api_version(),
                    "metadata": {"resourceVersion": store.rv.to_string()}, "items": items,
                }),
            )
        }
        (Method::GET, Some(name)) => {
            let store = shared.lock();
            match store.objects.get(&Store::key(t.kind, &ns, name)) {
                Some(o) => ok_json(StatusCode::OK, o.clone()),
                None => not_found(t.kind, name),
            }
        }
        (Method::POST, None) => {
            let obj = match parse_body() {
                Ok(o) => o,
                Err(r) => return r,
            };
            let mut store = shared.lock();
            let r = store.create(t.kind, &ns, obj);
            drop(store);
            let _ = shared.signals.send(Signal::Changed);
            match r {
                Ok(o) => ok_json(StatusCode::CREATED, o),
                Err(r) => r,
            }
        }
        (Method::PUT, Some(name)) => {
            let obj = match parse_body() {
                Ok(o) => o,
                Err(r) => return r,
            };
            let key = Store::key(t.kind, &ns, name);
            let mut store = shared.lock();
            let Some(old) = store.objects.get(&key).cloned() else {
                return not_found(t.kind, name);
            };
            if let Err(r) = conflict_check(&old, &obj) {
                return r;
            }
            let new = split_status(t.kind, t.status, &old, obj);
            let out = store.store_update(t.kind, key, new);
            drop(store);
            let _ = shared.signals.send(Signal::Changed);
            ok_json(StatusCode::OK, out)
        }
        (Method::PATCH, Some(name)) => {
            let patch = match parse_body() {
                Ok(o) => o,
                Err(r) => return r,
            };
            let apply = content_type.starts_with("application/apply-patch");
            let merge = content_type.starts_with("application/merge-patch+json")
                || content_type.starts_with("application/strategic-merge-patch+json");
            if !apply && !merge {
                return status_error(
                    415,
                    "UnsupportedMediaType",
                    format!(
                        "the fake API server takes merge and apply patches, not `{content_type}`"
                    ),
                );
            }
            let key = Store::key(t.kind, &ns, name);
            let mut store = shared.lock();
            let out = match store.objects.get(&key).cloned() {
                None if apply && !t.status => {
                    let mut obj = patch;
                    obj["metadata"]["name"] = json!(name);
                    store
                        .create(t.kind, &ns, obj)
                        .map(|o| (StatusCode::CREATED, o))
                }
                None => Err(not_found(t.kind, name)),
                Some(old) => conflict_check(&old, &patch).map(|()| {
                    let mut merged = old.clone();
                    let mut patch = patch;
                    if let Some(m) = patch.get_mut("metadata").and_then(|m| m.as_object_mut()) {
                        m.remove("resourceVersion");
                    }
                    merge_patch(&mut merged, &patch);
                    let new = split_status(t.kind, t.status, &old, merged);
                    (StatusCode::OK, store.store_update(t.kind, key, new))
                }),
            };
            drop(store);
            let _ = shared.signals.send(Signal::Changed);
            match out {
                Ok((code, o)) => ok_json(code, o),
                Err(r) => r,
            }
        }
        (Method::DELETE, Some(name)) => {
            let key = Store::key(t.kind, &ns, name);
            let out = shared.lock().delete(t.kind, &key);
            let _ = shared.signals.send(Signal::Changed);
            match out {
                Some(o) => ok_json(StatusCode::OK, o),
                None => not_found(t.kind, name),
            }
        }
        _ => status_error(
            405,
            "MethodNotAllowed",
            format!("{method} is not supported on {path}"),
        ),
    }
}

fn not_found(kind: &KindInfo, name: &str) -> Response {
    status_error(
        404,
        "NotFound",
        format!("{} \"{name}\" not found", kind.plural),
    )
}

fn line(v: &Value) -> Bytes {
    let mut b = serde_json::to_vec(v).unwrap_or_default();
    b.push(b'\n');
    Bytes::from(b)
}

fn watch_response(shared: Arc<Shared>, t: &Target, q: &BTreeMap<String, String>) -> Response {
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::convert::Infallible>>(64);
    let kind = t.kind;
    let namespace = t.namespace.clone();
    let fields = q.get("fieldSelector").cloned();
    let labels = q.get("labelSelector").cloned();
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|b| b == "true");
    let from: Option<u64> = q
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .filter(|v| *v > 0);
    let mut signals = shared.signals.subscribe();
    tokio::spawn(async move {
        let matches = |e_kind: &KindInfo, e_ns: &str, obj: &Value| {
            e_kind == kind
                && namespace.as_ref().is_none_or(|n| n == e_ns)
                && selected(obj, fields.as_deref(), labels.as_deref())
        };
        enum Start {
            Gone(Value),
            From(u64),
            Current(Vec<Value>, u64),
        }
        let start = {
            let store = shared.lock();
            match from {
                Some(rv) if rv < store.floor => Start::Gone(json!({"type": "ERROR", "object": {
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": format!("too old resource version: {rv} ({})", store.floor),
                    "reason": "Expired", "code": 410,
                }})),
                Some(rv) => Start::From(rv),
                None => Start::Current(
                    store
                        .objects
                        .iter()
                        .filter(|((p, ns, _), o)| matches(p, ns, o))
                        .map(|(_, o)| json!({"type": "ADDED", "object": o}))
                        .collect(),
                    store.rv,
                ),
            }
        };
        let mut cursor = match start {
            Start::Gone(gone) => {
                let _ = tx.send(Ok(line(&gone))).await;
                return;
            }
            Start::From(rv) => rv,
            Start::Current(current, rv) => {
                for ev in current {
                    if tx.send(Ok(line(&ev))).await.is_err() {
                        return;
                    }
                }
                rv
            }
        };
        loop {
            let pending: Vec<(u64, Value)> = {
                let store = shared.lock();
                store
                    .log
                    .iter()
                    .filter(|e| e.rv > cursor && matches(e.kind, &e.namespace, &e.object))
                    .map(|e| (e.rv, json!({"type": e.event, "object": e.object})))
                    .collect()
            };
            for (rv, ev) in pending {
                if tx.send(Ok(line(&ev))).await.is_err() {
                    return;
                }
                cursor = rv;
            }
            let signal = tokio::select! {
                s = signals.recv() => s,
                _ = tx.closed() => return,
            };
            match signal {
                Ok(Signal::Changed) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Ok(Signal::Bookmark) if bookmarks => {
                    let rv = shared.lock().rv;
                    cursor = cursor.max(rv);
                    let bm = json!({"type": "BOOKMARK", "object": {
                        "kind": kind.kind, "apiVersion": kind.api_version(),
                        "metadata": {"resourceVersion": rv.to_string()},
                    }});
                    if tx.send(Ok(line(&bm))).await.is_err() {
                        return;
                    }
                }
                Ok(Signal::Bookmark) => {}
                Ok(Signal::Break) | Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| status_error(500, "InternalError", "cannot build the watch response"))
}

impl FakeKube {
    /// Starts a fake API server on a free loopback port.
    pub async fn start() -> FakeKube {
        FakeKube::start_on(0).await
    }

    /// Starts a fake API server on loopback port `port` (0: a free one).
    pub async fn start_on(port: u16) -> FakeKube {
        let (signals, _) = broadcast::channel(1024);
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::default()),
            signals,
        });
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind a loopback port for the fake API server");
        let addr = listener.local_addr().expect("local address");
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let signals = shared.signals.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                    let _ = signals.send(Signal::Break);
                })
                .await;
        });
        FakeKube {
            shared,
            addr,
            _stop: stop,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A `kube::Client` for this server (default namespace `default`).
    pub fn client(&self) -> kube::Client {
        let uri: http::Uri = self.url().parse().expect("a loopback URL");
        let mut config = kube::Config::new(uri);
        config.read_timeout = Some(Duration::from_secs(60));
        kube::Client::try_from(config).expect("a kube client for the fake API server")
    }

    /// A kubeconfig file's text that points at this server (for processes started by tests).
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {url}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\ncurrent-context: fake\nusers:\n- name: fake\n  user:\n    token: fake\n",
            url = self.url()
        )
    }

    fn kind_of(obj: &Value) -> &'static KindInfo {
        let api_version = obj["apiVersion"].as_str().unwrap_or_default();
        let kind = obj["kind"].as_str().unwrap_or_default();
        kind_by_api_version(api_version, kind)
            .unwrap_or_else(|| panic!("the fake API server does not serve {api_version} {kind}"))
    }

    fn kind_named(api_version: &str, kind: &str) -> &'static KindInfo {
        kind_by_api_version(api_version, kind)
            .unwrap_or_else(|| panic!("the fake API server does not serve {api_version} {kind}"))
    }

    /// Creates `obj` (which names its `apiVersion`, `kind` and `metadata`), as another client
    /// would; panics when it exists.
    pub fn create(&self, obj: Value) -> Value {
        let kind = Self::kind_of(&obj);
        let ns = meta_str(&obj, "namespace").unwrap_or("default").to_string();
        let out = self.shared.lock().create(kind, &ns, obj);
        let _ = self.shared.signals.send(Signal::Changed);
        match out {
            Ok(o) => o,
            Err(r) => panic!("create failed: {}", r.status()),
        }
    }

    /// Replaces the whole object (spec and status alike) as another client would; creates it
    /// when absent.
    pub fn replace(&self, obj: Value) -> Value {
        let kind = Self::kind_of(&obj);
        let ns = meta_str(&obj, "namespace").unwrap_or("default").to_string();
        let name = meta_str(&obj, "name").unwrap_or_default().to_string();
        let key = Store::key(kind, &ns, &name);
        let mut store = self.shared.lock();
        let out = if store.objects.contains_key(&key) {
            store.store_update(kind, key, obj)
        } else {
            match store.create(kind, &ns, obj) {
                Ok(o) => o,
                Err(r) => panic!("create failed: {}", r.status()),
            }
        };
        drop(store);
        let _ = self.shared.signals.send(Signal::Changed);
        out
    }

    /// Merge-patches an object (spec and status alike); `None` when absent.
    pub fn patch(
        &self,
        api_version: &str,
        kind: &str,
        ns: &str,
        name: &str,
        patch: Value,
    ) -> Option<Value> {
        let kind = Self::kind_named(api_version, kind);
        let key = Store::key(kind, ns, name);
        let mut store = self.shared.lock();
        let mut obj = store.objects.get(&key)?.clone();
        merge_patch(&mut obj, &patch);
        let out = store.store_update(kind, key, obj);
        drop(store);
        let _ = self.shared.signals.send(Signal::Changed);
        Some(out)
    }

    /// Deletes an object; `None` when absent.
    pub fn delete(&self, api_version: &str, kind: &str, ns: &str, name: &str) -> Option<Value> {
        let kind = Self::kind_named(api_version, kind);
        let out = self.shared.lock().delete(kind, &Store::key(kind, ns, name));
        let _ = self.shared.signals.send(Signal::Changed);
        out
    }

    /// One object.
    pub fn get(&self, api_version: &str, kind: &str, ns: &str, name: &str) -> Option<Value> {
        let kind = Self::kind_named(api_version, kind);
        self.shared
            .lock()
            .objects
            .get(&Store::key(kind, ns, name))
            .cloned()
    }

    /// Every object of a kind in a namespace.
    pub fn list(&self, api_version: &str, kind: &str, ns: &str) -> Vec<Value> {
        let kind = Self::kind_named(api_version, kind);
        self.shared
            .lock()
            .objects
            .iter()
            .filter(|((k, ons, _), _)| *k == kind && ons == ns)
            .map(|(_, o)| o.clone())
            .collect()
    }

    /// Forgets the history: a watch that resumes from any version seen so far gets an
    /// `ERROR` event with `410 Gone` (as after an etcd compaction). Open watches go on.
    pub fn expire_history(&self) {
        let mut store = self.shared.lock();
        store.floor = store.rv + 1;
        store.log.clear();
    }

    /// Ends every open watch (as when the API server restarts or a proxy cuts the stream).
    pub fn break_watches(&self) {
        let _ = self.shared.signals.send(Signal::Break);
    }

    /// Sends a `BOOKMARK` on every open watch that allows them.
    pub fn bookmark(&self) {
        let _ = self.shared.signals.send(Signal::Bookmark);
    }

    /// Answers the next `times` requests of `method` whose path contains `path_contains`
    /// with the error `code` (e.g. 409 Conflict).
    pub fn fail_next(&self, method: &str, path_contains: &str, code: u16, times: usize) {
        self.shared.lock().injections.push(Injection {
            method: method.to_string(),
            path_contains: path_contains.to_string(),
            code,
            remaining: times,
        });
    }

    /// Closes the connection after every answer but a watch (`Connection: close`), so that
    /// clients keep no idle connection (for tests that count open sockets).
    pub fn disable_keep_alive(&self) {
        self.shared.lock().no_keep_alive = true;
    }

    /// Sends what the pod proxy gets for port `port` of pod `pod` in namespace `ns`
    /// (`/api/v1/namespaces/{ns}/pods/{pod}:{port}/proxy/…`) to `backend`, as the API server
    /// would to the pod. The pod must exist (else 404); a port without a backend gets the
    /// API server's 503.
    pub fn proxy_pod(&self, ns: &str, pod: &str, port: u16, backend: SocketAddr) {
        self.shared
            .lock()
            .pod_backends
            .insert((ns.to_string(), pod.to_string(), port), backend);
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// Polls `check` every 20 ms until it gives a value or `timeout` passes (then panics
    /// with `what`).
    pub async fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&FakeKube) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(v) = check(self) {
                return v;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("timed out after {timeout:?} waiting for {what}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
