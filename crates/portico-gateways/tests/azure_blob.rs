//! The `azure-blob` gateway against Azurite, blobs written by Microsoft's own SDK: created,
//! changed and deleted blobs become events with the blob's properties; the listing is kept,
//! so a restart emits only what changed, and an event emitted again has the same `eventid`;
//! a change whose event was not delivered (ackAfterDelivery) is emitted again; a SAS token
//! lists the container; a lost service is reported on the node and polling resumes.

mod azurite_support;
mod broker_support;

use std::sync::Arc;
use std::time::Duration;

use azurite_support::{Azurite, unique};
use broker_support::{Rig, ext};
use portico::Phase;
use portico::cloudevents::CloudEvent;
use portico::testing::Delivery;
use portico_gateways::azure_blob::AzureBlob;
use serde_json::Value;

fn json(e: &CloudEvent) -> Value {
    serde_json::from_slice(e.data.as_ref().unwrap().as_bytes()).unwrap()
}

/// The account in a connection string file, and the state files.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new(azurite: &Azurite) -> Files {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("connection"), azurite.connection_string()).unwrap();
        Files { dir }
    }

    fn config(&self, container: &str, state: &str, extra: &str) -> String {
        format!(
            "container: {container}\ninterval: 1s\nconnectionStringFile: {}\nstateFile: {}\n{extra}",
            self.dir.path().join("connection").display(),
            self.dir.path().join(state).display()
        )
    }
}

#[tokio::test]
async fn created_changed_and_deleted_blobs_become_events_and_a_restart_emits_only_what_changed() {
    let azurite = Azurite::shared();
    let container = unique("photos");
    azurite.create_container(&container);
    let files = Files::new(&azurite);
    let config = files.config(&container, "one.json", "");
    let mut rig = Rig::new("azgw", "azure-blob", Arc::new(AzureBlob));
    rig.apply(&[("photos", &config)]).await;
    rig.wait_phase("photos", Phase::Running).await;

    let etag = azurite.put_blob(&container, "in/a b.txt", "hello", "text/plain");
    let created = rig.exactly(1, Duration::from_millis(1500)).await.remove(0);
    assert_eq!(created.ty, "azure-blob");
    assert_eq!(ext(&created, "change").as_deref(), Some("created"));
    assert_eq!(ext(&created, "blob").as_deref(), Some("in/a b.txt"));
    assert_eq!(
        ext(&created, "container").as_deref(),
        Some(container.as_str())
    );
    // The listing gives the ETag without the quotes of the HTTP header.
    assert_eq!(
        ext(&created, "etag").as_deref(),
        Some(etag.trim_matches('"'))
    );
    let d = json(&created);
    assert_eq!(d["event"], "created");
    assert_eq!(d["account"], "devstoreaccount1");
    assert_eq!(d["name"], "in/a b.txt");
    assert_eq!(d["size"], 5);
    assert_eq!(d["contentType"], "text/plain");
    assert_eq!(d["metadata"]["origin"], "test");
    assert_eq!(
        d["url"],
        format!("{}/{container}/in/a%20b.txt", azurite.blob_url)
    );
    assert!(d["lastModified"].is_string(), "{d}");
    let first_id = ext(&created, "eventid").unwrap();
    assert_eq!(created.id, first_id);

    let etag2 = azurite.put_blob(&container, "in/a b.txt", "hello again", "text/plain");
    assert_ne!(etag, etag2);
    let changed = rig.exactly(1, Duration::from_millis(1500)).await.remove(0);
    assert_eq!(ext(&changed, "change").as_deref(), Some("changed"));
    assert_eq!(json(&changed)["size"], 11);
    assert_ne!(ext(&changed, "eventid").unwrap(), first_id);

    // Stopped; what happens meanwhile is emitted once it runs again, nothing else.
    rig.apply(&[]).await;
    azurite.delete_blob(&container, "in/a b.txt");
    azurite.put_blob(&container, "b.json", "{}", "application/json");
    rig.apply(&[("photos", &config)]).await;
    let got = rig.exactly(2, Duration::from_millis(2500)).await;
    let mut changes: Vec<(String, String)> = got
        .iter()
        .map(|e| (ext(e, "change").unwrap(), ext(e, "blob").unwrap()))
        .collect();
    changes.sort();
    assert_eq!(
        changes,
        [
            ("created".to_string(), "b.json".to_string()),
            ("deleted".to_string(), "in/a b.txt".to_string())
        ]
    );

    // Another listing (no state) emits the same blob version with the same eventid.
    let b_id = got
        .iter()
        .find(|e| ext(e, "blob").as_deref() == Some("b.json"))
        .and_then(|e| ext(e, "eventid"))
        .unwrap();
    rig.apply(&[
        ("photos", &config),
        (
            "again",
            &files.config(&container, "two.json", "events: [created]"),
        ),
    ])
    .await;
    let again = rig.exactly(1, Duration::from_millis(1500)).await.remove(0);
    assert_eq!(again.subject.as_deref(), Some("again"));
    assert_eq!(ext(&again, "eventid"), Some(b_id));
    rig.supervisor.stop_all().await;
}

#[tokio::test]
async fn a_change_whose_event_was_not_delivered_is_emitted_again() {
    let azurite = Azurite::shared();
    let container = unique("held");
    azurite.create_container(&container);
    let files = Files::new(&azurite);
    // Only deletions, listed with a SAS token.
    let sas = azurite.container_sas(&container);
    std::fs::write(files.dir.path().join("sas"), &sas).unwrap();
    let config = format!(
        "container: {container}\ninterval: 1s\nendpoint: {}\nsasTokenFile: {}\nstateFile: {}\nevents: [deleted]",
        azurite.blob_url,
        files.dir.path().join("sas").display(),
        files.dir.path().join("held.json").display()
    );
    let outbox = tempfile::tempdir().unwrap();
    let mut rig = Rig::with_delivery(
        "azgw",
        "azure-blob",
        Arc::new(AzureBlob),
        16,
        Delivery::AckAfterDelivery(outbox.path().to_path_buf()),
    );
    rig.apply(&[("held", &config)]).await;
    rig.wait_phase("held", Phase::Running).await;
    azurite.put_blob(&container, "x", "x", "text/plain");
    // Recorded without an event; its deletion is one.
    assert!(rig.next_event(Duration::from_millis(2500)).await.is_none());
    rig.watcher_up(false);
    azurite.delete_blob(&container, "x");
    rig.wait_received("held", 1).await;
    // Stopped before the watcher took it: not recorded, emitted again.
    rig.apply(&[]).await;
    rig.watcher_up(true);
    rig.apply(&[("held", &config)]).await;
    let mut ids = Vec::new();
    while let Some(e) = rig.next_event(Duration::from_millis(2500)).await {
        assert_eq!(ext(&e, "change").as_deref(), Some("deleted"));
        ids.push(ext(&e, "eventid").unwrap());
    }
    assert!(!ids.is_empty(), "the deletion was not emitted again");
    assert!(ids.iter().all(|i| *i == ids[0]), "{ids:?}");
    let shown = format!("{:?} {}", rig.harness.nodes(), rig.harness.metrics_text());
    let signature = sas.split("sig=").nth(1).unwrap().split('&').next().unwrap();
    assert!(!shown.contains(signature));
    rig.supervisor.stop_all().await;
}

#[tokio::test]
async fn a_lost_service_is_reported_and_polling_resumes() {
    let mut azurite = Azurite::private();
    let container = unique("lost");
    azurite.create_container(&container);
    let files = Files::new(&azurite);
    let config = files.config(&container, "lost.json", "");
    let mut rig = Rig::new("azgw", "azure-blob", Arc::new(AzureBlob));
    rig.apply(&[("lost", &config)]).await;
    rig.wait_phase("lost", Phase::Running).await;

    azurite.kill();
    let node = rig.wait_phase("lost", Phase::Error).await;
    let endpoint = azurite.blob_url.trim_start_matches("http://");
    assert!(
        node.message.contains("Azure Storage") && node.message.contains(endpoint),
        "the error names the endpoint {endpoint}: {node:?}"
    );
    azurite.start();
    broker_support::wait_until("the missing container reported", || async {
        rig.node("lost")
            .filter(|n| n.phase == Phase::Error && n.message.contains("ContainerNotFound"))
    })
    .await;
    azurite.create_container(&container);
    rig.wait_phase("lost", Phase::Running).await;
    azurite.put_blob(&container, "after", "1", "text/plain");
    let got = rig.exactly(1, Duration::from_millis(1500)).await;
    assert_eq!(ext(&got[0], "blob").as_deref(), Some("after"));
    rig.supervisor.stop_all().await;
}
