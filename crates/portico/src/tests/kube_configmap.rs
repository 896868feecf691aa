//! The ConfigMap source against the fake API server (crates/fake-kube): add, update and
//! delete reach the supervisor, and a `410 Gone` makes the source re-list without starting
//! anything twice.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::configuration::IdentifiedMap;
use crate::source::SourceEvent;
use crate::source::configmap::{ConfigMapRef, watch};
use crate::testing::Harness;
use crate::{ConfigContext, ConfigError, ConfigExecutor, Phase, SharedExecutor};
use fake_kube::FakeKube;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(15);

/// Counts the starts of each configuration (by `src`) and runs until stopped.
#[derive(Default)]
struct Counting(Mutex<BTreeMap<String, usize>>);

impl Counting {
    fn starts(&self, src: &str) -> usize {
        self.0.lock().unwrap().get(src).copied().unwrap_or(0)
    }
}

struct CountingExecutor(Arc<Counting>);

impl ConfigExecutor for CountingExecutor {
    type Config = ();

    fn validate(&self, _: &ConfigContext) -> Result<(), ConfigError> {
        Ok(())
    }

    async fn start_config(&self, ctx: ConfigContext, (): ()) -> Result<(), ConfigError> {
        *self
            .0
            .0
            .lock()
            .unwrap()
            .entry(ctx.src().to_string())
            .or_default() += 1;
        ctx.running();
        ctx.stopped().await;
        Ok(())
    }
}

fn configmap(data: serde_json::Value) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "gw-configmap", "namespace": "ns"},
        "data": data,
    })
}

async fn next(rx: &mut mpsc::Receiver<SourceEvent>) -> SourceEvent {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("a source event in time")
        .expect("the source is still running")
}

fn map(pairs: &[(&str, &str)]) -> SourceEvent {
    SourceEvent::Map(IdentifiedMap::new(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    ))
}

fn lists(fake: &FakeKube) -> usize {
    fake.requests()
        .iter()
        .filter(|r| {
            r.method == "GET"
                && r.path == "/api/v1/namespaces/ns/configmaps"
                && !r.query.contains("watch=true")
        })
        .count()
}

#[tokio::test]
async fn add_update_delete_reach_the_supervisor_and_410_relists_without_restarts() {
    let fake = FakeKube::start().await;
    // Another ConfigMap in the namespace must never be seen.
    fake.create(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "other", "namespace": "ns"}, "data": {"z": "zz"}}));

    let counting = Arc::new(Counting::default());
    let harness = Harness::new("gw", "test");
    let executor: SharedExecutor = Arc::new(CountingExecutor(counting.clone()));
    let mut supervisor = harness.supervisor(executor);

    let (tx, mut rx) = mpsc::channel(4);
    let stop = CancellationToken::new();
    let source = tokio::spawn(watch(
        fake.client(),
        ConfigMapRef {
            namespace: "ns".into(),
            name: "gw-configmap".into(),
        },
        tx,
        stop.clone(),
    ));

    // No ConfigMap yet: nothing to run.
    assert_eq!(next(&mut rx).await, SourceEvent::Gone);

    // Add.
    fake.create(configmap(json!({"a": "one"})));
    let ev = next(&mut rx).await;
    assert_eq!(ev, map(&[("a", "one")]));
    let SourceEvent::Map(m) = ev else {
        unreachable!()
    };
    supervisor.apply_identified(&m).await;
    harness
        .wait_for_phase("a", Phase::Running, WAIT)
        .await
        .expect("a runs");

    // Update: a new key starts, the unchanged one keeps running.
    fake.replace(configmap(json!({"a": "one", "b": "two"})));
    let ev = next(&mut rx).await;
    assert_eq!(ev, map(&[("a", "one"), ("b", "two")]));
    let SourceEvent::Map(m) = ev else {
        unreachable!()
    };
    supervisor.apply_identified(&m).await;
    harness
        .wait_for_phase("b", Phase::Running, WAIT)
        .await
        .expect("b runs");
    assert_eq!(counting.starts("a"), 1);

    // The history is compacted and the watch breaks: resuming gets 410 Gone, the source
    // re-lists, finds the same map and starts nothing.
    let lists_before = lists(&fake);
    fake.expire_history();
    fake.break_watches();
    fake.wait_for("a re-list after 410 Gone", WAIT, |f| {
        (lists(f) > lists_before).then_some(())
    })
    .await;
    // A change after the re-list arrives, and is the next event: the re-list itself sent none.
    fake.replace(configmap(json!({"a": "one", "b": "three"})));
    let ev = next(&mut rx).await;
    assert_eq!(ev, map(&[("a", "one"), ("b", "three")]));
    let SourceEvent::Map(m) = ev else {
        unreachable!()
    };
    supervisor.apply_identified(&m).await;
    let b = harness
        .wait_for_phase("b", Phase::Running, WAIT)
        .await
        .expect("b runs");
    assert_eq!(b.id, crate::ConfigId::of("b", "three"));
    assert_eq!(counting.starts("a"), 1, "a must not be started twice");
    assert_eq!(
        counting.starts("b"),
        2,
        "b restarts once, for its new value"
    );

    // A resumed watch (broken without compaction) re-lists nothing and loses nothing.
    fake.break_watches();
    fake.replace(configmap(json!({"a": "one", "b": "three", "c": "four"})));
    let ev = next(&mut rx).await;
    assert_eq!(ev, map(&[("a", "one"), ("b", "three"), ("c", "four")]));

    // Delete: every configuration stops.
    fake.delete("v1", "ConfigMap", "ns", "gw-configmap")
        .expect("the ConfigMap exists");
    assert_eq!(next(&mut rx).await, SourceEvent::Gone);
    supervisor.stop_all().await;
    assert!(harness.nodes().is_empty());

    // Re-created: it runs again.
    fake.create(configmap(json!({"a": "one"})));
    assert_eq!(next(&mut rx).await, map(&[("a", "one")]));

    stop.cancel();
    source
        .await
        .expect("the source task ends")
        .expect("the source ends without error when stopped");
    assert_eq!(counting.starts("z"), 0);
}
