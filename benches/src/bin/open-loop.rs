//! An open-loop load generator for `benches/load.sh`: POSTs events at a fixed rate, whether or
//! not the server keeps up, and times each from the moment it was scheduled, so that a server
//! that stalls is charged for every request that waited behind the stall (no coordinated
//! omission: a closed-loop tool such as wrk sends less while the server is slow and so hides
//! the stall).
//!
//!   open-loop HOST:PORT PATH RATE SECONDS [CONNECTIONS]
//!
//! Each event is an original ingest body whose 512-byte JSON payload carries `"sent_ns":N`,
//! the time it was scheduled for on the machine's monotonic clock (nanoseconds), so that
//! `bench-sink` times its arrival on the same clock. A thread paces the schedule with
//! `nanosleep` (tens of microseconds of jitter, where the runtime's timer has a millisecond);
//! CONNECTIONS (64) keep-alive connections, each taking the next event due, send them, and
//! what finds them all busy waits its turn, on the clock. Prints `sent N ok K`,
//! `response_us count p50 p99 p99.9 max` (scheduled → answer) and `pacer_late_us` with the same
//! figures for how late the pacer handed each event over: the generator's own delays (its core
//! taken by another program, or the machine's), which the other figures include.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::header::HeaderValue;
use portico_benches::{connect, latency_summary, monotonic_ns, original_ingest_body, post};

struct Args {
    target: SocketAddr,
    path: String,
    rate: f64,
    seconds: f64,
    connections: usize,
}

fn args() -> Result<Args, String> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() < 4 {
        return Err("usage: open-loop HOST:PORT PATH RATE SECONDS [CONNECTIONS]".into());
    }
    let number = |i: usize, what: &str| -> Result<f64, String> {
        a[i].parse::<f64>()
            .ok()
            .filter(|v| *v > 0.0)
            .ok_or_else(|| format!("{what}: `{}` is not a positive number", a[i]))
    };
    Ok(Args {
        target: a[0]
            .parse()
            .map_err(|e| format!("HOST:PORT `{}`: {e}", a[0]))?,
        path: a[1].clone(),
        rate: number(2, "RATE")?,
        seconds: number(3, "SECONDS")?,
        connections: a.get(4).map_or(Ok(64.0), |_| number(4, "CONNECTIONS"))? as usize,
    })
}

/// The ingest body of the event scheduled at `sent_ns`: a 512-byte JSON payload naming it.
fn body(sent_ns: u128) -> Bytes {
    let head = format!(r#"{{"sent_ns":{sent_ns},"pad":""#);
    let pad = 512usize.saturating_sub(head.len() + 2);
    let payload = format!("{head}{}\"}}", "x".repeat(pad));
    original_ingest_body("bench", payload.as_bytes())
}

fn main() -> Result<(), String> {
    let args = args()?;
    let total = (args.rate * args.seconds).round() as u64;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    // Events due: when each was scheduled, and that time on the monotonic clock (ns).
    let (due_tx, due_rx) = async_channel::unbounded::<(Instant, u128)>();

    // The pacer: hands each event over at its scheduled time, never waiting for an answer.
    let rate = args.rate;
    let pacer = std::thread::spawn(move || {
        let start = Instant::now();
        let clock = monotonic_ns();
        let mut late = Vec::with_capacity(total as usize);
        for i in 0..total {
            let offset = Duration::from_secs_f64(i as f64 / rate);
            let at = start + offset;
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            late.push(at.elapsed().as_micros() as u64);
            if due_tx.try_send((at, clock + offset.as_nanos())).is_err() {
                break;
            }
        }
        late
    });

    // Each connection takes the next event due, sends it and times it from its scheduled
    // time; an event that finds every connection busy waits in the queue, on the clock.
    let (ok, mut latencies) = runtime.block_on(async move {
        let host =
            HeaderValue::from_str(&args.target.to_string()).unwrap_or(HeaderValue::from_static(""));
        let content_type = HeaderValue::from_static("application/json");
        let mut connections = Vec::new();
        for _ in 0..args.connections.max(1) {
            let (rx, host, content_type, path) = (
                due_rx.clone(),
                host.clone(),
                content_type.clone(),
                args.path.clone(),
            );
            let target = args.target;
            connections.push(tokio::spawn(async move {
                let (mut ok, mut latencies) = (0u64, Vec::new());
                let mut sender = connect(target).await;
                while let Ok((at, sent_ns)) = rx.recv().await {
                    let body = body(sent_ns);
                    match post(&mut sender, &path, &host, &content_type, body).await {
                        Some(good) => ok += u64::from(good),
                        None => sender = connect(target).await,
                    }
                    latencies.push(at.elapsed().as_micros() as u64);
                }
                (ok, latencies)
            }));
        }
        let (mut ok, mut latencies) = (0, Vec::with_capacity(total as usize));
        for c in connections {
            if let Ok((n, l)) = c.await {
                ok += n;
                latencies.extend(l);
            }
        }
        (ok, latencies)
    });
    let mut late = pacer.join().unwrap_or_default();
    println!("sent {total} ok {ok}");
    println!("response_us {}", latency_summary(&mut latencies));
    println!("pacer_late_us {}", latency_summary(&mut late));
    Ok(())
}
