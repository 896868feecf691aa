//! Redaction as a rule: a secret is planted in every place one can be configured (watcher URLs'
//! passwords and tokens, a watcher's bearer token file and a header from the environment, a
//! dead-letter URL's password, webhook and GitHub secrets, a GitHub API token, broker URLs'
//! passwords, the ingest token), the real `portico` binary runs each kind of gateway in a (fake)
//! cluster with logs at trace level, and every output is searched for them: the logs in text
//! and in JSON, stdout, `/status`, `/metrics`, the Events and `status.nodes` written to the API
//! server, and the dead letters.
//! Each run also checks that the places were really used (the credentials were sent, the
//! dead letters written, the errors reported), so that the search is not over nothing.

mod support;

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderMap, StatusCode};
use fake_kube::FakeKube;
use serde_json::{Value, json};
use support::{Behaviour, Portico, Sink, eventually, eventually_async};

const WAIT: Duration = Duration::from_secs(30);
const GW: &str = "portico.dev/v1alpha1";

/// Every planted secret: each is unique and appears nowhere but where it is configured.
const SECRETS: &[&str] = &[
    "planted-url-password-1",
    "planted-url-query-2",
    "planted-bearer-3",
    "planted-header-env-4",
    "planted-deadletter-password-5",
    "planted-webhook-secret-6",
    "planted-github-secret-7",
    "planted-github-token-8",
    "planted-amqp-password-9",
    "planted-redis-password-10",
    "planted-ingest-token-11",
];

/// A GitHub API that refuses every hook and echoes the whole request in its message.
async fn echoing_api() -> (String, tokio::task::JoinHandle<()>) {
    async fn echo(headers: HeaderMap, body: String) -> (StatusCode, Json<Value>) {
        let sent: Vec<String> = headers
            .iter()
            .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or("")))
            .collect();
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"message": format!("Validation Failed: {body} with {}", sent.join(", "))})),
        )
    }
    let app = axum::Router::new().fallback(echo);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), task)
}

use support::free_port;

async fn get_text(p: &Portico, path: &str) -> String {
    p.http
        .get(p.url(path))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Fails naming the place and the lines when a planted secret shows in an output.
fn search(outputs: &[(String, String)]) {
    for (place, text) in outputs {
        for secret in SECRETS {
            assert!(
                !text.contains(secret),
                "`{secret}` shows in {place}:\n{}",
                text.lines()
                    .filter(|l| l.contains(secret))
                    .take(5)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
}

/// A gateway run by the real binary in a fake cluster, logging at trace level.
struct Run {
    p: Portico,
    fake: FakeKube,
    name: String,
    _kubeconfig: tempfile::TempDir,
}

impl Run {
    async fn start(
        name: &str,
        spec: Value,
        data: Value,
        args: &[&str],
        envs: &[(&str, &str)],
        log_format: &str,
    ) -> Run {
        let fake = FakeKube::start().await;
        fake.create(json!({
            "apiVersion": GW, "kind": "Gateway",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": spec,
        }));
        let cm = format!("{name}-cm");
        fake.create(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": cm, "namespace": "ns"},
            "data": data,
        }));
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, fake.kubeconfig()).unwrap();
        let mut all_args = vec!["run"];
        all_args.extend_from_slice(args);
        let mut all_envs = vec![
            ("KUBECONFIG", kubeconfig.to_str().unwrap()),
            ("GATEWAY_NAMESPACE", "ns"),
            ("GATEWAY_NAME", name),
            ("GATEWAY_PROCESSOR_CONFIG_MAP", cm.as_str()),
            ("PORTICO_LOG_FORMAT", log_format),
            ("PORTICO_LOG", "trace"),
        ];
        all_envs.extend_from_slice(envs);
        let p = Portico::start(&all_args, &all_envs).await;
        Run {
            p,
            fake,
            name: name.to_string(),
            _kubeconfig: dir,
        }
    }

    /// Waits until node `src` is in Error with a message `ok` accepts; the message.
    async fn error_node(&self, src: &str, ok: impl Fn(&str) -> bool) -> String {
        let found = eventually_async(WAIT, || async {
            let node = self.p.node(src).await?;
            let message = node["message"].as_str()?.to_string();
            (node["phase"] == "Error" && ok(&message)).then_some(message)
        })
        .await;
        match found {
            Some(m) => m,
            None => panic!("node `{src}`: {:?}", self.p.node(src).await),
        }
    }

    /// Every output of the gateway, by place, once its Events and nodes are written.
    async fn outputs(&self, log_format: &str) -> Vec<(String, String)> {
        let events = eventually(WAIT, || {
            let e = self.fake.list("v1", "Event", "ns");
            (!e.is_empty()).then_some(e)
        })
        .await
        .expect("Events were written");
        let gateway = eventually(WAIT, || {
            self.fake.get(GW, "Gateway", "ns", &self.name).filter(|g| {
                g["status"]["nodes"]
                    .as_object()
                    .is_some_and(|n| !n.is_empty())
            })
        })
        .await
        .expect("status.nodes was written");
        let logs = self.p.stderr.all().join("\n");
        assert!(logs.lines().count() > 50, "trace logs were written");
        let at = |place: &str| format!("{place} of gateway `{}`", self.name);
        vec![
            (at(&format!("the {log_format} logs")), logs),
            (at("stdout"), self.p.stdout.all().join("\n")),
            (at("/status"), self.p.status().await.to_string()),
            (at("/metrics"), get_text(&self.p, "/metrics").await),
            (at("the Events"), Value::Array(events).to_string()),
            (at("status"), gateway["status"].to_string()),
        ]
    }
}

/// Watchers with credentials in every form, a signed webhook and the ingest token.
async fn watchers_and_webhook(log_format: &str) {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let bearer = write("bearer", "planted-bearer-3\n");
    let webhook_secret = write("webhook-secret", "planted-webhook-secret-6\n");
    let ingest_token = write("ingest-token", "planted-ingest-token-11\n");
    let dead_letters = dir.path().join("dead-letters.jsonl");
    let ok = Sink::start(Behaviour::Ok).await;
    let basic = Sink::start(Behaviour::Ok).await;
    // A receiver that refuses everything for good: its events become dead letters.
    let refusing = Sink::start(Behaviour::Script(vec![400; 1000])).await;
    let dead_letter_sink = Sink::start(Behaviour::Ok).await;
    let hook_port = free_port();
    let run = Run::start(
        "watchers",
        json!({
            "type": "webhook", "configMap": "watchers-cm",
            "delivery": {"mode": "atMostOnce", "retry": {"maxAttempts": 1}},
            "watchers": {"urls": [
                {"url": format!("http://{}/in?token=planted-url-query-2", ok.addr),
                 "bearerTokenFile": bearer,
                 "headers": [{"name": "X-Api-Key", "valueEnv": "PLANTED_HEADER"}]},
                format!("http://user:planted-url-password-1@{}/in", basic.addr),
                {"url": refusing.url(),
                 "deadLetter": {"url": format!("http://dl:planted-deadletter-password-5@{}/dl", dead_letter_sink.addr)}},
                {"url": format!("{}?api_key=planted-url-query-2", refusing.url()),
                 "deadLetter": {"file": dead_letters.display().to_string()}},
            ]},
        }),
        json!({"hook": format!("port: {hook_port}\nendpoint: /in\nsecretFile: {webhook_secret}")}),
        &["--ingest-token-file", &ingest_token],
        &[("PLANTED_HEADER", "planted-header-env-4")],
        log_format,
    )
    .await;
    let p = &run.p;
    p.wait_for_phase("hook", "Running", WAIT).await;

    // An event through the ingest API with its token, and a signed webhook delivery.
    let r = p
        .http
        .post(p.url("/"))
        .bearer_auth("planted-ingest-token-11")
        .header("content-type", "application/json")
        .body(json!({"src": "hook", "payload": "eyJuIjoxfQ=="}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = br#"{"n":2}"#;
    let r = p
        .http
        .post(format!("http://127.0.0.1:{hook_port}/in"))
        .header(
            "x-hub-signature-256",
            portico_gateways::webhook::sign_hmac_sha256(b"planted-webhook-secret-6", body),
        )
        .body(&body[..])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // The secrets were used: the credentials and headers were sent, the dead letters written.
    ok.wait_for_events(2, WAIT).await;
    let sent = &ok.received()[0].headers;
    assert_eq!(sent["authorization"], "Bearer planted-bearer-3");
    assert_eq!(sent["x-api-key"], "planted-header-env-4");
    basic.wait_for_events(2, WAIT).await;
    assert!(
        basic.received()[0].headers["authorization"]
            .to_str()
            .unwrap()
            .starts_with("Basic ")
    );
    dead_letter_sink.wait_for_events(2, WAIT).await;
    assert!(
        dead_letter_sink.received()[0].headers["authorization"]
            .to_str()
            .unwrap()
            .starts_with("Basic ")
    );
    let dead_file = eventually(WAIT, || {
        std::fs::read_to_string(&dead_letters)
            .ok()
            .filter(|t| t.lines().count() >= 2)
    })
    .await
    .expect("two dead letters in the file");

    let mut outputs = run.outputs(log_format).await;
    outputs.push(("the dead-letter file".into(), dead_file));
    outputs.push((
        "the dead letters sent".into(),
        dead_letter_sink
            .events()
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n"),
    ));
    search(&outputs);
}

/// A GitHub configuration whose API refuses the hook and echoes the request.
async fn github_registration(log_format: &str) {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "planted-github-token-8\n").unwrap();
    let (api, api_task) = echoing_api().await;
    let run = Run::start(
        "github",
        json!({"type": "github", "configMap": "github-cm"}),
        json!({"repo": format!(
            "port: {}\nendpoint: /gh\nsecretEnv: PLANTED_GITHUB_SECRET\nregister:\n  repository: acme/widgets\n  url: https://hooks.example/gh\n  tokenFile: {}\n  apiUrl: {api}",
            free_port(),
            token.display()
        )}),
        &[],
        &[("PLANTED_GITHUB_SECRET", "planted-github-secret-7")],
        log_format,
    )
    .await;
    // The API's message is shown (it says what was wrong), its echo of the secrets is not.
    run.error_node("repo", |m| {
        m.contains("422") && m.contains("Validation Failed")
    })
    .await;
    search(&run.outputs(log_format).await);
    api_task.abort();
}

/// Broker configurations whose URLs carry passwords: one cannot connect, one is malformed.
async fn broker_urls(gateway_type: &str, log_format: &str) {
    let closed = free_port();
    let (good, bad) = match gateway_type {
        "amqp" => (
            format!(
                "url: amqp://guest:planted-amqp-password-9@127.0.0.1:{closed}/\nexchangeName: x\nexchangeType: fanout"
            ),
            "url: \"amqp://guest:planted-amqp-password-9@\"\nexchangeName: x\nexchangeType: fanout"
                .to_string(),
        ),
        _ => (
            format!("url: redis://:planted-redis-password-10@127.0.0.1:{closed}/\nchannels: [c]"),
            "url: \"ftp://:planted-redis-password-10@h/\"\nchannels: [c]".to_string(),
        ),
    };
    let run = Run::start(
        gateway_type,
        json!({"type": gateway_type, "configMap": format!("{gateway_type}-cm")}),
        json!({"unreachable": good, "malformed": bad}),
        &[],
        &[],
        log_format,
    )
    .await;
    // Both fail, and say which URL: with its password hidden.
    run.error_node("unreachable", |m| m.contains("****")).await;
    run.error_node("malformed", |m| m.contains("url")).await;
    search(&run.outputs(log_format).await);
}

async fn every_place(log_format: &str) {
    watchers_and_webhook(log_format).await;
    github_registration(log_format).await;
    broker_urls("amqp", log_format).await;
    broker_urls("redis", log_format).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_planted_secret_shows_in_text_logs_or_anywhere_else() {
    every_place("text").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_planted_secret_shows_in_json_logs_or_anywhere_else() {
    every_place("json").await;
}
