//! The HTTP watcher: keep-alive connections, one request per attempt.
//!
//! Events are written in structured mode by default (`application/cloudevents+json`), in
//! binary mode (`ce-*` headers, the data as body), or as the original's CloudEvents 0.1 JSON.
//! 2xx is delivered; connection errors, timeouts, 408, 429 and 5xx are retryable; any other
//! status is a permanent failure.
//!
//! Transport: an `http://` watcher gets connections of its own (`hyper`'s HTTP/1 client
//! connections, each used by one request at a time and kept alive in the sender's idle list),
//! which is 10–30 % cheaper per event than a shared pool (measured against `hyper_util`'s); an `https://`
//! watcher goes through the gateway's shared `reqwest` client (rustls).

use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;

use super::Sender;
use crate::cloudevents::{self, CloudEvent};
use crate::error::{BoxFuture, DeliveryError};
use crate::secret::{LiveSecret, redact_url};
use crate::spec::Encoding;
use crate::spec::watchers::{HeaderValueFrom, WatcherHeader};

/// Why an HTTP watcher cannot be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HttpSenderError {
    /// Its URL cannot be sent to.
    #[error("url `{url}`: {reason}")]
    Url {
        /// The URL.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The TLS client cannot be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    /// A header's value cannot be read or sent.
    #[error("header `{name}`: {reason}")]
    Header {
        /// The header's name.
        name: http::HeaderName,
        /// What is wrong (the value itself is never shown).
        reason: String,
    },
}

fn bad_url(url: &str, reason: impl std::fmt::Display) -> HttpSenderError {
    HttpSenderError::Url {
        url: redact_url(url),
        reason: reason.to_string(),
    }
}

/// The client `https://` watchers of a gateway share (pooled keep-alive connections).
fn shared_client() -> Result<reqwest::Client, HttpSenderError> {
    reqwest::Client::builder()
        // A redirect is a failure: following it would send the event elsewhere (a POST
        // turned into a GET on 301-303, whose 2xx would count as delivered).
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .tcp_nodelay(true)
        .build()
        .map_err(HttpSenderError::Client)
}

/// The [`shared_client`] of a gateway, made the first time an `https://` watcher needs it: a
/// gateway without one never loads TLS roots (memory of an idle gateway).
#[derive(Clone, Default)]
pub(crate) struct LazyClient(std::sync::Arc<std::sync::OnceLock<reqwest::Client>>);

impl LazyClient {
    /// The client, made now if it was not yet.
    pub(crate) fn get(&self) -> Result<reqwest::Client, HttpSenderError> {
        if let Some(c) = self.0.get() {
            return Ok(c.clone());
        }
        let made = shared_client()?;
        Ok(self.0.get_or_init(|| made).clone())
    }
}

/// Idle connections kept per `http://` watcher (beyond them, a finished one is closed).
const MAX_IDLE: usize = 256;
/// The most of a watcher's answer read (so the connection can be reused); the rest is dropped
/// with the connection.
const MAX_ANSWER: usize = 64 * 1024;

/// Sends events to one URL.
pub(crate) struct HttpSender {
    /// The URL requests go to, without credentials.
    url: reqwest::Url,
    /// The URL as it may be shown (in failure reasons): no password, no token.
    shown: String,
    /// `Authorization: Basic …` from the credentials of the URL, if it had some.
    auth: Option<HeaderValue>,
    /// Headers sent with every delivery, from the watcher's settings.
    extra: Option<ExtraHeaders>,
    transport: Transport,
    encoding: Encoding,
    timeout: Duration,
    event_type_version: Option<String>,
}

/// The headers a watcher sends with every delivery ([`WatcherHeader`]): values from files
/// follow the file ([`LiveSecret`]); secret values are marked sensitive.
struct ExtraHeaders(Vec<(http::HeaderName, &'static str, ExtraValue)>);

enum ExtraValue {
    Text(HeaderValue),
    Secret(LiveSecret),
}

impl ExtraHeaders {
    /// The headers of `sources`, each read now: an error names the header that cannot be.
    fn load(sources: &[WatcherHeader]) -> Result<ExtraHeaders, HttpSenderError> {
        let mut out = Vec::with_capacity(sources.len());
        for h in sources {
            let failed = |reason: String| HttpSenderError::Header {
                name: h.name.clone(),
                reason,
            };
            let value = match &h.value {
                HeaderValueFrom::Text(t) => ExtraValue::Text(
                    HeaderValue::from_str(&format!("{}{t}", h.prefix))
                        .map_err(|_| failed("the value cannot be sent in a header".into()))?,
                ),
                HeaderValueFrom::Secret(source) => {
                    let live = LiveSecret::load(source.clone())
                        .map_err(|e| failed(e.message().to_string()))?;
                    secret_value(h.prefix, &live.current())
                        .ok_or_else(|| failed("the value cannot be sent in a header".into()))?;
                    ExtraValue::Secret(live)
                }
            };
            out.push((h.name.clone(), h.prefix, value));
        }
        Ok(ExtraHeaders(out))
    }

    /// Adds the headers as they are now to `headers`.
    fn add_to(&self, headers: &mut HeaderMap) {
        for (name, prefix, value) in &self.0 {
            match value {
                ExtraValue::Text(v) => {
                    headers.insert(name.clone(), v.clone());
                }
                ExtraValue::Secret(live) => {
                    if let Some(v) = secret_value(prefix, &live.current()) {
                        headers.insert(name.clone(), v);
                    }
                }
            }
        }
    }
}

/// `prefix` and the secret as a sensitive header value; `None` when it cannot be one.
fn secret_value(prefix: &str, secret: &crate::secret::Secret) -> Option<HeaderValue> {
    let mut bytes = Vec::with_capacity(prefix.len() + secret.expose().len());
    bytes.extend_from_slice(prefix.as_bytes());
    bytes.extend_from_slice(secret.expose());
    let mut v = HeaderValue::from_bytes(&bytes).ok()?;
    v.set_sensitive(true);
    Some(v)
}

enum Transport {
    /// `http://`: connections of this sender's own.
    Plain(Connections),
    /// `https://`: the shared client.
    Shared(reqwest::Client),
}

/// The keep-alive connections of one `http://` watcher.
struct Connections {
    /// `host:port` to connect to.
    addr: String,
    /// The `Host` header.
    host: HeaderValue,
    /// Path and query of every request.
    path: http::uri::PathAndQuery,
    /// `Authorization: Basic …` from the URL's credentials, if it had some.
    auth: Option<HeaderValue>,
    idle: Mutex<Vec<Idle>>,
}

/// A kept-alive connection and the timer of its attempts. The timer goes with the connection
/// from attempt to attempt: moving a registered timer's deadline later is one atomic operation,
/// where a new timer per attempt is an insertion into the timer wheel and a removal, both under
/// the driver's lock.
struct Idle {
    conn: SendRequest<Full<Bytes>>,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl HttpSender {
    /// A sender to `url`; `client` serves it when it is `https://`.
    pub(crate) fn new(
        client: &LazyClient,
        url: &str,
        encoding: Encoding,
        timeout: Duration,
        event_type_version: Option<String>,
    ) -> Result<HttpSender, HttpSenderError> {
        let mut parsed = reqwest::Url::parse(url).map_err(|e| bad_url(url, e))?;
        // Credentials in the URL are sent as Basic auth, never shown.
        let auth = if parsed.username().is_empty() && parsed.password().is_none() {
            None
        } else {
            let user = percent_encoding::percent_decode_str(parsed.username()).decode_utf8_lossy();
            let pass = percent_encoding::percent_decode_str(parsed.password().unwrap_or(""))
                .decode_utf8_lossy();
            use base64::Engine;
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
            let mut value = HeaderValue::from_str(&format!("Basic {token}"))
                .map_err(|_| bad_url(url, "the credentials cannot be a header"))?;
            value.set_sensitive(true);
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            Some(value)
        };
        let shown = redact_url(url);
        let transport = match parsed.scheme() {
            "http" => {
                let host = parsed.host_str().ok_or_else(|| bad_url(url, "no host"))?;
                let port = parsed.port_or_known_default().unwrap_or(80);
                let authority = match parsed.port() {
                    Some(p) => format!("{host}:{p}"),
                    None => host.to_string(),
                };
                let mut path = parsed.path().to_string();
                if let Some(q) = parsed.query() {
                    path.push('?');
                    path.push_str(q);
                }
                Transport::Plain(Connections {
                    addr: format!(
                        "{}:{port}",
                        host.trim_start_matches('[').trim_end_matches(']')
                    ),
                    host: HeaderValue::from_str(&authority)
                        .map_err(|e| bad_url(url, format!("host: {e}")))?,
                    path: path
                        .parse()
                        .map_err(|e| bad_url(url, format!("path: {e}")))?,
                    auth: auth.clone(),
                    idle: Mutex::new(Vec::new()),
                })
            }
            _ => Transport::Shared(client.get()?),
        };
        Ok(HttpSender {
            url: parsed,
            shown,
            auth,
            extra: None,
            transport,
            encoding,
            timeout,
            event_type_version,
        })
    }

    /// This sender, also sending `headers` with every delivery (each value read now).
    pub(crate) fn with_headers(
        mut self,
        headers: &[WatcherHeader],
    ) -> Result<HttpSender, HttpSenderError> {
        self.extra = if headers.is_empty() {
            None
        } else {
            Some(ExtraHeaders::load(headers)?)
        };
        Ok(self)
    }

    fn encode(&self, event: &CloudEvent) -> (HeaderMap, Bytes) {
        match self.encoding {
            Encoding::Structured => cloudevents::http::encode_structured(event),
            Encoding::Binary => cloudevents::http::encode_binary(event),
            // Alone (a redrive): a batch of one.
            Encoding::Batch => cloudevents::http::encode_batch(&[event]),
            Encoding::Legacy => {
                let mut h = HeaderMap::new();
                h.insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                let body =
                    cloudevents::legacy::to_json_v01(event, self.event_type_version.as_deref());
                (h, Bytes::from(body))
            }
        }
    }

    fn timed_out(&self) -> DeliveryError {
        DeliveryError::retryable(format!(
            "no answer within {}",
            humantime::format_duration(self.timeout)
        ))
    }

    /// One attempt through the shared client (`https://`).
    async fn send_shared(
        &self,
        client: &reqwest::Client,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<StatusCode, DeliveryError> {
        let mut request = client.post(self.url.clone()).headers(headers);
        if let Some(auth) = &self.auth {
            request = request.header(http::header::AUTHORIZATION, auth.clone());
        }
        let mut response = request
            .body(body)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    self.timed_out()
                } else if e.is_connect() {
                    DeliveryError::retryable(format!("cannot connect: {e}"))
                } else {
                    DeliveryError::retryable(format!("request failed: {e}"))
                }
            })?;
        // Read the answer so that the connection goes back to the pool.
        let mut read = 0usize;
        while let Ok(Some(chunk)) = response.chunk().await {
            read += chunk.len();
            if read > MAX_ANSWER {
                break;
            }
        }
        Ok(response.status())
    }

    /// Sends the request on `conn` (or a new connection) and reads the answer: its status, and
    /// the connection when it can be used again.
    ///
    /// This future is part of the one boxed for every event, so what is rare stays out of it:
    /// connecting (its future is large) is boxed, and the request is built right into the
    /// call that sends it rather than kept in a variable.
    async fn exchange(
        &self,
        conns: &Connections,
        conn: Option<SendRequest<Full<Bytes>>>,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<(StatusCode, Option<SendRequest<Full<Bytes>>>), DeliveryError> {
        let Some(mut conn) = conn else {
            return Box::pin(conns.exchange_on_new(conns.request(headers, body))).await;
        };
        // In a block, so that what the send returned does not take room in this future while
        // the answer is read.
        let answer = {
            let sent = conn.try_send_request(conns.request(headers, body)).await;
            match sent {
                Ok(response) => {
                    let status = response.status();
                    read_answer(conn, status, response.into_body())
                }
                Err(e) => return Box::pin(conns.resend(e)).await,
            }
        };
        Ok(answer.await)
    }
}

fn request_failed(e: &hyper::Error) -> DeliveryError {
    DeliveryError::retryable(format!("request failed: {e}"))
}

/// Reads the answer's body to its end (up to [`MAX_ANSWER`]): its status, and the connection
/// when the whole answer was read, so that it can be used again.
async fn read_answer(
    conn: SendRequest<Full<Bytes>>,
    status: StatusCode,
    mut body: hyper::body::Incoming,
) -> (StatusCode, Option<SendRequest<Full<Bytes>>>) {
    let mut read = 0usize;
    loop {
        match body.frame().await {
            None => return (status, Some(conn)),
            Some(Ok(frame)) => {
                read += frame.data_ref().map(|d| d.len()).unwrap_or(0);
                if read > MAX_ANSWER {
                    return (status, None);
                }
            }
            Some(Err(_)) => return (status, None),
        }
    }
}

impl Connections {
    /// The POST of `body` to the watcher's path.
    fn request(&self, headers: HeaderMap, body: Bytes) -> http::Request<Full<Bytes>> {
        let mut request = http::Request::new(Full::new(body));
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = self.path.clone().into();
        *request.headers_mut() = headers;
        request
            .headers_mut()
            .insert(http::header::HOST, self.host.clone());
        if let Some(auth) = &self.auth {
            request
                .headers_mut()
                .insert(http::header::AUTHORIZATION, auth.clone());
        }
        request
    }

    /// After a failed send on a kept-alive connection: when the watcher had closed it as it
    /// was taken up, the request never left, and goes at once on a new connection.
    async fn resend(
        &self,
        mut failed: hyper::client::conn::TrySendError<http::Request<Full<Bytes>>>,
    ) -> Result<(StatusCode, Option<SendRequest<Full<Bytes>>>), DeliveryError> {
        match failed.take_message() {
            Some(unsent) => self.exchange_on_new(unsent).await,
            None => Err(request_failed(failed.error())),
        }
    }

    /// Sends `request` on a new connection and reads the answer.
    async fn exchange_on_new(
        &self,
        request: http::Request<Full<Bytes>>,
    ) -> Result<(StatusCode, Option<SendRequest<Full<Bytes>>>), DeliveryError> {
        let mut conn = self.connect().await?;
        match conn.try_send_request(request).await {
            Ok(response) => {
                let status = response.status();
                Ok(read_answer(conn, status, response.into_body()).await)
            }
            Err(e) => Err(request_failed(e.error())),
        }
    }

    /// An idle connection still open, if any.
    fn take_idle(&self) -> Option<Idle> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(c) = idle.pop() {
            if c.conn.is_ready() {
                return Some(c);
            }
        }
        None
    }

    fn give_back(&self, conn: Idle) {
        if !conn.conn.is_ready() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, DeliveryError> {
        let stream = tokio::net::TcpStream::connect(&self.addr)
            .await
            .map_err(|e| {
                DeliveryError::retryable(format!("cannot connect to {}: {e}", self.addr))
            })?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| {
                    DeliveryError::retryable(format!("cannot connect to {}: {e}", self.addr))
                })?;
        // The connection task ends when the sender is dropped or the peer closes.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }
}

/// Whether a status is worth another attempt.
fn retryable_status(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
}

impl HttpSender {
    /// One attempt with this request head and body: the head is completed here, when the
    /// attempt starts (in its `deliver` span), and [`HttpSender::attempt`] sends it.
    ///
    /// Not an `async fn`: one that changes a parameter keeps two copies of it in its future
    /// (the parameter and the variable it becomes), and 96 bytes more put the future of every
    /// event's delivery (boxed, see [`Sender::send`]) over the largest block glibc keeps in its
    /// per-thread cache (1,032 bytes), so that each delivery's allocation went the slow way.
    fn post(
        &self,
        mut headers: HeaderMap,
        body: Bytes,
    ) -> impl Future<Output = Result<(), DeliveryError>> + '_ {
        if let Some(extra) = &self.extra {
            extra.add_to(&mut headers);
        }
        // The context of this attempt's `deliver` span, when spans are recorded.
        if let Some(tp) = crate::trace::current()
            && let Ok(value) = HeaderValue::from_str(&tp)
        {
            headers.insert(crate::trace::TRACEPARENT_HEADER.clone(), value);
        }
        self.attempt(headers, body)
    }

    async fn attempt(&self, headers: HeaderMap, body: Bytes) -> Result<(), DeliveryError> {
        let status = match &self.transport {
            // Boxed: reqwest's future would make every `http://` event's future larger.
            Transport::Shared(client) => Box::pin(self.send_shared(client, headers, body)).await?,
            // A connection of this sender's own, within the timeout.
            Transport::Plain(conns) => {
                // A timeout too long to add to now (`timeout: 1000000y`) is thirty years.
                let now = tokio::time::Instant::now();
                let deadline = now
                    .checked_add(self.timeout)
                    .unwrap_or_else(|| now + Duration::from_secs(30 * 365 * 86_400));
                let (conn, mut timer) = match conns.take_idle() {
                    Some(Idle { conn, mut timer }) => {
                        timer.as_mut().reset(deadline);
                        (Some(conn), timer)
                    }
                    None => (None, Box::pin(tokio::time::sleep_until(deadline))),
                };
                let (status, conn) = tokio::select! {
                    biased;
                    r = self.exchange(conns, conn, headers, body) => r?,
                    _ = timer.as_mut() => return Err(self.timed_out()),
                };
                if let Some(conn) = conn {
                    conns.give_back(Idle { conn, timer });
                }
                status
            }
        };
        if status.is_success() {
            return Ok(());
        }
        if status.is_redirection() {
            return Err(DeliveryError::permanent(format!(
                "{} answered {status}: watchers do not follow redirects; give the watcher the URL it redirects to",
                self.shown
            )));
        }
        let reason = format!("{} answered {status}", self.shown);
        if retryable_status(status) {
            Err(DeliveryError::retryable(reason))
        } else {
            Err(DeliveryError::permanent(reason))
        }
    }
}

impl Sender for HttpSender {
    fn send<'a>(&'a self, event: &'a CloudEvent) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let (headers, body) = self.encode(event);
            self.post(headers, body).await
        })
    }

    fn batches(&self) -> bool {
        self.encoding == Encoding::Batch
    }

    fn send_batch<'a>(
        &'a self,
        events: &'a [&'a CloudEvent],
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let (headers, body) = cloudevents::http::encode_batch(events);
            self.post(headers, body).await
        })
    }

    fn send_batch_json<'a>(
        &'a self,
        events: &'a [&'a CloudEvent],
        jsons: &'a [&'a Bytes],
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        let _ = events;
        Box::pin(async move {
            let (headers, body) = cloudevents::http::encode_batch_json(jsons);
            self.post(headers, body).await
        })
    }

    fn send_json<'a>(
        &'a self,
        event: &'a CloudEvent,
        json: &'a Bytes,
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        match self.encoding {
            // The head is completed when the future is first polled, in the attempt's span.
            Encoding::Structured => Box::pin(async move {
                self.post(cloudevents::http::structured_headers(), json.clone())
                    .await
            }),
            _ => self.send(event),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A watcher on port 0 answering `status` (with `Connection: close` when `close`),
    /// counting the connections it accepted and the requests it answered.
    async fn watcher(status: u16, close: bool) -> (String, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/events?x=1", listener.local_addr().unwrap());
        let conns = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (c, r) = (conns.clone(), requests.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                c.fetch_add(1, Ordering::SeqCst);
                let r = r.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let r = r.clone();
                            async move {
                                assert_eq!(req.uri().path(), "/events");
                                assert_eq!(req.uri().query(), Some("x=1"));
                                let body = req.into_body().collect().await.unwrap().to_bytes();
                                let ce = CloudEvent::from_json(&body).unwrap();
                                assert!(ce.id.starts_with("id-"));
                                r.fetch_add(1, Ordering::SeqCst);
                                let mut resp = http::Response::new(Full::new(Bytes::from("ok")));
                                *resp.status_mut() = StatusCode::from_u16(status).unwrap();
                                if close {
                                    resp.headers_mut().insert(
                                        http::header::CONNECTION,
                                        HeaderValue::from_static("close"),
                                    );
                                }
                                Ok::<_, std::convert::Infallible>(resp)
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (url, conns, requests)
    }

    fn sender(url: &str) -> HttpSender {
        HttpSender::new(
            &LazyClient::default(),
            url,
            Encoding::Structured,
            Duration::from_secs(5),
            None,
        )
        .unwrap()
    }

    fn event(i: usize) -> CloudEvent {
        CloudEvent::new(format!("id-{i}"), "g/s", "t")
    }

    #[tokio::test]
    async fn a_timeout_too_long_for_the_clock_is_no_panic() {
        let (url, _, requests) = watcher(200, false).await;
        let s = HttpSender::new(
            &LazyClient::default(),
            &url,
            Encoding::Structured,
            Duration::MAX,
            None,
        )
        .unwrap();
        for i in 0..2 {
            s.send(&event(i)).await.unwrap();
        }
        assert_eq!(requests.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn one_connection_is_kept_alive_for_events_in_sequence() {
        let (url, conns, requests) = watcher(200, false).await;
        let s = sender(&url);
        for i in 0..50 {
            s.send(&event(i)).await.unwrap();
        }
        assert_eq!(requests.load(Ordering::SeqCst), 50);
        assert_eq!(conns.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn concurrent_events_use_as_many_connections_as_are_in_flight_and_no_more() {
        let (url, conns, requests) = watcher(200, false).await;
        let s = Arc::new(sender(&url));
        for round in 0..5 {
            let mut tasks = Vec::new();
            for i in 0..8 {
                let s = s.clone();
                tasks.push(tokio::spawn(
                    async move { s.send(&event(round * 8 + i)).await },
                ));
            }
            for t in tasks {
                t.await.unwrap().unwrap();
            }
        }
        assert_eq!(requests.load(Ordering::SeqCst), 40);
        let opened = conns.load(Ordering::SeqCst);
        assert!(
            (1..=8).contains(&opened),
            "{opened} connections for 8 in flight"
        );
    }

    #[tokio::test]
    async fn a_watcher_closing_connections_gets_every_event_on_new_ones() {
        let (url, conns, requests) = watcher(200, true).await;
        let s = sender(&url);
        for i in 0..10 {
            s.send(&event(i)).await.unwrap();
        }
        assert_eq!(requests.load(Ordering::SeqCst), 10);
        assert_eq!(conns.load(Ordering::SeqCst), 10);
    }

    #[tokio::test]
    async fn statuses_and_connection_errors_are_classified() {
        let (url, _, _) = watcher(503, false).await;
        let e = sender(&url).send(&event(1)).await.unwrap_err();
        assert!(e.retryable && e.reason.contains("503"), "{e:?}");
        let (url, _, _) = watcher(400, false).await;
        let e = sender(&url).send(&event(1)).await.unwrap_err();
        assert!(!e.retryable && e.reason.contains("400"), "{e:?}");
        // Nothing listens on a port just released.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = sender(&format!("http://127.0.0.1:{port}/"))
            .send(&event(1))
            .await
            .unwrap_err();
        assert!(e.retryable && e.reason.contains("cannot connect"), "{e:?}");
    }
}
