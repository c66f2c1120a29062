//! Running the engine: the replay of files that `replay`, `eval` and `demo` share, and the live
//! run over brokers that `run` and the live demos share.
//!
//! The calling thread reads and parses (replay) or watches the sources' threads (live); the
//! pipeline's workers judge; one thread delivers alerts to the sinks (and keeps them, when asked,
//! for scoring). Either run stops early when its stop flag is raised (Ctrl-C, SIGTERM, `--for`):
//! the sources stop, the pipeline drains, and the sinks get `engine.shutdown_timeout` to deliver
//! what waits; what they cannot is reported by id.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::alert::Alert;
use crate::config::Config;
use crate::event::InputError;
use crate::link::Link;
use crate::pipeline::Pipeline;
use crate::sink::{JsonlSink, Sink, SinkError, SpoolSink};
use crate::source::file::FileError;
use crate::source::{FileSource, LiveSource, OnError};
use crate::telemetry::{InputStats, WorkerStats};

pub struct ReplayOptions {
    pub on_error: OnError,
    /// Show a progress bar on stderr (only drawn when stderr is a terminal).
    pub progress: bool,
    /// Keep the alerts in the report.
    pub collect: bool,
    /// Refused inputs reported one by one before only counting them.
    pub errors_shown: usize,
    /// Where every entity's interval features go, for training and reports.
    pub features: Option<crossbeam_channel::Sender<crate::learn::FeatureRow>>,
    /// Raised to stop reading early (Ctrl-C); what was read is still judged and reported.
    pub stop: Option<Arc<AtomicBool>>,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            on_error: OnError::Continue,
            progress: false,
            collect: false,
            errors_shown: 20,
            features: None,
            stop: None,
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
pub enum ReplayError {
    #[error(transparent)]
    Input(#[from] FileError),
    #[error("alert sink failed: {0}")]
    Sink(#[from] SinkError),
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
) -> Result<ReplayReport, ReplayError> {
    let started = Instant::now();
    let shutdown = config.engine.shutdown_timeout;
    let (pipeline, alerts) = Pipeline::start_with_features(config, opts.features.clone());
    let delivery = deliver(alerts, sinks, opts.collect, shutdown);
    let bar = progress_bar(paths, opts.progress);
    let mut errors = Vec::new();
    let mut ingest = pipeline.ingest();
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

/// The thread that hands every alert to every sink, in order, and keeps them when asked. When
/// the alerts end it closes the sinks with one deadline, `shutdown` from then.
fn deliver(
    alerts: crossbeam_channel::Receiver<Alert>,
    mut sinks: Vec<Box<dyn Sink>>,
    collect: bool,
    shutdown: Duration,
) -> std::thread::JoinHandle<Result<Delivered, SinkError>> {
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut updates = 0;
        for a in alerts {
            updates += 1;
            for s in sinks.iter_mut() {
                s.send(&a)?;
            }
            if collect {
                kept.push(a);
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
    pub alerts: Vec<Alert>,
    pub elapsed: Duration,
    /// Alerts the sinks could not deliver by the shutdown deadline, per sink.
    pub undelivered: Vec<(String, Vec<Alert>)>,
    /// Every broker connection of the run, with its counts of failures and outages.
    pub links: Vec<Arc<Link>>,
    /// Each broker sink's account: confirmed, unroutable, failed attempts.
    pub sinks: Vec<String>,
}

/// The live parts a config names: a source per broker activity, a sink per alert destination.
pub struct Components {
    pub sources: Vec<Box<dyn LiveSource>>,
    pub sinks: Vec<Box<dyn Sink>>,
}

/// Builds the sources and sinks of the `[rabbitmq]` and `[kafka]` sections (and stdout), and
/// logs one line per broker saying what it watches and where its alerts go. The alert sinks
/// start connecting at once.
pub fn live_components(config: &Config) -> Result<Components, String> {
    use crate::source::{kafka, rabbitmq};
    let mut sources: Vec<Box<dyn LiveSource>> = Vec::new();
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    if config.stdout {
        sinks.push(Box::new(JsonlSink::stdout()));
    }
    if let Some(r) = &config.rabbitmq {
        let redacted = crate::rabbitmq::redact(&r.uri);
        let list = |v: &[String], all: &str| {
            if v.is_empty() {
                all.to_string()
            } else {
                v.join(", ")
            }
        };
        tracing::info!(
            "rabbitmq {redacted}: watching queues matching [{}] except [{}] in vhosts {} via {}; \
             cluster label {}; alerts to exchange {}",
            r.include.join(", "),
            r.exclude.join(", "),
            list(&r.vhosts, "all"),
            if r.management_url.is_empty() {
                "passive declares".to_string()
            } else {
                format!("the management API {}", r.management_url)
            },
            if r.cluster.is_empty() {
                "from the management API (the cluster name)"
            } else {
                r.cluster.as_str()
            },
            if r.alerts_exchange.is_empty() {
                "(none)"
            } else {
                r.alerts_exchange.as_str()
            },
        );
        sources.push(Box::new(rabbitmq::QueuePoller::new(r)?));
        if !r.metrics_queue.is_empty() {
            tracing::info!(
                "rabbitmq {redacted}: consuming metric events from queue {}",
                r.metrics_queue
            );
            sources.push(Box::new(rabbitmq::MetricsConsumer::new(r)));
        }
        if r.probe.enabled {
            tracing::info!(
                "rabbitmq {redacted}: probing end-to-end latency through queue {}",
                r.probe.queue
            );
            sources.push(Box::new(rabbitmq::Probe::new(r)));
        }
        if !r.alerts_exchange.is_empty() {
            let link = Link::new(format!(
                "rabbitmq alert exchange {} ({redacted})",
                r.alerts_exchange
            ));
            let publisher = crate::sink::rabbitmq::RabbitPublisher::new(&r.uri, &r.alerts_exchange);
            sinks.push(Box::new(SpoolSink::start(
                "rabbitmq",
                link,
                publisher,
                r.spool_capacity,
            )));
        }
    }
    if let Some(k) = &config.kafka {
        tracing::info!(
            properties = ?k.redacted_properties(),
            "kafka {}: watching topics matching [{}] except [{}] and groups matching [{}] except [{}]; \
             cluster label {}; alerts to topic {}",
            k.bootstrap_servers,
            k.include_topics.join(", "),
            k.exclude_topics.join(", "),
            k.include_groups.join(", "),
            k.exclude_groups.join(", "),
            k.cluster,
            if k.alerts_topic.is_empty() { "(none)" } else { k.alerts_topic.as_str() },
        );
        sources.push(Box::new(kafka::LagPoller::new(k)?));
        if !k.metrics_topics.is_empty() {
            tracing::info!(
                "kafka {}: consuming metric events from topics {}",
                k.bootstrap_servers,
                k.metrics_topics.join(", ")
            );
            sources.push(Box::new(kafka::MetricsConsumer::new(k)));
        }
        if k.probe.enabled {
            tracing::info!(
                "kafka {}: probing end-to-end latency through topic {}",
                k.bootstrap_servers,
                k.probe.topic
            );
            sources.push(Box::new(kafka::Probe::new(k)));
        }
        if !k.alerts_topic.is_empty() {
            let link = Link::new(format!(
                "kafka alert topic {} ({})",
                k.alerts_topic, k.bootstrap_servers
            ));
            let publisher = crate::sink::kafka::KafkaPublisher::new(k);
            sinks.push(Box::new(SpoolSink::start(
                "kafka",
                link,
                publisher,
                k.spool_capacity,
            )));
        }
    }
    Ok(Components { sources, sinks })
}

/// Runs live sources until `stop` is raised (or every one of them has failed for good), then
/// drains. If no broker answered within `engine.startup_timeout`, the run stops and fails,
/// naming every connection and its last error.
pub fn live(
    config: Arc<Config>,
    sources: Vec<Box<dyn LiveSource>>,
    sinks: Vec<Box<dyn Sink>>,
    stop: Arc<AtomicBool>,
    collect: bool,
) -> Result<LiveReport, ReplayError> {
    let started = Instant::now();
    let startup = config.engine.startup_timeout;
    let links: Vec<Arc<Link>> = sources
        .iter()
        .map(|s| s.link())
        .chain(sinks.iter().filter_map(|s| s.link()))
        .collect();
    let (pipeline, alerts) = Pipeline::start(config.clone());
    let delivery = deliver(alerts, sinks, collect, config.engine.shutdown_timeout);
    let threads: Vec<_> = sources
        .into_iter()
        .map(|src| {
            let ingest = pipeline.ingest();
            let stop = stop.clone();
            let name = src.name();
            std::thread::Builder::new()
                .name(format!("mqwatch-source-{name}"))
                .spawn(move || {
                    let mut ingest = ingest;
                    if let Err(e) = src.run(&mut ingest, stop) {
                        tracing::error!(source = %name, error = %crate::redact::redact_userinfo(&e), "source stopped");
                    }
                    ingest.stats.clone()
                })
                .expect("spawn source thread")
        })
        .collect();
    let unreachable = watch_startup(&links, &threads, &stop, started + startup);
    let mut input = InputStats::default();
    for t in threads {
        input.merge(&t.join().expect("source thread panicked"));
    }
    let workers = pipeline.finish();
    let delivered = delivery.join().expect("alert delivery thread panicked")?;
    if let Some(tried) = unreachable {
        for (sink, alerts) in &delivered.undelivered {
            for a in alerts {
                tracing::error!(sink = %sink, id = %a.id, "alert not delivered");
            }
        }
        return Err(ReplayError::NoBrokerReachable {
            within: startup,
            tried,
        });
    }
    Ok(LiveReport {
        input,
        workers,
        alert_updates: delivered.updates,
        alerts: delivered.kept,
        elapsed: started.elapsed(),
        undelivered: delivered.undelivered,
        links,
        sinks: delivered.sinks,
    })
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
