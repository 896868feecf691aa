//! Argo Events v0.6's example gateways, run unchanged by the real `portico` binary: the
//! manifests of `tests/argo_v06/` (one Gateway file and one ConfigMap file per example, as
//! v0.6 kept them), validated, then run against the machine's brokers and servers with the
//! named sensor watchers resolved to a local watcher through `--sensor-url` (and
//! `--gateway-url`). Each example's source is triggered and its event must arrive with
//! `<gateway>/<configuration key>` as its source.
//!
//! The manifests are v0.6's but for what must point at this machine (broker URLs, ports,
//! directories, secrets): where a test needs a free port, a temporary directory or a local
//! server, the manifest holds a `${NAME}` placeholder that the test fills in. Two more values
//! are changed in the test's copy only, and say so where they are: the calendar's `interval:
//! 55s` (1s, to keep the test short) and the resource example's `Workflow` kind (a kind the
//! fake API server serves).
//!
//! The watcher reads both encodings a v0.6 Gateway may be delivered in: CloudEvents 1.0
//! (structured JSON or binary, what a watcher gets when it asks for it) and CloudEvents 0.1
//! JSON as v0.6's transformer sent it (`{"eventType", "source": {"host"}, "payload":
//! <base64>, …}`). An `argoproj.io` Gateway's watchers get the second by default, so every
//! event here must arrive in it, with the payload bytes v0.6's gateway of that type sent.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::get;
use base64::Engine;
use serde_json::{Value, json};
use support::{Portico, eventually, eventually_async, run_to_end};

/// How long anything may take.
const WAIT: Duration = Duration::from_secs(30);

/// The directory of the v0.6 manifests.
fn manifests() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/argo_v06")
}

use support::free_port;

fn nonce(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// An example's Gateway and ConfigMap files, copied with their placeholders filled in.
struct Example {
    gateway: PathBuf,
    configmap: PathBuf,
    _dir: tempfile::TempDir,
}

impl Example {
    /// `tests/argo_v06/<name>.yaml` and `<name>-gateway-configmap.yaml` with `subs` (text →
    /// replacement) applied; every `${…}` placeholder must be filled.
    fn new(name: &str, subs: &[(&str, &str)]) -> Example {
        Self::pair(
            &format!("{name}.yaml"),
            &format!("{name}-gateway-configmap.yaml"),
            subs,
        )
    }

    fn pair(gateway: &str, configmap: &str, subs: &[(&str, &str)]) -> Example {
        let dir = tempfile::tempdir().expect("a temp dir");
        let read = |file: &str| {
            std::fs::read_to_string(manifests().join(file))
                .unwrap_or_else(|e| panic!("read tests/argo_v06/{file}: {e}"))
        };
        let mut texts = [(gateway, read(gateway)), (configmap, read(configmap))];
        for (from, to) in subs {
            assert!(
                texts.iter().any(|(_, t)| t.contains(from)),
                "neither {gateway} nor {configmap} has `{from}` to replace"
            );
            for (_, t) in texts.iter_mut() {
                *t = t.replace(from, to);
            }
        }
        let [gateway, configmap] = texts.map(|(file, text)| {
            assert!(
                !text.contains("${"),
                "{file}: a placeholder is left:\n{text}"
            );
            let path = dir.path().join(Path::new(file).file_name().unwrap());
            std::fs::write(&path, text).expect("write the example's copy");
            path
        });
        Example {
            gateway,
            configmap,
            _dir: dir,
        }
    }

    fn gateway(&self) -> &str {
        self.gateway.to_str().unwrap()
    }

    fn configmap(&self) -> &str {
        self.configmap.to_str().unwrap()
    }

    /// `portico validate GATEWAY CONFIGMAP`, which must succeed: what it printed.
    fn validate(&self) -> String {
        let (code, out, err) = run_to_end(&["validate", self.gateway(), self.configmap()]);
        let text = format!("{out}{err}");
        assert_eq!(code, Some(0), "portico validate failed:\n{text}");
        // v0.6's fields are taken, with a word for those that do nothing here.
        assert!(
            text.contains("warning: spec.imageVersion"),
            "imageVersion is accepted with a warning:\n{text}"
        );
        assert!(
            text.contains("is named only: it resolves in a cluster"),
            "named watchers resolve in a cluster:\n{text}"
        );
        assert!(
            text.contains("note: spec.deploySpec is for the controller"),
            "deploySpec is said to be the controller's:\n{text}"
        );
        text
    }

    /// `portico run GATEWAY CONFIGMAP` with named watchers resolved to `watcher`, more
    /// arguments (`-- COMMAND…`) and environment.
    async fn run(&self, watcher: &Watcher, more: &[&str], envs: &[(&str, &str)]) -> Portico {
        let sensors = watcher.sensor_url();
        let gateways = watcher.gateway_url();
        let mut args = vec![
            "run",
            self.gateway(),
            self.configmap(),
            "--sensor-url",
            &sensors,
            "--gateway-url",
            &gateways,
        ];
        args.extend_from_slice(more);
        Portico::start(&args, envs).await
    }
}

/// One event a watcher received, in either encoding.
#[derive(Debug, Clone)]
struct Delivery {
    /// The request's path (which watcher it was sent as).
    path: String,
    /// `source` of CloudEvents 1.0, `source.host` of v0.6's CloudEvents 0.1.
    host: String,
    /// `type`, or `eventType`.
    event_type: String,
    /// The payload's bytes: `data_base64` decoded, `data` as text or JSON, the binary mode's
    /// body; or v0.6's `payload` decoded.
    payload: Vec<u8>,
    /// Whether it came as v0.6's CloudEvents 0.1 JSON.
    legacy: bool,
}

impl Delivery {
    fn payload_text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
}

/// Reads a delivery in CloudEvents 1.0 (structured or binary) or v0.6's CloudEvents 0.1 JSON.
fn parse(path: &str, headers: &HeaderMap, body: &[u8]) -> Result<Delivery, String> {
    let b64 = |v: &Value| {
        v.as_str()
            .map(|s| base64::engine::general_purpose::STANDARD.decode(s))
            .transpose()
            .map_err(|e| format!("payload is not base64: {e}"))
            .map(Option::unwrap_or_default)
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(source) = header("ce-source") {
        return Ok(Delivery {
            path: path.to_string(),
            host: source.to_string(),
            event_type: header("ce-type").unwrap_or_default().to_string(),
            payload: body.to_vec(),
            legacy: false,
        });
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    if v.get("specversion").is_some() {
        let payload = if let Some(d) = v.get("data_base64") {
            b64(d)?
        } else {
            match v.get("data") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::String(s)) => s.clone().into_bytes(),
                Some(other) => serde_json::to_vec(other).unwrap(),
            }
        };
        return Ok(Delivery {
            path: path.to_string(),
            host: v["source"].as_str().unwrap_or_default().to_string(),
            event_type: v["type"].as_str().unwrap_or_default().to_string(),
            payload,
            legacy: false,
        });
    }
    if v["cloudEventsVersion"] == "0.1" {
        return Ok(Delivery {
            path: path.to_string(),
            host: v["source"]["host"].as_str().unwrap_or_default().to_string(),
            event_type: v["eventType"].as_str().unwrap_or_default().to_string(),
            payload: b64(&v["payload"])?,
            legacy: true,
        });
    }
    Err(format!("neither CloudEvents 1.0 nor 0.1: {v}"))
}

#[derive(Default)]
struct WatcherState {
    got: Mutex<Vec<Delivery>>,
    refused: Mutex<Vec<String>>,
}

/// The sensors' and gateways' side: an HTTP server on a free port that records every
/// event, by path (`/sensors/<name>`, `/gateways/<name><endpoint>`).
struct Watcher {
    addr: SocketAddr,
    state: Arc<WatcherState>,
    task: tokio::task::JoinHandle<()>,
}

async fn take(
    State(state): State<Arc<WatcherState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    match parse(uri.path(), &headers, &body) {
        Ok(d) => {
            state.got.lock().unwrap().push(d);
            StatusCode::OK
        }
        Err(e) => {
            state.refused.lock().unwrap().push(e);
            StatusCode::BAD_REQUEST
        }
    }
}

impl Watcher {
    async fn start() -> Watcher {
        let state = Arc::new(WatcherState::default());
        let app = axum::Router::new().fallback(take).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Watcher { addr, state, task }
    }

    fn sensor_url(&self) -> String {
        format!("http://{}/sensors/{{name}}", self.addr)
    }

    fn gateway_url(&self) -> String {
        format!("http://{}/gateways/{{name}}{{endpoint}}", self.addr)
    }

    fn deliveries(&self) -> Vec<Delivery> {
        self.state.got.lock().unwrap().clone()
    }

    /// The first delivery `want` accepts, waiting up to [`WAIT`].
    async fn wait_for(&self, what: &str, want: impl Fn(&Delivery) -> bool) -> Delivery {
        match eventually(WAIT, || self.deliveries().into_iter().find(|d| want(d))).await {
            Some(d) => d,
            None => panic!(
                "no delivery {what}; got {:?}; refused {:?}",
                self.deliveries(),
                self.state.refused.lock().unwrap()
            ),
        }
    }

    /// Waits for an event of configuration `host` whose payload contains `text`, doing
    /// `trigger` again every `every` until it arrives (for sources that keep nothing for a
    /// subscriber that is not there yet: NATS, MQTT QoS 0, AMQP, Kafka from the newest).
    async fn trigger_until<F, Fut>(
        &self,
        host: &str,
        text: &str,
        every: Duration,
        mut trigger: F,
    ) -> Delivery
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let found = || {
            self.deliveries()
                .into_iter()
                .find(|d| d.host == host && d.payload_text().contains(text))
        };
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            trigger().await;
            let next = tokio::time::Instant::now() + every;
            while tokio::time::Instant::now() < next {
                if let Some(d) = found() {
                    return d;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "no event of {host} carrying `{text}`; got {:?}",
                    self.deliveries()
                );
            }
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Asserts the delivery is of `host` and `event_type`, in v0.6's CloudEvents 0.1 JSON (what
/// an `argoproj.io` Gateway's watchers get unless they ask for another encoding).
fn assert_event(d: &Delivery, host: &str, event_type: &str) {
    assert_eq!(d.host, host, "{d:?}");
    assert_eq!(d.event_type, event_type, "{d:?}");
    assert!(d.legacy, "not in v0.6's CloudEvents 0.1 JSON: {d:?}");
}

/// Asserts v0.6's calendar payload: the scheduled time as a protobuf-encoded Kubernetes
/// `Timestamp` (seconds = field 1, nanos = field 2), within the last minute.
fn assert_scheduled_time(d: &Delivery) {
    let (tag, rest) = varint(&d.payload).expect("a protobuf message");
    assert_eq!(tag, 0x08, "field 1, varint: {d:?}");
    let (seconds, rest) = varint(rest).expect("the seconds");
    assert_eq!(rest.first(), Some(&0x10), "field 2, varint: {d:?}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        seconds <= now && now - seconds < 60,
        "{seconds} vs now {now}"
    );
}

/// Reads a protobuf varint at the start of `bytes`: the value and the rest.
fn varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    for (i, b) in bytes.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, &bytes[i + 1..]));
        }
    }
    None
}

/// The calendar's `interval: 55s`, as v0.6 wrote it, made short enough for a test.
const CALENDAR_INTERVAL: (&str, &str) = ("interval: 55s", "interval: 1s");

// ---------------------------------------------------------------------------------------
// validate

#[test]
fn every_example_validates_with_v06_fields_taken_and_named_watchers_noted() {
    /// An example, its substitutions, and what `validate` must say of it besides.
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: &[Case] = &[
        ("calendar", &[], &[]),
        ("calendar-grpc", &[("${RPC_PORT}", "9898")], &[]),
        ("calendar-http", &[("${HTTP_SERVER_PORT}", "9696")], &[]),
        (
            "webhook",
            &[("${WEBHOOK_PORT}", "12000")],
            // The portless configuration shares the server of the one with a port.
            &["port shared takes events on /foo"],
        ),
        (
            "multi-watchers",
            &[("${WEBHOOK_PORT}", "12000")],
            &["watchers.gateways[0] `webhook-gateway` is named only"],
        ),
        ("file", &[("${DIRECTORY}", "/tmp/")], &[]),
        ("resource", &[], &[]),
        (
            "gitlab",
            &[("${GITLAB_URL}", "https://gitlab.example")],
            &["Argo Events v0.6's gitlab shape", "runs no server"],
        ),
        ("nats", &[], &[]),
        ("mqtt", &[], &[]),
        ("amqp", &[], &[]),
        (
            "kafka",
            &[("${KAFKA_URL}", "127.0.0.1:9092")],
            &["partition without consumerGroup"],
        ),
    ];
    for (name, subs, notes) in cases {
        let text = Example::new(name, subs).validate();
        for note in *notes {
            assert!(text.contains(note), "{name}: `{note}` in:\n{text}");
        }
        assert!(text.contains("is valid"), "{name}:\n{text}");
    }
}

#[test]
fn v06_example_defects_are_reported_with_field_and_line() {
    let defect = |gateway: &str, configmap: &str| {
        let (code, out, err) = run_to_end(&[
            "validate",
            manifests().join(gateway).to_str().unwrap(),
            manifests().join(configmap).to_str().unwrap(),
        ]);
        assert_eq!(code, Some(1), "{out}{err}");
        format!("{out}{err}")
    };
    // nats: the value's block is mis-indented, so it is empty and `url` and `subject` became
    // keys of their own.
    let text = defect("nats.yaml", "defects/nats-gateway-configmap.yaml");
    for want in [
        "configuration `nats.fooConfig`: unexpected end of input at line 1, column 1",
        "configuration `url`: line 1 column 1",
        "configuration `subject`: line 1 column 1",
        "3 problem(s)",
    ] {
        assert!(text.contains(want), "`{want}` in:\n{text}");
    }
    // mqtt: no clientId.
    let text = defect("mqtt.yaml", "defects/mqtt-gateway-configmap.yaml");
    assert!(
        text.contains("configuration `mqtt.fooConfig`: line 2 column 1: missing field `clientId`"),
        "{text}"
    );
}

#[test]
fn the_storage_grid_example_s_invalid_name_is_reported() {
    let (code, out, err) = run_to_end(&[
        "validate",
        manifests()
            .join("defects/storage-grid.yaml")
            .to_str()
            .unwrap(),
        manifests()
            .join("defects/storage-grid-configmap.yaml")
            .to_str()
            .unwrap(),
    ]);
    let text = format!("{out}{err}");
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("metadata.name") && text.contains("storage_grid-gateway"),
        "{text}"
    );
}

// ---------------------------------------------------------------------------------------
// run: calendar, in the three styles

#[tokio::test]
async fn calendar_fires_to_the_sensor() {
    let example = Example::new("calendar", &[CALENDAR_INTERVAL]);
    let watcher = Watcher::start().await;
    let portico = example.run(&watcher, &[], &[]).await;
    let d = watcher
        .wait_for("from calendar.fooConfig", |d| {
            d.host == "calendar-gateway/calendar.fooConfig"
        })
        .await;
    assert_event(&d, "calendar-gateway/calendar.fooConfig", "calendar");
    assert_scheduled_time(&d);
    assert_eq!(d.path, "/sensors/calendar-sensor");
    // The cron schedule runs too (it fires at minute 30).
    portico
        .wait_for_phase("calendar.barConfig", "Running", WAIT)
        .await;
    assert_eq!(portico.terminate().await, Some(0));
}

/// The venv's Python (grpcio), as the gRPC end-to-end tests use it.
fn venv_python() -> PathBuf {
    let venv = std::env::var("PORTICO_VENV").unwrap_or_else(|_| {
        format!(
            "{}/.cache/portico/venv",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    let python = Path::new(&venv).join("bin/python");
    assert!(
        python.exists(),
        "no Python venv at {venv}: run scripts/test (it makes it), or set PORTICO_VENV"
    );
    python
}

fn example_program(path: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(path)
        .to_string_lossy()
        .into_owned()
}

#[tokio::test]
async fn calendar_grpc_runs_the_python_grpc_example_server() {
    let port = free_port().to_string();
    let example = Example::new(
        "calendar-grpc",
        &[("${RPC_PORT}", &port), CALENDAR_INTERVAL],
    );
    let watcher = Watcher::start().await;
    let python = venv_python();
    let server = example_program("python-grpc/server.py");
    let portico = example
        .run(&watcher, &["--", python.to_str().unwrap(), &server], &[])
        .await;
    let d = watcher
        .wait_for("from calendar.fooConfig", |d| {
            d.host == "calendar-grpc-gateway/calendar.fooConfig"
        })
        .await;
    assert_event(&d, "calendar-grpc-gateway/calendar.fooConfig", "calendar");
    assert!(!d.payload.is_empty(), "{d:?}");
    // The example server takes intervals only: it refuses the cron schedule, and the node
    // says why.
    let node = eventually_async(WAIT, || async {
        portico.node("calendar.barConfig").await.filter(|n| {
            n["phase"] == "Error" && n["message"].as_str().unwrap_or("").contains("interval")
        })
    })
    .await;
    assert!(node.is_some(), "{}", portico.status().await);
    assert_eq!(portico.terminate().await, Some(0));
}

/// The address of portico's HTTP-style server (`/event`, `/activated`, `/error`).
async fn processor_addr(portico: &Portico) -> SocketAddr {
    eventually(WAIT, || {
        portico
            .stderr
            .containing("processor server listening")
            .first()
            .and_then(|l| serde_json::from_str::<Value>(l).ok())
            .and_then(|v| v["addr"].as_str().and_then(|a| a.parse().ok()))
    })
    .await
    .expect("portico logs the address of the processor server")
}

#[tokio::test]
async fn calendar_http_runs_the_http_example_server_and_shows_its_errors() {
    let port = free_port();
    let example = Example::new(
        "calendar-http",
        &[
            ("${HTTP_SERVER_PORT}", &port.to_string()),
            CALENDAR_INTERVAL,
        ],
    );
    let watcher = Watcher::start().await;
    let portico = example
        .run(
            &watcher,
            &[],
            &[("GATEWAY_PROCESSOR_CLIENT_HTTP_PORT", "0")],
        )
        .await;
    let client = processor_addr(&portico).await;
    // The example server uses the standard library only; v0.6's HTTP flavour gave it these
    // two ports.
    let _server = tokio::process::Command::new("python3")
        .arg(example_program("http-calendar/server.py"))
        .env("GATEWAY_PROCESSOR_SERVER_HTTP_PORT", port.to_string())
        .env(
            "GATEWAY_PROCESSOR_CLIENT_HTTP_PORT",
            client.port().to_string(),
        )
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the HTTP example server");
    let d = watcher
        .wait_for("from calendar.fooConfig", |d| {
            d.host == "calendar-http-gateway/calendar.fooConfig"
        })
        .await;
    assert_event(&d, "calendar-http-gateway/calendar.fooConfig", "calendar");
    // The example server sends the built-in calendar's data, so v0.6's payload is made of it
    // as of the built-in one's.
    assert_scheduled_time(&d);
    // It takes intervals only: it posts its error to /error and the node shows the text.
    let node = eventually_async(WAIT, || async {
        portico.node("calendar.barConfig").await.filter(|n| {
            n["phase"] == "Error"
                && n["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains("interval is missing")
        })
    })
    .await;
    assert!(node.is_some(), "{}", portico.status().await);
    assert_eq!(portico.terminate().await, Some(0));
}

// ---------------------------------------------------------------------------------------
// run: webhook, file, resource, gitlab

#[tokio::test]
async fn webhook_configurations_share_the_port_of_the_one_that_names_it() {
    let port = free_port();
    let example = Example::new("webhook", &[("${WEBHOOK_PORT}", &port.to_string())]);
    let watcher = Watcher::start().await;
    let portico = example.run(&watcher, &[], &[]).await;
    portico
        .wait_for_phase("webhook.portConfig", "Running", WAIT)
        .await;
    portico
        .wait_for_phase("webhook.fooConfig", "Running", WAIT)
        .await;
    let http = reqwest::Client::new();
    // webhook.fooConfig names no port: its endpoint is on webhook.portConfig's server.
    for (path, key) in [("/foo", "webhook.fooConfig"), ("/", "webhook.portConfig")] {
        let text = nonce(key);
        let body = format!("{{\"message\":\"{text}\"}}");
        let r = http
            .post(format!("http://127.0.0.1:{port}{path}"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .expect("POST to the webhook");
        assert_eq!(r.status(), 200, "{path}");
        let host = format!("webhook-gateway/{key}");
        let d = watcher
            .wait_for(&format!("from {key}"), |d| {
                d.host == host && d.payload_text().contains(&text)
            })
            .await;
        assert_event(&d, &host, "webhook");
        assert_eq!(
            d.payload,
            body.as_bytes(),
            "v0.6's payload: the request body"
        );
        assert_eq!(d.path, "/sensors/webhook-sensor");
    }
    assert_eq!(portico.terminate().await, Some(0));
}

#[tokio::test]
async fn multi_watchers_deliver_to_every_sensor_and_the_gateway_watcher() {
    let port = free_port();
    let example = Example::new("multi-watchers", &[("${WEBHOOK_PORT}", &port.to_string())]);
    let watcher = Watcher::start().await;
    let portico = example.run(&watcher, &[], &[]).await;
    portico
        .wait_for_phase("webhook.fooConfig", "Running", WAIT)
        .await;
    let text = nonce("multi");
    let r = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/foo"))
        .body(text.clone())
        .send()
        .await
        .expect("POST to the webhook");
    assert_eq!(r.status(), 200);
    let host = "webhook-gateway-multi-watchers/webhook.fooConfig";
    for path in [
        "/sensors/webhook-sensor",
        "/sensors/multi-signal-sensor",
        "/gateways/webhook-gateway/notifications",
    ] {
        let d = watcher
            .wait_for(&format!("at {path}"), |d| {
                d.path == path && d.payload_text().contains(&text)
            })
            .await;
        assert_event(&d, host, "webhook");
        assert_eq!(
            d.payload,
            text.as_bytes(),
            "v0.6's payload: the request body"
        );
    }
    assert_eq!(portico.terminate().await, Some(0));
}

#[tokio::test]
async fn file_reports_the_created_file() {
    let dir = tempfile::tempdir().unwrap();
    // v0.6 matched paths only when the directory ends with `/`.
    let directory = format!("{}/", dir.path().display());
    let example = Example::new("file", &[("${DIRECTORY}", &directory)]);
    let watcher = Watcher::start().await;
    let portico = example.run(&watcher, &[], &[]).await;
    portico
        .wait_for_phase("file.fooConfig", "Running", WAIT)
        .await;
    std::fs::write(dir.path().join("x.txt"), b"hello").unwrap();
    let d = watcher
        .wait_for("from file.fooConfig", |d| {
            d.host == "file-gateway/file.fooConfig"
        })
        .await;
    assert_event(&d, "file-gateway/file.fooConfig", "file");
    // `"<path>": OP`, the text form of the file system event.
    assert_eq!(
        d.payload_text(),
        format!(
            "{:?}: CREATE",
            dir.path().join("x.txt").display().to_string()
        ),
        "{d:?}"
    );
    assert_eq!(portico.terminate().await, Some(0));
}

#[tokio::test]
async fn resource_reports_the_object_its_filter_keeps() {
    let fake = fake_kube::FakeKube::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, fake.kubeconfig()).unwrap();
    // v0.6's example watches Argo Workflows; the fake API server serves `Widget`s instead.
    let example = Example::new(
        "resource",
        &[(
            "group: \"argoproj.io\"\n    version: \"v1alpha1\"\n    kind: \"Workflow\"",
            "group: \"example.com\"\n    version: \"v1\"\n    kind: \"Widget\"",
        )],
    );
    let watcher = Watcher::start().await;
    let portico = example
        .run(
            &watcher,
            &[],
            &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
        )
        .await;
    portico
        .wait_for_phase("resource.fooConfig", "Running", WAIT)
        .await;
    let widget = |name: &str, phase: &str| {
        json!({"apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {"name": name, "namespace": "argo-events",
                "labels": {"workflows.argoproj.io/phase": phase}}})
    };
    let skipped = nonce("scripts-bash-running");
    let kept = nonce("scripts-bash-done");
    fake.create(widget(&skipped, "Running"));
    fake.create(widget(&nonce("other"), "Succeeded"));
    fake.create(widget(&kept, "Succeeded"));
    let d = watcher
        .wait_for("of the kept object", |d| d.payload_text().contains(&kept))
        .await;
    assert_event(&d, "resource-gateway/resource.fooConfig", "resource");
    // v0.6's payload: the object's JSON (not Portico's `{"type", "object"}`).
    let object: Value = serde_json::from_slice(&d.payload).expect("the object's JSON");
    assert_eq!(object["kind"], "Widget", "{object}");
    assert_eq!(object["metadata"]["name"], kept.as_str(), "{object}");
    // The others did not pass the filter (prefix, labels).
    assert_eq!(watcher.deliveries().len(), 1, "{:?}", watcher.deliveries());
    assert_eq!(portico.terminate().await, Some(0));
}

/// What the fake GitLab API and Kubernetes API saw.
#[derive(Default)]
struct Forge {
    /// (method, path, body) of each hooks call.
    calls: Mutex<Vec<(String, String, Value)>>,
}

async fn gitlab_hooks(
    State(forge): State<Arc<Forge>>,
    UrlPath(project): UrlPath<String>,
    method: axum::http::Method,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, Json<Value>) {
    if headers.get("private-token").is_none_or(|t| t != "gl-token") {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"message": "401 Unauthorized"})),
        );
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    forge.calls.lock().unwrap().push((
        method.to_string(),
        format!("/projects/{project}/hooks"),
        body.clone(),
    ));
    if method == axum::http::Method::GET {
        return (StatusCode::OK, Json(json!([])));
    }
    let mut hook = body;
    hook["id"] = json!(1);
    (StatusCode::CREATED, Json(hook))
}

async fn kube_secret(
    UrlPath((namespace, name)): UrlPath<(String, String)>,
) -> (StatusCode, Json<Value>) {
    if (namespace.as_str(), name.as_str()) != ("default", "gitlab-access") {
        return (
            StatusCode::NOT_FOUND,
            Json(
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                "reason": "NotFound", "code": 404, "message": "not found"}),
            ),
        );
    }
    (
        StatusCode::OK,
        Json(
            json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "namespace": namespace},
            // "gl-token"
            "data": {"accesskey": "Z2wtdG9rZW4="}}),
        ),
    )
}

#[tokio::test]
async fn gitlab_registers_the_project_hook_with_the_token_of_its_secret() {
    let forge = Arc::new(Forge::default());
    let app = axum::Router::new()
        .route(
            "/api/v4/projects/{project}/hooks",
            get(gitlab_hooks).post(gitlab_hooks),
        )
        .route(
            "/api/v1/namespaces/{namespace}/secrets/{name}",
            get(kube_secret),
        )
        .with_state(forge.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    // Outside a cluster the Secret is read through KUBECONFIG (here: the same fake server).
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {base}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\ncurrent-context: fake\nusers:\n- name: fake\n  user:\n    token: fake\n"
        ),
    )
    .unwrap();
    let example = Example::new("gitlab", &[("${GITLAB_URL}", &base)]);
    let watcher = Watcher::start().await;
    let portico = example
        .run(
            &watcher,
            &[],
            &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
        )
        .await;
    let node = portico
        .wait_for_phase("gitlab.fooConfig", "Running", WAIT)
        .await;
    assert!(
        node["message"]
            .as_str()
            .unwrap_or("")
            .contains("runs no server"),
        "{node}"
    );
    let calls = forge.calls.lock().unwrap().clone();
    let methods: Vec<(&str, &str)> = calls
        .iter()
        .map(|(m, p, _)| (m.as_str(), p.as_str()))
        .collect();
    assert_eq!(
        methods,
        [
            ("GET", "/projects/28/hooks"),
            ("POST", "/projects/28/hooks")
        ]
    );
    let hook = &calls[1].2;
    assert_eq!(hook["url"], "http://webhook-gateway-gateway-svc:12000/foo");
    assert_eq!(
        hook["token"], "gl-token",
        "the API token is the hook's secret"
    );
    assert_eq!(hook["enable_ssl_verification"], false);
    let on: BTreeMap<&str, bool> = hook
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.ends_with("_events"))
        .map(|(k, v)| (k.as_str(), v.as_bool().unwrap()))
        .collect();
    assert_eq!(on.get("push_events"), Some(&true), "{hook}");
    assert!(
        on.iter().all(|(k, v)| *v == (*k == "push_events")),
        "only PushEvents: {hook}"
    );
    // It makes no event itself: those come through the webhook gateway.
    assert!(watcher.deliveries().is_empty());
    assert_eq!(portico.terminate().await, Some(0));
    server.abort();
}

// ---------------------------------------------------------------------------------------
// run: the stream gateways

#[tokio::test]
async fn nats_messages_reach_the_sensor() {
    let example = Example::new("nats", &[]);
    let watcher = Watcher::start().await;
    let portico = example.run(&watcher, &[], &[]).await;
    portico
        .wait_for_phase("nats.fooConfig", "Running", WAIT)
        .await;
    let nats = async_nats::connect("127.0.0.1:4222")
        .await
        .expect("NATS at 127.0.0.1:4222");
    let text = nonce("nats");
    let d = watcher
        .trigger_until(
            "nats-gateway/nats.fooConfig",
            &text,
            Duration::from_millis(300),
            || async {
                nats.publish("foo", text.clone().into()).await.unwrap();
                nats.flush().await.unwrap();
            },
        )
        .await;
    assert_event(&d, "nats-gateway/nats.fooConfig", "nats");
    assert_eq!(d.payload, text.as_bytes(), "the message's bytes");
    assert_eq!(portico.terminate().await, Some(0));
}

#[tokio::test]
async fn mqtt_messages_reach_the_sensor() {
    let example = Example::new("mqtt", &[]);
    let watcher = Watcher::start().await;
    let portico = example.run(&watcher, &[], &[]).await;
    portico
        .wait_for_phase("mqtt.fooConfig", "Running", WAIT)
        .await;
    let text = nonce("mqtt");
    let d = watcher
        .trigger_until(
            "mqtt-gateway/mqtt.fooConfig",
            &text,
            Duration::from_millis(300),
            || async {
                let status = tokio::process::Command::new("mosquitto_pub")
                    .args(["-h", "127.0.0.1", "-p", "1883", "-t", "foo", "-m", &text])
                    .status()
                    .await
                    .expect("mosquitto_pub (Debian package mosquitto-clients)");
                assert!(status.success());
            },
        )
        .await;
    assert_event(&d, "mqtt-gateway/mqtt.fooConfig", "mqtt");
    assert_eq!(d.payload, text.as_bytes(), "the message's bytes");
    assert_eq!(portico.terminate().await, Some(0));
}

#[tokio::test]
async fn amqp_messages_reach_the_sensor() {
    let example = Example::new("amqp", &[]);
    let watcher = Watcher::start().await;
    let portico = example.run(&watcher, &[], &[]).await;
    portico
        .wait_for_phase("amqp.fooConfig", "Running", WAIT)
        .await;
    let text = nonce("amqp");
    // Published with RabbitMQ's own tool, to the exchange the configuration declared.
    let publish = format!(
        "rabbit_basic:publish(rabbit_misc:r(<<\"/\">>, exchange, <<\"fooExchangeName\">>), <<\"fooRoutingKey\">>, [], <<\"{text}\">>)."
    );
    let d = watcher
        .trigger_until(
            "amqp-gateway/amqp.fooConfig",
            &text,
            Duration::from_millis(500),
            || async {
                let out = tokio::process::Command::new("rabbitmqctl")
                    .args(["eval", &publish])
                    .output()
                    .await
                    .expect("rabbitmqctl (RabbitMQ's command-line tool)");
                assert!(out.status.success(), "rabbitmqctl eval: {out:?}");
            },
        )
        .await;
    assert_event(&d, "amqp-gateway/amqp.fooConfig", "amqp");
    assert_eq!(d.payload, text.as_bytes(), "the message's body");
    assert_eq!(portico.terminate().await, Some(0));
}

#[tokio::test]
async fn kafka_with_a_partition_and_no_consumer_group_reaches_the_sensor() {
    use rdkafka::ClientConfig;
    use rdkafka::producer::{FutureProducer, FutureRecord};

    let broker = support::Tansu::start().await;
    let brokers = broker.brokers();
    support::create_kafka_topic(&brokers, "foo", 1).await;

    let example = Example::new("kafka", &[("${KAFKA_URL}", &brokers)]);
    let watcher = Watcher::start().await;
    let portico = example.run(&watcher, &[], &[]).await;
    portico
        .wait_for_phase("kafka.fooConfig", "Running", WAIT)
        .await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let text = nonce("kafka");
    // v0.6 read from the newest record at every start: what is produced before the
    // partition is assigned is not read, so produce until one is.
    let d = watcher
        .trigger_until(
            "kafka-gateway/kafka.fooConfig",
            &text,
            Duration::from_millis(500),
            || async {
                producer
                    .send(
                        FutureRecord::<(), _>::to("foo").partition(0).payload(&text),
                        Duration::from_secs(5),
                    )
                    .await
                    .map_err(|(e, _)| e)
                    .expect("produce to foo");
            },
        )
        .await;
    assert_event(&d, "kafka-gateway/kafka.fooConfig", "kafka");
    assert_eq!(d.payload, text.as_bytes(), "the record's value");
    assert_eq!(portico.terminate().await, Some(0));
}

// ---------------------------------------------------------------------------------------
// The watcher's parser itself.

#[test]
fn the_watcher_reads_cloudevents_1_0_and_v06_legacy_json() {
    let none = HeaderMap::new();
    let structured = json!({"specversion": "1.0", "id": "1", "source": "g/k", "type": "t",
        "datacontenttype": "text/plain", "data": "hi"});
    let d = parse("/", &none, structured.to_string().as_bytes()).unwrap();
    assert_eq!((d.host.as_str(), d.event_type.as_str()), ("g/k", "t"));
    assert_eq!(d.payload, b"hi");
    let b64 = json!({"specversion": "1.0", "id": "1", "source": "g/k", "type": "t",
        "data_base64": "AAE="});
    assert_eq!(
        parse("/", &none, b64.to_string().as_bytes())
            .unwrap()
            .payload,
        [0, 1]
    );
    let legacy = json!({"eventType": "t", "eventTypeVersion": "1.0",
        "cloudEventsVersion": "0.1", "source": {"host": "g/k"}, "eventID": "x",
        "eventTime": "2018-11-25T10:00:00.123456Z", "contentType": "application/json",
        "payload": "aGk="});
    let d = parse("/", &none, legacy.to_string().as_bytes()).unwrap();
    assert_eq!((d.host.as_str(), d.event_type.as_str()), ("g/k", "t"));
    assert_eq!(d.payload, b"hi");
    let mut binary = HeaderMap::new();
    binary.insert("ce-source", "g/k".parse().unwrap());
    binary.insert("ce-type", "t".parse().unwrap());
    assert_eq!(parse("/", &binary, b"raw").unwrap().payload, b"raw");
    assert!(parse("/", &none, b"{}").is_err());
}

// ---------------------------------------------------------------------------------------
// run: artifact (S3 notifications through SQS, against moto) and storagegrid

#[path = "../../portico-gateways/tests/moto_support/mod.rs"]
mod moto_support;

#[tokio::test]
async fn artifact_runs_with_the_queue_v06_lacked_and_its_keys_from_the_secret() {
    let moto = moto_support::Moto::shared();
    let bucket = moto_support::unique("input");
    let queue = moto_support::unique("input-events");
    let endpoint = moto.url.trim_start_matches("http://").to_string();
    let subs = [
        ("${BUCKET}", bucket.as_str()),
        ("${S3_ENDPOINT}", endpoint.as_str()),
    ];
    // v0.6's configuration as it is listened to MinIO's own API: it is refused, naming the
    // one field to add (the SQS queue S3 sends the bucket's notifications to).
    let v06 = Example::new("artifact", &subs);
    let (code, out, err) = run_to_end(&["validate", v06.gateway(), v06.configmap()]);
    let text = format!("{out}{err}");
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("s3.fooConfig") && text.contains("queue"),
        "{text}"
    );

    // With the queue added, it runs: the keys come from v0.6's Secret `artifacts-minio`
    // (through KUBECONFIG, here a fake API server), the bucket's notifications from moto.
    let moto_setup = moto.clone();
    let (b, q) = (bucket.clone(), queue.clone());
    tokio::task::spawn_blocking(move || moto_setup.setup(&b, &q, 30))
        .await
        .unwrap();
    let fake = fake_kube::FakeKube::start().await;
    fake.create(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "artifacts-minio", "namespace": "default"},
        // "testing", as moto takes any key.
        "data": {"accesskey": "dGVzdGluZw==", "secretkey": "dGVzdGluZw=="}}));
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, fake.kubeconfig()).unwrap();
    let queue_line = format!("    insecure: true\n    queue: {queue}");
    let mut with_queue = subs.to_vec();
    with_queue.push(("    insecure: true", queue_line.as_str()));
    let example = Example::new("artifact", &with_queue);
    let watcher = Watcher::start().await;
    let portico = example
        .run(
            &watcher,
            &[],
            &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
        )
        .await;
    portico
        .wait_for_phase("s3.fooConfig", "Running", WAIT)
        .await;
    let key = moto_support::unique("hello");
    let (m, b, k) = (moto.clone(), bucket.clone(), key.clone());
    tokio::task::spawn_blocking(move || m.put(&b, &[&k]))
        .await
        .unwrap();
    let d = watcher
        .wait_for("the S3 record", |d| d.payload_text().contains(&key))
        .await;
    assert_event(&d, "artifact-gateway/s3.fooConfig", "artifact");
    // v0.6's payload: the notification's record.
    let record: Value = serde_json::from_slice(&d.payload).expect("the record's JSON");
    assert_eq!(record["s3"]["bucket"]["name"], bucket.as_str(), "{record}");
    assert_eq!(record["s3"]["object"]["key"], key.as_str(), "{record}");
    assert_eq!(record["eventName"], "ObjectCreated:Put", "{record}");
    assert_eq!(portico.terminate().await, Some(0));
}

#[tokio::test]
async fn storagegrid_takes_its_sns_form_and_answers_as_sns() {
    let port = free_port();
    let example = Example::pair(
        "storage-grid.yaml",
        "storage-grid-configmap.yaml",
        &[("${STORAGEGRID_PORT}", &port.to_string())],
    );
    example.validate();
    let watcher = Watcher::start().await;
    let portico = example.run(&watcher, &[], &[]).await;
    portico
        .wait_for_phase("storageGrid.fooConfig", "Running", WAIT)
        .await;
    let key = nonce("images/cat");
    let message = json!({"Records": [{
        "eventVersion": "2.0", "eventSource": "sgws:s3", "eventTime": "2026-12-03T10:00:00Z",
        "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": "media"}, "object": {"key": key, "size": 3}},
    }]});
    // StorageGRID posts SNS's Publish action as a form.
    let mut form = reqwest::Url::parse("http://form.invalid/").unwrap();
    form.query_pairs_mut()
        .append_pair("Action", "Publish")
        .append_pair("Message", &message.to_string())
        .append_pair("TopicArn", "urn:sgws:sns:local::media")
        .append_pair("Version", "2010-03-31");
    let r = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.query().unwrap().to_string())
        .send()
        .await
        .expect("POST the notification");
    assert_eq!(r.status(), 200);
    let answer = r.text().await.unwrap();
    assert!(answer.contains("<PublishResponse"), "{answer}");
    let d = watcher
        .wait_for("the notification", |d| d.payload_text().contains(&key))
        .await;
    assert_event(
        &d,
        "storage-grid-gateway/storageGrid.fooConfig",
        "storagegrid",
    );
    // v0.6's payload: the form as JSON, its Message parsed.
    let payload: Value = serde_json::from_slice(&d.payload).expect("JSON");
    assert_eq!(payload["Action"], "Publish", "{payload}");
    assert_eq!(
        payload["Message"]["Records"][0]["s3"]["object"]["key"],
        key.as_str(),
        "{payload}"
    );
    assert_eq!(portico.terminate().await, Some(0));
}
