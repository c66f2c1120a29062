//! A worker: owns some shards, applies samples to them, and judges them each time the event-time
//! watermark closes an interval.
//!
//! Intervals ("slots") are aligned to multiples of the interval for every series, so one watermark
//! closes the same slot everywhere. A sample for a slot already closed is late: counted, dropped.
//!
//! With durable state, a worker checkpoints every shard each `state.checkpoint_interval`, and a
//! shard whose interval raised alerts right after that interval, before the alerts leave: a
//! restored engine knows every episode whose alert was accepted. Shards come in restored from a
//! checkpoint (`Restore`) and leave for another engine (`Release`), saved on the way out.

use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use rustc_hash::FxHashMap;

use super::shard::{SavedShard, Setup, Shard, ShardKey, Target};
use super::{Batch, Learned, Msg, Outbound, Outlet, SeriesInfo};
use crate::alert::Alert;
use crate::config::Config;
use crate::state::{self, Record};
use crate::status::{Board, ShardView};
use crate::telemetry::WorkerStats;

/// A gap longer than this many intervals is skipped rather than closed interval by interval.
const MAX_CATCH_UP: i64 = 8640;

/// A series as this worker knows it: who it is, and where its samples go once resolved. A
/// series whose shard left the worker is resolved again when its next sample comes.
struct Route {
    info: Arc<SeriesInfo>,
    at: Option<(u32, Target)>,
}

pub struct Worker {
    setup: Setup,
    interval: i64,
    lateness: i64,
    routes: FxHashMap<u64, Route>,
    /// Shards by slot; a slot whose shard left is `None` until a new shard takes it.
    shards: Vec<Option<Shard>>,
    shard_ids: FxHashMap<ShardKey, u32>,
    free: Vec<u32>,
    open_slot: Option<i64>,
    max_ts: i64,
    out: Outlet,
    /// Alerts of the shard being closed, and whether any shard's alerts are waiting in it.
    closing: Vec<Alert>,
    /// Whether shards are saved (write-ahead of alerts, at the end, on release), and every how
    /// many intervals every shard is, when the worker checkpoints on its own.
    durable: bool,
    checkpoint_every: Option<u64>,
    stats: WorkerStats,
    /// Where this worker shows what it sees (its part of the board), in a run that serves it.
    board: Option<(Arc<Board>, usize)>,
}

impl Worker {
    pub(crate) fn new(
        config: Arc<Config>,
        out: Outlet,
        periodic: bool,
        learned: Learned,
        board: Option<(Arc<Board>, usize)>,
    ) -> Self {
        let durable = matches!(out, Outlet::Outbox(_));
        let every = config.state.checkpoint_interval.as_millis() as i64;
        let interval = config.engine.interval_ms();
        Worker {
            interval,
            lateness: config.engine.lateness_ms(),
            durable,
            checkpoint_every: (durable && periodic)
                .then(|| (every / interval.max(1)).max(1) as u64),
            setup: Setup {
                config,
                models: learned.models,
                features: learned.features,
            },
            routes: FxHashMap::default(),
            shards: Vec::new(),
            shard_ids: FxHashMap::default(),
            free: Vec::new(),
            open_slot: None,
            max_ts: i64::MIN,
            out,
            closing: Vec::new(),
            stats: WorkerStats::default(),
            board,
        }
    }

    pub(crate) fn run(mut self, input: Receiver<Batch>, recycle: Sender<Vec<Msg>>) -> WorkerStats {
        for mut batch in input {
            for msg in batch.msgs.drain(..) {
                match msg {
                    Msg::Register(id, info) => self.register(id, info),
                    Msg::Sample { series, ts, value } => self.sample(series, ts, value),
                    Msg::Sync(done) => {
                        let _ = done.send(());
                    }
                    Msg::Restore(saved, announce) => self.restore(*saved, announce),
                    Msg::Release { which, done } => self.release(&*which, done),
                    Msg::Checkpoint(done) => self.checkpoint_all(Some(done)),
                }
            }
            self.advance(batch.watermark);
            let _ = recycle.try_send(batch.msgs);
        }
        self.finish()
    }

    /// At the end of the run: with durable state, every shard is saved as it stands and the open
    /// interval is left for the next run to judge; without, the open interval is judged now.
    fn finish(mut self) -> WorkerStats {
        if self.durable {
            self.checkpoint_all(None);
        } else if let Some(open) = self.open_slot {
            let last = self.max_ts.div_euclid(self.interval);
            for slot in open..=last {
                self.close(slot);
            }
        }
        self.count_state();
        self.stats.histogram_bytes = self.live().map(Shard::histogram_bytes).sum();
        self.stats
    }

    fn live(&self) -> impl Iterator<Item = &Shard> {
        self.shards.iter().flatten()
    }

    /// Counts the series and entities the worker holds.
    fn count_state(&mut self) {
        self.stats.series = self.routes.len() as u64;
        self.stats.entities = self.live().map(|s| s.entities() as u64).sum();
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
        let mut view = board.worker(*i);
        view.stats = self.stats.clone();
        view.shards
            .resize_with(self.shards.len(), ShardView::default);
        for (shard, shown) in self.shards.iter().zip(view.shards.iter_mut()) {
            match shard {
                Some(s) => s.report(now, shown),
                None => *shown = ShardView::default(),
            }
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
        let at = match self.routes.get(&series) {
            None => return,
            Some(Route { at: Some(at), .. }) => *at,
            Some(Route { info, at: None }) => {
                let info = info.clone();
                self.resolve(series, &info)
            }
        };
        self.stats.samples += 1;
        self.max_ts = self.max_ts.max(ts);
        if let Some(shard) = &mut self.shards[at.0 as usize] {
            shard.apply(at.1, ts, slot, value);
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
    }

    fn close(&mut self, slot: i64) {
        // From here on the slot is closed: what is saved during it resumes after it.
        self.open_slot = Some(slot + 1);
        let now = (slot + 1) * self.interval;
        let secs = self.interval as f64 / 1000.0;
        self.stats.intervals_closed += 1;
        let full = self
            .checkpoint_every
            .is_some_and(|every| self.stats.intervals_closed.is_multiple_of(every));
        for i in 0..self.shards.len() {
            let Some(shard) = &mut self.shards[i] else {
                continue;
            };
            let closing = &mut self.closing;
            shard.close(now, slot, secs, &mut |a| closing.push(a));
            if self.closing.is_empty() {
                continue;
            }
            // Write-ahead: the shard that raised an alert is saved before the alert leaves.
            if self.durable {
                let record = self.record(i);
                self.out.state(record.into_iter().collect(), None);
            }
            for a in self.closing.drain(..) {
                self.out.alert(a);
            }
        }
        if full {
            self.checkpoint_all(None);
        }
        self.publish(now);
    }

    /// A shard as a checkpoint record, if the slot holds one.
    fn record(&self, i: usize) -> Option<Record> {
        let shard = self.shards[i].as_ref()?;
        Some(Record {
            key: shard.key.clone(),
            value: state::encode(self.open_slot, shard),
        })
    }

    /// Saves every shard; `done` is answered once the records are durable.
    fn checkpoint_all(&mut self, done: Option<Sender<()>>) {
        let records = (0..self.shards.len())
            .filter_map(|i| self.record(i))
            .collect();
        match &self.out {
            Outlet::Outbox(_) => self.out.state(records, done),
            Outlet::Alerts(_) => {
                if let Some(done) = done {
                    let _ = done.send(());
                }
            }
        }
    }

    /// Takes in a shard restored from a checkpoint, replacing any of the same key. Its clock
    /// resumes where it stood, unless this worker's has moved on already (then the samples the
    /// shard missed meanwhile are late here). Taken over from another engine (`announce`), it
    /// delivers its open episodes and recent resolutions again.
    fn restore(&mut self, saved: SavedShard, announce: bool) {
        let SavedShard {
            open_slot,
            mut shard,
        } = saved;
        shard.configure(&self.setup);
        if announce {
            let now = open_slot.unwrap_or(0) * self.interval;
            let since = now - super::ANNOUNCED_RESOLUTIONS_MS;
            let out = &self.out;
            shard.announce(now, since, &mut |a| out.alert(a));
        }
        // Before any sample, the newest of the restored clocks: no interval is judged twice.
        if self.stats.samples == 0 {
            self.open_slot = self.open_slot.max(open_slot);
        }
        let key = shard.key.clone();
        match self.shard_ids.get(&key) {
            Some(&i) => {
                self.unroute(i);
                self.shards[i as usize] = Some(shard);
            }
            None => {
                let i = self.new_slot(shard);
                self.shard_ids.insert(key, i);
            }
        }
    }

    /// Saves and lets go of the shards `which` picks (they now belong to another engine), then
    /// answers `done` once the records are durable.
    fn release(&mut self, which: &(dyn Fn(&ShardKey) -> bool + Send + Sync), done: Sender<()>) {
        let picked: Vec<u32> = self
            .shard_ids
            .iter()
            .filter(|(key, _)| which(key))
            .map(|(_, &i)| i)
            .collect();
        let records = picked
            .iter()
            .filter_map(|&i| self.record(i as usize))
            .collect();
        match &self.out {
            Outlet::Outbox(_) => self.out.state(records, Some(done)),
            Outlet::Alerts(_) => {
                let _ = done.send(());
            }
        }
        for i in picked {
            if let Some(shard) = self.shards[i as usize].take() {
                self.shard_ids.remove(&shard.key);
            }
            self.unroute(i);
            self.free.push(i);
        }
    }

    /// Forgets where the series of shard slot `i` went: their next samples resolve them again.
    fn unroute(&mut self, i: u32) {
        for r in self.routes.values_mut() {
            if r.at.is_some_and(|(s, _)| s == i) {
                r.at = None;
            }
        }
    }

    fn new_slot(&mut self, shard: Shard) -> u32 {
        match self.free.pop() {
            Some(i) => {
                self.shards[i as usize] = Some(shard);
                i
            }
            None => {
                self.shards.push(Some(shard));
                (self.shards.len() - 1) as u32
            }
        }
    }

    fn register(&mut self, id: u64, info: Arc<SeriesInfo>) {
        if self.routes.contains_key(&id) {
            return;
        }
        self.routes.insert(
            id,
            Route {
                info: info.clone(),
                at: None,
            },
        );
        self.resolve(id, &info);
    }

    /// Finds (or makes) the shard and entity a series' samples go to.
    fn resolve(&mut self, id: u64, info: &SeriesInfo) -> (u32, Target) {
        let i = match self.shard_ids.get(&info.shard) {
            Some(&i) => i,
            None => {
                let i = self.new_slot(Shard::new(info.shard.clone()));
                self.shard_ids.insert(info.shard.clone(), i);
                i
            }
        };
        let shard = self.shards[i as usize]
            .as_mut()
            .expect("a shard id names a live slot");
        let at = (i, shard.target(info, &self.setup));
        if let Some(r) = self.routes.get_mut(&id) {
            r.at = Some(at);
        }
        at
    }
}

impl Outlet {
    fn alert(&self, a: Alert) {
        // A closed channel means the run is over; the alert has nowhere left to go.
        match self {
            Outlet::Alerts(tx) => {
                let _ = tx.send(a);
            }
            Outlet::Outbox(tx) => {
                let _ = tx.send(Outbound::Alert(a));
            }
        }
    }

    fn state(&self, records: Vec<Record>, done: Option<Sender<()>>) {
        if let Outlet::Outbox(tx) = self {
            let _ = tx.send(Outbound::State { records, done });
        }
    }
}
