//! Running the engine over files: the replay that `replay`, `eval` and `demo` share.
//!
//! The calling thread reads and parses; the pipeline's workers judge; one thread delivers alerts
//! to the sinks (and keeps them, when asked, for scoring).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::alert::Alert;
use crate::config::Config;
use crate::event::InputError;
use crate::pipeline::Pipeline;
use crate::sink::{Sink, SinkError};
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
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            on_error: OnError::Continue,
            progress: false,
            collect: false,
            errors_shown: 20,
            features: None,
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
}

pub fn replay(
    config: Arc<Config>,
    paths: &[PathBuf],
    sinks: Vec<Box<dyn Sink>>,
    opts: &ReplayOptions,
) -> Result<ReplayReport, ReplayError> {
    let started = Instant::now();
    let (pipeline, alerts) = Pipeline::start_with_features(config, opts.features.clone());
    let delivery = deliver(alerts, sinks, opts.collect);
    let bar = progress_bar(paths, opts.progress);
    let mut errors = Vec::new();
    let mut ingest = pipeline.ingest();
    let source = FileSource {
        paths: paths.to_vec(),
        on_error: opts.on_error,
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
    let (alert_updates, alerts) = delivered?;
    Ok(ReplayReport {
        input,
        workers,
        alert_updates,
        alerts,
        elapsed: started.elapsed(),
        errors,
    })
}

/// The thread that hands every alert to every sink, in order, and keeps them when asked.
fn deliver(
    alerts: crossbeam_channel::Receiver<Alert>,
    mut sinks: Vec<Box<dyn Sink>>,
    collect: bool,
) -> std::thread::JoinHandle<Result<(u64, Vec<Alert>), SinkError>> {
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut n = 0;
        for a in alerts {
            n += 1;
            for s in sinks.iter_mut() {
                s.send(&a)?;
            }
            if collect {
                kept.push(a);
            }
        }
        for s in sinks.iter_mut() {
            s.flush()?;
        }
        Ok((n, kept))
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
}

/// Runs live sources until `stop` is raised (or one of them fails for good), then drains.
pub fn live(
    config: Arc<Config>,
    sources: Vec<Box<dyn LiveSource>>,
    sinks: Vec<Box<dyn Sink>>,
    stop: Arc<AtomicBool>,
    collect: bool,
) -> Result<LiveReport, ReplayError> {
    let started = Instant::now();
    let (pipeline, alerts) = Pipeline::start(config);
    let delivery = deliver(alerts, sinks, collect);
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
                        tracing::error!(source = %name, error = %e, "source stopped");
                    }
                    ingest.stats.clone()
                })
                .expect("spawn source thread")
        })
        .collect();
    let mut input = InputStats::default();
    for t in threads {
        input.merge(&t.join().expect("source thread panicked"));
    }
    let workers = pipeline.finish();
    let (alert_updates, alerts) = delivery.join().expect("alert delivery thread panicked")?;
    Ok(LiveReport {
        input,
        workers,
        alert_updates,
        alerts,
        elapsed: started.elapsed(),
    })
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
