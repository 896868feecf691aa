//! Appending to the outbox: appenders join the open batch, the first of a batch leads it to
//! the writer thread, which writes and fsyncs each batch once and answers every appender (see
//! the module docs on group commit).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::task::yield_now;

use super::record::{HEADER, header};
use super::segment::{open_active, roll_if_full};
use super::{Outbox, OutboxError, Shared, housekeeping, io, now_ms};
use crate::error::{Admission, DispatchError};
use crate::ratelog::Throttle;

/// Most times the leader of a batch yields to the runtime for more records once the writer is
/// free: the bound on what a batch waits when records keep coming.
const MAX_TICKS: u32 = 16;

/// What the writer thread is asked to do.
pub(super) enum Msg {
    /// Records in sequence order (sequence number, the event in the JSON event format), with
    /// their appenders.
    Batch(Vec<(u64, Bytes, Reply)>),
    /// Save the cursors and let finished segments go.
    Housekeep,
}

/// An appender waiting to hear that its record is on disk.
pub(super) type Reply = oneshot::Sender<Result<(), Arc<OutboxError>>>;

/// Where an appender hears it.
type Answer = oneshot::Receiver<Result<(), Arc<OutboxError>>>;

impl Outbox {
    /// Starts appends that reach the disk together (see [`Commit`]).
    pub(crate) fn commit(&self) -> Commit<'_> {
        Commit {
            outbox: self,
            leading: false,
            answers: Vec::new(),
        }
    }

    /// Writes `event` durably and gives its sequence number, once fsynced, with the event in
    /// the JSON event format as written. Past the size bound, fails with `Full` or waits, as
    /// `admission` says.
    #[cfg(any(test, feature = "bench"))]
    pub(crate) async fn append(
        &self,
        event: &crate::cloudevents::CloudEvent,
        admission: Admission<'_>,
    ) -> Result<(u64, Bytes), DispatchError> {
        let json = Bytes::from(event.to_json());
        let mut commit = self.commit();
        let seq = commit.add(json.clone(), admission).await?;
        match commit.durable().await {
            (_, Some(e)) => Err(e),
            (_, None) => Ok((seq, json)),
        }
    }

    /// Waits, as `admission` says, until [`Outbox::admit`] finds room for `len` bytes.
    async fn admit_when_room(
        &self,
        len: u64,
        record: &Bytes,
        reply: &mut Option<Reply>,
        admission: Admission<'_>,
    ) -> Result<(u64, bool), DispatchError> {
        loop {
            let room = self.shared.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            // Checked once enabled, so that room freed in between is not missed.
            if let Some(admitted) = self.admit(len, record, reply) {
                return Ok(admitted);
            }
            match admission {
                Admission::NoWait => {
                    return Err(DispatchError::Full {
                        retry_after: Duration::from_secs(1),
                    });
                }
                Admission::Wait(Some(stop)) => tokio::select! {
                    _ = room => {}
                    _ = stop.cancelled() => return Err(DispatchError::Stopped),
                },
                Admission::Wait(None) => room.await,
                Admission::Until(deadline) => {
                    if tokio::time::timeout_at(deadline, room).await.is_err() {
                        return Err(DispatchError::Full {
                            retry_after: Duration::from_secs(1),
                        });
                    }
                }
            }
        }
    }

    /// Reserves `len` bytes and adds `record` to the open batch, if there is room: then gives
    /// its sequence number (every watcher now waits for it) and whether this appender leads
    /// the batch. Without room, leaves `reply` where it is.
    fn admit(&self, len: u64, record: &Bytes, reply: &mut Option<Reply>) -> Option<(u64, bool)> {
        let mut st = self.shared.lock();
        if st.bytes + st.reserved + len > self.shared.max_bytes {
            return None;
        }
        let reply = reply.take()?;
        st.reserved += len;
        let seq = st.next_seq;
        st.next_seq += 1;
        for w in st.watchers.iter_mut() {
            w.outstanding.insert(seq);
        }
        st.open.push((seq, record.clone(), reply));
        Some((seq, !std::mem::replace(&mut st.led, true)))
    }

    /// Hands the open batch to the writer: under the lock, so that batches reach it in the
    /// order of their sequence numbers. If the writer has stopped, the batch's records are
    /// not written: no watcher waits for them, and their appenders hear `Stopped` (their
    /// replies are dropped).
    fn hand_over(&self) {
        let mut st = self.shared.lock();
        st.led = false;
        let batch = Msg::Batch(std::mem::take(&mut st.open));
        let unsent = match self.sender() {
            Some(tx) => tx.send(batch).err().map(|e| e.0),
            None => Some(batch),
        };
        match unsent {
            None => st.writing = true,
            Some(Msg::Batch(records)) => {
                for (seq, record, _) in &records {
                    st.reserved = st.reserved.saturating_sub((HEADER + record.len()) as u64);
                    st.forget(&[*seq]);
                }
            }
            Some(Msg::Housekeep) => {}
        }
    }
}

/// Appends that reach the disk in one fsync when they can: [`Commit::add`] gives each record
/// its sequence number at once, and the caller queues the event for its watchers there and
/// then, so that they deliver it while the writer writes and fsyncs; [`Commit::durable`]
/// waits until the records are on disk, which is when the source may hear "accepted".
///
/// If the commit is dropped while it leads the open batch (its client went away), it hands
/// the batch over then: the batch's other appenders are waiting.
pub(crate) struct Commit<'a> {
    outbox: &'a Outbox,
    /// This appender leads the open batch (see the module docs).
    leading: bool,
    /// Where the writer answers each record added, in order.
    answers: Vec<Answer>,
}

impl Commit<'_> {
    /// Adds `record` (an event in the JSON event format) to the open batch and gives its
    /// sequence number. Past the size bound, fails with `Full` or waits, as `admission` says;
    /// what this commit added before goes to the writer first, as the room it waits for may
    /// depend on it.
    pub(crate) async fn add(
        &mut self,
        record: Bytes,
        admission: Admission<'_>,
    ) -> Result<u64, DispatchError> {
        let max = self.outbox.shared.max_bytes;
        let len = (HEADER + record.len()) as u64;
        if len > max {
            return Err(DispatchError::Invalid(format!(
                "the event takes {len} bytes, more than the whole outbox may hold ({max} bytes): raise spec.delivery.outbox.maxBytes"
            )));
        }
        let (reply, answer) = oneshot::channel();
        let mut reply = Some(reply);
        let (seq, lead) = match self.outbox.admit(len, &record, &mut reply) {
            Some(admitted) => admitted,
            None => {
                self.lead().await;
                self.outbox
                    .admit_when_room(len, &record, &mut reply, admission)
                    .await?
            }
        };
        self.leading |= lead;
        self.answers.push(answer);
        Ok(seq)
    }

    /// Waits until the records added are on disk. Gives how many of them, in order, are, and
    /// why the next one is not, if one is not.
    pub(crate) async fn durable(mut self) -> (usize, Option<DispatchError>) {
        self.lead().await;
        let mut written = 0;
        for answer in std::mem::take(&mut self.answers) {
            match answer.await {
                Ok(Ok(())) => written += 1,
                // The writer logged and counted it, once for the whole batch.
                Ok(Err(e)) => return (written, Some(DispatchError::Disk(e.to_string()))),
                Err(_) => return (written, Some(DispatchError::Stopped)),
            }
        }
        (written, None)
    }

    /// Leads the open batch to the writer, if this appender leads it.
    async fn lead(&mut self) {
        if !self.leading {
            return;
        }
        let shared = &self.outbox.shared;
        let mut seen = 0;
        let mut ticks = 0;
        loop {
            // Every task ready now runs (and the I/O driver is polled) before this one
            // goes on: their records join the batch.
            yield_now().await;
            ticks += 1;
            let free = shared.free.notified();
            tokio::pin!(free);
            free.as_mut().enable();
            let (writing, len) = {
                let st = shared.lock();
                (st.writing, st.open.len())
            };
            if !writing {
                if len == seen || ticks >= MAX_TICKS {
                    break;
                }
                seen = len;
                continue;
            }
            // The writer is busy: the batch keeps filling until it is free.
            free.await;
        }
        self.leading = false;
        self.outbox.hand_over();
    }
}

impl Drop for Commit<'_> {
    fn drop(&mut self) {
        if self.leading {
            self.outbox.hand_over();
        }
    }
}

pub(super) fn run(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Msg>) {
    let mut active = match open_active(&shared) {
        Ok(a) => Some(a),
        Err(e) => {
            tracing::error!("{e}");
            None
        }
    };
    let mut buf = Vec::with_capacity(1 << 20);
    let mut replies: Vec<Reply> = Vec::new();
    let mut seqs: Vec<u64> = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while let Ok(m) = rx.try_recv() {
            batch.push(m);
        }
        buf.clear();
        replies.clear();
        seqs.clear();
        let mut housekeep = false;
        for msg in batch {
            match msg {
                Msg::Housekeep => housekeep = true,
                Msg::Batch(records) => {
                    let ms = now_ms();
                    for (seq, record, reply) in records {
                        buf.extend_from_slice(&header(seq, ms, &record));
                        buf.extend_from_slice(&record);
                        replies.push(reply);
                        seqs.push(seq);
                    }
                }
            }
        }
        if !replies.is_empty() {
            let started = Instant::now();
            let result = match active.as_mut() {
                Some(a) => a
                    .append(&buf)
                    .map_err(|e| Arc::new(io("write", &a.path, e))),
                None => Err(Arc::new(OutboxError::NoActiveSegment)),
            };
            let took = started.elapsed();
            let total = buf.len() as u64;
            {
                let mut st = shared.lock();
                st.reserved = st.reserved.saturating_sub(total);
                match &result {
                    Ok(()) => {
                        st.last_error = None;
                        st.bytes += total;
                        let last = seqs.last().copied();
                        st.durable = last.map_or(st.durable, |l| l + 1);
                        if let Some(seg) = st.segments.last_mut() {
                            seg.bytes += total;
                            seg.last = last.or(seg.last);
                        }
                    }
                    Err(e) => {
                        // Said once in a while, not per batch; the appenders hear `Disk`.
                        static FAILED: Throttle = Throttle::new();
                        if let Some(suppressed) = FAILED.check() {
                            tracing::error!(
                                events = replies.len(),
                                suppressed,
                                "{e}: these events were not accepted (their sources were answered 503; suppressed: failed writes since the last line)"
                            );
                        }
                        shared.metrics.write_errors.inc();
                        st.last_error = Some(e.to_string());
                        // Not written: no watcher waits for these sequence numbers (the
                        // events already on their way are delivered all the same).
                        st.forget(&seqs);
                        // Cut whatever part was written, so the log stays whole.
                        if let Some(a) = active.as_mut() {
                            let _ = a.truncate();
                        }
                    }
                }
                shared.metrics.bytes.set(st.bytes as i64);
            }
            if result.is_ok() {
                shared.metrics.fsyncs.inc();
                shared.metrics.commit_seconds.observe(took.as_secs_f64());
                shared.metrics.appends.inc_by(replies.len() as u64);
            }
            // An appender that went away (its client hung up) had queued its event already.
            for reply in replies.drain(..) {
                let _ = reply.send(result.clone());
            }
            if result.is_ok() {
                roll_if_full(&shared, &mut active);
            }
            shared.lock().writing = false;
            shared.free.notify_waiters();
        }
        if housekeep && let Err(e) = housekeeping::run(&shared) {
            tracing::warn!("{e}");
        }
    }
    // Stopping: leave no old bytes after the last record for the next start to find.
    if let Some(a) = active.as_mut()
        && let Err(e) = a.cut()
    {
        tracing::warn!("{}", io("cut the end of", &a.path, e));
    }
}
