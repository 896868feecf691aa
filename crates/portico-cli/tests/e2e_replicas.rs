//! End to end, replicas sharing a gateway's configurations: three real `portico` processes run
//! one calendar gateway of 60 configurations firing every second, coordinating through the
//! NATS key-value bucket of the server `scripts/test` starts on 127.0.0.1:4222
//! (`PORTICO_NATS_URL` overrides it), and again as pods of a (fake) cluster through Leases.
//! After 20 s one replica is killed with SIGKILL. Every scheduled time of every configuration
//! must reach the watcher: in steady state each exactly once; around the kill, the only
//! duplicates are the ticks in flight, under the same id. No configuration may ever run on two
//! replicas at once (each replica's `/status`).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::json;
use support::{Behaviour, Portico, Sink, eventually_async};

const CONFIGS: usize = 60;
const KILL_AFTER: Duration = Duration::from_secs(20);
const RUN_FOR: Duration = Duration::from_secs(60);
const LEASE: Duration = Duration::from_secs(3);
const RENEW: Duration = Duration::from_secs(1);

fn nats_url() -> String {
    std::env::var("PORTICO_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_string())
}

fn configurations() -> BTreeMap<String, String> {
    (0..CONFIGS)
        .map(|i| (format!("c{i:02}"), "interval: 1s".to_string()))
        .collect()
}

fn nats_coordination(bucket: &str) -> String {
    format!(
        "{{nats: {{url: \"{}\", bucket: {bucket}}}, buckets: 32, leaseDuration: {}s, renewPeriod: {}s}}",
        nats_url(),
        LEASE.as_secs(),
        RENEW.as_secs()
    )
}

/// The configurations each replica runs (its `Running` nodes), by replica.
async fn running(replicas: &BTreeMap<String, Portico>) -> BTreeMap<String, BTreeSet<String>> {
    let mut out = BTreeMap::new();
    for (name, p) in replicas {
        let status = p.status().await;
        let nodes = status["nodes"].as_array().cloned().unwrap_or_default();
        out.insert(
            name.clone(),
            nodes
                .iter()
                .filter(|n| n["phase"] == "Running")
                .filter_map(|n| n["name"].as_str().map(String::from))
                .collect(),
        );
    }
    out
}

/// Configurations running on two replicas in `snapshot`.
fn doubled(snapshot: &BTreeMap<String, BTreeSet<String>>) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut twice = BTreeSet::new();
    for set in snapshot.values() {
        for c in set {
            if !seen.insert(c.clone()) {
                twice.insert(c.clone());
            }
        }
    }
    twice
}

/// Configurations found running on two replicas twice in a row: two reads a few milliseconds
/// apart cannot both fall inside one hand-over (it takes a renew period), so these ran twice.
async fn doubled_now(replicas: &BTreeMap<String, Portico>) -> Option<BTreeSet<String>> {
    let first = running(replicas).await;
    let again = running(replicas).await;
    let both: BTreeSet<_> = doubled(&first)
        .intersection(&doubled(&again))
        .cloned()
        .collect();
    (!both.is_empty()).then_some(both)
}

/// Waits until `replicas` together run every configuration, each once; how long it took.
async fn until_all_run(replicas: &BTreeMap<String, Portico>, within: Duration) -> Duration {
    let start = Instant::now();
    eventually_async(within, || async {
        let r = running(replicas).await;
        let all: BTreeSet<&String> = r.values().flatten().collect();
        (all.len() == CONFIGS && doubled(&r).is_empty() && r.values().all(|s| !s.is_empty()))
            .then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("the replicas did not share the configurations within {within:?}"));
    start.elapsed()
}

/// Three replicas, one killed after 20 s, counted exactly at the watcher.
async fn three_replicas(
    start: impl AsyncFn(&str) -> Portico,
    sink: &Sink,
    what: &str,
    after_failover: impl AsyncFn(&BTreeMap<String, BTreeSet<String>>),
) {
    let mut replicas = BTreeMap::new();
    for name in ["r1", "r2", "r3"] {
        replicas.insert(name.to_string(), start(name).await);
    }
    until_all_run(&replicas, Duration::from_secs(30)).await;
    let steady_from = Utc::now();
    let started = Instant::now();

    // Watch every replica's /status until the end.
    let mut doubles = Vec::new();
    let mut killed: Option<(DateTime<Utc>, Duration)> = None;
    while started.elapsed() < RUN_FOR {
        doubles.extend(doubled_now(&replicas).await);
        if killed.is_none() && started.elapsed() >= KILL_AFTER {
            let victim = replicas.remove("r2").expect("r2");
            let at = Utc::now();
            victim.kill().await;
            let took = until_all_run(&replicas, Duration::from_secs(20)).await;
            println!(
                "{what}: SIGKILL of r2: its configurations ran elsewhere {:.2} s later (lease {} s + renew {} s)",
                took.as_secs_f64(),
                LEASE.as_secs(),
                RENEW.as_secs()
            );
            assert!(took <= LEASE + RENEW * 2, "{what}: failover took {took:?}");
            killed = Some((at, took));
            after_failover(&running(&replicas).await).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        doubles.is_empty(),
        "{what}: configurations ran on two replicas: {doubles:?}"
    );
    let stopped_at = Utc::now();
    for (_, p) in replicas {
        assert_eq!(
            p.terminate().await,
            Some(0),
            "{what}: a replica exited badly"
        );
    }

    // Every scheduled second of every configuration, from the steady state to the stop.
    let (kill_at, failover) = killed.expect("the kill happened");
    // Ticks in flight at the kill: those the killed replica fired since the checkpoint it last
    // saved (up to two renew periods before the kill) and before its successor took over.
    let in_flight = (kill_at.timestamp() - 2 * RENEW.as_secs() as i64 - 1)
        ..=(kill_at.timestamp() + failover.as_secs() as i64 + 1);
    let dups = every_tick_once(sink, steady_from, stopped_at, Some(in_flight), what);
    println!("{what}: {dups} duplicates in flight at the kill (same id)");
}

/// Checks that every scheduled second of every configuration between `from` and `to` reached
/// `sink` exactly once, or, within `tolerated`, at least once; returns the duplicates there.
fn every_tick_once(
    sink: &Sink,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    tolerated: Option<std::ops::RangeInclusive<i64>>,
    what: &str,
) -> usize {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for e in sink.events() {
        *seen
            .entry(e["id"].as_str().unwrap_or_default().to_string())
            .or_default() += 1;
    }
    let first = from.timestamp() + 2;
    let last = to.timestamp() - 3;
    let (mut missing, mut extra, mut dups) = (Vec::new(), Vec::new(), 0);
    for c in configurations().keys() {
        for t in first..=last {
            let at = DateTime::from_timestamp(t, 0).expect("a time");
            let id = format!(
                "{c}@{}",
                at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
            );
            match seen.get(&id).copied().unwrap_or(0) {
                0 => missing.push(id),
                1 => {}
                n if tolerated.as_ref().is_some_and(|r| r.contains(&t)) => dups += n - 1,
                n => extra.push(format!("{id} ×{n}")),
            }
        }
    }
    println!(
        "{what}: {} ticks checked",
        CONFIGS as i64 * (last - first + 1)
    );
    assert!(
        missing.is_empty(),
        "{what}: ticks never delivered: {missing:?}"
    );
    assert!(extra.is_empty(), "{what}: ticks delivered twice: {extra:?}");
    dups
}

/// Scaling 3 → 4 → 2 while firing: a joining replica takes its share, two leaving ones hand
/// theirs over; no configuration ever runs on two replicas, and every tick arrives exactly
/// once (hand-overs on join and on SIGTERM are clean: stop, save, release, take).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scaling_three_to_four_to_two_loses_and_doubles_nothing() {
    let sink = Sink::start(Behaviour::Ok).await;
    let bucket = format!("portico-scale-{}", std::process::id());
    let dir = tempfile::tempdir().expect("temp dir");
    let file = calendar_file(dir.path(), "scaled", &nats_coordination(&bucket), &sink);
    let start =
        async |name: &str| Portico::start(&["run", &file], &[("PORTICO_REPLICA", name)]).await;
    let mut replicas = BTreeMap::new();
    for name in ["r1", "r2", "r3"] {
        replicas.insert(name.to_string(), start(name).await);
    }
    until_all_run(&replicas, Duration::from_secs(30)).await;
    let steady_from = Utc::now();
    let started = Instant::now();
    let (mut joined, mut left) = (false, false);
    let mut doubles = Vec::new();
    while started.elapsed() < Duration::from_secs(36) {
        doubles.extend(doubled_now(&replicas).await);
        if !joined && started.elapsed() >= Duration::from_secs(8) {
            replicas.insert("r4".to_string(), start("r4").await);
            let took = until_all_run(&replicas, Duration::from_secs(20)).await;
            println!(
                "scale 3 -> 4: the new replica ran its share {:.2} s after it listened",
                took.as_secs_f64()
            );
            joined = true;
        }
        if !left && started.elapsed() >= Duration::from_secs(20) {
            let stopping = Instant::now();
            for name in ["r1", "r2"] {
                let p = replicas.remove(name).expect("a replica");
                assert_eq!(p.terminate().await, Some(0), "{name} exited badly");
            }
            until_all_run(&replicas, Duration::from_secs(20)).await;
            println!(
                "scale 4 -> 2: the two replicas' configurations ran on the others {:.2} s after the first SIGTERM",
                stopping.elapsed().as_secs_f64()
            );
            left = true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        doubles.is_empty(),
        "configurations ran on two replicas: {doubles:?}"
    );
    let stopped_at = Utc::now();
    for (_, p) in replicas {
        assert_eq!(p.terminate().await, Some(0));
    }
    every_tick_once(&sink, steady_from, stopped_at, None, "scale 3 -> 4 -> 2");
}

/// A calendar gateway of the test's configurations, coordinated as `coordination` says,
/// written in `dir`; its path.
fn calendar_file(dir: &std::path::Path, name: &str, coordination: &str, sink: &Sink) -> String {
    let mut text = format!(
        "apiVersion: portico.dev/v1alpha1\nkind: Gateway\nmetadata:\n  name: {name}\nspec:\n  type: calendar\n  configMap: {name}-cm\n  coordination: {coordination}\n  watchers:\n    urls: [\"{}\"]\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}-cm\ndata:\n",
        sink.url()
    );
    for (k, v) in configurations() {
        text.push_str(&format!("  {k}: \"{v}\"\n"));
    }
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(&file, text).expect("write the gateway file");
    file.to_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_over_a_nats_key_value_bucket_lose_no_tick_when_one_is_killed() {
    let sink = Sink::start(Behaviour::Ok).await;
    let bucket = format!("portico-test-{}", std::process::id());
    let dir = tempfile::tempdir().expect("temp dir");
    let file = calendar_file(dir.path(), "shared", &nats_coordination(&bucket), &sink);
    three_replicas(
        async |name: &str| Portico::start(&["run", &file], &[("PORTICO_REPLICA", name)]).await,
        &sink,
        "NATS key-value",
        async |_| {},
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_pods_over_leases_lose_no_tick_when_one_is_killed() {
    let fake = fake_kube::FakeKube::start().await;
    let sink = Sink::start(Behaviour::Ok).await;
    let coordination = json!({"buckets": 32,
        "leaseDuration": format!("{}s", LEASE.as_secs()),
        "renewPeriod": format!("{}s", RENEW.as_secs())});
    fake.create(json!({
        "apiVersion": "portico.dev/v1alpha1", "kind": "Gateway",
        "metadata": {"name": "shared", "namespace": "ns"},
        "spec": {"type": "calendar", "configMap": "shared-cm", "replicas": 3,
                 "coordination": coordination, "watchers": {"urls": [sink.url()]}},
    }));
    fake.create(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "shared-cm", "namespace": "ns"}, "data": configurations()}));
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, fake.kubeconfig()).expect("write kubeconfig");
    let kubeconfig = kubeconfig.to_str().unwrap().to_string();
    three_replicas(
        async |name: &str| {
            Portico::start(
                &["run"],
                &[
                    ("KUBECONFIG", &kubeconfig),
                    ("GATEWAY_NAMESPACE", "ns"),
                    ("GATEWAY_NAME", "shared"),
                    ("GATEWAY_PROCESSOR_CONFIG_MAP", "shared-cm"),
                    ("PORTICO_REPLICA", &format!("shared-{name}")),
                ],
            )
            .await
        },
        &sink,
        "Kubernetes Leases",
        async |running| {
            // The Gateway's status.nodes name the replica that runs each configuration.
            let runs: BTreeMap<&str, &str> = running
                .iter()
                .flat_map(|(r, cs)| cs.iter().map(move |c| (c.as_str(), r.as_str())))
                .collect();
            fake.wait_for(
                "status.nodes naming their replicas",
                Duration::from_secs(20),
                |f| {
                    let g = f.get("portico.dev/v1alpha1", "Gateway", "ns", "shared")?;
                    let nodes = g["status"]["nodes"].as_object()?.clone();
                    let named: BTreeMap<String, String> = nodes
                        .values()
                        .filter(|n| n["phase"] == "Running")
                        .filter_map(|n| {
                            Some((
                                n["name"].as_str()?.to_string(),
                                n["replica"].as_str()?.to_string(),
                            ))
                        })
                        .collect();
                    runs.iter()
                        .all(|(c, r)| {
                            named.get(*c).map(String::as_str) == Some(&format!("shared-{r}"))
                        })
                        .then_some(())
                },
            )
            .await;
            // And status.members the live replicas with the buckets each holds: all 32, the
            // killed one gone.
            fake.wait_for(
                "status.members of the live replicas",
                Duration::from_secs(20),
                |f| {
                    let g = f.get("portico.dev/v1alpha1", "Gateway", "ns", "shared")?;
                    let members = g["status"]["members"].as_object()?.clone();
                    let names: BTreeSet<&str> = members.keys().map(String::as_str).collect();
                    let buckets: usize = members
                        .values()
                        .map(|m| m["buckets"].as_array().map_or(0, Vec::len))
                        .sum();
                    (names == BTreeSet::from(["shared-r1", "shared-r3"]) && buckets == 32)
                        .then_some(())
                },
            )
            .await;
        },
    )
    .await;
    // The Leases are there: the buckets, released by the replicas that stopped.
    let leases = fake.list("coordination.k8s.io/v1", "Lease", "ns");
    let buckets = leases
        .iter()
        .filter(|l| l["metadata"]["labels"]["portico.dev/lease"] == "bucket")
        .count();
    assert_eq!(buckets, 32, "one Lease per bucket");
}

/// A webhook runs on every replica (placement `everywhere`), whatever buckets each holds: each
/// replica accepts the deliveries sent to it and delivers them. (On one machine each replica
/// needs a port of its own, so each reads a file naming its own; in a cluster every pod has
/// its own address and they share one file.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_webhook_accepts_and_delivers_on_every_replica() {
    const EACH: usize = 40;
    let sink = Sink::start(Behaviour::Ok).await;
    let bucket = format!("portico-hooks-{}", std::process::id());
    let dir = tempfile::tempdir().expect("temp dir");
    let mut replicas = Vec::new();
    for name in ["r1", "r2", "r3"] {
        let port = support::free_port();
        let file = dir.path().join(format!("{name}.yaml"));
        std::fs::write(
            &file,
            format!(
                "apiVersion: portico.dev/v1alpha1\nkind: Gateway\nmetadata:\n  name: hooks\nspec:\n  type: webhook\n  configMap: hooks-cm\n  coordination: {}\n  watchers:\n    urls: [\"{}\"]\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: hooks-cm\ndata:\n  push: \"{{port: {port}, endpoint: /push, method: POST}}\"\n",
                nats_coordination(&bucket),
                sink.url()
            ),
        )
        .expect("write the gateway file");
        let p = Portico::start(
            &["run", file.to_str().unwrap()],
            &[("PORTICO_REPLICA", name)],
        )
        .await;
        replicas.push((name, port, p));
    }
    // Every replica sees the three members, and runs the webhook.
    for (name, _, p) in &replicas {
        p.wait_for_phase("push", "Running", Duration::from_secs(20))
            .await;
        eventually_async(Duration::from_secs(20), || async {
            let s = p.status().await;
            let members = s["coordination"]["members"].as_object()?.clone();
            (members.len() == 3).then_some(())
        })
        .await
        .unwrap_or_else(|| panic!("{name}: the three members in /status"));
    }
    let http = reqwest::Client::new();
    for (name, port, _) in &replicas {
        for n in 0..EACH {
            let r = http
                .post(format!("http://127.0.0.1:{port}/push"))
                .body(format!("{{\"replica\":\"{name}\",\"n\":{n}}}"))
                .send()
                .await
                .expect("POST to the webhook");
            assert_eq!(r.status(), 200, "{name}: delivery {n}");
        }
    }
    let events = sink
        .wait_for_events(3 * EACH, Duration::from_secs(30))
        .await;
    let mut by_replica: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    for e in &events {
        let data = &e["data"]["body"];
        by_replica
            .entry(data["replica"].as_str().unwrap_or_default().to_string())
            .or_default()
            .insert(data["n"].as_u64().unwrap_or(u64::MAX));
    }
    for (name, _, _) in &replicas {
        assert_eq!(
            by_replica.get(*name).map(BTreeSet::len),
            Some(EACH),
            "every delivery sent to {name} arrived once"
        );
    }
    assert_eq!(events.len(), 3 * EACH, "no event twice");
    for (_, _, p) in replicas {
        assert_eq!(p.terminate().await, Some(0));
    }
}
