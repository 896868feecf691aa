//! A user's own core-style gateway in Rust: a heartbeat that emits `{"beat": n, "note": …}`
//! every `every`, until told to stop. This whole program is what a gateway author writes.
//!
//! Run it with `cargo run -p rust-core-heartbeat -- examples/rust-core-heartbeat/gateway.yaml`.

use std::process::ExitCode;
use std::time::Duration;

use portico::{ConfigContext, ConfigError, ConfigExecutor, Event};
use serde::Deserialize;

/// One configuration of the heartbeat gateway.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct HeartbeatConfig {
    /// How often to beat (`1s`, `500ms`).
    every: String,
    /// Copied into every event.
    #[serde(default)]
    note: Option<String>,
}

impl HeartbeatConfig {
    fn period(&self) -> Result<Duration, ConfigError> {
        humantime::parse_duration(&self.every).map_err(|e| {
            ConfigError::invalid(format!("every: `{}` is not a duration: {e}", self.every))
        })
    }
}

/// The executor: validates and runs heartbeat configurations.
struct Heartbeat;

impl ConfigExecutor for Heartbeat {
    fn validate(&self, ctx: &ConfigContext) -> Result<(), ConfigError> {
        let config: HeartbeatConfig = ctx.parse()?;
        config.period().map(|_| ())
    }

    async fn start_config(&self, ctx: ConfigContext) -> Result<(), ConfigError> {
        let config: HeartbeatConfig = ctx.parse()?;
        let period = config.period()?;
        let mut ticks = tokio::time::interval(period);
        ticks.tick().await;
        ctx.running();
        let mut beat = 0u64;
        loop {
            tokio::select! {
                _ = ctx.stopped() => return Ok(()),
                _ = ticks.tick() => {}
            }
            beat += 1;
            let payload = serde_json::json!({ "beat": beat, "note": config.note });
            ctx.dispatch(Event::json(&payload)?).await?;
        }
    }
}

fn main() -> ExitCode {
    portico::run(Heartbeat)
}
