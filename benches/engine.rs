//! Benchmarks: the wire-format parser, the HDR window, the end-to-end replay of a JSONL file
//! (read, parse, route, window, detect, alert) in events per second, and one `/metrics` scrape
//! of a large board.
//!
//!     cargo bench --bench engine
//!
//! The replay target of the product is at least 1,000,000 events/s on a 2-core machine.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

use mqwatch::alert::Entity;
use mqwatch::config::Config;
use mqwatch::dataset::gen::{generate, GenOptions, DEFAULT_START_MS};
use mqwatch::event::parse_event;
use mqwatch::run::{replay, ReplayOptions};
use mqwatch::status::{
    Board, EntityKind, EntityStatus, Figures, PartitionStatus, ShardView, Status,
};
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
        scrape_s: None,
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

/// A board of 200 groups of 12 partitions, 200 queues and 200 latency streams, each with a
/// full hour of history: one scrape renders about 8,000 series.
fn large_board() -> Arc<Board> {
    let board = Board::new(1, 6, Vec::new());
    {
        let mut view = board.worker(0);
        for i in 0..200 {
            let mut shard = ShardView::default();
            let labels =
                |k: &str, v: String| vec![("cluster".into(), "pay".into()), (k.into(), v.into())];
            let mut g = EntityStatus::new(
                EntityKind::KafkaGroup,
                Entity::new(labels("consumergroup", format!("g{i}")), format!("t/g{i}")),
            );
            g.partitions = (0..12)
                .map(|p| PartitionStatus {
                    partition: p.to_string().into(),
                    lag: Some(p as f64),
                    lag_seconds: Some(1.0),
                })
                .collect();
            let mut q = EntityStatus::new(
                EntityKind::RabbitmqQueue,
                Entity::new(labels("queue", format!("q{i}")), format!("queue q{i}")),
            );
            let mut l = EntityStatus::new(
                EntityKind::Latency,
                Entity::new(labels("topic", format!("t{i}")), format!("t{i}")),
            );
            for n in 0..360 {
                let f = Figures {
                    backlog: Some(n as f64),
                    consumers: Some(3.0),
                    consume_rate: Some(50.0),
                    unacked: Some(2.0),
                    p50_ms: Some(20.0),
                    p99_ms: Some(80.0),
                    ..Figures::default()
                };
                for e in [&mut g, &mut q, &mut l] {
                    e.record(n * 10_000, true, f, Status::Ok);
                }
            }
            shard.groups.push(g);
            shard.queues.push(q);
            shard.latencies.push(l);
            view.shards.push(shard);
        }
    }
    board
}

fn scrape(c: &mut Criterion) {
    let board = large_board();
    let mut g = c.benchmark_group("serve");
    g.bench_function("metrics_600_entities", |b| {
        b.iter(|| black_box(mqwatch::serve::metrics_text(&board).len()))
    });
    g.finish();
}

criterion_group!(benches, parse, window, replay_file, scrape);
criterion_main!(benches);
