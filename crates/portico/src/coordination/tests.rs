use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::metrics::Metrics;

#[test]
fn a_key_has_one_bucket_everywhere() {
    assert_eq!(bucket_of("nightly", 32), bucket_of("nightly", 32));
    assert!(bucket_of("nightly", 32) < 32);
    assert_eq!(bucket_of("anything", 1), 0);
    // Keys spread over the buckets.
    let used: BTreeSet<u32> = (0..1000).map(|i| bucket_of(&format!("c{i}"), 32)).collect();
    assert_eq!(used.len(), 32);
}

#[test]
fn a_member_joining_takes_only_its_own_share() {
    let before = ["a", "b", "c"];
    let after = ["a", "b", "c", "d"];
    let mut moved = 0;
    for b in 0..1024 {
        let old = owner(b, before).unwrap();
        let new = owner(b, after).unwrap();
        if old != new {
            assert_eq!(new, "d", "bucket {b} moved from {old} to {new}");
            moved += 1;
        }
    }
    // About a quarter of the buckets go to the new member.
    assert!((180..330).contains(&moved), "{moved} of 1024 moved");
    // And a member leaving gives away only its own.
    for b in 0..1024 {
        let old = owner(b, after).unwrap();
        if old != "d" {
            assert_eq!(owner(b, before).unwrap(), old);
        }
    }
}

#[test]
fn a_bucket_is_free_when_released_expired_or_already_mine() {
    let r = BucketRecord {
        holder: Some("a".into()),
        renewed_ms: 1_000,
        lease_ms: 500,
        checkpoints: BTreeMap::new(),
    };
    assert!(!r.free_for("b", 1_499));
    assert!(r.free_for("b", 1_500));
    assert!(r.free_for("a", 1_000));
    let released = BucketRecord { holder: None, ..r };
    assert!(released.free_for("b", 0));
}

/// A store in memory with the revision checks of the real ones.
#[derive(Default)]
struct MemoryStore {
    members: Mutex<BTreeMap<String, MemberRecord>>,
    buckets: Mutex<BTreeMap<u32, (BucketRecord, u64)>>,
    revision: std::sync::atomic::AtomicU64,
}

impl Store for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }
    fn put_member<'a>(&'a self, me: &'a MemberRecord) -> BoxFuture<'a, Result<(), StoreError>> {
        self.members
            .lock()
            .unwrap()
            .insert(me.name.clone(), me.clone());
        Box::pin(async { Ok(()) })
    }
    fn remove_member<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        self.members.lock().unwrap().remove(name);
        Box::pin(async { Ok(()) })
    }
    fn members(&self) -> BoxFuture<'_, Result<Vec<MemberRecord>, StoreError>> {
        let all = self.members.lock().unwrap().values().cloned().collect();
        Box::pin(async { Ok(all) })
    }
    fn buckets(&self) -> BoxFuture<'_, Result<BTreeMap<u32, Versioned<BucketRecord>>, StoreError>> {
        let all = self
            .buckets
            .lock()
            .unwrap()
            .iter()
            .map(|(b, (r, rev))| {
                (
                    *b,
                    Versioned {
                        value: r.clone(),
                        revision: rev.to_string(),
                    },
                )
            })
            .collect();
        Box::pin(async { Ok(all) })
    }
    fn write_bucket<'a>(
        &'a self,
        bucket: u32,
        record: &'a BucketRecord,
        revision: Option<&'a str>,
    ) -> BoxFuture<'a, Result<String, StoreError>> {
        let mut all = self.buckets.lock().unwrap();
        let current = all.get(&bucket).map(|(_, rev)| rev.to_string());
        let out = if current.as_deref() != revision {
            Err(StoreError::Conflict)
        } else {
            let rev = self
                .revision
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                + 1;
            all.insert(bucket, (record.clone(), rev));
            Ok(rev.to_string())
        };
        Box::pin(async { out })
    }
}

/// What each replica runs, as its assignments said; every assignment checks that no bucket
/// runs on two replicas.
#[derive(Default)]
struct Running(Mutex<BTreeMap<String, BTreeSet<u32>>>);

impl Running {
    fn set(&self, me: &str, held: &BTreeSet<u32>) {
        let mut all = self.0.lock().unwrap();
        for (other, theirs) in all.iter() {
            if other != me {
                let both: Vec<_> = theirs.intersection(held).collect();
                assert!(
                    both.is_empty(),
                    "{me} and {other} both run buckets {both:?}"
                );
            }
        }
        all.insert(me.to_string(), held.clone());
    }
    fn of(&self, me: &str) -> BTreeSet<u32> {
        self.0.lock().unwrap().get(me).cloned().unwrap_or_default()
    }
    fn union(&self) -> BTreeSet<u32> {
        self.0.lock().unwrap().values().flatten().copied().collect()
    }
}

struct Replica {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    follower: tokio::task::JoinHandle<()>,
}

fn replica(name: &str, store: Arc<MemoryStore>, running: Arc<Running>, s: Settings) -> Replica {
    let (tx, mut rx) = mpsc::channel::<Assignment>(1);
    let c = Coordinator::new(
        store,
        name.to_string(),
        s,
        Arc::new(Checkpoints::new(s.buckets)),
        Metrics::new(),
        tx,
    );
    let stop = CancellationToken::new();
    let task = tokio::spawn(c.run(stop.clone()));
    let me = name.to_string();
    let follower = tokio::spawn(async move {
        while let Some(a) = rx.recv().await {
            running.set(&me, &a.held);
            let _ = a.done.send(());
        }
        running.set(&me, &BTreeSet::new());
    });
    Replica {
        stop,
        task,
        follower,
    }
}

async fn until(what: &str, within: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < within, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_every_bucket_once_through_joins_leaves_and_deaths() {
    // A lease far longer than a renewal round, so that a replica held up by a loaded machine
    // (a whole test suite beside it) does not lose a hold it keeps renewing.
    let s = Settings {
        buckets: 16,
        lease: Duration::from_millis(2_000),
        renew: Duration::from_millis(200),
    };
    let store = Arc::new(MemoryStore::default());
    let running = Arc::new(Running::default());
    let all: BTreeSet<u32> = (0..s.buckets).collect();
    let mut replicas: BTreeMap<&str, Replica> = ["a", "b", "c"]
        .into_iter()
        .map(|n| (n, replica(n, store.clone(), running.clone(), s)))
        .collect();
    let spread = |running: &Running, names: &[&str]| {
        running.union() == all && names.iter().all(|n| !running.of(n).is_empty())
    };
    until(
        "three replicas to hold every bucket",
        Duration::from_secs(10),
        || spread(&running, &["a", "b", "c"]),
    )
    .await;

    // A fourth joins: it takes buckets only from the others' shares, which shrink.
    let before: BTreeMap<&str, BTreeSet<u32>> = ["a", "b", "c"].map(|n| (n, running.of(n))).into();
    replicas.insert("d", replica("d", store.clone(), running.clone(), s));
    until(
        "the fourth replica to get its share",
        Duration::from_secs(10),
        || spread(&running, &["a", "b", "c", "d"]),
    )
    .await;
    for (n, had) in &before {
        assert!(
            running.of(n).is_subset(had),
            "{n} took a bucket it did not hold"
        );
    }

    // One dies (no release): its buckets run elsewhere once their holds expire.
    let dead = replicas.remove("b").unwrap();
    dead.task.abort();
    dead.follower.abort();
    let _ = dead.task.await;
    let orphaned = running.of("b");
    running.set("b", &BTreeSet::new());
    let took = until(
        "the dead replica's buckets to move",
        Duration::from_secs(10),
        || {
            let held: BTreeSet<u32> = ["a", "c", "d"].iter().flat_map(|n| running.of(n)).collect();
            orphaned.is_subset(&held) && held == all
        },
    )
    .await;
    assert!(
        took <= s.lease + s.renew * 4,
        "took {took:?}, lease {:?}",
        s.lease
    );

    // One leaves cleanly: its buckets are released and taken within a round or two.
    let leaving = replicas.remove("c").unwrap();
    leaving.stop.cancel();
    let _ = leaving.task.await;
    let _ = leaving.follower.await;
    until(
        "the leaving replica's buckets to move",
        Duration::from_secs(10),
        || spread(&running, &["a", "d"]) && running.of("c").is_empty(),
    )
    .await;
    for r in replicas.into_values() {
        r.stop.cancel();
        let _ = r.task.await;
    }
    // Leaving released everything and removed the member records.
    assert!(store.members.lock().unwrap().keys().all(|m| m == "b"));
    assert!(
        store
            .buckets
            .lock()
            .unwrap()
            .values()
            .all(|(r, _)| r.holder.is_none() || r.holder.as_deref() == Some("b"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_go_with_their_bucket() {
    let s = Settings {
        buckets: 4,
        lease: Duration::from_millis(600),
        renew: Duration::from_millis(100),
    };
    let store = Arc::new(MemoryStore::default());
    let (tx, mut rx) = mpsc::channel::<Assignment>(1);
    let first = Arc::new(Checkpoints::new(s.buckets));
    let c = Coordinator::new(
        store.clone(),
        "a".into(),
        s,
        first.clone(),
        Metrics::new(),
        tx,
    );
    let stop = CancellationToken::new();
    let task = tokio::spawn(c.run(stop.clone()));
    let a = rx.recv().await.unwrap();
    assert_eq!(a.held.len(), 4);
    let _ = a.done.send(());
    first.set("nightly", "2026-01-02T03:00:00Z".into());
    // Saved with the bucket at the next renewal, and at the release on the way out.
    stop.cancel();
    drop(rx);
    task.await.unwrap();
    let b = bucket_of("nightly", s.buckets);
    let saved = store.buckets.lock().unwrap()[&b].0.clone();
    assert_eq!(saved.holder, None);
    assert_eq!(saved.checkpoints["nightly"], "2026-01-02T03:00:00Z");

    // The next replica to take the bucket has it.
    let (tx, mut rx) = mpsc::channel::<Assignment>(1);
    let second = Arc::new(Checkpoints::new(s.buckets));
    let c = Coordinator::new(store, "b".into(), s, second.clone(), Metrics::new(), tx);
    let stop = CancellationToken::new();
    let task = tokio::spawn(c.run(stop.clone()));
    let a = rx.recv().await.unwrap();
    assert!(a.held.contains(&b));
    assert_eq!(
        second.get("nightly").as_deref(),
        Some("2026-01-02T03:00:00Z")
    );
    let _ = a.done.send(());
    stop.cancel();
    drop(rx);
    task.await.unwrap();
}
