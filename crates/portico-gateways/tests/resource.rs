//! The `resource` gateway against the fake API server (crates/fake-kube): ADD, UPDATE and
//! DELETE of a custom kind with filters applied, and a broken watch (with `410 Gone` on
//! resume) that loses nothing and repeats nothing.

use std::sync::Arc;
use std::time::Duration;

use fake_kube::FakeKube;
use portico::testing::Harness;
use portico::{Phase, SharedExecutor};
use portico_gateways::resource::Resource;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(15);
const API: &str = "example.com/v1";

fn widget(name: &str, labels: Value, annotations: Value) -> Value {
    json!({
        "apiVersion": API, "kind": "Widget",
        "metadata": {"name": name, "namespace": "ns", "labels": labels, "annotations": annotations},
        "spec": {"size": 1},
    })
}

fn good(name: &str) -> Value {
    widget(name, json!({"app": "x"}), json!({"team": "a"}))
}

async fn next(h: &mut Harness) -> (String, String) {
    let ev = h.next_event(WAIT).await.expect("an event in time");
    assert_eq!(ev.datacontenttype.as_deref(), Some("application/json"));
    let Some(portico::cloudevents::Data::Json(bytes)) = &ev.data else {
        panic!("expected JSON data: {ev:?}");
    };
    let data: Value = serde_json::from_slice(bytes).expect("JSON payload");
    (
        data["type"].as_str().unwrap_or_default().to_string(),
        data["object"]["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

fn pair(t: &str, n: &str) -> (String, String) {
    (t.to_string(), n.to_string())
}

#[tokio::test]
async fn emits_add_update_delete_with_filters_and_survives_a_broken_watch() {
    let fake = FakeKube::start().await;
    fake.create(good("w-old"));
    fake.create(good("w-stay"));
    let mut elsewhere = good("w-elsewhere");
    elsewhere["metadata"]["namespace"] = json!("other");
    fake.create(elsewhere);

    let mut h = Harness::new("widgets", "resource");
    h.set_kube_client(fake.client());
    let executor: SharedExecutor = Arc::new(Resource::default());
    let mut supervisor = h.supervisor(executor);
    let config = "group: example.com\nversion: v1\nkind: Widget\nnamespace: ns\nfilter:\n  prefix: w-\n  labels: {app: x}\n  annotations: {team: a}\n";
    supervisor
        .apply(&[("widgets".to_string(), config.to_string())].into())
        .await;
    h.wait_for_phase("widgets", Phase::Running, WAIT)
        .await
        .expect("the configuration runs");

    // What exists at start is reported once, as the original's informer did; the other
    // namespace's is not.
    let mut start = vec![next(&mut h).await, next(&mut h).await];
    start.sort();
    assert_eq!(start, [pair("ADD", "w-old"), pair("ADD", "w-stay")]);

    // Filters: wrong prefix, wrong label, wrong annotation: nothing. Then a good one: ADD.
    fake.create(widget("x-1", json!({"app": "x"}), json!({"team": "a"})));
    fake.create(widget("w-label", json!({"app": "y"}), json!({"team": "a"})));
    fake.create(widget(
        "w-annotation",
        json!({"app": "x"}),
        json!({"team": "b"}),
    ));
    fake.create(good("w-1"));
    assert_eq!(next(&mut h).await, pair("ADD", "w-1"));

    // UPDATE, then DELETE.
    fake.patch(API, "Widget", "ns", "w-1", json!({"spec": {"size": 2}}))
        .expect("w-1 exists");
    assert_eq!(next(&mut h).await, pair("UPDATE", "w-1"));
    fake.delete(API, "Widget", "ns", "w-1").expect("w-1 exists");
    assert_eq!(next(&mut h).await, pair("DELETE", "w-1"));

    // The watch breaks, the next attempt fails, and the history is compacted meanwhile: the
    // watcher re-lists after 410 Gone. What changed while it was away is reported once,
    // and nothing else is repeated.
    fake.fail_next("GET", "/widgets", 503, 1);
    fake.break_watches();
    fake.create(good("w-2"));
    fake.delete(API, "Widget", "ns", "w-old")
        .expect("w-old exists");
    fake.expire_history();
    let mut missed = vec![next(&mut h).await, next(&mut h).await];
    missed.sort();
    assert_eq!(missed, [pair("ADD", "w-2"), pair("DELETE", "w-old")]);
    h.wait_for_phase("widgets", Phase::Running, WAIT)
        .await
        .expect("running again after the broken watch");

    // The watch goes on after the re-list.
    fake.patch(API, "Widget", "ns", "w-stay", json!({"spec": {"size": 3}}))
        .expect("w-stay exists");
    assert_eq!(next(&mut h).await, pair("UPDATE", "w-stay"));
    assert!(h.try_next_event().is_none(), "no event is repeated");

    supervisor.stop_all().await;
}
