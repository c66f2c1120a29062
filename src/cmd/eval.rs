//! `mqwatch eval`: a replay scored against labelled incidents, optionally with an HTML report.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::{check_files, print_summary, CmdError, Session};
use crate::config::Config;
use crate::dataset::eval::{evaluate, EvalReport};
use crate::dataset::labels::LabelFile;
use crate::pipeline::Learned;
use crate::run::{replay, ReplayOptions, ReplayReport};
use crate::sink::{JsonlSink, Sink};

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// Replay events and score the alerts against labelled incidents.
#[derive(clap::Args)]
pub struct Args {
    #[arg(long, required = true, num_args = 1..)]
    events: Vec<PathBuf>,
    #[arg(long)]
    labels: PathBuf,
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Write the alerts of the run to this file (JSONL).
    #[arg(long)]
    alerts_out: Option<PathBuf>,
    /// Write an HTML report with plots of every incident and false alert to DIR/index.html.
    #[arg(long, value_name = "DIR")]
    report: Option<PathBuf>,
}

pub fn run(s: &Session, a: Args) -> Result<(), CmdError> {
    let models = s.models.load()?;
    let config = s.config(a.config.as_deref())?;
    check_files(&a.events)?;
    let labels = LabelFile::load(&a.labels)?;
    // The report plots every entity's intervals: the workers send them as they judge.
    let (features, rows) = a
        .report
        .is_some()
        .then(crossbeam_channel::unbounded)
        .unzip();
    let learned = Learned {
        models: models.clone(),
        features,
    };
    let stop = Some(s.stop.clone());
    let (report, run) = scored_replay(
        config,
        &a.events,
        &labels,
        a.alerts_out.as_deref(),
        learned,
        stop,
    )?;
    if let (Some(dir), Some(rows)) = (a.report, rows) {
        let rows: Vec<_> = rows.try_iter().collect();
        let title = format!("mqwatch evaluation: {}", a.events[0].display());
        let path = crate::dataset::report::write_report(
            &dir,
            &title,
            &report,
            &run.alerts,
            &rows,
            models.as_deref(),
        )
        .map_err(CmdError::io(format!(
            "cannot write the report to {}",
            dir.display()
        )))?;
        eprintln!("report: {}", path.display());
    }
    match a.format {
        Format::Table => print!("{}", report.to_table()),
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
    }
    print_summary(&run);
    Ok(())
}

/// Replays `events` keeping every alert, and scores them against `labels`.
pub fn scored_replay(
    config: Arc<Config>,
    events: &[PathBuf],
    labels: &LabelFile,
    alerts_out: Option<&Path>,
    learned: Learned,
    stop: Option<Arc<AtomicBool>>,
) -> Result<(EvalReport, ReplayReport), CmdError> {
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    if let Some(p) = alerts_out {
        sinks.push(Box::new(JsonlSink::file(p)?));
    }
    let opts = ReplayOptions {
        collect: true,
        progress: true,
        learned,
        stop,
        ..Default::default()
    };
    let run = replay(config, events, sinks, &opts)?;
    let span = match (labels.start, labels.end, run.input.span) {
        (Some(a), Some(b), _) => (a, b),
        (_, _, Some(s)) => s,
        _ => (0, 0),
    };
    Ok((evaluate(labels, &run.alerts, span), run))
}
