//! End to end, the sources that remove a message from its server only once its event was
//! taken: `sqs`, `azure-queue`, `azure-blob`, `postgres` (logical replication) and `sftp`
//! (`afterAccept: delete`), each run by the real `portico` binary in `ackAfterDelivery` against
//! a real server (moto, Azurite, the machine's PostgreSQL, an OpenSSH `sshd` of the test's own).
//!
//! The gateway reads one message while its watcher refuses it (503, retried), and is killed
//! with SIGKILL, so nothing it would do on a graceful stop (giving messages back) runs: what
//! the server holds is what the gateway did before acceptance. The message must still be
//! there: an SQS or Azure queue message visible again once its visibility timeout (2 s) has
//! passed, the row's change still in the replication slot, the file still on the SFTP server,
//! the blob not recorded in the state file. Started again on the same outbox, state file and
//! slot, with the watcher (same URL) now taking events, the gateway delivers the same message,
//! under the same CloudEvent id where the source gives one, and only then removes it: the queue
//! is empty, the slot is past the row, the file is deleted, the blob is recorded.

#[path = "../../portico-gateways/tests/azurite_support/mod.rs"]
mod azurite_support;
#[path = "../../portico-gateways/tests/moto_support/mod.rs"]
mod moto_support;
#[path = "../../portico-gateways/tests/postgres_support/mod.rs"]
mod postgres_support;
#[path = "../../portico-gateways/tests/sftp_support/mod.rs"]
mod sftp_support;
#[path = "../../portico-gateways/tests/sqs_support/mod.rs"]
mod sqs_support;
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use azurite_support::Azurite;
use moto_support::Moto;
use postgres_support::{Names, URL, client, try_inserts_in_slot};
use serde_json::Value;
use sftp_support::Sshd;
use support::{Behaviour, GatewayFileBuilder, Portico, Sink, eventually, eventually_async};

const WAIT: Duration = Duration::from_secs(30);
/// The configuration's name (its node in `/status`).
const SRC: &str = "orders";
/// Delivery attempts the watcher refuses before the gateway is killed: the gateway has had
/// the time to act on the message several times over, had it acted before acceptance.
const REFUSED: usize = 3;
/// `ackAfterDelivery`, and retries that never give up: an event is never dead-lettered (which
/// would count as taken) while the watcher refuses it.
const DELIVERY: &str = "  delivery:\n    mode: ackAfterDelivery\n    retry: {maxAttempts: 1000000, initialBackoff: 20ms, maxBackoff: 100ms}\n";

/// A gateway file of one configuration, its outbox, and the environment it runs with.
struct Gateway {
    _dir: tempfile::TempDir,
    file: PathBuf,
    outbox: String,
    envs: Vec<(&'static str, String)>,
}

impl Gateway {
    /// A gateway of type `ty` with the configuration `config`, sending to `watcher`.
    fn new(ty: &str, config: &str, watcher: &Sink, envs: &[(&'static str, String)]) -> Gateway {
        let (dir, file) = GatewayFileBuilder::new("killed", ty)
            .watchers(&[watcher.url()])
            .spec_lines(DELIVERY)
            .config(SRC, config)
            .write();
        let outbox = dir.path().join("outbox").display().to_string();
        Gateway {
            _dir: dir,
            file,
            outbox,
            envs: envs.to_vec(),
        }
    }

    /// Runs `portico run FILE` on the outbox, and waits until the configuration runs.
    async fn start(&self) -> Portico {
        let mut envs: Vec<(&str, &str)> = vec![("PORTICO_OUTBOX_DIR", &self.outbox)];
        envs.extend(self.envs.iter().map(|(k, v)| (*k, v.as_str())));
        let portico = Portico::start(&["run", self.file.to_str().unwrap()], &envs).await;
        portico.wait_for_phase(SRC, "Running", WAIT).await;
        portico
    }

    /// The watcher back on the same address, taking every event, and the gateway started
    /// again on the same outbox: the watcher and the new process.
    async fn restart(&self, refusing: Sink) -> (Sink, Portico) {
        let addr = refusing.addr;
        drop(refusing);
        let sink = Sink::start_on(addr, Behaviour::Ok).await;
        let portico = self.start().await;
        (sink, portico)
    }
}

/// Kills `portico` (SIGKILL) once `refusing` refused its event [`REFUSED`] times; the
/// event.
async fn kill_when_refused(portico: Portico, refusing: &Sink) -> Value {
    let tried = eventually(WAIT, || {
        let r = refusing.received();
        (r.len() >= REFUSED).then_some(r)
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "the watcher saw {} delivery attempts, not {REFUSED}",
            refusing.received().len()
        )
    });
    portico.kill().await;
    assert!(tried.iter().all(|r| r.answered == 503), "refused");
    let event = tried[0].json();
    assert!(
        tried.iter().all(|r| r.json()["id"] == event["id"]),
        "one event, tried again: {:?}",
        tried
            .iter()
            .map(|r| r.json()["id"].clone())
            .collect::<Vec<_>>()
    );
    event
}

/// The event's data as text (`data`, or `data_base64` decoded).
fn data(e: &Value) -> String {
    use base64::Engine;
    if let Some(b) = e.get("data_base64").and_then(Value::as_str) {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b)
            .expect("base64 data");
        return String::from_utf8(bytes).expect("UTF-8 data");
    }
    match &e["data"] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A watcher that refuses every event (503).
async fn refusing() -> Sink {
    Sink::start(Behaviour::Script(vec![503; 100_000])).await
}

/// The first event the watcher took, once it took one; every event it took is that one.
async fn delivered(sink: &Sink) -> Value {
    let events = sink.wait_for_events(1, WAIT).await;
    for e in &events {
        assert_eq!(e["id"], events[0]["id"], "another event: {events:?}");
    }
    events[0].clone()
}

/// Whether the state file of a polling gateway (`sftp`, `azure-blob`) records `name`.
fn recorded(state: &Path, name: &str) -> bool {
    match std::fs::read(state) {
        Ok(text) => {
            let v: Value = serde_json::from_slice(&text).expect("the state file is JSON");
            v["entries"].get(name).is_some()
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => panic!("read {}: {e}", state.display()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_a_message_read_by_a_killed_gateway_comes_back_and_is_deleted_once_delivered() {
    let moto = Moto::shared();
    let queue = moto_support::unique("portico-kill");
    // Visibility timeout 2 s: the message is back soon after the kill.
    let queue_url = sqs_support::create_queue(&moto, &queue, 2);
    let config =
        format!("queueUrl: {queue_url}\nregion: us-east-1\nwaitTime: 1s\nvisibilityTimeout: 2s");
    let envs = [
        ("AWS_ACCESS_KEY_ID", "portico-test".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "portico-test-secret".to_string()),
    ];
    let watcher = refusing().await;
    let gateway = Gateway::new("sqs", &config, &watcher, &envs);
    let portico = gateway.start().await;
    sqs_support::send_body(&moto, &queue_url, "kill me");

    let tried = kill_when_refused(portico, &watcher).await;
    assert_eq!(data(&tried), "kill me");
    // Not deleted: visible again once its visibility timeout has passed.
    eventually(WAIT, || (moto.count(&queue_url) == (1, 0)).then_some(()))
        .await
        .unwrap_or_else(|| {
            panic!(
                "the message did not come back to the queue: {:?} (visible, in flight)",
                moto.count(&queue_url)
            )
        });

    let (sink, portico) = gateway.restart(watcher).await;
    let event = delivered(&sink).await;
    assert_eq!(event["id"], tried["id"], "the same message");
    assert_eq!(data(&event), "kill me");
    assert_eq!(event["messageid"], tried["messageid"]);
    // Received again: by the killed gateway first, then by this one.
    let count: u32 = event["receivecount"].as_str().unwrap().parse().unwrap();
    assert!(count >= 2, "received {count} times");
    eventually(WAIT, || (moto.count(&queue_url) == (0, 0)).then_some(()))
        .await
        .unwrap_or_else(|| {
            panic!(
                "the delivered message was not deleted: {:?} (visible, in flight)",
                moto.count(&queue_url)
            )
        });
    assert_eq!(portico.terminate().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_queue_a_message_read_by_a_killed_gateway_comes_back_and_is_deleted_once_delivered() {
    let azurite = Azurite::shared();
    let queue = azurite_support::unique("kill");
    azurite.create_queue(&queue);
    let config = format!("queue: {queue}\nvisibilityTimeout: 2s\npollInterval: 100ms");
    let envs = [(
        "AZURE_STORAGE_CONNECTION_STRING",
        azurite.connection_string(),
    )];
    let watcher = refusing().await;
    let gateway = Gateway::new("azure-queue", &config, &watcher, &envs);
    let portico = gateway.start().await;
    azurite.send(&queue, &["kill me"], false);

    let tried = kill_when_refused(portico, &watcher).await;
    assert_eq!(data(&tried), "kill me");
    // Not deleted: visible again once its visibility timeout has passed.
    eventually(WAIT, || (azurite.count(&queue) == (1, 1)).then_some(()))
        .await
        .unwrap_or_else(|| {
            panic!(
                "the message did not come back to the queue: {:?} (visible, all)",
                azurite.count(&queue)
            )
        });

    let (sink, portico) = gateway.restart(watcher).await;
    let event = delivered(&sink).await;
    assert_eq!(event["id"], tried["id"], "the same message");
    assert_eq!(data(&event), "kill me");
    let count: u32 = event["dequeuecount"].as_str().unwrap().parse().unwrap();
    assert!(count >= 2, "dequeued {count} times");
    eventually(WAIT, || (azurite.count(&queue) == (0, 0)).then_some(()))
        .await
        .unwrap_or_else(|| {
            panic!(
                "the delivered message was not deleted: {:?} (visible, all)",
                azurite.count(&queue)
            )
        });
    assert_eq!(portico.terminate().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_blob_a_blob_seen_by_a_killed_gateway_is_emitted_again_and_recorded_once_delivered() {
    let azurite = Azurite::shared();
    let container = azurite_support::unique("kill");
    azurite.create_container(&container);
    let state_dir = tempfile::tempdir().unwrap();
    let state = state_dir.path().join("listing.json");
    let config = format!(
        "container: {container}\ninterval: 1s\nstateFile: {}",
        state.display()
    );
    let envs = [(
        "AZURE_STORAGE_CONNECTION_STRING",
        azurite.connection_string(),
    )];
    let watcher = refusing().await;
    let gateway = Gateway::new("azure-blob", &config, &watcher, &envs);
    let portico = gateway.start().await;
    azurite.put_blob(&container, "report.csv", "a,b", "text/csv");

    let tried = kill_when_refused(portico, &watcher).await;
    assert_eq!(tried["blob"], "report.csv");
    assert_eq!(tried["change"], "created");
    assert!(
        !recorded(&state, "report.csv"),
        "the killed gateway recorded a blob whose event was not delivered"
    );

    let (sink, portico) = gateway.restart(watcher).await;
    let event = delivered(&sink).await;
    assert_eq!(event["id"], tried["id"], "the same change of the same blob");
    assert_eq!(event["blob"], "report.csv");
    eventually(WAIT, || recorded(&state, "report.csv").then_some(()))
        .await
        .expect("the delivered blob is recorded in the state file");
    assert_eq!(portico.terminate().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_row_read_by_a_killed_gateway_stays_in_the_slot_and_is_passed_once_delivered() {
    let n = Names::new();
    let c = client().await;
    c.batch_execute(&format!(
        "CREATE TABLE {} (id int PRIMARY KEY, name text)",
        n.table
    ))
    .await
    .unwrap();
    let config = format!(
        "url: {URL}\nreplication:\n  slot: {}\n  publication: {}\n  tables: [{}]\n  pollInterval: 100ms",
        n.slot, n.publication, n.table
    );
    let watcher = refusing().await;
    let gateway = Gateway::new("postgres", &config, &watcher, &[]);
    let portico = gateway.start().await;
    c.execute(
        &format!("INSERT INTO {} VALUES (1, 'kill me')", n.table),
        &[],
    )
    .await
    .unwrap();

    let tried = kill_when_refused(portico, &watcher).await;
    assert_eq!(tried["operation"], "insert");
    // The slot still holds the insert (read once the killed process's backend let go of it).
    let held = eventually_async(WAIT, || async { try_inserts_in_slot(&c, &n).await.ok() })
        .await
        .expect("the slot can be read");
    assert_eq!(held, 1, "the slot advanced past an insert not delivered");

    let (sink, portico) = gateway.restart(watcher).await;
    let event = delivered(&sink).await;
    assert_eq!(event["id"], tried["id"], "the same change");
    let row: Value = serde_json::from_str(&data(&event)).unwrap();
    assert_eq!(row["new"]["name"], "kill me");
    // Delivered: the slot goes past it.
    eventually_async(WAIT, || async {
        (try_inserts_in_slot(&c, &n).await.ok() == Some(0)).then_some(())
    })
    .await
    .expect("the slot advanced past the delivered insert");
    assert_eq!(portico.terminate().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sftp_a_file_read_by_a_killed_gateway_stays_and_is_deleted_once_delivered() {
    let sshd = Sshd::start();
    let state = sshd.scratch().join("state/listing.json");
    let config = format!(
        "address: 127.0.0.1:{}\nuser: {}\ndirectory: {}\nprivateKeyFile: {}\nhostKey: {}\n\
         interval: 1s\nstateFile: {}\nafterAccept: delete",
        sshd.port,
        sshd.user,
        sshd.files.display(),
        sshd.client_key.display(),
        sshd.host_key,
        state.display(),
    );
    let watcher = refusing().await;
    let gateway = Gateway::new("sftp", &config, &watcher, &[]);
    let portico = gateway.start().await;
    let file = sshd.files.join("kill.txt");
    std::fs::write(&file, "kill me").unwrap();

    let tried = kill_when_refused(portico, &watcher).await;
    assert_eq!(data(&tried), "kill me");
    assert!(
        file.exists(),
        "the killed gateway deleted a file not delivered"
    );
    assert!(!recorded(&state, "kill.txt"), "recorded, not delivered");

    let (sink, portico) = gateway.restart(watcher).await;
    let event = delivered(&sink).await;
    assert_eq!(data(&event), "kill me");
    assert_eq!(event["path"], file.display().to_string());
    eventually(WAIT, || (!file.exists()).then_some(()))
        .await
        .expect("the delivered file is deleted");
    assert_eq!(portico.terminate().await, Some(0));
}
