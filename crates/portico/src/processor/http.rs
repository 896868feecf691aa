//! The HTTP-style processor client: the framework's side of a user's HTTP server.
//!
//! The user runs an HTTP server on `GATEWAY_PROCESSOR_SERVER_HTTP_PORT`. For each configuration
//! the framework POSTs `{"id","src","config"}` to its start endpoint (`/start`), retrying with
//! capped backoff while the server is down or answers non-2xx (the node shows why), and POSTs
//! the same body to its stop endpoint (`/stop`) when the configuration stops.
//!
//! The framework's own server, on `GATEWAY_PROCESSOR_CLIENT_HTTP_PORT`, is started once per
//! gateway and shared by every configuration. It routes each body to its configuration by
//! `src` (and `id` when given):
//!
//! | request | effect |
//! |---|---|
//! | `POST /event` `{"src", "payload": "<base64>"}` | the event is dispatched as configuration `src` (200; 503 + `Retry-After` when full) |
//! | `POST /activated` `{"id", "src", "config"}` | the node becomes `Running` |
//! | `POST /error` `{"src", "error"}` | the node becomes `Error` with that text |
//!
//! A body naming no running configuration gets 404 with the reason. Every path and port comes
//! from the gateway environment (docs/contract.md) ([`HttpSettings::from_env`]).
//!
//! [`HttpProcessor`] is a [`ConfigExecutor`], so the supervisor's validation, restarts, stop
//! grace and nodes apply to HTTP-style configurations exactly as to core ones.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use backon::BackoffBuilder;
use serde::{Deserialize, Serialize};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::configuration::ConfigId;
use crate::env;
use crate::error::ConfigError;
use crate::event::Event;
use crate::executor::{ConfigContext, ConfigExecutor};
use crate::pipeline::Submit;
use crate::status::Phase;

/// Where the user's server and the framework's server are, and their endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpSettings {
    /// Timeouts and connection cap of the framework's server.
    pub limits: crate::http1::Limits,
    /// Host of the user's server (the same pod or machine).
    pub server_host: IpAddr,
    /// `GATEWAY_PROCESSOR_SERVER_HTTP_PORT`: port of the user's server.
    pub server_port: u16,
    /// Address the framework's server listens on.
    pub client_listen: IpAddr,
    /// `GATEWAY_PROCESSOR_CLIENT_HTTP_PORT`: port of the framework's server (0 picks one).
    pub client_port: u16,
    /// `GATEWAY_HTTP_CONFIG_START`.
    pub start_path: String,
    /// `GATEWAY_HTTP_CONFIG_STOP`.
    pub stop_path: String,
    /// `GATEWAY_HTTP_CONFIG_EVENT`.
    pub event_path: String,
    /// `GATEWAY_HTTP_CONFIG_RUNNING`.
    pub running_path: String,
    /// `GATEWAY_HTTP_CONFIG_ERROR`.
    pub error_path: String,
    /// Shortest wait between start attempts.
    pub retry_min: Duration,
    /// Longest wait between start attempts.
    pub retry_max: Duration,
    /// Timeout of one request to the user's server.
    pub request_timeout: Duration,
    /// Largest body the framework's server takes.
    pub body_limit: usize,
}

/// Why the HTTP style cannot be set up.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HttpStyleError {
    /// A port variable is not a port.
    #[error("{name}={value:?} is not a port number (0–65535): {source}")]
    Port {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// Why.
        source: std::num::ParseIntError,
    },
    /// A path variable is not a path.
    #[error("{name}={value:?} is not a path: it must start with `/` (default {default})")]
    Path {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// Its default.
        default: &'static str,
    },
    /// No port is given for the user's server.
    #[error(
        "HTTP style needs the port of the user's server: set httpServerPort in the gateway or GATEWAY_PROCESSOR_SERVER_HTTP_PORT"
    )]
    NoServerPort,
    /// The framework's server cannot listen.
    #[error("the HTTP-style processor (GATEWAY_PROCESSOR_CLIENT_HTTP_PORT): {0}")]
    Listen(crate::http1::ListenError),
    /// The client of the user's server cannot be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(reqwest::Error),
}

impl HttpSettings {
    /// The settings of the HTTP style: every variable read from the environment, with its
    /// default; `http_server_port` is the gateway's `httpServerPort`, which
    /// `GATEWAY_PROCESSOR_SERVER_HTTP_PORT` overrides.
    pub(crate) fn from_env(http_server_port: Option<u16>) -> Result<HttpSettings, HttpStyleError> {
        Self::from_lookup(env::var, http_server_port)
    }

    /// [`HttpSettings::from_env`] with the variables read by `lookup` (for tests).
    pub(crate) fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
        http_server_port: Option<u16>,
    ) -> Result<HttpSettings, HttpStyleError> {
        let port = |name: &'static str| -> Result<Option<u16>, HttpStyleError> {
            lookup(name)
                .map(|v| {
                    v.trim()
                        .parse::<u16>()
                        .map_err(|source| HttpStyleError::Port {
                            name,
                            value: v.clone(),
                            source,
                        })
                })
                .transpose()
        };
        let path = |name: &'static str, default: &'static str| -> Result<String, HttpStyleError> {
            let p = lookup(name).unwrap_or_else(|| default.to_string());
            if p.starts_with('/') {
                Ok(p)
            } else {
                Err(HttpStyleError::Path {
                    name,
                    value: p,
                    default,
                })
            }
        };
        let server_port = match port(env::GATEWAY_PROCESSOR_SERVER_HTTP_PORT)? {
            Some(p) => p,
            None => http_server_port.ok_or(HttpStyleError::NoServerPort)?,
        };
        Ok(HttpSettings {
            limits: crate::http1::Limits::default(),
            server_host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            server_port,
            client_listen: IpAddr::V4(Ipv4Addr::LOCALHOST),
            client_port: port(env::GATEWAY_PROCESSOR_CLIENT_HTTP_PORT)?
                .unwrap_or(env::DEFAULT_PROCESSOR_CLIENT_HTTP_PORT),
            start_path: path(
                env::GATEWAY_HTTP_CONFIG_START,
                env::DEFAULT_HTTP_CONFIG_START,
            )?,
            stop_path: path(env::GATEWAY_HTTP_CONFIG_STOP, env::DEFAULT_HTTP_CONFIG_STOP)?,
            event_path: path(
                env::GATEWAY_HTTP_CONFIG_EVENT,
                env::DEFAULT_HTTP_CONFIG_EVENT,
            )?,
            running_path: path(
                env::GATEWAY_HTTP_CONFIG_RUNNING,
                env::DEFAULT_HTTP_CONFIG_RUNNING,
            )?,
            error_path: path(
                env::GATEWAY_HTTP_CONFIG_ERROR,
                env::DEFAULT_HTTP_CONFIG_ERROR,
            )?,
            retry_min: Duration::from_millis(200),
            retry_max: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            body_limit: crate::server::DEFAULT_BODY_LIMIT,
        })
    }
}

/// The configurations the framework's server routes to, by `src`.
#[derive(Default)]
struct Routes {
    by_src: Mutex<HashMap<String, ConfigContext>>,
}

impl Routes {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ConfigContext>> {
        // Every write is one insert or remove: a poisoned lock still holds a whole map.
        self.by_src.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The running configuration `src` (with id `id`, when given), or why there is none.
    fn find(&self, src: Option<&str>, id: Option<&str>) -> Result<ConfigContext, Refusal> {
        let Some(src) = src.filter(|s| !s.is_empty()) else {
            return Err(reply(
                StatusCode::BAD_REQUEST,
                "`src` is missing or empty: it names the configuration",
            ));
        };
        let Some(ctx) = self.lock().get(src).cloned() else {
            return Err(reply(
                StatusCode::NOT_FOUND,
                format!("no configuration `{src}` is running in this gateway"),
            ));
        };
        if let Some(id) = id.filter(|i| !i.is_empty())
            && id != ctx.id().to_string()
        {
            return Err(reply(
                StatusCode::NOT_FOUND,
                format!(
                    "configuration `{src}` with id {id} is not running (the running one has id {})",
                    ctx.id()
                ),
            ));
        }
        if ctx.is_stopped() {
            return Err(reply(
                StatusCode::NOT_FOUND,
                format!("configuration `{src}` is stopping"),
            ));
        }
        Ok(ctx)
    }

    fn insert(&self, ctx: ConfigContext) {
        self.lock().insert(ctx.src().to_string(), ctx);
    }

    fn remove(&self, src: &str, id: ConfigId) {
        let mut map = self.lock();
        if map.get(src).is_some_and(|c| c.id() == id) {
            map.remove(src);
        }
    }
}

/// A refused request: its status and the reason in the body.
type Refusal = (StatusCode, String);

fn reply(status: StatusCode, reason: impl Into<String>) -> Refusal {
    (status, reason.into())
}

/// The body of `/start`, `/stop` and `/activated`.
#[derive(Debug, Serialize, Deserialize)]
struct ConfigBody {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    src: Option<String>,
    #[serde(default)]
    config: Option<String>,
}

/// The body of `/event`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventBody {
    src: Option<String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    payload: Option<String>,
    /// Not in the original: what the payload is, when the user's server knows.
    #[serde(default)]
    content_type: Option<String>,
}

/// The body of `/error`.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    src: Option<String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

fn json<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, Refusal> {
    serde_json::from_slice(body).map_err(|e| {
        reply(
            StatusCode::BAD_REQUEST,
            format!("body is not the expected JSON {what}: {e}"),
        )
    })
}

async fn on_event(
    State(routes): State<Arc<Routes>>,
    headers: http::HeaderMap,
    body: Bytes,
) -> Response {
    let b: EventBody = match json(&body, "{\"src\", \"payload\": \"<base64>\"}") {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let ctx = match routes.find(b.src.as_deref(), b.id.as_deref()) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    let payload = match b.payload.as_deref() {
        None => Vec::new(),
        Some(p) => match crate::cloudevents::decode_base64(p.as_bytes()) {
            Ok(bytes) => bytes,
            Err(e) => {
                return reply(
                    StatusCode::BAD_REQUEST,
                    format!("`payload` is not valid base64: {e}"),
                )
                .into_response();
            }
        },
    };
    let mut event = Event::new(payload).with_trace_headers(&headers);
    event.content_type = b.content_type;
    match ctx.submit(event, Submit::BRIEFLY).await {
        Ok(_) => StatusCode::OK.into_response(),
        Err(e) => crate::server::refusal(&e),
    }
}

async fn on_activated(State(routes): State<Arc<Routes>>, body: Bytes) -> Response {
    let b: ConfigBody = match json(&body, "{\"id\", \"src\", \"config\"}") {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    match routes.find(b.src.as_deref(), b.id.as_deref()) {
        Ok(ctx) => {
            ctx.running();
            StatusCode::OK.into_response()
        }
        Err(r) => r.into_response(),
    }
}

async fn on_error(State(routes): State<Arc<Routes>>, body: Bytes) -> Response {
    // `{"src", "error"}`; or, as Argo Events' servers post it, the error as plain text, which
    // names no configuration: it is the only one's.
    let (ctx, text) = match serde_json::from_slice::<ErrorBody>(&body) {
        Ok(b) => match routes.find(b.src.as_deref(), b.id.as_deref()) {
            Ok(ctx) => (ctx, b.error.unwrap_or_default()),
            Err(r) => return r.into_response(),
        },
        Err(_) => {
            let running: Vec<ConfigContext> = routes.lock().values().cloned().collect();
            match running.as_slice() {
                [only] => (only.clone(), String::from_utf8_lossy(&body).into_owned()),
                _ => {
                    return reply(
                        StatusCode::BAD_REQUEST,
                        format!(
                            "a plain-text error names no configuration and {} run here: post {{\"src\", \"error\"}}",
                            running.len()
                        ),
                    )
                    .into_response();
                }
            }
        }
    };
    let text = match text.trim() {
        "" => "the user's server reported an error without a text".to_string(),
        t => t.to_string(),
    };
    ctx.report_error(text);
    StatusCode::OK.into_response()
}

/// Runs configurations on the user's HTTP server.
pub(crate) struct HttpProcessor {
    settings: HttpSettings,
    client: reqwest::Client,
    routes: Arc<Routes>,
    /// Stops the framework's server when the processor is dropped.
    _server: DropGuard,
}

impl HttpProcessor {
    /// Binds the framework's server (logging `processor server listening addr=…`) and starts
    /// serving it. Must be called inside a Tokio runtime.
    pub(crate) fn start(settings: HttpSettings) -> Result<HttpProcessor, HttpStyleError> {
        let addr = SocketAddr::new(settings.client_listen, settings.client_port);
        let listen = |source| HttpStyleError::Listen(crate::http1::ListenError { addr, source });
        let std_listener = std::net::TcpListener::bind(addr).map_err(listen)?;
        std_listener.set_nonblocking(true).map_err(listen)?;
        let listener = tokio::net::TcpListener::from_std(std_listener).map_err(listen)?;
        if let Ok(local) = listener.local_addr() {
            tracing::info!(addr = %local, "processor server listening");
        }
        let routes = Arc::new(Routes::default());
        let router = Router::new()
            .route(&settings.event_path, post(on_event))
            .route(&settings.running_path, post(on_activated))
            .route(&settings.error_path, post(on_error))
            .layer(DefaultBodyLimit::max(settings.body_limit))
            .with_state(routes.clone());
        let stop = CancellationToken::new();
        tokio::spawn(crate::server::serve(
            listener,
            router,
            settings.limits,
            stop.clone(),
        ));
        let client = reqwest::Client::builder()
            .timeout(settings.request_timeout)
            .build()
            .map_err(HttpStyleError::Client)?;
        Ok(HttpProcessor {
            settings,
            client,
            routes,
            _server: stop.drop_guard(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!(
            "http://{}{path}",
            SocketAddr::new(self.settings.server_host, self.settings.server_port)
        )
    }

    /// One POST of the configuration to `path`; the error says what went wrong.
    async fn post(&self, path: &str, ctx: &ConfigContext) -> Result<(), String> {
        let url = self.url(path);
        let body = ConfigBody {
            id: Some(ctx.id().to_string()),
            src: Some(ctx.src().to_string()),
            config: Some(ctx.config_for_server()),
        };
        let answer = self
            .client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(&body).unwrap_or_default())
            .send()
            .await
            .map_err(|e| format!("POST {url} failed: {}", error_chain(&e)))?;
        let status = answer.status();
        if status.is_success() {
            return Ok(());
        }
        let text = answer.text().await.unwrap_or_default();
        let text: String = text.trim().chars().take(200).collect();
        Err(format!("POST {url} answered {status}: {text}"))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

impl ConfigExecutor for HttpProcessor {
    /// The user's server judges the configuration when it is started.
    type Config = ();

    fn validate(&self, _ctx: &ConfigContext) -> Result<(), ConfigError> {
        Ok(())
    }

    async fn start_config(&self, ctx: ConfigContext, (): ()) -> Result<(), ConfigError> {
        self.routes.insert(ctx.clone());
        let started = self.start_with_retry(&ctx).await;
        if started {
            ctx.stopped().await;
            if let Err(e) = self.post(&self.settings.stop_path, &ctx).await {
                tracing::warn!(src = %ctx.src(), id = %ctx.id(), "stopping the configuration on the user's server: {e}");
            }
        }
        self.routes.remove(ctx.src(), ctx.id());
        Ok(())
    }
}

impl HttpProcessor {
    /// POSTs the start until the user's server takes it or the configuration stops; true when
    /// the user's server may run it (and must be told to stop).
    async fn start_with_retry(&self, ctx: &ConfigContext) -> bool {
        let mut backoff = backon::ExponentialBuilder::default()
            .with_min_delay(self.settings.retry_min)
            .with_max_delay(self.settings.retry_max)
            .with_jitter()
            .without_max_times()
            .build();
        let mut attempt = 0u32;
        // The error message this loop put on the node, if any.
        let mut shown: Option<String> = None;
        loop {
            attempt += 1;
            let outcome = tokio::select! {
                // The start may have reached the user's server: have it stopped too.
                _ = ctx.stopped() => return true,
                r = self.post(&self.settings.start_path, ctx) => r,
            };
            match outcome {
                Ok(()) => {
                    // The user's server now runs it; it is `Running` once it calls back. It may
                    // already have called `/activated` or `/error`: only clear our own message.
                    if let Some(ours) = &shown
                        && !ctx.is_stopped()
                    {
                        ctx.board()
                            .set_if(ctx.id(), ctx.src(), Phase::Initialized, "", |n| {
                                n.phase == Phase::Error && n.message == *ours
                            });
                    }
                    return true;
                }
                Err(reason) => {
                    let wait = backoff.next().unwrap_or(self.settings.retry_max);
                    tracing::debug!(src = %ctx.src(), attempt, "{reason}");
                    let message = format!(
                        "cannot start the configuration on the user's server: {reason} (attempt {attempt}; retrying in {})",
                        humantime::format_duration(Duration::from_millis(wait.as_millis() as u64))
                    );
                    ctx.report_error(message.clone());
                    shown = Some(message);
                    tokio::select! {
                        _ = ctx.stopped() => return false,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)], port: Option<u16>) -> Result<HttpSettings, String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        HttpSettings::from_lookup(|name| vars.get(name).cloned(), port).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_those_of_spec_section_3() {
        let s = settings(&[], Some(9696)).unwrap();
        assert_eq!(s.server_port, 9696);
        assert_eq!(s.client_port, 9393);
        assert_eq!(
            [
                s.start_path.as_str(),
                &s.stop_path,
                &s.event_path,
                &s.running_path,
                &s.error_path
            ],
            ["/start", "/stop", "/event", "/activated", "/error"]
        );
    }

    #[test]
    fn the_environment_overrides_the_gateway_and_the_defaults() {
        let s = settings(
            &[
                (env::GATEWAY_PROCESSOR_SERVER_HTTP_PORT, "7000"),
                (env::GATEWAY_PROCESSOR_CLIENT_HTTP_PORT, "7001"),
                (env::GATEWAY_HTTP_CONFIG_START, "/go"),
                (env::GATEWAY_HTTP_CONFIG_ERROR, "/oops"),
            ],
            Some(9696),
        )
        .unwrap();
        assert_eq!((s.server_port, s.client_port), (7000, 7001));
        assert_eq!(
            (s.start_path.as_str(), s.error_path.as_str()),
            ("/go", "/oops")
        );
        assert_eq!(s.stop_path, "/stop");
    }

    #[test]
    fn bad_settings_name_the_variable() {
        let e = settings(&[], None).unwrap_err();
        assert!(
            e.contains("httpServerPort") && e.contains("GATEWAY_PROCESSOR_SERVER_HTTP_PORT"),
            "{e}"
        );
        let e = settings(
            &[(env::GATEWAY_PROCESSOR_CLIENT_HTTP_PORT, "http")],
            Some(1),
        )
        .unwrap_err();
        assert!(
            e.contains("GATEWAY_PROCESSOR_CLIENT_HTTP_PORT=\"http\""),
            "{e}"
        );
        let e = settings(&[(env::GATEWAY_HTTP_CONFIG_EVENT, "event")], Some(1)).unwrap_err();
        assert!(e.contains("must start with `/`"), "{e}");
    }
}
