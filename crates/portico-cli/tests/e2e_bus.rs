//! End to end, event-bus watchers: `dispatchMechanism: NATS` with the real `portico` binary
//! and the real NATS server (JetStream), read back with the NATS client. The server is the
//! one `scripts/test` starts on 127.0.0.1:4222 (`PORTICO_NATS_URL` overrides it).

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use base64::Engine;
use support::{
    GatewayFileBuilder, Portico, Tansu, create_kafka_topic, eventually_async, free_port,
    tansu_program,
};

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

#[tokio::test]
async fn kafka_dispatch_produces_each_cloudevent_to_the_topic_in_binary_mode() {
    use rdkafka::ClientConfig;
    use rdkafka::Message;
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::message::Headers;

    let broker = Tansu::start().await;
    let brokers = broker.brokers();
    let topic = format!("portico-bus-{}", unique());
    create_kafka_topic(&brokers, &topic, 1).await;

    let (_dir, file) = GatewayFileBuilder::new("kb", "ingest")
        .spec_lines(&format!(
            "  dispatchMechanism: Kafka\n  kafka: {{url: \"{brokers}\", topic: \"{topic}\"}}\n"
        ))
        .write();
    let portico = Portico::run(&file).await;
    const N: usize = 100;
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

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", format!("portico-test-{}", unique()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let mut ids = BTreeSet::new();
    let mut ns = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while ns.len() < N {
        let m = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("{} of {N} records read", ns.len()))
            .expect("a record");
        let headers = m.headers().expect("headers");
        let h = |name: &str| {
            headers
                .iter()
                .find(|h| h.key == name)
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).to_string())
                .unwrap_or_else(|| panic!("header {name}"))
        };
        assert_eq!(h("ce_specversion"), "1.0");
        assert_eq!(h("ce_source"), "kb/load");
        assert_eq!(h("ce_type"), "ingest");
        assert_eq!(h("content-type"), "application/json");
        assert_eq!(m.key(), Some(&b"load"[..]), "keyed by subject");
        ids.insert(h("ce_id"));
        let data: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
        ns.insert(data["n"].as_u64().unwrap());
    }
    assert_eq!(ids.len(), N);
    assert_eq!(portico.terminate().await, Some(0));
}

/// A CA and a certificate it signed for 127.0.0.1, as PEM files in `dir`: (CA, cert, key).
fn pki(dir: &std::path::Path) -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let write = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    (
        write("ca.pem", ca.pem()),
        write("server.pem", cert.pem()),
        write("server-key.pem", key.serialize_pem()),
    )
}

#[tokio::test]
async fn nats_dispatch_over_tls_with_a_user_whose_password_is_in_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = pki(dir.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = dir.path().join("nats.conf");
    std::fs::write(
        &conf,
        format!(
            "listen: 127.0.0.1:{port}\njetstream {{ store_dir: \"{}\" }}\n\
             tls {{ cert_file: \"{cert}\"\n key_file: \"{key}\" }}\n\
             authorization {{ user: gateway\n password: pa55 }}\n",
            dir.path().join("js").display()
        ),
    )
    .unwrap();
    let _server = tokio::process::Command::new("nats-server")
        .arg("-c")
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("nats-server (Debian package nats-server)");
    support::until_listening(port, "nats-server").await;
    let password = dir.path().join("password");
    std::fs::write(&password, "pa55\n").unwrap();
    let subject = format!("portico.tls.{}", unique());
    let stream_name = format!("PORTICO_TLS_{}", unique());
    let (_gdir, file) = GatewayFileBuilder::new("nt", "ingest")
        .spec_lines(&format!(
            "  dispatchMechanism: NATS\n  nats:\n    url: \"tls://127.0.0.1:{port}\"\n    subject: \"{subject}\"\n    stream: \"{stream_name}\"\n    user: gateway\n    passwordFile: \"{}\"\n    tls: {{caFile: \"{ca}\"}}\n  delivery: {{retry: {{maxAttempts: 1000, initialBackoff: 50ms, maxBackoff: 200ms}}}}\n",
            password.display()
        ))
        .write();
    let portico = Portico::run(&file).await;
    const N: usize = 5;
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
    // Read back with a client of the test's own, over TLS with the same CA and user.
    let client = async_nats::ConnectOptions::new()
        .user_and_password("gateway".into(), "pa55".into())
        .add_root_certificates(ca.clone().into())
        .require_tls(true)
        .connect(format!("tls://127.0.0.1:{port}"))
        .await
        .expect("the test's own TLS connection");
    let js = async_nats::jetstream::new(client);
    let count = stream_holds(&js, &stream_name, N)
        .await
        .expect("every event in the stream, published over TLS");
    assert_eq!(count, N as u64);

    // The CA file is renewed with a CA that did not sign the server's certificate, while the
    // watcher is connected: a send after that connects again and is refused, so deliveries
    // are retried (events go on being posted until one is).
    let right = std::fs::read(&ca).unwrap();
    let other = tempfile::tempdir().unwrap();
    let (other_ca, _, _) = pki(other.path());
    std::fs::copy(&other_ca, format!("{ca}.next")).unwrap();
    std::fs::rename(format!("{ca}.next"), &ca).unwrap();
    let mut posted = N;
    eventually_async(Duration::from_secs(30), || {
        let (portico, n) = (&portico, posted);
        posted += 1;
        async move {
            let r = portico
                .http
                .post(portico.url("/"))
                .body(body(n))
                .send()
                .await
                .expect("POST an event");
            assert_eq!(r.status(), 200, "event {n}");
            let retried = metric(portico, "portico_events_retried_total").await;
            (retried > 0.0).then_some(())
        }
    })
    .await
    .expect("deliveries are retried once the watcher uses the new CA file");
    // The right CA again: the events held back arrive, each once.
    std::fs::write(format!("{ca}.next"), &right).unwrap();
    std::fs::rename(format!("{ca}.next"), &ca).unwrap();
    let count = stream_holds(&js, &stream_name, posted)
        .await
        .expect("every event in the stream once the CA file is right again");
    assert_eq!(count, posted as u64);
    assert_eq!(portico.terminate().await, Some(0));
}

/// Waits until stream `name` holds at least `n` messages; how many it holds then.
async fn stream_holds(js: &async_nats::jetstream::Context, name: &str, n: usize) -> Option<u64> {
    eventually_async(Duration::from_secs(30), || async move {
        let mut s = js.get_stream(name).await.ok()?;
        let count = s.info().await.ok()?.state.messages;
        (count >= n as u64).then_some(count)
    })
    .await
}

/// The sum of a metric's series.
async fn metric(portico: &Portico, name: &str) -> f64 {
    portico
        .metrics()
        .await
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn kafka_dispatch_logs_in_with_scram() {
    use rdkafka::ClientConfig;
    use rdkafka::consumer::{Consumer, StreamConsumer};

    // Two tansu brokers on one SQLite database: an open one (the user is made there, and the
    // test reads there) and one that wants a SCRAM login, which the watcher produces to.
    let dir = tempfile::tempdir().unwrap();
    let tansu = tansu_program();
    let start = |port: u16, guarded: bool| {
        let listener = format!("tcp://127.0.0.1:{port}");
        let mut c = tokio::process::Command::new(&tansu);
        c.current_dir(dir.path())
            .args(["broker", "--listener-url", &listener])
            .args(["--advertised-listener-url", &listener])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        if guarded {
            c.arg("--authentication");
        }
        c.spawn().expect("start tansu")
    };
    let listening = |port: u16| support::until_listening(port, "tansu");
    let (open_port, guarded_port) = (free_port(), free_port());
    let _open = start(open_port, false);
    listening(open_port).await;
    let made = std::process::Command::new(&tansu)
        .args(["user", "create", "--broker"])
        .arg(format!("tcp://127.0.0.1:{open_port}"))
        .args(["--mechanism", "scram512", "portico", "pa55"])
        .output()
        .expect("tansu user create");
    assert!(made.status.success(), "{made:?}");
    let _guarded = start(guarded_port, true);
    listening(guarded_port).await;
    let open = format!("127.0.0.1:{open_port}");
    let topic = format!("portico-sasl-{}", unique());
    create_kafka_topic(&open, &topic, 1).await;

    let password = dir.path().join("password");
    std::fs::write(&password, "pa55\n").unwrap();
    let (_gdir, file) = GatewayFileBuilder::new("ks", "ingest")
        .spec_lines(&format!(
            "  dispatchMechanism: Kafka\n  kafka:\n    url: \"127.0.0.1:{guarded_port}\"\n    topic: \"{topic}\"\n    sasl: {{mechanism: SCRAM-SHA-512, user: portico, passwordFile: \"{}\"}}\n",
            password.display()
        ))
        .write();
    let portico = Portico::run(&file).await;
    const N: usize = 5;
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
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &open)
        .set("group.id", format!("portico-test-{}", unique()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    for n in 0..N {
        tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("{n} of {N} records read"))
            .expect("a record");
    }
    assert_eq!(portico.terminate().await, Some(0));
}
