//! The sink of the load benchmarks (`benches/load.sh`): a minimal hyper server that reads each
//! request's body and answers 200 with an empty body, counting the events it got: one per
//! request that is not `GET`, or, for a batch (`application/cloudevents-batch+json`), the
//! events of its JSON array (parsed, as a watcher that takes batches would). `GET /count`
//! answers the count. Portico and the baselines deliver to it, and it
//! is also the machine's ceiling: wrk against it is a "POST → 200" with no work.
//!
//! For the open-loop scenario (`src/bin/open-loop.rs`) it also measures delivery latency:
//! after `GET /latency/on`, each event whose body holds `"sent_ns":N` (the time the load
//! generator scheduled it for, in nanoseconds on the machine's monotonic clock; every event of
//! a batch) is timed from then to its arrival here;
//! `GET /latency` answers `count p50 p99 p99.9 max` (µs), forgets them and stops timing.
//!
//!   bench-sink [PORT]     # 0 or nothing picks a free port; prints `listening 127.0.0.1:PORT`
//!
//! It runs on one thread: `load.sh` pins it beside the load generator, away from the server
//! being measured.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;

#[derive(Default)]
struct Counts {
    events: AtomicU64,
    /// Timing arrivals (`GET /latency/on`).
    timing: AtomicBool,
    /// Microseconds from each timed event's scheduled time to its arrival.
    latencies_us: Mutex<Vec<u64>>,
}

impl Counts {
    /// `count p50 p99 p99.9 max` of the latencies so far (µs), which are then forgotten.
    fn take_latencies(&self) -> String {
        self.timing.store(false, Ordering::Relaxed);
        let mut l =
            std::mem::take(&mut *self.latencies_us.lock().unwrap_or_else(|p| p.into_inner()));
        portico_benches::latency_summary(&mut l)
    }

    /// Times each event of a body (one event, or a batch of them) that names its scheduled
    /// time (`"sent_ns":N`).
    fn time(&self, body: &[u8]) {
        const KEY: &[u8] = b"\"sent_ns\":";
        let now = portico_benches::monotonic_ns();
        let mut timed = Vec::new();
        let mut rest = body;
        while let Some(at) = rest.windows(KEY.len()).position(|w| w == KEY) {
            rest = &rest[at + KEY.len()..];
            let end = rest
                .iter()
                .position(|b| !b.is_ascii_digit())
                .unwrap_or(rest.len());
            if let Some(sent) = std::str::from_utf8(&rest[..end])
                .ok()
                .and_then(|d| d.parse::<u128>().ok())
            {
                timed.push((now.saturating_sub(sent) / 1000) as u64);
            }
            rest = &rest[end..];
        }
        if !timed.is_empty() {
            self.latencies_us
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(timed);
        }
    }
}

async fn answer(
    counts: Arc<Counts>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() == Method::GET {
        let n = match req.uri().path() {
            "/count" => counts.events.load(Ordering::Relaxed).to_string(),
            "/latency/on" => {
                counts.timing.store(true, Ordering::Relaxed);
                String::new()
            }
            "/latency" => counts.take_latencies(),
            _ => String::new(),
        };
        return Ok(Response::new(Full::new(Bytes::from(n))));
    }
    let batch = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .is_some_and(|v| {
            v.as_bytes()
                .starts_with(b"application/cloudevents-batch+json")
        });
    // Read the whole body, as a real watcher would.
    let body = req.into_body().collect().await.map(|b| b.to_bytes());
    let events = match &body {
        Ok(body) if batch => serde_json::from_slice::<Vec<serde::de::IgnoredAny>>(body)
            .map_or(0, |events| events.len() as u64),
        _ => 1,
    };
    if let Ok(body) = &body
        && counts.timing.load(Ordering::Relaxed)
    {
        counts.time(body);
    }
    counts.events.fetch_add(events, Ordering::Relaxed);
    Ok(Response::new(Full::new(Bytes::new())))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .map(|p| p.parse())
        .transpose()
        .map_err(|e| std::io::Error::other(format!("usage: bench-sink [PORT]: {e}")))?
        .unwrap_or(0);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    portico_benches::say_listening(listener.local_addr()?);
    let counts = Arc::new(Counts::default());
    loop {
        // An accept error (a connection reset before it was taken, no file descriptor left)
        // concerns one connection: keep serving.
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                eprintln!("bench-sink: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let counts = counts.clone();
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .serve_connection(
                    TokioIo::new(stream),
                    service_fn(move |req| answer(counts.clone(), req)),
                )
                .await;
        });
    }
}
