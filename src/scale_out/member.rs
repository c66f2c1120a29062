//! An engine's membership of the group: the consumer of the metrics topic that feeds this
//! engine's pipeline the partitions the group gives it, and follows the group as it moves them.
//!
//! Given partitions, it reads their shards' newest states from the changelog and hands them to
//! the workers (as taken over: their open episodes are delivered again) before it feeds any of
//! their samples. Losing partitions, it has the workers save those shards and let go of them,
//! then commits what it had fed of them — all before the group hands them on. Every
//! `state.checkpoint_interval` it has every shard saved and then commits what it had fed: an
//! engine taking over resumes from a state that covers everything before its committed offsets.
//!
//! The rebalance callbacks run inside `poll`, on this thread, so they and the loop share the
//! pipeline handle through a mutex that only this thread ever takes (once per message).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use rdkafka::producer::FutureProducer;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::{partition_for, read_changelog, Ownership, ScaleOutConfig};
use crate::event::{ErrorReason, ParseError};
use crate::kafka::{redact_error, KafkaConfig};
use crate::link::{BrokerError, Link};
use crate::pipeline::{Ingest, ShardKey};
use crate::source::kafka::dead_letter;
use crate::source::rabbitmq::now_ms;
use crate::state::Restored;
use crate::telemetry::events::DeadLettered;
use crate::telemetry::{emit, InputStats};

pub struct Member {
    kafka: KafkaConfig,
    cfg: ScaleOutConfig,
    ownership: Arc<Ownership>,
    checkpoint_every: Duration,
    link: Arc<Link>,
}

impl Member {
    pub fn new(
        kafka: &KafkaConfig,
        cfg: &ScaleOutConfig,
        ownership: Arc<Ownership>,
        checkpoint_every: Duration,
    ) -> Member {
        Member {
            link: Link::new(format!(
                "kafka engine group {} on {} ({})",
                cfg.group, cfg.metrics_topic, kafka.bootstrap_servers
            )),
            kafka: kafka.clone(),
            cfg: cfg.clone(),
            ownership,
            checkpoint_every,
        }
    }

    pub fn link(&self) -> Arc<Link> {
        self.link.clone()
    }

    /// Joins the group and feeds `ingest` with what it is given until `stop` is raised; then
    /// saves every shard, commits, and leaves the group (its partitions move on at once).
    pub fn run(self, ingest: Ingest, stop: Arc<AtomicBool>) -> Result<InputStats, BrokerError> {
        let kafka = &self.kafka;
        let err = |e: rdkafka::error::KafkaError| redact_error(e, kafka);
        let session = self.cfg.session_timeout.as_millis().to_string();
        // Frequent heartbeats: every member hears of a rebalance at about the same moment, and
        // spends little time between its last heartbeat and its next join.
        let heartbeat = (self.cfg.session_timeout.as_millis() / 10)
            .clamp(100, 1000)
            .to_string();
        let defaults = [("fetch.wait.max.ms", "20")];
        let own = [
            ("group.id", self.cfg.group.as_str()),
            ("enable.auto.commit", "false"),
            ("auto.offset.reset", "latest"),
            ("partition.assignment.strategy", "cooperative-sticky"),
            ("session.timeout.ms", session.as_str()),
            ("heartbeat.interval.ms", heartbeat.as_str()),
        ];
        let held = Held {
            ingest: Mutex::new(ingest),
            ownership: self.ownership.clone(),
            kafka: kafka.clone(),
            cfg: self.cfg.clone(),
            fed: Mutex::default(),
        };
        let consumer: BaseConsumer<Held> = kafka
            .client_with_defaults(&defaults, &own)
            .create_with_context(held)
            .map_err(err)?;
        consumer
            .subscribe(&[self.cfg.metrics_topic.as_str()])
            .map_err(err)?;
        let dlq: FutureProducer = kafka
            .client(&[("enable.idempotence", "true"), ("acks", "all")])
            .create()
            .map_err(err)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(BrokerError::new)?;
        let held = consumer.context();
        let mut checkpointed = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            match consumer.poll(Duration::from_millis(100)) {
                None => held.pipeline().advance_to(now_ms()),
                Some(Err(e)) => self.link.down(&err(e)),
                Some(Ok(m)) => {
                    self.link.up();
                    let refused = match m.payload() {
                        Some(payload) => {
                            crate::source::decode(payload, &mut *held.pipeline(), false)
                        }
                        None => {
                            held.pipeline().reject(ErrorReason::NotJson);
                            vec![ParseError::new(ErrorReason::NotJson, "empty message")]
                        }
                    };
                    for e in &refused {
                        emit(DeadLettered {
                            source: m.topic(),
                            position: &format!("partition {} offset {}", m.partition(), m.offset()),
                            error: e,
                        });
                        dead_letter(kafka, &rt, &dlq, &m, e)?;
                    }
                    held.fed_lock().insert(m.partition(), m.offset() + 1);
                }
            }
            if checkpointed.elapsed() >= self.checkpoint_every {
                held.checkpoint_and_commit(&consumer);
                checkpointed = Instant::now();
            }
        }
        // Leaving: every shard saved and let go of, its offsets committed, then out of the group.
        held.give_up(&consumer, self.ownership.held());
        consumer.unsubscribe();
        let stats = held.pipeline().stats.clone();
        Ok(stats)
    }
}

/// What the consumer's callbacks and its loop share.
struct Held {
    ingest: Mutex<Ingest>,
    ownership: Arc<Ownership>,
    kafka: KafkaConfig,
    cfg: ScaleOutConfig,
    /// Per partition held, the offset after the last message fed to the pipeline.
    fed: Mutex<BTreeMap<i32, i64>>,
}

impl Held {
    fn pipeline(&self) -> MutexGuard<'_, Ingest> {
        self.ingest.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fed_lock(&self) -> MutexGuard<'_, BTreeMap<i32, i64>> {
        self.fed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Has every shard saved, then commits what had been fed before (only then does the
    /// changelog cover everything up to the committed offsets).
    fn checkpoint_and_commit(&self, consumer: &BaseConsumer<Held>) {
        let fed = self.fed_lock().clone();
        self.pipeline().checkpoint();
        self.commit(consumer, &fed);
    }

    fn commit(&self, consumer: &BaseConsumer<Held>, fed: &BTreeMap<i32, i64>) {
        let mut tpl = TopicPartitionList::new();
        for (&p, &next) in fed {
            let _ = tpl.add_partition_offset(&self.cfg.metrics_topic, p, Offset::Offset(next));
        }
        if tpl.count() == 0 {
            return;
        }
        if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
            tracing::warn!(group = %self.cfg.group, error = %redact_error(e, &self.kafka), "cannot commit the metrics topic's offsets; they are fed again after a takeover");
        }
    }

    /// Saves the shards of `partitions` and lets go of them, commits what was fed of them, and
    /// stops polling their brokers.
    fn give_up(&self, consumer: &BaseConsumer<Held>, partitions: Vec<i32>) {
        if partitions.is_empty() {
            return;
        }
        let started = Instant::now();
        for &p in &partitions {
            self.ownership.set(p, false);
        }
        let n = self.ownership.partitions();
        let gone: BTreeSet<i32> = partitions.iter().copied().collect();
        let which = gone.clone();
        self.pipeline().release(Arc::new(move |key: &ShardKey| {
            which.contains(&partition_for(key.routing_key().as_bytes(), n))
        }));
        let fed: BTreeMap<i32, i64> = {
            let mut fed = self.fed_lock();
            let out = fed
                .iter()
                .filter(|(p, _)| gone.contains(p))
                .map(|(&p, &o)| (p, o))
                .collect();
            fed.retain(|p, _| !gone.contains(p));
            out
        };
        self.commit(consumer, &fed);
        tracing::info!(
            group = %self.cfg.group,
            "gave up partitions {partitions:?}: their shards saved to the changelog in {} ms",
            started.elapsed().as_millis()
        );
    }

    /// Takes over `partitions`: their shards' newest states from the changelog go to the
    /// workers before any of their samples.
    fn take(&self, partitions: Vec<i32>) {
        if partitions.is_empty() {
            return;
        }
        let started = Instant::now();
        for &p in &partitions {
            self.ownership.set(p, true);
        }
        let topic = &self.cfg.changelog_topic;
        let records = read_changelog(&self.kafka, topic, &partitions).unwrap_or_else(|e| {
            tracing::error!(topic = %topic, error = %e, "cannot read the changelog: the shards of partitions {partitions:?} start cold");
            Vec::new()
        });
        let restored = Restored::decode(records);
        restored.tell(&format!(
            "changelog topic {topic}, partitions {partitions:?}"
        ));
        let entities: usize = restored.shards.iter().map(|s| s.shard.entities()).sum();
        let mut ingest = self.pipeline();
        for saved in restored.shards {
            ingest.take_over(saved);
        }
        ingest.sync();
        tracing::info!(
            group = %self.cfg.group,
            "took over partitions {partitions:?}: {entities} entities restored in {} ms",
            started.elapsed().as_millis()
        );
    }

    fn partitions_of(&self, tpl: &TopicPartitionList) -> Vec<i32> {
        tpl.elements_for_topic(&self.cfg.metrics_topic)
            .iter()
            .map(|e| e.partition())
            .collect()
    }
}

impl ClientContext for Held {}

impl ConsumerContext for Held {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Held>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            // Those already given up (on the way out) have nothing left to save.
            let held = self.partitions_of(tpl);
            let held = held
                .into_iter()
                .filter(|&p| self.ownership.holds(p))
                .collect();
            self.give_up(consumer, held);
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Held>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            self.take(self.partitions_of(tpl));
        }
    }
}
