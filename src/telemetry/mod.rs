//! The engine's account of itself: what came in, what was refused and why, what was dropped, and
//! what happened at the edges.
//!
//! On the hot path, counters are plain integers owned by one thread each (a source's
//! [`InputStats`], a worker's [`WorkerStats`]) and merged when reported, so counting costs
//! nothing there. Everything else — a broker lost or back, a message refused and dead-lettered,
//! an alert nobody's queue took — is an [`events`] struct whose `emit` writes one log line with
//! fixed field names *and* bumps one counter in the process's [`Registry`], which the run summary
//! prints from.

pub mod events;
mod registry;

pub use events::{describe, emit};
pub use registry::{registry, Registry};

/// Adds a finished run's hot-path counts to the registry, so that the summary (and anything
/// else that reads the registry) sees them beside the edge events.
pub fn record_run(input: &InputStats, workers: &WorkerStats) {
    let r = registry();
    r.add("events_accepted", "", input.events);
    for (reason, n) in input.error_counts() {
        r.add("events_refused", reason.as_str(), n);
    }
    r.add("dropped_backpressure", "", input.dropped_backpressure);
    r.add("samples_late", "", workers.late);
    r.add("series", "", workers.series);
    r.add("intervals_judged", "", workers.intervals_closed);
}

/// The run's account in one line, from the registry: events accepted and refused (by reason),
/// dropped, series and late samples.
pub fn input_summary() -> String {
    use std::fmt::Write;
    let r = registry();
    let refused: Vec<(String, u64)> = r
        .snapshot()
        .into_iter()
        .filter(|(name, _, n)| *name == "events_refused" && *n > 0)
        .map(|(_, reason, n)| (reason, n))
        .collect();
    let total: u64 = refused.iter().map(|(_, n)| n).sum();
    let mut out = format!(
        "{} events accepted, {total} refused",
        r.get("events_accepted", "")
    );
    // In the order of ErrorReason, as the per-run stats print them.
    for reason in ErrorReason::ALL {
        if let Some((_, n)) = refused.iter().find(|(r, _)| r == reason.as_str()) {
            let _ = write!(out, ", {reason}: {n}");
        }
    }
    let dropped = r.get("dropped_backpressure", "");
    if dropped > 0 {
        let _ = write!(out, ", dropped by backpressure: {dropped}");
    }
    let _ = write!(
        out,
        "; {} series, {} late",
        r.get("series", ""),
        r.get("samples_late", "")
    );
    out
}

use crate::event::ErrorReason;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct InputStats {
    /// Events accepted into the pipeline.
    pub events: u64,
    errors: [u64; ErrorReason::ALL.len()],
    /// Events dropped because a worker's queue was full (`backpressure = "drop"`).
    pub dropped_backpressure: u64,
    /// Oldest and newest event time accepted, Unix ms.
    pub span: Option<(i64, i64)>,
}

impl InputStats {
    pub fn count_error(&mut self, reason: ErrorReason) {
        self.errors[reason as usize] += 1;
    }

    pub fn errors(&self, reason: ErrorReason) -> u64 {
        self.errors[reason as usize]
    }

    pub fn total_errors(&self) -> u64 {
        self.errors.iter().sum()
    }

    /// Non-zero error counts by reason.
    pub fn error_counts(&self) -> impl Iterator<Item = (ErrorReason, u64)> + '_ {
        ErrorReason::ALL
            .into_iter()
            .map(|r| (r, self.errors(r)))
            .filter(|&(_, n)| n > 0)
    }

    pub fn see_ts(&mut self, ts: i64) {
        self.span = Some(match self.span {
            None => (ts, ts),
            Some((a, b)) => (a.min(ts), b.max(ts)),
        });
    }

    pub fn merge(&mut self, o: &InputStats) {
        if let Some((a, b)) = o.span {
            self.see_ts(a);
            self.see_ts(b);
        }
        self.events += o.events;
        self.dropped_backpressure += o.dropped_backpressure;
        for (a, b) in self.errors.iter_mut().zip(o.errors) {
            *a += b;
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkerStats {
    pub samples: u64,
    /// Samples older than the allowed lateness, counted and dropped.
    pub late: u64,
    pub series: u64,
    pub entities: u64,
    pub intervals_closed: u64,
    /// Bytes held by latency histograms at the end of the run.
    pub histogram_bytes: u64,
}

impl WorkerStats {
    pub fn merge(&mut self, o: &WorkerStats) {
        self.samples += o.samples;
        self.late += o.late;
        self.series += o.series;
        self.entities += o.entities;
        self.intervals_closed = self.intervals_closed.max(o.intervals_closed);
        self.histogram_bytes += o.histogram_bytes;
    }
}
