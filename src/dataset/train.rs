//! Training as a data scientist runs it (`mqwatch train`): replay history through the engine,
//! keep every entity's interval features, leave out the labelled incidents, fit one model per
//! class with [`crate::learn::fit`], and record what the model was trained on.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::eval::GRACE_MS;
use super::labels::{same_entity, LabelFile};
use crate::alert::Entity;
use crate::config::Config;
use crate::learn::{
    fit, EntityClass, FeatureRow, FitError, ModelFile, TrainOptions, TrainingFile, TrainingSummary,
    FORMAT_VERSION,
};
use crate::run::{replay, ReplayOptions, RunError};

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Replay(#[from] RunError),
    #[error(transparent)]
    Fit(#[from] FitError),
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
}

/// Replays event files through the engine (no models loaded) and returns every entity's
/// per-interval feature rows, in event-time order, with the data's span.
pub fn collect_rows(
    config: &Config,
    events: &[PathBuf],
) -> Result<(Vec<FeatureRow>, (i64, i64)), RunError> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let opts = ReplayOptions {
        learned: crate::pipeline::Learned {
            models: None,
            features: Some(tx),
        },
        ..Default::default()
    };
    let report = replay(Arc::new(config.clone()), events, Vec::new(), &opts)?;
    let mut rows: Vec<FeatureRow> = rx.try_iter().collect();
    // Workers interleave freely; a fixed order makes training reproducible.
    rows.sort_by(|a, b| (a.ts, &a.entity.display).cmp(&(b.ts, &b.entity.display)));
    let span = report.input.span.unwrap_or((0, 0));
    Ok((rows, span))
}

/// Rows split by class into those fit for training and those inside labelled incidents.
#[derive(Debug, Default)]
pub struct TrainingSet<'a> {
    pub normal: BTreeMap<EntityClass, Vec<&'a FeatureRow>>,
    pub incident: BTreeMap<EntityClass, Vec<&'a FeatureRow>>,
}

/// Leaves out every interval of an entity inside one of its labelled incidents (from the start to
/// the end plus the scoring grace, when its aftermath still shows).
pub fn training_rows<'a>(rows: &'a [FeatureRow], labels: Option<&LabelFile>) -> TrainingSet<'a> {
    let mut set = TrainingSet::default();
    let mut windows: HashMap<*const Entity, Vec<(i64, i64)>> = HashMap::new();
    for r in rows {
        let w = windows.entry(Arc::as_ptr(&r.entity)).or_insert_with(|| {
            let labels_of = r.entity.label_map();
            labels
                .map(|l| {
                    l.incidents
                        .iter()
                        .filter(|i| same_entity(&i.labels, &labels_of))
                        .map(|i| (i.start, i.end + GRACE_MS))
                        .collect()
                })
                .unwrap_or_default()
        });
        let inside = w.iter().any(|&(a, b)| (a..=b).contains(&r.ts));
        let side = if inside {
            &mut set.incident
        } else {
            &mut set.normal
        };
        side.entry(r.class).or_default().push(r);
    }
    set
}

/// Fits a model file from feature rows. `files` and `labels` are recorded in its summary.
pub fn train(
    rows: &[FeatureRow],
    span: (i64, i64),
    labels: Option<(&LabelFile, &Path)>,
    files: &[PathBuf],
    opts: &TrainOptions,
) -> Result<ModelFile, TrainError> {
    let set = training_rows(rows, labels.map(|l| l.0));
    let classes = fit(&set.normal, &set.incident, span, opts)?;
    Ok(ModelFile {
        format_version: FORMAT_VERSION,
        name: opts.name.clone(),
        trained_by: format!("mqwatch {}", env!("CARGO_PKG_VERSION")),
        training: TrainingSummary {
            files: files
                .iter()
                .map(|p| fingerprint(p))
                .collect::<Result<_, _>>()?,
            labels: labels.map(|(_, p)| fingerprint(p)).transpose()?,
            from: span.0,
            to: span.1,
            excluded_intervals: set.incident.iter().map(|(c, v)| (*c, v.len())).collect(),
        },
        classes,
    })
}

fn fingerprint(path: &Path) -> Result<TrainingFile, TrainError> {
    let read = |source| TrainError::Read {
        path: path.display().to_string(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(read)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut f, &mut hasher).map_err(read)?;
    Ok(TrainingFile {
        path: path.display().to_string(),
        sha256: format!("{:x}", hasher.finalize()),
    })
}
