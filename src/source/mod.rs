//! Sources: where metric events come from. Each parses payloads with [`crate::event`], pushes
//! events into its own [`crate::pipeline::Ingest`] handle, and reports refused input with its
//! location. Files are read to the end; live sources ([`LiveSource`]) run until stopped.

pub mod file;
pub mod kafka;
pub mod rabbitmq;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

pub use file::{FileSource, OnError};

use crate::link::{BrokerError, Link};
use crate::pipeline::Ingest;

/// A source that runs on its own thread until `stop` is raised, reconnecting as it needs to.
pub trait LiveSource: Send {
    fn name(&self) -> String;
    /// The connection it reports each attempt to: where it reads from, reached or not.
    fn link(&self) -> Arc<Link>;
    fn run(self: Box<Self>, ingest: &mut Ingest, stop: Arc<AtomicBool>) -> Result<(), BrokerError>;
}
