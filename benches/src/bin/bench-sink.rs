//! A watcher for load benchmarks: answers 200 to every POST and counts them.
//! `GET /count` gives the count, `GET /reset` sets it to 0.
//!
//!   bench-sink PORT

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::State;
use axum::routing::get;

#[tokio::main]
async fn main() {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| {
            eprintln!("usage: bench-sink PORT");
            std::process::exit(2)
        });
    let count = Arc::new(AtomicU64::new(0));
    let app =
        Router::new()
            .route(
                "/count",
                get(|State(c): State<Arc<AtomicU64>>| async move {
                    c.load(Ordering::Relaxed).to_string()
                }),
            )
            .route(
                "/reset",
                get(|State(c): State<Arc<AtomicU64>>| async move {
                    c.store(0, Ordering::Relaxed);
                    "0"
                }),
            )
            .fallback(
                |State(c): State<Arc<AtomicU64>>, _body: axum::body::Bytes| async move {
                    c.fetch_add(1, Ordering::Relaxed);
                },
            )
            .with_state(count);
    let listener = match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("bench-sink: cannot listen on 127.0.0.1:{port}: {e}");
            std::process::exit(1)
        }
    };
    if let Err(e) = axum::serve(listener, app).await {
        eprintln!("bench-sink: {e}");
    }
}
