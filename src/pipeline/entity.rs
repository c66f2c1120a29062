//! The things alerts are about, as a worker keeps them: a Kafka consumer group on a topic, a
//! RabbitMQ queue, a latency series, a generic gauge. Each owns its raw state, its detectors and
//! the lifecycle of its alerts, and is judged once per closed interval by [`close`](KafkaGroup::close).

use std::sync::Arc;

use smallvec::SmallVec;

use crate::alert::{Alert, AlertTrack, Entity};
use crate::config::DetectorConfig;
use crate::detect::{
    BacklogDetector, BacklogInput, GroupStallDetector, LatencyDetector, LevelDetector,
    PartitionView, QueueStallDetector, QueueView,
};
use crate::learn::{LearnedTrack, Raw};
use crate::window::{Counter, Gauge, LatencyWindow};

/// Log-end offsets of one topic's partitions, shared by every group that consumes it.
#[derive(Default)]
pub struct KafkaTopic {
    pub partitions: Vec<(Box<str>, Gauge)>,
}

impl KafkaTopic {
    pub fn partition_index(&mut self, label: &str) -> u32 {
        if let Some(i) = self
            .partitions
            .iter()
            .position(|(p, _)| p.as_ref() == label)
        {
            return i as u32;
        }
        self.partitions.push((label.into(), Gauge::default()));
        (self.partitions.len() - 1) as u32
    }
}

pub struct GroupPartition {
    pub topic_partition: u32,
    pub committed: Counter,
    pub lag: Gauge,
    /// How old the oldest unconsumed message is, where the source measures it.
    pub lag_seconds: Gauge,
    pub lag_zero_at: i64,
}

pub struct KafkaGroup {
    pub topic: u32,
    pub entity: Arc<Entity>,
    pub group: Box<str>,
    pub partitions: Vec<GroupPartition>,
    pub members: Gauge,
    /// Whether any lag or committed offset arrived during the open interval.
    pub fresh: bool,
    stall: GroupStallDetector,
    backlog: BacklogDetector,
    stall_track: AlertTrack,
    backlog_track: AlertTrack,
    learned: LearnedTrack,
}

impl KafkaGroup {
    pub fn new(
        topic: u32,
        entity: Arc<Entity>,
        group: &str,
        cfg: &DetectorConfig,
        learned: LearnedTrack,
    ) -> Self {
        KafkaGroup {
            topic,
            entity,
            group: group.into(),
            partitions: Vec::new(),
            members: Gauge::default(),
            fresh: false,
            stall: GroupStallDetector::new(&cfg.stall),
            backlog: BacklogDetector::new(&cfg.backlog),
            stall_track: AlertTrack::new(cfg.alerts.resolve_after_intervals),
            backlog_track: AlertTrack::new(cfg.alerts.resolve_after_intervals),
            learned,
        }
    }

    pub fn partition_index(&mut self, topic: &mut KafkaTopic, label: &str) -> u32 {
        let tp = topic.partition_index(label);
        if let Some(i) = self.partitions.iter().position(|p| p.topic_partition == tp) {
            return i as u32;
        }
        self.partitions.push(GroupPartition {
            topic_partition: tp,
            committed: Counter::default(),
            lag: Gauge::default(),
            lag_seconds: Gauge::default(),
            lag_zero_at: i64::MIN,
        });
        (self.partitions.len() - 1) as u32
    }

    pub fn close(
        &mut self,
        now: i64,
        interval_secs: f64,
        topic: &KafkaTopic,
        out: &mut impl FnMut(Alert),
    ) {
        let mut views: SmallVec<[PartitionView; 32]> = SmallVec::new();
        let mut consumed = 0.0;
        for p in &mut self.partitions {
            let (label, end) = &topic.partitions[p.topic_partition as usize];
            let lag = p
                .lag
                .value()
                .or_else(|| Some(end.value()? - p.committed.gauge.value()?).map(|l| l.max(0.0)));
            if lag == Some(0.0) {
                p.lag_zero_at = now;
            }
            consumed += p.committed.take_interval_increase();
            views.push(PartitionView {
                partition: label,
                lag,
                progress_at: p.committed.gauge.changed_at.max(p.lag_zero_at),
                seen_at: p.committed.gauge.last.map_or(i64::MIN, |s| s.ts),
                lag_seconds: p.lag_seconds.value(),
            });
        }
        let progressing = || {
            views
                .iter()
                .filter(|v| !self.stall.partition_stalled(v, &self.members))
        };
        let backlog: f64 = progressing().filter_map(|v| v.lag).sum();
        let time_lag = progressing().filter_map(|v| v.lag_seconds).reduce(f64::max);
        let stall = self.stall.on_interval(&self.group, &views, &self.members);
        let growth = self.backlog.on_interval(BacklogInput {
            now,
            backlog,
            fresh: self.fresh,
            consumed,
            interval_secs,
            time_lag,
        });
        let raw = self.fresh.then(|| Raw::KafkaGroup {
            backlog: views.iter().filter_map(|v| v.lag).sum(),
            consume_rate: consumed / interval_secs,
            members: self.members.value().unwrap_or(0.0),
        });
        let growth = self.learned.judge(
            now,
            &self.entity,
            raw,
            growth,
            self.backlog_track.is_firing(),
        );
        self.fresh = false;
        emit(&mut self.stall_track, now, &self.entity, stall, out);
        emit(&mut self.backlog_track, now, &self.entity, growth, out);
    }
}

#[derive(Clone, Copy, Debug)]
pub enum QueueField {
    Ready,
    Unacked,
    Consumers,
    Published,
    Delivered,
    Acked,
    Redelivered,
    Utilisation,
}

pub struct RabbitQueue {
    pub entity: Arc<Entity>,
    pub ready: Gauge,
    pub unacked: Gauge,
    pub consumers: Gauge,
    pub published: Counter,
    pub delivered: Counter,
    pub acked: Counter,
    pub redelivered: Counter,
    pub utilisation: Gauge,
    pub fresh: bool,
    stall: QueueStallDetector,
    backlog: BacklogDetector,
    stall_track: AlertTrack,
    backlog_track: AlertTrack,
    learned: LearnedTrack,
}

impl RabbitQueue {
    pub fn new(entity: Arc<Entity>, cfg: &DetectorConfig, learned: LearnedTrack) -> Self {
        RabbitQueue {
            entity,
            ready: Gauge::default(),
            unacked: Gauge::default(),
            consumers: Gauge::default(),
            published: Counter::default(),
            delivered: Counter::default(),
            acked: Counter::default(),
            redelivered: Counter::default(),
            utilisation: Gauge::default(),
            fresh: false,
            stall: QueueStallDetector::new(&cfg.stall),
            backlog: BacklogDetector::new(&cfg.backlog),
            stall_track: AlertTrack::new(cfg.alerts.resolve_after_intervals),
            backlog_track: AlertTrack::new(cfg.alerts.resolve_after_intervals),
            learned,
        }
    }

    pub fn update(&mut self, field: QueueField, ts: i64, value: f64) {
        match field {
            QueueField::Ready => {
                self.ready.update(ts, value);
                self.fresh = true;
            }
            QueueField::Unacked => self.unacked.update(ts, value),
            QueueField::Consumers => self.consumers.update(ts, value),
            QueueField::Published => self.published.update(ts, value),
            QueueField::Delivered => self.delivered.update(ts, value),
            QueueField::Acked => self.acked.update(ts, value),
            QueueField::Redelivered => self.redelivered.update(ts, value),
            QueueField::Utilisation => self.utilisation.update(ts, value),
        }
    }

    pub fn close(&mut self, now: i64, interval_secs: f64, out: &mut impl FnMut(Alert)) {
        // Without acks (auto-ack consumers) deliveries are the progress signal.
        let progress = if self.acked.gauge.last.is_some() {
            &mut self.acked
        } else {
            &mut self.delivered
        };
        let acks = progress
            .gauge
            .last
            .map(|s| (progress.gauge.changed_at, s.ts));
        let consumed = progress.take_interval_increase();
        let view = QueueView {
            ready: self.ready.value(),
            unacked: self.unacked.value(),
            consumers: self.consumers,
            acks,
            redelivered: self.redelivered.gauge.value(),
            utilisation: self.utilisation.value(),
        };
        let stall = self.stall.on_interval(&view);
        let growth = self.backlog.on_interval(BacklogInput {
            now,
            backlog: view.ready.unwrap_or(0.0),
            fresh: self.fresh,
            consumed,
            interval_secs,
            time_lag: None,
        });
        let raw = self.fresh.then(|| Raw::RabbitQueue {
            ready: view.ready.unwrap_or(0.0),
            unacked: view.unacked.unwrap_or(0.0),
            ack_rate: consumed / interval_secs,
            consumers: self.consumers.value().unwrap_or(0.0),
        });
        let growth = self.learned.judge(
            now,
            &self.entity,
            raw,
            growth,
            self.backlog_track.is_firing(),
        );
        self.fresh = false;
        emit(&mut self.stall_track, now, &self.entity, stall, out);
        emit(&mut self.backlog_track, now, &self.entity, growth, out);
    }
}

pub struct LatencySeries {
    pub entity: Arc<Entity>,
    pub window: LatencyWindow,
    detector: LatencyDetector,
    track: AlertTrack,
    learned: LearnedTrack,
}

impl LatencySeries {
    pub fn new(entity: Arc<Entity>, cfg: &DetectorConfig, learned: LearnedTrack) -> Self {
        LatencySeries {
            entity,
            window: LatencyWindow::new(
                cfg.latency.window_intervals,
                cfg.latency.significant_digits,
            ),
            detector: LatencyDetector::new(&cfg.latency),
            track: AlertTrack::new(cfg.alerts.resolve_after_intervals),
            learned,
        }
    }

    pub fn close(&mut self, now: i64, slot: i64, out: &mut impl FnMut(Alert)) {
        let q = self.window.interval(slot);
        let finding = self.detector.on_interval(q.as_ref());
        let raw = q
            .filter(|q| q.count >= crate::detect::LATENCY_MIN_COUNT)
            .map(|q| Raw::Latency {
                p50: q.p50,
                p99: q.p99,
            });
        let finding = self
            .learned
            .judge(now, &self.entity, raw, finding, self.track.is_firing());
        emit(&mut self.track, now, &self.entity, finding, out);
    }
}

pub struct GenericSeries {
    pub entity: Arc<Entity>,
    pub gauge: Gauge,
    pub fresh: bool,
    detector: LevelDetector,
    track: AlertTrack,
}

impl GenericSeries {
    pub fn new(entity: Arc<Entity>, cfg: &DetectorConfig) -> Self {
        GenericSeries {
            entity,
            gauge: Gauge::default(),
            fresh: false,
            detector: LevelDetector::new(&cfg.level),
            track: AlertTrack::new(cfg.alerts.resolve_after_intervals),
        }
    }

    pub fn close(&mut self, now: i64, out: &mut impl FnMut(Alert)) {
        let value = if self.fresh { self.gauge.value() } else { None };
        self.fresh = false;
        let finding = self.detector.on_interval(value);
        emit(&mut self.track, now, &self.entity, finding, out);
    }
}

fn emit(
    track: &mut AlertTrack,
    now: i64,
    entity: &Entity,
    f: Option<crate::detect::Finding>,
    out: &mut impl FnMut(Alert),
) {
    if let Some(a) = track.observe(now, entity, f) {
        out(a);
    }
}
