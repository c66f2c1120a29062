//! Sources: where metric events come from. Each parses payloads with [`crate::event`], pushes
//! events into its own [`crate::pipeline::Ingest`] handle, and reports refused input with its
//! location. Broker and poller sources live beside the file source as they are added.

pub mod file;

pub use file::{FileSource, OnError};
