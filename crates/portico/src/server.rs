//! The transformer's HTTP API on `TRANSFORMER_PORT`.
//!
//! | request | answer |
//! |---|---|
//! | `POST /` `{"src", "payload": "<base64>"}` | 200 once accepted; 400 with a reason; 413 over the limit; 503 + `Retry-After` when full |
//! | `POST /` a CloudEvent (structured, binary) or a batch | validated ([`crate::ingest`]), relayed with its own attributes; same answers |
//! | `GET /readiness` | 200 once the first configurations are applied, else 503 |
//! | `GET /healthz` | 200 while the process serves |
//! | `GET /status` | the gateway, every node and the outbox, as JSON |
//! | `GET /metrics` | Prometheus text format 0.0.4, or OpenMetrics when `Accept` asks for it |
//! | `GET /` | the status page (HTML) |
//! | `GET /rates` | events per second per configuration and per watcher, last five minutes |
//! | `GET /events[?filter=TEXT]` | every event accepted from now on, as Server-Sent Events |
//! | `GET /dead-letters` | the dead letters of the watchers' dead-letter files |
//! | `POST /dead-letters/redrive` `{"all": true}` or `{"ids": […]}` | delivers them again; removes those taken |
//!
//! With an ingest token (`--ingest-token-file`), `POST /` and the redrive need
//! `Authorization: Bearer <token>` (401 otherwise); the read-only routes stay open to probes
//! and Prometheus.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use hyper::service::Service as _;
use hyper_util::service::TowerToHyperService;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::dispatch::outbox::OutboxStatus;
use crate::error::DispatchError;
use crate::http1;
use crate::ingest::Ingested;
use crate::metrics::RejectReason;
use crate::pipeline::{Pipeline, Wait};
use crate::secret::LiveSecret;
use crate::status::{Node, StatusBoard};

/// Default body size limit of the ingest API.
pub(crate) const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// What the gateway tells about itself on `/status`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GatewayInfo {
    /// Name of the gateway.
    pub name: String,
    /// Namespace of the gateway.
    pub namespace: String,
    /// `spec.type`.
    #[serde(rename = "type")]
    pub gateway_type: String,
    /// `core`, `grpc`, `http` or `independent`.
    pub processor: String,
    /// Names of the watchers.
    pub watchers: Vec<String>,
    /// When the process started.
    pub started_at: DateTime<Utc>,
    /// This replica's name (`PORTICO_REPLICA`, else host name and process id).
    pub replica: String,
}

/// Shared state of the handlers.
pub(crate) struct AppState {
    /// The gateway.
    pub info: GatewayInfo,
    /// Its nodes.
    pub board: Arc<StatusBoard>,
    /// Where ingested events go.
    pub pipeline: Arc<Pipeline>,
    /// Recent events per second, for the status page.
    pub rates: Arc<crate::rates::Rates>,
    /// Set once the first configurations are applied.
    pub ready: AtomicBool,
    /// Replicas sharing the configurations, as this one last saw them.
    pub coordination: Option<crate::coordination::SharedView>,
}

/// The stop of the transformer's server, which ends the streams of `GET /events` (they would
/// otherwise hold the server's drain for its whole [`http1::DRAIN_TIMEOUT`]).
#[derive(Clone)]
struct ServerStop(CancellationToken);

/// The router of the transformer's API, but for `POST /` (see [`serve_api`]).
fn router(state: Arc<AppState>, stop: CancellationToken) -> Router {
    Router::new()
        .route("/", get(page).fallback(ingest_method_not_allowed))
        .route("/healthz", get(healthz))
        .route("/readiness", get(readiness))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/rates", get(rates))
        .route("/events", get(events))
        .route("/dead-letters", get(dead_letters))
        .route("/dead-letters/redrive", post(redrive))
        .layer(axum::Extension(ServerStop(stop)))
        .with_state(state)
}

/// Serves `router` on `listener` (HTTP/1.1) until `stop` is cancelled, then lets requests in
/// flight finish for [`http1::DRAIN_TIMEOUT`].
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: http1::Limits,
    stop: CancellationToken,
) {
    http1::accept_loop(listener, stop, limits, move |tcp, conn| {
        let service = TowerToHyperService::new(router.clone());
        http1::serve_connection(tcp, service, conn)
    })
    .await
}

/// What `POST /` takes.
pub(crate) struct IngestOptions {
    /// Largest body.
    pub body_limit: usize,
    /// The bearer token callers must send, if one is set.
    pub token: Option<Arc<LiveSecret>>,
}

/// Serves the transformer's API on `listener` until `stop` is cancelled. `POST /` (one event
/// per request, the hot path) is answered straight from hyper, without the router's
/// per-request layers; the other routes go through the router.
pub(crate) async fn serve_api(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    ingest: IngestOptions,
    limits: http1::Limits,
    stop: CancellationToken,
) {
    let api = Arc::new(Api {
        rest: TowerToHyperService::new(router(state.clone(), stop.clone())),
        state,
        body_limit: ingest.body_limit,
        token: ingest.token,
        body_timeout: limits.body_timeout,
    });
    http1::accept_loop(listener, stop, limits, move |tcp, conn| {
        let api = api.clone();
        let service = hyper::service::service_fn(move |req| {
            let api = api.clone();
            async move { Ok::<_, Infallible>(api.handle(req).await) }
        });
        http1::serve_connection(tcp, service, conn)
    })
    .await
}

struct Api {
    state: Arc<AppState>,
    body_limit: usize,
    token: Option<Arc<LiveSecret>>,
    body_timeout: std::time::Duration,
    rest: TowerToHyperService<Router>,
}

impl Api {
    /// The 401 answer to a request that changes something (`POST /`, a redrive) without the
    /// ingest token, when the gateway has one.
    fn unauthorized(&self, req: &http::Request<hyper::body::Incoming>) -> Option<Response> {
        let token = self.token.as_ref()?;
        let offered = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
        if offered.is_some_and(|t| token.matches(t)) {
            return None;
        }
        if req.uri().path() == "/" {
            // Counted under one label: the `src` of an unauthenticated caller is not taken.
            let m = self.state.pipeline.metrics();
            m.reject(&m.for_src("_unauthenticated"), RejectReason::Unauthorized);
        }
        Some(
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                format!(
                    "{} {} needs `Authorization: Bearer <token>` with the gateway's ingest token\n",
                    req.method(),
                    req.uri().path()
                ),
            )
                .into_response(),
        )
    }

    async fn handle(&self, req: http::Request<hyper::body::Incoming>) -> Response {
        let posted = req.method() == Method::POST && req.uri().path() == "/";
        let write = req.method() != Method::GET && req.method() != Method::HEAD;
        if write && let Some(refused) = self.unauthorized(&req) {
            return refused;
        }
        if !posted {
            return match self.rest.call(req).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
        }
        let (parts, body) = req.into_parts();
        match http1::read_body(&parts.headers, body, self.body_limit, self.body_timeout).await {
            Ok(body) => ingest(&self.state, &parts.headers, body).await,
            Err(http1::BodyError::TooLarge) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the body is over the size limit of this gateway ({} bytes): send smaller events or raise --body-limit (PORTICO_BODY_LIMIT)",
                    self.body_limit
                ),
            )
                .into_response(),
            Err(http1::BodyError::TimedOut) => (
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the body did not arrive within {}s",
                    self.body_timeout.as_secs()
                ),
            )
                .into_response(),
            Err(http1::BodyError::Read(e)) => {
                bad_request(format!("cannot read the request body: {e}"))
            }
        }
    }
}

async fn ingest_method_not_allowed() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::ALLOW, "GET, POST")],
        "events are POSTed to /, and GET / is the status page\n",
    )
        .into_response()
}

/// Binds the transformer's address, saying which port it got (port 0 picks a free one).
pub(crate) async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, http1::ListenError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| http1::ListenError { addr, source })?;
    if let Ok(local) = listener.local_addr() {
        tracing::info!(addr = %local, "transformer listening");
    }
    Ok(listener)
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readiness(State(s): State<Arc<AppState>>) -> Response {
    if s.ready.load(Ordering::Acquire) {
        "ready".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting").into_response()
    }
}

#[derive(Serialize)]
struct StatusBody<'a> {
    gateway: &'a GatewayInfo,
    nodes: Vec<Node>,
    #[serde(skip_serializing_if = "Option::is_none")]
    outbox: Option<OutboxStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    coordination: Option<crate::coordination::View>,
}

async fn status(State(s): State<Arc<AppState>>) -> Response {
    axum::Json(StatusBody {
        gateway: &s.info,
        nodes: s.board.nodes(),
        outbox: s.pipeline.dispatcher().outbox_status(),
        coordination: s
            .coordination
            .as_ref()
            .map(|v| v.lock().unwrap_or_else(|p| p.into_inner()).clone()),
    })
    .into_response()
}

/// The metrics in OpenMetrics when the scraper's `Accept` asks for it (as Prometheus does),
/// in the Prometheus text format 0.0.4 otherwise.
async fn metrics(State(s): State<Arc<AppState>>, headers: http::HeaderMap) -> Response {
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(crate::metrics::wants_openmetrics);
    let m = s.pipeline.metrics();
    let (content_type, body) = if openmetrics {
        (crate::metrics::OPENMETRICS_CONTENT_TYPE, m.encode())
    } else {
        (
            crate::metrics::PROMETHEUS_CONTENT_TYPE,
            m.encode_prometheus(),
        )
    };
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response()
}

/// What a status page may load and run: its own inline styles and script, data: images, and
/// requests to its own server; nothing from anywhere else.
pub(crate) const PAGE_CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// An HTML page of this binary (its styles and script inline), with [`PAGE_CSP`].
pub(crate) fn html_page(body: impl IntoResponse) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, PAGE_CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

/// The status page: one HTML file, its styles and script inline.
async fn page() -> Response {
    html_page(STATUS_PAGE)
}

/// The status page's HTML.
const STATUS_PAGE: &str = include_str!("../assets/status.html");

async fn rates(State(s): State<Arc<AppState>>) -> Response {
    axum::Json(s.rates.body()).into_response()
}

/// How often a follower of `GET /events` gets a comment line when no event comes, so that
/// proxies keep the connection and the follower sees it is alive.
const KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(15);

#[derive(serde::Deserialize)]
struct EventsQuery {
    /// Only events whose JSON holds this text.
    filter: Option<String>,
}

/// Every event accepted from now on, as Server-Sent Events (`event: cloudevent`, the
/// CloudEvent's JSON as `data`). A follower too slow for the flow is told how many it missed
/// (`event: lagged`). The stream ends when the server stops.
async fn events(
    State(s): State<Arc<AppState>>,
    axum::Extension(ServerStop(stop)): axum::Extension<ServerStop>,
    axum::extract::Query(q): axum::extract::Query<EventsQuery>,
) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use tokio::sync::broadcast::error::RecvError;
    let filter = q.filter.filter(|f| !f.is_empty());
    let follower = s.pipeline.follow();
    let stream = futures::stream::unfold((follower, filter), |(mut f, filter)| async move {
        loop {
            let event = match f.rx.recv().await {
                Ok(json) if filter.as_deref().is_none_or(|f| json.contains(f)) => {
                    Event::default().event("cloudevent").data(&*json)
                }
                Ok(_) => continue,
                Err(RecvError::Lagged(n)) => Event::default().event("lagged").data(n.to_string()),
                Err(RecvError::Closed) => return None,
            };
            return Some((Ok::<_, Infallible>(event), (f, filter)));
        }
    });
    let stream = futures::StreamExt::take_until(stream, stop.cancelled_owned());
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"))
        .into_response()
}

/// An answer for a dead-letter request that cannot be done.
fn redrive_error(e: crate::dispatch::redrive::RedriveError) -> Response {
    use crate::dispatch::redrive::RedriveError;
    let status = match e {
        RedriveError::NoFile(_) => StatusCode::CONFLICT,
        RedriveError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (status, format!("{e}\n")).into_response()
}

async fn dead_letters(State(s): State<Arc<AppState>>) -> Response {
    match s.pipeline.dispatcher().dead_letters().await {
        Ok(listing) => axum::Json(listing).into_response(),
        Err(e) => redrive_error(e),
    }
}

/// What `POST /dead-letters/redrive` takes: `{"all": true}` or `{"ids": [...]}`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RedriveRequest {
    #[serde(default)]
    all: bool,
    #[serde(default)]
    ids: Vec<String>,
}

async fn redrive(State(s): State<Arc<AppState>>, body: Bytes) -> Response {
    use crate::dispatch::redrive::Which;
    let request: RedriveRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return bad_request(format!(
                "the body must be {{\"all\": true}} or {{\"ids\": [\"<event id>\", …]}}: {e}\n"
            ));
        }
    };
    let which = match (request.all, request.ids.is_empty()) {
        (true, true) => Which::All,
        (false, false) => Which::Ids(request.ids.into_iter().collect()),
        (true, false) => return bad_request("give either `all` or `ids`, not both\n"),
        (false, true) => return bad_request("give `\"all\": true` or the `ids` to redrive\n"),
    };
    match s.pipeline.dispatcher().redrive(&which).await {
        Ok(report) => {
            tracing::info!(
                delivered = report.delivered.len(),
                failed = report.failed.len(),
                missing = report.missing.len(),
                "dead letters redriven"
            );
            axum::Json(report).into_response()
        }
        Err(e) => redrive_error(e),
    }
}

fn bad_request(reason: impl Into<String>) -> Response {
    (StatusCode::BAD_REQUEST, reason.into()).into_response()
}

/// The answer to a refused event (see [`http1::refusal`]).
pub(crate) fn refusal(e: &DispatchError) -> Response {
    http1::refusal::<axum::body::Body>(e)
}

async fn ingest(s: &AppState, headers: &http::HeaderMap, body: Bytes) -> Response {
    let pipeline = &s.pipeline;
    match crate::ingest::decode(headers, body) {
        Err(e) => bad_request(e.0),
        Ok(Ingested::Raw { src, event }) => {
            let event = event.with_trace_headers(headers);
            let src = pipeline.metrics().for_posted_src(&src);
            match pipeline
                .submit_raw(&src, event, crate::pipeline::Submit::BRIEFLY, None)
                .await
            {
                Ok(_) => StatusCode::OK.into_response(),
                Err(e) => refusal(&e),
            }
        }
        Ok(Ingested::CloudEvents(mut events)) => {
            // The request's own trace context, for events that carry none.
            if let Some(tp) = headers.get(&crate::trace::TRACEPARENT_HEADER) {
                let tp = tp.to_str().unwrap_or_default();
                let ts = headers
                    .get(&crate::trace::TRACESTATE_HEADER)
                    .and_then(|v| v.to_str().ok());
                for ce in &mut events {
                    crate::trace::adopt(ce, tp, ts);
                }
            }
            let total = events.len();
            // One wait for room for the whole batch.
            let admission = pipeline.admission(Wait::Briefly, None);
            let (accepted, refused) = pipeline.submit_all(events, admission).await;
            if let Some(e) = refused {
                let mut answer = refusal(&e);
                if total > 1 {
                    // The events before this one were accepted and will be delivered.
                    *answer.body_mut() = axum::body::Body::from(format!(
                        "accepted {accepted} of {total} events of the batch; then: {e}\n"
                    ));
                }
                return answer;
            }
            StatusCode::OK.into_response()
        }
    }
}
