//! Micro-benchmarks of the hot path: transform a raw event into a CloudEvent and encode it
//! (structured, binary), with a 512-byte JSON payload.
//!
//! `cargo bench -p portico-benches --bench micro`

use criterion::{Criterion, criterion_group, criterion_main};
use portico::Event;
use portico::cloudevents::http::{encode_binary, encode_structured};
use portico::transform::Transformer;
use portico_benches::json_payload;
use std::hint::black_box;

fn transform_and_encode(c: &mut Criterion) {
    let t = Transformer::new("bench-gateway", "webhook", "1.0");
    let payload = json_payload(512);
    assert_eq!(payload.len(), 512);
    let mut g = c.benchmark_group("event_512b_json");
    g.bench_function("transform", |b| {
        b.iter(|| {
            let ev = Event::new(payload.clone()).with_content_type("application/json");
            black_box(t.transform("config", ev).unwrap())
        })
    });
    g.bench_function("transform+structured", |b| {
        b.iter(|| {
            let ev = Event::new(payload.clone()).with_content_type("application/json");
            let ce = t.transform("config", ev).unwrap();
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

criterion_group!(benches, transform_and_encode);
criterion_main!(benches);
