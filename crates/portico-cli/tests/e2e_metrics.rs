//! `/metrics` in both formats a scraper may ask for, checked by Prometheus's own tools: the
//! text format 0.0.4 (what a scraper gets without asking for OpenMetrics) passes `promtool
//! check metrics` with no problem at all, and the OpenMetrics text (what Prometheus asks for
//! first) is scraped by a real Prometheus server with no error. promtool itself has no
//! OpenMetrics parser: it reads every input as the text format 0.0.4, where an OpenMetrics
//! counter's `_total` samples have no HELP of their own.
//!
//! promtool and prometheus come from Debian's `prometheus` package (`scripts/test` installs
//! it); `PORTICO_PROMTOOL` and `PORTICO_PROMETHEUS` name other binaries.

mod support;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use support::{Behaviour, GatewayFileBuilder, PROMETHEUS_ACCEPT, Portico, Sink, eventually_async};

const WAIT: Duration = Duration::from_secs(30);

fn tool(var: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default));
    assert!(
        path.exists(),
        "{} is missing: run scripts/test, which installs Debian's `prometheus` package (or set {var})",
        path.display()
    );
    path
}

/// A gateway with a watcher that took some events, so that every family has samples.
async fn busy_gateway(sink: &Sink) -> (tempfile::TempDir, Portico) {
    let (dir, file) = GatewayFileBuilder::new("metrics", "independent-example")
        .watchers(&[sink.url()])
        .write();
    let portico = Portico::run(&file).await;
    for i in 0..3 {
        let r = portico
            .http
            .post(portico.url("/"))
            .body(format!(r#"{{"src": "s{i}", "payload": "aGk="}}"#))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    sink.wait_for_events(3, WAIT).await;
    (dir, portico)
}

async fn scrape(portico: &Portico, accept: Option<&str>) -> (String, String) {
    let mut req = portico.http.get(portico.url("/metrics"));
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    (ct, r.text().await.unwrap())
}

#[tokio::test]
async fn the_text_format_passes_promtool_with_no_problem() {
    let promtool = tool("PORTICO_PROMTOOL", "/usr/bin/promtool");
    let sink = Sink::start(Behaviour::Ok).await;
    let (_dir, portico) = busy_gateway(&sink).await;
    for accept in [None, Some("text/plain;version=0.0.4"), Some("*/*")] {
        let (ct, text) = scrape(&portico, accept).await;
        assert_eq!(ct, "text/plain; version=0.0.4; charset=utf-8", "{accept:?}");
        assert!(
            text.contains("portico_events_received_total{src=\"s0\"} 1"),
            "{text}"
        );
        assert!(!text.contains("# EOF"), "{text}");
        let mut child = std::process::Command::new(&promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), text.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && said.trim().is_empty(),
            "promtool check metrics: {:?}\n{said}\non:\n{text}",
            out.status
        );
    }
}

#[tokio::test]
async fn prometheus_scrapes_the_openmetrics_text_with_no_error() {
    let prometheus = tool("PORTICO_PROMETHEUS", "/usr/bin/prometheus");
    let sink = Sink::start(Behaviour::Ok).await;
    let (_dir, portico) = busy_gateway(&sink).await;
    let (ct, text) = scrape(&portico, Some(PROMETHEUS_ACCEPT)).await;
    assert_eq!(
        ct,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(text.ends_with("# EOF\n"), "{text}");

    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s, scrape_timeout: 1s}}\nscrape_configs:\n  - job_name: portico\n    static_configs: [{{targets: [\"{}\"]}}]\n",
            portico.addr
        ),
    )
    .unwrap();
    // Prometheus has no "pick a free port": take one and hand it over.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _server = tokio::process::Command::new(&prometheus)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            data.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let api = |path: &str| format!("http://127.0.0.1:{port}/api/v1/{path}");
    let http = reqwest::Client::new();
    let get = |url: String| {
        let http = http.clone();
        async move {
            let r = http.get(url).send().await.ok()?;
            r.json::<serde_json::Value>().await.ok()
        }
    };
    // A scrape that went well: the target is up with no error.
    let target = eventually_async(WAIT, || async {
        let v = get(api("targets")).await?;
        let t = v["data"]["activeTargets"].get(0)?.clone();
        (t["health"] != "unknown").then_some(t)
    })
    .await
    .expect("prometheus scraped the gateway");
    assert_eq!(target["health"], "up", "{target}");
    assert_eq!(target["lastError"], "", "{target}");
    // What it stored is what was counted.
    let value = eventually_async(WAIT, || async {
        let v = get(api(
            "query?query=portico_events_received_total%7Bsrc%3D%22s0%22%7D",
        ))
        .await?;
        v["data"]["result"].get(0)?["value"][1]
            .as_str()
            .map(String::from)
    })
    .await
    .expect("the sample is in prometheus");
    assert_eq!(value, "1");
    // It read OpenMetrics: a counter's metadata is under its family's name, without `_total`
    // (the text format names it by its samples).
    let meta = eventually_async(WAIT, || async {
        let v = get(api("metadata?metric=portico_events_received")).await?;
        v["data"]["portico_events_received"].get(0).cloned()
    })
    .await
    .expect("the counter's metadata is under its OpenMetrics family name");
    assert_eq!(meta["type"], "counter", "{meta}");
    assert!(
        meta["help"]
            .as_str()
            .is_some_and(|h| h.starts_with("Events produced")),
        "{meta}"
    );
}
