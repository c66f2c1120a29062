//! The things alerts are about, as a worker keeps them: a Kafka consumer group on a topic, a
//! RabbitMQ queue, a latency series, a generic gauge. Each owns its raw state, its detectors and
//! the lifecycle of its alerts, and is judged once per closed interval by [`close`](KafkaGroup::close).
//!
//! Everything an entity has learned is serialisable, for checkpoints; its settings and learned
//! model are not, and come from the run in force through `configure` once it is restored.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use crate::alert::{Alert, Entity, Judged, Symptom};
use crate::config::DetectorConfig;
use crate::detect::{
    BacklogDetector, BacklogInput, Cadence, Detector, Finding, GroupStallDetector, GroupView,
    LatencyDetector, LevelDetector, PartitionView, QueueStallDetector, QueueView,
};
use crate::learn::ClassModel;
use crate::learn::{LearnedTrack, Raw};
use crate::status::{EntityStatus, Figures, PartitionStatus, Status};
use crate::window::{Counter, Gauge, LatencyWindow, TimeLag};

/// What a restored entity's learned track goes on with: the class model and the feature tap.
pub type Learning = (
    Option<Arc<ClassModel>>,
    Option<crossbeam_channel::Sender<crate::learn::FeatureRow>>,
);

/// Log-end offsets of one topic's partitions, shared by every group that consumes it.
#[derive(Default, Serialize, Deserialize)]
pub struct KafkaTopic {
    pub partitions: Vec<TopicPartition>,
}

/// Points of (log-end offset, time) kept per partition: a few minutes of polls, and beyond
/// them the table extrapolates at its average rate.
const TIME_LAG_POINTS: usize = 60;

#[derive(Serialize, Deserialize)]
pub struct TopicPartition {
    pub label: Box<str>,
    pub end: Gauge,
    /// When the log end reached each offset: how old a group's committed offset is.
    pub offsets: TimeLag,
}

impl TopicPartition {
    pub fn update(&mut self, ts: i64, end: f64) {
        self.end.update(ts, end);
        self.offsets.record(end as i64, ts, TIME_LAG_POINTS);
    }
}

impl KafkaTopic {
    pub fn partition_index(&mut self, label: &str) -> u32 {
        if let Some(i) = self
            .partitions
            .iter()
            .position(|p| p.label.as_ref() == label)
        {
            return i as u32;
        }
        self.partitions.push(TopicPartition {
            label: label.into(),
            end: Gauge::default(),
            offsets: TimeLag::default(),
        });
        (self.partitions.len() - 1) as u32
    }
}

#[derive(Serialize, Deserialize)]
pub struct GroupPartition {
    pub topic_partition: u32,
    pub committed: Counter,
    pub lag: Gauge,
    /// How old the oldest unconsumed message is, where the source measures it (else the
    /// topic's table of offsets over time tells).
    pub lag_seconds: Gauge,
    pub lag_zero_at: i64,
    /// How long this partition usually stays frozen with lag before its offset moves.
    pub cadence: Cadence,
    /// The stall clock's start at the previous close, and the committed offset's last move then.
    clock: Option<(i64, i64)>,
}

impl GroupPartition {
    /// Messages behind: as the source reports it, or the log end less the committed offset.
    fn lag(&self, tp: &TopicPartition) -> Option<f64> {
        self.lag
            .value()
            .or_else(|| Some(tp.end.value()? - self.committed.gauge.value()?).map(|l| l.max(0.0)))
    }

    /// How old the oldest unconsumed message is: as the source reports it, or when the log end
    /// reached the committed offset, by the topic's table, as of when that offset was seen.
    fn lag_seconds(&self, tp: &TopicPartition) -> Option<f64> {
        self.lag_seconds.value().or_else(|| {
            let c = self.committed.gauge.last?;
            tp.end.last?;
            Some(tp.offsets.lag_seconds(c.value as i64, c.ts))
        })
    }

    /// Starts the stall clock at the last move or the last time lag was zero, whichever is later;
    /// a move since the previous close teaches the cadence how long the freeze before it lasted.
    fn stall_clock(&mut self) -> i64 {
        let moved_at = self.committed.gauge.changed_at;
        let start = moved_at.max(self.lag_zero_at);
        if let Some((previous_start, previous_move)) = self.clock {
            if moved_at > previous_move {
                self.cadence
                    .observe_freeze(previous_start, &self.committed.gauge);
            }
        }
        if self.committed.gauge.last.is_some() {
            self.clock = Some((start, moved_at));
        }
        start
    }
}

#[derive(Serialize, Deserialize)]
pub struct KafkaGroup {
    pub entity: Arc<Entity>,
    pub group: Box<str>,
    pub partitions: Vec<GroupPartition>,
    pub members: Gauge,
    /// Whether any lag or committed offset arrived during the open interval.
    pub fresh: bool,
    stall: Judged<GroupStallDetector>,
    backlog: Judged<BacklogDetector>,
    learned: LearnedTrack,
    /// The last closed interval's figures, and whether data arrived in it.
    #[serde(skip)]
    shown: (Figures, bool),
}

impl KafkaGroup {
    pub fn new(
        entity: Arc<Entity>,
        group: &str,
        cfg: &DetectorConfig,
        learned: LearnedTrack,
    ) -> Self {
        KafkaGroup {
            entity,
            group: group.into(),
            partitions: Vec::new(),
            members: Gauge::default(),
            fresh: false,
            stall: Judged::new(GroupStallDetector::new(&cfg.stall), &cfg.alerts),
            backlog: Judged::new(BacklogDetector::new(&cfg.backlog), &cfg.alerts),
            learned,
            shown: (Figures::default(), false),
        }
    }

    /// Takes the settings and learned model in force, after a restore.
    pub fn configure(&mut self, cfg: &DetectorConfig, model: Learning) {
        self.stall.configure(&cfg.stall, &cfg.alerts);
        self.backlog.configure(&cfg.backlog, &cfg.alerts);
        self.learned.attach(model.0, model.1, &cfg.learned);
    }

    /// What an engine taking over delivers again (see [`Judged::announce`]).
    pub fn announce(&self, now: i64, since: i64, out: &mut impl FnMut(Alert)) {
        self.stall.announce(now, since, &self.entity, out);
        self.backlog.announce(now, since, &self.entity, out);
    }

    /// Whether its partitions point inside a topic of `partitions`.
    pub fn check(&self, partitions: usize) -> Result<(), String> {
        match self
            .partitions
            .iter()
            .find(|p| p.topic_partition as usize >= partitions)
        {
            Some(p) => Err(format!(
                "group {}: partition {} of a topic of {partitions}",
                self.group, p.topic_partition
            )),
            None => Ok(()),
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
            cadence: Cadence::default(),
            clock: None,
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
            let tp = &topic.partitions[p.topic_partition as usize];
            let lag = p.lag(tp);
            if lag == Some(0.0) {
                p.lag_zero_at = now;
            }
            consumed += p.committed.take_interval_increase();
            let progress_at = p.stall_clock();
            let gauge = &p.committed.gauge;
            // The freeze began in the gap before its last move (not so after a zero lag).
            let progress_gap_ms = if progress_at == gauge.changed_at {
                gauge.gap_before_change()
            } else {
                0
            };
            views.push(PartitionView {
                partition: &tp.label,
                lag,
                progress_at,
                progress_gap_ms,
                moved_at: p
                    .committed
                    .gauge
                    .last
                    .map_or(i64::MIN, |_| p.committed.gauge.changed_at),
                seen_at: p.committed.gauge.last.map_or(i64::MIN, |s| s.ts),
                lag_seconds: p.lag_seconds(tp),
                cadence_ms: p.cadence.typical(),
                spacing_ms: p.committed.gauge.spacing,
            });
        }
        // Backlog counts only partitions still progressing: a stalled one is the stall's story.
        let (mut backlog, mut time_lag) = (0.0, None::<f64>);
        let stall = &self.stall.detector;
        for v in views
            .iter()
            .filter(|v| !stall.partition_stalled(v, &views, &self.members))
        {
            backlog += v.lag.unwrap_or(0.0);
            time_lag = match (time_lag, v.lag_seconds) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
        }
        let raw = self.fresh.then(|| Raw::KafkaGroup {
            backlog: views.iter().filter_map(|v| v.lag).sum(),
            consume_rate: consumed / interval_secs,
            members: self.members.value().unwrap_or(0.0),
        });
        let group = GroupView {
            group: &self.group,
            partitions: &views,
            members: &self.members,
        };
        self.stall.judge(now, &self.entity, group, out);
        let input = BacklogInput {
            now,
            backlog,
            fresh: self.fresh,
            consumed,
            interval_secs,
            time_lag,
        };
        let (learned, entity) = (&mut self.learned, &self.entity);
        self.backlog.judge_confirmed(
            now,
            entity,
            input,
            |f, firing| learned.judge(now, entity, raw, f, firing),
            out,
        );
        let figures = Figures {
            backlog: Some(views.iter().filter_map(|v| v.lag).sum()),
            lag_seconds: views.iter().filter_map(|v| v.lag_seconds).reduce(f64::max),
            consumers: self.members.value(),
            consume_rate: Some(consumed / interval_secs),
            ..Figures::default()
        };
        self.shown = (figures, self.fresh);
        self.fresh = false;
    }

    /// Writes what the last interval showed of this group, partition by partition.
    pub fn report(&self, now: i64, topic: &KafkaTopic, s: &mut EntityStatus) {
        let status = worst([self.stall.open(), self.backlog.open()]);
        s.record(now, self.shown.1, self.shown.0, status);
        s.model = self.learned.model_status();
        for (i, p) in self.partitions.iter().enumerate() {
            let tp = &topic.partitions[p.topic_partition as usize];
            if s.partitions.len() <= i {
                s.partitions.push(PartitionStatus {
                    partition: tp.label.clone(),
                    lag: None,
                    lag_seconds: None,
                });
            }
            s.partitions[i].lag = p.lag(tp);
            s.partitions[i].lag_seconds = p.lag_seconds(tp);
        }
    }
}

/// The worst status the open findings stand for.
fn worst<'a>(open: impl IntoIterator<Item = Option<&'a Finding>>) -> Status {
    open.into_iter()
        .flatten()
        .map(Status::of)
        .max()
        .unwrap_or(Status::Ok)
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

#[derive(Serialize, Deserialize)]
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
    stall: Judged<QueueStallDetector>,
    backlog: Judged<BacklogDetector>,
    learned: LearnedTrack,
    #[serde(skip)]
    shown: (Figures, bool),
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
            stall: Judged::new(QueueStallDetector::new(&cfg.stall), &cfg.alerts),
            backlog: Judged::new(BacklogDetector::new(&cfg.backlog), &cfg.alerts),
            learned,
            shown: (Figures::default(), false),
        }
    }

    /// Takes the settings and learned model in force, after a restore.
    pub fn configure(&mut self, cfg: &DetectorConfig, model: Learning) {
        self.stall.configure(&cfg.stall, &cfg.alerts);
        self.backlog.configure(&cfg.backlog, &cfg.alerts);
        self.learned.attach(model.0, model.1, &cfg.learned);
    }

    /// What an engine taking over delivers again (see [`Judged::announce`]).
    pub fn announce(&self, now: i64, since: i64, out: &mut impl FnMut(Alert)) {
        self.stall.announce(now, since, &self.entity, out);
        self.backlog.announce(now, since, &self.entity, out);
    }

    /// Writes what the last interval showed of this queue.
    pub fn report(&self, now: i64, s: &mut EntityStatus) {
        let status = worst([self.stall.open(), self.backlog.open()]);
        s.record(now, self.shown.1, self.shown.0, status);
        s.model = self.learned.model_status();
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
        let acks = progress.gauge;
        let consumed = progress.take_interval_increase();
        let view = QueueView {
            ready: self.ready.value(),
            unacked: self.unacked.value(),
            consumers: self.consumers,
            acks,
            redelivered: self.redelivered.gauge.value(),
            utilisation: self.utilisation.value(),
            published: self.published.gauge.value(),
        };
        self.stall.judge(now, &self.entity, &view, out);
        let input = BacklogInput {
            now,
            backlog: view.ready.unwrap_or(0.0),
            fresh: self.fresh,
            consumed,
            interval_secs,
            time_lag: None,
        };
        let raw = self.fresh.then(|| Raw::RabbitQueue {
            ready: view.ready.unwrap_or(0.0),
            unacked: view.unacked.unwrap_or(0.0),
            ack_rate: consumed / interval_secs,
            consumers: self.consumers.value().unwrap_or(0.0),
        });
        let (learned, entity) = (&mut self.learned, &self.entity);
        self.backlog.judge_confirmed(
            now,
            entity,
            input,
            |f, firing| learned.judge(now, entity, raw, f, firing),
            out,
        );
        let figures = Figures {
            backlog: view.ready,
            unacked: view.unacked,
            consumers: self.consumers.value(),
            consume_rate: Some(consumed / interval_secs),
            ..Figures::default()
        };
        self.shown = (figures, self.fresh);
        self.fresh = false;
    }
}

#[derive(Serialize, Deserialize)]
pub struct LatencySeries {
    pub entity: Arc<Entity>,
    pub window: LatencyWindow,
    /// The group or queue whose messages these are, once the worker has found it.
    pub consumer: Consumer,
    latency: Judged<LatencyDetector>,
    learned: LearnedTrack,
    #[serde(skip)]
    shown: (Figures, bool),
}

/// Where a latency stream's messages are consumed, as the worker knows it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Consumer {
    /// Not found yet, looked for when the worker had this many groups and queues.
    Unknown {
        looked_at: usize,
    },
    Group(u32),
    Queue(u32),
}

/// How long after its membership changed a group's latency rise is the rebalance's doing.
const REBALANCE_EXPLAINS_MS: i64 = 120_000;

impl KafkaGroup {
    /// What explains a rise in the latency of this group's messages, if anything does: a
    /// rebalance under way or just done, or a stall or backlog already alerted on.
    pub fn explains_latency(&self, now: i64) -> bool {
        let alerting = self.stall.is_firing() || self.backlog.is_firing();
        consumer_explains(now, &self.members, alerting)
    }

    /// Carries a symptom in the open stall episode, or else the open backlog one.
    pub fn attach_symptom(&mut self, now: i64, symptom: Symptom, out: &mut impl FnMut(Alert)) {
        let cause = (&mut self.stall, &mut self.backlog);
        attach_to_cause(cause, now, &self.entity, symptom, out);
    }
}

impl RabbitQueue {
    /// As for a group: consumers coming and going, or a stall or backlog already alerted on.
    pub fn explains_latency(&self, now: i64) -> bool {
        let alerting = self.stall.is_firing() || self.backlog.is_firing();
        consumer_explains(now, &self.consumers, alerting)
    }

    /// As for a group: the open stall episode, or else the open backlog one.
    pub fn attach_symptom(&mut self, now: i64, symptom: Symptom, out: &mut impl FnMut(Alert)) {
        let cause = (&mut self.stall, &mut self.backlog);
        attach_to_cause(cause, now, &self.entity, symptom, out);
    }
}

/// Carries a consumer's symptom in its open stall episode, or else its open backlog one.
fn attach_to_cause<S: Detector>(
    (stall, backlog): (&mut Judged<S>, &mut Judged<BacklogDetector>),
    now: i64,
    entity: &Entity,
    symptom: Symptom,
    out: &mut impl FnMut(Alert),
) {
    if stall.is_firing() {
        stall.attach(now, entity, symptom, out);
    } else {
        backlog.attach(now, entity, symptom, out);
    }
}

/// Whether a consumer explains its messages' latency: its membership (group members, queue
/// consumers) changed within `REBALANCE_EXPLAINS_MS`, or it is `alerting` on a stall or backlog.
fn consumer_explains(now: i64, membership: &Gauge, alerting: bool) -> bool {
    let changed_lately = membership.last.is_some()
        && now.saturating_sub(membership.changed_at) <= REBALANCE_EXPLAINS_MS;
    changed_lately || alerting
}

impl LatencySeries {
    pub fn new(entity: Arc<Entity>, cfg: &DetectorConfig, learned: LearnedTrack) -> Self {
        LatencySeries {
            entity,
            window: LatencyWindow::new(
                cfg.latency.window_intervals,
                cfg.latency.significant_digits,
            ),
            consumer: Consumer::Unknown { looked_at: 0 },
            latency: Judged::new(LatencyDetector::new(&cfg.latency), &cfg.alerts),
            learned,
            shown: (Figures::default(), false),
        }
    }

    /// Takes the settings and learned model in force, after a restore.
    pub fn configure(&mut self, cfg: &DetectorConfig, model: Learning) {
        self.latency.configure(&cfg.latency, &cfg.alerts);
        self.learned.attach(model.0, model.1, &cfg.learned);
    }

    /// What an engine taking over delivers again (see [`Judged::announce`]).
    pub fn announce(&self, now: i64, since: i64, out: &mut impl FnMut(Alert)) {
        self.latency.announce(now, since, &self.entity, out);
    }

    /// Writes what the last interval showed of this stream.
    pub fn report(&self, now: i64, s: &mut EntityStatus) {
        let status = worst([self.latency.open()]);
        s.record(now, self.shown.1, self.shown.0, status);
        s.model = self.learned.model_status();
    }

    /// Judges the interval `slot`. With `explained` (its consumer's rebalance, stall or backlog
    /// accounts for a rise) no new latency episode opens: one incident, one alert, named for its
    /// cause; an episode already open carries on. Returns the finding so held back, for the
    /// cause's alert to carry as a symptom.
    pub fn close(
        &mut self,
        now: i64,
        slot: i64,
        explained: bool,
        out: &mut impl FnMut(Alert),
    ) -> Option<Finding> {
        let q = self.window.recent(slot, crate::detect::LATENCY_MIN_COUNT);
        let raw = q.as_ref().map(|q| Raw::Latency {
            p50: q.p50,
            p99: q.p99,
        });
        let figures = Figures {
            p50_ms: q.as_ref().map(|q| q.p50),
            p99_ms: q.as_ref().map(|q| q.p99),
            ..Figures::default()
        };
        self.shown = (figures, q.is_some());
        let (learned, entity) = (&mut self.learned, &self.entity);
        let mut held_back = None;
        self.latency.judge_confirmed(
            now,
            entity,
            q.as_ref(),
            |f, firing| {
                // The learned track sees every interval, explained or not.
                let f = learned.judge(now, entity, raw, f, firing);
                if explained && !firing {
                    held_back = f;
                    return None;
                }
                f
            },
            out,
        );
        held_back
    }
}

#[derive(Serialize, Deserialize)]
pub struct GenericSeries {
    pub entity: Arc<Entity>,
    pub gauge: Gauge,
    pub fresh: bool,
    level: Judged<LevelDetector>,
    #[serde(skip)]
    shown: (Figures, bool),
}

impl GenericSeries {
    pub fn new(entity: Arc<Entity>, cfg: &DetectorConfig) -> Self {
        GenericSeries {
            entity,
            gauge: Gauge::default(),
            fresh: false,
            level: Judged::new(LevelDetector::new(&cfg.level), &cfg.alerts),
            shown: (Figures::default(), false),
        }
    }

    /// Takes the settings in force, after a restore.
    pub fn configure(&mut self, cfg: &DetectorConfig) {
        self.level.configure(&cfg.level, &cfg.alerts);
    }

    /// What an engine taking over delivers again (see [`Judged::announce`]).
    pub fn announce(&self, now: i64, since: i64, out: &mut impl FnMut(Alert)) {
        self.level.announce(now, since, &self.entity, out);
    }

    /// Writes what the last interval showed of this gauge.
    pub fn report(&self, now: i64, s: &mut EntityStatus) {
        let status = worst([self.level.open()]);
        s.record(now, self.shown.1, self.shown.0, status);
    }

    pub fn close(&mut self, now: i64, out: &mut impl FnMut(Alert)) {
        let value = if self.fresh { self.gauge.value() } else { None };
        let figures = Figures {
            value: self.gauge.value(),
            ..Figures::default()
        };
        self.shown = (figures, self.fresh);
        self.fresh = false;
        self.level.judge(now, &self.entity, value, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::AlertState;
    use crate::detect::AlertKind;

    const S: i64 = 1000;

    fn group() -> (KafkaTopic, KafkaGroup) {
        let entity = Entity::new(
            vec![
                ("topic".into(), "pay".into()),
                ("consumergroup".into(), "auth".into()),
            ],
            "pay/auth".into(),
        );
        let cfg = DetectorConfig::default();
        let learned = LearnedTrack::new(None, None, &Default::default());
        (
            KafkaTopic::default(),
            KafkaGroup::new(entity, "auth", &cfg, learned),
        )
    }

    /// One 10 s interval: partition 0 keeps committing, partition 1 commits only while `p1_moves`.
    fn interval(topic: &mut KafkaTopic, g: &mut KafkaGroup, n: i64, p1_moves: bool) {
        let ts = n * 10 * S;
        g.members.update(ts, 2.0);
        for (label, moves) in [("0", true), ("1", p1_moves)] {
            let i = g.partition_index(topic, label) as usize;
            let end = 1000.0 * n as f64 + 100.0;
            let tp = g.partitions[i].topic_partition as usize;
            topic.partitions[tp].update(ts, end);
            let committed = if moves { end - 50.0 } else { 1000.0 * 6.0 };
            g.partitions[i].committed.update(ts, committed);
            g.partitions[i].lag.update(ts, end - committed);
        }
        g.fresh = true;
    }

    #[test]
    fn a_group_with_one_frozen_partition_raises_one_stall_naming_it_then_resolves() {
        let (mut topic, mut g) = group();
        let mut alerts = Vec::new();
        for n in 0..40 {
            interval(&mut topic, &mut g, n, !(6..20).contains(&n));
            g.close(n * 10 * S, 10.0, &topic, &mut |a| alerts.push(a));
        }
        let stalls: Vec<_> = alerts
            .iter()
            .filter(|a| a.kind == AlertKind::ConsumerStall)
            .collect();
        assert!(!stalls.is_empty(), "no stall: {alerts:?}");
        assert!(stalls.iter().all(|a| a.id == stalls[0].id), "one episode");
        assert_eq!(stalls[0].state, AlertState::Firing);
        assert_eq!(stalls[0].labels["partitions"], "1");
        // No source measured time lag: the topic's log-end offsets over time tell it. The log
        // end passed the frozen offset (6000) at about 59 s, and the stall fired some 30 s on.
        let aged = stalls[0].context["time_lag_seconds"];
        let frozen_for = (stalls[0].ts - 59 * S) as f64 / 1000.0;
        assert!(
            (aged - frozen_for).abs() < 5.0,
            "time lag {aged} s, frozen {frozen_for} s"
        );
        assert_eq!(stalls.last().unwrap().state, AlertState::Resolved);
        assert!(
            alerts.iter().all(|a| a.kind == AlertKind::ConsumerStall),
            "the frozen partition's lag must not count as backlog growth: {alerts:?}"
        );
    }

    #[test]
    fn a_healthy_group_raises_nothing() {
        let (mut topic, mut g) = group();
        let mut alerts = Vec::new();
        for n in 0..60 {
            interval(&mut topic, &mut g, n, true);
            g.close(n * 10 * S, 10.0, &topic, &mut |a| alerts.push(a));
        }
        assert!(alerts.is_empty(), "{alerts:?}");
    }

    fn queue() -> RabbitQueue {
        let entity = Entity::new(
            vec![
                ("queue".into(), "ledger".into()),
                ("vhost".into(), "/".into()),
            ],
            "//ledger".into(),
        );
        let learned = LearnedTrack::new(None, None, &Default::default());
        RabbitQueue::new(entity, &DetectorConfig::default(), learned)
    }

    /// One 10 s scrape: 100 messages published; consumed by two consumers unless `consumers_gone`.
    fn scrape(q: &mut RabbitQueue, n: i64, ready: &mut f64, acked: &mut f64, consumers_gone: bool) {
        let ts = n * 10 * S;
        *ready += 100.0;
        if !consumers_gone {
            let done = ready.min(110.0);
            *ready -= done;
            *acked += done;
        }
        let consumers = if consumers_gone { 0.0 } else { 2.0 };
        q.update(QueueField::Ready, ts, *ready);
        q.update(
            QueueField::Unacked,
            ts,
            if consumers_gone { 0.0 } else { 5.0 },
        );
        q.update(QueueField::Consumers, ts, consumers);
        q.update(QueueField::Published, ts, 100.0 * (n + 1) as f64);
        q.update(QueueField::Acked, ts, *acked);
    }

    fn run_queue(gone: impl Fn(i64) -> bool, intervals: i64) -> Vec<Alert> {
        let mut q = queue();
        let (mut ready, mut acked, mut alerts) = (0.0, 0.0, Vec::new());
        for n in 0..intervals {
            scrape(&mut q, n, &mut ready, &mut acked, gone(n));
            q.close((n + 1) * 10 * S, 10.0, &mut |a| alerts.push(a));
        }
        alerts
    }

    #[test]
    fn a_queue_whose_consumers_leave_raises_a_stall_first_then_resolves() {
        let alerts = run_queue(|n| (30..45).contains(&n), 70);
        let first = alerts.first().expect("an alert");
        assert_eq!(first.kind, AlertKind::ConsumerStall, "{alerts:?}");
        assert_eq!(first.state, AlertState::Firing);
        assert!(first.ts >= 30 * 10 * S, "not before the consumers left");
        let stall_end = alerts
            .iter()
            .find(|a| a.id == first.id && a.state == AlertState::Resolved);
        assert!(stall_end.is_some(), "the stall resolves: {alerts:?}");
    }

    #[test]
    fn a_steadily_consumed_queue_raises_nothing() {
        let alerts = run_queue(|_| false, 90);
        assert!(alerts.is_empty(), "{alerts:?}");
    }

    fn latency_run(factor: impl Fn(i64) -> f64, per_interval: usize, intervals: i64) -> Vec<Alert> {
        latency_run_explained(factor, |_| false, per_interval, intervals)
    }

    fn latency_run_explained(
        factor: impl Fn(i64) -> f64,
        explained: impl Fn(i64) -> bool,
        per_interval: usize,
        intervals: i64,
    ) -> Vec<Alert> {
        let entity = Entity::new(vec![("queue".into(), "ledger".into())], "ledger".into());
        let learned = LearnedTrack::new(None, None, &Default::default());
        let mut l = LatencySeries::new(entity, &DetectorConfig::default(), learned);
        let mut alerts = Vec::new();
        for slot in 0..intervals {
            for i in 0..per_interval {
                // A spread of 20–40 ms, the same every interval, times the incident's factor.
                let base = 20.0 + 20.0 * (i as f64 / per_interval as f64);
                l.window.record(slot, base * factor(slot));
            }
            l.close((slot + 1) * 10 * S, slot, explained(slot), &mut |a| {
                alerts.push(a)
            });
        }
        alerts
    }

    #[test]
    fn a_tenfold_latency_rise_fires_a_latency_alert_and_steady_latency_does_not() {
        let alerts = latency_run(|s| if (60..75).contains(&s) { 10.0 } else { 1.0 }, 30, 100);
        let first = alerts.first().expect("an alert");
        assert_eq!(first.kind, AlertKind::Latency);
        assert!(
            (60 * 10 * S..=63 * 10 * S).contains(&first.ts),
            "late: {first:?}"
        );
        assert!(alerts.iter().any(|a| a.state == AlertState::Resolved));
        assert!(latency_run(|_| 1.0, 30, 100).is_empty());
    }

    #[test]
    fn a_rise_its_consumer_explains_opens_no_latency_episode_but_one_already_open_carries_on() {
        let rise = |s: i64| if (60..75).contains(&s) { 10.0 } else { 1.0 };
        let explained = latency_run_explained(rise, |s| (55..80).contains(&s), 30, 100);
        assert!(explained.is_empty(), "{explained:?}");
        let late_cause = latency_run_explained(rise, |s| s >= 66, 30, 100);
        assert_eq!(late_cause.first().map(|a| a.kind), Some(AlertKind::Latency));
        assert!(late_cause.iter().any(|a| a.state == AlertState::Resolved));
    }

    #[test]
    fn latency_its_stalled_group_explains_rides_on_the_stall_alert_as_a_symptom() {
        let (mut topic, mut g) = group();
        let latency = Entity::new(vec![("topic".into(), "pay".into())], "pay/auth".into());
        let rise = Finding {
            kind: AlertKind::Latency,
            severity: crate::detect::Severity::Critical,
            detector: "latency_spike",
            metric: "p99",
            observed: 2400.0,
            expected: 40.0,
            score: 30.0,
            summary: "p99 latency 2400 ms vs 40 ms expected (60.0x)".into(),
            detail: Vec::new(),
            context: Vec::new(),
        };
        let mut alerts = Vec::new();
        let mut stall_id = None;
        for n in 0..40 {
            interval(&mut topic, &mut g, n, !(6..20).contains(&n));
            g.close(n * 10 * S, 10.0, &topic, &mut |a| alerts.push(a));
            if n == 0 {
                // Nothing is open yet: a symptom has nothing to ride on.
                g.attach_symptom(0, Symptom::of(&latency, &rise), &mut |a| alerts.push(a));
                assert!(alerts.is_empty(), "{alerts:?}");
            }
            if stall_id.is_none() && g.stall.is_firing() {
                stall_id = alerts.last().map(|a| a.id.clone());
                for _ in 0..3 {
                    let symptom = Symptom::of(&latency, &rise);
                    g.attach_symptom(n * 10 * S, symptom, &mut |a| alerts.push(a));
                }
            }
        }
        let stall_id = stall_id.expect("the stall fired");
        let with_symptom: Vec<_> = alerts
            .iter()
            .filter(|a| a.context.contains_key("symptom_latency_ms"))
            .collect();
        assert!(with_symptom.iter().all(|a| a.id == stall_id), "{alerts:?}");
        let update = with_symptom[0];
        assert_eq!(update.state, AlertState::Firing);
        assert!(
            update.summary.contains("symptom: p99 latency 2400 ms")
                && update.summary.contains("on pay/auth"),
            "{}",
            update.summary
        );
        assert_eq!(update.context["symptom_latency_expected_ms"], 40.0);
        let firing_updates = with_symptom
            .iter()
            .filter(|a| a.state == AlertState::Firing)
            .count();
        assert_eq!(
            firing_updates, 1,
            "one update names the symptom, not one per interval"
        );
        assert_eq!(with_symptom.last().unwrap().state, AlertState::Resolved);
        assert!(alerts.iter().all(|a| a.kind == AlertKind::ConsumerStall));
    }

    #[test]
    fn an_explained_latency_rise_is_handed_back_as_the_symptom_it_is() {
        let entity = Entity::new(vec![("queue".into(), "ledger".into())], "ledger".into());
        let learned = LearnedTrack::new(None, None, &Default::default());
        let mut l = LatencySeries::new(entity, &DetectorConfig::default(), learned);
        let mut held_back = Vec::new();
        for slot in 0..80 {
            let factor = if slot >= 60 { 10.0 } else { 1.0 };
            for i in 0..30 {
                l.window.record(slot, (20.0 + i as f64) * factor);
            }
            let mut alerts = Vec::new();
            held_back.extend(l.close((slot + 1) * 10 * S, slot, true, &mut |a| alerts.push(a)));
            assert!(alerts.is_empty(), "{alerts:?}");
        }
        let f = held_back.first().expect("the rise is handed back");
        assert_eq!(f.kind, AlertKind::Latency);
        assert!(f.observed > 5.0 * f.expected, "{f:?}");
    }

    #[test]
    fn a_group_that_just_rebalanced_explains_its_latency_and_one_long_settled_does_not() {
        let (_, mut g) = group();
        g.members.update(0, 3.0);
        g.members.update(100 * S, 2.0);
        assert!(g.explains_latency(150 * S));
        assert!(!g.explains_latency(100 * S + REBALANCE_EXPLAINS_MS + 10 * S));
    }
}
