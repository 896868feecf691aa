//! Shared inputs of Portico's benchmarks, so that every benchmark measures the same events.

use bytes::Bytes;

/// A JSON object of exactly `len` bytes (`len` ≥ 16): `{"pad":"xxx…"}`.
pub fn json_payload(len: usize) -> Bytes {
    let pad = len.saturating_sub(r#"{"pad":""}"#.len());
    Bytes::from(format!(r#"{{"pad":"{}"}}"#, "x".repeat(pad)))
}
