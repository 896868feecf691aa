//! End to end with the real `portico` binary: the transformer's HTTP API for
//! framework-independent gateways. The original JSON and CloudEvents in structured, binary and
//! batched mode reach a real HTTP watcher; every bad body gets its status and reason while the
//! process keeps serving; a full dispatcher answers 503 with `Retry-After`; `/metrics` parses as
//! Prometheus text and counts what was sent; the examples in `examples/independent/` work.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use portico::cloudevents::CloudEvent;
use support::{Behaviour, GatewayFileBuilder, Portico, Sink, eventually_async};

const WAIT: Duration = Duration::from_secs(20);

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn independent(sink: &Sink) -> GatewayFileBuilder {
    GatewayFileBuilder::new("ind", "independent-example").watchers(&[sink.url()])
}

async fn post(
    portico: &Portico,
    content_type: Option<&str>,
    headers: &[(&str, &str)],
    body: impl Into<reqwest::Body>,
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut req = portico.http.post(portico.url("/")).body(body);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.expect("POST /");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().await.unwrap_or_default())
}

#[tokio::test]
async fn original_json_and_cloudevents_in_every_mode_reach_the_watcher() {
    let sink = Sink::start(Behaviour::Ok).await;
    let (_dir, file) = independent(&sink).write();
    let portico = Portico::run(&file).await;

    // The original format, JSON payload with its content type.
    let body = format!(
        r#"{{"src": "orders", "payload": "{}", "contentType": "application/json"}}"#,
        b64(br#"{"order": 42}"#)
    );
    let (status, _, text) = post(&portico, Some("application/json"), &[], body).await;
    assert_eq!(status, 200, "{text}");
    // The original format with bytes of no declared type.
    let body = format!(
        r#"{{"src": "raw", "payload": "{}"}}"#,
        b64(&[0, 159, 146, 150])
    );
    assert_eq!(post(&portico, None, &[], body).await.0, 200);
    // Structured.
    let structured = r#"{"specversion": "1.0", "id": "s-1", "source": "/mine/structured",
        "type": "com.example.structured", "subject": "sub", "datacontenttype": "application/json",
        "data": {"x": 1}, "myext": "yes"}"#;
    let (status, _, text) = post(
        &portico,
        Some("application/cloudevents+json"),
        &[],
        structured,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    // Binary.
    let (status, _, text) = post(
        &portico,
        Some("text/plain"),
        &[
            ("ce-specversion", "1.0"),
            ("ce-id", "b-1"),
            ("ce-source", "/mine/binary"),
            ("ce-type", "com.example.binary"),
            ("ce-colour", "blue%20green"),
        ],
        "hello binary",
    )
    .await;
    assert_eq!(status, 200, "{text}");
    // Batch.
    let batch = r#"[
        {"specversion": "1.0", "id": "batch-1", "source": "/mine/batch", "type": "com.example.batch"},
        {"specversion": "1.0", "id": "batch-2", "source": "/mine/batch", "type": "com.example.batch",
         "datacontenttype": "text/plain", "data": "two"}]"#;
    let (status, _, text) = post(
        &portico,
        Some("application/cloudevents-batch+json"),
        &[],
        batch,
    )
    .await;
    assert_eq!(status, 200, "{text}");

    let events = sink.wait_for_events(6, WAIT).await;
    let by_id_or_subject = |pred: &dyn Fn(&serde_json::Value) -> bool| {
        events
            .iter()
            .find(|e| pred(e))
            .cloned()
            .unwrap_or_else(|| panic!("missing event among {events:#?}"))
    };
    // Every delivery is a valid structured CloudEvent.
    for r in sink.received() {
        assert_eq!(r.headers["content-type"], "application/cloudevents+json");
        CloudEvent::from_json(&r.body).unwrap().validate().unwrap();
    }
    let orders = by_id_or_subject(&|e| e["subject"] == "orders");
    assert_eq!(orders["source"], "ind/orders");
    assert_eq!(orders["type"], "independent-example");
    assert_eq!(orders["datacontenttype"], "application/json");
    assert_eq!(orders["data"], serde_json::json!({"order": 42}));
    let raw = by_id_or_subject(&|e| e["subject"] == "raw");
    assert_eq!(raw["data_base64"], b64(&[0, 159, 146, 150]));
    assert!(raw.get("datacontenttype").is_none(), "never a guess");

    let s = by_id_or_subject(&|e| e["id"] == "s-1");
    assert_eq!(s["source"], "/mine/structured", "keeps its source");
    assert_eq!(s["type"], "com.example.structured", "keeps its type");
    assert_eq!(s["subject"], "sub");
    assert_eq!(s["myext"], "yes");
    assert_eq!(s["data"], serde_json::json!({"x": 1}));
    assert!(s.get("eventtypeversion").is_none(), "relayed as it is");

    let b = by_id_or_subject(&|e| e["id"] == "b-1");
    assert_eq!(b["source"], "/mine/binary");
    assert_eq!(b["type"], "com.example.binary");
    assert_eq!(b["datacontenttype"], "text/plain");
    assert_eq!(b["data"], "hello binary");
    assert_eq!(b["colour"], "blue green", "percent-decoded extension");

    let b1 = by_id_or_subject(&|e| e["id"] == "batch-1");
    assert_eq!(b1["source"], "/mine/batch");
    let b2 = by_id_or_subject(&|e| e["id"] == "batch-2");
    assert_eq!(b2["data"], "two");
}

/// A bad request: what it is, its content type, extra headers, body, the status and a word of
/// the reason it must get.
type BadBody = (
    &'static str,
    Option<&'static str>,
    Vec<(&'static str, &'static str)>,
    String,
    u16,
    &'static str,
);

#[tokio::test]
async fn every_bad_body_gets_its_status_and_reason_and_the_process_keeps_serving() {
    let sink = Sink::start(Behaviour::Ok).await;
    let (_dir, file) = independent(&sink).write();
    let portico = Portico::start(
        &["run", file.to_str().unwrap(), "--body-limit", "4096"],
        &[],
    )
    .await;
    let structured = Some("application/cloudevents+json");
    let batch = Some("application/cloudevents-batch+json");
    let cases: Vec<BadBody> = vec![
        ("bad JSON", None, vec![], "{\"src\": ".into(), 400, "not the expected JSON"),
        ("not an object", None, vec![], "[1, 2]".into(), 400, "not the expected JSON"),
        ("bad base64", None, vec![], r#"{"src": "a", "payload": "***"}"#.into(), 400, "not valid base64"),
        ("missing src", None, vec![], r#"{"payload": "aGk="}"#.into(), 400, "`src` is missing"),
        ("empty src", None, vec![], r#"{"src": " ", "payload": "aGk="}"#.into(), 400, "`src` is missing"),
        (
            "structured without source",
            structured,
            vec![],
            r#"{"specversion": "1.0", "id": "1", "type": "t"}"#.into(),
            400,
            "source",
        ),
        (
            "structured with a bad specversion",
            structured,
            vec![],
            r#"{"specversion": "0.3", "id": "1", "source": "s", "type": "t"}"#.into(),
            400,
            "0.3",
        ),
        ("structured bad JSON", structured, vec![], "{".into(), 400, "not a valid CloudEvent"),
        (
            "binary without ce-id",
            Some("text/plain"),
            vec![("ce-specversion", "1.0"), ("ce-source", "s"), ("ce-type", "t")],
            "x".into(),
            400,
            "id",
        ),
        (
            "binary with a bad time",
            Some("text/plain"),
            vec![("ce-specversion", "1.0"), ("ce-id", "1"), ("ce-source", "s"), ("ce-type", "t"), ("ce-time", "yesterday")],
            "x".into(),
            400,
            "time",
        ),
        (
            "batch with an invalid event",
            batch,
            vec![],
            r#"[{"specversion": "1.0", "id": "1", "source": "s", "type": "t"}, {"specversion": "1.0", "id": "2", "source": "s"}]"#.into(),
            400,
            "type",
        ),
        ("batch that is not an array", batch, vec![], "{}".into(), 400, "not a valid CloudEvent"),
        (
            "unknown CloudEvents format",
            Some("application/cloudevents+xml"),
            vec![],
            "<e/>".into(),
            400,
            "not a valid CloudEvent",
        ),
        (
            "over the size limit",
            None,
            vec![],
            format!(r#"{{"src": "a", "payload": "{}"}}"#, "A".repeat(8192)),
            413,
            "size limit",
        ),
    ];
    for (what, ct, headers, body, want_status, want_reason) in cases {
        let (status, _, reason) = post(&portico, ct, &headers, body).await;
        assert_eq!(status, want_status, "{what}: answered {status} {reason}");
        assert!(
            reason.contains(want_reason),
            "{what}: the reason `{reason}` should mention `{want_reason}`"
        );
    }
    // Still serving, and nothing bad reached the watcher.
    let r = portico
        .http
        .get(portico.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Events are POSTed and the status page is got; any other method on `/` is told which.
    let r = portico.http.put(portico.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET, POST");
    let (status, _, _) = post(&portico, None, &[], r#"{"src": "ok", "payload": "aGk="}"#).await;
    assert_eq!(status, 200);
    let events = sink.wait_for_events(1, WAIT).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["subject"], "ok");
}

#[tokio::test]
async fn a_full_dispatcher_answers_503_with_retry_after() {
    let sink = Sink::start(Behaviour::Hang).await;
    let (_dir, file) = independent(&sink)
        .spec_lines("  delivery:\n    queueSize: 2\n    concurrency: 1\n    timeout: 60s")
        .write();
    let portico = Portico::run(&file).await;
    let body = r#"{"src": "a", "payload": "aGk="}"#;
    assert_eq!(post(&portico, None, &[], body).await.0, 200);
    assert_eq!(post(&portico, None, &[], body).await.0, 200);
    let (status, headers, reason) = post(&portico, None, &[], body).await;
    assert_eq!(status, 503, "{reason}");
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry_after >= 1);
    assert!(reason.contains("full"), "{reason}");
    // A CloudEvent is pushed back the same way.
    let (status, headers, _) = post(
        &portico,
        Some("application/cloudevents+json"),
        &[],
        r#"{"specversion": "1.0", "id": "1", "source": "s", "type": "t"}"#,
    )
    .await;
    assert_eq!(status, 503);
    assert!(headers.contains_key("retry-after"));
    let r = portico
        .http
        .get(portico.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// A Prometheus / OpenMetrics text exposition, checked line by line: `# HELP`, `# TYPE`,
/// `# UNIT` comments, samples `name{label="value",…} value`, every sample of a declared family,
/// and `# EOF` last. Returns each series (name and sorted labels) and its value.
fn parse_prometheus(text: &str) -> BTreeMap<String, f64> {
    let mut families: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = BTreeMap::new();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.last(), Some(&"# EOF"), "ends with # EOF");
    for line in &lines[..lines.len() - 1] {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let kind = parts.next().unwrap();
            let name = parts.next().expect("a metric name in the comment");
            match kind {
                "TYPE" => {
                    let ty = parts.next().expect("a type");
                    assert!(
                        [
                            "counter",
                            "gauge",
                            "histogram",
                            "summary",
                            "info",
                            "unknown",
                            "stateset"
                        ]
                        .contains(&ty),
                        "unknown type in {line}"
                    );
                    families.insert(name.to_string(), ty.to_string());
                }
                "HELP" | "UNIT" => {}
                other => panic!("unknown comment {other} in {line}"),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("`series value`");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, Vec::new()),
            Some((name, rest)) => {
                let inner = rest.strip_suffix('}').expect("labels end with }");
                let mut labels: Vec<String> = Vec::new();
                let mut rest = inner;
                while !rest.is_empty() {
                    let (k, after) = rest.split_once("=\"").expect("label=\"value\"");
                    assert!(
                        k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                        "label name {k}"
                    );
                    let mut end = None;
                    let mut escaped = false;
                    for (i, c) in after.char_indices() {
                        match (escaped, c) {
                            (true, _) => escaped = false,
                            (false, '\\') => escaped = true,
                            (false, '"') => {
                                end = Some(i);
                                break;
                            }
                            _ => {}
                        }
                    }
                    let end = end.expect("closing quote");
                    labels.push(format!("{k}={}", &after[..end]));
                    rest = after[end + 1..].trim_start_matches(',');
                }
                labels.sort();
                (name, labels)
            }
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "metric name {name}"
        );
        let family = ["_total", "_created", "_bucket", "_sum", "_count", ""]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|base| families.contains_key(*base))
            });
        assert!(family.is_some(), "sample {name} of no declared family");
        samples.insert(format!("{name}{{{}}}", labels.join(",")), value);
    }
    samples
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_count_what_was_sent() {
    let sink = Sink::start(Behaviour::Script(vec![503])).await;
    let (_dir, file) = independent(&sink)
        .spec_lines("  delivery:\n    retry:\n      initialBackoff: 10ms")
        .write();
    let portico = Portico::run(&file).await;
    for _ in 0..3 {
        assert_eq!(
            post(&portico, None, &[], r#"{"src": "m1", "payload": "aGk="}"#)
                .await
                .0,
            200
        );
    }
    for _ in 0..2 {
        assert_eq!(
            post(&portico, None, &[], r#"{"src": "m2", "payload": "aGk="}"#)
                .await
                .0,
            200
        );
    }
    let ce = r#"{"specversion": "1.0", "id": "1", "source": "/relayed", "type": "t"}"#;
    assert_eq!(
        post(&portico, Some("application/cloudevents+json"), &[], ce)
            .await
            .0,
        200
    );
    assert_eq!(post(&portico, None, &[], "nonsense").await.0, 400);
    sink.wait_for_events(6, WAIT).await;

    let watcher = format!("watcher=url:{}", sink.url());
    let metrics = eventually_async(WAIT, || async {
        // As Prometheus asks: OpenMetrics (the text format 0.0.4 is checked by e2e_metrics).
        let r = portico
            .http
            .get(portico.url("/metrics"))
            .header("accept", support::PROMETHEUS_ACCEPT)
            .send()
            .await
            .ok()?;
        let text = r.text().await.ok()?;
        let m = parse_prometheus(&text);
        (m.get(&format!("portico_events_delivered_total{{{watcher}}}")) == Some(&6.0)
            && m.get(&format!("portico_watcher_queue_depth{{{watcher}}}")) == Some(&0.0))
        .then_some(m)
    })
    .await
    .expect("6 deliveries counted");
    let get = |k: &str| {
        *metrics
            .get(k)
            .unwrap_or_else(|| panic!("no {k} in {metrics:#?}"))
    };
    assert_eq!(get("portico_events_received_total{src=m1}"), 3.0);
    assert_eq!(get("portico_events_received_total{src=m2}"), 2.0);
    assert_eq!(get("portico_events_received_total{src=/relayed}"), 1.0);
    assert_eq!(get("portico_events_transformed_total{src=m1}"), 3.0);
    assert_eq!(get("portico_events_transformed_total{src=m2}"), 2.0);
    assert_eq!(get("portico_src_events_delivered_total{src=m1}"), 3.0);
    assert_eq!(get("portico_src_events_delivered_total{src=m2}"), 2.0);
    assert_eq!(get("portico_src_events_delivered_total{src=/relayed}"), 1.0);
    // The sink answered 503 once: one retry, of the first event (of m1).
    assert_eq!(
        get(&format!("portico_events_retried_total{{{watcher}}}")),
        1.0
    );
    assert_eq!(get("portico_src_events_retried_total{src=m1}"), 1.0);
    assert_eq!(
        get(&format!("portico_events_failed_total{{{watcher}}}")),
        0.0
    );
    assert_eq!(
        get(&format!(
            "portico_delivery_latency_seconds_count{{{watcher}}}"
        )),
        6.0
    );
    assert_eq!(
        get(&format!(
            "portico_delivery_latency_seconds_bucket{{le=+Inf,{watcher}}}"
        )),
        6.0
    );
    for phase in ["Initialized", "Running", "Completed", "Error"] {
        assert_eq!(get(&format!("portico_nodes{{phase={phase}}}")), 0.0);
    }
}

#[tokio::test]
async fn the_status_document_describes_the_gateway() {
    let sink = Sink::start(Behaviour::Ok).await;
    let (_dir, file) = independent(&sink).write();
    let portico = Portico::run(&file).await;
    let ready = eventually_async(WAIT, || async {
        let r = portico
            .http
            .get(portico.url("/readiness"))
            .send()
            .await
            .ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    assert!(ready.is_some());
    let status = portico.status().await;
    assert_eq!(status["gateway"]["name"], "ind");
    assert_eq!(status["gateway"]["type"], "independent-example");
    assert_eq!(status["gateway"]["processor"], "independent");
    assert_eq!(
        status["gateway"]["watchers"],
        serde_json::json!([format!("url:{}", sink.url())])
    );
    assert_eq!(status["nodes"], serde_json::json!([]));
}

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/independent")
}

fn python() -> PathBuf {
    match std::env::var_os("PORTICO_VENV") {
        Some(venv) if PathBuf::from(&venv).join("bin/python").exists() => {
            PathBuf::from(venv).join("bin/python")
        }
        _ => PathBuf::from("python3"),
    }
}

#[tokio::test]
async fn the_independent_examples_post_events_that_arrive() {
    let sink = Sink::start(Behaviour::Ok).await;
    let (_dir, file) = independent(&sink).write();
    let portico = Portico::run(&file).await;
    let port = portico.addr.port().to_string();
    let shell = tokio::process::Command::new("bash")
        .arg(examples().join("post-events.sh"))
        .env("TRANSFORMER_PORT", &port)
        .env("COUNT", "2")
        .env("INTERVAL", "0")
        .kill_on_drop(true)
        .status();
    let py = tokio::process::Command::new(python())
        .arg(examples().join("post_cloudevents.py"))
        .env("TRANSFORMER_PORT", &port)
        .env("COUNT", "2")
        .env("INTERVAL", "0")
        .kill_on_drop(true)
        .status();
    let (shell, py) = tokio::join!(shell, py);
    assert!(shell.expect("bash runs").success());
    assert!(py.expect("python runs").success());
    let events = sink.wait_for_events(4, WAIT).await;
    let loadavg: Vec<_> = events
        .iter()
        .filter(|e| e["source"] == "ind/loadavg")
        .collect();
    assert_eq!(loadavg.len(), 2);
    assert!(loadavg[0]["data"]["load1"].is_number(), "{}", loadavg[0]);
    let ticks: HashSet<_> = events
        .iter()
        .filter(|e| e["source"] == "/examples/independent/python")
        .map(|e| e["data"]["tick"].as_u64().unwrap())
        .collect();
    assert_eq!(ticks, HashSet::from([1, 2]));
}
