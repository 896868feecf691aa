//! The dispatcher: one bounded queue and a set of senders per watcher (SPEC §7).
//!
//! `accept` takes a slot in every watcher's queue before it enqueues anything, so an event is
//! either accepted for all watchers or refused (`Full`) for all; the slot is given back when
//! that watcher is done with the event (delivered, or given up on after its retries). A slow
//! or dead watcher therefore fills only its own queue and never delays the others until that
//! queue is full; then sources are pushed back rather than memory growing.
//!
//! Each watcher's senders pull from its queue and deliver with retries ([`retry`]): capped
//! exponential backoff with jitter on connection errors, 408, 429 and 5xx. Where the durable
//! outbox comes in, `accept` writes to it first and the queues are fed from it.

pub mod http;
pub mod retry;
pub mod stdout;
pub mod watchers;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cloudevents::CloudEvent;
use crate::executor::{Admission, BoxFuture, DispatchError};
use crate::metrics::{Metrics, SrcDelivery, WatcherMetrics};

pub use retry::RetryPolicy;
pub use watchers::{WatcherDef, resolve_watchers, watcher_problems};

/// Why one delivery attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryError {
    /// True for connection errors, timeouts, 408, 429 and 5xx.
    pub retryable: bool,
    /// What happened.
    pub reason: String,
}

impl DeliveryError {
    /// A failure worth another attempt.
    pub fn retryable(reason: impl Into<String>) -> DeliveryError {
        DeliveryError {
            retryable: true,
            reason: reason.into(),
        }
    }

    /// A failure that another attempt would repeat (a 400, a bad URL).
    pub fn permanent(reason: impl Into<String>) -> DeliveryError {
        DeliveryError {
            retryable: false,
            reason: reason.into(),
        }
    }
}

/// A destination of CloudEvents: one attempt to hand over one event.
pub trait Sender: Send + Sync + 'static {
    /// Delivers `event` once.
    fn send<'a>(&'a self, event: &'a CloudEvent) -> BoxFuture<'a, Result<(), DeliveryError>>;
}

/// Tuning of one watcher's queue and senders.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueSettings {
    /// Events waiting or in flight before sources are pushed back.
    pub queue_size: usize,
    /// Deliveries in flight at once.
    pub concurrency: usize,
    /// Retries.
    pub retry: RetryPolicy,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            queue_size: 4096,
            concurrency: 32,
            retry: RetryPolicy::default(),
        }
    }
}

struct Queued {
    event: Arc<CloudEvent>,
    src: Option<SrcDelivery>,
    accepted_at: Instant,
    _slot: OwnedSemaphorePermit,
}

struct WatcherQueue {
    name: String,
    slots: Arc<Semaphore>,
    tx: async_channel::Sender<Queued>,
    metrics: WatcherMetrics,
}

/// Fans accepted events out to every watcher.
pub struct Dispatcher {
    queues: Vec<WatcherQueue>,
    tasks: TaskTracker,
    abort: CancellationToken,
}

impl Dispatcher {
    /// Starts the senders of every watcher.
    pub fn start(
        watchers: Vec<(String, Arc<dyn Sender>, QueueSettings)>,
        metrics: &Metrics,
    ) -> Dispatcher {
        let tasks = TaskTracker::new();
        let abort = CancellationToken::new();
        let mut queues = Vec::with_capacity(watchers.len());
        for (name, sender, settings) in watchers {
            let (tx, rx) = async_channel::unbounded::<Queued>();
            let wm = metrics.for_watcher(&name);
            for _ in 0..settings.concurrency.max(1) {
                let worker = Worker {
                    name: name.clone(),
                    sender: sender.clone(),
                    retry: settings.retry.clone(),
                    metrics: wm.clone(),
                    abort: abort.clone(),
                };
                tasks.spawn(worker.run(rx.clone()));
            }
            queues.push(WatcherQueue {
                name,
                slots: Arc::new(Semaphore::new(settings.queue_size.max(1))),
                tx,
                metrics: wm,
            });
        }
        tasks.close();
        Dispatcher {
            queues,
            tasks,
            abort,
        }
    }

    /// The watchers' names.
    pub fn watcher_names(&self) -> Vec<&str> {
        self.queues.iter().map(|q| q.name.as_str()).collect()
    }

    /// Accepts an event for every watcher, or for none.
    pub async fn accept(
        &self,
        event: CloudEvent,
        admission: Admission<'_>,
    ) -> Result<(), DispatchError> {
        self.accept_for(event, admission, None).await
    }

    /// [`Dispatcher::accept`], counting what becomes of the event in its configuration's
    /// delivery counters too.
    pub async fn accept_for(
        &self,
        event: CloudEvent,
        admission: Admission<'_>,
        src: Option<SrcDelivery>,
    ) -> Result<(), DispatchError> {
        let mut slots = Vec::with_capacity(self.queues.len());
        for q in &self.queues {
            let slot = match admission {
                Admission::NoWait => match q.slots.clone().try_acquire_owned() {
                    Ok(p) => p,
                    Err(tokio::sync::TryAcquireError::NoPermits) => {
                        return Err(DispatchError::Full {
                            retry_after: Duration::from_secs(1),
                        });
                    }
                    Err(tokio::sync::TryAcquireError::Closed) => {
                        return Err(DispatchError::Stopped);
                    }
                },
                Admission::Wait(stop) => {
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
            slots.push(slot);
        }
        let event = Arc::new(event);
        let now = Instant::now();
        for (q, slot) in self.queues.iter().zip(slots) {
            let queued = Queued {
                event: event.clone(),
                src: src.clone(),
                accepted_at: now,
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
    /// `timeout`, abandons the rest (their retries stop) and says how many were left.
    pub async fn drain(&self, timeout: Duration) -> usize {
        for q in &self.queues {
            q.slots.close();
            q.tx.close();
        }
        if tokio::time::timeout(timeout, self.tasks.wait())
            .await
            .is_err()
        {
            let left: usize = self.queues.iter().map(|q| q.tx.len()).sum();
            tracing::warn!(
                left,
                "drain timeout: abandoning events still queued or being retried"
            );
            self.abort.cancel();
            self.tasks.wait().await;
            return left;
        }
        0
    }
}

struct Worker {
    name: String,
    sender: Arc<dyn Sender>,
    retry: RetryPolicy,
    metrics: WatcherMetrics,
    abort: CancellationToken,
}

impl Worker {
    async fn run(self, rx: async_channel::Receiver<Queued>) {
        loop {
            let queued = tokio::select! {
                biased;
                _ = self.abort.cancelled() => return,
                q = rx.recv() => match q {
                    Ok(q) => q,
                    Err(_) => return,
                },
            };
            self.deliver(&queued).await;
            self.metrics.queue_depth.dec();
        }
    }

    async fn deliver(&self, queued: &Queued) {
        let event = &queued.event;
        let attempt = retry::deliver_with_retry(
            self.sender.as_ref(),
            event,
            &self.retry,
            &self.abort,
            |e, wait| {
                self.metrics.retried.inc();
                if let Some(src) = &queued.src {
                    src.retried.inc();
                }
                tracing::debug!(
                    watcher = %self.name, id = %event.id, reason = %e.reason,
                    retry_in_ms = wait.as_millis() as u64, "delivery failed; retrying"
                );
            },
        )
        .await;
        match attempt {
            Ok(()) => {
                self.metrics.delivered.inc();
                if let Some(src) = &queued.src {
                    src.delivered.inc();
                }
                self.metrics
                    .latency
                    .observe(queued.accepted_at.elapsed().as_secs_f64());
            }
            Err(e) => {
                self.metrics.failed.inc();
                if let Some(src) = &queued.src {
                    src.failed.inc();
                }
                tracing::error!(
                    watcher = %self.name, id = %event.id, source = %event.source,
                    reason = %e.reason, "event not delivered: giving up on this watcher"
                );
            }
        }
    }
}
