//! Helpers to test an executor without a gateway file, an HTTP server or a watcher: a
//! [`Harness`] gives contexts whose events land in a channel, and the status board to check
//! the nodes. The built-in gateways' tests use it; so can yours.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::cloudevents::CloudEvent;
use crate::configuration::Configuration;
use crate::dispatch::{DeliveryError, Dispatcher, QueueSettings, Sender};
use crate::executor::{BoxFuture, ConfigContext, GatewayConfig, SharedExecutor};
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::status::{Node, Phase, StatusBoard};
use crate::supervisor::{RestartPolicy, Supervisor};
use crate::transform::Transformer;

struct Capture(mpsc::UnboundedSender<CloudEvent>);

impl Sender for Capture {
    fn send<'a>(&'a self, event: &'a CloudEvent) -> BoxFuture<'a, Result<(), DeliveryError>> {
        let r = self
            .0
            .send(event.clone())
            .map_err(|_| DeliveryError::permanent("the harness is gone"));
        Box::pin(std::future::ready(r))
    }
}

/// A gateway in a box: one capturing watcher, a status board, contexts on demand.
pub struct Harness {
    /// The gateway.
    pub gateway: GatewayConfig,
    /// Its nodes.
    pub board: Arc<StatusBoard>,
    /// Its metrics.
    pub metrics: Arc<Metrics>,
    events: mpsc::UnboundedReceiver<CloudEvent>,
}

impl Harness {
    /// A gateway `name` of type `gateway_type` whose events are captured.
    pub fn new(name: &str, gateway_type: &str) -> Harness {
        Self::with_queue(name, gateway_type, QueueSettings::default())
    }

    /// The same with the capturing watcher's queue settings given.
    pub fn with_queue(name: &str, gateway_type: &str, queue: QueueSettings) -> Harness {
        let metrics = Metrics::new();
        let (tx, events) = mpsc::unbounded_channel();
        let dispatcher = Dispatcher::start(
            vec![("capture".to_string(), Arc::new(Capture(tx)), queue)],
            &metrics,
        );
        let pipeline = Pipeline::new(
            Transformer::new(name, gateway_type, "1.0"),
            dispatcher,
            metrics.clone(),
        );
        let board = Arc::new(StatusBoard::new(metrics.clone(), Vec::new()));
        Harness {
            gateway: GatewayConfig::new(name, "default", pipeline),
            board,
            metrics,
            events,
        }
    }

    /// A context for configuration `src` → `value`.
    pub fn context(&self, src: &str, value: &str) -> ConfigContext {
        ConfigContext::new(
            Configuration::new(src, value),
            self.gateway.clone(),
            self.board.clone(),
        )
    }

    /// A supervisor running `executor` in this gateway, with quick restarts.
    pub fn supervisor(&self, executor: SharedExecutor) -> Supervisor {
        Supervisor::new(executor, self.gateway.clone(), self.board.clone())
            .with_restart_policy(RestartPolicy {
                initial: Duration::from_millis(50),
                max: Duration::from_millis(500),
            })
            .with_stop_grace(Duration::from_secs(5))
    }

    /// The next delivered event, or `None` after `timeout`.
    pub async fn next_event(&mut self, timeout: Duration) -> Option<CloudEvent> {
        tokio::time::timeout(timeout, self.events.recv())
            .await
            .ok()
            .flatten()
    }

    /// An event already delivered, without waiting.
    pub fn try_next_event(&mut self) -> Option<CloudEvent> {
        self.events.try_recv().ok()
    }

    /// The node of configuration `src`.
    pub fn node(&self, src: &str) -> Option<Node> {
        self.board.nodes().into_iter().find(|n| n.name == src)
    }

    /// Waits until the node of `src` is in `phase` (polling), returning it, or `None` after
    /// `timeout`.
    pub async fn wait_for_phase(&self, src: &str, phase: Phase, timeout: Duration) -> Option<Node> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(n) = self.node(src).filter(|n| n.phase == phase) {
                return Some(n);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
