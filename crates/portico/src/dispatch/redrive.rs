//! Dead letters, back again: what the gateway wrote to its dead-letter files (`GET
//! /dead-letters`), and a redrive (`POST /dead-letters/redrive`) that delivers chosen ones to the
//! watcher that never took them and removes from the file those it took.
//!
//! A redrive goes event by event, in file order, with the watcher's own sender and retries
//! (each event given at most [`REDRIVE_EVENT_TIMEOUT`]). Once a watcher fails, its remaining
//! dead letters are not tried in that redrive: they stay, in order, for the next one. Only
//! file destinations can be listed and redriven: a URL destination's dead letters are that
//! service's, and the log's are log lines.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use super::deadletter::DeadLetter;
use super::{Dispatcher, deliver_with_retry};
use crate::cloudevents::{CloudEvent, ExtensionValue};

/// The extension naming the watcher a dead letter was meant for.
pub(crate) const WATCHER_EXTENSION: &str = "deadletterwatcher";
/// The extension holding a dead letter's last failure.
pub(crate) const REASON_EXTENSION: &str = "deadletterreason";

/// The longest one dead letter's delivery may take in a redrive, retries included.
pub(crate) const REDRIVE_EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Which dead letters a redrive takes.
#[derive(Debug, Clone)]
pub(crate) enum Which {
    /// Every one.
    All,
    /// Those with these event ids (with every watcher they were meant for).
    Ids(BTreeSet<String>),
}

impl Which {
    fn takes(&self, id: &str) -> bool {
        match self {
            Which::All => true,
            Which::Ids(ids) => ids.contains(id),
        }
    }
}

/// The dead letters of a gateway's files.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Listing {
    /// Every dead letter, in file order: a CloudEvent in the JSON event format with the
    /// `deadletterwatcher` and `deadletterreason` extensions.
    pub dead_letters: Vec<serde_json::Value>,
    /// Where they were read from.
    pub destinations: Vec<String>,
    /// Lines of those files that are not JSON (a torn write), left as they are.
    #[serde(skip_serializing_if = "is_zero")]
    pub unreadable: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// What a redrive did.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Redriven {
    /// Ids of the dead letters the watcher took (removed from the file).
    pub delivered: Vec<String>,
    /// Those it did not take (still in the file).
    pub failed: Vec<Failed>,
    /// Ids asked for that no dead letter has.
    pub missing: Vec<String>,
}

/// A dead letter a redrive could not deliver.
#[derive(Debug, Serialize)]
pub(crate) struct Failed {
    /// The event's id.
    pub id: String,
    /// The watcher it was meant for.
    pub watcher: String,
    /// Why it is still a dead letter.
    pub reason: String,
}

/// Why the dead letters cannot be listed or redriven.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RedriveError {
    /// No watcher writes its dead letters to a file.
    #[error(
        "no watcher of this gateway writes its dead letters to a file (they go to {0}): only a file's can be listed and redriven; set `spec.delivery.deadLetter.file`, or use atLeastOnce delivery, whose dead letters go to the outbox's dead-letter.jsonl"
    )]
    NoFile(String),
    /// A file could not be read or written.
    #[error("dead-letter file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
}

/// A dead-letter file and the lock its writers share.
type LockedFile = (PathBuf, Arc<Mutex<()>>);

impl Dispatcher {
    /// The dead-letter files of the watchers, each once, with the lock its writers share.
    fn dead_letter_files(&self) -> Result<Vec<LockedFile>, RedriveError> {
        let mut files: Vec<LockedFile> = Vec::new();
        let mut others = BTreeSet::new();
        for q in &self.queues {
            match &*q.dead_letter {
                DeadLetter::File { path, lock } => {
                    if !files.iter().any(|(p, _)| p == path) {
                        files.push((path.clone(), lock.clone()));
                    }
                }
                other => {
                    others.insert(other.describe());
                }
            }
        }
        if files.is_empty() {
            let others: Vec<String> = others.into_iter().collect();
            let to = if others.is_empty() {
                "nowhere: the gateway has no watcher".to_string()
            } else {
                others.join(", ")
            };
            return Err(RedriveError::NoFile(to));
        }
        Ok(files)
    }

    /// Every dead letter of the watchers' files.
    pub(crate) async fn dead_letters(&self) -> Result<Listing, RedriveError> {
        let mut listing = Listing {
            dead_letters: Vec::new(),
            destinations: Vec::new(),
            unreadable: 0,
        };
        for (path, lock) in self.dead_letter_files()? {
            for line in read_lines(&path, &lock).await? {
                match serde_json::from_str(&line) {
                    Ok(v) => listing.dead_letters.push(v),
                    Err(_) => listing.unreadable += 1,
                }
            }
            listing
                .destinations
                .push(format!("file {}", path.display()));
        }
        Ok(listing)
    }

    /// Delivers the dead letters `which` takes to their watchers, and removes from their file
    /// those delivered.
    pub(crate) async fn redrive(&self, which: &Which) -> Result<Redriven, RedriveError> {
        let mut report = Redriven::default();
        let mut found = BTreeSet::new();
        // A watcher that failed once in this redrive is not tried again: its reason.
        let mut down: HashMap<String, String> = HashMap::new();
        for (path, lock) in self.dead_letter_files()? {
            let mut taken = Vec::new();
            for line in read_lines(&path, &lock).await? {
                let Ok(mut event) = CloudEvent::from_json(line.as_bytes()) else {
                    continue;
                };
                if !which.takes(&event.id) {
                    continue;
                }
                found.insert(event.id.clone());
                let watcher = match event.extensions.remove(WATCHER_EXTENSION) {
                    Some(ExtensionValue::String(w)) => w,
                    _ => String::new(),
                };
                event.extensions.remove(REASON_EXTENSION);
                let failed = |reason: String| Failed {
                    id: event.id.clone(),
                    watcher: watcher.clone(),
                    reason,
                };
                if let Some(reason) = down.get(&watcher) {
                    report.failed.push(failed(format!(
                        "not tried: the watcher failed earlier in this redrive ({reason})"
                    )));
                    continue;
                }
                let Some(q) = self.queues.iter().find(|q| q.name == watcher) else {
                    report.failed.push(failed(format!(
                        "this gateway has no watcher named `{watcher}` (any more)"
                    )));
                    continue;
                };
                let attempt = deliver_with_retry(
                    &q.name,
                    &*q.sender,
                    &event,
                    None,
                    &q.retry,
                    Duration::ZERO,
                    self.abort.cancelled(),
                    |_, _| {
                        q.metrics.retried.inc();
                    },
                );
                match tokio::time::timeout(REDRIVE_EVENT_TIMEOUT, attempt).await {
                    Ok(Ok(())) => {
                        q.metrics.delivered.inc();
                        report.delivered.push(event.id.clone());
                        taken.push(line);
                    }
                    Ok(Err(e)) => {
                        down.insert(watcher.clone(), e.reason.clone());
                        report.failed.push(failed(e.reason));
                    }
                    Err(_) => {
                        let reason =
                            format!("not delivered within {}s", REDRIVE_EVENT_TIMEOUT.as_secs());
                        down.insert(watcher.clone(), reason.clone());
                        report.failed.push(failed(reason));
                    }
                }
            }
            if !taken.is_empty() {
                remove_lines(&path, &lock, taken).await?;
            }
        }
        if let Which::Ids(ids) = which {
            report.missing = ids.difference(&found).cloned().collect();
        }
        Ok(report)
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> RedriveError + '_ {
    move |source| RedriveError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The lines of a dead-letter file (none when it does not exist yet).
async fn read_lines(path: &Path, lock: &Arc<Mutex<()>>) -> Result<Vec<String>, RedriveError> {
    let (owned, lock) = (path.to_path_buf(), lock.clone());
    let read = tokio::task::spawn_blocking(move || {
        let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
        match std::fs::read(&owned) {
            Ok(bytes) => Ok(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    })
    .await
    .map_err(std::io::Error::other)
    .and_then(|r| r)
    .map_err(io_error(path))?;
    Ok(String::from_utf8_lossy(&read)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(String::from)
        .collect())
}

/// Rewrites a dead-letter file without `taken` (one line removed per entry), as writers
/// append to it: under their lock, through a new file renamed over the old one, so that a
/// crash leaves either file whole.
async fn remove_lines(
    path: &Path,
    lock: &Arc<Mutex<()>>,
    taken: Vec<String>,
) -> Result<(), RedriveError> {
    let (owned, lock) = (path.to_path_buf(), lock.clone());
    tokio::task::spawn_blocking(move || {
        let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
        let text = String::from_utf8_lossy(&std::fs::read(&owned)?).into_owned();
        let mut left: HashMap<&str, usize> = HashMap::new();
        for line in &taken {
            *left.entry(line.as_str()).or_default() += 1;
        }
        let mut kept = Vec::with_capacity(text.len());
        for line in text.lines() {
            match left.get_mut(line) {
                Some(n) if *n > 0 => *n -= 1,
                _ if line.trim().is_empty() => {}
                _ => {
                    kept.extend_from_slice(line.as_bytes());
                    kept.push(b'\n');
                }
            }
        }
        let fresh = owned.with_extension("jsonl.redrive");
        let mut f = std::fs::File::create(&fresh)?;
        f.write_all(&kept)?;
        f.sync_all()?;
        std::fs::rename(&fresh, &owned)?;
        if let Some(dir) = owned.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })
    .await
    .map_err(std::io::Error::other)
    .and_then(|r| r)
    .map_err(io_error(path))
}
