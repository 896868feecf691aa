//! The `portico` command line: run, validate and serve gateways, run the Kubernetes
//! controller, print the CRD.
//!
//! `portico run FILE` runs a gateway file on a laptop or in a pod; `portico validate FILE`
//! checks one and lists every problem; `portico transformer FILE` runs only the transformer
//! (for framework-independent gateways that post their own events); `portico controller` runs
//! the Kubernetes controller; `portico crd` prints the Gateway CRD. `portico status`, `tail`,
//! `send` and `dead-letters` talk to a running gateway ([`client`]); `portico completions`
//! prints a shell's completion script. The `portico` binary is
//! [`main`] with the built-in gateways; a user gateway built on [`crate::run`] shares the
//! flags of `run` ([`GatewayArgs`]) and the logging flags ([`LogArgs`]).

mod args;
mod child;
mod client;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{CommandFactory, Parser, Subcommand};

pub use args::{GatewayArgs, LogArgs, LogFormat};

use crate::configuration::Configuration;
use crate::dispatch::{Dispatcher, SenderFactory};
use crate::env;
use crate::executor::{ConfigContext, GatewayConfig, SharedExecutor};
use crate::metrics::Metrics;
use crate::pipeline::{Pipeline, Transformer};
use crate::processor::grpc::GrpcProcessor;
use crate::processor::http::{HttpProcessor, HttpSettings};
use crate::runtime::{
    Processor, ProcessorError, Signals, block_on_main, run_gateway, shutdown_signal,
};
use crate::spec::{Gateway, GatewayFile};
use crate::status::StatusBoard;

/// What the `portico` binary brings beside this crate: the built-in gateways and the
/// clients of the event-bus watchers.
#[derive(Clone)]
pub struct Builtins {
    /// The executor of a built-in gateway type, `None` for a type that is not built in.
    pub executor: fn(&str) -> Option<SharedExecutor>,
    /// The built-in gateway types, for the messages that name them.
    pub types: &'static [&'static str],
    /// The senders of NATS JetStream and Kafka watchers (`dispatchMechanism`).
    pub senders: Option<Arc<dyn SenderFactory>>,
    /// The coordination stores of replicas outside a cluster (`spec.coordination.nats`).
    pub stores: Option<Arc<dyn crate::coordination::StoreFactory>>,
}

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
        /// The user's server to start beside the gateway (`-- COMMAND ARGS…`); it gets the
        /// gateway's environment (`TRANSFORMER_PORT`, `GATEWAY_NAME`, …) and is stopped when
        /// portico exits.
        #[arg(last = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// Check gateway files and every configuration in them; exit non-zero listing every
    /// problem. Takes files and directories as `kubectl apply -f` does, and checks each
    /// Gateway with the ConfigMap it names.
    Validate {
        /// Gateway files and directories of them.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Run only the transformer of a gateway file: for gateways that post their own events.
    Transformer {
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// Run the Kubernetes controller: each Gateway labelled with its instance id becomes a
    /// StatefulSet of `spec.replicas` pods with a headless Service (and a Service when
    /// `serviceSpec` is set).
    Controller {
        /// Only Gateways labelled `portico.dev/controller-instance-id=<this>` are reconciled.
        #[arg(long, env = env::GATEWAY_CONTROLLER_INSTANCE_ID)]
        instance_id: String,
        /// Only this namespace (default: every namespace).
        #[arg(long, env = "PORTICO_CONTROLLER_NAMESPACE")]
        namespace: Option<String>,
        /// `TRANSFORMER_PORT` given to the gateways' containers.
        #[arg(long, default_value_t = env::DEFAULT_TRANSFORMER_PORT)]
        transformer_port: u16,
        /// Port of the controller's status page (`/`: every Gateway it manages; `/status`:
        /// the same as JSON; `/healthz`); 0 picks a free one.
        #[arg(long, env = "PORTICO_CONTROLLER_PORT", default_value_t = 9301)]
        port: u16,
        /// Address the controller's status page listens on.
        #[arg(long, env = "PORTICO_CONTROLLER_ADDRESS", default_value = "127.0.0.1")]
        listen: std::net::IpAddr,
    },
    /// Print the Gateway CustomResourceDefinitions (YAML) for `kubectl apply -f -`: Portico's
    /// (`gateways.portico.dev`) and, with the same schema, Argo Events v0.6's
    /// (`gateways.argoproj.io`), which the controller also reconciles.
    Crd {
        /// Only this group's: `portico.dev` or `argoproj.io`.
        #[arg(long, value_parser = ["portico.dev", "argoproj.io"])]
        group: Option<String>,
    },
    /// Show a running gateway: its watchers, its outbox, and each configuration's phase,
    /// restarts and message (`GET /status`).
    Status(client::StatusArgs),
    /// Print the events a running gateway accepts, as they come.
    Tail(client::TailArgs),
    /// Post an event to a running gateway: a CloudEvent in JSON (`--json`, `--file`), a
    /// batch of them, or one built from attribute flags (`--type T --source S …`).
    Send(client::SendArgs),
    /// List a running gateway's dead letters, or send them back through delivery.
    #[command(subcommand)]
    DeadLetters(client::DeadLetters),
    /// Print the completion script of a shell: `portico completions bash >
    /// /etc/bash_completion.d/portico`; zsh: a file `_portico` in a directory of `$fpath`;
    /// fish: `~/.config/fish/completions/portico.fish`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// The `portico` command: parses the command line and runs what it says. Returns the process
/// exit code.
pub fn main(builtins: Builtins) -> ExitCode {
    let mut cli = Cli::parse();
    if matches!(
        cli.command,
        Command::Status(_) | Command::Tail(_) | Command::Send(_) | Command::DeadLetters(_)
    ) {
        cli.log.log = client::log_filter(&cli.log.log);
    }
    cli.log.init();
    match cli.command {
        Command::Validate { files } => validate(&files, &builtins),
        Command::Run {
            mut gateway,
            command,
        } => {
            let limits = gateway.options().http_limits;
            let builtins = &builtins;
            let choose = move |g: &Gateway| {
                let chosen = processor_for(g, builtins, limits);
                if let (Ok(Processor::Independent), Some(_)) = (&chosen, &g.spec.config_map) {
                    tracing::warn!("{}", independent_note(g, "its configurations", builtins));
                }
                chosen
            };
            if command.is_empty() {
                serve(gateway, builtins, choose)
            } else {
                child::serve_with(&mut gateway, &command, |g| serve(g, builtins, choose))
            }
        }
        Command::Transformer { gateway } => {
            serve(gateway, &builtins, |_| Ok(Processor::Independent))
        }
        Command::Controller {
            instance_id,
            namespace,
            transformer_port,
            port,
            listen,
        } => {
            let mut options = crate::controller::ControllerOptions::new(instance_id);
            options.namespace = namespace;
            options.transformer_port = transformer_port;
            block_on_main(async move {
                let page = crate::controller::bind_page(std::net::SocketAddr::new(listen, port))
                    .await
                    .map_err(|e| e.to_string())?;
                let (client, _) = crate::cluster::client().await.map_err(|e| e.to_string())?;
                crate::controller::run(client, options, Some(page), shutdown_signal()).await;
                Ok::<(), String>(())
            })
        }
        Command::Crd { group } => match crate::spec::crd_yaml(
            &crate::spec::GatewayGroup::ALL
                .into_iter()
                .filter(|g| group.as_deref().is_none_or(|name| name == g.group()))
                .collect::<Vec<_>>(),
        ) {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Status(args) => client::status(args),
        Command::Tail(args) => client::tail(args),
        Command::Send(args) => client::send(args),
        Command::DeadLetters(command) => client::dead_letters(command),
        Command::Completions { shell } => client::completions(shell, Cli::command()),
    }
}

/// The port of the user's gRPC server when the gateway is gRPC style (`spec.rpcPort` set;
/// `GATEWAY_PROCESSOR_GRPC_SERVER_PORT` takes precedence over its value), else `None`.
fn grpc_port(gateway: &Gateway) -> Result<Option<u16>, ProcessorError> {
    let Some(port) = gateway.spec.rpc_port else {
        return Ok(None);
    };
    match env::var(env::GATEWAY_PROCESSOR_GRPC_SERVER_PORT) {
        None => Ok(Some(port.0)),
        Some(text) => match text.trim().parse::<u16>() {
            Ok(p) if p > 0 => Ok(Some(p)),
            _ => Err(ProcessorError::GrpcPort(text)),
        },
    }
}

/// The HTTP-style settings of a gateway that sets `httpServerPort` (or whose environment sets
/// `GATEWAY_PROCESSOR_SERVER_HTTP_PORT`), `None` for other styles.
fn http_settings(gateway: &Gateway) -> Result<Option<HttpSettings>, ProcessorError> {
    let port = gateway.spec.http_server_port.map(|p| p.0);
    if port.is_none() && env::var(env::GATEWAY_PROCESSOR_SERVER_HTTP_PORT).is_none() {
        return Ok(None);
    }
    Ok(Some(HttpSettings::from_env(port)?))
}

/// Picks the processor of a gateway from its spec: `rpcPort` set ⇒ gRPC style; else
/// `httpServerPort` set ⇒ HTTP style; else a built-in `type` ⇒ core style; else only the
/// transformer runs.
fn processor_for(
    gateway: &Gateway,
    builtins: &Builtins,
    limits: crate::http1::Limits,
) -> Result<Processor, ProcessorError> {
    if let Some(port) = grpc_port(gateway)? {
        let processor = GrpcProcessor::new(port, gateway.spec.grpc_protocol)?;
        return Ok(Processor::Grpc(Arc::new(processor)));
    }
    if let Some(mut settings) = http_settings(gateway)? {
        settings.limits = limits;
        let processor = HttpProcessor::start(settings).map_err(ProcessorError::Http)?;
        return Ok(Processor::Http(Arc::new(processor)));
    }
    Ok(match (builtins.executor)(&gateway.spec.gateway_type) {
        Some(executor) => Processor::Core(executor),
        None => Processor::Independent,
    })
}

fn serve(
    args: GatewayArgs,
    builtins: &Builtins,
    choose: impl FnOnce(&Gateway) -> Result<Processor, ProcessorError>,
) -> ExitCode {
    let mut options = args.options();
    options.senders = crate::runtime::SenderFactories(builtins.senders.clone());
    options.stores = crate::runtime::StoreFactories(builtins.stores.clone());
    block_on_main(async move { run_gateway(options, choose, Signals::install()).await })
}

/// What a gateway whose type runs nowhere in this process does with its configurations.
fn independent_note(gateway: &Gateway, configurations: &str, builtins: &Builtins) -> String {
    format!(
        "gateway `{}` has type `{}`, which this program does not run (its built-in types: {}), and names no rpcPort or httpServerPort: {configurations} are not run here. The gateway relays the events a program of its own posts to the transformer (framework-independent style)",
        gateway.metadata.name,
        gateway.spec.gateway_type,
        builtins.types.join(", ")
    )
}

/// `portico validate FILE…`: every gateway of the files and directories, each with its
/// ConfigMap.
fn validate(sources: &[PathBuf], builtins: &Builtins) -> ExitCode {
    let shown = sources
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(" ");
    let gateways = match GatewayFile::load_all(sources, crate::spec::file::DEFAULT_MAX_FILE_BYTES) {
        Ok(g) => g,
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("{e}");
            }
            eprintln!("{shown}: {} problem(s)", errors.0.len());
            return ExitCode::FAILURE;
        }
    };
    let failed = gateways
        .iter()
        .filter(|g| !validate_gateway(g, builtins))
        .count();
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        if gateways.len() > 1 {
            eprintln!(
                "{shown}: {failed} of {} gateways have problems",
                gateways.len()
            );
        }
        ExitCode::FAILURE
    }
}

/// Checks one gateway and its configurations, printing what it finds; true when it is valid.
fn validate_gateway(loaded: &GatewayFile, builtins: &Builtins) -> bool {
    let file = &loaded.path;
    let mut problems = Vec::new();
    for w in loaded.gateway.spec.warnings() {
        eprintln!("{}: warning: {w}", file.display());
    }
    for n in crate::spec::watchers::notes(&loaded.gateway) {
        eprintln!("{}: note: {n}", file.display());
    }
    let spec = &loaded.gateway.spec;
    for (set, field) in [
        (spec.deploy_spec.is_some(), "deploySpec"),
        (spec.service_spec.is_some(), "serviceSpec"),
    ] {
        if set {
            eprintln!(
                "{}: note: spec.{field} is for the controller, which makes the gateway's pod and Service of it in a cluster; `portico run FILE` does not use it",
                file.display()
            );
        }
    }
    // The user's HTTP server judges its own configurations: only its settings are checked here
    // (without starting the framework's server).
    let chosen = match http_settings(&loaded.gateway) {
        Ok(Some(_)) => Ok(Processor::Independent),
        Ok(None) => processor_for(&loaded.gateway, builtins, Default::default()),
        Err(e) => Err(e),
    };
    let mut not_run = false;
    // Portico's own keys (`filter`, `rateLimit`), whoever runs the configuration.
    let own = match &chosen {
        Ok(Processor::Core(executor)) => executor.dyn_own_keys(),
        _ => &[],
    };
    for (src, value) in &loaded.configurations {
        if let Err(e) = crate::policy::ConfigPolicy::read(value, own) {
            problems.push(format!(
                "{}: configuration `{src}`: {}",
                file.display(),
                e.message()
            ));
        }
    }
    match chosen {
        Err(e) => problems.push(format!("gateway `{}`: {e}", loaded.gateway.metadata.name)),
        Ok(Processor::Independent) => {
            if http_settings(&loaded.gateway).ok().flatten().is_none()
                && !loaded.configurations.is_empty()
            {
                not_run = true;
                eprintln!(
                    "{}: note: {}",
                    file.display(),
                    independent_note(
                        &loaded.gateway,
                        &format!("its {} configuration(s)", loaded.configurations.len()),
                        builtins
                    )
                );
            }
        }
        // Only the user's server knows its configurations; it is asked when they start.
        Ok(Processor::Grpc(_) | Processor::Http(_)) => {}
        Ok(Processor::Core(executor)) => {
            let gateway = &loaded.gateway;
            // Validation dispatches nothing: a pipeline with no watchers will do.
            let metrics = Metrics::new();
            let pipeline = Pipeline::new(
                Transformer::new(&gateway.metadata.name, &gateway.spec.gateway_type, "1.0"),
                Dispatcher::start(Vec::new(), &metrics),
                metrics.clone(),
            );
            let gateway_config =
                GatewayConfig::new(&gateway.metadata.name, gateway.namespace(), pipeline)
                    .with_require_auth(gateway.spec.security.require_auth);
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
                for w in ctx.warnings() {
                    eprintln!("{}: configuration `{src}`: warning: {w}", file.display());
                }
            }
        }
    }
    if problems.is_empty() {
        println!(
            "{}: gateway `{}` is valid ({} configuration(s){})",
            file.display(),
            loaded.gateway.metadata.name,
            loaded.configurations.len(),
            if not_run {
                ", not run by this program"
            } else {
                ""
            }
        );
        true
    } else {
        for p in &problems {
            eprintln!("{p}");
        }
        eprintln!("{}: {} problem(s)", file.display(), problems.len());
        false
    }
}
