//! What the engine sees now: every entity's status, key figures and last hour, the alert
//! episodes, and the running counts, for the operations surface ([`crate::serve`]) to read.
//!
//! Writers never wait on readers for long: each worker owns one [`WorkerView`] and writes it once per
//! closed interval (never per event), the delivery thread writes the [`AlertBook`], and each
//! source's `Ingest` stores its counts in atomics once per batch. A reader (an HTTP request)
//! locks one shard at a time and copies out what it needs. A run without an HTTP server has no
//! board, and none of this is done.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;

use crate::alert::{Alert, AlertState, Entity};
use crate::detect::{AlertKind, Finding};
use crate::event::ErrorReason;
use crate::telemetry::{InputStats, WorkerStats};

/// Points of history kept per entity: one hour at the default 10 s interval.
pub const HISTORY_POINTS: usize = 360;
/// Resolved episodes kept for the API after they end.
const RESOLVED_KEPT: usize = 200;
/// Updates kept per episode.
const UPDATES_KEPT: usize = 64;

/// Everything the operations surface reads, shared by the run's threads.
#[derive(Debug)]
pub struct Board {
    workers: Vec<Mutex<WorkerView>>,
    alerts: Mutex<AlertBook>,
    inputs: Mutex<Vec<Arc<InputCells>>>,
    /// How many intervals every worker must have judged before the engine is warmed up.
    pub warmup_intervals: u64,
    /// Which learned model classes are loaded.
    pub models: Vec<&'static str>,
    /// Alerts waiting in each spooled sink, by sink name, as of the delivery thread's last look.
    sinks: Mutex<BTreeMap<String, u64>>,
}

impl Board {
    pub fn new(workers: usize, warmup_intervals: u64, models: Vec<&'static str>) -> Arc<Board> {
        Arc::new(Board {
            workers: (0..workers).map(|_| Mutex::default()).collect(),
            alerts: Mutex::default(),
            inputs: Mutex::default(),
            warmup_intervals,
            models,
            sinks: Mutex::default(),
        })
    }

    /// Records how many alerts wait in a sink's spool.
    pub fn set_waiting(&self, sink: &str, n: u64) {
        let mut sinks = lock(&self.sinks);
        match sinks.get_mut(sink) {
            Some(v) => *v = n,
            None => {
                sinks.insert(sink.to_string(), n);
            }
        }
    }

    /// Alerts waiting per spooled sink.
    pub fn waiting(&self) -> BTreeMap<String, u64> {
        lock(&self.sinks).clone()
    }

    /// The view of worker `i`, for it to write.
    pub fn worker(&self, i: usize) -> MutexGuard<'_, WorkerView> {
        lock(&self.workers[i])
    }

    /// Every worker's view, one locked at a time.
    pub fn views(&self) -> impl Iterator<Item = MutexGuard<'_, WorkerView>> {
        self.workers.iter().map(lock)
    }

    pub fn alerts(&self) -> MutexGuard<'_, AlertBook> {
        lock(&self.alerts)
    }

    /// A new source's cells for its counts.
    pub fn input_cells(&self) -> Arc<InputCells> {
        let cells = Arc::new(InputCells::default());
        lock(&self.inputs).push(cells.clone());
        cells
    }

    /// Every source's counts so far, summed.
    pub fn input(&self) -> InputTotals {
        let mut t = InputTotals::default();
        for c in lock(&self.inputs).iter() {
            t.events += c.events.load(Ordering::Relaxed);
            t.dropped_backpressure += c.dropped.load(Ordering::Relaxed);
            for (sum, cell) in t.refused.iter_mut().zip(&c.refused) {
                *sum += cell.load(Ordering::Relaxed);
            }
        }
        t
    }

    /// Every worker's counts so far, summed.
    pub fn workers(&self) -> WorkerStats {
        let mut total = WorkerStats::default();
        for s in self.views() {
            total.merge(&s.stats);
        }
        total
    }

    /// Whether every worker has judged its first `warmup_intervals` intervals.
    pub fn warmed_up(&self) -> bool {
        self.views()
            .all(|s| s.stats.intervals_closed >= self.warmup_intervals)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicked writer leaves figures that are at worst one interval old: still worth showing.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One source's counts, stored (not added) by its `Ingest` once per batch.
#[derive(Debug, Default)]
pub struct InputCells {
    events: AtomicU64,
    dropped: AtomicU64,
    refused: [AtomicU64; ErrorReason::ALL.len()],
}

impl InputCells {
    pub fn store(&self, s: &InputStats) {
        self.events.store(s.events, Ordering::Relaxed);
        self.dropped
            .store(s.dropped_backpressure, Ordering::Relaxed);
        for r in ErrorReason::ALL {
            self.refused[r as usize].store(s.errors(r), Ordering::Relaxed);
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct InputTotals {
    pub events: u64,
    pub dropped_backpressure: u64,
    pub refused: [u64; ErrorReason::ALL.len()],
}

/// What one worker sees, written at the end of each interval it closes: its shards' entities,
/// in the worker's own order, and its counts.
#[derive(Debug, Default)]
pub struct WorkerView {
    /// By the worker's shard slot; a slot whose shard left the worker is empty.
    pub shards: Vec<ShardView>,
    pub stats: WorkerStats,
}

impl WorkerView {
    pub fn entities(&self) -> impl Iterator<Item = &EntityStatus> {
        self.shards.iter().flat_map(ShardView::entities)
    }
}

/// What one shard shows: its entities, kind by kind in the shard's own order.
#[derive(Debug, Default)]
pub struct ShardView {
    pub groups: Vec<EntityStatus>,
    pub queues: Vec<EntityStatus>,
    pub latencies: Vec<EntityStatus>,
    pub gauges: Vec<EntityStatus>,
}

impl ShardView {
    pub fn entities(&self) -> impl Iterator<Item = &EntityStatus> {
        self.groups
            .iter()
            .chain(&self.queues)
            .chain(&self.latencies)
            .chain(&self.gauges)
    }
}

/// The status of the `i`th entity of a kind, made when the entity is new to the shard.
pub fn slot<'a>(
    list: &'a mut Vec<EntityStatus>,
    i: usize,
    kind: EntityKind,
    entity: &Arc<Entity>,
) -> &'a mut EntityStatus {
    if list.len() <= i {
        list.push(EntityStatus::new(kind, entity.clone()));
    } else if !Arc::ptr_eq(&list[i].entity, entity) {
        // The slot's shard was replaced (restored, or handed to another engine and a new one
        // came): what it showed belongs to another entity.
        list[i] = EntityStatus::new(kind, entity.clone());
    }
    &mut list[i]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EntityKind {
    KafkaGroup,
    RabbitmqQueue,
    Latency,
    Gauge,
}

impl EntityKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntityKind::KafkaGroup => "kafka_group",
            EntityKind::RabbitmqQueue => "rabbitmq_queue",
            EntityKind::Latency => "latency",
            EntityKind::Gauge => "gauge",
        }
    }
}

/// An entity's status in Burrow's vocabulary, worst last: `Stop` when its consumers are gone,
/// `Stall` when they are stuck, `Warn` for a backlog growing or latency or a level off its
/// baseline, `Ok` otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Ok,
    Warn,
    Stall,
    Stop,
}

impl Status {
    pub const ALL: [Status; 4] = [Status::Ok, Status::Warn, Status::Stall, Status::Stop];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warn => "WARN",
            Status::Stall => "STALL",
            Status::Stop => "STOP",
        }
    }

    /// The status an open finding stands for.
    pub fn of(open: &Finding) -> Status {
        match (open.kind, open.detector) {
            (AlertKind::ConsumerStall, "group_stopped" | "no_consumers") => Status::Stop,
            (AlertKind::ConsumerStall, _) => Status::Stall,
            _ => Status::Warn,
        }
    }
}

/// The figures an entity is judged on, as of its last interval; each where it applies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Figures {
    /// Messages behind, over all partitions (group) or ready in the queue.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backlog: Option<f64>,
    /// Age of the oldest unconsumed message, seconds (group, where measured).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag_seconds: Option<f64>,
    /// Group members or queue consumers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumers: Option<f64>,
    /// Messages consumed (committed or acknowledged) per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consume_rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unacked: Option<f64>,
    /// Latency quantiles, milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p50_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<f64>,
    /// A gauge's value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
}

impl Figures {
    /// The one figure the dashboard plots: backlog, else p99, else the value.
    pub fn primary(&self) -> Option<f64> {
        self.backlog.or(self.p99_ms).or(self.value)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PartitionStatus {
    pub partition: Box<str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag_seconds: Option<f64>,
}

/// What the learned model makes of an entity.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ModelStatus {
    /// Whether the model judges this entity (it knows it and does not find most of it abnormal).
    pub trusted: bool,
    /// The last interval's anomaly score and the threshold above which it is abnormal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    pub threshold: f64,
}

/// One entity as the operations surface shows it.
#[derive(Debug, Clone)]
pub struct EntityStatus {
    /// Stable across runs: the entity's kind and a hash of its labels.
    pub id: String,
    pub kind: EntityKind,
    pub entity: Arc<Entity>,
    pub status: Status,
    /// End of the last interval judged, Unix ms.
    pub judged_at: i64,
    /// End of the last interval that brought data.
    pub seen_at: i64,
    pub figures: Figures,
    pub partitions: Vec<PartitionStatus>,
    pub model: Option<ModelStatus>,
    /// The last hour of (interval end, primary figure), oldest first.
    pub history: VecDeque<(i64, f64)>,
}

impl EntityStatus {
    pub fn new(kind: EntityKind, entity: Arc<Entity>) -> EntityStatus {
        EntityStatus {
            id: entity.id(kind.as_str()),
            kind,
            entity,
            status: Status::Ok,
            judged_at: 0,
            seen_at: 0,
            figures: Figures::default(),
            partitions: Vec::new(),
            model: None,
            history: VecDeque::with_capacity(HISTORY_POINTS),
        }
    }

    /// Records one judged interval: its figures (`fresh` when data arrived in it) and status.
    pub fn record(&mut self, now: i64, fresh: bool, figures: Figures, status: Status) {
        self.judged_at = now;
        if fresh {
            self.seen_at = now;
        }
        self.figures = figures;
        self.status = status;
        if let Some(y) = figures.primary() {
            if self.history.len() == HISTORY_POINTS {
                self.history.pop_front();
            }
            self.history.push_back((now, y));
        }
    }

    /// The summary the API lists.
    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "kind": self.kind,
            "name": self.entity.display,
            "labels": self.entity.label_map(),
            "status": self.status,
            "judged_at": self.judged_at,
            "seen_at": self.seen_at,
            "figures": self.figures,
            "model": self.model,
        })
    }

    /// The summary with partitions and the last hour.
    pub fn detail(&self) -> serde_json::Value {
        let mut v = self.summary();
        v["partitions"] = serde_json::json!(self.partitions);
        v["history"] = serde_json::json!(self.history);
        v
    }
}

/// One episode as the API shows it: its latest update and the updates before.
#[derive(Debug, Clone, Serialize)]
pub struct Episode {
    pub latest: Alert,
    pub updates: Vec<Update>,
    /// Updates withheld from the sinks by a silence, with the silence that held the firing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub silenced_by: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Update {
    pub ts: i64,
    pub state: AlertState,
    pub severity: crate::detect::Severity,
    pub summary: String,
}

/// Alert episodes: the open ones and the most recently resolved, and counts by kind.
#[derive(Debug, Default)]
pub struct AlertBook {
    pub open: BTreeMap<String, Episode>,
    pub resolved: VecDeque<Episode>,
    /// Episodes fired (counted at their first update) and resolved, by kind and severity.
    pub counts: BTreeMap<(AlertKind, crate::detect::Severity, AlertState), u64>,
}

impl AlertBook {
    /// Takes one alert update; `silenced_by` names the silence that withholds it, if any.
    pub fn record(&mut self, a: &Alert, silenced_by: Option<&str>) {
        let fired = a.state == AlertState::Firing && !self.open.contains_key(&a.id);
        if fired || a.state == AlertState::Resolved {
            *self
                .counts
                .entry((a.kind, a.severity, a.state))
                .or_default() += 1;
        }
        let update = Update {
            ts: a.ts,
            state: a.state,
            severity: a.severity,
            summary: a.summary.clone(),
        };
        let mut ep = match self.open.remove(&a.id) {
            Some(mut ep) => {
                ep.latest.clone_from(a);
                ep
            }
            None => Episode {
                latest: a.clone(),
                updates: Vec::new(),
                silenced_by: None,
            },
        };
        if ep.updates.len() == UPDATES_KEPT {
            ep.updates.remove(1);
        }
        ep.updates.push(update);
        if let Some(s) = silenced_by {
            ep.silenced_by = Some(s.to_string());
        }
        match a.state {
            AlertState::Firing => {
                self.open.insert(a.id.clone(), ep);
            }
            AlertState::Resolved => {
                if self.resolved.len() == RESOLVED_KEPT {
                    self.resolved.pop_back();
                }
                self.resolved.push_front(ep);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::Severity;

    fn alert(id: &str, state: AlertState, ts: i64) -> Alert {
        Alert {
            id: id.into(),
            state,
            severity: Severity::Warning,
            ts,
            summary: format!("update at {ts}"),
            ..Alert::example()
        }
    }

    #[test]
    fn an_episode_is_open_until_resolved_then_kept_with_its_history() {
        let mut book = AlertBook::default();
        book.record(&alert("a", AlertState::Firing, 1), None);
        book.record(&alert("a", AlertState::Firing, 2), None);
        assert_eq!(book.open["a"].updates.len(), 2);
        book.record(&alert("a", AlertState::Resolved, 3), Some("maintenance"));
        assert!(book.open.is_empty());
        let ep = &book.resolved[0];
        assert_eq!(
            ep.updates.iter().map(|u| u.ts).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!(ep.silenced_by.as_deref(), Some("maintenance"));
        let fired = (
            AlertKind::ConsumerStall,
            Severity::Warning,
            AlertState::Firing,
        );
        assert_eq!(book.counts[&fired], 1, "one episode fired, updated once");
    }

    #[test]
    fn history_keeps_the_last_hour_and_status_orders_worst_last() {
        let e = Entity::new(vec![("queue".into(), "q".into())], "queue q".into());
        let mut s = EntityStatus::new(EntityKind::RabbitmqQueue, e);
        for i in 0..(HISTORY_POINTS as i64 + 10) {
            let f = Figures {
                backlog: Some(i as f64),
                ..Figures::default()
            };
            s.record(i * 10_000, true, f, Status::Ok);
        }
        assert_eq!(s.history.len(), HISTORY_POINTS);
        assert_eq!(s.history.front().unwrap().1, 10.0);
        assert!(Status::Stop > Status::Stall && Status::Stall > Status::Warn);
        assert!(s.id.starts_with("rabbitmq_queue-"), "{}", s.id);
    }
}
