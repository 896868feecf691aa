//! Dead letters: where an event goes when a watcher never took it (every attempt failed, a
//! permanent failure such as a 400, or `retry.maxAge` passed). Never silently away.
//!
//! The destination is a file (one CloudEvent in the JSON event format a line, fsynced) or a
//! URL (the CloudEvent POSTed in structured mode, with the watcher's retries). The event keeps
//! its id and attributes and gains two extensions: `deadletterwatcher` (the watcher's name)
//! and `deadletterreason` (the last failure). With no destination at all (an `atMostOnce`
//! gateway without `deadLetter`) the event is written in full in an error log line.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::Sender;
use super::http::HttpSender;
use crate::cloudevents::{CloudEvent, ExtensionName, ExtensionValue};
use crate::error::DeliveryError;
use crate::ratelog::Throttle;

/// A dead-letter destination.
pub(crate) enum DeadLetter {
    /// Appended to a file, one JSON CloudEvent a line.
    File {
        /// The file.
        path: PathBuf,
        /// Serialises writers (one line at a time).
        lock: Arc<Mutex<()>>,
    },
    /// POSTed to a URL.
    Url(Box<HttpSender>),
    /// Only an error log line holding the whole event.
    Log,
}

impl DeadLetter {
    /// A file destination. Destinations of one file share one lock (watchers that share a
    /// file, and a redrive rewriting it).
    pub(crate) fn file(path: PathBuf) -> DeadLetter {
        static LOCKS: Mutex<Vec<(PathBuf, std::sync::Weak<Mutex<()>>)>> = Mutex::new(Vec::new());
        let mut locks = LOCKS.lock().unwrap_or_else(|p| p.into_inner());
        locks.retain(|(_, lock)| lock.strong_count() > 0);
        let lock = match locks
            .iter()
            .find_map(|(p, l)| (*p == path).then(|| l.upgrade()))
        {
            Some(Some(lock)) => lock,
            _ => {
                let lock = Arc::new(Mutex::new(()));
                locks.push((path.clone(), Arc::downgrade(&lock)));
                lock
            }
        };
        DeadLetter::File { path, lock }
    }

    /// What this destination is, for log lines.
    pub(crate) fn describe(&self) -> String {
        match self {
            DeadLetter::File { path, .. } => format!("file {}", path.display()),
            DeadLetter::Url(_) => "url".to_string(),
            DeadLetter::Log => "log".to_string(),
        }
    }

    /// [`DeadLetter::write`], again and again (backing off up to 30 s) until the destination
    /// takes it: true once written, false when `abort` is cancelled first.
    pub(crate) async fn write_until_taken(
        &self,
        watcher: &str,
        event: &CloudEvent,
        reason: &str,
        abort: &tokio_util::sync::CancellationToken,
    ) -> bool {
        let mut wait = std::time::Duration::from_millis(100);
        loop {
            match self.write(watcher, event, reason).await {
                Ok(()) => return true,
                Err(e) => {
                    static FAILED: Throttle = Throttle::new();
                    if let Some(suppressed) = FAILED.check() {
                        tracing::error!(
                            watcher, id = %event.id, reason = %e.reason,
                            dead_letter = %self.describe(),
                            retry_in_ms = wait.as_millis() as u64, suppressed,
                            "cannot write the dead letter; retrying (suppressed: how many such failures were not logged since the last line)"
                        );
                    }
                    tokio::select! {
                        _ = abort.cancelled() => return false,
                        _ = tokio::time::sleep(wait) => {}
                    }
                    wait = (wait * 2).min(std::time::Duration::from_secs(30));
                }
            }
        }
    }

    /// Writes `event` as a dead letter of `watcher` for `reason`, once.
    pub(crate) async fn write(
        &self,
        watcher: &str,
        event: &CloudEvent,
        reason: &str,
    ) -> Result<(), DeliveryError> {
        let mut letter = event.clone();
        for (name, value) in [
            (super::redrive::WATCHER_EXTENSION, watcher),
            (super::redrive::REASON_EXTENSION, reason),
        ] {
            if let Ok(n) = ExtensionName::new(name) {
                letter
                    .extensions
                    .insert(n, ExtensionValue::String(value.to_string()));
            }
        }
        match self {
            DeadLetter::File { path, lock } => {
                let mut line = letter.to_json();
                line.push(b'\n');
                let path = path.clone();
                let lock = lock.clone();
                tokio::task::spawn_blocking(move || {
                    let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(parent) = path.parent() {
                        std::fs::create_dir_all(parent)?;
                    }
                    let mut f = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&path)?;
                    f.write_all(&line)?;
                    f.sync_data()
                })
                .await
                .map_err(|e| DeliveryError::retryable(format!("dead-letter writer: {e}")))?
                .map_err(|e| DeliveryError::retryable(format!("dead-letter file: {e}")))
            }
            DeadLetter::Url(sender) => sender.send(&letter).await,
            DeadLetter::Log => {
                tracing::error!(
                    watcher, id = %event.id, reason,
                    event = %String::from_utf8_lossy(&letter.to_json()),
                    "dead letter (no deadLetter destination is set): the event in full"
                );
                Ok(())
            }
        }
    }
}
