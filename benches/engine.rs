//! Benchmarks: the wire-format parser, the HDR window, and the end-to-end replay of a JSONL file
//! (read, parse, route, window, detect, alert) in events per second.
//!
//!     cargo bench --bench engine
//!
//! The replay target of the product is at least 1,000,000 events/s on a 2-core machine.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

use mqwatch::config::Config;
use mqwatch::dataset::gen::{generate, GenOptions, DEFAULT_START_MS};
use mqwatch::event::parse_event;
use mqwatch::run::{replay, ReplayOptions};
use mqwatch::window::LatencyWindow;

const LAG: &str = r#"{"ts":1767225600000,"name":"kafka_consumergroup_lag","labels":{"cluster":"pay-kafka","consumergroup":"auth-service","partition":"3","topic":"payments.authorize"},"value":1532}"#;
const LATENCY: &str = r#"{"ts":1767225600123,"name":"message_latency_ms","labels":{"cluster":"pay-kafka","consumergroup":"auth-service","topic":"payments.authorize"},"value":41.7}"#;

fn parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(1));
    g.bench_function("lag_event", |b| {
        b.iter(|| black_box(parse_event(black_box(LAG)).unwrap().series_hash()))
    });
    g.bench_function("latency_event", |b| {
        b.iter(|| black_box(parse_event(black_box(LATENCY)).unwrap().series_hash()))
    });
    g.finish();
}

fn window(c: &mut Criterion) {
    let mut g = c.benchmark_group("window");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("hdr_record_1000", |b| {
        b.iter_batched_ref(
            || LatencyWindow::new(6, 2),
            |w| {
                for i in 0..1000u32 {
                    w.record((i / 100) as i64, 20.0 + (i % 97) as f64);
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn replay_file(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let opts = GenOptions {
        scenario: "payments".into(),
        hours: 3.0,
        seed: 3,
        start_ms: DEFAULT_START_MS,
    };
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let (_, summary) = generate(&opts, &mut f).unwrap();
    std::io::Write::flush(&mut f).unwrap();
    drop(f);
    let config = Arc::new(Config::default());
    let mut g = c.benchmark_group("replay");
    g.sample_size(10);
    g.throughput(Throughput::Elements(summary.events));
    g.bench_function("jsonl_end_to_end", |b| {
        b.iter(|| {
            let r = replay(
                config.clone(),
                std::slice::from_ref(&path),
                Vec::new(),
                &ReplayOptions::default(),
            )
            .unwrap();
            assert_eq!(r.input.events, summary.events);
            black_box(r.alert_updates)
        })
    });
    g.finish();
}

criterion_group!(benches, parse, window, replay_file);
criterion_main!(benches);
