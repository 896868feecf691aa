//! The core-style SDK (SPEC §4): what a Rust gateway implements and what it is handed.
//!
//! A gateway implements [`ConfigExecutor`]. For each configuration the supervisor calls
//! `validate`, then `start_config` with a [`ConfigContext`] that carries the configuration,
//! the gateway, a way to dispatch events, the running signal and the stop signal. These replace
//! the seed's Go channels: `StartChan` ⇒ [`ConfigContext::running`], `DataChan` ⇒
//! [`ConfigContext::dispatch`], `StopChan`/`DoneChan`/`ShutdownChan` ⇒ cancellation and the
//! end of `start_config`, `ErrChan` ⇒ the returned error, `Active` ⇒ the node phase.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::configuration::{ConfigId, Configuration};
use crate::event::Event;
use crate::metrics::SrcMetrics;
use crate::pipeline::Pipeline;
use crate::status::{Phase, StatusBoard};

/// Runs the configurations of one gateway type.
///
/// ```
/// use portico::{ConfigContext, ConfigError, ConfigExecutor, Event};
///
/// /// Emits `{"n": 1}`, `{"n": 2}`, … every `every` until stopped.
/// struct Counter;
///
/// #[derive(serde::Deserialize)]
/// struct CounterConfig {
///     every: String,
/// }
///
/// impl ConfigExecutor for Counter {
///     fn validate(&self, ctx: &ConfigContext) -> Result<(), ConfigError> {
///         let c: CounterConfig = ctx.parse()?;
///         humantime::parse_duration(&c.every)
///             .map_err(|e| ConfigError::invalid(format!("every: {e}")))?;
///         Ok(())
///     }
///
///     async fn start_config(&self, ctx: ConfigContext) -> Result<(), ConfigError> {
///         let c: CounterConfig = ctx.parse()?;
///         let every = humantime::parse_duration(&c.every)
///             .map_err(|e| ConfigError::invalid(format!("every: {e}")))?;
///         ctx.running();
///         let mut n = 0u64;
///         loop {
///             tokio::select! {
///                 _ = ctx.stopped() => return Ok(()),
///                 _ = tokio::time::sleep(every) => {}
///             }
///             n += 1;
///             ctx.dispatch(Event::json(&serde_json::json!({ "n": n }))?).await?;
///         }
///     }
/// }
///
/// // A gateway's whole main function:
/// // fn main() -> std::process::ExitCode { portico::run(Counter) }
/// ```
pub trait ConfigExecutor: Send + Sync + 'static {
    /// Checks a configuration before it is started; the error text becomes the node's
    /// message and the configuration is not started.
    fn validate(&self, ctx: &ConfigContext) -> Result<(), ConfigError>;

    /// Runs one configuration until `ctx` is stopped. Emit events with
    /// [`ConfigContext::dispatch`]; call [`ConfigContext::running`] once listening.
    /// `Ok(())` ends it as `Completed`; an error ends it as `Error` (and a
    /// [`ConfigError::failed`] one is restarted with backoff).
    fn start_config(
        &self,
        ctx: ConfigContext,
    ) -> impl Future<Output = Result<(), ConfigError>> + Send;

    /// Asks a running configuration to stop. The default cancels `ctx`, which ends
    /// [`ConfigContext::stopped`].
    fn stop_config(&self, ctx: &ConfigContext) -> impl Future<Output = ()> + Send {
        ctx.stop();
        std::future::ready(())
    }
}

/// A boxed future, as the object-safe face of [`ConfigExecutor`] returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The object-safe face of a [`ConfigExecutor`], so that a gateway's executor can be chosen
/// at run time (by `spec.type`). Every `ConfigExecutor` is one; implement `ConfigExecutor`.
pub trait DynConfigExecutor: Send + Sync + 'static {
    /// See [`ConfigExecutor::validate`].
    fn dyn_validate(&self, ctx: &ConfigContext) -> Result<(), ConfigError>;
    /// See [`ConfigExecutor::start_config`].
    fn dyn_start(&self, ctx: ConfigContext) -> BoxFuture<'_, Result<(), ConfigError>>;
    /// See [`ConfigExecutor::stop_config`].
    fn dyn_stop<'a>(&'a self, ctx: &'a ConfigContext) -> BoxFuture<'a, ()>;
}

impl<E: ConfigExecutor> DynConfigExecutor for E {
    fn dyn_validate(&self, ctx: &ConfigContext) -> Result<(), ConfigError> {
        self.validate(ctx)
    }
    fn dyn_start(&self, ctx: ConfigContext) -> BoxFuture<'_, Result<(), ConfigError>> {
        Box::pin(self.start_config(ctx))
    }
    fn dyn_stop<'a>(&'a self, ctx: &'a ConfigContext) -> BoxFuture<'a, ()> {
        Box::pin(self.stop_config(ctx))
    }
}

/// An executor shared by the supervisor and its configurations.
pub type SharedExecutor = Arc<dyn DynConfigExecutor>;

/// Why a configuration is not valid or stopped running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    kind: ConfigErrorKind,
    message: String,
}

/// What kind of [`ConfigError`] it is, which decides what the supervisor does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigErrorKind {
    /// The configuration is wrong: it stays `Error` until its value changes.
    Invalid,
    /// It failed while running (a connection dropped, …): it is restarted with backoff.
    Failed,
}

impl ConfigError {
    /// The configuration is wrong; it will not run until it changes.
    pub fn invalid(message: impl Into<String>) -> ConfigError {
        ConfigError {
            kind: ConfigErrorKind::Invalid,
            message: message.into(),
        }
    }

    /// It failed while running; the supervisor restarts it with backoff.
    pub fn failed(message: impl Into<String>) -> ConfigError {
        ConfigError {
            kind: ConfigErrorKind::Failed,
            message: message.into(),
        }
    }

    /// Its kind.
    pub fn kind(&self) -> ConfigErrorKind {
        self.kind
    }

    /// What was wrong.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

impl From<serde_json::Error> for ConfigError {
    fn from(e: serde_json::Error) -> ConfigError {
        ConfigError::failed(format!("cannot encode the event: {e}"))
    }
}

impl From<DispatchError> for ConfigError {
    fn from(e: DispatchError) -> ConfigError {
        match e {
            DispatchError::Invalid(m) => ConfigError::failed(format!("event refused: {m}")),
            other => ConfigError::failed(other.to_string()),
        }
    }
}

/// Why an event was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DispatchError {
    /// Every slot is taken: push back on the source and try again later.
    #[error("the dispatcher is full; retry in {}s", retry_after.as_secs().max(1))]
    Full {
        /// A fair wait before retrying.
        retry_after: Duration,
    },
    /// The event cannot become a valid CloudEvent.
    #[error("invalid event: {0}")]
    Invalid(String),
    /// The configuration or the gateway is stopping.
    #[error("the configuration or the gateway is stopping")]
    Stopped,
}

/// The gateway a configuration belongs to (the seed's `GatewayConfig`).
#[derive(Clone)]
pub struct GatewayConfig {
    inner: Arc<GatewayInner>,
}

struct GatewayInner {
    name: String,
    namespace: String,
    pipeline: Arc<Pipeline>,
    kube_client: Option<kube::Client>,
}

impl fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayConfig")
            .field("name", &self.inner.name)
            .field("namespace", &self.inner.namespace)
            .finish()
    }
}

impl GatewayConfig {
    /// A gateway named `name` in `namespace` whose events go through `pipeline`.
    pub fn new(name: &str, namespace: &str, pipeline: Arc<Pipeline>) -> GatewayConfig {
        GatewayConfig {
            inner: Arc::new(GatewayInner {
                name: name.to_string(),
                namespace: namespace.to_string(),
                pipeline,
                kube_client: None,
            }),
        }
    }

    /// The same gateway with a Kubernetes client (set by the runtime in a cluster; tests set
    /// one for a fake API server).
    pub fn with_kube_client(self, client: kube::Client) -> GatewayConfig {
        GatewayConfig {
            inner: Arc::new(GatewayInner {
                name: self.inner.name.clone(),
                namespace: self.inner.namespace.clone(),
                pipeline: self.inner.pipeline.clone(),
                kube_client: Some(client),
            }),
        }
    }

    /// The Kubernetes client of a gateway that runs in a cluster (SPEC §4), `None` elsewhere.
    pub fn kube_client(&self) -> Option<kube::Client> {
        self.inner.kube_client.clone()
    }

    /// The gateway's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The gateway's namespace.
    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    /// Where events go.
    pub fn pipeline(&self) -> &Arc<Pipeline> {
        &self.inner.pipeline
    }

    /// Dispatches an event as configuration `src`, for code that holds no context. Resolves
    /// once the event is accepted for delivery (in `atMostOnce`, refuses it at once with
    /// [`DispatchError::Full`] when the gateway is full, as [`ConfigContext::dispatch`]).
    pub async fn dispatch_event(
        &self,
        payload: impl Into<Event>,
        src: &str,
    ) -> Result<(), DispatchError> {
        let metrics = self.inner.pipeline.metrics().for_src(src);
        let admission = if self.inner.pipeline.dispatcher().never_waits() {
            Admission::NoWait
        } else {
            Admission::Wait(None)
        };
        self.inner
            .pipeline
            .dispatch(&metrics, payload.into(), admission)
            .await
    }
}

/// How a source waits for room when the dispatcher is full.
#[derive(Debug, Clone, Copy)]
pub enum Admission<'a> {
    /// Wait for room (until this token, if any, is cancelled).
    Wait(Option<&'a CancellationToken>),
    /// Fail at once with [`DispatchError::Full`].
    NoWait,
    /// Wait for room until this instant, then fail with [`DispatchError::Full`]: how HTTP
    /// callers are held briefly rather than refused at the first full queue.
    Until(tokio::time::Instant),
}

/// Everything one configuration's run is handed. Cheap to clone; all clones are the same
/// context.
#[derive(Clone)]
pub struct ConfigContext {
    inner: Arc<ContextInner>,
}

struct ContextInner {
    configuration: Configuration,
    gateway: GatewayConfig,
    board: Arc<StatusBoard>,
    metrics: SrcMetrics,
    stop: CancellationToken,
    hard_stop: CancellationToken,
    tasks: TaskTracker,
}

impl fmt::Debug for ConfigContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigContext")
            .field("id", &self.inner.configuration.id)
            .field("src", &self.inner.configuration.src)
            .finish()
    }
}

impl ConfigContext {
    /// A context for `configuration` of `gateway`, reporting to `board`.
    pub fn new(
        configuration: Configuration,
        gateway: GatewayConfig,
        board: Arc<StatusBoard>,
    ) -> ConfigContext {
        let metrics = gateway.pipeline().metrics().for_src(&configuration.src);
        ConfigContext {
            inner: Arc::new(ContextInner {
                configuration,
                gateway,
                board,
                metrics,
                stop: CancellationToken::new(),
                hard_stop: CancellationToken::new(),
                tasks: TaskTracker::new(),
            }),
        }
    }

    /// The configuration id.
    pub fn id(&self) -> ConfigId {
        self.inner.configuration.id
    }

    /// The configuration key: the `src` of its events.
    pub fn src(&self) -> &str {
        &self.inner.configuration.src
    }

    /// The configuration value: YAML or JSON text.
    pub fn config(&self) -> &str {
        &self.inner.configuration.value
    }

    /// The whole configuration.
    pub fn configuration(&self) -> &Configuration {
        &self.inner.configuration
    }

    /// Parses the configuration value (YAML or JSON) into `T`; the error names the
    /// configuration, line and column.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, ConfigError> {
        crate::spec::parse_config(self.src(), self.config()).map_err(ConfigError::invalid)
    }

    /// The gateway.
    pub fn gateway(&self) -> &GatewayConfig {
        &self.inner.gateway
    }

    /// Tells the framework that the configuration runs (node `Running`). Call it again after
    /// recovering from a reported error.
    pub fn running(&self) {
        self.set_phase(Phase::Running, "");
    }

    /// Reports a problem the configuration is recovering from by itself (a broker is gone
    /// and being reconnected): the node shows `Error` with `reason` until [`running`] again.
    ///
    /// [`running`]: ConfigContext::running
    pub fn report_error(&self, reason: impl Into<String>) {
        self.set_phase(Phase::Error, reason);
    }

    pub(crate) fn set_phase(&self, phase: Phase, message: impl Into<String>) {
        if self.is_stopped() {
            return;
        }
        self.inner
            .board
            .set(self.id(), self.src(), phase, message.into());
    }

    /// Dispatches an event and waits until it is accepted for delivery.
    ///
    /// In `atLeastOnce` (the default) and `ackAfterDelivery`, waits for room when the gateway
    /// is full (until the configuration stops), which slows the source down. In `atMostOnce`
    /// it never waits: a full gateway refuses the event at once with [`DispatchError::Full`]
    /// (counted in `portico_events_rejected{reason="full"}`), and the source drops it.
    pub async fn dispatch(&self, event: impl Into<Event>) -> Result<(), DispatchError> {
        self.inner
            .gateway
            .pipeline()
            .dispatch(&self.inner.metrics, event.into(), self.admission())
            .await
    }

    /// Dispatches an event of a source that acknowledges its messages itself (a broker), and
    /// returns what to wait for before acking it: in `ackAfterDelivery` it resolves once every
    /// watcher took the event (or dead-lettered it), and the event is not written to the
    /// outbox, the broker keeping it until the ack; in the other modes it is done at once.
    /// Waits for room as [`ConfigContext::dispatch`] does.
    pub async fn dispatch_ackable(
        &self,
        event: impl Into<Event>,
    ) -> Result<crate::dispatch::Delivered, DispatchError> {
        self.inner
            .gateway
            .pipeline()
            .dispatch_tracked(&self.inner.metrics, event.into(), self.admission())
            .await
    }

    /// Dispatches an event of a source whose producer can be slowed down without losing
    /// anything (a gRPC stream, with its flow control): waits for room in every delivery mode,
    /// `atMostOnce` included, until the configuration stops.
    pub async fn dispatch_flow_controlled(
        &self,
        event: impl Into<Event>,
    ) -> Result<(), DispatchError> {
        self.inner
            .gateway
            .pipeline()
            .dispatch(
                &self.inner.metrics,
                event.into(),
                Admission::Wait(Some(&self.inner.stop)),
            )
            .await
    }

    fn admission(&self) -> Admission<'_> {
        if self.inner.gateway.pipeline().dispatcher().never_waits() {
            Admission::NoWait
        } else {
            Admission::Wait(Some(&self.inner.stop))
        }
    }

    /// Dispatches an event for a source that can push back (an HTTP caller gets 503): waits
    /// for room at most the gateway's admission wait (`--admission-wait`), then fails with
    /// [`DispatchError::Full`].
    pub async fn try_dispatch(&self, event: impl Into<Event>) -> Result<(), DispatchError> {
        let pipeline = self.inner.gateway.pipeline();
        pipeline
            .dispatch(&self.inner.metrics, event.into(), pipeline.briefly())
            .await
    }

    /// Counts `n` events this configuration could not produce because the gateway was full
    /// (a calendar's ticks that fell due meanwhile), in
    /// `portico_events_rejected{reason="missed"}`.
    pub fn missed(&self, n: u64) {
        if n > 0 {
            self.inner
                .gateway
                .pipeline()
                .metrics()
                .reject_many(self.src(), "missed", n);
        }
    }

    /// Asks the configuration to stop.
    pub fn stop(&self) {
        self.inner.stop.cancel();
    }

    /// True once the configuration was asked to stop.
    pub fn is_stopped(&self) -> bool {
        self.inner.stop.is_cancelled()
    }

    /// Resolves when the configuration is asked to stop.
    pub async fn stopped(&self) {
        self.inner.stop.cancelled().await
    }

    /// The stop signal, for code that wants the token itself.
    pub fn stop_token(&self) -> &CancellationToken {
        &self.inner.stop
    }

    /// Spawns a task that belongs to this configuration: stopping the configuration waits
    /// for it (for a grace period, then drops it), so nothing is left running.
    pub fn spawn<F>(&self, task: F) -> JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let hard = self.inner.hard_stop.clone();
        self.inner.tasks.spawn(async move {
            tokio::select! {
                biased;
                _ = hard.cancelled() => {}
                _ = task => {}
            }
        })
    }

    pub(crate) fn tasks(&self) -> &TaskTracker {
        &self.inner.tasks
    }

    pub(crate) fn hard_stop(&self) -> &CancellationToken {
        &self.inner.hard_stop
    }

    pub(crate) fn board(&self) -> &Arc<StatusBoard> {
        &self.inner.board
    }
}
