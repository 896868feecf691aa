//! Row changes of a `postgres` configuration with `replication`: read from a logical
//! replication slot through its SQL functions, one event per row change.
//!
//! `tokio-postgres` 0.7 does not speak the streaming replication protocol, so the slot is read
//! with `pg_logical_slot_peek_binary_changes` (which leaves it where it is) and moved with
//! `pg_replication_slot_advance` once what was read is accepted. Rules:
//!
//! - Changes are handed over in commit order, a transaction's in the order they were made.
//! - The slot is advanced only to the end of a transaction whose every event was accepted (in
//!   `ackAfterDelivery`, delivered), so a restart reads again what was not, and nothing is
//!   lost. A peek that read to the end of the WAL with every transaction accepted advances the
//!   slot to the WAL's flush position taken before it, so a slot whose tables are quiet does
//!   not hold the WAL of the rest of the database.
//! - A peek starts at the slot's position every time, so it may read a transaction again that
//!   was handed over but not yet advanced over (the advance failed): the run remembers the end
//!   of the last transaction it handed over and does not hand one over twice.
//! - Each peek is a decoding session of its own, in which `pgoutput` sends a relation's
//!   `Relation` message again before its first change; the relations are also kept from one
//!   peek to the next of a connection.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::{Stream, StreamExt};
use portico::{ConfigContext, Delivered, Event, Submit};
use serde_json::{Map, Value as Json};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::PgLsn;
use tokio_postgres::{AsyncMessage, Client};

use super::pgoutput::{self, Message, OldKind, Relation, Tuple, Value};
use crate::broker::{Progress, SessionError, SessionResult, accepted_ackable};

/// A checked `replication` block.
#[derive(Debug, Clone)]
pub(crate) struct Replication {
    /// The slot's name.
    pub slot: String,
    /// The publication's name.
    pub publication: String,
    /// The tables of `CREATE PUBLICATION … FOR TABLE`, each quoted (`"schema"."name"`).
    pub tables: Vec<String>,
    /// Create the slot when it is missing.
    pub create_slot: bool,
    /// How long to wait between peeks that found nothing new.
    pub poll_interval: Duration,
    /// The most changes one peek returns (whole transactions: it may return more).
    pub max_changes: i32,
    /// A channel whose notifications end the wait before the next peek.
    pub wake_channel: Option<String>,
}

/// What one run of a configuration remembers from one connection to the next: the end LSN of
/// the last transaction handed over and done with (accepted, or in `ackAfterDelivery`
/// delivered).
#[derive(Debug, Default)]
pub(crate) struct Done(AtomicU64);

/// Quotes a name as an SQL identifier.
pub(crate) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Where the session is, for errors.
struct Place<'a> {
    server: &'a str,
    database: &'a str,
}

/// One connection's replication: check the server, the publication and the slot, then peek,
/// hand over and advance until the configuration stops or the connection is lost.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn session<M>(
    ctx: &ConfigContext,
    server: &str,
    database: &str,
    r: &Replication,
    client: &Client,
    messages: &mut M,
    done: &Done,
    progress: Progress,
) -> SessionResult
where
    M: Stream<Item = Result<AsyncMessage, tokio_postgres::Error>> + Unpin,
{
    let place = Place { server, database };
    let mut wake = false;
    let failed =
        |what: String| move |e: tokio_postgres::Error| SessionError::broker(what, db_error(&e));

    let level: String = drive(
        client.query_one("SELECT current_setting('wal_level')", &[]),
        messages,
        &mut wake,
        server,
    )
    .await?
    .and_then(|row| row.try_get(0))
    .map_err(failed(format!("cannot read wal_level at {server}")))?;
    if level != "logical" {
        return Err(SessionError::Broker(format!(
            "wal_level is `{level}` at {server}: logical replication needs `logical` \
             (ALTER SYSTEM SET wal_level = logical, then restart PostgreSQL)"
        )));
    }
    publication(r, client, messages, &mut wake, &place).await?;
    let confirmed = slot(r, client, messages, &mut wake, &place).await?;
    if let Some(channel) = &r.wake_channel {
        drive(
            client.batch_execute(&format!("LISTEN {};", ident(channel))),
            messages,
            &mut wake,
            server,
        )
        .await?
        .map_err(failed(format!("cannot LISTEN at {server}")))?;
    }
    progress.running(ctx);

    let mut reader = Reader {
        ctx,
        database,
        relations: HashMap::new(),
        handed: done.0.load(Ordering::Acquire),
        confirmed,
    };
    loop {
        let flushed: PgLsn = drive(
            client.query_one("SELECT pg_current_wal_flush_lsn()", &[]),
            messages,
            &mut wake,
            server,
        )
        .await?
        .and_then(|row| row.try_get(0))
        .map_err(failed(format!("cannot read the WAL position at {server}")))?;
        let rows = drive(
            client.query(
                "SELECT data FROM pg_logical_slot_peek_binary_changes($1, NULL, $2, \
                 'proto_version', '1', 'publication_names', $3)",
                &[&r.slot, &r.max_changes, &r.publication],
            ),
            messages,
            &mut wake,
            server,
        )
        .await?
        .map_err(failed(format!("cannot read slot `{}` at {server}", r.slot)))?;
        let complete = rows.len() < usize::try_from(r.max_changes).unwrap_or(usize::MAX);
        let mut batch = Vec::with_capacity(rows.len());
        for row in &rows {
            let data: &[u8] = row
                .try_get(0)
                .map_err(failed(format!("cannot read slot `{}` at {server}", r.slot)))?;
            batch.push(pgoutput::parse(data).map_err(|e| {
                SessionError::Broker(format!("slot `{}` at {server}: {e}", r.slot))
            })?);
        }
        let Some(handed) = reader.hand_over(batch, &r.slot).await? else {
            return Ok(());
        };
        // Done with in order: the slot may go past a transaction once it is.
        let mut upto = done.0.load(Ordering::Acquire);
        let all_done = handed.all_ended;
        for (end, deliveries) in handed.pending {
            for d in deliveries {
                let ok = tokio::select! {
                    ok = d.wait() => ok,
                    _ = ctx.stopped() => false,
                };
                if !ok {
                    return Ok(());
                }
            }
            upto = upto.max(end);
            done.0.fetch_max(end, Ordering::AcqRel);
        }
        if complete && all_done {
            upto = upto.max(u64::from(flushed));
        }
        if upto > reader.confirmed {
            let lsn = PgLsn::from(upto);
            drive(
                client.query_one(
                    "SELECT end_lsn FROM pg_replication_slot_advance($1, $2)",
                    &[&r.slot, &lsn],
                ),
                messages,
                &mut wake,
                server,
            )
            .await?
            .map_err(failed(format!(
                "cannot advance slot `{}` at {server}",
                r.slot
            )))?;
            reader.confirmed = upto;
            done.0.fetch_max(upto, Ordering::AcqRel);
        }
        if complete {
            // Nothing more for now: wait for the interval or a notification.
            let sleep = tokio::time::sleep(r.poll_interval);
            tokio::pin!(sleep);
            while !wake {
                tokio::select! {
                    _ = &mut sleep => break,
                    m = messages.next() => on_message(ctx, m, &mut wake, server)?,
                    _ = ctx.stopped() => return Ok(()),
                }
            }
            wake = false;
        }
    }
}

/// `fut`, with the connection driven meanwhile (a notification sets `wake`); a lost
/// connection ends the session.
async fn drive<F, M>(
    fut: F,
    messages: &mut M,
    wake: &mut bool,
    server: &str,
) -> Result<F::Output, SessionError>
where
    F: std::future::Future,
    M: Stream<Item = Result<AsyncMessage, tokio_postgres::Error>> + Unpin,
{
    tokio::pin!(fut);
    loop {
        tokio::select! {
            r = &mut fut => return Ok(r),
            m = messages.next() => on_message_quiet(m, wake, server)?,
        }
    }
}

fn on_message(
    ctx: &ConfigContext,
    m: Option<Result<AsyncMessage, tokio_postgres::Error>>,
    wake: &mut bool,
    server: &str,
) -> Result<(), SessionError> {
    if let Some(Ok(other @ AsyncMessage::Notice(_))) = &m {
        tracing::debug!(src = ctx.src(), "PostgreSQL: {other:?}");
    }
    on_message_quiet(m, wake, server)
}

fn on_message_quiet(
    m: Option<Result<AsyncMessage, tokio_postgres::Error>>,
    wake: &mut bool,
    server: &str,
) -> Result<(), SessionError> {
    match m {
        Some(Ok(AsyncMessage::Notification(_))) => *wake = true,
        Some(Ok(_)) => {}
        Some(Err(e)) => {
            return Err(SessionError::broker(
                format!("lost the connection to {server}"),
                e,
            ));
        }
        None => {
            return Err(SessionError::Broker(format!(
                "lost the connection to {server} (closed)"
            )));
        }
    }
    Ok(())
}

/// A database error's own message (`tokio-postgres` shows only "db error" otherwise).
fn db_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_string(),
        None => e.to_string(),
    }
}

/// Checks the publication, creating it when it is missing and `tables` are given.
async fn publication<M>(
    r: &Replication,
    client: &Client,
    messages: &mut M,
    wake: &mut bool,
    place: &Place<'_>,
) -> Result<(), SessionError>
where
    M: Stream<Item = Result<AsyncMessage, tokio_postgres::Error>> + Unpin,
{
    let (server, p) = (place.server, &r.publication);
    let found = drive(
        client.query_opt("SELECT 1 FROM pg_publication WHERE pubname = $1", &[p]),
        messages,
        wake,
        server,
    )
    .await?
    .map_err(|e| {
        SessionError::broker(
            format!("cannot read publications at {server}"),
            db_error(&e),
        )
    })?;
    if found.is_some() {
        return Ok(());
    }
    if r.tables.is_empty() {
        return Err(SessionError::Broker(format!(
            "publication `{p}` does not exist in {server}: create it (CREATE PUBLICATION … FOR \
             TABLE …) or give replication.tables"
        )));
    }
    let sql = format!(
        "CREATE PUBLICATION {} FOR TABLE {}",
        ident(p),
        r.tables.join(", ")
    );
    match drive(client.batch_execute(&sql), messages, wake, server).await? {
        Ok(()) => Ok(()),
        // Created meanwhile by someone else: that one is used.
        Err(e) if e.code() == Some(&SqlState::DUPLICATE_OBJECT) => Ok(()),
        Err(e) => Err(SessionError::Broker(format!(
            "cannot create publication `{p}` in {server}: {}",
            db_error(&e)
        ))),
    }
}

/// Checks the slot, creating it when it is missing (and `createSlot`); its confirmed position.
async fn slot<M>(
    r: &Replication,
    client: &Client,
    messages: &mut M,
    wake: &mut bool,
    place: &Place<'_>,
) -> Result<u64, SessionError>
where
    M: Stream<Item = Result<AsyncMessage, tokio_postgres::Error>> + Unpin,
{
    let (server, s) = (place.server, &r.slot);
    let query = "SELECT plugin::text, database::text, slot_type, confirmed_flush_lsn \
                 FROM pg_replication_slots WHERE slot_name = $1";
    let read = |e: tokio_postgres::Error| {
        SessionError::broker(format!("cannot read slot `{s}` at {server}"), db_error(&e))
    };
    let mut found = drive(client.query_opt(query, &[s]), messages, wake, server)
        .await?
        .map_err(read)?;
    if found.is_none() {
        if !r.create_slot {
            return Err(SessionError::Broker(format!(
                "replication slot `{s}` does not exist at {server} (replication.createSlot is false)"
            )));
        }
        let created = drive(
            client.query_one(
                "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
                &[s],
            ),
            messages,
            wake,
            server,
        )
        .await?;
        match created {
            Ok(_) => tracing::info!(slot = %s, "created replication slot at {server}"),
            Err(e) if e.code() == Some(&SqlState::DUPLICATE_OBJECT) => {}
            Err(e) => {
                return Err(SessionError::Broker(format!(
                    "cannot create replication slot `{s}` at {server}: {}",
                    db_error(&e)
                )));
            }
        }
        found = drive(client.query_opt(query, &[s]), messages, wake, server)
            .await?
            .map_err(read)?;
    }
    let Some(row) = found else {
        return Err(SessionError::Broker(format!(
            "replication slot `{s}` does not exist at {server}"
        )));
    };
    let plugin: Option<String> = row.try_get(0).map_err(read)?;
    let database: Option<String> = row.try_get(1).map_err(read)?;
    let kind: Option<String> = row.try_get(2).map_err(read)?;
    let confirmed: Option<PgLsn> = row.try_get(3).map_err(read)?;
    if kind.as_deref() != Some("logical") {
        return Err(SessionError::Broker(format!(
            "replication slot `{s}` at {server} is a physical slot, not a logical one"
        )));
    }
    if plugin.as_deref() != Some("pgoutput") {
        return Err(SessionError::Broker(format!(
            "replication slot `{s}` at {server} uses plugin `{}`, not `pgoutput`",
            plugin.unwrap_or_default()
        )));
    }
    if database.as_deref() != Some(place.database) {
        return Err(SessionError::Broker(format!(
            "replication slot `{s}` at {server} belongs to database `{}`",
            database.unwrap_or_default()
        )));
    }
    Ok(confirmed.map(u64::from).unwrap_or(0))
}

/// What one peek handed over.
struct Handed {
    /// The transactions handed over, each with its end LSN and what to wait for.
    pending: Vec<(u64, Vec<Delivered>)>,
    /// Every message of the peek belonged to a committed transaction.
    all_ended: bool,
}

/// Turns a peek's messages into events and hands them over.
struct Reader<'a> {
    ctx: &'a ConfigContext,
    database: &'a str,
    relations: HashMap<u32, Relation>,
    /// The end LSN of the last transaction handed over.
    handed: u64,
    /// The slot's confirmed position.
    confirmed: u64,
}

/// The transaction being read.
struct Txn {
    commit_lsn: u64,
    time: Option<chrono::DateTime<chrono::Utc>>,
    xid: u32,
    events: Vec<Event>,
}

impl Reader<'_> {
    /// Hands over the committed transactions of `batch` not handed over yet, in order;
    /// `None` when the configuration is stopping.
    async fn hand_over(
        &mut self,
        batch: Vec<Message>,
        slot: &str,
    ) -> Result<Option<Handed>, SessionError> {
        let bad = |what: String| SessionError::Broker(format!("slot `{slot}`: {what}"));
        let mut txn: Option<Txn> = None;
        let mut pending = Vec::new();
        for message in batch {
            match message {
                Message::Begin {
                    final_lsn,
                    timestamp,
                    xid,
                } => {
                    txn = Some(Txn {
                        commit_lsn: final_lsn,
                        time: pgoutput::pg_time(timestamp),
                        xid,
                        events: Vec::new(),
                    });
                }
                Message::Relation(r) => {
                    self.relations.insert(r.oid, r);
                }
                Message::Commit { end_lsn, .. } => {
                    let Some(t) = txn.take() else {
                        return Err(bad("a Commit without its Begin".into()));
                    };
                    if end_lsn <= self.handed || end_lsn <= self.confirmed {
                        continue;
                    }
                    let mut deliveries = Vec::with_capacity(t.events.len());
                    for event in t.events {
                        match accepted_ackable(
                            self.ctx.submit(event, Submit::ACK_AFTER_DELIVERY).await,
                        )? {
                            Some(d) => deliveries.push(d),
                            None => return Ok(None),
                        }
                    }
                    self.handed = end_lsn;
                    pending.push((end_lsn, deliveries));
                }
                Message::Skipped(_) => {}
                change => {
                    let Some(t) = txn.as_mut() else {
                        return Err(bad("a change outside a transaction".into()));
                    };
                    for (op, relation, data) in self.rows(change).map_err(bad)? {
                        let n = t.events.len();
                        let event = Event::json(&data)
                            .map_err(|e| SessionError::Fatal(e.into()))?
                            .with_id(format!("{}:{n}", pgoutput::lsn_text(t.commit_lsn)))
                            .with_extension("operation", op)
                            .with_extension("database", self.database)
                            .with_extension("schema", relation.schema.as_str())
                            .with_extension("table", relation.name.as_str())
                            .with_extension("lsn", pgoutput::lsn_text(t.commit_lsn))
                            .with_extension("xid", t.xid.to_string());
                        t.events.push(match t.time {
                            Some(time) => event.with_time(time),
                            None => event,
                        });
                    }
                }
            }
        }
        Ok(Some(Handed {
            pending,
            all_ended: txn.is_none(),
        }))
    }

    /// The row changes of one change message: operation, relation and data.
    fn rows(&self, change: Message) -> Result<Vec<(&'static str, &Relation, Json)>, String> {
        let relation = |oid: u32| {
            self.relations
                .get(&oid)
                .ok_or_else(|| format!("a change of relation {oid} before its Relation message"))
        };
        let data = |op: &str, r: &Relation| {
            let mut m = Map::new();
            m.insert("op".into(), Json::from(op));
            m.insert("schema".into(), Json::from(r.schema.as_str()));
            m.insert("table".into(), Json::from(r.name.as_str()));
            m
        };
        Ok(match change {
            Message::Insert { relation: oid, new } => {
                let r = relation(oid)?;
                let mut m = data("insert", r);
                m.insert("new".into(), row(r, new, false)?);
                vec![("insert", r, Json::Object(m))]
            }
            Message::Update {
                relation: oid,
                old,
                new,
            } => {
                let r = relation(oid)?;
                let mut m = data("update", r);
                m.insert("new".into(), row(r, new, false)?);
                if let Some((kind, old)) = old {
                    m.insert("old".into(), row(r, old, kind == OldKind::Key)?);
                }
                vec![("update", r, Json::Object(m))]
            }
            Message::Delete {
                relation: oid,
                old: (kind, old),
            } => {
                let r = relation(oid)?;
                let mut m = data("delete", r);
                m.insert("old".into(), row(r, old, kind == OldKind::Key)?);
                vec![("delete", r, Json::Object(m))]
            }
            Message::Truncate {
                cascade,
                restart_identity,
                relations,
            } => {
                let mut out = Vec::with_capacity(relations.len());
                for oid in relations {
                    let r = relation(oid)?;
                    let mut m = data("truncate", r);
                    m.insert("cascade".into(), Json::Bool(cascade));
                    m.insert("restartIdentity".into(), Json::Bool(restart_identity));
                    out.push(("truncate", r, Json::Object(m)));
                }
                out
            }
            _ => Vec::new(),
        })
    }
}

/// A row as a JSON object of its columns (with `key_only`, the key columns alone); a TOASTed
/// value that did not change is left out.
fn row(r: &Relation, tuple: Tuple, key_only: bool) -> Result<Json, String> {
    if tuple.len() != r.columns.len() {
        return Err(format!(
            "a row of {} values for `{}.{}`, which has {} columns",
            tuple.len(),
            r.schema,
            r.name,
            r.columns.len()
        ));
    }
    let mut m = Map::new();
    for (column, value) in r.columns.iter().zip(tuple) {
        if key_only && !column.key {
            continue;
        }
        let json = match value {
            Value::Unchanged => continue,
            Value::Null => Json::Null,
            Value::Text(text) => json_of(column.type_oid, text),
            Value::Binary(bytes) => Json::from(hex::encode(bytes)),
        };
        m.insert(column.name.clone(), json);
    }
    Ok(Json::Object(m))
}

/// A column's text as JSON: booleans, integers and floating point numbers as themselves,
/// `json` and `jsonb` parsed, everything else (`numeric` too, to keep its digits) as text.
pub(crate) fn json_of(type_oid: u32, text: String) -> Json {
    const BOOL: u32 = 16;
    const INT8: u32 = 20;
    const INT2: u32 = 21;
    const INT4: u32 = 23;
    const OID: u32 = 26;
    const JSON: u32 = 114;
    const FLOAT4: u32 = 700;
    const FLOAT8: u32 = 701;
    const JSONB: u32 = 3802;
    let parsed = match type_oid {
        BOOL => match text.as_str() {
            "t" => Some(Json::Bool(true)),
            "f" => Some(Json::Bool(false)),
            _ => None,
        },
        INT2 | INT4 | INT8 => text.parse::<i64>().ok().map(Json::from),
        OID => text.parse::<u64>().ok().map(Json::from),
        FLOAT4 | FLOAT8 => text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Json::Number),
        JSON | JSONB => serde_json::from_str(&text).ok(),
        _ => None,
    };
    parsed.unwrap_or(Json::String(text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn relation(oid: u32) -> Message {
        Message::Relation(Relation {
            oid,
            schema: "public".into(),
            name: format!("t{oid}"),
            columns: vec![pgoutput::Column {
                name: "id".into(),
                type_oid: 23,
                key: true,
            }],
        })
    }

    fn insert(oid: u32, id: &str) -> Message {
        Message::Insert {
            relation: oid,
            new: vec![Value::Text(id.into())],
        }
    }

    fn begin(lsn: u64) -> Message {
        Message::Begin {
            final_lsn: lsn,
            timestamp: 0,
            xid: 7,
        }
    }

    fn commit(lsn: u64, end: u64) -> Message {
        Message::Commit {
            commit_lsn: lsn,
            end_lsn: end,
            timestamp: 0,
        }
    }

    /// Committed transactions are handed over in order, once; a transaction without its
    /// Commit (the peek ended in it) is not; relations are kept from one peek to the next.
    #[tokio::test]
    async fn transactions_are_handed_over_once_and_whole() {
        let mut h = portico::testing::Harness::new("pg", "postgres");
        let ctx = h.context("rows", "");
        let mut reader = Reader {
            ctx: &ctx,
            database: "test",
            relations: HashMap::new(),
            handed: 0,
            confirmed: 0x10,
        };
        let batch = vec![
            // Before the slot's position: not again.
            begin(0x8),
            relation(1),
            insert(1, "0"),
            commit(0x8, 0x10),
            begin(0x20),
            insert(1, "1"),
            Message::Skipped(b'Y'),
            insert(1, "2"),
            commit(0x20, 0x30),
            begin(0x40),
            insert(1, "3"),
            commit(0x40, 0x50),
            begin(0x60),
            insert(1, "4"),
        ];
        let handed = reader.hand_over(batch.clone(), "s").await.unwrap().unwrap();
        let ends: Vec<_> = handed
            .pending
            .iter()
            .map(|(end, d)| (*end, d.len()))
            .collect();
        assert_eq!(ends, [(0x30, 2), (0x50, 1)]);
        assert!(!handed.all_ended);
        assert_eq!(reader.handed, 0x50);
        let wait = Duration::from_secs(5);
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(h.next_event(wait).await.unwrap());
        }
        let ids: Vec<_> = got.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["0/20:0", "0/20:1", "0/40:0"]);
        assert!(h.try_next_event().is_none());

        // The same peek again (the slot did not move): nothing handed over twice, and the
        // relation is known without its message.
        let again: Vec<_> = batch.into_iter().skip(4).collect();
        let handed = reader.hand_over(again, "s").await.unwrap().unwrap();
        assert!(handed.pending.is_empty());
        let handed = reader
            .hand_over(vec![begin(0x60), insert(1, "4"), commit(0x60, 0x70)], "s")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(handed.pending.len(), 1);
        assert!(handed.all_ended);
        let e = h.next_event(wait).await.unwrap();
        assert_eq!(e.id, "0/60:0");

        for (batch, says) in [
            (vec![insert(1, "5")], "a change outside a transaction"),
            (vec![commit(0x80, 0x90)], "a Commit without its Begin"),
            (
                vec![begin(0x80), insert(2, "5")],
                "a change of relation 2 before its Relation message",
            ),
        ] {
            let Err(SessionError::Broker(e)) = reader.hand_over(batch, "s").await else {
                panic!("no error: {says}")
            };
            assert!(e.contains(says), "{e}");
        }
        ctx.stop();
    }

    #[test]
    fn column_values_by_type() {
        let cases = [
            (16, "t", json!(true)),
            (16, "f", json!(false)),
            (23, "-42", json!(-42)),
            (
                20,
                "9223372036854775807",
                json!(9_223_372_036_854_775_807_i64),
            ),
            (26, "4294967295", json!(4_294_967_295_u32)),
            (701, "1.5", json!(1.5)),
            (700, "NaN", json!("NaN")),
            (701, "Infinity", json!("Infinity")),
            (
                1700,
                "12345678901234567890.12",
                json!("12345678901234567890.12"),
            ),
            (3802, r#"{"a": [1, null]}"#, json!({"a": [1, null]})),
            (114, "not json", json!("not json")),
            (25, "text", json!("text")),
            (1114, "2024-01-02 03:04:05", json!("2024-01-02 03:04:05")),
        ];
        for (oid, text, want) in cases {
            assert_eq!(json_of(oid, text.to_string()), want, "{oid} {text}");
        }
    }

    #[test]
    fn rows_name_their_columns() {
        let r = Relation {
            oid: 1,
            schema: "public".into(),
            name: "t".into(),
            columns: vec![
                pgoutput::Column {
                    name: "id".into(),
                    type_oid: 23,
                    key: true,
                },
                pgoutput::Column {
                    name: "v".into(),
                    type_oid: 25,
                    key: false,
                },
            ],
        };
        let tuple = vec![Value::Text("7".into()), Value::Unchanged];
        assert_eq!(row(&r, tuple.clone(), false).unwrap(), json!({"id": 7}));
        let tuple = vec![Value::Text("7".into()), Value::Null];
        assert_eq!(
            row(&r, tuple.clone(), false).unwrap(),
            json!({"id": 7, "v": null})
        );
        assert_eq!(row(&r, tuple, true).unwrap(), json!({"id": 7}));
        let e = row(&r, vec![Value::Null], false).unwrap_err();
        assert!(
            e.contains("1 values for `public.t`, which has 2 columns"),
            "{e}"
        );
        assert_eq!(ident(r#"a"b"#), r#""a""b""#);
    }
}
