//! End to end, no event lost: the real `portico` binary with its durable outbox,
//! a real HTTP watcher that goes away and comes back, a SIGKILL in the middle of a run,
//! dead letters, and backpressure with a watcher that never answers. Events are counted
//! exactly: each carries its number `n` in its data, and the tests check that every `n` that
//! got a 200 from the ingest API reached the watcher, reporting duplicates.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use support::{Behaviour, GatewayFileBuilder, Portico, Received, Sink, eventually};

const EVENTS: usize = 10_000;
const IN_FLIGHT: usize = 32;

/// Retries that outlast any pause in these tests, and fast.
const PATIENT: &str = "  delivery:\n    timeout: 1s\n    retry: {maxAttempts: 1000000, initialBackoff: 5ms, maxBackoff: 100ms}\n";

fn body(n: usize) -> String {
    let payload = base64::engine::general_purpose::STANDARD.encode(format!("{{\"n\":{n}}}"));
    format!("{{\"src\":\"load\",\"payload\":\"{payload}\",\"contentType\":\"application/json\"}}")
}

/// What the ingest API answered, per event number.
#[derive(Default)]
struct Posted {
    /// Got a 200.
    ok: Mutex<BTreeSet<usize>>,
    /// Got a 503 at least once (and was tried again).
    full: AtomicUsize,
    /// Last `Retry-After` seen on a 503.
    retry_after: Mutex<Option<String>>,
}

/// Posts events `range` to `url` with `IN_FLIGHT` requests at once. A 503 is retried after
/// a short pause (up to `retry_full` times); a connection error gives the event up (the gateway
/// is gone). Returns when every event is done.
async fn post_all(
    http: reqwest::Client,
    url: String,
    range: std::ops::Range<usize>,
    retry_full: usize,
    posted: Arc<Posted>,
) {
    let next = Arc::new(AtomicUsize::new(range.start));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..IN_FLIGHT {
        let (http, url, next, posted, end) = (
            http.clone(),
            url.clone(),
            next.clone(),
            posted.clone(),
            range.end,
        );
        tasks.spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= end {
                    return;
                }
                for _ in 0..=retry_full {
                    match http.post(&url).body(body(n)).send().await {
                        Ok(r) if r.status() == 200 => {
                            posted.ok.lock().unwrap().insert(n);
                            break;
                        }
                        Ok(r) if r.status() == 503 => {
                            posted.full.fetch_add(1, Ordering::Relaxed);
                            *posted.retry_after.lock().unwrap() = r
                                .headers()
                                .get("retry-after")
                                .and_then(|v| v.to_str().ok())
                                .map(String::from);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Ok(r) => panic!("event {n}: the ingest API answered {}", r.status()),
                        Err(_) => break,
                    }
                }
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
}

/// Event number → the ids it arrived with, and how many times it arrived, over `received`.
fn tally(received: &[Received]) -> (BTreeMap<usize, BTreeSet<String>>, usize) {
    let mut by_n: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    let mut total = 0;
    for r in received.iter().filter(|r| (200..300).contains(&r.answered)) {
        let ce = r.json();
        let n = ce["data"]["n"].as_u64().expect("data.n") as usize;
        by_n.entry(n)
            .or_default()
            .insert(ce["id"].as_str().expect("id").to_string());
        total += 1;
    }
    (by_n, total)
}

/// Checks that every `acked` event arrived, and that each of `same_id` arrived with one id
/// only (a replay keeps ids; an event posted again by its caller after a failed request is a
/// new event with a new id).
fn check_all_arrived(
    what: &str,
    acked: &BTreeSet<usize>,
    same_id: &BTreeSet<usize>,
    by_n: &BTreeMap<usize, BTreeSet<String>>,
    total: usize,
) {
    let missing: Vec<_> = acked.iter().filter(|n| !by_n.contains_key(n)).collect();
    assert!(
        missing.is_empty(),
        "{what}: {} acknowledged events never arrived, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    let changed: Vec<_> = by_n
        .iter()
        .filter(|(n, ids)| same_id.contains(n) && ids.len() > 1)
        .collect();
    assert!(
        changed.is_empty(),
        "{what}: events redelivered with a different id: {:?}",
        &changed[..changed.len().min(5)]
    );
    let duplicates = total - by_n.len();
    eprintln!(
        "{what}: {} events acknowledged, {} distinct arrived, {duplicates} duplicate deliveries",
        acked.len(),
        by_n.len()
    );
}

async fn metric(portico: &Portico, name: &str) -> f64 {
    let text = portico.metrics().await;
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_down_twice_all_10000_events_arrive() {
    let sink = Sink::start(Behaviour::Ok).await;
    let addr = sink.addr;
    let (_dir, file) = GatewayFileBuilder::new("down", "ingest")
        .watchers(&[sink.url()])
        .spec_lines(PATIENT)
        .write();
    let portico = Portico::run(&file).await;
    let posted = Arc::new(Posted::default());
    let load = tokio::spawn(post_all(
        portico.http.clone(),
        portico.url("/"),
        0..EVENTS,
        1000,
        posted.clone(),
    ));
    let acked = |posted: &Posted| posted.ok.lock().unwrap().len();

    let mut received: Vec<Received> = Vec::new();
    let mut sink = Some(sink);
    // Down at 20 %, back at 35 %, down at 55 %, back at 70 %.
    for (at, up) in [(2000, false), (3500, true), (5500, false), (7000, true)] {
        eventually(Duration::from_secs(60), || {
            (acked(&posted) >= at).then_some(())
        })
        .await
        .unwrap_or_else(|| panic!("{at} events acknowledged within 60 s"));
        if up {
            sink = Some(Sink::start_on(addr, Behaviour::Ok).await);
        } else if let Some(s) = sink.take() {
            received.extend(s.stop());
        }
        eprintln!(
            "watcher {} after {} events",
            if up { "back" } else { "down" },
            acked(&posted)
        );
    }
    load.await.unwrap();
    let acked_set = posted.ok.lock().unwrap().clone();
    assert_eq!(
        acked_set.len(),
        EVENTS,
        "every event was accepted in the end"
    );
    let sink = sink.unwrap();
    let done = eventually(Duration::from_secs(60), || {
        let mut all = received.clone();
        all.extend(sink.received());
        let (by_n, _) = tally(&all);
        (by_n.len() >= EVENTS).then_some(all)
    })
    .await;
    let all = done.unwrap_or_else(|| {
        let mut all = received.clone();
        all.extend(sink.received());
        all
    });
    let (by_n, total) = tally(&all);
    check_all_arrived("watcher down twice", &acked_set, &acked_set, &by_n, total);
    assert_eq!(portico.terminate().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_run_then_restart_on_the_same_outbox_delivers_every_acknowledged_event() {
    let sink = Sink::start(Behaviour::Ok).await;
    let (dir, file) = GatewayFileBuilder::new("killed", "ingest")
        .watchers(&[sink.url()])
        .spec_lines(PATIENT)
        .write();
    let outbox = dir.path().join("outbox");
    let outbox_env = outbox.to_str().unwrap().to_string();
    let envs = [("PORTICO_OUTBOX_DIR", outbox_env.as_str())];
    let args = ["run", file.to_str().unwrap()];
    let portico = Portico::start(&args, &envs).await;
    let posted = Arc::new(Posted::default());
    let load = tokio::spawn(post_all(
        portico.http.clone(),
        portico.url("/"),
        0..EVENTS,
        1000,
        posted.clone(),
    ));
    eventually(Duration::from_secs(60), || {
        (posted.ok.lock().unwrap().len() >= 4000).then_some(())
    })
    .await
    .expect("4000 events acknowledged");
    portico.kill().await;
    load.await.unwrap();
    let acked_first = posted.ok.lock().unwrap().clone();
    eprintln!("SIGKILL after {} acknowledged events", acked_first.len());
    assert!(
        acked_first.len() < EVENTS,
        "killed in the middle of the run"
    );

    // Again on the same outbox: what was acknowledged is replayed; the rest is posted anew.
    let portico = Portico::start(&args, &envs).await;
    let rest: Vec<usize> = (0..EVENTS).filter(|n| !acked_first.contains(n)).collect();
    let posted2 = Arc::new(Posted::default());
    for chunk in rest.chunk_by(|a, b| b == &(a + 1)) {
        post_all(
            portico.http.clone(),
            portico.url("/"),
            chunk[0]..chunk[chunk.len() - 1] + 1,
            1000,
            posted2.clone(),
        )
        .await;
    }
    let mut acked_all = acked_first.clone();
    acked_all.extend(posted2.ok.lock().unwrap().iter().copied());
    assert_eq!(acked_all.len(), EVENTS);
    let arrived = eventually(Duration::from_secs(60), || {
        let (by_n, _) = tally(&sink.received());
        acked_all.iter().all(|n| by_n.contains_key(n)).then_some(())
    })
    .await;
    let (by_n, total) = tally(&sink.received());
    check_all_arrived(
        "SIGKILL and restart",
        &acked_all,
        &acked_first,
        &by_n,
        total,
    );
    assert!(arrived.is_some());
    assert_eq!(portico.terminate().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_a_watcher_refuses_go_to_the_dead_letter_file_after_the_configured_attempts() {
    // One watcher answers 400 (not worth retrying), the other 503 every time (retried).
    let bad_request = Sink::start(Behaviour::Script(vec![400; 10_000])).await;
    let unavailable = Sink::start(Behaviour::Script(vec![503; 10_000])).await;
    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("dead.jsonl");
    let (_gdir, file) = GatewayFileBuilder::new("dl", "ingest")
        .watchers(&[bad_request.url(), unavailable.url()])
        .spec_lines(&format!(
            "  delivery:\n    timeout: 1s\n    retry: {{maxAttempts: 3, initialBackoff: 5ms, maxBackoff: 20ms}}\n    deadLetter: {{file: \"{}\"}}\n",
            dead.display()
        ))
        .write();
    let portico = Portico::run(&file).await;
    const N: usize = 200;
    let posted = Arc::new(Posted::default());
    post_all(
        portico.http.clone(),
        portico.url("/"),
        0..N,
        0,
        posted.clone(),
    )
    .await;
    assert_eq!(posted.ok.lock().unwrap().len(), N);
    let lines = eventually(Duration::from_secs(30), || {
        let text = std::fs::read_to_string(&dead).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON CloudEvent a line"))
            .collect();
        (lines.len() >= 2 * N).then_some(lines)
    })
    .await
    .expect("every event of both watchers in the dead-letter file");
    assert_eq!(lines.len(), 2 * N, "each event once per watcher");
    for (sink, attempts) in [(&bad_request, 1), (&unavailable, 3)] {
        let watcher = format!("url:{}", sink.url());
        let ns: BTreeSet<u64> = lines
            .iter()
            .filter(|l| l["deadletterwatcher"] == watcher.as_str())
            .map(|l| {
                assert_eq!(l["specversion"], "1.0");
                assert!(l["deadletterreason"].as_str().unwrap().contains("answered"));
                l["data"]["n"].as_u64().unwrap()
            })
            .collect();
        assert_eq!(ns.len(), N, "{watcher}: every event dead-lettered");
        assert_eq!(
            sink.received().len(),
            attempts * N,
            "{watcher}: {attempts} attempt(s) per event"
        );
    }
    assert_eq!(
        metric(&portico, "portico_events_dead_lettered_total").await,
        (2 * N) as f64
    );
    assert_eq!(portico.terminate().await, Some(0));
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_never_answers_fills_a_small_outbox_then_503_and_the_backlog_drains() {
    let sink = Sink::start(Behaviour::Hang).await;
    let addr = sink.addr;
    let (_dir, file) = GatewayFileBuilder::new("bp", "ingest")
        .watchers(&[sink.url()])
        .spec_lines(
            "  delivery:\n    timeout: 500ms\n    retry: {maxAttempts: 1000000, initialBackoff: 5ms, maxBackoff: 100ms}\n    outbox: {maxBytes: 262144}\n",
        )
        .write();
    let portico = Portico::run(&file).await;
    // Fill it: events until the ingest API says 503.
    let posted = Arc::new(Posted::default());
    post_all(
        portico.http.clone(),
        portico.url("/"),
        0..3000,
        0,
        posted.clone(),
    )
    .await;
    let accepted = posted.ok.lock().unwrap().clone();
    let refused = posted.full.load(Ordering::Relaxed);
    eprintln!("{} accepted, {refused} refused with 503", accepted.len());
    assert!(
        refused > 0,
        "the ingest API answered 503 once the outbox was full"
    );
    assert!(accepted.len() < 3000);
    assert_eq!(posted.retry_after.lock().unwrap().as_deref(), Some("1"));
    assert!(metric(&portico, "portico_outbox_bytes").await <= 262_144.0);
    let rss_full = rss_kib(portico.pid());
    // More load while full: refused, and memory does not grow with it.
    let more = Arc::new(Posted::default());
    post_all(
        portico.http.clone(),
        portico.url("/"),
        3000..8000,
        0,
        more.clone(),
    )
    .await;
    assert_eq!(more.ok.lock().unwrap().len(), 0, "still full");
    let rss_after = rss_kib(portico.pid());
    eprintln!("RSS {rss_full} KiB when full, {rss_after} KiB after 5000 more refused events");
    assert!(
        rss_after < rss_full + 16 * 1024 && rss_after < 200 * 1024,
        "memory bounded: {rss_full} KiB → {rss_after} KiB"
    );

    // The watcher comes back: the backlog drains, and the gateway takes events again.
    drop(sink);
    let sink = Sink::start_on(addr, Behaviour::Ok).await;
    let arrived = eventually(Duration::from_secs(60), || {
        let (by_n, _) = tally(&sink.received());
        accepted.iter().all(|n| by_n.contains_key(n)).then_some(())
    })
    .await;
    let (by_n, total) = tally(&sink.received());
    check_all_arrived("backpressure", &accepted, &accepted, &by_n, total);
    assert!(arrived.is_some());
    let again = Arc::new(Posted::default());
    post_all(
        portico.http.clone(),
        portico.url("/"),
        8000..8100,
        100,
        again.clone(),
    )
    .await;
    assert_eq!(again.ok.lock().unwrap().len(), 100, "accepting again");
    assert_eq!(portico.terminate().await, Some(0));
}
