//! The `redis` gateway against real Redis servers: the shared one on 127.0.0.1:6379 and, to
//! take the server away, a private `redis-server` on a free port.

mod broker_support;

use std::sync::Arc;
use std::time::Duration;

use broker_support::{PrivateBroker, Rig, WAIT, data, ext, unique, wait_until};
use portico::Phase;
use portico_gateways::redis::Redis;
use redis::AsyncCommands;

const SHARED: &str = "redis://127.0.0.1:6379";

async fn conn(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("connect to Redis")
}

#[tokio::test]
async fn pubsub_delivers_each_message_once_with_channel_and_pattern() {
    let chan = unique("portico:test:");
    let mut rig = Rig::new("redisgw", "redis", Arc::new(Redis));
    let exact = format!("url: {SHARED}\nchannels: ['{chan}:exact']");
    let pattern = format!("url: {SHARED}\nchannels: ['{chan}:p:*']");
    rig.apply(&[("exact", &exact), ("pattern", &pattern)]).await;
    rig.wait_phase("exact", Phase::Running).await;
    rig.wait_phase("pattern", Phase::Running).await;

    let mut c = conn(SHARED).await;
    let n = 20;
    for i in 0..n {
        let _: i64 = c
            .publish(format!("{chan}:exact"), format!("e{i}"))
            .await
            .unwrap();
        let _: i64 = c
            .publish(format!("{chan}:p:{i}"), format!("p{i}"))
            .await
            .unwrap();
    }
    let got = rig.exactly(2 * n, Duration::from_millis(300)).await;
    let (exacts, patterns): (Vec<_>, Vec<_>) = got
        .iter()
        .partition(|e| e.subject.as_deref() == Some("exact"));
    assert_eq!(exacts.len(), n);
    assert_eq!(patterns.len(), n);
    for (i, e) in exacts.iter().enumerate() {
        assert_eq!(e.source, "redisgw/exact");
        assert_eq!(data(e), format!("e{i}"));
        assert_eq!(ext(e, "channel"), Some(format!("{chan}:exact")));
        assert_eq!(ext(e, "pattern"), None);
    }
    for (i, e) in patterns.iter().enumerate() {
        assert_eq!(e.source, "redisgw/pattern");
        assert_eq!(data(e), format!("p{i}"));
        assert_eq!(ext(e, "channel"), Some(format!("{chan}:p:{i}")));
        assert_eq!(ext(e, "pattern"), Some(format!("{chan}:p:*")));
    }
    rig.supervisor.stop_all().await;
}

#[tokio::test]
async fn two_configurations_with_different_channels_stay_apart() {
    let a = unique("portico:a:");
    let b = unique("portico:b:");
    let mut rig = Rig::new("redisgw", "redis", Arc::new(Redis));
    let ca = format!("url: {SHARED}\nchannels: ['{a}']");
    let cb = format!("url: {SHARED}\nchannels: ['{b}']");
    rig.apply(&[("a", &ca), ("b", &cb)]).await;
    rig.wait_phase("a", Phase::Running).await;
    rig.wait_phase("b", Phase::Running).await;
    let mut c = conn(SHARED).await;
    for i in 0..5 {
        let _: i64 = c.publish(&a, format!("a{i}")).await.unwrap();
        let _: i64 = c.publish(&b, format!("b{i}")).await.unwrap();
    }
    for e in rig.exactly(10, Duration::from_millis(300)).await {
        let src = e.subject.clone().unwrap_or_default();
        assert_eq!(&data(&e)[..1], src);
        assert_eq!(
            ext(&e, "channel").as_deref(),
            Some(if src == "a" { a.as_str() } else { b.as_str() })
        );
    }
    rig.supervisor.stop_all().await;
}

async fn pending(c: &mut redis::aio::MultiplexedConnection, stream: &str, group: &str) -> usize {
    let r: redis::streams::StreamPendingReply = c.xpending(stream, group).await.unwrap();
    r.count()
}

/// Adds `n` entries `{"n": "PREFIXi"}` to `stream`; the event payloads they become.
async fn add_entries(
    c: &mut redis::aio::MultiplexedConnection,
    stream: &str,
    prefix: &str,
    n: usize,
) -> Vec<String> {
    let mut want = Vec::new();
    for i in 0..n {
        let _: String = c
            .xadd(stream, "*", &[("n", format!("{prefix}{i}"))])
            .await
            .unwrap();
        want.push(format!("{{\"n\":\"{prefix}{i}\"}}"));
    }
    want
}

/// Waits until group `gw` of `stream` has no entry pending (every one acknowledged).
async fn wait_none_pending(c: &redis::aio::MultiplexedConnection, stream: &str) {
    wait_until("no entry pending", || {
        let mut c = c.clone();
        async move { (pending(&mut c, stream, "gw").await == 0).then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn stream_entries_are_acked_only_once_accepted_and_none_is_lost() {
    let stream = unique("portico:stream:");
    let mut c = conn(SHARED).await;
    let mut rig = Rig::with_queue_size("redisgw", "redis", Arc::new(Redis), 1);
    rig.watcher_up(false);
    let config = format!("url: {SHARED}\nstream: '{stream}'\nconsumerGroup: gw");
    rig.apply(&[("s", &config)]).await;
    rig.wait_phase("s", Phase::Running).await;

    let n = 10;
    let want = add_entries(&mut c, &stream, "s", n).await;
    // The first entry is accepted and acknowledged; the next one waits for room, read but
    // not acknowledged (pending); the stop leaves it pending for this consumer.
    let held = wait_until("an entry pending", || {
        let mut c = c.clone();
        let stream = &stream;
        async move {
            let p = pending(&mut c, stream, "gw").await;
            (p >= 1).then_some(p)
        }
    })
    .await;
    assert!(
        held < n,
        "{held} pending: the first entry was not acknowledged"
    );

    rig.apply(&[]).await;
    rig.watcher_up(true);
    rig.apply(&[("s", &config)]).await;
    let got = rig.until_all(&want).await;
    for e in &got {
        assert_eq!(e.datacontenttype.as_deref(), Some("application/json"));
        assert_eq!(ext(e, "stream").as_deref(), Some(stream.as_str()));
        assert!(ext(e, "streamid").is_some());
    }
    wait_none_pending(&c, &stream).await;
    rig.supervisor.stop_all().await;
    let _: i64 = c.del(&stream).await.unwrap();
}

/// `ackAfterDelivery`: entries are accepted (the queue has room), yet none is acknowledged
/// until the watcher took it, and none goes through the outbox.
#[tokio::test]
async fn ack_after_delivery_acks_stream_entries_only_once_delivered() {
    let stream = unique("portico:stream:");
    let mut c = conn(SHARED).await;
    let outbox = tempfile::tempdir().unwrap();
    let delivery = portico::testing::Delivery::AckAfterDelivery(outbox.path().to_path_buf());
    let mut rig = Rig::with_delivery("redisgw", "redis", Arc::new(Redis), 64, delivery);
    rig.watcher_up(false);
    let config = format!("url: {SHARED}\nstream: '{stream}'\nconsumerGroup: gw");
    rig.apply(&[("s", &config)]).await;
    rig.wait_phase("s", Phase::Running).await;
    let n = 5;
    let want = add_entries(&mut c, &stream, "d", n).await;
    // What was read is dispatched, and waits for the watcher unacknowledged (pending); the
    // reading waits too, so the broker keeps the rest.
    rig.wait_received("s", 1).await;
    let read = rig.received("s") as usize;
    assert_eq!(
        pending(&mut c, &stream, "gw").await,
        read,
        "acked before delivery"
    );
    assert_eq!(rig.harness.metric("portico_outbox_appends_total", &[]), 0.0);
    rig.watcher_up(true);
    rig.until_all(&want).await;
    wait_none_pending(&c, &stream).await;
    rig.supervisor.stop_all().await;
    let _: i64 = c.del(&stream).await.unwrap();
}

#[tokio::test]
async fn a_lost_server_is_reported_and_reconnected() {
    let mut server = PrivateBroker::start(
        "redis-server",
        &[
            "--port",
            "{port}",
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            "{dir}",
        ],
    )
    .await;
    let url = format!("redis://127.0.0.1:{}", server.port);
    let chan = unique("portico:lost:");
    let mut rig = Rig::new("redisgw", "redis", Arc::new(Redis));
    let config = format!("url: {url}\nchannels: ['{chan}']");
    rig.apply(&[("lost", &config)]).await;
    rig.wait_phase("lost", Phase::Running).await;

    server.kill();
    let node = rig.wait_phase("lost", Phase::Error).await;
    assert!(node.message.contains("Redis"), "{node:?}");
    server.restart().await;
    rig.wait_phase("lost", Phase::Running).await;

    let mut c = conn(&url).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let got = loop {
        let _: i64 = c.publish(&chan, "after").await.unwrap();
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
async fn entries_left_pending_by_a_gone_consumer_are_claimed() {
    let stream = unique("portico:claim:");
    let mut c = conn(SHARED).await;
    let _: () = c.xgroup_create_mkstream(&stream, "gw", "$").await.unwrap();
    let mut want = Vec::new();
    for i in 0..3 {
        let _: String = c
            .xadd(&stream, "*", &[("n", format!("c{i}"))])
            .await
            .unwrap();
        want.push(format!("{{\"n\":\"c{i}\"}}"));
    }
    // A consumer that read them and went away without acknowledging.
    let opts = redis::streams::StreamReadOptions::default()
        .group("gw", "ghost")
        .count(10);
    let read: redis::streams::StreamReadReply =
        c.xread_options(&[&stream], &[">"], &opts).await.unwrap();
    assert_eq!(read.keys[0].ids.len(), 3);
    assert_eq!(pending(&mut c, &stream, "gw").await, 3);

    let mut rig = Rig::new("redisgw", "redis", Arc::new(Redis));
    let config = format!("url: {SHARED}\nstream: '{stream}'\nconsumerGroup: gw\nreclaimAfter: 1ms");
    rig.apply(&[("claim", &config)]).await;
    rig.until_all(&want).await;
    wait_none_pending(&c, &stream).await;
    rig.supervisor.stop_all().await;
    let _: i64 = c.del(&stream).await.unwrap();
}
