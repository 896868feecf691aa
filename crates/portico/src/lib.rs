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
//! #     type Config = ();
//! #     fn validate(&self, _: &portico::ConfigContext) -> Result<(), portico::ConfigError> { Ok(()) }
//! #     async fn start_config(&self, ctx: portico::ConfigContext, (): ()) -> Result<(), portico::ConfigError> {
//! #         ctx.running(); ctx.stopped().await; Ok(())
//! #     }
//! # }
//! fn main() -> std::process::ExitCode {
//!     portico::run(MyExecutor)
//! }
//! ```
//!
//! What this crate offers a gateway author:
//!
//! - the executor SDK at the root: [`ConfigExecutor`], the [`ConfigContext`] each
//!   configuration is handed, [`Event`], [`run`];
//! - [`testing`]: a gateway in a box, to test an executor without files, servers or watchers;
//! - [`cloudevents`]: the CloudEvents 1.0 model and its JSON and HTTP codecs;
//! - [`grpc_server`] and [`proto`]: a gateway written as a gRPC server, in Rust;
//! - [`http1`]: the HTTP/1.1 serving path, for executors that take events over HTTP;
//! - [`secret`]: secrets that never print, and where they are read from;
//! - [`watcher`]: watchers of other kinds, behind a [`watcher::SenderFactory`]; [`filter`]:
//!   which events a watcher gets (CEL, or the CloudEvents Subscriptions API's dialects);
//! - [`env`]: the environment contract of a gateway's processes; [`ingest`]: the format of
//!   events posted to the transformer; [`cli`]: the `portico` command line.
//!
//! One event's way through the house: the source hands it to its [`ConfigContext`]
//! (`executor.rs`), the pipeline makes it a CloudEvent and hands it to the dispatcher
//! (`pipeline.rs`), which queues it for every watcher (and in the durable outbox) and delivers
//! it with retries (`dispatch/mod.rs`) over HTTP (`dispatch/http.rs`).

#![warn(unreachable_pub)]

pub mod cli;
pub mod cloudevents;
mod cluster;
mod configuration;
mod controller;
pub mod coordination;
mod dispatch;
pub mod env;
mod error;
mod event;
mod executor;
pub mod filter;
pub mod grpc_server;
pub mod http1;
pub mod ingest;
mod kube_status;
mod metrics;
mod pipeline;
mod policy;
mod processor;
pub mod proto;
mod ratelog;
mod rates;
pub mod reference;
mod runtime;
pub mod secret;
pub mod security;
mod server;
mod source;
mod spec;
mod status;
mod supervisor;
pub mod testing;
mod trace;
mod wake;

#[cfg(test)]
mod tests;

#[cfg(feature = "bench")]
#[doc(hidden)]
pub mod bench;

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

pub use configuration::{ConfigId, Configuration};
pub use dispatch::{Ack, Delivered};
pub use error::{ConfigError, ConfigErrorKind, DispatchError};
pub use event::Event;
pub use executor::{
    Checked, ConfigContext, ConfigExecutor, DynConfigExecutor, GatewayConfig, Placement,
    SharedExecutor, StopReason,
};
pub use metrics::RejectReason;
pub use pipeline::{Submit, Wait};
pub use secret::{Secret, SecretSource};
pub use status::{Node, Phase};

/// Watchers Portico has no built-in client for: a [`watcher::SenderFactory`] makes the
/// [`watcher::Sender`] of such a watcher (the `portico` binary registers NATS JetStream and
/// Kafka ones this way).
pub mod watcher {
    pub use crate::dispatch::{Sender, SenderFactory};
    pub use crate::error::{BoxError, BoxFuture, DeliveryError};
    pub use crate::spec::watchers::{HeaderValueFrom, Target, WatcherHeader};
    pub use crate::spec::{KafkaDispatch, NatsDispatch};
}

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
/// variable), serves until SIGTERM, SIGINT, SIGQUIT, SIGUSR1 or SIGUSR2, then stops the
/// configurations and drains the events in flight (a second such signal ends the drain at
/// once). SIGHUP reads the gateway file again. Returns the process exit code.
pub fn run<E: ConfigExecutor>(executor: E) -> ExitCode {
    let args = UserGatewayCli::parse();
    args.log.init();
    let executor: SharedExecutor = Arc::new(executor);
    runtime::block_on_main(async move {
        runtime::run_gateway(
            args.gateway.options(),
            move |_| Ok(runtime::Processor::Core(executor)),
            runtime::Signals::install(),
        )
        .await
    })
}
