//! The `postgres` gateway against the machine's PostgreSQL (127.0.0.1:5432, trust
//! authentication, database `test`): notifications become events; a terminated backend is
//! reported and the gateway listens again. Every test uses channels of its own (a uuid) and
//! its own configuration names, so tests can run in parallel.

mod broker_support;

use std::sync::Arc;
use std::time::Duration;

use broker_support::{Rig, data, ext, free_port, unique, wait_until};
use portico::Phase;
use portico_gateways::postgres::Postgres;

const URL: &str = "postgres://root@127.0.0.1:5432/test";
const SERVER: &str = "PostgreSQL at 127.0.0.1:5432/test";

fn rig(name: &str) -> Rig {
    Rig::new(name, "postgres", Arc::new(Postgres))
}

/// A client of the test's own; its connection is driven by a task that ends when the client
/// is dropped.
async fn client() -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(
        "host=127.0.0.1 port=5432 user=postgres dbname=test",
        tokio_postgres::NoTls,
    )
    .await
    .expect("connect to PostgreSQL on 127.0.0.1:5432");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// `NOTIFY channel, 'payload'`, the payload quoted as a literal.
async fn notify(c: &tokio_postgres::Client, channel: &str, payload: &str) {
    let sql = format!("NOTIFY {channel}, '{}'", payload.replace('\'', "''"));
    c.batch_execute(&sql).await.expect(&sql);
}

async fn backend_pid(c: &tokio_postgres::Client) -> i32 {
    c.query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0)
}

/// The backend pids of the gateway's connections with this `application_name`.
async fn gateway_pids(c: &tokio_postgres::Client, application_name: &str) -> Vec<i32> {
    c.query(
        "SELECT pid FROM pg_stat_activity WHERE application_name = $1",
        &[&application_name],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

#[tokio::test]
async fn notifications_of_two_channels_become_events() {
    let (a, b) = (unique("portico_a_"), unique("portico_b_"));
    let mut rig = rig("pggw");
    let config = format!("url: {URL}\nchannels: [{a}, {b}]");
    rig.apply(&[("orders", &config)]).await;
    rig.wait_phase("orders", Phase::Running).await;

    let c = client().await;
    let pid = backend_pid(&c).await.to_string();
    notify(&c, &a, r#"{"order": 1}"#).await;
    notify(&c, &b, "plain text, it's not JSON").await;
    notify(&c, &a, "").await;

    let got = rig.exactly(3, Duration::from_millis(300)).await;
    for e in &got {
        assert_eq!(e.source, "pggw/orders");
        assert_eq!(e.subject.as_deref(), Some("orders"));
        assert_eq!(e.ty, "postgres");
        assert_eq!(ext(e, "pid").as_deref(), Some(pid.as_str()));
    }
    assert_eq!(data(&got[0]), r#"{"order": 1}"#);
    assert_eq!(got[0].datacontenttype.as_deref(), Some("application/json"));
    assert_eq!(ext(&got[0], "channel").as_deref(), Some(a.as_str()));
    assert_eq!(data(&got[1]), "plain text, it's not JSON");
    assert_eq!(got[1].datacontenttype.as_deref(), Some("text/plain"));
    assert_eq!(ext(&got[1], "channel").as_deref(), Some(b.as_str()));
    assert_eq!(data(&got[2]), "");
    assert_eq!(got[2].datacontenttype.as_deref(), Some("text/plain"));
    assert_eq!(ext(&got[2], "channel").as_deref(), Some(a.as_str()));

    rig.supervisor.stop_all().await;
    // The gateway's connection is gone with the configuration.
    let name = "portico/pggw/orders";
    wait_until("the gateway's connection to close", || async {
        gateway_pids(&c, name).await.is_empty().then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_quoted_channel_name_keeps_its_case() {
    let channel = format!("Mixed_{}", unique(""));
    let mut rig = rig("pggw");
    let config = format!("url: {URL}\nchannels: ['{channel}']");
    rig.apply(&[("mixed", &config)]).await;
    rig.wait_phase("mixed", Phase::Running).await;
    let c = client().await;
    c.execute("SELECT pg_notify($1, $2)", &[&channel, &"[1, 2]"])
        .await
        .unwrap();
    let got = rig.exactly(1, Duration::from_millis(200)).await;
    assert_eq!(ext(&got[0], "channel").as_deref(), Some(channel.as_str()));
    assert_eq!(got[0].datacontenttype.as_deref(), Some("application/json"));
    rig.supervisor.stop_all().await;
}

#[tokio::test]
async fn a_terminated_backend_is_reported_and_the_gateway_listens_again() {
    let channel = unique("portico_term_");
    let src = unique("t");
    let name = format!("portico/pggw/{src}");
    let mut rig = rig("pggw");
    let config = format!("url: {URL}\nchannels: [{channel}]");
    rig.apply(&[(&src, &config)]).await;
    rig.wait_phase(&src, Phase::Running).await;

    let c = client().await;
    notify(&c, &channel, "before").await;
    assert_eq!(data(&rig.exactly(1, Duration::ZERO).await[0]), "before");

    let pids = gateway_pids(&c, &name).await;
    assert_eq!(pids.len(), 1, "one connection named {name}: {pids:?}");
    let terminated: bool = c
        .query_one("SELECT pg_terminate_backend($1)", &[&pids[0]])
        .await
        .unwrap()
        .get(0);
    assert!(terminated);

    let node = rig.wait_phase(&src, Phase::Error).await;
    assert!(node.message.contains(SERVER), "{node:?}");
    rig.wait_phase(&src, Phase::Running).await;
    let again = gateway_pids(&c, &name).await;
    assert_eq!(again.len(), 1, "one new connection: {again:?}");
    assert_ne!(again[0], pids[0]);

    notify(&c, &channel, "after").await;
    let got = rig.exactly(1, Duration::from_millis(300)).await;
    assert_eq!(data(&got[0]), "after");
    assert_eq!(ext(&got[0], "channel").as_deref(), Some(channel.as_str()));
    rig.supervisor.stop_all().await;
    wait_until("the gateway's connection to close", || async {
        gateway_pids(&c, &name).await.is_empty().then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_unreachable_server_is_named_without_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("password");
    std::fs::write(&password, "s3cret-pw\n").unwrap();
    let port = free_port();
    let mut rig = rig("pggw");
    let config = format!(
        "url: postgres://root@127.0.0.1:{port}/test\nchannels: [x]\npasswordFile: {}",
        password.display()
    );
    rig.apply(&[("down", &config)]).await;
    let node = rig.wait_phase("down", Phase::Error).await;
    assert!(
        node.message.contains(&format!(
            "cannot connect to PostgreSQL at 127.0.0.1:{port}/test"
        )),
        "{node:?}"
    );
    assert!(!node.message.contains("s3cret"), "{node:?}");
    rig.supervisor.stop_all().await;
}
