//! End to end, gRPC style: the real `portico` binary driving real gRPC servers — the
//! Python example (`examples/python-grpc/server.py`, grpcio in the venv that `scripts/test`
//! makes, `PORTICO_VENV`), a server written for Argo Events' generic event source, and the
//! Rust example (`examples/grpc-calendar`) — delivering CloudEvents to a real HTTP watcher.

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use support::{Behaviour, GatewayFileBuilder, Portico, Sink, eventually, replace_file};
use tokio::process::{Child, Command};

const WAIT: Duration = Duration::from_secs(20);

/// The venv's python, with a clear error when `scripts/test` did not make it.
fn python() -> PathBuf {
    let venv = std::env::var("PORTICO_VENV").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_default();
        format!("{home}/.cache/portico/venv")
    });
    let python = Path::new(&venv).join("bin/python");
    assert!(
        python.exists(),
        "no Python venv at {venv}: run scripts/test (it makes the venv with grpcio, grpcio-tools and pyyaml), or set PORTICO_VENV"
    );
    python
}

fn example(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(path)
        .to_string_lossy()
        .into_owned()
}

use support::free_port;

/// Lines the Python example wrote to its `PORTICO_EXAMPLE_LOG` file.
fn server_log(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

async fn wait_log(path: &Path, line: &str) {
    eventually(WAIT, || {
        server_log(path).iter().any(|l| l == line).then_some(())
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "the server never logged `{line}`; it logged: {:?}",
            server_log(path)
        )
    });
}

/// The Python example server on `port`, as our own child (killed on drop).
fn start_python_server(port: u16, log: &Path) -> Child {
    Command::new(python())
        .arg(example("python-grpc/server.py"))
        .env("GATEWAY_PROCESSOR_GRPC_SERVER_PORT", port.to_string())
        .env("PORTICO_EXAMPLE_LOG", log)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the Python example server")
}

fn sources(events: &[serde_json::Value]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| e["source"].as_str().map(String::from))
        .collect()
}

async fn node_id(portico: &Portico, src: &str) -> String {
    let node = portico.wait_for_phase(src, "Running", WAIT).await;
    node["id"].as_str().expect("node id").to_string()
}

#[tokio::test]
async fn python_server_runs_two_configurations_and_follows_removal_and_change() {
    let sink = Sink::start(Behaviour::Ok).await;
    let port = free_port();
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("server.log");
    let builder = GatewayFileBuilder::new("pyg", "python")
        .watchers(&[sink.url()])
        .spec_lines(&format!("  rpcPort: \"{port}\""));
    let (_dir, file) = builder
        .clone_with(&[
            ("alpha", "interval: 100ms\nmessage: from alpha"),
            ("beta", "interval: 100ms\nmessage: from beta"),
        ])
        .write();
    let py = python();
    let portico = Portico::start(
        &[
            "run",
            file.to_str().unwrap(),
            "--",
            py.to_str().unwrap(),
            &example("python-grpc/server.py"),
        ],
        &[("PORTICO_EXAMPLE_LOG", log.to_str().unwrap())],
    )
    .await;

    // Both streams deliver, each with its own source, the server's content type and extension.
    let events = eventually(WAIT, || {
        let e = sink.events();
        let s = sources(&e);
        (s.iter().any(|s| s == "pyg/alpha") && s.iter().any(|s| s == "pyg/beta")).then_some(e)
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "events of both configurations; got {:?}",
            sources(&sink.events())
        )
    });
    for e in &events {
        assert_eq!(e["type"], "python");
        assert_eq!(e["datacontenttype"], "application/json");
        assert_eq!(e["producer"], "python", "the server's extension is carried");
        let src = e["subject"].as_str().unwrap();
        assert_eq!(e["source"], format!("pyg/{src}"));
        assert_eq!(e["data"]["src"], src);
    }
    let alpha = node_id(&portico, "alpha").await;
    let beta = node_id(&portico, "beta").await;

    // Removing beta cancels exactly beta's stream on the server.
    replace_file(
        &file,
        &builder
            .clone_with(&[("alpha", "interval: 100ms\nmessage: from alpha")])
            .render(),
    );
    wait_log(&log, &format!("cancelled beta {beta}")).await;
    eventually(WAIT, || {
        (portico.stderr.containing("configuration removed").len() == 1).then_some(())
    })
    .await
    .expect("beta's node removed");
    assert!(portico.node("beta").await.is_none());
    assert!(
        !server_log(&log)
            .iter()
            .any(|l| l.starts_with("cancelled alpha")),
        "alpha kept running: {:?}",
        server_log(&log)
    );
    let before = sink.events().len();
    let all = sink.wait_for_events(before + 6, WAIT).await;
    assert!(
        all[all.len() - 3..].iter().all(|e| e["subject"] == "alpha"),
        "only alpha delivers after beta's removal"
    );

    // Changing alpha restarts it: the old stream is cancelled, a new one started.
    replace_file(
        &file,
        &builder
            .clone_with(&[("alpha", "interval: 100ms\nmessage: changed")])
            .render(),
    );
    wait_log(&log, &format!("cancelled alpha {alpha}")).await;
    let new_alpha = eventually(WAIT, || {
        server_log(&log)
            .iter()
            .filter_map(|l| l.strip_prefix("started alpha "))
            .map(String::from)
            .find(|id| *id != alpha)
    })
    .await
    .expect("alpha started again under a new id");
    assert_eq!(node_id(&portico, "alpha").await, new_alpha);
    eventually(WAIT, || {
        sink.events()
            .iter()
            .any(|e| e["data"]["message"] == "changed")
            .then_some(())
    })
    .await
    .expect("events of the changed configuration");
}

#[tokio::test]
async fn nodes_show_the_server_going_away_and_coming_back() {
    let sink = Sink::start(Behaviour::Ok).await;
    let port = free_port();
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("server.log");
    let (_dir, file) = GatewayFileBuilder::new("pyg", "python")
        .watchers(&[sink.url()])
        .spec_lines(&format!("  rpcPort: \"{port}\""))
        .config("alpha", "interval: 100ms")
        .config("beta", "interval: 100ms")
        .write();
    // The gateway starts first: waiting for a late server is normal.
    let portico = Portico::run(&file).await;
    let waiting = portico.wait_for_phase("alpha", "Error", WAIT).await;
    assert!(
        waiting["message"].as_str().unwrap().contains("Unavailable"),
        "the node says why: {waiting}"
    );

    let mut server = start_python_server(port, &log);
    portico.wait_for_phase("alpha", "Running", WAIT).await;
    portico.wait_for_phase("beta", "Running", WAIT).await;
    sink.wait_for_events(4, WAIT).await;

    // Kill the server: both nodes go to Error with a reason.
    server.kill().await.expect("kill the server");
    for src in ["alpha", "beta"] {
        let node = portico.wait_for_phase(src, "Error", WAIT).await;
        let message = node["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("127.0.0.1:{port}")) && message.contains("retrying"),
            "the node says why: {message}"
        );
    }

    // Start it again: Running again and events flow, without restarting portico.
    let _server = start_python_server(port, &log);
    portico.wait_for_phase("alpha", "Running", WAIT).await;
    portico.wait_for_phase("beta", "Running", WAIT).await;
    let before = sink.events().len();
    let events = sink.wait_for_events(before + 4, WAIT).await;
    let after: Vec<_> = sources(&events[before..]);
    assert!(after.iter().any(|s| s == "pyg/alpha") && after.iter().any(|s| s == "pyg/beta"));
    assert_eq!(
        portico.stderr.containing("gateway starting").len(),
        1,
        "portico itself never restarted"
    );
}

#[tokio::test]
async fn a_configuration_the_server_rejects_is_an_error_node_with_its_reason() {
    let sink = Sink::start(Behaviour::Ok).await;
    let port = free_port();
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("server.log");
    let (_dir, file) = GatewayFileBuilder::new("pyg", "python")
        .watchers(&[sink.url()])
        .spec_lines(&format!("  rpcPort: \"{port}\""))
        .config("good", "interval: 100ms")
        .config("bad", "message: no interval here")
        .write();
    let _server = start_python_server(port, &log);
    let portico = Portico::run(&file).await;
    // (It may show the server as unreachable first, while the server starts.)
    let reason = "interval: missing (e.g. `interval: 1s`)";
    wait_for_node(&portico, "bad", |n| {
        n["phase"] == "Error" && n["message"] == reason
    })
    .await;
    portico.wait_for_phase("good", "Running", WAIT).await;
    let events = sink.wait_for_events(3, WAIT).await;
    assert!(events.iter().all(|e| e["subject"] == "good"));
    // Rejected for good: it is not retried.
    let rejections = server_log(&log)
        .iter()
        .filter(|l| l.starts_with("invalid bad"))
        .count();
    assert_eq!(rejections, 1, "{:?}", server_log(&log));
    assert_eq!(portico.node("bad").await.unwrap()["phase"], "Error");
}

#[tokio::test]
async fn argo_generic_servers_run_unchanged_with_grpc_protocol_argo_generic() {
    let sink = Sink::start(Behaviour::Ok).await;
    let port = free_port();
    let (_dir, file) = GatewayFileBuilder::new("argo", "generic")
        .watchers(&[sink.url()])
        .spec_lines(&format!(
            "  rpcPort: \"{port}\"\n  grpcProtocol: argo-generic"
        ))
        .config("one", "interval: 0.1\nmessage: first")
        .config("two", "interval: 0.1\nmessage: second")
        .write();
    let py = python();
    let portico = Portico::start(
        &[
            "run",
            file.to_str().unwrap(),
            "--",
            py.to_str().unwrap(),
            &example("python-grpc/argo_generic_server.py"),
        ],
        &[],
    )
    .await;
    let events = eventually(WAIT, || {
        let e = sink.events();
        let s = sources(&e);
        (s.iter().any(|s| s == "argo/one") && s.iter().any(|s| s == "argo/two")).then_some(e)
    })
    .await
    .unwrap_or_else(|| panic!("events of both; got {:?}", sources(&sink.events())));
    for e in &events {
        let src = e["subject"].as_str().unwrap();
        // No content type is guessed: the payload travels as data_base64.
        assert!(e.get("datacontenttype").is_none(), "{e}");
        let data = base64_decode(e["data_base64"].as_str().expect("data_base64"));
        let payload: serde_json::Value = serde_json::from_slice(&data).unwrap();
        assert_eq!(
            payload["name"], src,
            "the server got the configuration key as name"
        );
        let expected = if src == "one" { "first" } else { "second" };
        assert_eq!(
            payload["message"], expected,
            "the server got the configuration"
        );
    }
    portico.wait_for_phase("one", "Running", WAIT).await;
    portico.wait_for_phase("two", "Running", WAIT).await;
    // Stopping portico stops the server it started.
    assert_eq!(portico.terminate().await, Some(0));
    let closed = eventually(WAIT, || {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .is_err()
            .then_some(())
    })
    .await;
    assert!(
        closed.is_some(),
        "the server still listens on {port} after portico exited"
    );
}

/// Waits until node `src` satisfies `check`.
async fn wait_for_node(portico: &Portico, src: &str, check: impl Fn(&serde_json::Value) -> bool) {
    let found = support::eventually_async(WAIT, || async {
        portico.node(src).await.filter(|n| check(n))
    })
    .await;
    if found.is_none() {
        panic!(
            "node `{src}` never got as expected; status: {}",
            portico.status().await
        );
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("base64")
}

#[tokio::test]
async fn the_rust_example_server_works_end_to_end() {
    let sink = Sink::start(Behaviour::Ok).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = tokio_util_stop();
    let server = tokio::spawn(portico::grpc_server::serve(
        grpc_calendar::GrpcCalendar,
        listener,
        stop.1,
    ));
    let builder = GatewayFileBuilder::new("rcal", "calendar")
        .watchers(&[sink.url()])
        .spec_lines(&format!("  rpcPort: \"{port}\""));
    let (_dir, file) = builder
        .clone_with(&[
            ("fast", "interval: 100ms\nuserPayload: {\"k\": \"fast\"}"),
            ("slow", "interval: 150ms\nuserPayload: {\"k\": \"slow\"}"),
            ("broken", "schedule: \"not cron\""),
        ])
        .write();
    let portico = Portico::run(&file).await;
    wait_for_node(&portico, "broken", |n| {
        n["phase"] == "Error" && n["message"].as_str().unwrap_or("").starts_with("schedule:")
    })
    .await;
    let events = eventually(WAIT, || {
        let e = sink.events();
        let s = sources(&e);
        (s.iter().any(|s| s == "rcal/fast") && s.iter().any(|s| s == "rcal/slow")).then_some(e)
    })
    .await
    .unwrap_or_else(|| panic!("events of both; got {:?}", sources(&sink.events())));
    for e in &events {
        assert_eq!(e["datacontenttype"], "application/json");
        assert_eq!(e["data"]["userPayload"]["k"], e["subject"]);
        assert!(e["data"]["eventTime"].is_string());
    }
    // Removing a configuration stops its stream; the other keeps delivering.
    replace_file(
        &file,
        &builder
            .clone_with(&[("fast", "interval: 100ms\nuserPayload: {\"k\": \"fast\"}")])
            .render(),
    );
    eventually(WAIT, || {
        (portico.stderr.containing("configuration removed").len() == 2).then_some(())
    })
    .await
    .expect("slow and broken removed");
    let before = sink.events().len();
    let all = sink.wait_for_events(before + 6, WAIT).await;
    assert!(all[all.len() - 3..].iter().all(|e| e["subject"] == "fast"));
    drop(portico);
    let _ = stop.0.send(());
    let _ = server.await;
}

/// A oneshot pair: send to stop the Rust server.
fn tokio_util_stop() -> (
    tokio::sync::oneshot::Sender<()>,
    impl std::future::Future<Output = ()> + Send,
) {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    (tx, async move {
        let _ = rx.await;
    })
}

trait CloneWith {
    fn clone_with(&self, configs: &[(&str, &str)]) -> GatewayFileBuilder;
}

impl CloneWith for GatewayFileBuilder {
    /// The same gateway with exactly these configurations.
    fn clone_with(&self, configs: &[(&str, &str)]) -> GatewayFileBuilder {
        let mut b = GatewayFileBuilder::new(&self.name, &self.gateway_type);
        b.spec_extra = self.spec_extra.clone();
        for (k, v) in configs {
            b = b.config(k, v);
        }
        b
    }
}

#[tokio::test]
async fn run_gives_the_command_the_contract_environment_and_logs_its_exit() {
    let port = free_port();
    let (_dir, file) = GatewayFileBuilder::new("envg", "python")
        .spec_lines(&format!("  rpcPort: \"{port}\""))
        .config("alpha", "interval: 1s")
        .write();
    let portico = Portico::start(
        &[
            "run",
            file.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            "echo \"contract $GATEWAY_NAME $GATEWAY_NAMESPACE $TRANSFORMER_PORT $GATEWAY_PROCESSOR_GRPC_SERVER_PORT $GATEWAY_PROCESSOR_CONFIG_MAP [${GATEWAY_CONTROLLER_INSTANCE_ID-unset}]\"; exit 3",
        ],
        &[],
    )
    .await;
    // Its output is forwarded (to portico's stderr), with the gateway environment (docs/contract.md).
    // All five variables of Argo's contract, the instance id empty (no controller).
    let expected = format!(
        "contract envg default {} {port} envg-cm []",
        portico.addr.port()
    );
    eventually(WAIT, || {
        (!portico.stderr.containing(&expected).is_empty()).then_some(())
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "`{expected}` in {:?}",
            portico.stderr.containing("contract")
        )
    });
    // Its exit is logged, and the gateway keeps running, waiting for a server.
    let exit = eventually(WAIT, || {
        portico
            .stderr
            .containing("the gateway's server process exited")
            .first()
            .cloned()
    })
    .await
    .expect("the exit is logged");
    assert!(exit.contains("ERROR") && exit.contains('3'), "{exit}");
    let health = portico
        .http
        .get(portico.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let node = portico.wait_for_phase("alpha", "Error", WAIT).await;
    assert!(
        node["message"].as_str().unwrap().contains("Unavailable"),
        "{node}"
    );
    assert_eq!(portico.terminate().await, Some(0));
}
