//! Against the real RabbitMQ on 127.0.0.1:5672 (guest/guest, management on 15672), which
//! `.ci/run` installs and starts. Every test uses its own uniquely named queues and exchanges and
//! removes them when done.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_lite::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;
use tokio::sync::mpsc::UnboundedReceiver;

use mqwatch::alert::{Alert, AlertState};
use mqwatch::config::Config;
use mqwatch::demo::rabbitmq::{demo_config, start_engine, subscribe, ConsumerMode, Workload};
use mqwatch::detect::AlertKind;
use mqwatch::link::Link;
use mqwatch::pipeline::Pipeline;
use mqwatch::rabbitmq::{connect, RabbitConfig};
use mqwatch::sink::rabbitmq::RabbitPublisher;
use mqwatch::sink::{Sink, SpoolSink};
use mqwatch::source::rabbitmq::{MetricsConsumer, Probe, QueuePoller};
use mqwatch::source::LiveSource;

const URI: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

use common::unique;

fn rabbit(queue: &str, exchange: &str) -> RabbitConfig {
    RabbitConfig {
        uri: URI.into(),
        include: vec![format!("^{}$", regex::escape(queue))],
        alerts_exchange: exchange.into(),
        ..Default::default()
    }
}

async fn next_alert(
    rx: &mut UnboundedReceiver<(String, Alert)>,
    within: Duration,
) -> Option<(String, Alert)> {
    tokio::time::timeout(within, rx.recv()).await.ok().flatten()
}

async fn delete_exchange(name: &str) {
    let conn = connect(URI, "mqwatch-test-cleanup").await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let _ = ch
        .exchange_delete(name.into(), ExchangeDeleteOptions::default())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_consumers_raise_a_stall_that_a_subscriber_receives_then_resolve() {
    let queue = unique("risk.scoring");
    let exchange = unique("mqwatch.alerts");
    let (_sub, mut alerts) = subscribe(URI, &exchange, "*.consumer_stall.#")
        .await
        .unwrap();
    let mut work = Workload::start(URI, &queue, 40.0).await.unwrap();
    work.add_consumers(3, ConsumerMode::Ack, 20).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    // Default engine settings: 10 s intervals, 5 s polls.
    let engine = start_engine(Config::default(), rabbit(&queue, &exchange), stop.clone()).unwrap();

    assert!(
        next_alert(&mut alerts, Duration::from_secs(30))
            .await
            .is_none(),
        "steady traffic raised an alert"
    );
    work.remove_consumers().await;
    let (key, fired) = next_alert(&mut alerts, Duration::from_secs(60))
        .await
        .expect("no stall alert within 60 s");
    assert_eq!(
        (fired.state, fired.kind),
        (AlertState::Firing, AlertKind::ConsumerStall)
    );
    assert_eq!(fired.labels["queue"], queue);
    assert!(
        key.starts_with("warning.consumer_stall.") && key.ends_with(&queue),
        "{key}"
    );

    work.add_consumers(3, ConsumerMode::Ack, 20).await.unwrap();
    let resolved = loop {
        let (_, a) = next_alert(&mut alerts, Duration::from_secs(120))
            .await
            .expect("no resolution within 120 s");
        if a.state == AlertState::Resolved {
            break a;
        }
    };
    assert_eq!(resolved.id, fired.id);
    stop.store(true, Ordering::Relaxed);
    work.stop().await;
    tokio::task::spawn_blocking(move || engine.join().unwrap())
        .await
        .unwrap();
    delete_exchange(&exchange).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_holding_their_prefetch_without_acking_stall_the_queue() {
    let queue = unique("risk.scoring");
    let exchange = unique("mqwatch.alerts");
    let (_sub, mut alerts) = subscribe(URI, &exchange, "#").await.unwrap();
    let mut work = Workload::start(URI, &queue, 40.0).await.unwrap();
    work.add_consumers(2, ConsumerMode::Ack, 20).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut r = rabbit(&queue, &exchange);
    r.poll_interval = Duration::from_secs(2);
    let engine = start_engine(demo_config(), r, stop.clone()).unwrap();
    tokio::time::sleep(Duration::from_secs(15)).await;
    // The consumers stay connected but hold 20 messages each and never acknowledge again.
    work.remove_consumers().await;
    work.add_consumers(2, ConsumerMode::Hold, 20).await.unwrap();
    let (_, a) = next_alert(&mut alerts, Duration::from_secs(90))
        .await
        .expect("no stall for held messages");
    assert_eq!(
        (a.kind, a.detector.as_str()),
        (AlertKind::ConsumerStall, "unacked_stuck"),
        "{}",
        a.summary
    );
    assert!(a.summary.contains("unacked with no acks"), "{}", a.summary);
    stop.store(true, Ordering::Relaxed);
    work.stop().await;
    tokio::task::spawn_blocking(move || engine.join().unwrap())
        .await
        .unwrap();
    delete_exchange(&exchange).await;
}

fn alert(i: usize) -> Alert {
    serde_json::from_value(serde_json::json!({
        "id": format!("latency-{i:016x}"), "state": "firing", "kind": "latency", "severity": "critical",
        "labels": {"cluster": "c", "queue": "q"}, "ts": 1767225600000i64 + i as i64, "started_at": 1767225600000i64,
        "resolved_at": null, "metric": "p99", "observed": 900.0, "expected": 90.0, "score": 9.0,
        "detector": "latency_spike", "summary": "test"
    }))
    .unwrap()
}

/// Closes every broker connection whose name is `name`, through the management API.
fn close_connections(name: &str) -> usize {
    let agent = ureq::Agent::new_with_defaults();
    let auth = "Basic Z3Vlc3Q6Z3Vlc3Q=";
    let body = agent
        .get("http://127.0.0.1:15672/api/connections")
        .header("authorization", auth)
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let conns: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    let mut closed = 0;
    for c in conns
        .iter()
        .filter(|c| c["client_properties"]["connection_name"] == name)
    {
        let path = c["name"]
            .as_str()
            .unwrap()
            .replace(' ', "%20")
            .replace('>', "%3E")
            .replace(':', "%3A");
        if agent
            .delete(format!("http://127.0.0.1:15672/api/connections/{path}"))
            .header("authorization", auth)
            .call()
            .is_ok()
        {
            closed += 1;
        }
    }
    closed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_alert_arrives_although_the_alert_connection_is_closed_midway() {
    let exchange = unique("mqwatch.alerts");
    let (_sub, mut rx) = subscribe(URI, &exchange, "#").await.unwrap();
    let ex = exchange.clone();
    let sent = tokio::task::spawn_blocking(move || {
        let mut sink = SpoolSink::start(
            "rabbitmq",
            Link::new("test alert exchange"),
            RabbitPublisher::new(URI, &ex),
            1000,
        );
        let mut closed = 0;
        for i in 0..400 {
            sink.send(&alert(i)).unwrap();
            std::thread::sleep(Duration::from_millis(5));
            if i == 150 || i == 300 {
                // The management API lists a new connection only after a few seconds.
                for _ in 0..40 {
                    let n = close_connections(&format!("mqwatch-alerts {ex}"));
                    if n > 0 {
                        closed += n;
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(250));
                }
            }
        }
        sink.flush(Duration::from_secs(60)).unwrap();
        let failures = mqwatch::telemetry::registry().get("broker_failures", "test alert exchange");
        (closed, failures)
    })
    .await
    .unwrap();
    assert!(
        sent.0 >= 2,
        "the test did not manage to close the connection"
    );
    assert!(sent.1 >= 1, "the sink never noticed the closed connection");
    let mut got = BTreeSet::new();
    while got.len() < 400 {
        let Some((_, a)) = next_alert(&mut rx, Duration::from_secs(20)).await else {
            break;
        };
        got.insert(a.id);
    }
    let want: BTreeSet<String> = (0..400).map(|i| alert(i).id).collect();
    assert_eq!(got, want, "{} of 400 arrived", got.len());
    delete_exchange(&exchange).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_queue_events_are_applied_and_bad_messages_dead_lettered_with_the_error() {
    let queue = unique("metrics");
    let dlx = unique("mqwatch.dead-letter");
    let conn = connect(URI, "mqwatch-test").await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        queue.as_str().into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    // The dead letters' own queue, bound before anything is refused.
    let mut r = rabbit("none", "");
    r.metrics_queue = queue.clone();
    r.dead_letter_exchange = dlx.clone();
    let dead = unique("dead");
    ch.exchange_declare(
        dlx.as_str().into(),
        lapin::ExchangeKind::Topic,
        lapin::options::ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_declare(
        dead.as_str().into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        dead.as_str().into(),
        dlx.as_str().into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let good = r#"[{"ts":1767225600000,"name":"rabbitmq_queue_messages_ready","labels":{"queue":"a"},"value":3},
                   {"ts":1767225601000,"name":"rabbitmq_queue_messages_ready","labels":{"queue":"a"},"value":4}]"#;
    for body in [
        good,
        "not json at all",
        good,
        r#"{"ts":1767225600000,"name":"x","value":"NaN"}"#,
    ] {
        ch.basic_publish(
            "".into(),
            queue.as_str().into(),
            BasicPublishOptions::default(),
            body.as_bytes(),
            BasicProperties::default(),
        )
        .await
        .unwrap();
    }

    let (pipeline, _alerts) = Pipeline::start(Arc::new(Config::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let mut ingest = pipeline.ingest();
    let source = Box::new(MetricsConsumer::new(&r));
    let runner = std::thread::spawn(move || {
        source.run(&mut ingest, st).unwrap();
        ingest.stats.clone()
    });
    let mut dead_letters = ch
        .basic_consume(
            dead.as_str().into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut errors = Vec::new();
    while errors.len() < 2 {
        let d = tokio::time::timeout(Duration::from_secs(20), dead_letters.next())
            .await
            .expect("dead letter")
            .unwrap()
            .unwrap();
        let headers = d.properties.headers().clone().unwrap();
        let error = match headers.inner().get("x-mqwatch-error") {
            Some(AMQPValue::LongString(s)) => s.to_string(),
            other => panic!("no error header: {other:?}"),
        };
        assert_eq!(d.routing_key.as_str(), queue);
        errors.push((error, String::from_utf8_lossy(&d.data).to_string()));
    }
    assert!(
        errors[0].0.contains("not_json") && errors[0].1 == "not json at all",
        "{errors:?}"
    );
    assert!(errors[1].0.contains("bad_field"), "{errors:?}");
    // Everything was acknowledged once applied: the queue is empty.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let q = ch
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(q.message_count(), 0);
    stop.store(true, Ordering::Relaxed);
    let stats = tokio::task::spawn_blocking(move || runner.join().unwrap())
        .await
        .unwrap();
    assert_eq!(stats.events, 4);
    assert_eq!(stats.total_errors(), 2);
    pipeline.finish();
    for q in [&queue, &dead] {
        ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await
            .unwrap();
    }
    delete_exchange(&dlx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_management_api_the_poller_falls_back_to_passive_declares() {
    let queue = unique("ledger.postings");
    let work = Workload::start(URI, &queue, 20.0).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut r = rabbit(&queue, "");
    r.management_url = "http://127.0.0.1:1".into();
    r.queues = vec![queue.clone()];
    let (pipeline, _alerts) = Pipeline::start(Arc::new(Config::default()));
    let mut ingest = pipeline.ingest();
    let mut poller = QueuePoller::new(&r).unwrap();
    let n = poller
        .poll(mqwatch::source::rabbitmq::now_ms(), &mut ingest)
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(ingest.stats.events, 2, "ready and consumers of one queue");
    // With the API, the same queue yields its full state, once the broker's statistics (refreshed
    // every 5 s) include it.
    let mut api = QueuePoller::new(&rabbit(&queue, "")).unwrap();
    let mut most = 0;
    for _ in 0..30 {
        let before = ingest.stats.events;
        assert!(
            api.poll(mqwatch::source::rabbitmq::now_ms(), &mut ingest)
                .await
                .unwrap()
                <= 1
        );
        most = most.max(ingest.stats.events - before);
        if most >= 7 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(most >= 7, "{most} events from the management API");
    drop(ingest);
    pipeline.finish();
    work.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_measures_end_to_end_latency_through_the_broker() {
    let mut r = rabbit("none", "");
    r.probe.enabled = true;
    r.probe.queue = unique("mqwatch.probe");
    r.probe.interval = Duration::from_millis(100);
    let (pipeline, _alerts) = Pipeline::start(Arc::new(Config::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let mut ingest = pipeline.ingest();
    let probe = Box::new(Probe::new(&r));
    let runner = std::thread::spawn(move || {
        probe.run(&mut ingest, st).unwrap();
        ingest.stats.clone()
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let stats = tokio::task::spawn_blocking(move || runner.join().unwrap())
        .await
        .unwrap();
    assert!(stats.events >= 10, "{} probe latencies", stats.events);
    pipeline.finish();
    let conn = connect(URI, "mqwatch-test-cleanup").await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.queue_delete(r.probe.queue.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
}
