//! Replicas sharing one gateway's configurations.
//!
//! Every replica keeps a member record alive in a shared [`Store`] (Kubernetes Leases in a
//! cluster, a NATS JetStream key-value bucket elsewhere). A configuration belongs to one of
//! `buckets` buckets by a stable hash of its key ([`bucket_of`]); each bucket is wanted by one
//! live member, chosen by rendezvous hashing ([`owner`]), so that a member joining or leaving
//! moves only its own share. A bucket is held through a record in the store, renewed every
//! `renewPeriod` and valid for `leaseDuration`; every write of it is checked against the
//! revision read, so two replicas never both take it.
//!
//! A replica runs a sharded configuration only while it holds the configuration's bucket and
//! has renewed it within the lease: when a renewal fails for longer than that, it stops the
//! bucket's configurations itself. Handing a bucket over is stop, then release, then acquire
//! (by the other replica, at its next round): in steady state no configuration runs twice.
//! A replica that dies stops renewing; its buckets are taken once their records expire.
//!
//! With each bucket the holder records its configurations' checkpoints ([`Checkpoints`]: a
//! calendar's last fired tick), so that whoever takes the bucket next goes on from there.

pub(crate) mod leases;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::error::{BoxError, BoxFuture};
use crate::metrics::Metrics;

/// Where a configuration runs when a gateway has several replicas.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum Placement {
    /// On one replica at a time: the holder of the configuration's bucket (calendars, file
    /// and resource watches, broker subscriptions that every subscriber would receive).
    #[default]
    Sharded,
    /// On every replica: sources that callers or the broker spread over the replicas
    /// themselves (webhooks, consumer groups, durable consumers, shared queues).
    Everywhere,
}

/// The bucket of configuration `key` among `buckets` (a stable hash: the same on every
/// replica and in every version).
pub fn bucket_of(key: &str, buckets: u32) -> u32 {
    (xxhash_rust::xxh3::xxh3_64(key.as_bytes()) % u64::from(buckets.max(1))) as u32
}

/// The member that should hold `bucket`: the one with the highest rendezvous score.
pub fn owner<'a>(bucket: u32, members: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    members.into_iter().max_by_key(|m| (score(m, bucket), *m))
}

fn score(member: &str, bucket: u32) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(member.as_bytes(), u64::from(bucket))
}

/// How replicas share buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Buckets configurations are hashed into.
    pub buckets: u32,
    /// How long a member record or a bucket holds after its last renewal.
    pub lease: Duration,
    /// How often members and held buckets are renewed.
    pub renew: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            buckets: DEFAULT_BUCKETS,
            lease: Duration::from_secs(15),
            renew: Duration::from_secs(5),
        }
    }
}

/// Buckets when the gateway names no number.
pub const DEFAULT_BUCKETS: u32 = 32;

/// One replica as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberRecord {
    /// Its name (`PORTICO_REPLICA`, the pod's name in a cluster).
    pub name: String,
    /// When it last renewed its record (milliseconds since the Unix epoch).
    pub renewed_ms: i64,
    /// How long the record holds after that (milliseconds).
    pub lease_ms: i64,
}

impl MemberRecord {
    /// Whether the record still holds at `now_ms`.
    pub fn live(&self, now_ms: i64) -> bool {
        self.renewed_ms + self.lease_ms > now_ms
    }
}

/// One bucket as the store keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BucketRecord {
    /// The replica that holds it; `None` when it was released.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
    /// When the holder last renewed it (milliseconds since the Unix epoch).
    #[serde(default)]
    pub renewed_ms: i64,
    /// How long the hold lasts after that (milliseconds).
    #[serde(default)]
    pub lease_ms: i64,
    /// The checkpoints of its configurations, by key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub checkpoints: BTreeMap<String, String>,
}

impl BucketRecord {
    /// Whether `me` may take the bucket at `now_ms`: no one holds it, its hold expired, or
    /// it is `me`'s already (a replica back under the same name).
    pub fn free_for(&self, me: &str, now_ms: i64) -> bool {
        match &self.holder {
            None => true,
            Some(h) if h == me => true,
            Some(_) => self.renewed_ms + self.lease_ms <= now_ms,
        }
    }
}

/// A record and the revision it was read at (a NATS key-value revision, a Kubernetes
/// `resourceVersion`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    /// The record.
    pub value: T,
    /// Its revision, given back to write over it.
    pub revision: String,
}

/// Why a store refused or failed a request.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The record changed since it was read (or exists, when it was to be created).
    #[error("the record changed since it was read")]
    Conflict,
    /// The store could not be reached or failed.
    #[error("{0}")]
    Failed(String),
}

/// Where replicas keep their member records and bucket records.
pub trait Store: Send + Sync + 'static {
    /// Which store, for logs and `/status` (`nats`, `kubernetes`).
    fn kind(&self) -> &'static str;
    /// Writes `me`'s member record.
    fn put_member<'a>(&'a self, me: &'a MemberRecord) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Removes member `name`'s record (a replica leaving).
    fn remove_member<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Every member record (live or not).
    fn members(&self) -> BoxFuture<'_, Result<Vec<MemberRecord>, StoreError>>;
    /// Every bucket record there is, by bucket.
    fn buckets(&self) -> BoxFuture<'_, Result<BTreeMap<u32, Versioned<BucketRecord>>, StoreError>>;
    /// Writes bucket `bucket`'s record: creates it when `revision` is `None`, otherwise only
    /// over that revision ([`StoreError::Conflict`] when it moved on). Returns the new
    /// revision.
    fn write_bucket<'a>(
        &'a self,
        bucket: u32,
        record: &'a BucketRecord,
        revision: Option<&'a str>,
    ) -> BoxFuture<'a, Result<String, StoreError>>;
}

/// `spec.coordination.nats`: a NATS JetStream key-value bucket shared by the replicas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NatsCoordination {
    /// The NATS server (`nats://host:4222`).
    pub url: String,
    /// The key-value bucket (made when missing).
    pub bucket: String,
}

/// Makes the stores Portico has no client for (the `portico` binary makes NATS ones).
pub trait StoreFactory: Send + Sync + 'static {
    /// The store of `nats`, connected.
    fn nats<'a>(
        &'a self,
        nats: &'a NatsCoordination,
    ) -> BoxFuture<'a, Result<Arc<dyn Store>, BoxError>>;
}

/// Where each configuration's source got to, by bucket and key: written by the running
/// configuration ([`crate::ConfigContext::set_checkpoint`]), saved with its bucket's record,
/// and given to the configuration's next start, on this replica or another.
#[derive(Debug, Default)]
pub struct Checkpoints {
    buckets: u32,
    by_bucket: Mutex<HashMap<u32, BTreeMap<String, String>>>,
}

impl Checkpoints {
    /// Checkpoints of configurations hashed into `buckets` buckets.
    pub(crate) fn new(buckets: u32) -> Checkpoints {
        Checkpoints {
            buckets: buckets.max(1),
            by_bucket: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, BTreeMap<String, String>>> {
        self.by_bucket.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Configuration `key`'s checkpoint.
    pub(crate) fn get(&self, key: &str) -> Option<String> {
        self.lock()
            .get(&bucket_of(key, self.buckets))
            .and_then(|b| b.get(key).cloned())
    }

    /// Sets configuration `key`'s checkpoint.
    pub(crate) fn set(&self, key: &str, value: String) {
        self.lock()
            .entry(bucket_of(key, self.buckets))
            .or_default()
            .insert(key.to_string(), value);
    }

    /// Forgets configuration `key`'s checkpoint (it was removed or changed).
    pub(crate) fn forget(&self, key: &str) {
        if let Some(b) = self.lock().get_mut(&bucket_of(key, self.buckets)) {
            b.remove(key);
        }
    }

    /// The checkpoints of `bucket`.
    fn of_bucket(&self, bucket: u32) -> BTreeMap<String, String> {
        self.lock().get(&bucket).cloned().unwrap_or_default()
    }

    /// Takes `bucket`'s checkpoints from its record, over what this replica had.
    fn load(&self, bucket: u32, from: &BTreeMap<String, String>) {
        let mut all = self.lock();
        let mine = all.entry(bucket).or_default();
        for (k, v) in from {
            mine.insert(k.clone(), v.clone());
        }
    }

    /// Drops `bucket`'s checkpoints (another replica has it now).
    fn drop_bucket(&self, bucket: u32) {
        self.lock().remove(&bucket);
    }
}

/// The buckets this replica holds, sent to the runtime, which brings its configurations in
/// line and then answers on `done`.
#[derive(Debug)]
pub(crate) struct Assignment {
    /// The buckets held.
    pub held: Arc<BTreeSet<u32>>,
    /// Answered once the configurations of buckets not held have stopped.
    pub done: oneshot::Sender<()>,
}

/// Members and holders as the last round saw them (`/status`).
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct View {
    /// The store (`nats`, `kubernetes`).
    pub store: &'static str,
    /// This replica.
    pub me: String,
    /// Buckets configurations are hashed into.
    pub buckets: u32,
    /// The live members, each with the buckets it holds.
    pub members: BTreeMap<String, Vec<u32>>,
    /// When the store last answered a round in full (RFC 3339), if ever.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_round: Option<String>,
    /// Why the last round failed, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The view shared between the coordinator and the API.
pub(crate) type SharedView = Arc<Mutex<View>>;

struct Held {
    revision: String,
    /// When the last successful renewal was sent.
    renewed: Instant,
}

/// One replica's side of the sharing: renews its member record and its buckets, takes the
/// buckets rendezvous hashing gives it and releases the others.
pub(crate) struct Coordinator {
    store: Arc<dyn Store>,
    me: String,
    settings: Settings,
    checkpoints: Arc<Checkpoints>,
    metrics: Arc<Metrics>,
    held: BTreeMap<u32, Held>,
    assigned: Arc<BTreeSet<u32>>,
    assign: mpsc::Sender<Assignment>,
    view: SharedView,
    /// Each held bucket's checkpoints as they were at the previous round: a renewal saves
    /// these, one renew period old, so that the ticks they cover have left this replica
    /// (delivered) by the time another replica could take over from them. A replica that
    /// dies costs the ticks of the last period or two again, under the same ids, never a
    /// lost one.
    previous: HashMap<u32, BTreeMap<String, String>>,
    /// Told who holds what: this replica's buckets when they change, and replicas whose
    /// records expired (`None`); the Gateway's `status.members` in a cluster.
    report: Option<Report>,
    /// This replica's buckets as last reported, and the replicas reported gone.
    reported: (Option<Vec<u32>>, BTreeSet<String>),
}

/// Where changes of the members go ([`Coordinator::with_report`]).
pub(crate) type Report = Box<dyn Fn(BTreeMap<String, Option<Vec<u32>>>) + Send + Sync>;

/// Member records expired this many lease durations ago are removed by whoever sees them.
const FORGET_AFTER_LEASES: i64 = 10;

/// The runtime stopped listening: the replica is shutting down.
struct Gone;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Coordinator {
    /// A coordinator for replica `me`; assignments go to `assign`.
    pub(crate) fn new(
        store: Arc<dyn Store>,
        me: String,
        settings: Settings,
        checkpoints: Arc<Checkpoints>,
        metrics: Arc<Metrics>,
        assign: mpsc::Sender<Assignment>,
    ) -> Coordinator {
        let view = Arc::new(Mutex::new(View {
            store: store.kind(),
            me: me.clone(),
            buckets: settings.buckets,
            ..View::default()
        }));
        Coordinator {
            store,
            me,
            settings,
            checkpoints,
            metrics,
            held: BTreeMap::new(),
            assigned: Arc::default(),
            assign,
            view,
            previous: HashMap::new(),
            report: None,
            reported: Default::default(),
        }
    }

    /// Reports the members and their buckets to `report` as they change.
    pub(crate) fn with_report(mut self, report: Report) -> Coordinator {
        self.report = Some(report);
        self
    }

    /// What `/status` shows.
    pub(crate) fn view(&self) -> SharedView {
        self.view.clone()
    }

    /// Rounds every renew period until `stop`; then releases every bucket (the runtime has
    /// stopped the configurations by then) and removes the member record.
    pub(crate) async fn run(mut self, stop: CancellationToken) {
        tracing::info!(
            replica = %self.me, store = self.store.kind(), buckets = self.settings.buckets,
            lease_ms = self.settings.lease.as_millis() as u64,
            renew_ms = self.settings.renew.as_millis() as u64,
            "sharing configurations with the gateway's other replicas"
        );
        loop {
            let next = Instant::now() + self.settings.renew;
            let gone = tokio::select! {
                _ = stop.cancelled() => true,
                r = self.round() => r.is_err(),
            };
            if gone {
                break;
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep_until(next.into()) => {}
            }
        }
        self.leave().await;
    }

    /// One round: renew the member record, read members and buckets, release what is no
    /// longer this replica's, renew what is, take what is free.
    async fn round(&mut self) -> Result<(), Gone> {
        let limit = self.settings.renew.max(Duration::from_millis(200));
        let started = Instant::now();
        let now = now_ms();
        let me = MemberRecord {
            name: self.me.clone(),
            renewed_ms: now,
            lease_ms: self.settings.lease.as_millis() as i64,
        };
        let read = async {
            self.metrics.coordination.requests.inc_by(3);
            self.store.put_member(&me).await?;
            let members = self.store.members().await?;
            let buckets = self.store.buckets().await?;
            Ok::<_, StoreError>((members, buckets))
        };
        let (members, records) = match tokio::time::timeout(limit, read).await {
            Ok(Ok(read)) => read,
            Ok(Err(e)) => return self.failed(e.to_string()).await,
            Err(_) => {
                let why = format!("no answer within {}", humantime::format_duration(limit));
                return self.failed(why).await;
            }
        };
        let (live, dead): (Vec<MemberRecord>, Vec<MemberRecord>) =
            members.into_iter().partition(|m| m.live(now));
        let mut live: BTreeSet<String> = live.into_iter().map(|m| m.name).collect();
        for d in &dead {
            // Long gone (killed, never back under its name): its record goes.
            if d.renewed_ms + d.lease_ms * FORGET_AFTER_LEASES < now && d.name != self.me {
                self.metrics.coordination.requests.inc();
                if let Err(e) = self.store.remove_member(&d.name).await {
                    tracing::debug!(member = %d.name, "cannot remove an expired member record: {e}");
                }
            }
        }
        live.insert(self.me.clone());
        let me_name = self.me.clone();
        let mine = |b: u32| owner(b, live.iter().map(String::as_str)) == Some(me_name.as_str());

        // Stop, then release, what rendezvous hashing gives to another member now.
        let leaving: Vec<u32> = self.held.keys().copied().filter(|b| !mine(*b)).collect();
        if !leaving.is_empty() {
            let keep: BTreeSet<u32> = self
                .held
                .keys()
                .copied()
                .filter(|b| !leaving.contains(b))
                .collect();
            self.assign_held(keep).await?;
            for b in leaving {
                let Some(h) = self.held.remove(&b) else {
                    continue;
                };
                self.release(b, &h, now).await;
                self.checkpoints.drop_bucket(b);
                self.previous.remove(&b);
                self.metrics.coordination.moved("released");
            }
        }

        // Renew what stays; take what is free and this replica's.
        let mut lost = Vec::new();
        let mut taken = Vec::new();
        for b in 0..self.settings.buckets {
            if !mine(b) {
                continue;
            }
            let record = BucketRecord {
                holder: Some(self.me.clone()),
                renewed_ms: now,
                lease_ms: self.settings.lease.as_millis() as i64,
                checkpoints: BTreeMap::new(),
            };
            if let Some(h) = self.held.get(&b) {
                let record = BucketRecord {
                    checkpoints: self
                        .previous
                        .insert(b, self.checkpoints.of_bucket(b))
                        .unwrap_or_default(),
                    ..record
                };
                self.metrics.coordination.requests.inc();
                match self.store.write_bucket(b, &record, Some(&h.revision)).await {
                    Ok(revision) => {
                        self.held.insert(
                            b,
                            Held {
                                revision,
                                renewed: started,
                            },
                        );
                    }
                    Err(StoreError::Conflict) => lost.push(b),
                    Err(e) => {
                        tracing::warn!(bucket = b, "cannot renew the bucket: {e}");
                        if self.expiring(h) {
                            lost.push(b);
                        }
                    }
                }
                continue;
            }
            let current = records.get(&b);
            if let Some(c) = current
                && !c.value.free_for(&self.me, now)
            {
                continue;
            }
            let record = BucketRecord {
                checkpoints: current
                    .map(|c| c.value.checkpoints.clone())
                    .unwrap_or_default(),
                ..record
            };
            self.metrics.coordination.requests.inc();
            match self
                .store
                .write_bucket(b, &record, current.map(|c| c.revision.as_str()))
                .await
            {
                Ok(revision) => {
                    self.checkpoints.load(b, &record.checkpoints);
                    self.previous.insert(b, record.checkpoints.clone());
                    self.held.insert(
                        b,
                        Held {
                            revision,
                            renewed: started,
                        },
                    );
                    if let Some(c) = current
                        && let Some(h) = &c.value.holder
                        && h != &self.me
                    {
                        // Taken from a replica that stopped renewing: the time since its
                        // last renewal is how long the bucket's configurations ran nowhere.
                        let gap = (now - c.value.renewed_ms).max(0) as f64 / 1000.0;
                        self.metrics.coordination.takeover.observe(gap);
                        tracing::info!(bucket = b, from = %h, gap_s = gap, "bucket taken over from a replica that stopped renewing it");
                    }
                    taken.push(b);
                    self.metrics.coordination.moved("acquired");
                }
                Err(StoreError::Conflict) => {}
                Err(e) => tracing::warn!(bucket = b, "cannot take the bucket: {e}"),
            }
        }
        for b in &lost {
            tracing::warn!(bucket = b, "bucket lost: stopping its configurations");
            self.held.remove(b);
            self.checkpoints.drop_bucket(*b);
            self.previous.remove(b);
            self.metrics.coordination.moved("lost");
        }
        let held: BTreeSet<u32> = self.held.keys().copied().collect();
        self.assign_held(held).await?;

        // What /status shows: each live member with the buckets it holds.
        let mut holders: BTreeMap<String, Vec<u32>> =
            live.iter().map(|m| (m.clone(), Vec::new())).collect();
        for (b, r) in &records {
            if let Some(h) = &r.value.holder
                && h != &self.me
                && r.value.renewed_ms + r.value.lease_ms > now
                && let Some(list) = holders.get_mut(h)
            {
                list.push(*b);
            }
        }
        let mine: Vec<u32> = self.held.keys().copied().collect();
        holders.insert(self.me.clone(), mine.clone());
        if let Some(report) = &self.report {
            let mut changes = BTreeMap::new();
            if self.reported.0.as_ref() != Some(&mine) {
                changes.insert(self.me.clone(), Some(mine.clone()));
                self.reported.0 = Some(mine);
            }
            for d in dead {
                if d.name != self.me && self.reported.1.insert(d.name.clone()) {
                    changes.insert(d.name, None);
                }
            }
            self.reported.1.retain(|n| !live.contains(n));
            if !changes.is_empty() {
                report(changes);
            }
        }
        let mut view = self.view.lock().unwrap_or_else(|p| p.into_inner());
        view.members = holders;
        view.last_round = Some(chrono::Utc::now().to_rfc3339());
        view.error = None;
        Ok(())
    }

    /// Whether a held bucket's last renewal is so old that its hold may expire before the
    /// next round: its configurations must stop now.
    fn expiring(&self, h: &Held) -> bool {
        let margin = self.settings.renew + self.settings.renew / 2;
        h.renewed.elapsed() + margin >= self.settings.lease
    }

    /// A round that could not read the store: buckets whose hold may expire before the next
    /// round are given up (their configurations stop), the others kept.
    async fn failed(&mut self, why: String) -> Result<(), Gone> {
        tracing::warn!(
            store = self.store.kind(),
            "coordination round failed: {why}"
        );
        let expiring: Vec<u32> = self
            .held
            .iter()
            .filter(|(_, h)| self.expiring(h))
            .map(|(b, _)| *b)
            .collect();
        for b in &expiring {
            self.held.remove(b);
            self.previous.remove(b);
            self.checkpoints.drop_bucket(*b);
            self.metrics.coordination.moved("lost");
        }
        if !expiring.is_empty() {
            tracing::warn!(buckets = ?expiring, "the store did not answer within the lease: stopping these buckets' configurations");
        }
        let held: BTreeSet<u32> = self.held.keys().copied().collect();
        self.view.lock().unwrap_or_else(|p| p.into_inner()).error = Some(why);
        self.assign_held(held).await
    }

    /// Tells the runtime which buckets are held and waits until it has acted on it.
    async fn assign_held(&mut self, held: BTreeSet<u32>) -> Result<(), Gone> {
        self.metrics.coordination.held.set(held.len() as i64);
        if *self.assigned == held {
            return Ok(());
        }
        let held = Arc::new(held);
        let (done, answered) = oneshot::channel();
        self.assign
            .send(Assignment {
                held: held.clone(),
                done,
            })
            .await
            .map_err(|_| Gone)?;
        answered.await.map_err(|_| Gone)?;
        self.assigned = held;
        Ok(())
    }

    /// Writes bucket `b` free, with its configurations' checkpoints as they are now (they have
    /// stopped). If the write fails, the hold expires by itself and the next holder waits for
    /// that.
    async fn release(&self, b: u32, h: &Held, now: i64) {
        let record = BucketRecord {
            holder: None,
            renewed_ms: now,
            lease_ms: 0,
            checkpoints: self.checkpoints.of_bucket(b),
        };
        self.metrics.coordination.requests.inc();
        if let Err(e) = self.store.write_bucket(b, &record, Some(&h.revision)).await {
            tracing::warn!(bucket = b, "cannot release the bucket: {e}");
        }
    }

    /// Releases every held bucket with its checkpoints and removes the member record.
    async fn leave(mut self) {
        let now = now_ms();
        let held = std::mem::take(&mut self.held);
        for (b, h) in held {
            self.release(b, &h, now).await;
        }
        self.metrics.coordination.requests.inc();
        if let Err(e) = self.store.remove_member(&self.me).await {
            tracing::warn!("cannot remove this replica's member record: {e}");
        }
        if let Some(report) = &self.report {
            report(BTreeMap::from([(self.me.clone(), None)]));
        }
        tracing::info!(replica = %self.me, "left the gateway's replicas: buckets released");
    }
}

#[cfg(test)]
mod tests;
