//! A gateway in a box, to test an executor without a gateway file, an HTTP server or a
//! watcher: a [`Harness`] gives contexts and supervisors whose events land in a channel, and
//! the nodes to check. The built-in gateways' tests use it; so can yours.
//!
//! ```
//! # async fn example() {
//! use std::time::Duration;
//! use portico::testing::Harness;
//! # struct MyExecutor;
//! # impl portico::ConfigExecutor for MyExecutor {
//! #     type Config = ();
//! #     fn validate(&self, _: &portico::ConfigContext) -> Result<(), portico::ConfigError> { Ok(()) }
//! #     async fn start_config(&self, ctx: portico::ConfigContext, (): ()) -> Result<(), portico::ConfigError> {
//! #         ctx.running(); ctx.dispatch("tick").await?; ctx.stopped().await; Ok(())
//! #     }
//! # }
//!
//! let mut h = Harness::new("my-gateway", "my-type");
//! let mut configurations = h.supervisor(std::sync::Arc::new(MyExecutor));
//! configurations.apply_pairs(&[("first", "every: 1")]).await;
//! let event = h.next_event(Duration::from_secs(5)).await.expect("an event");
//! assert_eq!(event.source, "my-gateway/first");
//! configurations.stop_all().await;
//! # }
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::cloudevents::CloudEvent;
use crate::configuration::Configuration;
use crate::dispatch::{
    DeadLetter, Delivery as Mode, Dispatcher, OutboxOptions, Sender, WatcherEntry,
};
use crate::error::{BoxFuture, ConfigError, DeliveryError};
use crate::executor::{ConfigContext, GatewayConfig, SharedExecutor};
use crate::metrics::Metrics;
use crate::pipeline::{Pipeline, Transformer};
use crate::spec::watchers::{QueueSettings, RetryPolicy};
use crate::status::{Node, Phase, StatusBoard};
use crate::supervisor::RestartPolicy;

pub use crate::supervisor::Supervisor;

/// Parses a configuration value (YAML or JSON) into `T` as [`ConfigContext::parse`] does.
pub fn parse_config<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, ConfigError> {
    crate::spec::parse_config(text)
}

/// How a harness keeps accepted events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Delivery {
    /// In memory, and sources wait for room (the default).
    #[default]
    Memory,
    /// The `atMostOnce` mode: in memory, sources that cannot be slowed down drop events.
    AtMostOnce,
    /// The `atLeastOnce` mode, with the outbox in this directory.
    AtLeastOnce(PathBuf),
    /// The `ackAfterDelivery` mode, with the outbox in this directory.
    AckAfterDelivery(PathBuf),
}

/// The capturing watcher: takes events into a channel, holds them while paused, fails (with a
/// retryable failure) while down.
struct Capture {
    tx: mpsc::UnboundedSender<CloudEvent>,
    open: tokio::sync::watch::Receiver<bool>,
    down: Arc<AtomicBool>,
}

impl Sender for Capture {
    fn send<'a>(&'a self, event: &'a CloudEvent) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let mut open = self.open.clone();
            if open.wait_for(|o| *o).await.is_err() {
                return Err(DeliveryError::permanent("the harness is gone"));
            }
            if self.down.load(Ordering::SeqCst) {
                return Err(DeliveryError::retryable("the watcher is down"));
            }
            self.tx
                .send(event.clone())
                .map_err(|_| DeliveryError::permanent("the harness is gone"))
        })
    }
}

/// How to build a [`Harness`]: see [`Harness::builder`].
#[derive(Debug, Clone)]
pub struct HarnessBuilder {
    name: String,
    gateway_type: String,
    queue: QueueSettings,
    delivery: Delivery,
}

impl HarnessBuilder {
    /// Events the watcher holds (waiting or in flight) before sources are pushed back
    /// (default 4096).
    pub fn queue_size(mut self, n: usize) -> Self {
        self.queue.queue_size = n.max(1);
        self
    }

    /// Deliveries in flight at once (default 32).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.queue.concurrency = n.max(1);
        self
    }

    /// A failed delivery is retried for ever, 20 to 100 ms apart (the default is the
    /// gateway's: 10 attempts, then a dead letter in the log).
    pub fn patient(mut self) -> Self {
        self.queue.retry = RetryPolicy {
            max_attempts: usize::MAX,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(100),
            max_age: None,
        };
        self
    }

    /// How accepted events are kept.
    pub fn delivery(mut self, delivery: Delivery) -> Self {
        self.delivery = delivery;
        self
    }

    /// The harness. Panics when the outbox cannot be opened (a test's directory).
    pub fn build(self) -> Harness {
        let metrics = Metrics::new();
        let (tx, events) = mpsc::unbounded_channel();
        let (open, open_rx) = tokio::sync::watch::channel(true);
        let down = Arc::new(AtomicBool::new(false));
        let capture: Arc<dyn Sender> = Arc::new(Capture {
            tx,
            open: open_rx,
            down: down.clone(),
        });
        let outbox = |dir: PathBuf| OutboxOptions {
            dir,
            max_bytes: 1 << 30,
        };
        let mode = match self.delivery {
            Delivery::Memory => None,
            Delivery::AtMostOnce => Some(Mode::AtMostOnce),
            Delivery::AtLeastOnce(dir) => Some(Mode::AtLeastOnce(outbox(dir))),
            Delivery::AckAfterDelivery(dir) => Some(Mode::AckAfterDelivery(outbox(dir))),
        };
        let dispatcher = match mode {
            None => Dispatcher::start(vec![("capture".to_string(), capture, self.queue)], &metrics),
            Some(mode) => Dispatcher::start_with(
                vec![WatcherEntry {
                    name: "capture".to_string(),
                    sender: capture,
                    queue: self.queue,
                    dead_letter: Arc::new(DeadLetter::Log),
                    moved_from: None,
                }],
                &metrics,
                &mode,
            )
            .unwrap_or_else(|e| panic!("cannot start the dispatcher: {e}")),
        };
        let pipeline = Pipeline::new(
            Transformer::new(&self.name, &self.gateway_type, "1.0"),
            dispatcher,
            metrics.clone(),
        );
        Harness {
            gateway: GatewayConfig::new(&self.name, "default", pipeline),
            board: Arc::new(StatusBoard::new(metrics.clone(), Vec::new())),
            metrics,
            events,
            open,
            down,
        }
    }
}

/// A gateway in a box: one capturing watcher, the nodes, contexts and supervisors on demand.
pub struct Harness {
    gateway: GatewayConfig,
    board: Arc<StatusBoard>,
    metrics: Arc<Metrics>,
    events: mpsc::UnboundedReceiver<CloudEvent>,
    open: tokio::sync::watch::Sender<bool>,
    down: Arc<AtomicBool>,
}

impl Harness {
    /// A gateway `name` of type `gateway_type` whose events are captured.
    pub fn new(name: &str, gateway_type: &str) -> Harness {
        Harness::builder(name, gateway_type).build()
    }

    /// A harness to set up before it is built.
    pub fn builder(name: &str, gateway_type: &str) -> HarnessBuilder {
        HarnessBuilder {
            name: name.to_string(),
            gateway_type: gateway_type.to_string(),
            queue: QueueSettings::default(),
            delivery: Delivery::default(),
        }
    }

    /// The gateway.
    pub fn gateway(&self) -> &GatewayConfig {
        &self.gateway
    }

    /// Gives the gateway a Kubernetes client (a fake API server's), as it has in a cluster;
    /// contexts and supervisors made afterwards see it.
    pub fn set_kube_client(&mut self, client: kube::Client) {
        self.gateway = self.gateway.clone().with_kube_client(client);
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

    /// Takes the watcher down (every delivery fails, retryably) or brings it back up.
    pub fn watcher_up(&self, up: bool) {
        self.down.store(!up, Ordering::SeqCst);
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

    /// Every node, ordered by name.
    pub fn nodes(&self) -> Vec<Node> {
        self.board.nodes()
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

    /// The gateway's metrics, in the Prometheus text format `GET /metrics` serves.
    pub fn metrics_text(&self) -> String {
        self.metrics.encode()
    }

    /// The value of one metric sample: the sum of every line of `name` whose labels include
    /// every `label="value"` pair of `labels` (0 when there is none).
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        self.metrics_text()
            .lines()
            .filter(|l| {
                l.split(['{', ' ']).next() == Some(name) && wanted.iter().all(|w| l.contains(w))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

/// A port that was free a moment ago, for a test whose configuration or server must name its
/// port before anything listens on it (a webhook configuration, a user server's port that
/// Portico is told of). A port the kernel hands out for a bind to port 0 could go to another
/// test's server in between; this one is picked at random below the kernel's ephemeral
/// range (`net.ipv4.ip_local_port_range`), where only another pick like it could land.
pub fn free_port() -> u16 {
    use std::hash::BuildHasher;
    const LOWEST: u16 = 10_000;
    let ephemeral_from = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    if ephemeral_from > LOWEST + 1000 {
        let random = std::collections::hash_map::RandomState::new();
        let span = u64::from(ephemeral_from - LOWEST);
        for attempt in 0..100u32 {
            let port = LOWEST + (random.hash_one(attempt) % span) as u16;
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

#[cfg(test)]
mod port_tests {
    #[test]
    fn a_free_port_is_below_the_ephemeral_range_and_can_be_bound() {
        let ephemeral_from: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|r| r.split_whitespace().next()?.parse().ok())
            .unwrap_or(32768);
        let ports: Vec<u16> = (0..20).map(|_| super::free_port()).collect();
        for &port in &ports {
            if ephemeral_from > 11_000 {
                assert!((10_000..ephemeral_from).contains(&port), "{port}");
            }
            std::net::TcpListener::bind(("127.0.0.1", port)).expect("the port is free");
        }
        // Picked at random: twenty picks are not all one port.
        assert!(ports.iter().any(|&p| p != ports[0]), "{ports:?}");
    }
}
