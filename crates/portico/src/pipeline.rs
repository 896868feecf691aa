//! The pipeline: where every processor hands its events. Transform, then accept for delivery.
//!
//! Core executors reach it through their `ConfigContext`; the ingest API of the transformer,
//! the gRPC and HTTP processor clients call it directly. It counts what comes in and what is
//! refused, and answers only once the dispatcher has accepted the event, so a source can
//! acknowledge its own sender at the right moment.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::cloudevents::CloudEvent;
use crate::dispatch::{Delivered, Dispatcher};
use crate::event::Event;
use crate::executor::{Admission, DispatchError};
use crate::metrics::{Metrics, SrcDelivery, SrcMetrics};
use crate::transform::Transformer;

/// How long HTTP callers (ingest API, webhooks, the HTTP style's `/event`) wait for room by
/// default before they get 503.
pub const DEFAULT_ADMISSION_WAIT: Duration = Duration::from_millis(500);

/// Transformer and dispatcher of one gateway.
pub struct Pipeline {
    transformer: Transformer,
    dispatcher: Dispatcher,
    metrics: Arc<Metrics>,
    /// Milliseconds HTTP callers wait for room before 503 (0: refused at once).
    admission_wait_ms: AtomicU64,
}

impl Pipeline {
    /// A pipeline from its parts.
    pub fn new(
        transformer: Transformer,
        dispatcher: Dispatcher,
        metrics: Arc<Metrics>,
    ) -> Arc<Pipeline> {
        Arc::new(Pipeline {
            transformer,
            dispatcher,
            metrics,
            admission_wait_ms: AtomicU64::new(DEFAULT_ADMISSION_WAIT.as_millis() as u64),
        })
    }

    /// Sets how long HTTP callers wait for room before they get 503 (zero: at once).
    pub fn set_admission_wait(&self, wait: Duration) {
        self.admission_wait_ms.store(
            wait.as_millis().min(u64::MAX as u128) as u64,
            Ordering::Relaxed,
        );
    }

    /// The admission of a caller that can be told 503 (in every delivery mode): wait for
    /// room at most the admission wait, so that a burst is slowed down rather than refused.
    pub fn briefly(&self) -> Admission<'static> {
        let ms = self.admission_wait_ms.load(Ordering::Relaxed);
        if ms == 0 {
            Admission::NoWait
        } else {
            Admission::Until(tokio::time::Instant::now() + Duration::from_millis(ms))
        }
    }

    /// The gateway's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The dispatcher.
    pub fn dispatcher(&self) -> &Dispatcher {
        &self.dispatcher
    }

    /// Transforms `event` of configuration `src` and waits until it is accepted.
    pub async fn dispatch(
        &self,
        src: &SrcMetrics,
        event: Event,
        admission: Admission<'_>,
    ) -> Result<(), DispatchError> {
        let ce = self.transform(src, event)?;
        self.accept(&src.src, src.delivery.clone(), ce, admission)
            .await
    }

    /// [`Pipeline::dispatch`] for a source that acks its events itself: what it returns
    /// resolves once the event is delivered in `ackAfterDelivery`, at once otherwise.
    pub async fn dispatch_tracked(
        &self,
        src: &SrcMetrics,
        event: Event,
        admission: Admission<'_>,
    ) -> Result<Delivered, DispatchError> {
        let ce = self.transform(src, event)?;
        let r = self
            .dispatcher
            .accept_tracked(ce, admission, Some(src.delivery.clone()))
            .await;
        if let Err(e) = &r {
            self.count_refusal(&src.src, e);
        }
        r
    }

    fn transform(&self, src: &SrcMetrics, event: Event) -> Result<CloudEvent, DispatchError> {
        src.received.inc();
        match self.transformer.transform(&src.src, event) {
            Ok(ce) => {
                src.transformed.inc();
                Ok(ce)
            }
            Err(reason) => {
                self.metrics.reject(&src.src, "invalid");
                Err(DispatchError::Invalid(reason))
            }
        }
    }

    /// Accepts a CloudEvent that is already made (a CloudEvent posted to the ingest API).
    pub async fn relay(
        &self,
        src: &str,
        ce: CloudEvent,
        admission: Admission<'_>,
    ) -> Result<(), DispatchError> {
        let delivery = self.metrics.src_delivery(src);
        self.accept(src, delivery, ce, admission).await
    }

    async fn accept(
        &self,
        src: &str,
        delivery: SrcDelivery,
        ce: CloudEvent,
        admission: Admission<'_>,
    ) -> Result<(), DispatchError> {
        let r = self
            .dispatcher
            .accept_for(ce, admission, Some(delivery))
            .await;
        if let Err(e) = &r {
            self.count_refusal(src, e);
        }
        r
    }

    fn count_refusal(&self, src: &str, e: &DispatchError) {
        let reason = match e {
            DispatchError::Full { .. } => "full",
            DispatchError::Invalid(_) => "invalid",
            DispatchError::Stopped => "stopped",
        };
        self.metrics.reject(src, reason);
    }
}
