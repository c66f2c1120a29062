//! Sinks: where alerts leave. A sink takes each alert update in order and says whether it was
//! delivered: stdout and files directly; broker sinks through a [`SpoolSink`], which keeps each
//! alert until the broker confirmed it.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use crate::alert::Alert;

pub mod kafka;
pub mod rabbitmq;
pub mod spool;

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
    fn flush(&mut self) -> Result<(), SinkError>;
}

/// One alert JSON object per line, to stdout or a file.
pub struct JsonlSink {
    name: String,
    out: Box<dyn Write + Send>,
}

impl JsonlSink {
    pub fn stdout() -> Self {
        JsonlSink {
            name: "stdout".into(),
            out: Box::new(BufWriter::new(io::stdout())),
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
        self.out.write_all(b"\n").map_err(|e| self.io(e))
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.out.flush().map_err(|e| self.io(e))
    }
}
