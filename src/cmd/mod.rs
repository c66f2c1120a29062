//! The commands of the `mqwatch` binary, one file each: its arguments (clap) and what it does.
//! `main.rs` parses the command line, hands the chosen command a [`Session`], and turns a
//! [`CmdError`] into one line on stderr and an exit code.

pub mod demo;
pub mod eval;
pub mod gen;
pub mod nab;
pub mod replay;
pub mod run;
pub mod train;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::alert::Alert;
use crate::config::{Config, ConfigError};
use crate::learn::ModelSet;
use crate::redact::Redactor;
use crate::run::ReplayReport;

/// What every command shares: the redactor in front of stderr, and the stop flag that Ctrl-C and
/// SIGTERM raise.
pub struct Session {
    pub redactor: Redactor,
    pub stop: Arc<AtomicBool>,
    pub models: ModelArgs,
}

#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    /// The user's to fix (a bad argument, file or config): exit code 2.
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Run(#[from] crate::run::RunError),
    #[error(transparent)]
    Train(#[from] crate::dataset::train::TrainError),
    #[error(transparent)]
    Sink(#[from] crate::sink::SinkError),
    #[error(transparent)]
    Broker(#[from] crate::link::BrokerError),
    #[error(transparent)]
    Model(#[from] crate::learn::ModelError),
    #[error(transparent)]
    Nab(#[from] crate::dataset::nab::NabError),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// An I/O failure with what was being done.
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{0} alerts not delivered (ids above)")]
    Undelivered(usize),
}

impl CmdError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CmdError::Usage(_) => 2,
            _ => 1,
        }
    }

    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> CmdError {
        let what = what.into();
        move |source| CmdError::Io { what, source }
    }
}

impl From<ConfigError> for CmdError {
    fn from(e: ConfigError) -> CmdError {
        CmdError::Usage(e.to_string())
    }
}

impl From<crate::dataset::labels::LabelError> for CmdError {
    fn from(e: crate::dataset::labels::LabelError) -> CmdError {
        CmdError::Usage(e.to_string())
    }
}

/// Which learned models to score with.
#[derive(clap::Args)]
pub struct ModelArgs {
    /// Directory of learned models to score with [default: ./models, when it exists].
    #[arg(long, global = true, value_name = "DIR")]
    pub models: Option<PathBuf>,
    /// Statistical detectors only: load no learned model.
    #[arg(long, global = true, conflicts_with = "models")]
    pub no_models: bool,
}

impl ModelArgs {
    pub fn load(&self) -> Result<Option<Arc<ModelSet>>, CmdError> {
        let dir = match (&self.models, self.no_models) {
            (_, true) => return Ok(None),
            (Some(d), _) => d.clone(),
            (None, _) if Path::new("models").is_dir() => PathBuf::from("models"),
            (None, _) => return Ok(None),
        };
        let set = ModelSet::load_dir(&dir).map_err(|e| CmdError::Usage(e.to_string()))?;
        for (class, path) in &set.sources {
            eprintln!(
                "learned baseline for {}: {}",
                class.as_str(),
                path.display()
            );
        }
        Ok((!set.is_empty()).then(|| Arc::new(set)))
    }
}

impl Session {
    /// Loads a config (or the defaults), first taking note of every secret in its text and in
    /// what its `${env:…}` and `${file:…}` references bring in, so that none reaches the log
    /// even when the file does not parse.
    pub fn config(&self, path: Option<&Path>) -> Result<Arc<Config>, CmdError> {
        let config = match path {
            None => Config::default(),
            Some(p) => {
                let path = p.display().to_string();
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                self.redactor.add_from_config_text(&text);
                let invalid = |source| ConfigError::Invalid {
                    path: path.clone(),
                    source,
                };
                // What the references bring in is secret too, in the log and in errors alike.
                let (expanded, secrets) =
                    crate::config::expand_references(&text).map_err(invalid)?;
                for s in &secrets {
                    self.redactor.add(s);
                }
                self.redactor.add_from_config_text(&expanded);
                Config::parse_expanded(&expanded).map_err(invalid)?
            }
        };
        Ok(Arc::new(config))
    }
}

/// Every input must exist and not be a directory (a pipe such as `/dev/stdin` is fine).
pub fn check_files(files: &[PathBuf]) -> Result<(), CmdError> {
    match files.iter().find(|f| !f.exists() || f.is_dir()) {
        Some(f) => Err(CmdError::Usage(format!("no such file: {}", f.display()))),
        None => Ok(()),
    }
}

/// Names every alert a sink could not deliver by the shutdown deadline; fails the run if any.
pub fn undelivered(per_sink: &[(String, Vec<Alert>)]) -> Result<(), CmdError> {
    let mut total = 0;
    for (sink, alerts) in per_sink {
        total += alerts.len();
        let ids: Vec<&str> = alerts.iter().map(|a| a.id.as_str()).collect();
        eprintln!(
            "mqwatch: {} alerts not delivered to {sink} by the shutdown deadline: {}",
            alerts.len(),
            ids.join(" ")
        );
    }
    match total {
        0 => Ok(()),
        n => Err(CmdError::Undelivered(n)),
    }
}

/// The replay's account on stderr: refusals, counts, speed.
pub fn print_summary(r: &ReplayReport) {
    for e in &r.errors {
        eprintln!("refused: {e}");
    }
    let shown = r.errors.len() as u64;
    if r.input.total_errors() > shown {
        eprintln!("refused: ... and {} more", r.input.total_errors() - shown);
    }
    if r.interrupted {
        eprintln!("interrupted: the summary covers the input read until then");
    }
    eprintln!(
        "{} ({} KiB of latency histograms); {} alert updates; {:.2} s, {:.0} events/s",
        crate::telemetry::input_summary(),
        r.workers.histogram_bytes / 1024,
        r.alert_updates,
        r.elapsed.as_secs_f64(),
        r.events_per_sec()
    );
}
