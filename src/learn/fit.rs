//! Fitting: one model per entity class from normal intervals' feature rows. Pure: rows in,
//! models out; where the rows come from (a replay of history, labels left out) is the offline
//! tool's business (`dataset::train`).
//!
//! The mixture size is chosen by measurement: each candidate is fitted (linfa's Gaussian mixture)
//! on the first 80% of the span and judged by its mean negative log-likelihood on the last 20%;
//! the threshold is a high quantile of that held-out score, so it says how often a normal
//! interval will be called abnormal.

use std::collections::BTreeMap;

use linfa::traits::Fit;
use linfa::DatasetBase;
use linfa_clustering::{GaussianMixtureModel, GmmInitMethod};
use ndarray::Array2;
use rand_xoshiro::rand_core::SeedableRng;
use rand_xoshiro::Xoshiro256Plus;

use super::features::{hour_of_day, EntityClass, FeatureRow, LEVEL_INTERVALS};
use super::model::{Candidate, ClassEvaluation, ClassModel, Mixture};

#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub name: String,
    /// Mixture sizes to try.
    pub components: Vec<usize>,
    /// Quantile of held-out normal scores at which the threshold is set.
    pub threshold_quantile: f64,
    /// At most this many intervals per class go into a fit (evenly thinned beyond it).
    pub max_rows: usize,
    pub seed: u64,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            name: "model".into(),
            components: vec![1, 2, 3, 4, 6],
            threshold_quantile: 0.999,
            max_rows: 40_000,
            seed: 42,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FitError {
    #[error("no entity class had enough intervals to learn from")]
    NothingToLearn,
    #[error("{0}: no mixture could be fitted")]
    NoMixture(&'static str),
}

/// Fits one model per class from its normal intervals (`normal`), judging each against the
/// class's incident intervals (`incident`) for the record. The last fifth of `span` is held out
/// to choose the mixture size and set the threshold. A class with too few intervals is skipped
/// (and said so); none left is an error.
pub fn fit(
    normal: &BTreeMap<EntityClass, Vec<&FeatureRow>>,
    incident: &BTreeMap<EntityClass, Vec<&FeatureRow>>,
    span: (i64, i64),
    opts: &TrainOptions,
) -> Result<BTreeMap<EntityClass, ClassModel>, FitError> {
    let holdout_from = span.0 + (span.1 - span.0) * 4 / 5;
    let mut classes = BTreeMap::new();
    for (&class, rows) in normal {
        let (fit, holdout): (Vec<&FeatureRow>, Vec<&FeatureRow>) =
            rows.iter().partition(|r| r.ts < holdout_from);
        if fit.len() < 200 || holdout.len() < 50 {
            tracing::warn!(
                class = class.as_str(),
                fit = fit.len(),
                holdout = holdout.len(),
                "too few intervals to learn this class; skipped"
            );
            continue;
        }
        let incident = incident.get(&class).map_or(&[][..], Vec::as_slice);
        classes.insert(class, fit_class(class, &fit, &holdout, incident, opts)?);
    }
    if classes.is_empty() {
        return Err(FitError::NothingToLearn);
    }
    Ok(classes)
}

fn fit_class(
    class: EntityClass,
    fit: &[&FeatureRow],
    holdout: &[&FeatureRow],
    incident: &[&FeatureRow],
    opts: &TrainOptions,
) -> Result<ClassModel, FitError> {
    let d = class.dims();
    let seasonal = seasonal_profile(fit, d);
    let step = fit.len().div_ceil(opts.max_rows).max(1);
    let sample: Vec<&FeatureRow> = fit.iter().copied().step_by(step).collect();
    let deseason = |r: &FeatureRow| -> Vec<f64> {
        let h = &seasonal[hour_of_day(r.ts)];
        (0..d).map(|i| r.x[i] - h[i]).collect()
    };
    let flat: Vec<Vec<f64>> = sample.iter().map(|r| deseason(r)).collect();
    // Robust scaling: a few extreme intervals must not set the unit everything is measured in.
    let column = |i: usize| -> Vec<f64> { flat.iter().map(|v| v[i]).collect() };
    let center: Vec<f64> = (0..d).map(|i| median(column(i))).collect();
    let spread: Vec<f64> = (0..d)
        .map(|i| {
            let dev = column(i).iter().map(|v| (v - center[i]).abs()).collect();
            (1.4826 * median(dev)).max(1e-2)
        })
        .collect();
    // A feature that never varied in training (no queue ever lost its consumers) is left out of
    // the fit, which cannot handle it, and gets unit variance: any change in it is far out.
    let active: Vec<usize> = (0..d)
        .filter(|&i| flat.iter().any(|v| (v[i] - center[i]).abs() > 1e-12))
        .collect();
    let scaled = Array2::from_shape_fn((flat.len(), active.len()), |(r, a)| {
        let i = active[a];
        ((flat[r][i] - center[i]) / spread[i]).asinh()
    });
    let dataset = DatasetBase::from(scaled);

    // The best candidate, with its held-out scores.
    let mut best: Option<(ClassModel, f64, Vec<f64>)> = None;
    let mut selection = Vec::new();
    for &k in &opts.components {
        let fit_with = |init: GmmInitMethod| {
            GaussianMixtureModel::params(k)
                .n_runs(2)
                .tolerance(1e-4)
                .max_n_iterations(300)
                .reg_covariance(1e-3)
                .init_method(init)
                .with_rng(Xoshiro256Plus::seed_from_u64(opts.seed))
                .fit(&dataset)
        };
        let gmm = fit_with(GmmInitMethod::KMeans).or_else(|e| {
            tracing::debug!(
                class = class.as_str(),
                k,
                "k-means start failed ({e}); random start"
            );
            fit_with(GmmInitMethod::Random)
        });
        let gmm = match gmm {
            Ok(g) => g,
            Err(e) => {
                tracing::info!(class = class.as_str(), k, "mixture did not fit: {e}");
                continue;
            }
        };
        let mut model = ClassModel {
            features: class
                .feature_names()
                .iter()
                .map(|s| s.to_string())
                .collect(),
            level_intervals: LEVEL_INTERVALS,
            seasonal: seasonal.clone(),
            center: center.clone(),
            spread: spread.clone(),
            mixture: expand(&gmm, &active, d),
            threshold: f64::INFINITY,
            threshold_quantile: opts.threshold_quantile,
            selection: Vec::new(),
            evaluation: ClassEvaluation {
                train_intervals: fit.len(),
                holdout_intervals: holdout.len(),
                holdout_flagged: 0.0,
                incident_intervals: incident.len(),
                incident_flagged: None,
            },
            compiled: Default::default(),
        };
        if model.compile(class).is_err() {
            continue;
        }
        let scores: Vec<f64> = holdout
            .iter()
            .map(|r| model.score(r.features(), r.ts).nll)
            .collect();
        let holdout_nll = scores.iter().sum::<f64>() / scores.len() as f64;
        selection.push(Candidate {
            components: k,
            holdout_nll,
        });
        if best.as_ref().is_none_or(|(_, b, _)| holdout_nll < *b) {
            best = Some((model, holdout_nll, scores));
        }
    }
    let (mut model, _, mut scores) = best.ok_or(FitError::NoMixture(class.as_str()))?;
    scores.sort_by(f64::total_cmp);
    let at = ((scores.len() - 1) as f64 * opts.threshold_quantile).round() as usize;
    model.threshold = scores[at];
    model.selection = selection;
    let share = |n: usize, of: usize| n as f64 / of.max(1) as f64;
    model.evaluation.holdout_flagged = share(
        scores.iter().filter(|&&s| s >= model.threshold).count(),
        scores.len(),
    );
    if !incident.is_empty() {
        let flagged = incident
            .iter()
            .filter(|r| model.score(r.features(), r.ts).abnormal)
            .count();
        model.evaluation.incident_flagged = Some(share(flagged, incident.len()));
    }
    Ok(model)
}

/// The fitted mixture over all `d` features: the left-out ones at mean 0 with unit variance.
fn expand(gmm: &GaussianMixtureModel<f64>, active: &[usize], d: usize) -> Mixture {
    let mut out = Mixture {
        weights: gmm.weights().to_vec(),
        means: Vec::new(),
        covariances: Vec::new(),
    };
    for (mean, cov) in gmm.means().outer_iter().zip(gmm.covariances().outer_iter()) {
        let mut m = vec![0.0; d];
        let mut c = vec![vec![0.0; d]; d];
        (0..d).for_each(|i| c[i][i] = 1.0);
        for (a, &i) in active.iter().enumerate() {
            m[i] = mean[a];
            for (b, &j) in active.iter().enumerate() {
                c[i][j] = cov[[a, b]];
            }
        }
        out.means.push(m);
        out.covariances.push(c);
    }
    out
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Mean of each feature per hour of day; hours with few intervals fall back to the overall mean.
fn seasonal_profile(rows: &[&FeatureRow], d: usize) -> Vec<Vec<f64>> {
    let mut sum = vec![vec![0.0; d]; 24];
    let mut count = [0usize; 24];
    for r in rows {
        let h = hour_of_day(r.ts);
        count[h] += 1;
        for (s, x) in sum[h].iter_mut().zip(&r.x[..d]) {
            *s += x;
        }
    }
    let total: Vec<f64> = (0..d)
        .map(|i| sum.iter().map(|h| h[i]).sum::<f64>() / rows.len().max(1) as f64)
        .collect();
    (0..24)
        .map(|h| {
            if count[h] < 60 {
                return total.clone();
            }
            (0..d).map(|i| sum[h][i] / count[h] as f64).collect()
        })
        .collect()
}
