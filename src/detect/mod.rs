//! Detectors: pure, deterministic state machines judged once per closed interval.
//!
//! A detector sees only what its entity hands it (quantiles, lags, rates, the interval's end time)
//! and answers with a [`Finding`] while the condition holds, or `None`. It knows nothing of
//! threads, clocks or I/O, so the same code runs live, in replay and in unit tests. Persistence
//! (how many abnormal intervals make an alert) lives in the detector; the lifecycle of the alert
//! (firing, updates, resolving) lives in [`crate::alert`].
//!
//! Every detector implements [`Detector`]: one closed interval of what it watches in, maybe a
//! finding out. A new detector is a file here that implements it, a `mod` and `pub use` line
//! below (the registry of detectors), and a [`crate::alert::Judged`] field in the entity of
//! `pipeline/entity.rs` that feeds it; the compiler points to every place that must know it.

mod backlog;
mod baseline;
mod cadence;
mod latency;
mod level;
mod stall;

pub use backlog::{BacklogDetector, BacklogInput};
pub use baseline::RobustHistory;
pub use cadence::Cadence;
pub use latency::{LatencyDetector, MIN_COUNT as LATENCY_MIN_COUNT};
pub use level::LevelDetector;
pub use stall::{GroupStallDetector, GroupView, PartitionView, QueueStallDetector, QueueView};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    Latency,
    BacklogGrowth,
    ConsumerStall,
    /// A generic gauge far from its usual level.
    Level,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::Latency => "latency",
            AlertKind::BacklogGrowth => "backlog_growth",
            AlertKind::ConsumerStall => "consumer_stall",
            AlertKind::Level => "level",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Warning,
    Critical,
}

/// The contract of every detector: judge one closed interval, answer with a [`Finding`] while
/// the condition holds. Pure: no clock, no I/O; time comes from the input.
pub trait Detector {
    /// Its settings, from the config in force (checkpoints keep state, never settings).
    type Config;
    /// Takes the settings in force: what a detector restored from a checkpoint is judged by.
    fn configure(&mut self, cfg: &Self::Config);
    /// What it sees of one interval.
    type Input<'a>;
    fn on_interval(&mut self, input: Self::Input<'_>) -> Option<Finding>;
}

/// What a detector saw in one interval: enough to explain the alert on its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub kind: AlertKind,
    pub severity: Severity,
    #[serde(deserialize_with = "static_names::one")]
    pub detector: Name,
    #[serde(deserialize_with = "static_names::one")]
    pub metric: Name,
    pub observed: f64,
    pub expected: f64,
    pub score: f64,
    /// Human explanation, without the entity name (the alert adds it).
    pub summary: String,
    /// Labels that narrow the entity, e.g. the stalled partitions of a group.
    #[serde(deserialize_with = "static_names::keyed")]
    pub detail: Vec<(&'static str, String)>,
    /// Figures that explain the finding (message lag, time lag, rates): they travel with the
    /// alert but, unlike `detail`, a change in them is no reason for an update.
    #[serde(deserialize_with = "static_names::keyed")]
    pub context: Vec<(&'static str, f64)>,
}

/// A detector's, metric's, label's or figure's name: a constant of the detectors. (An alias, not
/// `&'static str` spelled out, so that serde does not take it for a borrow of its input.)
pub type Name = &'static str;

/// The names a [`Finding`] carries (detector, metric, label and figure names) are constants of
/// the detectors, `&'static str`. Read back from a checkpoint, each becomes the one copy of that
/// name the process keeps. Names are few, so at most [`MAX_NAMES`](static_names::MAX_NAMES)
/// distinct ones are taken in: a checkpoint that brings more is refused rather than let grow memory.
pub(crate) mod static_names {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};

    use serde::de::Error;
    use serde::{Deserialize, Deserializer};

    pub const MAX_NAMES: usize = 4096;

    fn intern(name: &str) -> Option<&'static str> {
        static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
        let mut names = NAMES
            .get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(&known) = names.get(name) {
            return Some(known);
        }
        if names.len() >= MAX_NAMES {
            return None;
        }
        let leaked: &'static str = Box::leak(name.into());
        names.insert(leaked);
        Some(leaked)
    }

    fn interned<E: Error>(name: &str) -> Result<&'static str, E> {
        intern(name).ok_or_else(|| E::custom(format!("more than {MAX_NAMES} distinct names")))
    }

    pub fn one<'de, D: Deserializer<'de>>(d: D) -> Result<&'static str, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        interned(&s)
    }

    pub fn keyed<'de, D, V>(d: D) -> Result<Vec<(&'static str, V)>, D::Error>
    where
        D: Deserializer<'de>,
        V: Deserialize<'de>,
    {
        let pairs = Vec::<(std::borrow::Cow<'de, str>, V)>::deserialize(d)?;
        pairs
            .into_iter()
            .map(|(k, v)| Ok((interned(&k)?, v)))
            .collect()
    }
}

/// Robust z-score of `x` against a median and a scale, with a floor on the scale so that a
/// perfectly flat history does not turn every wiggle into an infinite score.
pub(crate) fn robust_z(x: f64, median: f64, scale: f64, min_scale: f64) -> f64 {
    (x - median) / scale.max(min_scale)
}
