//! `portico`: run, validate and serve Portico gateways, with every built-in gateway type and
//! the NATS JetStream and Kafka watchers. `portico --help` lists the commands.

use std::process::ExitCode;

fn main() -> ExitCode {
    portico::cli::main(portico::cli::Builtins {
        executor: portico_gateways::builtin,
        types: portico_gateways::BUILTIN_TYPES,
        senders: Some(portico_bus::factory()),
        stores: Some(portico_bus::stores()),
    })
}
