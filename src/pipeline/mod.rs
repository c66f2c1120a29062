//! The lock-free pipeline: sources → [`Ingest`] → bounded queues → workers → alerts.
//!
//! [`Ingest`] is a source's handle: it identifies each event's series by hash, routes it to the
//! worker that owns the series' *shard* (the Kafka topic, the RabbitMQ queue, or the series
//! itself) and hands events over in batches through bounded crossbeam channels. A worker owns its
//! shard's state outright, so no lock is taken per event, and everything a detector needs to see
//! together (a group's partitions and the topic's end offsets) lives in one worker. The first
//! event of a series carries its labels; later ones travel as 24 bytes, and batch buffers return
//! to the source for reuse, so the steady state allocates nothing.
//!
//! Backpressure: a full queue makes the source wait (`block`, the default: nothing is lost) or
//! drops the batch and counts it (`drop`). Event time drives everything: each batch carries the
//! source's watermark (newest event time less the allowed lateness), and workers close an interval
//! when the watermark passes its end, so replay and live runs judge alike.
//!
//! Durable state: given a [`Store`], workers send their checkpoints and alerts through one
//! *outbox* thread, which makes each checkpoint durable before it lets the alerts after it go on;
//! shards come back through [`Ingest::restore`] before their first sample.

mod entity;
mod shard;
mod worker;

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use rustc_hash::FxHashMap;

use crate::alert::Alert;
use crate::config::{Backpressure, Config};
use crate::event::{ErrorReason, Family, RawEvent, SeriesKey};
use crate::learn::{FeatureRow, ModelSet};
use crate::state::{Record, Store};
use crate::status::{Board, InputCells};
use crate::telemetry::{InputStats, WorkerStats};

pub use shard::{SavedShard, Shard, ShardKey};
pub use worker::Worker;

/// A series as its owning worker first learns of it.
#[derive(Debug)]
pub struct SeriesInfo {
    pub key: SeriesKey,
    pub family: Family,
    /// The shard it is judged in.
    pub shard: ShardKey,
}

/// Picks shards by key: those of the partitions an engine gives up, say.
pub type ShardFilter = Arc<dyn Fn(&ShardKey) -> bool + Send + Sync>;

/// How far back an engine taking a shard over delivers its resolutions again: the engine before
/// it may have sent them into a sink that was down, and died with them.
pub const ANNOUNCED_RESOLUTIONS_MS: i64 = 3_600_000;

/// Where a pipeline keeps its state: the store, and whether its workers checkpoint every shard
/// each `state.checkpoint_interval` of event time themselves (a run alone), or a source asks for
/// checkpoints when it commits what it consumed (an engine of a group, `crate::scale_out`).
pub struct Durable {
    pub store: Box<dyn Store>,
    pub periodic: bool,
}

pub(crate) enum Msg {
    Register(u64, Arc<SeriesInfo>),
    Sample {
        series: u64,
        ts: i64,
        value: f64,
    },
    /// Answered once everything sent before it has been applied.
    Sync(Sender<()>),
    /// A shard from a checkpoint, to be judged from here on; taken over from another engine
    /// (`true`), its open episodes and recent resolutions are delivered again.
    Restore(Box<SavedShard>, bool),
    /// Save the shards the filter picks and let go of them; answered once they are durable.
    Release {
        which: ShardFilter,
        done: Sender<()>,
    },
    /// Save every shard; answered once they are durable.
    Checkpoint(Sender<()>),
}

/// Where a worker's output goes: alerts straight to delivery, or (with durable state) alerts and
/// checkpoints through the outbox, in order.
pub(crate) enum Outlet {
    Alerts(Sender<Alert>),
    Outbox(Sender<Outbound>),
}

pub(crate) enum Outbound {
    Alert(Alert),
    /// Shards saved; `done` is answered once they are durable.
    State {
        records: Vec<Record>,
        done: Option<Sender<()>>,
    },
}

pub(crate) struct Batch {
    msgs: Vec<Msg>,
    watermark: i64,
}

/// What the workers learn with: the models that score intervals, and where interval features go.
#[derive(Debug, Clone, Default)]
pub struct Learned {
    pub models: Option<Arc<ModelSet>>,
    pub features: Option<Sender<FeatureRow>>,
}

/// A running pipeline: hand out [`Ingest`] handles, then [`Pipeline::finish`] to drain it.
pub struct Pipeline {
    config: Arc<Config>,
    senders: Vec<Sender<Batch>>,
    recycle: (Sender<Vec<Msg>>, Receiver<Vec<Msg>>),
    workers: Vec<JoinHandle<WorkerStats>>,
    board: Option<Arc<Board>>,
    outbox: Option<JoinHandle<()>>,
}

impl Pipeline {
    /// Starts the workers with the statistical detectors alone; alerts come out of the returned
    /// receiver until the pipeline finishes.
    pub fn start(config: Arc<Config>) -> (Pipeline, Receiver<Alert>) {
        Pipeline::start_with(config, Learned::default())
    }

    /// As [`start`](Pipeline::start), with learned baselines: the models score every entity of
    /// their class, and every entity's interval features also go to `features` (for training and
    /// reports).
    pub fn start_with(config: Arc<Config>, learned: Learned) -> (Pipeline, Receiver<Alert>) {
        Pipeline::start_shown(config, learned, None)
    }

    /// As [`start_with`](Pipeline::start_with), showing on `board` (when given) what every
    /// worker sees and every source counts.
    pub fn start_shown(
        config: Arc<Config>,
        learned: Learned,
        board: Option<Arc<Board>>,
    ) -> (Pipeline, Receiver<Alert>) {
        Pipeline::start_durable(config, learned, board, None)
    }

    /// As [`start_shown`](Pipeline::start_shown), checkpointing when `durable` says where: each
    /// checkpoint is durable before the alerts raised after it are handed on.
    pub fn start_durable(
        config: Arc<Config>,
        learned: Learned,
        board: Option<Arc<Board>>,
        durable: Option<Durable>,
    ) -> (Pipeline, Receiver<Alert>) {
        let n = config.engine.worker_count();
        let (alert_tx, alert_rx) = bounded(4096);
        let recycle = bounded(n * config.engine.queue_batches + 2 * n);
        let mut senders = Vec::with_capacity(n);
        let mut workers = Vec::with_capacity(n);
        let periodic = durable.as_ref().is_some_and(|d| d.periodic);
        let (outlet, outbox) = match durable {
            None => (None, None),
            Some(Durable { store, .. }) => {
                let (tx, rx) = bounded(4096);
                let alerts = alert_tx.clone();
                let thread = std::thread::Builder::new()
                    .name("mqwatch-outbox".into())
                    .spawn(move || crate::state::keep(store, rx, alerts))
                    .expect("spawn outbox thread");
                (Some(tx), Some(thread))
            }
        };
        for i in 0..n {
            let (tx, rx) = bounded::<Batch>(config.engine.queue_batches);
            senders.push(tx);
            let shown = board.as_ref().map(|b| (b.clone(), i));
            let out = match &outlet {
                Some(tx) => Outlet::Outbox(tx.clone()),
                None => Outlet::Alerts(alert_tx.clone()),
            };
            let w = Worker::new(config.clone(), out, periodic, learned.clone(), shown);
            let back = recycle.0.clone();
            workers.push(
                std::thread::Builder::new()
                    .name(format!("mqwatch-worker-{i}"))
                    .spawn(move || w.run(rx, back))
                    .expect("spawn worker thread"),
            );
        }
        (
            Pipeline {
                config,
                senders,
                recycle,
                workers,
                board,
                outbox,
            },
            alert_rx,
        )
    }

    pub fn ingest(&self) -> Ingest {
        let n = self.senders.len();
        Ingest {
            senders: self.senders.clone(),
            pending: (0..n).map(|_| Vec::new()).collect(),
            recycle: self.recycle.1.clone(),
            shard_of: FxHashMap::default(),
            batch_size: self.config.engine.batch_size,
            backpressure: self.config.engine.backpressure,
            lateness: self.config.engine.lateness_ms(),
            interval: self.config.engine.interval_ms(),
            max_ts: i64::MIN,
            broadcast_wm: i64::MIN,
            max_series: self.config.engine.max_series,
            over_limit: false,
            stats: InputStats::default(),
            shown: self.board.as_ref().map(|b| b.input_cells()),
        }
    }

    /// Waits for every worker to drain and close its last interval. Drop all [`Ingest`] handles
    /// first, or this waits forever.
    pub fn finish(self) -> WorkerStats {
        drop(self.senders);
        let mut total = WorkerStats::default();
        for w in self.workers {
            total.merge(&w.join().expect("worker thread panicked"));
        }
        if let Some(outbox) = self.outbox {
            outbox.join().expect("outbox thread panicked");
        }
        total
    }
}

/// Where a live source's events go: into this run's pipeline ([`Ingest`]), or, when several
/// engines share the work, onto the metrics topic for the engine that owns them
/// (`crate::scale_out::Forward`). Sources know only this.
pub trait Feed: Send {
    fn push(&mut self, ev: &RawEvent<'_>);
    /// Counts an input that was refused before it became an event.
    fn reject(&mut self, reason: ErrorReason);
    /// Moves event time forward without an event (a live source's clock).
    fn advance_to(&mut self, ts: i64);
    /// Returns once everything pushed so far is safe (applied to engine state, or stored on the
    /// metrics topic): what a consumer waits for before it acknowledges or commits.
    fn sync(&mut self);
    fn stats(&self) -> &InputStats;
}

impl Feed for Ingest {
    fn push(&mut self, ev: &RawEvent<'_>) {
        Ingest::push(self, ev)
    }
    fn reject(&mut self, reason: ErrorReason) {
        Ingest::reject(self, reason)
    }
    fn advance_to(&mut self, ts: i64) {
        Ingest::advance_to(self, ts)
    }
    fn sync(&mut self) {
        Ingest::sync(self)
    }
    fn stats(&self) -> &InputStats {
        &self.stats
    }
}

/// A source's handle into the pipeline. Not shared: each source owns one.
pub struct Ingest {
    senders: Vec<Sender<Batch>>,
    pending: Vec<Vec<Msg>>,
    recycle: Receiver<Vec<Msg>>,
    shard_of: FxHashMap<u64, u32>,
    batch_size: usize,
    backpressure: Backpressure,
    lateness: i64,
    interval: i64,
    max_ts: i64,
    broadcast_wm: i64,
    /// Distinct series this source may bring, and whether it was told it brought more.
    max_series: usize,
    over_limit: bool,
    pub stats: InputStats,
    /// Where the counts are shown while running, in a run that serves them.
    shown: Option<Arc<InputCells>>,
}

impl Ingest {
    pub fn push(&mut self, ev: &RawEvent<'_>) {
        let series = ev.series_hash();
        let n = self.senders.len() as u64;
        let worker = match self.shard_of.get(&series) {
            Some(&w) => w as usize,
            None if self.shard_of.len() >= self.max_series => {
                self.refuse_series(ev);
                return;
            }
            None => {
                let shard = ShardKey::of(ev);
                let w = (shard.worker_hash() % n) as usize;
                self.shard_of.insert(series, w as u32);
                let info = Arc::new(SeriesInfo {
                    key: ev.to_key(),
                    family: Family::of(&ev.name),
                    shard,
                });
                self.pending[w].push(Msg::Register(series, info));
                w
            }
        };
        self.stats.events += 1;
        self.stats.see_ts(ev.ts);
        self.pending[worker].push(Msg::Sample {
            series,
            ts: ev.ts,
            value: ev.value,
        });
        if ev.ts > self.max_ts {
            self.max_ts = ev.ts;
        }
        if self.pending[worker].len() >= self.batch_size {
            self.send(worker, self.backpressure);
        }
        // Idle workers must learn that time moved on, or their intervals never close.
        if self.max_ts - self.broadcast_wm >= self.interval {
            self.flush();
        }
    }

    /// Counts an input that was refused before it became an event.
    pub fn reject(&mut self, reason: ErrorReason) {
        self.stats.count_error(reason);
    }

    /// A new series past `engine.max_series`: counted, and the first one said.
    fn refuse_series(&mut self, ev: &RawEvent<'_>) {
        self.stats.count_error(ErrorReason::SeriesLimit);
        if !std::mem::replace(&mut self.over_limit, true) {
            tracing::warn!(
                limit = self.max_series,
                first_refused = %ev.to_key(),
                "a source brings more distinct series than engine.max_series: those beyond are \
                 refused and counted (series_limit); a label that takes a new value at every \
                 event (an id, a timestamp) does this"
            );
        }
    }

    /// Returns once every event pushed so far has been applied to engine state: what broker
    /// consumers wait for before they acknowledge or commit (at-least-once).
    pub fn sync(&mut self) {
        self.ask_every_worker(Msg::Sync);
    }

    /// Hands a shard restored from this engine's checkpoint to the worker that owns its key; its
    /// series' samples pushed after this go to it.
    pub fn restore(&mut self, saved: SavedShard) {
        self.restore_as(saved, false);
    }

    /// As [`restore`](Ingest::restore), for a shard taken over from another engine: its open
    /// episodes and the resolutions of the last [`ANNOUNCED_RESOLUTIONS_MS`] are delivered again.
    pub fn take_over(&mut self, saved: SavedShard) {
        self.restore_as(saved, true);
    }

    fn restore_as(&mut self, saved: SavedShard, announce: bool) {
        let w = (saved.shard.key.worker_hash() % self.senders.len() as u64) as usize;
        self.pending[w].push(Msg::Restore(Box::new(saved), announce));
        // Never dropped by backpressure: a restored shard is state that took hours to learn.
        self.send(w, Backpressure::Block);
    }

    /// Saves the shards `which` picks and lets go of them; returns once they are durable (with
    /// durable state; else once they are gone). Everything pushed before is applied first.
    pub fn release(&mut self, which: ShardFilter) {
        self.ask_every_worker(|done| Msg::Release {
            which: which.clone(),
            done,
        });
    }

    /// Returns once every shard, with everything pushed so far applied, is durable (at once
    /// without durable state): what a consumer of a replayable topic commits after.
    pub fn checkpoint(&mut self) {
        self.ask_every_worker(Msg::Checkpoint);
    }

    /// Sends every worker one message made with a reply channel, and waits for every answer (or
    /// for the worker to have exited: the channel then closes; either way nothing is pending).
    fn ask_every_worker(&mut self, msg: impl Fn(Sender<()>) -> Msg) {
        let (tx, rx) = bounded(self.senders.len());
        for w in 0..self.senders.len() {
            self.pending[w].push(msg(tx.clone()));
        }
        drop(tx);
        self.flush_with(Backpressure::Block);
        for _ in rx.iter() {}
    }

    /// Sends everything pending, with the current watermark, to every worker.
    pub fn flush(&mut self) {
        self.flush_with(self.backpressure);
    }

    fn flush_with(&mut self, policy: Backpressure) {
        self.broadcast_wm = self.max_ts;
        for w in 0..self.senders.len() {
            self.send(w, policy);
        }
    }

    /// Moves event time forward without an event: live sources call this as the clock ticks so
    /// that intervals close even when a shard receives nothing.
    pub fn advance_to(&mut self, ts: i64) {
        if ts > self.max_ts {
            self.max_ts = ts;
        }
        self.flush();
    }

    fn watermark(&self) -> i64 {
        self.max_ts.saturating_sub(self.lateness)
    }

    fn send(&mut self, worker: usize, policy: Backpressure) {
        let fresh = self
            .recycle
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(self.batch_size));
        let msgs = std::mem::replace(&mut self.pending[worker], fresh);
        let batch = Batch {
            msgs,
            watermark: self.watermark(),
        };
        match policy {
            Backpressure::Block => {
                // A closed channel means the pipeline is shutting down: nothing left to deliver to.
                let _ = self.senders[worker].send(batch);
            }
            Backpressure::Drop => match self.senders[worker].try_send(batch) {
                Ok(()) => {}
                Err(TrySendError::Full(b)) => {
                    self.stats.dropped_backpressure += b
                        .msgs
                        .iter()
                        .filter(|m| matches!(m, Msg::Sample { .. }))
                        .count() as u64;
                    // Registrations must not be lost with the batch, or the series is unknown forever.
                    self.shard_of.retain(|_, w| *w as usize != worker);
                }
                Err(TrySendError::Disconnected(_)) => {}
            },
        }
        if let Some(cells) = &self.shown {
            cells.store(&self.stats);
        }
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        self.flush();
    }
}
