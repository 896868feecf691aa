//! Shared parts of Portico's benchmarks: the inputs every benchmark measures with, and the
//! pieces of the baseline programs (`relay`, `grpc_stream forward`) that `benches/load.sh`
//! puts beside Portico.
//!
//! A baseline is the least a Rust program can do for the same result: parse the same input,
//! build the same CloudEvent (structured JSON: uuid id, RFC 3339 time, source, type, subject,
//! `eventtypeversion`, JSON data spliced rather than re-encoded), and POST it to the same sink
//! over dedicated keep-alive connections (`hyper::client::conn::http1`, one per forwarder: on
//! this kind of machine 10–30 % cheaper than a shared pool). Nothing in here is used by Portico itself.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::oneshot;

/// A JSON object of exactly `len` bytes (`len` ≥ 16): `{"pad":"xxx…"}`.
pub fn json_payload(len: usize) -> Bytes {
    let pad = len.saturating_sub(r#"{"pad":""}"#.len());
    Bytes::from(format!(r#"{{"pad":"{}"}}"#, "x".repeat(pad)))
}

/// The original ingest body (`{"src", "payload": "<base64>", "contentType"}`) carrying
/// `payload`, as `benches/load.sh` posts it.
pub fn original_ingest_body(src: &str, payload: &[u8]) -> Bytes {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(payload);
    Bytes::from(format!(
        r#"{{"src":"{src}","payload":"{b64}","contentType":"application/json"}}"#
    ))
}

/// `Content-Type` of a CloudEvent in structured mode.
pub const STRUCTURED: &str = "application/cloudevents+json";

/// A CloudEvent in the JSON format, the attributes Portico sets on a transformed event.
#[derive(Serialize)]
struct Envelope<'a, D: Serialize> {
    specversion: &'static str,
    id: &'a str,
    source: &'a str,
    #[serde(rename = "type")]
    ty: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    datacontenttype: Option<&'a str>,
    subject: &'a str,
    time: &'a str,
    eventtypeversion: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<D>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_base64: Option<String>,
    #[serde(flatten)]
    extensions: BTreeMap<&'a str, &'a str>,
}

/// Builds the CloudEvent of gateway `gateway` (type `ty`) for an event of configuration `src`:
/// JSON `data` when given, else the bytes `binary` in `data_base64`.
pub fn cloudevent<D: Serialize>(
    gateway: &str,
    ty: &str,
    src: &str,
    content_type: Option<&str>,
    data: Option<D>,
    binary: Option<&[u8]>,
    extensions: BTreeMap<&str, &str>,
) -> Bytes {
    use base64::Engine;
    let mut id = uuid::Uuid::encode_buffer();
    let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut id);
    let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
    let source = format!("{gateway}/{src}");
    let envelope = Envelope {
        specversion: "1.0",
        id,
        source: &source,
        ty,
        datacontenttype: content_type,
        subject: src,
        time: &time,
        eventtypeversion: "1.0",
        data,
        data_base64: binary.map(|b| base64::engine::general_purpose::STANDARD.encode(b)),
        extensions,
    };
    let mut out = Vec::with_capacity(512 + 256);
    // Serializing strings and raw JSON into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut out, &envelope);
    Bytes::from(out)
}

/// True for `application/json`, `text/json` and `*/*+json` (parameters ignored).
pub fn is_json(content_type: &str) -> bool {
    let mt = content_type.split(';').next().unwrap_or("").trim();
    let b = mt.as_bytes();
    mt.eq_ignore_ascii_case("application/json")
        || mt.eq_ignore_ascii_case("text/json")
        || (mt.contains('/') && b.len() > 5 && b[b.len() - 5..].eq_ignore_ascii_case(b"+json"))
}

/// The CloudEvent of one original ingest body `{"src", "payload", "contentType"}`, or why
/// the body is refused.
pub fn ingest_to_cloudevent(gateway: &str, ty: &str, body: &[u8]) -> Result<Bytes, String> {
    use base64::Engine;
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Original<'a> {
        #[serde(borrow)]
        src: std::borrow::Cow<'a, str>,
        #[serde(default, borrow)]
        payload: Option<std::borrow::Cow<'a, str>>,
        #[serde(default, borrow)]
        content_type: Option<std::borrow::Cow<'a, str>>,
    }
    let o: Original = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let payload = match &o.payload {
        Some(p) => base64::engine::general_purpose::STANDARD
            .decode(p.as_bytes())
            .map_err(|e| e.to_string())?,
        None => Vec::new(),
    };
    let ct = o.content_type.as_deref();
    let json = match ct {
        Some(ct) if is_json(ct) => serde_json::from_slice::<&RawValue>(&payload).ok(),
        _ => None,
    };
    let binary = json.is_none().then_some(&payload[..]);
    Ok(cloudevent(
        gateway,
        ty,
        &o.src,
        ct,
        json,
        binary,
        BTreeMap::new(),
    ))
}

/// The data of a webhook event, as Portico's webhook gateway makes it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WebhookData<'a> {
    header: BTreeMap<&'a str, Vec<&'a str>>,
    body: &'a RawValue,
    body_encoding: &'static str,
}

/// The CloudEvent of a webhook delivery with these headers and a JSON body (the only kind the
/// benchmark sends), or why it is refused.
pub fn webhook_to_cloudevent(
    gateway: &str,
    ty: &str,
    src: &str,
    headers: &hyper::HeaderMap,
    body: &[u8],
) -> Result<Bytes, String> {
    let body: &RawValue = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let mut header: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (name, value) in headers {
        header
            .entry(name.as_str())
            .or_default()
            .push(value.to_str().unwrap_or(""));
    }
    let data = WebhookData {
        header,
        body,
        body_encoding: "json",
    };
    Ok(cloudevent(
        gateway,
        ty,
        src,
        Some("application/json"),
        Some(data),
        None,
        BTreeMap::new(),
    ))
}

struct Job {
    body: Bytes,
    /// Told whether the sink answered 2xx, when someone waits for it.
    reply: Option<oneshot::Sender<bool>>,
}

/// A fixed set of forwarders, each owning one keep-alive HTTP/1 connection to the sink, fed
/// through one bounded queue.
#[derive(Clone)]
pub struct Forwarders {
    tx: async_channel::Sender<Job>,
}

impl Forwarders {
    /// Starts `connections` forwarders POSTing structured CloudEvents to `http://sink/path`,
    /// with a queue of `queue` bodies in front of them.
    pub fn start(sink: SocketAddr, path: &str, connections: usize, queue: usize) -> Forwarders {
        let (tx, rx) = async_channel::bounded::<Job>(queue.max(1));
        let host = HeaderValue::from_str(&sink.to_string()).unwrap_or(HeaderValue::from_static(""));
        for _ in 0..connections.max(1) {
            tokio::spawn(forwarder(sink, path.to_string(), host.clone(), rx.clone()));
        }
        Forwarders { tx }
    }

    /// Sends `body` to the sink and waits for its answer: true on 2xx.
    pub async fn forward(&self, body: Bytes) -> bool {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            body,
            reply: Some(reply),
        };
        if self.tx.send(job).await.is_err() {
            return false;
        }
        answer.await.unwrap_or(false)
    }

    /// Queues `body` for the sink, waiting only for room in the queue.
    pub async fn enqueue(&self, body: Bytes) -> bool {
        self.tx.send(Job { body, reply: None }).await.is_ok()
    }
}

async fn forwarder(
    sink: SocketAddr,
    path: String,
    host: HeaderValue,
    jobs: async_channel::Receiver<Job>,
) {
    let content_type = HeaderValue::from_static(STRUCTURED);
    loop {
        let mut sender = connect(sink).await;
        loop {
            let Ok(job) = jobs.recv().await else { return };
            let ok = post(&mut sender, &path, &host, &content_type, job.body).await;
            if let Some(reply) = job.reply {
                let _ = reply.send(ok.unwrap_or(false));
            }
            if ok.is_none() {
                break; // the connection broke: open another
            }
        }
    }
}

/// An HTTP/1 keep-alive connection to `addr`, retried every 100 ms until it is made.
pub async fn connect(addr: SocketAddr) -> SendRequest<Full<Bytes>> {
    loop {
        let stream = match tokio::net::TcpStream::connect(addr).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("cannot connect to {addr}: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        match hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream)).await {
            Ok((sender, conn)) => {
                tokio::spawn(conn);
                return sender;
            }
            Err(e) => {
                eprintln!("handshake with {addr}: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// POSTs `body` on `sender`'s connection and reads the answer: whether it was 2xx, or `None`
/// when the connection broke.
pub async fn post(
    sender: &mut SendRequest<Full<Bytes>>,
    path: &str,
    host: &HeaderValue,
    content_type: &HeaderValue,
    body: Bytes,
) -> Option<bool> {
    sender.ready().await.ok()?;
    let mut req = Request::new(Full::new(body));
    *req.method_mut() = Method::POST;
    *req.uri_mut() = path.parse().unwrap_or_default();
    req.headers_mut().insert(HOST, host.clone());
    req.headers_mut().insert(CONTENT_TYPE, content_type.clone());
    let res = sender.send_request(req).await.ok()?;
    let good = res.status().is_success();
    // Read the answer's body so that the connection can be reused.
    let _ = res.into_body().collect().await;
    Some(good)
}

/// `count p50 p99 p99.9 max` of `latencies` (sorted here), nearest-rank percentiles.
pub fn latency_summary(latencies: &mut [u64]) -> String {
    latencies.sort_unstable();
    let at = |q: f64| {
        let rank = (latencies.len() as f64 * q).ceil() as usize;
        latencies.get(rank.saturating_sub(1)).copied().unwrap_or(0)
    };
    format!(
        "{} {} {} {} {}",
        latencies.len(),
        at(0.50),
        at(0.99),
        at(0.999),
        latencies.last().copied().unwrap_or(0)
    )
}

/// Now on the machine's monotonic clock (`CLOCK_MONOTONIC`), in nanoseconds. Every process
/// reads the same clock and no change of the wall clock moves it, so the open-loop generator
/// stamps each event with it and the sink times the event's arrival on it.
pub fn monotonic_ns() -> u128 {
    use nix::time::{ClockId, clock_gettime};
    clock_gettime(ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        t.tv_sec() as u128 * 1_000_000_000 + t.tv_nsec() as u128
    })
}

/// Prints `listening ADDR` (what `benches/load.sh` waits for) and flushes it.
pub fn say_listening(addr: SocketAddr) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "listening {addr}");
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_monotonic_clock_is_the_one_instant_reads() {
        let before = std::time::Instant::now();
        let a = monotonic_ns();
        let after = std::time::Instant::now();
        while after.elapsed() < Duration::from_millis(2) {
            std::hint::spin_loop();
        }
        let b = monotonic_ns();
        let outer = before.elapsed().as_nanos();
        // On one clock, [a, b] lies inside [before, now] and covers [after, loop's end].
        assert!(a > 0);
        // It counts from boot, as /proc/uptime does (which adds time suspended), not from 1970.
        let uptime = std::fs::read_to_string("/proc/uptime").unwrap();
        let uptime: f64 = uptime.split(' ').next().unwrap().parse().unwrap();
        assert!(
            a as f64 / 1e9 <= uptime + 1.0,
            "{a} ns against {uptime} s up"
        );
        assert!(b - a >= 2_000_000, "{a} -> {b}");
        assert!(b - a <= outer, "{a} -> {b}, {outer} ns by Instant");
    }

    #[test]
    fn the_baseline_makes_the_cloudevent_portico_makes() {
        let payload = json_payload(512);
        let body = original_ingest_body("bench", &payload);
        let ce = ingest_to_cloudevent("gw", "bench", &body).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&ce).unwrap();
        assert_eq!(v["source"], "gw/bench");
        assert_eq!(v["subject"], "bench");
        assert_eq!(v["type"], "bench");
        assert_eq!(v["datacontenttype"], "application/json");
        assert_eq!(v["data"]["pad"].as_str().unwrap().len(), 502);
        assert_eq!(v["id"].as_str().unwrap().len(), 36);

        let mut h = hyper::HeaderMap::new();
        h.insert("x-a", HeaderValue::from_static("1"));
        let ce = webhook_to_cloudevent("gw", "webhook", "hook", &h, &payload).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&ce).unwrap();
        assert_eq!(v["data"]["header"]["x-a"][0], "1");
        assert_eq!(v["data"]["bodyEncoding"], "json");
        assert!(ingest_to_cloudevent("gw", "t", b"{").is_err());
    }
}
