//! Files of metric events: JSONL (one event, or one array of events, per line), optionally gzip
//! compressed (`.gz`), or a whole file holding one JSON array. Errors name the file and line.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::event::{InputError, Location};
use crate::pipeline::Ingest;

/// What to do on a refused line: go on (it is counted and reported) or stop the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    Continue,
    Stop,
}

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("{0}")]
    Input(#[from] InputError),
}

pub struct FileSource {
    pub paths: Vec<PathBuf>,
    pub on_error: OnError,
    /// Raised (by Ctrl-C) to stop reading early; what was read is still judged.
    pub stop: Option<Arc<AtomicBool>>,
}

impl FileSource {
    /// Reads every file into the pipeline. `report` sees each refused input; `progress` the bytes read.
    pub fn run(
        &self,
        ingest: &mut Ingest,
        mut report: impl FnMut(&InputError),
        mut progress: impl FnMut(u64),
    ) -> Result<(), FileError> {
        for path in &self.paths {
            if self.stopped() {
                return Ok(());
            }
            let name = path.display().to_string();
            let io_err = |source| FileError::Io {
                path: name.clone(),
                source,
            };
            let reader = open(path).map_err(io_err)?;
            let mut ctx = Ctx {
                name: &name,
                ingest,
                report: &mut report,
                on_error: self.on_error,
                stop: self.stop.as_deref(),
            };
            read_lines(reader, &mut ctx, &mut progress).map_err(|e| match e {
                LineError::Io(source) => io_err(source),
                LineError::Stop(e) => FileError::Input(e),
            })?;
        }
        Ok(())
    }

    pub fn stopped(&self) -> bool {
        self.stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::Relaxed))
    }
}

fn open(path: &Path) -> io::Result<Box<dyn BufRead>> {
    let file = File::open(path)?;
    let raw: Box<dyn Read> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    };
    Ok(Box::new(BufReader::with_capacity(1 << 18, raw)))
}

struct Ctx<'a, R> {
    name: &'a str,
    ingest: &'a mut Ingest,
    report: &'a mut R,
    on_error: OnError,
    stop: Option<&'a AtomicBool>,
}

enum LineError {
    Io(io::Error),
    Stop(InputError),
}

fn read_lines<R: FnMut(&InputError)>(
    mut reader: Box<dyn BufRead>,
    ctx: &mut Ctx<'_, R>,
    progress: &mut impl FnMut(u64),
) -> Result<(), LineError> {
    let mut buf = Vec::with_capacity(4096);
    let mut line_no = 0u64;
    // A file that opens with '[' is one JSON array, however it is laid out.
    let first = reader
        .fill_buf()
        .map_err(LineError::Io)?
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .copied();
    if first == Some(b'[') {
        reader.read_to_end(&mut buf).map_err(LineError::Io)?;
        progress(buf.len() as u64);
        return apply(ctx, &buf, &"whole file");
    }
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf).map_err(LineError::Io)?;
        if n == 0 {
            return Ok(());
        }
        line_no += 1;
        progress(n as u64);
        // A relaxed load per line costs nothing measurable, and a slow input (a pipe) stops at once.
        if ctx.stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
            return Ok(());
        }
        let line = buf.trim_ascii();
        if line.is_empty() {
            continue;
        }
        apply(ctx, line, &LineNo(line_no))?;
    }
}

struct LineNo(u64);

impl std::fmt::Display for LineNo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}", self.0)
    }
}

fn apply<R: FnMut(&InputError)>(
    ctx: &mut Ctx<'_, R>,
    bytes: &[u8],
    at: &dyn std::fmt::Display,
) -> Result<(), LineError> {
    let refused = super::decode(bytes, ctx.ingest, ctx.on_error == OnError::Stop);
    let mut first = None;
    for error in refused {
        let e = InputError {
            location: Location {
                source: ctx.name.to_string(),
                position: at.to_string(),
            },
            error,
        };
        (ctx.report)(&e);
        first.get_or_insert(e);
    }
    match first {
        Some(e) if ctx.on_error == OnError::Stop => Err(LineError::Stop(e)),
        _ => Ok(()),
    }
}
