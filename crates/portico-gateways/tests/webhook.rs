//! The webhook gateway against real HTTP clients: routing by port, endpoint and method, live
//! route changes, answers, payload forms, HMAC secret and TLS.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::{client, data, free_port, map, port_is_free, wait_until};
use portico::Phase;
use portico::testing::Harness;
use portico_gateways::builtin;
use portico_gateways::webhook::sign_hmac_sha256;

const WAIT: Duration = Duration::from_secs(10);

async fn running(h: &Harness, srcs: &[&str]) {
    for src in srcs {
        let node = h.wait_for_phase(src, Phase::Running, WAIT).await;
        assert!(node.is_some(), "{src} is not Running: {:?}", h.node(src));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_configurations_on_two_ports_each_owning_its_endpoint_and_method() {
    let mut h = Harness::new("hooks", "webhook");
    let mut sup = h.supervisor(builtin("webhook").unwrap());
    let (pa, pb) = (free_port(), free_port());
    let one = format!("port: {pa}\nendpoint: /a\nmethod: POST");
    let two = format!("port: \"{pa}\"\nendpoint: /b\nmethod: PUT");
    let three = format!("port: {pb}\nendpoint: /a\nmethod: POST");
    sup.apply(&map(&[
        ("hook.one", &one),
        ("hook.two", &two),
        ("hook.three", &three),
    ]))
    .await;
    running(&h, &["hook.one", "hook.two", "hook.three"]).await;

    let c = client();
    let cases = [
        (reqwest::Method::POST, pa, "/a", "hook.one"),
        (reqwest::Method::PUT, pa, "/b", "hook.two"),
        (reqwest::Method::POST, pb, "/a", "hook.three"),
    ];
    for (method, port, path, src) in &cases {
        let r = c
            .request(method.clone(), format!("http://127.0.0.1:{port}{path}"))
            .header("x-test", *src)
            .body(format!(r#"{{"to": "{src}"}}"#))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{method} {port}{path}");
        let ce = h.next_event(WAIT).await.expect("an event");
        assert_eq!(ce.source, format!("hooks/{src}"));
        assert_eq!(ce.subject.as_deref(), Some(*src));
        assert_eq!(ce.datacontenttype.as_deref(), Some("application/json"));
        let d = data(&ce);
        assert_eq!(d["body"]["to"], *src);
        assert_eq!(d["bodyEncoding"], "json");
        assert_eq!(d["header"]["x-test"][0], *src);
    }
    // A method no configuration of the endpoint takes; an unknown endpoint.
    let r = c
        .get(format!("http://127.0.0.1:{pa}/a"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "POST");
    let r = c
        .post(format!("http://127.0.0.1:{pa}/b"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let r = c
        .post(format!("http://127.0.0.1:{pa}/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(h.try_next_event().is_none());

    // Remove hook.two while requests are in flight, to it and to the others: every request is
    // answered (the others' with 200; hook.two's with 200 before the change, 404 after).
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for (method, port, path, src) in [
        (reqwest::Method::POST, pa, "/a", "hook.one"),
        (reqwest::Method::POST, pb, "/a", "hook.three"),
        (reqwest::Method::PUT, pa, "/b", "hook.two"),
    ] {
        let (stop, sent) = (stop.clone(), sent.clone());
        let c = client();
        load.push(tokio::spawn(async move {
            let mut answered = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let r = c
                    .request(method.clone(), format!("http://127.0.0.1:{port}{path}"))
                    .body(src)
                    .send()
                    .await
                    .map(|r| r.status().as_u16());
                answered.push(r.map_err(|e| e.to_string()));
                sent.fetch_add(1, Ordering::Relaxed);
            }
            (src, answered)
        }));
    }
    let started = wait_until(WAIT, || async { sent.load(Ordering::Relaxed) >= 6 }).await;
    assert!(started, "the load runs");
    sup.apply(&map(&[("hook.one", &one), ("hook.three", &three)]))
        .await;
    let r = c
        .put(format!("http://127.0.0.1:{pa}/b"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "hook.two's route is gone");
    let after = sent.load(Ordering::Relaxed);
    let went_on = wait_until(WAIT, || async { sent.load(Ordering::Relaxed) >= after + 6 }).await;
    assert!(went_on, "the load goes on after the change");
    stop.store(true, Ordering::Relaxed);
    let mut ok = 0usize;
    let mut two_404 = 0usize;
    for l in load {
        let (src, answers) = l.await.unwrap();
        for answer in answers {
            match (src, answer) {
                (_, Ok(200)) => ok += 1,
                ("hook.two", Ok(404)) => two_404 += 1,
                (src, other) => panic!("a request to {src} during the change got {other:?}"),
            }
        }
    }
    assert!(two_404 > 0, "hook.two's requests after the change got 404");
    // Each accepted request made exactly one event, under the configuration that owns it.
    let mut events = 0usize;
    while events < ok {
        let ce = h.next_event(WAIT).await.expect("one event per request");
        let d = data(&ce);
        assert_eq!(ce.source, format!("hooks/{}", d["body"].as_str().unwrap()));
        events += 1;
    }
    assert!(h.try_next_event().is_none());

    // The last configuration of a port takes its server with it.
    sup.apply(&map(&[("hook.one", &one)])).await;
    assert!(port_is_free(pb), "port {pb} is released");
    assert!(!port_is_free(pa));
    sup.stop_all().await;
    assert!(port_is_free(pa), "port {pa} is released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_endpoint_two_methods_two_configurations() {
    let mut h = Harness::new("hooks", "webhook");
    let mut sup = h.supervisor(builtin("webhook").unwrap());
    let p = free_port();
    let post = format!("port: {p}\nendpoint: /x");
    let put = format!("port: {p}\nendpoint: /x\nmethod: put");
    sup.apply(&map(&[("post", &post), ("put", &put)])).await;
    running(&h, &["post", "put"]).await;
    let c = client();
    let url = format!("http://127.0.0.1:{p}/x");
    assert_eq!(c.put(&url).body("1").send().await.unwrap().status(), 200);
    assert_eq!(
        h.next_event(WAIT).await.unwrap().subject.as_deref(),
        Some("put")
    );
    assert_eq!(c.post(&url).body("2").send().await.unwrap().status(), 200);
    assert_eq!(
        h.next_event(WAIT).await.unwrap().subject.as_deref(),
        Some("post")
    );
    sup.apply(&map(&[("post", &post)])).await;
    let r = c.put(&url).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(c.post(&url).body("3").send().await.unwrap().status(), 200);
    assert_eq!(
        h.next_event(WAIT).await.unwrap().subject.as_deref(),
        Some("post")
    );
    // Changing a configuration's value moves its route without touching the port's others.
    let moved = format!("port: {p}\nendpoint: /y");
    sup.apply(&map(&[("post", &moved), ("put", &put)])).await;
    running(&h, &["post", "put"]).await;
    // /x keeps `put`'s PUT only.
    assert_eq!(c.post(&url).send().await.unwrap().status(), 405);
    let y = format!("http://127.0.0.1:{p}/y");
    assert_eq!(c.post(&y).body("4").send().await.unwrap().status(), 200);
    assert_eq!(
        h.next_event(WAIT).await.unwrap().subject.as_deref(),
        Some("post")
    );
    sup.stop_all().await;
    assert!(port_is_free(p));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configuration_without_a_port_shares_the_gateways_server_as_in_argo() {
    // Argo Events' guide: `portConfig` names the port, `fooConfig` only its endpoint.
    let mut h = Harness::new("webhook-gateway", "webhook");
    let mut sup = h.supervisor(builtin("webhook").unwrap());
    let p = free_port();
    let port_config = format!("port: \"{p}\"\nendpoint: /\nmethod: POST");
    let foo_config = "endpoint: /foo\nmethod: POST";
    // The portless one may start first: it waits for the server.
    sup.apply(&map(&[
        ("webhook.fooConfig", foo_config),
        ("webhook.portConfig", &port_config),
    ]))
    .await;
    running(&h, &["webhook.fooConfig", "webhook.portConfig"]).await;
    let c = client();
    let r = c
        .post(format!("http://127.0.0.1:{p}/foo"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ce = h.next_event(WAIT).await.unwrap();
    assert_eq!(ce.source, "webhook-gateway/webhook.fooConfig");
    // With two ports to choose from, one without a port is an error that says so.
    let other = format!("port: {}\nendpoint: /other", free_port());
    sup.apply(&map(&[
        ("webhook.portConfig", &port_config),
        ("other", &other),
    ]))
    .await;
    running(&h, &["webhook.portConfig", "other"]).await;
    sup.apply(&map(&[
        ("webhook.portConfig", &port_config),
        ("other", &other),
        ("bar", "endpoint: /bar"),
    ]))
    .await;
    let node = h
        .wait_for_phase("bar", Phase::Error, WAIT)
        .await
        .expect("bar in Error");
    assert!(
        node.message.contains("names no port") && node.message.contains("give it its `port`"),
        "{}",
        node.message
    );
    sup.stop_all().await;
    assert!(port_is_free(p));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_forms_and_size_limit() {
    let mut h = Harness::new("hooks", "webhook");
    let mut sup = h.supervisor(builtin("webhook").unwrap());
    let p = free_port();
    let cfg = format!("port: {p}\nendpoint: /in\nmaxBodySize: 16");
    sup.apply(&map(&[("small", &cfg)])).await;
    running(&h, &["small"]).await;
    let c = client();
    let url = format!("http://127.0.0.1:{p}/in");
    let r = c.post(&url).body(vec![b'x'; 17]).send().await.unwrap();
    assert_eq!(r.status(), 413);
    assert!(r.text().await.unwrap().contains("maxBodySize"));
    assert_eq!(
        c.post(&url)
            .body(vec![0xffu8, 0, 1])
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let d = data(&h.next_event(WAIT).await.unwrap());
    assert_eq!(
        (d["body"].as_str(), d["bodyEncoding"].as_str()),
        (Some("/wAB"), Some("base64"))
    );
    assert_eq!(
        c.post(&url)
            .body("plain text")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let d = data(&h.next_event(WAIT).await.unwrap());
    assert_eq!(
        (d["body"].as_str(), d["bodyEncoding"].as_str()),
        (Some("plain text"), Some("text"))
    );
    assert!(h.try_next_event().is_none());
    sup.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_secret_requires_a_signature() {
    let mut h = Harness::new("hooks", "webhook");
    let mut sup = h.supervisor(builtin("webhook").unwrap());
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let p = free_port();
    let cfg = format!("port: {p}\nendpoint: /in\nsecretFile: {}", secret.display());
    sup.apply(&map(&[("signed", &cfg)])).await;
    running(&h, &["signed"]).await;
    let c = client();
    let url = format!("http://127.0.0.1:{p}/in");
    assert_eq!(c.post(&url).body("x").send().await.unwrap().status(), 401);
    let r = c
        .post(&url)
        .header("x-hub-signature-256", sign_hmac_sha256(b"s3cret", b"x"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(h.next_event(WAIT).await.is_some());
    assert!(h.try_next_event().is_none());
    sup.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_request_with_a_test_certificate_is_accepted() {
    let mut h = Harness::new("hooks", "webhook");
    let mut sup = h.supervisor(builtin("webhook").unwrap());
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_pem = key.cert.pem();
    std::fs::write(dir.path().join("cert.pem"), &cert_pem).unwrap();
    std::fs::write(dir.path().join("key.pem"), key.key_pair.serialize_pem()).unwrap();
    let p = free_port();
    let cfg = format!(
        "port: {p}\nendpoint: /secure\nserverCertPath: {}\nserverKeyPath: {}",
        dir.path().join("cert.pem").display(),
        dir.path().join("key.pem").display()
    );
    sup.apply(&map(&[("tls", &cfg)])).await;
    running(&h, &["tls"]).await;
    let c = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
        .resolve("localhost", ([127, 0, 0, 1], p).into())
        .build()
        .unwrap();
    let r = c
        .post(format!("https://localhost:{p}/secure"))
        .json(&serde_json::json!({"over": "tls"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let d = data(&h.next_event(WAIT).await.unwrap());
    assert_eq!(d["body"]["over"], "tls");
    // Plain HTTP to the TLS port gets no answer and no event.
    assert!(
        client()
            .post(format!("http://127.0.0.1:{p}/secure"))
            .send()
            .await
            .is_err()
    );
    assert!(h.try_next_event().is_none());
    sup.stop_all().await;
    assert!(port_is_free(p));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_taken_by_someone_else_is_an_error_node() {
    let h = Harness::new("hooks", "webhook");
    let mut sup = h.supervisor(builtin("webhook").unwrap());
    let taken = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let p = taken.local_addr().unwrap().port();
    sup.apply(&map(&[("busy", &format!("port: {p}\nendpoint: /x"))]))
        .await;
    let node = h
        .wait_for_phase("busy", Phase::Error, WAIT)
        .await
        .expect("Error node");
    assert!(
        node.message.contains(&format!("port {p}")),
        "{}",
        node.message
    );
    drop(taken);
    assert!(
        h.wait_for_phase("busy", Phase::Running, WAIT)
            .await
            .is_some()
    );
    sup.stop_all().await;
}
