//! The github and gitlab gateways registering their hooks through the forges' REST APIs,
//! against a local server that speaks those APIs' requests and answers (GitHub and GitLab
//! cannot be reached from tests): found by URL and updated rather than re-created, kept across
//! restarts, deleted only on removal with `deleteHookOnRemove`, retried in the background while
//! the endpoint serves, and no secret in what the node shows even when the API echoes it.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::routing::{get, put};
use common::{client, free_port, map, wait_until};
use portico::Phase;
use portico::testing::Harness;
use portico_gateways::builtin;
use portico_gateways::webhook::sign_hmac_sha256;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(15);

/// A forge's hooks and every authorized call made to them.
#[derive(Default)]
struct Api {
    /// (method, path, body) of every authorized request.
    calls: Mutex<Vec<(Method, String, Value)>>,
    hooks: Mutex<BTreeMap<u64, Value>>,
    /// Calls to refuse with 503 before answering.
    outage: AtomicUsize,
    /// Refuse creation with a message that echoes the request (body and credentials).
    echo: bool,
}

type Answer = (StatusCode, Json<Value>);

impl Api {
    fn methods(&self) -> Vec<(Method, String)> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .map(|(m, p, _)| (m.clone(), p.clone()))
            .collect()
    }

    /// Checks the credentials and the outage; records the call.
    fn take(
        &self,
        headers: &HeaderMap,
        credential: (&str, &str),
        call: (Method, String, Value),
    ) -> Result<(), Answer> {
        if headers.get(credential.0).is_none_or(|v| v != credential.1) {
            return Err((
                StatusCode::UNAUTHORIZED,
                Json(json!({"message": "401 Unauthorized"})),
            ));
        }
        if self
            .outage
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err((
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"message": "Server Error"})),
            ));
        }
        self.calls.lock().unwrap().push(call);
        Ok(())
    }

    fn echoed(&self, headers: &HeaderMap, body: &Value) -> Option<Answer> {
        self.echo.then(|| {
            let auth: Vec<String> = headers
                .iter()
                .map(|(k, v)| format!("{k}={}", v.to_str().unwrap_or("")))
                .collect();
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({"message": format!("Validation Failed for {body} sent with {}", auth.join(" "))})),
            )
        })
    }

    fn add(&self, hook: Value) -> Value {
        let mut hooks = self.hooks.lock().unwrap();
        let id = hooks.keys().last().copied().unwrap_or(100) + 1;
        let mut hook = hook;
        hook["id"] = json!(id);
        hooks.insert(id, hook.clone());
        hook
    }
}

// GitHub: /repos/{owner}/{repo}/hooks, `Authorization: Bearer`, PATCH to update.

const GH_AUTH: (&str, &str) = ("authorization", "Bearer gh-token");

async fn gh_list(
    State(api): State<Arc<Api>>,
    Path((owner, repo)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    let path = format!("/repos/{owner}/{repo}/hooks");
    if let Err(e) = api.take(&headers, GH_AUTH, (Method::GET, path, Value::Null)) {
        return e;
    }
    let hooks: Vec<Value> = api.hooks.lock().unwrap().values().cloned().collect();
    (StatusCode::OK, Json(Value::Array(hooks)))
}

async fn gh_create(
    State(api): State<Arc<Api>>,
    Path((owner, repo)): Path<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Answer {
    let path = format!("/repos/{owner}/{repo}/hooks");
    if let Err(e) = api.take(&headers, GH_AUTH, (Method::POST, path, body.clone())) {
        return e;
    }
    if let Some(e) = api.echoed(&headers, &body) {
        return e;
    }
    let hook = api.add(
        json!({"name": "web", "active": true, "events": body["events"],
        "config": {"url": body["config"]["url"], "content_type": "json", "insecure_ssl": "0"}}),
    );
    (StatusCode::CREATED, Json(hook))
}

async fn gh_update(
    State(api): State<Arc<Api>>,
    Path((owner, repo, id)): Path<(String, String, u64)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Answer {
    let path = format!("/repos/{owner}/{repo}/hooks/{id}");
    if let Err(e) = api.take(&headers, GH_AUTH, (Method::PATCH, path, body.clone())) {
        return e;
    }
    match api.hooks.lock().unwrap().get_mut(&id) {
        Some(h) => {
            h["events"] = body["events"].clone();
            (StatusCode::OK, Json(h.clone()))
        }
        None => (StatusCode::NOT_FOUND, Json(json!({"message": "Not Found"}))),
    }
}

async fn gh_delete(
    State(api): State<Arc<Api>>,
    Path((owner, repo, id)): Path<(String, String, u64)>,
    headers: HeaderMap,
) -> Answer {
    let path = format!("/repos/{owner}/{repo}/hooks/{id}");
    if let Err(e) = api.take(&headers, GH_AUTH, (Method::DELETE, path, Value::Null)) {
        return e;
    }
    match api.hooks.lock().unwrap().remove(&id) {
        Some(_) => (StatusCode::NO_CONTENT, Json(Value::Null)),
        None => (StatusCode::NOT_FOUND, Json(json!({"message": "Not Found"}))),
    }
}

// GitLab: /projects/{id or encoded path}/hooks, `PRIVATE-TOKEN`, PUT to update.

const GL_AUTH: (&str, &str) = ("private-token", "gl-token");

async fn gl_list(
    State(api): State<Arc<Api>>,
    Path(project): Path<String>,
    headers: HeaderMap,
) -> Answer {
    let path = format!("/projects/{project}/hooks");
    if let Err(e) = api.take(&headers, GL_AUTH, (Method::GET, path, Value::Null)) {
        return e;
    }
    let hooks: Vec<Value> = api.hooks.lock().unwrap().values().cloned().collect();
    (StatusCode::OK, Json(Value::Array(hooks)))
}

async fn gl_create(
    State(api): State<Arc<Api>>,
    Path(project): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Answer {
    let path = format!("/projects/{project}/hooks");
    if let Err(e) = api.take(&headers, GL_AUTH, (Method::POST, path, body.clone())) {
        return e;
    }
    let mut hook = body.clone();
    hook.as_object_mut().unwrap().remove("token");
    (StatusCode::CREATED, Json(api.add(hook)))
}

async fn gl_update(
    State(api): State<Arc<Api>>,
    Path((project, id)): Path<(String, u64)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Answer {
    let path = format!("/projects/{project}/hooks/{id}");
    if let Err(e) = api.take(&headers, GL_AUTH, (Method::PUT, path, body.clone())) {
        return e;
    }
    match api.hooks.lock().unwrap().get_mut(&id) {
        Some(h) => {
            h["push_events"] = body["push_events"].clone();
            (StatusCode::OK, Json(h.clone()))
        }
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"message": "404 Not found"})),
        ),
    }
}

async fn gl_delete(
    State(api): State<Arc<Api>>,
    Path((project, id)): Path<(String, u64)>,
    headers: HeaderMap,
) -> Answer {
    let path = format!("/projects/{project}/hooks/{id}");
    if let Err(e) = api.take(&headers, GL_AUTH, (Method::DELETE, path, Value::Null)) {
        return e;
    }
    match api.hooks.lock().unwrap().remove(&id) {
        Some(_) => (StatusCode::NO_CONTENT, Json(Value::Null)),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"message": "404 Not found"})),
        ),
    }
}

/// Secret `gitlab-access` in namespace `default`, its key `accesskey` the GitLab token; every
/// other Secret is missing.
async fn kube_secret(Path((namespace, name)): Path<(String, String)>) -> Answer {
    if (namespace.as_str(), name.as_str()) != ("default", "gitlab-access") {
        return (
            StatusCode::NOT_FOUND,
            Json(
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                "message": format!("secrets \"{name}\" not found"), "reason": "NotFound", "code": 404}),
            ),
        );
    }
    // base64 of "gl-token\n": the trailing newline is not part of the token.
    (
        StatusCode::OK,
        Json(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace, "resourceVersion": "1"},
            "type": "Opaque", "data": {"accesskey": "Z2wtdG9rZW4K"}})),
    )
}

/// A Kubernetes client for the fake at `base`.
fn kube_client(base: &str) -> kube::Client {
    let config = kube::Config::new(base.parse().unwrap());
    kube::Client::try_from(config).unwrap()
}

/// Both fakes on one free port; the base URL.
async fn start_api(api: Arc<Api>) -> (String, tokio::task::JoinHandle<()>) {
    let app = axum::Router::new()
        .route("/repos/{owner}/{repo}/hooks", get(gh_list).post(gh_create))
        .route(
            "/repos/{owner}/{repo}/hooks/{id}",
            axum::routing::patch(gh_update).delete(gh_delete),
        )
        .route(
            "/api/v4/projects/{project}/hooks",
            get(gl_list).post(gl_create),
        )
        .route(
            "/api/v4/projects/{project}/hooks/{id}",
            put(gl_update).delete(gl_delete),
        )
        // A Kubernetes API that serves one Secret, for Argo Events v0.6's `accessToken`.
        .route(
            "/api/v1/namespaces/{namespace}/secrets/{name}",
            get(kube_secret),
        )
        .with_state(api);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), task)
}

struct Files(tempfile::TempDir);

impl Files {
    fn new() -> Files {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret"), "hook-secret\n").unwrap();
        std::fs::write(dir.path().join("gh-token"), "gh-token\n").unwrap();
        std::fs::write(dir.path().join("gl-token"), "gl-token\n").unwrap();
        Files(dir)
    }

    fn path(&self) -> String {
        self.0.path().display().to_string()
    }
}

fn github(port: u16, files: &Files, base: &str, extra: &str) -> String {
    format!(
        "port: {port}\nendpoint: /github\nsecretFile: {d}/secret\nevents: [push]\nregister:\n  repository: acme/widgets\n  url: https://hooks.acme.example/github\n  tokenFile: {d}/gh-token\n  apiUrl: {base}/\n{extra}",
        d = files.path()
    )
}

const GH_HOOKS: &str = "/repos/acme/widgets/hooks";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_github_hook_is_kept_across_restarts_and_deleted_only_on_removal() {
    let api = Arc::new(Api::default());
    let (base, server) = start_api(api.clone()).await;
    let files = Files::new();
    let p = free_port();
    let cfg = github(p, &files, &base, "  deleteHookOnRemove: true");
    let h = Harness::new("gh", "github");

    // First start: none with this URL, so it is created.
    let mut sup = h.supervisor(builtin("github").unwrap());
    sup.apply(&map(&[("repo", &cfg)])).await;
    h.wait_for_phase("repo", Phase::Running, WAIT)
        .await
        .unwrap_or_else(|| panic!("{:?}", h.node("repo")));
    assert_eq!(
        api.methods(),
        [
            (Method::GET, GH_HOOKS.to_string()),
            (Method::POST, GH_HOOKS.to_string())
        ]
    );
    {
        let calls = api.calls.lock().unwrap();
        let body = &calls[1].2;
        assert_eq!(body["name"], "web");
        assert_eq!(body["events"], json!(["push"]));
        assert_eq!(body["config"]["url"], "https://hooks.acme.example/github");
        assert_eq!(body["config"]["content_type"], "json");
        assert_eq!(body["config"]["secret"], "hook-secret");
        assert_eq!(body["config"]["insecure_ssl"], "0");
    }

    // The gateway stops (a restart, a rollout): the hook stays.
    sup.stop_all().await;
    assert_eq!(api.methods().len(), 2, "{:?}", api.methods());
    assert_eq!(api.hooks.lock().unwrap().len(), 1);

    // It starts again: the hook is found by its URL and updated, not created again.
    let mut sup = h.supervisor(builtin("github").unwrap());
    sup.apply(&map(&[("repo", &cfg)])).await;
    assert!(
        wait_until(WAIT, || async { api.methods().len() == 4 }).await,
        "{:?}",
        api.methods()
    );
    assert_eq!(
        api.methods()[2..],
        [
            (Method::GET, GH_HOOKS.to_string()),
            (Method::PATCH, format!("{GH_HOOKS}/101"))
        ]
    );
    assert_eq!(api.hooks.lock().unwrap().len(), 1);

    // The configuration leaves the map, and says deleteHookOnRemove: the hook is deleted.
    sup.apply(&map(&[])).await;
    assert_eq!(
        api.methods().last().unwrap(),
        &(Method::DELETE, format!("{GH_HOOKS}/101"))
    );
    assert!(api.hooks.lock().unwrap().is_empty());
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_delete_hook_on_remove_a_removed_configuration_keeps_its_hook() {
    let api = Arc::new(Api::default());
    let (base, server) = start_api(api.clone()).await;
    let files = Files::new();
    let cfg = github(free_port(), &files, &base, "");
    let h = Harness::new("gh", "github");
    let mut sup = h.supervisor(builtin("github").unwrap());
    sup.apply(&map(&[("repo", &cfg)])).await;
    assert!(
        h.wait_for_phase("repo", Phase::Running, WAIT)
            .await
            .is_some()
    );
    sup.apply(&map(&[])).await;
    assert!(
        !api.methods().iter().any(|(m, _)| m == Method::DELETE),
        "{:?}",
        api.methods()
    );
    assert_eq!(api.hooks.lock().unwrap().len(), 1);
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_serves_while_the_api_is_out_and_the_node_says_why() {
    let api = Arc::new(Api {
        outage: AtomicUsize::new(2),
        ..Default::default()
    });
    let (base, server) = start_api(api.clone()).await;
    let files = Files::new();
    let p = free_port();
    let mut h = Harness::new("gh", "github");
    let mut sup = h.supervisor(builtin("github").unwrap());
    sup.apply(&map(&[("repo", &github(p, &files, &base, ""))]))
        .await;

    // The API refuses: the node says so, and the endpoint takes deliveries meanwhile.
    let node = h
        .wait_for_phase("repo", Phase::Error, WAIT)
        .await
        .expect("an Error node while the API is out");
    assert!(
        node.message
            .contains("registering the GitHub hook of acme/widgets")
            && node.message.contains("503")
            && node.message.contains("the endpoint serves meanwhile"),
        "{}",
        node.message
    );
    let body = br#"{"ref":"refs/heads/main"}"#;
    let r = client()
        .post(format!("http://127.0.0.1:{p}/github"))
        .header("x-github-event", "push")
        .header(
            "x-hub-signature-256",
            sign_hmac_sha256(b"hook-secret", body),
        )
        .body(&body[..])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(h.next_event(WAIT).await.is_some());

    // The API is back: the retry registers the hook and the node runs.
    assert!(
        h.wait_for_phase("repo", Phase::Running, WAIT)
            .await
            .is_some()
    );
    assert_eq!(api.hooks.lock().unwrap().len(), 1);
    sup.stop_all().await;
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_that_echoes_the_request_shows_no_secret() {
    let api = Arc::new(Api {
        echo: true,
        ..Default::default()
    });
    let (base, server) = start_api(api.clone()).await;
    let files = Files::new();
    let h = Harness::new("gh", "github");
    let mut sup = h.supervisor(builtin("github").unwrap());
    sup.apply(&map(&[("repo", &github(free_port(), &files, &base, ""))]))
        .await;
    let node = h
        .wait_for_phase("repo", Phase::Error, WAIT)
        .await
        .expect("an Error node");
    assert!(node.message.contains("422"), "{}", node.message);
    assert!(
        node.message.contains("Validation Failed"),
        "the API's message is kept: {}",
        node.message
    );
    for secret in ["hook-secret", "gh-token"] {
        assert!(!node.message.contains(secret), "{}", node.message);
    }
    sup.stop_all().await;
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gitlab_project_hook_is_registered_with_its_events_and_kept() {
    let api = Arc::new(Api::default());
    let (base, server) = start_api(api.clone()).await;
    let files = Files::new();
    let cfg = format!(
        "port: {p}\nendpoint: /gitlab\nsecretFile: {d}/secret\nevents: [Push Hook, merge_request]\nregister:\n  repository: group/widgets\n  url: https://hooks.acme.example/gitlab\n  tokenFile: {d}/gl-token\n  apiUrl: {base}/api/v4\n  deleteHookOnRemove: true",
        p = free_port(),
        d = files.path()
    );
    let h = Harness::new("gl", "gitlab");
    let mut sup = h.supervisor(builtin("gitlab").unwrap());
    sup.apply(&map(&[("proj", &cfg)])).await;
    h.wait_for_phase("proj", Phase::Running, WAIT)
        .await
        .unwrap_or_else(|| panic!("{:?}", h.node("proj")));
    let hooks = "/projects/group/widgets/hooks";
    assert_eq!(
        api.methods(),
        [
            (Method::GET, hooks.to_string()),
            (Method::POST, hooks.to_string())
        ]
    );
    {
        let calls = api.calls.lock().unwrap();
        let body = &calls[1].2;
        assert_eq!(body["url"], "https://hooks.acme.example/gitlab");
        assert_eq!(body["token"], "hook-secret");
        assert_eq!(body["enable_ssl_verification"], true);
        assert_eq!(body["push_events"], true);
        assert_eq!(body["merge_requests_events"], true);
        assert_eq!(body["issues_events"], false);
        assert_eq!(body["tag_push_events"], false);
    }
    // Restarted: found and updated (PUT); removed: deleted.
    sup.stop_all().await;
    let mut sup = h.supervisor(builtin("gitlab").unwrap());
    sup.apply(&map(&[("proj", &cfg)])).await;
    assert!(wait_until(WAIT, || async { api.methods().len() == 4 }).await);
    assert_eq!(api.methods()[3], (Method::PUT, format!("{hooks}/101")));
    sup.apply(&map(&[])).await;
    assert_eq!(
        api.methods().last().unwrap(),
        &(Method::DELETE, format!("{hooks}/101"))
    );
    assert!(api.hooks.lock().unwrap().is_empty());
    server.abort();
}

#[tokio::test]
async fn register_fields_are_checked() {
    let h = Harness::new("gh", "github");
    let github = builtin("github").unwrap();
    let gitlab = builtin("gitlab").unwrap();
    let check = |exec: &portico::SharedExecutor, register: &str, events: &str| {
        let cfg = format!("port: 1\nendpoint: /x\nsecretEnv: S\n{events}register:\n{register}");
        exec.dyn_validate(&h.context("c", &cfg))
            .map_err(|e| e.to_string())
    };
    let starts = |r: Result<portico::Checked, String>, with: &str| match r {
        Err(e) => assert!(e.starts_with(with), "{e}"),
        Ok(_) => panic!("accepted; expected an error starting with {with}"),
    };
    starts(
        check(
            &github,
            "  repository: a\n  url: https://x\n  tokenEnv: T",
            "",
        ),
        "register.repository",
    );
    starts(
        check(
            &github,
            "  repository: a/b\n  url: ftp://x\n  tokenEnv: T",
            "",
        ),
        "register.url",
    );
    starts(
        check(&github, "  repository: a/b\n  url: https://x", ""),
        "register.tokenFile",
    );
    starts(
        check(
            &github,
            "  repository: a/b\n  url: https://x\n  tokenEnv: T\n  tokenFile: f",
            "",
        ),
        "register.token",
    );
    assert!(
        check(
            &github,
            "  repository: a/b\n  url: https://x\n  tokenEnv: T\n  nope: 1",
            ""
        )
        .unwrap_err()
        .contains("nope")
    );
    assert!(
        check(
            &github,
            "  repository: a/b\n  url: https://x\n  tokenEnv: T",
            ""
        )
        .is_ok()
    );
    // GitLab: a project path of any depth or a numeric id; events it can register.
    assert!(
        check(
            &gitlab,
            "  repository: g/s/p\n  url: https://x\n  tokenEnv: T",
            ""
        )
        .is_ok()
    );
    assert!(
        check(
            &gitlab,
            "  repository: 42\n  url: https://x\n  tokenEnv: T",
            ""
        )
        .is_ok()
    );
    starts(
        check(
            &gitlab,
            "  repository: 42\n  url: https://x\n  tokenEnv: T",
            "events: [pushed]\n",
        ),
        "events[0]: `pushed`",
    );
    // The plain webhook registers nothing.
    let webhook = builtin("webhook").unwrap();
    starts(
        check(
            &webhook,
            "  repository: a/b\n  url: https://x\n  tokenEnv: T",
            "",
        ),
        "register:",
    );
}

/// Argo Events v0.6's gitlab configuration, as its example wrote it.
fn v06_gitlab(base: &str, event: &str, access_token: &str) -> String {
    format!(
        "projectId: \"28\"\nurl: \"http://webhook-gateway-gateway-svc/push\"\nevent: \"{event}\"\naccessToken:\n{access_token}\nenableSSLVerification: false\ngitlabBaseUrl: \"{base}\""
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v06_gitlab_configuration_registers_its_one_event_with_the_token_from_its_secret() {
    let api = Arc::new(Api::default());
    let (base, server) = start_api(api.clone()).await;
    let mut h = Harness::new("gitlab-gateway", "gitlab");
    h.set_kube_client(kube_client(&base));
    let gitlab = builtin("gitlab").unwrap();
    let cfg = v06_gitlab(
        &base,
        "MergeRequestsEvents",
        "  key: accesskey\n  name: gitlab-access",
    );
    // It says what it does: a registration, no server.
    let ctx = h.context("gitlab.fooConfig", &cfg);
    gitlab.dyn_validate(&ctx).unwrap();
    let warnings = ctx.warnings().join("; ");
    assert!(
        warnings.contains("Argo Events v0.6's gitlab shape")
            && warnings.contains("project 28")
            && warnings.contains("runs no server"),
        "{warnings}"
    );

    let mut sup = h.supervisor(gitlab.clone());
    sup.apply(&map(&[("gitlab.fooConfig", &cfg)])).await;
    h.wait_for_phase("gitlab.fooConfig", Phase::Running, WAIT)
        .await
        .unwrap_or_else(|| panic!("{:?}", h.node("gitlab.fooConfig")));
    // gitlabBaseUrl without /api/v4 gets it, as v0.6's client added it.
    let hooks = "/projects/28/hooks";
    assert_eq!(
        api.methods(),
        [
            (Method::GET, hooks.to_string()),
            (Method::POST, hooks.to_string())
        ]
    );
    {
        let calls = api.calls.lock().unwrap();
        let body = &calls[1].2;
        assert_eq!(body["url"], "http://webhook-gateway-gateway-svc/push");
        // The API token is the hook's secret token, as in v0.6.
        assert_eq!(body["token"], "gl-token");
        assert_eq!(body["enable_ssl_verification"], false);
        // Exactly the one event.
        for (flag, value) in body.as_object().unwrap() {
            if flag.ends_with("_events") {
                assert_eq!(
                    value.as_bool(),
                    Some(flag == "merge_requests_events"),
                    "{flag} in {body}"
                );
            }
        }
    }
    // No server: nothing listens for the deliveries, no event is made.
    assert!(h.next_event(Duration::from_millis(200)).await.is_none());

    // Stopped and started again: kept, found by its URL and updated; removed: still kept.
    sup.stop_all().await;
    let mut sup = h.supervisor(gitlab.clone());
    sup.apply(&map(&[("gitlab.fooConfig", &cfg)])).await;
    assert!(wait_until(WAIT, || async { api.methods().len() == 4 }).await);
    assert_eq!(api.methods()[3], (Method::PUT, format!("{hooks}/101")));
    sup.apply(&map(&[])).await;
    assert!(!api.methods().iter().any(|(m, _)| m == Method::DELETE));
    assert_eq!(api.hooks.lock().unwrap().len(), 1);
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v06_gitlab_token_may_come_from_a_file_outside_a_cluster() {
    let api = Arc::new(Api::default());
    let (base, server) = start_api(api.clone()).await;
    let files = Files::new();
    let h = Harness::new("gitlab-gateway", "gitlab");
    let cfg = v06_gitlab(
        &format!("{base}/api/v4"),
        "PushEvents",
        &format!("  file: {}/gl-token", files.path()),
    )
    .replace(
        "enableSSLVerification: false",
        "enableSSLVerification: true",
    );
    let mut sup = h.supervisor(builtin("gitlab").unwrap());
    sup.apply(&map(&[("gitlab.fooConfig", &cfg)])).await;
    h.wait_for_phase("gitlab.fooConfig", Phase::Running, WAIT)
        .await
        .unwrap_or_else(|| panic!("{:?}", h.node("gitlab.fooConfig")));
    let body = api.calls.lock().unwrap()[1].2.clone();
    assert_eq!(body["token"], "gl-token");
    assert_eq!(body["enable_ssl_verification"], true);
    assert_eq!(body["push_events"], true);
    assert_eq!(body["issues_events"], false);
    sup.stop_all().await;
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v06_gitlab_secret_that_cannot_be_read_is_an_error_node_that_says_how_to_give_it() {
    let api = Arc::new(Api::default());
    let (base, server) = start_api(api.clone()).await;
    let mut h = Harness::new("gitlab-gateway", "gitlab");
    h.set_kube_client(kube_client(&base));
    let cfg = v06_gitlab(&base, "PushEvents", "  key: accesskey\n  name: nowhere");
    let mut sup = h.supervisor(builtin("gitlab").unwrap());
    sup.apply(&map(&[("gitlab.fooConfig", &cfg)])).await;
    let node = h
        .wait_for_phase("gitlab.fooConfig", Phase::Error, WAIT)
        .await
        .expect("an Error node");
    assert!(
        node.message.contains(
            "accessToken: cannot read the Kubernetes Secret `nowhere` in namespace `default`"
        ),
        "{}",
        node.message
    );
    assert!(api.methods().is_empty(), "{:?}", api.methods());
    sup.stop_all().await;
    server.abort();
}

#[tokio::test]
async fn v06_gitlab_fields_are_checked_and_do_not_mix_with_portico_s() {
    let h = Harness::new("gitlab-gateway", "gitlab");
    let gitlab = builtin("gitlab").unwrap();
    let check = |cfg: &str| {
        gitlab
            .dyn_validate(&h.context("gitlab.fooConfig", cfg))
            .map(drop)
            .map_err(|e| e.to_string())
    };
    let token = "  key: accesskey\n  name: gitlab-access";
    let good = v06_gitlab("https://gitlab.example", "PushEvents", token);
    assert!(check(&good).is_ok());
    let e = check(&format!("{good}\nport: 12000\nendpoint: /push")).unwrap_err();
    assert!(
        e.contains("Argo Events v0.6's gitlab fields")
            && e.contains("(port, endpoint)")
            && e.contains("use one shape"),
        "{e}"
    );
    let e = check(&v06_gitlab("https://gitlab.example", "BuildEvents", token)).unwrap_err();
    assert!(
        e.starts_with("event: `BuildEvents` is not one of PushEvents, IssuesEvents"),
        "{e}"
    );
    let e = check(&good.replace("projectId: \"28\"", "projectId: \"a b\"")).unwrap_err();
    assert!(e.starts_with("projectId: `a b`"), "{e}");
    let e = check(&good.replace("http://webhook-gateway-gateway-svc/push", "webhook")).unwrap_err();
    assert!(e.starts_with("url: `webhook`"), "{e}");
    let e = check(&good.replace("https://gitlab.example", "gitlab.example")).unwrap_err();
    assert!(e.starts_with("gitlabBaseUrl: `gitlab.example`"), "{e}");
    let e = check(&v06_gitlab(
        "https://g",
        "PushEvents",
        "  name: gitlab-access",
    ))
    .unwrap_err();
    assert!(e.starts_with("accessToken.key: required with name"), "{e}");
    let e = check(&v06_gitlab(
        "https://g",
        "PushEvents",
        "  name: s\n  key: k\n  env: T",
    ))
    .unwrap_err();
    assert!(e.starts_with("accessToken: give one of {name, key}"), "{e}");
    let e = check(&v06_gitlab("https://g", "PushEvents", "  secret: s")).unwrap_err();
    assert!(e.contains("secret"), "unknown fields are named: {e}");
    let e = check("projectId: \"28\"\nurl: https://h/push\nevent: PushEvents").unwrap_err();
    assert!(e.starts_with("accessToken: required"), "{e}");
}
