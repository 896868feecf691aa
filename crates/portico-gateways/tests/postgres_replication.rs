//! The `postgres` gateway's `replication` against the machine's PostgreSQL (127.0.0.1:5432,
//! trust authentication, database `test`, `wal_level = logical`): row changes become events in
//! commit order; what was not accepted is read again after a restart with the same ids, and
//! what was is not; a lost connection is reported and replication goes on; a missing slot or
//! publication is a clear node error. Every test uses its own table, publication and slot (a
//! uuid), and drops them at the end even when it fails (a slot left behind keeps WAL).

mod broker_support;
mod postgres_support;

use std::sync::Arc;
use std::time::Duration;

use broker_support::{Rig, ext, free_port, unique, wait_until};
use portico::Phase;
use portico::cloudevents::CloudEvent;
use portico_gateways::postgres::Postgres;
use postgres_support::{Names, URL, client, try_inserts_in_slot};
use serde_json::{Value, json};

const SERVER: &str = "PostgreSQL at 127.0.0.1:5432/test";

fn rig(name: &str) -> Rig {
    Rig::new(name, "postgres", Arc::new(Postgres))
}

fn config(n: &Names) -> String {
    format!(
        "url: {URL}\nreplication:\n  slot: {}\n  publication: {}\n  tables: [{}]\n  pollInterval: 50ms",
        n.slot, n.publication, n.table
    )
}

fn payload(e: &CloudEvent) -> Value {
    serde_json::from_str(&broker_support::data(e)).expect("JSON data")
}

/// The slot's confirmed position, as text.
async fn confirmed(c: &tokio_postgres::Client, slot: &str) -> String {
    c.query_one(
        "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
        &[&slot],
    )
    .await
    .unwrap()
    .get(0)
}

async fn create_table(c: &tokio_postgres::Client, n: &Names) {
    c.batch_execute(&format!(
        "CREATE TABLE {} (id int PRIMARY KEY, name text, qty bigint, price numeric, ok boolean, \
         doc jsonb, at timestamptz)",
        n.table
    ))
    .await
    .unwrap();
}

#[tokio::test]
async fn row_changes_arrive_in_commit_order_with_their_fields() {
    let n = Names::new();
    let c = client().await;
    create_table(&c, &n).await;
    let mut rig = rig("pgrepl");
    rig.apply(&[("rows", &config(&n))]).await;
    rig.wait_phase("rows", Phase::Running).await;
    let before = confirmed(&c, &n.slot).await;

    let t = &n.table;
    c.batch_execute(&format!(
        "BEGIN;
         INSERT INTO {t} VALUES (1, 'one', 10, 1.50, true, '{{\"a\": [1, null]}}', '2024-01-02 03:04:05+00');
         INSERT INTO {t} (id, name) VALUES (2, 'two');
         COMMIT;
         UPDATE {t} SET qty = 11 WHERE id = 1;
         UPDATE {t} SET id = 3 WHERE id = 2;
         DELETE FROM {t} WHERE id = 3;
         ALTER TABLE {t} REPLICA IDENTITY FULL;
         UPDATE {t} SET name = 'uno' WHERE id = 1;
         TRUNCATE {t};"
    ))
    .await
    .unwrap();
    let got = rig.exactly(7, Duration::from_millis(300)).await;
    let ops: Vec<_> = got.iter().map(|e| ext(e, "operation").unwrap()).collect();
    assert_eq!(
        ops,
        [
            "insert", "insert", "update", "update", "delete", "update", "truncate"
        ]
    );
    for e in &got {
        assert_eq!(e.source, "pgrepl/rows");
        assert_eq!(e.ty, "postgres");
        assert_eq!(e.datacontenttype.as_deref(), Some("application/json"));
        assert_eq!(ext(e, "database").as_deref(), Some("test"));
        assert_eq!(ext(e, "schema").as_deref(), Some("public"));
        assert_eq!(ext(e, "table").as_deref(), Some(t.as_str()));
        let lsn = ext(e, "lsn").unwrap();
        assert!(e.id.starts_with(&format!("{lsn}:")), "{} {lsn}", e.id);
        assert!(ext(e, "xid").unwrap().parse::<u32>().is_ok());
        let age = chrono::Utc::now() - e.time.unwrap();
        assert!(age < chrono::TimeDelta::minutes(1) && age > chrono::TimeDelta::seconds(-5));
    }
    // The two inserts share their transaction: same LSN, places 0 and 1.
    assert_eq!(ext(&got[0], "lsn"), ext(&got[1], "lsn"));
    assert!(got[0].id.ends_with(":0") && got[1].id.ends_with(":1"));
    assert_ne!(ext(&got[1], "lsn"), ext(&got[2], "lsn"));
    let ids: std::collections::BTreeSet<_> = got.iter().map(|e| e.id.clone()).collect();
    assert_eq!(ids.len(), 7);

    assert_eq!(
        payload(&got[0]),
        json!({"op": "insert", "schema": "public", "table": t, "new": {
            "id": 1, "name": "one", "qty": 10, "price": "1.50", "ok": true,
            "doc": {"a": [1, null]}, "at": "2024-01-02 03:04:05+00"}})
    );
    assert_eq!(
        payload(&got[1])["new"],
        json!({"id": 2, "name": "two", "qty": null, "price": null, "ok": null, "doc": null, "at": null})
    );
    // No key change and the default replica identity: no old row.
    let update = payload(&got[2]);
    assert_eq!(update["new"]["qty"], json!(11));
    assert!(update.get("old").is_none(), "{update}");
    // A key change: the old key.
    let moved = payload(&got[3]);
    assert_eq!(moved["old"], json!({"id": 2}));
    assert_eq!(moved["new"]["id"], json!(3));
    assert_eq!(
        payload(&got[4]),
        json!({"op": "delete", "schema": "public", "table": t, "old": {"id": 3}})
    );
    // REPLICA IDENTITY FULL: the whole old row.
    let full = payload(&got[5]);
    assert_eq!(full["old"]["name"], json!("one"));
    assert_eq!(full["old"]["qty"], json!(11));
    assert_eq!(full["new"]["name"], json!("uno"));
    assert_eq!(
        payload(&got[6]),
        json!({"op": "truncate", "schema": "public", "table": t, "cascade": false, "restartIdentity": false})
    );

    // Accepted: the slot goes past them.
    wait_until("the slot to advance", || async {
        (confirmed(&c, &n.slot).await != before).then_some(())
    })
    .await;
    rig.supervisor.stop_all().await;
}

/// In `ackAfterDelivery` with the watcher down, changes are accepted but never delivered: the
/// slot stays, and the next run reads them again with the same ids. Once delivered, the slot
/// goes past them and a third run has nothing to send.
#[tokio::test]
async fn changes_not_delivered_are_read_again_with_the_same_ids_and_delivered_ones_are_not() {
    let n = Names::new();
    let c = client().await;
    create_table(&c, &n).await;
    let delivery = |dir: &tempfile::TempDir| {
        portico::testing::Delivery::AckAfterDelivery(dir.path().to_path_buf())
    };
    let outbox = tempfile::tempdir().unwrap();
    let mut first = Rig::with_delivery(
        "pgrepl",
        "postgres",
        Arc::new(Postgres),
        64,
        delivery(&outbox),
    );
    first.watcher_up(false);
    first.apply(&[("rows", &config(&n))]).await;
    first.wait_phase("rows", Phase::Running).await;
    for i in 0..3 {
        c.execute(
            &format!("INSERT INTO {} (id, name) VALUES ($1, 'r')", n.table),
            &[&i],
        )
        .await
        .unwrap();
    }
    first.wait_received("rows", 3).await;
    first.supervisor.stop_all().await;
    drop(first);
    // The slot may have moved while there was nothing to read, never past the inserts.
    assert_eq!(
        try_inserts_in_slot(&c, &n).await.unwrap(),
        3,
        "advanced before delivery"
    );

    let outbox = tempfile::tempdir().unwrap();
    let mut second = Rig::with_delivery(
        "pgrepl",
        "postgres",
        Arc::new(Postgres),
        64,
        delivery(&outbox),
    );
    second.apply(&[("rows", &config(&n))]).await;
    let got = second.exactly(3, Duration::from_millis(300)).await;
    let rows: Vec<_> = got
        .iter()
        .map(|e| payload(e)["new"]["id"].clone())
        .collect();
    assert_eq!(rows, [json!(0), json!(1), json!(2)]);
    let ids: Vec<_> = got.iter().map(|e| e.id.clone()).collect();
    wait_until("the slot to advance past the inserts", || async {
        (try_inserts_in_slot(&c, &n).await.ok() == Some(0)).then_some(())
    })
    .await;
    second.supervisor.stop_all().await;
    drop(second);

    // Delivered: the third run sends only what is new, with an id of its own.
    let mut third = rig("pgrepl");
    third.apply(&[("rows", &config(&n))]).await;
    third.wait_phase("rows", Phase::Running).await;
    c.execute(&format!("INSERT INTO {} (id) VALUES (9)", n.table), &[])
        .await
        .unwrap();
    let got = third.exactly(1, Duration::from_millis(300)).await;
    assert_eq!(payload(&got[0])["new"]["id"], json!(9));
    assert!(!ids.contains(&got[0].id), "{} in {ids:?}", got[0].id);
    third.supervisor.stop_all().await;
}

/// The same changes read by two runs from the same position (a copy of the slot, taken
/// before the first run advanced the original) get the same ids.
#[tokio::test]
async fn a_change_read_again_has_the_id_it_had() {
    let n = Names::new();
    let c = client().await;
    create_table(&c, &n).await;
    // The publication must be older than the changes: pgoutput reads it as it was then.
    c.batch_execute(&format!(
        "CREATE PUBLICATION {} FOR TABLE {}",
        n.publication, n.table
    ))
    .await
    .unwrap();
    c.execute(
        "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
        &[&n.slot],
    )
    .await
    .unwrap();
    // Two transactions (one simple query with several statements would be one).
    c.execute(&format!("INSERT INTO {} (id) VALUES (1)", n.table), &[])
        .await
        .unwrap();
    c.batch_execute(&format!(
        "BEGIN; INSERT INTO {t} (id) VALUES (2); UPDATE {t} SET qty = 5 WHERE id = 1; COMMIT",
        t = n.table
    ))
    .await
    .unwrap();
    let copy = format!("{}_c", n.slot);
    c.execute(
        "SELECT pg_copy_logical_replication_slot($1, $2)",
        &[&n.slot, &copy],
    )
    .await
    .unwrap();

    let mut first = rig("pgrepl");
    first.apply(&[("rows", &config(&n))]).await;
    let one = first.exactly(3, Duration::from_millis(300)).await;
    first.supervisor.stop_all().await;
    drop(first);

    let mut second = rig("pgrepl");
    let again = config(&n).replace(&n.slot, &copy);
    second.apply(&[("rows", &again)]).await;
    let two = second.exactly(3, Duration::from_millis(300)).await;
    second.supervisor.stop_all().await;

    let ids = |got: &[CloudEvent]| got.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&one), ids(&two));
    assert!(one[0].id.ends_with(":0") && one[1].id.ends_with(":0"));
    assert!(one[2].id.ends_with(":1"));
    let data = |got: &[CloudEvent]| got.iter().map(payload).collect::<Vec<_>>();
    assert_eq!(data(&one), data(&two));
}

#[tokio::test]
async fn a_terminated_backend_is_reported_and_no_change_is_lost() {
    let n = Names::new();
    let c = client().await;
    create_table(&c, &n).await;
    let src = unique("t");
    let name = format!("portico/pgrepl/{src}");
    let mut rig = rig("pgrepl");
    rig.apply(&[(&src, &config(&n))]).await;
    rig.wait_phase(&src, Phase::Running).await;
    c.execute(&format!("INSERT INTO {} (id) VALUES (1)", n.table), &[])
        .await
        .unwrap();
    assert_eq!(
        payload(&rig.exactly(1, Duration::ZERO).await[0])["new"]["id"],
        json!(1)
    );

    let pids: Vec<i32> = c
        .query(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1",
            &[&name],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(pids.len(), 1, "one connection named {name}: {pids:?}");
    c.execute("SELECT pg_terminate_backend($1)", &[&pids[0]])
        .await
        .unwrap();
    // Changes made while the gateway is away are read once it is back.
    c.execute(&format!("INSERT INTO {} (id) VALUES (2)", n.table), &[])
        .await
        .unwrap();
    let node = rig.wait_phase(&src, Phase::Error).await;
    assert!(node.message.contains(SERVER), "{node:?}");
    rig.wait_phase(&src, Phase::Running).await;
    c.execute(&format!("INSERT INTO {} (id) VALUES (3)", n.table), &[])
        .await
        .unwrap();
    let got = rig.exactly(2, Duration::from_millis(300)).await;
    let rows: Vec<_> = got
        .iter()
        .map(|e| payload(e)["new"]["id"].clone())
        .collect();
    assert_eq!(rows, [json!(2), json!(3)]);
    rig.supervisor.stop_all().await;
}

#[tokio::test]
async fn a_missing_slot_or_publication_and_an_unreachable_server_are_node_errors() {
    let n = Names::new();
    let c = client().await;
    create_table(&c, &n).await;
    let port = free_port();
    let mut rig = rig("pgrepl");
    let no_slot = format!(
        "url: {URL}\nreplication: {{slot: {}, publication: {}, tables: [{}], createSlot: false}}",
        n.slot, n.publication, n.table
    );
    let no_publication = format!(
        "url: {URL}\nreplication: {{slot: {}_x, publication: {}_none}}",
        n.slot, n.publication
    );
    let down = format!(
        "url: postgres://root@127.0.0.1:{port}/test\nreplication: {{slot: s, publication: p}}"
    );
    rig.apply(&[
        ("noslot", &no_slot),
        ("nopub", &no_publication),
        ("down", &down),
    ])
    .await;
    let node = rig.wait_phase("noslot", Phase::Error).await;
    assert!(
        node.message.contains(&format!(
            "replication slot `{}` does not exist at {SERVER}",
            n.slot
        )),
        "{node:?}"
    );
    let node = rig.wait_phase("nopub", Phase::Error).await;
    assert!(
        node.message.contains(&format!(
            "publication `{}_none` does not exist in {SERVER}",
            n.publication
        )),
        "{node:?}"
    );
    let node = rig.wait_phase("down", Phase::Error).await;
    assert!(
        node.message.contains(&format!(
            "cannot connect to PostgreSQL at 127.0.0.1:{port}/test"
        )),
        "{node:?}"
    );
    // The publication was checked before the slot: no slot was made for `nopub`.
    let made: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1",
            &[&format!("{}_x", n.slot)],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(made, 0);

    // Made by hand, the slot is used: the node runs.
    c.execute(
        "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
        &[&n.slot],
    )
    .await
    .unwrap();
    rig.wait_phase("noslot", Phase::Running).await;
    rig.supervisor.stop_all().await;
}

/// Every peek from the slot's position is a decoding session of its own, in which `pgoutput`
/// sends the relation again before its first change: what the gateway counts on.
#[tokio::test]
async fn every_peek_sends_the_relation_again() {
    let n = Names::new();
    let c = client().await;
    create_table(&c, &n).await;
    c.batch_execute(&format!(
        "CREATE PUBLICATION {} FOR TABLE {}",
        n.publication, n.table
    ))
    .await
    .unwrap();
    c.execute(
        "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
        &[&n.slot],
    )
    .await
    .unwrap();
    c.execute(&format!("INSERT INTO {} (id) VALUES (1)", n.table), &[])
        .await
        .unwrap();
    for _ in 0..2 {
        let kinds: Vec<u8> = c
            .query(
                "SELECT get_byte(data, 0) FROM pg_logical_slot_peek_binary_changes($1, NULL, \
                 NULL, 'proto_version', '1', 'publication_names', $2)",
                &[&n.slot, &n.publication],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<_, i32>(0) as u8)
            .collect();
        assert_eq!(kinds, b"BRIC", "{kinds:?}");
    }
}
