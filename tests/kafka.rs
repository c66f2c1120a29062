//! Against a real Kafka-protocol broker on 127.0.0.1:9092 that `.ci/run` installs and starts
//! (tansu, in-memory storage). Each test uses its own topics and groups. The restart test starts
//! a broker of its own on another port, so that stopping it disturbs no other test.

mod common;

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::Message;

use mqwatch::alert::{Alert, AlertState};
use mqwatch::config::Config;
use mqwatch::demo::kafka::{create_topic, start_engine, KafkaWorkload, Subscriber};
use mqwatch::detect::AlertKind;
use mqwatch::kafka::KafkaConfig;
use mqwatch::link::Link;
use mqwatch::pipeline::Pipeline;
use mqwatch::sink::kafka::KafkaPublisher;
use mqwatch::sink::{Sink, SpoolSink};
use mqwatch::source::kafka::{header_map, MetricsConsumer};
use mqwatch::source::LiveSource;

const BOOTSTRAP: &str = "127.0.0.1:9092";

use common::unique;

fn kafka(topic: &str, group: &str, alerts: &str) -> KafkaConfig {
    KafkaConfig {
        bootstrap_servers: BOOTSTRAP.into(),
        include_topics: vec![format!("^{}$", regex::escape(topic))],
        include_groups: vec![format!("^{}$", regex::escape(group))],
        poll_interval: Duration::from_secs(2),
        alerts_topic: alerts.into(),
        ..Default::default()
    }
}

fn next(sub: &Subscriber, within: Duration) -> Option<Alert> {
    sub.alerts.recv_timeout(within).ok().map(|(_, a)| a)
}

/// The broker's end offsets must be what was produced: a broker error must never pass for lag.
fn assert_end_offsets_match(topic: &str, work: &KafkaWorkload) {
    let c: BaseConsumer = KafkaConfig {
        bootstrap_servers: BOOTSTRAP.into(),
        ..Default::default()
    }
    .client(&[("group.id", "mqwatch-test-offsets")])
    .create()
    .unwrap();
    let before = work.produced();
    let reported: Vec<i64> = (0..before.len() as i32)
        .map(|p| {
            c.fetch_watermarks(topic, p, Duration::from_secs(5))
                .unwrap()
                .1
        })
        .collect();
    let after = work.produced();
    for p in 0..before.len() {
        let r = reported[p] as u64;
        // Acknowledged before the read <= reported <= acknowledged after it, plus a few in flight.
        assert!(
            before[p] <= r && r <= after[p] + 10,
            "partition {p}: broker says {r}, produced {}..{}",
            before[p],
            after[p]
        );
    }
}

#[test]
fn a_partition_whose_consumer_stops_committing_raises_one_group_alert_then_resolves() {
    let (topic, group, alerts) = (unique("payments"), unique("auth"), unique("mqwatch.alerts"));
    let work = KafkaWorkload::start(BOOTSTRAP, &topic, 4, &group, 40).unwrap();
    let mut config = Config::default();
    config.detectors.stall.stall_after = Duration::from_secs(30);
    let stop = Arc::new(AtomicBool::new(false));
    let engine = start_engine(config, kafka(&topic, &group, &alerts), stop.clone()).unwrap();
    let sub = Subscriber::start(BOOTSTRAP, &alerts, &unique("risk-team")).unwrap();

    assert!(
        next(&sub, Duration::from_secs(40)).is_none(),
        "steady traffic raised an alert"
    );
    assert_end_offsets_match(&topic, &work);
    assert!(
        work.produced().iter().sum::<u64>() > 200,
        "{:?}",
        work.produced()
    );

    work.freeze_partition(2);
    let fired = next(&sub, Duration::from_secs(60)).expect("no stall alert within 60 s");
    assert_eq!(
        (fired.state, fired.kind),
        (AlertState::Firing, AlertKind::ConsumerStall),
        "{}",
        fired.summary
    );
    assert_eq!(fired.labels["partitions"], "2");
    assert_eq!(fired.labels["consumergroup"], group);
    assert!(
        fired.context["lag_messages"] > 0.0 && fired.context["time_lag_seconds"] > 20.0,
        "{:?}",
        fired.context
    );

    work.thaw_partition(2);
    let resolved = loop {
        let a = next(&sub, Duration::from_secs(120)).expect("no resolution within 120 s");
        if a.state == AlertState::Resolved {
            break a;
        }
    };
    assert_eq!(resolved.id, fired.id);
    stop.store(true, Ordering::Relaxed);
    work.stop();
    engine.join().unwrap();
}

#[test]
fn a_producer_faster_than_its_consumer_raises_backlog_growth_with_time_lag() {
    let (topic, group, alerts) = (
        unique("payments"),
        unique("settle"),
        unique("mqwatch.alerts"),
    );
    let work = KafkaWorkload::start(BOOTSTRAP, &topic, 2, &group, 30).unwrap();
    let mut config = Config::default();
    config.engine.interval = Duration::from_secs(5);
    config.engine.lateness = Duration::from_secs(2);
    config.detectors.backlog.growth_window = Duration::from_secs(60);
    config.detectors.backlog.min_backlog_seconds = 10.0;
    let stop = Arc::new(AtomicBool::new(false));
    let engine = start_engine(config, kafka(&topic, &group, &alerts), stop.clone()).unwrap();
    let sub = Subscriber::start(BOOTSTRAP, &alerts, &unique("risk-team")).unwrap();
    std::thread::sleep(Duration::from_secs(15));
    // The consumer slows to a third of the production rate.
    work.set_consume_rate(10);
    let deadline = Instant::now() + Duration::from_secs(180);
    let growth = loop {
        let a = next(&sub, deadline.saturating_duration_since(Instant::now()))
            .expect("no backlog alert within 180 s");
        if a.kind == AlertKind::BacklogGrowth {
            break a;
        }
    };
    assert!(
        growth.summary.contains("s of consumption")
            && growth.summary.contains("oldest message waiting"),
        "{}",
        growth.summary
    );
    assert!(
        growth.context["time_lag_seconds"] > 5.0,
        "{:?}",
        growth.context
    );
    assert!(
        growth.context["backlog_messages"] > 100.0,
        "{:?}",
        growth.context
    );
    stop.store(true, Ordering::Relaxed);
    work.stop();
    engine.join().unwrap();
}

#[test]
fn metric_topic_events_are_applied_and_bad_messages_dead_lettered() {
    let (topic, dlq) = (unique("metrics"), unique("mqwatch.dead-letter"));
    create_topic(BOOTSTRAP, &topic, 2).unwrap();
    create_topic(BOOTSTRAP, &dlq, 1).unwrap();
    let producer: BaseProducer = KafkaConfig::default()
        .client(&[("linger.ms", "0")])
        .create()
        .unwrap();
    let good = r#"[{"ts":1767225600000,"name":"kafka_consumergroup_lag","labels":{"topic":"t","consumergroup":"g","partition":"0"},"value":3},
                   {"ts":1767225601000,"name":"kafka_consumergroup_lag","labels":{"topic":"t","consumergroup":"g","partition":"0"},"value":4}]"#;
    for (i, body) in [
        good,
        "not json at all",
        good,
        r#"{"ts":1,"name":"x","value":1}"#,
        good,
    ]
    .iter()
    .enumerate()
    {
        producer
            .send(
                BaseRecord::<(), str>::to(&topic)
                    .partition((i % 2) as i32)
                    .payload(*body),
            )
            .unwrap();
        producer.flush(Duration::from_secs(5)).unwrap();
    }
    let cfg = KafkaConfig {
        metrics_topics: vec![topic.clone()],
        metrics_group: unique("mqwatch-metrics"),
        dead_letter_topic: dlq.clone(),
        ..Default::default()
    };
    let (pipeline, _alerts) = Pipeline::start(Arc::new(Config::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let mut ingest = pipeline.ingest();
    let source = Box::new(MetricsConsumer::new(&cfg));
    let runner = std::thread::spawn(move || {
        source.run(&mut ingest, st).unwrap();
        ingest.stats.clone()
    });
    let reader: BaseConsumer = KafkaConfig::default()
        .client(&[
            ("group.id", &unique("dlq-reader")),
            ("auto.offset.reset", "earliest"),
        ])
        .create()
        .unwrap();
    reader.subscribe(&[&dlq]).unwrap();
    let mut dead = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while dead.len() < 2 && Instant::now() < deadline {
        if let Some(Ok(m)) = reader.poll(Duration::from_millis(200)) {
            dead.push((
                header_map(&m),
                String::from_utf8_lossy(m.payload().unwrap_or_default()).to_string(),
            ));
        }
    }
    assert_eq!(dead.len(), 2, "{dead:?}");
    dead.sort_by(|a, b| a.0["x-mqwatch-reason"].cmp(&b.0["x-mqwatch-reason"]));
    assert_eq!(dead[0].0["x-mqwatch-reason"], "absurd_timestamp");
    assert_eq!(dead[1].0["x-mqwatch-reason"], "not_json");
    assert_eq!(dead[1].1, "not json at all");
    assert_eq!(dead[1].0["x-mqwatch-topic"], topic);
    assert!(dead[1].0["x-mqwatch-error"].contains("not_json"));
    assert!(dead
        .iter()
        .all(|(h, _)| h.contains_key("x-mqwatch-partition") && h.contains_key("x-mqwatch-offset")));
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let stats = runner.join().unwrap();
    assert_eq!(stats.events, 6);
    assert_eq!(stats.total_errors(), 2);
    // Everything was committed once applied.
    let check: BaseConsumer = cfg
        .client(&[("group.id", cfg.metrics_group.as_str())])
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition(&topic, 0);
    tpl.add_partition(&topic, 1);
    let committed = check
        .committed_offsets(tpl, Duration::from_secs(5))
        .unwrap();
    let total: i64 = committed
        .elements()
        .iter()
        .map(|e| e.offset().to_raw().unwrap_or(0))
        .sum();
    assert_eq!(total, 5);
    pipeline.finish();
}

fn tansu_binary() -> String {
    std::env::var("MQWATCH_TANSU").unwrap_or_else(|_| {
        format!(
            "{}/.local/share/mqwatch/tansu/bin/tansu",
            std::env::var("HOME").unwrap()
        )
    })
}

fn start_broker(port: u16) -> Child {
    let url = format!("tcp://127.0.0.1:{port}");
    let child = Command::new(tansu_binary())
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
            "--storage-engine",
            "memory://tansu/",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the tansu broker (.ci/services installs it)");
    let mut child = child;
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return child;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().ok();
    child.wait().ok();
    panic!("broker on {port} did not start");
}

fn alert(i: usize) -> Alert {
    serde_json::from_value(serde_json::json!({
        "id": format!("consumer_stall-{i:016x}"), "state": "firing", "kind": "consumer_stall", "severity": "critical",
        "labels": {"cluster": "c", "topic": "payments", "consumergroup": "g"}, "ts": 1767225600000i64 + i as i64,
        "started_at": 1767225600000i64, "resolved_at": null, "metric": "lag", "observed": 9.0, "expected": 0.0,
        "score": 2.0, "detector": "partition_stalled", "summary": "test"
    }))
    .unwrap()
}

#[test]
fn every_alert_arrives_although_the_broker_restarts_while_they_are_emitted() {
    // A port of its own, so that a broker left over from an aborted run cannot stand in.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let bootstrap = format!("127.0.0.1:{port}");
    let mut broker = start_broker(port);
    let mut cfg = KafkaConfig {
        bootstrap_servers: bootstrap.clone(),
        alerts_topic: unique("mqwatch.alerts"),
        ..Default::default()
    };
    // librdkafka (2.12) can crash when a client outlives a broker that comes back with the topic
    // under a new identity, as this in-memory broker does: fail sends fast, so that the sink
    // builds a fresh producer before the broker returns.
    cfg.properties
        .insert("message.timeout.ms".into(), "1500".into());
    let mut sink = SpoolSink::start(
        "kafka",
        Link::new("test alert topic"),
        KafkaPublisher::new(&cfg),
        1000,
    );
    let collect = |sub: &Subscriber, got: &mut BTreeSet<String>, until: usize, within: Duration| {
        let deadline = Instant::now() + within;
        while got.len() < until {
            match sub.alerts.recv_deadline(deadline) {
                Ok((_, a)) => {
                    got.insert(a.id);
                }
                Err(_) => break,
            }
        }
    };
    sink.send(&alert(0)).unwrap();
    sink.flush(Duration::from_secs(90)).unwrap();
    let before = Subscriber::start_with(&cfg, &unique("risk-team")).unwrap();
    let mut got = BTreeSet::new();
    for i in 1..100 {
        sink.send(&alert(i)).unwrap();
        std::thread::sleep(Duration::from_millis(10));
    }
    sink.flush(Duration::from_secs(90)).unwrap();
    collect(&before, &mut got, 100, Duration::from_secs(30));
    assert_eq!(got.len(), 100, "before the restart");
    drop(before);
    // The broker goes away while alerts keep coming; they wait in the spool.
    broker.kill().unwrap();
    broker.wait().unwrap();
    for i in 100..200 {
        sink.send(&alert(i)).unwrap();
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_secs(2));
    let mut broker = start_broker(port);
    // This broker keeps its logs in memory: after the restart the alert topic is a new log, which
    // the first subscriber's old position would skip into. A subscriber of the new log reads it
    // from its start; together the two must have every alert.
    let after = Subscriber::start_with(&cfg, &unique("risk-team")).unwrap();
    for i in 200..300 {
        sink.send(&alert(i)).unwrap();
        std::thread::sleep(Duration::from_millis(10));
    }
    sink.flush(Duration::from_secs(90)).unwrap();
    let failures = mqwatch::telemetry::registry().get("broker_failures", "test alert topic");
    collect(&after, &mut got, 300, Duration::from_secs(60));
    drop((after, sink));
    broker.kill().ok();
    broker.wait().ok();
    assert!(failures > 0, "the sink never noticed the broker was gone");
    let want: BTreeSet<String> = (0..300).map(|i| alert(i).id).collect();
    assert_eq!(
        got.len(),
        300,
        "{} of 300 arrived; missing {:?}",
        got.len(),
        want.difference(&got).next()
    );
    assert_eq!(got, want);
}

/// A sink that commits once a minute (Kafka Connect's default flush) is not stalled between its
/// commits; once its consumer really stops, the stall comes within twice its cadence.
#[test]
fn a_group_committing_every_minute_is_quiet_until_it_stops_then_stalls_within_two_minutes() {
    let (topic, group, alerts) = (
        unique("archive"),
        unique("s3-sink"),
        unique("mqwatch.alerts"),
    );
    let work = KafkaWorkload::start(BOOTSTRAP, &topic, 3, &group, 20).unwrap();
    work.set_commit_interval(Duration::from_secs(60));
    let stop = Arc::new(AtomicBool::new(false));
    let engine = start_engine(
        Config::default(),
        kafka(&topic, &group, &alerts),
        stop.clone(),
    )
    .unwrap();
    let sub = Subscriber::start(BOOTSTRAP, &alerts, &unique("risk-team")).unwrap();

    if let Some(a) = next(&sub, Duration::from_secs(300)) {
        panic!("a group committing every minute raised: {}", a.summary);
    }
    for p in 0..3 {
        work.freeze_partition(p);
    }
    let stopped = Instant::now();
    let fired = next(&sub, Duration::from_secs(120)).expect("no stall within 2 x the cadence");
    assert_eq!(
        (fired.state, fired.kind),
        (AlertState::Firing, AlertKind::ConsumerStall),
        "{}",
        fired.summary
    );
    let usual = fired.context.get("usual_freeze_seconds").copied();
    assert!(
        usual.is_some_and(|u| (50.0..=80.0).contains(&u)),
        "the alert says what it learned: {usual:?}, {}",
        fired.summary
    );
    assert!(stopped.elapsed() <= Duration::from_secs(120));
    stop.store(true, Ordering::Relaxed);
    work.stop();
    engine.join().unwrap();
}
