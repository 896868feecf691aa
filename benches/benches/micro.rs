//! Micro-benchmarks of Portico's hot paths, each with a 512-byte JSON payload:
//!
//! - `config_diff`: the supervisor bringing 1,000 running configurations in line with a new
//!   ConfigMap: unchanged (the diff alone), and with one value changed (diff, stop one, start one);
//! - `ingest_decode`: a `POST /` body in the original JSON `{"src","payload"}`, a structured
//!   CloudEvent, a binary-mode CloudEvent (`portico::ingest::decode`);
//! - `event_512b_json`: transform a raw event into a CloudEvent, and encode one (structured,
//!   binary), alone and together;
//! - `outbox_append`: durable appends (fsynced, group commit) to an outbox in a temp dir, one
//!   appender at a time and 64 at once (throughput in appends/s).
//!
//! `cargo bench -p portico-benches --bench micro [-- FILTER]`

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue};
use portico::bench::{Outbox, Transformer, trace_context};
use portico::cloudevents::CloudEvent;
use portico::cloudevents::http::{encode_binary, encode_structured};
use portico::testing::Harness;
use portico::{ConfigContext, ConfigError, ConfigExecutor, Event};
use portico_benches::{json_payload, original_ingest_body};
use std::hint::black_box;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// The CloudEvent Portico makes of a 512-byte JSON payload.
fn sample_event() -> CloudEvent {
    let t = Transformer::new("bench-gateway", "webhook", "1.0");
    let ev = Event::new(json_payload(512)).with_content_type("application/json");
    t.transform("config", ev).expect("a valid event")
}

/// Runs until stopped, doing nothing: what the supervisor costs, without an executor's work.
struct Idle;

impl ConfigExecutor for Idle {
    type Config = ();

    fn validate(&self, _ctx: &ConfigContext) -> Result<(), ConfigError> {
        Ok(())
    }

    async fn start_config(&self, ctx: ConfigContext, (): ()) -> Result<(), ConfigError> {
        ctx.running();
        ctx.stopped().await;
        Ok(())
    }
}

fn config_diff(c: &mut Criterion) {
    let rt = runtime();
    let harness = rt.block_on(async { Harness::new("bench", "calendar") });
    let mut supervisor = harness.supervisor(Arc::new(Idle));
    let map: BTreeMap<String, String> = (0..1000)
        .map(|i| {
            (
                format!("calendar.c{i:04}"),
                format!("interval: {}s\n", i + 1),
            )
        })
        .collect();
    let mut changed = map.clone();
    changed.insert("calendar.c0500".into(), "interval: 1h\n".into());
    rt.block_on(supervisor.apply(&map));

    let mut g = c.benchmark_group("config_diff");
    g.bench_function("1000_unchanged", |b| {
        b.iter(|| rt.block_on(supervisor.apply(black_box(&map))))
    });
    // Each iteration flips one value: the old configuration stops, the new one starts.
    let maps = [changed, map];
    let mut i = 0;
    g.bench_function("1000_one_changed", |b| {
        b.iter(|| {
            i += 1;
            rt.block_on(supervisor.apply(black_box(&maps[i % 2])))
        })
    });
    g.finish();
    rt.block_on(supervisor.stop_all());
}

fn ingest_decode(c: &mut Criterion) {
    let payload = json_payload(512);
    let original = original_ingest_body("config", &payload);

    let structured_body = Bytes::from(sample_event().to_json());
    let mut structured_headers = HeaderMap::new();
    structured_headers.insert(
        "content-type",
        HeaderValue::from_static("application/cloudevents+json"),
    );

    let (binary_headers, binary_body) = encode_binary(&sample_event());

    let mut g = c.benchmark_group("ingest_decode");
    g.bench_function("original_json", |b| {
        let none = HeaderMap::new();
        b.iter(|| black_box(portico::ingest::decode(&none, original.clone()).unwrap()))
    });
    g.bench_function("structured", |b| {
        b.iter(|| {
            black_box(
                portico::ingest::decode(&structured_headers, structured_body.clone()).unwrap(),
            )
        })
    });
    g.bench_function("binary", |b| {
        b.iter(|| black_box(portico::ingest::decode(&binary_headers, binary_body.clone()).unwrap()))
    });
    g.finish();
}

fn transform_and_encode(c: &mut Criterion) {
    let t = Transformer::new("bench-gateway", "webhook", "1.0");
    let payload = json_payload(512);
    assert_eq!(payload.len(), 512);
    let ce = sample_event();
    let mut g = c.benchmark_group("event_512b_json");
    g.bench_function("transform", |b| {
        b.iter(|| {
            let ev = Event::new(payload.clone()).with_content_type("application/json");
            black_box(t.transform("config", ev).unwrap())
        })
    });
    g.bench_function("encode_structured", |b| {
        b.iter(|| black_box(encode_structured(black_box(&ce))))
    });
    g.bench_function("encode_binary", |b| {
        b.iter(|| black_box(encode_binary(black_box(&ce))))
    });
    g.bench_function("transform+structured", |b| {
        b.iter(|| {
            let ev = Event::new(payload.clone()).with_content_type("application/json");
            let ce = t.transform("config", ev).unwrap();
            black_box(encode_structured(&ce))
        })
    });
    g.bench_function("transform+trace+structured", |b| {
        b.iter(|| {
            let ev = Event::new(payload.clone()).with_content_type("application/json");
            let mut ce = t.transform("config", ev).unwrap();
            trace_context(&mut ce);
            black_box(encode_structured(&ce))
        })
    });
    g.bench_function("transform+binary", |b| {
        b.iter(|| {
            let ev = Event::new(payload.clone()).with_content_type("application/json");
            let ce = t.transform("config", ev).unwrap();
            black_box(encode_binary(&ce))
        })
    });
    g.finish();
}

/// Appenders at once in the concurrent outbox benchmark.
const APPENDERS: usize = 64;

fn outbox_append(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("a temp dir");
    let outbox = Arc::new(Outbox::open(dir.path().join("outbox")).expect("the outbox opens"));
    let ce = sample_event();

    // The watcher takes every event at once, so that segments can go.
    let append = |outbox: Arc<Outbox>, ce: CloudEvent| async move {
        outbox.append(&ce).await.unwrap();
    };

    let mut g = c.benchmark_group("outbox_append");
    g.sample_size(20);
    g.throughput(Throughput::Elements(1));
    g.bench_function("1_appender", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            rt.block_on(async {
                for _ in 0..iters {
                    append(outbox.clone(), ce.clone()).await;
                }
            });
            let took = start.elapsed();
            outbox.housekeep_soon();
            took
        })
    });
    g.throughput(Throughput::Elements(APPENDERS as u64));
    g.bench_function("64_appenders", |b| {
        b.iter_custom(|iters| {
            let mut took = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                rt.block_on(futures::future::join_all(
                    (0..APPENDERS).map(|_| append(outbox.clone(), ce.clone())),
                ));
                took += start.elapsed();
            }
            outbox.housekeep_soon();
            took
        })
    });
    g.finish();
    outbox.close();
}

criterion_group!(
    benches,
    config_diff,
    ingest_decode,
    transform_and_encode,
    outbox_append
);
criterion_main!(benches);
