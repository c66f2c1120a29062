//! Labelled incidents: the ground truth `eval` scores against and `gen` writes.
//!
//! ```json
//! {"scenario": "payments", "seed": 7, "start": 1767592800000, "end": 1767614400000,
//!  "incidents": [{"kind": "consumer_stall", "name": "partition_stall",
//!                 "labels": {"cluster": "pay-kafka", "topic": "payments.authorize", "consumergroup": "auth-service", "partition": "3"},
//!                 "start": 1767594600000, "end": 1767595200000}],
//!  "traps": [{"name": "rebalance", "labels": {...}, "start": ..., "end": ...}]}
//! ```
//! Only `incidents` is required; `traps` lists events that look alarming but must stay quiet.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::detect::AlertKind;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub kind: AlertKind,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub start: i64,
    pub end: i64,
    /// When a gradual incident (a slow drift) first stands out from normal variation, where the
    /// labeller knows: its delay is judged from then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distinguishable_at: Option<i64>,
}

/// Something that must not alert: a rebalance, an end-of-day burst, a scrape gap.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trap {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub start: i64,
    pub end: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LabelFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scenario: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Span of the dataset, Unix ms; when absent, the events' own span is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<i64>,
    pub incidents: Vec<Incident>,
    #[serde(default)]
    pub traps: Vec<Trap>,
}

impl LabelFile {
    pub fn load(path: &Path) -> Result<LabelFile, LabelError> {
        let path_text = || path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| LabelError::Read {
            path: path_text(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| LabelError::Parse {
            path: path_text(),
            source,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LabelError {
    #[error("cannot read labels {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("labels {path}: {source}")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
}

/// A short name for the entity labels describe: topic/group/partition or queue.
pub fn entity_name(labels: &BTreeMap<String, String>) -> String {
    let parts: Vec<&str> = ["topic", "consumergroup", "partition", "queue"]
        .iter()
        .filter_map(|k| labels.get(*k).map(String::as_str))
        .collect();
    parts.join("/")
}

/// Whether two label sets name the same entity for scoring: the same cluster (where both say),
/// and the same topic or the same queue. Partitions and groups may differ.
pub fn same_entity(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> bool {
    let same = |k: &str| matches!((a.get(k), b.get(k)), (Some(x), Some(y)) if x == y);
    let cluster_ok = match (a.get("cluster"), b.get("cluster")) {
        (Some(x), Some(y)) => x == y,
        _ => true,
    };
    cluster_ok && (same("topic") || same("queue"))
}
