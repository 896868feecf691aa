//! Appending to the outbox: appenders join the open batch, the first of a batch leads it to
//! the writer thread, which writes and fsyncs each batch once and answers every appender (see
//! the module docs on group commit).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::task::yield_now;

use super::record::{HEADER, header};
use super::segment::{open_active, roll_if_full};
use super::{Outbox, OutboxError, Shared, housekeeping, io, now_ms};
use crate::cloudevents::CloudEvent;
use crate::error::{Admission, DispatchError};
use crate::ratelog::Throttle;

/// Most times the leader of a batch yields to the runtime for more records once the writer is
/// free: the bound on what a batch waits when records keep coming.
const MAX_TICKS: u32 = 16;

/// What the writer thread is asked to do.
pub(super) enum Msg {
    /// Events in the JSON event format, one record each, with their appenders.
    Batch(Vec<(Bytes, Reply)>),
    /// Save the cursors and let finished segments go.
    Housekeep,
}

/// An appender waiting for its sequence number.
pub(super) type Reply = oneshot::Sender<Result<u64, Arc<OutboxError>>>;

/// Where an appender hears its sequence number.
type Answer = oneshot::Receiver<Result<u64, Arc<OutboxError>>>;

impl Outbox {
    /// Writes `event` durably and gives its sequence number, once fsynced, with the event in
    /// the JSON event format as written (for structured-mode watchers to send as it is). Past
    /// the size bound, fails with `Full` or waits, as `admission` says.
    pub(crate) async fn append(
        &self,
        event: &CloudEvent,
        admission: Admission<'_>,
    ) -> Result<(u64, Bytes), DispatchError> {
        let (mut written, refused) = self.append_all(&[event], admission).await;
        match (written.pop(), refused) {
            (Some(w), _) => Ok(w),
            (None, Some(e)) => Err(e),
            (None, None) => Err(DispatchError::Stopped),
        }
    }

    /// [`Outbox::append`] for several events, in their order: they join the open batch
    /// together, so a request of many events waits for one fsync, not one per event. Gives
    /// the events written, a prefix of `events` in order, and why the next one was not, if
    /// one was not.
    pub(crate) async fn append_all(
        &self,
        events: &[&CloudEvent],
        admission: Admission<'_>,
    ) -> (Vec<(u64, Bytes)>, Option<DispatchError>) {
        let mut leader = Leader {
            outbox: self,
            leading: false,
        };
        let mut claims = Claims {
            outbox: self,
            written: Vec::new(),
            answers: VecDeque::new(),
        };
        let mut refused = None;
        for event in events {
            let json = Bytes::from(event.to_json());
            let len = (HEADER + json.len()) as u64;
            if len > self.shared.max_bytes {
                refused = Some(DispatchError::Invalid(format!(
                    "the event takes {len} bytes, more than the whole outbox may hold ({} bytes): raise spec.delivery.outbox.maxBytes",
                    self.shared.max_bytes
                )));
                break;
            }
            let (reply, answer) = oneshot::channel();
            let mut reply = Some(reply);
            let lead = match self.admit(len, &json, &mut reply) {
                Some(lead) => lead,
                None => {
                    // What this call added so far goes to the writer before it waits: the
                    // room it waits for may depend on it.
                    leader.lead().await;
                    match self
                        .admit_when_room(len, &json, &mut reply, admission)
                        .await
                    {
                        Ok(lead) => lead,
                        Err(e) => {
                            refused = Some(e);
                            break;
                        }
                    }
                }
            };
            leader.leading |= lead;
            claims.answers.push_back((json, answer));
        }
        leader.lead().await;
        claims.written.reserve(claims.answers.len());
        let mut failed = None;
        while let Some((json, answer)) = claims.answers.front_mut() {
            let answer = answer.await;
            let json = std::mem::take(json);
            claims.answers.pop_front();
            match answer {
                Ok(Ok(seq)) if failed.is_none() => claims.written.push((seq, json)),
                // Written in a later batch than one that failed: the caller hears of the
                // prefix before the failure only, so nobody will queue this one.
                Ok(Ok(seq)) => self.shared.forget(&[seq]),
                // The writer logged and counted it, once for the whole batch.
                Ok(Err(e)) => failed = failed.or(Some(DispatchError::Disk(e.to_string()))),
                Err(_) => failed = failed.or(Some(DispatchError::Stopped)),
            }
        }
        (std::mem::take(&mut claims.written), failed.or(refused))
    }

    /// Waits, as `admission` says, until [`Outbox::admit`] finds room for `len` bytes.
    async fn admit_when_room(
        &self,
        len: u64,
        record: &Bytes,
        reply: &mut Option<Reply>,
        admission: Admission<'_>,
    ) -> Result<bool, DispatchError> {
        loop {
            let room = self.shared.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            // Checked once enabled, so that room freed in between is not missed.
            if let Some(lead) = self.admit(len, record, reply) {
                return Ok(lead);
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

    /// Reserves `len` bytes and adds `record` to the open batch, if there is room: then says
    /// whether this appender leads the batch. Without room, leaves `reply` where it is.
    fn admit(&self, len: u64, record: &Bytes, reply: &mut Option<Reply>) -> Option<bool> {
        let mut st = self.shared.lock();
        if st.bytes + st.reserved + len > self.shared.max_bytes {
            return None;
        }
        let reply = reply.take()?;
        st.reserved += len;
        st.open.push((record.clone(), reply));
        Some(!std::mem::replace(&mut st.led, true))
    }

    /// Hands the open batch to the writer. If the writer has stopped, its appenders hear
    /// `Stopped` (their replies are dropped).
    fn hand_over(&self) {
        let batch = {
            let mut st = self.shared.lock();
            st.led = false;
            st.writing = true;
            std::mem::take(&mut st.open)
        };
        let bytes: u64 = batch.iter().map(|(r, _)| (HEADER + r.len()) as u64).sum();
        let sent = self
            .sender()
            .is_some_and(|tx| tx.send(Msg::Batch(batch)).is_ok());
        if !sent {
            let mut st = self.shared.lock();
            st.writing = false;
            st.reserved = st.reserved.saturating_sub(bytes);
        }
    }
}

/// The records one [`Outbox::append_all`] call added, until it returns them: if the call is
/// dropped first (its client hung up), the records the writer wrote are forgotten, so that no
/// watcher waits for events nobody will queue. The writer forgets those whose appender was
/// gone when it answered; these are the others: answered, but not yet read, or read but not
/// yet returned.
struct Claims<'a> {
    outbox: &'a Outbox,
    /// Written, in order, for the caller to queue.
    written: Vec<(u64, Bytes)>,
    /// Waiting for the writer's answer, in order.
    answers: VecDeque<(Bytes, Answer)>,
}

impl Drop for Claims<'_> {
    fn drop(&mut self) {
        let mut seqs: Vec<u64> = self.written.iter().map(|(seq, _)| *seq).collect();
        for (_, mut answer) in self.answers.drain(..) {
            // Closed first: the writer cannot answer after this look, so a record is
            // forgotten either here or by the writer, never by neither.
            answer.close();
            if let Ok(Ok(seq)) = answer.try_recv() {
                seqs.push(seq);
            }
        }
        if !seqs.is_empty() {
            self.outbox.shared.forget(&seqs);
        }
    }
}

/// The appender that leads the open batch, while it does (see the module docs). If its
/// future is dropped before it has handed the batch over, it hands it over then: the batch's
/// other appenders are still waiting.
struct Leader<'a> {
    outbox: &'a Outbox,
    leading: bool,
}

impl Leader<'_> {
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

impl Drop for Leader<'_> {
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
    let mut replies: Vec<(Reply, u64, u64)> = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while let Ok(m) = rx.try_recv() {
            batch.push(m);
        }
        buf.clear();
        replies.clear();
        let mut housekeep = false;
        {
            let mut st = shared.lock();
            for msg in batch {
                match msg {
                    Msg::Housekeep => housekeep = true,
                    Msg::Batch(records) => {
                        let ms = now_ms();
                        for (record, reply) in records {
                            let seq = st.next_seq;
                            st.next_seq += 1;
                            for w in st.watchers.iter_mut() {
                                w.outstanding.insert(seq);
                            }
                            buf.extend_from_slice(&header(seq, ms, &record));
                            buf.extend_from_slice(&record);
                            replies.push((reply, seq, (HEADER + record.len()) as u64));
                        }
                    }
                }
            }
        }
        if !replies.is_empty() {
            let result = match active.as_mut() {
                Some(a) => a
                    .append(&buf)
                    .map_err(|e| Arc::new(io("write", &a.path, e))),
                None => Err(Arc::new(OutboxError::NoActiveSegment)),
            };
            let total: u64 = replies.iter().map(|r| r.2).sum();
            {
                let mut st = shared.lock();
                st.reserved = st.reserved.saturating_sub(total);
                match &result {
                    Ok(()) => {
                        st.last_error = None;
                        st.bytes += total;
                        let last = replies.last().map(|r| r.1);
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
                        // Not written: nobody will deliver these sequence numbers.
                        for (_, seq, _) in &replies {
                            for w in st.watchers.iter_mut() {
                                w.outstanding.remove(seq);
                            }
                        }
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
                shared.metrics.appends.inc_by(replies.len() as u64);
            }
            let mut gone = Vec::new();
            for (reply, seq, _) in replies.drain(..) {
                if reply.send(result.clone().map(|()| seq)).is_err() && result.is_ok() {
                    gone.push(seq);
                }
            }
            if !gone.is_empty() {
                // Their appenders went away (a client hung up) before hearing "accepted":
                // nobody will queue these events, so no watcher holds them back.
                shared.forget(&gone);
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
