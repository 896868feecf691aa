//! `portico`: run, validate and serve Portico gateways (SPEC §10).
//!
//! `portico run FILE` runs a gateway file on a laptop or in a pod; `portico validate FILE`
//! checks one and lists every problem; `portico transformer FILE` runs only the transformer
//! (for framework-independent gateways that post their own events).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use portico::cli::{GatewayArgs, LogArgs};
use portico::dispatch::Dispatcher;
use portico::metrics::Metrics;
use portico::pipeline::Pipeline;
use portico::runtime::{Processor, run_gateway, shutdown_signal};
use portico::spec::{Gateway, GatewayFile};
use portico::status::StatusBoard;
use portico::transform::Transformer;
use portico::{ConfigContext, Configuration, GatewayConfig};
use std::sync::Arc;

#[derive(Debug, Parser)]
#[command(name = "portico", version, about = "Portico: an event-gateway framework", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    log: LogArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a gateway file: its configurations, the transformer and the watchers.
    Run {
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// Check a gateway file and every configuration in it; exit non-zero listing every problem.
    Validate {
        /// The gateway file.
        file: std::path::PathBuf,
    },
    /// Run only the transformer of a gateway file: for gateways that post their own events.
    Transformer {
        #[command(flatten)]
        gateway: GatewayArgs,
    },
}

/// Picks the processor of a gateway from its spec (SPEC §2).
fn processor_for(gateway: &Gateway) -> Result<Processor, String> {
    let spec = &gateway.spec;
    if spec.rpc_port.is_some() {
        return Err(format!(
            "gateway `{}` sets rpcPort (gRPC style), which this version of portico does not run yet",
            gateway.metadata.name
        ));
    }
    if spec.http_server_port.is_some() {
        return Err(format!(
            "gateway `{}` sets httpServerPort (HTTP style), which this version of portico does not run yet",
            gateway.metadata.name
        ));
    }
    Ok(match portico_gateways::builtin(&spec.gateway_type) {
        Some(executor) => Processor::Core(executor),
        None => Processor::Independent,
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli.log.init();
    match cli.command {
        Command::Validate { file } => validate(&file),
        Command::Run { gateway } => serve(gateway, processor_for),
        Command::Transformer { gateway } => serve(gateway, |_| Ok(Processor::Independent)),
    }
}

fn serve(
    args: GatewayArgs,
    choose: impl FnOnce(&Gateway) -> Result<Processor, String>,
) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut options = args.options();
    // NATS JetStream and Kafka watchers (dispatchMechanism NATS / Kafka).
    options.senders = portico_bus::factory();
    match rt.block_on(run_gateway(options, choose, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `portico validate FILE`.
fn validate(file: &std::path::Path) -> ExitCode {
    let loaded = match GatewayFile::load(file) {
        Ok(f) => f,
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("{e}");
            }
            eprintln!("{}: {} problem(s)", file.display(), errors.0.len());
            return ExitCode::FAILURE;
        }
    };
    let mut problems = Vec::new();
    match processor_for(&loaded.gateway) {
        Err(e) => problems.push(e),
        Ok(Processor::Independent) => {}
        Ok(Processor::Core(executor)) => {
            // Validation dispatches nothing: a pipeline with no watchers will do.
            let metrics = Metrics::new();
            let gateway = &loaded.gateway;
            let pipeline = Pipeline::new(
                Transformer::new(&gateway.metadata.name, &gateway.spec.gateway_type, "1.0"),
                Dispatcher::start(Vec::new(), &metrics),
                metrics.clone(),
            );
            let gateway_config =
                GatewayConfig::new(&gateway.metadata.name, gateway.namespace(), pipeline);
            let board = Arc::new(StatusBoard::new(metrics, Vec::new()));
            for (src, value) in &loaded.configurations {
                let ctx = ConfigContext::new(
                    Configuration::new(src.clone(), value.clone()),
                    gateway_config.clone(),
                    board.clone(),
                );
                if let Err(e) = executor.dyn_validate(&ctx) {
                    problems.push(format!(
                        "{}: configuration `{src}`: {}",
                        file.display(),
                        e.message()
                    ));
                }
            }
        }
    }
    if problems.is_empty() {
        println!(
            "{}: gateway `{}` is valid ({} configuration(s))",
            file.display(),
            loaded.gateway.metadata.name,
            loaded.configurations.len()
        );
        ExitCode::SUCCESS
    } else {
        for p in &problems {
            eprintln!("{p}");
        }
        eprintln!("{}: {} problem(s)", file.display(), problems.len());
        ExitCode::FAILURE
    }
}
