//! `mqwatch replay`: event files through the engine in event time, as fast as possible.

use std::path::PathBuf;

use super::{check_files, print_summary, undelivered, CmdError, Session};
use crate::pipeline::Learned;
use crate::run::{replay, ReplayOptions};
use crate::sink::{JsonlSink, Sink};
use crate::source::OnError;

/// Replay metric event files (JSONL, .gz, or a JSON array) in event time, as fast as possible.
/// Alerts go to stdout as JSONL; a summary goes to stderr.
#[derive(clap::Args)]
pub struct Args {
    #[arg(required = true)]
    files: Vec<PathBuf>,
    #[arg(long)]
    config: Option<PathBuf>,
    /// Stop at the first refused input instead of counting it and going on.
    #[arg(long)]
    strict: bool,
    /// Also write the alerts to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Do not print alerts on stdout (the summary still goes to stderr).
    #[arg(long)]
    quiet: bool,
    /// Resume from the checkpoint in this directory and leave one there when done: files
    /// replayed in parts, each resuming from the last, judge as one replay of them all.
    #[arg(long, value_name = "DIR")]
    state: Option<PathBuf>,
}

pub fn run(s: &Session, a: Args) -> Result<(), CmdError> {
    let models = s.models.load()?;
    let config = s.config(a.config.as_deref())?;
    check_files(&a.files)?;
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    if !a.quiet {
        sinks.push(Box::new(JsonlSink::stdout_buffered()));
    }
    if let Some(p) = &a.out {
        sinks.push(Box::new(JsonlSink::file(p)?));
    }
    let opts = ReplayOptions {
        on_error: if a.strict {
            OnError::Stop
        } else {
            OnError::Continue
        },
        progress: true,
        learned: Learned {
            models,
            features: None,
        },
        stop: Some(s.stop.clone()),
        state: a.state,
        ..Default::default()
    };
    let report = replay(config, &a.files, sinks, &opts)?;
    print_summary(&report);
    undelivered(&report.undelivered)
}
