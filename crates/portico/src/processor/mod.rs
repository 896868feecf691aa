//! Processors that run configurations outside this process: the framework's side of a user's
//! server. Each is a [`crate::ConfigExecutor`], so the supervisor runs them like core ones.

pub mod http;
