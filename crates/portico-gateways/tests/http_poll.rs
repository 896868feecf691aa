//! The `http-poll` gateway against a real HTTP server on a loopback port: an unchanged body
//! emits nothing, a changed one emits again; an `ETag` is sent back and a `304` emits nothing;
//! the auth header's secret reaches the server and nothing else; a server that is down shows
//! the node as `Error` naming the URL, and `Running` again once it is back.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use common::{map, wait_until};
use portico::Phase;
use portico::cloudevents::CloudEvent;
use portico::testing::{Harness, Supervisor};
use portico_gateways::builtin;

const WAIT: Duration = Duration::from_secs(10);
/// How long to keep listening for an event that must not come, once the server has answered
/// the poll that would have made it (absence cannot be awaited).
const QUIET: Duration = Duration::from_millis(300);

/// What the server serves, and what it saw.
#[derive(Default)]
struct Site {
    body: Mutex<Page>,
    /// The headers of every request, in order.
    requests: Mutex<Vec<HeaderMap>>,
    /// `304` answers given.
    not_modified: AtomicUsize,
    /// When set, requests without this `Authorization` get 401.
    required_auth: Mutex<Option<String>>,
}

#[derive(Default, Clone)]
struct Page {
    body: String,
    etag: Option<String>,
    last_modified: Option<String>,
}

impl Site {
    fn new(body: &str) -> Arc<Site> {
        let site = Arc::new(Site::default());
        site.set(body, None, None);
        site
    }

    fn set(&self, body: &str, etag: Option<&str>, last_modified: Option<&str>) {
        *self.body.lock().unwrap() = Page {
            body: body.to_string(),
            etag: etag.map(str::to_string),
            last_modified: last_modified.map(str::to_string),
        };
    }

    fn requests(&self) -> Vec<HeaderMap> {
        self.requests.lock().unwrap().clone()
    }

    fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    /// Waits until the server has answered `n` requests in all.
    async fn wait_for_requests(&self, n: usize) {
        let seen = wait_until(WAIT, || async { self.count() >= n }).await;
        assert!(seen, "the server saw {} requests, not {n}", self.count());
    }
}

async fn serve(State(site): State<Arc<Site>>, headers: HeaderMap) -> Response {
    let mut response = answer(&site, &headers);
    // One request a connection: a server task that is stopped leaves no connection serving.
    response
        .headers_mut()
        .insert(header::CONNECTION, "close".parse().unwrap());
    response
}

fn answer(site: &Site, headers: &HeaderMap) -> Response {
    site.requests.lock().unwrap().push(headers.clone());
    let required = site.required_auth.lock().unwrap().clone();
    if let Some(want) = required
        && headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            != Some(&want)
    {
        return (StatusCode::UNAUTHORIZED, "who are you?").into_response();
    }
    let page = site.body.lock().unwrap().clone();
    let header_is = |name, value: &Option<String>| {
        value
            .as_deref()
            .is_some_and(|v| headers.get(name).and_then(|h| h.to_str().ok()) == Some(v))
    };
    let mut out = HeaderMap::new();
    if let Some(etag) = &page.etag {
        out.insert(header::ETAG, etag.parse().unwrap());
    }
    if let Some(lm) = &page.last_modified {
        out.insert(header::LAST_MODIFIED, lm.parse().unwrap());
    }
    if header_is(header::IF_NONE_MATCH, &page.etag)
        || (page.etag.is_none() && header_is(header::IF_MODIFIED_SINCE, &page.last_modified))
    {
        site.not_modified.fetch_add(1, Ordering::SeqCst);
        return (StatusCode::NOT_MODIFIED, out).into_response();
    }
    out.insert(
        header::CONTENT_TYPE,
        "text/plain; charset=utf-8".parse().unwrap(),
    );
    (StatusCode::OK, out, page.body).into_response()
}

/// Serves `site` on `listener` until the returned task is aborted.
fn start_server(site: Arc<Site>, listener: tokio::net::TcpListener) -> tokio::task::JoinHandle<()> {
    let app = axum::Router::new()
        .fallback(axum::routing::get(serve))
        .with_state(site);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    })
}

async fn server(site: Arc<Site>) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (addr, start_server(site, listener))
}

/// A harness whose watcher takes one event at a time, in order.
fn harness() -> Harness {
    Harness::builder("polls", "http-poll")
        .concurrency(1)
        .build()
}

async fn start(h: &Harness, value: &str) -> Supervisor {
    let mut sup = h.supervisor(builtin("http-poll").unwrap());
    sup.apply(&map(&[("c", value)])).await;
    sup
}

async fn running(h: &Harness) {
    assert!(
        h.wait_for_phase("c", Phase::Running, WAIT).await.is_some(),
        "not Running: {:?}",
        h.node("c")
    );
}

fn ext(ce: &CloudEvent, name: &str) -> Option<String> {
    ce.extensions.get(name).map(|v| v.to_string())
}

fn payload(ce: &CloudEvent) -> String {
    String::from_utf8(ce.data.as_ref().unwrap().as_bytes().to_vec()).unwrap()
}

async fn next(h: &mut Harness, what: &str) -> CloudEvent {
    h.next_event(WAIT)
        .await
        .unwrap_or_else(|| panic!("no event: {what}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_body_emits_once_and_a_changed_body_again() {
    let site = Site::new("one");
    let (addr, _server) = server(site.clone()).await;
    let mut h = harness();
    // A user and password in the URL go as basic authentication, never into the event.
    let mut sup = start(
        &h,
        &format!("url: http://reader:pa55word@{addr}/feed?page=1\ninterval: 1s"),
    )
    .await;
    running(&h).await;

    let first = next(&mut h, "the first poll").await;
    assert_eq!(payload(&first), "one");
    assert_eq!(first.source, "polls/c");
    assert_eq!(first.subject.as_deref(), Some("c"));
    assert_eq!(first.ty, "http-poll");
    assert_eq!(
        first.datacontenttype.as_deref(),
        Some("text/plain; charset=utf-8")
    );
    let url = format!("http://{addr}/feed?page=1");
    assert_eq!(ext(&first, "url").as_deref(), Some(url.as_str()));
    assert_eq!(ext(&first, "status").as_deref(), Some("200"));
    assert_eq!(ext(&first, "etag"), None, "the server sends no ETag");
    assert!(!String::from_utf8_lossy(&first.to_json()).contains("pa55word"));
    let basic = site.requests()[0][header::AUTHORIZATION].clone();
    assert_eq!(basic, "Basic cmVhZGVyOnBhNTV3b3Jk"); // reader:pa55word

    // Two more polls of the same body: nothing (the poll after them starts only once the
    // second one is done with).
    site.wait_for_requests(3).await;
    assert!(
        h.next_event(QUIET).await.is_none(),
        "an unchanged body was emitted again"
    );
    // No validators were given, so none are sent back.
    for r in site.requests() {
        assert!(
            !r.contains_key(header::IF_NONE_MATCH) && !r.contains_key(header::IF_MODIFIED_SINCE)
        );
    }

    site.set("two", None, None);
    let second = next(&mut h, "the changed body").await;
    assert_eq!(payload(&second), "two");
    assert_eq!(second.source, "polls/c");
    assert_eq!(ext(&second, "status").as_deref(), Some("200"));
    assert_ne!(first.id, second.id);
    let n = site.count();
    site.wait_for_requests(n + 2).await;
    assert!(h.next_event(QUIET).await.is_none());
    sup.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etag_is_sent_back_and_a_304_emits_nothing() {
    let site = Arc::new(Site::default());
    let lm = "Wed, 21 Oct 2015 07:28:00 GMT";
    site.set("v1", Some("\"v1\""), Some(lm));
    let (addr, _server) = server(site.clone()).await;
    let mut h = harness();
    let mut sup = start(&h, &format!("url: http://{addr}/doc\ninterval: 1s")).await;
    running(&h).await;

    let first = next(&mut h, "the first poll").await;
    assert_eq!(payload(&first), "v1");
    assert_eq!(ext(&first, "etag").as_deref(), Some("\"v1\""));

    // The next poll is conditional, and the server's 304 makes no event.
    let answered = wait_until(WAIT, || async {
        site.not_modified.load(Ordering::SeqCst) >= 1
    })
    .await;
    assert!(answered, "no 304 answered: {:?}", site.requests());
    let second = &site.requests()[1];
    assert_eq!(second[header::IF_NONE_MATCH], "\"v1\"");
    assert_eq!(second[header::IF_MODIFIED_SINCE], lm);
    assert!(
        !site.requests()[0].contains_key(header::IF_NONE_MATCH),
        "the first poll has nothing to send back"
    );
    assert!(h.next_event(QUIET).await.is_none(), "a 304 was emitted");

    site.set("v2", Some("\"v2\""), None);
    let changed = next(&mut h, "the new version").await;
    assert_eq!(payload(&changed), "v2");
    assert_eq!(ext(&changed, "etag").as_deref(), Some("\"v2\""));
    let n = site.not_modified.load(Ordering::SeqCst);
    let answered = wait_until(WAIT, || async {
        site.not_modified.load(Ordering::SeqCst) > n
    })
    .await;
    assert!(answered);
    let last = site.requests().pop().unwrap();
    assert_eq!(last[header::IF_NONE_MATCH], "\"v2\"");
    assert!(
        !last.contains_key(header::IF_MODIFIED_SINCE),
        "the new answer had no Last-Modified"
    );
    assert!(h.next_event(QUIET).await.is_none());
    sup.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emit_always_emits_every_poll_and_sends_no_conditional_header() {
    let site = Arc::new(Site::default());
    site.set("same", Some("\"same\""), None);
    let (addr, _server) = server(site.clone()).await;
    let mut h = harness();
    let mut sup = start(
        &h,
        &format!(
            "url: http://{addr}/\ninterval: 1s\nemit: always\nheaders: {{Accept: text/plain}}"
        ),
    )
    .await;
    for i in 0..2 {
        let e = next(&mut h, &format!("poll {i}")).await;
        assert_eq!(payload(&e), "same");
    }
    for r in site.requests() {
        assert!(!r.contains_key(header::IF_NONE_MATCH), "{r:?}");
        assert_eq!(r[header::ACCEPT], "text/plain");
    }
    assert_eq!(site.not_modified.load(Ordering::SeqCst), 0);
    sup.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_auth_header_carries_the_secret_which_is_shown_nowhere() {
    const SECRET: &str = "s3cr3t-t0ken-9f2c";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{SECRET}\n")).unwrap();
    let site = Site::new("for your eyes only");
    *site.required_auth.lock().unwrap() = Some(format!("Bearer {SECRET}"));
    let (addr, _server) = server(site.clone()).await;
    let mut h = harness();
    let mut sup = start(
        &h,
        &format!(
            "url: http://{addr}/private\ninterval: 1s\nauthScheme: Bearer\nauthSecretFile: {}",
            file.display()
        ),
    )
    .await;
    running(&h).await;
    let e = next(&mut h, "the authorized poll").await;
    assert_eq!(payload(&e), "for your eyes only");
    let seen = &site.requests()[0];
    assert_eq!(
        seen[header::AUTHORIZATION],
        format!("Bearer {SECRET}").as_str()
    );
    let json = String::from_utf8_lossy(&e.to_json()).into_owned();
    assert!(!json.contains(SECRET), "the secret is in the event: {json}");
    let node = h.node("c").unwrap();
    assert!(!format!("{node:?}").contains(SECRET));
    assert!(!h.metrics_text().contains(SECRET));

    // A secret the server refuses: the node says so (with the status), never the secret.
    *site.required_auth.lock().unwrap() = Some("Bearer another".into());
    let node = h
        .wait_for_phase("c", Phase::Error, WAIT)
        .await
        .expect("a refused secret shows as Error");
    assert!(
        node.message
            .contains(&format!("GET http://{addr}/private:"))
            && node.message.contains("401"),
        "{}",
        node.message
    );
    assert!(!format!("{node:?}").contains(SECRET));
    sup.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubernetes_secret_is_read_and_read_again_after_a_401() {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let fake = fake_kube::FakeKube::start().await;
    let secret = |value: &str| {
        serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "feed-token", "namespace": "default"},
            "data": {"token": b64(value)},
        })
    };
    fake.create(secret("first-token"));
    let site = Site::new("guarded");
    *site.required_auth.lock().unwrap() = Some("first-token".into());
    let (addr, _server) = server(site.clone()).await;
    let mut h = harness();
    h.set_kube_client(fake.client());
    let mut sup = start(
        &h,
        &format!("url: http://{addr}/\ninterval: 1s\nauthSecret: {{name: feed-token, key: token}}"),
    )
    .await;
    running(&h).await;
    assert_eq!(payload(&next(&mut h, "the first poll").await), "guarded");

    // Rotated: the server wants the new token, the gateway reads it again after the 401.
    fake.replace(secret("second-token"));
    *site.required_auth.lock().unwrap() = Some("second-token".into());
    site.set("rotated", None, None);
    let e = next(&mut h, "the poll with the rotated token").await;
    assert_eq!(payload(&e), "rotated");
    running(&h).await;
    sup.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_down_is_an_error_until_it_is_back() {
    // A port nobody listens on (another process could take it meanwhile: acceptable here).
    let port = common::free_port();
    let url = format!("http://127.0.0.1:{port}/status");
    let mut h = harness();
    let mut sup = start(&h, &format!("url: {url}\ninterval: 1s\ntimeout: 2s")).await;
    let node = h
        .wait_for_phase("c", Phase::Error, WAIT)
        .await
        .unwrap_or_else(|| panic!("not Error: {:?}", h.node("c")));
    assert!(
        node.message.starts_with(&format!("GET {url}: ")) && node.message.contains("connect"),
        "{}",
        node.message
    );
    assert!(h.try_next_event().is_none());

    let site = Site::new("up again");
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let server = start_server(site.clone(), listener);
    running(&h).await;
    let e = next(&mut h, "the poll once the server is back").await;
    assert_eq!(payload(&e), "up again");
    assert_eq!(ext(&e, "url").as_deref(), Some(url.as_str()));

    // Down again, then an answer that is not 2xx: Error each time, with the reason.
    server.abort();
    let _ = server.await;
    let node = h
        .wait_for_phase("c", Phase::Error, WAIT)
        .await
        .expect("Error once the server is gone");
    assert!(
        node.message.starts_with(&format!("GET {url}: ")),
        "{}",
        node.message
    );
    sup.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_other_than_2xx_or_304_is_an_error_and_polling_goes_on() {
    let site = Site::new("fine");
    *site.required_auth.lock().unwrap() = Some("nobody has this".into());
    let (addr, _server) = server(site.clone()).await;
    let mut h = harness();
    let mut sup = start(&h, &format!("url: http://{addr}/x\ninterval: 1s")).await;
    let node = h
        .wait_for_phase("c", Phase::Error, WAIT)
        .await
        .expect("a 401 shows as Error");
    assert_eq!(
        node.message,
        format!("GET http://{addr}/x: the server answered 401 Unauthorized")
    );
    *site.required_auth.lock().unwrap() = None;
    running(&h).await;
    assert_eq!(payload(&next(&mut h, "the first success").await), "fine");
    sup.stop_all().await;
}
