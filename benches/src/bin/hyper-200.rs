//! The baseline of the HTTP benchmarks: a minimal hyper server that reads each request's body
//! and answers 200 with an empty body. `hyper-200 PORT` (0 picks one); prints
//! `listening 127.0.0.1:PORT` once it accepts connections. Also serves as the watcher that
//! portico delivers to in `benches/http-ingest.sh`.

use std::convert::Infallible;

use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

async fn answer(req: Request<Incoming>) -> Result<Response<Empty<Bytes>>, Infallible> {
    // Read the whole body, as a real server would.
    let _ = req.into_body().collect().await;
    Ok(Response::new(Empty::new()))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .map(|p| p.parse())
        .transpose()
        .map_err(|e| std::io::Error::other(format!("PORT is not a port number: {e}")))?
        .unwrap_or(0);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(answer))
                .await;
        });
    }
}
