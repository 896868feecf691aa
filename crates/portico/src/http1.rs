//! Serving HTTP/1.1 straight on hyper: the accept loop, one connection, and reading a body
//! under a size limit. The transformer's API and the webhook gateways serve their hot path
//! (one POST, one event) through these, without a router's per-request layers, boxing and
//! header copies in between; everything else still goes to an axum `Router`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

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

/// Accepts connections on `listener` until `stop`, handing each (with `TCP_NODELAY` set) to
/// `connection`, whose future runs as a task of its own. Once stopped, the listener is closed
/// and the connections get `drain` to finish their requests (they see `stop` too); the rest
/// are dropped.
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    stop: CancellationToken,
    drain: Duration,
    mut connection: F,
) where
    F: FnMut(TcpStream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let local = listener.local_addr().ok();
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((tcp, _peer)) => {
                    // Answers leave at once rather than waiting on Nagle's algorithm.
                    let _ = tcp.set_nodelay(true);
                    connections.spawn(connection(tcp));
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!(addr = ?local, error = %e, "cannot accept a connection");
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                }
            }
        }
    }
    drop(listener);
    let finish = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(drain, finish).await.is_err() {
        tracing::warn!(addr = ?local, "requests still in flight after the drain time: dropping them");
        connections.shutdown().await;
    }
}

/// Serves one HTTP/1.1 connection (keep-alive) with `service` until the peer closes it; on
/// `stop`, finishes the request in flight and closes.
///
/// `header_timeout` (for a server open to the world) closes a connection that neither starts
/// a request nor has one being served for a whole `header_timeout`: a client that sends its
/// head slowly, or keeps an idle connection open, is dropped after `header_timeout` to twice
/// that. It is one timer per connection, checked when it fires, rather than hyper's header
/// timer, which arms and cancels a timer (and reads once more) on every request.
pub async fn serve_connection<I, S, B>(
    io: I,
    service: S,
    stop: CancellationToken,
    header_timeout: Option<Duration>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>,
    S::Future: Send,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let builder = hyper::server::conn::http1::Builder::new();
    // Polled only when the stop wakes the task, not at every wake-up of the connection.
    let stopped = Quiet::new(stop.cancelled());
    let mut stopped = std::pin::pin!(stopped);
    let Some(period) = header_timeout else {
        let conn = builder.serve_connection(TokioIo::new(io), service);
        let mut conn = std::pin::pin!(conn);
        tokio::select! {
            biased;
            _ = conn.as_mut() => {}
            _ = stopped.as_mut() => {
                // Finish the request in flight, then close (idle keep-alive connections close now).
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
        }
        return;
    };
    let progress = Arc::new(Progress::default());
    let service = Watched {
        inner: service,
        progress: progress.clone(),
    };
    let conn = builder.serve_connection(TokioIo::new(io), service);
    let mut conn = std::pin::pin!(conn);
    let watchdog = Quiet::new(tokio::time::sleep(period));
    let mut watchdog = std::pin::pin!(watchdog);
    let mut seen = 0;
    loop {
        tokio::select! {
            biased;
            _ = conn.as_mut() => return,
            _ = stopped.as_mut() => {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
                return;
            }
            _ = watchdog.as_mut() => {
                let started = progress.started.load(Ordering::Relaxed);
                if started == seen && progress.serving.load(Ordering::Relaxed) == 0 {
                    tracing::debug!(
                        timeout = ?period,
                        "closing a connection that sent no whole request head in time"
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

/// What the watchdog of one connection looks at: requests started, and requests whose
/// answer is still being made.
#[derive(Default)]
struct Progress {
    started: AtomicU64,
    serving: AtomicU64,
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
    /// The connection failed or the framing was wrong.
    Read(hyper::Error),
}

/// Reads a whole request body of at most `limit` bytes. A `Content-Length` over the limit is
/// refused before reading; a body that arrives in one piece (the usual case) is not copied.
pub async fn read_body(
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
    async fn server<F, Fut>(mut connection: F) -> (std::net::SocketAddr, CancellationToken)
    where
        F: FnMut(TcpStream, CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(accept_loop(
            listener,
            stop.clone(),
            DRAIN_TIMEOUT,
            move |tcp| connection(tcp, s.clone()),
        ));
        (addr, stop)
    }

    /// A server whose one route echoes the body it read (or says why it could not).
    async fn echo(limit: usize) -> (std::net::SocketAddr, CancellationToken) {
        server(move |tcp, stop| {
            let service = service_fn(move |req: Request<Incoming>| async move {
                let (parts, body) = req.into_parts();
                let text = match read_body(&parts.headers, body, limit).await {
                    Ok(b) => b,
                    Err(BodyError::TooLarge) => Bytes::from_static(b"too large"),
                    Err(BodyError::Read(e)) => Bytes::from(e.to_string()),
                };
                Ok::<_, Infallible>(Response::new(Full::new(text)))
            });
            serve_connection(tcp, service, stop, None)
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
        let (addr, stop) = echo(10).await;
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
        server(move |tcp, stop| {
            let service = service_fn(move |_req: Request<Incoming>| async move {
                tokio::time::sleep(serve_for).await;
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"done"))))
            });
            serve_connection(tcp, service, stop, Some(period))
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
    async fn a_stop_closes_the_listener_and_idle_connections() {
        let (addr, stop) = echo(10).await;
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
