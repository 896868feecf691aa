//! One gateway process, put together: source → supervisor → processor → pipeline → watchers,
//! and the transformer's HTTP API beside them.
//!
//! [`run_gateway`] reads the gateway file, resolves the watchers, starts the dispatcher and the
//! API, applies the configurations and follows the file until the shutdown signal. Then it
//! stops every configuration, drains the events in flight and closes the API, in that order.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::configuration::IdentifiedMap;
use crate::coordination::{
    Assignment, Checkpoints, Coordinator, Settings as CoordinationSettings, Store, StoreFactory,
};
use crate::dispatch::http::{HttpSender, LazyClient};
use crate::dispatch::stdout::StdoutSender;
use crate::dispatch::{
    DeadLetter, Delivery, Dispatcher, OutboxOptions, Sender, SenderFactory, WatcherEntry,
};
use crate::executor::{GatewayConfig, SharedExecutor};
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::pipeline::{Transformer, parse_overrides};
use crate::secret::{LiveSecret, SecretSource};
use crate::server::{AppState, GatewayInfo};
use crate::source::SourceEvent;
use crate::spec::watchers::{Environment, Target, resolve_watchers};
use crate::spec::{DeliveryMode, Encoding, Gateway, GatewayFile};
use crate::status::{LogSink, StatusBoard, StatusSink};
use crate::supervisor::{Share, Supervisor};

/// What runs a gateway's configurations.
#[derive(Clone)]
pub(crate) enum Processor {
    /// A Rust executor in this process (built-in or the user's).
    Core(SharedExecutor),
    /// The user's gRPC server, through the framework's client executor
    /// ([`crate::processor::grpc::GrpcProcessor`]).
    Grpc(SharedExecutor),
    /// The user's HTTP server, through [`crate::processor::http::HttpProcessor`].
    Http(SharedExecutor),
    /// Nothing: the user's program posts events to the transformer.
    Independent,
}

impl Processor {
    fn name(&self) -> &'static str {
        match self {
            Processor::Core(_) => "core",
            Processor::Grpc(_) => "grpc",
            Processor::Http(_) => "http",
            Processor::Independent => "independent",
        }
    }
}

/// How a gateway process runs.
#[derive(Debug, Clone)]
pub(crate) struct RunOptions {
    /// The gateway's files and directories (ignored when `cluster` is set).
    pub files: Vec<PathBuf>,
    /// In a cluster: the Gateway and ConfigMap to follow through the API server instead of
    /// a file.
    pub cluster: Option<crate::cluster::ClusterTarget>,
    /// Address of the transformer's API.
    pub listen: IpAddr,
    /// The file of the ingest API's bearer token (made when absent).
    pub ingest_token_file: Option<PathBuf>,
    /// Listen beyond loopback with no ingest token.
    pub insecure_listen: bool,
    /// Port of the transformer's API (0: any free port, logged at start).
    pub transformer_port: u16,
    /// Body size limit of the ingest API.
    pub body_limit: usize,
    /// Timeouts and the connection cap of the transformer's API.
    pub http_limits: crate::http1::Limits,
    /// How long HTTP callers wait for room before 503.
    pub admission_wait: Duration,
    /// How long events in flight may take to drain at shutdown.
    pub drain_timeout: Duration,
    /// How long a stopping configuration may take.
    pub stop_grace: Duration,
    /// Directory of the durable outbox, over `spec.delivery.outbox.path` and the default.
    pub outbox_dir: Option<PathBuf>,
    /// The largest gateway file read.
    pub max_file_size: u64,
    /// The URL template of sensor watchers named only.
    pub sensor_url: Option<String>,
    /// The URL template of gateway watchers named only.
    pub gateway_url: Option<String>,
    /// Senders of NATS and Kafka watchers.
    pub senders: SenderFactories,
    /// Coordination stores of replicas outside a cluster (NATS key-value).
    pub stores: StoreFactories,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            files: Vec::new(),
            cluster: None,
            listen: IpAddr::V4(Ipv4Addr::LOCALHOST),
            ingest_token_file: None,
            insecure_listen: false,
            transformer_port: crate::env::DEFAULT_TRANSFORMER_PORT,
            body_limit: crate::server::DEFAULT_BODY_LIMIT,
            http_limits: crate::http1::Limits::default(),
            admission_wait: crate::pipeline::DEFAULT_ADMISSION_WAIT,
            drain_timeout: Duration::from_secs(10),
            stop_grace: Duration::from_secs(10),
            outbox_dir: None,
            max_file_size: crate::spec::file::DEFAULT_MAX_FILE_BYTES,
            sensor_url: None,
            gateway_url: None,
            senders: SenderFactories::default(),
            stores: StoreFactories::default(),
        }
    }
}

/// Why a gateway could not run.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RunError {
    /// The gateway file is not valid.
    #[error("{0}")]
    Spec(#[from] crate::spec::SpecErrors),
    /// The gateway cannot reach its cluster.
    #[error("{0}")]
    Cluster(#[from] crate::cluster::ClusterError),
    /// The OpenTelemetry environment variables do not make sense.
    #[error("{0}")]
    Trace(#[from] crate::trace::TraceSetupError),
    /// Neither a file nor a cluster says which gateway to run.
    #[error(
        "no gateway file given, and GATEWAY_NAMESPACE, GATEWAY_NAME and GATEWAY_PROCESSOR_CONFIG_MAP are not all set: give a FILE, or run in a cluster"
    )]
    NoGateway,
    /// The gateway's processor cannot be set up.
    #[error("gateway `{gateway}`: {source}")]
    Processor {
        /// The gateway.
        gateway: String,
        /// Why.
        source: ProcessorError,
    },
    /// The gateway's watchers are not valid.
    #[error("gateway `{gateway}`: {problems}")]
    Watchers {
        /// The gateway.
        gateway: String,
        /// Every problem.
        problems: crate::spec::Problems,
    },
    /// One watcher cannot be made.
    #[error("watcher `{watcher}`: {source}")]
    Watcher {
        /// The watcher.
        watcher: String,
        /// Why.
        source: crate::error::BoxError,
    },
    /// The outbox cannot be opened.
    #[error("gateway `{gateway}`: {source}")]
    Outbox {
        /// The gateway.
        gateway: String,
        /// Why.
        source: crate::dispatch::outbox::OutboxError,
    },
    /// `K_CE_OVERRIDES` is not valid.
    #[error("{0}")]
    Overrides(#[from] crate::pipeline::BadOverrides),
    /// The transformer's API cannot listen.
    #[error("{0}")]
    Listen(#[from] crate::http1::ListenError),
    /// The ingest API would take events from anyone on the network.
    #[error(
        "the transformer's API would listen on {0} with no ingest token: anyone who reaches the port could post events. Give --ingest-token-file (PORTICO_INGEST_TOKEN_FILE), listen on 127.0.0.1, or pass --insecure-listen (PORTICO_INSECURE_LISTEN=true) to accept this"
    )]
    InsecureListen(IpAddr),
    /// The ingest token cannot be read or made.
    #[error("ingest token: {0}")]
    IngestToken(String),
    /// The replicas' coordination store cannot be set up.
    #[error("gateway `{gateway}`: spec.coordination: {why}")]
    Coordination {
        /// The gateway.
        gateway: String,
        /// Why.
        why: String,
    },
}

/// The ingest API's token: read from `path`, or made there when the file does not exist
/// (a random 256-bit token in hex, mode 0600, written only if no one else wrote it first).
pub(crate) fn ingest_token(path: &Path) -> Result<LiveSecret, RunError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let made = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    match made {
        Ok(mut f) => {
            let token: String = (0..32)
                .map(|_| format!("{:02x}", rand::random::<u8>()))
                .collect();
            f.write_all(token.as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(|e| {
                    RunError::IngestToken(format!("cannot write {}: {e}", path.display()))
                })?;
            tracing::info!(file = %path.display(), "ingest token made: processes posting events send it as `Authorization: Bearer <token>`");
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(RunError::IngestToken(format!(
                "{} does not exist and cannot be made: {e}",
                path.display()
            )));
        }
    }
    LiveSecret::load(SecretSource::File(path.to_path_buf()))
        .map_err(|e| RunError::IngestToken(e.message().to_string()))
}

/// Why a gateway's processor cannot be set up.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProcessorError {
    /// `GATEWAY_PROCESSOR_GRPC_SERVER_PORT` is not a port.
    #[error(
        "GATEWAY_PROCESSOR_GRPC_SERVER_PORT=`{0}` is not a port number (1–65535); fix or unset it"
    )]
    GrpcPort(String),
    /// The gRPC server's address is not valid.
    #[error("{0}")]
    Grpc(#[from] crate::processor::grpc::BadAddress),
    /// The HTTP style cannot be set up.
    #[error("{0}")]
    Http(#[from] crate::processor::http::HttpStyleError),
}

/// Where the pipeline keeps its files, and who makes broker senders.
#[derive(Debug, Clone, Default)]
struct PipelineOptions {
    /// Directory of the outbox, over the spec's and the default.
    pub outbox_dir: Option<PathBuf>,
    /// Directory relative paths of the spec are taken from (the gateway file's).
    pub base_dir: Option<PathBuf>,
    /// Senders of NATS and Kafka watchers.
    pub senders: SenderFactories,
}

/// The [`SenderFactory`] of broker watchers, if any (`portico-bus` in the `portico` binary).
#[derive(Clone, Default)]
pub(crate) struct SenderFactories(pub(crate) Option<Arc<dyn SenderFactory>>);

impl std::fmt::Debug for SenderFactories {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "SenderFactories(Some)"
        } else {
            "SenderFactories(None)"
        })
    }
}

/// The [`StoreFactory`] of coordination stores, if any (`portico-bus` in the `portico` binary).
#[derive(Clone, Default)]
pub(crate) struct StoreFactories(pub(crate) Option<Arc<dyn StoreFactory>>);

impl std::fmt::Debug for StoreFactories {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "StoreFactories(Some)"
        } else {
            "StoreFactories(None)"
        })
    }
}

/// The store the replicas of `gateway` coordinate through, and its settings: the NATS
/// key-value bucket `spec.coordination.nats` names; else, in a cluster with more than one
/// replica (or a `coordination` block), the namespace's Leases; else none (one replica runs
/// everything).
async fn coordination_store(
    gateway: &Gateway,
    cluster: Option<&crate::cluster::Connected>,
    stores: &StoreFactories,
) -> Result<Option<(Arc<dyn Store>, CoordinationSettings)>, RunError> {
    let spec = &gateway.spec;
    let err = |why: String| RunError::Coordination {
        gateway: gateway.metadata.name.clone(),
        why,
    };
    let c = spec.coordination.clone().unwrap_or_default();
    let settings = c.settings().map_err(err)?;
    if let Some(nats) = &c.nats {
        let Some(factory) = &stores.0 else {
            return Err(err(
                "this program has no NATS client (the `portico` binary has): use Leases in a cluster, or the `portico` binary".to_string(),
            ));
        };
        let store = factory.nats(nats).await.map_err(|e| {
            err(format!(
                "NATS key-value bucket `{}` at {}: {e}",
                nats.bucket, nats.url
            ))
        })?;
        return Ok(Some((store, settings)));
    }
    match cluster {
        Some(c) if spec.replicas.unwrap_or(1) > 1 || spec.coordination.is_some() => {
            let store: Arc<dyn Store> = Arc::new(crate::coordination::leases::LeaseStore::new(
                c.client.clone(),
                gateway.namespace(),
                &gateway.metadata.name,
            ));
            Ok(Some((store, settings)))
        }
        _ => Ok(None),
    }
}

/// Builds the pipeline of `gateway`: its transformer, and its watchers' dispatcher with the
/// outbox where `opts` says.
fn build_pipeline(
    gateway: &Gateway,
    env: &Environment,
    metrics: Arc<Metrics>,
    opts: &PipelineOptions,
) -> Result<Arc<Pipeline>, RunError> {
    let defs = resolve_watchers(gateway, env).map_err(|problems| RunError::Watchers {
        gateway: gateway.metadata.name.clone(),
        problems,
    })?;
    let watcher_error = |watcher: &str, e: crate::error::BoxError| RunError::Watcher {
        watcher: watcher.to_string(),
        source: e,
    };
    let client = LazyClient::default();
    let version = Some(gateway.spec.event_version.clone());
    let relative = |p: &Path| match &opts.base_dir {
        Some(base) if p.is_relative() => base.join(p),
        _ => p.to_path_buf(),
    };
    let delivery_spec = &gateway.spec.delivery;
    let delivery = match delivery_spec.mode.unwrap_or_default() {
        DeliveryMode::AtMostOnce => Delivery::AtMostOnce,
        mode @ (DeliveryMode::AtLeastOnce | DeliveryMode::AckAfterDelivery) => {
            let outbox = delivery_spec.outbox.clone().unwrap_or_default();
            let dir = match (&opts.outbox_dir, &outbox.path) {
                (Some(d), _) => d.clone(),
                (None, Some(p)) => relative(p),
                (None, None) => gateway.default_outbox_dir(),
            };
            let opts = OutboxOptions {
                dir,
                max_bytes: outbox
                    .max_bytes
                    .unwrap_or(crate::dispatch::outbox::DEFAULT_MAX_BYTES),
            };
            if mode == DeliveryMode::AckAfterDelivery {
                Delivery::AckAfterDelivery(opts)
            } else {
                Delivery::AtLeastOnce(opts)
            }
        }
    };
    let mut watchers = Vec::with_capacity(defs.len());
    for def in defs {
        let sender: Arc<dyn Sender> = match &def.target {
            Target::Http {
                url,
                encoding,
                timeout,
                headers,
            } => Arc::new(
                HttpSender::new(&client, url, *encoding, *timeout, version.clone())
                    .and_then(|s| s.with_headers(headers))
                    .map_err(|e| watcher_error(&def.name, e.into()))?,
            ),
            Target::Stdout => Arc::new(StdoutSender),
            Target::Nats(_) | Target::Kafka(_) => {
                match opts.senders.0.as_ref().and_then(|f| f.sender(&def.target)) {
                    Some(made) => made.map_err(|e| watcher_error(&def.name, e))?,
                    None => {
                        return Err(watcher_error(
                            &def.name,
                            "this program has no NATS or Kafka client (the `portico` binary has)"
                                .into(),
                        ));
                    }
                }
            }
        };
        let timeout = match &def.target {
            Target::Http { timeout, .. } => *timeout,
            _ => Duration::from_secs(5),
        };
        let dead_letter = match (&def.dead_letter, &delivery) {
            (Some(d), _) => match (&d.file, &d.url) {
                (Some(file), _) => DeadLetter::file(relative(file)),
                (None, Some(url)) => DeadLetter::Url(Box::new(
                    HttpSender::new(&client, url, Encoding::Structured, timeout, version.clone())
                        .map_err(|e| watcher_error(&def.name, e.into()))?,
                )),
                (None, None) => DeadLetter::Log,
            },
            (None, d) => match d.outbox() {
                Some(o) => DeadLetter::file(o.dir.join("dead-letter.jsonl")),
                None => DeadLetter::Log,
            },
        };
        watchers.push(WatcherEntry {
            name: def.name,
            sender,
            queue: def.queue,
            dead_letter: Arc::new(dead_letter),
            moved_from: def.moved_from,
        });
    }
    let dispatcher = Dispatcher::start_with(watchers, &metrics, &delivery).map_err(|source| {
        RunError::Outbox {
            gateway: gateway.metadata.name.clone(),
            source,
        }
    })?;
    if let Delivery::AtLeastOnce(o) = &delivery {
        tracing::info!(outbox = %o.dir.display(), max_bytes = o.max_bytes, "delivery atLeastOnce: durable outbox");
    } else if let Delivery::AckAfterDelivery(o) = &delivery {
        tracing::info!(outbox = %o.dir.display(), max_bytes = o.max_bytes, "delivery ackAfterDelivery: brokers acked after delivery, other sources through the durable outbox");
    } else {
        tracing::info!("delivery atMostOnce: events are kept in memory only");
    }
    let mut transformer = Transformer::new(
        &gateway.metadata.name,
        &gateway.spec.gateway_type,
        &gateway.spec.event_version,
    );
    if let Some(text) = crate::env::var(crate::env::K_CE_OVERRIDES) {
        transformer = transformer.with_overrides(parse_overrides(&text)?);
    }
    Ok(Pipeline::new(transformer, dispatcher, metrics))
}

/// Runs the gateway of `opts.files` with the processor `choose` picks for it, until
/// `shutdown` resolves.
pub(crate) async fn run_gateway(
    opts: RunOptions,
    choose: impl FnOnce(&Gateway) -> Result<Processor, ProcessorError>,
    signals: Signals,
) -> Result<(), RunError> {
    let ingest_token = match &opts.ingest_token_file {
        Some(path) => Some(Arc::new(ingest_token(path)?)),
        None if opts.listen.is_loopback() => None,
        None if opts.insecure_listen => {
            tracing::warn!(listen = %opts.listen, "the ingest API listens beyond loopback with no token (--insecure-listen): anyone who reaches the port can post events");
            None
        }
        None => return Err(RunError::InsecureListen(opts.listen)),
    };
    // Where the gateway and its configurations come from: a file, or the API server.
    let (file, cluster) = match &opts.cluster {
        Some(target) => (None, Some(crate::cluster::connect(target).await?)),
        None if opts.files.is_empty() => return Err(RunError::NoGateway),
        None => (
            Some(GatewayFile::load_one(&opts.files, opts.max_file_size)?),
            None,
        ),
    };
    let gateway = match (&file, &cluster) {
        (Some(f), _) => f.gateway.clone(),
        (None, Some(c)) => c.gateway.clone(),
        (None, None) => return Err(RunError::NoGateway),
    };
    let processor = choose(&gateway).map_err(|source| RunError::Processor {
        gateway: gateway.metadata.name.clone(),
        source,
    })?;
    if crate::trace::start_from_env(&gateway.metadata.name, gateway.namespace())? {
        tracing::info!("exporting trace spans with OTLP (OTEL_EXPORTER_OTLP_* is set)");
    }
    let metrics = Metrics::new();
    let mut env = Environment::from_process();
    env.sensor_url = opts.sensor_url.clone().or(env.sensor_url);
    env.gateway_url = opts.gateway_url.clone().or(env.gateway_url);
    let pipeline = build_pipeline(
        &gateway,
        &env,
        metrics.clone(),
        &PipelineOptions {
            outbox_dir: opts.outbox_dir.clone(),
            base_dir: file
                .as_ref()
                .and_then(|f| f.path.parent())
                .map(Path::to_path_buf),
            senders: opts.senders.clone(),
        },
    )?;
    pipeline.set_admission_wait(opts.admission_wait);
    let mut sinks: Vec<Arc<dyn StatusSink>> = vec![Arc::new(LogSink)];
    let status_stop = CancellationToken::new();
    let mut status_writer = None;
    let mut kube_sink = None;
    if let Some(c) = &cluster {
        let (sink, task) = crate::kube_status::KubeStatusSink::start(
            c.client.clone(),
            c.status.clone(),
            Default::default(),
            status_stop.clone(),
        );
        kube_sink = Some(sink.clone());
        sinks.push(sink);
        status_writer = Some(task);
    }
    let board = Arc::new(StatusBoard::new(metrics.clone(), sinks));
    let sharing = match &processor {
        Processor::Independent => None,
        _ => coordination_store(&gateway, cluster.as_ref(), &opts.stores).await?,
    };
    let replica = crate::env::replica();
    let checkpoints = Arc::new(Checkpoints::new(
        sharing
            .as_ref()
            .map_or(crate::coordination::DEFAULT_BUCKETS, |(_, s)| s.buckets),
    ));
    let (assign_tx, mut assign_rx) = mpsc::channel::<Assignment>(1);
    let coordinator = sharing.as_ref().map(|(store, settings)| {
        let c = Coordinator::new(
            store.clone(),
            replica.clone(),
            *settings,
            checkpoints.clone(),
            metrics.clone(),
            assign_tx,
        );
        match kube_sink.clone() {
            // In a cluster the Gateway's status.members shows who holds what.
            Some(sink) => c.with_report(Box::new(move |changes| sink.set_members(changes))),
            None => c,
        }
    });
    let state = Arc::new(AppState {
        info: GatewayInfo {
            name: gateway.metadata.name.clone(),
            namespace: gateway.namespace().to_string(),
            gateway_type: gateway.spec.gateway_type.clone(),
            processor: processor.name().to_string(),
            watchers: pipeline
                .dispatcher()
                .watcher_names()
                .into_iter()
                .map(String::from)
                .collect(),
            started_at: Utc::now(),
            replica,
        },
        board: board.clone(),
        pipeline: pipeline.clone(),
        rates: crate::rates::Rates::new(pipeline.clone()),
        ready: Default::default(),
        coordination: coordinator.as_ref().map(Coordinator::view),
    });
    // The configurations' filters and rate limits hold from the first request the server
    // takes (in a cluster, from the first ConfigMap read, before the gateway is ready).
    if let Some(f) = &file {
        let own = match &processor {
            Processor::Core(executor) => executor.dyn_own_keys(),
            _ => &[],
        };
        pipeline.policies().apply(&f.configurations, own);
    }
    let listener = crate::server::bind(SocketAddr::new(opts.listen, opts.transformer_port)).await?;
    let server_stop = CancellationToken::new();
    tokio::spawn(state.rates.clone().run(server_stop.clone()));
    let server = tokio::spawn(crate::server::serve_api(
        listener,
        state.clone(),
        crate::server::IngestOptions {
            body_limit: opts.body_limit,
            token: ingest_token,
        },
        opts.http_limits,
        server_stop.clone(),
    ));
    tracing::info!(
        gateway = %gateway.metadata.name, r#type = %gateway.spec.gateway_type,
        processor = processor.name(), watchers = ?state.info.watchers,
        "gateway starting"
    );
    for w in gateway.spec.warnings() {
        tracing::warn!(gateway = %gateway.metadata.name, "{w}");
    }

    let source_stop = CancellationToken::new();
    let (tx, mut rx) = mpsc::channel::<SourceEvent>(4);
    let mut gateway_config = GatewayConfig::new(
        &gateway.metadata.name,
        gateway.namespace(),
        pipeline.clone(),
    )
    .with_require_auth(gateway.spec.security.require_auth)
    .with_http_limits(opts.http_limits)
    .with_checkpoints(checkpoints);
    let (initial, source) = match (file, &cluster) {
        (Some(file), _) => {
            // A gateway file outside a cluster: with KUBECONFIG set, executors get its client
            // for the Kubernetes Secrets their configurations name.
            if crate::env::var("KUBECONFIG").is_some() {
                match crate::cluster::client().await {
                    Ok((client, config)) => {
                        gateway_config = gateway_config
                            .with_kube_client(client)
                            .with_kube_config(config);
                    }
                    Err(e) => tracing::warn!("KUBECONFIG is set but unusable: {e}"),
                }
            }
            (
                file.configurations.clone(),
                tokio::spawn(crate::source::file::watch(
                    opts.files.clone(),
                    file,
                    opts.max_file_size,
                    tx,
                    signals.reload.clone(),
                    source_stop.clone(),
                )),
            )
        }
        (None, Some(c)) => {
            gateway_config = gateway_config
                .with_kube_client(c.client.clone())
                .with_kube_config(c.config.clone());
            (
                Default::default(),
                tokio::spawn(crate::source::configmap::watch(
                    c.client.clone(),
                    c.config_map.clone(),
                    tx,
                    source_stop.clone(),
                )),
            )
        }
        (None, None) => return Err(RunError::NoGateway),
    };
    let mut supervisor = match &processor {
        Processor::Core(executor) | Processor::Grpc(executor) | Processor::Http(executor) => Some(
            Supervisor::new(executor.clone(), gateway_config, board.clone())
                .with_stop_grace(opts.stop_grace),
        ),
        Processor::Independent => None,
    };
    // The share of the configurations this replica runs, holding `held` buckets.
    let share = |held| {
        sharing.as_ref().map(|(_, settings)| Share {
            buckets: settings.buckets,
            held,
            placement: gateway.spec.placement,
        })
    };
    if let (Some(s), Some(share)) = (supervisor.as_mut(), share(Arc::default())) {
        // Until the coordinator holds buckets, only the configurations placed everywhere run.
        s.set_share(share);
    }
    let mut current = IdentifiedMap::new(initial);
    if let Some(s) = supervisor.as_mut() {
        s.apply_identified(&current).await;
    }
    let coordinator_stop = CancellationToken::new();
    let coordinator = coordinator.map(|c| tokio::spawn(c.run(coordinator_stop.clone())));
    // Without a supervisor the configurations' keys are still the gateway's own sources: the
    // events posted for them are counted under their own labels.
    let independent = supervisor.is_none();
    let own_labels = |map: &crate::spec::ConfigMapData| {
        metrics.own_srcs(map.keys().map(String::as_str));
        // Their filters and rate limits apply to the events posted for them.
        if independent {
            pipeline.policies().apply(map, &[]);
        }
    };
    own_labels(current.map());
    state.ready.store(true, Ordering::Release);
    let trim = Arc::new(Notify::new());
    let trimmer = tokio::spawn(give_back_free_memory(trim.clone()));
    trim.notify_one();

    let shutdown = signals.stop.clone().cancelled_owned();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            ev = rx.recv() => match ev {
                Some(SourceEvent::Map(map)) => {
                    let received = std::time::Instant::now();
                    tracing::info!(configurations = map.map().len(), "the configuration map changed");
                    own_labels(map.map());
                    if let Some(s) = supervisor.as_mut() { s.apply_identified(&map).await; }
                    tracing::info!(
                        configurations = map.map().len(),
                        took_ms = received.elapsed().as_secs_f64() * 1e3,
                        "the configuration map was applied"
                    );
                    trim.notify_one();
                    current = map;
                }
                Some(SourceEvent::Gone) => {
                    if let Some(s) = supervisor.as_mut() { s.stop_all().await; }
                    current = Default::default();
                }
                None => {
                    tracing::warn!("the configuration source ended; the configurations keep running");
                    (&mut shutdown).await;
                    break;
                }
            },
            Some(a) = assign_rx.recv() => {
                if let (Some(s), Some(share)) = (supervisor.as_mut(), share(a.held)) {
                    s.set_share(share);
                    s.apply_identified(&current).await;
                }
                let _ = a.done.send(());
            }
        }
    }

    trimmer.abort();
    tracing::info!("shutting down: stopping configurations");
    state.ready.store(false, Ordering::Release);
    source_stop.cancel();
    if let Some(s) = supervisor.as_mut() {
        s.stop_all().await;
    }
    // The configurations have stopped: the buckets can be released to the other replicas.
    drop(assign_rx);
    coordinator_stop.cancel();
    if let Some(task) = coordinator {
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    }
    status_stop.cancel();
    if let Some(task) = status_writer {
        let _ = task.await;
    }
    let left = pipeline
        .dispatcher()
        .drain(opts.drain_timeout, &signals.hurry)
        .await;
    if left == 0 {
        tracing::info!("every accepted event was delivered or given up on");
    }
    crate::trace::flush(Duration::from_secs(5)).await;
    server_stop.cancel();
    let _ = server.await;
    if let Ok(Err(e)) = source.await {
        tracing::error!("the configuration source failed: {e}");
    }
    tracing::info!("gateway stopped");
    Ok(())
}

/// The signals a gateway process answers, as daemons do: SIGTERM, SIGINT, SIGQUIT, SIGUSR1
/// and SIGUSR2 stop it gracefully (configurations stopped, events in flight drained); a second
/// one of them ends the drain at once, the outbox flushed and what was left said; SIGHUP reads
/// the gateway file again.
#[derive(Clone)]
pub(crate) struct Signals {
    /// Cancelled at the first stop signal.
    pub(crate) stop: CancellationToken,
    /// Cancelled at the second.
    pub(crate) hurry: CancellationToken,
    /// Notified at every SIGHUP.
    pub(crate) reload: Arc<tokio::sync::Notify>,
}

impl Signals {
    /// Starts listening to the signals (needs a Tokio runtime).
    pub(crate) fn install() -> Signals {
        let signals = Signals {
            stop: CancellationToken::new(),
            hurry: CancellationToken::new(),
            reload: Arc::new(tokio::sync::Notify::new()),
        };
        let s = signals.clone();
        tokio::spawn(async move { s.listen().await });
        signals
    }

    #[cfg(unix)]
    async fn listen(self) {
        use tokio::signal::unix::{SignalKind, signal};
        let kinds = [
            ("SIGTERM", SignalKind::terminate()),
            ("SIGINT", SignalKind::interrupt()),
            ("SIGQUIT", SignalKind::quit()),
            ("SIGUSR1", SignalKind::user_defined1()),
            ("SIGUSR2", SignalKind::user_defined2()),
        ];
        let mut stops = Vec::new();
        for (name, kind) in kinds {
            match signal(kind) {
                Ok(s) => stops.push((name, s)),
                Err(e) => tracing::warn!("cannot listen to {name}: {e}"),
            }
        }
        let mut hup = signal(SignalKind::hangup()).ok();
        loop {
            let any_stop = futures::future::select_all(
                stops
                    .iter_mut()
                    .map(|(name, s)| Box::pin(async move { s.recv().await.map(|_| *name) })),
            );
            let hangup = async {
                match hup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                (name, _, _) = any_stop => {
                    let name = name.unwrap_or("a stop signal");
                    if self.stop.is_cancelled() {
                        tracing::warn!(signal = name, "second stop signal: ending the drain now");
                        self.hurry.cancel();
                    } else {
                        tracing::info!(signal = name, "stop signal received: stopping gracefully (a second one ends the drain at once)");
                        self.stop.cancel();
                    }
                }
                _ = hangup => {
                    tracing::info!(signal = "SIGHUP", "reading the gateway file again");
                    self.reload.notify_waiters();
                }
            }
        }
    }

    #[cfg(not(unix))]
    async fn listen(self) {
        loop {
            if tokio::signal::ctrl_c().await.is_err() {
                return;
            }
            if self.stop.is_cancelled() {
                self.hurry.cancel();
            } else {
                self.stop.cancel();
            }
        }
    }
}

/// Resolves at the first stop signal (see [`Signals`]).
pub(crate) async fn shutdown_signal() {
    Signals::install().stop.cancelled_owned().await
}

/// When, after a configuration map was applied, the heap's free memory is given back: once
/// the configurations have started, and once the status of their nodes was written.
const TRIM_AFTER: [Duration; 2] = [Duration::from_secs(3), Duration::from_secs(30)];

/// Gives the heap's free pages back to the system at each of `TRIM_AFTER` after a
/// notification (one that comes meanwhile starts them again). A large configuration map
/// leaves much memory freed but kept by the allocator (the map's parsing, the first status
/// write of every node): with 10,000 configurations, 20 of 82 MB.
async fn give_back_free_memory(wake: Arc<Notify>) {
    loop {
        wake.notified().await;
        'again: loop {
            for wait in TRIM_AFTER {
                tokio::select! {
                    _ = wake.notified() => continue 'again,
                    _ = tokio::time::sleep(wait) => {}
                }
                #[cfg(all(target_os = "linux", target_env = "gnu"))]
                let _ = tokio::task::spawn_blocking(|| {
                    // SAFETY: malloc_trim only releases free memory of glibc's own heap; it
                    // takes no pointer and may be called from any thread.
                    unsafe { libc::malloc_trim(0) }
                })
                .await;
            }
            break;
        }
    }
}

/// Raises the soft limit on open file descriptors to the hard one, so that a server holding
/// many connections runs out of them as late as the system allows.
fn raise_fd_limit() {
    #[cfg(unix)]
    {
        use nix::sys::resource::{Resource, getrlimit, setrlimit};
        if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
            && soft < hard
            && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
        {
            tracing::debug!("cannot raise the file descriptor limit from {soft} to {hard}: {e}");
        }
    }
}

/// Runs `main` on a new multi-threaded tokio runtime and turns its outcome into the process
/// exit code: the shared `main` of the `portico` binary and of every user gateway.
pub(crate) fn block_on_main<E: std::fmt::Display>(
    main: impl std::future::Future<Output = Result<(), E>>,
) -> std::process::ExitCode {
    raise_fd_limit();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(main) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
