//! The `artifact` gateway against moto (S3 and SQS on one port): objects put in a bucket
//! whose notifications go to an SQS queue become CloudEvents; messages are deleted only once
//! their events were accepted; filters, Argo Events' shape with its credentials in a
//! Kubernetes Secret, and a server that goes away and comes back.

mod broker_support;
mod moto_support;

use std::sync::Arc;
use std::time::Duration;

use broker_support::{Rig, WAIT, ext, wait_until};
use moto_support::{Moto, unique};
use portico::Phase;
use portico_gateways::artifact::Artifact;

/// Credentials in files (moto takes any).
struct Keys {
    dir: tempfile::TempDir,
}

impl Keys {
    fn new() -> Keys {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("access"), "portico-test\n").unwrap();
        std::fs::write(dir.path().join("secret"), "portico-test-secret\n").unwrap();
        Keys { dir }
    }

    fn lines(&self) -> String {
        format!(
            "accessKeyFile: {}\nsecretKeyFile: {}\n",
            self.dir.path().join("access").display(),
            self.dir.path().join("secret").display()
        )
    }
}

fn data(e: &portico::cloudevents::CloudEvent) -> serde_json::Value {
    serde_json::from_str(&broker_support::data(e)).expect("JSON data")
}

/// Waits until the queue holds no message, visible or in flight.
async fn wait_empty(moto: &Moto, queue_url: &str) {
    wait_until("the queue to be empty", || async {
        (moto.count(queue_url) == (0, 0)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn objects_become_events_filtered_and_their_messages_deleted() {
    let moto = Moto::shared();
    let (bucket, queue) = (unique("portico-b"), unique("portico-q"));
    let queue_url = moto.setup(&bucket, &queue, 30);
    let keys = Keys::new();
    let mut rig = Rig::new("artifactgw", "artifact", Arc::new(Artifact));
    let config = format!(
        "queueUrl: {queue_url}\nregion: us-east-1\nbucket: {bucket}\nevents: ['s3:ObjectCreated:*']\nfilter: {{prefix: 'in/', suffix: .txt}}\nwaitTime: 1s\n{}",
        keys.lines()
    );
    rig.apply(&[("uploads", &config)]).await;
    rig.wait_phase("uploads", Phase::Running).await;

    moto.put(
        &bucket,
        &["in/a.txt", "in/b.csv", "out/c.txt", "in/red flower.txt"],
    );
    let got = rig.exactly(2, Duration::from_millis(1500)).await;
    let keys_got: Vec<String> = got.iter().map(|e| ext(e, "key").unwrap()).collect();
    assert_eq!(keys_got, ["in/a.txt", "in/red flower.txt"]);
    for e in &got {
        assert_eq!(e.ty, "artifact");
        assert_eq!(e.source, "artifactgw/uploads");
        assert_eq!(e.subject.as_deref(), Some("uploads"));
        assert_eq!(e.datacontenttype.as_deref(), Some("application/json"));
        assert_eq!(ext(e, "bucket").as_deref(), Some(bucket.as_str()));
        let record = data(e);
        assert_eq!(record["eventName"], "ObjectCreated:Put");
        assert_eq!(record["eventSource"], "aws:s3");
        assert_eq!(record["s3"]["bucket"]["name"], bucket.as_str());
        assert_eq!(record["s3"]["object"]["size"], 7);
    }
    // Every message is gone: the events', the filtered ones' and S3's s3:TestEvent.
    wait_empty(&moto, &queue_url).await;
    rig.supervisor.stop_all().await;
}

#[tokio::test]
async fn a_message_is_deleted_only_once_its_event_is_accepted() {
    let moto = Moto::shared();
    let (bucket, queue) = (unique("portico-b"), unique("portico-q"));
    let queue_url = moto.setup(&bucket, &queue, 1);
    let keys = Keys::new();
    // Room for one event, and the watcher down: the second event waits, unaccepted.
    let mut rig = Rig::with_queue_size("artifactgw", "artifact", Arc::new(Artifact), 1);
    rig.watcher_up(false);
    let config = format!(
        "queueUrl: {queue_url}\nregion: us-east-1\nwaitTime: 1s\n{}",
        keys.lines()
    );
    rig.apply(&[("held", &config)]).await;
    rig.wait_phase("held", Phase::Running).await;
    let want = ["one.txt", "two.txt", "three.txt"];
    moto.put(&bucket, &want);
    rig.wait_received("held", 2).await;
    // Stopped before the waiting event was accepted: its message is not deleted, and comes
    // back after its visibility timeout (1 s), with the third one never taken.
    rig.apply(&[]).await;
    wait_until("the unaccepted messages back in the queue", || async {
        let (visible, in_flight) = moto.count(&queue_url);
        (visible == 2 && in_flight == 0).then_some(())
    })
    .await;

    rig.watcher_up(true);
    rig.apply(&[("held", &config)]).await;
    let mut seen = std::collections::BTreeSet::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while seen.len() < want.len() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let e = rig
            .next_event(left)
            .await
            .unwrap_or_else(|| panic!("only {seen:?} arrived"));
        seen.insert(ext(&e, "key").unwrap());
    }
    assert_eq!(seen, want.iter().map(|k| k.to_string()).collect());
    wait_empty(&moto, &queue_url).await;
    rig.supervisor.stop_all().await;
}

/// Kubernetes Secrets by name (their `data`, base64), served at
/// `/api/v1/namespaces/{namespace}/secrets/{name}` like the API server does.
type Secrets = Arc<std::sync::Mutex<std::collections::HashMap<String, serde_json::Value>>>;

async fn kube_secret(
    axum::extract::State(secrets): axum::extract::State<Secrets>,
    axum::extract::Path((namespace, name)): axum::extract::Path<(String, String)>,
) -> (axum::http::StatusCode, axum::Json<serde_json::Value>) {
    match secrets.lock().unwrap().get(&name) {
        Some(data) => (
            axum::http::StatusCode::OK,
            axum::Json(serde_json::json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": name, "namespace": namespace},
                "data": data,
            })),
        ),
        None => (
            axum::http::StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({
                "apiVersion": "v1", "kind": "Status", "status": "Failure",
                "message": format!("secrets \"{name}\" not found"),
                "reason": "NotFound", "code": 404,
            })),
        ),
    }
}

/// A Kubernetes API that serves `secrets`, and a client of it.
async fn kube_api(secrets: Secrets) -> (kube::Client, tokio::task::JoinHandle<()>) {
    let app = axum::Router::new()
        .route(
            "/api/v1/namespaces/{namespace}/secrets/{name}",
            axum::routing::get(kube_secret),
        )
        .with_state(secrets);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    (kube::Client::try_from(config).unwrap(), task)
}

#[tokio::test]
async fn argo_shape_reads_its_keys_from_a_kubernetes_secret_and_its_queue_by_name() {
    use base64::Engine;
    let moto = Moto::shared();
    let (bucket, queue) = (unique("portico-b"), unique("portico-q"));
    let queue_url = moto.setup(&bucket, &queue, 30);
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let keys = serde_json::json!({"accesskey": b64("portico-test"), "secretkey": b64("portico-test-secret")});
    let secrets = Secrets::default();
    secrets
        .lock()
        .unwrap()
        .insert("artifacts-minio".into(), keys.clone());
    let (client, api) = kube_api(secrets.clone()).await;
    let mut rig = Rig::new("artifactgw", "artifact", Arc::new(Artifact));
    rig.harness.set_kube_client(client.clone());
    rig.supervisor = rig.harness.supervisor(Arc::new(Artifact));
    let host = moto.url.trim_start_matches("http://");
    let config = format!(
        "s3EventConfig:\n  endpoint: {host}\n  bucket: {bucket}\n  region: us-east-1\n  event: s3:ObjectCreated:Put\n  filter:\n    prefix: ''\n    suffix: .csv\ninsecure: true\naccessKey:\n  name: artifacts-minio\n  key: accesskey\nsecretKey:\n  name: artifacts-minio\n  key: secretkey\nqueue: {queue}\nwaitTime: 1s\n"
    );
    rig.apply(&[("argo", &config)]).await;
    rig.wait_phase("argo", Phase::Running).await;
    moto.put(&bucket, &["skip.txt", "take.csv"]);
    let got = rig.exactly(1, Duration::from_millis(1500)).await;
    assert_eq!(ext(&got[0], "key").as_deref(), Some("take.csv"));
    assert_eq!(data(&got[0])["eventName"], "ObjectCreated:Put");
    wait_empty(&moto, &queue_url).await;
    rig.supervisor.stop_all().await;

    // Without the Secret, the node says which one is missing, and runs once it is there.
    let mut rig = Rig::new("artifactgw", "artifact", Arc::new(Artifact));
    rig.harness.set_kube_client(client);
    rig.supervisor = rig.harness.supervisor(Arc::new(Artifact));
    let missing = config.replace("artifacts-minio", "not-yet");
    rig.apply(&[("argo", &missing)]).await;
    let node = rig.wait_phase("argo", Phase::Error).await;
    assert!(node.message.contains("not-yet"), "{node:?}");
    secrets.lock().unwrap().insert("not-yet".into(), keys);
    rig.wait_phase("argo", Phase::Running).await;
    rig.supervisor.stop_all().await;
    api.abort();
}

#[tokio::test]
async fn argo_shape_outside_a_cluster_says_to_give_the_keys_another_way() {
    let moto = Moto::shared();
    let queue = unique("portico-q");
    moto.run(&["queue", &queue, "30"]);
    let mut rig = Rig::new("artifactgw", "artifact", Arc::new(Artifact));
    let host = moto.url.trim_start_matches("http://");
    let config = format!(
        "s3EventConfig: {{endpoint: '{host}', bucket: b, region: us-east-1}}\ninsecure: true\naccessKey: {{name: s, key: a}}\nsecretKey: {{name: s, key: b}}\nqueue: {queue}\n"
    );
    rig.apply(&[("argo", &config)]).await;
    let node = rig.wait_phase("argo", Phase::Error).await;
    assert!(
        node.message.contains("accessKey") && node.message.contains("accessKeyFile"),
        "{node:?}"
    );
    rig.supervisor.stop_all().await;
}

#[tokio::test]
async fn a_lost_server_is_reported_and_reading_resumes() {
    let mut moto = Moto::private();
    let (bucket, queue) = (unique("portico-b"), unique("portico-q"));
    let queue_url = moto.setup(&bucket, &queue, 30);
    let keys = Keys::new();
    let mut rig = Rig::new("artifactgw", "artifact", Arc::new(Artifact));
    let config = format!(
        "queueUrl: {queue_url}\nregion: us-east-1\nwaitTime: 1s\n{}",
        keys.lines()
    );
    rig.apply(&[("lost", &config)]).await;
    rig.wait_phase("lost", Phase::Running).await;

    moto.kill();
    let node = rig.wait_phase("lost", Phase::Error).await;
    assert!(node.message.contains("SQS"), "{node:?}");
    // A new server knows no queue: still an error, saying so.
    moto.start();
    wait_until("the missing queue reported", || async {
        rig.node("lost")
            .filter(|n| n.phase == Phase::Error && n.message.contains("QueueDoesNotExist"))
    })
    .await;
    // Once the queue is there again, it runs and reads.
    assert_eq!(moto.setup(&bucket, &queue, 30), queue_url);
    rig.wait_phase("lost", Phase::Running).await;
    moto.put(&bucket, &["after.txt"]);
    let got = rig.exactly(1, Duration::from_millis(500)).await;
    assert_eq!(ext(&got[0], "key").as_deref(), Some("after.txt"));
    rig.supervisor.stop_all().await;
}
