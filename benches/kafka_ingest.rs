//! End-to-end ingestion from a Kafka topic: metric events produced to a local broker are consumed
//! by the metric-topic source, parsed, applied by the workers and committed (at-least-once).
//!
//!     cargo bench --bench kafka_ingest            # broker at 127.0.0.1:9092, or MQWATCH_KAFKA
//!
//! Messages carry 500 events each (a JSON array, as exporters batch them); a few malformed ones
//! go to the dead-letter topic. A run ends when the group's committed offsets reach the end,
//! which by construction means every event was applied. Reports the median of three runs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::TopicPartitionList;

use mqwatch::config::Config;
use mqwatch::demo::kafka::create_topic;
use mqwatch::kafka::KafkaConfig;
use mqwatch::pipeline::Pipeline;
use mqwatch::source::kafka::MetricsConsumer;
use mqwatch::source::LiveSource;

const PARTITIONS: i32 = 4;
const MESSAGES: usize = 4_000;
const EVENTS_PER_MESSAGE: usize = 500;
const MALFORMED: usize = 20;

fn payload(i: usize) -> String {
    let mut s = String::from("[");
    for j in 0..EVENTS_PER_MESSAGE {
        if j > 0 {
            s.push(',');
        }
        let ts = 1_767_225_600_000i64 + (i * EVENTS_PER_MESSAGE + j) as i64;
        s.push_str(&format!(
            r#"{{"ts":{ts},"name":"kafka_consumergroup_lag","labels":{{"cluster":"pay-kafka","consumergroup":"auth-service","partition":"{}","topic":"payments.t{}"}},"value":{}}}"#,
            j % 12,
            j % 40,
            j % 97
        ));
    }
    s.push(']');
    s
}

fn main() {
    let bootstrap = std::env::var("MQWATCH_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into());
    if std::net::TcpStream::connect(&bootstrap).is_err() {
        println!("kafka_ingest: skipped, no broker at {bootstrap} (run .ci/services)");
        return;
    }
    let base = KafkaConfig {
        bootstrap_servers: bootstrap.clone(),
        ..Default::default()
    };
    let topic = format!("mqwatch.bench-{}", std::process::id());
    let dlq = format!("{topic}.dead-letter");
    create_topic(&bootstrap, &topic, PARTITIONS).unwrap();
    create_topic(&bootstrap, &dlq, 1).unwrap();
    let producer: BaseProducer = base
        .client(&[
            ("linger.ms", "0"),
            ("batch.num.messages", "1"),
            ("queue.buffering.max.kbytes", "1048576"),
        ])
        .create()
        .unwrap();
    for i in 0..MESSAGES + MALFORMED {
        let body = if i % (MESSAGES / MALFORMED) == 0 && i / (MESSAGES / MALFORMED) < MALFORMED {
            "{broken".to_string()
        } else {
            payload(i)
        };
        let p = (i % PARTITIONS as usize) as i32;
        while producer
            .send(
                BaseRecord::<(), str>::to(&topic)
                    .partition(p)
                    .payload(&body),
            )
            .is_err()
        {
            producer.poll(Duration::from_millis(10));
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(60)).unwrap();
    let total_messages = (MESSAGES + MALFORMED) as i64;

    let mut rates = Vec::new();
    for run in 0..3 {
        let cfg = KafkaConfig {
            metrics_topics: vec![topic.clone()],
            metrics_group: format!("mqwatch-bench-{}-{run}", std::process::id()),
            dead_letter_topic: dlq.clone(),
            ..base.clone()
        };
        let (pipeline, alerts) = Pipeline::start(Arc::new(Config::default()));
        let drain = std::thread::spawn(move || alerts.into_iter().count());
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let mut ingest = pipeline.ingest();
        let source = Box::new(MetricsConsumer::new(&cfg));
        let started = Instant::now();
        let runner = std::thread::spawn(move || {
            source.run(&mut ingest, st).unwrap();
            ingest.stats.clone()
        });
        let watcher: BaseConsumer = cfg
            .client(&[("group.id", cfg.metrics_group.as_str())])
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            tpl.add_partition(&topic, p);
        }
        let mut first_commit = None;
        loop {
            let committed: i64 = watcher
                .committed_offsets(tpl.clone(), Duration::from_secs(5))
                .map(|c| {
                    c.elements()
                        .iter()
                        .map(|e| e.offset().to_raw().unwrap_or(0).max(0))
                        .sum()
                })
                .unwrap_or(0);
            if committed > 0 && first_commit.is_none() {
                first_commit = Some((Instant::now(), committed));
            }
            if committed >= total_messages {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let elapsed = started.elapsed();
        stop.store(true, Ordering::Relaxed);
        let stats = runner.join().unwrap();
        drop(pipeline.ingest());
        pipeline.finish();
        drain.join().unwrap();
        assert_eq!(
            stats.events as usize,
            MESSAGES * EVENTS_PER_MESSAGE,
            "every event applied"
        );
        assert_eq!(
            stats.total_errors() as usize,
            MALFORMED,
            "every malformed message refused"
        );
        let (t0, c0) = first_commit.unwrap();
        let steady = (total_messages - c0) as f64 * EVENTS_PER_MESSAGE as f64
            / t0.elapsed().max(Duration::from_millis(1)).as_secs_f64();
        let overall = stats.events as f64 / elapsed.as_secs_f64();
        println!("run {run}: {} events in {:.2} s (group join included): {overall:.0} events/s; after the first commit: {steady:.0} events/s", stats.events, elapsed.as_secs_f64());
        rates.push((overall, steady));
    }
    rates.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (overall, steady) = rates[1];
    println!("kafka_ingest median of 3: {overall:.0} events/s including group join, {steady:.0} events/s steady ({} malformed messages dead-lettered per run)", MALFORMED);
}
