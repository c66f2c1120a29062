//! Overload: a source that pushes far more than the workers can judge, under each backpressure
//! policy, each in a process of its own so that its peak memory is its own.
//!
//!     cargo bench --bench overload
//!
//! The workers are made slow on purpose: event time runs ahead 100 ms (one interval) every 500
//! events, so each worker judges all of its 100,000 gauges after every 500 events; the source
//! pushes parsed events as fast as it can. With `drop` the queues stay bounded, so memory does
//! not grow with what is offered, and every event dropped is counted (a sample whose interval
//! closed while the batches before it were dropped is counted as late); with `block` nothing is
//! lost and the source slows to the workers' pace. Offered twice over (5 M and 10 M events), a
//! bounded run's peak memory stays where it was.

use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use mqwatch::config::{Backpressure, Config};
use mqwatch::event::parse_event;
use mqwatch::pipeline::Pipeline;

const SERIES: usize = 100_000;
const EVENTS_PER_INTERVAL: usize = 500;

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// One run: `offered` events through a pipeline with `policy`; prints one line of figures.
fn run(policy: Backpressure, offered: usize) {
    let mut config = Config::default();
    config.engine.workers = 1;
    config.engine.interval = std::time::Duration::from_millis(100);
    config.engine.lateness = std::time::Duration::from_millis(50);
    config.engine.queue_batches = 8;
    config.engine.backpressure = policy;
    config.engine.max_series = SERIES;
    let lines: Vec<String> = (0..SERIES)
        .map(|i| {
            format!(
                r#"{{"ts":1767225600000,"name":"queue_depth","labels":{{"q":"q{i}"}},"value":{}}}"#,
                i % 13
            )
        })
        .collect();
    let events: Vec<_> = lines.iter().map(|l| parse_event(l).unwrap()).collect();
    let (pipeline, _alerts) = Pipeline::start(Arc::new(config));
    let mut ingest = pipeline.ingest();
    let started = Instant::now();
    let mut ev = events[0].clone();
    for i in 0..offered {
        let base = &events[i % SERIES];
        ev.labels.clone_from(&base.labels);
        ev.ts = 1_767_225_600_000 + (i / EVENTS_PER_INTERVAL) as i64 * 100;
        ev.value = base.value;
        ingest.push(&ev);
    }
    let pushed_in = started.elapsed();
    // The last partial batches go with the block policy, so that the counts are final here.
    ingest.sync();
    let input = ingest.stats.clone();
    drop(ingest);
    let workers = pipeline.finish();
    println!(
        "{:?} {offered} {} {} {} {:.2} {} {}",
        policy,
        workers.samples,
        input.dropped_backpressure,
        input.events,
        pushed_in.as_secs_f64(),
        peak_rss_kib(),
        workers.late
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let (Some(policy), Some(offered)) = (args.get(1), args.get(2)) {
        let policy = if policy == "drop" {
            Backpressure::Drop
        } else {
            Backpressure::Block
        };
        run(policy, offered.parse().unwrap());
        return;
    }
    let exe = std::env::current_exe().unwrap();
    println!("overload: {SERIES} gauges, one worker, an interval closed every {EVENTS_PER_INTERVAL} events");
    println!(
        "{:<7} {:>9} {:>9} {:>9} {:>6} {:>10} {:>11} {:>9}",
        "policy", "offered", "judged", "dropped", "late", "source s", "offered/s", "peak MiB"
    );
    for offered in [5_000_000usize, 10_000_000] {
        for policy in ["drop", "block"] {
            let out = Command::new(&exe)
                .args([policy, &offered.to_string()])
                .output()
                .unwrap();
            let line = String::from_utf8_lossy(&out.stdout);
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 {
                println!("{policy}: failed: {}", String::from_utf8_lossy(&out.stderr));
                continue;
            }
            let (judged, dropped, late): (u64, u64, u64) = (
                f[2].parse().unwrap(),
                f[3].parse().unwrap(),
                f[7].parse().unwrap(),
            );
            let secs: f64 = f[5].parse().unwrap();
            let rss: f64 = f[6].parse::<f64>().unwrap() / 1024.0;
            println!(
                "{policy:<7} {offered:>9} {judged:>9} {dropped:>9} {late:>6} {secs:>10.2} {:>11.0} {rss:>9.0}",
                offered as f64 / secs
            );
            let lost = offered as u64 - judged - dropped - late;
            assert_eq!(
                lost, 0,
                "{policy}: {lost} events neither judged nor counted"
            );
            if policy == "block" {
                assert_eq!(dropped, 0, "block drops nothing");
            }
        }
    }
}
