//! The `amqp` gateway against the machine's RabbitMQ (127.0.0.1:5672, guest/guest). The
//! broker is shared, so "taking it away" closes only this gateway's connection from the
//! broker side with `rabbitmqctl close_connection`.

mod broker_support;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use broker_support::{Rig, WAIT, data, ext, unique, wait_until};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use portico::Phase;
use portico_gateways::amqp::Amqp;

const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

async fn channel() -> (Connection, Channel) {
    let conn = Connection::connect(URL, ConnectionProperties::default())
        .await
        .expect("connect to RabbitMQ");
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    (conn, ch)
}

async fn publish(ch: &Channel, exchange: &str, key: &str, body: &str, props: BasicProperties) {
    ch.basic_publish(
        exchange.into(),
        key.into(),
        BasicPublishOptions::default(),
        body.as_bytes(),
        props,
    )
    .await
    .unwrap()
    .await
    .unwrap();
}

fn config(exchange: &str, key: &str, queue: Option<&str>) -> String {
    let mut c =
        format!("url: {URL}\nexchangeName: {exchange}\nexchangeType: topic\nroutingKey: '{key}'\n");
    if let Some(q) = queue {
        c.push_str(&format!("queue: {q}\n"));
    }
    c
}

#[tokio::test]
async fn each_message_arrives_once_with_its_metadata() {
    let exchange = unique("portico.x.");
    let mut rig = Rig::new("amqpgw", "amqp", Arc::new(Amqp));
    rig.apply(&[("orders", &config(&exchange, "orders.#", None))])
        .await;
    rig.wait_phase("orders", Phase::Running).await;
    let (_conn, ch) = channel().await;
    let n = 20;
    for i in 0..n {
        let mut headers = FieldTable::default();
        headers.insert(
            "X-Trace-Id".into(),
            AMQPValue::LongString(format!("t{i}").into()),
        );
        let props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_headers(headers);
        publish(
            &ch,
            &exchange,
            "orders.new",
            &format!("{{\"i\":{i}}}"),
            props,
        )
        .await;
    }
    let got = rig.exactly(n, Duration::from_millis(300)).await;
    for (i, e) in got.iter().enumerate() {
        assert_eq!(e.source, "amqpgw/orders");
        assert_eq!(data(e), format!("{{\"i\":{i}}}"));
        assert_eq!(e.datacontenttype.as_deref(), Some("application/json"));
        assert_eq!(ext(e, "exchange").as_deref(), Some(exchange.as_str()));
        assert_eq!(ext(e, "routingkey").as_deref(), Some("orders.new"));
        assert_eq!(ext(e, "hxtraceid"), Some(format!("t{i}")));
    }
    rig.supervisor.stop_all().await;
    let _ = ch
        .exchange_delete(exchange.as_str().into(), Default::default())
        .await;
}

#[tokio::test]
async fn two_configurations_with_different_routing_keys_stay_apart() {
    let exchange = unique("portico.x.");
    let mut rig = Rig::new("amqpgw", "amqp", Arc::new(Amqp));
    rig.apply(&[
        ("a", &config(&exchange, "a", None)),
        ("b", &config(&exchange, "b", None)),
    ])
    .await;
    rig.wait_phase("a", Phase::Running).await;
    rig.wait_phase("b", Phase::Running).await;
    let (_conn, ch) = channel().await;
    for i in 0..5 {
        publish(
            &ch,
            &exchange,
            "a",
            &format!("a{i}"),
            BasicProperties::default(),
        )
        .await;
        publish(
            &ch,
            &exchange,
            "b",
            &format!("b{i}"),
            BasicProperties::default(),
        )
        .await;
    }
    for e in rig.exactly(10, Duration::from_millis(300)).await {
        let src = e.subject.clone().unwrap_or_default();
        assert_eq!(&data(&e)[..1], src);
        assert_eq!(ext(&e, "routingkey"), Some(src));
    }
    rig.supervisor.stop_all().await;
    let _ = ch
        .exchange_delete(exchange.as_str().into(), Default::default())
        .await;
}

/// Messages ready in `queue` (not delivered to a consumer, or given back). A channel of its
/// own, since a failed passive declaration closes the channel.
async fn ready(conn: &Connection, queue: &str) -> u32 {
    let Ok(ch) = conn.create_channel().await else {
        return u32::MAX;
    };
    let r = ch
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map(|q| q.message_count())
        .unwrap_or(u32::MAX);
    let _ = ch.close(200, "done".into()).await;
    r
}

#[tokio::test]
async fn unaccepted_messages_are_requeued_at_stop_and_none_is_lost() {
    let exchange = unique("portico.x.");
    let queue = unique("portico.q.");
    let mut rig = Rig::with_queue_size("amqpgw", "amqp", Arc::new(Amqp), 1);
    rig.watcher_up(false);
    let c = config(&exchange, "k", Some(&queue));
    rig.apply(&[("alo", &c)]).await;
    rig.wait_phase("alo", Phase::Running).await;
    let (conn, ch) = channel().await;
    let n = 10u32;
    let want: Vec<String> = (0..n).map(|i| format!("q{i}")).collect();
    for w in &want {
        publish(&ch, &exchange, "k", w, BasicProperties::default()).await;
    }
    // All delivered to the gateway (prefetch 32): none ready.
    wait_until("every message delivered to the gateway", || async {
        (ready(&conn, &queue).await == 0).then_some(())
    })
    .await;
    // Stop: the accepted ones were acked, the others are given back. The gateway holds one
    // event in its queue and, when the dispatcher's worker took that one before the next
    // arrived, one more in flight to the (down) watcher: one or two accepted, the rest back.
    rig.apply(&[]).await;
    let accepted = rig.received("alo");
    let seen = std::cell::Cell::new(u32::MAX);
    let requeued = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            seen.set(ready(&conn, &queue).await);
            if (n - 2..n).contains(&seen.get()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        requeued.is_ok(),
        "the unaccepted messages were not requeued: {} ready of {n} (u32::MAX: the queue could not be read), {accepted} received by the gateway",
        seen.get()
    );
    rig.watcher_up(true);
    rig.apply(&[("alo", &c)]).await;
    let got = rig.until_all(&want).await;
    assert!(
        got.iter()
            .any(|e| ext(e, "redelivered").as_deref() == Some("true"))
    );
    rig.supervisor.stop_all().await;
    let _ = ch
        .queue_delete(queue.as_str().into(), Default::default())
        .await;
    let _ = ch
        .exchange_delete(exchange.as_str().into(), Default::default())
        .await;
}

/// Closes, from the broker side, the connection named `name` (its client-provided name is
/// in `client_properties`; `close_connection` takes the connection's process id).
fn close_connection_named(name: &str) -> bool {
    let out = Command::new("rabbitmqctl")
        .args(["list_connections", "pid", "client_properties", "-q"])
        .output()
        .expect("rabbitmqctl");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut closed = false;
    for line in text.lines().filter(|l| l.contains(name)) {
        let Some(pid) = line.split_whitespace().next() else {
            continue;
        };
        let st = Command::new("rabbitmqctl")
            .args(["close_connection", pid, "test"])
            .output()
            .expect("rabbitmqctl");
        closed |= st.status.success();
    }
    closed
}

#[tokio::test]
async fn a_connection_closed_by_the_broker_is_reported_and_reopened() {
    let exchange = unique("portico.x.");
    let mut rig = Rig::new(&unique("amqpgw"), "amqp", Arc::new(Amqp));
    let name = format!("portico/{}/lost", rig.harness.gateway().name());
    rig.apply(&[("lost", &config(&exchange, "k", None))]).await;
    rig.wait_phase("lost", Phase::Running).await;

    wait_until("the gateway's connection to be closed", || async {
        close_connection_named(&name).then_some(())
    })
    .await;
    let node = rig.wait_phase("lost", Phase::Error).await;
    assert!(node.message.contains("AMQP"), "{node:?}");
    rig.wait_phase("lost", Phase::Running).await;

    let (_conn, ch) = channel().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let got = loop {
        publish(&ch, &exchange, "k", "after", BasicProperties::default()).await;
        if let Some(e) = rig.next_event(Duration::from_millis(300)).await {
            break e;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no event after reconnecting"
        );
    };
    assert_eq!(data(&got), "after");
    rig.supervisor.stop_all().await;
    let _ = ch
        .exchange_delete(exchange.as_str().into(), Default::default())
        .await;
}
