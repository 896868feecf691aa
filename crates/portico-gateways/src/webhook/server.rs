//! The HTTP servers of the webhook-style gateways, shared by port.
//!
//! A [`Servers`] registry belongs to one executor (so to one gateway). Each configuration
//! attaches one [`Route`] — an endpoint and a method — to the server of its port, starting that
//! server (plain HTTP or TLS) when it is the port's first configuration. Routes live in a table
//! the request handler reads on every request, so adding or removing one is immediate and never
//! restarts the server or drops the other configurations' requests. When a port's last route is
//! released, its server stops accepting, lets requests in flight finish (for a bounded drain
//! time), and releases the port before [`RouteGuard::release`] returns.
//!
//! The handler answers the caller only once the event is accepted:
//!
//! | answer | when |
//! |---|---|
//! | 200, empty body | the event was accepted for delivery (as the transformer's `POST /` answers) |
//! | 200, `ignored: …` | the [`Gate`] ignored the delivery (the body says why) |
//! | the gate's [`Reply`] | a gate that makes its own events ([`Gate::event`]) answers for itself: once the event is accepted, or instead of one (a body it cannot read, a filter that does not keep it) |
//! | 401 | the [`Gate`] refused the delivery (bad or missing signature); counted as `portico_events_rejected_total{reason="unauthorized"}` |
//! | 404 | no configuration owns the endpoint |
//! | 405 | configurations own the endpoint, but none takes the method (`Allow` lists those that do) |
//! | 408 | the body did not arrive within the body timeout (`--body-timeout`, default 60 s) |
//! | 413 | the body is over the route's `maxBodySize` |
//! | 400 | the event cannot be made valid |
//! | 503 + `Retry-After` | the gateway is full, its outbox cannot write, or the configuration is stopping; for a gate whose sender keeps its messages until answered ([`Gate::ack`] is [`Ack::AfterDelivery`]), in `ackAfterDelivery`, also when the event was not delivered to every watcher within [`DELIVERY_WAIT`] |

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use std::convert::Infallible;

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, header,
};
use portico::http1;
use portico::{Ack, ConfigContext, ConfigError, ConfigId, Event, RejectReason, Submit};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::payload;

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a configuration without a port waits for the gateway's server to start.
const SHARED_WAIT: Duration = Duration::from_secs(5);
/// How long attaching waits for a port that a stopping server of ours still holds.
const REBIND_WAIT: Duration = Duration::from_secs(2);
/// How long the caller of a gate whose [`Gate::ack`] is [`Ack::AfterDelivery`] waits, in
/// `ackAfterDelivery`, for every watcher to take its event before it gets 503 (and sends it
/// again): Amazon SNS, for one, gives an HTTP endpoint 15 s to answer.
pub const DELIVERY_WAIT: Duration = Duration::from_secs(14);

/// What a [`Gate`] decides about one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Dispatch it.
    Accept,
    /// Refuse it with 401; the reason goes to the caller (never a secret).
    Unauthorized(String),
    /// Answer 200 without dispatching (an event type the configuration does not want); the
    /// reason goes to the caller.
    Ignore(String),
}

/// The check a route applies to every delivery before it becomes an event: a signature, a
/// token, an event-type filter. The plain webhook's gate accepts everything unless it has an
/// HMAC secret; `github` and `gitlab` bring their own.
pub trait Gate: Send + Sync + 'static {
    /// Decides about a delivery from its headers and whole body.
    fn admit(&self, headers: &HeaderMap, body: &[u8]) -> Verdict;

    /// Hears that an admitted delivery's event was not accepted (the caller got 503 or 400
    /// and may send it again): a gate that remembers deliveries to refuse replays forgets
    /// this one.
    fn not_taken(&self, _headers: &HeaderMap) {}

    /// Headers never copied into the event (they carry a secret).
    fn redacted_headers(&self) -> &[HeaderName] {
        &[]
    }

    /// The event an admitted delivery becomes, or the answer the caller gets instead. The
    /// default: the webhook's payload ([`payload`]), and an empty 200 once it is accepted.
    /// A gateway with its own body format (`storagegrid`) reads the body here.
    fn event(&self, headers: &HeaderMap, body: &Bytes) -> Made {
        match payload::event(headers, body, self.redacted_headers()) {
            Ok(e) => Made::Event(e, None),
            Err(e) => Made::Answer(Reply::text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot encode the event: {e}\n"),
            )),
        }
    }

    /// [`Gate::event`] for a gate that needs I/O to decide (a signing certificate to fetch, a
    /// subscription to confirm): the server awaits this one, whose default is
    /// [`Gate::event`].
    fn make<'a>(&'a self, headers: &'a HeaderMap, body: &'a Bytes) -> BoxFuture<'a, Made> {
        Box::pin(std::future::ready(self.event(headers, body)))
    }

    /// When the caller gets its 200: once the event is accepted ([`Ack::OnAcceptance`], the
    /// default), or, for a sender that keeps a message and sends it again until it is
    /// answered ([`Ack::AfterDelivery`]), in `ackAfterDelivery` only once every watcher took
    /// the event (503 when that takes more than [`DELIVERY_WAIT`]).
    fn ack(&self) -> Ack {
        Ack::OnAcceptance
    }
}

/// What [`Gate::event`] makes of a delivery.
#[derive(Debug)]
pub enum Made {
    /// Dispatch this event; once it is accepted, answer with the reply (`None`: 200 with an
    /// empty body). When it is not accepted, the caller gets 503 or 400 as for any event.
    Event(Event, Option<Reply>),
    /// Make no event and answer with this (400 for a body the route cannot read, 200 for a
    /// delivery its filters do not keep).
    Answer(Reply),
    /// Make no event and refuse the delivery with this answer (a 4xx), counted in
    /// `portico_events_rejected_total` under this reason.
    Refused(RejectReason, Reply),
}

/// An answer to the caller of a webhook-style route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The status.
    pub status: StatusCode,
    /// The `Content-Type`.
    pub content_type: &'static str,
    /// The body.
    pub body: Bytes,
}

impl Reply {
    /// A `text/plain; charset=utf-8` answer.
    pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Reply {
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }

    fn response(self) -> Answer {
        let mut r = Response::new(Full::new(self.body));
        *r.status_mut() = self.status;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        r
    }
}

/// A gate that takes everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct Open;

impl Gate for Open {
    fn admit(&self, _: &HeaderMap, _: &[u8]) -> Verdict {
        Verdict::Accept
    }
}

/// Where a route listens and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    /// The port (all interfaces).
    pub port: u16,
    /// TLS certificate chain and key (PEM files), when the port serves HTTPS.
    pub tls: Option<TlsFiles>,
}

/// A PEM certificate chain and private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// One configuration's route on a port.
pub struct Route {
    /// The path, starting with `/`.
    pub endpoint: String,
    /// The method.
    pub method: Method,
    /// Largest body taken, in bytes.
    pub max_body: usize,
    /// The check applied before dispatching.
    pub gate: Arc<dyn Gate>,
    /// The configuration that owns the route: its events carry its `src`.
    pub ctx: ConfigContext,
}

type Endpoints = HashMap<String, HashMap<Method, Arc<Route>>>;

/// The routes of one port, read by its handler on every request.
#[derive(Default)]
struct RouteTable {
    endpoints: RwLock<Endpoints>,
}

enum Lookup {
    Found(Arc<Route>),
    NoEndpoint,
    NoMethod(Vec<Method>),
}

impl RouteTable {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Endpoints> {
        self.endpoints.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Endpoints> {
        self.endpoints.write().unwrap_or_else(|p| p.into_inner())
    }

    fn find(&self, path: &str, method: &Method) -> Lookup {
        let endpoints = self.read();
        let Some(methods) = endpoints.get(path) else {
            return Lookup::NoEndpoint;
        };
        match methods.get(method) {
            Some(r) => Lookup::Found(r.clone()),
            None => {
                let mut allow: Vec<Method> = methods.keys().cloned().collect();
                allow.sort_by(|a, b| a.as_str().cmp(b.as_str()));
                Lookup::NoMethod(allow)
            }
        }
    }

    fn insert(&self, route: Route) -> Result<(), String> {
        let mut endpoints = self.write();
        let methods = endpoints.entry(route.endpoint.clone()).or_default();
        if let Some(owner) = methods.get(&route.method) {
            return Err(format!(
                "{} {} is already taken by configuration `{}`",
                route.method,
                route.endpoint,
                owner.ctx.src()
            ));
        }
        methods.insert(route.method.clone(), Arc::new(route));
        Ok(())
    }

    /// Removes the route if `id` owns it; true when the table is then empty.
    fn remove(&self, endpoint: &str, method: &Method, id: ConfigId) -> bool {
        let mut endpoints = self.write();
        if let Some(methods) = endpoints.get_mut(endpoint) {
            if methods.get(method).is_some_and(|r| r.ctx.id() == id) {
                methods.remove(method);
            }
            if methods.is_empty() {
                endpoints.remove(endpoint);
            }
        }
        endpoints.is_empty()
    }
}

struct PortServer {
    routes: Arc<RouteTable>,
    tls: Option<TlsFiles>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// The servers of one executor, by port. Share it between the configurations of one gateway
/// (it lives in the executor).
pub struct Servers {
    host: IpAddr,
    ports: Mutex<HashMap<u16, PortServer>>,
}

impl Default for Servers {
    fn default() -> Self {
        Servers::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    }
}

impl std::fmt::Debug for Servers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ports: Vec<u16> = self.lock().keys().copied().collect();
        f.debug_struct("Servers")
            .field("host", &self.host)
            .field("ports", &ports)
            .finish()
    }
}

impl Servers {
    /// Servers listening on `host` (webhooks listen on all interfaces by default: their
    /// callers are elsewhere).
    pub fn new(host: IpAddr) -> Servers {
        Servers {
            host,
            ports: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u16, PortServer>> {
        self.ports.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The ports served now.
    pub fn ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self.lock().keys().copied().collect();
        ports.sort_unstable();
        ports
    }

    /// Adds `route` to the one server of this gateway: the route of a configuration that names
    /// no port (as Argo Events allowed) shares the port another configuration listens on.
    /// Configurations start together, so it waits a while for that server; with none, or with
    /// several ports to choose from, the error says so (`failed`: retried with backoff).
    pub async fn attach_shared(self: &Arc<Self>, route: Route) -> Result<RouteGuard, ConfigError> {
        let deadline = tokio::time::Instant::now() + SHARED_WAIT;
        loop {
            let listen = {
                let ports = self.lock();
                if ports.len() > 1 {
                    let mut list: Vec<u16> = ports.keys().copied().collect();
                    list.sort_unstable();
                    return Err(ConfigError::failed(format!(
                        "this configuration names no port, and the gateway's webhooks listen on several ({}): give it its `port`",
                        list.iter()
                            .map(u16::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
                ports.iter().next().map(|(port, server)| Listen {
                    port: *port,
                    tls: server.tls.clone(),
                })
            };
            if let Some(listen) = listen {
                return self.attach(&listen, route).await;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ConfigError::failed(
                    "this configuration names no port and no configuration of the gateway listens on one yet: it shares the port of a configuration that names it",
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Adds `route` to the server of `listen.port`, starting the server if the port has none.
    /// Errors are `failed` (retried with backoff): the port may be held by someone else for a
    /// while, or the route by a configuration that is going away.
    pub async fn attach(
        self: &Arc<Self>,
        listen: &Listen,
        route: Route,
    ) -> Result<RouteGuard, ConfigError> {
        let guard = RouteGuard {
            servers: Some(self.clone()),
            port: listen.port,
            endpoint: route.endpoint.clone(),
            method: route.method.clone(),
            id: route.ctx.id(),
        };
        // A TLS configuration is read before taking the lock (files).
        let acceptor = match &listen.tls {
            Some(files) => Some(tls_acceptor(files)?),
            None => None,
        };
        let deadline = tokio::time::Instant::now() + REBIND_WAIT;
        let limits = route.ctx.gateway().http_limits();
        let mut route = Some(route);
        loop {
            {
                let mut ports = self.lock();
                if let Some(server) = ports.get(&listen.port) {
                    if server.tls != listen.tls {
                        return Err(ConfigError::failed(format!(
                            "port {} is already served {} by another configuration of this gateway: configurations sharing a port must use the same TLS files",
                            listen.port,
                            match &server.tls {
                                Some(t) => format!("with TLS ({})", t.cert.display()),
                                None => "without TLS".to_string(),
                            }
                        )));
                    }
                    let Some(r) = route.take() else {
                        return Err(ConfigError::failed("internal: route already taken"));
                    };
                    server
                        .routes
                        .insert(r)
                        .map_err(|e| ConfigError::failed(format!("port {}: {e}", listen.port)))?;
                    return Ok(guard);
                }
                let addr = SocketAddr::new(self.host, listen.port);
                match bind(addr) {
                    Ok(listener) => {
                        let routes = Arc::new(RouteTable::default());
                        let Some(r) = route.take() else {
                            return Err(ConfigError::failed("internal: route already taken"));
                        };
                        routes.insert(r).map_err(|e| {
                            ConfigError::failed(format!("port {}: {e}", listen.port))
                        })?;
                        let stop = CancellationToken::new();
                        let task = tokio::spawn(serve(
                            listener,
                            acceptor.clone(),
                            routes.clone(),
                            limits,
                            stop.clone(),
                        ));
                        tracing::info!(
                            port = listen.port,
                            tls = listen.tls.is_some(),
                            "webhook server listening"
                        );
                        ports.insert(
                            listen.port,
                            PortServer {
                                routes,
                                tls: listen.tls.clone(),
                                stop,
                                task,
                            },
                        );
                        return Ok(guard);
                    }
                    Err(e)
                        if e.kind() == std::io::ErrorKind::AddrInUse
                            && tokio::time::Instant::now() < deadline => {}
                    Err(e) => {
                        return Err(ConfigError::failed(format!(
                            "cannot listen on {addr}: {e} (is another program using port {}?)",
                            listen.port
                        )));
                    }
                }
            }
            // The port may still be held by a server of ours that is draining.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Removes a route; when it was its port's last, takes the server out of the registry.
    fn detach(
        &self,
        port: u16,
        endpoint: &str,
        method: &Method,
        id: ConfigId,
    ) -> Option<PortServer> {
        let mut ports = self.lock();
        let empty = ports
            .get(&port)
            .map(|s| s.routes.remove(endpoint, method, id))?;
        if empty {
            let server = ports.remove(&port)?;
            server.stop.cancel();
            Some(server)
        } else {
            None
        }
    }
}

/// One configuration's hold on a route. [`release`](RouteGuard::release) it when the
/// configuration stops; dropping it removes the route too (and asks an emptied server to stop)
/// but cannot wait for the port to be released.
pub struct RouteGuard {
    servers: Option<Arc<Servers>>,
    port: u16,
    endpoint: String,
    method: Method,
    id: ConfigId,
}

impl RouteGuard {
    /// The port the route is served on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Removes the route; if it was its port's last, stops the server and waits until the
    /// port is released (requests in flight are answered first, within a drain time).
    pub async fn release(mut self) {
        if let Some(servers) = self.servers.take()
            && let Some(server) = servers.detach(self.port, &self.endpoint, &self.method, self.id)
        {
            let _ = server.task.await;
            tracing::info!(port = self.port, "webhook server stopped");
        }
    }
}

impl Drop for RouteGuard {
    fn drop(&mut self) {
        if let Some(servers) = self.servers.take() {
            // The server task ends by itself once cancelled.
            let _ = servers.detach(self.port, &self.endpoint, &self.method, self.id);
        }
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let std = std::net::TcpListener::bind(addr)?;
    std.set_nonblocking(true)?;
    TcpListener::from_std(std)
}

fn tls_acceptor(files: &TlsFiles) -> Result<TlsAcceptor, ConfigError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            ConfigError::failed(format!(
                "serverCertPath: cannot read a PEM certificate chain from {}: {e}",
                files.cert.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(ConfigError::failed(format!(
            "serverCertPath: {} holds no certificate",
            files.cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
        ConfigError::failed(format!(
            "serverKeyPath: cannot read a PEM private key from {}: {e}",
            files.key.display()
        ))
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| {
            ConfigError::failed(format!(
                "serverCertPath/serverKeyPath: {} and {} do not make a TLS identity: {e}",
                files.cert.display(),
                files.key.display()
            ))
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Accepts connections until `stop`, then drains them.
async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    routes: Arc<RouteTable>,
    limits: http1::Limits,
    stop: CancellationToken,
) {
    http1::accept_loop(listener, stop, limits, move |tcp, conn| {
        connection(tcp, tls.clone(), routes.clone(), conn)
    })
    .await
}

async fn connection(
    tcp: tokio::net::TcpStream,
    tls: Option<TlsAcceptor>,
    routes: Arc<RouteTable>,
    conn: http1::Conn,
) {
    let body_timeout = conn.limits().body_timeout;
    let service = hyper::service::service_fn(move |req| {
        let routes = routes.clone();
        async move { Ok::<_, Infallible>(handle(&routes, req, body_timeout).await) }
    });
    match tls {
        None => http1::serve_connection(tcp, service, conn).await,
        Some(acceptor) => {
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
            let stream = tokio::select! {
                _ = conn.stop().cancelled() => return,
                r = handshake => match r {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                }
            };
            http1::serve_connection(stream, service, conn).await
        }
    }
}

type Answer = Response<Full<Bytes>>;

fn text(status: StatusCode, body: impl Into<Bytes>) -> Answer {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Every request of a port: find the route, read the body, check it, dispatch it.
async fn handle(routes: &RouteTable, req: Request<Incoming>, body_timeout: Duration) -> Answer {
    let (parts, body) = req.into_parts();
    let (method, uri, headers) = (&parts.method, &parts.uri, &parts.headers);
    let route = match routes.find(uri.path(), method) {
        Lookup::Found(r) => r,
        Lookup::NoEndpoint => {
            return text(
                StatusCode::NOT_FOUND,
                format!("no configuration takes {}\n", uri.path()),
            );
        }
        Lookup::NoMethod(allow) => {
            let allow = allow
                .iter()
                .map(Method::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            let mut r = text(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{} takes {allow}, not {method}\n", uri.path()),
            );
            if let Ok(v) = HeaderValue::from_str(&allow) {
                r.headers_mut().insert(header::ALLOW, v);
            }
            return r;
        }
    };
    let body = match read_body(headers, body, route.max_body, body_timeout).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let src = route.ctx.src();
    match route.gate.admit(headers, &body) {
        Verdict::Accept => {}
        Verdict::Unauthorized(why) => {
            route.ctx.count_rejected(RejectReason::Unauthorized, 1);
            tracing::debug!(src, reason = %why, "webhook delivery refused");
            return text(StatusCode::UNAUTHORIZED, format!("{why}\n"));
        }
        Verdict::Ignore(why) => return text(StatusCode::OK, format!("ignored: {why}\n")),
    }
    let (event, reply) = match route.gate.make(headers, &body).await {
        Made::Event(event, reply) => (event, reply),
        Made::Answer(reply) => return reply.response(),
        Made::Refused(reason, reply) => {
            route.ctx.count_rejected(reason, 1);
            return reply.response();
        }
    };
    let how = Submit {
        ack: route.gate.ack(),
        ..Submit::BRIEFLY
    };
    match route.ctx.submit(event, how).await {
        Ok(delivered) if !delivered.is_done() => {
            match tokio::time::timeout(DELIVERY_WAIT, delivered.wait()).await {
                Ok(true) => match reply {
                    None => Response::new(Full::new(Bytes::new())),
                    Some(reply) => reply.response(),
                },
                _ => {
                    route.gate.not_taken(headers);
                    let mut r = text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!(
                            "the event was not delivered to every watcher within {}s (ackAfterDelivery): send it again\n",
                            DELIVERY_WAIT.as_secs()
                        ),
                    );
                    r.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                    r
                }
            }
        }
        // No body and no header to build: the answer to every event is the cheapest one.
        Ok(_) => match reply {
            None => Response::new(Full::new(Bytes::new())),
            Some(reply) => reply.response(),
        },
        Err(e) => {
            route.gate.not_taken(headers);
            http1::refusal(&e)
        }
    }
}

async fn read_body(
    headers: &HeaderMap,
    body: Incoming,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, Answer> {
    match http1::read_body(headers, body, limit, timeout).await {
        Ok(body) => Ok(body),
        Err(http1::BodyError::TimedOut) => Err(text(
            StatusCode::REQUEST_TIMEOUT,
            format!("the body did not arrive within {}s\n", timeout.as_secs()),
        )),
        Err(http1::BodyError::TooLarge) => Err(text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is over this endpoint's limit of {limit} bytes (maxBodySize)\n"),
        )),
        Err(http1::BodyError::Read(e)) => Err(text(
            StatusCode::BAD_REQUEST,
            format!("cannot read the body: {e}\n"),
        )),
    }
}
