//! Support for end-to-end tests: the real `portico` binary, real HTTP watchers, and polling
//! with deadlines.
//!
//! - [`Portico`] runs `portico run FILE` (or any subcommand) with JSON logs and the transformer
//!   on a free port, collects its stdout and stderr lines, and kills it on drop.
//! - [`Sink`] is a watcher: an HTTP server on port 0 that records every request and answers
//!   with a scripted status (or never answers).
//! - [`eventually`] polls a condition until a deadline; tests never sleep a fixed time.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub use portico::testing::free_port;

/// The `portico` binary cargo built for these tests.
pub fn portico_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_portico"))
}

/// Runs `portico ARGS…` to its end, outside any cluster, with JSON logs: (exit code, stdout,
/// stderr).
pub fn run_to_end(args: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(portico_bin())
        .args(args)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("PORTICO_SENSOR_URL")
        .env_remove("PORTICO_GATEWAY_URL")
        .env("PORTICO_LOG_FORMAT", "json")
        .stdin(Stdio::null())
        .output()
        .expect("run portico");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Polls `check` every 20 ms until it returns `Some`, or `None` after `timeout`.
pub async fn eventually<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Like [`eventually`] with an async check.
pub async fn eventually_async<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Lines a child process wrote, shared with the tasks that read them.
#[derive(Clone, Default)]
pub struct Lines(Arc<Mutex<Vec<String>>>);

impl Lines {
    /// Every line so far.
    pub fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    /// The lines that contain `needle`.
    pub fn containing(&self, needle: &str) -> Vec<String> {
        self.all()
            .into_iter()
            .filter(|l| l.contains(needle))
            .collect()
    }

    fn push(&self, line: String) {
        self.0.lock().unwrap().push(line);
    }
}

/// The `Accept` header Prometheus scrapes with: OpenMetrics first, the text format 0.0.4 after.
pub const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// A running `portico` process.
pub struct Portico {
    child: Child,
    /// The transformer's address (for `run` and `transformer`).
    pub addr: SocketAddr,
    /// What it printed on stdout (CloudEvents of a stdout watcher).
    pub stdout: Lines,
    /// What it logged (JSON lines).
    pub stderr: Lines,
    /// An HTTP client for its API.
    pub http: reqwest::Client,
    /// Its own outbox directory, unless the test gave `PORTICO_OUTBOX_DIR` (removed on drop).
    _outbox: Option<tempfile::TempDir>,
}

impl Portico {
    /// Runs `portico run FILE` with JSON logs and a free transformer port, and waits until
    /// the transformer listens.
    pub async fn run(file: &Path) -> Portico {
        Self::start(&["run", file.to_str().unwrap()], &[]).await
    }

    /// Runs `portico ARGS… --transformer-port 0` with JSON logs (unless `envs` sets
    /// `PORTICO_LOG_FORMAT`) and extra environment variables, and waits until the transformer
    /// listens.
    pub async fn start(args: &[&str], envs: &[(&str, &str)]) -> Portico {
        Self::start_wrapped(&[], args, envs).await
    }

    /// [`Portico::start`] under `wrapper` (a program and its arguments, like `prlimit
    /// --nofile=256:256 --`), which runs `portico ARGS…`.
    pub async fn start_wrapped(wrapper: &[&str], args: &[&str], envs: &[(&str, &str)]) -> Portico {
        let mut cmd = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(portico_bin());
                c
            }
            None => Command::new(portico_bin()),
        };
        // The flags go before a `--` that starts the user's command (`run FILE -- CMD…`).
        let split = args.iter().position(|a| *a == "--").unwrap_or(args.len());
        cmd.args(&args[..split])
            .args(["--transformer-port", "0"])
            .args(&args[split..])
            // JSON logs unless the test's environment says otherwise.
            .env("PORTICO_LOG_FORMAT", "json")
            .env("PORTICO_LOG", "info,portico=debug")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("K_SINK")
            .env_remove("K_CE_OVERRIDES")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        // Each process its own durable outbox, so that tests never share (or inherit) one.
        let outbox = if envs.iter().any(|(k, _)| *k == "PORTICO_OUTBOX_DIR") {
            None
        } else {
            let dir = tempfile::tempdir().expect("a temp dir for the outbox");
            cmd.env("PORTICO_OUTBOX_DIR", dir.path());
            Some(dir)
        };
        let mut child = cmd.spawn().expect("spawn portico");
        let stdout = Lines::default();
        let stderr = Lines::default();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        {
            let stdout = stdout.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(out).lines();
                while let Ok(Some(l)) = lines.next_line().await {
                    stdout.push(l);
                }
            });
        }
        {
            let stderr = stderr.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(err).lines();
                while let Ok(Some(l)) = lines.next_line().await {
                    eprintln!("[portico] {l}");
                    stderr.push(l);
                }
            });
        }
        let addr = eventually(Duration::from_secs(20), || {
            let line = stderr
                .containing("transformer listening")
                .into_iter()
                .next()?;
            match serde_json::from_str::<serde_json::Value>(&line) {
                Ok(v) => v["addr"].as_str().and_then(|a| a.parse().ok()),
                // A text line: `… transformer listening addr=127.0.0.1:PORT`.
                Err(_) => line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("addr="))
                    .and_then(|a| a.parse().ok()),
            }
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "portico did not start; it logged:\n{}",
                stderr.all().join("\n")
            )
        });
        Portico {
            child,
            addr,
            stdout,
            stderr,
            http: reqwest::Client::new(),
            _outbox: outbox,
        }
    }

    /// `http://ADDR` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// `GET /status` as JSON.
    pub async fn status(&self) -> serde_json::Value {
        self.http
            .get(self.url("/status"))
            .send()
            .await
            .expect("GET /status")
            .json()
            .await
            .expect("/status is JSON")
    }

    /// `GET /metrics` as Prometheus asks for it: the OpenMetrics text.
    pub async fn metrics(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .header("accept", PROMETHEUS_ACCEPT)
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("the metrics text")
    }

    /// The node named `src` in `/status`, if any.
    pub async fn node(&self, src: &str) -> Option<serde_json::Value> {
        let status = self.status().await;
        status["nodes"]
            .as_array()?
            .iter()
            .find(|n| n["name"] == src)
            .cloned()
    }

    /// Waits until node `src` has `phase`, and returns it.
    pub async fn wait_for_phase(
        &self,
        src: &str,
        phase: &str,
        timeout: Duration,
    ) -> serde_json::Value {
        match eventually_async(timeout, || async {
            self.node(src).await.filter(|n| n["phase"] == phase)
        })
        .await
        {
            Some(n) => n,
            None => panic!(
                "node `{src}` did not reach {phase}; status: {}",
                self.status().await
            ),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("portico is running")
    }

    /// Sends SIGKILL and waits until the process is gone.
    pub async fn kill(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
    }

    /// Sends signal `name` (`TERM`, `HUP`, `USR1`, …) to the process.
    pub fn signal(&self, name: &str) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args([&format!("-{name}"), &pid.to_string()])
                .status();
        }
    }

    /// Waits up to `timeout` for the process to exit; its exit code, or `None` if it did not.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(Ok(status)) => status.code(),
            _ => None,
        }
    }

    /// Sends SIGTERM and waits for the exit; returns the exit code.
    pub async fn terminate(mut self) -> Option<i32> {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        match tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await {
            Ok(Ok(status)) => status.code(),
            _ => {
                let _ = self.child.kill().await;
                None
            }
        }
    }
}

/// How a [`Sink`] answers.
#[derive(Debug, Clone)]
pub enum Behaviour {
    /// 200 to everything.
    Ok,
    /// These statuses in order, then 200.
    Script(Vec<u16>),
    /// Never answers (the connection stays open).
    Hang,
    /// 200 to everything, each after this delay.
    Slow(Duration),
}

/// One request a sink received.
#[derive(Debug, Clone)]
pub struct Received {
    /// Request headers.
    pub headers: HeaderMap,
    /// Request body.
    pub body: Bytes,
    /// The status the sink answered.
    pub answered: u16,
}

impl Received {
    /// The body as JSON (a structured CloudEvent).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

struct SinkState {
    script: Mutex<VecDeque<u16>>,
    hang: bool,
    delay: Option<Duration>,
    /// What it received, and whether it is stopped (one lock: a request is either recorded
    /// before the stop or refused after it).
    received: Mutex<(Vec<Received>, bool)>,
}

/// A watcher: an HTTP server on a free port that records every request.
pub struct Sink {
    /// Its address.
    pub addr: SocketAddr,
    state: Arc<SinkState>,
    task: tokio::task::JoinHandle<()>,
}

impl Sink {
    /// Starts a sink that answers as `behaviour` says.
    pub async fn start(behaviour: Behaviour) -> Sink {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, behaviour)
    }

    /// Starts a sink on a given address (to bring a watcher back on the same port).
    pub async fn start_on(addr: SocketAddr, behaviour: Behaviour) -> Sink {
        // A sink just dropped lets go of its listener when its aborted task is next polled.
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => break l,
                Err(e) if Instant::now() >= deadline => panic!("bind {addr}: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        Self::serve(listener, behaviour)
    }

    fn serve(listener: tokio::net::TcpListener, behaviour: Behaviour) -> Sink {
        let addr = listener.local_addr().unwrap();
        let (script, hang, delay) = match behaviour {
            Behaviour::Ok => (VecDeque::new(), false, None),
            Behaviour::Script(s) => (s.into(), false, None),
            Behaviour::Hang => (VecDeque::new(), true, None),
            Behaviour::Slow(d) => (VecDeque::new(), false, Some(d)),
        };
        let state = Arc::new(SinkState {
            script: Mutex::new(script),
            hang,
            delay,
            received: Mutex::new((Vec::new(), false)),
        });
        let app = axum::Router::new()
            .fallback(record)
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Sink { addr, state, task }
    }

    /// `http://ADDR/events`.
    pub fn url(&self) -> String {
        format!("http://{}/events", self.addr)
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().0.clone()
    }

    /// Stops the watcher for good and returns every request it took. Connections still open
    /// get 503 with `Connection: close` from now on (nothing more is recorded), as a watcher
    /// that went away would refuse them.
    pub fn stop(self) -> Vec<Received> {
        let mut r = self.state.received.lock().unwrap();
        r.1 = true;
        r.0.clone()
    }

    /// The requests answered with 2xx, as JSON (structured CloudEvents).
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.received()
            .iter()
            .filter(|r| (200..300).contains(&r.answered))
            .map(Received::json)
            .collect()
    }

    /// Waits until at least `n` events were accepted; returns them.
    pub async fn wait_for_events(&self, n: usize, timeout: Duration) -> Vec<serde_json::Value> {
        eventually(timeout, || {
            let e = self.events();
            (e.len() >= n).then_some(e)
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "expected {n} events at the sink within {timeout:?}, got {}",
                self.events().len()
            )
        })
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if let Ok(mut r) = self.state.received.lock() {
            r.1 = true;
        }
        self.task.abort();
    }
}

async fn record(
    State(s): State<Arc<SinkState>>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let status = {
        let mut r = s.received.lock().unwrap();
        if r.1 {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [(axum::http::header::CONNECTION, "close")],
            )
                .into_response();
        }
        let status = if s.hang {
            0
        } else {
            s.script.lock().unwrap().pop_front().unwrap_or(200)
        };
        r.0.push(Received {
            headers,
            body,
            answered: status,
        });
        status
    };
    if s.hang {
        return std::future::pending::<axum::response::Response>().await;
    }
    if let Some(d) = s.delay {
        tokio::time::sleep(d).await;
    }
    StatusCode::from_u16(status).unwrap().into_response()
}

/// A gateway file in a temp dir. Keep the `TempDir` alive while the file is used.
pub struct GatewayFileBuilder {
    /// Gateway name.
    pub name: String,
    /// `spec.type`.
    pub gateway_type: String,
    /// Extra lines under `spec:` (indented two spaces), e.g. watchers.
    pub spec_extra: String,
    /// Configurations: key → value (YAML text).
    pub configs: Vec<(String, String)>,
}

impl GatewayFileBuilder {
    /// A gateway `name` of type `gateway_type`.
    pub fn new(name: &str, gateway_type: &str) -> Self {
        GatewayFileBuilder {
            name: name.to_string(),
            gateway_type: gateway_type.to_string(),
            spec_extra: String::new(),
            configs: Vec::new(),
        }
    }

    /// Sends events to these URLs.
    pub fn watchers(mut self, urls: &[String]) -> Self {
        self.spec_extra.push_str("  watchers:\n    urls:\n");
        for u in urls {
            self.spec_extra.push_str(&format!("      - \"{u}\"\n"));
        }
        self
    }

    /// Adds raw lines under `spec:`.
    pub fn spec_lines(mut self, lines: &str) -> Self {
        self.spec_extra.push_str(lines);
        if !lines.ends_with('\n') {
            self.spec_extra.push('\n');
        }
        self
    }

    /// Adds a configuration.
    pub fn config(mut self, key: &str, value: &str) -> Self {
        self.configs.push((key.to_string(), value.to_string()));
        self
    }

    /// The file's text.
    pub fn render(&self) -> String {
        let data = if self.configs.is_empty() {
            "data: {}"
        } else {
            "data:"
        };
        let mut s = format!(
            "apiVersion: portico.dev/v1alpha1\nkind: Gateway\nmetadata:\n  name: {name}\nspec:\n  type: {ty}\n  configMap: {name}-cm\n{extra}---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}-cm\n{data}\n",
            name = self.name,
            ty = self.gateway_type,
            extra = self.spec_extra
        );
        for (k, v) in &self.configs {
            s.push_str(&format!("  {k}: |\n"));
            for line in v.lines() {
                s.push_str(&format!("    {line}\n"));
            }
        }
        s
    }

    /// Writes it as `gateway.yaml` in a new temp dir.
    pub fn write(&self) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.yaml");
        std::fs::write(&path, self.render()).unwrap();
        (dir, path)
    }
}

/// Replaces a file the way editors do: write a temp file beside it, then rename over it.
pub fn replace_file(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The tansu Kafka broker: `PORTICO_TANSU`, else `~/.cargo/bin/tansu`.
pub fn tansu_program() -> String {
    std::env::var("PORTICO_TANSU").unwrap_or_else(|_| {
        let default = format!(
            "{}/.cargo/bin/tansu",
            std::env::var("HOME").unwrap_or_default()
        );
        assert!(
            std::path::Path::new(&default).exists(),
            "the Kafka tests need the tansu broker: run scripts/test (it installs it), \
             or `cargo install tansu --version 0.6.0 --locked --features dynostore,libsql` and set PORTICO_TANSU"
        );
        default
    })
}

/// A private `tansu` Kafka broker (memory engine) on a free port, killed on drop.
/// `scripts/test` installs tansu and sets `PORTICO_TANSU`.
pub struct Tansu {
    child: tokio::process::Child,
    pub port: u16,
}

impl Tansu {
    pub async fn start() -> Tansu {
        let program = tansu_program();
        let port = free_port();
        let listener = format!("tcp://127.0.0.1:{port}");
        let child = tokio::process::Command::new(program)
            .args(["broker", "--listener-url", &listener])
            .args(["--advertised-listener-url", &listener])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start tansu");
        until_listening(port, "tansu").await;
        Tansu { child, port }
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Creates the Kafka `topic` with `partitions` partitions at `brokers` (retrying while the
/// broker starts up).
pub async fn create_kafka_topic(brokers: &str, topic: &str, partitions: i32) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("a Kafka admin client");
    let new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    eventually_async(Duration::from_secs(20), || {
        let (admin, new_topic) = (&admin, &new_topic);
        async move {
            let r = admin
                .create_topics([new_topic], &AdminOptions::new())
                .await
                .ok()?;
            r.iter().all(|r| r.is_ok()).then_some(())
        }
    })
    .await
    .unwrap_or_else(|| panic!("the topic {topic} is created"));
}

/// Waits until something listens on 127.0.0.1:`port` (`what`, for the failure).
pub async fn until_listening(port: u16, what: &str) {
    eventually_async(Duration::from_secs(20), || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
            .map(drop)
    })
    .await
    .unwrap_or_else(|| panic!("{what} listens on port {port}"));
}
