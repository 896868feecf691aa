//! The segment files of the outbox's log: loading them at open (cutting off what a crash
//! or a reused file left after the last whole record), the active segment appends go to, and
//! rolling over to a new active segment (written over a spare file when there is one).

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};

use super::record::{decode_at, scan};
use super::{OutboxError, Shared, io};

/// One segment of the log.
pub(super) struct Segment {
    /// Sequence number of its first record (its name).
    pub(super) first: u64,
    /// Sequence number of its last record, if it has any.
    pub(super) last: Option<u64>,
    /// Bytes of its records.
    pub(super) bytes: u64,
    /// Its file.
    pub(super) path: PathBuf,
}

/// The file name of the segment whose first record is `first`.
pub(super) fn segment_name(first: u64) -> String {
    format!("{first:020}.log")
}

/// A whole file.
pub(super) fn read_file(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    File::open(path)?.read_to_end(&mut buf)?;
    Ok(buf)
}

/// Makes a directory's entries durable (a created or renamed file).
pub(super) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The segments of the log in `dir`, oldest first, each cut after its last whole record, with
/// a fresh empty active segment last; and the next sequence number.
pub(super) fn load(dir: &Path) -> Result<(Vec<Segment>, u64), OutboxError> {
    let mut names: Vec<(u64, PathBuf)> = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| io("list", dir, e))? {
        let entry = entry.map_err(|e| io("list", dir, e))?;
        let path = entry.path();
        let first = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(first) = first {
            names.push((first, path));
        }
    }
    names.sort();
    let mut segments = Vec::with_capacity(names.len() + 1);
    let mut next_seq = 1;
    let count = names.len();
    for (i, (first, path)) in names.into_iter().enumerate() {
        let buf = read_file(&path).map_err(|e| io("read", &path, e))?;
        let (records, valid) = scan(&buf, first);
        if valid < buf.len() {
            if decode_at(&buf, valid).is_some() {
                // A whole record with an older number: what a reused file held before.
                tracing::debug!(
                    segment = %path.display(), offset = valid,
                    "outbox: cutting off the old records of a reused segment"
                );
            } else if i + 1 == count {
                tracing::warn!(
                    segment = %path.display(), offset = valid, dropped_bytes = buf.len() - valid,
                    "outbox: cutting off a torn record at the end of the log (an append the crash interrupted; it was never acknowledged)"
                );
            } else {
                tracing::error!(
                    segment = %path.display(), offset = valid, dropped_bytes = buf.len() - valid,
                    "outbox: corrupt record in the middle of the log; the rest of this segment is skipped"
                );
            }
            let f = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| io("open", &path, e))?;
            f.set_len(valid as u64)
                .and_then(|_| f.sync_all())
                .map_err(|e| io("truncate", &path, e))?;
        }
        let last = records.last().map(|r| r.0);
        next_seq = next_seq.max(last.map_or(first, |l| l + 1));
        segments.push(Segment {
            first,
            last,
            bytes: valid as u64,
            path,
        });
    }
    // Appends always go to a fresh segment: nothing is ever written after a cut tail.
    let active_path = dir.join(segment_name(next_seq));
    if segments.last().is_some_and(|s| s.first == next_seq) {
        // An empty last segment: reuse it.
    } else {
        File::create(&active_path).map_err(|e| io("create", &active_path, e))?;
        sync_dir(dir).map_err(|e| io("sync", dir, e))?;
        segments.push(Segment {
            first: next_seq,
            last: None,
            bytes: 0,
            path: active_path,
        });
    }
    Ok((segments, next_seq))
}

/// The segment appends go to.
pub(super) struct Active {
    file: File,
    pub(super) path: PathBuf,
    pub(super) first: u64,
    /// Where the next record goes: the end of the last one.
    end: u64,
    /// The file's length, more than `end` while it is a reused file's old bytes.
    len: u64,
}

impl Active {
    fn open(path: PathBuf, first: u64, end: u64) -> std::io::Result<Active> {
        let file = OpenOptions::new().write(true).open(&path)?;
        let len = file.metadata()?.len();
        Ok(Active {
            file,
            path,
            first,
            end,
            len,
        })
    }

    /// Writes `buf` after the last record and syncs it.
    pub(super) fn append(&mut self, buf: &[u8]) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.file.write_all_at(buf, self.end)?;
        self.file.sync_data()?;
        self.end += buf.len() as u64;
        self.len = self.len.max(self.end);
        Ok(())
    }

    /// Cuts a reused file's old bytes after the last record.
    pub(super) fn cut(&mut self) -> std::io::Result<()> {
        if self.len > self.end {
            self.truncate()?;
        }
        Ok(())
    }

    /// Cuts the file after the last record, whatever follows it (a failed write).
    pub(super) fn truncate(&mut self) -> std::io::Result<()> {
        self.file.set_len(self.end)?;
        self.file.sync_data()?;
        self.len = self.end;
        Ok(())
    }
}

pub(super) fn open_active(shared: &Shared) -> Result<Active, OutboxError> {
    let (path, first, end) = {
        let st = shared.lock();
        let seg = st.segments.last().ok_or(OutboxError::NoActiveSegment)?;
        (seg.path.clone(), seg.first, seg.bytes)
    };
    Active::open(path.clone(), first, end).map_err(|e| io("open", &path, e))
}

pub(super) fn roll_if_full(shared: &Shared, active: &mut Option<Active>) {
    let (bytes, next_seq) = {
        let st = shared.lock();
        (st.segments.last().map_or(0, |s| s.bytes), st.next_seq)
    };
    if bytes < shared.segment_bytes || active.as_ref().is_some_and(|a| a.first == next_seq) {
        return;
    }
    // The finished segment ends at its last record.
    if let Some(a) = active.as_mut()
        && let Err(e) = a.cut()
    {
        tracing::warn!("{}", io("cut the end of", &a.path, e));
    }
    let path = shared.dir.join(segment_name(next_seq));
    let spare = shared.lock().spare.take();
    let reused = spare.is_some_and(|spare| match fs::rename(&spare, &path) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!("{}; a new file is created", io("reuse", &spare, e));
            false
        }
    });
    let created = if reused {
        Ok(())
    } else {
        File::create(&path).map(drop)
    }
    .and_then(|_| sync_dir(&shared.dir))
    .and_then(|_| Active::open(path.clone(), next_seq, 0));
    match created {
        Ok(a) => {
            shared.lock().segments.push(Segment {
                first: next_seq,
                last: None,
                bytes: 0,
                path,
            });
            *active = Some(a);
        }
        Err(e) => tracing::error!(
            "{}; appends go on in the current segment",
            io("create", &path, e)
        ),
    }
}
