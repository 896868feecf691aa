//! End to end with the real `portico` binary: a calendar gateway delivering CloudEvents to a
//! real HTTP watcher, live edits of the gateway file, invalid configurations, retries and a
//! dead watcher next to a healthy one.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use portico::cloudevents::CloudEvent;
use support::{Behaviour, GatewayFileBuilder, Portico, Sink, eventually, replace_file};

const WAIT: Duration = Duration::from_secs(15);

fn from_src<'a>(events: &'a [serde_json::Value], src: &str) -> Vec<&'a serde_json::Value> {
    events.iter().filter(|e| e["subject"] == src).collect()
}

#[tokio::test]
async fn calendar_events_reach_a_url_watcher_as_valid_cloudevents() {
    let sink = Sink::start(Behaviour::Ok).await;
    let (_dir, file) = GatewayFileBuilder::new("cal", "calendar")
        .watchers(&[sink.url()])
        .config("every1s", "interval: 1s\nuserPayload: {\"n\": 7}")
        .write();
    let portico = Portico::run(&file).await;
    sink.wait_for_events(3, WAIT).await;
    let received = sink.received();
    let mut ids = HashSet::new();
    for r in received.iter().take(3) {
        assert_eq!(
            r.headers["content-type"], "application/cloudevents+json",
            "structured mode by default"
        );
        let ce = CloudEvent::from_json(&r.body).expect("a CloudEvent 1.0 in JSON");
        ce.validate().expect("valid");
        let json = r.json();
        assert_eq!(json["specversion"], "1.0");
        assert_eq!(ce.source, "cal/every1s");
        assert_eq!(ce.ty, "calendar");
        assert_eq!(ce.subject.as_deref(), Some("every1s"));
        assert_eq!(ce.datacontenttype.as_deref(), Some("application/json"));
        assert_eq!(json["eventtypeversion"], "1.0");
        assert!(json["data"]["eventTime"].is_string(), "{json}");
        assert_eq!(json["data"]["userPayload"]["n"], 7, "{json}");
        assert!(ids.insert(ce.id.clone()), "ids are unique");
    }
    assert_eq!(portico.terminate().await, Some(0));
}

#[tokio::test]
async fn live_edits_add_change_remove_break_and_fix() {
    let sink = Sink::start(Behaviour::Ok).await;
    let base = GatewayFileBuilder::new("live", "calendar").watchers(&[sink.url()]);
    let (_dir, file) = base.clone_with(&[("a", "interval: 200ms")]).write();
    let portico = Portico::run(&file).await;
    portico.wait_for_phase("a", "Running", WAIT).await;
    let first_a = portico.node("a").await.unwrap()["id"].clone();

    // Add b: its events start within 2 s.
    replace_file(
        &file,
        &base
            .clone_with(&[("a", "interval: 200ms"), ("b", "interval: 200ms")])
            .render(),
    );
    eventually(Duration::from_secs(2) + support_slack(), || {
        (!from_src(&sink.events(), "b").is_empty()).then_some(())
    })
    .await
    .expect("events of the added configuration within 2 s");
    // a was not restarted by the edit: same id.
    assert_eq!(portico.node("a").await.unwrap()["id"], first_a);

    // Change a: the old one stops, the new one starts (a new id under the same key).
    replace_file(
        &file,
        &base
            .clone_with(&[
                ("a", "interval: 250ms\nuserPayload: v2"),
                ("b", "interval: 200ms"),
            ])
            .render(),
    );
    let new_a = support::eventually_async(WAIT, || async {
        portico
            .node("a")
            .await
            .filter(|n| n["id"] != first_a && n["phase"] == "Running")
    })
    .await
    .expect("a restarted with a new id");
    assert_ne!(new_a["id"], first_a);
    let old = first_a.as_str().unwrap().to_string();
    eventually(WAIT, || {
        portico
            .stderr
            .containing("configuration removed")
            .iter()
            .any(|l| l.contains(&old))
            .then_some(())
    })
    .await
    .expect("the old a was stopped and removed");
    sink.wait_for_events(sink.events().len() + 1, WAIT).await;
    eventually(WAIT, || {
        from_src(&sink.events(), "a")
            .iter()
            .any(|e| e["data"]["userPayload"] == "v2")
            .then_some(())
    })
    .await
    .expect("events of the changed a");

    // Remove b: its events stop.
    replace_file(
        &file,
        &base
            .clone_with(&[("a", "interval: 250ms\nuserPayload: v2")])
            .render(),
    );
    support::eventually_async(WAIT, || async {
        portico.node("b").await.is_none().then_some(())
    })
    .await
    .expect("b removed from /status");
    let a_count = |s: &Sink| from_src(&s.events(), "a").len();
    // Deliveries accepted before the removal take milliseconds; one more tick of a is enough.
    let n = a_count(&sink);
    eventually(WAIT, || (a_count(&sink) > n).then_some(()))
        .await
        .unwrap();
    let b_after = from_src(&sink.events(), "b").len();
    let n = a_count(&sink);
    eventually(WAIT, || (a_count(&sink) >= n + 3).then_some(()))
        .await
        .unwrap();
    assert_eq!(
        from_src(&sink.events(), "b").len(),
        b_after,
        "no event of b after its removal"
    );

    // Break the YAML: an error is logged, a keeps running.
    replace_file(
        &file,
        "apiVersion: portico.dev/v1alpha1\nkind: Gateway\nspec: [oops\n",
    );
    eventually(WAIT, || {
        (!portico.stderr.containing("does not parse").is_empty()).then_some(())
    })
    .await
    .expect("the parse error is logged");
    let logged = portico.stderr.containing("does not parse");
    assert!(logged[0].contains("\"line\":3"), "{}", logged[0]);
    let n = a_count(&sink);
    eventually(WAIT, || (a_count(&sink) >= n + 3).then_some(()))
        .await
        .expect("a keeps running while the file is broken");
    assert_eq!(portico.node("a").await.unwrap()["phase"], "Running");

    // Fix it (and add c): back to normal.
    replace_file(
        &file,
        &base
            .clone_with(&[
                ("a", "interval: 250ms\nuserPayload: v2"),
                ("c", "interval: 200ms"),
            ])
            .render(),
    );
    eventually(WAIT, || {
        (!from_src(&sink.events(), "c").is_empty()).then_some(())
    })
    .await
    .expect("events of c after the fix");
    assert_eq!(portico.terminate().await, Some(0));
}

fn support_slack() -> Duration {
    // The 2 s promise is measured from the rename; polling adds at most this much.
    Duration::from_millis(500)
}

trait CloneWith {
    fn clone_with(&self, configs: &[(&str, &str)]) -> GatewayFileBuilder;
}

impl CloneWith for GatewayFileBuilder {
    fn clone_with(&self, configs: &[(&str, &str)]) -> GatewayFileBuilder {
        let mut b = GatewayFileBuilder::new(&self.name, &self.gateway_type);
        b.spec_extra = self.spec_extra.clone();
        for (k, v) in configs {
            b = b.config(k, v);
        }
        b
    }
}

#[tokio::test]
async fn an_invalid_cron_is_an_error_node_next_to_a_running_one() {
    let sink = Sink::start(Behaviour::Ok).await;
    let (_dir, file) = GatewayFileBuilder::new("mixed", "calendar")
        .watchers(&[sink.url()])
        .config("bad", "schedule: \"61 * * * *\"")
        .config("good", "interval: 300ms")
        .write();
    let portico = Portico::run(&file).await;
    let bad = portico.wait_for_phase("bad", "Error", WAIT).await;
    let message = bad["message"].as_str().unwrap();
    assert!(
        message.starts_with("schedule:"),
        "the message names the field: {message}"
    );
    portico.wait_for_phase("good", "Running", WAIT).await;
    let events = sink.wait_for_events(2, WAIT).await;
    assert!(events.iter().all(|e| e["subject"] == "good"));
    // Validation failed, so the bad one was never started (and is not restarted).
    assert_eq!(portico.node("bad").await.unwrap()["restarts"], 0);
    let _ = portico.terminate().await;
}

async fn post_original(portico: &Portico, src: &str, payload: &[u8]) -> reqwest::StatusCode {
    use base64::Engine;
    portico
        .http
        .post(portico.url("/"))
        .json(&serde_json::json!({
            "src": src,
            "payload": base64::engine::general_purpose::STANDARD.encode(payload),
        }))
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn a_watcher_answering_503_twice_gets_the_event_exactly_once_more() {
    let sink = Sink::start(Behaviour::Script(vec![503, 503])).await;
    let (_dir, file) = GatewayFileBuilder::new("retry", "custom")
        .spec_lines(&format!(
            "  delivery:\n    retry: {{maxAttempts: 5, initialBackoff: 20ms, maxBackoff: 100ms}}\n  watchers:\n    urls: [\"{}\"]",
            sink.url()
        ))
        .write();
    let portico = Portico::run(&file).await;
    assert_eq!(post_original(&portico, "first", b"one").await, 200);
    let first = sink.wait_for_events(1, WAIT).await[0]["id"].clone();
    // A second event, delivered after the first: nothing else of the first is in flight.
    assert_eq!(post_original(&portico, "second", b"two").await, 200);
    sink.wait_for_events(2, WAIT).await;
    let attempts: Vec<u16> = sink
        .received()
        .iter()
        .filter(|r| r.json()["id"] == first)
        .map(|r| r.answered)
        .collect();
    assert_eq!(
        attempts,
        vec![503, 503, 200],
        "two refusals, then exactly one delivery"
    );
    let metrics = portico.metrics().await;
    assert!(
        metrics.contains("portico_events_retried_total{watcher=\"url:"),
        "{metrics}"
    );
    let _ = portico.terminate().await;
}

#[tokio::test]
async fn a_watcher_that_never_answers_does_not_delay_a_healthy_one() {
    let dead = Sink::start(Behaviour::Hang).await;
    let healthy = Sink::start(Behaviour::Ok).await;
    let (_dir, file) = GatewayFileBuilder::new("two", "custom")
        .spec_lines(&format!(
            "  watchers:\n    urls:\n      - {{url: \"{}\", timeout: 60s, concurrency: 1}}\n      - \"{}\"",
            dead.url(),
            healthy.url()
        ))
        .write();
    let portico = Portico::run(&file).await;
    for i in 0..5 {
        assert_eq!(
            post_original(&portico, "s", format!("e{i}").as_bytes()).await,
            200
        );
    }
    // The dead watcher holds its one attempt for 60 s; the healthy one has all five long before.
    let got = healthy.wait_for_events(5, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 5);
    assert!(dead.received().len() <= 1);
    drop(portico);
}

#[tokio::test]
async fn binary_legacy_and_knative_sink_watchers_get_their_encodings() {
    let binary = Sink::start(Behaviour::Ok).await;
    let legacy = Sink::start(Behaviour::Ok).await;
    let k_sink = Sink::start(Behaviour::Ok).await;
    let (_dir, file) = GatewayFileBuilder::new("enc", "custom")
        .spec_lines(&format!(
            "  eventVersion: \"2.1\"\n  watchers:\n    urls:\n      - {{url: \"{}\", encoding: binary}}\n      - {{url: \"{}\", encoding: legacy}}",
            binary.url(),
            legacy.url()
        ))
        .write();
    let sink_url = k_sink.url();
    let portico = Portico::start(
        &["run", file.to_str().unwrap()],
        &[
            ("K_SINK", sink_url.as_str()),
            ("K_CE_OVERRIDES", r#"{"extensions":{"team":"blue"}}"#),
        ],
    )
    .await;
    use base64::Engine;
    let status = portico
        .http
        .post(portico.url("/"))
        .json(&serde_json::json!({
            "src": "s1",
            "payload": base64::engine::general_purpose::STANDARD.encode(br#"{"k":"v"}"#),
            "contentType": "application/json",
        }))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);

    let b = eventually(WAIT, || binary.received().into_iter().next())
        .await
        .unwrap();
    assert_eq!(b.headers["ce-specversion"], "1.0");
    assert_eq!(b.headers["ce-source"], "enc/s1");
    assert_eq!(b.headers["ce-type"], "custom");
    assert_eq!(b.headers["ce-eventtypeversion"], "2.1");
    assert_eq!(b.headers["ce-team"], "blue");
    assert_eq!(b.headers["content-type"], "application/json");
    assert_eq!(&b.body[..], br#"{"k":"v"}"#);

    let l = eventually(WAIT, || legacy.received().into_iter().next())
        .await
        .unwrap()
        .json();
    assert_eq!(l["cloudEventsVersion"], "0.1");
    assert_eq!(l["eventType"], "custom");
    assert_eq!(l["eventTypeVersion"], "2.1");
    assert_eq!(l["source"]["host"], "enc/s1");
    assert_eq!(l["eventID"], b.headers["ce-id"].to_str().unwrap());

    let k = k_sink.wait_for_events(1, WAIT).await;
    assert_eq!(k[0]["team"], "blue");
    assert_eq!(k[0]["data"]["k"], "v");
    let _ = portico.terminate().await;
}

#[tokio::test]
async fn sigterm_drains_events_in_flight() {
    // The watcher refuses twice; the event is still being retried when SIGTERM arrives.
    let sink = Sink::start(Behaviour::Script(vec![503, 503])).await;
    let (_dir, file) = GatewayFileBuilder::new("drain", "custom")
        .spec_lines(&format!(
            "  delivery:\n    retry: {{initialBackoff: 300ms, maxBackoff: 300ms}}\n  watchers:\n    urls: [\"{}\"]",
            sink.url()
        ))
        .write();
    let portico = Portico::run(&file).await;
    assert_eq!(post_original(&portico, "s", b"last words").await, 200);
    eventually(WAIT, || (!sink.received().is_empty()).then_some(()))
        .await
        .unwrap();
    assert!(
        sink.events().is_empty(),
        "not delivered yet when the signal comes"
    );
    assert_eq!(portico.terminate().await, Some(0));
    let events = sink.events();
    assert_eq!(events.len(), 1, "delivered before the process exited");
    assert_eq!(events[0]["source"], "drain/s");
}

#[tokio::test]
async fn validate_lists_every_problem_and_fails() {
    let (_dir, file) = GatewayFileBuilder::new("v", "calendar")
        .config("ok", "interval: 1s")
        .config("bad-cron", "schedule: \"not a cron\"")
        .config("bad-field", "intervall: 1s")
        .write();
    let (code, _, err) = support::run_to_end(&["validate", file.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("configuration `bad-cron`: schedule:"), "{err}");
    assert!(
        err.contains("configuration `bad-field`") && err.contains("unknown field `intervall`"),
        "{err}"
    );
    assert!(!err.contains("configuration `ok`"), "{err}");
    assert!(err.contains("2 problem(s)"), "{err}");
    // Each problem names its configuration once.
    for line in err.lines() {
        assert!(line.matches("configuration `").count() <= 1, "{line}");
    }

    let (_dir, file) = GatewayFileBuilder::new("v", "calendar")
        .config("ok", "interval: 1s")
        .write();
    let (code, _, err) = support::run_to_end(&["validate", file.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");

    std::fs::write(
        &file,
        "apiVersion: portico.dev/v1alpha1\nkind: Gateway\nmetadata: {name: x}\nspec:\n  type: [\n",
    )
    .unwrap();
    let (code, _, err) = support::run_to_end(&["validate", file.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains(&format!("{}:5:", file.display())),
        "file:line:column first: {err}"
    );
}

#[tokio::test]
async fn a_type_this_program_does_not_run_is_said_so_by_validate_and_run() {
    // A type only the user's own program knows (v0.6-era gateways were often such).
    let (_dir, file) = GatewayFileBuilder::new("pubsub", "gcp-pubsub")
        .config("a", "topic: x")
        .config("b", "topic: y")
        .write();
    let (code, stdout, stderr) = support::run_to_end(&["validate", file.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("2 configuration(s), not run by this program"),
        "{stdout}"
    );
    assert!(
        stderr.contains("type `gcp-pubsub`")
            && stderr.contains("its 2 configuration(s) are not run here")
            && stderr.contains("calendar, webhook"),
        "{stderr}"
    );
    let portico = Portico::run(&file).await;
    let warned = eventually(WAIT, || {
        portico
            .stderr
            .containing("which this program does not run")
            .first()
            .cloned()
    })
    .await
    .expect("run says so");
    assert!(warned.contains("WARN"), "{warned}");
}

#[test]
fn argo_gateway_fields_are_warnings_and_unknown_keys_errors_in_validate() {
    let (_dir, file) = GatewayFileBuilder::new("argo", "calendar")
        .spec_lines("  imageVersion: v0.6\n  delivery: {mode: atMostOnce}")
        .config("a", "interval: 1s")
        .write();
    let out = std::process::Command::new(support::portico_bin())
        .args(["validate", file.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning: spec.imageVersion: a field of Argo Events"),
        "{err}"
    );

    let (_dir, file) = GatewayFileBuilder::new("typo", "calendar")
        .spec_lines("  delivery: {mode: atMostOnce, retry: {maxAtempts: 3}}")
        .write();
    let (code, _, err) = support::run_to_end(&["validate", file.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("unknown field `maxAtempts`") && err.contains("gateway.yaml:8:"),
        "{err}"
    );
}

const SPLIT_GATEWAY: &str = "apiVersion: portico.dev/v1alpha1\nkind: Gateway\nmetadata:\n  name: split\nspec:\n  type: calendar\n  configMap: split-cm\n  watchers:\n    urls: [\"URL\"]\n  delivery: {mode: atMostOnce}\n";

fn split_configmap(data: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: split-cm\ndata:\n{data}")
}

#[tokio::test]
async fn a_gateway_and_its_configmap_in_two_files_validate_and_run_live() {
    let sink = Sink::start(Behaviour::Ok).await;
    let dir = tempfile::tempdir().unwrap();
    let gw = dir.path().join("gateway.yaml");
    let cm = dir.path().join("configmap.yaml");
    std::fs::write(&gw, SPLIT_GATEWAY.replace("URL", &sink.url())).unwrap();
    std::fs::write(&cm, split_configmap("  a: 'interval: 100ms'\n")).unwrap();

    // validate takes the two files, and the directory.
    for args in [
        vec!["validate", gw.to_str().unwrap(), cm.to_str().unwrap()],
        vec!["validate", dir.path().to_str().unwrap()],
    ] {
        let out = std::process::Command::new(support::portico_bin())
            .args(&args)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("gateway `split` is valid (1 configuration(s))"),
            "{stdout}"
        );
    }

    // run takes them too, and follows a change of the ConfigMap's file.
    let portico = Portico::start(&["run", gw.to_str().unwrap(), cm.to_str().unwrap()], &[]).await;
    portico.wait_for_phase("a", "Running", WAIT).await;
    replace_file(
        &cm,
        &split_configmap("  a: 'interval: 100ms'\n  b: 'interval: 100ms'\n"),
    );
    portico.wait_for_phase("b", "Running", WAIT).await;
    let subjects = eventually(WAIT, || {
        let e = sink.events();
        let has = |s: &str| e.iter().any(|v| v["subject"] == s);
        (has("a") && has("b")).then_some(())
    })
    .await;
    assert!(subjects.is_some(), "events of a and b");
}

#[test]
fn validate_checks_every_gateway_of_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.yaml"),
        "apiVersion: portico.dev/v1alpha1\nkind: Gateway\nmetadata: {name: a}\nspec: {type: calendar, configMap: a-cm}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a-cm}\ndata: {x: 'interval: 1s'}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("b.yaml"),
        "apiVersion: portico.dev/v1alpha1\nkind: Gateway\nmetadata: {name: b}\nspec: {type: calendar, configMap: b-cm}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: b-cm}\ndata: {y: 'interval: never'}\n",
    )
    .unwrap();
    let (code, stdout, stderr) = support::run_to_end(&["validate", dir.path().to_str().unwrap()]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("gateway `a` is valid"), "{stdout}");
    assert!(
        stderr.contains("b.yaml: configuration `y`: interval:"),
        "{stderr}"
    );
    assert!(stderr.contains("1 of 2 gateways have problems"), "{stderr}");
    // run takes one gateway: it says which it found.
    let out = std::process::Command::new(support::portico_bin())
        .args([
            "run",
            dir.path().to_str().unwrap(),
            "--transformer-port",
            "0",
        ])
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("expected one Gateway, found 2"), "{stderr}");
}

#[tokio::test]
async fn sensors_named_only_validate_anywhere_and_run_with_a_url_template() {
    let sink = Sink::start(Behaviour::Ok).await;
    let (_dir, file) = GatewayFileBuilder::new("named", "calendar")
        .spec_lines("  watchers:\n    sensors: [{name: payments}]\n  delivery: {mode: atMostOnce}")
        .config("tick", "interval: 100ms")
        .write();
    let (code, _, stderr) = support::run_to_end(&["validate", file.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("note: watchers.sensors[0] `payments` is named only")
            && stderr.contains("payments-sensor-svc.default.svc:9300"),
        "{stderr}"
    );
    // Outside a cluster, run needs to know where it is.
    let (code, _, stderr) =
        support::run_to_end(&["run", file.to_str().unwrap(), "--transformer-port", "0"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("--sensor-url"), "{stderr}");
    // With a template it runs, and the events reach the sensor.
    let template = format!("http://{}/sensors/{{name}}", sink.addr);
    let _portico = Portico::start(
        &["run", file.to_str().unwrap(), "--sensor-url", &template],
        &[],
    )
    .await;
    let events = sink.wait_for_events(2, WAIT).await;
    assert_eq!(events[0]["source"], "named/tick");
}
