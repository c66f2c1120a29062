//! Running the engine: the replay of files that `replay`, `eval` and `demo` share, and the live
//! run over brokers that `run` and the live demos share.
//!
//! The calling thread reads and parses (replay) or watches the sources' threads (live); the
//! pipeline's workers judge; one thread delivers alerts to the sinks (and keeps them, when asked,
//! for scoring). Either run stops early when its stop flag is raised (Ctrl-C, SIGTERM, `--for`):
//! the sources stop, the pipeline drains, and the sinks get `engine.shutdown_timeout` to deliver
//! what waits; what they cannot is reported by id.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::alert::Alert;
use crate::component::Parts;
use crate::config::Config;
use crate::event::InputError;
use crate::learn::{EntityClass, ModelSet};
use crate::link::Link;
use crate::pipeline::{Durable, Feed, Learned, Pipeline};
use crate::scale_out::Group;
use crate::serve::{Served, Server};
use crate::silence::{Gate, SilenceError, Silences, Window};
use crate::sink::{Journal, Sink, SinkError};
use crate::source::file::FileError;
use crate::source::{FileSource, OnError};
use crate::state::{FileStore, Restored, StateError, Store};
use crate::status::Board;
use crate::telemetry::events::{AlertUndelivered, SourceStopped};
use crate::telemetry::{emit, InputStats, WorkerStats};

pub struct ReplayOptions {
    pub on_error: OnError,
    /// Show a progress bar on stderr (only drawn when stderr is a terminal).
    pub progress: bool,
    /// Keep the alerts in the report.
    pub collect: bool,
    /// Refused inputs reported one by one before only counting them.
    pub errors_shown: usize,
    /// Learned models to score with, and where every entity's interval features go (training,
    /// reports).
    pub learned: Learned,
    /// Raised to stop reading early (Ctrl-C); what was read is still judged and reported.
    pub stop: Option<Arc<AtomicBool>>,
    /// Resume from the checkpoint in this directory, and leave one there: a replay in parts
    /// judges as one replay of the whole (the interval open at the end waits for the next part).
    pub state: Option<PathBuf>,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            on_error: OnError::Continue,
            progress: false,
            collect: false,
            errors_shown: 20,
            learned: Learned::default(),
            stop: None,
            state: None,
        }
    }
}

#[derive(Debug)]
pub struct ReplayReport {
    pub input: InputStats,
    pub workers: WorkerStats,
    pub alert_updates: u64,
    pub alerts: Vec<Alert>,
    pub elapsed: Duration,
    /// Refused inputs, up to `errors_shown`.
    pub errors: Vec<InputError>,
    /// Alerts the sinks could not deliver by the shutdown deadline, per sink.
    pub undelivered: Vec<(String, Vec<Alert>)>,
    /// Stopped before the end of the input.
    pub interrupted: bool,
}

impl ReplayReport {
    pub fn events_per_sec(&self) -> f64 {
        self.input.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Input(#[from] FileError),
    #[error("alert sink failed: {0}")]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Build(#[from] crate::component::BuildError),
    #[error(transparent)]
    Serve(#[from] crate::serve::ServeError),
    #[error("silences: {0}")]
    Silences(#[from] SilenceError),
    #[error("state: {0}")]
    State(#[from] StateError),
    #[error("{0}")]
    Group(#[from] crate::link::BrokerError),
    /// Live mode: not one broker answered within the startup window.
    #[error("no broker reachable within {}: {}", humantime::format_duration(*.within), .tried.join("; "))]
    NoBrokerReachable {
        within: Duration,
        /// Each connection with its last error.
        tried: Vec<String>,
    },
}

pub fn replay(
    config: Arc<Config>,
    paths: &[PathBuf],
    sinks: Vec<Box<dyn Sink>>,
    opts: &ReplayOptions,
) -> Result<ReplayReport, RunError> {
    let started = Instant::now();
    let shutdown = config.engine.shutdown_timeout;
    let (store, restored) = open_state(opts.state.as_deref())?;
    let (pipeline, alerts) = Pipeline::start_durable(config, opts.learned.clone(), None, store);
    let delivery = deliver(alerts, sinks, opts.collect, shutdown, None, None);
    let bar = progress_bar(paths, opts.progress);
    let mut errors = Vec::new();
    let mut ingest = pipeline.ingest();
    resume(&mut ingest, restored, None, 0);
    let source = FileSource {
        paths: paths.to_vec(),
        on_error: opts.on_error,
        stop: opts.stop.clone(),
    };
    let read = source.run(
        &mut ingest,
        |e| {
            if errors.len() < opts.errors_shown {
                errors.push(e.clone());
            }
        },
        |n| {
            if let Some(b) = &bar {
                b.inc(n);
            }
        },
    );
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let input = ingest.stats.clone();
    drop(ingest);
    let workers = pipeline.finish();
    let delivered = delivery.join().expect("alert delivery thread panicked");
    read?;
    let delivered = delivered?;
    crate::telemetry::record_run(&input, &workers);
    Ok(ReplayReport {
        input,
        workers,
        alert_updates: delivered.updates,
        alerts: delivered.kept,
        elapsed: started.elapsed(),
        errors,
        undelivered: delivered.undelivered,
        interrupted: source.stopped(),
    })
}

/// What the delivery thread did.
struct Delivered {
    updates: u64,
    kept: Vec<Alert>,
    undelivered: Vec<(String, Vec<Alert>)>,
    /// Each broker sink's account of what it delivered.
    sinks: Vec<String>,
}

/// What the delivery thread of a served run shows (the episodes) and obeys (the silences).
struct Shown {
    board: Arc<Board>,
    silences: Arc<Mutex<Silences>>,
}

impl Shown {
    fn silencing(&self, a: &Alert) -> Option<String> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
        let silences = self.silences.lock().unwrap_or_else(|e| e.into_inner());
        silences.silencing(a, now as i64)
    }
}

/// Alerts taken from the workers at once, at most: journaled with one sync.
const DELIVERY_BATCH: usize = 256;

/// The alert journal of a live run with durable state, and what each sink had not confirmed
/// when the last run ended.
struct Journaled {
    journal: Journal,
    pending: Vec<Vec<Alert>>,
}

impl Journaled {
    /// Tells the journal what each sink has confirmed, and lets it write its cursors.
    fn settle(&mut self, sinks: &[Box<dyn Sink>]) {
        for (i, s) in sinks.iter().enumerate() {
            self.journal.confirmed(i, s.confirmed());
        }
        if let Err(e) = self.journal.tick() {
            emit(crate::telemetry::events::StateWriteFailed {
                store: "alert journal",
                error: &e,
            });
        }
    }
}

/// The thread that hands every alert to every sink, in order, and keeps them when asked; in a
/// served run it records each on the board and holds back what a silence covers. With a
/// journal, each alert is on disk before any sink is handed it, and what the last run's sinks
/// had not confirmed goes first. When the alerts end it closes the sinks with one deadline,
/// `shutdown` from then.
fn deliver(
    alerts: crossbeam_channel::Receiver<Alert>,
    mut sinks: Vec<Box<dyn Sink>>,
    collect: bool,
    shutdown: Duration,
    shown: Option<Shown>,
    mut journaled: Option<Journaled>,
) -> std::thread::JoinHandle<Result<Delivered, SinkError>> {
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut updates = 0;
        let mut gate = Gate::default();
        if let Some(j) = &mut journaled {
            for (i, (s, pending)) in sinks
                .iter_mut()
                .zip(std::mem::take(&mut j.pending))
                .enumerate()
            {
                for a in pending {
                    s.send(&a)?;
                    j.journal.handed(i);
                }
            }
        }
        let mut settled = Instant::now();
        let mut batch = Vec::with_capacity(DELIVERY_BATCH);
        loop {
            match alerts.recv_timeout(Duration::from_secs(1)) {
                Ok(a) => batch.push(a),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    for s in sinks.iter_mut() {
                        s.tick(Instant::now())?;
                        if let (Some(shown), Some(n)) = (&shown, s.waiting()) {
                            shown.board.set_waiting(s.name(), n);
                        }
                    }
                    if let Some(j) = &mut journaled {
                        j.settle(&sinks);
                        settled = Instant::now();
                    }
                    continue;
                }
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            };
            while batch.len() < DELIVERY_BATCH {
                match alerts.try_recv() {
                    Ok(a) => batch.push(a),
                    Err(_) => break,
                }
            }
            updates += batch.len() as u64;
            if let Some(shown) = &shown {
                batch.retain(|a| {
                    let silenced_by = shown.silencing(a);
                    shown.board.alerts().record(a, silenced_by.as_deref());
                    gate.passes(a, silenced_by.is_some())
                });
            }
            if let Some(j) = &mut journaled {
                if let Err(e) = j.journal.append(&batch) {
                    // Not on disk, but the sinks still get them: a journal that fails must not
                    // silence the engine.
                    emit(crate::telemetry::events::StateWriteFailed {
                        store: "alert journal",
                        error: &e,
                    });
                }
            }
            for a in batch.drain(..) {
                for (i, s) in sinks.iter_mut().enumerate() {
                    s.send(&a)?;
                    s.tick(Instant::now())?;
                    if let Some(j) = &mut journaled {
                        j.journal.handed(i);
                    }
                }
                if collect {
                    kept.push(a);
                }
            }
            if let Some(j) = journaled
                .as_mut()
                .filter(|_| settled.elapsed() >= Duration::from_secs(1))
            {
                j.settle(&sinks);
                settled = Instant::now();
            }
        }
        let deadline = Instant::now() + shutdown;
        let mut undelivered = Vec::new();
        for s in sinks.iter_mut() {
            let left = s.close(deadline)?;
            if !left.is_empty() {
                undelivered.push((s.name().to_string(), left));
            }
        }
        if let Some(j) = &mut journaled {
            j.settle(&sinks);
        }
        Ok(Delivered {
            updates,
            kept,
            undelivered,
            sinks: sinks.iter().filter_map(|s| s.summary()).collect(),
        })
    })
}

/// What a live run did, when it stops.
#[derive(Debug)]
pub struct LiveReport {
    pub input: InputStats,
    pub workers: WorkerStats,
    pub alert_updates: u64,
    pub elapsed: Duration,
    /// Alerts the sinks could not deliver by the shutdown deadline, per sink.
    pub undelivered: Vec<(String, Vec<Alert>)>,
    /// Every broker connection of the run, with its counts of failures and outages.
    pub links: Vec<Arc<Link>>,
    /// Each broker sink's account: confirmed, unroutable, failed attempts.
    pub sinks: Vec<String>,
}

/// Intervals every worker judges before a live run counts as warmed up (`/readyz`).
const WARMUP_INTERVALS: u64 = 6;

/// Builds the components the config names and runs their sources until `stop` is raised (or
/// every one of them has failed for good), then drains. If no broker answered within
/// `engine.startup_timeout`, the run stops and fails, naming every connection and its last error.
pub fn live(
    config: Arc<Config>,
    models: Option<Arc<ModelSet>>,
    stop: Arc<AtomicBool>,
) -> Result<LiveReport, RunError> {
    let started = Instant::now();
    let http = &config.http.listen;
    // What can fail without a broker fails before any broker connection is made.
    let bound = (!http.is_empty()).then(|| Server::bind(http)).transpose()?;
    let silences = Arc::new(Mutex::new(load_silences(&config)?));
    let Parts { sources, sinks } = crate::component::build_all(&config)?;
    let journaled = open_journal(&config, &sinks)?;
    let group = match &config.scale_out {
        Some(cfg) => Some(Group::join(&config, cfg)?),
        None => None,
    };
    let startup = config.engine.startup_timeout;
    let links: Vec<Arc<Link>> = sources
        .iter()
        .map(|s| s.link())
        .chain(group.as_ref().map(|g| g.member.link()))
        .chain(sinks.iter().filter_map(|s| s.link()))
        .collect();
    let board = bound.is_some().then(|| {
        let classes = EntityClass::ALL
            .into_iter()
            .filter(|c| models.as_ref().is_some_and(|m| m.get(*c).is_some()))
            .map(EntityClass::as_str)
            .collect();
        Board::new(config.engine.worker_count(), WARMUP_INTERVALS, classes)
    });
    if bound.is_some() && !crate::serve::is_loopback(http) && api_token(&config).is_none() {
        tracing::warn!(
            listen = %http,
            "the API is served beyond this machine without a token: anyone who reaches it reads \
             every entity and alert (writes stay refused); set [http] token or MQWATCH_API_TOKEN, \
             or listen on 127.0.0.1"
        );
    }
    let server = match (bound, &board) {
        (Some(bound), Some(b)) => {
            let served = Served {
                board: b.clone(),
                links: links.clone(),
                silences: silences.clone(),
                token: api_token(&config),
            };
            Some(bound.serve(served)?)
        }
        _ => None,
    };
    let learned = Learned {
        models,
        features: None,
    };
    // An engine of a group checkpoints into the changelog, and restores what it is given as it
    // is given it; an engine alone, into its state directory, restoring all of it now.
    let (store, restored, member, producer) = match group {
        Some(g) => {
            let store = Durable {
                store: Box::new(g.changelog),
                periodic: false,
            };
            (
                Some(store),
                Restored::default(),
                Some(g.member),
                Some(g.producer),
            )
        }
        None => {
            let dir = &config.state.dir;
            let (store, restored) = open_state((!dir.is_empty()).then(|| Path::new(dir)))?;
            (store, restored, None, None)
        }
    };
    let (pipeline, alerts) = Pipeline::start_durable(config.clone(), learned, board.clone(), store);
    let interval = config.engine.interval_ms();
    resume(&mut pipeline.ingest(), restored, board.as_deref(), interval);
    let shown = board.map(|board| Shown { board, silences });
    let delivery = deliver(
        alerts,
        sinks,
        false,
        config.engine.shutdown_timeout,
        shown,
        journaled,
    );
    let mut threads: Vec<_> = sources
        .into_iter()
        .map(|src| {
            // Alone, a source feeds this engine; in a group, the metrics topic.
            let mut feed: Box<dyn Feed> = match &producer {
                Some(p) => Box::new(p.feed(src.is_poller())),
                None => Box::new(pipeline.ingest()),
            };
            let stop = stop.clone();
            let name = src.name();
            std::thread::Builder::new()
                .name(format!("mqwatch-source-{name}"))
                .spawn(move || {
                    if let Err(e) = src.run(&mut *feed, stop) {
                        emit(SourceStopped {
                            source: &name,
                            error: &e,
                        });
                    }
                    feed.stats().clone()
                })
                .expect("spawn source thread")
        })
        .collect();
    if let Some(member) = member {
        let ingest = pipeline.ingest();
        let stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name("mqwatch-group-member".into())
            .spawn(move || match member.run(ingest, stop) {
                Ok(stats) => stats,
                Err(e) => {
                    emit(SourceStopped {
                        source: "engine group member",
                        error: &e,
                    });
                    InputStats::default()
                }
            })
            .expect("spawn group member thread");
        threads.push(thread);
    }
    let unreachable = watch_startup(&links, &threads, &stop, started + startup);
    let mut input = InputStats::default();
    for t in threads {
        input.merge(&t.join().expect("source thread panicked"));
    }
    let workers = pipeline.finish();
    let delivered = delivery.join().expect("alert delivery thread panicked")?;
    crate::telemetry::record_run(&input, &workers);
    if let Some(server) = server {
        server.stop();
    }
    if let Some(tried) = unreachable {
        for (sink, alerts) in &delivered.undelivered {
            for a in alerts {
                emit(AlertUndelivered { sink, id: &a.id });
            }
        }
        return Err(RunError::NoBrokerReachable {
            within: startup,
            tried,
        });
    }
    Ok(LiveReport {
        input,
        workers,
        alert_updates: delivered.updates,
        elapsed: started.elapsed(),
        undelivered: delivered.undelivered,
        links,
        sinks: delivered.sinks,
    })
}

/// The checkpoint store in `dir` (none without one) and the shards it holds, decoded.
fn open_state(dir: Option<&Path>) -> Result<(Option<Durable>, Restored), RunError> {
    let Some(dir) = dir else {
        return Ok((None, Restored::default()));
    };
    let mut store = FileStore::open(dir)?;
    let restored = Restored::decode(store.load()?);
    restored.tell(&store.describe());
    let durable = Durable {
        store: Box::new(store),
        periodic: true,
    };
    Ok((Some(durable), restored))
}

/// The alert journal in the state directory, if the run keeps state.
fn open_journal(config: &Config, sinks: &[Box<dyn Sink>]) -> Result<Option<Journaled>, RunError> {
    let dir = &config.state.dir;
    if dir.is_empty() {
        return Ok(None);
    }
    let names: Vec<&str> = sinks.iter().map(|s| s.name()).collect();
    let (journal, pending) = Journal::open(Path::new(dir), &names)?;
    Ok(Some(Journaled { journal, pending }))
}

/// Hands the restored shards to their workers before any sample arrives; their open and
/// recently resolved episodes are shown on the board, where there is one, as they stood.
fn resume(
    ingest: &mut crate::pipeline::Ingest,
    restored: Restored,
    board: Option<&Board>,
    interval_ms: i64,
) {
    if restored.shards.is_empty() {
        return;
    }
    for saved in restored.shards {
        if let Some(board) = board {
            let now = saved.open_slot.unwrap_or(0) * interval_ms;
            let since = now - crate::pipeline::ANNOUNCED_RESOLUTIONS_MS;
            saved
                .shard
                .announce(now, since, &mut |a| board.alerts().record(&a, None));
        }
        ingest.restore(saved);
    }
    ingest.sync();
}

/// The config's maintenance windows and the silences kept from earlier runs.
fn load_silences(config: &Config) -> Result<Silences, SilenceError> {
    let windows = config
        .silences
        .iter()
        .map(|w| Window::new(w.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    let file = &config.http.silences_file;
    Silences::load(windows, (!file.is_empty()).then(|| PathBuf::from(file)))
}

/// The bearer token the API's writes require: the config's, else `MQWATCH_API_TOKEN`.
fn api_token(config: &Config) -> Option<String> {
    Some(config.http.token.clone())
        .filter(|t| !t.is_empty())
        .or_else(|| std::env::var("MQWATCH_API_TOKEN").ok())
        .filter(|t| !t.is_empty())
}

/// Waits while the run goes on: until `stop` is raised or every source has ended. At
/// `startup_deadline` it checks that some broker answered; if none did, it raises `stop` and
/// returns every connection with its last error. Connections not reached while others were
/// are logged once as errors, and the run goes on watching what it can.
fn watch_startup<T>(
    links: &[Arc<Link>],
    threads: &[std::thread::JoinHandle<T>],
    stop: &AtomicBool,
    startup_deadline: Instant,
) -> Option<Vec<String>> {
    let mut checked = links.is_empty();
    while !stop.load(Ordering::Relaxed) && !threads.iter().all(|t| t.is_finished()) {
        if !checked && Instant::now() >= startup_deadline {
            checked = true;
            if !links.iter().any(|l| l.reached()) {
                stop.store(true, Ordering::Relaxed);
                return Some(
                    links
                        .iter()
                        .map(|l| match l.last_error() {
                            e if e.is_empty() => format!("{}: no answer", l.name()),
                            e => format!("{}: {e}", l.name()),
                        })
                        .collect(),
                );
            }
            for l in links.iter().filter(|l| !l.reached()) {
                tracing::error!(broker = %l.name(), error = %l.last_error(), "not reached at startup; still retrying");
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn progress_bar(paths: &[PathBuf], wanted: bool) -> Option<indicatif::ProgressBar> {
    if !wanted || !std::io::stderr().is_terminal() {
        return None;
    }
    let total: u64 = paths
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("valid template"),
    );
    Some(bar)
}
