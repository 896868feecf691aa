//! The built-in gateways of Portico. Each is one core-style [`portico::ConfigExecutor`],
//! written exactly the way a user writes theirs: read them as examples to copy.

pub mod calendar;
pub mod resource;

use std::sync::Arc;

use portico::SharedExecutor;

/// The types of the built-in gateways.
pub const BUILTIN_TYPES: &[&str] = &["calendar", "resource"];

/// The executor of built-in gateway `gateway_type`, if there is one.
pub fn builtin(gateway_type: &str) -> Option<SharedExecutor> {
    match gateway_type {
        "calendar" => Some(Arc::new(calendar::Calendar::default())),
        "resource" => Some(Arc::new(resource::Resource::default())),
        _ => None,
    }
}
