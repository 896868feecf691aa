//! `portico`: run, validate and serve Portico gateways (SPEC §10).
//!
//! `portico run FILE` runs a gateway file on a laptop or in a pod; `portico validate FILE`
//! checks one and lists every problem; `portico transformer FILE` runs only the transformer
//! (for framework-independent gateways that post their own events); `portico controller` runs
//! the Kubernetes controller; `portico crd` prints the Gateway CRD.

mod child;
mod grpc;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use portico::cli::{GatewayArgs, LogArgs};
use portico::dispatch::Dispatcher;
use portico::metrics::Metrics;
use portico::pipeline::Pipeline;
use portico::processor::http::{HttpProcessor, HttpSettings};
use portico::runtime::{Processor, block_on_main, run_gateway, shutdown_signal};
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
        /// The user's server to start beside the gateway (`-- COMMAND ARGS…`), with the
        /// environment of SPEC §3; stopped when portico exits.
        #[arg(last = true, value_name = "COMMAND")]
        command: Vec<String>,
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
    /// Run the Kubernetes controller: each Gateway labelled with its instance id becomes a
    /// Deployment (and a Service when `serviceSpec` is set).
    Controller {
        /// Only Gateways labelled `portico.dev/controller-instance-id=<this>` are reconciled.
        #[arg(long, env = "GATEWAY_CONTROLLER_INSTANCE_ID")]
        instance_id: String,
        /// Only this namespace (default: every namespace).
        #[arg(long, env = "PORTICO_CONTROLLER_NAMESPACE")]
        namespace: Option<String>,
        /// `TRANSFORMER_PORT` given to the gateways' containers.
        #[arg(long, default_value_t = portico::env::DEFAULT_TRANSFORMER_PORT)]
        transformer_port: u16,
    },
    /// Print the Gateway CustomResourceDefinition (YAML) for `kubectl apply -f -`.
    Crd,
}

/// Picks the processor of a gateway from its spec (SPEC §2).
fn processor_for(gateway: &Gateway) -> Result<Processor, String> {
    let spec = &gateway.spec;
    if let Some(port) = grpc::server_port(gateway)? {
        return grpc::processor(gateway, port);
    }
    if let Some(settings) = http_settings(gateway)? {
        return Ok(Processor::Http(Arc::new(HttpProcessor::start(settings)?)));
    }
    Ok(match portico_gateways::builtin(&spec.gateway_type) {
        Some(executor) => Processor::Core(executor),
        None => Processor::Independent,
    })
}

/// The HTTP-style settings of a gateway that sets `httpServerPort` (or whose environment sets
/// `GATEWAY_PROCESSOR_SERVER_HTTP_PORT`), `None` for other styles.
fn http_settings(gateway: &Gateway) -> Result<Option<HttpSettings>, String> {
    let port = gateway.spec.http_server_port.map(|p| p.0);
    if port.is_none()
        && portico::env::var(portico::env::GATEWAY_PROCESSOR_SERVER_HTTP_PORT).is_none()
    {
        return Ok(None);
    }
    HttpSettings::from_env(port)
        .map(Some)
        .map_err(|e| format!("gateway `{}`: {e}", gateway.metadata.name))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli.log.init();
    match cli.command {
        Command::Validate { file } => validate(&file),
        Command::Run {
            mut gateway,
            command,
        } => {
            if command.is_empty() {
                serve(gateway, processor_for)
            } else {
                child::serve_with(&mut gateway, &command, |g| serve(g, processor_for))
            }
        }
        Command::Transformer { gateway } => serve(gateway, |_| Ok(Processor::Independent)),
        Command::Controller {
            instance_id,
            namespace,
            transformer_port,
        } => {
            let mut options = portico::controller::ControllerOptions::new(instance_id);
            options.namespace = namespace;
            options.transformer_port = transformer_port;
            controller(options)
        }
        Command::Crd => match portico::spec::crd_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

/// `portico controller`.
fn controller(options: portico::controller::ControllerOptions) -> ExitCode {
    block_on_main(async move {
        let client = portico::cluster::client().await?;
        portico::controller::run(client, options, shutdown_signal()).await;
        Ok::<(), String>(())
    })
}

fn serve(
    args: GatewayArgs,
    choose: impl FnOnce(&Gateway) -> Result<Processor, String>,
) -> ExitCode {
    let mut options = args.options();
    // NATS JetStream and Kafka watchers (dispatchMechanism NATS / Kafka).
    options.senders = portico_bus::factory();
    block_on_main(run_gateway(options, choose, shutdown_signal()))
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
    // The user's HTTP server judges its own configurations: only its settings are checked here
    // (without starting the framework's server).
    let chosen = match http_settings(&loaded.gateway) {
        Ok(Some(_)) => Ok(Processor::Independent),
        Ok(None) => processor_for(&loaded.gateway),
        Err(e) => Err(e),
    };
    match chosen {
        Err(e) => problems.push(e),
        Ok(Processor::Independent) => {}
        // Only the user's server knows its configurations; it is asked when they start.
        Ok(Processor::Grpc(_) | Processor::Http(_)) => {}
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
