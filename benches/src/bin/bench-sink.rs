//! The sink of the load benchmarks (`benches/load.sh`): a minimal hyper server that reads each
//! request's body and answers 200 with an empty body, counting the events it got: one per
//! request that is not `GET`, or, for a batch (`application/cloudevents-batch+json`), the
//! events of its JSON array (parsed, as a watcher that takes batches would). `GET /count`
//! answers the count. Portico and the baselines deliver to it, and it
//! is also the machine's ceiling: wrk against it is a "POST → 200" with no work.
//!
//!   bench-sink [PORT]     # 0 or nothing picks a free port; prints `listening 127.0.0.1:PORT`
//!
//! It runs on one thread: `load.sh` pins it beside the load generator, away from the server
//! being measured.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;

async fn answer(
    count: Arc<AtomicU64>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() == Method::GET {
        let n = if req.uri().path() == "/count" {
            count.load(Ordering::Relaxed).to_string()
        } else {
            String::new()
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
    let events = match body {
        Ok(body) if batch => serde_json::from_slice::<Vec<serde::de::IgnoredAny>>(&body)
            .map_or(0, |events| events.len() as u64),
        _ => 1,
    };
    count.fetch_add(events, Ordering::Relaxed);
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
    let count = Arc::new(AtomicU64::new(0));
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
        let count = count.clone();
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .serve_connection(
                    TokioIo::new(stream),
                    service_fn(move |req| answer(count.clone(), req)),
                )
                .await;
        });
    }
}
