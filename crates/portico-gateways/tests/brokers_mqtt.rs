//! The `mqtt` gateway against real Mosquitto brokers: the shared one on 127.0.0.1:1883 and,
//! to take the broker away, a private `mosquitto` on a free port. Messages are published
//! with Mosquitto's own client, `mosquitto_pub`.

mod broker_support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use broker_support::{PrivateBroker, Rig, WAIT, data, ext, unique};
use portico::Phase;
use portico_gateways::mqtt::Mqtt;

/// Publishes each of `lines` as one message to `topic` with QoS `qos`.
fn publish(port: u16, topic: &str, qos: u8, lines: &[String]) {
    let mut child = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", topic])
        .args(["-q", &qos.to_string(), "-l"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("mosquitto_pub (Debian package mosquitto-clients)");
    let mut stdin = child.stdin.take().expect("stdin");
    for l in lines {
        writeln!(stdin, "{l}").expect("write to mosquitto_pub");
    }
    drop(stdin);
    let status = child.wait().expect("mosquitto_pub ends");
    assert!(status.success(), "mosquitto_pub failed: {status}");
}

fn config(port: u16, topic: &str, client_id: &str, qos: u8) -> String {
    format!("url: mqtt://127.0.0.1:{port}\ntopic: '{topic}'\nclientId: {client_id}\nqos: {qos}")
}

#[tokio::test]
async fn each_message_arrives_once_with_its_topic() {
    let base = unique("portico/test/");
    let mut rig = Rig::new("mqttgw", "mqtt", Arc::new(Mqtt));
    let c = config(1883, &format!("{base}/+"), &unique("c"), 1);
    rig.apply(&[("sensors", &c)]).await;
    rig.wait_phase("sensors", Phase::Running).await;
    let n = 20;
    let lines: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
    publish(1883, &format!("{base}/t1"), 1, &lines);
    let got = rig.exactly(n, Duration::from_millis(300)).await;
    for (i, e) in got.iter().enumerate() {
        assert_eq!(e.source, "mqttgw/sensors");
        assert_eq!(data(e), format!("m{i}"));
        assert_eq!(ext(e, "topic"), Some(format!("{base}/t1")));
    }
    rig.supervisor.stop_all().await;
}

#[tokio::test]
async fn two_configurations_with_different_topics_stay_apart() {
    let a = unique("portico/a/");
    let b = unique("portico/b/");
    let mut rig = Rig::new("mqttgw", "mqtt", Arc::new(Mqtt));
    let ca = config(1883, &a, &unique("c"), 0);
    let cb = config(1883, &b, &unique("c"), 0);
    rig.apply(&[("a", &ca), ("b", &cb)]).await;
    rig.wait_phase("a", Phase::Running).await;
    rig.wait_phase("b", Phase::Running).await;
    publish(
        1883,
        &a,
        1,
        &(0..5).map(|i| format!("a{i}")).collect::<Vec<_>>(),
    );
    publish(
        1883,
        &b,
        1,
        &(0..5).map(|i| format!("b{i}")).collect::<Vec<_>>(),
    );
    for e in rig.exactly(10, Duration::from_millis(300)).await {
        let src = e.subject.clone().unwrap_or_default();
        assert_eq!(&data(&e)[..1], src);
        assert_eq!(
            ext(&e, "topic").as_deref(),
            Some(if src == "a" { a.as_str() } else { b.as_str() })
        );
    }
    rig.supervisor.stop_all().await;
}

#[tokio::test]
async fn qos1_messages_not_accepted_are_delivered_again_after_a_restart() {
    let topic = unique("portico/alo/");
    let client_id = unique("alo");
    let mut rig = Rig::with_queue_size("mqttgw", "mqtt", Arc::new(Mqtt), 1);
    rig.watcher_up(false);
    let c = config(1883, &topic, &client_id, 1);
    rig.apply(&[("alo", &c)]).await;
    rig.wait_phase("alo", Phase::Running).await;
    let want: Vec<String> = (0..10).map(|i| format!("q{i}")).collect();
    publish(1883, &topic, 1, &want[..5]);
    // Stopped while the second message waits for room, unacknowledged.
    rig.wait_received("alo", 2).await;
    rig.apply(&[]).await;
    // Published while the gateway is away: kept by the broker for its persistent session.
    publish(1883, &topic, 1, &want[5..]);
    rig.watcher_up(true);
    rig.apply(&[("alo", &c)]).await;
    let got = rig.until_all(&want).await;
    assert!(
        got.iter()
            .all(|e| ext(e, "topic").as_deref() == Some(topic.as_str()))
    );
    rig.supervisor.stop_all().await;
}

#[tokio::test]
async fn a_lost_broker_is_reported_and_reconnected() {
    let mut broker = PrivateBroker::start("mosquitto", &["-p", "{port}"]).await;
    let topic = unique("portico/lost/");
    let mut rig = Rig::new("mqttgw", "mqtt", Arc::new(Mqtt));
    let c = config(broker.port, &topic, &unique("lost"), 1);
    rig.apply(&[("lost", &c)]).await;
    rig.wait_phase("lost", Phase::Running).await;

    broker.kill();
    let node = rig.wait_phase("lost", Phase::Error).await;
    assert!(node.message.contains("MQTT"), "{node:?}");
    broker.restart().await;
    rig.wait_phase("lost", Phase::Running).await;

    let deadline = tokio::time::Instant::now() + WAIT;
    let got = loop {
        publish(broker.port, &topic, 1, &["after".to_string()]);
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
}
