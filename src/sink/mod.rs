//! Sinks: where alerts leave. A sink takes each alert update in order and says whether it was
//! delivered: stdout and files directly; broker sinks through a [`SpoolSink`], which keeps each
//! alert until the broker confirmed it. Closing a sink gives it a deadline and hands back what
//! it could not deliver, so a run can name every undelivered alert and never hang on shutdown.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use crate::alert::Alert;

pub mod http;
pub mod journal;
pub mod kafka;
pub mod rabbitmq;
pub mod spool;

pub use journal::Journal;
pub use spool::{Publisher, SpoolSink};

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("{sink}: {source}")]
    Io { sink: String, source: io::Error },
    #[error("{sink}: {message}")]
    Broker { sink: String, message: String },
}

pub trait Sink: Send {
    fn name(&self) -> &str;
    /// Delivers one alert update; `Ok` means it was written (or confirmed by a broker).
    fn send(&mut self, alert: &Alert) -> Result<(), SinkError>;
    /// Delivers what is still waiting, trying no later than `deadline`, and returns the alerts
    /// that could not be delivered.
    fn close(&mut self, deadline: Instant) -> Result<Vec<Alert>, SinkError>;
    /// How many of the alerts handed to `send` since the start are confirmed, in order: written
    /// for a file or stdout (the default: as soon as `send` returns), confirmed by the receiver
    /// for a spooled sink. What the alert journal lets go of.
    fn confirmed(&self) -> u64 {
        u64::MAX
    }
    /// Called about once a second, alerts or not, for sinks with periodic work (re-sending
    /// open alerts to Alertmanager).
    fn tick(&mut self, _now: Instant) -> Result<(), SinkError> {
        Ok(())
    }
    /// The broker connection it delivers through, if any.
    fn link(&self) -> Option<std::sync::Arc<crate::link::Link>> {
        None
    }
    /// Alerts waiting in its spool for the receiver's confirmation (spooled sinks).
    fn waiting(&self) -> Option<u64> {
        None
    }
    /// What it delivered, for the run's summary (broker sinks).
    fn summary(&self) -> Option<String> {
        None
    }
}

/// One alert JSON object per line, to stdout or a file.
pub struct JsonlSink {
    name: String,
    out: Box<dyn Write + Send>,
    /// Flush after every alert, so that whoever reads the pipe sees it as it fires.
    flush_each: bool,
}

impl JsonlSink {
    /// Alerts on stdout, each flushed as it is written: a terminal or a pipe sees every alert
    /// when it fires, not when a buffer fills or the run ends.
    pub fn stdout() -> Self {
        JsonlSink {
            name: "stdout".into(),
            out: Box::new(BufWriter::new(io::stdout())),
            flush_each: true,
        }
    }

    /// Stdout for a replay, which writes many alerts quickly and flushes when it ends.
    pub fn stdout_buffered() -> Self {
        JsonlSink {
            flush_each: false,
            ..JsonlSink::stdout()
        }
    }

    pub fn file(path: &Path) -> Result<Self, SinkError> {
        let name = path.display().to_string();
        let f = File::create(path).map_err(|source| SinkError::Io {
            sink: name.clone(),
            source,
        })?;
        Ok(JsonlSink {
            name,
            out: Box::new(BufWriter::new(f)),
            flush_each: false,
        })
    }

    fn io(&self, source: io::Error) -> SinkError {
        SinkError::Io {
            sink: self.name.clone(),
            source,
        }
    }
}

impl Sink for JsonlSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn send(&mut self, alert: &Alert) -> Result<(), SinkError> {
        serde_json::to_writer(&mut self.out, alert).map_err(|e| self.io(e.into()))?;
        self.out.write_all(b"\n").map_err(|e| self.io(e))?;
        if self.flush_each {
            self.out.flush().map_err(|e| self.io(e))?;
        }
        Ok(())
    }

    fn close(&mut self, _: Instant) -> Result<Vec<Alert>, SinkError> {
        self.out.flush().map_err(|e| self.io(e))?;
        Ok(Vec::new())
    }
}
