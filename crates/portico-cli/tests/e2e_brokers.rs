//! End to end with the real `portico` binary and the machine's brokers: stream gateways
//! (`mqtt`, `redis`) delivering to a real HTTP watcher, messages published with the brokers'
//! own command-line clients (`mosquitto_pub`, `redis-cli`).

mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{Behaviour, GatewayFileBuilder, Portico, Sink};

const WAIT: Duration = Duration::from_secs(20);

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{prefix}{}-{nanos}", std::process::id())
}

#[tokio::test]
async fn mqtt_messages_reach_an_http_watcher_once_each() {
    let sink = Sink::start(Behaviour::Ok).await;
    let topic = unique("portico/e2e/");
    let config = format!(
        "url: mqtt://127.0.0.1:1883\ntopic: '{topic}/#'\nclientId: {}\nqos: 1",
        unique("e2e")
    );
    let (_dir, file) = GatewayFileBuilder::new("mqtte2e", "mqtt")
        .watchers(&[sink.url()])
        .config("sensors", &config)
        .write();
    let portico = Portico::run(&file).await;
    portico.wait_for_phase("sensors", "Running", WAIT).await;

    let n = 10;
    let mut publisher = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", "1883", "-q", "1", "-l"])
        .args(["-t", &format!("{topic}/kitchen")])
        .stdin(Stdio::piped())
        .spawn()
        .expect("mosquitto_pub (Debian package mosquitto-clients)");
    {
        let mut stdin = publisher.stdin.take().expect("stdin");
        for i in 0..n {
            writeln!(stdin, "{{\"t\":{i}}}").unwrap();
        }
    }
    assert!(publisher.wait().unwrap().success());

    let events = sink.wait_for_events(n, WAIT).await;
    assert_eq!(events.len(), n);
    // Each message once; the order is not promised (a watcher has several senders at once).
    let mut payloads = Vec::new();
    for e in &events {
        assert_eq!(e["specversion"], "1.0");
        assert_eq!(e["source"], "mqtte2e/sensors");
        assert_eq!(e["type"], "mqtt");
        assert_eq!(e["topic"], format!("{topic}/kitchen"));
        let data = e.get("data_base64").and_then(|d| d.as_str()).map(|b| {
            use base64::Engine;
            String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b).unwrap()).unwrap()
        });
        let data = data.unwrap_or_else(|| match &e["data"] {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        });
        payloads.push(data);
    }
    payloads.sort_by_key(|d| {
        serde_json::from_str::<serde_json::Value>(d).unwrap()["t"]
            .as_u64()
            .unwrap()
    });
    let want: Vec<String> = (0..n).map(|i| format!("{{\"t\":{i}}}")).collect();
    assert_eq!(payloads, want);
    assert_eq!(portico.terminate().await, Some(0));
}

#[tokio::test]
async fn redis_stream_entries_reach_an_http_watcher_and_are_acknowledged() {
    let sink = Sink::start(Behaviour::Ok).await;
    let stream = unique("portico:e2e:");
    let config = format!("url: redis://127.0.0.1:6379\nstream: '{stream}'\nconsumerGroup: e2e");
    let (_dir, file) = GatewayFileBuilder::new("redise2e", "redis")
        .watchers(&[sink.url()])
        .config("jobs", &config)
        .write();
    let portico = Portico::run(&file).await;
    portico.wait_for_phase("jobs", "Running", WAIT).await;

    let redis_cli = |args: &[&str]| {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", "6379"])
            .args(args)
            .output()
            .expect("redis-cli");
        assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let n = 5;
    for i in 0..n {
        redis_cli(&["xadd", &stream, "*", "task", &format!("build{i}")]);
    }
    let events = sink.wait_for_events(n, WAIT).await;
    let mut tasks = Vec::new();
    for e in &events {
        assert_eq!(e["source"], "redise2e/jobs");
        assert_eq!(e["datacontenttype"], "application/json");
        assert_eq!(e["stream"], stream.as_str());
        tasks.push(e["data"]["task"].as_str().unwrap().to_string());
    }
    // Each entry once; the order is not promised (a watcher has several senders at once).
    tasks.sort();
    let want: Vec<String> = (0..n).map(|i| format!("build{i}")).collect();
    assert_eq!(tasks, want);
    // Everything accepted was acknowledged: nothing pending in the group.
    let pending = support::eventually(WAIT, || {
        let summary = redis_cli(&["xpending", &stream, "e2e"]);
        summary.lines().next().filter(|l| *l == "0").map(|_| ())
    })
    .await;
    assert!(pending.is_some(), "entries still pending");
    assert_eq!(portico.terminate().await, Some(0));
    redis_cli(&["del", &stream]);
}
