//! A worker: owns a shard of the entities, applies samples to them, and judges them each time the
//! event-time watermark closes an interval.
//!
//! Intervals ("slots") are aligned to multiples of the interval for every series, so one watermark
//! closes the same slot everywhere. A sample for a slot already closed is late: counted, dropped.

use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use rustc_hash::FxHashMap;

use super::entity::{
    Consumer, GenericSeries, KafkaGroup, KafkaTopic, LatencySeries, QueueField, RabbitQueue,
};
use super::{Batch, Learned, Msg, SeriesInfo};
use crate::alert::{Alert, Entity, Symptom};
use crate::config::{Config, DetectorConfig};
use crate::event::{Family, SeriesKey};
use crate::learn::{EntityClass, LearnedTrack};
use crate::status::{slot, Board, EntityKind};
use crate::telemetry::WorkerStats;

/// A gap longer than this many intervals is skipped rather than closed interval by interval.
const MAX_CATCH_UP: i64 = 8640;

/// Where a series' samples go, resolved once when the series registers.
#[derive(Clone, Copy)]
enum Route {
    LogEnd { topic: u32, partition: u32 },
    Committed { group: u32, partition: u32 },
    Lag { group: u32, partition: u32 },
    LagSeconds { group: u32, partition: u32 },
    Members { group: u32 },
    Queue { queue: u32, field: QueueField },
    Latency(u32),
    Generic(u32),
}

pub struct Worker {
    config: Arc<Config>,
    interval: i64,
    lateness: i64,
    routes: FxHashMap<u64, Route>,
    topics: Vec<KafkaTopic>,
    topic_ids: FxHashMap<(Box<str>, Box<str>), u32>,
    groups: Vec<KafkaGroup>,
    group_ids: FxHashMap<(u32, Box<str>), u32>,
    queues: Vec<RabbitQueue>,
    queue_ids: FxHashMap<Vec<Box<str>>, u32>,
    latencies: Vec<LatencySeries>,
    generics: Vec<GenericSeries>,
    open_slot: Option<i64>,
    max_ts: i64,
    alerts: Sender<Alert>,
    learned: Learned,
    stats: WorkerStats,
    /// Where this worker shows what it sees (its shard of the board), in a run that serves it.
    board: Option<(Arc<Board>, usize)>,
}

impl Worker {
    pub fn new(
        config: Arc<Config>,
        alerts: Sender<Alert>,
        learned: Learned,
        board: Option<(Arc<Board>, usize)>,
    ) -> Self {
        Worker {
            interval: config.engine.interval_ms(),
            lateness: config.engine.lateness_ms(),
            config,
            routes: FxHashMap::default(),
            topics: Vec::new(),
            topic_ids: FxHashMap::default(),
            groups: Vec::new(),
            group_ids: FxHashMap::default(),
            queues: Vec::new(),
            queue_ids: FxHashMap::default(),
            latencies: Vec::new(),
            generics: Vec::new(),
            open_slot: None,
            max_ts: i64::MIN,
            alerts,
            learned,
            stats: WorkerStats::default(),
            board,
        }
    }

    pub(crate) fn run(mut self, input: Receiver<Batch>, recycle: Sender<Vec<Msg>>) -> WorkerStats {
        for mut batch in input {
            for msg in batch.msgs.drain(..) {
                match msg {
                    Msg::Register(id, info) => self.register(id, &info),
                    Msg::Sample { series, ts, value } => self.sample(series, ts, value),
                    Msg::Sync(done) => {
                        let _ = done.send(());
                    }
                }
            }
            self.advance(batch.watermark);
            let _ = recycle.try_send(batch.msgs);
        }
        self.finish()
    }

    fn finish(mut self) -> WorkerStats {
        if let Some(open) = self.open_slot {
            let last = self.max_ts.div_euclid(self.interval);
            for slot in open..=last {
                self.close(slot);
            }
        }
        self.count_state();
        self.stats.histogram_bytes = self
            .latencies
            .iter()
            .map(|l| l.window.memory_bytes() as u64)
            .sum();
        self.stats
    }

    /// Counts the series and entities the worker holds (the histograms' memory is counted once,
    /// at the end of the run).
    fn count_state(&mut self) {
        self.stats.series = self.routes.len() as u64;
        self.stats.entities =
            (self.groups.len() + self.queues.len() + self.latencies.len() + self.generics.len())
                as u64;
    }

    /// Shows the interval just closed on the board: every entity's status and figures, and the
    /// worker's counts. Once per interval, never per event.
    fn publish(&mut self, now: i64) {
        if self.board.is_none() {
            return;
        }
        self.count_state();
        let Some((board, i)) = &self.board else {
            return;
        };
        let mut shard = board.shard(*i);
        let shard = &mut *shard;
        shard.stats = self.stats.clone();
        for (i, g) in self.groups.iter().enumerate() {
            let s = slot(&mut shard.groups, i, EntityKind::KafkaGroup, &g.entity);
            g.report(now, &self.topics[g.topic as usize], s);
        }
        for (i, q) in self.queues.iter().enumerate() {
            let s = slot(&mut shard.queues, i, EntityKind::RabbitmqQueue, &q.entity);
            q.report(now, s);
        }
        for (i, l) in self.latencies.iter().enumerate() {
            let s = slot(&mut shard.latencies, i, EntityKind::Latency, &l.entity);
            l.report(now, s);
        }
        for (i, g) in self.generics.iter().enumerate() {
            let s = slot(&mut shard.gauges, i, EntityKind::Gauge, &g.entity);
            g.report(now, s);
        }
    }

    fn sample(&mut self, series: u64, ts: i64, value: f64) {
        let slot = ts.div_euclid(self.interval);
        match self.open_slot {
            None => self.open_slot = Some(slot),
            Some(open) if slot < open => {
                self.stats.late += 1;
                return;
            }
            Some(_) => self.advance(ts - self.lateness),
        }
        let Some(&route) = self.routes.get(&series) else {
            return;
        };
        self.stats.samples += 1;
        self.max_ts = self.max_ts.max(ts);
        match route {
            Route::LogEnd { topic, partition } => self.topics[topic as usize].partitions
                [partition as usize]
                .1
                .update(ts, value),
            Route::Committed { group, partition } => {
                let g = &mut self.groups[group as usize];
                g.partitions[partition as usize].committed.update(ts, value);
                g.fresh = true;
            }
            Route::LagSeconds { group, partition } => self.groups[group as usize].partitions
                [partition as usize]
                .lag_seconds
                .update(ts, value),
            Route::Lag { group, partition } => {
                let g = &mut self.groups[group as usize];
                let p = &mut g.partitions[partition as usize];
                p.lag.update(ts, value);
                if value <= 0.0 {
                    p.lag_zero_at = p.lag_zero_at.max(ts);
                }
                g.fresh = true;
            }
            Route::Members { group } => self.groups[group as usize].members.update(ts, value),
            Route::Queue { queue, field } => self.queues[queue as usize].update(field, ts, value),
            Route::Latency(i) => self.latencies[i as usize].window.record(slot, value),
            Route::Generic(i) => {
                let g = &mut self.generics[i as usize];
                g.gauge.update(ts, value);
                g.fresh = true;
            }
        }
    }

    /// Closes every slot that ends at or before the watermark.
    fn advance(&mut self, watermark: i64) {
        let Some(mut open) = self.open_slot else {
            return;
        };
        let target = watermark.div_euclid(self.interval); // first slot still open
        if target - open > MAX_CATCH_UP {
            self.close(open);
            open = target - 1;
        }
        while open < target {
            self.close(open);
            open += 1;
        }
        self.open_slot = Some(open);
    }

    fn close(&mut self, slot: i64) {
        let now = (slot + 1) * self.interval;
        let secs = self.interval as f64 / 1000.0;
        self.stats.intervals_closed += 1;
        let alerts = &self.alerts;
        // A closed alert channel means the run is over; the alert has nowhere left to go.
        let mut out = |a: Alert| {
            let _ = alerts.send(a);
        };
        for g in &mut self.groups {
            g.close(now, secs, &self.topics[g.topic as usize], &mut out);
        }
        for q in &mut self.queues {
            q.close(now, secs, &mut out);
        }
        let consumers = self.groups.len() + self.queues.len();
        for i in 0..self.latencies.len() {
            if let Consumer::Unknown { looked_at } = self.latencies[i].consumer {
                if looked_at != consumers {
                    self.latencies[i].consumer = self.consumer_of(&self.latencies[i].entity);
                }
            }
            let l = &mut self.latencies[i];
            let explained = match l.consumer {
                Consumer::Group(g) => self.groups[g as usize].explains_latency(now),
                Consumer::Queue(q) => self.queues[q as usize].explains_latency(now),
                Consumer::Unknown { .. } => false,
            };
            if let Some(f) = l.close(now, slot, explained, &mut out) {
                let symptom = Symptom::of(&l.entity, &f);
                match l.consumer {
                    Consumer::Group(g) => {
                        self.groups[g as usize].attach_symptom(now, symptom, &mut out)
                    }
                    Consumer::Queue(q) => {
                        self.queues[q as usize].attach_symptom(now, symptom, &mut out)
                    }
                    Consumer::Unknown { .. } => {}
                }
            }
        }
        for g in &mut self.generics {
            g.close(now, &mut out);
        }
        self.publish(now);
    }

    fn register(&mut self, id: u64, info: &SeriesInfo) {
        if self.routes.contains_key(&id) {
            return;
        }
        let key = &info.key;
        let l = |k: &str| key.label(k).unwrap_or("");
        let route = match info.family {
            Family::KafkaLogEndOffset => {
                let topic = self.topic_id(l("cluster"), l("topic"));
                let partition = self.topics[topic as usize].partition_index(l("partition"));
                Route::LogEnd { topic, partition }
            }
            Family::KafkaCommittedOffset | Family::KafkaLag | Family::KafkaLagSeconds => {
                let group = self.group_id(key);
                let g = &mut self.groups[group as usize];
                let partition =
                    g.partition_index(&mut self.topics[g.topic as usize], l("partition"));
                match info.family {
                    Family::KafkaLag => Route::Lag { group, partition },
                    Family::KafkaLagSeconds => Route::LagSeconds { group, partition },
                    _ => Route::Committed { group, partition },
                }
            }
            Family::KafkaMembers => Route::Members {
                group: self.group_id(key),
            },
            Family::RabbitReady => self.queue_route(key, QueueField::Ready),
            Family::RabbitUnacked => self.queue_route(key, QueueField::Unacked),
            Family::RabbitConsumers => self.queue_route(key, QueueField::Consumers),
            Family::RabbitPublished => self.queue_route(key, QueueField::Published),
            Family::RabbitDelivered => self.queue_route(key, QueueField::Delivered),
            Family::RabbitAcked => self.queue_route(key, QueueField::Acked),
            Family::RabbitRedelivered => self.queue_route(key, QueueField::Redelivered),
            Family::RabbitUtilisation => self.queue_route(key, QueueField::Utilisation),
            Family::Latency => {
                let cfg = self.detectors_for(&key.labels);
                let entity = Entity::new(key.labels.clone(), latency_display(key));
                let learned = self.learned(EntityClass::Latency, &cfg);
                self.latencies
                    .push(LatencySeries::new(entity, &cfg, learned));
                Route::Latency((self.latencies.len() - 1) as u32)
            }
            Family::Generic => {
                let mut labels = vec![("__name__".into(), key.name.clone())];
                labels.extend(key.labels.iter().cloned());
                let cfg = self.detectors_for(&labels);
                let entity = Entity::new(labels, key.to_string());
                self.generics.push(GenericSeries::new(entity, &cfg));
                Route::Generic((self.generics.len() - 1) as u32)
            }
        };
        self.routes.insert(id, route);
    }

    fn learned(&self, class: EntityClass, cfg: &DetectorConfig) -> LearnedTrack {
        let model = self
            .learned
            .models
            .as_ref()
            .and_then(|m| m.get(class))
            .cloned();
        LearnedTrack::new(model, self.learned.features.clone(), &cfg.learned)
    }

    fn detectors_for(&self, labels: &[(Box<str>, Box<str>)]) -> DetectorConfig {
        self.config
            .detectors_for(labels.iter().map(|(k, v)| (k.as_ref(), v.as_ref())))
    }

    /// The group or queue that consumes the messages a latency stream measures, found by its
    /// labels (cluster, topic and consumergroup; or cluster, vhost and queue) without creating it.
    fn consumer_of(&self, entity: &Entity) -> Consumer {
        let l = |k: &str| {
            entity
                .labels
                .iter()
                .find(|(n, _)| n.as_ref() == k)
                .map(|(_, v)| v.as_ref())
        };
        let looked_at = self.groups.len() + self.queues.len();
        if let (Some(group), Some(topic)) = (l("consumergroup"), l("topic")) {
            let key = (
                Box::<str>::from(l("cluster").unwrap_or("")),
                Box::<str>::from(topic),
            );
            if let Some(&t) = self.topic_ids.get(&key) {
                if let Some(&g) = self.group_ids.get(&(t, Box::<str>::from(group))) {
                    return Consumer::Group(g);
                }
            }
        } else if l("queue").is_some() {
            let key: Vec<Box<str>> = ["cluster", "vhost", "queue"]
                .iter()
                .filter_map(|k| l(k).map(Box::<str>::from))
                .collect();
            if let Some(&q) = self.queue_ids.get(&key) {
                return Consumer::Queue(q);
            }
        }
        Consumer::Unknown { looked_at }
    }

    fn topic_id(&mut self, cluster: &str, topic: &str) -> u32 {
        let key = (Box::<str>::from(cluster), Box::<str>::from(topic));
        if let Some(&id) = self.topic_ids.get(&key) {
            return id;
        }
        self.topics.push(KafkaTopic::default());
        let id = (self.topics.len() - 1) as u32;
        self.topic_ids.insert(key, id);
        id
    }

    fn group_id(&mut self, key: &SeriesKey) -> u32 {
        let l = |k: &str| key.label(k).unwrap_or("");
        let topic = self.topic_id(l("cluster"), l("topic"));
        let gk = (topic, Box::<str>::from(l("consumergroup")));
        if let Some(&id) = self.group_ids.get(&gk) {
            return id;
        }
        let labels = entity_labels(key, &["cluster", "topic", "consumergroup"]);
        let cfg = self.detectors_for(&labels);
        let entity = Entity::new(labels, format!("{}/{}", l("topic"), l("consumergroup")));
        let learned = self.learned(EntityClass::KafkaGroup, &cfg);
        self.groups.push(KafkaGroup::new(
            topic,
            entity,
            l("consumergroup"),
            &cfg,
            learned,
        ));
        let id = (self.groups.len() - 1) as u32;
        self.group_ids.insert(gk, id);
        id
    }

    fn queue_route(&mut self, key: &SeriesKey, field: QueueField) -> Route {
        let labels = entity_labels(key, &["cluster", "vhost", "queue"]);
        let qk: Vec<Box<str>> = labels.iter().map(|(_, v)| v.clone()).collect();
        let queue = match self.queue_ids.get(&qk) {
            Some(&id) => id,
            None => {
                let cfg = self.detectors_for(&labels);
                let display = format!("queue {}", key.label("queue").unwrap_or(""));
                let learned = self.learned(EntityClass::RabbitQueue, &cfg);
                self.queues.push(RabbitQueue::new(
                    Entity::new(labels, display),
                    &cfg,
                    learned,
                ));
                let id = (self.queues.len() - 1) as u32;
                self.queue_ids.insert(qk, id);
                id
            }
        };
        Route::Queue { queue, field }
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
