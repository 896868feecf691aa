//! The machine's PostgreSQL for the `postgres` replication tests (127.0.0.1:5432, trust
//! authentication, database `test`, `wal_level = logical`): a client of the test's own, the
//! test's own table, publication and slot names (a uuid), dropped with them even when the test
//! fails (a slot left behind keeps WAL), and what the slot still holds.

#![allow(dead_code)]

use std::time::Duration;

/// The server, as a configuration's `url`.
pub const URL: &str = "postgres://root@127.0.0.1:5432/test";
/// The server, for the tests' own clients.
pub const CONNINFO: &str = "host=127.0.0.1 port=5432 user=postgres dbname=test";

/// A client of the test's own; its connection is driven by a task that ends when the client
/// is dropped.
pub async fn client() -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(CONNINFO, tokio_postgres::NoTls)
        .await
        .expect("connect to PostgreSQL on 127.0.0.1:5432");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// A test's table, publication and slot; dropped with it, even when the test fails (the
/// slot's holder is terminated if need be).
pub struct Names {
    pub table: String,
    pub publication: String,
    pub slot: String,
}

impl Names {
    pub fn new() -> Names {
        let id = uuid::Uuid::new_v4().simple();
        Names {
            table: format!("portico_rows_{id}"),
            publication: format!("portico_pub_{id}"),
            slot: format!("portico_slot_{id}"),
        }
    }
}

impl Drop for Names {
    fn drop(&mut self) {
        let (table, publication) = (self.table.clone(), self.publication.clone());
        // The test's slot, and the copy or other slot a test may have made of its name.
        let slots: Vec<String> = ["", "_c", "_x"]
            .iter()
            .map(|suffix| format!("{}{suffix}", self.slot))
            .collect();
        // Its own runtime on its own thread: the test's runtime may be gone or busy.
        let cleaned = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(async move {
                let (c, connection) = tokio_postgres::connect(CONNINFO, tokio_postgres::NoTls)
                    .await
                    .map_err(|e| e.to_string())?;
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
                for slot in &slots {
                    loop {
                        let exists = c
                            .query_opt(
                                "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1",
                                &[slot],
                            )
                            .await
                            .map_err(|e| e.to_string())?;
                        let Some(row) = exists else { break };
                        if let Some(pid) = row.get::<_, Option<i32>>(0) {
                            let _ = c.execute("SELECT pg_terminate_backend($1)", &[&pid]).await;
                        }
                        match c
                            .execute("SELECT pg_drop_replication_slot($1)", &[slot])
                            .await
                        {
                            Ok(_) => break,
                            Err(e) if tokio::time::Instant::now() > deadline => {
                                return Err(format!("cannot drop slot {slot}: {e}"));
                            }
                            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                        }
                    }
                }
                c.batch_execute(&format!(
                    "DROP PUBLICATION IF EXISTS {publication}; DROP TABLE IF EXISTS {table}"
                ))
                .await
                .map_err(|e| e.to_string())
            })
        })
        .join();
        match cleaned {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("cleanup: {e}"),
            Err(_) => eprintln!("cleanup panicked"),
        }
    }
}

/// How many inserts the slot still holds (peeked, so it does not move); an error while the
/// gateway reads the slot at the same moment (the slot is busy).
pub async fn try_inserts_in_slot(
    c: &tokio_postgres::Client,
    n: &Names,
) -> Result<i64, tokio_postgres::Error> {
    let row = c
        .query_one(
            "SELECT count(*) FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL, \
             'proto_version', '1', 'publication_names', $2) WHERE get_byte(data, 0) = 73",
            &[&n.slot, &n.publication],
        )
        .await?;
    Ok(row.get(0))
}
