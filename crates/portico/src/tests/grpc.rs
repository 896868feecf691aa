//! The gRPC style in-process: the framework's client ([`GrpcProcessor`]) under the real
//! supervisor, talking over real gRPC on port 0 to a server made with the library's helper
//! ([`crate::grpc_server`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::cloudevents::{Data, ExtensionName, ExtensionValue};
use crate::grpc_server::{EventSender, GrpcGateway};
use crate::processor::grpc::GrpcProcessor;
use crate::proto::v1::GatewayConfig;
use crate::spec::{ConfigMapData, GrpcProtocol};
use crate::testing::Harness;
use crate::{ConfigError, Event, Phase};
use tonic::Status;

const WAIT: Duration = Duration::from_secs(10);

/// Sends `count` events (or forever), or fails as the configuration says.
#[derive(Default)]
struct Scripted {
    running: Arc<AtomicUsize>,
    runs: Arc<AtomicUsize>,
}

struct Live(Arc<AtomicUsize>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl GrpcGateway for Scripted {
    fn validate(&self, config: &GatewayConfig) -> Result<(), ConfigError> {
        if config.config.contains("reject") {
            Err(ConfigError::invalid("rejected by the server"))
        } else {
            Ok(())
        }
    }

    async fn run(&self, config: GatewayConfig, events: EventSender) -> Result<(), Status> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        self.running.fetch_add(1, Ordering::SeqCst);
        let _live = Live(self.running.clone());
        if config.config.contains("bad-argument") {
            return Err(Status::invalid_argument("the server says no"));
        }
        let count: Option<u32> = config
            .config
            .strip_prefix("count ")
            .and_then(|n| n.parse().ok());
        let mut n = 0;
        loop {
            n += 1;
            let event = Event::new(format!("{{\"n\":{n}}}"))
                .with_content_type("application/json")
                .with_extension("origin", "rust");
            events.send(event).await?;
            if count.is_some_and(|c| n >= c) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

async fn server(gateway: Scripted) -> (u16, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(crate::grpc_server::serve(gateway, listener, async {
        let _ = rx.await;
    }));
    (port, tx)
}

fn map(entries: &[(&str, &str)]) -> ConfigMapData {
    entries
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn eventually(mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

fn processor(port: u16) -> Arc<GrpcProcessor> {
    Arc::new(
        GrpcProcessor::new(port, GrpcProtocol::Portico)
            .unwrap()
            .with_retry(Duration::from_millis(20), Duration::from_millis(200)),
    )
}

#[tokio::test]
async fn events_carry_content_type_and_extensions_and_a_finished_stream_completes() {
    let gateway = Scripted::default();
    let (port, _stop) = server(gateway).await;
    let mut h = Harness::new("g", "t");
    let mut sup = h.supervisor(processor(port));
    sup.apply(&map(&[("three", "count 3")])).await;
    for n in 1..=3 {
        let ce = h.next_event(WAIT).await.expect("an event");
        assert_eq!(ce.source, "g/three");
        assert_eq!(ce.datacontenttype.as_deref(), Some("application/json"));
        let origin = ExtensionName::new("origin").unwrap();
        assert_eq!(
            ce.extensions.get(&origin),
            Some(&ExtensionValue::String("rust".into()))
        );
        assert_eq!(
            ce.data,
            Some(Data::Json(format!("{{\"n\":{n}}}").into_bytes().into()))
        );
    }
    assert!(
        h.wait_for_phase("three", Phase::Completed, WAIT)
            .await
            .is_some()
    );
    sup.stop_all().await;
}

#[tokio::test]
async fn stopping_a_configuration_cancels_its_stream_on_the_server() {
    let gateway = Scripted::default();
    let running = gateway.running.clone();
    let (port, _stop) = server(gateway).await;
    let h = Harness::new("g", "t");
    let mut sup = h.supervisor(processor(port));
    sup.apply(&map(&[("a", "forever"), ("b", "forever")])).await;
    assert!(h.wait_for_phase("a", Phase::Running, WAIT).await.is_some());
    assert!(h.wait_for_phase("b", Phase::Running, WAIT).await.is_some());
    assert!(eventually(|| running.load(Ordering::SeqCst) == 2).await);
    sup.apply(&map(&[("a", "forever")])).await;
    assert!(
        eventually(|| running.load(Ordering::SeqCst) == 1).await,
        "the server dropped b's run when the stream was cancelled"
    );
    assert!(h.node("b").is_none());
    sup.stop_all().await;
    assert!(eventually(|| running.load(Ordering::SeqCst) == 0).await);
}

#[tokio::test]
async fn invalid_configurations_stay_in_error_and_are_not_restarted() {
    let gateway = Scripted::default();
    let runs = gateway.runs.clone();
    let (port, _stop) = server(gateway).await;
    let h = Harness::new("g", "t");
    let mut sup = h.supervisor(processor(port));
    sup.apply(&map(&[
        ("rejected", "reject"),
        ("argument", "bad-argument"),
    ]))
    .await;
    let node = h
        .wait_for_phase("rejected", Phase::Error, WAIT)
        .await
        .unwrap();
    assert_eq!(node.message, "rejected by the server");
    let node = h
        .wait_for_phase("argument", Phase::Error, WAIT)
        .await
        .unwrap();
    assert!(
        node.message.contains("the server says no"),
        "{}",
        node.message
    );
    // Neither is retried: over several restart periods of the harness (50 ms), the node
    // keeps its error and the server saw one run.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.node("argument").unwrap().restarts, 0);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    sup.stop_all().await;
}

#[tokio::test]
async fn a_server_that_is_not_up_is_waited_for() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let h = Harness::new("g", "t");
    let mut sup = h.supervisor(processor(port));
    sup.apply(&map(&[("late", "forever")])).await;
    let node = h.wait_for_phase("late", Phase::Error, WAIT).await.unwrap();
    assert!(node.message.contains("Unavailable"), "{}", node.message);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let (_tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(crate::grpc_server::serve(
        Scripted::default(),
        listener,
        async {
            let _ = rx.await;
        },
    ));
    assert!(
        h.wait_for_phase("late", Phase::Running, WAIT)
            .await
            .is_some()
    );
    assert_eq!(
        h.node("late").unwrap().restarts,
        0,
        "waiting is not a restart"
    );
    sup.stop_all().await;
}
