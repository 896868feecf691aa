//! Helpers shared by the built-in gateways' integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use portico::cloudevents::CloudEvent;

#[allow(unused_imports)] // not every test binary that includes this module uses it
pub use portico::testing::free_port;

/// True when `port` can be bound on all interfaces (nobody holds it).
pub fn port_is_free(port: u16) -> bool {
    std::net::TcpListener::bind(("0.0.0.0", port)).is_ok()
}

/// A configuration map from pairs.
pub fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The JSON payload of an event.
pub fn data(ce: &CloudEvent) -> serde_json::Value {
    let bytes = ce
        .data
        .as_ref()
        .map(|d| d.as_bytes().to_vec())
        .unwrap_or_default();
    serde_json::from_slice(&bytes).expect("a JSON payload")
}

/// Polls `check` every 10 ms until it is true or `timeout` passes; returns the last answer.
pub async fn wait_until<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An HTTP client that does not reuse connections between tests' phases.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}
