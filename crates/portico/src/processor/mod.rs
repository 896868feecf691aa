//! The framework's side of gateways whose configurations run in the user's own server
//!: each processor is a [`ConfigExecutor`](crate::ConfigExecutor), so the
//! supervisor starts, stops and restarts them like any Rust executor.

pub(crate) mod grpc;
pub(crate) mod http;
