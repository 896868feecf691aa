//! The `kafka` gateway against a real Kafka-protocol broker: `tansu` with its memory engine,
//! one private broker per test on a free port. `scripts/test` installs tansu and points
//! `PORTICO_TANSU` at it.

mod broker_support;

use std::sync::Arc;
use std::time::Duration;

use broker_support::{PrivateBroker, Rig, WAIT, data, ext, tansu, unique, wait_until};
use portico::Phase;
use portico_gateways::kafka::Kafka;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

async fn broker() -> PrivateBroker {
    PrivateBroker::start(
        tansu(),
        &[
            "broker",
            "--listener-url",
            "tcp://127.0.0.1:{port}",
            "--advertised-listener-url",
            "tcp://127.0.0.1:{port}",
            "--storage-engine",
            "memory://tansu/",
        ],
    )
    .await
}

fn addr(b: &PrivateBroker) -> String {
    format!("127.0.0.1:{}", b.port)
}

async fn create_topic(brokers: &str, topic: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("an admin client");
    let t = NewTopic::new(topic, 1, TopicReplication::Fixed(1));
    wait_until(&format!("topic {topic} to be created"), || {
        let admin = &admin;
        let t = &t;
        async move {
            let r = admin.create_topics([t], &AdminOptions::new()).await.ok()?;
            r.iter()
                .all(|r| {
                    r.is_ok()
                        || matches!(
                            r,
                            Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists))
                        )
                })
                .then_some(())
        }
    })
    .await;
}

fn producer(brokers: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("message.timeout.ms", "10000")
        .create()
        .expect("a producer")
}

async fn produce(p: &FutureProducer, topic: &str, key: &str, value: &str) {
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "content-type",
            value: Some("text/plain"),
        })
        .insert(Header {
            key: "X-Trace-Id",
            value: Some(key),
        });
    p.send(
        FutureRecord::to(topic)
            .key(key)
            .payload(value)
            .headers(headers),
        Duration::from_secs(10),
    )
    .await
    .expect("record produced");
}

fn config(brokers: &str, topic: &str, group: &str) -> String {
    format!("url: {brokers}\ntopic: {topic}\nconsumerGroup: {group}\nstartOffset: oldest")
}

#[tokio::test]
async fn each_record_arrives_once_with_key_partition_and_offset() {
    let b = broker().await;
    let topic = unique("orders");
    create_topic(&addr(&b), &topic).await;
    let mut rig = Rig::new("kafkagw", "kafka", Arc::new(Kafka));
    rig.apply(&[("orders", &config(&addr(&b), &topic, &unique("g")))])
        .await;
    rig.wait_phase("orders", Phase::Running).await;
    let p = producer(&addr(&b));
    let n = 10;
    for i in 0..n {
        produce(&p, &topic, &format!("k{i}"), &format!("r{i}")).await;
    }
    let got = rig.exactly(n, Duration::from_millis(500)).await;
    for (i, e) in got.iter().enumerate() {
        assert_eq!(e.source, "kafkagw/orders");
        assert_eq!(data(e), format!("r{i}"));
        assert_eq!(e.datacontenttype.as_deref(), Some("text/plain"));
        assert_eq!(ext(e, "topic").as_deref(), Some(topic.as_str()));
        assert_eq!(ext(e, "partition").as_deref(), Some("0"));
        assert_eq!(ext(e, "offset"), Some(i.to_string()));
        assert_eq!(ext(e, "key"), Some(format!("k{i}")));
        assert_eq!(ext(e, "hxtraceid"), Some(format!("k{i}")));
    }
    rig.supervisor.stop_all().await;
}

#[tokio::test]
async fn argo_shape_a_partition_without_a_group_reads_from_the_newest_record() {
    let b = broker().await;
    let topic = unique("argo");
    create_topic(&addr(&b), &topic).await;
    let p = producer(&addr(&b));
    // Produced before the configuration starts: not read (Argo Events read from the newest).
    produce(&p, &topic, "k", "before").await;
    let mut rig = Rig::new("kafkagw", "kafka", Arc::new(Kafka));
    let argo = format!("url: {}\ntopic: {topic}\npartition: \"0\"", addr(&b));
    rig.apply(&[("argo", &argo)]).await;
    rig.wait_phase("argo", Phase::Running).await;
    // Where "newest" lands is settled at the first fetch: produce until one arrives.
    let mut first = None;
    for i in 0..100 {
        produce(&p, &topic, "k", &format!("warm{i}")).await;
        if let Some(e) = rig.next_event(Duration::from_millis(200)).await {
            first = Some(e);
            break;
        }
    }
    let first = first.expect("a record produced while it runs arrives");
    assert_ne!(data(&first), "before");
    assert_eq!(ext(&first, "partition").as_deref(), Some("0"));
    // Drain the other warm-up records, then every later record arrives once, in order.
    while rig.next_event(Duration::from_millis(300)).await.is_some() {}
    for i in 0..5 {
        produce(&p, &topic, "k", &format!("r{i}")).await;
    }
    let got = rig.exactly(5, Duration::from_millis(500)).await;
    let values: Vec<String> = got.iter().map(data).collect();
    assert_eq!(values, ["r0", "r1", "r2", "r3", "r4"]);
    rig.supervisor.stop_all().await;
}

#[tokio::test]
async fn two_configurations_with_different_topics_stay_apart() {
    let b = broker().await;
    let (ta, tb) = (unique("a"), unique("b"));
    create_topic(&addr(&b), &ta).await;
    create_topic(&addr(&b), &tb).await;
    let mut rig = Rig::new("kafkagw", "kafka", Arc::new(Kafka));
    let ca = config(&addr(&b), &ta, &unique("g"));
    let cb = config(&addr(&b), &tb, &unique("g"));
    rig.apply(&[("a", &ca), ("b", &cb)]).await;
    rig.wait_phase("a", Phase::Running).await;
    rig.wait_phase("b", Phase::Running).await;
    let p = producer(&addr(&b));
    for i in 0..5 {
        produce(&p, &ta, "k", &format!("a{i}")).await;
        produce(&p, &tb, "k", &format!("b{i}")).await;
    }
    for e in rig.exactly(10, Duration::from_millis(500)).await {
        let src = e.subject.clone().unwrap_or_default();
        assert_eq!(&data(&e)[..1], src);
        let want = if src == "a" { &ta } else { &tb };
        assert_eq!(ext(&e, "topic").as_deref(), Some(want.as_str()));
    }
    rig.supervisor.stop_all().await;
}

#[tokio::test]
async fn offsets_are_committed_only_once_accepted_and_no_record_is_lost() {
    let b = broker().await;
    let topic = unique("alo");
    create_topic(&addr(&b), &topic).await;
    let mut rig = Rig::with_queue_size("kafkagw", "kafka", Arc::new(Kafka), 1);
    rig.watcher_up(false);
    let c = config(&addr(&b), &topic, &unique("g"));
    rig.apply(&[("alo", &c)]).await;
    rig.wait_phase("alo", Phase::Running).await;
    let p = producer(&addr(&b));
    let want: Vec<String> = (0..10).map(|i| format!("r{i}")).collect();
    for w in &want {
        produce(&p, &topic, "k", w).await;
    }
    // Stopped while the second record waits for room: its offset is not committed.
    rig.wait_received("alo", 2).await;
    rig.apply(&[]).await;
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
    let mut b = broker().await;
    let topic = unique("lost");
    create_topic(&addr(&b), &topic).await;
    let mut rig = Rig::new("kafkagw", "kafka", Arc::new(Kafka));
    rig.apply(&[("lost", &config(&addr(&b), &topic, &unique("g")))])
        .await;
    rig.wait_phase("lost", Phase::Running).await;

    b.kill();
    let node = rig.wait_phase("lost", Phase::Error).await;
    assert!(node.message.contains("Kafka"), "{node:?}");
    b.restart().await;
    // The memory engine starts empty: the topic is made again.
    create_topic(&addr(&b), &topic).await;
    rig.wait_phase("lost", Phase::Running).await;

    let p = producer(&addr(&b));
    let deadline = tokio::time::Instant::now() + WAIT;
    let got = loop {
        produce(&p, &topic, "k", "after").await;
        if let Some(e) = rig.next_event(Duration::from_millis(500)).await {
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
