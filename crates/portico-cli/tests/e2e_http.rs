//! End to end with the real `portico` binary and the Python HTTP-style example
//! (`examples/http-calendar/server.py`): several configurations at once, events attributed to
//! their own configuration, `/stop` for exactly the removed one, `/activated` and `/error`
//! driving the nodes, a user server that comes up after portico, and 404 for events of
//! configurations that do not run.

mod support;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use support::{
    Behaviour, GatewayFileBuilder, Portico, Sink, eventually, eventually_async, replace_file,
};
use tokio::process::{Child, Command};

const WAIT: Duration = Duration::from_secs(20);

/// The Python interpreter: the venv's when `PORTICO_VENV` is set (scripts/test), else
/// `python3` (the example uses only the standard library).
fn python() -> PathBuf {
    match std::env::var_os("PORTICO_VENV") {
        Some(venv) if PathBuf::from(&venv).join("bin/python").exists() => {
            PathBuf::from(venv).join("bin/python")
        }
        _ => PathBuf::from("python3"),
    }
}

fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/http-calendar/server.py")
}

use support::free_port;

/// The Python example server, killed on drop.
struct UserServer {
    _child: Child,
    base: String,
}

/// The Rust example's binary: `PORTICO_HTTP_CALENDAR_BIN` (scripts/test builds it and sets
/// it), else beside the `portico` binary.
fn rust_example() -> PathBuf {
    if let Some(bin) = std::env::var_os("PORTICO_HTTP_CALENDAR_BIN") {
        return PathBuf::from(bin);
    }
    let beside = support::portico_bin().with_file_name("http-calendar");
    assert!(
        beside.exists(),
        "the Rust http-calendar example is not built: run `cargo build -p http-calendar` \
         (scripts/test does) or set PORTICO_HTTP_CALENDAR_BIN"
    );
    beside
}

impl UserServer {
    async fn start(server_port: u16, client_port: u16) -> UserServer {
        let mut cmd = Command::new(python());
        cmd.arg(example());
        Self::start_command(cmd, server_port, client_port).await
    }

    async fn start_command(mut cmd: Command, server_port: u16, client_port: u16) -> UserServer {
        let child = cmd
            .env(
                "GATEWAY_PROCESSOR_SERVER_HTTP_PORT",
                server_port.to_string(),
            )
            .env(
                "GATEWAY_PROCESSOR_CLIENT_HTTP_PORT",
                client_port.to_string(),
            )
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run the example server: {e}"));
        let base = format!("http://127.0.0.1:{server_port}");
        let http = reqwest::Client::new();
        // Up once it answers HTTP at all.
        let up = eventually_async(WAIT, || async {
            http.get(format!("{base}/configurations")).send().await.ok()
        })
        .await;
        assert!(up.is_some(), "the Python example server did not start");
        UserServer {
            _child: child,
            base,
        }
    }

    async fn state(&self) -> serde_json::Value {
        reqwest::get(format!("{}/configurations", self.base))
            .await
            .expect("GET /configurations")
            .json()
            .await
            .expect("JSON")
    }
}

/// The address of the framework's server, from portico's log.
async fn processor_addr(portico: &Portico) -> std::net::SocketAddr {
    eventually(WAIT, || {
        portico
            .stderr
            .containing("processor server listening")
            .first()
            .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .and_then(|v| v["addr"].as_str().and_then(|a| a.parse().ok()))
    })
    .await
    .expect("portico logs the address of the processor server")
}

/// Waits until node `src` is `Error` with a message containing `text` (the user's server's
/// error, not the framework's own "cannot start" while the server is not up yet).
async fn wait_for_error(portico: &Portico, src: &str, text: &str) -> serde_json::Value {
    match eventually_async(WAIT, || async {
        portico.node(src).await.filter(|n| {
            n["phase"] == "Error" && n["message"].as_str().is_some_and(|m| m.contains(text))
        })
    })
    .await
    {
        Some(n) => n,
        None => panic!(
            "node `{src}` did not show Error `{text}`; status: {}",
            portico.status().await
        ),
    }
}

fn gateway(sink: &Sink, server_port: u16, configs: &[(&str, &str)]) -> GatewayFileBuilder {
    let mut b = GatewayFileBuilder::new("hcal", "http-calendar")
        .watchers(&[sink.url()])
        .spec_lines(&format!("  httpServerPort: \"{server_port}\""));
    for (k, v) in configs {
        b = b.config(k, v);
    }
    b
}

#[tokio::test]
async fn http_style_runs_many_configurations_and_stops_exactly_the_removed_one() {
    let sink = Sink::start(Behaviour::Ok).await;
    let server_port = free_port();
    let configs = [
        (
            "alpha",
            "interval: 100ms\nuserPayload: '{\"who\": \"alpha\"}'",
        ),
        (
            "beta",
            "interval: 100ms\nuserPayload: '{\"who\": \"beta\"}'",
        ),
        ("broken", "interval: never"),
    ];
    let builder = gateway(&sink, server_port, &configs);
    let (_dir, file) = builder.write();
    let portico = Portico::start(
        &["run", file.to_str().unwrap()],
        &[("GATEWAY_PROCESSOR_CLIENT_HTTP_PORT", "0")],
    )
    .await;
    let client_addr = processor_addr(&portico).await;
    let server = UserServer::start(server_port, client_addr.port()).await;

    // /activated marks the nodes Running; /error marks one Error with the server's text.
    let alpha = portico.wait_for_phase("alpha", "Running", WAIT).await;
    portico.wait_for_phase("beta", "Running", WAIT).await;
    let broken = wait_for_error(&portico, "broken", "'never' is not a duration").await;
    assert!(
        broken["message"]
            .as_str()
            .unwrap()
            .contains("'never' is not a duration"),
        "the node shows the user's error text: {broken}"
    );

    // Events from each configuration arrive with their own source.
    let events = eventually(WAIT, || {
        let e = sink.events();
        let count = |s: &str| e.iter().filter(|v| v["subject"] == s).count();
        (count("alpha") >= 2 && count("beta") >= 2).then_some(e)
    })
    .await
    .expect("events of alpha and beta at the watcher");
    for e in &events {
        let src = e["subject"].as_str().unwrap();
        assert_eq!(e["source"], format!("hcal/{src}"));
        assert_eq!(e["type"], "http-calendar");
        assert_eq!(e["datacontenttype"], "application/json");
        assert_eq!(
            e["data"]["userPayload"]["who"], src,
            "attributed to its own configuration: {e}"
        );
    }

    // Removing alpha calls /stop for exactly alpha.
    let keep = [configs[1], configs[2]];
    replace_file(&file, &gateway(&sink, server_port, &keep).render());
    let state = eventually_async(WAIT, || async {
        let s = server.state().await;
        (s["stops"].as_array().is_some_and(|a| !a.is_empty())).then_some(s)
    })
    .await
    .expect("the user's server got a /stop");
    assert_eq!(
        state["stops"],
        serde_json::json!([{"src": "alpha", "id": alpha["id"]}]),
        "exactly alpha was stopped"
    );
    assert!(state["running"].get("alpha").is_none());
    assert!(state["running"].get("beta").is_some());
    eventually_async(WAIT, || async {
        portico.node("alpha").await.is_none().then_some(())
    })
    .await
    .expect("alpha's node is removed");
    assert_eq!(portico.node("beta").await.unwrap()["phase"], "Running");

    // An event for a configuration that does not run gets 404 with a reason.
    let http = reqwest::Client::new();
    let r = http
        .post(format!("http://{client_addr}/event"))
        .body(r#"{"src": "alpha", "payload": "e30="}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().contains("no configuration `alpha`"));
    let r = http
        .post(format!("http://{client_addr}/event"))
        .body(r#"{"src": "beta", "payload": "e30=", "id": "0000000000000000"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        404,
        "a stale id is not the running configuration"
    );
    // A running one takes events (and a bad body gets 400 with the reason).
    let r = http
        .post(format!("http://{client_addr}/event"))
        .body(r#"{"src": "beta", "payload": "e30="}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .post(format!("http://{client_addr}/event"))
        .body(r#"{"src": "beta", "payload": "%%%"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("base64"));

    // Shutting down stops the rest on the user's server.
    assert_eq!(portico.terminate().await, Some(0));
    let s = server.state().await;
    assert!(
        s["running"].get("beta").is_none(),
        "beta stopped at shutdown: {s}"
    );
}

#[tokio::test]
async fn http_style_configurations_start_once_the_user_server_comes_up() {
    let sink = Sink::start(Behaviour::Ok).await;
    let server_port = free_port();
    let (_dir, file) = gateway(&sink, server_port, &[("late", "interval: 100ms")]).write();
    let portico = Portico::start(
        &["run", file.to_str().unwrap()],
        &[("GATEWAY_PROCESSOR_CLIENT_HTTP_PORT", "0")],
    )
    .await;
    let client_addr = processor_addr(&portico).await;

    // The server is down: the node says why, and the start is retried.
    let node = portico.wait_for_phase("late", "Error", WAIT).await;
    let message = node["message"].as_str().unwrap();
    assert!(
        message.contains("cannot start the configuration") && message.contains("retrying"),
        "{message}"
    );

    let _server = UserServer::start(server_port, client_addr.port()).await;
    portico.wait_for_phase("late", "Running", WAIT).await;
    let events = sink.wait_for_events(2, WAIT).await;
    assert!(events.iter().all(|e| e["source"] == "hcal/late"));
}

/// Custom endpoint paths of the HTTP style, set alike on portico and on the user's server.
const CUSTOM_PATHS: [(&str, &str); 5] = [
    ("GATEWAY_HTTP_CONFIG_START", "/v2/begin"),
    ("GATEWAY_HTTP_CONFIG_STOP", "/v2/end"),
    ("GATEWAY_HTTP_CONFIG_EVENT", "/cb/ev"),
    ("GATEWAY_HTTP_CONFIG_RUNNING", "/cb/up"),
    ("GATEWAY_HTTP_CONFIG_ERROR", "/cb/err"),
];

#[tokio::test]
async fn every_endpoint_path_and_port_comes_from_the_environment() {
    let sink = Sink::start(Behaviour::Ok).await;
    let server_port = free_port();
    // The port of the user's server comes from the environment only (no httpServerPort).
    let (_dir, file) = GatewayFileBuilder::new("hcal", "http-calendar")
        .watchers(&[sink.url()])
        .config("custom", "interval: 100ms")
        .config("wrong", "interval: 0ms")
        .write();
    let port = server_port.to_string();
    let mut envs = vec![
        ("GATEWAY_PROCESSOR_CLIENT_HTTP_PORT", "0"),
        ("GATEWAY_PROCESSOR_SERVER_HTTP_PORT", port.as_str()),
    ];
    envs.extend(CUSTOM_PATHS);
    let portico = Portico::start(&["run", file.to_str().unwrap()], &envs).await;
    let client_addr = processor_addr(&portico).await;
    let mut cmd = Command::new(python());
    cmd.arg(example()).envs(CUSTOM_PATHS);
    let server = UserServer::start_command(cmd, server_port, client_addr.port()).await;
    portico.wait_for_phase("custom", "Running", WAIT).await;
    let wrong = wait_for_error(&portico, "wrong", "more than zero").await;
    assert!(
        wrong["message"]
            .as_str()
            .unwrap()
            .contains("more than zero"),
        "{wrong}"
    );
    sink.wait_for_events(1, WAIT).await;
    // The default paths are not served.
    let r = reqwest::Client::new()
        .post(format!("http://{client_addr}/event"))
        .body(r#"{"src": "custom", "payload": "e30="}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(portico.terminate().await, Some(0));
    let stops = server.state().await["stops"].clone();
    assert_eq!(
        stops.as_array().map(Vec::len),
        Some(2),
        "both stopped at /v2/end: {stops}"
    );
}

#[tokio::test]
async fn the_rust_http_calendar_example_runs_under_portico() {
    let sink = Sink::start(Behaviour::Ok).await;
    let server_port = free_port();
    let configs = [
        ("tick", "interval: 100ms\nuserPayload: {\"who\": \"tick\"}"),
        ("bad", "interval: soon"),
    ];
    let (_dir, file) = gateway(&sink, server_port, &configs).write();
    let portico = Portico::start(
        &["run", file.to_str().unwrap()],
        &[("GATEWAY_PROCESSOR_CLIENT_HTTP_PORT", "0")],
    )
    .await;
    let client_addr = processor_addr(&portico).await;
    let _server = UserServer::start_command(
        Command::new(rust_example()),
        server_port,
        client_addr.port(),
    )
    .await;
    portico.wait_for_phase("tick", "Running", WAIT).await;
    let bad = wait_for_error(&portico, "bad", "\"soon\" is not a duration").await;
    assert!(
        bad["message"]
            .as_str()
            .unwrap()
            .contains("\"soon\" is not a duration"),
        "{bad}"
    );
    let events = sink.wait_for_events(2, WAIT).await;
    for e in events {
        assert_eq!(e["source"], "hcal/tick");
        assert_eq!(e["data"]["userPayload"]["who"], "tick");
    }
    assert_eq!(portico.terminate().await, Some(0));
}

/// A user server that takes every `/start` and `/stop` and does nothing else.
async fn silent_user_server() -> u16 {
    let app = axum::Router::new()
        .route("/start", axum::routing::post(|| async { "Success" }))
        .route("/stop", axum::routing::post(|| async { "Success" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    port
}

#[tokio::test]
async fn a_plain_text_error_as_argo_servers_post_it_marks_the_only_configuration() {
    let sink = Sink::start(Behaviour::Ok).await;
    let server_port = silent_user_server().await;
    let (_dir, file) = gateway(&sink, server_port, &[("only", "interval: 1s")]).write();
    let portico = Portico::start(
        &["run", file.to_str().unwrap()],
        &[("GATEWAY_PROCESSOR_CLIENT_HTTP_PORT", "0")],
    )
    .await;
    let client = processor_addr(&portico).await;
    let http = reqwest::Client::new();
    // Taken once the configuration is started on the user's server.
    let taken = eventually_async(WAIT, || async {
        let r = http
            .post(format!("http://{client}/error"))
            .header("content-type", "text/plain")
            .body("the calendar broke: no schedule")
            .send()
            .await
            .ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    assert!(taken.is_some(), "the plain-text error was not taken");
    let node = wait_for_error(&portico, "only", "the calendar broke").await;
    assert_eq!(node["message"], "the calendar broke: no schedule");

    // With two configurations running, a text that names none is refused with the reason.
    let (_dir2, file2) = gateway(
        &sink,
        server_port,
        &[("one", "interval: 1s"), ("two", "interval: 1s")],
    )
    .write();
    replace_file(&file, &std::fs::read_to_string(&file2).unwrap());
    portico.wait_for_phase("two", "Initialized", WAIT).await;
    let r = http
        .post(format!("http://{client}/error"))
        .body("which one?")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("names no configuration"));
}
