//! The gRPC side of `benches/load.sh`: a Rust gRPC gateway server that floods one stream, and
//! the baseline that forwards such a stream to the sink.
//!
//!   grpc_stream server [SIZE]                          # a GatewayProcessor on a free port
//!   grpc_stream forward GRPC_PORT SINK_ADDR [CONNECTIONS]
//!
//! `server` answers every `RunGateway` with SIZE-byte JSON events (default 256) as fast as the
//! stream takes them, and prints `listening 127.0.0.1:PORT`; Portico (a gateway with
//! `rpcPort`) and the baseline read from it in turn.
//!
//! `forward` is the baseline: a bare tonic client that opens one stream, builds the CloudEvent
//! of each event as Portico does (structured JSON) and POSTs it to the sink over CONNECTIONS
//! dedicated keep-alive connections (default 32, Portico's default deliveries in flight), with
//! a bounded queue in between, until it is killed.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use portico::Event;
use portico::grpc_server::{EventSender, GrpcGateway};
use portico::proto::v1::GatewayConfig;
use portico::proto::v1::gateway_processor_client::GatewayProcessorClient;
use portico_benches::{Forwarders, cloudevent, is_json};
use serde_json::value::RawValue;

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

async fn server(size: usize) -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    portico_benches::say_listening(listener.local_addr()?);
    portico::grpc_server::serve(
        Flood(portico_benches::json_payload(size)),
        listener,
        std::future::pending(),
    )
    .await?;
    Ok(())
}

async fn forward(
    grpc_port: u16,
    sink: SocketAddr,
    connections: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let forwarders = Forwarders::start(sink, "/", connections, connections * 4);
    let mut client = GatewayProcessorClient::connect(format!("http://127.0.0.1:{grpc_port}"))
        .await?
        .max_decoding_message_size(usize::MAX);
    let src = "flood";
    let config = GatewayConfig {
        id: "0".into(),
        src: src.into(),
        config: "{}".into(),
        gateway: "bench".into(),
        namespace: "default".into(),
    };
    let mut stream = client.run_gateway(config).await?.into_inner();
    while let Some(event) = stream.message().await? {
        let ct = (!event.content_type.is_empty()).then_some(event.content_type.as_str());
        let json = match ct {
            Some(ct) if is_json(ct) => serde_json::from_slice::<&RawValue>(&event.data).ok(),
            _ => None,
        };
        let binary = json.is_none().then_some(&event.data[..]);
        let extensions: BTreeMap<&str, &str> = event
            .extensions
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let body = cloudevent("bench", "bench", src, ct, json, binary, extensions);
        if !forwarders.enqueue(body).await {
            break;
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let usage =
        "usage: grpc_stream server [SIZE] | grpc_stream forward GRPC_PORT SINK_ADDR [CONNECTIONS]";
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("server") => server(args.next().map(|s| s.parse()).transpose()?.unwrap_or(256)).await,
        Some("forward") => {
            let port: u16 = args.next().ok_or(usage)?.parse()?;
            let sink: SocketAddr = args.next().ok_or(usage)?.parse()?;
            let connections = args.next().map(|c| c.parse()).transpose()?.unwrap_or(32);
            forward(port, sink, connections).await
        }
        _ => Err(usage.into()),
    }
}
