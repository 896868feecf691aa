//! Helpers to test an executor without a gateway file, an HTTP server or a watcher: a
//! [`Harness`] gives contexts whose events land in a channel, and the status board to check
//! the nodes. The built-in gateways' tests use it; so can yours.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::cloudevents::CloudEvent;
use crate::configuration::Configuration;
use crate::dispatch::{
    DeadLetter, Delivery, DeliveryError, Dispatcher, QueueSettings, Sender, WatcherEntry,
};
use crate::executor::{BoxFuture, ConfigContext, GatewayConfig, SharedExecutor};
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::status::{Node, Phase, StatusBoard};
use crate::supervisor::{RestartPolicy, Supervisor};
use crate::transform::Transformer;

struct Capture {
    tx: mpsc::UnboundedSender<CloudEvent>,
    /// False while the harness holds deliveries back ([`Harness::pause`]).
    open: tokio::sync::watch::Receiver<bool>,
}

impl Sender for Capture {
    fn send<'a>(&'a self, event: &'a CloudEvent) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let mut open = self.open.clone();
            if open.wait_for(|o| *o).await.is_err() {
                return Err(DeliveryError::permanent("the harness is gone"));
            }
            self.tx
                .send(event.clone())
                .map_err(|_| DeliveryError::permanent("the harness is gone"))
        })
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
    open: tokio::sync::watch::Sender<bool>,
}

impl Harness {
    /// A gateway `name` of type `gateway_type` whose events are captured.
    pub fn new(name: &str, gateway_type: &str) -> Harness {
        Self::with_queue(name, gateway_type, QueueSettings::default())
    }

    /// The same with the capturing watcher's queue settings given.
    pub fn with_queue(name: &str, gateway_type: &str, queue: QueueSettings) -> Harness {
        Self::build(name, gateway_type, queue, None)
    }

    /// The same in delivery mode `delivery` (`atMostOnce`, or an outbox in a directory of the
    /// test's), its dead letters written to the log.
    pub fn with_delivery(
        name: &str,
        gateway_type: &str,
        queue: QueueSettings,
        delivery: &Delivery,
    ) -> Harness {
        Self::build(name, gateway_type, queue, Some(delivery))
    }

    fn build(
        name: &str,
        gateway_type: &str,
        queue: QueueSettings,
        delivery: Option<&Delivery>,
    ) -> Harness {
        let metrics = Metrics::new();
        let (tx, events) = mpsc::unbounded_channel();
        let (open, open_rx) = tokio::sync::watch::channel(true);
        let capture: Arc<dyn Sender> = Arc::new(Capture { tx, open: open_rx });
        let dispatcher = match delivery {
            None => Dispatcher::start(vec![("capture".to_string(), capture, queue)], &metrics),
            Some(d) => Dispatcher::start_with(
                vec![WatcherEntry {
                    name: "capture".to_string(),
                    sender: capture,
                    queue,
                    dead_letter: Arc::new(DeadLetter::Log),
                }],
                &metrics,
                d,
            )
            .unwrap_or_else(|e| panic!("cannot start the dispatcher: {e}")),
        };
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
            open,
        }
    }

    /// Holds deliveries back: the capturing watcher takes nothing until [`Harness::resume`],
    /// so its queue fills as a slow watcher's would.
    pub fn pause(&self) {
        self.open.send_replace(false);
    }

    /// Lets held deliveries through again.
    pub fn resume(&self) {
        self.open.send_replace(true);
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
