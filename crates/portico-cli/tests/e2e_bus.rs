//! End to end, event-bus watchers: `dispatchMechanism: NATS` with the real `portico` binary
//! and the real NATS server (JetStream), read back with the NATS client. The server is the
//! one `scripts/test` starts on 127.0.0.1:4222 (`PORTICO_NATS_URL` overrides it).

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use base64::Engine;
use support::{GatewayFileBuilder, Portico, eventually_async};

fn nats_url() -> String {
    std::env::var("PORTICO_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_string())
}

fn unique() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{}_{nanos}", std::process::id())
}

fn body(n: usize) -> String {
    let payload = base64::engine::general_purpose::STANDARD.encode(format!("{{\"n\":{n}}}"));
    format!("{{\"src\":\"load\",\"payload\":\"{payload}\",\"contentType\":\"application/json\"}}")
}

#[tokio::test]
async fn nats_dispatch_publishes_each_cloudevent_to_jetstream_in_binary_mode() {
    let url = nats_url();
    let client = async_nats::connect(&url).await.unwrap_or_else(|e| {
        panic!("no NATS server at {url} ({e}): run scripts/test, or set PORTICO_NATS_URL")
    });
    let js = async_nats::jetstream::new(client);
    let id = unique();
    let subject = format!("portico.bus.{id}");
    let stream_name = format!("PORTICO_BUS_{id}");
    let (_dir, file) = GatewayFileBuilder::new("nb", "ingest")
        .spec_lines(&format!(
            "  dispatchMechanism: NATS\n  nats: {{url: \"{url}\", subject: \"{subject}\", stream: \"{stream_name}\"}}\n"
        ))
        .write();
    let portico = Portico::run(&file).await;
    const N: usize = 200;
    for n in 0..N {
        let r = portico
            .http
            .post(portico.url("/"))
            .body(body(n))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "event {n}");
    }
    let stream = eventually_async(Duration::from_secs(20), || {
        let js = js.clone();
        let stream_name = stream_name.clone();
        async move {
            let mut s = js.get_stream(&stream_name).await.ok()?;
            let count = s.info().await.ok()?.state.messages;
            (count >= N as u64).then_some(s)
        }
    })
    .await
    .expect("every event in the stream");
    let mut ids = BTreeSet::new();
    let mut ns = BTreeSet::new();
    for seq in 1..=N as u64 {
        let m = stream.get_raw_message(seq).await.expect("a stored message");
        let h = |name: &str| {
            m.headers
                .get(name)
                .map(|v| v.as_str().to_string())
                .unwrap_or_else(|| panic!("header {name} on message {seq}"))
        };
        assert_eq!(h("ce-specversion"), "1.0");
        assert_eq!(h("ce-source"), "nb/load");
        assert_eq!(h("ce-type"), "ingest");
        assert_eq!(h("ce-subject"), "load");
        assert_eq!(h("content-type"), "application/json");
        assert!(!h("ce-time").is_empty());
        ids.insert(h("ce-id"));
        let data: serde_json::Value = serde_json::from_slice(&m.payload).expect("JSON data");
        ns.insert(data["n"].as_u64().unwrap());
    }
    assert_eq!(ids.len(), N, "one message per event, ids unique");
    assert_eq!(ns.len(), N, "every event");
    let info = js
        .get_stream(&stream_name)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages;
    assert_eq!(info, N as u64, "no duplicates");
    assert_eq!(portico.terminate().await, Some(0));
    let _ = js.delete_stream(&stream_name).await;
}
