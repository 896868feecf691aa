//! The user's side of the gRPC style, for gateways written in Rust: implement [`GrpcGateway`]
//! and call [`run`] (or [`serve`]), and the program is a `GatewayProcessor` server
//! (`proto/portico/v1/gateway.proto`) that any Portico gateway with `rpcPort` can drive.
//!
//! Each `RunGateway` call runs [`GrpcGateway::run`] in its own task, with an [`EventSender`]
//! feeding the response stream (bounded: a slow framework pushes back on the gateway). When
//! the framework cancels the stream (the configuration stopped or changed), the `run` future
//! is dropped, so a gateway stops by doing nothing at all.
//!
//! ```no_run
//! use portico::grpc_server::{self, EventSender, GrpcGateway};
//! use portico::proto::v1::GatewayConfig;
//!
//! struct Hello;
//!
//! impl GrpcGateway for Hello {
//!     async fn run(&self, config: GatewayConfig, events: EventSender) -> Result<(), tonic::Status> {
//!         loop {
//!             events.send(portico::Event::new(format!("hello from {}", config.src))).await?;
//!             tokio::time::sleep(std::time::Duration::from_secs(1)).await;
//!         }
//!     }
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     grpc_server::run(Hello)
//! }
//! ```

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status};

use crate::error::ConfigError;
use crate::event::Event;
use crate::proto::v1::gateway_processor_server::{GatewayProcessor, GatewayProcessorServer};
use crate::proto::v1::{self as pb, GatewayConfig, Validation};

/// Why [`run`] ended.
#[derive(Debug, thiserror::Error)]
enum ServeError {
    #[error("{0}")]
    Listen(crate::http1::ListenError),
    #[error("the gRPC server failed: {0}")]
    Serve(tonic::transport::Error),
}

/// Events buffered per stream before [`EventSender::send`] waits for the framework.
const STREAM_BUFFER: usize = 256;

/// A gateway served over gRPC: one [`run`](GrpcGateway::run) per configuration.
pub trait GrpcGateway: Send + Sync + 'static {
    /// Checks a configuration before it runs; an error becomes the node's message and the
    /// configuration does not run until it changes. The default takes everything.
    fn validate(&self, config: &GatewayConfig) -> Result<(), ConfigError> {
        let _ = config;
        Ok(())
    }

    /// Runs one configuration, sending its events through `events`. Returning `Ok(())` ends
    /// the stream (the node becomes `Completed`); an error status ends it with that status
    /// (`INVALID_ARGUMENT`: `Error` until the configuration changes; `UNAVAILABLE`: retried).
    /// When the framework cancels the stream, this future is dropped.
    fn run(
        &self,
        config: GatewayConfig,
        events: EventSender,
    ) -> impl Future<Output = Result<(), Status>> + Send;
}

/// Sends one configuration's events to the framework.
#[derive(Debug, Clone)]
pub struct EventSender {
    tx: mpsc::Sender<Result<pb::Event, Status>>,
}

impl EventSender {
    /// Sends an event, waiting while the stream is full. Fails with `CANCELLED` once the
    /// framework has cancelled the stream (returning that error from `run` is fine).
    pub async fn send(&self, event: impl Into<Event>) -> Result<(), Status> {
        self.tx
            .send(Ok(to_proto(event.into())))
            .await
            .map_err(|_| Status::cancelled("the framework cancelled the stream"))
    }

    /// Resolves when the framework has cancelled the stream.
    pub async fn closed(&self) {
        self.tx.closed().await
    }
}

fn to_proto(e: Event) -> pb::Event {
    pb::Event {
        data: e.payload.to_vec(),
        content_type: e.content_type.unwrap_or_default(),
        extensions: e.extensions.into_iter().collect(),
    }
}

impl GatewayConfig {
    /// Parses the configuration value (YAML or JSON) into `T`; the error names the line,
    /// column and field (and becomes an `INVALID_ARGUMENT` status with `?` in
    /// [`GrpcGateway::run`]).
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, ConfigError> {
        crate::spec::parse_config(&self.config)
    }
}

/// A configuration error as the gRPC contract says it: `INVALID_ARGUMENT` for a wrong
/// configuration (`Error` until it changes), `UNAVAILABLE` for a failure (retried).
impl From<ConfigError> for Status {
    fn from(e: ConfigError) -> Status {
        match e.kind() {
            crate::ConfigErrorKind::Invalid => Status::invalid_argument(e.message()),
            crate::ConfigErrorKind::Failed => Status::unavailable(e.message()),
        }
    }
}

struct Service<G> {
    gateway: Arc<G>,
}

#[tonic::async_trait]
impl<G: GrpcGateway> GatewayProcessor for Service<G> {
    type RunGatewayStream = ReceiverStream<Result<pb::Event, Status>>;

    async fn run_gateway(
        &self,
        request: Request<GatewayConfig>,
    ) -> Result<Response<Self::RunGatewayStream>, Status> {
        let config = request.into_inner();
        self.gateway
            .validate(&config)
            .map_err(|e| Status::invalid_argument(e.message()))?;
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let gateway = self.gateway.clone();
        tokio::spawn(async move {
            let src = config.src.clone();
            let events = EventSender { tx: tx.clone() };
            tracing::info!(src = %src, id = %config.id, "configuration started");
            tokio::select! {
                _ = tx.closed() => {
                    tracing::info!(src = %src, "configuration stopped: the framework cancelled the stream");
                }
                r = gateway.run(config, events) => match r {
                    Ok(()) => tracing::info!(src = %src, "configuration completed"),
                    Err(status) => {
                        tracing::warn!(src = %src, "configuration ended: {status}");
                        let _ = tx.send(Err(status)).await;
                    }
                },
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn validate_gateway(
        &self,
        request: Request<GatewayConfig>,
    ) -> Result<Response<Validation>, Status> {
        let answer = match self.gateway.validate(request.get_ref()) {
            Ok(()) => Validation {
                valid: true,
                reason: String::new(),
            },
            Err(e) => Validation {
                valid: false,
                reason: e.message().to_string(),
            },
        };
        Ok(Response::new(answer))
    }
}

/// Serves `gateway` on `listener` until `shutdown` resolves.
pub async fn serve<G: GrpcGateway>(
    gateway: G,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let service = GatewayProcessorServer::new(Service {
        gateway: Arc::new(gateway),
    })
    .max_encoding_message_size(usize::MAX);
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(service)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
}

/// Runs `gateway` as a gRPC server on `127.0.0.1:$GATEWAY_PROCESSOR_GRPC_SERVER_PORT` until
/// SIGINT or SIGTERM; logs go to stderr (filter in `PORTICO_LOG`, default `info`). Returns
/// the process exit code: a gateway's whole `main`.
pub fn run<G: GrpcGateway>(gateway: G) -> ExitCode {
    let filter = crate::env::var("PORTICO_LOG").unwrap_or_else(|| "info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&filter)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let var = crate::env::GATEWAY_PROCESSOR_GRPC_SERVER_PORT;
    let port = match crate::env::var(var).map(|p| p.trim().parse::<u16>()) {
        Some(Ok(p)) => p,
        Some(Err(_)) => {
            eprintln!("error: {var} is not a port number");
            return ExitCode::FAILURE;
        }
        None => {
            eprintln!(
                "error: {var} is not set: set it to the gateway's rpcPort, or start this program with `portico run GATEWAY_FILE -- PROGRAM`"
            );
            return ExitCode::FAILURE;
        }
    };
    crate::runtime::block_on_main(async move {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Listen(crate::http1::ListenError { addr, source }))?;
        tracing::info!(addr = %addr, "gRPC gateway server listening");
        serve(gateway, listener, crate::runtime::shutdown_signal())
            .await
            .map_err(ServeError::Serve)
    })
}
