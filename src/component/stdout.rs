//! Alerts as JSONL on stdout, flushed one by one (`stdout = true`, the default).

use super::{BuildError, Component, Parts};
use crate::sink::JsonlSink;

pub struct Stdout;

impl Component for Stdout {
    fn describe(&self) -> String {
        "alerts to stdout (JSONL)".into()
    }

    fn build(&self) -> Result<Parts, BuildError> {
        Ok(Parts {
            sources: Vec::new(),
            sinks: vec![Box::new(JsonlSink::stdout())],
        })
    }
}
