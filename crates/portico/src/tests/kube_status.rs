//! Gateway status in a cluster, against the fake API server (crates/fake-kube): node changes
//! arrive in `status.nodes` (a burst as one write) and as Events, and a conflict is retried.

use std::time::Duration;

use crate::ConfigId;
use crate::kube_status::{GatewayRef, KubeStatusOptions, KubeStatusSink};
use crate::metrics::Metrics;
use crate::status::{Phase, StatusBoard};
use fake_kube::FakeKube;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(15);

fn status_writes(fake: &FakeKube) -> Vec<u16> {
    fake.requests()
        .iter()
        .filter(|r| {
            r.method == "PATCH"
                && r.path == "/apis/portico.dev/v1alpha1/namespaces/ns/gateways/gw/status"
        })
        .map(|r| r.status)
        .collect()
}

fn node(fake: &FakeKube, id: ConfigId) -> Option<Value> {
    let gw = fake.get("portico.dev/v1alpha1", "Gateway", "ns", "gw")?;
    let n = gw["status"]["nodes"][id.to_string()].clone();
    (!n.is_null()).then_some(n)
}

fn events(fake: &FakeKube) -> Vec<Value> {
    fake.list("v1", "Event", "ns")
}

#[tokio::test]
async fn nodes_reach_status_and_events_and_conflicts_are_retried() {
    let fake = FakeKube::start().await;
    let gw = fake.create(json!({
        "apiVersion": "portico.dev/v1alpha1", "kind": "Gateway",
        "metadata": {"name": "gw", "namespace": "ns"},
        "spec": {"type": "calendar"},
        "status": {"phase": "Running", "nodes": {
            "00000000000000aa": {"id": "00000000000000aa", "name": "old", "phase": "Running"},
            "legacy": {"id": "legacy", "name": "older", "phase": "Running"}}},
    }));
    let uid = gw["metadata"]["uid"].as_str().map(String::from);

    let stop = CancellationToken::new();
    let (sink, writer) = KubeStatusSink::start(
        fake.client(),
        GatewayRef {
            group: crate::spec::GatewayGroup::Portico,
            namespace: "ns".into(),
            name: "gw".into(),
            uid: uid.clone(),
            previous_nodes: vec!["00000000000000aa".to_string(), "legacy".to_string()],
            replica: "gw-0".into(),
        },
        KubeStatusOptions {
            coalesce: Duration::from_millis(200),
            ..Default::default()
        },
        stop.clone(),
    );
    let board = StatusBoard::new(Metrics::new(), vec![sink]);

    // A burst: two configurations go through three phases each.
    let (a, b) = (ConfigId::of("a", "1"), ConfigId::of("b", "2"));
    for (id, src) in [(a, "a"), (b, "b")] {
        board.set(id, src, Phase::Initialized, "");
        board.set(id, src, Phase::Running, "");
    }
    board.set(b, "b", Phase::Error, "boom");
    let n = fake
        .wait_for("node b in Error", WAIT, |f| {
            node(f, b).filter(|n| n["phase"] == "Error")
        })
        .await;
    assert_eq!(n["name"], "b");
    assert_eq!(n["message"], "boom");
    // Every field of a node, as the Gateway's schema has them.
    let shown: crate::spec::NodeStatus = serde_json::from_value(n.clone()).expect("a node");
    assert_eq!(shown.id, b.to_string());
    assert_eq!((shown.phase.as_str(), shown.restarts), ("Error", 0));
    for t in [&shown.started_at, &shown.updated_at] {
        let at = chrono::DateTime::parse_from_rfc3339(t).expect("an RFC 3339 time");
        assert_eq!(
            *t,
            at.to_utc()
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        assert!(
            (chrono::Utc::now() - at.to_utc()).num_seconds().abs() < 60,
            "{t}"
        );
    }
    assert_eq!(n.as_object().map(|o| o.len()), Some(8), "{n}");
    assert_eq!(node(&fake, a).expect("node a")["phase"], "Running");
    assert_eq!(
        node(&fake, a).expect("node a")["replica"],
        "gw-0",
        "the replica that runs it"
    );
    assert_eq!(status_writes(&fake), [200], "a burst is one status write");
    let gw = fake
        .get("portico.dev/v1alpha1", "Gateway", "ns", "gw")
        .unwrap();
    for earlier in ["00000000000000aa", "legacy"] {
        assert!(
            gw["status"]["nodes"].get(earlier).is_none(),
            "a node of an earlier run is removed: {gw}"
        );
    }
    assert_eq!(
        gw["status"]["phase"], "Running",
        "the controller's fields are kept"
    );

    // Each transition is an Event on the Gateway.
    let evs = fake
        .wait_for("five Events", WAIT, |f| {
            let e = events(f);
            (e.len() >= 5).then_some(e)
        })
        .await;
    assert_eq!(evs.len(), 5);
    for e in &evs {
        assert_eq!(e["involvedObject"]["kind"], "Gateway");
        assert_eq!(e["involvedObject"]["name"], "gw");
        assert_eq!(e["involvedObject"]["uid"].as_str(), uid.as_deref());
    }
    let warning = evs
        .iter()
        .find(|e| e["type"] == "Warning")
        .expect("a Warning event for the Error");
    assert_eq!(warning["reason"], "Error");
    assert!(warning["message"].as_str().unwrap().contains("boom"));

    // A conflict on the next write is retried.
    fake.fail_next("PATCH", "/gateways/gw/status", 409, 2);
    board.remove(a);
    fake.wait_for("node a removed", WAIT, |f| {
        node(f, a).is_none().then_some(())
    })
    .await;
    assert_eq!(status_writes(&fake), [200, 409, 409, 200]);
    assert!(node(&fake, b).is_some(), "b stays");
    fake.wait_for("a Removed event", WAIT, |f| {
        events(f)
            .iter()
            .any(|e| e["reason"] == "Removed")
            .then_some(())
    })
    .await;

    // The spec is not touched by status writes.
    let gw = fake
        .get("portico.dev/v1alpha1", "Gateway", "ns", "gw")
        .unwrap();
    assert_eq!(gw["spec"], json!({"type": "calendar"}));

    stop.cancel();
    writer.await.expect("the writer ends when stopped");
    drop(board);
}
