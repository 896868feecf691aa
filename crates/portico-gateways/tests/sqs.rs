//! The `sqs` gateway against moto's SQS: messages and their attributes become CloudEvents
//! and are deleted; a message whose event is not accepted is not deleted (and is kept
//! invisible while its event waits); a FIFO queue's message groups keep their order; an SQS
//! that goes away is reported on the node, and reading resumes once it is back.

mod broker_support;
mod moto_support;
mod sqs_support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use broker_support::{Rig, WAIT, data, ext, wait_until};
use moto_support::{Moto, unique};
use portico::Phase;
use portico_gateways::sqs::Sqs;
use serde_json::json;
use sqs_support::{create_queue, send, send_body};

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

/// Waits until the queue holds no message, visible or in flight.
async fn wait_empty(moto: &Moto, queue_url: &str) {
    wait_until("the queue to be empty", || async {
        (moto.count(queue_url) == (0, 0)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn messages_become_events_with_their_attributes_and_are_deleted() {
    let moto = Moto::shared();
    let queue = unique("portico-q");
    let queue_url = create_queue(&moto, &queue, 30);
    let keys = Keys::new();
    let mut rig = Rig::new("sqsgw", "sqs", Arc::new(Sqs));
    let config = format!(
        "queueUrl: {queue_url}\nregion: us-east-1\nwaitTime: 1s\n{}",
        keys.lines()
    );
    rig.apply(&[("orders", &config)]).await;
    rig.wait_phase("orders", Phase::Running).await;

    let before = chrono::Utc::now() - chrono::Duration::seconds(1);
    send(
        &moto,
        &queue_url,
        &json!([
            {"body": r#"{"order": 1}"#, "attributes": {
                "Author": ["String", "ana"],
                "Order-Id": ["Number", "41"],
                "Blob": ["Binary", "raw"],
            }},
            {"body": "plain words"},
        ]),
    );
    let got = rig.exactly(2, Duration::from_millis(1500)).await;
    for e in &got {
        assert_eq!(e.ty, "sqs");
        assert_eq!(e.source, "sqsgw/orders");
        assert_eq!(e.subject.as_deref(), Some("orders"));
        assert_eq!(ext(e, "queue").as_deref(), Some(queue.as_str()));
        assert!(
            ext(e, "messageid").is_some_and(|id| !id.is_empty()),
            "{e:?}"
        );
        // The CloudEvent's id is the message's, the same if it comes again.
        assert_eq!(ext(e, "messageid").as_deref(), Some(e.id.as_str()));
        assert_eq!(ext(e, "receivecount").as_deref(), Some("1"));
        // The time the message was sent.
        let time = e.time.unwrap();
        assert!(time >= before && time <= chrono::Utc::now(), "{time}");
    }
    let (json_event, text_event) = (&got[0], &got[1]);
    assert_eq!(data(json_event), r#"{"order": 1}"#);
    assert_eq!(
        json_event.datacontenttype.as_deref(),
        Some("application/json")
    );
    assert_eq!(ext(json_event, "attrauthor").as_deref(), Some("ana"));
    assert_eq!(ext(json_event, "attrorderid").as_deref(), Some("41"));
    assert_eq!(ext(json_event, "attrblob"), None);
    assert_eq!(data(text_event), "plain words");
    assert_eq!(text_event.datacontenttype.as_deref(), Some("text/plain"));
    assert_eq!(ext(text_event, "attrauthor"), None);
    assert_ne!(ext(json_event, "messageid"), ext(text_event, "messageid"));
    // Both messages are gone from the queue.
    wait_empty(&moto, &queue_url).await;
    rig.supervisor.stop_all().await;
}

#[tokio::test]
async fn a_message_is_deleted_only_once_its_event_is_accepted_and_kept_invisible_meanwhile() {
    let moto = Moto::shared();
    let queue = unique("portico-q");
    // A visibility timeout of 2 s: a message whose event waits longer must be kept invisible.
    let queue_url = create_queue(&moto, &queue, 2);
    let want = ["one", "two", "three"];
    send(
        &moto,
        &queue_url,
        &json!(want.iter().map(|b| json!({"body": b})).collect::<Vec<_>>()),
    );
    let keys = Keys::new();
    // Room for one event, and the watcher down: the second event waits, unaccepted, with the
    // third message held behind it.
    let mut rig = Rig::with_queue_size("sqsgw", "sqs", Arc::new(Sqs), 1);
    rig.watcher_up(false);
    let config = format!(
        "queueUrl: {queue_url}\nregion: us-east-1\nwaitTime: 1s\n{}",
        keys.lines()
    );
    rig.apply(&[("held", &config)]).await;
    rig.wait_phase("held", Phase::Running).await;
    rig.wait_received("held", 2).await;
    // The three messages were taken in one batch; none comes back while the events wait,
    // over three visibility timeouts: their visibility is extended.
    let watch_until = tokio::time::Instant::now() + Duration::from_secs(6);
    while tokio::time::Instant::now() < watch_until {
        assert_eq!(
            moto.count(&queue_url),
            (0, 3),
            "a message whose event waits came back or was deleted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Stopped before the waiting event was accepted: the first message (accepted) is
    // deleted, the other two are not, and are given back at once.
    rig.apply(&[]).await;
    wait_until("the unaccepted messages back in the queue", || async {
        (moto.count(&queue_url) == (2, 0)).then_some(())
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
        seen.insert(data(&e));
    }
    assert_eq!(seen, want.iter().map(|b| b.to_string()).collect());
    wait_empty(&moto, &queue_url).await;
    rig.supervisor.stop_all().await;
}

#[tokio::test]
async fn a_fifo_queue_keeps_the_order_of_each_message_group() {
    let moto = Moto::shared();
    let queue = format!("{}.fifo", unique("portico-q"));
    let queue_url = create_queue(&moto, &queue, 30);
    let mut messages = Vec::new();
    for n in 1..=4 {
        for group in ["a", "b"] {
            messages.push(json!({"body": format!("{group}{n}"), "group": group}));
        }
    }
    send(&moto, &queue_url, &json!(messages));
    let keys = Keys::new();
    // Room for one event and the watcher down at first: the events wait for room one after
    // the other.
    let mut rig = Rig::with_queue_size("sqsgw", "sqs", Arc::new(Sqs), 1);
    rig.watcher_up(false);
    // Named, with its endpoint: its URL is asked of SQS.
    let config = format!(
        "queue: {queue}\nendpoint: {}\nwaitTime: 1s\nmaxMessages: 3\n{}",
        moto.url,
        keys.lines()
    );
    rig.apply(&[("fifo", &config)]).await;
    rig.wait_phase("fifo", Phase::Running).await;
    rig.wait_received("fifo", 2).await;
    rig.watcher_up(true);
    let got = rig.exactly(8, Duration::from_millis(1500)).await;
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in &got {
        let group = ext(e, "messagegroupid").expect("messagegroupid");
        assert_eq!(ext(e, "queue").as_deref(), Some(queue.as_str()));
        // Content-based deduplication: SQS's id of the body.
        assert!(ext(e, "deduplicationid").is_some(), "{e:?}");
        groups.entry(group).or_default().push(data(e));
    }
    assert_eq!(groups["a"], ["a1", "a2", "a3", "a4"], "{groups:?}");
    assert_eq!(groups["b"], ["b1", "b2", "b3", "b4"], "{groups:?}");
    wait_empty(&moto, &queue_url).await;
    rig.supervisor.stop_all().await;
}

#[tokio::test]
async fn a_lost_endpoint_is_reported_and_reading_resumes() {
    let mut moto = Moto::private();
    let queue = unique("portico-q");
    let queue_url = create_queue(&moto, &queue, 30);
    let keys = Keys::new();
    let mut rig = Rig::new("sqsgw", "sqs", Arc::new(Sqs));
    let config = format!(
        "queueUrl: {queue_url}\nregion: us-east-1\nwaitTime: 1s\n{}",
        keys.lines()
    );
    rig.apply(&[("lost", &config)]).await;
    rig.wait_phase("lost", Phase::Running).await;

    moto.kill();
    let node = rig.wait_phase("lost", Phase::Error).await;
    let endpoint = moto.url.trim_start_matches("http://");
    assert!(
        node.message.contains("SQS") && node.message.contains(endpoint),
        "the error names the endpoint {endpoint}: {node:?}"
    );
    // A new server knows no queue: still an error, saying so.
    moto.start();
    wait_until("the missing queue reported", || async {
        rig.node("lost")
            .filter(|n| n.phase == Phase::Error && n.message.contains("QueueDoesNotExist"))
    })
    .await;
    // Once the queue is there again, it runs and reads.
    assert_eq!(create_queue(&moto, &queue, 30), queue_url);
    rig.wait_phase("lost", Phase::Running).await;
    send_body(&moto, &queue_url, "after");
    let got = rig.exactly(1, Duration::from_millis(500)).await;
    assert_eq!(data(&got[0]), "after");
    wait_empty(&moto, &queue_url).await;
    rig.supervisor.stop_all().await;
}
