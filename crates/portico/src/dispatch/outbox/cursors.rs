//! Cursors and replay: what each watcher of the outbox is done with (its low-water mark), saved
//! in `cursors.json`, and what it must be sent again after a restart.
//!
//! Each watcher has its own cursor: the set of its sequence numbers queued or in flight, and,
//! while a restart is being replayed, the replay's position. The smallest of those is the
//! watcher's low-water mark. A watcher that is not in the cursor file (a new one) starts at
//! the head; without a readable cursor file, every watcher replays the whole log.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use super::record::scan;
use super::segment::read_file;
use super::{Outbox, State, io};
use crate::cloudevents::CloudEvent;

/// The file holding every watcher's low-water mark.
pub(super) const CURSORS: &str = "cursors.json";

/// One record read back from the log.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    /// Its sequence number.
    pub seq: u64,
    /// When it was accepted (ms since the Unix epoch).
    pub accepted_ms: u64,
    /// The event.
    pub event: CloudEvent,
}

/// One watcher's cursor.
pub(super) struct WatcherCursor {
    pub(super) name: String,
    /// Sequence numbers queued or in flight for this watcher.
    pub(super) outstanding: BTreeSet<u64>,
    /// While a replay feeds this watcher: the next sequence number it will read.
    pub(super) replay: Option<u64>,
}

impl State {
    pub(super) fn mark(&self, w: &WatcherCursor) -> u64 {
        let mut m = self.next_seq;
        if let Some(&s) = w.outstanding.first() {
            m = m.min(s);
        }
        if let Some(r) = w.replay {
            m = m.min(r);
        }
        m
    }

    pub(super) fn marks(&self) -> Vec<u64> {
        self.watchers.iter().map(|w| self.mark(w)).collect()
    }
}

/// What a watcher must replay after a restart: the records `from..to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReplayRange {
    /// First sequence number to deliver.
    pub from: u64,
    /// One past the last.
    pub to: u64,
}

/// The cursors of `watchers` and what each must replay, from the cursor file of `dir`; the
/// log holds records `oldest..next_seq`.
pub(super) fn load(
    dir: &Path,
    watchers: &[String],
    oldest: u64,
    next_seq: u64,
) -> (Vec<WatcherCursor>, Vec<ReplayRange>) {
    // Without a readable cursor file every watcher replays the whole log (duplicates rather
    // than losses); with one, a watcher it does not name is new and starts at the head.
    let cursors_path = dir.join(CURSORS);
    let saved: Option<BTreeMap<String, u64>> = match fs::read(&cursors_path) {
        Ok(text) => serde_json::from_slice(&text)
            .map_err(|e| {
                tracing::warn!(
                    "outbox: `{}` is unreadable ({e}); every watcher replays the whole log",
                    cursors_path.display()
                )
            })
            .ok(),
        Err(_) => None,
    };
    let mut cursors = Vec::with_capacity(watchers.len());
    let mut replays = Vec::with_capacity(watchers.len());
    for name in watchers {
        let from = match &saved {
            Some(saved) => saved.get(name).copied().unwrap_or(next_seq),
            None => oldest,
        }
        .max(oldest);
        let range = ReplayRange { from, to: next_seq };
        cursors.push(WatcherCursor {
            name: name.clone(),
            outstanding: BTreeSet::new(),
            replay: (from < next_seq).then_some(from),
        });
        replays.push(range);
    }
    (cursors, replays)
}

/// Writes the marks of the watchers `names` to the cursor file of `dir` (atomically).
pub(super) fn save(
    dir: &Path,
    names: &[String],
    marks: Vec<u64>,
) -> Result<(), super::OutboxError> {
    let cursors: BTreeMap<&str, u64> = names.iter().map(String::as_str).zip(marks).collect();
    let path = dir.join(CURSORS);
    let tmp = dir.join("cursors.json.tmp");
    // A map of strings to numbers always serializes.
    let text = serde_json::to_vec(&cursors).unwrap_or_default();
    fs::write(&tmp, text)
        .and_then(|_| fs::rename(&tmp, &path))
        .map_err(|e| io("save the cursors to", &path, e))
}

impl Outbox {
    /// Watcher `watcher` (its index in `open`'s list) is done with `seq`: delivered or
    /// dead-lettered.
    pub(crate) fn done(&self, watcher: usize, seq: u64) {
        let mut st = self.shared.lock();
        if let Some(w) = st.watchers.get_mut(watcher) {
            w.outstanding.remove(&seq);
        }
    }

    /// A replay of watcher `watcher` is about to queue `seq`: it becomes outstanding and the
    /// replay moves past it, in one step.
    pub(crate) fn replaying(&self, watcher: usize, seq: u64) {
        let mut st = self.shared.lock();
        if let Some(w) = st.watchers.get_mut(watcher) {
            w.outstanding.insert(seq);
            w.replay = Some(seq + 1);
        }
    }

    /// The replay of watcher `watcher` is over.
    pub(crate) fn replay_done(&self, watcher: usize) {
        let mut st = self.shared.lock();
        if let Some(w) = st.watchers.get_mut(watcher) {
            w.replay = None;
        }
    }

    /// The records of `range` that are still in the log, one segment at a time (reads files:
    /// call from a blocking context).
    pub(crate) fn read_segment_records(
        &self,
        range: ReplayRange,
        after: u64,
    ) -> Option<Vec<Record>> {
        // The first segment that holds a record ≥ max(range.from, after).
        let want = range.from.max(after);
        if want >= range.to {
            return None;
        }
        let (path, first) = {
            let st = self.shared.lock();
            let seg = st
                .segments
                .iter()
                .rev()
                .find(|s| s.first <= want)
                .or_else(|| st.segments.first())?;
            (seg.path.clone(), seg.first)
        };
        let buf = match read_file(&path) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!("{}", io("read", &path, e));
                return None;
            }
        };
        let (records, _) = scan(&buf, first);
        let mut out = Vec::new();
        for (seq, ms, payload) in records {
            if seq < want || seq >= range.to {
                continue;
            }
            match CloudEvent::from_json(payload) {
                Ok(event) => out.push(Record {
                    seq,
                    accepted_ms: ms,
                    event,
                }),
                Err(e) => tracing::error!(
                    seq, segment = %path.display(),
                    "outbox: a record holds no valid CloudEvent ({e}); it is skipped"
                ),
            }
        }
        if out.is_empty() {
            // An empty or fully skipped segment: move on to the next one.
            let st = self.shared.lock();
            let next = st.segments.iter().find(|s| s.first > want)?;
            let next_first = next.first;
            drop(st);
            return self.read_segment_records(range, next_first);
        }
        Some(out)
    }
}
