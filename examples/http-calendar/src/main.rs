//! An HTTP-style Portico gateway in Rust: a calendar that emits an event every
//! `interval`, driven by the framework over HTTP. It uses no Portico crate — only the wire
//! contract — so it is also a model for a server in any language (`server.py` beside it is the
//! same gateway in Python).
//!
//! - The framework POSTs `{"id", "src", "config"}` to `/start` and `/stop` on
//!   `GATEWAY_PROCESSOR_SERVER_HTTP_PORT`.
//! - This server POSTs to the framework on `GATEWAY_PROCESSOR_CLIENT_HTTP_PORT`: `/activated`
//!   once a configuration runs, `/event` `{"src", "payload": "<base64>"}` for each event,
//!   `/error` `{"src", "error"}` when a configuration cannot run.
//!
//! Every port and path comes from the gateway environment (docs/contract.md), with its default. A configuration
//! is YAML: `interval: 2s` (required) and `userPayload:` (any value, copied into each event).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// Ports and paths of the HTTP style, from the environment.
#[derive(Debug, Clone)]
struct Contract {
    server_port: u16,
    framework: String,
    event: String,
    running: String,
    error: String,
    start: String,
    stop: String,
}

fn var(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default.to_string())
}

impl Contract {
    fn from_env() -> anyhow::Result<Contract> {
        let port = |name: &str, default: &str| -> anyhow::Result<u16> {
            let v = var(name, default);
            v.parse()
                .map_err(|e| anyhow::anyhow!("{name}={v:?} is not a port number: {e}"))
        };
        Ok(Contract {
            server_port: port("GATEWAY_PROCESSOR_SERVER_HTTP_PORT", "9696")?,
            framework: format!(
                "http://127.0.0.1:{}",
                port("GATEWAY_PROCESSOR_CLIENT_HTTP_PORT", "9393")?
            ),
            start: var("GATEWAY_HTTP_CONFIG_START", "/start"),
            stop: var("GATEWAY_HTTP_CONFIG_STOP", "/stop"),
            event: var("GATEWAY_HTTP_CONFIG_EVENT", "/event"),
            running: var("GATEWAY_HTTP_CONFIG_RUNNING", "/activated"),
            error: var("GATEWAY_HTTP_CONFIG_ERROR", "/error"),
        })
    }
}

/// What the framework sends to `/start` and `/stop`, and this server to `/activated`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ConfigBody {
    id: String,
    src: String,
    config: String,
}

/// One configuration's value.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CalendarConfig {
    interval: String,
    #[serde(default)]
    user_payload: serde_json::Value,
}

struct App {
    contract: Contract,
    client: reqwest::Client,
    /// Running configurations by `src`: their id and stop signal.
    running: Mutex<HashMap<String, (String, CancellationToken)>>,
}

impl App {
    async fn post(&self, path: &str, body: &impl Serialize) {
        let url = format!("{}{path}", self.contract.framework);
        match self.client.post(&url).json(body).send().await {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => tracing::warn!(%url, status = %r.status(), "the framework refused"),
            Err(e) => tracing::warn!(%url, "cannot reach the framework: {e}"),
        }
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, CancellationToken)>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }
}

async fn start(State(app): State<Arc<App>>, Json(body): Json<ConfigBody>) -> StatusCode {
    let stop = CancellationToken::new();
    if let Some((_, old)) = app
        .running()
        .insert(body.src.clone(), (body.id.clone(), stop.clone()))
    {
        old.cancel();
    }
    tokio::spawn(run_calendar(app.clone(), body, stop));
    StatusCode::OK
}

async fn stop(State(app): State<Arc<App>>, Json(body): Json<ConfigBody>) -> StatusCode {
    let mut running = app.running();
    if running.get(&body.src).is_some_and(|(id, _)| *id == body.id)
        && let Some((_, token)) = running.remove(&body.src)
    {
        token.cancel();
    }
    StatusCode::OK
}

async fn run_calendar(app: Arc<App>, body: ConfigBody, stop: CancellationToken) {
    let parsed = serde_saphyr::from_str::<CalendarConfig>(&body.config)
        .map_err(|e| e.to_string())
        .and_then(|c| match humantime::parse_duration(&c.interval) {
            Ok(every) if !every.is_zero() => Ok((every, c.user_payload)),
            Ok(_) => Err("interval: must be more than zero".to_string()),
            Err(e) => Err(format!(
                "interval: {:?} is not a duration like 2s: {e}",
                c.interval
            )),
        });
    let (every, user_payload) = match parsed {
        Ok(p) => p,
        Err(e) => {
            let error = serde_json::json!({"src": body.src, "id": body.id, "error": e});
            app.post(&app.contract.error, &error).await;
            return;
        }
    };
    app.post(&app.contract.running, &body).await;
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let payload = serde_json::json!({
            "eventTime": chrono::Utc::now().to_rfc3339(),
            "userPayload": user_payload,
        });
        let event = serde_json::json!({
            "src": body.src,
            "id": body.id,
            "payload": base64::engine::general_purpose::STANDARD.encode(payload.to_string()),
            "contentType": "application/json",
        });
        app.post(&app.contract.event, &event).await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .init();
    let contract = Contract::from_env()?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", contract.server_port)).await?;
    tracing::info!(addr = %listener.local_addr()?, framework = %contract.framework, "http-calendar listening");
    let app = Arc::new(App {
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?,
        running: Mutex::default(),
        contract: contract.clone(),
    });
    let router = Router::new()
        .route(&contract.start, post(start))
        .route(&contract.stop, post(stop))
        .with_state(app);
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
