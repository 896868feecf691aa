//! A user's own core-style gateway in Rust: a heartbeat that emits `{"beat": n, "note": …}`
//! every `every`, until told to stop. This whole program is what a gateway author writes.
//!
//! Run it with `cargo run -p rust-core-heartbeat -- examples/rust-core-heartbeat/gateway.yaml`.

use std::process::ExitCode;
use std::time::Duration;

use portico::{ConfigContext, ConfigError, ConfigExecutor, Event};
use serde::Deserialize;

/// One configuration of the heartbeat gateway, as written.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct HeartbeatConfig {
    /// How often to beat (`1s`, `500ms`).
    every: String,
    /// Copied into every event.
    #[serde(default)]
    note: Option<String>,
}

/// A heartbeat configuration, checked: what `start_config` is handed.
#[derive(Debug, Clone)]
struct Beat {
    period: Duration,
    note: Option<String>,
}

/// The executor: validates and runs heartbeat configurations.
struct Heartbeat;

impl ConfigExecutor for Heartbeat {
    type Config = Beat;

    fn validate(&self, ctx: &ConfigContext) -> Result<Beat, ConfigError> {
        let c: HeartbeatConfig = ctx.parse()?;
        let period = humantime::parse_duration(&c.every).map_err(|e| {
            ConfigError::invalid(format!("every: `{}` is not a duration: {e}", c.every))
        })?;
        Ok(Beat {
            period,
            note: c.note,
        })
    }

    async fn start_config(&self, ctx: ConfigContext, beat: Beat) -> Result<(), ConfigError> {
        let mut ticks = tokio::time::interval(beat.period);
        ticks.tick().await;
        ctx.running();
        let mut n = 0u64;
        loop {
            tokio::select! {
                _ = ctx.stopped() => return Ok(()),
                _ = ticks.tick() => {}
            }
            n += 1;
            let payload = serde_json::json!({ "beat": n, "note": beat.note });
            ctx.dispatch(Event::json(&payload)?).await?;
        }
    }
}

fn main() -> ExitCode {
    portico::run(Heartbeat)
}
