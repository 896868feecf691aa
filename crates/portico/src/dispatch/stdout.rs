//! The stdout watcher: one structured CloudEvent JSON object a line, for a gateway with no
//! watchers (a laptop, a pipe into `jq`).

use std::io::Write;

use super::Sender;
use crate::cloudevents::CloudEvent;
use crate::error::{BoxFuture, DeliveryError};

/// Writes events to stdout.
#[derive(Debug, Default)]
pub(crate) struct StdoutSender;

impl Sender for StdoutSender {
    fn send<'a>(&'a self, event: &'a CloudEvent) -> BoxFuture<'a, Result<(), DeliveryError>> {
        let mut line = event.to_json();
        line.push(b'\n');
        let r = std::io::stdout()
            .lock()
            .write_all(&line)
            .map_err(|e| DeliveryError::retryable(format!("cannot write to stdout: {e}")));
        Box::pin(std::future::ready(r))
    }
}
