//! Sources: where metric events come from. Each decodes payloads with [`decode`] (the wire
//! format of [`crate::event`]), pushes events into its own [`Feed`] (the pipeline's
//! [`crate::pipeline::Ingest`], or in a group of engines the metrics topic),
//! and reports refused input with its location. Files are read to the end; live sources ([`LiveSource`]) run until stopped.

pub mod file;
pub mod kafka;
pub mod rabbitmq;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

pub use file::{FileSource, OnError};

use crate::event::{parse_events, ErrorReason, ParseError};
use crate::link::{BrokerError, Link};
use crate::pipeline::Feed;

/// A source that runs on its own thread until `stop` is raised, reconnecting as it needs to.
pub trait LiveSource: Send {
    fn name(&self) -> String;
    /// Whether it measures what every engine of a group can measure (a broker's state, a probe):
    /// there, only the engine that owns an entity publishes its measurements. A consumer of a
    /// metric stream, whose every message reaches one engine, forwards all it gets.
    fn is_poller(&self) -> bool {
        false
    }
    /// The connection it reports each attempt to: where it reads from, reached or not.
    fn link(&self) -> Arc<Link>;
    fn run(
        self: Box<Self>,
        ingest: &mut dyn Feed,
        stop: Arc<AtomicBool>,
    ) -> Result<(), BrokerError>;
}

/// The one decoder every source uses: one payload (a line, a message) in the wire format. Every
/// event parsed goes into the pipeline; every refusal is counted by reason and handed back for
/// the source to report (files, with the line) or dead-letter (brokers). With `stop_at_first`,
/// nothing after the first refusal is applied. Allocates only when something is refused.
pub fn decode(payload: &[u8], ingest: &mut dyn Feed, stop_at_first: bool) -> Vec<ParseError> {
    let mut refused = Vec::new();
    match std::str::from_utf8(payload) {
        Err(e) => refused.push(ParseError::new(
            ErrorReason::NotJson,
            format!("not UTF-8: {e}"),
        )),
        Ok(text) => parse_events(text, |r| match r {
            Ok(ev) if refused.is_empty() || !stop_at_first => ingest.push(&ev),
            Ok(_) => {}
            Err(e) => refused.push(e),
        }),
    }
    for e in &refused {
        ingest.reject(e.reason);
    }
    refused
}

/// Names for a log line: the first ten, then how many more.
pub(crate) fn first_names<S: AsRef<str>>(names: &[S]) -> String {
    const SHOWN: usize = 10;
    let list: Vec<&str> = names.iter().take(SHOWN).map(AsRef::as_ref).collect();
    match names.len().saturating_sub(SHOWN) {
        0 => list.join(", "),
        more => format!("{} and {more} more", list.join(", ")),
    }
}
