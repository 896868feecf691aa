//! Watcher filters, through the real binary: one gateway sends different events to different
//! watchers (a CEL expression, a Subscriptions API dialect, an expression over `data`, and a
//! watcher with no filter), checked by count and id; and `portico validate` names the watcher
//! and the column of an expression that does not compile (and a rate limit that makes no
//! sense).

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use support::{Behaviour, GatewayFileBuilder, Portico, Sink, run_to_end};

const WAIT: Duration = Duration::from_secs(30);

fn ids(events: &[serde_json::Value]) -> BTreeSet<String> {
    events
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect()
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn each_watcher_gets_the_events_its_filter_passes() {
    let orders = Sink::start(Behaviour::Ok).await;
    let deleted = Sink::start(Behaviour::Ok).await;
    let big = Sink::start(Behaviour::Ok).await;
    let all = Sink::start(Behaviour::Ok).await;
    let spec = format!(
        "  watchers:\n    urls:\n      - url: \"{}\"\n        filter: 'subject == \"orders\"'\n      - url: \"{}\"\n        filter: {{exact: {{type: order.deleted}}}}\n      - url: \"{}\"\n        filter: 'data.total > 100'\n      - \"{}\"\n",
        orders.url(),
        deleted.url(),
        big.url(),
        all.url()
    );
    let (_dir, file) = GatewayFileBuilder::new("filters", "independent-example")
        .spec_lines(&spec)
        .write();
    let portico = Portico::run(&file).await;
    let events = [
        ("e1", "order.created", "orders", Some(50)),
        ("e2", "order.deleted", "orders", Some(150)),
        ("e3", "order.created", "users", Some(500)),
        // No data: `data.total` fails on it, so it does not pass that filter.
        ("e4", "order.deleted", "users", None),
    ];
    for (id, ty, subject, total) in events {
        let data = total
            .map(|t| {
                format!(r#", "datacontenttype": "application/json", "data": {{"total": {t}}}"#)
            })
            .unwrap_or_default();
        let body = format!(
            r#"{{"specversion": "1.0", "id": "{id}", "source": "/shop", "type": "{ty}", "subject": "{subject}"{data}}}"#
        );
        let r = portico
            .http
            .post(portico.url("/"))
            .header("content-type", "application/cloudevents+json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{id}");
    }
    assert_eq!(
        ids(&all.wait_for_events(4, WAIT).await),
        set(&["e1", "e2", "e3", "e4"])
    );
    assert_eq!(
        ids(&orders.wait_for_events(2, WAIT).await),
        set(&["e1", "e2"])
    );
    assert_eq!(
        ids(&deleted.wait_for_events(2, WAIT).await),
        set(&["e2", "e4"])
    );
    assert_eq!(ids(&big.wait_for_events(2, WAIT).await), set(&["e2", "e3"]));
    // Every event was either queued for a watcher or filtered out when it was accepted: two
    // of four for each filtered watcher, so none of them can get more than the two above.
    let metrics = portico.metrics().await;
    for sink in [&orders, &deleted, &big] {
        let line = format!(
            "portico_events_filtered_total{{watcher=\"url:{}\"}} 2",
            sink.url()
        );
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }
    let line = format!(
        "portico_events_filtered_total{{watcher=\"url:{}\"}} 0",
        all.url()
    );
    assert!(metrics.contains(&line), "{line} in\n{metrics}");
    assert_eq!(orders.events().len(), 2);
    assert_eq!(deleted.events().len(), 2);
    assert_eq!(big.events().len(), 2);
}

#[test]
fn validate_names_the_watcher_and_the_column_of_a_bad_expression() {
    let spec = "  watchers:\n    urls:\n      - url: \"http://127.0.0.1:1/a\"\n        filter: 'type == \"a\" &&'\n      - url: \"http://127.0.0.1:1/b\"\n        filter: {exact: {Type: a}}\n      - url: \"http://127.0.0.1:1/c\"\n        rateLimit: {perSecond: 0}\n  delivery:\n    filter: 'true'\n";
    let (_dir, file) = GatewayFileBuilder::new("bad-filters", "independent-example")
        .spec_lines(spec)
        .write();
    let (code, out, err) = run_to_end(&["validate", file.to_str().unwrap()]);
    let said = format!("{out}{err}");
    assert_ne!(code, Some(0), "{said}");
    // `type == "a" &&` ends at column 14: the parser wants more at 15.
    assert!(
        said.contains("watchers.urls[0]: filter: column 15: "),
        "{said}"
    );
    assert!(
        said.contains("watchers.urls[1]: filter: `Type` is not a CloudEvents attribute name"),
        "{said}"
    );
    assert!(
        said.contains("delivery: `filter` is a setting of one watcher"),
        "{said}"
    );
    assert!(
        said.contains("watchers.urls[2]: rateLimit.perSecond is 0: give a number above 0"),
        "{said}"
    );
}
