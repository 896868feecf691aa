//! The dispatcher: one bounded queue and a set of senders per watcher.
//!
//! `accept` takes a slot in every watcher's queue before it enqueues anything, so an event is
//! either accepted for all watchers or refused (`Full`) for all; the slot is given back when
//! that watcher is done with the event (delivered, or dead-lettered after its retries). A slow
//! or dead watcher therefore fills only its own queue and never delays the others until that
//! queue is full; then sources are pushed back rather than memory growing.
//!
//! Each watcher's senders pull from its queue and deliver with retries: capped
//! exponential backoff with jitter on connection errors, 408, 429 and 5xx. An event a watcher
//! never takes goes to the dead-letter destination ([`deadletter`]).
//!
//! Delivery modes: `atMostOnce` keeps the queues in memory only. `atLeastOnce` (the default)
//! also writes every event to the durable [`outbox`] before `accept` returns, each watcher's
//! cursor moves as it is done with an event, and after a restart a replay task per watcher
//! queues what that watcher had not finished, ids unchanged. `ackAfterDelivery` is
//! `atLeastOnce` for every source but the ackable ones (brokers), whose events skip the outbox:
//! [`Dispatcher::accept_tracked`] hands back a [`Delivered`] that resolves once every watcher
//! took the event (or it was dead-lettered), and only then does the source ack it, so the broker
//! keeps the event until it is safe.

pub(crate) mod deadletter;
pub(crate) mod http;
pub(crate) mod outbox;
pub(crate) mod redrive;
pub(crate) mod stdout;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use backon::{BackoffBuilder, ExponentialBuilder};
use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tokio_util::task::TaskTracker;

use crate::cloudevents::CloudEvent;
use crate::error::{Admission, BoxError, BoxFuture, DeliveryError, DispatchError};
use crate::metrics::{Metrics, SrcDelivery, WatcherMetrics};
use crate::ratelog::Throttle;
use crate::spec::watchers::{Batching, QueueSettings, RetryPolicy, Target};

pub(crate) use deadletter::DeadLetter;
pub(crate) use outbox::{Outbox, OutboxOptions};

/// A destination of CloudEvents: one attempt to hand over one event.
pub trait Sender: Send + Sync + 'static {
    /// Delivers `event` once.
    fn send<'a>(&'a self, event: &'a CloudEvent) -> BoxFuture<'a, Result<(), DeliveryError>>;

    /// [`Sender::send`] for an event whose JSON event format is already written (`json`, by
    /// the outbox): a sender that sends that format may send these bytes rather than encode
    /// the event again. By default it sends as [`Sender::send`] does.
    fn send_json<'a>(
        &'a self,
        event: &'a CloudEvent,
        json: &'a Bytes,
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        let _ = json;
        self.send(event)
    }

    /// Whether this sender takes batches ([`Sender::send_batch`]): its watcher's queue is
    /// then sent as batches, one at a time.
    fn batches(&self) -> bool {
        false
    }

    /// Delivers `events` as one batch, in their order: the answer is for all of them. By
    /// default one by one, stopping at the first failure.
    fn send_batch<'a>(
        &'a self,
        events: &'a [&'a CloudEvent],
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            for event in events {
                self.send(event).await?;
            }
            Ok(())
        })
    }

    /// [`Sender::send_batch`] for events whose JSON event format is already written (`jsons`,
    /// by the outbox, one for each event): a sender that sends batches in that format may join
    /// these bytes rather than encode the events again. By default it sends as
    /// [`Sender::send_batch`] does.
    fn send_batch_json<'a>(
        &'a self,
        events: &'a [&'a CloudEvent],
        jsons: &'a [&'a Bytes],
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        let _ = jsons;
        self.send_batch(events)
    }
}

/// Makes the senders of watchers the framework crate has no client for (NATS JetStream,
/// Kafka): the `portico` binary registers one from the `portico-bus` crate, so that this
/// crate depends on no broker client.
pub trait SenderFactory: Send + Sync + 'static {
    /// The sender of `target`, or `None` when this factory does not know the target.
    fn sender(&self, target: &Target) -> Option<Result<Arc<dyn Sender>, BoxError>>;
}

/// One watcher of a dispatcher: its name, its sender, its queue and where its dead letters go.
pub(crate) struct WatcherEntry {
    /// Its name in metrics, logs and the outbox's cursors.
    pub name: String,
    /// How events reach it.
    pub sender: Arc<dyn Sender>,
    /// Its queue and retries.
    pub queue: QueueSettings,
    /// Where events go that it never takes.
    pub dead_letter: Arc<DeadLetter>,
    /// The name of the watcher this one replaces (its address changed): it takes the old
    /// one's pending events.
    pub moved_from: Option<String>,
}

/// How a dispatcher keeps accepted events.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::enum_variant_names)] // the names of the delivery modes users write
pub(crate) enum Delivery {
    /// In memory only.
    AtMostOnce,
    /// In the durable outbox as well.
    AtLeastOnce(OutboxOptions),
    /// As `AtLeastOnce`, but events of ackable sources skip the outbox: the source acks them
    /// once they are delivered (see [`Dispatcher::accept_tracked`]).
    AckAfterDelivery(OutboxOptions),
}

impl Delivery {
    /// The outbox of this mode, if it has one.
    pub(crate) fn outbox(&self) -> Option<&OutboxOptions> {
        match self {
            Delivery::AtMostOnce => None,
            Delivery::AtLeastOnce(o) | Delivery::AckAfterDelivery(o) => Some(o),
        }
    }
}

/// When a source acknowledges an event to its own sender.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Ack {
    /// Once the event is accepted (in `atLeastOnce`, once it is in the outbox on disk).
    #[default]
    OnAcceptance,
    /// For a source that acknowledges its messages one by one (a broker's consumer): in
    /// `ackAfterDelivery`, once every watcher took the event (or dead-lettered it), the event
    /// skipping the outbox since the broker keeps it until then. In the other modes, as
    /// [`Ack::OnAcceptance`].
    AfterDelivery,
}

/// Resolves once an accepted event is done with: delivered to every watcher, or dead-lettered
/// by those that never took it. What a source waits for before it acks a broker message in
/// `ackAfterDelivery`; in the other modes it is done at once (the event is in the outbox, or,
/// in `atMostOnce`, in memory).
#[derive(Debug)]
pub struct Delivered {
    rx: Option<oneshot::Receiver<()>>,
}

impl Delivered {
    /// Done already.
    pub fn now() -> Delivered {
        Delivered { rx: None }
    }

    /// True when there is nothing to wait for.
    pub fn is_done(&self) -> bool {
        self.rx.is_none()
    }

    /// Waits until the event is done with: true when every watcher took it or dead-lettered
    /// it, false when the gateway shut down first (do not ack: the broker will send it again).
    pub async fn wait(self) -> bool {
        match self.rx {
            None => true,
            Some(rx) => rx.await.is_ok(),
        }
    }
}

/// Counts the watchers still to finish one tracked event.
struct Tracker {
    left: AtomicUsize,
    done: std::sync::Mutex<Option<oneshot::Sender<()>>>,
}

impl Tracker {
    fn finished_one(&self) {
        if self.left.fetch_sub(1, Ordering::AcqRel) == 1
            && let Some(tx) = self.done.lock().unwrap_or_else(|e| e.into_inner()).take()
        {
            let _ = tx.send(());
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

struct Queued {
    event: Arc<CloudEvent>,
    src: Option<SrcDelivery>,
    accepted_at: Instant,
    /// When it was first accepted (ms since the epoch; survives restarts), for `maxAge`.
    accepted_ms: u64,
    /// Its place in the outbox, in `atLeastOnce`.
    seq: Option<u64>,
    /// The event in the JSON event format, when the outbox wrote it.
    json: Option<Bytes>,
    /// Told when this watcher is done with it, for an event whose source acks after delivery.
    tracker: Option<Arc<Tracker>>,
    _slot: OwnedSemaphorePermit,
}

/// An event's slot in each watcher's queue; `None` where the watcher's filter refused it.
type Slots = Vec<Option<OwnedSemaphorePermit>>;

struct WatcherQueue {
    name: String,
    /// How events reach it, its retries and its dead letters: what a redrive uses.
    sender: Arc<dyn Sender>,
    retry: RetryPolicy,
    dead_letter: Arc<DeadLetter>,
    /// Which events it gets (every one without).
    filter: Option<Arc<crate::filter::Filter>>,
    /// Its number of slots.
    size: usize,
    slots: Arc<Semaphore>,
    tx: async_channel::Sender<Queued>,
    metrics: WatcherMetrics,
}

/// One watcher's counters at one moment.
pub(crate) struct WatcherCounters<'a> {
    /// Its name.
    pub name: &'a str,
    /// Events it took.
    pub delivered: u64,
    /// Events waiting or in flight.
    pub queue_depth: i64,
    /// Events sent to the dead letters.
    pub dead_lettered: u64,
}

/// Fans accepted events out to every watcher.
pub(crate) struct Dispatcher {
    queues: Vec<WatcherQueue>,
    tasks: TaskTracker,
    abort: CancellationToken,
    closing: CancellationToken,
    outbox: Option<Arc<Outbox>>,
    mode: Mode,
}

/// The delivery mode, without its outbox options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// In memory, sources wait for room ([`Dispatcher::start`]).
    Memory,
    AtMostOnce,
    AtLeastOnce,
    AckAfterDelivery,
}

impl Dispatcher {
    /// Starts the senders of every watcher, in memory only, dead letters written to the log.
    /// Unlike `atMostOnce`, sources wait for room (as in the default mode): what tests and
    /// embedders want from a dispatcher without an outbox.
    pub(crate) fn start(
        watchers: Vec<(String, Arc<dyn Sender>, QueueSettings)>,
        metrics: &Metrics,
    ) -> Dispatcher {
        let entries = watchers
            .into_iter()
            .map(|(name, sender, queue)| WatcherEntry {
                name,
                sender,
                queue,
                dead_letter: Arc::new(DeadLetter::Log),
                moved_from: None,
            })
            .collect();
        Self::start_parts(entries, metrics, None, Vec::new(), Mode::Memory)
    }

    /// Starts the senders of every watcher under `delivery`; in `atLeastOnce` opens the
    /// outbox and starts replaying what was not delivered before.
    pub(crate) fn start_with(
        watchers: Vec<WatcherEntry>,
        metrics: &Metrics,
        delivery: &Delivery,
    ) -> Result<Dispatcher, outbox::OutboxError> {
        let mode = match delivery {
            Delivery::AtMostOnce => Mode::AtMostOnce,
            Delivery::AtLeastOnce(_) => Mode::AtLeastOnce,
            Delivery::AckAfterDelivery(_) => Mode::AckAfterDelivery,
        };
        match delivery.outbox() {
            None => Ok(Self::start_parts(watchers, metrics, None, Vec::new(), mode)),
            Some(opts) => {
                let names: Vec<String> = watchers.iter().map(|w| w.name.clone()).collect();
                let moves: std::collections::BTreeMap<String, String> = watchers
                    .iter()
                    .filter_map(|w| Some((w.name.clone(), w.moved_from.clone()?)))
                    .collect();
                let (outbox, replays) =
                    Outbox::open_moved(opts, &names, &moves, metrics.outbox.clone())?;
                Ok(Self::start_parts(
                    watchers,
                    metrics,
                    Some(outbox),
                    replays,
                    mode,
                ))
            }
        }
    }

    fn start_parts(
        watchers: Vec<WatcherEntry>,
        metrics: &Metrics,
        outbox: Option<Arc<Outbox>>,
        replays: Vec<outbox::ReplayRange>,
        mode: Mode,
    ) -> Dispatcher {
        let tasks = TaskTracker::new();
        let abort = CancellationToken::new();
        let closing = CancellationToken::new();
        let mut queues = Vec::with_capacity(watchers.len());
        for (index, w) in watchers.into_iter().enumerate() {
            let settings = w.queue;
            let name = w.name;
            let (tx, rx) = async_channel::unbounded::<Queued>();
            let wm = metrics.for_watcher(&name);
            // One limiter for all the watcher's senders.
            let limiter = settings.rate_limit.as_ref().map(|r| Arc::new(r.limiter()));
            // A watcher that takes batches has one in flight at a time: its order is kept,
            // a failed batch included.
            let batch = w.sender.batches().then_some(settings.batch);
            let workers = if batch.is_some() {
                1
            } else {
                settings.concurrency.max(1)
            };
            for _ in 0..workers {
                let worker = Worker {
                    index,
                    name: name.clone(),
                    sender: w.sender.clone(),
                    retry: settings.retry.clone(),
                    metrics: wm.clone(),
                    abort: abort.clone(),
                    dead_letter: w.dead_letter.clone(),
                    outbox: outbox.clone(),
                    limiter: limiter.clone(),
                };
                match batch {
                    None => tasks.spawn(worker.run(rx.clone())),
                    Some(batching) => tasks.spawn(worker.run_batches(rx.clone(), batching)),
                };
            }
            let slots = Arc::new(Semaphore::new(settings.queue_size.max(1)));
            if let (Some(o), Some(range)) = (&outbox, replays.get(index)) {
                if range.from < range.to {
                    tasks.spawn(replay(
                        o.clone(),
                        index,
                        *range,
                        slots.clone(),
                        tx.clone(),
                        wm.clone(),
                        settings.filter.clone(),
                        abort.clone(),
                    ));
                } else {
                    o.replay_done(index);
                }
            }
            queues.push(WatcherQueue {
                name,
                sender: w.sender,
                retry: settings.retry.clone(),
                dead_letter: w.dead_letter,
                filter: settings.filter.clone(),
                size: settings.queue_size.max(1),
                slots,
                tx,
                metrics: wm,
            });
        }
        if let Some(o) = &outbox {
            let dead_letter = Arc::new(DeadLetter::file(o.status().dir.join("dead-letter.jsonl")));
            for orphan in o.take_orphans() {
                tasks.spawn(bury(o.clone(), orphan, dead_letter.clone(), abort.clone()));
            }
            let o = o.clone();
            let closing = closing.clone();
            tasks.spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(100));
                loop {
                    tokio::select! {
                        _ = closing.cancelled() => return,
                        _ = tick.tick() => o.housekeep_soon(),
                    }
                }
            });
        }
        tasks.close();
        Dispatcher {
            queues,
            tasks,
            abort,
            closing,
            outbox,
            mode,
        }
    }

    /// True in `atMostOnce`: sources never wait for room, a full queue drops the event.
    pub(crate) fn never_waits(&self) -> bool {
        self.mode == Mode::AtMostOnce
    }

    /// Whether accepted events are appended to a durable outbox.
    pub(crate) fn has_outbox(&self) -> bool {
        self.outbox.is_some()
    }

    /// What `/status` shows of the outbox, when there is one.
    pub(crate) fn outbox_status(&self) -> Option<outbox::OutboxStatus> {
        self.outbox.as_ref().map(|o| o.status())
    }

    /// The watchers' names.
    pub(crate) fn watcher_names(&self) -> Vec<&str> {
        self.queues.iter().map(|q| q.name.as_str()).collect()
    }

    /// Each watcher's counters now, in watcher order.
    pub(crate) fn watcher_counters(&self) -> impl Iterator<Item = WatcherCounters<'_>> {
        self.queues.iter().map(|q| WatcherCounters {
            name: &q.name,
            delivered: q.metrics.delivered.get(),
            queue_depth: q.metrics.queue_depth.get(),
            dead_lettered: q.metrics.dead_lettered.get(),
        })
    }

    /// Accepts an event for every watcher, or for none, waiting for room as `admission`
    /// says. In `atLeastOnce` it returns once the event is in the outbox on disk; `src`
    /// counts what becomes of it in its configuration's delivery counters.
    ///
    /// With [`Ack::AfterDelivery`] in `ackAfterDelivery`, the event skips the outbox (its
    /// source, a broker, keeps it until the ack) and the returned [`Delivered`] resolves once
    /// every watcher took it or dead-lettered it; otherwise it is done at once.
    pub(crate) async fn accept(
        &self,
        event: Arc<CloudEvent>,
        admission: Admission<'_>,
        src: Option<SrcDelivery>,
        ack: Ack,
    ) -> Result<Delivered, DispatchError> {
        if ack == Ack::OnAcceptance || self.mode != Mode::AckAfterDelivery {
            self.enqueue(event, admission, src, None).await?;
            return Ok(Delivered::now());
        }
        let (tx, rx) = oneshot::channel();
        let tracker = Arc::new(Tracker {
            left: AtomicUsize::new(self.queues.len()),
            done: std::sync::Mutex::new(Some(tx)),
        });
        if self.queues.is_empty() {
            tracker.left.store(1, Ordering::Release);
            tracker.finished_one();
        }
        self.enqueue(event, admission, src, Some(tracker)).await?;
        Ok(Delivered { rx: Some(rx) })
    }

    /// Accepts `events` (each with its configuration's counters) for every watcher, in their
    /// order, as [`Dispatcher::accept`] does with [`Ack::OnAcceptance`]: what has room now goes
    /// to the outbox in one append (one fsync for a request of many events); an event that
    /// must wait for room waits once those before it are queued. Gives how many were accepted,
    /// a prefix of `events`, and why the next one was not, if one was not.
    pub(crate) async fn accept_all(
        &self,
        events: Vec<(CloudEvent, Option<SrcDelivery>)>,
        admission: Admission<'_>,
    ) -> (usize, Option<DispatchError>) {
        let mut accepted = 0;
        let mut events = events.into_iter();
        let mut ready = Vec::new();
        loop {
            let (mut waits, mut refused) = (None, None);
            for (event, src) in events.by_ref() {
                match self.slots(&event, Admission::NoWait).await {
                    Ok(slots) => ready.push((event, src, slots)),
                    Err(DispatchError::Full { .. }) if !matches!(admission, Admission::NoWait) => {
                        waits = Some((event, src));
                        break;
                    }
                    Err(e) => {
                        refused = Some(e);
                        break;
                    }
                }
            }
            let (n, failed) = self
                .enqueue_all(std::mem::take(&mut ready), admission)
                .await;
            accepted += n;
            if let Some(e) = failed.or(refused) {
                return (accepted, Some(e));
            }
            let Some((event, src)) = waits else {
                return (accepted, None);
            };
            match self.slots(&event, admission).await {
                Ok(slots) => ready.push((event, src, slots)),
                Err(e) => return (accepted, Some(e)),
            }
        }
    }

    /// Queues events that hold their slots, in order, and writes them to the outbox if there
    /// is one; gives how many were queued (and, with an outbox, are on disk) and why the next
    /// one was not.
    async fn enqueue_all(
        &self,
        ready: Vec<(CloudEvent, Option<SrcDelivery>, Slots)>,
        admission: Admission<'_>,
    ) -> (usize, Option<DispatchError>) {
        let Some(o) = &self.outbox else {
            let n = ready.len();
            for (i, (event, src, slots)) in ready.into_iter().enumerate() {
                if let Err(e) = self.push(Arc::new(event), slots, None, None, src, None) {
                    return (i, Some(e));
                }
            }
            return (n, None);
        };
        // Each event is queued as soon as its record has a place in the log: the watchers
        // deliver it while the writer writes and fsyncs (see the outbox's module docs).
        let mut commit = o.commit();
        let mut queued = 0;
        let mut refused = None;
        for (event, src, slots) in ready {
            let json = Bytes::from(event.to_json());
            let pushed = match commit.add(json.clone(), admission).await {
                // Fails only when stopping; the record is written for the next start.
                Ok(seq) => self.push(Arc::new(event), slots, Some(seq), Some(json), src, None),
                Err(e) => Err(e),
            };
            if let Err(e) = pushed {
                refused = Some(e);
                break;
            }
            queued += 1;
        }
        let (durable, failed) = commit.durable().await;
        (queued.min(durable), failed.or(refused))
    }

    async fn enqueue(
        &self,
        event: Arc<CloudEvent>,
        admission: Admission<'_>,
        src: Option<SrcDelivery>,
        tracker: Option<Arc<Tracker>>,
    ) -> Result<(), DispatchError> {
        let slots = self.slots(&event, admission).await?;
        let Some(o) = self.outbox.as_ref().filter(|_| tracker.is_none()) else {
            return self.push(event, slots, None, None, src, tracker);
        };
        let json = Bytes::from(event.to_json());
        let mut commit = o.commit();
        let seq = commit.add(json.clone(), admission).await?;
        self.push(event, slots, Some(seq), Some(json), src, None)?;
        match commit.durable().await {
            (_, Some(e)) => Err(e),
            (_, None) => Ok(()),
        }
    }

    /// Takes a slot for `event` in the queue of every watcher whose filter it passes (`None`
    /// for the others), waiting for room as `admission` says.
    async fn slots(
        &self,
        event: &CloudEvent,
        admission: Admission<'_>,
    ) -> Result<Slots, DispatchError> {
        let mut slots = Vec::with_capacity(self.queues.len());
        for q in &self.queues {
            if q.filter.as_ref().is_some_and(|f| !f.passes(event)) {
                slots.push(None);
                continue;
            }
            // A free slot is taken at once, whatever the admission: the wait and its timer are
            // made only when the queue is full.
            use tokio::sync::TryAcquireError::{Closed, NoPermits};
            let slot = match (q.slots.clone().try_acquire_owned(), admission) {
                (Ok(p), _) => p,
                (Err(Closed), _) => return Err(DispatchError::Stopped),
                (Err(NoPermits), Admission::NoWait) => {
                    return Err(DispatchError::Full {
                        retry_after: Duration::from_secs(1),
                    });
                }
                (Err(NoPermits), Admission::Until(deadline)) => {
                    match tokio::time::timeout_at(deadline, q.slots.clone().acquire_owned()).await {
                        Ok(Ok(p)) => p,
                        Ok(Err(_)) => return Err(DispatchError::Stopped),
                        Err(_) => {
                            return Err(DispatchError::Full {
                                retry_after: Duration::from_secs(1),
                            });
                        }
                    }
                }
                (Err(NoPermits), Admission::Wait(stop)) => {
                    let acquire = q.slots.clone().acquire_owned();
                    let acquired = match stop {
                        Some(token) => tokio::select! {
                            p = acquire => p,
                            _ = token.cancelled() => return Err(DispatchError::Stopped),
                        },
                        None => acquire.await,
                    };
                    acquired.map_err(|_| DispatchError::Stopped)?
                }
            };
            slots.push(Some(slot));
        }
        Ok(slots)
    }

    /// Queues an accepted event for every watcher it holds a slot of; a watcher it holds none
    /// of (filtered out) is done with it at once.
    fn push(
        &self,
        event: Arc<CloudEvent>,
        slots: Slots,
        seq: Option<u64>,
        json: Option<Bytes>,
        src: Option<SrcDelivery>,
        tracker: Option<Arc<Tracker>>,
    ) -> Result<(), DispatchError> {
        let now = Instant::now();
        let accepted_ms = now_ms();
        for (index, (q, slot)) in self.queues.iter().zip(slots).enumerate() {
            let Some(slot) = slot else {
                // Filtered out: this watcher is done with it at once.
                q.metrics.filtered.inc();
                if let (Some(o), Some(seq)) = (&self.outbox, seq) {
                    o.done(index, seq);
                }
                if let Some(t) = &tracker {
                    t.finished_one();
                }
                continue;
            };
            let queued = Queued {
                event: event.clone(),
                src: src.clone(),
                accepted_at: now,
                accepted_ms,
                seq,
                json: json.clone(),
                tracker: tracker.clone(),
                _slot: slot,
            };
            if q.tx.try_send(queued).is_err() {
                return Err(DispatchError::Stopped);
            }
            q.metrics.queue_depth.inc();
        }
        Ok(())
    }

    /// Stops taking events and waits for the events in flight to be delivered; after
    /// `timeout`, abandons the rest (their retries stop) and says how many were left. In
    /// `atLeastOnce` the abandoned events stay in the outbox for the next start.
    pub(crate) async fn drain(&self, timeout: Duration, hurry: &CancellationToken) -> usize {
        self.closing.cancel();
        for q in &self.queues {
            q.slots.close();
            q.tx.close();
        }
        let finished = tokio::select! {
            _ = self.tasks.wait() => true,
            _ = tokio::time::sleep(timeout) => {
                tracing::warn!(timeout = ?timeout, "drain timeout: stopping the deliveries still in flight");
                false
            }
            _ = hurry.cancelled() => {
                tracing::warn!("a second stop signal: stopping the deliveries still in flight now");
                false
            }
        };
        let mut left = 0;
        if !finished {
            self.abort.cancel();
            self.tasks.wait().await;
            for (index, q) in self.queues.iter().enumerate() {
                let n = match &self.outbox {
                    // What the next start replays for this watcher.
                    Some(o) => o.pending(index),
                    // What its queue still held: lost.
                    None => q.size.saturating_sub(q.slots.available_permits()) as u64,
                };
                if n == 0 {
                    continue;
                }
                left += n as usize;
                match &self.outbox {
                    Some(o) => tracing::warn!(
                        watcher = %q.name, events = n, outbox = %o.status().dir.display(),
                        "events not delivered stay in the outbox: they are delivered at the next start"
                    ),
                    None => tracing::error!(
                        watcher = %q.name, events = n,
                        "events not delivered are abandoned (atMostOnce keeps no outbox)"
                    ),
                }
            }
        }
        if let Some(o) = &self.outbox {
            let o = o.clone();
            let _ = tokio::task::spawn_blocking(move || o.close()).await;
        }
        left
    }
}

/// Queues, for watcher `index`, the outbox records it had not finished before the restart.
#[allow(clippy::too_many_arguments)] // the parts of one watcher's queue, as start_parts has them
async fn replay(
    outbox: Arc<Outbox>,
    index: usize,
    range: outbox::ReplayRange,
    slots: Arc<Semaphore>,
    tx: async_channel::Sender<Queued>,
    metrics: WatcherMetrics,
    filter: Option<Arc<crate::filter::Filter>>,
    abort: CancellationToken,
) {
    let mut after = range.from;
    loop {
        let o = outbox.clone();
        let batch =
            match tokio::task::spawn_blocking(move || o.read_segment_records(range, after)).await {
                Ok(Some(b)) => b,
                Ok(None) | Err(_) => break,
            };
        for record in batch {
            // What the watcher's filter keeps from it now is done with, as when accepted.
            if filter.as_ref().is_some_and(|f| !f.passes(&record.event)) {
                outbox.replaying(index, record.seq);
                outbox.done(index, record.seq);
                after = record.seq + 1;
                metrics.filtered.inc();
                continue;
            }
            let slot = tokio::select! {
                _ = abort.cancelled() => return,
                s = slots.clone().acquire_owned() => match s {
                    Ok(s) => s,
                    Err(_) => return,
                },
            };
            outbox.replaying(index, record.seq);
            after = record.seq + 1;
            let queued = Queued {
                event: Arc::new(record.event),
                // A replayed event's configuration counters are those of an earlier process.
                src: None,
                accepted_at: Instant::now(),
                accepted_ms: record.accepted_ms,
                seq: Some(record.seq),
                // Encoded again from the record, as any event from outside is.
                json: None,
                tracker: None,
                _slot: slot,
            };
            if tx.try_send(queued).is_err() {
                return;
            }
            metrics.queue_depth.inc();
        }
    }
    outbox.replay_done(index);
}

struct Worker {
    index: usize,
    name: String,
    sender: Arc<dyn Sender>,
    retry: RetryPolicy,
    metrics: WatcherMetrics,
    abort: CancellationToken,
    dead_letter: Arc<DeadLetter>,
    outbox: Option<Arc<Outbox>>,
    /// The watcher's rate limit, shared by its senders.
    limiter: Option<Arc<governor::DefaultDirectRateLimiter>>,
}

impl Worker {
    /// Sends the queue's events as batches of up to `batching.max_events`: a batch leaves
    /// when it is full, or `batching.max_delay` after its first event came. Each batch is
    /// delivered with retries as a whole, or dead-lettered event by event.
    async fn run_batches(self, rx: async_channel::Receiver<Queued>, batching: Batching) {
        let aborted = crate::wake::Quiet::new(self.abort.clone().cancelled_owned());
        tokio::pin!(aborted);
        let mut batch: Vec<Queued> = Vec::with_capacity(batching.max_events);
        loop {
            let first = tokio::select! {
                biased;
                _ = &mut aborted => return,
                q = rx.recv() => match q {
                    Ok(q) => q,
                    Err(_) => return,
                },
            };
            batch.push(first);
            let due = tokio::time::Instant::now() + batching.max_delay;
            while batch.len() < batching.max_events {
                match rx.try_recv() {
                    Ok(q) => batch.push(q),
                    Err(async_channel::TryRecvError::Closed) => break,
                    Err(async_channel::TryRecvError::Empty) => tokio::select! {
                        biased;
                        _ = &mut aborted => return,
                        q = rx.recv() => match q {
                            Ok(q) => batch.push(q),
                            Err(_) => break,
                        },
                        _ = tokio::time::sleep_until(due) => break,
                    },
                }
            }
            if !self.paced(batch.len(), aborted.as_mut()).await {
                return;
            }
            let done = self.deliver_batch(&batch, aborted.as_mut()).await;
            for queued in batch.drain(..) {
                self.finish(&queued, done);
            }
        }
    }

    /// Delivers one batch, or dead-letters its events; false when neither happened
    /// (shutdown).
    async fn deliver_batch(
        &self,
        batch: &[Queued],
        aborted: std::pin::Pin<&mut crate::wake::Quiet<WaitForCancellationFutureOwned>>,
    ) -> bool {
        let events: Vec<&CloudEvent> = batch.iter().map(|q| q.event.as_ref()).collect();
        // In atLeastOnce every event's JSON is the outbox's record.
        let jsons: Option<Vec<&Bytes>> = batch.iter().map(|q| q.json.as_ref()).collect();
        // The batch is as old as its oldest event.
        let age = match self.retry.max_age {
            Some(_) => {
                let oldest = batch.iter().map(|q| q.accepted_ms).min().unwrap_or(0);
                Duration::from_millis(now_ms().saturating_sub(oldest))
            }
            None => Duration::ZERO,
        };
        let attempt = retry(
            &self.retry,
            age,
            aborted,
            || match &jsons {
                Some(jsons) => self.sender.send_batch_json(&events, jsons),
                None => self.sender.send_batch(&events),
            },
            |e, wait| {
                self.metrics.retried.inc_by(batch.len() as u64);
                for src in batch.iter().filter_map(|q| q.src.as_ref()) {
                    src.retried.inc();
                }
                tracing::debug!(
                    watcher = %self.name, events = batch.len(), first = %events[0].id,
                    reason = %e.reason, retry_in_ms = wait.as_millis() as u64,
                    "batch delivery failed; retrying"
                );
            },
        )
        .await;
        match attempt {
            Ok(()) => {
                batch.iter().for_each(|q| self.delivered(q));
                true
            }
            Err(e) if self.abort.is_cancelled() => {
                if self.outbox.is_some() {
                    tracing::info!(
                        watcher = %self.name, events = batch.len(),
                        "shutting down: the batch stays in the outbox for the next start"
                    );
                } else {
                    self.metrics.failed.inc_by(batch.len() as u64);
                    tracing::error!(
                        watcher = %self.name, events = batch.len(), first = %events[0].id,
                        reason = %e.reason, "batch not delivered: abandoned at shutdown"
                    );
                }
                false
            }
            Err(e) => {
                for queued in batch {
                    self.metrics.failed.inc();
                    if let Some(src) = &queued.src {
                        src.failed.inc();
                    }
                    if !self.dead_letter(&queued.event, &e.reason).await {
                        return false;
                    }
                }
                true
            }
        }
    }

    async fn run(self, rx: async_channel::Receiver<Queued>) {
        // One wait for the abort, registered once for every delivery of this worker, and
        // polled only when the abort wakes the worker.
        let aborted = crate::wake::Quiet::new(self.abort.clone().cancelled_owned());
        tokio::pin!(aborted);
        loop {
            let queued = tokio::select! {
                biased;
                _ = &mut aborted => return,
                q = rx.recv() => match q {
                    Ok(q) => q,
                    Err(_) => return,
                },
            };
            if !self.paced(1, aborted.as_mut()).await {
                return;
            }
            let done = self.deliver(&queued, aborted.as_mut()).await;
            self.finish(&queued, done);
        }
    }

    /// Waits for the watcher's rate limit to let `n` events go; false when aborted first.
    /// The events wait holding their slots: past the limit the queue fills and pushes sources
    /// back, and nothing is dropped.
    async fn paced(
        &self,
        n: usize,
        mut aborted: std::pin::Pin<&mut crate::wake::Quiet<WaitForCancellationFutureOwned>>,
    ) -> bool {
        let Some(limiter) = &self.limiter else {
            return true;
        };
        let since = Instant::now();
        for _ in 0..n {
            tokio::select! {
                biased;
                _ = &mut aborted => return false,
                _ = limiter.until_ready() => {}
            }
        }
        self.metrics
            .rate_limited
            .inc_by(since.elapsed().as_secs_f64());
        true
    }

    /// The watcher is through with `queued`: `done` (delivered or dead-lettered) moves its
    /// outbox cursor and tells its tracker; either way its place in the queue is free.
    fn finish(&self, queued: &Queued, done: bool) {
        if done {
            if let (Some(o), Some(seq)) = (&self.outbox, queued.seq) {
                o.done(self.index, seq);
            }
            if let Some(t) = &queued.tracker {
                t.finished_one();
            }
        }
        self.metrics.queue_depth.dec();
    }

    /// Counts `queued` delivered.
    fn delivered(&self, queued: &Queued) {
        self.metrics.delivered.inc();
        if let Some(src) = &queued.src {
            src.delivered.inc();
        }
        self.metrics
            .latency
            .observe(queued.accepted_at.elapsed().as_secs_f64());
    }

    /// Delivers one event, or dead-letters it; false when neither happened (shutdown).
    async fn deliver(
        &self,
        queued: &Queued,
        aborted: std::pin::Pin<&mut crate::wake::Quiet<WaitForCancellationFutureOwned>>,
    ) -> bool {
        let event = &queued.event;
        let age = match self.retry.max_age {
            Some(_) => Duration::from_millis(now_ms().saturating_sub(queued.accepted_ms)),
            None => Duration::ZERO,
        };
        let attempt = deliver_with_retry(
            &self.name,
            self.sender.as_ref(),
            event,
            queued.json.as_ref(),
            &self.retry,
            age,
            aborted,
            |e, wait| {
                self.metrics.retried.inc();
                if let Some(src) = &queued.src {
                    src.retried.inc();
                }
                tracing::debug!(
                    watcher = %self.name, id = %event.id, trace_id = %crate::trace::trace_id(event), reason = %e.reason,
                    retry_in_ms = wait.as_millis() as u64, "delivery failed; retrying"
                );
            },
        )
        .await;
        match attempt {
            Ok(()) => {
                self.delivered(queued);
                true
            }
            Err(e) if self.abort.is_cancelled() => {
                if self.outbox.is_some() {
                    tracing::info!(
                        watcher = %self.name, id = %event.id,
                        "shutting down: the event stays in the outbox for the next start"
                    );
                } else {
                    self.metrics.failed.inc();
                    tracing::error!(
                        watcher = %self.name, id = %event.id, source = %event.source,
                        trace_id = %crate::trace::trace_id(event),
                        reason = %e.reason, "event not delivered: abandoned at shutdown"
                    );
                }
                false
            }
            Err(e) => {
                self.metrics.failed.inc();
                if let Some(src) = &queued.src {
                    src.failed.inc();
                }
                self.dead_letter(event, &e.reason).await
            }
        }
    }

    /// Writes a dead letter, retrying the destination until it takes it or shutdown.
    async fn dead_letter(&self, event: &CloudEvent, reason: &str) -> bool {
        if !self
            .dead_letter
            .write_until_taken(&self.name, event, reason, &self.abort)
            .await
        {
            if self.outbox.is_none() {
                tracing::error!(
                    watcher = %self.name, id = %event.id,
                    event = %String::from_utf8_lossy(&event.to_json()),
                    "dead letter lost at shutdown: the event in full"
                );
            }
            return false;
        }
        self.metrics.dead_lettered.inc();
        // Every dead letter is in its destination and counted; the log says it once in a
        // while, with how many more there were.
        static SENT: Throttle = Throttle::new();
        if let Some(suppressed) = SENT.check() {
            tracing::error!(
                watcher = %self.name, id = %event.id, source = %event.source,
                trace_id = %crate::trace::trace_id(event),
                reason, dead_letter = %self.dead_letter.describe(), suppressed,
                "event not delivered: sent to the dead-letter destination (suppressed: how many more were since the last line)"
            );
        }
        true
    }
}

/// Sends to `dead_letter` what a watcher the gateway no longer has (`orphan`) left pending,
/// with the reason `watcher removed`, then forgets its cursor: no accepted event stays in the
/// outbox with nobody to deliver or account for it.
async fn bury(
    outbox: Arc<Outbox>,
    orphan: outbox::Orphan,
    dead_letter: Arc<DeadLetter>,
    abort: CancellationToken,
) {
    let mut after = orphan.range.from;
    let mut buried = 0u64;
    loop {
        let o = outbox.clone();
        let range = orphan.range;
        let batch =
            match tokio::task::spawn_blocking(move || o.read_segment_records(range, after)).await {
                Ok(Some(b)) => b,
                Ok(None) | Err(_) => break,
            };
        for record in batch {
            after = record.seq + 1;
            outbox.replaying(orphan.index, record.seq);
            if !dead_letter
                .write_until_taken(&orphan.name, &record.event, "watcher removed", &abort)
                .await
            {
                return;
            }
            outbox.done(orphan.index, record.seq);
            buried += 1;
        }
    }
    if buried > 0 {
        tracing::warn!(
            watcher = %orphan.name, events = buried, dead_letter = %dead_letter.describe(),
            "the pending events of a removed watcher were written to the dead letters"
        );
    }
    outbox.retire(orphan.index);
}

// Retries: capped exponential backoff with jitter (backon). Only failures that another
// attempt may cure are retried: connection errors, timeouts, 408, 429 and 5xx.

impl RetryPolicy {
    /// The waits between attempts: capped exponential backoff with jitter.
    fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.initial_backoff)
            .with_max_delay(self.max_backoff.max(self.initial_backoff))
            .with_max_times(self.max_attempts.saturating_sub(1))
            .with_jitter()
    }
}

/// Delivers `event` through `sender`, retrying per `policy` until it succeeds, fails for good or
/// runs out of attempts; `on_retry` hears of every retry. For an event accepted `age` ago: with
/// `policy.max_age`, retries stop
/// once the event is that old, and the last failure is returned. It gives up when `aborted`
/// completes (a worker passes one cancellation future it keeps for all its deliveries, rather
/// than registering a new one per event). `json`, the event's JSON event format when it is
/// already written, goes to [`Sender::send_json`].
#[allow(clippy::too_many_arguments)] // what one delivery needs; each caller has them apart
pub(crate) async fn deliver_with_retry(
    watcher: &str,
    sender: &dyn Sender,
    event: &CloudEvent,
    json: Option<&Bytes>,
    policy: &RetryPolicy,
    age: Duration,
    aborted: impl Future<Output = ()>,
    on_retry: impl FnMut(&DeliveryError, Duration),
) -> Result<(), DeliveryError> {
    // Each attempt is a `deliver` span, child of the event's trace context, whose own context
    // the sender passes on (an HTTP watcher gets it as `traceparent`).
    let parent = crate::trace::enabled()
        .then(|| crate::trace::of_event(event))
        .flatten();
    let mut attempts: i64 = 0;
    let attempt = || {
        attempts += 1;
        let span = crate::trace::Spanned::start(
            "deliver",
            opentelemetry::trace::SpanKind::Client,
            parent.as_ref(),
            || {
                vec![
                    opentelemetry::KeyValue::new("portico.watcher", watcher.to_string()),
                    opentelemetry::KeyValue::new("portico.attempt", attempts),
                    opentelemetry::KeyValue::new("cloudevents.event_id", event.id.clone()),
                ]
            },
        );
        let sent = match json {
            Some(json) => sender.send_json(event, json),
            None => sender.send(event),
        };
        async move {
            let r = span.around(sent).await;
            if let Err(e) = &r {
                span.fail(&e.reason);
            }
            r
        }
    };
    retry(policy, age, aborted, attempt, on_retry).await
}

/// Makes `attempt` until it succeeds, fails for good or runs out of attempts per `policy`;
/// `on_retry` hears of every retry. For what was accepted `age` ago: with `policy.max_age`,
/// retries stop once it is that old, and the last failure is returned. It gives up when
/// `aborted` completes.
pub(crate) async fn retry<Fut>(
    policy: &RetryPolicy,
    age: Duration,
    aborted: impl Future<Output = ()>,
    mut attempt: impl FnMut() -> Fut,
    mut on_retry: impl FnMut(&DeliveryError, Duration),
) -> Result<(), DeliveryError>
where
    Fut: Future<Output = Result<(), DeliveryError>>,
{
    let expired = async {
        match policy.max_age {
            Some(max) => tokio::time::sleep(max.saturating_sub(age)).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(aborted, expired);
    let gone = || DeliveryError::permanent("abandoned: the gateway is shutting down");
    let too_old = |last: Option<&DeliveryError>| {
        DeliveryError::permanent(format!(
            "not delivered within maxAge {}{}",
            humantime::format_duration(policy.max_age.unwrap_or_default()),
            last.map(|e| format!(" (last failure: {})", e.reason))
                .unwrap_or_default()
        ))
    };
    // The waits between attempts, made at the first failure: nearly every event is delivered
    // by its first attempt, which then costs no more than the attempt itself.
    let mut backoff = None;
    let mut last = None;
    loop {
        let failure = tokio::select! {
            biased;
            _ = &mut aborted => return Err(gone()),
            r = attempt() => match r {
                Ok(()) => return Ok(()),
                Err(e) => e,
            },
            _ = &mut expired => return Err(too_old(last.as_ref())),
        };
        if !failure.retryable {
            return Err(failure);
        }
        let Some(wait) = backoff
            .get_or_insert_with(|| policy.backoff().build())
            .next()
        else {
            return Err(failure);
        };
        on_retry(&failure, wait);
        // Past `maxAge`, no retry: the expiry is checked before the wait's end.
        tokio::select! {
            biased;
            _ = &mut aborted => return Err(gone()),
            _ = &mut expired => return Err(too_old(Some(&failure))),
            _ = tokio::time::sleep(wait) => {}
        }
        last = Some(failure);
    }
}

#[cfg(test)]
mod tests;
