//! Components: what one section of the config brings to a live run — its sources and its alert
//! sinks — built from its own settings, the way each section knows best.
//!
//! The live run never names a broker: it asks [`components`] for everything the config names,
//! logs each one's [`Component::describe`] line, and runs the parts they [`Component::build`]. A
//! new broker or sink kind is one file here with an `impl Component` for its settings, a field for
//! those settings in [`Config`], and one line in [`components`].

mod http;
mod kafka;
mod rabbitmq;
mod stdout;

use crate::config::Config;
use crate::link::Link;
use crate::sink::{Publisher, Sink, SpoolSink};
use crate::source::LiveSource;

/// A config section that can build the parts of a live run.
pub trait Component {
    /// One line for the startup log: what it watches and where its alerts go (no secrets).
    fn describe(&self) -> String;
    /// Its sources and sinks; sinks start connecting at once.
    fn build(&self) -> Result<Parts, BuildError>;
}

/// The running pieces one component contributes.
#[derive(Default)]
pub struct Parts {
    pub sources: Vec<Box<dyn LiveSource>>,
    pub sinks: Vec<Box<dyn Sink>>,
}

impl Parts {
    pub fn extend(&mut self, other: Parts) {
        self.sources.extend(other.sources);
        self.sinks.extend(other.sinks);
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{component}: {message}")]
pub struct BuildError {
    pub component: String,
    pub message: String,
}

/// Every component the config names, in the order their parts start. The one place that lists
/// the kinds of component.
pub fn components(config: &Config) -> Vec<Box<dyn Component>> {
    let mut out: Vec<Box<dyn Component>> = Vec::new();
    if config.stdout {
        out.push(Box::new(stdout::Stdout));
    }
    for r in &config.rabbitmq {
        out.push(Box::new(r.clone()));
    }
    for k in &config.kafka {
        out.push(Box::new(k.clone()));
    }
    for a in &config.alertmanager {
        out.push(Box::new(http::Alertmanager {
            config: a.clone(),
            external_url: config.http.external_base(),
        }));
    }
    for w in &config.webhook {
        out.push(Box::new(w.clone()));
    }
    out
}

/// Builds every component of the config, logging what each watches.
pub fn build_all(config: &Config) -> Result<Parts, BuildError> {
    let mut parts = Parts::default();
    for c in components(config) {
        tracing::info!("{}", c.describe());
        parts.extend(c.build()?);
    }
    Ok(parts)
}

/// A broker sink behind its spool: `name` in the log and the counters, `address` (credentials
/// redacted) naming the broker it delivers to.
fn spooled_sink(
    name: String,
    address: &str,
    publisher: impl Publisher,
    capacity: usize,
) -> Box<dyn Sink> {
    let link = Link::new(format!("{name} ({address})"));
    Box::new(SpoolSink::start(&name, link, publisher, capacity))
}
