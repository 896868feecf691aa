//! The baseline of the HTTP scenarios of `benches/load.sh`: the least a Rust program does to
//! relay an event. A minimal hyper server that reads each request, builds the same CloudEvent
//! Portico builds (structured JSON: uuid id, RFC 3339 time, source, type, subject, JSON data
//! spliced), POSTs it to the sink over dedicated keep-alive connections and answers 200 once
//! the sink has answered 2xx (502 otherwise, 400 on a bad body).
//!
//!   relay ingest  SINK_ADDR [CONNECTIONS]             # body: the original {"src","payload","contentType"}
//!   relay webhook SINK_ADDR [CONNECTIONS [CERT KEY]]  # body: any JSON; data {"header","body","bodyEncoding"}
//!
//! Listens on a free port of 127.0.0.1 and prints `listening 127.0.0.1:PORT`. CONNECTIONS
//! (default 32, Portico's default deliveries in flight per watcher) is the number of
//! forwarders, each with its own connection to the sink. With CERT and KEY (PEM files) it
//! serves HTTPS with rustls, set up as Portico's webhook sets it up (ring, the safe default
//! protocol versions, ALPN http/1.1).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use portico_benches::{Forwarders, ingest_to_cloudevent, webhook_to_cloudevent};
use tokio_rustls::TlsAcceptor;

#[derive(Clone, Copy)]
enum Mode {
    Ingest,
    Webhook,
}

struct Relay {
    mode: Mode,
    forwarders: Forwarders,
}

fn status(code: StatusCode, text: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(text.into()));
    *r.status_mut() = code;
    r
}

async fn relay(
    state: Arc<Relay>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return Ok(status(StatusCode::BAD_REQUEST, e.to_string())),
    };
    let event = match state.mode {
        Mode::Ingest => ingest_to_cloudevent("bench", "bench", &body),
        Mode::Webhook => webhook_to_cloudevent("bench", "webhook", "hook", &parts.headers, &body),
    };
    let event = match event {
        Ok(e) => e,
        Err(reason) => return Ok(status(StatusCode::BAD_REQUEST, reason)),
    };
    if state.forwarders.forward(event).await {
        Ok(status(StatusCode::OK, Bytes::new()))
    } else {
        Ok(status(
            StatusCode::BAD_GATEWAY,
            "the sink did not take the event",
        ))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let usage = "usage: relay ingest|webhook SINK_ADDR [CONNECTIONS [CERT KEY]]";
    let mut args = std::env::args().skip(1);
    let mode = match args.next().as_deref() {
        Some("ingest") => Mode::Ingest,
        Some("webhook") => Mode::Webhook,
        _ => return Err(usage.into()),
    };
    let sink: SocketAddr = args.next().ok_or(usage)?.parse()?;
    let connections: usize = args.next().map(|c| c.parse()).transpose()?.unwrap_or(32);
    let tls = match (args.next(), args.next()) {
        (Some(cert), Some(key)) => Some(acceptor(&cert, &key)?),
        (None, None) => None,
        _ => return Err(usage.into()),
    };
    let forwarders = Forwarders::start(sink, "/", connections, connections * 4);
    let state = Arc::new(Relay { mode, forwarders });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    portico_benches::say_listening(listener.local_addr()?);
    loop {
        // An accept error (a connection reset before it was taken, no file descriptor left)
        // concerns one connection: keep serving.
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                eprintln!("relay: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| relay(state.clone(), req));
            let http = http1::Builder::new();
            let _ = match tls {
                None => http.serve_connection(TokioIo::new(stream), service).await,
                Some(tls) => match tls.accept(stream).await {
                    Ok(stream) => http.serve_connection(TokioIo::new(stream), service).await,
                    Err(_) => return,
                },
            };
        });
    }
}

/// A rustls acceptor for the certificate chain in `cert` and the key in `key`.
fn acceptor(cert: &str, key: &str) -> Result<TlsAcceptor, Box<dyn std::error::Error>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
