//! The status page at `/` of the transformer's port, in headless Chromium: the real `portico`
//! binary runs a calendar gateway with a URL watcher, Debian's `chromedriver` drives Debian's
//! `chromium` (both installed by `scripts/test`), and the test checks what a person would see:
//! the page loads with no console error, every node is shown with its phase, a configuration
//! that becomes invalid turns red within two seconds, an event posted during the test shows
//! up in the live tail (and its filter keeps only it), the charts have data, the page fits a
//! phone's width. With `PORTICO_BLESS=1` it writes the screenshot the docs show
//! (docs/images/status-page.png).
//!
//! The browser is driven with WebDriver's JSON wire protocol through reqwest (a dozen
//! commands), which needs no other crate and reads chromedriver's browser log directly.
//! Without chromedriver or chromium the test fails, saying how to get them.

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Behaviour, GatewayFileBuilder, Portico, Sink, eventually_async, replace_file};

const WAIT: Duration = Duration::from_secs(30);
/// How long after `/status` shows a node in Error its row may take to turn red.
const RED_WITHIN: Duration = Duration::from_secs(2);
/// The Error phase's colour on the page (`--error`).
const RED: &str = "rgb(207, 34, 46)";
/// The Running phase's colour on the page (`--running`).
const GREEN: &str = "rgb(26, 127, 55)";

/// A program the test needs: `$VAR`, else `default`; fails the test when it is not there.
fn needed(var: &str, default: &str, what: &str) -> PathBuf {
    let path = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default));
    assert!(
        path.is_file(),
        "{what} is missing: {} does not exist. Run scripts/test, which installs Debian's \
         `chromium` and `chromium-driver` (or `apt-get install chromium chromium-driver`), or \
         set {var} to the program",
        path.display()
    );
    path
}

use support::free_port;

/// `chromedriver` in a process group of its own, so that it and the browsers it starts
/// are all killed on drop, whatever happened to the test.
struct ChromeDriver {
    child: tokio::process::Child,
    url: String,
    http: reqwest::Client,
}

impl ChromeDriver {
    async fn start(bin: &Path) -> ChromeDriver {
        let port = free_port();
        let child = tokio::process::Command::new(bin)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let driver = ChromeDriver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        };
        let ready = eventually_async(WAIT, || async {
            let r = driver
                .http
                .get(format!("{}/status", driver.url))
                .send()
                .await;
            let v: Value = r.ok()?.json().await.ok()?;
            (v["value"]["ready"] == true).then_some(())
        })
        .await;
        assert!(
            ready.is_some(),
            "chromedriver did not get ready on port {port}"
        );
        driver
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            // The whole group: chromedriver and every browser process it started.
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
        }
    }
}

/// One browser session.
struct Browser<'a> {
    driver: &'a ChromeDriver,
    session: String,
}

impl<'a> Browser<'a> {
    async fn open(driver: &'a ChromeDriver, chromium: &Path) -> Browser<'a> {
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                    "--disable-dev-shm-usage", "--window-size=1280,1800",
                    "--force-device-scale-factor=1", "--lang=en-US"],
            },
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let r: Value = driver
            .http
            .post(format!("{}/session", driver.url))
            .json(&caps)
            .send()
            .await
            .expect("POST /session")
            .json()
            .await
            .expect("a JSON answer to POST /session");
        let session = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("chromedriver started no browser: {r:#}"))
            .to_string();
        Browser { driver, session }
    }

    /// A WebDriver command of this session; its `value`.
    async fn cmd(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{}", self.driver.url, self.session, path);
        let mut req = self.driver.http.request(method.clone(), &url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = r.status();
        let v: Value = r
            .json()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert!(status.is_success(), "{method} {path}: {status} {v:#}");
        v["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.cmd(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) in the page.
    async fn js(&self, script: &str, args: Value) -> Value {
        self.cmd(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    /// The element matching `css`, as WebDriver's reference to it.
    async fn find(&self, css: &str) -> String {
        let v = self
            .cmd(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v.as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_string()
    }

    /// Types `text` into the element matching `css`, as a person would.
    async fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{e}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    async fn click(&self, css: &str) {
        let e = self.find(css).await;
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{e}/click"),
            Some(json!({})),
        )
        .await;
    }

    /// The browser's console since the last call (chromedriver's log of type `browser`).
    async fn console(&self) -> Vec<Value> {
        self.cmd(
            reqwest::Method::POST,
            "/se/log",
            Some(json!({"type": "browser"})),
        )
        .await
        .as_array()
        .cloned()
        .unwrap_or_default()
    }

    async fn resize(&self, width: u32, height: u32) {
        self.cmd(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .await;
    }

    /// A PNG of the window.
    async fn screenshot(&self) -> Vec<u8> {
        use base64::Engine;
        let v = self.cmd(reqwest::Method::GET, "/screenshot", None).await;
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("a base64 screenshot"))
            .expect("the screenshot is base64")
    }

    /// Polls `script` until it returns something other than `null` or `false`.
    async fn wait_js(&self, what: &str, script: &str, args: Value) -> Value {
        let found = eventually_async(WAIT, || async {
            let v = self.js(script, args.clone()).await;
            (!v.is_null() && v != false).then_some(v)
        })
        .await;
        match found {
            Some(v) => v,
            None => panic!(
                "the page did not show {what} within {WAIT:?}; it shows:\n{}",
                self.js("return document.body.innerText", json!([])).await
            ),
        }
    }

    async fn close(self) {
        let _ = self
            .driver
            .http
            .delete(format!("{}/session/{}", self.driver.url, self.session))
            .send()
            .await;
    }
}

/// The node rows of the page: name → (phase attribute, badge text, badge colour, row class).
const NODE_ROWS: &str = r#"
return Array.from(document.querySelectorAll('#nodes tbody tr[data-node]')).map((tr) => {
  const badge = tr.querySelector('.phase');
  return {name: tr.dataset.node, phase: tr.dataset.phase, badge: badge.textContent,
    colour: getComputedStyle(badge).backgroundColor, rowClass: tr.className,
    message: tr.querySelector('td.msg').textContent};
});"#;

/// The charts: key → number of samples and whether the line rises above zero somewhere.
const CHARTS: &str = r#"
const out = {};
for (const svg of document.querySelectorAll('svg[data-chart]')) {
  const d = svg.querySelector('path.line').getAttribute('d') || '';
  const ys = Array.from(d.matchAll(/[ML]\s*[-\d.]+\s+([-\d.]+)/g), (m) => Number(m[1]));
  out[svg.dataset.chart] = {points: Number(svg.dataset.points), vertices: ys.length,
    nonZero: ys.some((y) => y < 28.5)};
}
return out;"#;

fn configurations(flaky: &str) -> GatewayFileBuilder {
    GatewayFileBuilder::new("status-demo", "calendar")
        .config("every-250ms", "interval: 250ms")
        .config("every-500ms", "interval: 500ms")
        .config("every-second", "interval: 1s")
        .config("flaky", flaky)
}

#[tokio::test]
async fn the_status_page_shows_nodes_errors_events_and_charts_in_chromium() {
    let chromedriver = needed(
        "PORTICO_CHROMEDRIVER",
        "/usr/bin/chromedriver",
        "chromedriver",
    );
    let chromium = needed("PORTICO_CHROMIUM", "/usr/bin/chromium", "Chromium");

    let sink = Sink::start(Behaviour::Ok).await;
    let gateway = configurations("interval: 1s").watchers(&[sink.url()]);
    let (_dir, file) = gateway.write();
    let portico = Portico::run(&file).await;
    for name in ["every-250ms", "every-500ms", "every-second", "flaky"] {
        portico.wait_for_phase(name, "Running", WAIT).await;
    }

    let driver = ChromeDriver::start(&chromedriver).await;
    let browser = Browser::open(&driver, &chromium).await;
    browser.goto(&portico.url("/")).await;

    // The gateway, and every node with its phase, as /status has them.
    let name = browser
        .wait_js(
            "the gateway's name",
            "const t = document.getElementById('gw-name').textContent; return t === 'status-demo' ? t : null;",
            json!([]),
        )
        .await;
    assert_eq!(name, "status-demo");
    let status = portico.status().await;
    let want: Vec<(String, String)> = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap().to_string(),
                n["phase"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(want.len(), 4, "{status:#}");
    let rows = browser
        .wait_js(
            "every node",
            &format!("const rows = (function () {{ {NODE_ROWS} }})(); return rows.length === {} ? rows : null;", want.len()),
            json!([]),
        )
        .await;
    for (name, phase) in &want {
        let row = rows
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name.as_str())
            .unwrap_or_else(|| panic!("no row for node {name}: {rows:#}"));
        assert_eq!(row["phase"], phase.as_str(), "{row}");
        assert_eq!(row["badge"], phase.as_str(), "{row}");
        assert_eq!(row["colour"], GREEN, "a Running node is green: {row}");
    }
    let header = browser
        .js(
            "return ['gw-namespace','gw-type','gw-processor','gw-replica','gw-watchers'].map((id) => document.getElementById(id).textContent);",
            json!([]),
        )
        .await;
    assert_eq!(header[0], "default", "{header}");
    assert_eq!(header[1], "calendar", "{header}");
    assert_eq!(header[3], status["gateway"]["replica"], "{header}");

    // A configuration becomes invalid: once /status says Error, its row is red within 2 s.
    replace_file(
        &file,
        &configurations("interval: nope")
            .watchers(&[sink.url()])
            .render(),
    );
    portico.wait_for_phase("flaky", "Error", WAIT).await;
    let erred = Instant::now();
    let red = eventually_async(WAIT, || async {
        let rows = browser
            .js(
                &format!("return (function () {{ {NODE_ROWS} }})();"),
                json!([]),
            )
            .await;
        let row = rows
            .as_array()?
            .iter()
            .find(|r| r["name"] == "flaky")?
            .clone();
        (row["phase"] == "Error" && row["colour"] == RED && row["rowClass"] == "phase-Error")
            .then_some(row)
    })
    .await
    .expect("the flaky node's row turns red");
    let took = erred.elapsed();
    eprintln!("the row turned red {took:?} after /status showed Error");
    assert!(
        took <= RED_WITHIN,
        "the row turned red {took:?} after /status showed Error (at most {RED_WITHIN:?}): {red}"
    );
    assert!(
        red["message"].as_str().unwrap().contains("interval"),
        "the row says why: {red}"
    );

    // An event posted now shows in the live tail; the filter keeps only it.
    let id = format!("status-page-test-{}", uuid::Uuid::new_v4());
    let posted = portico
        .http
        .post(portico.url("/"))
        .header("content-type", "application/cloudevents+json")
        .body(
            json!({"specversion": "1.0", "id": id, "source": "status-page-test",
                "type": "dev.portico.test.posted", "subject": "from the browser test",
                "datacontenttype": "application/json", "data": {"hello": "status page"}})
            .to_string(),
        )
        .send()
        .await
        .expect("POST /");
    assert_eq!(posted.status(), 200, "{:?}", posted.text().await);
    let selector = format!("#tail li[data-event-id=\"{id}\"]");
    browser
        .wait_js(
            "the posted event in the live tail",
            "return document.querySelector(arguments[0]) !== null;",
            json!([selector]),
        )
        .await;
    browser.type_into("#tail-filter", &id).await;
    let shown = browser
        .wait_js(
            "only the posted event with the filter",
            "const ids = Array.from(document.querySelectorAll('#tail li'), (li) => li.dataset.eventId); return ids.length === 1 ? ids : null;",
            json!([]),
        )
        .await;
    assert_eq!(shown, json!([id]));
    // A click shows the event's JSON.
    browser.click(&format!("{selector} button")).await;
    let expanded = browser
        .wait_js(
            "the posted event's JSON",
            "const pre = document.querySelector(arguments[0] + ' pre'); return pre ? pre.textContent : null;",
            json!([selector]),
        )
        .await;
    let expanded: Value = serde_json::from_str(expanded.as_str().unwrap()).expect("JSON");
    assert_eq!(expanded["id"], id.as_str());
    assert_eq!(expanded["data"]["hello"], "status page");
    browser.click(&format!("{selector} button")).await;
    browser
        .js(
            "const f = document.getElementById('tail-filter'); f.value = ''; f.dispatchEvent(new Event('input'));",
            json!([]),
        )
        .await;

    // The charts have data: several samples, and events counted.
    let charts = browser
        .wait_js(
            "charts with data",
            &format!(
                "const c = (function () {{ {CHARTS} }})(); const ok = (k) => c[k] && c[k].points >= 3 && c[k].vertices >= 3 && c[k].nonZero; \
                 return ok('total') && ok('configuration:every-250ms') && ok('watcher:' + arguments[0]) ? c : null;"
            ),
            json!([status["gateway"]["watchers"][0]]),
        )
        .await;
    eprintln!("charts: {charts}");
    let counters = browser
        .js(
            "return ['rate-total', 'outbox-bytes', 'queue-depth', 'dead-letters', 'count-Running', 'count-Error'].map((id) => document.getElementById(id).textContent);",
            json!([]),
        )
        .await;
    assert_eq!(counters[4], "3", "{counters}");
    assert_eq!(counters[5], "1", "{counters}");
    assert_eq!(counters[3], "0", "{counters}");
    assert!(
        counters[1].as_str().unwrap().ends_with('B'),
        "the outbox's size: {counters}"
    );

    // The screenshot the docs show.
    browser.js("window.scrollTo(0, 0);", json!([])).await;
    let png = browser.screenshot().await;
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    // Into the docs with PORTICO_BLESS=1; beside the test's other files otherwise, so that a
    // test run leaves the work tree as it was.
    let dir = if std::env::var_os("PORTICO_BLESS").is_some() {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/images")
    } else {
        Path::new(env!("CARGO_TARGET_TMPDIR")).to_path_buf()
    };
    std::fs::create_dir_all(&dir).expect("the screenshot's directory");
    std::fs::write(dir.join("status-page.png"), &png).expect("write the screenshot");

    // On a phone: nothing wider than the screen (tables scroll in their own box).
    browser.resize(390, 844).await;
    let overflow = browser
        .wait_js(
            "the phone layout",
            "return window.innerWidth <= 420 ? [document.documentElement.scrollWidth, window.innerWidth] : null;",
            json!([]),
        )
        .await;
    assert!(
        overflow[0].as_u64() <= overflow[1].as_u64(),
        "the page is wider than a phone's screen: {overflow}"
    );

    // No console error from start to end.
    let console = browser.console().await;
    for entry in &console {
        eprintln!("console: {entry}");
    }
    let severe: Vec<&Value> = console.iter().filter(|e| e["level"] == "SEVERE").collect();
    assert!(severe.is_empty(), "console errors: {severe:#?}");

    // The gateway stops at once with the page open: the live tail's stream ends with the
    // server rather than holding its drain.
    let stopping = Instant::now();
    assert_eq!(portico.terminate().await, Some(0));
    assert!(
        stopping.elapsed() < Duration::from_secs(3),
        "the gateway took {:?} to stop with the status page open",
        stopping.elapsed()
    );
    browser.close().await;
    drop(driver);
}
