//! The github gateway registering its hook through GitHub's REST API, against a local server
//! that speaks that API's requests and answers (GitHub itself cannot be reached from tests).

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::routing::{get, patch};
use common::{free_port, map, wait_until};
use portico::Phase;
use portico::testing::Harness;
use portico_gateways::builtin;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Api {
    /// (method, path, body) of every authorized request.
    calls: Mutex<Vec<(Method, String, Value)>>,
    hooks: Mutex<BTreeMap<u64, Value>>,
}

type Answer = (StatusCode, Json<Value>);

fn authorized(headers: &HeaderMap) -> Result<(), Answer> {
    let ok = headers
        .get("authorization")
        .is_some_and(|v| v == "Bearer gh-token")
        && headers.get("user-agent").is_some()
        && headers
            .get("accept")
            .is_some_and(|v| v == "application/vnd.github+json");
    if ok {
        Ok(())
    } else {
        Err((
            StatusCode::UNAUTHORIZED,
            Json(json!({"message": "Bad credentials"})),
        ))
    }
}

async fn create(
    State(api): State<Arc<Api>>,
    Path((owner, repo)): Path<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Answer {
    if let Err(e) = authorized(&headers) {
        return e;
    }
    api.calls.lock().unwrap().push((
        Method::POST,
        format!("/repos/{owner}/{repo}/hooks"),
        body.clone(),
    ));
    let mut hooks = api.hooks.lock().unwrap();
    if hooks
        .values()
        .any(|h| h["config"]["url"] == body["config"]["url"])
    {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(
                json!({"message": "Validation Failed", "errors": [{"resource": "Hook", "code": "custom", "message": "Hook already exists on this repository"}]}),
            ),
        );
    }
    let id = hooks.keys().last().copied().unwrap_or(100) + 1;
    let hook = json!({"id": id, "name": "web", "active": true, "events": body["events"], "config": {"url": body["config"]["url"], "content_type": "json", "insecure_ssl": "0"}});
    hooks.insert(id, hook.clone());
    (StatusCode::CREATED, Json(hook))
}

async fn list(
    State(api): State<Arc<Api>>,
    Path((owner, repo)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    if let Err(e) = authorized(&headers) {
        return e;
    }
    api.calls.lock().unwrap().push((
        Method::GET,
        format!("/repos/{owner}/{repo}/hooks"),
        Value::Null,
    ));
    let hooks: Vec<Value> = api.hooks.lock().unwrap().values().cloned().collect();
    (StatusCode::OK, Json(Value::Array(hooks)))
}

async fn update(
    State(api): State<Arc<Api>>,
    Path((owner, repo, id)): Path<(String, String, u64)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Answer {
    if let Err(e) = authorized(&headers) {
        return e;
    }
    api.calls.lock().unwrap().push((
        Method::PATCH,
        format!("/repos/{owner}/{repo}/hooks/{id}"),
        body.clone(),
    ));
    match api.hooks.lock().unwrap().get_mut(&id) {
        Some(h) => {
            h["events"] = body["events"].clone();
            (StatusCode::OK, Json(h.clone()))
        }
        None => (StatusCode::NOT_FOUND, Json(json!({"message": "Not Found"}))),
    }
}

async fn delete(
    State(api): State<Arc<Api>>,
    Path((owner, repo, id)): Path<(String, String, u64)>,
    headers: HeaderMap,
) -> Answer {
    if let Err(e) = authorized(&headers) {
        return e;
    }
    api.calls.lock().unwrap().push((
        Method::DELETE,
        format!("/repos/{owner}/{repo}/hooks/{id}"),
        Value::Null,
    ));
    match api.hooks.lock().unwrap().remove(&id) {
        Some(_) => (StatusCode::NO_CONTENT, Json(Value::Null)),
        None => (StatusCode::NOT_FOUND, Json(json!({"message": "Not Found"}))),
    }
}

/// The fake API on a free port; its base URL.
async fn start_api(api: Arc<Api>) -> (String, tokio::task::JoinHandle<()>) {
    let app = axum::Router::new()
        .route("/repos/{owner}/{repo}/hooks", get(list).post(create))
        .route(
            "/repos/{owner}/{repo}/hooks/{id}",
            patch(update).delete(delete),
        )
        .with_state(api);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), task)
}

fn methods(api: &Api) -> Vec<(Method, String)> {
    api.calls
        .lock()
        .unwrap()
        .iter()
        .map(|(m, p, _)| (m.clone(), p.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hook_is_created_on_start_and_deleted_on_stop() {
    let api = Arc::new(Api::default());
    let (base, server) = start_api(api.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), "hook-secret\n").unwrap();
    std::fs::write(dir.path().join("token"), "gh-token\n").unwrap();
    let p = free_port();
    let cfg = format!(
        "port: {p}\nendpoint: /github\nsecretFile: {d}/secret\nevents: [push]\nregister:\n  repository: acme/widgets\n  url: https://hooks.acme.example/github\n  tokenFile: {d}/token\n  apiUrl: {base}/",
        d = dir.path().display()
    );
    let h = Harness::new("gh", "github");
    let mut sup = h.supervisor(builtin("github").unwrap());
    sup.apply(&map(&[("repo", &cfg)])).await;
    assert!(
        h.wait_for_phase("repo", Phase::Running, WAIT)
            .await
            .is_some(),
        "{:?}",
        h.node("repo")
    );
    {
        let calls = api.calls.lock().unwrap();
        assert_eq!(calls.len(), 1, "{calls:?}");
        let (m, path, body) = &calls[0];
        assert_eq!(
            (m, path.as_str()),
            (&Method::POST, "/repos/acme/widgets/hooks")
        );
        assert_eq!(body["name"], "web");
        assert_eq!(body["active"], true);
        assert_eq!(body["events"], json!(["push"]));
        assert_eq!(body["config"]["url"], "https://hooks.acme.example/github");
        assert_eq!(body["config"]["content_type"], "json");
        assert_eq!(body["config"]["secret"], "hook-secret");
        assert_eq!(body["config"]["insecure_ssl"], "0");
    }
    assert_eq!(api.hooks.lock().unwrap().len(), 1);
    sup.stop_all().await;
    assert_eq!(
        methods(&api),
        [
            (Method::POST, "/repos/acme/widgets/hooks".to_string()),
            (Method::DELETE, "/repos/acme/widgets/hooks/101".to_string())
        ]
    );
    assert!(api.hooks.lock().unwrap().is_empty());
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_hook_with_the_same_url_is_updated() {
    let api = Arc::new(Api::default());
    api.hooks.lock().unwrap().insert(
        7,
        json!({"id": 7, "name": "web", "active": true, "events": ["issues"], "config": {"url": "https://hooks.acme.example/github"}}),
    );
    let (base, server) = start_api(api.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), "hook-secret").unwrap();
    std::fs::write(dir.path().join("token"), "gh-token").unwrap();
    let p = free_port();
    let cfg = format!(
        "port: {p}\nendpoint: /github\nsecretFile: {d}/secret\nevents: [push, pull_request]\nregister:\n  repository: acme/widgets\n  url: https://hooks.acme.example/github\n  tokenFile: {d}/token\n  apiUrl: {base}",
        d = dir.path().display()
    );
    let h = Harness::new("gh", "github");
    let mut sup = h.supervisor(builtin("github").unwrap());
    sup.apply(&map(&[("repo", &cfg)])).await;
    assert!(
        h.wait_for_phase("repo", Phase::Running, WAIT)
            .await
            .is_some(),
        "{:?}",
        h.node("repo")
    );
    assert_eq!(
        api.hooks.lock().unwrap()[&7]["events"],
        json!(["push", "pull_request"])
    );
    sup.stop_all().await;
    assert_eq!(
        methods(&api),
        [
            (Method::POST, "/repos/acme/widgets/hooks".to_string()),
            (Method::GET, "/repos/acme/widgets/hooks".to_string()),
            (Method::PATCH, "/repos/acme/widgets/hooks/7".to_string()),
            (Method::DELETE, "/repos/acme/widgets/hooks/7".to_string()),
        ]
    );
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_registration_is_an_error_node_and_frees_the_port() {
    let api = Arc::new(Api::default());
    let (base, server) = start_api(api.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), "hook-secret").unwrap();
    std::fs::write(dir.path().join("token"), "wrong-token").unwrap();
    let p = free_port();
    let cfg = format!(
        "port: {p}\nendpoint: /github\nsecretFile: {d}/secret\nregister:\n  repository: acme/widgets\n  url: https://hooks.acme.example/github\n  tokenFile: {d}/token\n  apiUrl: {base}",
        d = dir.path().display()
    );
    let h = Harness::new("gh", "github");
    let mut sup = h.supervisor(builtin("github").unwrap());
    sup.apply(&map(&[("repo", &cfg)])).await;
    let node = h
        .wait_for_phase("repo", Phase::Error, WAIT)
        .await
        .expect("Error node");
    assert!(
        node.message.contains("401") && node.message.contains("Bad credentials"),
        "{}",
        node.message
    );
    assert!(!node.message.contains("wrong-token") && !node.message.contains("hook-secret"));
    sup.stop_all().await;
    assert!(wait_until(WAIT, || async { common::port_is_free(p) }).await);
    server.abort();
}

#[tokio::test]
async fn register_fields_are_checked() {
    let h = Harness::new("gh", "github");
    let exec = builtin("github").unwrap();
    let check = |register: &str| {
        let cfg = format!("port: 1\nendpoint: /x\nsecretEnv: S\nregister:\n{register}");
        exec.dyn_validate(&h.context("c", &cfg))
            .map_err(|e| e.to_string())
    };
    assert!(
        check("  repository: a\n  url: https://x\n  tokenEnv: T")
            .unwrap_err()
            .starts_with("register.repository")
    );
    assert!(
        check("  repository: a/b\n  url: ftp://x\n  tokenEnv: T")
            .unwrap_err()
            .starts_with("register.url")
    );
    assert!(
        check("  repository: a/b\n  url: https://x")
            .unwrap_err()
            .starts_with("register.tokenFile")
    );
    assert!(
        check("  repository: a/b\n  url: https://x\n  tokenEnv: T\n  nope: 1")
            .unwrap_err()
            .contains("nope")
    );
    assert!(check("  repository: a/b\n  url: https://x\n  tokenEnv: T").is_ok());
}
