//! Model files: a learned baseline per entity class, versioned and self-describing.
//!
//! A file holds, per class, the feature names it was trained on, a seasonal profile (mean of each
//! feature per hour of day), the scaling and tail compression, a Gaussian mixture and the threshold on its negative
//! log-likelihood, with a summary of the training data and the figures measured at training time.
//! Scoring is a few fixed-size loops per interval: no allocation, no linear-algebra library.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::features::{hour_of_day, EntityClass, Vector, LEVEL_INTERVALS, MAX_FEATURES};

/// The model file format this engine reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// Components a mixture may have.
pub const MAX_COMPONENTS: usize = 8;

/// Why a class model cannot score with this engine's features.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Incompatible {
    #[error("features {found:?} differ from this engine's {expected:?}")]
    Features {
        found: Vec<String>,
        expected: Vec<String>,
    },
    #[error("features use a level of {0} intervals, this engine {LEVEL_INTERVALS}")]
    Level(f64),
    #[error("arrays do not match the feature count")]
    Shapes,
    #[error("component {0} has weight {1}")]
    Weight(usize, f64),
    #[error("component {0}'s covariance is not positive definite")]
    NotPositiveDefinite(usize),
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a model file: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error(
        "{path}: model format version {found}, but this engine reads version {FORMAT_VERSION}; \
         retrain it with `mqwatch train`"
    )]
    Version { path: PathBuf, found: u32 },
    #[error("{path}: class {class}: {problem}")]
    Invalid {
        path: PathBuf,
        class: &'static str,
        problem: Incompatible,
    },
    #[error("class {class} is defined by both {first} and {second}")]
    Duplicate {
        class: &'static str,
        first: PathBuf,
        second: PathBuf,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelFile {
    pub format_version: u32,
    pub name: String,
    /// The engine that trained it, e.g. `mqwatch 0.1.0`.
    pub trained_by: String,
    pub training: TrainingSummary,
    pub classes: BTreeMap<EntityClass, ClassModel>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingSummary {
    pub files: Vec<TrainingFile>,
    pub labels: Option<TrainingFile>,
    /// Event-time span of the data, Unix ms.
    pub from: i64,
    pub to: i64,
    /// Intervals inside labelled incidents (plus the scoring grace), left out of training.
    pub excluded_intervals: BTreeMap<EntityClass, usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingFile {
    pub path: String,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassModel {
    pub features: Vec<String>,
    /// How the features were defined: the level's time constant, in intervals.
    pub level_intervals: f64,
    /// Mean of each feature per hour of day (UTC), subtracted first.
    pub seasonal: Vec<Vec<f64>>,
    /// The mixture sees `asinh((x - seasonal - center) / spread)`: robustly scaled, tails
    /// compressed so that a few extreme intervals do not dominate the fit.
    pub center: Vec<f64>,
    pub spread: Vec<f64>,
    pub mixture: Mixture,
    /// Negative log-likelihood at or above which an interval is abnormal.
    pub threshold: f64,
    /// The quantile of held-out normal intervals the threshold was set at.
    pub threshold_quantile: f64,
    /// Mixture sizes tried, with their held-out mean negative log-likelihood.
    pub selection: Vec<Candidate>,
    pub evaluation: ClassEvaluation,
    #[serde(skip)]
    pub(super) compiled: Option<Arc<Compiled>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mixture {
    pub weights: Vec<f64>,
    pub means: Vec<Vec<f64>>,
    pub covariances: Vec<Vec<Vec<f64>>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub components: usize,
    pub holdout_nll: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassEvaluation {
    pub train_intervals: usize,
    pub holdout_intervals: usize,
    /// Share of held-out normal intervals at or above the threshold.
    pub holdout_flagged: f64,
    /// Labelled incident intervals (left out of training) and the share of them flagged.
    pub incident_intervals: usize,
    pub incident_flagged: Option<f64>,
}

/// A mixture prepared for scoring: per component, the log weight, mean, and the inverse of the
/// Cholesky factor's diagonal with the factor itself, so a score is one triangular solve each.
#[derive(Debug, PartialEq)]
pub(super) struct Compiled {
    dims: usize,
    components: usize,
    log_norm: [f64; MAX_COMPONENTS],
    means: [Vector; MAX_COMPONENTS],
    chol: [[Vector; MAX_FEATURES]; MAX_COMPONENTS],
    sd: [Vector; MAX_COMPONENTS],
}

/// What the model made of one interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Scored {
    /// Negative log-likelihood: the higher, the stranger.
    pub nll: f64,
    pub abnormal: bool,
    /// Each feature's distance from the most likely component's mean, in its standard deviations.
    pub z: Vector,
}

/// Intervals a class needs in training before its model may hold findings back (about five and a
/// half hours of one entity at 10 s).
pub const MIN_TRAIN_INTERVALS: usize = 2000;
/// Share of the labelled incident intervals a model must have found abnormal in training before
/// it may hold findings back: one that barely sees incidents would only veto real ones.
pub const MIN_INCIDENT_FLAGGED: f64 = 0.10;

impl ClassModel {
    /// Why this class's model may not hold findings back, if it may not: too little training
    /// data, no labelled incidents to show it can see them, or too few of them seen. Such a
    /// model still scores and explains, but vetoes nothing.
    pub fn veto_refused(&self) -> Option<String> {
        let e = &self.evaluation;
        if e.train_intervals < MIN_TRAIN_INTERVALS {
            return Some(format!(
                "trained on {} intervals, fewer than {MIN_TRAIN_INTERVALS}",
                e.train_intervals
            ));
        }
        match e.incident_flagged {
            None => Some("no labelled incidents to show it can see them".into()),
            Some(f) if f < MIN_INCIDENT_FLAGGED => Some(format!(
                "it found only {:.1}% of the labelled incident intervals abnormal",
                100.0 * f
            )),
            Some(_) => None,
        }
    }

    /// Checks the model against this engine's feature definitions and prepares it for scoring.
    pub fn compile(&mut self, class: EntityClass) -> Result<(), Incompatible> {
        let names = class.feature_names();
        if self
            .features
            .iter()
            .map(String::as_str)
            .ne(names.iter().copied())
        {
            return Err(Incompatible::Features {
                found: self.features.clone(),
                expected: names.iter().map(|n| n.to_string()).collect(),
            });
        }
        if (self.level_intervals - LEVEL_INTERVALS).abs() > 1e-9 {
            return Err(Incompatible::Level(self.level_intervals));
        }
        let d = names.len();
        let m = &self.mixture;
        let k = m.weights.len();
        let shapes_ok = self.seasonal.len() == 24
            && self.seasonal.iter().all(|h| h.len() == d)
            && self.center.len() == d
            && self.spread.len() == d
            && self.spread.iter().all(|s| *s > 0.0)
            && (1..=MAX_COMPONENTS).contains(&k)
            && m.means.len() == k
            && m.means.iter().all(|v| v.len() == d)
            && m.covariances.len() == k
            && m.covariances
                .iter()
                .all(|c| c.len() == d && c.iter().all(|r| r.len() == d));
        if !shapes_ok {
            return Err(Incompatible::Shapes);
        }
        let mut c = Compiled {
            dims: d,
            components: k,
            log_norm: [0.0; MAX_COMPONENTS],
            means: [[0.0; MAX_FEATURES]; MAX_COMPONENTS],
            chol: [[[0.0; MAX_FEATURES]; MAX_FEATURES]; MAX_COMPONENTS],
            sd: [[0.0; MAX_FEATURES]; MAX_COMPONENTS],
        };
        for j in 0..k {
            if m.weights[j].is_nan() || m.weights[j] <= 0.0 {
                return Err(Incompatible::Weight(j, m.weights[j]));
            }
            let l = cholesky(&m.covariances[j], d).ok_or(Incompatible::NotPositiveDefinite(j))?;
            let log_det: f64 = (0..d).map(|i| 2.0 * l[i][i].ln()).sum();
            c.log_norm[j] =
                m.weights[j].ln() - 0.5 * (d as f64 * (2.0 * std::f64::consts::PI).ln() + log_det);
            c.chol[j] = l;
            for i in 0..d {
                c.means[j][i] = m.means[j][i];
                c.sd[j][i] = m.covariances[j][i][i].sqrt();
            }
        }
        self.compiled = Some(Arc::new(c));
        Ok(())
    }

    /// Scores one interval's features (in the class's order) at event time `ts`.
    pub fn score(&self, x: &[f64], ts: i64) -> Scored {
        let c = self
            .compiled
            .as_ref()
            .expect("a model is compiled when it is loaded or trained");
        let d = c.dims;
        let season = &self.seasonal[hour_of_day(ts)];
        let mut u = [0.0; MAX_FEATURES];
        for i in 0..d {
            u[i] = ((x[i] - season[i] - self.center[i]) / self.spread[i]).asinh();
        }
        let mut logp = [f64::NEG_INFINITY; MAX_COMPONENTS];
        for (j, lp) in logp.iter_mut().enumerate().take(c.components) {
            // Solve L y = (u - mean): the squared norm of y is the Mahalanobis distance.
            let l = &c.chol[j];
            let mut y = [0.0; MAX_FEATURES];
            let mut dist = 0.0;
            for i in 0..d {
                let mut s = u[i] - c.means[j][i];
                for (k, yk) in y.iter().enumerate().take(i) {
                    s -= l[i][k] * yk;
                }
                y[i] = s / l[i][i];
                dist += y[i] * y[i];
            }
            *lp = c.log_norm[j] - 0.5 * dist;
        }
        let (best, top) = logp[..c.components].iter().copied().enumerate().fold(
            (0, f64::NEG_INFINITY),
            |a, (j, v)| if v > a.1 { (j, v) } else { a },
        );
        let sum: f64 = logp[..c.components].iter().map(|v| (v - top).exp()).sum();
        let nll = -(top + sum.ln());
        let mut z = [0.0; MAX_FEATURES];
        for i in 0..d {
            z[i] = (u[i] - c.means[best][i]) / c.sd[best][i];
        }
        Scored {
            nll,
            abnormal: nll >= self.threshold,
            z,
        }
    }

    /// "backlog_change +6.1σ, backlog_vs_level +4.0σ": the features that drove a score.
    pub fn explain(&self, s: &Scored, top: usize) -> String {
        let mut idx: Vec<usize> = (0..self.features.len()).collect();
        idx.sort_by(|&a, &b| s.z[b].abs().total_cmp(&s.z[a].abs()));
        idx.iter()
            .take(top)
            .map(|&i| format!("{} {:+.1}σ", self.features[i], s.z[i]))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The lower Cholesky factor of a symmetric positive-definite matrix.
fn cholesky(a: &[Vec<f64>], d: usize) -> Option<[Vector; MAX_FEATURES]> {
    let mut l = [[0.0; MAX_FEATURES]; MAX_FEATURES];
    for i in 0..d {
        for j in 0..=i {
            let s: f64 = a[i][j] - (0..j).map(|k| l[i][k] * l[j][k]).sum::<f64>();
            if i == j {
                if s.is_nan() || s <= 0.0 || !s.is_finite() {
                    return None;
                }
                l[i][i] = s.sqrt();
            } else {
                l[i][j] = s / l[j][j];
            }
        }
    }
    Some(l)
}

impl ModelFile {
    pub fn load(path: &Path) -> Result<ModelFile, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
            path: path.into(),
            source,
        })?;
        // The version is checked before the rest, so a newer format fails on its version.
        #[derive(Deserialize)]
        struct Head {
            format_version: u32,
        }
        let head: Head = serde_json::from_str(&text).map_err(|source| ModelError::Parse {
            path: path.into(),
            source,
        })?;
        if head.format_version != FORMAT_VERSION {
            return Err(ModelError::Version {
                path: path.into(),
                found: head.format_version,
            });
        }
        let mut file: ModelFile =
            serde_json::from_str(&text).map_err(|source| ModelError::Parse {
                path: path.into(),
                source,
            })?;
        file.compile()
            .map_err(|(class, problem)| ModelError::Invalid {
                path: path.into(),
                class: class.as_str(),
                problem,
            })?;
        Ok(file)
    }

    pub fn compile(&mut self) -> Result<(), (EntityClass, Incompatible)> {
        for (class, m) in self.classes.iter_mut() {
            m.compile(*class).map_err(|e| (*class, e))?;
        }
        Ok(())
    }

    pub fn save(&self, path: &Path) -> Result<(), ModelError> {
        let io = |source| ModelError::Io {
            path: path.into(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let text = serde_json::to_string_pretty(self).expect("models always serialise");
        std::fs::write(path, text + "\n").map_err(io)
    }
}

/// The models an engine scores with: at most one per entity class.
#[derive(Debug, Clone, Default)]
pub struct ModelSet {
    pub by_class: BTreeMap<EntityClass, Arc<ClassModel>>,
    /// Where each class's model came from.
    pub sources: BTreeMap<EntityClass, PathBuf>,
}

impl ModelSet {
    /// Every `*.json` model in `dir`, in name order; a class defined twice is an error.
    pub fn load_dir(dir: &Path) -> Result<ModelSet, ModelError> {
        let io = |source| ModelError::Io {
            path: dir.into(),
            source,
        };
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        paths.sort();
        let mut set = ModelSet::default();
        for p in paths {
            set.add(ModelFile::load(&p)?, &p)?;
        }
        Ok(set)
    }

    pub fn add(&mut self, file: ModelFile, path: &Path) -> Result<(), ModelError> {
        for (class, m) in file.classes {
            if let Some(first) = self.sources.get(&class) {
                return Err(ModelError::Duplicate {
                    class: class.as_str(),
                    first: first.clone(),
                    second: path.into(),
                });
            }
            self.sources.insert(class, path.into());
            self.by_class.insert(class, Arc::new(m));
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.by_class.is_empty()
    }

    pub fn get(&self, class: EntityClass) -> Option<&Arc<ClassModel>> {
        self.by_class.get(&class)
    }
}

/// A latency model of one standard normal component with threshold 10, uncompiled.
#[cfg(test)]
pub(crate) fn unit_model(d: usize) -> ClassModel {
    let eye: Vec<Vec<f64>> = (0..d)
        .map(|i| (0..d).map(|j| f64::from(u8::from(i == j))).collect())
        .collect();
    ClassModel {
        features: EntityClass::Latency
            .feature_names()
            .iter()
            .map(|s| s.to_string())
            .collect(),
        level_intervals: LEVEL_INTERVALS,
        seasonal: vec![vec![0.0; d]; 24],
        center: vec![0.0; d],
        spread: vec![1.0; d],
        mixture: Mixture {
            weights: vec![1.0],
            means: vec![vec![0.0; d]],
            covariances: vec![eye],
        },
        threshold: 10.0,
        threshold_quantile: 0.999,
        selection: Vec::new(),
        // As a model trained on enough data that saw the labelled incidents.
        evaluation: ClassEvaluation {
            train_intervals: 10_000,
            holdout_intervals: 2_000,
            holdout_flagged: 0.001,
            incident_intervals: 100,
            incident_flagged: Some(0.5),
        },
        compiled: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_standard_normal_scores_as_one() {
        let mut m = unit_model(3);
        m.compile(EntityClass::Latency).unwrap();
        let s = m.score(&[0.0, 0.0, 0.0], 0);
        let expected = 1.5 * (2.0 * std::f64::consts::PI).ln();
        assert!((s.nll - expected).abs() < 1e-12);
        // Tails are compressed: 100 units out weigh as asinh(100) ≈ 5.3.
        let far = m.score(&[0.0, 100.0, 0.0], 0);
        let u = 100f64.asinh();
        assert!((far.nll - expected - 0.5 * u * u).abs() < 1e-12);
        assert!(far.abnormal && !s.abnormal);
        assert_eq!(m.explain(&far, 1), "p99_vs_level +5.3σ");
    }

    #[test]
    fn a_model_for_other_features_is_refused() {
        let mut m = unit_model(3);
        m.features[0] = "p75_vs_level".into();
        let e = m.compile(EntityClass::Latency).unwrap_err();
        assert!(e.to_string().contains("p75_vs_level"), "{e}");
        let mut m = unit_model(3);
        m.mixture.covariances[0][1][1] = -1.0;
        assert!(m.compile(EntityClass::Latency).is_err());
    }
}
