//! Kafka as a source of metric events, three ways:
//!
//! - [`LagPoller`] does what Burrow and kafka_exporter do, built in: each `poll_interval` it
//!   discovers topics and consumer groups (include/exclude patterns), reads every partition's
//!   log-end offset in one batched ListOffsets per broker, each group's committed offsets in one
//!   OffsetFetch per group, and group membership, and feeds the well-known `kafka_*` events. It
//!   keeps no state of its own: the engine turns lag into seconds from the log-end offsets it
//!   saw (`crate::window::TimeLag`), as Kafka Lag Exporter does, and checkpoints that table.
//! - [`MetricsConsumer`] consumes metric events from topics in a consumer group and commits
//!   offsets only after the events are applied; refused messages go to the dead-letter topic with
//!   the error and their origin in headers.
//! - [`Probe`] produces timestamped messages to every partition of a probe topic and consumes them
//!   back, recording `message_latency_ms` and produce availability.
//!
//! librdkafka clients block, so each source runs on its own thread; the few awaits (delivery
//! reports) run on a small runtime of that thread.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use regex::Regex;

use super::rabbitmq::now_ms;
use super::LiveSource;
use crate::event::{names, ErrorReason, LabelVec, ParseError, RawEvent};
use crate::kafka::{create_topic, redact_error, KafkaConfig};
use crate::link::{BrokerError, Link};
use crate::pipeline::Feed;
use crate::telemetry::emit;
use crate::telemetry::events::{DeadLettered, OffsetsUnreadable, Polled};

const TIMEOUT: Duration = Duration::from_secs(10);
/// Messages applied between two commits (at most; an idle moment commits too).
const COMMIT_EVERY: usize = 2000;

fn push_sample(ingest: &mut dyn Feed, ts: i64, name: &str, labels: &[(&str, &str)], value: f64) {
    let labels: LabelVec = labels
        .iter()
        .map(|(k, v)| (Cow::Borrowed(*k), Cow::Borrowed(*v)))
        .collect();
    ingest.push(&RawEvent {
        ts,
        name: Cow::Borrowed(name),
        labels,
        value,
        kind: None,
    });
}

pub struct LagPoller {
    cfg: KafkaConfig,
    topics: (Vec<Regex>, Vec<Regex>),
    groups: (Vec<Regex>, Vec<Regex>),
    meta: BaseConsumer,
    /// One idle (never subscribing) consumer per watched group: librdkafka reads a group's
    /// committed offsets only through a client of that group.
    group_clients: HashMap<String, BaseConsumer>,
    link: Arc<Link>,
    /// How many topics and groups the last poll matched, to say so when it changes.
    matched: Option<(usize, usize)>,
}

fn compile(ps: &[String]) -> Result<Vec<Regex>, BrokerError> {
    ps.iter()
        .map(|p| Regex::new(p).map_err(BrokerError::new))
        .collect()
}

fn wanted(name: &str, (include, exclude): &(Vec<Regex>, Vec<Regex>)) -> bool {
    include.iter().any(|r| r.is_match(name)) && !exclude.iter().any(|r| r.is_match(name))
}

impl LagPoller {
    pub fn new(cfg: &KafkaConfig) -> Result<Self, BrokerError> {
        cfg.validate().map_err(BrokerError::new)?;
        let meta = cfg
            .client(&[
                ("group.id", "mqwatch-poller"),
                ("enable.auto.commit", "false"),
            ])
            .create()
            .map_err(|e| redact_error(e, cfg))?;
        Ok(LagPoller {
            topics: (compile(&cfg.include_topics)?, compile(&cfg.exclude_topics)?),
            groups: (compile(&cfg.include_groups)?, compile(&cfg.exclude_groups)?),
            cfg: cfg.clone(),
            meta,
            group_clients: HashMap::new(),
            link: Link::new(format!("kafka lag poller ({})", cfg.bootstrap_servers)),
            matched: None,
        })
    }

    /// Says which topics and groups a poll matched, when that changes (the first poll included).
    fn tell_matched(&mut self, topics: &[&str], groups: &[&str]) {
        if self.matched == Some((topics.len(), groups.len())) {
            return;
        }
        self.matched = Some((topics.len(), groups.len()));
        tracing::info!(
            broker = %self.link.name(),
            cluster = %self.cfg.cluster,
            "watching {} topics ({}) and {} consumer groups ({})",
            topics.len(),
            super::first_names(topics),
            groups.len(),
            super::first_names(groups)
        );
    }

    /// One poll: every watched partition's end offset, every watched group's committed offsets,
    /// lag and time lag, and membership, as events stamped `ts`. Returns the partitions seen.
    pub fn poll(&mut self, ts: i64, ingest: &mut dyn Feed) -> Result<usize, BrokerError> {
        let err = |e: rdkafka::error::KafkaError| redact_error(e, &self.cfg);
        let metadata = self.meta.fetch_metadata(None, TIMEOUT).map_err(err)?;
        let mut tpl = TopicPartitionList::new();
        let mut topic_names = Vec::new();
        for t in metadata
            .topics()
            .iter()
            .filter(|t| wanted(t.name(), &self.topics))
        {
            topic_names.push(t.name().to_string());
            for p in t.partitions() {
                tpl.add_partition_offset(t.name(), p.id(), Offset::End)
                    .map_err(err)?;
            }
        }
        if tpl.count() == 0 {
            let topics: Vec<&str> = topic_names.iter().map(String::as_str).collect();
            self.tell_matched(&topics, &[]);
            return Ok(0);
        }
        // ListOffsets for "latest", batched per broker: the log-end offsets.
        let ends = self
            .meta
            .offsets_for_times(tpl.clone(), TIMEOUT)
            .map_err(err)?;
        let cluster = self.cfg.cluster.clone();
        let mut end_of: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for e in ends.elements() {
            if let Offset::Offset(o) = e.offset() {
                let p = e.partition().to_string();
                let l = [
                    ("cluster", cluster.as_str()),
                    ("partition", p.as_str()),
                    ("topic", e.topic()),
                ];
                push_sample(ingest, ts, names::KAFKA_LOG_END_OFFSET, &l, o as f64);
                end_of.insert((e.topic().to_string(), e.partition()), o);
            }
        }
        let groups = self.meta.fetch_group_list(None, TIMEOUT).map_err(err)?;
        let watched: Vec<_> = groups
            .groups()
            .iter()
            .filter(|g| wanted(g.name(), &self.groups))
            .collect();
        let group_names: Vec<String> = watched.iter().map(|g| g.name().to_string()).collect();
        for g in watched {
            let members = g.members().len() as f64;
            let client = match self.group_clients.entry(g.name().to_string()) {
                std::collections::hash_map::Entry::Occupied(c) => c.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => {
                    let c: BaseConsumer = self
                        .cfg
                        .client(&[("group.id", g.name()), ("enable.auto.commit", "false")])
                        .create()
                        .map_err(|e| redact_error(e, &self.cfg))?;
                    v.insert(c)
                }
            };
            // OffsetFetch for all watched partitions at once; a partition the group never
            // committed comes back as Invalid and tells that the group does not read that topic.
            let committed = match client.committed_offsets(tpl.clone(), TIMEOUT) {
                Ok(c) => c,
                Err(e) => {
                    emit(OffsetsUnreadable {
                        group: g.name(),
                        error: redact_error(e, &self.cfg),
                    });
                    continue;
                }
            };
            let mut topics_read = std::collections::BTreeSet::new();
            for e in committed.elements() {
                let Offset::Offset(c) = e.offset() else {
                    continue;
                };
                let Some(&end) = end_of.get(&(e.topic().to_string(), e.partition())) else {
                    continue;
                };
                topics_read.insert(e.topic().to_string());
                let p = e.partition().to_string();
                let l = [
                    ("cluster", cluster.as_str()),
                    ("consumergroup", g.name()),
                    ("partition", p.as_str()),
                    ("topic", e.topic()),
                ];
                push_sample(ingest, ts, names::KAFKA_COMMITTED_OFFSET, &l, c as f64);
                push_sample(ingest, ts, names::KAFKA_LAG, &l, (end - c).max(0) as f64);
            }
            for t in topics_read {
                let l = [
                    ("cluster", cluster.as_str()),
                    ("consumergroup", g.name()),
                    ("topic", t.as_str()),
                ];
                push_sample(ingest, ts, names::KAFKA_MEMBERS, &l, members);
            }
        }
        let topics: Vec<&str> = topic_names.iter().map(String::as_str).collect();
        let groups: Vec<&str> = group_names.iter().map(String::as_str).collect();
        self.tell_matched(&topics, &groups);
        Ok(end_of.len())
    }
}

impl LiveSource for LagPoller {
    fn name(&self) -> String {
        "kafka-poller".into()
    }

    fn is_poller(&self) -> bool {
        true
    }

    fn link(&self) -> Arc<Link> {
        self.link.clone()
    }

    fn run(
        mut self: Box<Self>,
        ingest: &mut dyn Feed,
        stop: Arc<AtomicBool>,
    ) -> Result<(), BrokerError> {
        let every = self.cfg.poll_interval;
        while !stop.load(Ordering::Relaxed) {
            let started = std::time::Instant::now();
            let ts = now_ms();
            let polled = self.poll(ts, ingest);
            emit(Polled {
                source: self.link.name(),
                took: started.elapsed(),
            });
            match polled {
                Ok(_) => self.link.up(),
                Err(e) => self.link.down(&e),
            }
            ingest.advance_to(ts);
            sleep_until(started + every, &stop);
        }
        Ok(())
    }
}

fn sleep_until(deadline: std::time::Instant, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

/// Consumes metric events from topics, at least once.
pub struct MetricsConsumer {
    cfg: KafkaConfig,
    link: Arc<Link>,
}

impl MetricsConsumer {
    pub fn new(cfg: &KafkaConfig) -> Self {
        MetricsConsumer {
            cfg: cfg.clone(),
            link: Link::new(format!(
                "kafka metric topics {} ({})",
                cfg.metrics_topics.join(","),
                cfg.bootstrap_servers
            )),
        }
    }
}

/// Stores a refused metric message in the dead-letter topic with the error and its origin in
/// headers; returns once the broker has it (its offset may be committed past only then).
pub(crate) fn dead_letter(
    cfg: &KafkaConfig,
    rt: &tokio::runtime::Runtime,
    dlq: &FutureProducer,
    m: &rdkafka::message::BorrowedMessage<'_>,
    e: &ParseError,
) -> Result<(), BrokerError> {
    {
        let partition = m.partition().to_string();
        let offset = m.offset().to_string();
        let error = e.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "x-mqwatch-error",
                value: Some(error.as_str()),
            })
            .insert(Header {
                key: "x-mqwatch-reason",
                value: Some(e.reason.as_str()),
            })
            .insert(Header {
                key: "x-mqwatch-topic",
                value: Some(m.topic()),
            })
            .insert(Header {
                key: "x-mqwatch-partition",
                value: Some(partition.as_str()),
            })
            .insert(Header {
                key: "x-mqwatch-offset",
                value: Some(offset.as_str()),
            });
        let mut record = FutureRecord::<[u8], [u8]>::to(&cfg.dead_letter_topic).headers(headers);
        if let Some(p) = m.payload() {
            record = record.payload(p);
        }
        // The offset is committed past this message only once its dead letter is stored.
        rt.block_on(dlq.send(record, TIMEOUT))
            .map(|_| ())
            .map_err(|(e, _)| redact_error(e, cfg))
    }
}

impl LiveSource for MetricsConsumer {
    fn name(&self) -> String {
        format!("kafka-topics {}", self.cfg.metrics_topics.join(","))
    }

    fn link(&self) -> Arc<Link> {
        self.link.clone()
    }

    fn run(
        self: Box<Self>,
        ingest: &mut dyn Feed,
        stop: Arc<AtomicBool>,
    ) -> Result<(), BrokerError> {
        let cfg = &self.cfg;
        let err = |e: rdkafka::error::KafkaError| redact_error(e, cfg);
        // Some brokers hold every fetch for the full wait even with data ready: keep it short.
        let defaults = [("fetch.wait.max.ms", "20")];
        let own = [
            ("group.id", cfg.metrics_group.as_str()),
            ("enable.auto.commit", "false"),
            ("auto.offset.reset", "earliest"),
        ];
        let consumer: BaseConsumer = cfg
            .client_with_defaults(&defaults, &own)
            .create()
            .map_err(err)?;
        let topics: Vec<&str> = cfg.metrics_topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics).map_err(err)?;
        let dlq: FutureProducer = cfg
            .client(&[("enable.idempotence", "true"), ("acks", "all")])
            .create()
            .map_err(err)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(BrokerError::new)?;
        let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
        let mut applied = 0usize;
        while !stop.load(Ordering::Relaxed) {
            let Some(polled) = consumer.poll(Duration::from_millis(100)) else {
                ingest.advance_to(now_ms());
                commit(&consumer, ingest, &mut next, &mut applied, cfg)?;
                continue;
            };
            let m = match polled {
                Ok(m) => {
                    self.link.up();
                    m
                }
                Err(e) => {
                    self.link.down(&err(e));
                    continue;
                }
            };
            let refused = match m.payload() {
                Some(payload) => super::decode(payload, ingest, false),
                None => {
                    ingest.reject(ErrorReason::NotJson);
                    vec![ParseError::new(ErrorReason::NotJson, "empty message")]
                }
            };
            for e in &refused {
                emit(DeadLettered {
                    source: m.topic(),
                    position: &format!("partition {} offset {}", m.partition(), m.offset()),
                    error: e,
                });
                dead_letter(cfg, &rt, &dlq, &m, e)?;
            }
            next.insert((m.topic().to_string(), m.partition()), m.offset() + 1);
            applied += 1;
            if applied >= COMMIT_EVERY {
                commit(&consumer, ingest, &mut next, &mut applied, cfg)?;
            }
        }
        commit(&consumer, ingest, &mut next, &mut applied, cfg)
    }
}

/// Commits what has been applied: waits for the workers first (at-least-once).
fn commit(
    consumer: &BaseConsumer,
    ingest: &mut dyn Feed,
    next: &mut BTreeMap<(String, i32), i64>,
    applied: &mut usize,
    cfg: &KafkaConfig,
) -> Result<(), BrokerError> {
    if next.is_empty() {
        return Ok(());
    }
    ingest.sync();
    let mut tpl = TopicPartitionList::new();
    for ((t, p), o) in next.iter() {
        tpl.add_partition_offset(t, *p, Offset::Offset(*o))
            .map_err(|e| redact_error(e, cfg))?;
    }
    consumer
        .commit(&tpl, CommitMode::Sync)
        .map_err(|e| redact_error(e, cfg))?;
    next.clear();
    *applied = 0;
    Ok(())
}

/// Produces timestamps to every partition of the probe topic and reads them back.
pub struct Probe {
    cfg: KafkaConfig,
    link: Arc<Link>,
}

impl Probe {
    pub fn new(cfg: &KafkaConfig) -> Self {
        Probe {
            cfg: cfg.clone(),
            link: Link::new(format!(
                "kafka probe {} ({})",
                cfg.probe.topic, cfg.bootstrap_servers
            )),
        }
    }
}

impl LiveSource for Probe {
    fn name(&self) -> String {
        format!("kafka-probe {}", self.cfg.probe.topic)
    }

    fn is_poller(&self) -> bool {
        true
    }

    fn link(&self) -> Arc<Link> {
        self.link.clone()
    }

    fn run(
        self: Box<Self>,
        ingest: &mut dyn Feed,
        stop: Arc<AtomicBool>,
    ) -> Result<(), BrokerError> {
        let cfg = &self.cfg;
        let p = &cfg.probe;
        let err = |e: rdkafka::error::KafkaError| redact_error(e, cfg);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(BrokerError::new)?;
        // The topic is created once the cluster answers; until then the probe waits for it.
        let mut backoff = crate::link::Backoff::new(Duration::from_secs(10));
        loop {
            match rt.block_on(create_topic(cfg, &p.topic, p.partitions)) {
                Ok(()) => break,
                Err(e) => self.link.down(&e),
            }
            let pause = std::time::Instant::now() + backoff.next_delay();
            sleep_until(pause, &stop);
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
        }
        let producer: FutureProducer = cfg
            .client(&[("linger.ms", "0"), ("message.timeout.ms", "5000")])
            .create()
            .map_err(err)?;
        let consumer: BaseConsumer = cfg
            .client(&[
                ("group.id", "mqwatch-probe"),
                ("enable.auto.commit", "false"),
            ])
            .create()
            .map_err(err)?;
        let mut tpl = TopicPartitionList::new();
        for i in 0..p.partitions {
            tpl.add_partition_offset(&p.topic, i, Offset::End)
                .map_err(err)?;
        }
        consumer.assign(&tpl).map_err(err)?;
        let cluster = cfg.cluster.as_str();
        let mut next_send = std::time::Instant::now();
        while !stop.load(Ordering::Relaxed) {
            if std::time::Instant::now() >= next_send {
                next_send += p.interval;
                let ts = now_ms();
                for part in 0..p.partitions {
                    let body = ts.to_string();
                    let record = FutureRecord::<(), str>::to(&p.topic)
                        .partition(part)
                        .payload(&body);
                    let ok = match rt.block_on(producer.send(record, Duration::from_secs(5))) {
                        Ok(_) => {
                            self.link.up();
                            true
                        }
                        Err((e, _)) => {
                            self.link.down(&err(e));
                            false
                        }
                    };
                    let ps = part.to_string();
                    let l = [
                        ("cluster", cluster),
                        ("partition", ps.as_str()),
                        ("topic", p.topic.as_str()),
                    ];
                    // 1 when the probe could produce, 0 when it could not: a generic gauge.
                    push_sample(
                        ingest,
                        ts,
                        "kafka_probe_produce_success",
                        &l,
                        if ok { 1.0 } else { 0.0 },
                    );
                }
            }
            while let Some(Ok(m)) = consumer.poll(Duration::from_millis(20)) {
                let now = now_ms();
                if let Some(sent) = m
                    .payload()
                    .and_then(|b| std::str::from_utf8(b).ok())
                    .and_then(|s| s.parse::<i64>().ok())
                {
                    let l = [("cluster", cluster), ("topic", p.topic.as_str())];
                    push_sample(ingest, now, names::LATENCY, &l, (now - sent).max(0) as f64);
                }
            }
            ingest.advance_to(now_ms());
        }
        Ok(())
    }
}

/// The headers a dead letter carries, as a map (for tools and tests).
pub fn header_map(m: &impl Message) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(h) = m.headers() {
        for i in 0..h.count() {
            let h = h.get(i);
            out.insert(
                h.key.to_string(),
                h.value
                    .map(|v| String::from_utf8_lossy(v).to_string())
                    .unwrap_or_default(),
            );
        }
    }
    out
}
