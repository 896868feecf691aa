//! Replicas outside a cluster coordinate through a NATS JetStream key-value bucket
//! (`spec.coordination.nats`): member records under `members.<replica>`, bucket records under
//! `buckets.<n>`, each a JSON value. A bucket is taken with a revision-checked create or update,
//! so two replicas never both write over the same revision. Records no one renewed for a day
//! expire (the key-value bucket's TTL): replicas that left long ago do not pile up.
//!
//! Each round reads every record at once, through one ordered consumer that delivers the last
//! value of each key: the requests of a round grow with buckets and replicas, never with
//! configurations.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv};
use futures::StreamExt;
use portico::coordination::{
    BucketRecord, MemberRecord, NatsCoordination, Store, StoreError, StoreFactory, Versioned,
};
use portico::watcher::{BoxError, BoxFuture};

/// How long records no one renews are kept.
const RECORD_TTL: Duration = Duration::from_secs(24 * 3600);

/// A key-value bucket of member and bucket records.
pub struct KvStore {
    client: async_nats::Client,
    kv: kv::Store,
    /// The last read of every record, taken by `members` and used by the `buckets` call that
    /// follows it in the same round.
    last: Mutex<Option<BTreeMap<String, (bytes::Bytes, u64)>>>,
}

impl KvStore {
    /// Connects to `nats` and opens (or makes) its key-value bucket.
    pub async fn connect(nats: &NatsCoordination) -> Result<KvStore, BoxError> {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .connect(nats.url.as_str())
            .await?;
        let js = jetstream::new(client.clone());
        let kv = match js.get_key_value(nats.bucket.as_str()).await {
            Ok(kv) => kv,
            Err(_) => {
                // The stream a key-value bucket is, made directly: the client's own
                // `create_key_value` first reads the account's limits, in a form servers
                // before 2.10 do not answer in.
                js.get_or_create_stream(jetstream::stream::Config {
                    name: format!("KV_{}", nats.bucket),
                    description: Some(
                        "Portico: replicas sharing a gateway's configurations".into(),
                    ),
                    subjects: vec![format!("$KV.{}.>", nats.bucket)],
                    max_messages_per_subject: 1,
                    max_age: RECORD_TTL,
                    allow_rollup: true,
                    deny_delete: true,
                    allow_direct: true,
                    discard: jetstream::stream::DiscardPolicy::New,
                    num_replicas: 1,
                    ..Default::default()
                })
                .await?;
                js.get_key_value(nats.bucket.as_str()).await?
            }
        };
        Ok(KvStore {
            client,
            kv,
            last: Mutex::new(None),
        })
    }

    /// The last value of every key (deleted ones left out), in one pass of an ordered
    /// consumer.
    async fn read_all(&self) -> Result<BTreeMap<String, (bytes::Bytes, u64)>, StoreError> {
        let consumer = self
            .kv
            .stream
            .create_consumer(consumer::push::OrderedConfig {
                deliver_subject: self.client.new_inbox(),
                filter_subject: format!("{}>", self.kv.prefix),
                deliver_policy: consumer::DeliverPolicy::LastPerSubject,
                replay_policy: consumer::ReplayPolicy::Instant,
                ..Default::default()
            })
            .await
            .map_err(failed)?;
        let mut out = BTreeMap::new();
        if consumer.cached_info().num_pending == 0 {
            return Ok(out);
        }
        let mut messages = consumer.messages().await.map_err(failed)?;
        while let Some(m) = messages.next().await {
            let m = m.map_err(failed)?;
            let info = m.info().map_err(failed)?;
            let (seq, pending) = (info.stream_sequence, info.pending);
            let key = m
                .subject
                .strip_prefix(self.kv.prefix.as_str())
                .unwrap_or(&m.subject)
                .to_string();
            let deleted = m
                .headers
                .as_ref()
                .and_then(|h| h.get("KV-Operation"))
                .is_some_and(|op| op.as_str() == "DEL" || op.as_str() == "PURGE");
            if deleted {
                out.remove(&key);
            } else {
                out.insert(key, (m.payload.clone(), seq));
            }
            if pending == 0 {
                break;
            }
        }
        Ok(out)
    }
}

fn failed(e: impl std::fmt::Display) -> StoreError {
    StoreError::Failed(format!("NATS: {e}"))
}

impl Store for KvStore {
    fn kind(&self) -> &'static str {
        "nats"
    }

    fn put_member<'a>(&'a self, me: &'a MemberRecord) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let value = serde_json::to_vec(me).map_err(failed)?;
            self.kv
                .put(format!("members.{}", me.name), value.into())
                .await
                .map_err(failed)?;
            Ok(())
        })
    }

    fn remove_member<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.kv
                .delete(format!("members.{name}"))
                .await
                .map_err(failed)
        })
    }

    fn members(&self) -> BoxFuture<'_, Result<Vec<MemberRecord>, StoreError>> {
        Box::pin(async move {
            let all = self.read_all().await?;
            let members = all
                .iter()
                .filter(|(k, _)| k.starts_with("members."))
                .filter_map(|(_, (v, _))| serde_json::from_slice(v).ok())
                .collect();
            *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(all);
            Ok(members)
        })
    }

    fn buckets(&self) -> BoxFuture<'_, Result<BTreeMap<u32, Versioned<BucketRecord>>, StoreError>> {
        Box::pin(async move {
            let cached = self.last.lock().unwrap_or_else(|p| p.into_inner()).take();
            let all = match cached {
                Some(all) => all,
                None => self.read_all().await?,
            };
            Ok(all
                .iter()
                .filter_map(|(k, (v, rev))| {
                    let n = k.strip_prefix("buckets.")?.parse::<u32>().ok()?;
                    let value = serde_json::from_slice(v).ok()?;
                    Some((
                        n,
                        Versioned {
                            value,
                            revision: rev.to_string(),
                        },
                    ))
                })
                .collect())
        })
    }

    fn write_bucket<'a>(
        &'a self,
        bucket: u32,
        record: &'a BucketRecord,
        revision: Option<&'a str>,
    ) -> BoxFuture<'a, Result<String, StoreError>> {
        Box::pin(async move {
            let key = format!("buckets.{bucket}");
            let value: bytes::Bytes = serde_json::to_vec(record).map_err(failed)?.into();
            let written = match revision {
                None => self
                    .kv
                    .create(&key, value)
                    .await
                    .map_err(|e| match e.kind() {
                        kv::CreateErrorKind::AlreadyExists => StoreError::Conflict,
                        _ => failed(e),
                    }),
                Some(rev) => {
                    let rev = rev
                        .parse::<u64>()
                        .map_err(|_| StoreError::Failed(format!("revision `{rev}`")))?;
                    self.kv
                        .update(&key, value, rev)
                        .await
                        .map_err(|e| match e.kind() {
                            kv::UpdateErrorKind::WrongLastRevision => StoreError::Conflict,
                            _ => failed(e),
                        })
                }
            }?;
            Ok(written.to_string())
        })
    }
}

/// Makes [`KvStore`]s.
#[derive(Debug, Default)]
pub struct NatsStores;

impl StoreFactory for NatsStores {
    fn nats<'a>(
        &'a self,
        nats: &'a NatsCoordination,
    ) -> BoxFuture<'a, Result<Arc<dyn Store>, BoxError>> {
        Box::pin(async move { Ok(Arc::new(KvStore::connect(nats).await?) as Arc<dyn Store>) })
    }
}
