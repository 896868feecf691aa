//! The file configuration source: a gateway's files (or directories of them), watched live.
//!
//! Each file is watched through its directory, not by itself: editors save by writing a new
//! file and renaming it over the old one, and Kubernetes ConfigMap volumes swap a `..data`
//! symlink, so a watch on the file's own inode would go stale. A directory given is watched
//! itself. Any change in a watched directory (a file created, written, renamed or removed)
//! makes the source read the files again; unchanged texts are ignored. Reads are not changes: the source's own read of the file
//! raises open, access and close events, which would otherwise start the next read, forever.
//! A file that no longer parses is reported with every problem and the last good map keeps
//! running.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify_debouncer_full::notify::RecursiveMode;
use notify_debouncer_full::notify::event::{AccessKind, AccessMode, EventKind};
use notify_debouncer_full::{DebounceEventResult, new_debouncer};
use std::sync::Arc;

use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::{SourceError, SourceEvent};
use crate::configuration::IdentifiedMap;
use crate::spec::GatewayFile;
use crate::spec::file::{SpecErrors, expand, read_all};

/// How long one read of the gateway file may take.
const READ_DEADLINE: Duration = Duration::from_secs(10);

/// How long changes are gathered before the file is read again.
const DEBOUNCE: Duration = Duration::from_millis(150);

/// Watches `sources` (files and directories, already loaded once as `loaded`) and sends every
/// new map to `tx` until `stop` is cancelled.
pub(crate) async fn watch(
    sources: Vec<PathBuf>,
    loaded: GatewayFile,
    max_bytes: u64,
    tx: mpsc::Sender<SourceEvent>,
    reload: Arc<Notify>,
    stop: CancellationToken,
) -> Result<(), SourceError> {
    let path = loaded.path.clone();
    let mut dirs: Vec<PathBuf> = sources.iter().map(|s| watched_dir(s)).collect();
    dirs.sort();
    dirs.dedup();
    let (changed_tx, mut changed) = mpsc::channel::<()>(1);
    let mut debouncer = new_debouncer(DEBOUNCE, None, move |r: DebounceEventResult| {
        let changed = match &r {
            Ok(events) => events.iter().any(|e| is_change(&e.kind)),
            Err(errors) => {
                for e in errors {
                    tracing::warn!(error = %e, "watching the gateway file");
                }
                // Events may have been lost: read the file again to be sure.
                true
            }
        };
        // A full channel already holds a pending re-read; that is enough.
        if changed {
            let _ = changed_tx.try_send(());
        }
    })
    .map_err(|source| SourceError::Watch {
        dir: dirs.first().cloned().unwrap_or_default(),
        source,
    })?;
    for dir in &dirs {
        debouncer
            .watch(dir, RecursiveMode::NonRecursive)
            .map_err(|source| SourceError::Watch {
                dir: dir.clone(),
                source,
            })?;
    }
    tracing::info!(file = %path.display(), files = loaded.files.len(), "watching the gateway's files for changes");

    let mut last_good = loaded;
    let mut last_text: Option<Vec<(PathBuf, String)>> = None;
    // The file may have changed between its first load and the watch: read it once now.
    let mut first = true;
    let mut first_read_error = true;
    loop {
        if !std::mem::take(&mut first) {
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                c = changed.recv() => if c.is_none() { return Ok(()) },
                _ = reload.notified() => last_text = None,
            }
        }
        // Off the runtime and with a deadline: a file system that hangs (a dead network mount)
        // holds this read, not the gateway.
        let read = {
            let sources = sources.clone();
            tokio::task::spawn_blocking(move || read_all(&expand(&sources)?, max_bytes))
        };
        let texts = match tokio::time::timeout(READ_DEADLINE, read).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(SpecErrors(vec![crate::spec::file::SpecError {
                path: path.clone(),
                line: None,
                column: None,
                message: format!("cannot read the files: {e}"),
                snippet: None,
            }])),
            Err(_) => Err(SpecErrors(vec![crate::spec::file::SpecError {
                path: path.clone(),
                line: None,
                column: None,
                message: format!("cannot read the files within {}s", READ_DEADLINE.as_secs()),
                snippet: None,
            }])),
        };
        let texts = match texts {
            Ok(t) => t,
            Err(e) => {
                // Said once per outage, not at every event in the directory.
                if last_text.is_some() || first_read_error {
                    first_read_error = false;
                    tracing::error!(
                        file = %path.display(), error = %e,
                        "cannot read the gateway's files; the last good configurations keep running"
                    );
                }
                last_text = None;
                continue;
            }
        };
        if last_text.as_ref() == Some(&texts) {
            continue;
        }
        last_text = Some(texts.clone());
        match GatewayFile::parse_texts(&texts).and_then(GatewayFile::one_of) {
            Ok(new) => {
                if new.gateway != last_good.gateway {
                    tracing::warn!(
                        file = %path.display(),
                        "the Gateway itself changed (type, watchers, delivery…): that takes effect \
                         when portico restarts; configuration changes apply now"
                    );
                }
                let changed_map = new.configurations != last_good.configurations;
                let map = new.configurations.clone();
                last_good = new;
                if changed_map {
                    tracing::info!(
                        file = %path.display(), configurations = map.len(),
                        "gateway file changed"
                    );
                    if tx
                        .send(SourceEvent::Map(IdentifiedMap::new(map)))
                        .await
                        .is_err()
                    {
                        return Ok(());
                    }
                }
            }
            Err(errors) => {
                for e in &errors.0 {
                    tracing::error!(
                        file = %e.path.display(), line = e.line, column = e.column,
                        "the gateway file does not parse; the last good configurations keep running: {}",
                        e.message
                    );
                }
            }
        }
    }
}

/// Whether an event in the watched directory may have changed the file: anything but a read
/// (opening, reading, or closing a file that was only read).
fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// The directory to watch for `source`: itself when it is one, else its parent.
fn watched_dir(path: &Path) -> PathBuf {
    if path.is_dir() {
        return path.to_path_buf();
    }
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify_debouncer_full::notify::event::{
        CreateKind, DataChange, ModifyKind, RemoveKind, RenameMode,
    };

    #[test]
    fn reads_are_not_changes_writes_renames_and_removals_are() {
        let reads = [
            EventKind::Access(AccessKind::Open(AccessMode::Read)),
            EventKind::Access(AccessKind::Read),
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            EventKind::Access(AccessKind::Any),
        ];
        for kind in reads {
            assert!(!is_change(&kind), "{kind:?}");
        }
        let changes = [
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            EventKind::Create(CreateKind::File),
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
            EventKind::Remove(RemoveKind::File),
            EventKind::Any,
            EventKind::Other,
        ];
        for kind in changes {
            assert!(is_change(&kind), "{kind:?}");
        }
    }
}
