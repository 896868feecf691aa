//! The `azure-queue` gateway against Azurite, messages put by Microsoft's own SDK: messages
//! become CloudEvents and are deleted; a message whose event is not accepted is not deleted
//! (kept invisible while its event waits, given back when the configuration stops, back after
//! its visibility timeout when the gateway is killed); a lost service is reported on the node
//! and reading resumes; SAS tokens work, and a refused key is shown nowhere.

mod azurite_support;
mod broker_support;

use std::sync::Arc;
use std::time::Duration;

use azurite_support::{Azurite, KEY, unique};
use broker_support::{Rig, WAIT, data, ext, wait_until};
use portico::Phase;
use portico::testing::Delivery;
use portico_gateways::azure_queue::AzureQueue;

/// A connection string in a file.
struct ConnectionFile {
    dir: tempfile::TempDir,
}

impl ConnectionFile {
    fn new(azurite: &Azurite) -> ConnectionFile {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("connection"),
            format!("{}\n", azurite.connection_string()),
        )
        .unwrap();
        ConnectionFile { dir }
    }

    fn line(&self) -> String {
        format!(
            "connectionStringFile: {}\n",
            self.dir.path().join("connection").display()
        )
    }
}

/// Waits until the queue holds `visible` visible messages and `all` in all.
async fn wait_count(azurite: &Azurite, queue: &str, visible: u64, all: u64) {
    wait_until(&format!("{visible} visible of {all} messages"), || async {
        (azurite.count(queue) == (visible, all)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn messages_become_events_with_their_extensions_and_are_deleted() {
    let azurite = Azurite::shared();
    let queue = unique("orders");
    azurite.create_queue(&queue);
    let file = ConnectionFile::new(&azurite);
    let mut rig = Rig::new("azgw", "azure-queue", Arc::new(AzureQueue));
    let config = format!("queue: {queue}\npollInterval: 100ms\n{}", file.line());
    rig.apply(&[("orders", &config)]).await;
    rig.wait_phase("orders", Phase::Running).await;

    let before = chrono::Utc::now() - chrono::Duration::seconds(2);
    // As today's SDKs write them (the text itself), and as Azure Functions expect (base64).
    azurite.send(&queue, &[r#"{"order": 1}"#, "plain words"], false);
    azurite.send(&queue, &["encoded <text> & more"], true);
    let got = rig.exactly(3, Duration::from_millis(1000)).await;
    for e in &got {
        assert_eq!(e.ty, "azure-queue");
        assert_eq!(e.source, "azgw/orders");
        assert_eq!(ext(e, "queue").as_deref(), Some(queue.as_str()));
        assert_eq!(ext(e, "account").as_deref(), Some("devstoreaccount1"));
        assert_eq!(ext(e, "dequeuecount").as_deref(), Some("1"));
        assert!(
            ext(e, "messageid").is_some_and(|id| !id.is_empty()),
            "{e:?}"
        );
        // The CloudEvent's id is the message's, the same if it comes again.
        assert_eq!(ext(e, "messageid").as_deref(), Some(e.id.as_str()));
        assert!(ext(e, "expirationtime").is_some(), "{e:?}");
        let time = e.time.unwrap();
        assert!(time >= before && time <= chrono::Utc::now(), "{time}");
    }
    let by_data = |d: &str| {
        got.iter()
            .find(|e| data(e) == d)
            .unwrap_or_else(|| panic!("no event {d:?} in {got:?}"))
    };
    assert_eq!(
        by_data(r#"{"order": 1}"#).datacontenttype.as_deref(),
        Some("application/json")
    );
    assert_eq!(
        by_data("plain words").datacontenttype.as_deref(),
        Some("text/plain")
    );
    assert_eq!(
        by_data("encoded <text> & more").datacontenttype.as_deref(),
        Some("text/plain")
    );
    wait_count(&azurite, &queue, 0, 0).await;
    rig.supervisor.stop_all().await;
}

#[tokio::test]
async fn a_message_is_deleted_only_once_its_event_is_accepted_and_kept_invisible_meanwhile() {
    let azurite = Azurite::shared();
    let queue = unique("held");
    azurite.create_queue(&queue);
    let want = ["one", "two", "three"];
    azurite.send(&queue, &want, false);
    // Room for one event, and the watcher down: the second event waits, unaccepted, with the
    // third message held behind it. The account key from an environment variable, the
    // endpoint given.
    let key_env = unique("PORTICO_TEST_AZURE_KEY_");
    // SAFETY: a variable of this test alone, set before the gateway reads it.
    unsafe { std::env::set_var(&key_env, KEY) };
    let mut rig = Rig::with_queue_size("azgw", "azure-queue", Arc::new(AzureQueue), 1);
    rig.watcher_up(false);
    let config = format!(
        "queue: {queue}\nendpoint: {}\naccountKeyEnv: {key_env}\nvisibilityTimeout: 2s\npollInterval: 100ms",
        azurite.queue_url
    );
    rig.apply(&[("held", &config)]).await;
    rig.wait_phase("held", Phase::Running).await;
    rig.wait_received("held", 2).await;
    // The three were taken in one batch; none comes back while the events wait, over three
    // visibility timeouts: their visibility is extended.
    let watch_until = tokio::time::Instant::now() + Duration::from_secs(6);
    while tokio::time::Instant::now() < watch_until {
        assert_eq!(
            azurite.count(&queue),
            (0, 3),
            "a message whose event waits came back or was deleted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Stopped before the waiting event was accepted: the first message (accepted) is
    // deleted, the other two are not, and are visible again at once.
    rig.apply(&[]).await;
    wait_count(&azurite, &queue, 2, 2).await;

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
        seen.insert(data(&e));
    }
    assert_eq!(seen, want.iter().map(|b| b.to_string()).collect());
    wait_count(&azurite, &queue, 0, 0).await;
    rig.supervisor.stop_all().await;
}

/// A gateway killed (its runtime dropped: no code of its runs) before its event was delivered,
/// in `ackAfterDelivery`: the message was not deleted, and comes back after its visibility
/// timeout, to the next gateway.
#[test]
fn a_message_whose_event_was_not_delivered_comes_back_after_a_kill() {
    let azurite = Azurite::shared();
    let queue = unique("killed");
    azurite.create_queue(&queue);
    let file = ConnectionFile::new(&azurite);
    let config = format!(
        "queue: {queue}\nvisibilityTimeout: 2s\npollInterval: 100ms\n{}",
        file.line()
    );
    let outbox = tempfile::tempdir().unwrap();
    let killed = tokio::runtime::Runtime::new().unwrap();
    let rig = killed.block_on(async {
        let mut rig = Rig::with_delivery(
            "azgw",
            "azure-queue",
            Arc::new(AzureQueue),
            16,
            Delivery::AckAfterDelivery(outbox.path().join("one")),
        );
        rig.watcher_up(false);
        rig.apply(&[("k", &config)]).await;
        rig.wait_phase("k", Phase::Running).await;
        azurite.send(&queue, &["survivor"], false);
        rig.wait_received("k", 1).await;
        rig
    });
    // Killed: nothing of the gateway runs again, nothing is given back.
    killed.shutdown_background();
    std::mem::forget(rig);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut rig = Rig::new("azgw", "azure-queue", Arc::new(AzureQueue));
        rig.apply(&[("k", &config)]).await;
        let got = rig.exactly(1, Duration::from_millis(500)).await;
        assert_eq!(data(&got[0]), "survivor");
        assert_eq!(ext(&got[0], "dequeuecount").as_deref(), Some("2"));
        wait_count(&azurite, &queue, 0, 0).await;
        rig.supervisor.stop_all().await;
    });
}

#[tokio::test]
async fn a_lost_service_is_reported_and_reading_resumes() {
    let mut azurite = Azurite::private();
    let queue = unique("lost");
    azurite.create_queue(&queue);
    let file = ConnectionFile::new(&azurite);
    let mut rig = Rig::new("azgw", "azure-queue", Arc::new(AzureQueue));
    let config = format!("queue: {queue}\npollInterval: 100ms\n{}", file.line());
    rig.apply(&[("lost", &config)]).await;
    rig.wait_phase("lost", Phase::Running).await;

    azurite.kill();
    let node = rig.wait_phase("lost", Phase::Error).await;
    let endpoint = azurite.queue_url.trim_start_matches("http://");
    assert!(
        node.message.contains("Azure Storage") && node.message.contains(endpoint),
        "the error names the endpoint {endpoint}: {node:?}"
    );
    // A new Azurite (in memory) knows no queue: still an error, saying so.
    azurite.start();
    wait_until("the missing queue reported", || async {
        rig.node("lost")
            .filter(|n| n.phase == Phase::Error && n.message.contains("QueueNotFound"))
    })
    .await;
    azurite.create_queue(&queue);
    rig.wait_phase("lost", Phase::Running).await;
    azurite.send(&queue, &["after"], false);
    let got = rig.exactly(1, Duration::from_millis(500)).await;
    assert_eq!(data(&got[0]), "after");
    wait_count(&azurite, &queue, 0, 0).await;
    rig.supervisor.stop_all().await;
}

#[tokio::test]
async fn a_sas_token_reads_the_queue_and_a_refused_key_is_shown_nowhere() {
    let azurite = Azurite::shared();
    let queue = unique("sas");
    azurite.create_queue(&queue);
    let dir = tempfile::tempdir().unwrap();
    let sas = azurite.queue_sas(&queue);
    std::fs::write(dir.path().join("sas"), &sas).unwrap();
    // A key of the right shape that is not the account's.
    let wrong = "V3JvbmdLZXlXcm9uZ0tleVdyb25nS2V5V3JvbmdLZXk=";
    std::fs::write(dir.path().join("wrong"), wrong).unwrap();
    let mut rig = Rig::new("azgw", "azure-queue", Arc::new(AzureQueue));
    let sas_config = format!(
        "queue: {queue}\nendpoint: {}\nsasTokenFile: {}\npollInterval: 100ms",
        azurite.queue_url,
        dir.path().join("sas").display()
    );
    let wrong_config = format!(
        "queue: {queue}\nendpoint: {}\naccountKeyFile: {}\npollInterval: 100ms",
        azurite.queue_url,
        dir.path().join("wrong").display()
    );
    rig.apply(&[("sas", &sas_config), ("wrong", &wrong_config)])
        .await;
    rig.wait_phase("sas", Phase::Running).await;
    let node = rig.wait_phase("wrong", Phase::Error).await;
    assert!(
        node.message.contains("AuthenticationFailed") || node.message.contains("403"),
        "{node:?}"
    );
    azurite.send(&queue, &["by sas"], false);
    let got = rig.exactly(1, Duration::from_millis(500)).await;
    assert_eq!(data(&got[0]), "by sas");
    assert_eq!(ext(&got[0], "account").as_deref(), Some("devstoreaccount1"));
    let signature = sas.split("sig=").nth(1).unwrap().split('&').next().unwrap();
    let shown = format!("{:?} {}", rig.harness.nodes(), rig.harness.metrics_text());
    for secret in [wrong, KEY, signature, &sas] {
        assert!(!shown.contains(secret), "{secret} shown: {shown}");
    }
    rig.supervisor.stop_all().await;
}
