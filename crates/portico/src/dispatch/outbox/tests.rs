//! The outbox's promises: group commit, replay after reopen, torn tails cut, reused
//! segments, the size bound, marks that wait for the disk, and appenders that went away.

use std::collections::BTreeSet;
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::cursors::{CURSORS, Record};
use super::housekeeping::SPARE;
use super::record::header;
use super::segment::segment_name;
use super::*;
use crate::cloudevents::CloudEvent;
use crate::error::{Admission, DispatchError};

fn event(i: usize) -> CloudEvent {
    let mut e = CloudEvent::new(format!("id-{i}"), "g/s", "t");
    e.data = Some(crate::cloudevents::Data::from_payload(
        bytes::Bytes::from(format!("{{\"n\":{i}}}")),
        Some("application/json"),
    ));
    e
}

fn opts(dir: &Path, max_bytes: u64) -> OutboxOptions {
    OutboxOptions {
        dir: dir.to_path_buf(),
        max_bytes,
    }
}

/// An outbox in `dir` for the one watcher `a`.
fn open_a(dir: &Path, max_bytes: u64, metrics: OutboxMetrics) -> Arc<Outbox> {
    Outbox::open(&opts(dir, max_bytes), &["a".to_string()], metrics)
        .unwrap()
        .0
}

fn replay_all(outbox: &Outbox, range: ReplayRange) -> Vec<Record> {
    let mut out: Vec<Record> = Vec::new();
    let mut after = range.from;
    while let Some(batch) = outbox.read_segment_records(range, after) {
        after = batch.last().map_or(range.to, |r| r.seq + 1);
        out.extend(batch);
    }
    out
}

#[tokio::test]
async fn appends_ready_in_the_same_tick_share_one_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = OutboxMetrics::default();
    let outbox = open_a(dir.path(), 1 << 30, metrics.clone());
    // On this one-thread runtime the 100 tasks are all ready before the first of them,
    // which leads the batch, runs again: they are one group commit.
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let o = outbox.clone();
            tokio::spawn(async move { o.append(&event(i), Admission::NoWait).await })
        })
        .collect();
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap().unwrap().0);
    }
    seqs.sort();
    assert_eq!(seqs, (1..=100).collect::<Vec<_>>());
    assert_eq!(metrics.appends.get(), 100);
    assert_eq!(metrics.fsyncs.get(), 1, "one batch");
    // An idle outbox commits a lone append at once, in a batch of its own.
    outbox.append(&event(100), Admission::NoWait).await.unwrap();
    assert_eq!(metrics.fsyncs.get(), 2);
    // Each commit's time is observed once, and it took some.
    assert_eq!(metrics.commit_seconds.count(), 2);
    assert!(metrics.commit_seconds.sum() > 0.0);
    outbox.close();
}

#[tokio::test]
async fn a_dropped_leader_still_hands_its_batch_to_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = open_a(dir.path(), 1 << 30, OutboxMetrics::default());
    let e0 = event(0);
    let e1 = event(1);
    // `lead` is first: it leads the batch and yields; `join` joins the batch and waits.
    let mut lead = Box::pin(outbox.append(&e0, Admission::NoWait));
    let mut join = Box::pin(outbox.append(&e1, Admission::NoWait));
    assert!(futures::poll!(lead.as_mut()).is_pending());
    assert!(futures::poll!(join.as_mut()).is_pending());
    // Its source gave up on `lead` (a client went away): the batch must still be written.
    drop(lead);
    let (seq, _) = tokio::time::timeout(Duration::from_secs(5), join)
        .await
        .expect("the batch was handed over")
        .unwrap();
    assert_eq!(seq, 2, "the dropped leader's record was written first");
    outbox.close();
}

fn record(i: usize) -> bytes::Bytes {
    bytes::Bytes::from(event(i).to_json())
}

#[tokio::test]
async fn a_mark_never_passes_the_last_record_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = open_a(dir.path(), 1 << 30, OutboxMetrics::default());
    let mut commit = outbox.commit();
    let seq = commit.add(record(0), Admission::NoWait).await.unwrap();
    assert_eq!(seq, 1);
    // Its watcher delivered it before the writer had the batch (it is not handed over yet).
    outbox.done(0, seq);
    assert_eq!(
        outbox.shared.lock().marks(),
        vec![1],
        "a mark passed a record not yet on disk"
    );
    let (written, failed) = commit.durable().await;
    assert_eq!(written, 1);
    assert!(failed.is_none(), "{failed:?}");
    assert_eq!(outbox.shared.lock().marks(), vec![2]);
    outbox.close();
}

#[tokio::test]
async fn a_record_whose_appender_went_away_is_written_and_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let (outbox, _) = Outbox::open(
        &opts(dir.path(), 1 << 30),
        &["a".to_string()],
        OutboxMetrics::default(),
    )
    .unwrap();
    let mut lead = outbox.commit();
    assert_eq!(lead.add(record(0), Admission::NoWait).await.unwrap(), 1);
    let mut gone = outbox.commit();
    assert_eq!(gone.add(record(1), Admission::NoWait).await.unwrap(), 2);
    // Its client hung up after its event was queued: the record is written all the same,
    // and the watcher waits for it until it has delivered it.
    drop(gone);
    assert_eq!(lead.durable().await.0, 1);
    outbox.done(0, 1);
    assert_eq!(outbox.shared.lock().marks(), vec![2]);
    // Stopped before it was delivered: the next start replays it.
    outbox.close();
    drop(outbox);
    let (reopened, replays) = Outbox::open(
        &opts(dir.path(), 1 << 30),
        &["a".to_string()],
        OutboxMetrics::default(),
    )
    .unwrap();
    assert_eq!(replays, vec![ReplayRange { from: 2, to: 3 }]);
    let all = replay_all(&reopened, replays[0]);
    assert_eq!(all.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![2]);
    assert_eq!(all[0].event.id, "id-1");
    reopened.close();
}

#[tokio::test]
async fn a_finished_segment_is_written_over_as_a_later_one() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let max = 256 << 10; // segments of 64 KiB
    let (outbox, _) = Outbox::open(
        &opts(dir.path(), max),
        &["a".to_string()],
        OutboxMetrics::default(),
    )
    .unwrap();
    let spare = dir.path().join(SPARE);
    // Two segments' worth, all delivered: housekeeping keeps one finished file as spare.
    let mut seqs = Vec::new();
    while outbox.shared.lock().segments.len() < 3 {
        let (seq, _) = outbox
            .append(&event(seqs.len()), Admission::NoWait)
            .await
            .unwrap();
        seqs.push(seq);
    }
    for s in &seqs {
        outbox.done(0, *s);
    }
    outbox.housekeep_soon();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !spare.exists() {
        assert!(std::time::Instant::now() < deadline, "no spare segment");
        tokio::task::yield_now().await;
    }
    let spare_ino = fs::metadata(&spare).unwrap().ino();
    let spare_len = fs::metadata(&spare).unwrap().len();
    // Appends go on until the next segment starts: it is the spare file, renamed.
    let segments = outbox.shared.lock().segments.len();
    let mut undone = Vec::new();
    while outbox.shared.lock().segments.len() == segments {
        let (seq, _) = outbox
            .append(&event(seqs.len() + undone.len()), Admission::NoWait)
            .await
            .unwrap();
        undone.push(seq);
    }
    let newest = outbox.shared.lock().segments.last().unwrap().path.clone();
    assert!(!spare.exists());
    assert_eq!(
        fs::metadata(&newest).unwrap().ino(),
        spare_ino,
        "the spare was reused"
    );
    assert_eq!(
        fs::metadata(&newest).unwrap().len(),
        spare_len,
        "its old bytes are still there"
    );
    // A few records in the reused file, then a clean stop: the old bytes are cut off.
    for _ in 0..3 {
        let (seq, _) = outbox
            .append(&event(seqs.len() + undone.len()), Admission::NoWait)
            .await
            .unwrap();
        undone.push(seq);
    }
    outbox.close();
    drop(outbox);
    assert!(fs::metadata(&newest).unwrap().len() < spare_len);
    let (outbox, replay) = Outbox::open(
        &opts(dir.path(), max),
        &["a".to_string()],
        OutboxMetrics::default(),
    )
    .unwrap();
    let got: Vec<u64> = replay_all(&outbox, replay[0])
        .iter()
        .map(|r| r.seq)
        .collect();
    assert_eq!(got, undone, "exactly what was not delivered, nothing old");
    outbox.close();
}

#[tokio::test]
async fn old_records_after_the_last_one_end_the_segment_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let watchers = ["a".to_string()];
    let (outbox, _) = Outbox::open(
        &opts(dir.path(), 1 << 30),
        &watchers,
        OutboxMetrics::default(),
    )
    .unwrap();
    for i in 0..20 {
        outbox.append(&event(i), Admission::NoWait).await.unwrap();
    }
    outbox.close();
    drop(outbox);
    // As a crash would leave a reused file: records 21..=25 written over segment 1's
    // records 1..=20, whose remaining bytes follow them.
    let first = dir.path().join(segment_name(1));
    let old = fs::read(&first).unwrap();
    fs::remove_file(&first).unwrap();
    fs::remove_file(dir.path().join(CURSORS)).unwrap();
    let mut new = Vec::new();
    for seq in 21..=25u64 {
        let payload = event(seq as usize).to_json();
        new.extend_from_slice(&header(seq, 0, &payload));
        new.extend_from_slice(&payload);
    }
    let written = new.len() as u64;
    new.extend_from_slice(&old[written as usize..]);
    let reused = dir.path().join(segment_name(21));
    fs::write(&reused, &new).unwrap();
    // And a whole old record right after the new ones.
    let mut whole = new[..written as usize].to_vec();
    whole.extend_from_slice(&old);
    let (outbox, replay) = Outbox::open(
        &opts(dir.path(), 1 << 30),
        &watchers,
        OutboxMetrics::default(),
    )
    .unwrap();
    assert_eq!(replay[0], ReplayRange { from: 21, to: 26 });
    let ids: Vec<String> = replay_all(&outbox, replay[0])
        .into_iter()
        .map(|r| r.event.id)
        .collect();
    assert_eq!(
        ids,
        (21..=25).map(|i| format!("id-{i}")).collect::<Vec<_>>()
    );
    assert_eq!(
        fs::metadata(&reused).unwrap().len(),
        written,
        "cut after record 25"
    );
    outbox.close();
    drop(outbox);

    fs::write(&reused, &whole).unwrap();
    let (outbox, replay) = Outbox::open(
        &opts(dir.path(), 1 << 30),
        &watchers,
        OutboxMetrics::default(),
    )
    .unwrap();
    assert_eq!(
        replay[0].to, 26,
        "record 1 after record 25 is not in the log"
    );
    assert_eq!(fs::metadata(&reused).unwrap().len(), written);
    outbox.close();
}

#[tokio::test]
async fn concurrent_appends_share_fsyncs_and_replay_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let watchers = vec!["a".to_string(), "b".to_string()];
    let metrics = OutboxMetrics::default();
    let (outbox, replay) =
        Outbox::open(&opts(dir.path(), 1 << 30), &watchers, metrics.clone()).unwrap();
    assert_eq!(replay[0].from, replay[0].to, "nothing to replay at first");
    let mut tasks = Vec::new();
    for i in 0..200 {
        let o = outbox.clone();
        tasks.push(tokio::spawn(async move {
            let (seq, json) = o.append(&event(i), Admission::NoWait).await.unwrap();
            // What was written is the event in the JSON format, for watchers to send.
            assert_eq!(json, event(i).to_json());
            seq
        }));
    }
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap());
    }
    seqs.sort();
    assert_eq!(seqs, (1..=200).collect::<Vec<_>>());
    assert_eq!(metrics.appends.get(), 200);
    assert!(
        metrics.fsyncs.get() < 200,
        "group commit: {}",
        metrics.fsyncs.get()
    );
    // Watcher a is done with the first 150; b with none.
    for s in 1..=150 {
        outbox.done(0, s);
    }
    outbox.close();
    drop(outbox);

    let (outbox, replay) = Outbox::open(
        &opts(dir.path(), 1 << 30),
        &watchers,
        OutboxMetrics::default(),
    )
    .unwrap();
    assert_eq!(replay[0], ReplayRange { from: 151, to: 201 });
    assert_eq!(replay[1], ReplayRange { from: 1, to: 201 });
    let got = replay_all(&outbox, replay[1]);
    assert_eq!(got.len(), 200);
    let ids: BTreeSet<String> = got.iter().map(|r| r.event.id.clone()).collect();
    assert_eq!(ids.len(), 200, "ids unchanged and unique");
}

#[tokio::test]
async fn a_torn_tail_is_cut_and_the_bound_pushes_back_until_segments_go() {
    let dir = tempfile::tempdir().unwrap();
    let watchers = vec!["a".to_string()];
    let max = 256 << 10; // segments of 64 KiB
    let (outbox, _) =
        Outbox::open(&opts(dir.path(), max), &watchers, OutboxMetrics::default()).unwrap();
    let mut seqs = Vec::new();
    let mut full = false;
    for i in 0..100_000 {
        match outbox.append(&event(i), Admission::NoWait).await {
            Ok((s, _)) => seqs.push(s),
            Err(DispatchError::Full { .. }) => {
                full = true;
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(full, "the bound was reached");
    assert!(outbox.status().bytes <= max);
    // The watcher takes everything: segments go, there is room again.
    for s in &seqs {
        outbox.done(0, *s);
    }
    outbox.housekeep_soon();
    let waited = tokio::time::timeout(
        Duration::from_secs(5),
        outbox.append(&event(0), Admission::Wait(None)),
    )
    .await;
    assert!(matches!(waited, Ok(Ok(_))), "{waited:?}");
    outbox.close();
    drop(outbox);

    // Tear the last record of the last non-empty segment.
    let mut logs: Vec<PathBuf> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .filter(|p| fs::metadata(p).unwrap().len() > 0)
        .collect();
    logs.sort();
    let last = logs.last().unwrap();
    let len = fs::metadata(last).unwrap().len();
    let f = OpenOptions::new().write(true).open(last).unwrap();
    f.set_len(len - 3).unwrap();
    drop(f);
    let (outbox, replay) =
        Outbox::open(&opts(dir.path(), max), &watchers, OutboxMetrics::default()).unwrap();
    // The torn record (the one appended last) is gone; nothing else is replayed.
    assert!(replay_all(&outbox, replay[0]).is_empty());
    outbox.close();
}

/// A tmpfs of `bytes` mounted on a temporary directory, unmounted on drop: a disk that
/// really fills up.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(bytes: usize) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "cannot mount a tmpfs (this test runs as root)"
        );
        SmallDisk { dir }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test]
async fn a_full_disk_is_a_disk_error_counted_and_shown_until_a_batch_is_written() {
    let disk = SmallDisk::mount(128 << 10);
    let filler = disk.dir.path().join("filler");
    fs::write(&filler, vec![0u8; 48 << 10]).unwrap();
    let metrics = OutboxMetrics::default();
    // A bound far above the disk's size: it is the disk that refuses.
    let outbox = open_a(&disk.dir.path().join("outbox"), 1 << 30, metrics.clone());
    let mut appended = 0;
    let refused = loop {
        match outbox.append(&event(appended), Admission::NoWait).await {
            Ok((seq, _)) => {
                outbox.done(0, seq);
                appended += 1;
            }
            Err(e) => break e,
        }
        assert!(appended < 10_000, "the disk never filled up");
    };
    match &refused {
        DispatchError::Disk(why) => assert!(why.contains("No space left"), "{why}"),
        other => panic!("expected a disk error, got {other:?}"),
    }
    assert!(appended > 0);
    assert_eq!(metrics.write_errors.get(), 1);
    let status = outbox.status();
    assert!(
        status
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("No space left"),
        "{status:?}"
    );
    // Room again: the next batch is written and the error is no longer shown.
    fs::remove_file(&filler).unwrap();
    outbox.append(&event(0), Admission::NoWait).await.unwrap();
    assert_eq!(outbox.status().last_error, None);
    outbox.close();
}

/// Byte spans of every record of a sound segment file: (sequence number, start, end).
fn spans(buf: &[u8]) -> Vec<(u64, usize, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + super::record::HEADER <= buf.len() {
        let len = u32::from_le_bytes(buf[at + 4..at + 8].try_into().unwrap()) as usize;
        let seq = u64::from_le_bytes(buf[at + 12..at + 20].try_into().unwrap());
        let end = at + super::record::HEADER + len;
        out.push((seq, at, end));
        at = end;
    }
    out
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 48, ..Default::default() })]

    /// Bytes flipped and a tail cut at random places of a closed outbox: after reopening,
    /// exactly the records whose bytes were touched are missing, and the damage is counted
    /// and quarantined.
    #[test]
    fn damage_costs_exactly_the_damaged_records(
        n in 30usize..150,
        flips in proptest::collection::vec((proptest::prelude::any::<proptest::sample::Index>(), 1u8..=255), 0..5),
        cut in proptest::option::of(proptest::prelude::any::<proptest::sample::Index>()),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        // Segments of 64 KiB: records of ~1.1 kB fill several.
        let max = 256 << 10;
        let outbox = open_a(dir.path(), max, OutboxMetrics::default());
        rt.block_on(async {
            for i in 0..n {
                let mut e = event(i);
                e.data = Some(crate::cloudevents::Data::from_payload(
                    bytes::Bytes::from(format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(1000))),
                    Some("application/json"),
                ));
                outbox.append(&e, Admission::NoWait).await.unwrap();
            }
        });
        outbox.close();
        drop(outbox);

        let mut files: Vec<PathBuf> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        files.sort();
        let mut bufs: Vec<Vec<u8>> = files.iter().map(|p| fs::read(p).unwrap()).collect();
        let total: usize = bufs.iter().map(Vec::len).sum();
        // Where a global offset falls: (file, offset in it).
        let locate = |mut at: usize, bufs: &[Vec<u8>]| {
            for (i, b) in bufs.iter().enumerate() {
                if at < b.len() {
                    return (i, at);
                }
                at -= b.len();
            }
            unreachable!()
        };
        let records: Vec<Vec<(u64, usize, usize)>> = bufs.iter().map(|b| spans(b)).collect();
        let mut lost = BTreeSet::new();
        for (index, mask) in &flips {
            let (f, at) = locate(index.index(total), &bufs);
            bufs[f][at] ^= mask;
            for (seq, start, end) in &records[f] {
                if (*start..*end).contains(&at) {
                    lost.insert(*seq);
                }
            }
        }
        let last = bufs.iter().rposition(|b| !b.is_empty()).unwrap();
        if let Some(cut) = cut {
            let at = cut.index(bufs[last].len());
            bufs[last].truncate(at);
            for (seq, _, end) in &records[last] {
                if *end > at {
                    lost.insert(*seq);
                }
            }
        }
        for (p, b) in files.iter().zip(&bufs) {
            fs::write(p, b).unwrap();
        }

        let metrics = OutboxMetrics::default();
        let (outbox, replay) =
            Outbox::open(&opts(dir.path(), max), &["a".to_string()], metrics.clone()).unwrap();
        let got: BTreeSet<u64> = replay_all(&outbox, replay[0]).iter().map(|r| r.seq).collect();
        let want: BTreeSet<u64> = (1..=n as u64).filter(|s| !lost.contains(s)).collect();
        proptest::prop_assert_eq!(got, want, "lost: {:?}", lost);
        let quarantined = fs::read_dir(dir.path().join("quarantine")).map(|d| d.count()).unwrap_or(0);
        if !flips.is_empty() {
            proptest::prop_assert!(metrics.damaged_records.get() >= 1);
            proptest::prop_assert!(quarantined >= 1);
        }
        outbox.close();
    }
}
