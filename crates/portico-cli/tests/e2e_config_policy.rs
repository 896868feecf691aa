//! A configuration's own `filter` and `rateLimit`, through the real binary: a filter over
//! webhook bodies and over MQTT messages (events that do not pass are taken, counted and
//! never delivered), a rate limit of 50/s that spreads 500 events posted as fast as possible
//! over about ten seconds without losing one, and `portico validate` naming the configuration
//! and the column of a bad expression.

mod support;

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use support::{Behaviour, GatewayFileBuilder, Portico, Sink, free_port, run_to_end};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_configuration_filter_keeps_webhook_bodies_that_do_not_pass() {
    let sink = Sink::start(Behaviour::Ok).await;
    let port = free_port();
    let orders = format!("port: {port}\nendpoint: /orders\nfilter: 'body.body.total > 100'");
    let (_dir, file) = GatewayFileBuilder::new("hooks", "webhook")
        .watchers(&[sink.url()])
        .config("orders", &orders)
        .write();
    let portico = Portico::run(&file).await;
    portico.wait_for_phase("orders", "Running", WAIT).await;
    let c = reqwest::Client::new();
    for (n, total) in [(1, 50), (2, 150), (3, 100), (4, 500)] {
        let r = c
            .post(format!("http://127.0.0.1:{port}/orders"))
            .json(&serde_json::json!({ "n": n, "total": total }))
            .send()
            .await
            .unwrap();
        // Taken, whether it passes or not: the sender has nothing to retry.
        assert_eq!(r.status(), 200, "event {n}");
    }
    let events = sink.wait_for_events(2, WAIT).await;
    let got: BTreeSet<u64> = events
        .iter()
        .map(|e| e["data"]["body"]["n"].as_u64().unwrap())
        .collect();
    assert_eq!(got, BTreeSet::from([2, 4]));
    // Two counted as filtered; only the two that passed were ever queued for the watcher
    // (the counters follow the sink's answers: polled).
    let want = [
        "portico_events_rejected_total{src=\"orders\",reason=\"filtered\"} 2",
        "portico_src_events_delivered_total{src=\"orders\"} 2",
    ];
    support::eventually_async(WAIT, || async {
        let m = portico.metrics().await;
        want.iter().all(|l| m.contains(l)).then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("{want:?} never all appeared"));
    assert_eq!(sink.events().len(), 2);
    assert_eq!(portico.terminate().await, Some(0));
}

/// An event's data as text, whether it came as `data` or `data_base64`.
fn text_data(e: &serde_json::Value) -> String {
    use base64::Engine;
    match e.get("data_base64").and_then(|d| d.as_str()) {
        Some(b) => {
            String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b).unwrap()).unwrap()
        }
        None => e["data"].as_str().unwrap_or_default().to_string(),
    }
}

#[tokio::test]
async fn a_configuration_filter_keeps_broker_messages_that_do_not_pass() {
    let sink = Sink::start(Behaviour::Ok).await;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let topic = format!("portico/policy/{}-{nanos}", std::process::id());
    // A dialect filter on the message's topic, and CEL on its text.
    let config = format!(
        "url: mqtt://127.0.0.1:1883\ntopic: '{topic}/#'\nclientId: policy-{nanos}\nqos: 1\nfilter: 'body.startsWith(\"keep\") && topic.endsWith(\"/a\")'"
    );
    let (_dir, file) = GatewayFileBuilder::new("mqttpolicy", "mqtt")
        .watchers(&[sink.url()])
        .config("sensors", &config)
        .write();
    let portico = Portico::run(&file).await;
    portico.wait_for_phase("sensors", "Running", WAIT).await;
    for sub in ["a", "b"] {
        let mut publisher = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", "1883", "-q", "1", "-l"])
            .args(["-t", &format!("{topic}/{sub}")])
            .stdin(Stdio::piped())
            .spawn()
            .expect("mosquitto_pub (Debian package mosquitto-clients)");
        {
            let mut stdin = publisher.stdin.take().expect("stdin");
            for i in 0..3 {
                writeln!(stdin, "keep-{sub}{i}").unwrap();
                writeln!(stdin, "drop-{sub}{i}").unwrap();
            }
        }
        assert!(publisher.wait().unwrap().success());
    }
    let events = sink.wait_for_events(3, WAIT).await;
    // Nine of the twelve did not pass: wait until they are counted, then look.
    let rejected = "portico_events_rejected_total{src=\"sensors\",reason=\"filtered\"} 9";
    support::eventually_async(WAIT, || async {
        portico.metrics().await.contains(rejected).then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("{rejected} never appeared"));
    let mut data: Vec<String> = sink.events().iter().map(text_data).collect();
    data.sort();
    assert_eq!(data, ["keep-a0", "keep-a1", "keep-a2"], "{events:?}");
    assert_eq!(portico.terminate().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_spreads_a_burst_without_losing_an_event() {
    let sink = Sink::start(Behaviour::Ok).await;
    let (_dir, file) = GatewayFileBuilder::new("limited", "independent-example")
        .watchers(&[sink.url()])
        .config("slow", "rateLimit: {perSecond: 50}")
        .write();
    let portico = Arc::new(Portico::run(&file).await);
    const N: usize = 500;
    let refusals = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    // Twenty callers post as fast as they can; a caller sent back waits as told, then
    // posts the same event again.
    let mut callers = Vec::new();
    for c in 0..20 {
        let portico = portico.clone();
        let refusals = refusals.clone();
        callers.push(tokio::spawn(async move {
            use base64::Engine;
            for i in (c..N).step_by(20) {
                let payload = base64::engine::general_purpose::STANDARD.encode(format!("{i}"));
                let body = serde_json::json!({ "src": "slow", "payload": payload });
                loop {
                    let r = portico
                        .http
                        .post(portico.url("/"))
                        .json(&body)
                        .send()
                        .await
                        .unwrap();
                    if r.status() == 200 {
                        break;
                    }
                    assert!(
                        r.status() == 429 || r.status() == 503,
                        "event {i}: {}",
                        r.status()
                    );
                    let after: u64 = r
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok())
                        .expect("a refusal says when to retry");
                    refusals.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_secs(after)).await;
                }
            }
        }));
    }
    for c in callers {
        c.await.unwrap();
    }
    let events = sink.wait_for_events(N, Duration::from_secs(120)).await;
    let spread = started.elapsed();
    let got: BTreeSet<u64> = events
        .iter()
        .map(|e| text_data(e).parse().unwrap())
        .collect();
    assert_eq!(got.len(), N, "every event arrived once");
    // 500 events at 50/s (one at once) take at least 9.98 s; the upper bound is generous.
    assert!(
        spread >= Duration::from_millis(9_900) && spread <= Duration::from_secs(60),
        "500 events at 50/s arrived over {spread:?}"
    );
    let metrics = portico.metrics().await;
    let waited: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("portico_src_rate_limited_seconds_total{src=\"slow\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no time waited for the limit in\n{metrics}"));
    assert!(waited > 1.0, "waited {waited} s in all");
    eprintln!(
        "500 events at 50/s: {spread:?}; {} refusals answered 429 or 503 and retried; {waited:.1} s waited in all",
        refusals.load(Ordering::Relaxed)
    );
    let portico = Arc::into_inner(portico).expect("the callers are done");
    assert_eq!(portico.terminate().await, Some(0));
}

#[test]
fn validate_names_the_configuration_and_the_column_of_a_bad_filter() {
    let (_dir, file) = GatewayFileBuilder::new("badpolicy", "calendar")
        .config(
            "ok",
            "interval: 10s\nfilter: {prefix: {contenttype: application/}}",
        )
        .config("cel", "interval: 10s\nfilter: 'body.n == == 1'")
        .config("dialect", "interval: 10s\nfilter: {exact: {Type: a}}")
        .config("limit", "interval: 10s\nrateLimit: {perSecond: -1}")
        .write();
    let (code, out, err) = run_to_end(&["validate", file.to_str().unwrap()]);
    let said = format!("{out}{err}");
    assert_ne!(code, Some(0), "{said}");
    assert!(
        said.contains("configuration `cel`: filter: column 11: "),
        "{said}"
    );
    assert!(
        said.contains("configuration `dialect`: filter: `Type` is not a CloudEvents attribute"),
        "{said}"
    );
    assert!(
        said.contains("configuration `limit`: rateLimit.perSecond is -1"),
        "{said}"
    );
    assert!(!said.contains("configuration `ok`"), "{said}");
    assert!(said.contains("3 problem(s)"), "{said}");
}
