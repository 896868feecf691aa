//! Figure of issue 3: events per second from one Rust gRPC server stream through `portico` to
//! an HTTP watcher, and portico's CPU seconds per 100k events.
//!
//! This process runs the gRPC server (a [`GrpcGateway`] that sends 256-byte JSON events as
//! fast as the stream takes them) and the watcher (an HTTP server answering 200 and counting),
//! both on port 0; it starts the `portico` binary given as first argument on a gateway file
//! naming both, lets it warm up, then measures for a while. Run it with `benches/grpc-stream.sh`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use portico::Event;
use portico::grpc_server::{EventSender, GrpcGateway};
use portico::proto::v1::GatewayConfig;
use portico::proto::v1::gateway_processor_client::GatewayProcessorClient;

struct Flood(bytes::Bytes);

impl GrpcGateway for Flood {
    async fn run(&self, _config: GatewayConfig, events: EventSender) -> Result<(), tonic::Status> {
        loop {
            events
                .send(Event::new(self.0.clone()).with_content_type("application/json"))
                .await?;
        }
    }
}

/// utime + stime of `pid`, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat(5), counted from after the command name (field 3 is index 0).
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|f| f.parse::<f64>().ok()))
        .sum();
    ticks / 100.0
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let portico = args
        .next()
        .ok_or("usage: grpc_stream PORTICO_BIN [SECONDS]")?;
    let seconds: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(10);

    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let grpc_port = grpc.local_addr()?.port();
    tokio::spawn(portico::grpc_server::serve(
        Flood(portico_benches::json_payload(256)),
        grpc,
        std::future::pending(),
    ));

    // Baseline in the same conditions: the same stream read by a bare tonic client.
    let baseline = {
        let mut client = GatewayProcessorClient::connect(format!("http://127.0.0.1:{grpc_port}"))
            .await?
            .max_decoding_message_size(usize::MAX);
        let mut stream = client
            .run_gateway(GatewayConfig::default())
            .await?
            .into_inner();
        let (mut n, start) = (0u64, Instant::now());
        let cpu0 = cpu_seconds(std::process::id());
        while start.elapsed() < Duration::from_secs(3) {
            if stream.message().await?.is_none() {
                break;
            }
            n += 1;
        }
        let rate = n as f64 / start.elapsed().as_secs_f64();
        (
            rate,
            (cpu_seconds(std::process::id()) - cpu0) / n as f64 * 100_000.0,
        )
    };

    let count = Arc::new(AtomicU64::new(0));
    let sink = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let sink_addr = sink.local_addr()?;
    let counter = count.clone();
    let app = axum::Router::new().fallback(move |_body: axum::body::Bytes| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::Relaxed);
            axum::http::StatusCode::OK
        }
    });
    tokio::spawn(async move { axum::serve(sink, app).await });

    let dir = tempfile::tempdir()?;
    let file = dir.path().join("gateway.yaml");
    std::fs::write(
        &file,
        format!(
            "apiVersion: portico.dev/v1alpha1\nkind: Gateway\nmetadata:\n  name: bench\nspec:\n  type: bench\n  configMap: bench-cm\n  rpcPort: \"{grpc_port}\"\n  watchers:\n    urls: [\"http://{sink_addr}/\"]\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bench-cm\ndata:\n  flood: \"{{}}\"\n"
        ),
    )?;
    let mut child = tokio::process::Command::new(&portico)
        .args([
            "run",
            file.to_str().ok_or("temp path")?,
            "--transformer-port",
            "0",
            "--log",
            "warn",
        ])
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().ok_or("portico exited")?;

    // Warm up until events flow, then measure.
    let warm = Instant::now();
    while count.load(Ordering::Relaxed) < 10_000 {
        if warm.elapsed() > Duration::from_secs(30) {
            return Err("no events reached the watcher within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (n0, c0, t0) = (
        count.load(Ordering::Relaxed),
        cpu_seconds(pid),
        Instant::now(),
    );
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let (n1, c1, t1) = (
        count.load(Ordering::Relaxed),
        cpu_seconds(pid),
        Instant::now(),
    );
    let _ = child.kill().await;

    let events = (n1 - n0) as f64;
    let rate = events / (t1 - t0).as_secs_f64();
    let cpu = (c1 - c0) / events * 100_000.0;
    println!("| path | events/s | CPU-s per 100k events |");
    println!("|---|---|---|");
    println!(
        "| baseline: the same stream read by a bare tonic client (server + client CPU) | {:.0} | {:.2} |",
        baseline.0, baseline.1
    );
    println!(
        "| 1 gRPC stream (256 B JSON) → portico → HTTP watcher (structured), portico's CPU | {rate:.0} | {cpu:.2} |"
    );
    Ok(())
}
