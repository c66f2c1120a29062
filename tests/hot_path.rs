//! The hot path allocates nothing: once a series is known, parsing an event, routing it, applying
//! it in its worker and recycling the batch buffers cost no heap allocation, and neither does
//! judging an interval (detectors and learned-model scoring) while nothing fires. Counted with a
//! global allocator, over the whole process (workers included); the tests take turns.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use mqwatch::config::Config;
use mqwatch::event::parse_event;
use mqwatch::pipeline::Pipeline;

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The allocation counter is global: one test counts at a time.
static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn known_series_flow_through_parse_route_and_apply_without_allocating() {
    let _turn = TURN.lock().unwrap();
    let (pipeline, alerts) = Pipeline::start(Arc::new(Config::default()));
    let drain = std::thread::spawn(move || alerts.into_iter().count());
    let mut ingest = pipeline.ingest();
    // Lines for a handful of series within one interval, so no interval closes while counting.
    let lines: Vec<String> = (0..8)
        .flat_map(|p| {
            [
                format!(r#"{{"ts":1767225600000,"name":"kafka_consumergroup_lag","labels":{{"cluster":"k","topic":"t","consumergroup":"g","partition":"{p}"}},"value":{p}}}"#),
                format!(r#"{{"ts":1767225600500,"name":"message_latency_ms","labels":{{"cluster":"k","topic":"t{p}","consumergroup":"g"}},"value":12.5}}"#),
            ]
        })
        .collect();
    let mut feed = |n: usize| {
        for i in 0..n {
            ingest.push(&parse_event(&lines[i % lines.len()]).unwrap());
        }
        ingest.flush();
    };
    feed(50_000); // warm-up: series registered, buffers and maps at their size
    std::thread::sleep(std::time::Duration::from_millis(200));
    let before = ALLOCS.load(Ordering::Relaxed);
    feed(500_000);
    std::thread::sleep(std::time::Duration::from_millis(200));
    let during = ALLOCS.load(Ordering::Relaxed) - before;
    drop(ingest);
    pipeline.finish();
    drain.join().unwrap();
    // A few buffers may still be in flight when recycling is measured; per event it must be ~0.
    eprintln!("allocations during 500,000 events: {during}");
    assert!(during < 100, "{during} allocations for 500,000 events");
}

#[test]
fn judging_intervals_with_a_learned_model_allocates_nothing_while_all_is_well() {
    let _turn = TURN.lock().unwrap();
    let models = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let learned = mqwatch::pipeline::Learned {
        models: Some(Arc::new(
            mqwatch::learn::ModelSet::load_dir(&models).unwrap(),
        )),
        features: None,
    };
    let (pipeline, alerts) = Pipeline::start_with(Arc::new(Config::default()), learned);
    let drain = std::thread::spawn(move || alerts.into_iter().count());
    let mut ingest = pipeline.ingest();
    // A healthy group (4 partitions), a queue and a latency series, one sample each per 10 s.
    let interval = |n: i64| -> Vec<String> {
        let ts = 1_767_225_600_000 + n * 10_000;
        let wiggle = (n * 7919 % 13) as f64;
        let mut v = Vec::new();
        for p in 0..4 {
            let end = 1000 * n + 50;
            v.push(format!(r#"{{"ts":{ts},"name":"kafka_topic_partition_current_offset","labels":{{"cluster":"k","topic":"t","partition":"{p}"}},"value":{end}}}"#));
            v.push(format!(r#"{{"ts":{ts},"name":"kafka_consumergroup_current_offset","labels":{{"cluster":"k","topic":"t","consumergroup":"g","partition":"{p}"}},"value":{}}}"#, end - 40 - wiggle as i64));
        }
        v.push(format!(r#"{{"ts":{ts},"name":"kafka_consumergroup_members","labels":{{"cluster":"k","topic":"t","consumergroup":"g"}},"value":4}}"#));
        for (name, value) in [
            ("rabbitmq_queue_messages_ready", 20.0 + wiggle),
            ("rabbitmq_queue_messages_unacked", 10.0),
            ("rabbitmq_queue_consumers", 2.0),
            ("rabbitmq_queue_messages_acked_total", 500.0 * n as f64),
        ] {
            v.push(format!(r#"{{"ts":{ts},"name":"{name}","labels":{{"cluster":"r","vhost":"/","queue":"q"}},"value":{value}}}"#));
        }
        for i in 0..20 {
            v.push(format!(r#"{{"ts":{},"name":"message_latency_ms","labels":{{"cluster":"k","topic":"t","consumergroup":"g"}},"value":{}}}"#, ts + i * 400, 30.0 + ((n + i) * 31 % 17) as f64));
        }
        v
    };
    let warm_up: Vec<String> = (0..800).flat_map(interval).collect();
    let counted: Vec<String> = (800..1600).flat_map(interval).collect();
    let mut feed = |lines: &[String]| {
        for l in lines {
            ingest.push(&parse_event(l).unwrap());
        }
        ingest.flush();
    };
    feed(&warm_up); // histories fill to their capacity, scratch buffers to their size
    std::thread::sleep(std::time::Duration::from_millis(300));
    let before = ALLOCS.load(Ordering::Relaxed);
    feed(&counted);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let during = ALLOCS.load(Ordering::Relaxed) - before;
    drop(ingest);
    pipeline.finish();
    let alerts = drain.join().unwrap();
    eprintln!("allocations while judging 800 intervals: {during}; alerts: {alerts}");
    assert_eq!(alerts, 0, "a healthy workload raised alerts");
    assert!(
        during < 100,
        "{during} allocations over 800 judged intervals"
    );
}
