//! Traces, through the real binary and a real OTLP receiver (a gRPC and an HTTP server
//! decoding the official `opentelemetry-proto` messages): the spans of one event arrive with
//! their parent links intact, the watcher receives the `traceparent` the event came with, and
//! log lines about the event carry its trace id.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use support::{Behaviour, GatewayFileBuilder, Portico, Sink, eventually, free_port};

const WAIT: Duration = Duration::from_secs(30);

/// Every span a receiver was sent, with its resource's `service.name`.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<(String, Span)>>>);

impl Received {
    fn take(&self, request: ExportTraceServiceRequest) {
        let mut all = self.0.lock().unwrap();
        for rs in request.resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref())
                .map(|v| format!("{:?}", v.value))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    all.push((service.clone(), span));
                }
            }
        }
    }

    /// The spans of trace `trace_id` (hex), by name, once all of `names` are there.
    async fn wait_for(&self, trace_id: &str, names: &[&str]) -> Vec<Span> {
        eventually(WAIT, || {
            let all = self.0.lock().unwrap();
            let spans: Vec<Span> = all
                .iter()
                .map(|(_, s)| s.clone())
                .filter(|s| hex(&s.trace_id) == trace_id)
                .collect();
            names
                .iter()
                .all(|n| spans.iter().any(|s| s.name == *n))
                .then_some(spans)
        })
        .await
        .unwrap_or_else(|| {
            let all = self.0.lock().unwrap();
            let got: Vec<_> = all
                .iter()
                .map(|(_, s)| (s.name.clone(), hex(&s.trace_id)))
                .collect();
            panic!("spans {names:?} of trace {trace_id} never all arrived; got {got:?}")
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.take(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// An OTLP/gRPC receiver on a free port: its endpoint and what it receives.
async fn grpc_receiver() -> (String, Received) {
    let received = Received::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = TraceServiceServer::new(received.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    (format!("http://{addr}"), received)
}

/// An OTLP/HTTP (protobuf) receiver on a free port: its endpoint and what it receives.
async fn http_receiver() -> (String, Received) {
    let received = Received::default();
    let r = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let r = r.clone();
            async move {
                match ExportTraceServiceRequest::decode(body) {
                    Ok(req) => {
                        r.take(req);
                        (
                            axum::http::StatusCode::OK,
                            [("content-type", "application/x-protobuf")],
                            ExportTraceServiceResponse::default().encode_to_vec(),
                        )
                    }
                    Err(_) => (
                        axum::http::StatusCode::BAD_REQUEST,
                        [("content-type", "text/plain")],
                        b"not an ExportTraceServiceRequest".to_vec(),
                    ),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), received)
}

/// A webhook gateway on a free port, exporting spans to `endpoint` over `protocol`.
async fn gateway(sink: &Sink, endpoint: &str, protocol: &str) -> (tempfile::TempDir, Portico, u16) {
    let port = free_port();
    let (dir, file) = GatewayFileBuilder::new("traced", "webhook")
        .watchers(&[sink.url()])
        .config("orders", &format!("port: {port}\nendpoint: /orders"))
        .write();
    let portico = Portico::start(
        &["run", file.to_str().unwrap()],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ],
    )
    .await;
    portico.wait_for_phase("orders", "Running", WAIT).await;
    (dir, portico, port)
}

fn by_name<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    spans
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no {name} span"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spans_of_one_event_arrive_linked_and_the_watcher_gets_its_traceparent() {
    let (endpoint, received) = grpc_receiver().await;
    // The watcher fails once, so that the event is delivered in two attempts.
    let sink = Sink::start(Behaviour::Script(vec![503])).await;
    let (_dir, portico, port) = gateway(&sink, &endpoint, "grpc").await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let traceparent = format!("00-{trace_id}-{caller_span}-01");
    let r = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/orders"))
        .header("traceparent", &traceparent)
        .header("tracestate", "vendor=42")
        .json(&serde_json::json!({"order": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // The watcher gets the event with the context it came with, as the CloudEvents
    // distributed tracing extension; the request itself carries its delivery attempt's span.
    let events = sink.wait_for_events(1, WAIT).await;
    assert_eq!(events[0]["traceparent"], traceparent.as_str());
    assert_eq!(events[0]["tracestate"], "vendor=42");
    let attempts: Vec<String> = sink
        .received()
        .iter()
        .map(|r| r.headers["traceparent"].to_str().unwrap().to_string())
        .collect();
    assert_eq!(attempts.len(), 2, "{attempts:?}");

    let spans = received
        .wait_for(
            trace_id,
            &["receive", "transform", "outbox append", "deliver"],
        )
        .await;
    let receive = by_name(&spans, "receive");
    assert_eq!(hex(&receive.parent_span_id), caller_span);
    for child in ["transform", "outbox append"] {
        assert_eq!(
            by_name(&spans, child).parent_span_id,
            receive.span_id,
            "{child} is a child of receive"
        );
    }
    // One deliver span per attempt, each a child of the event's context, each the context of
    // its request.
    let delivers = eventually(WAIT, || {
        let spans = received.0.lock().unwrap();
        let d: Vec<Span> = spans
            .iter()
            .map(|(_, s)| s.clone())
            .filter(|s| s.name == "deliver" && hex(&s.trace_id) == trace_id)
            .collect();
        (d.len() == 2).then_some(d)
    })
    .await
    .expect("two deliver spans");
    for d in &delivers {
        assert_eq!(hex(&d.parent_span_id), caller_span);
        let header = format!("00-{trace_id}-{}-01", hex(&d.span_id));
        assert!(attempts.contains(&header), "{header} in {attempts:?}");
    }
    let failed = delivers
        .iter()
        .filter(|d| d.status.as_ref().is_some_and(|s| s.message.contains("503")))
        .count();
    assert_eq!(failed, 1, "the first attempt is marked failed");
    // The service is Portico's, unless OTEL_SERVICE_NAME says otherwise.
    assert!(
        received.0.lock().unwrap()[0].0.contains("portico"),
        "service.name"
    );
    // The retry's log line names the trace.
    let logged = portico.stderr.containing("delivery failed; retrying");
    assert!(
        logged
            .iter()
            .any(|l| l.contains(&format!("\"trace_id\":\"{trace_id}\""))),
        "{logged:?}"
    );
    let metrics = portico.metrics().await;
    let exported: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("portico_spans_exported_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_default();
    assert!(exported >= 5, "{metrics}");
    assert_eq!(portico.terminate().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_without_context_starts_a_trace_exported_over_http() {
    let (endpoint, received) = http_receiver().await;
    let sink = Sink::start(Behaviour::Ok).await;
    let (_dir, portico, port) = gateway(&sink, &endpoint, "http/protobuf").await;
    let r = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/orders"))
        .json(&serde_json::json!({"order": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let events = sink.wait_for_events(1, WAIT).await;
    // A new trace, whose root is the receive span: the event carries its context.
    let tp = events[0]["traceparent"].as_str().unwrap().to_string();
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "{tp}");
    let spans = received
        .wait_for(
            parts[1],
            &["receive", "transform", "outbox append", "deliver"],
        )
        .await;
    let receive = by_name(&spans, "receive");
    assert!(receive.parent_span_id.is_empty(), "receive is the root");
    assert_eq!(hex(&receive.span_id), parts[2]);
    assert_eq!(by_name(&spans, "deliver").parent_span_id, receive.span_id);
    assert_eq!(portico.terminate().await, Some(0));
}

#[tokio::test]
async fn the_ingest_api_keeps_the_context_events_come_with() {
    let sink = Sink::start(Behaviour::Ok).await;
    let (_dir, file) = GatewayFileBuilder::new("ingested", "independent-example")
        .watchers(&[sink.url()])
        .write();
    let portico = Portico::run(&file).await;
    let header = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let own = "00-11111111111111111111111111111111-2222222222222222-01";
    let post = |body: String, content_type: &'static str| {
        portico
            .http
            .post(portico.url("/"))
            .header("content-type", content_type)
            .header("traceparent", header)
            .body(body)
    };
    // A raw event, and a CloudEvent without a context: the request's is kept.
    let raw = r#"{"src": "a", "payload": "aGk="}"#.to_string();
    assert_eq!(
        post(raw, "application/json").send().await.unwrap().status(),
        200
    );
    let bare = r#"{"specversion":"1.0","id":"bare","source":"/s","type":"t"}"#.to_string();
    let r = post(bare, "application/cloudevents+json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A CloudEvent with its own context keeps it.
    let traced = format!(
        r#"{{"specversion":"1.0","id":"traced","source":"/s","type":"t","traceparent":"{own}"}}"#
    );
    let r = post(traced, "application/cloudevents+json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let events = sink.wait_for_events(3, WAIT).await;
    let context_of = |pick: &dyn Fn(&serde_json::Value) -> bool| {
        events
            .iter()
            .find(|e| pick(e))
            .map(|e| e["traceparent"].as_str().unwrap_or_default().to_string())
            .unwrap()
    };
    assert_eq!(context_of(&|e| e["source"] == "ingested/a"), header);
    assert_eq!(context_of(&|e| e["id"] == "bare"), header);
    assert_eq!(context_of(&|e| e["id"] == "traced"), own);
    assert_eq!(portico.terminate().await, Some(0));
}
