//! Handles on internals for the criterion micro-benchmarks in `benches/` (the `bench`
//! feature). Not part of the API: thin wrappers that let a benchmark time one part alone.

use std::path::PathBuf;
use std::sync::Arc;

use crate::cloudevents::CloudEvent;
use crate::error::{Admission, DispatchError};
use crate::event::Event;
use crate::metrics::OutboxMetrics;

/// The transformer of one gateway.
pub struct Transformer(crate::pipeline::Transformer);

impl Transformer {
    /// The transformer of gateway `gateway` of type `ty`, version `version`.
    pub fn new(gateway: &str, ty: &str, version: &str) -> Transformer {
        Transformer(crate::pipeline::Transformer::new(gateway, ty, version))
    }

    /// The CloudEvent of `event` of configuration `src`.
    pub fn transform(&self, src: &str, event: Event) -> Result<CloudEvent, DispatchError> {
        self.0.transform(src, event)
    }
}

/// Gives `ce` the trace context every accepted event carries (a new one when it came with
/// none), as the pipeline does when spans are not exported.
pub fn trace_context(ce: &mut CloudEvent) {
    crate::trace::ensure_context(ce, &crate::trace::Spanned::default());
}

/// A durable outbox with one watcher that takes every event at once.
pub struct Outbox(Arc<crate::dispatch::Outbox>);

impl Outbox {
    /// Opens (or creates) the outbox in `dir`.
    pub fn open(dir: PathBuf) -> Result<Outbox, String> {
        let opts = crate::dispatch::OutboxOptions {
            dir,
            max_bytes: 1 << 30,
        };
        crate::dispatch::Outbox::open(&opts, &["sink".to_string()], OutboxMetrics::default())
            .map(|(outbox, _)| Outbox(outbox))
            .map_err(|e| e.to_string())
    }

    /// Appends `event` durably, and marks it delivered.
    pub async fn append(&self, event: &CloudEvent) -> Result<(), DispatchError> {
        let (seq, _json) = self.0.append(event, Admission::NoWait).await?;
        self.0.done(0, seq);
        Ok(())
    }

    /// Lets finished segments go.
    pub fn housekeep_soon(&self) {
        self.0.housekeep_soon();
    }

    /// Saves the cursors and stops the writer.
    pub fn close(&self) {
        self.0.close();
    }
}
