//! The one HTTP/1.1 serving path of every server in the binary (the transformer's API, the
//! webhook gateways, the HTTP style's server): the accept loop, one connection, reading a body,
//! and the answer to a refused event. The hot routes (one POST, one event) are served straight
//! on hyper, without a router's per-request layers; everything else goes to an axum `Router`
//! through the same loop.
//!
//! Every server guards itself the same way ([`Limits`]): a connection that sends no request
//! head for the idle timeout is closed (a slow head, or a kept-alive connection left idle); a
//! body that does not arrive within the body timeout gets 408; past the connection cap the
//! idle connection quiet for the longest is closed to make room, and with none idle, new
//! connections wait in the kernel's queue; an accept that fails (out of file descriptors) is
//! retried with backoff and said at most once every ten seconds.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::error::DispatchError;
use crate::wake::Quiet;

/// How long a stopping server lets requests in flight finish before dropping them (under the
/// supervisor's default stop grace of 10 s).
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// How a server guards itself against slow and idle clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A connection that starts no request for this long (it sends its head slowly, or it is
    /// kept alive and idle) is closed, after this to twice this.
    pub idle_timeout: Duration,
    /// A request body must have arrived this long after its head; else 408.
    pub body_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

impl Default for Limits {
    /// 30 s idle, 60 s for a body, 4,096 connections.
    fn default() -> Self {
        Limits {
            idle_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(60),
            max_connections: 4096,
        }
    }
}

/// One accepted connection's handles: its stop signal (the server's, or its own when it is
/// shed to make room) and what the accept loop sees of its activity.
pub struct Conn {
    stop: CancellationToken,
    progress: Arc<Progress>,
    limits: Limits,
}

impl Conn {
    /// Cancelled when the server stops or this connection is shed.
    pub fn stop(&self) -> &CancellationToken {
        &self.stop
    }

    /// The limits of the server that accepted it.
    pub fn limits(&self) -> Limits {
        self.limits
    }
}

/// A connection of the accept loop.
struct Live {
    progress: Arc<Progress>,
    stop: CancellationToken,
}

/// Accepts connections on `listener` until `stop`, handing each (with `TCP_NODELAY` set) to
/// `connection`, whose future runs as a task of its own and serves it with
/// [`serve_connection`]. Once stopped, the listener is closed and the connections get
/// [`DRAIN_TIMEOUT`] to finish their requests; the rest are dropped.
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    stop: CancellationToken,
    limits: Limits,
    mut connection: F,
) where
    F: FnMut(TcpStream, Conn) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let local = listener.local_addr().ok();
    let mut connections = JoinSet::new();
    let mut live: HashMap<u64, Live> = HashMap::new();
    let mut next_id = 0u64;
    let mut backoff = Duration::ZERO;
    let failures = crate::ratelog::Throttle::new();
    let refused = crate::ratelog::Throttle::new();
    let max = limits.max_connections.max(1);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            Some(done) = connections.join_next(), if !connections.is_empty() => {
                if let Ok(id) = done {
                    live.remove(&id);
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((tcp, _peer)) => {
                    backoff = Duration::ZERO;
                    // At the cap, the connection idle the longest makes room; when every one is
                    // busy, the new one is closed at once rather than left in the backlog.
                    let shedding = live.values().filter(|c| c.stop.is_cancelled()).count();
                    if live.len() - shedding >= max && !shed_oldest_idle(&live) {
                        if let Some(suppressed) = refused.check() {
                            tracing::warn!(
                                addr = ?local, connections = live.len(), suppressed,
                                "connection cap reached and every connection is busy: closing new connections"
                            );
                        }
                        drop(tcp);
                        continue;
                    }
                    // Answers leave at once rather than waiting on Nagle's algorithm.
                    let _ = tcp.set_nodelay(true);
                    let id = next_id;
                    next_id += 1;
                    let conn = Conn {
                        stop: stop.child_token(),
                        progress: Arc::new(Progress::new()),
                        limits,
                    };
                    live.insert(
                        id,
                        Live {
                            progress: conn.progress.clone(),
                            stop: conn.stop.clone(),
                        },
                    );
                    let serve = connection(tcp, conn);
                    connections.spawn(async move {
                        serve.await;
                        id
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off rather than spin, and say
                    // so once in a while rather than at every attempt.
                    backoff = (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                    if let Some(suppressed) = failures.check() {
                        tracing::warn!(
                            addr = ?local, error = %e, connections = live.len(), suppressed,
                            "cannot accept a connection; retrying with backoff"
                        );
                    }
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                }
            }
        }
    }
    drop(listener);
    let finish = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(DRAIN_TIMEOUT, finish).await.is_err() {
        tracing::warn!(addr = ?local, "requests still in flight after the drain time: dropping them");
        connections.shutdown().await;
    }
}

/// Closes the idle connection quiet for the longest, if there is one not already closing;
/// false when there is none.
fn shed_oldest_idle(live: &HashMap<u64, Live>) -> bool {
    let oldest = live
        .values()
        .filter(|c| !c.stop.is_cancelled() && c.progress.serving.load(Ordering::Relaxed) == 0)
        .min_by_key(|c| c.progress.last_active.load(Ordering::Relaxed));
    match oldest {
        Some(c) => {
            tracing::debug!("connection cap reached: closing the connection idle the longest");
            c.stop.cancel();
            true
        }
        None => false,
    }
}

/// Milliseconds since the first call in this process: the clock of connections' activity.
fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// Serves one HTTP/1.1 connection (keep-alive) with `service` until the peer closes it, it
/// starts no request for the idle timeout (to twice that), or it is stopped: then the request
/// in flight is finished and the connection closed.
///
/// The idle timeout is one timer per connection, checked when it fires, rather than hyper's
/// header timer, which arms and cancels a timer (and reads once more) on every request.
pub async fn serve_connection<I, S, B>(io: I, service: S, conn: Conn)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>,
    S::Future: Send,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let builder = hyper::server::conn::http1::Builder::new();
    // Polled only when the stop wakes the task, not at every wake-up of the connection.
    let stopped = Quiet::new(conn.stop.cancelled());
    let mut stopped = std::pin::pin!(stopped);
    let period = conn.limits.idle_timeout;
    let progress = conn.progress.clone();
    progress.last_active.store(now_ms(), Ordering::Relaxed);
    let service = Watched {
        inner: service,
        progress: progress.clone(),
    };
    let served = builder.serve_connection(TokioIo::new(io), service);
    let mut served = std::pin::pin!(served);
    let watchdog = Quiet::new(tokio::time::sleep(period));
    let mut watchdog = std::pin::pin!(watchdog);
    let mut seen = 0;
    loop {
        tokio::select! {
            biased;
            _ = served.as_mut() => return,
            _ = stopped.as_mut() => {
                served.as_mut().graceful_shutdown();
                let _ = served.await;
                return;
            }
            _ = watchdog.as_mut() => {
                let started = progress.started.load(Ordering::Relaxed);
                if started == seen && progress.serving.load(Ordering::Relaxed) == 0 {
                    tracing::debug!(
                        timeout = ?period,
                        "closing a connection that started no request in time"
                    );
                    return;
                }
                seen = started;
                watchdog
                    .as_mut()
                    .inner()
                    .reset(tokio::time::Instant::now() + period);
            }
        }
    }
}

/// What the watchdog of one connection and the accept loop look at: requests started,
/// requests whose answer is still being made, and when it was last active.
struct Progress {
    started: AtomicU64,
    serving: AtomicU64,
    last_active: AtomicU64,
}

impl Progress {
    /// A new connection's: active now (a fresh connection is not the idle one to shed).
    fn new() -> Progress {
        Progress {
            started: AtomicU64::new(0),
            serving: AtomicU64::new(0),
            last_active: AtomicU64::new(now_ms()),
        }
    }
}

/// A service that keeps [`Progress`] for its connection.
struct Watched<S> {
    inner: S,
    progress: Arc<Progress>,
}

impl<S: Service<R>, R> Service<R> for Watched<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = Serving<S::Future>;

    fn call(&self, req: R) -> Self::Future {
        self.progress.started.fetch_add(1, Ordering::Relaxed);
        self.progress.serving.fetch_add(1, Ordering::Relaxed);
        Serving {
            inner: self.inner.call(req),
            _serving: ServingGuard(self.progress.clone()),
        }
    }
}

/// Counts one request as being served for as long as it lives.
struct ServingGuard(Arc<Progress>);

impl Drop for ServingGuard {
    fn drop(&mut self) {
        self.0.serving.fetch_sub(1, Ordering::Relaxed);
        self.0.last_active.store(now_ms(), Ordering::Relaxed);
    }
}

pin_project_lite::pin_project! {
    /// The answer of a [`Watched`] service: the inner answer, with its request counted as
    /// being served until it is ready or dropped.
    struct Serving<F> {
        #[pin]
        inner: F,
        _serving: ServingGuard,
    }
}

impl<F: Future> Future for Serving<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.project().inner.poll(cx)
    }
}

/// The answer to an event that was not accepted, the same from every server that takes
/// events (the ingest API, the webhook gateways, the HTTP style's `/event`): 503 with
/// `Retry-After` when trying again can help (the gateway is full or stopping, its outbox
/// cannot write), 400 for an event that cannot be valid. The body says why.
pub fn refusal<B: From<Bytes>>(e: &DispatchError) -> Response<B> {
    let status = match e {
        DispatchError::Invalid(_) => http::StatusCode::BAD_REQUEST,
        DispatchError::Limited { .. } => http::StatusCode::TOO_MANY_REQUESTS,
        DispatchError::Full { .. } | DispatchError::Disk(_) | DispatchError::Stopped => {
            http::StatusCode::SERVICE_UNAVAILABLE
        }
    };
    let mut answer = Response::new(B::from(Bytes::from(format!("{e}\n"))));
    *answer.status_mut() = status;
    let headers = answer.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Some(after) = e.retry_after() {
        headers.insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from(after.as_secs()),
        );
    }
    answer
}

/// A server cannot listen on its address.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct ListenError {
    /// The address.
    pub addr: std::net::SocketAddr,
    /// What the system said.
    pub source: std::io::Error,
}

/// Why a body could not be read.
#[derive(Debug)]
pub enum BodyError {
    /// It is longer than the limit.
    TooLarge,
    /// It did not arrive within the body timeout.
    TimedOut,
    /// The connection failed or the framing was wrong.
    Read(hyper::Error),
}

/// Reads a whole request body of at most `limit` bytes, within `timeout`. A `Content-Length`
/// over the limit is refused before reading; a body that arrived with its head (the usual
/// case) is taken at once, without a timer, and without a copy when it is in one piece.
pub async fn read_body(
    headers: &http::HeaderMap,
    body: Incoming,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, BodyError> {
    let mut read = std::pin::pin!(read_all(headers, body, limit));
    match std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await {
        Poll::Ready(r) => r,
        Poll::Pending => tokio::time::timeout(timeout, read)
            .await
            .unwrap_or(Err(BodyError::TimedOut)),
    }
}

async fn read_all(
    headers: &http::HeaderMap,
    mut body: Incoming,
    limit: usize,
) -> Result<Bytes, BodyError> {
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut first: Option<Bytes> = None;
    let mut joined: Option<BytesMut> = None;
    let mut len = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(BodyError::Read)?.into_data() else {
            continue; // trailers
        };
        len += data.len();
        if len > limit {
            return Err(BodyError::TooLarge);
        }
        match (&mut first, &mut joined) {
            (None, None) => first = Some(data),
            (Some(f), None) => {
                let mut j = BytesMut::with_capacity(declared.map_or(len, |n| n as usize).max(len));
                j.extend_from_slice(f);
                j.extend_from_slice(&data);
                first = None;
                joined = Some(j);
            }
            (_, Some(j)) => j.extend_from_slice(&data),
        }
    }
    Ok(match (first, joined) {
        (_, Some(j)) => j.freeze(),
        (Some(f), None) => f,
        (None, None) => Bytes::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;
    use hyper::service::service_fn;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server on a free port of loopback that runs `connection` for every connection it
    /// accepts, with the stop token it returns.
    async fn server<F, Fut>(
        limits: Limits,
        connection: F,
    ) -> (std::net::SocketAddr, CancellationToken)
    where
        F: FnMut(TcpStream, Conn) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(listener, stop.clone(), limits, connection));
        (addr, stop)
    }

    /// A server whose one route echoes the body it read (or says why it could not).
    async fn echo(limit: usize, limits: Limits) -> (std::net::SocketAddr, CancellationToken) {
        server(limits, move |tcp, conn| {
            let service = service_fn(move |req: Request<Incoming>| async move {
                let (parts, body) = req.into_parts();
                let text = match read_body(&parts.headers, body, limit, limits.body_timeout).await {
                    Ok(b) => b,
                    Err(BodyError::TooLarge) => Bytes::from_static(b"too large"),
                    Err(BodyError::TimedOut) => Bytes::from_static(b"timed out"),
                    Err(BodyError::Read(e)) => Bytes::from(e.to_string()),
                };
                Ok::<_, Infallible>(Response::new(Full::new(text)))
            });
            serve_connection(tcp, service, conn)
        })
        .await
    }

    async fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(request).await.unwrap();
        let mut out = Vec::new();
        tcp.read_to_end(&mut out).await.unwrap();
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn every_refusal_has_its_answer() {
        use std::time::Duration;
        let cases = [
            (
                DispatchError::Full {
                    retry_after: Duration::from_secs(3),
                },
                503,
                Some("3"),
                "full",
            ),
            (
                DispatchError::Disk("no space left".into()),
                503,
                Some("1"),
                "cannot store the event: no space left",
            ),
            (DispatchError::Stopped, 503, Some("1"), "stopping"),
            (
                DispatchError::Invalid("bad".into()),
                400,
                None,
                "invalid event: bad",
            ),
        ];
        for (e, status, retry_after, text) in cases {
            let r: Response<Full<Bytes>> = refusal(&e);
            assert_eq!(r.status().as_u16(), status, "{e}");
            assert_eq!(
                r.headers()
                    .get(http::header::RETRY_AFTER)
                    .map(|v| v.to_str().unwrap()),
                retry_after,
                "{e}"
            );
            let body = futures::executor::block_on(r.into_body().collect())
                .unwrap()
                .to_bytes();
            assert!(String::from_utf8_lossy(&body).contains(text), "{e}");
        }
    }

    #[tokio::test]
    async fn bodies_in_one_piece_in_chunks_and_over_the_limit() {
        let (addr, stop) = echo(10, Limits::default()).await;
        let head = "POST / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n";
        let cases = [
            (
                "in one piece",
                "content-length: 5\r\n\r\nhello",
                "\r\n\r\nhello",
            ),
            (
                "in chunks",
                "transfer-encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n",
                "\r\n\r\nabcdefg",
            ),
            (
                "declared over the limit",
                "content-length: 11\r\n\r\nhello world",
                "too large",
            ),
            (
                "found over the limit",
                "transfer-encoding: chunked\r\n\r\n6\r\nabcdef\r\n6\r\nghijkl\r\n0\r\n\r\n",
                "too large",
            ),
        ];
        for (what, rest, want) in cases {
            let answer = exchange(addr, format!("{head}{rest}").as_bytes()).await;
            assert!(answer.ends_with(want), "{what}: {answer}");
        }
        stop.cancel();
    }

    /// A server whose one route answers after `serve_for`, closing connections that start no
    /// request for `period` (to twice that).
    async fn watched(
        period: Duration,
        serve_for: Duration,
    ) -> (std::net::SocketAddr, CancellationToken) {
        let limits = Limits {
            idle_timeout: period,
            ..Limits::default()
        };
        server(limits, move |tcp, conn| {
            let service = service_fn(move |_req: Request<Incoming>| async move {
                tokio::time::sleep(serve_for).await;
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"done"))))
            });
            serve_connection(tcp, service, conn)
        })
        .await
    }

    /// Reads until the server closes the connection (or 10 s pass: a failure).
    async fn read_until_closed(tcp: &mut TcpStream) -> String {
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut out))
            .await
            .expect("the server closed the connection")
            .unwrap();
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn a_head_that_does_not_come_in_time_closes_the_connection_a_slow_answer_does_not() {
        let period = Duration::from_millis(100);
        let (addr, stop) = watched(period, period * 4).await;
        // Half a head, then nothing: closed without an answer.
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"POST / HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        let started = tokio::time::Instant::now();
        assert_eq!(read_until_closed(&mut slow).await, "");
        assert!(
            started.elapsed() >= period,
            "closed after {:?}",
            started.elapsed()
        );
        // An idle kept-alive connection is closed too, after its answer.
        let mut idle = TcpStream::connect(addr).await.unwrap();
        idle.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let answer = read_until_closed(&mut idle).await;
        // The answer took four periods: being served counts as progress.
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("done"),
            "{answer}"
        );
        stop.cancel();
    }

    #[tokio::test]
    async fn a_body_that_does_not_come_in_time_times_out() {
        let limits = Limits {
            body_timeout: Duration::from_millis(100),
            ..Limits::default()
        };
        let (addr, stop) = echo(100, limits).await;
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nabc")
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        assert!(
            String::from_utf8_lossy(&buf[..n]).ends_with("timed out"),
            "{}",
            String::from_utf8_lossy(&buf[..n])
        );
        stop.cancel();
    }

    #[tokio::test]
    async fn past_the_cap_the_connection_idle_the_longest_makes_room() {
        let limits = Limits {
            max_connections: 2,
            ..Limits::default()
        };
        let (addr, stop) = echo(10, limits).await;
        let request = b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nhi";
        let mut buf = [0u8; 256];
        // Two kept-alive connections, the first idle for longer.
        let mut oldest = TcpStream::connect(addr).await.unwrap();
        oldest.write_all(request).await.unwrap();
        let n = oldest.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut newer = TcpStream::connect(addr).await.unwrap();
        newer.write_all(request).await.unwrap();
        let n = newer.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        // A third: the oldest idle one is closed, the third is served.
        let mut third = TcpStream::connect(addr).await.unwrap();
        third.write_all(request).await.unwrap();
        let n = tokio::time::timeout(Duration::from_secs(10), third.read(&mut buf))
            .await
            .expect("the third connection is served")
            .unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        let n = tokio::time::timeout(Duration::from_secs(10), oldest.read(&mut buf))
            .await
            .expect("the oldest idle connection is closed")
            .unwrap_or(0);
        assert_eq!(n, 0);
        newer.write_all(request).await.unwrap();
        let n = newer.read(&mut buf).await.unwrap();
        assert!(
            String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
            "the newer connection is kept"
        );
        stop.cancel();
    }

    #[tokio::test]
    async fn a_stop_closes_the_listener_and_idle_connections() {
        let (addr, stop) = echo(10, Limits::default()).await;
        let mut idle = TcpStream::connect(addr).await.unwrap();
        idle.write_all(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nhi")
            .await
            .unwrap();
        let mut buf = [0u8; 256];
        let n = idle.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        stop.cancel();
        // The kept-alive connection is closed by the server: the read ends.
        let n = tokio::time::timeout(Duration::from_secs(10), idle.read(&mut buf))
            .await
            .expect("the idle connection was closed")
            .unwrap_or(0);
        assert_eq!(n, 0);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).await.is_ok() {
            assert!(tokio::time::Instant::now() < deadline, "still listening");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
