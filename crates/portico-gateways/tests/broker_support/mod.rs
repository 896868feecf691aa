//! What the broker tests share: a gateway whose one watcher can be taken down and brought
//! back ([`Rig`]), private broker processes on free ports that are killed on drop
//! ([`PrivateBroker`]), and polling helpers. The shared brokers of the machine (NATS 4222,
//! Mosquitto 1883, RabbitMQ 5672, Redis 6379) are used as they are and never stopped;
//! every test uses its own subjects, topics, queues and streams (a uuid) so tests can run
//! in parallel.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use portico::cloudevents::CloudEvent;
use portico::testing::{Delivery, Harness, Supervisor};
use portico::{Node, Phase, SharedExecutor};

/// How long a test waits for anything before failing.
pub const WAIT: Duration = Duration::from_secs(20);

/// A unique name for this test's subjects, queues, streams.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

/// A gateway of one type with one watcher that can be taken down (its deliveries fail and are
/// retried, 20 to 100 ms apart, for ever), one delivery at a time, and a supervisor.
pub struct Rig {
    pub harness: Harness,
    pub supervisor: Supervisor,
}

impl Rig {
    /// A gateway `name` of `gateway_type` run by `executor`, watcher up, default queue.
    pub fn new(name: &str, gateway_type: &str, executor: SharedExecutor) -> Rig {
        Self::with_queue_size(name, gateway_type, executor, 4096)
    }

    /// The same with a watcher queue of `queue_size` events (a small one makes the source
    /// wait while the watcher is down).
    pub fn with_queue_size(
        name: &str,
        gateway_type: &str,
        executor: SharedExecutor,
        queue_size: usize,
    ) -> Rig {
        Self::with_delivery(name, gateway_type, executor, queue_size, Delivery::Memory)
    }

    /// The same in delivery mode `delivery`.
    pub fn with_delivery(
        name: &str,
        gateway_type: &str,
        executor: SharedExecutor,
        queue_size: usize,
        delivery: Delivery,
    ) -> Rig {
        let harness = Harness::builder(name, gateway_type)
            .queue_size(queue_size)
            .concurrency(1)
            .patient()
            .delivery(delivery)
            .build();
        let supervisor = harness.supervisor(executor);
        Rig {
            harness,
            supervisor,
        }
    }

    /// Runs exactly these configurations (src → YAML), stopping the others.
    pub async fn apply(&mut self, configs: &[(&str, &str)]) {
        self.supervisor.apply_pairs(configs).await;
    }

    /// How many events configuration `src` produced (accepted or still waiting for room).
    pub fn received(&self, src: &str) -> u64 {
        self.harness
            .metric("portico_events_received_total", &[("src", src)]) as u64
    }

    /// Waits until configuration `src` produced at least `n` events.
    pub async fn wait_received(&self, src: &str, n: u64) {
        wait_until(&format!("{n} events from {src}"), || async {
            (self.received(src) >= n).then_some(())
        })
        .await;
    }

    /// Takes the watcher down or brings it up.
    pub fn watcher_up(&self, up: bool) {
        self.harness.watcher_up(up);
    }

    /// The next delivered event, or `None` after `timeout`.
    pub async fn next_event(&mut self, timeout: Duration) -> Option<CloudEvent> {
        self.harness.next_event(timeout).await
    }

    /// Exactly `n` events (panics if fewer arrive in [`WAIT`]), then checks that no more
    /// arrive within `quiet`.
    pub async fn exactly(&mut self, n: usize, quiet: Duration) -> Vec<CloudEvent> {
        let mut got = Vec::with_capacity(n);
        let deadline = tokio::time::Instant::now() + WAIT;
        while got.len() < n {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event(left).await {
                Some(e) => got.push(e),
                None => panic!(
                    "only {} of {n} events arrived in {WAIT:?}; nodes: {:?}",
                    got.len(),
                    self.harness.nodes()
                ),
            }
        }
        if let Some(extra) = self.next_event(quiet).await {
            panic!("more than {n} events: also {extra:?}");
        }
        got
    }

    /// Events until every payload of `want` has been seen (duplicates allowed), or panics
    /// after [`WAIT`] naming the missing ones.
    pub async fn until_all(&mut self, want: &[String]) -> Vec<CloudEvent> {
        let mut missing: std::collections::BTreeSet<&String> = want.iter().collect();
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + WAIT;
        while !missing.is_empty() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(e) = self.next_event(left).await else {
                panic!("missing after {WAIT:?}: {missing:?}");
            };
            missing.remove(&data(&e));
            got.push(e);
        }
        got
    }

    /// The node of configuration `src`.
    pub fn node(&self, src: &str) -> Option<Node> {
        self.harness.node(src)
    }

    /// Waits until the node of `src` is in `phase`; panics with the node after [`WAIT`].
    pub async fn wait_phase(&self, src: &str, phase: Phase) -> Node {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let node = self.node(src);
            if let Some(n) = node.clone().filter(|n| n.phase == phase) {
                return n;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("node {src} not {phase:?} after {WAIT:?}: {node:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The event's data as text.
pub fn data(e: &CloudEvent) -> String {
    e.data
        .as_ref()
        .map(|d| String::from_utf8_lossy(d.as_bytes()).into_owned())
        .unwrap_or_default()
}

/// The event's extension `name` as text.
pub fn ext(e: &CloudEvent, name: &str) -> Option<String> {
    e.extensions.get(name).map(|v| v.to_string())
}

/// Polls `check` every 20 ms until it returns `Some`, or panics with `what` after [`WAIT`].
pub async fn wait_until<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {WAIT:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The tansu Kafka broker: `PORTICO_TANSU`, else `~/.cargo/bin/tansu`.
pub fn tansu() -> String {
    std::env::var("PORTICO_TANSU").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_default();
        let default = format!("{home}/.cargo/bin/tansu");
        assert!(
            std::path::Path::new(&default).exists(),
            "the Kafka tests need the tansu broker: run scripts/test (it installs it), or \
             `cargo install tansu --version 0.6.0 --locked --features dynostore,libsql` and set PORTICO_TANSU"
        );
        default
    })
}

/// A broker process of this test alone, on its own port; killed on drop.
pub struct PrivateBroker {
    pub port: u16,
    program: PathBuf,
    args: Vec<String>,
    /// The working directory it runs in, when not the test's.
    cwd: Option<PathBuf>,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl PrivateBroker {
    /// Starts `program` with `args` (`{port}` and `{dir}` replaced by the port and a private
    /// temporary directory) and waits until the port accepts connections.
    pub async fn start(program: impl Into<PathBuf>, args: &[&str]) -> PrivateBroker {
        Self::launch(program.into(), None, args).await
    }

    /// [`PrivateBroker::start`] with a configuration file first written to `{dir}/broker.conf`
    /// from `config` (with `{port}` and `{dir}` replaced as in the arguments), for a broker
    /// whose listeners are set in its file (Mosquitto).
    pub async fn start_with_config(
        program: impl Into<PathBuf>,
        config: &str,
        args: &[&str],
    ) -> PrivateBroker {
        Self::launch(program.into(), Some(config), args).await
    }

    /// [`PrivateBroker::start`] in working directory `cwd` (brokers that share files there).
    pub async fn start_in(
        program: impl Into<PathBuf>,
        cwd: &std::path::Path,
        args: &[&str],
    ) -> PrivateBroker {
        Self::launch_in(program.into(), None, args, Some(cwd.to_path_buf())).await
    }

    async fn launch(program: PathBuf, config: Option<&str>, args: &[&str]) -> PrivateBroker {
        Self::launch_in(program, config, args, None).await
    }

    async fn launch_in(
        program: PathBuf,
        config: Option<&str>,
        args: &[&str],
        cwd: Option<PathBuf>,
    ) -> PrivateBroker {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let port = free_port();
        let fill = |a: &str| {
            a.replace("{port}", &port.to_string())
                .replace("{dir}", &dir.path().display().to_string())
        };
        if let Some(config) = config {
            std::fs::write(dir.path().join("broker.conf"), fill(config)).expect("the config file");
        }
        let args = args.iter().map(|a| fill(a)).collect();
        let mut b = PrivateBroker {
            port,
            program,
            args,
            cwd,
            child: None,
            _dir: dir,
        };
        b.restart().await;
        b
    }

    /// Kills the broker and waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the broker again on the same port and waits until it accepts connections.
    pub async fn restart(&mut self) {
        self.kill();
        let program = self.program.display().to_string();
        let args = self.args.clone();
        let port = self.port;
        let mut command = Command::new(&self.program);
        if let Some(cwd) = &self.cwd {
            command.current_dir(cwd);
        }
        let child = command
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program} {args:?}: {e}"));
        self.child = Some(child);
        wait_until(&format!("{program} to listen on {port}"), || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ())
        })
        .await;
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A CA, and a certificate it signed for `localhost` and 127.0.0.1, written as PEM files.
pub struct Pki {
    dir: tempfile::TempDir,
    ca: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
}

impl Pki {
    pub fn new() -> Pki {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "portico test CA");
        let ca = params.self_signed(&ca_key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        Pki { dir, ca, ca_key }
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A certificate for `names`, signed by the CA: (certificate file, key file).
    pub fn issue(&self, name: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = rcgen::CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &self.ca, &self.ca_key)
            .unwrap();
        let (c, k) = (
            self.dir.path().join(format!("{name}.pem")),
            self.dir.path().join(format!("{name}-key.pem")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }
}

pub fn path(p: &std::path::Path) -> String {
    p.display().to_string()
}
