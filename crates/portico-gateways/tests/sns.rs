//! The `sns` gateway over HTTP: messages signed by the test itself (a throwaway RSA key and
//! certificate made with the `openssl` command, the certificate served by a local HTTP server)
//! are verified, the subscription confirmed and notifications made events; tampered, unsigned,
//! wrongly signed messages, unknown signature versions, certificates and subscription URLs on
//! hosts not allowed, other topics and malformed bodies are refused with a 4xx and make no
//! event; an event that cannot be accepted gets a non-2xx (in `ackAfterDelivery`, the 200
//! waits for the watcher); and moto's SNS delivers to the endpoint end to end.

mod broker_support;
mod common;
mod moto_support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use broker_support::{Rig, WAIT, data, ext};
use common::free_port;
use moto_support::{Moto, unique, venv};
use portico::Phase;
use portico_gateways::sns::Sns;
use serde_json::{Map, Value, json};

const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:orders";

/// A throwaway RSA key and its self-signed certificate, made with `openssl`.
struct Signer {
    dir: tempfile::TempDir,
}

impl Signer {
    fn new() -> Signer {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", "/CN=sns.test"])
            .arg("-keyout")
            .arg(dir.path().join("key.pem"))
            .arg("-out")
            .arg(dir.path().join("cert.pem"))
            .output()
            .expect("the openssl command");
        assert!(
            out.status.success(),
            "openssl req: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Signer { dir }
    }

    fn cert(&self) -> Vec<u8> {
        std::fs::read(self.dir.path().join("cert.pem")).unwrap()
    }

    /// The base64 PKCS#1 v1.5 signature of `text` with SHA1 (`version` 1) or SHA256 (2).
    fn sign(&self, text: &str, version: u8) -> String {
        let digest = if version == 1 { "-sha1" } else { "-sha256" };
        let mut child = Command::new("openssl")
            .args(["dgst", digest, "-sign"])
            .arg(self.dir.path().join("key.pem"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the openssl command");
        {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        }
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "openssl dgst: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        base64::engine::general_purpose::STANDARD.encode(out.stdout)
    }
}

/// SNS's string to sign, as its documentation gives it.
fn string_to_sign(m: &Map<String, Value>) -> String {
    let fields: &[&str] = if m["Type"] == "Notification" {
        &[
            "Message",
            "MessageId",
            "Subject",
            "Timestamp",
            "TopicArn",
            "Type",
        ]
    } else {
        &[
            "Message",
            "MessageId",
            "SubscribeURL",
            "Timestamp",
            "Token",
            "TopicArn",
            "Type",
        ]
    };
    let mut out = String::new();
    for f in fields {
        if let Some(v) = m.get(*f).and_then(Value::as_str) {
            out.push_str(&format!("{f}\n{v}\n"));
        }
    }
    out
}

/// The local server of the signing certificates and the subscription URL.
struct CertServer {
    base: String,
    /// Certificate fetches, and the query strings of confirmation calls.
    fetches: Arc<Mutex<u32>>,
    confirmations: Arc<Mutex<Vec<String>>>,
    stop: tokio_util::sync::CancellationToken,
}

impl Drop for CertServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl CertServer {
    async fn start(cert: Vec<u8>) -> CertServer {
        use axum::routing::get;
        let fetches = Arc::new(Mutex::new(0));
        let confirmations = Arc::new(Mutex::new(Vec::new()));
        let (f, c) = (fetches.clone(), confirmations.clone());
        let app = axum::Router::new()
            .route(
                "/cert.pem",
                get(move || {
                    let (f, cert) = (f.clone(), cert.clone());
                    async move {
                        *f.lock().unwrap() += 1;
                        cert
                    }
                }),
            )
            .route(
                "/confirm",
                get(move |uri: axum::http::Uri| {
                    let c = c.clone();
                    async move {
                        c.lock()
                            .unwrap()
                            .push(uri.query().unwrap_or("").to_string());
                        "<ConfirmSubscriptionResponse/>"
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let stop = tokio_util::sync::CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { s.cancelled().await })
                .await
                .unwrap();
        });
        CertServer {
            base,
            fetches,
            confirmations,
            stop,
        }
    }
}

fn notification(id: &str, message: &str, subject: Option<&str>) -> Map<String, Value> {
    let mut m = json!({
        "Type": "Notification",
        "MessageId": id,
        "TopicArn": TOPIC,
        "Message": message,
        "Timestamp": "2026-03-04T05:06:07.890Z",
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe",
    })
    .as_object()
    .unwrap()
    .clone();
    if let Some(s) = subject {
        m.insert("Subject".into(), s.into());
    }
    m
}

fn confirmation(kind: &str, subscribe_url: &str) -> Map<String, Value> {
    json!({
        "Type": kind,
        "MessageId": "c-1",
        "Token": "tok-123",
        "TopicArn": TOPIC,
        "Message": "You have chosen to subscribe to the topic.",
        "SubscribeURL": subscribe_url,
        "Timestamp": "2026-03-04T05:06:07.890Z",
    })
    .as_object()
    .unwrap()
    .clone()
}

/// `m` signed by `signer` (version 1 or 2), its certificate at `cert_url`.
fn signed(signer: &Signer, mut m: Map<String, Value>, version: u8, cert_url: &str) -> String {
    let signature = signer.sign(&string_to_sign(&m), version);
    m.insert("SignatureVersion".into(), version.to_string().into());
    m.insert("Signature".into(), signature.into());
    m.insert("SigningCertURL".into(), cert_url.into());
    Value::Object(m).to_string()
}

async fn post(url: &str, body: &str, message_type: Option<&str>) -> (u16, String) {
    let mut req = common::client()
        .post(url)
        .header("content-type", "text/plain; charset=UTF-8")
        .body(body.to_string());
    if let Some(t) = message_type {
        req = req.header("x-amz-sns-message-type", t);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn config(port: u16, endpoint: &str, extra: &str) -> String {
    format!(
        "port: {port}\nendpoint: {endpoint}\nallowedHosts: [127.0.0.1]\nallowHttp: true\n{extra}"
    )
}

#[tokio::test]
async fn signed_messages_are_verified_confirmed_and_become_events() {
    let signer = Signer::new();
    let stranger = Signer::new();
    let server = CertServer::start(signer.cert()).await;
    let cert_url = format!("{}/cert.pem", server.base);
    let port = free_port();
    let mut rig = Rig::new("snsgw", "sns", Arc::new(Sns::default()));
    let other_topic = "topicArns: ['arn:aws:sns:us-east-1:123456789012:other']";
    rig.apply(&[
        ("orders", &config(port, "/sns", "")),
        ("others", &config(port, "/other", other_topic)),
    ])
    .await;
    rig.wait_phase("orders", Phase::Running).await;
    rig.wait_phase("others", Phase::Running).await;
    let url = format!("http://127.0.0.1:{port}/sns");

    // The subscription is confirmed: its SubscribeURL called, no event.
    let subscribe = format!(
        "{}/confirm?Action=ConfirmSubscription&Token=tok-123",
        server.base
    );
    let body = signed(
        &signer,
        confirmation("SubscriptionConfirmation", &subscribe),
        1,
        &cert_url,
    );
    let (status, text) = post(&url, &body, Some("SubscriptionConfirmation")).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("confirmed"), "{text}");
    assert_eq!(
        *server.confirmations.lock().unwrap(),
        ["Action=ConfirmSubscription&Token=tok-123"]
    );

    // Notifications, SignatureVersion 1 and 2, with and without subject and attributes.
    let mut m = notification("m-1", r#"{"order": 1}"#, Some("New order"));
    m.insert(
        "MessageAttributes".into(),
        json!({
            "Order-Id": {"Type": "Number", "Value": "41"},
            "Author": {"Type": "String", "Value": "ana"},
            "Blob": {"Type": "Binary", "Value": "cmF3"},
            "traceparent": {"Type": "String", "Value": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
        }),
    );
    let (status, text) = post(
        &url,
        &signed(&signer, m, 1, &cert_url),
        Some("Notification"),
    )
    .await;
    assert_eq!((status, text.as_str()), (200, ""));
    let (status, text) = post(
        &url,
        &signed(
            &signer,
            notification("m-2", "plain words", None),
            2,
            &cert_url,
        ),
        None,
    )
    .await;
    assert_eq!((status, text.as_str()), (200, ""));
    let got = rig.exactly(2, Duration::from_millis(200)).await;
    let (one, two) = (&got[0], &got[1]);
    assert_eq!(one.ty, "sns");
    assert_eq!(one.subject.as_deref(), Some("orders"));
    assert_eq!(one.datacontenttype.as_deref(), Some("application/json"));
    assert_eq!(data(one), r#"{"order": 1}"#);
    assert_eq!(
        one.time.map(|t| t.to_rfc3339()),
        Some("2026-03-04T05:06:07.890+00:00".to_string())
    );
    assert_eq!(ext(one, "messageid").as_deref(), Some("m-1"));
    assert_eq!(one.id, "m-1");
    assert_eq!(ext(one, "topicarn").as_deref(), Some(TOPIC));
    assert_eq!(ext(one, "snssubject").as_deref(), Some("New order"));
    assert_eq!(ext(one, "attrorderid").as_deref(), Some("41"));
    assert_eq!(ext(one, "attrauthor").as_deref(), Some("ana"));
    assert_eq!(ext(one, "attrblob"), None);
    assert_eq!(
        ext(one, "traceparent").as_deref(),
        Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    );
    assert_eq!(two.datacontenttype.as_deref(), Some("text/plain"));
    assert_eq!(data(two), "plain words");
    assert_eq!(ext(two, "messageid").as_deref(), Some("m-2"));
    assert_eq!(ext(two, "snssubject"), None);

    // An unsubscribe confirmation: 200, no event.
    let body = signed(
        &signer,
        confirmation("UnsubscribeConfirmation", &subscribe),
        2,
        &cert_url,
    );
    assert_eq!(post(&url, &body, None).await.0, 200);

    // Refused, each with a 4xx and its reason, making no event.
    let good = |id: &str| notification(id, "x", Some("s"));
    let tampered = signed(&signer, good("t-1"), 1, &cert_url).replace("\"x\"", "\"y\"");
    let wrong = signed(&stranger, good("t-2"), 1, &cert_url);
    let mut unsigned = good("t-3");
    unsigned.insert("SignatureVersion".into(), "1".into());
    unsigned.insert("SigningCertURL".into(), cert_url.clone().into());
    let unsigned = Value::Object(unsigned).to_string();
    let mut unknown: Value =
        serde_json::from_str(&signed(&signer, good("t-4"), 1, &cert_url)).unwrap();
    unknown["SignatureVersion"] = "3".into();
    let not_allowed = signed(
        &signer,
        good("t-5"),
        1,
        &cert_url.replace("127.0.0.1", "localhost"),
    );
    let https_only = signed(
        &signer,
        good("t-6"),
        1,
        "https://sns.us-east-1.amazonaws.com.evil.example/cert.pem",
    );
    let bad_subscribe = signed(
        &signer,
        confirmation(
            "SubscriptionConfirmation",
            "http://localhost:1/?Action=ConfirmSubscription",
        ),
        1,
        &cert_url,
    );
    let cases: Vec<(String, Option<&str>, u16, &str)> = vec![
        (tampered, None, 401, "does not match"),
        (wrong, None, 401, "does not match"),
        (unsigned, None, 401, "no Signature"),
        (unknown.to_string(), None, 401, "SignatureVersion `3`"),
        (not_allowed, None, 403, "host `localhost`"),
        (https_only, None, 403, "allowedHosts"),
        (
            bad_subscribe,
            None,
            403,
            "SubscribeURL is on host `localhost`",
        ),
        ("{nope".into(), None, 400, "not JSON"),
        (r#"{"Type": "Other"}"#.into(), None, 400, "`Other`"),
        (
            signed(&signer, good("t-7"), 1, &cert_url),
            Some("SubscriptionConfirmation"),
            400,
            "x-amz-sns-message-type",
        ),
    ];
    for (body, header, want, why) in &cases {
        let (status, text) = post(&url, body, *header).await;
        assert_eq!(status, *want, "{why}: {text}");
        assert!(text.contains(why), "{why}: {text}");
    }
    // Only the first confirmation was called; the certificate was fetched once (cached).
    assert_eq!(server.confirmations.lock().unwrap().len(), 1);
    assert_eq!(*server.fetches.lock().unwrap(), 1);
    // A message of a topic the configuration does not take.
    let (status, text) = post(
        &format!("http://127.0.0.1:{port}/other"),
        &signed(&signer, good("t-8"), 1, &cert_url),
        None,
    )
    .await;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("topicArns"), "{text}");
    assert!(rig.next_event(Duration::from_millis(200)).await.is_none());
    let unauthorized = |src: &str| {
        rig.harness.metric(
            "portico_events_rejected_total",
            &[("src", src), ("reason", "unauthorized")],
        )
    };
    assert_eq!(unauthorized("orders"), 7.0);
    assert_eq!(unauthorized("others"), 1.0);
    rig.supervisor.stop_all().await;
}

#[tokio::test]
async fn a_message_whose_event_is_not_accepted_gets_no_2xx() {
    let signer = Signer::new();
    let server = CertServer::start(signer.cert()).await;
    let cert_url = format!("{}/cert.pem", server.base);
    let port = free_port();
    // Room for one event, the watcher down: the gateway fills up.
    let mut rig = Rig::with_queue_size("snsgw", "sns", Arc::new(Sns::default()), 1);
    rig.watcher_up(false);
    rig.apply(&[("orders", &config(port, "/sns", ""))]).await;
    rig.wait_phase("orders", Phase::Running).await;
    let url = format!("http://127.0.0.1:{port}/sns");
    let mut statuses = Vec::new();
    let mut refused = None;
    for i in 0..5 {
        let body = signed(
            &signer,
            notification(&format!("f-{i}"), "x", None),
            2,
            &cert_url,
        );
        let (status, text) = post(&url, &body, None).await;
        statuses.push(status);
        if status != 200 {
            refused = Some((body, status, text));
            break;
        }
    }
    let (body, status, text) = refused.unwrap_or_else(|| panic!("never refused: {statuses:?}"));
    assert_eq!(status, 503, "{text}");
    // SNS sends it again later, and then it is taken.
    rig.watcher_up(true);
    let accepted = statuses.len() - 1;
    rig.exactly(accepted, Duration::from_millis(0)).await;
    assert_eq!(post(&url, &body, None).await.0, 200);
    let e = rig.next_event(WAIT).await.expect("the message sent again");
    assert_eq!(ext(&e, "messageid"), Some(format!("f-{accepted}")));
    rig.supervisor.stop_all().await;
}

#[tokio::test]
async fn in_ack_after_delivery_the_200_waits_for_the_watcher() {
    let signer = Signer::new();
    let server = CertServer::start(signer.cert()).await;
    let cert_url = format!("{}/cert.pem", server.base);
    let outbox = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut rig = Rig::with_delivery(
        "snsgw",
        "sns",
        Arc::new(Sns::default()),
        16,
        portico::testing::Delivery::AckAfterDelivery(outbox.path().to_path_buf()),
    );
    rig.watcher_up(false);
    rig.apply(&[("orders", &config(port, "/sns", ""))]).await;
    rig.wait_phase("orders", Phase::Running).await;
    let url = format!("http://127.0.0.1:{port}/sns");
    let body = signed(&signer, notification("d-1", "x", None), 1, &cert_url);
    let request = tokio::spawn(async move { post(&url, &body, None).await });
    rig.wait_received("orders", 1).await;
    // Taken, not delivered: no answer yet.
    let mut request = request;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut request)
            .await
            .is_err(),
        "answered before delivery"
    );
    rig.watcher_up(true);
    let (status, text) = request.await.unwrap();
    assert_eq!((status, text.as_str()), (200, ""));
    let e = rig.next_event(WAIT).await.expect("the event");
    assert_eq!(ext(&e, "messageid").as_deref(), Some("d-1"));
    rig.supervisor.stop_all().await;
}

/// Runs `sns.py` against `moto` with these arguments; its output, trimmed.
fn sns_py(moto: &Moto, args: &[&str]) -> String {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/moto_support/sns.py");
    let out = Command::new(venv().join("bin/python"))
        .arg(&script)
        .arg(&moto.url)
        .args(args)
        .output()
        .expect("the venv's python");
    assert!(
        out.status.success(),
        "sns.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn motos_sns_delivers_to_the_endpoint() {
    let moto = Moto::shared();
    let port = free_port();
    let mut rig = Rig::new("snsgw", "sns", Arc::new(Sns::default()));
    // moto signs its notifications, but leaves `Subject` out of the string to sign and names
    // a certificate on AWS's host that only its in-process mock serves: checked off, as for
    // emulators. It posts no SubscriptionConfirmation (its subscriptions are confirmed at
    // once), and no MessageAttributes to HTTP endpoints.
    rig.apply(&[("moto", &config(port, "/moto", "verifySignature: false"))])
        .await;
    let node = rig.wait_phase("moto", Phase::Running).await;
    assert!(node.message.contains("verifySignature"), "{node:?}");
    let topic = unique("portico-t");
    let endpoint = format!("http://127.0.0.1:{port}/moto");
    let moto2 = moto.clone();
    let arn = tokio::task::spawn_blocking(move || {
        let arn = sns_py(&moto2, &["topic", &topic]);
        sns_py(&moto2, &["subscribe", &arn, &endpoint]);
        arn
    })
    .await
    .unwrap();
    let (moto2, arn2) = (moto.clone(), arn.clone());
    let id = tokio::task::spawn_blocking(move || {
        let attributes = json!({"Order-Id": ["Number", "7"]});
        sns_py(
            &moto2,
            &[
                "publish",
                &arn2,
                r#"{"order": 7}"#,
                "Order placed",
                &attributes.to_string(),
            ],
        )
    })
    .await
    .unwrap();
    let e = rig.next_event(WAIT).await.expect("moto's notification");
    assert_eq!(e.ty, "sns");
    assert_eq!(e.subject.as_deref(), Some("moto"));
    assert_eq!(data(&e), r#"{"order": 7}"#);
    assert_eq!(e.datacontenttype.as_deref(), Some("application/json"));
    assert_eq!(ext(&e, "topicarn").as_deref(), Some(arn.as_str()));
    assert_eq!(ext(&e, "messageid"), Some(id));
    assert_eq!(ext(&e, "snssubject").as_deref(), Some("Order placed"));
    assert_eq!(
        e.time
            .map(|t| t.timestamp() - chrono::Utc::now().timestamp())
            .map(|d| d.abs() < 60),
        Some(true)
    );
    rig.supervisor.stop_all().await;
}

#[tokio::test]
async fn bad_configurations_name_the_field() {
    let mut rig = Rig::new("snsgw", "sns", Arc::new(Sns::default()));
    rig.apply(&[
        ("endpoint", "port: 8080\nendpoint: nope"),
        ("hosts", "port: 8080\nendpoint: /x\nallowedHosts: ['*/x']"),
        ("topics", "port: 8080\nendpoint: /x\ntopicArns: [orders]"),
    ])
    .await;
    for (src, field) in [
        ("endpoint", "endpoint"),
        ("hosts", "allowedHosts[0]"),
        ("topics", "topicArns[0]"),
    ] {
        let node = rig.wait_phase(src, Phase::Error).await;
        assert!(node.message.contains(field), "{node:?}");
    }
    rig.supervisor.stop_all().await;
}
