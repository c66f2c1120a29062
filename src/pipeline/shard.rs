//! A shard: what is judged together, and the unit of state that is checkpointed, restored and
//! handed from one engine to another.
//!
//! Everything about one Kafka topic (its log-end offsets, every consumer group reading it, the
//! latency of its messages), one RabbitMQ queue (its state and its messages' latency), or one
//! other series lives in one [`Shard`], owned by one worker. A detector never looks outside its
//! shard, so shards move freely: between workers of a run (by [`ShardKey::worker_hash`]), through a
//! checkpoint and back, and between engines of a group, whose metric topic is partitioned by
//! [`ShardKey::routing_key`].

use std::sync::Arc;

use crossbeam_channel::Sender;
use serde::{Deserialize, Serialize};

use super::entity::{
    Consumer, GenericSeries, KafkaGroup, KafkaTopic, LatencySeries, Learning, QueueField,
    RabbitQueue,
};
use super::SeriesInfo;
use crate::alert::{Alert, Entity, Symptom};
use crate::config::{Config, DetectorConfig};
use crate::event::{Family, RawEvent, SeriesKey};
use crate::learn::{EntityClass, FeatureRow, LearnedTrack, ModelSet};
use crate::status::{slot, EntityKind, ShardView};

/// What a shard is: a Kafka topic, a RabbitMQ queue, or a series that belongs to neither.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ShardKey {
    Topic {
        cluster: Box<str>,
        topic: Box<str>,
    },
    Queue {
        cluster: Box<str>,
        vhost: Box<str>,
        queue: Box<str>,
    },
    Series(SeriesKey),
}

impl ShardKey {
    /// The shard an event belongs to: its topic if it names one, else its queue, else itself.
    pub fn of(ev: &RawEvent<'_>) -> ShardKey {
        let l = |k: &str| Box::<str>::from(ev.label(k).unwrap_or(""));
        if ev.label("topic").is_some() {
            ShardKey::Topic {
                cluster: l("cluster"),
                topic: l("topic"),
            }
        } else if ev.label("queue").is_some() {
            ShardKey::Queue {
                cluster: l("cluster"),
                vhost: l("vhost"),
                queue: l("queue"),
            }
        } else {
            ShardKey::Series(ev.to_key())
        }
    }

    /// Which worker of a run owns it: a hash of the key, the same in every run.
    pub fn worker_hash(&self) -> u64 {
        use std::hash::Hasher;
        let mut h = rustc_hash::FxHasher::default();
        let mut eat = |s: &str| {
            h.write(s.as_bytes());
            h.write_u8(0xff);
        };
        match self {
            ShardKey::Topic { cluster, topic } => {
                eat("topic");
                eat(cluster);
                eat(topic);
            }
            ShardKey::Queue {
                cluster,
                vhost,
                queue,
            } => {
                eat("queue");
                eat(cluster);
                eat(vhost);
                eat(queue);
            }
            ShardKey::Series(key) => {
                eat(&key.name);
                for (k, v) in &key.labels {
                    eat(k);
                    eat(v);
                }
            }
        }
        // FxHash's low bits are weak; fold the high ones in before any modulo.
        let x = h.finish();
        x ^ (x >> 29) ^ (x >> 47)
    }

    /// The key a metric message about this shard carries on a partitioned topic, and the key the
    /// partition is chosen by: `cluster/topic`, `cluster/vhost/queue`, or the series as text.
    pub fn routing_key(&self) -> String {
        let mut out = String::new();
        match self {
            ShardKey::Topic { cluster, topic } => write_routing_key(&mut out, &[cluster, topic]),
            ShardKey::Queue {
                cluster,
                vhost,
                queue,
            } => write_routing_key(&mut out, &[cluster, vhost, queue]),
            ShardKey::Series(key) => {
                let labels = key.labels.iter().map(|(k, v)| (k.as_ref(), v.as_ref()));
                write_series(&mut out, &key.name, labels)
            }
        }
        out
    }

    /// The routing key of the shard an event belongs to, written into `out` (cleared first):
    /// the same as `ShardKey::of(ev).routing_key()`, without allocating once `out` is warm.
    pub fn routing_key_of(ev: &RawEvent<'_>, out: &mut String) {
        out.clear();
        let l = |k: &str| ev.label(k).unwrap_or("");
        if ev.label("topic").is_some() {
            write_routing_key(out, &[l("cluster"), l("topic")]);
        } else if ev.label("queue").is_some() {
            write_routing_key(out, &[l("cluster"), l("vhost"), l("queue")]);
        } else {
            let labels = ev.labels.iter().map(|(k, v)| (k.as_ref(), v.as_ref()));
            write_series(out, &ev.name, labels);
        }
    }
}

fn write_routing_key(out: &mut String, parts: &[&str]) {
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(p);
    }
}

/// A series as text, as [`SeriesKey`]'s `Display` writes it.
fn write_series<'a>(
    out: &mut String,
    name: &str,
    labels: impl Iterator<Item = (&'a str, &'a str)>,
) {
    use std::fmt::Write;
    out.push_str(name);
    out.push('{');
    for (i, (k, v)) in labels.enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{k}=\"{v}\"");
    }
    out.push('}');
}

impl std::fmt::Display for ShardKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ShardKey::Topic { .. } => write!(f, "topic {}", self.routing_key()),
            ShardKey::Queue { .. } => write!(f, "queue {}", self.routing_key()),
            ShardKey::Series(key) => write!(f, "series {key}"),
        }
    }
}

/// What entities are built and restored with: the settings (with per-entity overrides), the
/// learned models and where interval features go.
#[derive(Clone)]
pub(crate) struct Setup {
    pub config: Arc<Config>,
    pub models: Option<Arc<ModelSet>>,
    pub features: Option<Sender<FeatureRow>>,
}

impl Setup {
    fn detectors_for(&self, labels: &[(Box<str>, Box<str>)]) -> DetectorConfig {
        self.config
            .detectors_for(labels.iter().map(|(k, v)| (k.as_ref(), v.as_ref())))
    }

    fn learning(&self, class: EntityClass) -> Learning {
        let model = self.models.as_ref().and_then(|m| m.get(class)).cloned();
        (model, self.features.clone())
    }

    fn track(&self, class: EntityClass, cfg: &DetectorConfig) -> LearnedTrack {
        let (model, tap) = self.learning(class);
        LearnedTrack::new(model, tap, &cfg.learned)
    }
}

/// Where one series' samples go within its shard, resolved once when the series is first seen.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Target {
    LogEnd { partition: u32 },
    Committed { group: u32, partition: u32 },
    Lag { group: u32, partition: u32 },
    LagSeconds { group: u32, partition: u32 },
    Members { group: u32 },
    Queue(QueueField),
    Latency(u32),
    Gauge(u32),
}

/// Everything judged together (see the module docs). Entities keep their order of arrival, so
/// the targets of a restored shard's series resolve as they did before.
#[derive(Serialize, Deserialize)]
pub struct Shard {
    pub key: ShardKey,
    topic: KafkaTopic,
    groups: Vec<KafkaGroup>,
    queue: Option<RabbitQueue>,
    latencies: Vec<LatencySeries>,
    gauges: Vec<GenericSeries>,
}

/// A shard as a checkpoint holds it: with the first interval its worker had not closed yet, where
/// a restored run resumes judging.
#[derive(Serialize, Deserialize)]
pub struct SavedShard {
    pub open_slot: Option<i64>,
    pub shard: Shard,
}

impl Shard {
    pub fn new(key: ShardKey) -> Shard {
        Shard {
            key,
            topic: KafkaTopic::default(),
            groups: Vec::new(),
            queue: None,
            latencies: Vec::new(),
            gauges: Vec::new(),
        }
    }

    /// Whether a shard read from a checkpoint holds together: every index it keeps points
    /// inside it. A shard that does not is refused, and starts cold.
    pub fn check(&self) -> Result<(), String> {
        let partitions = self.topic.partitions.len();
        for g in &self.groups {
            g.check(partitions)?;
        }
        for l in &self.latencies {
            match l.consumer {
                Consumer::Group(g) if g as usize >= self.groups.len() => {
                    return Err(format!(
                        "latency of {}: consumer group {g} of {}",
                        l.entity.display,
                        self.groups.len()
                    ))
                }
                Consumer::Queue(_) if self.queue.is_none() => {
                    return Err(format!(
                        "latency of {}: consumed by a queue it does not hold",
                        l.entity.display
                    ))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// How many entities it holds.
    pub fn entities(&self) -> usize {
        self.groups.len()
            + usize::from(self.queue.is_some())
            + self.latencies.len()
            + self.gauges.len()
    }

    /// Takes the settings and learned models in force: a shard restored from a checkpoint keeps
    /// what it learned, never the settings it was saved with.
    pub(crate) fn configure(&mut self, setup: &Setup) {
        for g in &mut self.groups {
            let cfg = setup.detectors_for(&g.entity.labels);
            g.configure(&cfg, setup.learning(EntityClass::KafkaGroup));
        }
        if let Some(q) = &mut self.queue {
            let cfg = setup.detectors_for(&q.entity.labels);
            q.configure(&cfg, setup.learning(EntityClass::RabbitQueue));
        }
        for l in &mut self.latencies {
            let cfg = setup.detectors_for(&l.entity.labels);
            l.configure(&cfg, setup.learning(EntityClass::Latency));
        }
        for g in &mut self.gauges {
            g.configure(&setup.detectors_for(&g.entity.labels));
        }
    }

    /// What an engine that takes this shard over delivers again: every open episode's latest
    /// update (as of `now`) and every resolution sent at or after `since`.
    pub fn announce(&self, now: i64, since: i64, out: &mut impl FnMut(Alert)) {
        self.groups.iter().for_each(|g| g.announce(now, since, out));
        self.queue.iter().for_each(|q| q.announce(now, since, out));
        self.latencies
            .iter()
            .for_each(|l| l.announce(now, since, out));
        self.gauges.iter().for_each(|g| g.announce(now, since, out));
    }

    /// Where a new series' samples go, creating its entity if it is the first of its kind.
    pub(crate) fn target(&mut self, info: &SeriesInfo, setup: &Setup) -> Target {
        let key = &info.key;
        let l = |k: &str| key.label(k).unwrap_or("");
        match info.family {
            Family::KafkaLogEndOffset => Target::LogEnd {
                partition: self.topic.partition_index(l("partition")),
            },
            Family::KafkaCommittedOffset | Family::KafkaLag | Family::KafkaLagSeconds => {
                let group = self.group(key, setup);
                let g = &mut self.groups[group as usize];
                let partition = g.partition_index(&mut self.topic, l("partition"));
                match info.family {
                    Family::KafkaLag => Target::Lag { group, partition },
                    Family::KafkaLagSeconds => Target::LagSeconds { group, partition },
                    _ => Target::Committed { group, partition },
                }
            }
            Family::KafkaMembers => Target::Members {
                group: self.group(key, setup),
            },
            Family::RabbitReady => self.queue(key, setup, QueueField::Ready),
            Family::RabbitUnacked => self.queue(key, setup, QueueField::Unacked),
            Family::RabbitConsumers => self.queue(key, setup, QueueField::Consumers),
            Family::RabbitPublished => self.queue(key, setup, QueueField::Published),
            Family::RabbitDelivered => self.queue(key, setup, QueueField::Delivered),
            Family::RabbitAcked => self.queue(key, setup, QueueField::Acked),
            Family::RabbitRedelivered => self.queue(key, setup, QueueField::Redelivered),
            Family::RabbitUtilisation => self.queue(key, setup, QueueField::Utilisation),
            Family::Latency => {
                let display = latency_display(key);
                let existing = self
                    .latencies
                    .iter()
                    .position(|s| s.entity.labels == key.labels);
                let i = existing.unwrap_or_else(|| {
                    let cfg = setup.detectors_for(&key.labels);
                    let entity = Entity::new(key.labels.clone(), display);
                    let track = setup.track(EntityClass::Latency, &cfg);
                    self.latencies.push(LatencySeries::new(entity, &cfg, track));
                    self.latencies.len() - 1
                });
                Target::Latency(i as u32)
            }
            Family::Generic => {
                let mut labels = vec![("__name__".into(), key.name.clone())];
                labels.extend(key.labels.iter().cloned());
                let existing = self.gauges.iter().position(|g| g.entity.labels == labels);
                let i = existing.unwrap_or_else(|| {
                    let cfg = setup.detectors_for(&labels);
                    let entity = Entity::new(labels, key.to_string());
                    self.gauges.push(GenericSeries::new(entity, &cfg));
                    self.gauges.len() - 1
                });
                Target::Gauge(i as u32)
            }
        }
    }

    fn group(&mut self, key: &SeriesKey, setup: &Setup) -> u32 {
        let name = key.label("consumergroup").unwrap_or("");
        if let Some(i) = self.groups.iter().position(|g| g.group.as_ref() == name) {
            return i as u32;
        }
        let labels = entity_labels(key, &["cluster", "topic", "consumergroup"]);
        let cfg = setup.detectors_for(&labels);
        let display = format!("{}/{name}", key.label("topic").unwrap_or(""));
        let track = setup.track(EntityClass::KafkaGroup, &cfg);
        let entity = Entity::new(labels, display);
        self.groups.push(KafkaGroup::new(entity, name, &cfg, track));
        (self.groups.len() - 1) as u32
    }

    fn queue(&mut self, key: &SeriesKey, setup: &Setup, field: QueueField) -> Target {
        if self.queue.is_none() {
            let labels = entity_labels(key, &["cluster", "vhost", "queue"]);
            let cfg = setup.detectors_for(&labels);
            let display = format!("queue {}", key.label("queue").unwrap_or(""));
            let track = setup.track(EntityClass::RabbitQueue, &cfg);
            self.queue = Some(RabbitQueue::new(Entity::new(labels, display), &cfg, track));
        }
        Target::Queue(field)
    }

    /// Applies one sample (in `slot`) to the entity its target names.
    pub(crate) fn apply(&mut self, target: Target, ts: i64, slot: i64, value: f64) {
        match target {
            Target::LogEnd { partition } => {
                self.topic.partitions[partition as usize].update(ts, value)
            }
            Target::Committed { group, partition } => {
                let g = &mut self.groups[group as usize];
                g.partitions[partition as usize].committed.update(ts, value);
                g.fresh = true;
            }
            Target::LagSeconds { group, partition } => self.groups[group as usize].partitions
                [partition as usize]
                .lag_seconds
                .update(ts, value),
            Target::Lag { group, partition } => {
                let g = &mut self.groups[group as usize];
                let p = &mut g.partitions[partition as usize];
                p.lag.update(ts, value);
                if value <= 0.0 {
                    p.lag_zero_at = p.lag_zero_at.max(ts);
                }
                g.fresh = true;
            }
            Target::Members { group } => self.groups[group as usize].members.update(ts, value),
            Target::Queue(field) => {
                if let Some(q) = &mut self.queue {
                    q.update(field, ts, value)
                }
            }
            Target::Latency(i) => self.latencies[i as usize].window.record(slot, value),
            Target::Gauge(i) => {
                let g = &mut self.gauges[i as usize];
                g.gauge.update(ts, value);
                g.fresh = true;
            }
        }
    }

    /// Judges the interval `slot`, which ends at `now`: groups and the queue first, then the
    /// latency of their messages, which their state may explain.
    pub fn close(&mut self, now: i64, slot: i64, interval_secs: f64, out: &mut impl FnMut(Alert)) {
        for g in &mut self.groups {
            g.close(now, interval_secs, &self.topic, out);
        }
        if let Some(q) = &mut self.queue {
            q.close(now, interval_secs, out);
        }
        let consumers = self.groups.len() + usize::from(self.queue.is_some());
        for i in 0..self.latencies.len() {
            if let Consumer::Unknown { looked_at } = self.latencies[i].consumer {
                if looked_at != consumers {
                    self.latencies[i].consumer = self.consumer_of(&self.latencies[i].entity);
                }
            }
            let l = &mut self.latencies[i];
            let explained = match l.consumer {
                Consumer::Group(g) => self.groups[g as usize].explains_latency(now),
                Consumer::Queue(_) => self.queue.as_ref().is_some_and(|q| q.explains_latency(now)),
                Consumer::Unknown { .. } => false,
            };
            if let Some(f) = l.close(now, slot, explained, out) {
                let symptom = Symptom::of(&l.entity, &f);
                match l.consumer {
                    Consumer::Group(g) => self.groups[g as usize].attach_symptom(now, symptom, out),
                    Consumer::Queue(_) => {
                        if let Some(q) = &mut self.queue {
                            q.attach_symptom(now, symptom, out)
                        }
                    }
                    Consumer::Unknown { .. } => {}
                }
            }
        }
        for g in &mut self.gauges {
            g.close(now, out);
        }
    }

    /// The group or queue of this shard that consumes the messages a latency stream measures,
    /// found by its labels (consumergroup; or the queue).
    fn consumer_of(&self, entity: &Entity) -> Consumer {
        let l = |k: &str| {
            entity
                .labels
                .iter()
                .find(|(n, _)| n.as_ref() == k)
                .map(|(_, v)| v.as_ref())
        };
        let looked_at = self.groups.len() + usize::from(self.queue.is_some());
        if let (Some(group), Some(_)) = (l("consumergroup"), l("topic")) {
            if let Some(g) = self.groups.iter().position(|g| g.group.as_ref() == group) {
                return Consumer::Group(g as u32);
            }
        } else if l("queue").is_some() && self.queue.is_some() {
            return Consumer::Queue(0);
        }
        Consumer::Unknown { looked_at }
    }

    /// Writes what the last interval showed of every entity.
    pub fn report(&self, now: i64, view: &mut ShardView) {
        for (i, g) in self.groups.iter().enumerate() {
            let s = slot(&mut view.groups, i, EntityKind::KafkaGroup, &g.entity);
            g.report(now, &self.topic, s);
        }
        if let Some(q) = &self.queue {
            let s = slot(&mut view.queues, 0, EntityKind::RabbitmqQueue, &q.entity);
            q.report(now, s);
        }
        for (i, l) in self.latencies.iter().enumerate() {
            let s = slot(&mut view.latencies, i, EntityKind::Latency, &l.entity);
            l.report(now, s);
        }
        for (i, g) in self.gauges.iter().enumerate() {
            let s = slot(&mut view.gauges, i, EntityKind::Gauge, &g.entity);
            g.report(now, s);
        }
    }

    /// Bytes held by its latency histograms.
    pub fn histogram_bytes(&self) -> u64 {
        self.latencies
            .iter()
            .map(|l| l.window.memory_bytes() as u64)
            .sum()
    }
}

fn entity_labels(key: &SeriesKey, names: &[&str]) -> Vec<(Box<str>, Box<str>)> {
    names
        .iter()
        .filter_map(|&n| key.label(n).map(|v| (n.into(), v.into())))
        .collect()
}

fn latency_display(key: &SeriesKey) -> String {
    match (
        key.label("topic"),
        key.label("consumergroup"),
        key.label("queue"),
    ) {
        (Some(t), Some(g), _) => format!("{t}/{g}"),
        (Some(t), None, _) => t.to_string(),
        (None, _, Some(q)) => format!("queue {q}"),
        _ => key.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::parse_event;

    #[test]
    fn an_event_and_its_shard_agree_on_the_routing_key() {
        let mut buf = String::new();
        for line in [
            r#"{"ts":1767225600000,"name":"kafka_consumergroup_lag","labels":{"cluster":"pay","topic":"payments.authorize","consumergroup":"auth","partition":"3"},"value":5}"#,
            r#"{"ts":1767225600000,"name":"rabbitmq_queue_messages_ready","labels":{"queue":"ledger","vhost":"/"},"value":5}"#,
            r#"{"ts":1767225600000,"name":"cpu","labels":{"host":"a","dc":"x"},"value":5}"#,
        ] {
            let ev = parse_event(line).unwrap();
            ShardKey::routing_key_of(&ev, &mut buf);
            assert_eq!(buf, ShardKey::of(&ev).routing_key(), "{line}");
        }
        assert_eq!(buf, r#"cpu{dc="x",host="a"}"#);
        let ev = parse_event(r#"{"ts":1767225600000,"name":"rabbitmq_queue_messages_ready","labels":{"queue":"ledger","vhost":"/"},"value":5}"#).unwrap();
        assert_eq!(
            ShardKey::of(&ev).routing_key(),
            "///ledger",
            "cluster, vhost and queue"
        );
    }

    /// Shards of every kind, after an hour of traffic with a stall and a latency rise in it,
    /// so that what they keep is filled in, options and all.
    fn exercised() -> Vec<Shard> {
        let setup = Setup {
            config: Arc::new(Config::default()),
            models: None,
            features: None,
        };
        let lines = |ts: i64, n: i64| {
            let stalled = (200..260).contains(&n);
            let lat = if (300..330).contains(&n) {
                900.0
            } else {
                20.0 + (n % 7) as f64
            };
            [
                format!(
                    r#"{{"ts":{ts},"name":"kafka_topic_partition_current_offset","labels":{{"cluster":"k","topic":"t","partition":"0"}},"value":{}}}"#,
                    n * 50
                ),
                format!(
                    r#"{{"ts":{ts},"name":"kafka_topic_partition_current_offset","labels":{{"cluster":"k","topic":"t","partition":"1"}},"value":{}}}"#,
                    n * 50
                ),
                format!(
                    r#"{{"ts":{ts},"name":"kafka_consumergroup_current_offset","labels":{{"cluster":"k","topic":"t","consumergroup":"g","partition":"0"}},"value":{}}}"#,
                    n * 50 - 10
                ),
                format!(
                    r#"{{"ts":{ts},"name":"kafka_consumergroup_current_offset","labels":{{"cluster":"k","topic":"t","consumergroup":"g","partition":"1"}},"value":{}}}"#,
                    if stalled { 200 * 50 } else { n * 50 - 10 }
                ),
                format!(
                    r#"{{"ts":{ts},"name":"kafka_consumergroup_members","labels":{{"cluster":"k","topic":"t","consumergroup":"g"}},"value":2}}"#
                ),
                format!(
                    r#"{{"ts":{ts},"name":"message_latency_ms","labels":{{"cluster":"k","topic":"t","consumergroup":"g"}},"value":{lat}}}"#
                ),
                format!(
                    r#"{{"ts":{ts},"name":"kafka_probe_produce_success","labels":{{"cluster":"k","topic":"t"}},"value":1}}"#
                ),
                format!(
                    r#"{{"ts":{ts},"name":"rabbitmq_queue_messages_ready","labels":{{"cluster":"r","queue":"q","vhost":"/"}},"value":{}}}"#,
                    n % 5
                ),
                format!(
                    r#"{{"ts":{ts},"name":"rabbitmq_queue_consumers","labels":{{"cluster":"r","queue":"q","vhost":"/"}},"value":2}}"#
                ),
                format!(
                    r#"{{"ts":{ts},"name":"rabbitmq_queue_messages_acked_total","labels":{{"cluster":"r","queue":"q","vhost":"/"}},"value":{}}}"#,
                    n * 10
                ),
            ]
        };
        let mut shards: Vec<Shard> = Vec::new();
        let mut targets = std::collections::HashMap::new();
        let mut kinds = Vec::new();
        for n in 0..400i64 {
            let ts = 1_767_225_600_000 + n * 10_000;
            let slot = ts / 10_000;
            for line in lines(ts, n) {
                let ev = parse_event(&line).unwrap();
                let key = ShardKey::of(&ev);
                let i = match shards.iter().position(|s| s.key == key) {
                    Some(i) => i,
                    None => {
                        shards.push(Shard::new(key));
                        shards.len() - 1
                    }
                };
                let info = SeriesInfo {
                    key: ev.to_key(),
                    family: Family::of(&ev.name),
                    shard: shards[i].key.clone(),
                };
                let target = *targets
                    .entry(ev.series_hash())
                    .or_insert_with(|| shards[i].target(&info, &setup));
                shards[i].apply(target, ts, slot, ev.value);
            }
            for s in &mut shards {
                s.close((slot + 1) * 10_000, slot, 10.0, &mut |a| kinds.push(a.kind));
            }
        }
        let episodes: std::collections::BTreeSet<_> = kinds.into_iter().collect();
        assert!(
            episodes.len() >= 2,
            "a stall and a latency rise were judged: {episodes:?}"
        );
        shards
    }

    /// The shape of a serialised value: its field names and the kinds of its values, each list
    /// by its first element, no value itself.
    fn shape(v: &serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        match v {
            Value::Object(m) => {
                Value::Object(m.iter().map(|(k, v)| (k.clone(), shape(v))).collect())
            }
            Value::Array(a) => Value::Array(a.first().map(shape).into_iter().collect()),
            Value::Number(_) => "number".into(),
            Value::String(_) => "string".into(),
            Value::Bool(_) => "bool".into(),
            Value::Null => Value::Null,
        }
    }

    #[test]
    fn what_a_checkpoint_holds_is_pinned_to_its_format_version() {
        use sha2::Digest;
        let shapes: Vec<serde_json::Value> = exercised()
            .iter()
            .map(|s| shape(&serde_json::to_value(s).unwrap()))
            .collect();
        assert_eq!(shapes.len(), 2, "a topic shard and a queue shard");
        let digest = sha2::Sha256::digest(serde_json::to_string(&shapes).unwrap().as_bytes());
        let digest: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        // A change of what a shard serialises (a field added, removed, renamed or reordered, in
        // any state it holds) changes this digest. Bump crate::state::FORMAT_VERSION with it:
        // a checkpoint of the old layout would otherwise be misread, not refused.
        assert_eq!(
            (crate::state::FORMAT_VERSION, digest.as_str()),
            (
                1,
                "b0d8a0989f6fb6d0369f365aa20d71d86ca07f79ed2a5330e8486d9ca17b2540"
            ),
            "the checkpoint layout changed: bump state::FORMAT_VERSION and pin the new digest"
        );
        // And each shard comes back from its checkpoint as it was saved.
        for s in exercised() {
            let bytes = crate::state::encode(Some(7), &s);
            let back = crate::state::decode(&bytes).unwrap();
            assert_eq!(back.open_slot, Some(7));
            assert_eq!(crate::state::encode(Some(7), &back.shard), bytes);
        }
    }
}
