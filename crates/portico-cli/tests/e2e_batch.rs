//! End to end, batch delivery: the real `portico` binary sends a URL watcher with
//! `encoding: batch` its events as `application/cloudevents-batch+json` requests of at most
//! `maxEvents`, in both delivery modes. The watcher's answer is for the whole batch: a batch
//! it refuses comes again as it was, and the events it took are each there once, in the order
//! the ingest API accepted them.

mod support;

use std::time::Duration;

use base64::Engine;
use support::{Behaviour, GatewayFileBuilder, Portico, Received, Sink, eventually};

const EVENTS: usize = 300;
const MAX_EVENTS: usize = 25;

fn body(src: &str, n: usize) -> String {
    let payload = base64::engine::general_purpose::STANDARD.encode(format!("{{\"n\":{n}}}"));
    format!("{{\"src\":\"{src}\",\"payload\":\"{payload}\",\"contentType\":\"application/json\"}}")
}

/// The events of one batch request: (source, n) of each, in order.
fn batch(r: &Received) -> Vec<(String, u64)> {
    assert_eq!(
        r.headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/cloudevents-batch+json"),
        "a batch request"
    );
    let events: Vec<serde_json::Value> =
        serde_json::from_slice(&r.body).expect("a JSON array of CloudEvents");
    events
        .iter()
        .map(|e| {
            assert_eq!(e["specversion"], "1.0", "{e}");
            (
                e["source"].as_str().expect("source").to_string(),
                e["data"]["n"].as_u64().expect("data.n"),
            )
        })
        .collect()
}

async fn batches_in_order(mode: &str) {
    // The first batch is refused, then every one is taken.
    let sink = Sink::start(Behaviour::Script(vec![503])).await;
    let (_dir, file) = GatewayFileBuilder::new("batches", "ingest")
        .spec_lines(&format!(
            "  delivery:\n    mode: {mode}\n    retry: {{maxAttempts: 1000, initialBackoff: 5ms, maxBackoff: 50ms}}\n  watchers:\n    urls:\n      - {{url: \"{}\", encoding: batch, maxEvents: {MAX_EVENTS}, maxDelay: 20ms}}\n",
            sink.url()
        ))
        .write();
    let portico = Portico::run(&file).await;
    // Three sources, interleaved; each event is accepted before the next is posted.
    let mut accepted = Vec::with_capacity(EVENTS);
    for n in 0..EVENTS {
        let src = ["a", "b", "c"][n % 3];
        let r = portico
            .http
            .post(portico.url("/"))
            .body(body(src, n))
            .send()
            .await
            .expect("POST an event");
        assert_eq!(r.status(), 200, "{mode}: event {n}");
        accepted.push((format!("batches/{src}"), n as u64));
    }
    let requests = eventually(Duration::from_secs(30), || {
        let got = sink.received();
        let taken: usize = got
            .iter()
            .filter(|r| r.answered == 200)
            .map(|r| batch(r).len())
            .sum();
        (taken >= EVENTS).then_some(got)
    })
    .await
    .unwrap_or_else(|| panic!("{mode}: every event at the watcher within 30 s"));

    assert_eq!(
        requests[0].answered, 503,
        "{mode}: the first batch is refused"
    );
    assert_eq!(
        batch(&requests[1]),
        batch(&requests[0]),
        "{mode}: the refused batch comes again as it was"
    );
    let mut taken = Vec::new();
    for r in &requests {
        let events = batch(r);
        assert!(
            (1..=MAX_EVENTS).contains(&events.len()),
            "{mode}: a batch of {}",
            events.len()
        );
        if r.answered == 200 {
            taken.extend(events);
        }
    }
    assert_eq!(
        taken, accepted,
        "{mode}: every event once, in the order accepted"
    );
    assert!(
        requests.len() < EVENTS / 2,
        "{mode}: {} requests for {EVENTS} events",
        requests.len()
    );
    eprintln!("{mode}: {EVENTS} events in {} requests", requests.len());
    assert_eq!(portico.terminate().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_keep_their_order_and_a_refused_one_comes_again_whole_at_most_once() {
    batches_in_order("atMostOnce").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_keep_their_order_and_a_refused_one_comes_again_whole_at_least_once() {
    batches_in_order("atLeastOnce").await;
}

#[tokio::test]
async fn a_batch_setting_out_of_range_is_refused_with_its_place() {
    let (_dir, file) = GatewayFileBuilder::new("badbatch", "ingest")
        .spec_lines(
            "  watchers:\n    urls:\n      - {url: \"http://127.0.0.1:9/\", encoding: batch, maxEvents: 0}\n",
        )
        .write();
    let (code, out, err) = support::run_to_end(&["validate", file.to_str().unwrap()]);
    let said = format!("{out}{err}");
    assert_ne!(code, Some(0), "{said}");
    assert!(
        said.contains("watchers.urls[0]") && said.contains("maxEvents is 0"),
        "{said}"
    );
}

/// The value of the counter `name` in OpenMetrics text (0 when absent).
fn counter(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.split([' ', '{']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudevents_posted_together_are_written_with_one_fsync_and_each_delivered_once() {
    const N: usize = 120;
    let sink = Sink::start(Behaviour::Ok).await;
    let (_dir, file) = GatewayFileBuilder::new("together", "ingest")
        .spec_lines("  delivery:\n    mode: atLeastOnce\n")
        .watchers(&[sink.url()])
        .write();
    let portico = Portico::run(&file).await;
    let before = portico.metrics().await;
    let events: Vec<serde_json::Value> = (0..N)
        .map(|i| {
            serde_json::json!({"specversion": "1.0", "id": format!("e-{i}"), "source": "/mine",
                "type": "com.example.n", "data": {"n": i}})
        })
        .collect();
    let r = portico
        .http
        .post(portico.url("/"))
        .header("content-type", "application/cloudevents-batch+json")
        .body(serde_json::to_vec(&events).unwrap())
        .send()
        .await
        .expect("POST the batch");
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    let after = portico.metrics().await;
    let delta = |name: &str| counter(&after, name) - counter(&before, name);
    assert_eq!(
        delta("portico_outbox_appends_total"),
        N as f64,
        "every event in the outbox"
    );
    assert_eq!(
        delta("portico_outbox_fsyncs_total"),
        1.0,
        "the request's events share one fsync"
    );
    let got = sink.wait_for_events(N, Duration::from_secs(30)).await;
    // 32 deliveries in flight: the order at a watcher without batches is not the order sent.
    let mut ids: Vec<&str> = got.iter().map(|e| e["id"].as_str().unwrap()).collect();
    ids.sort();
    let mut want: Vec<String> = (0..N).map(|i| format!("e-{i}")).collect();
    want.sort();
    assert_eq!(ids, want, "each delivered once");
    assert_eq!(portico.terminate().await, Some(0));
}
