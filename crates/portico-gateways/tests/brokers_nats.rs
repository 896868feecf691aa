//! The `nats` gateway against real NATS servers: the shared one on 127.0.0.1:4222 (with
//! JetStream) and, to take the broker away, a private `nats-server` on a free port.

mod broker_support;

use std::sync::Arc;
use std::time::Duration;

use broker_support::{PrivateBroker, Rig, WAIT, data, ext, unique, wait_until};
use portico::Phase;
use portico_gateways::nats::Nats;

const SHARED: &str = "nats://127.0.0.1:4222";

fn rig(name: &str) -> Rig {
    Rig::new(name, "nats", Arc::new(Nats))
}

async fn client(url: &str) -> async_nats::Client {
    async_nats::connect(url).await.expect("connect to NATS")
}

#[tokio::test]
async fn core_subscription_delivers_each_message_once_with_metadata() {
    let subject = unique("portico.test.");
    let mut rig = rig("natsgw");
    let config = format!("url: {SHARED}\nsubject: {subject}.>");
    rig.apply(&[("orders", &config)]).await;
    rig.wait_phase("orders", Phase::Running).await;

    let nc = client(SHARED).await;
    let n = 25;
    for i in 0..n {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Content-Type", "text/plain");
        headers.insert("X-Trace-Id", format!("t{i}").as_str());
        headers.insert("traceparent", traceparent(i).as_str());
        nc.publish_with_headers(format!("{subject}.a"), headers, format!("m{i}").into())
            .await
            .unwrap();
    }
    nc.flush().await.unwrap();

    let got = rig.exactly(n, Duration::from_millis(300)).await;
    for (i, e) in got.iter().enumerate() {
        assert_eq!(e.source, "natsgw/orders");
        assert_eq!(e.ty, "nats");
        assert_eq!(data(e), format!("m{i}"));
        assert_eq!(e.datacontenttype.as_deref(), Some("text/plain"));
        assert_eq!(
            ext(e, "natssubject").as_deref(),
            Some(format!("{subject}.a").as_str())
        );
        assert_eq!(
            ext(e, "hxtraceid").as_deref(),
            Some(format!("t{i}").as_str())
        );
        // The W3C trace context is kept as the distributed tracing extension.
        assert_eq!(ext(e, "traceparent"), Some(traceparent(i)));
    }
    rig.supervisor.stop_all().await;
}

/// A valid W3C `traceparent` of its own for message `i`.
fn traceparent(i: usize) -> String {
    format!("00-{:032x}-{:016x}-01", i + 1, i + 1)
}

#[tokio::test]
async fn two_configurations_with_different_subjects_stay_apart() {
    let a = unique("portico.a.");
    let b = unique("portico.b.");
    let mut rig = rig("natsgw");
    let ca = format!("url: {SHARED}\nsubject: {a}");
    let cb = format!("url: {SHARED}\nsubject: {b}");
    rig.apply(&[("a", &ca), ("b", &cb)]).await;
    rig.wait_phase("a", Phase::Running).await;
    rig.wait_phase("b", Phase::Running).await;
    let nc = client(SHARED).await;
    for i in 0..5 {
        nc.publish(a.clone(), format!("a{i}").into()).await.unwrap();
        nc.publish(b.clone(), format!("b{i}").into()).await.unwrap();
    }
    nc.flush().await.unwrap();
    let got = rig.exactly(10, Duration::from_millis(300)).await;
    for e in &got {
        let d = data(e);
        let src = e.subject.as_deref().unwrap_or_default();
        assert_eq!(&d[..1], src, "event {d} came from configuration {src}");
        let want = if src == "a" { &a } else { &b };
        assert_eq!(ext(e, "natssubject").as_deref(), Some(want.as_str()));
    }
    rig.supervisor.stop_all().await;
}

/// A JetStream stream in memory on the shared server, taking `SUBJECT.>`.
async fn memory_stream(
    subject: &str,
    name: &str,
) -> (
    async_nats::jetstream::Context,
    async_nats::jetstream::stream::Stream,
) {
    let js = async_nats::jetstream::new(client(SHARED).await);
    let stream = js
        .create_stream(async_nats::jetstream::stream::Config {
            name: name.to_string(),
            subjects: vec![format!("{subject}.>")],
            storage: async_nats::jetstream::stream::StorageType::Memory,
            ..Default::default()
        })
        .await
        .expect("create the stream");
    (js, stream)
}

/// Publishes each payload to `subject`, waiting for the stream's ack of each.
async fn publish_all(js: &async_nats::jetstream::Context, subject: &str, payloads: &[String]) {
    for p in payloads {
        js.publish(subject.to_string(), p.clone().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
}

/// Waits until the consumer's ack floor reaches stream sequence `n`.
async fn wait_acked(consumer: &async_nats::jetstream::consumer::PullConsumer, n: u64) {
    wait_until("every message to be acked", || {
        let mut c = consumer.clone();
        async move {
            let info = c.info().await.ok()?.clone();
            (info.ack_floor.stream_sequence == n).then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn jetstream_acks_only_accepted_messages_and_loses_none() {
    let subject = unique("portico.js.");
    let stream_name = unique("PORTICO");
    let (js, stream) = memory_stream(&subject, &stream_name).await;

    // A queue of one event: with the watcher down, the first message is accepted and the
    // second waits for room, unacknowledged.
    let mut rig = Rig::with_queue_size("natsgw", "nats", Arc::new(Nats), 1);
    rig.watcher_up(false);
    let config = format!("url: {SHARED}\nsubject: {subject}.>\nstream: {stream_name}\ndurable: gw");
    rig.apply(&[("js", &config)]).await;
    rig.wait_phase("js", Phase::Running).await;

    let n = 10;
    let want: Vec<String> = (0..n).map(|i| format!("j{i}")).collect();
    publish_all(&js, &format!("{subject}.x"), &want).await;
    // Exactly one message (the accepted one) gets acknowledged; the others stay pending.
    let mut consumer: async_nats::jetstream::consumer::PullConsumer =
        stream.get_consumer("gw").await.unwrap();
    wait_until("the first message to be acked", || {
        let mut c = consumer.clone();
        async move {
            let info = c.info().await.ok()?.clone();
            (info.ack_floor.stream_sequence == 1 && info.num_ack_pending >= 1).then_some(())
        }
    })
    .await;
    let info = consumer.info().await.unwrap().clone();
    assert_eq!(info.ack_floor.stream_sequence, 1, "{info:?}");

    rig.apply(&[]).await;
    // Stopped with nine messages held: none of them was acknowledged.
    let info = consumer.info().await.unwrap().clone();
    assert_eq!(info.ack_floor.stream_sequence, 1, "{info:?}");
    rig.watcher_up(true);
    rig.apply(&[("js", &config)]).await;
    let got = rig.until_all(&want).await;
    assert!(
        got.iter()
            .all(|e| ext(e, "stream").as_deref() == Some(stream_name.as_str()))
    );
    wait_acked(&consumer, n as u64).await;
    rig.supervisor.stop_all().await;
    let _ = stream.delete_consumer("gw").await;
    let _ = js.delete_stream(&stream_name).await;
}

/// `ackAfterDelivery`: messages are accepted (the queue has room), yet none is acknowledged
/// until the watcher took it, and none goes through the outbox.
#[tokio::test]
async fn ack_after_delivery_acks_jetstream_messages_only_once_delivered() {
    let subject = unique("portico.jsd.");
    let stream_name = unique("PORTICOD");
    let (js, stream) = memory_stream(&subject, &stream_name).await;
    let outbox = tempfile::tempdir().unwrap();
    let delivery = portico::testing::Delivery::AckAfterDelivery(outbox.path().to_path_buf());
    let mut rig = Rig::with_delivery("natsgw", "nats", Arc::new(Nats), 64, delivery);
    rig.watcher_up(false);
    let config = format!("url: {SHARED}\nsubject: {subject}.>\nstream: {stream_name}\ndurable: gw");
    rig.apply(&[("js", &config)]).await;
    rig.wait_phase("js", Phase::Running).await;
    let n = 5;
    let want: Vec<String> = (0..n).map(|i| format!("d{i}")).collect();
    publish_all(&js, &format!("{subject}.x"), &want).await;
    // What was pulled is dispatched, and waits for the watcher unacknowledged.
    rig.wait_received("js", 1).await;
    let mut consumer: async_nats::jetstream::consumer::PullConsumer =
        stream.get_consumer("gw").await.unwrap();
    let info = consumer.info().await.unwrap().clone();
    assert_eq!(
        info.ack_floor.stream_sequence, 0,
        "acked before delivery: {info:?}"
    );
    assert_eq!(rig.harness.metric("portico_outbox_appends_total", &[]), 0.0);
    rig.watcher_up(true);
    rig.until_all(&want).await;
    wait_acked(&consumer, n as u64).await;
    rig.supervisor.stop_all().await;
    let _ = stream.delete_consumer("gw").await;
    let _ = js.delete_stream(&stream_name).await;
}

#[tokio::test]
async fn a_lost_server_is_reported_and_reconnected() {
    let mut server = PrivateBroker::start(
        "nats-server",
        &["-a", "127.0.0.1", "-p", "{port}", "-js", "-sd", "{dir}"],
    )
    .await;
    let url = format!("nats://127.0.0.1:{}", server.port);
    let subject = unique("portico.lost.");
    let mut rig = rig("natsgw");
    let config = format!("url: {url}\nsubject: {subject}");
    rig.apply(&[("lost", &config)]).await;
    rig.wait_phase("lost", Phase::Running).await;

    server.kill();
    let node = rig.wait_phase("lost", Phase::Error).await;
    assert!(node.message.contains("NATS"), "{node:?}");
    server.restart().await;
    rig.wait_phase("lost", Phase::Running).await;

    // The subscription is back: a message published now arrives.
    let nc = client(&url).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let got = loop {
        nc.publish(subject.clone(), "after".into()).await.unwrap();
        nc.flush().await.unwrap();
        if let Some(e) = rig.next_event(Duration::from_millis(200)).await {
            break e;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no event after reconnecting"
        );
    };
    assert_eq!(data(&got), "after");
    rig.supervisor.stop_all().await;
}

#[tokio::test]
async fn a_bad_url_or_missing_field_is_a_validation_error_naming_it() {
    let rig = rig("natsgw");
    let mut sup = rig.supervisor;
    let mut map = std::collections::BTreeMap::new();
    map.insert(
        "badurl".to_string(),
        "url: http://x\nsubject: a".to_string(),
    );
    map.insert("nosubject".to_string(), format!("url: {SHARED}"));
    sup.apply(&map).await;
    let harness = &rig.harness;
    let node = |name: &str| harness.node(name);
    let bad = wait_until("badurl to be Error", || async {
        node("badurl").filter(|n| n.phase == Phase::Error)
    })
    .await;
    assert!(bad.message.contains("url"), "{bad:?}");
    let missing = wait_until("nosubject to be Error", || async {
        node("nosubject").filter(|n| n.phase == Phase::Error)
    })
    .await;
    assert!(missing.message.contains("subject"), "{missing:?}");
    sup.stop_all().await;
}
