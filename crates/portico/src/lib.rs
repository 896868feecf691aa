//! # Portico
//!
//! An event-gateway framework. A gateway runs many **configurations** taken from a ConfigMap
//! (or a local file), starts, stops and restarts them live as that map changes, turns each
//! event they produce into a **CloudEvent**, and delivers it to its **watchers**.
//!
//! A gateway in Rust implements [`ConfigExecutor`] and its `main` is one call:
//!
//! ```no_run
//! # struct MyExecutor;
//! # impl portico::ConfigExecutor for MyExecutor {
//! #     fn validate(&self, _: &portico::ConfigContext) -> Result<(), portico::ConfigError> { Ok(()) }
//! #     async fn start_config(&self, ctx: portico::ConfigContext) -> Result<(), portico::ConfigError> {
//! #         ctx.running(); ctx.stopped().await; Ok(())
//! #     }
//! # }
//! fn main() -> std::process::ExitCode {
//!     portico::run(MyExecutor)
//! }
//! ```
//!
//! A gateway written as a gRPC server (any language) implements
//! `proto/portico/v1/gateway.proto`; the framework drives it with
//! [`processor::grpc::GrpcProcessor`]. In Rust, [`grpc_server`] makes such a server a trait
//! impl and one call.
//!
//! One event's way through the house: [`source`] → [`supervisor`] → executor →
//! [`pipeline`] ([`transform`], then [`dispatch`]) → watchers. Status flows back through
//! [`status`] to `GET /status` ([`server`]).

pub mod cli;
pub mod cloudevents;
pub mod cluster;
pub mod configuration;
pub mod controller;
pub mod dispatch;
pub mod env;
pub mod event;
pub mod executor;
pub mod grpc_server;
pub mod http1;
pub mod ingest;
pub mod kube_status;
pub mod metrics;
pub mod pipeline;
pub mod processor;
pub mod proto;
pub mod runtime;
pub mod server;
pub mod source;
pub mod spec;
pub mod status;
pub mod supervisor;
pub mod testing;
pub mod transform;
mod wake;

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

pub use configuration::{ConfigId, Configuration};
pub use event::Event;
pub use executor::{
    ConfigContext, ConfigError, ConfigErrorKind, ConfigExecutor, DispatchError, DynConfigExecutor,
    GatewayConfig, SharedExecutor,
};
pub use status::{Node, Phase};

/// The command line of a user gateway built on [`run`].
#[derive(Debug, Parser)]
#[command(
    about = "A Portico gateway: runs the configurations of a gateway file with this program's executor"
)]
struct UserGatewayCli {
    #[command(flatten)]
    gateway: cli::GatewayArgs,
    #[command(flatten)]
    log: cli::LogArgs,
}

/// Runs a gateway whose every configuration is run by `executor`: parses the command line
/// (`GATEWAY_FILE`, `--transformer-port`, `--log-format`, …, each with its environment
/// variable), serves until SIGINT or SIGTERM, then stops the configurations and drains the
/// events in flight. Returns the process exit code.
pub fn run<E: ConfigExecutor>(executor: E) -> ExitCode {
    let args = UserGatewayCli::parse();
    args.log.init();
    let executor: SharedExecutor = Arc::new(executor);
    runtime::block_on_main(runtime::run_gateway(
        args.gateway.options(),
        move |_| Ok(runtime::Processor::Core(executor)),
        runtime::shutdown_signal(),
    ))
}
