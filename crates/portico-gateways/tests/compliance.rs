//! The compliance test every built-in gateway passes (ARCHITECTURE.md, "a shared compliance
//! test"): `validate` rejects junk with a clear message naming what is wrong; start →
//! `Running` → events; a changed value restarts it and it works again; stopping leaves no
//! task, socket or port behind.
//!
//! It walks [`BUILTIN_TYPES`]: a new built-in gateway fails here until it adds its [`Case`].

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{data, free_port, map, port_is_free, wait_until};
use portico::Phase;
use portico::testing::Harness;
use portico_gateways::webhook::sign_hmac_sha256;
use portico_gateways::{BUILTIN_TYPES, builtin};

const WAIT: Duration = Duration::from_secs(10);

/// How to make a configuration produce an event.
enum Trigger {
    /// It produces events by itself (calendar).
    Wait,
    /// POST `body` with `headers` to the URL.
    Post {
        headers: Vec<(&'static str, String)>,
        body: &'static str,
    },
    /// Write a file in the directory.
    WriteFile,
    /// Create an object in the fake Kubernetes API server.
    CreateObject,
}

/// A fake Kubernetes API server (crates/fake-kube) and a client of it, both on their own
/// runtime so that their tasks are not counted as the gateway's.
struct KubeFixture {
    rt: Option<tokio::runtime::Runtime>,
    fake: fake_kube::FakeKube,
    client: kube::Client,
}

impl KubeFixture {
    fn start() -> KubeFixture {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (fake, client) = rt.block_on(async {
            let fake = fake_kube::FakeKube::start().await;
            fake.disable_keep_alive();
            let client = fake.client();
            (fake, client)
        });
        KubeFixture {
            rt: Some(rt),
            fake,
            client,
        }
    }
}

impl Drop for KubeFixture {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// One configuration value and where it listens (URL or directory), if anywhere.
struct Value {
    text: String,
    url: Option<String>,
    ports: Vec<u16>,
    directory: Option<PathBuf>,
}

impl Value {
    fn plain(text: &str) -> Value {
        Value {
            text: text.to_string(),
            url: None,
            ports: Vec::new(),
            directory: None,
        }
    }
}

/// What one gateway type is tested with.
struct Case {
    /// Values `validate` must reject, each with a word its message must contain.
    junk: Vec<(String, &'static str)>,
    /// A value that runs and produces events.
    valid: Value,
    /// Another one, for the restart.
    changed: Value,
    trigger: Trigger,
    /// The Kubernetes API the gateway talks to, if any.
    kube: Option<KubeFixture>,
    /// Kept alive for the case (temporary files).
    _dir: tempfile::TempDir,
}

fn hook_value(port: u16, endpoint: &str, extra: &str) -> Value {
    Value {
        text: format!("port: {port}\nendpoint: {endpoint}\n{extra}"),
        url: Some(format!("http://127.0.0.1:{port}{endpoint}")),
        ports: vec![port],
        directory: None,
    }
}

fn case(gateway_type: &str) -> Option<Case> {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "compliance-secret\n").unwrap();
    let secret_line = format!("secretFile: {}", secret.display());
    let common_junk = |mut v: Vec<(String, &'static str)>| {
        v.push(("bogusField: 1".to_string(), "bogusField"));
        v.push(("[not: yaml".to_string(), ""));
        v
    };
    Some(match gateway_type {
        "calendar" => Case {
            junk: common_junk(vec![
                ("schedule: 'now and then'".into(), "schedule"),
                ("interval: soon".into(), "interval"),
                ("{}".into(), "schedule"),
            ]),
            valid: Value::plain("interval: 50ms"),
            changed: Value::plain("interval: 60ms\nuserPayload: {changed: true}"),
            trigger: Trigger::Wait,
            kube: None,
            _dir: dir,
        },
        "webhook" => Case {
            junk: common_junk(vec![
                ("endpoint: /x".into(), "port"),
                ("port: 0\nendpoint: /x".into(), "port"),
                ("port: 8080\nendpoint: x".into(), "endpoint"),
                (
                    "port: 8080\nendpoint: /x\nmaxBodySize: huge".into(),
                    "maxBodySize",
                ),
            ]),
            valid: hook_value(free_port(), "/compliance", ""),
            changed: hook_value(free_port(), "/changed", "method: PUT"),
            trigger: Trigger::Post {
                headers: Vec::new(),
                body: r#"{"compliance": true}"#,
            },
            kube: None,
            _dir: dir,
        },
        "github" => {
            let body = r#"{"zen": "Keep it logically awesome."}"#;
            Case {
                junk: common_junk(vec![
                    ("port: 8080\nendpoint: /x".into(), "secret"),
                    (format!("endpoint: /x\n{secret_line}"), "port"),
                    (
                        format!("port: 8080\nendpoint: /x\n{secret_line}\nsecretEnv: X"),
                        "secretEnv",
                    ),
                ]),
                valid: hook_value(free_port(), "/github", &secret_line),
                changed: hook_value(
                    free_port(),
                    "/github",
                    &format!("{secret_line}\nevents: [ping]"),
                ),
                trigger: Trigger::Post {
                    headers: vec![
                        ("x-github-event", "ping".to_string()),
                        (
                            "x-hub-signature-256",
                            sign_hmac_sha256(b"compliance-secret", body.as_bytes()),
                        ),
                    ],
                    body,
                },
                kube: None,
                _dir: dir,
            }
        }
        "gitlab" => Case {
            junk: common_junk(vec![
                ("port: 8080\nendpoint: /x".into(), "secret"),
                (format!("port: 8080\n{secret_line}"), "endpoint"),
                (
                    format!("port: 8080\nendpoint: /x\n{secret_line}\nevents: ['']"),
                    "events[0]",
                ),
            ]),
            valid: hook_value(free_port(), "/gitlab", &secret_line),
            changed: hook_value(
                free_port(),
                "/gitlab",
                &format!("{secret_line}\nevents: [push]"),
            ),
            trigger: Trigger::Post {
                headers: vec![
                    ("x-gitlab-event", "Push Hook".to_string()),
                    ("x-gitlab-token", "compliance-secret".to_string()),
                ],
                body: r#"{"object_kind": "push"}"#,
            },
            kube: None,
            _dir: dir,
        },
        "file" => {
            let (one, two) = (dir.path().join("one"), dir.path().join("two"));
            std::fs::create_dir(&one).unwrap();
            std::fs::create_dir(&two).unwrap();
            let value = |d: &PathBuf, extra: &str| Value {
                text: format!("directory: {}\n{extra}", d.display()),
                url: None,
                ports: Vec::new(),
                directory: Some(d.clone()),
            };
            Case {
                junk: common_junk(vec![
                    ("path: '*.txt'".into(), "directory"),
                    ("directory: relative/dir".into(), "directory"),
                    ("directory: /tmp\ntype: EXPLODE".into(), "type"),
                    ("directory: /tmp\npath: 'a[b'".into(), "path"),
                ]),
                valid: value(&one, ""),
                changed: value(&two, "type: CREATE\npath: '*.txt'"),
                trigger: Trigger::WriteFile,
                kube: None,
                _dir: dir,
            }
        }
        "resource" => {
            let widgets = "group: example.com\nversion: v1\nkind: Widget\nnamespace: ns\n";
            Case {
                junk: common_junk(vec![
                    ("kind: Widget".into(), "version"),
                    ("version: v1".into(), "kind"),
                    ("eventTypes: [EXPLODE]".into(), "EXPLODE"),
                ]),
                valid: Value::plain(widgets),
                changed: Value::plain(&format!(
                    "{widgets}eventTypes: [ADD]\nfilter: {{prefix: compliance-}}\n"
                )),
                trigger: Trigger::CreateObject,
                kube: Some(KubeFixture::start()),
                _dir: dir,
            }
        }
        _ => return None,
    })
}

/// A client that keeps no idle connection (so no client task outlives a request).
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn trigger(case: &Case, value: &Value, n: u32) {
    match &case.trigger {
        Trigger::Wait => {}
        Trigger::Post { headers, body } => {
            let url = value.url.as_ref().unwrap();
            let method = if value.text.contains("method: PUT") {
                reqwest::Method::PUT
            } else {
                reqwest::Method::POST
            };
            let mut req = client().request(method, url).body(*body);
            for (k, v) in headers {
                req = req.header(*k, v);
            }
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 200, "{url}: {:?}", r.text().await);
        }
        Trigger::WriteFile => {
            let dir = value.directory.as_ref().unwrap();
            std::fs::write(dir.join(format!("event-{n}.txt")), "x").unwrap();
        }
        Trigger::CreateObject => {
            case.kube.as_ref().unwrap().fake.create(serde_json::json!({
                "apiVersion": "example.com/v1", "kind": "Widget",
                "metadata": {"name": format!("compliance-{n}"), "namespace": "ns"},
            }));
        }
    }
}

async fn run_case(gateway_type: &str, case: Case) {
    let executor = builtin(gateway_type).unwrap();
    let mut h = Harness::new("compliance", gateway_type);
    if let Some(k) = &case.kube {
        h.gateway = h.gateway.clone().with_kube_client(k.client.clone());
    }

    // validate rejects junk with a clear message.
    for (junk, word) in &case.junk {
        let ctx = h.context("junk", junk);
        let err = executor
            .dyn_validate(&ctx)
            .expect_err(&format!("{gateway_type}: validate took junk {junk:?}"));
        assert!(
            err.message().len() > 10 && err.message().contains(word),
            "{gateway_type}: the message for {junk:?} should name `{word}`: {:?}",
            err.message()
        );
    }
    for value in [&case.valid, &case.changed] {
        let ctx = h.context("good", &value.text);
        if let Err(e) = executor.dyn_validate(&ctx) {
            panic!("{gateway_type}: validate refused {:?}: {e}", value.text);
        }
    }

    let tasks = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    let baseline = tasks();
    let fds_baseline = sockets_and_watches();
    let mut sup = h.supervisor(executor.clone());

    // start → Running → events; then a changed value → Running → events.
    for (round, value) in [&case.valid, &case.changed].into_iter().enumerate() {
        sup.apply(&map(&[("c", &value.text)])).await;
        let id = sup.ids()["c"];
        let running = wait_until(WAIT, || async {
            h.node("c")
                .is_some_and(|n| n.id == id && n.phase == Phase::Running)
        })
        .await;
        assert!(
            running,
            "{gateway_type} round {round}: not Running: {:?}",
            h.node("c")
        );
        // Drain what the previous round left.
        while h.try_next_event().is_some() {}
        trigger(&case, value, round as u32).await;
        let ce = h
            .next_event(WAIT)
            .await
            .unwrap_or_else(|| panic!("{gateway_type} round {round}: no event"));
        assert_eq!(ce.source, "compliance/c");
        assert_eq!(ce.ty, gateway_type);
        let _ = data(&ce); // JSON payload
        if round == 0 {
            // The check below can fail: a running configuration holds tasks.
            assert!(tasks() > baseline, "{gateway_type}: no task while running?");
            if gateway_type != "calendar" {
                assert!(
                    sockets_and_watches() > fds_baseline,
                    "{gateway_type}: no socket or watch while running?"
                );
            }
        }
        if round == 1 {
            for p in &case.valid.ports {
                assert!(
                    port_is_free(*p),
                    "{gateway_type}: the old port {p} is released after the change"
                );
            }
        }
    }

    // stop leaves no task, socket or port behind.
    sup.stop_all().await;
    assert!(h.node("c").is_none(), "{gateway_type}: node removed");
    let back = wait_until(WAIT, || async { tasks() <= baseline }).await;
    assert!(
        back,
        "{gateway_type}: {} tasks alive after stop, {baseline} before",
        tasks()
    );
    for p in case.valid.ports.iter().chain(&case.changed.ports) {
        assert!(
            port_is_free(*p),
            "{gateway_type}: port {p} is released after stop"
        );
    }
    let closed = wait_until(WAIT, || async { sockets_and_watches() <= fds_baseline }).await;
    assert!(
        closed,
        "{gateway_type}: {} sockets and file watches open after stop, {fds_baseline} before",
        sockets_and_watches()
    );
}

/// Open sockets and inotify instances of this process.
fn sockets_and_watches() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| {
            let t = target.to_string_lossy();
            t.starts_with("socket:") || t.contains("inotify")
        })
        .count()
}

#[test]
fn every_builtin_gateway_complies() {
    let missing: Vec<&str> = BUILTIN_TYPES
        .iter()
        .copied()
        .filter(|t| case(t).is_none())
        .collect();
    assert!(missing.is_empty(), "add a compliance case for {missing:?}");
    for gateway_type in BUILTIN_TYPES {
        let case = case(gateway_type).unwrap();
        // A runtime per gateway, so that its task count is this gateway's alone.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(run_case(gateway_type, case));
    }
}
