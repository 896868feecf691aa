//! The core-style SDK: what a Rust gateway implements and what it is handed.
//!
//! A gateway implements [`ConfigExecutor`]. For each configuration the supervisor calls
//! `validate`, which reads and checks the configuration's value once, then `start_config` with
//! that checked value and a [`ConfigContext`] that carries the configuration, the gateway, a
//! way to dispatch events, the running signal and the stop signal. These replace the Go
//! channels of the 2018 Argo Events gateways: `StartChan` ⇒ [`ConfigContext::running`],
//! `DataChan` ⇒ [`ConfigContext::dispatch`], `StopChan`/`DoneChan`/`ShutdownChan` ⇒
//! cancellation and the end of `start_config`, `ErrChan` ⇒ the returned error, `Active` ⇒ the
//! node phase.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::configuration::{ConfigId, Configuration};
pub use crate::coordination::Placement;
use crate::coordination::{Checkpoints, DEFAULT_BUCKETS};
use crate::dispatch::Delivered;
use crate::error::{BoxFuture, ConfigError, DispatchError};
use crate::event::Event;
use crate::metrics::RejectReason;
use crate::pipeline::{Intake, Pipeline, Submit};
use crate::status::{Phase, StatusBoard};

/// Runs the configurations of one gateway type.
///
/// ```
/// use std::time::Duration;
///
/// use portico::{ConfigContext, ConfigError, ConfigExecutor, Event};
///
/// /// Emits `{"n": 1}`, `{"n": 2}`, … every `every` until stopped.
/// struct Counter;
///
/// /// A `counter` configuration.
/// #[derive(Clone, serde::Deserialize)]
/// #[serde(deny_unknown_fields)]
/// struct CounterConfig {
///     /// Seconds between two events.
///     every: u64,
/// }
///
/// impl ConfigExecutor for Counter {
///     type Config = CounterConfig;
///
///     fn validate(&self, ctx: &ConfigContext) -> Result<CounterConfig, ConfigError> {
///         let c: CounterConfig = ctx.parse()?;
///         if c.every == 0 {
///             return Err(ConfigError::invalid("every: expected at least 1 (second)"));
///         }
///         Ok(c)
///     }
///
///     async fn start_config(&self, ctx: ConfigContext, c: CounterConfig) -> Result<(), ConfigError> {
///         ctx.running();
///         let mut n = 0u64;
///         loop {
///             tokio::select! {
///                 _ = ctx.stopped() => return Ok(()),
///                 _ = tokio::time::sleep(Duration::from_secs(c.every)) => {}
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
    /// A configuration's value as this executor reads it, once checked. It is read once, by
    /// [`ConfigExecutor::validate`], and handed to every start of the configuration.
    type Config: Clone + Send + Sync + 'static;

    /// Reads and checks one configuration's value. [`ConfigContext::parse`] reads YAML or JSON
    /// into a serde type and names the field, line and column of any error; check here what
    /// the type alone cannot (fields that depend on each other). An error becomes the node's
    /// message and the configuration is not started.
    fn validate(&self, ctx: &ConfigContext) -> Result<Self::Config, ConfigError>;

    /// Runs one configuration until `ctx` is stopped. Emit events with
    /// [`ConfigContext::dispatch`]; call [`ConfigContext::running`] once listening.
    /// `Ok(())` ends it as `Completed`; an error ends it as `Error` (and a
    /// [`ConfigError::failed`] one is restarted with backoff, with the same `config`).
    fn start_config(
        &self,
        ctx: ConfigContext,
        config: Self::Config,
    ) -> impl Future<Output = Result<(), ConfigError>> + Send;

    /// Asks a running configuration to stop. The default cancels `ctx`, which ends
    /// [`ConfigContext::stopped`].
    fn stop_config(&self, ctx: &ConfigContext) -> impl Future<Output = ()> + Send {
        ctx.stop();
        std::future::ready(())
    }

    /// The keys Portico reads in every configuration (`filter`, `rateLimit`) that this
    /// gateway's configurations use for something of their own, and that Portico therefore
    /// leaves to it (an S3 key filter named `filter`). Default: none. [`ConfigContext::parse`]
    /// leaves a field of the parsed type to it by itself; this tells Portico not to read it.
    fn own_keys(&self) -> &'static [&'static str] {
        &[]
    }

    /// Where `config` runs when the gateway has several replicas: on the one replica that
    /// holds its bucket ([`Placement::Sharded`], the default: a schedule, a watch, a
    /// subscription every subscriber would receive), or on every replica
    /// ([`Placement::Everywhere`]: a webhook that callers spread over the replicas, a
    /// consumer group the broker shares out). `spec.placement` overrides it for a gateway.
    fn placement(&self, config: &Self::Config) -> Placement {
        let _ = config;
        Placement::Sharded
    }
}

/// A configuration value an executor has checked, kept by the supervisor to start the
/// configuration (and to start it again after a failure).
pub struct Checked(Box<dyn Any + Send + Sync>);

impl fmt::Debug for Checked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Checked(..)")
    }
}

/// The object-safe face of a [`ConfigExecutor`], so that a gateway's executor can be chosen
/// at run time (by `spec.type`). Every `ConfigExecutor` is one; implement `ConfigExecutor`.
pub trait DynConfigExecutor: Send + Sync + 'static {
    /// See [`ConfigExecutor::validate`].
    fn dyn_validate(&self, ctx: &ConfigContext) -> Result<Checked, ConfigError>;
    /// See [`ConfigExecutor::start_config`]; `config` is what `dyn_validate` returned.
    fn dyn_start<'a>(
        &'a self,
        ctx: ConfigContext,
        config: &Checked,
    ) -> BoxFuture<'a, Result<(), ConfigError>>;
    /// See [`ConfigExecutor::stop_config`].
    fn dyn_stop<'a>(&'a self, ctx: &'a ConfigContext) -> BoxFuture<'a, ()>;
    /// See [`ConfigExecutor::own_keys`].
    fn dyn_own_keys(&self) -> &'static [&'static str];
    /// See [`ConfigExecutor::placement`]; `config` is what `dyn_validate` returned.
    fn dyn_placement(&self, config: &Checked) -> Placement;
}

impl<E: ConfigExecutor> DynConfigExecutor for E {
    fn dyn_validate(&self, ctx: &ConfigContext) -> Result<Checked, ConfigError> {
        Ok(Checked(Box::new(self.validate(ctx)?)))
    }

    fn dyn_start<'a>(
        &'a self,
        ctx: ConfigContext,
        config: &Checked,
    ) -> BoxFuture<'a, Result<(), ConfigError>> {
        match config.0.downcast_ref::<E::Config>() {
            Some(config) => Box::pin(self.start_config(ctx, config.clone())),
            None => Box::pin(std::future::ready(Err(ConfigError::invalid(
                "the configuration was checked by another executor: it cannot start",
            )))),
        }
    }

    fn dyn_stop<'a>(&'a self, ctx: &'a ConfigContext) -> BoxFuture<'a, ()> {
        Box::pin(self.stop_config(ctx))
    }

    fn dyn_own_keys(&self) -> &'static [&'static str] {
        self.own_keys()
    }

    fn dyn_placement(&self, config: &Checked) -> Placement {
        config
            .0
            .downcast_ref::<E::Config>()
            .map_or(Placement::Sharded, |c| self.placement(c))
    }
}

/// An executor shared by the supervisor and its configurations.
pub type SharedExecutor = Arc<dyn DynConfigExecutor>;

/// The gateway a configuration belongs to.
#[derive(Clone)]
pub struct GatewayConfig {
    inner: Arc<GatewayInner>,
}

#[derive(Clone)]
struct GatewayInner {
    name: String,
    namespace: String,
    pipeline: Arc<Pipeline>,
    kube_client: Option<kube::Client>,
    kube_config: Option<kube::Config>,
    span: tracing::Span,
    require_auth: bool,
    http_limits: crate::http1::Limits,
    checkpoints: Arc<Checkpoints>,
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
    pub(crate) fn new(name: &str, namespace: &str, pipeline: Arc<Pipeline>) -> GatewayConfig {
        GatewayConfig {
            inner: Arc::new(GatewayInner {
                name: name.to_string(),
                namespace: namespace.to_string(),
                pipeline,
                kube_client: None,
                kube_config: None,
                span: tracing::info_span!("gateway", name = %name, namespace = %namespace),
                require_auth: false,
                http_limits: crate::http1::Limits::default(),
                checkpoints: Arc::new(Checkpoints::new(DEFAULT_BUCKETS)),
            }),
        }
    }

    /// The same gateway, its configurations' checkpoints kept in `checkpoints` (shared with
    /// the coordinator, which saves them with their buckets).
    pub(crate) fn with_checkpoints(self, checkpoints: Arc<Checkpoints>) -> GatewayConfig {
        let mut inner = (*self.inner).clone();
        inner.checkpoints = checkpoints;
        GatewayConfig {
            inner: Arc::new(inner),
        }
    }

    pub(crate) fn checkpoints(&self) -> &Arc<Checkpoints> {
        &self.inner.checkpoints
    }

    /// The same gateway, refusing unauthenticated configurations when `require` is set
    /// (`spec.security.requireAuth`).
    pub(crate) fn with_require_auth(self, require: bool) -> GatewayConfig {
        let mut inner = (*self.inner).clone();
        inner.require_auth = require;
        GatewayConfig {
            inner: Arc::new(inner),
        }
    }

    /// The same gateway, its HTTP servers with these limits (`--idle-timeout`,
    /// `--body-timeout`, `--max-connections`).
    pub(crate) fn with_http_limits(self, limits: crate::http1::Limits) -> GatewayConfig {
        let mut inner = (*self.inner).clone();
        inner.http_limits = limits;
        GatewayConfig {
            inner: Arc::new(inner),
        }
    }

    /// The timeouts and connection cap every HTTP server of the gateway uses (the
    /// transformer's API, the webhooks', the HTTP style's): the same flags set them all.
    pub fn http_limits(&self) -> crate::http1::Limits {
        self.inner.http_limits
    }

    /// Whether configurations that would take events from anyone (a webhook with no secret)
    /// are errors rather than warnings (`spec.security.requireAuth`).
    pub fn require_auth(&self) -> bool {
        self.inner.require_auth
    }

    /// The same gateway with a Kubernetes client (set by the runtime in a cluster; tests set
    /// one for a fake API server).
    pub fn with_kube_client(self, client: kube::Client) -> GatewayConfig {
        let mut inner = (*self.inner).clone();
        inner.kube_client = Some(client);
        GatewayConfig {
            inner: Arc::new(inner),
        }
    }

    /// The Kubernetes client of a gateway that runs in a cluster, `None` elsewhere.
    pub fn kube_client(&self) -> Option<kube::Client> {
        self.inner.kube_client.clone()
    }

    /// The configuration the Kubernetes client was made from (API server, credentials,
    /// default namespace), for an executor that makes clients of its own; `None` outside a
    /// cluster.
    pub fn kube_config(&self) -> Option<&kube::Config> {
        self.inner.kube_config.as_ref()
    }

    /// The same gateway with the configuration of its Kubernetes client.
    pub(crate) fn with_kube_config(self, config: kube::Config) -> GatewayConfig {
        let mut inner = (*self.inner).clone();
        inner.kube_config = Some(config);
        GatewayConfig {
            inner: Arc::new(inner),
        }
    }

    /// The gateway's logger: a `tracing` span with its `name` and `namespace`. Log under it
    /// (`tracing::info!(parent: gateway.span(), …)`, or `span.in_scope`) so that each line
    /// says which gateway wrote it; configurations' tasks already run in a span with their
    /// `src` and `id`.
    pub fn span(&self) -> &tracing::Span {
        &self.inner.span
    }

    /// The gateway's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The gateway's namespace.
    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    pub(crate) fn pipeline(&self) -> &Arc<Pipeline> {
        &self.inner.pipeline
    }

    /// Dispatches an event as configuration `src`, for code that holds no context. Resolves
    /// once the event is accepted for delivery, waiting for room as the delivery mode says
    /// ([`ConfigContext::dispatch`]).
    pub async fn dispatch_event(
        &self,
        payload: impl Into<Event>,
        src: &str,
    ) -> Result<(), DispatchError> {
        let never = CancellationToken::new();
        Intake::new(self.pipeline(), src)
            .submit(payload.into(), Submit::default(), &never)
            .await
            .map(drop)
    }
}

/// Everything one configuration's run is handed. Cheap to clone; all clones are the same
/// context.
#[derive(Clone)]
pub struct ConfigContext {
    inner: Arc<ContextInner>,
}

/// Why a configuration was asked to stop ([`ConfigContext::stop_reason`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// Its key left the configuration map: it is gone for good (a registered webhook may be
    /// deleted).
    Removed,
    /// Its value changed: the new value starts under the same key once this one has stopped.
    Replaced,
    /// The gateway is shutting down, or the configuration was stopped by hand: it may run
    /// again when the gateway starts.
    Shutdown,
}

struct ContextInner {
    configuration: Configuration,
    stop_reason: std::sync::OnceLock<StopReason>,
    warnings: std::sync::Mutex<Vec<String>>,
    gateway: GatewayConfig,
    board: Arc<StatusBoard>,
    intake: Intake,
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
    pub(crate) fn new(
        configuration: Configuration,
        gateway: GatewayConfig,
        board: Arc<StatusBoard>,
    ) -> ConfigContext {
        let intake = Intake::new(gateway.pipeline(), &configuration.src);
        ConfigContext {
            inner: Arc::new(ContextInner {
                configuration,
                stop_reason: std::sync::OnceLock::new(),
                warnings: Default::default(),
                gateway,
                board,
                intake,
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

    /// The configuration value: YAML or JSON text, as written (with the `filter` and
    /// `rateLimit` that Portico reads itself, if any; [`ConfigContext::parse`] skips them).
    pub fn config(&self) -> &str {
        &self.inner.configuration.value
    }

    /// The configuration value as a gRPC or HTTP style server gets it: without the keys
    /// Portico reads itself.
    pub(crate) fn config_for_server(&self) -> String {
        crate::policy::without_reserved(self.config()).unwrap_or_else(|| self.config().to_string())
    }

    /// The whole configuration.
    pub fn configuration(&self) -> &Configuration {
        &self.inner.configuration
    }

    /// Parses the configuration value (YAML or JSON) into `T`; the error names the field, line
    /// and column.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, ConfigError> {
        crate::spec::parse_config(self.config())
    }

    /// The gateway.
    pub fn gateway(&self) -> &GatewayConfig {
        &self.inner.gateway
    }

    /// Where this configuration's source got to, as it last said with
    /// [`ConfigContext::set_checkpoint`]: on this replica, or on the replica that ran it
    /// before when the gateway's replicas share their configurations. `None` the first time,
    /// and after the configuration's value changed.
    pub fn checkpoint(&self) -> Option<String> {
        self.inner
            .gateway
            .checkpoints()
            .get(&self.inner.configuration.src)
    }

    /// Records where this configuration's source got to (a calendar's last fired tick, once
    /// the event was accepted): the replica that runs the configuration next starts from it.
    /// Keep it small; it is saved with the configuration's bucket every renewal.
    pub fn set_checkpoint(&self, value: impl Into<String>) {
        self.inner
            .gateway
            .checkpoints()
            .set(&self.inner.configuration.src, value.into());
    }

    /// Tells the framework that the configuration runs (node `Running`). Call it again after
    /// recovering from a reported error.
    /// A running node's message is its warnings ([`ConfigContext::warn`]), if any.
    pub fn running(&self) {
        let note = self.warnings().join("; ");
        self.set_phase(Phase::Running, note);
    }

    /// Warns about something that works but should not be left so (a webhook anyone can post
    /// to): logged at WARN when the configuration starts, printed by `portico validate`, and
    /// the message of the node while it runs (in `/status` and the Gateway's `status.nodes`).
    /// Said once per text.
    pub fn warn(&self, text: impl Into<String>) {
        let text = text.into();
        let mut warnings = self
            .inner
            .warnings
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if !warnings.contains(&text) {
            warnings.push(text);
        }
    }

    /// The warnings given so far.
    pub fn warnings(&self) -> Vec<String> {
        self.inner
            .warnings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
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
    /// (counted in `portico_events_rejected_total{reason="full"}`), and the source drops it.
    /// [`ConfigContext::submit`] chooses otherwise.
    pub async fn dispatch(&self, event: impl Into<Event>) -> Result<(), DispatchError> {
        self.submit(event, Submit::default()).await.map(drop)
    }

    /// Hands an event over as `how` says: how long to wait for room in a full gateway
    /// ([`crate::Wait`]), and when the source may acknowledge it to its own sender
    /// ([`crate::Ack`]). The returned [`Delivered`] resolves when that moment comes: at once,
    /// except for [`crate::Ack::AfterDelivery`] in `ackAfterDelivery`.
    pub async fn submit(
        &self,
        event: impl Into<Event>,
        how: Submit,
    ) -> Result<Delivered, DispatchError> {
        self.inner
            .intake
            .submit(event.into(), how, &self.inner.stop)
            .await
    }

    /// Counts `n` events of this configuration refused for `reason` before they were
    /// submitted (ticks missed while the gateway was full, deliveries refused for a bad
    /// signature), in `portico_events_rejected_total`.
    pub fn count_rejected(&self, reason: RejectReason, n: u64) {
        if n > 0 {
            self.inner.intake.count_rejected(reason, n);
        }
    }

    /// Asks the configuration to stop (reason [`StopReason::Shutdown`]).
    pub fn stop(&self) {
        self.stop_because(StopReason::Shutdown);
    }

    /// Records why the configuration is about to stop (the first reason given is kept), so
    /// that [`ConfigExecutor::stop_config`] can read it.
    pub(crate) fn stopping_because(&self, reason: StopReason) {
        let _ = self.inner.stop_reason.set(reason);
    }

    /// Asks the configuration to stop for `reason` (the first reason given is kept).
    pub(crate) fn stop_because(&self, reason: StopReason) {
        self.stopping_because(reason);
        self.inner.stop.cancel();
    }

    /// Why the configuration was asked to stop; `None` while it runs.
    pub fn stop_reason(&self) -> Option<StopReason> {
        let given = self.inner.stop_reason.get().copied();
        given.or(self.is_stopped().then_some(StopReason::Shutdown))
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
