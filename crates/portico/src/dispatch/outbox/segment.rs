//! The segment files of the outbox's log: loading them at open (cutting off what a crash
//! or a reused file left after the last whole record), the active segment appends go to, and
//! rolling over to a new active segment (written over a spare file when there is one).

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};

use super::record::scan;
use super::{OutboxError, Shared, io};
use crate::metrics::OutboxMetrics;

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

/// The segments of the log in `dir`, oldest first, with a fresh empty active segment last; and
/// the next sequence number. Damaged stretches are copied to `quarantine/` and reported (the
/// records around them stay readable); what a reused file kept of its previous life is cut.
pub(super) fn load(
    dir: &Path,
    metrics: &OutboxMetrics,
) -> Result<(Vec<Segment>, u64), OutboxError> {
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
        let found = scan(&buf, first);
        for d in &found.damage {
            quarantine(dir, &path, &buf[d.start..d.end], d.start)?;
            let lost = d.lost.unwrap_or(1);
            metrics.damaged_records.inc_by(lost);
            match d.lost {
                Some(lost) => tracing::error!(
                    segment = %path.display(), offset = d.start, bytes = d.end - d.start, lost,
                    "outbox: damaged records in the log: they are lost, the records after them are kept; their bytes are in quarantine/"
                ),
                None if i + 1 == count => tracing::warn!(
                    segment = %path.display(), offset = d.start, bytes = d.end - d.start,
                    "outbox: a torn record at the end of the log (an append a crash interrupted, never acknowledged); its bytes are in quarantine/"
                ),
                None => tracing::error!(
                    segment = %path.display(), offset = d.start, bytes = d.end - d.start,
                    "outbox: damaged records at the end of a segment: they are lost; their bytes are in quarantine/"
                ),
            }
        }
        let last = found.records.last().map(|r| r.seq);
        // Past the segment's own bytes is what a reused file held before (not this log's), and
        // after damage at the end nothing good follows: cut (the damage is in quarantine). A
        // segment with no record left keeps nothing.
        let keep = match (last, found.damage.last()) {
            (None, _) => 0,
            (Some(_), Some(d)) if d.lost.is_none() => d.start,
            (Some(_), _) => found.end,
        };
        if keep < buf.len() {
            let f = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| io("open", &path, e))?;
            f.set_len(keep as u64)
                .and_then(|_| f.sync_all())
                .map_err(|e| io("truncate", &path, e))?;
        }
        next_seq = next_seq.max(last.map_or(first, |l| l + 1));
        segments.push(Segment {
            first,
            last,
            bytes: keep as u64,
            path,
        });
    }
    // Appends always go to a fresh segment: nothing is ever written after a damaged tail.
    let active_path = dir.join(segment_name(next_seq));
    if segments
        .last()
        .is_some_and(|s| s.first == next_seq && s.bytes == 0)
    {
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

/// The directory damaged bytes are copied to.
pub(super) const QUARANTINE: &str = "quarantine";

/// Copies the damaged `bytes` found at `offset` of `segment` to
/// `quarantine/<segment>.<offset>.bad` (once: a later open finds the copy there).
fn quarantine(dir: &Path, segment: &Path, bytes: &[u8], offset: usize) -> Result<(), OutboxError> {
    let qdir = dir.join(QUARANTINE);
    let name = segment
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let path = qdir.join(format!("{name}.{offset}.bad"));
    if path.exists() {
        return Ok(());
    }
    fs::create_dir_all(&qdir).map_err(|e| io("create the directory", &qdir, e))?;
    let tmp = qdir.join(format!("{name}.{offset}.tmp"));
    fs::write(&tmp, bytes)
        .and_then(|_| File::open(&tmp)?.sync_all())
        .and_then(|_| fs::rename(&tmp, &path))
        .map_err(|e| io("quarantine damaged bytes in", &path, e))
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
    // The next record the writer writes is past the last one on disk.
    let (bytes, next_seq) = {
        let st = shared.lock();
        (st.segments.last().map_or(0, |s| s.bytes), st.durable)
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
