//! End to end with the real `portico` binary: webhook configurations sharing ports, routes
//! changed live by editing the gateway file, and the example gateway files run as they are.

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use support::{
    Behaviour, GatewayFileBuilder, Portico, Sink, eventually, eventually_async, replace_file,
};

const WAIT: Duration = Duration::from_secs(15);

use support::free_port;

fn port_is_free(port: u16) -> bool {
    std::net::TcpListener::bind(("0.0.0.0", port)).is_ok()
}

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/gateways")
        .join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_configurations_on_two_ports_with_a_live_removal() {
    let sink = Sink::start(Behaviour::Ok).await;
    let (pa, pb) = (free_port(), free_port());
    let one = format!("port: {pa}\nendpoint: /a\nmethod: POST");
    let two = format!("port: {pa}\nendpoint: /b\nmethod: PUT");
    let three = format!("port: {pb}\nendpoint: /a\nmethod: POST");
    let gateway = |configs: &[(&str, &str)]| {
        let mut b = GatewayFileBuilder::new("hooks", "webhook").watchers(&[sink.url()]);
        for (k, v) in configs {
            b = b.config(k, v);
        }
        b
    };
    let (_dir, file) = gateway(&[("one", &one), ("two", &two), ("three", &three)]).write();
    let portico = Portico::run(&file).await;
    for src in ["one", "two", "three"] {
        portico.wait_for_phase(src, "Running", WAIT).await;
    }
    let c = reqwest::Client::new();
    for (method, port, path, src) in [
        (reqwest::Method::POST, pa, "/a", "one"),
        (reqwest::Method::PUT, pa, "/b", "two"),
        (reqwest::Method::POST, pb, "/a", "three"),
    ] {
        let r = c
            .request(method, format!("http://127.0.0.1:{port}{path}"))
            .json(&serde_json::json!({ "for": src }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let events = sink.wait_for_events(3, WAIT).await;
    assert_eq!(events.len(), 3);
    for e in &events {
        let src = e["data"]["body"]["for"].as_str().unwrap();
        assert_eq!(e["source"], format!("hooks/{src}"), "{e}");
        assert_eq!(e["subject"], src);
        assert_eq!(e["type"], "webhook");
        assert_eq!(e["datacontenttype"], "application/json");
    }
    assert_eq!(
        c.get(format!("http://127.0.0.1:{pa}/a"))
            .send()
            .await
            .unwrap()
            .status(),
        405
    );
    assert_eq!(
        c.post(format!("http://127.0.0.1:{pb}/b"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    // Remove `two` by editing the file while requests to the others keep coming.
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for (port, src) in [(pa, "one"), (pb, "three")] {
        let stop = stop.clone();
        let c = c.clone();
        load.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let r = c
                    .post(format!("http://127.0.0.1:{port}/a"))
                    .json(&serde_json::json!({ "for": src }))
                    .send()
                    .await;
                answers.push(r.map(|r| r.status().as_u16()).map_err(|e| e.to_string()));
            }
            answers
        }));
    }
    eventually(WAIT, || (sink.events().len() > 5).then_some(()))
        .await
        .expect("load runs");
    replace_file(
        &file,
        &gateway(&[("one", &one), ("three", &three)]).render(),
    );
    // Until the edit is applied, these reach `two` and make events too: count them.
    let two_accepted = std::sync::atomic::AtomicUsize::new(0);
    eventually_async(WAIT, || async {
        let r = c
            .put(format!("http://127.0.0.1:{pa}/b"))
            .json(&serde_json::json!({ "for": "two" }))
            .send()
            .await
            .ok()?;
        if r.status() == 200 {
            two_accepted.fetch_add(1, Ordering::Relaxed);
        }
        (r.status() == 404).then_some(())
    })
    .await
    .expect("two's route answers 404 once it is removed");
    eventually_async(WAIT, || async {
        portico.node("two").await.is_none().then_some(())
    })
    .await
    .expect("two's node is removed");
    // A few more requests after the change, then stop the load.
    let before = sink.events().len();
    eventually(WAIT, || (sink.events().len() > before + 5).then_some(()))
        .await
        .expect("load goes on");
    stop.store(true, Ordering::Relaxed);
    let mut accepted = 3 + two_accepted.load(Ordering::Relaxed);
    for l in load {
        for answer in l.await.unwrap() {
            assert_eq!(
                answer,
                Ok(200),
                "every request during the change is answered 200"
            );
            accepted += 1;
        }
    }
    // One CloudEvent per accepted request, each under the configuration that owns the route.
    let events = sink.wait_for_events(accepted, WAIT).await;
    assert_eq!(events.len(), accepted);
    for e in &events {
        let src = e["data"]["body"]["for"].as_str().unwrap();
        assert_eq!(e["source"], format!("hooks/{src}"));
    }
    assert_eq!(portico.terminate().await, Some(0));
    assert!(
        port_is_free(pa) && port_is_free(pb),
        "the ports are released"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_and_github_examples_run_as_they_are() {
    let webhook = Portico::run(&example("webhook.yaml")).await;
    for src in ["webhook.example", "webhook.put", "webhook.other"] {
        webhook.wait_for_phase(src, "Running", WAIT).await;
    }
    let c = reqwest::Client::new();
    let r = c
        .post("http://127.0.0.1:12000/example")
        .body(r#"{"hello": "world"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let line = eventually(WAIT, || {
        webhook
            .stdout
            .containing("webhook.example")
            .first()
            .cloned()
    })
    .await
    .expect("a CloudEvent on stdout");
    let ce: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(ce["source"], "webhook-gateway/webhook.example");
    assert_eq!(ce["data"]["body"]["hello"], "world");
    assert_eq!(webhook.terminate().await, Some(0));

    let github = Portico::start(
        &["run", example("github.yaml").to_str().unwrap()],
        &[("GITHUB_WEBHOOK_SECRET", "change-me")],
    )
    .await;
    github.wait_for_phase("github.repo", "Running", WAIT).await;
    let body = r#"{"ref": "refs/heads/main"}"#;
    let sig = portico_gateways::webhook::sign_hmac_sha256(b"change-me", body.as_bytes());
    let r = c
        .post("http://127.0.0.1:12100/github")
        .header("x-github-event", "push")
        .header("x-hub-signature-256", sig)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let line = eventually(WAIT, || {
        github.stdout.containing("github.repo").first().cloned()
    })
    .await
    .expect("a CloudEvent on stdout");
    assert!(line.contains("refs/heads/main"), "{line}");
    let r = c
        .post("http://127.0.0.1:12100/github")
        .header("x-github-event", "push")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        github.stderr.all().iter().all(|l| !l.contains("change-me")),
        "the secret is never logged"
    );
    assert_eq!(github.terminate().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_example_runs_as_it_is() {
    let dir = PathBuf::from("/tmp/portico-files");
    let _ = std::fs::remove_dir_all(&dir);
    let portico = Portico::run(&example("file.yaml")).await;
    let node = portico.wait_for_phase("files.txt", "Error", WAIT).await;
    assert!(
        node["message"].as_str().unwrap().contains("does not exist"),
        "{node}"
    );
    std::fs::create_dir_all(&dir).unwrap();
    portico.wait_for_phase("files.txt", "Running", WAIT).await;
    portico
        .wait_for_phase("files.removed", "Running", WAIT)
        .await;
    std::fs::write(dir.join("a.txt"), "hi").unwrap();
    std::fs::remove_file(dir.join("a.txt")).unwrap();
    eventually(WAIT, || {
        (portico.stdout.containing("\"op\":\"REMOVE\"").len() >= 2).then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("two REMOVE events; stdout: {:?}", portico.stdout.all()));
    let created = portico.stdout.containing("\"op\":\"CREATE\"");
    assert_eq!(created.len(), 1, "{created:?}");
    assert!(created[0].contains("\"subject\":\"files.txt\""));
    assert_eq!(portico.terminate().await, Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_gateway_answers_503_with_retry_after() {
    // A watcher that never answers and room for one event: the second request finds it full.
    let sink = Sink::start(Behaviour::Hang).await;
    let port = free_port();
    let (_dir, file) = GatewayFileBuilder::new("full", "webhook")
        .spec_lines(&format!(
            "  delivery:\n    queueSize: 1\n    timeout: 60s\n  watchers:\n    urls: [\"{}\"]",
            sink.url()
        ))
        .config("hook", &format!("port: {port}\nendpoint: /in"))
        .write();
    let portico = Portico::run(&file).await;
    portico.wait_for_phase("hook", "Running", WAIT).await;
    let c = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/in");
    assert_eq!(c.post(&url).body("1").send().await.unwrap().status(), 200);
    let r = c.post(&url).body("2").send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let metrics = c
        .get(portico.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("portico_events_rejected_total{src=\"hook\",reason=\"full\"} 1"),
        "{metrics}"
    );
    drop(portico);
}
