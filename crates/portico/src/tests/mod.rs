//! Tests of the crate's parts together, with access to what is not public: the supervisor,
//! the configuration sources, the gRPC style, and the Kubernetes paths against the fake API
//! server of `crates/fake-kube` (a real HTTP server speaking the Kubernetes API on loopback).

mod examples;
mod file_source;
mod grpc;
mod kube_configmap;
mod kube_controller;
mod kube_status;
mod supervisor;
