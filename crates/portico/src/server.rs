//! The transformer's HTTP API on `TRANSFORMER_PORT`.
//!
//! | request | answer |
//! |---|---|
//! | `POST /` `{"src", "payload": "<base64>"}` | 200 once accepted; 400 with a reason; 413 over the limit; 503 + `Retry-After` when full |
//! | `POST /` a CloudEvent (structured, binary) or a batch | validated ([`crate::ingest`]), relayed with its own attributes; same answers |
//! | `GET /readiness` | 200 once the first configurations are applied, else 503 |
//! | `GET /healthz` | 200 while the process serves |
//! | `GET /status` | the gateway, every node and the outbox, as JSON |
//! | `GET /metrics` | Prometheus text format |
//!
//! With an ingest token (`--ingest-token-file`), `POST /` needs `Authorization: Bearer
//! <token>` (401 otherwise); the read-only routes stay open to probes and Prometheus.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use chrono::{DateTime, Utc};
use hyper::service::Service as _;
use hyper_util::service::TowerToHyperService;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::dispatch::Ack;
use crate::dispatch::outbox::OutboxStatus;
use crate::error::DispatchError;
use crate::http1;
use crate::ingest::Ingested;
use crate::metrics::RejectReason;
use crate::pipeline::{Item, Pipeline, Wait};
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
}

/// Shared state of the handlers.
pub(crate) struct AppState {
    /// The gateway.
    pub info: GatewayInfo,
    /// Its nodes.
    pub board: Arc<StatusBoard>,
    /// Where ingested events go.
    pub pipeline: Arc<Pipeline>,
    /// Set once the first configurations are applied.
    pub ready: AtomicBool,
}

/// The router of the transformer's API, but for `POST /` (see [`serve_api`]).
fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", any(ingest_method_not_allowed))
        .route("/healthz", get(healthz))
        .route("/readiness", get(readiness))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
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
        rest: TowerToHyperService::new(router(state.clone())),
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
    async fn handle(&self, req: http::Request<hyper::body::Incoming>) -> Response {
        if req.method() != Method::POST || req.uri().path() != "/" {
            return match self.rest.call(req).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
        }
        if let Some(token) = &self.token {
            let offered = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
            if !offered.is_some_and(|t| token.matches(t)) {
                // Counted under one label: the `src` of an unauthenticated caller is not taken.
                let m = self.state.pipeline.metrics();
                m.reject(&m.for_src("_unauthenticated"), RejectReason::Unauthorized);
                return (
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, "Bearer")],
                    "POST / needs `Authorization: Bearer <token>` with the gateway's ingest token\n",
                )
                    .into_response();
            }
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
        [(header::ALLOW, "POST")],
        "events are POSTed to /\n",
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
}

async fn status(State(s): State<Arc<AppState>>) -> Response {
    axum::Json(StatusBody {
        gateway: &s.info,
        nodes: s.board.nodes(),
        outbox: s.pipeline.dispatcher().outbox_status(),
    })
    .into_response()
}

async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        s.pipeline.metrics().encode(),
    )
        .into_response()
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
            let src = pipeline.metrics().for_posted_src(&src);
            let admission = pipeline.admission(Wait::Briefly, None);
            match pipeline
                .submit(&src, Item::Raw(event), admission, Ack::OnAcceptance)
                .await
            {
                Ok(_) => StatusCode::OK.into_response(),
                Err(e) => refusal(&e),
            }
        }
        Ok(Ingested::CloudEvents(events)) => {
            let total = events.len();
            // One wait for room for the whole batch.
            let admission = pipeline.admission(Wait::Briefly, None);
            for (i, ce) in events.into_iter().enumerate() {
                let src = pipeline.metrics().for_posted_src(&ce.source);
                if let Err(e) = pipeline
                    .submit(&src, Item::Made(ce), admission, Ack::OnAcceptance)
                    .await
                {
                    let mut answer = refusal(&e);
                    if total > 1 {
                        // The events before this one were accepted and will be delivered.
                        *answer.body_mut() = axum::body::Body::from(format!(
                            "accepted {i} of {total} events of the batch; then: {e}\n"
                        ));
                    }
                    return answer;
                }
            }
            StatusCode::OK.into_response()
        }
    }
}
