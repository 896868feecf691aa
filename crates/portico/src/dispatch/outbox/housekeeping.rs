//! Housekeeping of the outbox, a few times a second and at close: saving the cursors when
//! they moved, and letting go of the segments every watcher is done with.
//!
//! Appending to a file makes every `fdatasync` write the inode too (its size changed) and the
//! file system allocate blocks; writing over blocks a file already has needs neither. So of
//! the segments found finished, one is not deleted but renamed to `spare.seg`, and the next
//! segment is that file, written over from its start (see the module docs).

use std::fs;

use super::{OutboxError, Shared, cursors, io};

/// The finished segment kept to be written over as a later one.
pub(super) const SPARE: &str = "spare.seg";

/// Saves the cursors if they moved and deletes the segments every watcher is done with.
pub(super) fn run(shared: &Shared) -> Result<(), OutboxError> {
    let (marks, names, doomed) = {
        let mut st = shared.lock();
        let marks = st.marks();
        let low = marks.iter().copied().min().unwrap_or(st.durable);
        let mut doomed = Vec::new();
        // Never the active (last) segment.
        while st.segments.len() > 1 {
            let s = &st.segments[0];
            let finished = match s.last {
                Some(last) => last < low,
                None => st.segments[1].first <= low,
            };
            if !finished {
                break;
            }
            let s = st.segments.remove(0);
            st.bytes -= s.bytes;
            doomed.push(s.path);
        }
        shared.metrics.bytes.set(st.bytes as i64);
        if marks == st.saved_marks && doomed.is_empty() {
            return Ok(());
        }
        st.saved_marks = marks.clone();
        let (names, saved) = st.saved();
        (saved, names, doomed)
    };
    cursors::save(&shared.dir, &names, marks)?;
    let freed = !doomed.is_empty();
    // The newest finished segment becomes the spare, if there is none (see the module docs).
    let mut doomed = doomed;
    if freed && shared.lock().spare.is_none() {
        let spare = shared.dir.join(SPARE);
        if let Some(p) = doomed.pop() {
            match fs::rename(&p, &spare) {
                Ok(()) => shared.lock().spare = Some(spare),
                Err(e) => {
                    tracing::warn!("{}", io("keep the finished segment", &p, e));
                    doomed.push(p);
                }
            }
        }
    }
    for p in doomed {
        if let Err(e) = fs::remove_file(&p) {
            tracing::warn!("{}", io("delete the finished segment", &p, e));
        }
    }
    if freed {
        shared.room.notify_waiters();
    }
    Ok(())
}
