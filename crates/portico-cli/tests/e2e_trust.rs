//! End to end, the failures an attacker or an unlucky operator meets, each as it was found and
//! how it is handled now, with the real `portico` binary: signals (SIGHUP reloads, SIGUSR1
//! drains, a second SIGTERM ends the drain and says exactly what is left where), a watcher whose
//! address changed (its pending events are not stranded), redirects and credentials of
//! watchers, slow and idle clients of the ingest API, gateway files that are not files, junk
//! source names, the ingest API's token, webhooks anyone can post to, and watcher tokens and
//! headers read from files and the environment.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine;
use support::{Behaviour, GatewayFileBuilder, Portico, Sink, eventually, eventually_async};

const WAIT: Duration = Duration::from_secs(20);

fn body(src: &str, n: usize) -> String {
    let payload = base64::engine::general_purpose::STANDARD.encode(format!("{{\"n\":{n}}}"));
    format!("{{\"src\":\"{src}\",\"payload\":\"{payload}\",\"contentType\":\"application/json\"}}")
}

/// Posts events `0..n` of `src` one by one; each must be answered 200.
async fn post(p: &Portico, src: &str, n: usize) {
    for i in 0..n {
        let r = p
            .http
            .post(p.url("/"))
            .header("content-type", "application/json")
            .body(body(src, i))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "event {i}: {:?}", r.text().await);
    }
}

/// The `n` of every event a sink took, sorted.
fn numbers(sink: &Sink) -> Vec<u64> {
    let mut n: Vec<u64> = sink
        .events()
        .iter()
        .filter_map(|e| e["data"]["n"].as_u64())
        .collect();
    n.sort();
    n
}

/// The log lines (JSON) with `message` in them.
fn logged(p: &Portico, message: &str) -> Vec<serde_json::Value> {
    p.stderr
        .containing(message)
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[tokio::test]
async fn sigusr1_drains_like_sigterm_and_loses_no_accepted_event() {
    // A slow watcher: when the signal comes, most accepted events are still in the queue.
    let sink = Sink::start(Behaviour::Slow(Duration::from_millis(30))).await;
    let file = GatewayFileBuilder::new("usr1", "independent")
        .watchers(&[sink.url()])
        .spec_lines("  delivery: {mode: atMostOnce, concurrency: 1}")
        .write();
    let mut p = Portico::start(
        &["run", file.1.to_str().unwrap(), "--drain-timeout", "60s"],
        &[],
    )
    .await;
    post(&p, "s", 30).await;
    p.signal("USR1");
    assert_eq!(p.wait_exit(WAIT).await, Some(0), "a graceful exit");
    assert_eq!(numbers(&sink), (0..30).collect::<Vec<_>>());
    assert!(
        !logged(&p, "stop signal received").is_empty()
            && logged(&p, "stop signal received")[0]["signal"] == "SIGUSR1"
    );
}

#[tokio::test]
async fn a_second_sigterm_ends_the_drain_and_says_how_many_events_stay_in_the_outbox() {
    let hang = Sink::start(Behaviour::Hang).await;
    let file = GatewayFileBuilder::new("hurry", "independent")
        .watchers(&[hang.url()])
        .spec_lines("  delivery: {timeout: 60s}")
        .write();
    let outbox = tempfile::tempdir().unwrap();
    let outbox_dir = outbox.path().to_str().unwrap().to_string();
    let mut p = Portico::start(
        &["run", file.1.to_str().unwrap(), "--drain-timeout", "120s"],
        &[("PORTICO_OUTBOX_DIR", &outbox_dir)],
    )
    .await;
    post(&p, "s", 20).await;
    p.signal("TERM");
    eventually(WAIT, || {
        (!logged(&p, "stopping the configurations").is_empty()
            || !logged(&p, "stop signal received").is_empty())
        .then_some(())
    })
    .await
    .expect("the first SIGTERM is taken");
    let before = Instant::now();
    p.signal("TERM");
    assert_eq!(p.wait_exit(WAIT).await, Some(0));
    assert!(
        before.elapsed() < Duration::from_secs(15),
        "the drain was not cut short"
    );
    // The process has exited; its last lines may still be on their way through the pipe.
    let left = eventually(WAIT, || {
        let l = logged(&p, "stay in the outbox");
        (!l.is_empty()).then_some(l)
    })
    .await
    .unwrap_or_default();
    assert_eq!(left.len(), 1, "{:?}", p.stderr.all());
    assert_eq!(left[0]["events"], 20);
    assert_eq!(left[0]["outbox"], outbox_dir);
    // They are where the log says: the next start delivers them.
    drop(hang);
    // The watcher moved to another address and says so: its pending events follow it.
    let sink = Sink::start(Behaviour::Ok).await;
    let restarted = GatewayFileBuilder::new("hurry", "independent")
        .watchers(&[sink.url()])
        .write();
    std::fs::write(
        &restarted.1,
        std::fs::read_to_string(&restarted.1).unwrap().replace(
            &format!("      - \"{}\"\n", sink.url()),
            &format!(
                "      - {{url: \"{}\", movedFrom: \"{}\"}}\n",
                sink.url(),
                hang_url_of(&file.1)
            ),
        ),
    )
    .unwrap();
    let _p = Portico::start(
        &["run", restarted.1.to_str().unwrap()],
        &[("PORTICO_OUTBOX_DIR", &outbox_dir)],
    )
    .await;
    sink.wait_for_events(20, WAIT).await;
    assert_eq!(numbers(&sink), (0..20).collect::<Vec<_>>());
}

/// The watcher URL written in a gateway file made by [`GatewayFileBuilder::watchers`].
fn hang_url_of(file: &Path) -> String {
    let text = std::fs::read_to_string(file).unwrap();
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("- \"http"))
        .unwrap();
    line.trim()
        .trim_start_matches("- ")
        .trim_matches('"')
        .to_string()
}

#[tokio::test]
async fn a_watcher_whose_address_changed_does_not_strand_its_events() {
    let hang = Sink::start(Behaviour::Hang).await;
    let outbox = tempfile::tempdir().unwrap();
    let outbox_dir = outbox.path().to_str().unwrap().to_string();
    let file = GatewayFileBuilder::new("moved", "independent")
        .watchers(&[hang.url()])
        .spec_lines("  delivery: {timeout: 60s}")
        .write();
    let p = Portico::start(
        &["run", file.1.to_str().unwrap(), "--drain-timeout", "1s"],
        &[("PORTICO_OUTBOX_DIR", &outbox_dir)],
    )
    .await;
    post(&p, "s", 50).await;
    assert_eq!(p.terminate().await, Some(0));
    drop(hang);
    // The watcher's address changes, without `movedFrom`: its 50 events go to the dead
    // letters with the reason, none to the new address, and the start says so.
    let sink = Sink::start(Behaviour::Ok).await;
    let file = GatewayFileBuilder::new("moved", "independent")
        .watchers(&[sink.url()])
        .write();
    let p = Portico::start(
        &["run", file.1.to_str().unwrap()],
        &[("PORTICO_OUTBOX_DIR", &outbox_dir)],
    )
    .await;
    let dead = outbox.path().join("dead-letter.jsonl");
    let letters = eventually(WAIT, || {
        let text = std::fs::read_to_string(&dead).ok()?;
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (lines.len() >= 50).then_some(lines)
    })
    .await
    .expect("50 dead letters");
    assert_eq!(letters.len(), 50);
    assert!(
        letters
            .iter()
            .all(|l| l["deadletterreason"] == "watcher removed")
    );
    let mut n: Vec<u64> = letters
        .iter()
        .map(|l| l["data"]["n"].as_u64().unwrap())
        .collect();
    n.sort();
    assert_eq!(n, (0..50).collect::<Vec<_>>());
    let warned = logged(&p, "no longer in the gateway had events pending");
    assert_eq!(warned.len(), 1);
    assert_eq!(warned[0]["events"], 50);
    assert!(sink.events().is_empty());
}

#[tokio::test]
async fn redirects_are_failures_and_credentials_are_sent_never_shown() {
    let redirecting = Sink::start(Behaviour::Script(vec![301; 10])).await;
    let sink = Sink::start(Behaviour::Ok).await;
    let with_credentials = format!("http://alice:s3cr%24t-pw@{}/events", sink.addr);
    let file = GatewayFileBuilder::new("creds", "independent")
        .watchers(&[redirecting.url(), with_credentials])
        .spec_lines("  delivery: {mode: atMostOnce, retry: {maxAttempts: 2, initialBackoff: 1ms}}")
        .write();
    let p = Portico::run(&file.1).await;
    post(&p, "s", 3).await;
    sink.wait_for_events(3, WAIT).await;
    let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cr$t-pw");
    for r in sink.received() {
        assert_eq!(
            r.headers.get("authorization").and_then(|v| v.to_str().ok()),
            Some(format!("Basic {auth}").as_str())
        );
    }
    // The redirect is a failure: the events are dead letters (here, in the log), none
    // counted as delivered.
    let dead = eventually(WAIT, || {
        let d = logged(&p, "dead letter (no deadLetter destination is set)");
        (d.len() >= 3).then_some(d)
    })
    .await
    .expect("three dead letters");
    assert!(
        dead.iter().all(|d| d["reason"]
            .as_str()
            .unwrap()
            .contains("do not follow redirects")),
        "{dead:?}"
    );
    let status = p.status().await.to_string();
    let metrics = p.metrics().await;
    for text in [
        status.as_str(),
        metrics.as_str(),
        &p.stderr.all().join("\n"),
    ] {
        assert!(!text.contains("s3cr"), "the password shows: {text}");
    }
    assert!(status.contains("alice:****@"), "{status}");
}

/// Opens `n` connections to `addr`, each sending half a request head.
fn slow_clients(addr: std::net::SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let mut c = TcpStream::connect(addr).unwrap();
            c.write_all(b"POST / HTTP/1.1\r\nhost: x\r\n").unwrap();
            c
        })
        .collect()
}

/// True when the server closed `c` (a read ends or fails).
fn closed(c: &mut TcpStream) -> bool {
    c.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
    let mut buf = [0u8; 64];
    match c.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

#[tokio::test]
async fn slow_and_idle_clients_of_the_ingest_api_are_shed() {
    let file = GatewayFileBuilder::new("slow", "independent").write();
    let p = Portico::start(
        &[
            "run",
            file.1.to_str().unwrap(),
            "--idle-timeout",
            "1s",
            "--body-timeout",
            "1s",
            "--max-connections",
            "40",
        ],
        &[],
    )
    .await;
    // Slowloris: heads that never end are closed after the idle timeout.
    let mut slow = slow_clients(p.addr, 30);
    eventually(WAIT, || slow.iter_mut().all(closed).then_some(()))
        .await
        .expect("every slow client closed");
    // More idle connections than the cap: the oldest idle ones make room, and the API
    // still answers.
    let _idle: Vec<TcpStream> = (0..60)
        .map(|_| TcpStream::connect(p.addr).unwrap())
        .collect();
    let healthy = p.http.get(p.url("/healthz")).send().await.unwrap();
    assert_eq!(healthy.status(), 200);
    // A chunked body that never ends gets 408.
    let mut chunked = TcpStream::connect(p.addr).unwrap();
    chunked
        .write_all(
            b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n",
        )
        .unwrap();
    chunked
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = [0u8; 256];
    let n = chunked.read(&mut answer).unwrap();
    assert!(
        String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&answer[..n])
    );
}

#[tokio::test]
async fn gateway_files_that_are_not_files_are_refused_and_reloads_go_on() {
    let dir = tempfile::tempdir().unwrap();
    // `portico validate` on a FIFO, /dev/zero and an oversized file answers at once.
    let fifo = dir.path().join("fifo.yaml");
    nix_mkfifo(&fifo);
    let zero = dir.path().join("zero.yaml");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    for (path, want) in [(&fifo, "named pipe"), (&zero, "character device")] {
        let out = tokio::time::timeout(
            WAIT,
            tokio::process::Command::new(support::portico_bin())
                .args(["validate", path.to_str().unwrap()])
                .output(),
        )
        .await
        .expect("validate answers")
        .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(want) && err.contains(path.to_str().unwrap()),
            "{err}"
        );
    }
    // A running gateway whose file becomes a FIFO logs why and keeps watching: the next good
    // file is applied.
    let file = GatewayFileBuilder::new("fifo", "calendar").config("a", "interval: 1h");
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, file.render()).unwrap();
    let p = Portico::run(&path).await;
    p.wait_for_phase("a", "Running", WAIT).await;
    let other_fifo = dir.path().join("other.fifo");
    nix_mkfifo(&other_fifo);
    std::fs::rename(&other_fifo, &path).unwrap();
    eventually(WAIT, || {
        (!p.stderr.containing("named pipe").is_empty()).then_some(())
    })
    .await
    .expect("the FIFO is reported");
    let next = file.config("b", "interval: 1h");
    support::replace_file(&path, &next.render());
    p.wait_for_phase("b", "Running", WAIT).await;
    // An oversized file is refused by its size, not read.
    let big = dir.path().join("big.yaml");
    std::fs::write(&big, "#".repeat(2048)).unwrap();
    let out = tokio::process::Command::new(support::portico_bin())
        .args(["run", big.to_str().unwrap(), "--max-file-size", "1024"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("over the limit of 1024"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn sighup_reads_the_gateway_file_again() {
    // The file is a link into another directory, whose changes the watch of the link's
    // directory does not see: only SIGHUP makes the gateway read it again.
    let target_dir = tempfile::tempdir().unwrap();
    let link_dir = tempfile::tempdir().unwrap();
    let real = target_dir.path().join("real.yaml");
    let file = GatewayFileBuilder::new("hup", "calendar").config("a", "interval: 1h");
    std::fs::write(&real, file.render()).unwrap();
    let link = link_dir.path().join("gateway.yaml");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let p = Portico::run(&link).await;
    p.wait_for_phase("a", "Running", WAIT).await;
    std::fs::write(&real, file.config("b", "interval: 1h").render()).unwrap();
    p.signal("HUP");
    p.wait_for_phase("b", "Running", WAIT).await;
    assert!(!logged(&p, "reading the gateway file again").is_empty());
    // And the process is still there.
    assert_eq!(
        p.http.get(p.url("/healthz")).send().await.unwrap().status(),
        200
    );
}

#[tokio::test]
async fn junk_source_names_cannot_push_configurations_out_of_the_metrics() {
    let file = GatewayFileBuilder::new("junk", "independent")
        .config("real", "x: 1")
        .write();
    let p = Portico::run(&file.1).await;
    for i in 0..400 {
        let _ = p
            .http
            .post(p.url("/"))
            .header("content-type", "application/json")
            .body(body(&format!("junk{i}"), i))
            .send()
            .await
            .unwrap();
    }
    post(&p, "real", 1).await;
    let metrics = eventually_async(WAIT, || async {
        let m = p
            .http
            .get(p.url("/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        m.contains("portico_events_received_total{src=\"real\"} 1")
            .then_some(m)
    })
    .await
    .expect("the configuration keeps its own label");
    let labels = metrics
        .lines()
        .filter(|l| l.starts_with("portico_events_received_total{"))
        .count();
    assert!(labels <= 258, "{labels} labels");
}

#[tokio::test]
async fn a_flipped_byte_in_the_outbox_costs_one_event_not_the_rest_of_its_segment() {
    // 100 acknowledged events wait in the outbox for a watcher that never answers.
    let hang = Sink::start(Behaviour::Hang).await;
    let addr = hang.addr;
    let outbox = tempfile::tempdir().unwrap();
    let outbox_dir = outbox.path().to_str().unwrap().to_string();
    let file = GatewayFileBuilder::new("flip", "independent")
        .watchers(&[hang.url()])
        .spec_lines("  delivery: {timeout: 60s}")
        .write();
    let args = ["run", file.1.to_str().unwrap()];
    let p = Portico::start(&args, &[("PORTICO_OUTBOX_DIR", &outbox_dir)]).await;
    post(&p, "s", 100).await;
    p.kill().await;
    drop(hang);

    // One byte of event 50's record flips on the disk.
    let segment = std::fs::read_dir(outbox.path())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.extension().is_some_and(|x| x == "log")
                && std::fs::metadata(p).is_ok_and(|m| m.len() > 0)
        })
        .expect("a segment with the events");
    let mut bytes = std::fs::read(&segment).unwrap();
    let at = bytes
        .windows(7)
        .position(|w| w == br#""n":50}"#)
        .expect("event 50 in the segment");
    bytes[at + 5] ^= 0x01;
    std::fs::write(&segment, &bytes).unwrap();

    // Restarted with the watcher back: every other event arrives, the damage is in
    // quarantine, logged with its count and counted.
    let sink = Sink::start_on(addr, Behaviour::Ok).await;
    let p = Portico::start(&args, &[("PORTICO_OUTBOX_DIR", &outbox_dir)]).await;
    sink.wait_for_events(99, WAIT).await;
    let expected: Vec<u64> = (0..100).filter(|n| *n != 50).collect();
    assert_eq!(numbers(&sink), expected);
    let damaged = logged(&p, "damaged records in the log");
    assert_eq!(damaged.len(), 1, "{damaged:?}");
    assert_eq!(damaged[0]["lost"], 1);
    assert_eq!(damaged[0]["level"], "ERROR");
    let quarantined: Vec<_> = std::fs::read_dir(outbox.path().join("quarantine"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "bad"))
        .collect();
    assert_eq!(quarantined.len(), 1, "{quarantined:?}");
    let metrics = p.metrics().await;
    assert!(
        metrics.contains("portico_outbox_damaged_records_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn with_few_file_descriptors_idle_connections_cannot_take_the_api_down() {
    // A hard limit of 256 descriptors that the gateway cannot raise, and 600 idle connections:
    // the cap sheds the oldest idle ones, so health checks and events still get through.
    let sink = Sink::start(Behaviour::Ok).await;
    let file = GatewayFileBuilder::new("fds", "independent")
        .watchers(&[sink.url()])
        .spec_lines("  delivery: {mode: atMostOnce}")
        .write();
    let p = Portico::start_wrapped(
        &["prlimit", "--nofile=256:256", "--"],
        &["run", file.1.to_str().unwrap(), "--max-connections", "128"],
        &[],
    )
    .await;
    let mut idle = Vec::new();
    for _ in 0..600 {
        match TcpStream::connect(p.addr) {
            Ok(c) => idle.push(c),
            Err(_) => break,
        }
    }
    assert!(idle.len() >= 300, "only {} connections opened", idle.len());
    let health = eventually_async(WAIT, || async {
        let r = reqwest::Client::new()
            .get(p.url("/healthz"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    assert!(health.is_some(), "/healthz did not answer");
    post(&p, "s", 3).await;
    sink.wait_for_events(3, WAIT).await;
    assert!(
        logged(&p, "Too many open files").len() <= 1,
        "descriptor errors are not logged in a loop"
    );
}

/// Runs `portico ARGS…` to its end; (exit code, stderr).
fn run_to_end(args: &[&str]) -> (Option<i32>, String) {
    let (code, _, stderr) = support::run_to_end(args);
    (code, stderr)
}

/// Sets a file's modification time `secs` seconds ahead (a rotated file is seen as changed
/// even within the file system's timestamp granularity).
fn touch_ahead(path: &Path, secs: u64) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(std::time::SystemTime::now() + Duration::from_secs(secs))
        .unwrap();
}

async fn post_with(p: &Portico, token: Option<&str>) -> u16 {
    let mut r = p
        .http
        .post(p.url("/"))
        .header("content-type", "application/json")
        .body(body("s", 1));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    r.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn the_ingest_api_beyond_loopback_needs_a_token() {
    let sink = Sink::start(Behaviour::Ok).await;
    let file = GatewayFileBuilder::new("tok", "independent")
        .watchers(&[sink.url()])
        .write();
    let path = file.1.to_str().unwrap();

    // Every interface, no token: refused at start, with what to do.
    let (code, err) = run_to_end(&[
        "run",
        path,
        "--listen",
        "0.0.0.0",
        "--transformer-port",
        "0",
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("no ingest token")
            && err.contains("--ingest-token-file")
            && err.contains("--insecure-listen"),
        "{err}"
    );

    // With a token file that does not exist: the gateway makes one (0600) and requires it.
    let token_file = file.0.path().join("ingest-token");
    let p = Portico::start(
        &[
            "run",
            path,
            "--listen",
            "0.0.0.0",
            "--ingest-token-file",
            token_file.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    let token = std::fs::read_to_string(&token_file).unwrap();
    assert_eq!(token.len(), 64, "{token}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(post_with(&p, None).await, 401);
    assert_eq!(post_with(&p, Some("not-the-token")).await, 401);
    assert_eq!(post_with(&p, Some(&token)).await, 200);
    sink.wait_for_events(1, WAIT).await;
    // Probes and Prometheus need no token.
    let health = p.http.get(p.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);

    // The token rotates (a Secret updated under its mount): the new one is taken, the old not.
    std::fs::write(&token_file, "rotated-token-0123456789\n").unwrap();
    touch_ahead(&token_file, 5);
    let rotated = eventually_async(WAIT, || async {
        (post_with(&p, Some("rotated-token-0123456789")).await == 200).then_some(())
    })
    .await;
    assert!(rotated.is_some(), "the rotated token was never taken");
    assert_eq!(post_with(&p, Some(&token)).await, 401);
    let metrics = p.metrics().await;
    assert!(
        metrics.lines().any(|l| l.starts_with(
            "portico_events_rejected_total{src=\"_unauthenticated\",reason=\"unauthorized\"}"
        )),
        "{metrics}"
    );
    assert!(!p.stderr.all().join("\n").contains(&token));
    drop(p);

    // Told --insecure-listen: it listens, and says what that means.
    let p = Portico::start(
        &["run", path, "--listen", "0.0.0.0", "--insecure-listen"],
        &[],
    )
    .await;
    assert!(!logged(&p, "no token (--insecure-listen)").is_empty());
    assert_eq!(post_with(&p, None).await, 200);
}

#[tokio::test]
async fn a_webhook_anyone_can_post_to_is_a_warning_and_with_require_auth_an_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let open = GatewayFileBuilder::new("open", "webhook")
        .config("hook", &format!("port: {port}\nendpoint: /in"))
        .write();
    let (code, err) = run_to_end(&["validate", open.1.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("configuration `hook`: warning: unauthenticated")
            && err.contains("secretFile"),
        "{err}"
    );
    let p = Portico::run(&open.1).await;
    let node = p.wait_for_phase("hook", "Running", WAIT).await;
    assert!(
        node["message"]
            .as_str()
            .unwrap()
            .contains("unauthenticated"),
        "the note in /status: {node}"
    );
    assert!(!logged(&p, "unauthenticated").is_empty());
    drop(p);

    let strict = GatewayFileBuilder::new("strict", "webhook")
        .spec_lines("  security: {requireAuth: true}")
        .config("hook", &format!("port: {port}\nendpoint: /in"))
        .write();
    let (code, err) = run_to_end(&["validate", strict.1.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("requireAuth is true"), "{err}");
    let p = Portico::run(&strict.1).await;
    let node = p.wait_for_phase("hook", "Error", WAIT).await;
    assert!(
        node["message"].as_str().unwrap().contains("requireAuth"),
        "{node}"
    );
}

#[tokio::test]
async fn watcher_tokens_and_headers_come_from_files_and_env_and_follow_rotation() {
    let sink = Sink::start(Behaviour::Ok).await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "first-token-AAAA\n").unwrap();
    let file = GatewayFileBuilder::new("hdr", "independent")
        .spec_lines(&format!(
            "  watchers:\n    urls:\n      - url: {url}\n        bearerTokenFile: {t}\n        headers:\n          - {{name: X-Api-Key, valueEnv: PORTICO_TEST_API_KEY}}\n          - {{name: X-Team, value: payments}}\n  delivery: {{mode: atMostOnce}}",
            url = sink.url(),
            t = token.display()
        ))
        .write();
    let p = Portico::start(
        &["run", file.1.to_str().unwrap()],
        &[("PORTICO_TEST_API_KEY", "key-from-env-BBBB")],
    )
    .await;
    post(&p, "s", 1).await;
    sink.wait_for_events(1, WAIT).await;
    let first = &sink.received()[0].headers;
    assert_eq!(first["authorization"], "Bearer first-token-AAAA");
    assert_eq!(first["x-api-key"], "key-from-env-BBBB");
    assert_eq!(first["x-team"], "payments");

    // The token file is rotated: later deliveries carry the new token.
    std::fs::write(&token, "second-token-CCCC\n").unwrap();
    touch_ahead(&token, 5);
    let rotated = eventually_async(WAIT, || async {
        post(&p, "s", 1).await;
        sink.received()
            .iter()
            .any(|r| r.headers["authorization"] == "Bearer second-token-CCCC")
            .then_some(())
    })
    .await;
    assert!(rotated.is_some(), "the rotated token was never sent");
    let status = p.status().await.to_string();
    let logs = p.stderr.all().join("\n");
    for secret in ["first-token-AAAA", "second-token-CCCC", "key-from-env-BBBB"] {
        assert!(
            !status.contains(secret) && !logs.contains(secret),
            "{secret} shows"
        );
    }

    // A token file that cannot be read is an error naming the watcher and the header.
    std::fs::remove_file(&token).unwrap();
    let (code, err) = run_to_end(&["run", file.1.to_str().unwrap(), "--transformer-port", "0"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("header `authorization`") && err.contains(&token.display().to_string()),
        "{err}"
    );
}

fn nix_mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}
