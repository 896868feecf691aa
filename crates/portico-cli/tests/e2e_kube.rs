//! End to end in a (fake) cluster: the real `portico` binary run without a file, with the
//! environment the controller gives a gateway pod and a `KUBECONFIG` pointing at the fake API
//! server (crates/fake-kube). The Gateway comes from the API, its configurations from the
//! ConfigMap (followed live), its nodes go to `Gateway.status.nodes` and its transitions to
//! Events.

mod support;

use std::time::Duration;

use fake_kube::FakeKube;
use serde_json::{Value, json};
use support::{Behaviour, Portico, Sink};

const WAIT: Duration = Duration::from_secs(20);
const GW: &str = "portico.dev/v1alpha1";

fn nodes(fake: &FakeKube) -> serde_json::Map<String, Value> {
    fake.get(GW, "Gateway", "ns", "cal")
        .and_then(|g| g["status"]["nodes"].as_object().cloned())
        .unwrap_or_default()
}

fn node_phase(fake: &FakeKube, src: &str) -> Option<String> {
    nodes(fake)
        .values()
        .find(|n| n["name"] == src)
        .and_then(|n| n["phase"].as_str().map(String::from))
}

fn configmap(data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "cal-cm", "namespace": "ns"}, "data": data})
}

#[tokio::test]
async fn a_gateway_in_a_cluster_follows_its_configmap_and_writes_its_status() {
    let fake = FakeKube::start().await;
    let sink = Sink::start(Behaviour::Ok).await;
    fake.create(json!({
        "apiVersion": GW, "kind": "Gateway",
        "metadata": {"name": "cal", "namespace": "ns"},
        "spec": {"type": "calendar", "configMap": "cal-cm", "watchers": {"urls": [sink.url()]}},
    }));
    fake.create(configmap(json!({"tick": "interval: 200ms"})));
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, fake.kubeconfig()).expect("write kubeconfig");

    let portico = Portico::start(
        &["run"],
        &[
            ("KUBECONFIG", kubeconfig.to_str().unwrap()),
            ("GATEWAY_NAMESPACE", "ns"),
            ("GATEWAY_NAME", "cal"),
            ("GATEWAY_PROCESSOR_CONFIG_MAP", "cal-cm"),
        ],
    )
    .await;

    // The ConfigMap's configuration runs and its events reach the watcher.
    let events = sink.wait_for_events(1, WAIT).await;
    assert_eq!(events[0]["source"], "cal/tick");
    assert_eq!(events[0]["type"], "calendar");
    fake.wait_for("tick Running in status.nodes", WAIT, |f| {
        (node_phase(f, "tick").as_deref() == Some("Running")).then_some(())
    })
    .await;
    fake.wait_for("a Running Event", WAIT, |f| {
        f.list("v1", "Event", "ns")
            .iter()
            .any(|e| e["reason"] == "Running" && e["involvedObject"]["name"] == "cal")
            .then_some(())
    })
    .await;

    // Live update: a new configuration, and an invalid one that becomes an Error node.
    fake.replace(configmap(
        json!({"tick": "interval: 200ms", "tock": "interval: 300ms", "bad": "interval: nope"}),
    ));
    fake.wait_for("tock Running and bad in Error", WAIT, |f| {
        (node_phase(f, "tock").as_deref() == Some("Running")
            && node_phase(f, "bad").as_deref() == Some("Error"))
        .then_some(())
    })
    .await;

    // Deleting the ConfigMap stops every configuration: the nodes leave the status.
    fake.delete("v1", "ConfigMap", "ns", "cal-cm")
        .expect("the ConfigMap exists");
    fake.wait_for("no nodes left", WAIT, |f| nodes(f).is_empty().then_some(()))
        .await;

    let code = portico.terminate().await;
    assert_eq!(code, Some(0));
}
