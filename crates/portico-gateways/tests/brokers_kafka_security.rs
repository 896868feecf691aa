//! The `kafka` gateway's SASL and TLS against the `tansu` Kafka broker with authentication
//! on. tansu offers SCRAM (SHA-256 and SHA-512) and keeps its users in its storage, so each
//! test runs two tansu brokers on one SQLite database: an open one, where `tansu user create`
//! makes the SCRAM user and the test creates its topic and produces, and a guarded one
//! (`--authentication`) that the gateway logs in to.
//!
//! tansu 0.6 takes `--cert`/`--key` but does not terminate TLS itself, so the TLS test puts a
//! TLS endpoint of the test's own (rustls, a certificate made at test time with rcgen) in
//! front of the guarded broker, which advertises it as its listener: the client's TLS
//! handshake, CA check and SCRAM over TLS are real, the broker behind it too.

mod broker_support;

use std::sync::Arc;
use std::time::Duration;

use broker_support::{Pki, PrivateBroker, Rig, data, free_port, path, unique, wait_until};
use portico::Phase;
use portico_gateways::kafka::Kafka;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};

/// Two tansu brokers on one SQLite database: `open` takes anyone, `guarded` wants a SCRAM
/// login (and advertises `advertised`, a TLS endpoint in front of it, or its own port). User
/// `gateway` with password `pa55` is made on the open one with `tansu user create`.
struct Brokers {
    open: PrivateBroker,
    guarded: PrivateBroker,
    _dir: tempfile::TempDir,
}

impl Brokers {
    async fn start(advertised: Option<u16>) -> Brokers {
        let dir = tempfile::tempdir().unwrap();
        let start = |args: Vec<String>| {
            let dir = dir.path().to_path_buf();
            async move {
                let mut all = vec![
                    "broker",
                    "--listener-url",
                    "tcp://127.0.0.1:{port}",
                    "--storage-engine",
                    "sqlite://tansu.db",
                ];
                all.extend(args.iter().map(String::as_str));
                PrivateBroker::start_in(broker_support::tansu(), &dir, &all).await
            }
        };
        let open = start(vec![
            "--advertised-listener-url".into(),
            "tcp://127.0.0.1:{port}".into(),
        ])
        .await;
        let advertised = match advertised {
            Some(p) => format!("tcp://127.0.0.1:{p}"),
            None => "tcp://127.0.0.1:{port}".to_string(),
        };
        let guarded = start(vec![
            "--advertised-listener-url".into(),
            advertised,
            "--authentication".into(),
        ])
        .await;
        // `tansu user create` exits 0 even when the broker could not store the user (it does
        // not read the error code of the answer; under load SQLite can be busy): the user is
        // made until a SCRAM login to the guarded broker works.
        let (open_port, guarded_port) = (open.port, guarded.port);
        wait_until("the SCRAM user `gateway` to log in", || async move {
            tokio::task::spawn_blocking(move || {
                let made = std::process::Command::new(broker_support::tansu())
                    .args(["user", "create", "--broker"])
                    .arg(format!("tcp://127.0.0.1:{open_port}"))
                    .args(["--mechanism", "scram256", "gateway", "pa55"])
                    .output()
                    .expect("tansu user create");
                assert!(made.status.success(), "tansu user create: {made:?}");
                logs_in(guarded_port).then_some(())
            })
            .await
            .unwrap()
        })
        .await;
        Brokers {
            open,
            guarded,
            _dir: dir,
        }
    }

    fn open(&self) -> String {
        format!("127.0.0.1:{}", self.open.port)
    }
}

/// Whether user `gateway` (password `pa55`) logs in to the guarded broker on `port` with
/// SCRAM-SHA-256: a metadata request, which the broker answers only after the login.
fn logs_in(port: u16) -> bool {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = match client(&format!("127.0.0.1:{port}"))
        .set("security.protocol", "SASL_PLAINTEXT")
        .set("sasl.mechanism", "SCRAM-SHA-256")
        .set("sasl.username", "gateway")
        .set("sasl.password", "pa55")
        .create()
    {
        Ok(c) => c,
        Err(_) => return false,
    };
    consumer
        .fetch_metadata(None, Duration::from_secs(5))
        .is_ok()
}

/// The test's own client of the open broker.
fn client(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("message.timeout.ms", "10000");
    c
}

async fn create_topic(config: &ClientConfig, topic: &str) {
    let admin: AdminClient<DefaultClientContext> = config.create().expect("an admin client");
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

/// Produces `value` to `topic` and gives how many records the topic then holds. The two
/// brokers share one SQLite database that neither waits on when it is busy, so a send can
/// fail with an unknown broker error while the other broker writes (a consumer group's join
/// or commit); such a send is tried again. A failed send stores nothing, and the count read
/// back from the broker keeps the test exact even if one did.
async fn produce(config: &ClientConfig, topic: &str, value: &str) -> usize {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let p: FutureProducer = config.create().expect("a producer");
    wait_until(&format!("a record to be produced to {topic}"), || {
        let p = &p;
        async move {
            let sent = p
                .send(
                    FutureRecord::<(), _>::to(topic).payload(value),
                    Duration::from_secs(10),
                )
                .await;
            sent.inspect_err(|(e, _)| eprintln!("produce to {topic}: {e}; trying again"))
                .ok()
        }
    })
    .await;
    let topic = topic.to_string();
    let reader: BaseConsumer = config.create().expect("a consumer");
    tokio::task::spawn_blocking(move || {
        let (low, high) = reader
            .fetch_watermarks(&topic, 0, Duration::from_secs(10))
            .expect("the topic's offsets");
        let held = usize::try_from(high - low).expect("a record count");
        assert!(
            held >= 1,
            "{topic} holds no record after a send was acknowledged"
        );
        held
    })
    .await
    .unwrap()
}

/// Waits until node `c` is in `Error` with a message containing `needle`; the message.
async fn error_saying(rig: &Rig, needle: &str) -> String {
    wait_until(&format!("an Error node saying `{needle}`"), || async {
        rig.node("c")
            .filter(|n| n.phase == Phase::Error && n.message.contains(needle))
            .map(|n| n.message)
    })
    .await
}

/// A TLS endpoint on a free port (a certificate for 127.0.0.1 signed by `pki`'s CA) that
/// forwards each connection to 127.0.0.1:`to`; runs until its task is aborted.
fn tls_front(
    pki: &Pki,
    port: u16,
    to: Arc<std::sync::atomic::AtomicU16>,
) -> tokio::task::JoinHandle<()> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (cert, key) = pki.issue("kafka", &["localhost", "127.0.0.1"]);
    let certs = CertificateDer::pem_file_iter(&cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let to = to.load(std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                // A client that refuses the certificate ends the handshake: nothing to do.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                if let Ok(mut plain) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                }
            });
        }
    })
}

fn config(bootstrap: &str, topic: &str, password: &std::path::Path, tls: &str) -> String {
    format!(
        "url: {bootstrap}\ntopic: {topic}\nconsumerGroup: {}\nstartOffset: oldest\n\
         sasl:\n  mechanism: SCRAM-SHA-256\n  user: gateway\n  passwordFile: {}\n{tls}",
        unique("g"),
        path(password)
    )
}

#[tokio::test]
async fn scram_logs_in_and_a_wrong_password_is_refused_unshown() {
    let b = Brokers::start(None).await;
    let topic = unique("secure");
    let producer = client(&b.open());
    create_topic(&producer, &topic).await;
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("password");
    std::fs::write(&password, "pa55\n").unwrap();
    let guarded = format!("127.0.0.1:{}", b.guarded.port);
    let mut rig = Rig::new("kafkasasl", "kafka", Arc::new(Kafka));
    rig.apply(&[("c", &config(&guarded, &topic, &password, ""))])
        .await;
    rig.wait_phase("c", Phase::Running).await;
    let stored = produce(&producer, &topic, "hello").await;
    let got = rig.exactly(stored, Duration::from_millis(200)).await;
    assert!(got.iter().all(|e| data(e) == "hello"), "{got:?}");

    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "not-it").unwrap();
    rig.apply(&[("c", &config(&guarded, &topic, &wrong, ""))])
        .await;
    let said = error_saying(&rig, "SASL").await;
    assert!(!said.contains("not-it") && !said.contains("pa55"), "{said}");
    rig.supervisor.stop_all().await;
}

#[tokio::test]
async fn scram_over_tls_with_the_right_ca_and_a_wrong_ca_refused() {
    let pki = Pki::new();
    let front = free_port();
    let behind = Arc::new(std::sync::atomic::AtomicU16::new(0));
    let b = Brokers::start(Some(front)).await;
    behind.store(b.guarded.port, std::sync::atomic::Ordering::SeqCst);
    let proxy = tls_front(&pki, front, behind);
    let topic = unique("tls");
    let producer = client(&b.open());
    create_topic(&producer, &topic).await;
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("password");
    std::fs::write(&password, "pa55\n").unwrap();
    let bootstrap = format!("127.0.0.1:{front}");
    let tls = |ca: &Pki| format!("tls:\n  caFile: {}", path(&ca.ca_file()));
    let mut rig = Rig::new("kafkatls", "kafka", Arc::new(Kafka));
    rig.apply(&[("c", &config(&bootstrap, &topic, &password, &tls(&pki)))])
        .await;
    rig.wait_phase("c", Phase::Running).await;
    let stored = produce(&producer, &topic, "over tls").await;
    let got = rig.exactly(stored, Duration::from_millis(200)).await;
    assert!(got.iter().all(|e| data(e) == "over tls"), "{got:?}");

    let other = Pki::new();
    rig.apply(&[("c", &config(&bootstrap, &topic, &password, &tls(&other)))])
        .await;
    let said = error_saying(&rig, "TLS").await;
    assert!(said.contains("certificate"), "{said}");
    rig.supervisor.stop_all().await;
    proxy.abort();
}

#[test]
fn settings_name_the_field() {
    let check = |yaml: &str| {
        portico::testing::parse_config::<portico_gateways::kafka::KafkaConfig>(yaml)
            .and_then(|c| c.check())
            .map(|_| ())
            .map_err(|e| e.message().to_string())
    };
    let base = "url: 127.0.0.1:9092\ntopic: t\nconsumerGroup: g\n";
    assert!(
        check(&format!(
            "{base}sasl: {{mechanism: PLAIN, user: u, passwordEnv: P}}"
        ))
        .is_ok()
    );
    let e = check(&format!("{base}sasl: {{mechanism: PLAIN, user: u}}")).unwrap_err();
    assert!(e.starts_with("sasl.passwordFile"), "{e}");
    let e = check(&format!(
        "{base}sasl: {{mechanism: GSSAPI, user: u, passwordEnv: P}}"
    ))
    .unwrap_err();
    assert!(e.contains("SCRAM-SHA-256"), "{e}");
    let e = check(&format!("{base}tls: {{serverName: kafka.test}}")).unwrap_err();
    assert!(e.starts_with("tls.serverName"), "{e}");
    let e = check(&format!("{base}tls: {{certFile: /c.pem}}")).unwrap_err();
    assert!(e.starts_with("tls.keyFile"), "{e}");
}
