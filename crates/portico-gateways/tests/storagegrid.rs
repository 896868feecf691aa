//! The `storagegrid` gateway over HTTP: StorageGRID's SNS-style `Publish` forms become
//! CloudEvents (the form as JSON, its Message parsed), with SNS's `PublishResponse`; filters;
//! malformed bodies get 400 with the reason; configurations share a port.

mod broker_support;
mod common;

use std::sync::Arc;
use std::time::Duration;

use broker_support::{Rig, ext};
use common::free_port;
use portico::Phase;
use portico_gateways::storagegrid::StorageGrid;

fn message(event: &str, key: &str) -> String {
    serde_json::json!({"Records": [{
        "eventVersion": "2.0", "eventSource": "sgws:s3",
        "eventTime": "2019-02-27T21:15:09Z", "eventName": event,
        "userIdentity": {"principalId": "11111"},
        "requestParameters": {"sourceIPAddress": "10.0.0.1"},
        "responseElements": {"x-amz-request-id": "1"},
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "c",
               "bucket": {"name": "images", "ownerIdentity": {"principalId": "1"}, "arn": "urn:sgws:s3:::images"},
               "object": {"key": key, "size": 6, "eTag": "e", "sequencer": "1"}}
    }]})
    .to_string()
}

fn form(message: &str) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .append_pair("Action", "Publish")
        .append_pair("Message", message)
        .append_pair("TopicArn", "urn:sgws:sns:local::topic")
        .append_pair("Version", "2010-03-31")
        .finish()
}

async fn post(url: &str, body: String) -> (u16, String) {
    let r = common::client()
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn notifications_become_events_filtered_and_answered_as_sns() {
    let port = free_port();
    let mut rig = Rig::new("sggw", "storagegrid", Arc::new(StorageGrid::default()));
    let created = format!(
        "port: '{port}'\nendpoint: /created\nevents: [ObjectCreated:Put]\nfilter: {{prefix: 'in/', suffix: .png}}"
    );
    // Same port, another endpoint and configuration, every event type; `s3:` names work too.
    let removed = format!("port: {port}\nendpoint: /removed\nevents: ['s3:ObjectRemoved:*']");
    rig.apply(&[("created", &created), ("removed", &removed)])
        .await;
    rig.wait_phase("created", Phase::Running).await;
    rig.wait_phase("removed", Phase::Running).await;
    let base = format!("http://127.0.0.1:{port}");

    let (status, text) = post(
        &format!("{base}/created"),
        form(&message("ObjectCreated:Put", "in/cat+1.png")),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        text.starts_with("<PublishResponse xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\"><PublishResult><MessageId>")
            && text.contains("<RequestId>"),
        "{text}"
    );
    let got = rig.exactly(1, Duration::from_millis(300)).await;
    let e = &got[0];
    assert_eq!(e.ty, "storagegrid");
    assert_eq!(e.subject.as_deref(), Some("created"));
    assert_eq!(e.datacontenttype.as_deref(), Some("application/json"));
    assert_eq!(ext(e, "bucket").as_deref(), Some("images"));
    assert_eq!(ext(e, "key").as_deref(), Some("in/cat 1.png"));
    let data: serde_json::Value = serde_json::from_str(&broker_support::data(e)).unwrap();
    assert_eq!(data["Action"], "Publish");
    assert_eq!(data["TopicArn"], "urn:sgws:sns:local::topic");
    assert_eq!(
        data["Message"]["Records"][0]["eventName"],
        "ObjectCreated:Put"
    );
    assert_eq!(
        data["Message"]["Records"][0]["s3"]["object"]["key"],
        "in/cat+1.png"
    );

    // Filtered out: the same answer, no event.
    for (event, key) in [
        ("ObjectCreated:Copy", "in/a.png"),
        ("ObjectCreated:Put", "out/a.png"),
        ("ObjectCreated:Put", "in/a.jpg"),
    ] {
        let (status, text) = post(&format!("{base}/created"), form(&message(event, key))).await;
        assert_eq!(status, 200);
        assert!(text.contains("<PublishResponse"), "{text}");
    }
    let (status, _) = post(
        &format!("{base}/removed"),
        form(&message("ObjectRemoved:Delete", "x")),
    )
    .await;
    assert_eq!(status, 200);
    let got = rig.exactly(1, Duration::from_millis(300)).await;
    assert_eq!(got[0].subject.as_deref(), Some("removed"));

    // Not SNS's Publish of an S3 notification: 400 with the reason, no event.
    for (body, why) in [
        ("Action=Publish".to_string(), "no Message"),
        (form("{nope"), "Message is not JSON"),
        (form("{\"x\": 1}"), "no Records"),
        (message("ObjectCreated:Put", "in/a.png"), "no Message"),
    ] {
        let (status, text) = post(&format!("{base}/created"), body).await;
        assert_eq!(status, 400, "{text}");
        assert!(text.contains(why), "{text}");
    }
    assert!(rig.next_event(Duration::from_millis(200)).await.is_none());
    rig.supervisor.stop_all().await;
}

#[tokio::test]
async fn bad_configurations_name_the_field() {
    let mut rig = Rig::new("sggw", "storagegrid", Arc::new(StorageGrid::default()));
    rig.apply(&[("bad", "port: 8080\nendpoint: nope")]).await;
    let node = rig.wait_phase("bad", Phase::Error).await;
    assert!(node.message.contains("endpoint"), "{node:?}");
    rig.supervisor.stop_all().await;
}
