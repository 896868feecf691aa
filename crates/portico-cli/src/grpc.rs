//! Choosing the gRPC style for a gateway (SPEC §2, §4): `spec.rpcPort` set, with the
//! environment's `GATEWAY_PROCESSOR_GRPC_SERVER_PORT` taking precedence over its value.

use std::sync::Arc;

use portico::env::{self, GATEWAY_PROCESSOR_GRPC_SERVER_PORT};
use portico::processor::grpc::GrpcProcessor;
use portico::runtime::Processor;
use portico::spec::Gateway;

/// The port of the user's gRPC server when the gateway is gRPC style, else `None`.
pub fn server_port(gateway: &Gateway) -> Result<Option<u16>, String> {
    let Some(port) = gateway.spec.rpc_port else {
        return Ok(None);
    };
    match env::var(GATEWAY_PROCESSOR_GRPC_SERVER_PORT) {
        None => Ok(Some(port.0)),
        Some(text) => match text.trim().parse::<u16>() {
            Ok(p) if p > 0 => Ok(Some(p)),
            _ => Err(format!(
                "{GATEWAY_PROCESSOR_GRPC_SERVER_PORT}=`{text}` is not a port number (1–65535); fix or unset it"
            )),
        },
    }
}

/// The gRPC processor of `gateway`, talking to its server on `port`.
pub fn processor(gateway: &Gateway, port: u16) -> Result<Processor, String> {
    let processor = GrpcProcessor::new(port, gateway.spec.grpc_protocol)
        .map_err(|e| format!("gateway `{}`: {e}", gateway.metadata.name))?;
    Ok(Processor::Grpc(Arc::new(processor)))
}
