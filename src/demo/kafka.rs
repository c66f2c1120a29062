//! A Kafka workload (a producer and a consumer group on a payments topic), an independent alert
//! subscriber, and the live demo that joins them to the engine: steady traffic, then one
//! partition's consumer stops committing, then it resumes, while the subscriber prints what risk
//! teams would read from the alert topic.
//!
//! The producer sends one message per batch: some Kafka-protocol brokers report wrong end offsets
//! for batched produce, and [`KafkaWorkload::produced`] lets a test check the broker's end offsets
//! against what was really produced, so that a broker error can never pass for lag.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::alert::{Alert, AlertState};
use crate::config::Config;
use crate::kafka::KafkaConfig;
use crate::link::BrokerError;
use crate::run::live;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn client(bootstrap: &str, own: &[(&str, &str)]) -> rdkafka::ClientConfig {
    KafkaConfig {
        bootstrap_servers: bootstrap.into(),
        ..Default::default()
    }
    .client(own)
}

/// Creates a topic (replication 1); an existing topic is fine.
pub fn create_topic(bootstrap: &str, topic: &str, partitions: i32) -> Result<(), BrokerError> {
    let cfg = KafkaConfig {
        bootstrap_servers: bootstrap.into(),
        ..Default::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(err)?;
    rt.block_on(crate::kafka::create_topic(&cfg, topic, partitions))
}

#[derive(Default)]
struct Control {
    /// Partitions whose consumer is stuck: paused, and their offsets no longer committed.
    frozen: Mutex<BTreeSet<i32>>,
    /// Messages per second the consumer manages (0: as fast as it can).
    consume_rate: AtomicU64,
    produce_rate: AtomicU64,
    /// Milliseconds between commits (0: the default, every second).
    commit_every_ms: AtomicU64,
}

pub struct KafkaWorkload {
    stop: Arc<AtomicBool>,
    control: Arc<Control>,
    produced: Arc<Vec<AtomicU64>>,
    threads: Vec<JoinHandle<()>>,
}

impl KafkaWorkload {
    /// Creates `topic` and starts producing `rate` messages per second, round-robin over its
    /// partitions, and a consumer group `group` that commits every second.
    pub fn start(
        bootstrap: &str,
        topic: &str,
        partitions: i32,
        group: &str,
        rate: u64,
    ) -> Result<KafkaWorkload, BrokerError> {
        create_topic(bootstrap, topic, partitions)?;
        let stop = Arc::new(AtomicBool::new(false));
        let control = Arc::new(Control::default());
        control.produce_rate.store(rate, Ordering::Relaxed);
        let produced: Arc<Vec<AtomicU64>> =
            Arc::new((0..partitions).map(|_| AtomicU64::new(0)).collect());
        let producer: BaseProducer<Counted> = client(
            bootstrap,
            &[("linger.ms", "0"), ("batch.num.messages", "1")],
        )
        .create_with_context(Counted(produced.clone()))
        .map_err(err)?;
        let consumer: BaseConsumer = client(
            bootstrap,
            &[
                ("group.id", group),
                ("enable.auto.commit", "false"),
                ("auto.offset.reset", "earliest"),
            ],
        )
        .create()
        .map_err(err)?;
        consumer.subscribe(&[topic]).map_err(err)?;
        let threads = vec![
            spawn_producer(
                producer,
                topic.to_string(),
                partitions,
                stop.clone(),
                control.clone(),
            ),
            spawn_consumer(consumer, topic.to_string(), stop.clone(), control.clone()),
        ];
        Ok(KafkaWorkload {
            stop,
            control,
            produced,
            threads,
        })
    }

    /// The consumer of `partition` stays alive but stops consuming and committing it.
    pub fn freeze_partition(&self, partition: i32) {
        self.control
            .frozen
            .lock()
            .expect("control lock")
            .insert(partition);
    }

    pub fn thaw_partition(&self, partition: i32) {
        self.control
            .frozen
            .lock()
            .expect("control lock")
            .remove(&partition);
    }

    /// Limits the consumer to `rate` messages per second (0: unlimited).
    pub fn set_consume_rate(&self, rate: u64) {
        self.control.consume_rate.store(rate, Ordering::Relaxed);
    }

    /// Commits every `every` instead of every second, as a sink that flushes on a timer does.
    pub fn set_commit_interval(&self, every: Duration) {
        let ms = every.as_millis().clamp(1, u64::MAX as u128) as u64;
        self.control.commit_every_ms.store(ms, Ordering::Relaxed);
    }

    pub fn set_produce_rate(&self, rate: u64) {
        self.control.produce_rate.store(rate, Ordering::Relaxed);
    }

    /// Messages the broker acknowledged, per partition.
    pub fn produced(&self) -> Vec<u64> {
        self.produced
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .collect()
    }

    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Counts the messages the broker acknowledged, per partition.
struct Counted(Arc<Vec<AtomicU64>>);

impl ClientContext for Counted {}

impl ProducerContext for Counted {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Ok(m) = result {
            self.0[m.partition() as usize].fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn spawn_producer(
    producer: BaseProducer<Counted>,
    topic: String,
    partitions: i32,
    stop: Arc<AtomicBool>,
    control: Arc<Control>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let started = Instant::now();
        let mut sent = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let rate = control.produce_rate.load(Ordering::Relaxed).max(1);
            let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
            if sent >= due {
                producer.poll(Duration::from_millis(5));
                continue;
            }
            let p = (sent % partitions as u64) as i32;
            let body = format!("{{\"payment\":{sent}}}");
            // batch.num.messages = 1 keeps one message per batch; sends are pipelined.
            let _ = producer.send(
                BaseRecord::<(), str>::to(&topic)
                    .partition(p)
                    .payload(&body),
            );
            producer.poll(Duration::ZERO);
            sent += 1;
        }
        producer.flush(Duration::from_secs(5)).ok();
    })
}

fn spawn_consumer(
    consumer: BaseConsumer,
    topic: String,
    stop: Arc<AtomicBool>,
    control: Arc<Control>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut next: std::collections::BTreeMap<i32, i64> = std::collections::BTreeMap::new();
        let mut paused: BTreeSet<i32> = BTreeSet::new();
        let mut last_commit = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let frozen = control.frozen.lock().expect("control lock").clone();
            sync_paused(&consumer, &topic, &frozen, &mut paused);
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) {
                if !frozen.contains(&m.partition()) {
                    next.insert(m.partition(), m.offset() + 1);
                }
                let rate = control.consume_rate.load(Ordering::Relaxed);
                if rate > 0 {
                    std::thread::sleep(Duration::from_secs_f64(1.0 / rate as f64));
                }
            }
            let every = match control.commit_every_ms.load(Ordering::Relaxed) {
                0 => Duration::from_secs(1),
                ms => Duration::from_millis(ms),
            };
            if last_commit.elapsed() >= every {
                last_commit = Instant::now();
                let mut tpl = TopicPartitionList::new();
                for (p, o) in next.iter().filter(|(p, _)| !frozen.contains(p)) {
                    let _ = tpl.add_partition_offset(&topic, *p, Offset::Offset(*o));
                }
                if tpl.count() > 0 {
                    let _ = consumer.commit(&tpl, CommitMode::Sync);
                }
            }
        }
    })
}

/// Pauses newly frozen partitions and resumes thawed ones, from the last committed position.
fn sync_paused(
    consumer: &BaseConsumer,
    topic: &str,
    frozen: &BTreeSet<i32>,
    paused: &mut BTreeSet<i32>,
) {
    let tpl = |ps: &BTreeSet<i32>| {
        let mut t = TopicPartitionList::new();
        for p in ps {
            t.add_partition(topic, *p);
        }
        t
    };
    let to_pause: BTreeSet<i32> = frozen.difference(paused).copied().collect();
    let to_resume: BTreeSet<i32> = paused.difference(frozen).copied().collect();
    if !to_pause.is_empty() && consumer.pause(&tpl(&to_pause)).is_ok() {
        paused.extend(&to_pause);
    }
    if !to_resume.is_empty() && consumer.resume(&tpl(&to_resume)).is_ok() {
        paused.retain(|p| !to_resume.contains(p));
    }
}

/// An independent subscriber: its own consumer group, reading the alert topic from the start.
pub struct Subscriber {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub alerts: Receiver<(String, Alert)>,
}

impl Subscriber {
    pub fn start(bootstrap: &str, topic: &str, group: &str) -> Result<Subscriber, BrokerError> {
        let cfg = KafkaConfig {
            bootstrap_servers: bootstrap.into(),
            alerts_topic: topic.into(),
            ..Default::default()
        };
        Self::start_with(&cfg, group)
    }

    /// Reads `cfg.alerts_topic` with `cfg`'s connection properties.
    pub fn start_with(cfg: &KafkaConfig, group: &str) -> Result<Subscriber, BrokerError> {
        let own = [
            ("group.id", group),
            ("auto.offset.reset", "earliest"),
            ("enable.auto.commit", "true"),
            ("topic.metadata.refresh.interval.ms", "1000"),
        ];
        let consumer: BaseConsumer = cfg.client(&own).create().map_err(err)?;
        consumer
            .subscribe(&[cfg.alerts_topic.as_str()])
            .map_err(err)?;
        let (tx, rx) = unbounded();
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match consumer.poll(Duration::from_millis(100)) {
                    Some(Ok(m)) => {
                        let key = m
                            .key()
                            .map(|k| String::from_utf8_lossy(k).to_string())
                            .unwrap_or_default();
                        if let Some(a) = m
                            .payload()
                            .and_then(|p| serde_json::from_slice::<Alert>(p).ok())
                        {
                            if tx.send((key, a)).is_err() {
                                return;
                            }
                        }
                    }
                    Some(Err(e)) => tracing::debug!(error = %e, "subscriber"),
                    None => {}
                }
            }
        });
        Ok(Subscriber {
            stop,
            thread: Some(thread),
            alerts: rx,
        })
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The engine watching `kafka`, with alerts to its topic, running until `stop`.
pub fn start_engine(
    config: Config,
    kafka: KafkaConfig,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>, BrokerError> {
    let mut config = super::rabbitmq::embedded(config);
    config.kafka = vec![kafka];
    config.stdout = false;
    Ok(std::thread::spawn(move || {
        if let Err(e) = live(Arc::new(config), None, stop) {
            tracing::error!(error = %e, "engine stopped");
        }
    }))
}

/// The live demo: `payments.authorize` with 6 partitions at 60 msg/s and group `auth-service`;
/// partition 3's consumer stops committing, then resumes; prints what a subscriber of
/// `mqwatch.alerts` reads.
pub fn demo(bootstrap: &str) -> Result<(), BrokerError> {
    let started = Instant::now();
    let say = |m: &str| println!("[{:>5.1} s] {m}", started.elapsed().as_secs_f64());
    let topic = "payments.authorize";
    let kafka = KafkaConfig {
        bootstrap_servers: bootstrap.into(),
        include_topics: vec![format!("^{}$", regex::escape(topic))],
        include_groups: vec!["^auth-service$".into()],
        poll_interval: Duration::from_secs(2),
        ..Default::default()
    };
    let work = KafkaWorkload::start(bootstrap, topic, 6, "auth-service", 60)?;
    say("workload: 60 msg/s into payments.authorize (6 partitions), group auth-service committing every second");
    let stop = Arc::new(AtomicBool::new(false));
    let config = super::rabbitmq::embedded(super::rabbitmq::demo_config());
    say(&format!(
        "dashboard, API and /metrics on {}/",
        config.http.external_base()
    ));
    let engine = start_engine(config, kafka.clone(), stop.clone())?;
    let sub = Subscriber::start(
        bootstrap,
        &kafka.alerts_topic,
        &format!("risk-team-{}", std::process::id()),
    )?;
    say("mqwatch polling offsets every 2 s; a risk-team subscriber reads mqwatch.alerts");
    std::thread::sleep(Duration::from_secs(30));
    say(&format!(
        "broker end offsets vs produced: produced {:?}",
        work.produced()
    ));
    say("partition 3's consumer stops committing (stuck on a poison message)");
    work.freeze_partition(3);
    let frozen_at = Instant::now();
    let fired = wait_for(
        &sub.alerts,
        AlertState::Firing,
        Duration::from_secs(90),
        &say,
    );
    if fired {
        say(&format!(
            "stall read by the subscriber {:.0} s after the consumer stopped; resuming it",
            frozen_at.elapsed().as_secs_f64()
        ));
    }
    work.thaw_partition(3);
    let resolved = fired
        && wait_for(
            &sub.alerts,
            AlertState::Resolved,
            Duration::from_secs(120),
            &say,
        );
    stop.store(true, Ordering::Relaxed);
    work.stop();
    let _ = engine.join();
    match (fired, resolved) {
        (true, true) => Ok(()),
        (false, _) => Err("no consumer_stall alert reached the subscriber within 90 s".into()),
        (true, false) => Err("the stall did not resolve within 120 s".into()),
    }
}

fn wait_for(
    alerts: &Receiver<(String, Alert)>,
    state: AlertState,
    limit: Duration,
    say: &impl Fn(&str),
) -> bool {
    let deadline = Instant::now() + limit;
    while let Ok((key, a)) = alerts.recv_deadline(deadline) {
        say(&format!(
            "subscriber got [{key}] {:?} {:?}: {}",
            a.state, a.kind, a.summary
        ));
        if a.state == state {
            return true;
        }
    }
    false
}
