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
    /// A removed watcher whose pending events went to the dead letters: no longer saved.
    pub(super) retired: bool,
}

impl State {
    pub(super) fn mark(&self, w: &WatcherCursor) -> u64 {
        // Never past what is on disk: an event delivered before its record was written is
        // sent again if the process stops before the write.
        let mut m = self.durable;
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

    /// The names and marks to save: every cursor but those of removed watchers whose pending
    /// events went to the dead letters.
    pub(super) fn saved(&self) -> (Vec<String>, Vec<u64>) {
        self.watchers
            .iter()
            .filter(|w| !w.retired)
            .map(|w| (w.name.clone(), self.mark(w)))
            .unzip()
    }
}

/// A watcher the cursor file names but the gateway no longer has (removed, or its address
/// changed): what it had not finished goes to the dead letters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Orphan {
    /// Its cursor's index, after the gateway's watchers.
    pub(crate) index: usize,
    /// Its name.
    pub(crate) name: String,
    /// What it had not finished.
    pub(crate) range: ReplayRange,
}

/// What a watcher must replay after a restart: the records `from..to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReplayRange {
    /// First sequence number to deliver.
    pub from: u64,
    /// One past the last.
    pub to: u64,
}

/// The cursors of `watchers` and what each must replay, from the cursor file of `dir`, and the
/// watchers of that file the gateway no longer has; the log holds records `oldest..next_seq`.
/// A watcher that `moves` names (new name → old name) takes the old one's place.
pub(super) fn load(
    dir: &Path,
    watchers: &[String],
    moves: &BTreeMap<String, String>,
    oldest: u64,
    next_seq: u64,
) -> (Vec<WatcherCursor>, Vec<ReplayRange>, Vec<Orphan>) {
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
    let mut taken: Vec<&str> = Vec::new();
    for name in watchers {
        let moved = moves
            .get(name)
            .filter(|_| saved.as_ref().is_some_and(|s| !s.contains_key(name)));
        let own = moved.unwrap_or(name);
        let from = match &saved {
            Some(saved) => saved.get(own).copied().unwrap_or(next_seq),
            None => oldest,
        }
        .max(oldest);
        taken.push(own);
        if let Some(old) = moved {
            tracing::info!(
                watcher = %name, from = %old, events = next_seq.saturating_sub(from),
                "outbox: a moved watcher takes the pending events of its old address"
            );
        }
        let range = ReplayRange { from, to: next_seq };
        cursors.push(new_cursor(name, range));
        replays.push(range);
    }
    let mut orphans = Vec::new();
    for (name, mark) in saved.iter().flatten() {
        if taken.contains(&name.as_str()) || watchers.contains(name) {
            continue;
        }
        let range = ReplayRange {
            from: (*mark).max(oldest),
            to: next_seq,
        };
        if range.from < range.to {
            tracing::warn!(
                watcher = %name, events = range.to - range.from,
                "outbox: a watcher that is no longer in the gateway had events pending: they go to the dead letters (reason `watcher removed`)"
            );
        }
        orphans.push(Orphan {
            index: cursors.len(),
            name: name.clone(),
            range,
        });
        cursors.push(new_cursor(name, range));
    }
    (cursors, replays, orphans)
}

fn new_cursor(name: &str, range: ReplayRange) -> WatcherCursor {
    WatcherCursor {
        name: name.to_string(),
        outstanding: BTreeSet::new(),
        replay: (range.from < range.to).then_some(range.from),
        retired: false,
    }
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
        let records = scan(&buf, first).records;
        let mut out = Vec::new();
        for found in records {
            let (seq, ms, payload) = (found.seq, found.accepted_ms, found.payload);
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

    /// The watchers of the cursor file the gateway no longer has (once: the dispatcher
    /// dead-letters what they had pending, then [`Outbox::retire`]s them).
    pub(crate) fn take_orphans(&self) -> Vec<Orphan> {
        std::mem::take(&mut *self.orphans.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// How many records watcher `watcher` has not finished: what the next start replays.
    pub(crate) fn pending(&self, watcher: usize) -> u64 {
        let st = self.shared.lock();
        st.watchers
            .get(watcher)
            .map_or(0, |w| st.next_seq.saturating_sub(st.mark(w)))
    }

    /// The removed watcher `watcher` is done with: its cursor is forgotten.
    pub(crate) fn retire(&self, watcher: usize) {
        let mut st = self.shared.lock();
        if let Some(w) = st.watchers.get_mut(watcher) {
            w.replay = None;
            w.outstanding.clear();
            w.retired = true;
        }
    }
}
