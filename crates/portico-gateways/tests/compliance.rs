//! The compliance test every built-in gateway passes: `validate` rejects junk with a clear message naming what is wrong; start →
//! `Running` → events; a changed value restarts it and it works again; stopping leaves no
//! task, socket or port behind.
//!
//! It walks [`BUILTIN_TYPES`]: a new built-in gateway fails here until it adds its [`Case`].
//!
//! The broker gateways use the machine's shared brokers (NATS 4222, Redis 6379, Mosquitto
//! 1883, RabbitMQ 5672, PostgreSQL 5432) with subjects, channels, topics and exchanges of their
//! own (a uuid), and a private `tansu` for Kafka (see brokers_kafka.rs).

mod azurite_support;
mod broker_support;
mod common;
mod moto_support;
mod sftp_support;
mod sqs_support;

use std::path::PathBuf;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use broker_support::{PrivateBroker, unique};
use common::{data, free_port, map, port_is_free, wait_until};
use moto_support::Moto;
use portico::Phase;
use portico::testing::Harness;
use portico_gateways::webhook::sign_hmac_sha256;
use portico_gateways::{BUILTIN_TYPES, builtin};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;

const WAIT: Duration = Duration::from_secs(10);

/// How to make a configuration produce an event.
enum Trigger {
    /// It produces events by itself (calendar).
    Wait,
    /// POST `body` with `headers` to the URL.
    Post {
        headers: Vec<(&'static str, String)>,
        body: &'static str,
    },
    /// Write a file in the directory.
    WriteFile,
    /// Create an object in the fake Kubernetes API server.
    CreateObject,
    /// Publish one JSON message to the value's [`Value::topic`] on the broker.
    Publish(Broker),
    /// Put an object in the bucket named by the value's [`Value::topic`] on moto (S3 and
    /// SQS), whose notifications go to the configuration's queue.
    PutObject(Arc<Moto>),
    /// Send one JSON message to the SQS queue whose URL is the value's [`Value::topic`] on
    /// moto (in message group `compliance` for a FIFO queue).
    SendMessage(Arc<Moto>),
    /// Change the body the case's [`PollServer`] serves (the `http-poll` case polls it).
    ChangeBody(Arc<PollServer>),
    /// `NOTIFY` the channel named by the value's [`Value::topic`] with [`PAYLOAD`], through a
    /// PostgreSQL client of its own on [`CLIENTS`].
    Notify,
    /// Write a JSON file (named after the round) into the directory of the case's private
    /// `sshd`, which the `sftp` case lists.
    WriteSftp(sftp_support::Sshd),
    /// Send one JSON message to the Azurite queue named by the value's [`Value::topic`].
    SendAzureMessage(Arc<azurite_support::Azurite>),
    /// Upload a blob (named after the round) to the Azurite container named by the value's
    /// [`Value::topic`].
    PutBlob(Arc<azurite_support::Azurite>),
}

/// The broker a [`Trigger::Publish`] publishes to.
enum Broker {
    /// The shared NATS server (core subject).
    Nats,
    /// The shared Redis server (pub/sub channel).
    Redis,
    /// The shared Mosquitto (topic, with `mosquitto_pub`).
    Mqtt,
    /// The shared RabbitMQ, to this exchange (the value's topic is the routing key).
    Amqp { exchange: String },
    /// The case's private tansu (the value's topic is the Kafka topic).
    Kafka,
}

const NATS_URL: &str = "nats://127.0.0.1:4222";
const REDIS_URL: &str = "redis://127.0.0.1:6379";
const MQTT_URL: &str = "mqtt://127.0.0.1:1883";
const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const POSTGRES_URL: &str = "postgres://root@127.0.0.1:5432/test";
/// The gateway's AMQP URL, with a short heartbeat: lapin's heartbeat task (and the RPC task it
/// keeps alive) notices a closed connection only when it next wakes up, one heartbeat
/// interval later (RabbitMQ proposes 60 s). With 2 s they are gone well within the wait
/// below; the check itself stays as strict as for every other gateway.
const AMQP_GATEWAY_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f?heartbeat=2";
const PAYLOAD: &str = r#"{"compliance": true}"#;

/// A fake Kubernetes API server (crates/fake-kube) and a client of it, both on their own
/// runtime so that their tasks are not counted as the gateway's.
struct KubeFixture {
    rt: Option<tokio::runtime::Runtime>,
    fake: fake_kube::FakeKube,
    client: kube::Client,
}

impl KubeFixture {
    fn start() -> KubeFixture {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (fake, client) = rt.block_on(async {
            let fake = fake_kube::FakeKube::start().await;
            fake.disable_keep_alive();
            let client = fake.client();
            (fake, client)
        });
        KubeFixture {
            rt: Some(rt),
            fake,
            client,
        }
    }
}

impl Drop for KubeFixture {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// The HTTP server the `http-poll` case polls, on a loopback port 0 and its own runtime (so
/// that its tasks are not counted as the gateway's; its listener exists before the baseline
/// of sockets, and the connections it accepts close when the gateway's client goes). It
/// serves `{"version": n}` on every path, with `ETag: "n"`, and `304 Not Modified` to a
/// matching `If-None-Match`; [`PollServer::change`] moves `n` on.
struct PollServer {
    rt: Option<tokio::runtime::Runtime>,
    addr: std::net::SocketAddr,
    version: Arc<std::sync::atomic::AtomicU64>,
}

impl PollServer {
    fn start() -> Arc<PollServer> {
        use axum::http::{HeaderMap, StatusCode, header};
        use axum::response::IntoResponse;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let version = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let served = version.clone();
        let app = axum::Router::new().fallback(axum::routing::get(move |headers: HeaderMap| {
            let n = served.load(std::sync::atomic::Ordering::SeqCst);
            let etag = format!("\"{n}\"");
            async move {
                if headers
                    .get(header::IF_NONE_MATCH)
                    .is_some_and(|h| h.as_bytes() == etag.as_bytes())
                {
                    return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
                }
                let headers = [
                    (header::CONTENT_TYPE, "application/json".to_string()),
                    (header::ETAG, etag),
                ];
                (headers, format!("{{\"version\": {n}}}")).into_response()
            }
        }));
        let addr = rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            });
            addr
        });
        Arc::new(PollServer {
            rt: Some(rt),
            addr,
            version,
        })
    }

    /// A new body (and ETag) from now on.
    fn change(&self) {
        self.version
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for PollServer {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// The `http-poll` case: a [`PollServer`] polled every second, whose body changes on each
/// trigger.
fn http_poll_case(dir: tempfile::TempDir) -> Case {
    let server = PollServer::start();
    let base = format!("url: http://{}", server.addr);
    let secret = dir.path().join("secret");
    Case {
        junk: vec![
            ("interval: 1s".into(), "url"),
            ("url: ftp://127.0.0.1/x\ninterval: 1s".into(), "url"),
            (format!("{base}/x"), "interval"),
            (format!("{base}/x\ninterval: 10ms"), "interval"),
            (format!("{base}/x\ninterval: 1s\ntimeout: never"), "timeout"),
            (format!("{base}/x\ninterval: 1s\nemit: sometimes"), "emit"),
            (
                format!("{base}/x\ninterval: 1s\nheaders: {{'bad name': x}}"),
                "headers",
            ),
            (
                format!("{base}/x\ninterval: 1s\nauthHeader: X-Key"),
                "authHeader",
            ),
            (
                format!(
                    "{base}/x\ninterval: 1s\nauthSecretFile: {}\nauthSecretEnv: X",
                    secret.display()
                ),
                "authSecretEnv",
            ),
            ("bogusField: 1".to_string(), "bogusField"),
            ("[not: yaml".to_string(), ""),
        ],
        valid: Value::plain(&format!("{base}/one\ninterval: 1s")),
        changed: Value::plain(&format!(
            "{base}/two\ninterval: 1s\ntimeout: 5s\nheaders: {{Accept: application/json}}\nauthHeader: X-Compliance-Token\nauthSecretFile: {}",
            secret.display()
        )),
        trigger: Trigger::ChangeBody(server),
        kube: None,
        tansu: None,
        _dir: dir,
    }
}

/// The `sftp` case: a private `sshd` (a child process, started before the baseline of tasks
/// and sockets is taken; its sockets are not this process's) listed every second.
fn sftp_case(dir: tempfile::TempDir) -> Case {
    let sshd = sftp_support::Sshd::start();
    let base = format!(
        "address: 127.0.0.1:{}\nuser: {}\ndirectory: {}\nprivateKeyFile: {}\nhostKey: {}\ninterval: 1s",
        sshd.port,
        sshd.user,
        sshd.files.display(),
        sshd.client_key.display(),
        sshd.host_key,
    );
    let state = |name: &str| format!("stateFile: {}", dir.path().join(name).display());
    let key = format!("hostKey: {}", sshd.host_key);
    Case {
        junk: vec![
            ("user: u\ndirectory: /d".into(), "address"),
            (base.replace("127.0.0.1:", "127.0.0.1:x"), "address"),
            (base.replace(&key, ""), "hostKey"),
            (
                base.replace(&key, "hostKey: ssh-ed25519 nonsense"),
                "hostKey",
            ),
            (format!("{base}\ninterval: 10ms"), "interval"),
            (format!("{base}\nafterAccept: move"), "moveTo"),
            (format!("{base}\nafterAccept: shred"), "afterAccept"),
            (format!("{base}\nmaxFileSize: huge"), "maxFileSize"),
            (format!("{base}\npasswordEnv: P"), "password"),
            ("bogusField: 1".to_string(), "bogusField"),
            ("[not: yaml".to_string(), ""),
        ],
        valid: Value::plain(&format!("{base}\n{}", state("one.json"))),
        changed: Value::plain(&format!(
            "{base}\n{}\npattern: '*.json'\nafterAccept: delete",
            state("two.json")
        )),
        trigger: Trigger::WriteSftp(sshd),
        kube: None,
        tansu: None,
        _dir: dir,
    }
}

/// The `azure-queue` and `azure-blob` cases: Azurite (a child process, started before the
/// baseline of tasks and sockets is taken), a queue or container per value.
fn azure_case(gateway_type: &str, dir: tempfile::TempDir) -> Case {
    let azurite = azurite_support::Azurite::shared();
    let connection = dir.path().join("connection");
    std::fs::write(&connection, azurite.connection_string()).unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, azurite_support::KEY).unwrap();
    let blob = gateway_type == "azure-blob";
    let (one, two) = (
        azurite_support::unique("compliance"),
        azurite_support::unique("compliance"),
    );
    for name in [&one, &two] {
        if blob {
            azurite.create_container(name);
        } else {
            azurite.create_queue(name);
        }
    }
    let (field, endpoint) = if blob {
        ("container", &azurite.blob_url)
    } else {
        ("queue", &azurite.queue_url)
    };
    let state = |name: &str| {
        if blob {
            format!("\nstateFile: {}", dir.path().join(name).display())
        } else {
            String::new()
        }
    };
    let fast = if blob {
        "interval: 1s"
    } else {
        "pollInterval: 100ms"
    };
    let mut junk = vec![
        ("connectionStringEnv: X".to_string(), field),
        (format!("{field}: Not_A_Name"), field),
        (format!("{field}: abc\naccountKeyEnv: K"), "account"),
        (format!("{field}: abc\naccount: abc"), "accountKey"),
        (
            format!("{field}: abc\naccountKeyEnv: K\nsasTokenEnv: S\naccount: abc"),
            "sasToken",
        ),
        (
            format!("{field}: abc\naccount: abc\naccountKeyEnv: K\nendpoint: ftp://x"),
            "endpoint",
        ),
        ("bogusField: 1".to_string(), "bogusField"),
        ("[not: yaml".to_string(), ""),
    ];
    if blob {
        junk.push((format!("{field}: abc\ninterval: 10ms"), "interval"));
        junk.push((format!("{field}: abc\nevents: [renamed]"), "renamed"));
    } else {
        junk.push((format!("{field}: abc\nmaxMessages: 33"), "maxMessages"));
        junk.push((
            format!("{field}: abc\nvisibilityTimeout: 8d"),
            "visibilityTimeout",
        ));
    }
    Case {
        junk,
        valid: Value::broker(
            format!(
                "{field}: {one}\n{fast}\nconnectionStringFile: {}{}",
                connection.display(),
                state("one.json")
            ),
            one,
        ),
        changed: Value::broker(
            format!(
                "{field}: {two}\n{fast}\nendpoint: {endpoint}\naccountKeyFile: {}{}",
                key.display(),
                state("two.json")
            ),
            two,
        ),
        trigger: if blob {
            Trigger::PutBlob(azurite)
        } else {
            Trigger::SendAzureMessage(azurite)
        },
        kube: None,
        tansu: None,
        _dir: dir,
    }
}

/// One configuration value and where it listens (URL or directory), if anywhere.
struct Value {
    text: String,
    url: Option<String>,
    ports: Vec<u16>,
    directory: Option<PathBuf>,
    /// Where a [`Trigger::Publish`] publishes for this value (subject, channel, topic,
    /// routing key).
    topic: Option<String>,
}

impl Value {
    fn plain(text: &str) -> Value {
        Value {
            text: text.to_string(),
            url: None,
            ports: Vec::new(),
            directory: None,
            topic: None,
        }
    }

    /// A broker configuration `text` that receives what is published to `topic`.
    fn broker(text: String, topic: String) -> Value {
        Value {
            text,
            url: None,
            ports: Vec::new(),
            directory: None,
            topic: Some(topic),
        }
    }
}

/// What one gateway type is tested with.
struct Case {
    /// Values `validate` must reject, each with a word its message must contain.
    junk: Vec<(String, &'static str)>,
    /// A value that runs and produces events.
    valid: Value,
    /// Another one, for the restart.
    changed: Value,
    trigger: Trigger,
    /// The Kubernetes API the gateway talks to, if any.
    kube: Option<KubeFixture>,
    /// The private Kafka broker, if any: started before the baseline of tasks and sockets is
    /// taken, and alive until the case ends.
    tansu: Option<PrivateBroker>,
    /// Kept alive for the case (temporary files).
    _dir: tempfile::TempDir,
}

fn hook_value(port: u16, endpoint: &str, extra: &str) -> Value {
    Value {
        text: format!("port: {port}\nendpoint: {endpoint}\n{extra}"),
        url: Some(format!("http://127.0.0.1:{port}{endpoint}")),
        ports: vec![port],
        directory: None,
        topic: None,
    }
}

fn case(gateway_type: &str) -> Option<Case> {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "compliance-secret\n").unwrap();
    let secret_line = format!("secretFile: {}", secret.display());
    let common_junk = |mut v: Vec<(String, &'static str)>| {
        v.push(("bogusField: 1".to_string(), "bogusField"));
        v.push(("[not: yaml".to_string(), ""));
        v
    };
    Some(match gateway_type {
        "calendar" => Case {
            junk: common_junk(vec![
                ("schedule: 'now and then'".into(), "schedule"),
                ("interval: soon".into(), "interval"),
                ("{}".into(), "schedule"),
            ]),
            valid: Value::plain("interval: 50ms"),
            changed: Value::plain("interval: 60ms\nuserPayload: {changed: true}"),
            trigger: Trigger::Wait,
            kube: None,
            tansu: None,
            _dir: dir,
        },
        "webhook" => Case {
            junk: common_junk(vec![
                (
                    "endpoint: /x\nserverCertPath: c\nserverKeyPath: k".into(),
                    "port",
                ),
                ("port: 0\nendpoint: /x".into(), "port"),
                ("port: 8080\nendpoint: x".into(), "endpoint"),
                (
                    "port: 8080\nendpoint: /x\nmaxBodySize: huge".into(),
                    "maxBodySize",
                ),
            ]),
            valid: hook_value(free_port(), "/compliance", ""),
            changed: hook_value(free_port(), "/changed", "method: PUT"),
            trigger: Trigger::Post {
                headers: Vec::new(),
                body: r#"{"compliance": true}"#,
            },
            kube: None,
            tansu: None,
            _dir: dir,
        },
        "github" => {
            let body = r#"{"zen": "Keep it logically awesome."}"#;
            Case {
                junk: common_junk(vec![
                    ("port: 8080\nendpoint: /x".into(), "secret"),
                    (format!("port: 70000\nendpoint: /x\n{secret_line}"), "port"),
                    (
                        format!("port: 8080\nendpoint: /x\n{secret_line}\nsecretEnv: X"),
                        "secretEnv",
                    ),
                ]),
                valid: hook_value(free_port(), "/github", &secret_line),
                changed: hook_value(
                    free_port(),
                    "/github",
                    &format!("{secret_line}\nevents: [ping]"),
                ),
                trigger: Trigger::Post {
                    headers: vec![
                        ("x-github-event", "ping".to_string()),
                        (
                            "x-hub-signature-256",
                            sign_hmac_sha256(b"compliance-secret", body.as_bytes()),
                        ),
                    ],
                    body,
                },
                kube: None,
                tansu: None,
                _dir: dir,
            }
        }
        "gitlab" => Case {
            junk: common_junk(vec![
                ("port: 8080\nendpoint: /x".into(), "secret"),
                (format!("port: 8080\n{secret_line}"), "endpoint"),
                (
                    format!("port: 8080\nendpoint: /x\n{secret_line}\nevents: ['']"),
                    "events[0]",
                ),
            ]),
            valid: hook_value(free_port(), "/gitlab", &secret_line),
            changed: hook_value(
                free_port(),
                "/gitlab",
                &format!("{secret_line}\nevents: [push]"),
            ),
            trigger: Trigger::Post {
                headers: vec![
                    ("x-gitlab-event", "Push Hook".to_string()),
                    ("x-gitlab-token", "compliance-secret".to_string()),
                ],
                body: r#"{"object_kind": "push"}"#,
            },
            kube: None,
            tansu: None,
            _dir: dir,
        },
        "file" => {
            let (one, two) = (dir.path().join("one"), dir.path().join("two"));
            std::fs::create_dir(&one).unwrap();
            std::fs::create_dir(&two).unwrap();
            let value = |d: &PathBuf, extra: &str| Value {
                text: format!("directory: {}\n{extra}", d.display()),
                url: None,
                ports: Vec::new(),
                directory: Some(d.clone()),
                topic: None,
            };
            Case {
                junk: common_junk(vec![
                    ("path: '*.txt'".into(), "directory"),
                    ("directory: relative/dir".into(), "directory"),
                    ("directory: /tmp\ntype: EXPLODE".into(), "type"),
                    ("directory: /tmp\npath: 'a[b'".into(), "path"),
                ]),
                valid: value(&one, ""),
                changed: value(&two, "type: CREATE\npath: '*.txt'"),
                trigger: Trigger::WriteFile,
                kube: None,
                tansu: None,
                _dir: dir,
            }
        }
        "resource" => {
            let widgets = "group: example.com\nversion: v1\nkind: Widget\nnamespace: ns\n";
            Case {
                junk: common_junk(vec![
                    ("kind: Widget".into(), "version"),
                    ("version: v1".into(), "kind"),
                    ("eventTypes: [EXPLODE]".into(), "EXPLODE"),
                ]),
                valid: Value::plain(widgets),
                changed: Value::plain(&format!(
                    "{widgets}eventTypes: [ADD]\nfilter: {{prefix: compliance-}}\n"
                )),
                trigger: Trigger::CreateObject,
                kube: Some(KubeFixture::start()),
                tansu: None,
                _dir: dir,
            }
        }
        "nats" => {
            let (one, two) = (unique("portico.compliance."), unique("portico.compliance."));
            let url = format!("url: {NATS_URL}");
            Case {
                junk: common_junk(vec![
                    ("subject: a".into(), "url"),
                    ("url: http://127.0.0.1:4222\nsubject: a".into(), "url"),
                    (url.clone(), "subject"),
                    (format!("{url}\nsubject: 'a b'"), "subject"),
                    (format!("{url}\nsubject: a\ndurable: d"), "stream"),
                    (format!("{url}\nsubject: a\nstream: s"), "durable"),
                    (
                        format!("{url}\nsubject: a\nstream: s\ndurable: d\nqueue: q"),
                        "queue",
                    ),
                ]),
                valid: Value::broker(format!("{url}\nsubject: {one}"), one),
                changed: Value::broker(
                    format!("{url}\nsubject: '{two}.>'\nqueue: {}", unique("q")),
                    format!("{two}.x"),
                ),
                trigger: Trigger::Publish(Broker::Nats),
                kube: None,
                tansu: None,
                _dir: dir,
            }
        }
        "redis" => {
            let (one, two) = (unique("portico:compliance:"), unique("portico:compliance:"));
            let url = format!("url: {REDIS_URL}");
            Case {
                junk: common_junk(vec![
                    ("channels: [a]".into(), "url"),
                    ("url: http://127.0.0.1:6379\nchannels: [a]".into(), "url"),
                    (url.clone(), "channels"),
                    (format!("{url}\nchannels: ['']"), "channels[0]"),
                    (format!("{url}\nchannels: [a]\nstream: s"), "stream"),
                    (format!("{url}\nstream: s"), "consumerGroup"),
                    (
                        format!("{url}\nstream: s\nconsumerGroup: g\nreclaimAfter: soon"),
                        "reclaimAfter",
                    ),
                ]),
                valid: Value::broker(format!("{url}\nchannels: ['{one}']"), one),
                changed: Value::broker(format!("{url}\nchannels: ['{two}:*']"), format!("{two}:x")),
                trigger: Trigger::Publish(Broker::Redis),
                kube: None,
                tansu: None,
                _dir: dir,
            }
        }
        "postgres" => {
            let (one, two) = (unique("portico_compliance_"), unique("portico_compliance_"));
            let url = format!("url: {POSTGRES_URL}");
            Case {
                junk: common_junk(vec![
                    ("channels: [a]".into(), "url"),
                    (
                        "url: http://root@127.0.0.1/test\nchannels: [a]".into(),
                        "url",
                    ),
                    (
                        "url: postgres://127.0.0.1/test\nchannels: [a]".into(),
                        "url",
                    ),
                    (
                        "url: postgres://root:pw@127.0.0.1/test\nchannels: [a]".into(),
                        "url",
                    ),
                    (url.clone(), "channels"),
                    (format!("{url}\nchannels: []"), "channels"),
                    (format!("{url}\nchannels: ['']"), "channels[0]"),
                    (
                        format!("{url}\nchannels: [a]\npasswordEnv: ''"),
                        "passwordEnv",
                    ),
                    (
                        format!("{url}\nchannels: [a]\npassword: {{name: s, key: ''}}"),
                        "password.key",
                    ),
                ]),
                valid: Value::broker(format!("{url}\nchannels: [{one}]"), one),
                changed: Value::broker(
                    format!(
                        "url: postgres://postgres@127.0.0.1:5432/test\nchannels: [{two}, other_{two}]\n{}",
                        secret_line.replace("secretFile", "passwordFile")
                    ),
                    two,
                ),
                trigger: Trigger::Notify,
                kube: None,
                tansu: None,
                _dir: dir,
            }
        }
        "mqtt" => {
            let (one, two) = (unique("portico/compliance/"), unique("portico/compliance/"));
            let url = format!("url: {MQTT_URL}");
            Case {
                junk: common_junk(vec![
                    ("topic: t\nclientId: c".into(), "url"),
                    (
                        "url: http://127.0.0.1:1883\ntopic: t\nclientId: c".into(),
                        "url",
                    ),
                    (format!("{url}\nclientId: c"), "topic"),
                    (format!("{url}\ntopic: t"), "clientId"),
                    (format!("{url}\ntopic: t\nclientId: c\nqos: 2"), "qos"),
                ]),
                valid: Value::broker(
                    format!("{url}\ntopic: '{one}'\nclientId: {}", unique("c")),
                    one,
                ),
                changed: Value::broker(
                    format!("{url}\ntopic: '{two}/+'\nclientId: {}\nqos: 1", unique("c")),
                    format!("{two}/x"),
                ),
                trigger: Trigger::Publish(Broker::Mqtt),
                kube: None,
                tansu: None,
                _dir: dir,
            }
        }
        "amqp" => {
            amqp_warm_up();
            let exchange = unique("portico.compliance.");
            let url = format!("url: '{AMQP_GATEWAY_URL}'");
            let base = format!("{url}\nexchangeName: {exchange}\nexchangeType: topic");
            Case {
                junk: common_junk(vec![
                    (
                        "exchangeName: x\nexchangeType: topic\nroutingKey: k".into(),
                        "url",
                    ),
                    (
                        "url: http://127.0.0.1:5672\nexchangeName: x\nexchangeType: topic\n\
                         routingKey: k"
                            .into(),
                        "url",
                    ),
                    (
                        format!("{url}\nexchangeType: topic\nroutingKey: k"),
                        "exchangeName",
                    ),
                    (
                        format!("{url}\nexchangeName: x\nexchangeType: sideways\nroutingKey: k"),
                        "exchangeType",
                    ),
                    (
                        format!("{url}\nexchangeName: x\nexchangeType: topic"),
                        "routingKey",
                    ),
                ]),
                valid: Value::broker(format!("{base}\nroutingKey: one"), "one".into()),
                changed: Value::broker(format!("{base}\nroutingKey: 'two.#'"), "two.x".into()),
                trigger: Trigger::Publish(Broker::Amqp { exchange }),
                kube: None,
                tansu: None,
                _dir: dir,
            }
        }
        "kafka" => {
            let (one, two) = (unique("compliance"), unique("compliance"));
            let tansu = start_tansu(&[&one, &two]);
            let url = format!("url: 127.0.0.1:{}", tansu.port);
            let value = |topic: &str| {
                Value::broker(
                    format!(
                        "{url}\ntopic: {topic}\nconsumerGroup: {}\nstartOffset: oldest",
                        unique("g")
                    ),
                    topic.to_string(),
                )
            };
            Case {
                junk: common_junk(vec![
                    ("topic: t\nconsumerGroup: g".into(), "url"),
                    ("url: http://host\ntopic: t\nconsumerGroup: g".into(), "url"),
                    (format!("{url}\nconsumerGroup: g"), "topic"),
                    (format!("{url}\ntopic: t"), "consumerGroup"),
                    (
                        format!("{url}\ntopic: t\nconsumerGroup: g\npartition: -1"),
                        "partition",
                    ),
                    (
                        format!("{url}\ntopic: t\nconsumerGroup: g\nstartOffset: middle"),
                        "startOffset",
                    ),
                ]),
                valid: value(&one),
                changed: value(&two),
                trigger: Trigger::Publish(Broker::Kafka),
                kube: None,
                tansu: Some(tansu),
                _dir: dir,
            }
        }
        "artifact" => {
            let moto = Moto::shared();
            let access = dir.path().join("access");
            std::fs::write(&access, "compliance\n").unwrap();
            let keys = format!(
                "accessKeyFile: {}\nsecretKeyFile: {}",
                access.display(),
                secret.display()
            );
            let value = |extra: &str| {
                let bucket = moto_support::unique("compliance");
                let queue_url = moto.setup(&bucket, &moto_support::unique("compliance"), 30);
                Value::broker(
                    format!(
                        "queueUrl: {queue_url}\nregion: us-east-1\nwaitTime: 1s\n{keys}\n{extra}"
                    ),
                    bucket,
                )
            };
            Case {
                junk: common_junk(vec![
                    ("region: us-east-1".into(), "queueUrl"),
                    ("queueUrl: ftp://127.0.0.1/q\nregion: r".into(), "queueUrl"),
                    ("queueUrl: https://queue.amazonaws.com/1/q".into(), "region"),
                    (
                        "queueUrl: http://127.0.0.1:1/1/q\nregion: r\nwaitTime: 1h".into(),
                        "waitTime",
                    ),
                    (
                        "s3EventConfig: {endpoint: 'minio:9000', bucket: b}\ninsecure: true".into(),
                        "queue",
                    ),
                ]),
                valid: value(""),
                changed: value("events: ['s3:ObjectCreated:*']\nfilter: {suffix: .txt}"),
                trigger: Trigger::PutObject(moto.clone()),
                kube: None,
                tansu: None,
                _dir: dir,
            }
        }
        "sqs" => {
            let moto = Moto::shared();
            let access = dir.path().join("access");
            std::fs::write(&access, "compliance\n").unwrap();
            let keys = format!(
                "accessKeyFile: {}\nsecretKeyFile: {}",
                access.display(),
                secret.display()
            );
            let one = sqs_support::create_queue(&moto, &moto_support::unique("compliance"), 30);
            let fifo = format!("{}.fifo", moto_support::unique("compliance"));
            let two = sqs_support::create_queue(&moto, &fifo, 30);
            let q = "queueUrl: http://127.0.0.1:1/1/q";
            Case {
                junk: common_junk(vec![
                    ("region: us-east-1".into(), "queueUrl"),
                    ("queueUrl: ftp://127.0.0.1/q".into(), "queueUrl"),
                    (format!("{q}\nqueue: q"), "queue"),
                    (format!("{q}\nwaitTime: 1h"), "waitTime"),
                    (format!("{q}\nmaxMessages: 11"), "maxMessages"),
                    (format!("{q}\nvisibilityTimeout: 1d"), "visibilityTimeout"),
                    (
                        format!("{q}\nattributeNames: [Colour]"),
                        "attributeNames[0]",
                    ),
                ]),
                valid: Value::broker(format!("queueUrl: {one}\nwaitTime: 1s\n{keys}"), one),
                changed: Value::broker(
                    format!(
                        "queue: {fifo}\nendpoint: {}\nwaitTime: 1s\nmaxMessages: 1\nvisibilityTimeout: 10s\n{keys}",
                        moto.url
                    ),
                    two,
                ),
                trigger: Trigger::SendMessage(moto.clone()),
                kube: None,
                tansu: None,
                _dir: dir,
            }
        }
        "storagegrid" => Case {
            junk: common_junk(vec![
                ("endpoint: /x".into(), "port"),
                ("port: 0\nendpoint: /x".into(), "port"),
                ("port: 8080\nendpoint: x".into(), "endpoint"),
                ("port: 8080\nendpoint: /x\nevents: ['']".into(), "events"),
                (
                    "port: 8080\nendpoint: /x\nmaxBodySize: huge".into(),
                    "maxBodySize",
                ),
            ]),
            valid: hook_value(free_port(), "/storagegrid", ""),
            changed: hook_value(free_port(), "/changed", "events: [ObjectCreated:Put]"),
            trigger: Trigger::Post {
                headers: vec![(
                    "content-type",
                    "application/x-www-form-urlencoded".to_string(),
                )],
                body: STORAGEGRID_PUBLISH,
            },
            kube: None,
            tansu: None,
            _dir: dir,
        },
        "slack" | "stripe" | "bitbucket" | "gerrit" => saas_case(gateway_type, dir, &secret_line),
        // Unsigned (an emulator's): the signatures are tested in sns.rs.
        "sns" => Case {
            junk: common_junk(vec![
                ("port: 0\nendpoint: /x".into(), "port"),
                ("port: 8080\nendpoint: x".into(), "endpoint"),
                (
                    "port: 8080\nendpoint: /x\ntopicArns: [orders]".into(),
                    "topicArns[0]",
                ),
                (
                    "port: 8080\nendpoint: /x\nallowedHosts: ['a b']".into(),
                    "allowedHosts[0]",
                ),
                ("port: 8080\nendpoint: /x\nsecretEnv: S".into(), "secretEnv"),
            ]),
            valid: hook_value(free_port(), "/sns", "verifySignature: false"),
            changed: hook_value(
                free_port(),
                "/changed",
                "verifySignature: false\ntopicArns: ['arn:aws:sns:us-east-1:123456789012:compliance']",
            ),
            trigger: Trigger::Post {
                headers: vec![("x-amz-sns-message-type", "Notification".to_string())],
                body: SNS_NOTIFICATION,
            },
            kube: None,
            tansu: None,
            _dir: dir,
        },
        "http-poll" => http_poll_case(dir),
        "sftp" => sftp_case(dir),
        "azure-queue" | "azure-blob" => azure_case(gateway_type, dir),
        _ => return None,
    })
}

/// A SaaS webhook type's case: a delivery signed (or authenticated) as its provider does,
/// with an event type the changed configuration keeps.
fn saas_case(gateway_type: &str, dir: tempfile::TempDir, secret_line: &str) -> Case {
    use portico_gateways::saas::{sign_slack, sign_stripe, unix_now};
    let secret = b"compliance-secret";
    let (body, kept, headers): (&'static str, &str, Vec<(&'static str, String)>) =
        match gateway_type {
            "slack" => {
                let body = r#"{"type": "event_callback", "event": {"type": "app_mention"}}"#;
                let (ts, sig) = sign_slack(secret, unix_now(), body.as_bytes());
                let headers = vec![
                    ("x-slack-request-timestamp", ts),
                    ("x-slack-signature", sig),
                ];
                (body, "app_mention", headers)
            }
            "stripe" => {
                let body = r#"{"type": "invoice.paid"}"#;
                let sig = sign_stripe(secret, unix_now(), body.as_bytes());
                (body, "invoice.paid", vec![("stripe-signature", sig)])
            }
            "bitbucket" => {
                let body = r#"{"push": {"changes": []}}"#;
                let headers = vec![
                    ("x-event-key", "repo:push".to_string()),
                    ("x-hub-signature", sign_hmac_sha256(secret, body.as_bytes())),
                ];
                (body, "repo:push", headers)
            }
            _ => {
                let body = r#"{"type": "change-merged"}"#;
                let headers = vec![("authorization", "Bearer compliance-secret".to_string())];
                (body, "change-merged", headers)
            }
        };
    let mut junk = vec![
        ("port: 8080\nendpoint: /x".to_string(), "secret"),
        (
            format!("port: 8080\nendpoint: x\n{secret_line}"),
            "endpoint",
        ),
        (
            format!("port: 8080\nendpoint: /x\n{secret_line}\nregister: {{}}"),
            "register",
        ),
        ("bogusField: 1".to_string(), "bogusField"),
        ("[not: yaml".to_string(), ""),
    ];
    if matches!(gateway_type, "slack" | "stripe") {
        junk.push((
            format!("port: 8080\nendpoint: /x\n{secret_line}\ntolerance: forever"),
            "tolerance",
        ));
    } else {
        junk.push((
            format!("port: 8080\nendpoint: /x\n{secret_line}\ntolerance: 1m"),
            "tolerance",
        ));
    }
    let endpoint = format!("/{gateway_type}");
    Case {
        junk,
        valid: hook_value(free_port(), &endpoint, secret_line),
        changed: hook_value(
            free_port(),
            &endpoint,
            &format!("{secret_line}\nevents: ['{kept}']"),
        ),
        trigger: Trigger::Post { headers, body },
        kube: None,
        tansu: None,
        _dir: dir,
    }
}

/// StorageGRID's SNS `Publish` of an S3 notification (`Message` URL-encoded JSON).
const STORAGEGRID_PUBLISH: &str = "Action=Publish&Message=%7B%22Records%22%3A%5B%7B%22eventName%22%3A%22ObjectCreated%3APut%22%2C%22s3%22%3A%7B%22bucket%22%3A%7B%22name%22%3A%22b%22%7D%2C%22object%22%3A%7B%22key%22%3A%22k%22%7D%7D%7D%5D%7D&TopicArn=urn%3Asgws%3Asns%3A%3Atopic&Version=2010-03-31";

/// An SNS notification of topic `compliance`, unsigned.
const SNS_NOTIFICATION: &str = r#"{"Type": "Notification", "MessageId": "c-1", "TopicArn": "arn:aws:sns:us-east-1:123456789012:compliance", "Message": "{\"compliance\": true}", "Timestamp": "2026-01-01T00:00:00.000Z"}"#;

/// The tansu binary (`scripts/test` installs it and sets `PORTICO_TANSU`).
fn tansu() -> String {
    std::env::var("PORTICO_TANSU").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_default();
        let default = format!("{home}/.cargo/bin/tansu");
        assert!(
            std::path::Path::new(&default).exists(),
            "the kafka compliance case needs the tansu broker: run scripts/test (it installs \
             it), or `cargo install tansu --version 0.6.0 --locked --features dynostore,libsql` and set PORTICO_TANSU"
        );
        default
    })
}

/// A private tansu on a free port with `topics` created (by a client on [`CLIENTS`]).
fn start_tansu(topics: &[&str]) -> PrivateBroker {
    CLIENTS.block_on(async {
        let b = PrivateBroker::start(
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
        .await;
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", format!("127.0.0.1:{}", b.port))
            .create()
            .unwrap();
        let new: Vec<NewTopic> = topics
            .iter()
            .map(|t| NewTopic::new(t, 1, TopicReplication::Fixed(1)))
            .collect();
        let created = common::wait_until(Duration::from_secs(20), || async {
            admin
                .create_topics(&new, &AdminOptions::new())
                .await
                .is_ok_and(|r| {
                    r.iter().all(|r| {
                        matches!(r, Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)))
                    })
                })
        })
        .await;
        assert!(created, "kafka: topics {topics:?} not created on tansu");
        b
    })
}

/// The runtime the broker clients of the test (publishers, Kafka admin) run on: not the
/// gateway's, so their tasks are not counted as the gateway's. It lives for the whole test
/// and exists before the first baseline ([`every_builtin_gateway_complies`] forces it),
/// because a runtime holds a socket of its own (tokio's signal driver).
static CLIENTS: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
});

/// Runs `publish` on [`CLIENTS`] and waits for it.
async fn on_clients_runtime(what: String, publish: impl Future<Output = ()> + Send + 'static) {
    if let Err(e) = CLIENTS.spawn(publish).await {
        panic!("{what}: publishing failed: {e}");
    }
}

/// Connects to RabbitMQ once from [`CLIENTS`] and closes the connection, before the baseline
/// is taken. Observed: the first lapin connection of the process leaves one socket open for
/// good (still there 100 s after stop); later connections leave nothing (after this warm-up
/// the gateway's two connections and the two publishers' come and go without a trace), so it
/// is lapin's once-per-process state, not a socket the gateway leaks per configuration.
fn amqp_warm_up() {
    CLIENTS.block_on(async {
        let conn = lapin::Connection::connect(AMQP_URL, Default::default())
            .await
            .unwrap();
        let _ = conn.close(200, "done".into()).await;
    });
}

/// Publishes [`PAYLOAD`] once to `topic` on `broker`; the publisher's connection is closed
/// when this returns.
async fn publish(broker: &Broker, topic: &str, tansu: Option<&PrivateBroker>) {
    let topic = topic.to_string();
    match broker {
        Broker::Nats => {
            on_clients_runtime(format!("nats {topic}"), async move {
                let nc = async_nats::connect(NATS_URL).await.unwrap();
                nc.publish(topic, PAYLOAD.into()).await.unwrap();
                nc.flush().await.unwrap();
            })
            .await
        }
        Broker::Redis => {
            let out = std::process::Command::new("redis-cli")
                .args(["-u", REDIS_URL, "PUBLISH", &topic, PAYLOAD])
                .output()
                .expect("redis-cli (Debian package redis-tools)");
            let receivers = String::from_utf8_lossy(&out.stdout).trim().to_string();
            assert!(
                out.status.success() && receivers != "0",
                "redis-cli PUBLISH {topic}: {receivers} receivers, {:?}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Broker::Mqtt => {
            let status = std::process::Command::new("mosquitto_pub")
                .args(["-h", "127.0.0.1", "-p", "1883", "-q", "1"])
                .args(["-t", &topic, "-m", PAYLOAD])
                .status()
                .expect("mosquitto_pub (Debian package mosquitto-clients)");
            assert!(status.success(), "mosquitto_pub {topic}: {status}");
        }
        Broker::Amqp { exchange } => {
            let exchange = exchange.clone();
            on_clients_runtime(format!("amqp {exchange} {topic}"), async move {
                let conn = lapin::Connection::connect(AMQP_URL, Default::default())
                    .await
                    .unwrap();
                let ch = conn.create_channel().await.unwrap();
                ch.confirm_select(Default::default()).await.unwrap();
                ch.basic_publish(
                    exchange.as_str().into(),
                    topic.as_str().into(),
                    Default::default(),
                    PAYLOAD.as_bytes(),
                    lapin::BasicProperties::default(),
                )
                .await
                .unwrap()
                .await
                .unwrap();
                let _ = ch.close(200, "done".into()).await;
                let _ = conn.close(200, "done".into()).await;
            })
            .await
        }
        Broker::Kafka => {
            let brokers = format!("127.0.0.1:{}", tansu.expect("the case's tansu").port);
            on_clients_runtime(format!("kafka {topic}"), async move {
                let p: FutureProducer = ClientConfig::new()
                    .set("bootstrap.servers", &brokers)
                    .set("message.timeout.ms", "10000")
                    .create()
                    .unwrap();
                p.send(
                    FutureRecord::<(), _>::to(&topic).payload(PAYLOAD),
                    Duration::from_secs(10),
                )
                .await
                .unwrap();
            })
            .await
        }
    }
}

/// A client that keeps no idle connection (so no client task outlives a request).
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn trigger(case: &Case, value: &Value, n: u32) {
    match &case.trigger {
        Trigger::Wait => {}
        Trigger::Post { headers, body } => {
            let url = value.url.as_ref().unwrap();
            let method = if value.text.contains("method: PUT") {
                reqwest::Method::PUT
            } else {
                reqwest::Method::POST
            };
            let mut req = client().request(method, url).body(*body);
            for (k, v) in headers {
                req = req.header(*k, v);
            }
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 200, "{url}: {:?}", r.text().await);
        }
        Trigger::WriteFile => {
            let dir = value.directory.as_ref().unwrap();
            std::fs::write(dir.join(format!("event-{n}.txt")), "x").unwrap();
        }
        Trigger::CreateObject => {
            case.kube.as_ref().unwrap().fake.create(serde_json::json!({
                "apiVersion": "example.com/v1", "kind": "Widget",
                "metadata": {"name": format!("compliance-{n}"), "namespace": "ns"},
            }));
        }
        Trigger::Publish(broker) => {
            publish(broker, value.topic.as_ref().unwrap(), case.tansu.as_ref()).await;
        }
        Trigger::PutObject(moto) => {
            moto.put(
                value.topic.as_ref().unwrap(),
                &[&format!("compliance-{n}.txt")],
            );
        }
        Trigger::SendMessage(moto) => {
            let url = value.topic.as_ref().unwrap();
            let mut message = serde_json::json!({"body": PAYLOAD});
            if url.ends_with(".fifo") {
                message["group"] = "compliance".into();
            }
            sqs_support::send(moto, url, &serde_json::json!([message]));
        }
        Trigger::ChangeBody(server) => server.change(),
        Trigger::SendAzureMessage(azurite) => {
            azurite.send(value.topic.as_ref().unwrap(), &[PAYLOAD], false);
        }
        Trigger::PutBlob(azurite) => {
            azurite.put_blob(
                value.topic.as_ref().unwrap(),
                &format!("compliance-{n}.json"),
                PAYLOAD,
                "application/json",
            );
        }
        Trigger::WriteSftp(sshd) => {
            std::fs::write(sshd.files.join(format!("event-{n}.json")), PAYLOAD).unwrap();
        }
        Trigger::Notify => {
            let channel = value.topic.clone().unwrap();
            on_clients_runtime(format!("postgres NOTIFY {channel}"), async move {
                let (client, connection) = tokio_postgres::connect(
                    "host=127.0.0.1 port=5432 user=postgres dbname=test",
                    tokio_postgres::NoTls,
                )
                .await
                .unwrap();
                let driven = tokio::spawn(connection);
                client
                    .batch_execute(&format!("NOTIFY {channel}, '{PAYLOAD}'"))
                    .await
                    .unwrap();
                drop(client);
                let _ = driven.await;
            })
            .await
        }
    }
}

async fn run_case(gateway_type: &str, case: Case) {
    let executor = builtin(gateway_type).unwrap();
    let mut h = Harness::new("compliance", gateway_type);
    if let Some(k) = &case.kube {
        h.set_kube_client(k.client.clone());
    }

    // validate rejects junk with a clear message.
    for (junk, word) in &case.junk {
        let ctx = h.context("junk", junk);
        let err = executor
            .dyn_validate(&ctx)
            .expect_err(&format!("{gateway_type}: validate took junk {junk:?}"));
        assert!(
            err.message().len() > 10 && err.message().contains(word),
            "{gateway_type}: the message for {junk:?} should name `{word}`: {:?}",
            err.message()
        );
    }
    for value in [&case.valid, &case.changed] {
        let ctx = h.context("good", &value.text);
        if let Err(e) = executor.dyn_validate(&ctx) {
            panic!("{gateway_type}: validate refused {:?}: {e}", value.text);
        }
    }

    let tasks = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    let baseline = tasks();
    let fds_baseline = sockets_and_watches();
    let new_fds = || sockets_and_watches().difference(&fds_baseline).count();
    let mut sup = h.supervisor(executor.clone());

    // start → Running → events; then a changed value → Running → events.
    for (round, value) in [&case.valid, &case.changed].into_iter().enumerate() {
        sup.apply(&map(&[("c", &value.text)])).await;
        let id = sup.ids()["c"];
        let running = wait_until(WAIT, || async {
            h.node("c")
                .is_some_and(|n| n.id == id && n.phase == Phase::Running)
        })
        .await;
        assert!(
            running,
            "{gateway_type} round {round}: not Running: {:?}",
            h.node("c")
        );
        // Drain what the previous round left.
        while h.try_next_event().is_some() {}
        trigger(&case, value, round as u32).await;
        let ce = h
            .next_event(WAIT)
            .await
            .unwrap_or_else(|| panic!("{gateway_type} round {round}: no event"));
        assert_eq!(ce.source, "compliance/c");
        assert_eq!(ce.ty, gateway_type);
        let _ = data(&ce); // JSON payload
        if round == 0 {
            // The check below can fail: a running configuration holds tasks.
            assert!(tasks() > baseline, "{gateway_type}: no task while running?");
            if gateway_type != "calendar" {
                assert!(
                    new_fds() > 0,
                    "{gateway_type}: no socket or watch while running?"
                );
            }
        }
        if round == 1 {
            for p in &case.valid.ports {
                assert!(
                    port_is_free(*p),
                    "{gateway_type}: the old port {p} is released after the change"
                );
            }
        }
    }

    // stop leaves no task, socket or port behind.
    sup.stop_all().await;
    assert!(h.node("c").is_none(), "{gateway_type}: node removed");
    let back = wait_until(WAIT, || async { tasks() <= baseline }).await;
    assert!(
        back,
        "{gateway_type}: {} tasks alive after stop, {baseline} before",
        tasks()
    );
    for p in case.valid.ports.iter().chain(&case.changed.ports) {
        assert!(
            port_is_free(*p),
            "{gateway_type}: port {p} is released after stop"
        );
    }
    // Sockets open before may close meanwhile (a client's keep-alive connection): what counts
    // is that none the gateway opened is left.
    let closed = wait_until(WAIT, || async { new_fds() == 0 }).await;
    assert!(
        closed,
        "{gateway_type}: {} sockets or file watches opened while it ran are still open after stop",
        new_fds()
    );
}

/// Open sockets and inotify instances of this process: (descriptor, what it points at).
fn sockets_and_watches() -> std::collections::BTreeSet<(String, String)> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            Some((
                e.file_name().to_string_lossy().into_owned(),
                target.to_string_lossy().into_owned(),
            ))
        })
        .filter(|(_, t)| t.starts_with("socket:") || t.contains("inotify"))
        .collect()
}

#[test]
fn every_builtin_gateway_complies() {
    // `PORTICO_COMPLIANCE_ONLY=artifact,storagegrid` runs only those cases (while working
    // on them); every case runs without it.
    let only = std::env::var("PORTICO_COMPLIANCE_ONLY").unwrap_or_default();
    let wanted = |t: &str| only.is_empty() || only.split(',').any(|o| o.trim() == t);
    let missing: Vec<&str> = BUILTIN_TYPES
        .iter()
        .copied()
        .filter(|t| wanted(t) && case(t).is_none())
        .collect();
    assert!(missing.is_empty(), "add a compliance case for {missing:?}");
    LazyLock::force(&CLIENTS);
    for gateway_type in BUILTIN_TYPES.iter().filter(|t| wanted(t)) {
        let case = case(gateway_type).unwrap();
        // A runtime per gateway, so that its task count is this gateway's alone.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(run_case(gateway_type, case));
    }
}
