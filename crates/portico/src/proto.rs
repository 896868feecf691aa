//! The gRPC contracts, generated at build time from `proto/` (see `build.rs`).
//!
//! [`v1`] is Portico's own `GatewayProcessor` service (gRPC style); [`argo_generic`]
//! is the Argo Events generic event source contract, which a gateway drives when it sets
//! `spec.grpcProtocol: argo-generic`. Both carry client and server code.

/// `portico.v1`: the `GatewayProcessor` service a gRPC-style gateway implements.
pub mod v1 {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("portico.v1");
}

/// `generic`: the Argo Events generic event source (`Eventing.StartEventSource`).
pub mod argo_generic {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("generic");
}
