//! The pipeline: where every processor hands its events. Transform, then accept for delivery.
//!
//! Core executors reach it through their `ConfigContext`; the ingest API of the transformer,
//! the gRPC and HTTP processor clients call it directly. It counts what comes in and what is
//! refused, and answers only once the dispatcher has accepted the event, so a source can
//! acknowledge its own sender at the right moment.

use std::sync::Arc;

use crate::cloudevents::CloudEvent;
use crate::dispatch::{Delivered, Dispatcher};
use crate::event::Event;
use crate::executor::{Admission, DispatchError};
use crate::metrics::{Metrics, SrcDelivery, SrcMetrics};
use crate::transform::Transformer;

/// Transformer and dispatcher of one gateway.
pub struct Pipeline {
    transformer: Transformer,
    dispatcher: Dispatcher,
    metrics: Arc<Metrics>,
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
        })
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
