//! Learned baselines: what a whole class of entities looks like when nothing is wrong.
//!
//! The statistical detectors judge each entity against its own recent past; they are quick but
//! cannot tell a harmless shape (a rebalance, a settlement burst) from a harmful one they have not
//! seen. A learned baseline is fitted offline (`mqwatch train`) on weeks of intervals of every
//! entity of a class, with labelled incidents left out, and stored in `models/`. Live, each
//! entity's [`LearnedTrack`] scores its interval features; a statistical latency or backlog
//! finding is *confirmed* only when the model also found one of the recent intervals abnormal,
//! and the alert then names the features that drove the score. Stall findings are rules (Burrow's
//! evaluation) and are never held back.

mod features;
mod model;
mod train;

pub use features::{
    hour_of_day, EntityClass, FeatureRow, FeatureState, Raw, Vector, LEVEL_INTERVALS, MAX_FEATURES,
    WARMUP_INTERVALS,
};
pub use model::{
    Candidate, ClassEvaluation, ClassModel, Mixture, ModelError, ModelFile, ModelSet, Scored,
    TrainingFile, TrainingSummary, FORMAT_VERSION,
};
pub use train::{collect_rows, train, training_rows, TrainOptions, TrainingSet};

use std::sync::Arc;

use crossbeam_channel::Sender;

use crate::alert::Entity;
use crate::detect::{AlertKind, Finding};

/// One entity's learned-baseline state: its features, its class model (if loaded) and the time
/// the model last found an interval abnormal.
#[derive(Debug, Clone)]
pub struct LearnedTrack {
    features: FeatureState,
    model: Option<Arc<ClassModel>>,
    tap: Option<Sender<FeatureRow>>,
    /// The latest interval the model found abnormal, and how it scored.
    abnormal: Option<(i64, Scored)>,
    confirm_ms: i64,
}

impl LearnedTrack {
    pub fn new(
        model: Option<Arc<ClassModel>>,
        tap: Option<Sender<FeatureRow>>,
        confirm_ms: i64,
    ) -> Self {
        LearnedTrack {
            features: FeatureState::default(),
            model,
            tap,
            abnormal: None,
            confirm_ms,
        }
    }

    /// Takes the interval ending at `now` (`raw` is `None` when the entity measured nothing) and
    /// passes on the detector's finding if the model confirms it (see [`confirm`](Self::confirm)).
    pub fn judge(
        &mut self,
        now: i64,
        entity: &Arc<Entity>,
        raw: Option<Raw>,
        finding: Option<Finding>,
        already_firing: bool,
    ) -> Option<Finding> {
        self.observe(now, entity, raw);
        self.confirm(now, finding, already_firing)
    }

    fn observe(&mut self, now: i64, entity: &Arc<Entity>, raw: Option<Raw>) {
        let Some(raw) = raw else {
            return;
        };
        let Some(x) = self.features.next(&raw) else {
            return;
        };
        let class = raw.class();
        let scored = self
            .model
            .as_ref()
            .map(|m| m.score(&x[..class.dims()], now));
        if let Some(s) = scored.filter(|s| s.abnormal) {
            self.abnormal = Some((now, s));
        }
        if let Some(tap) = &self.tap {
            let _ = tap.send(FeatureRow {
                entity: entity.clone(),
                class,
                ts: now,
                primary: raw.primary(),
                x,
                score: scored.map(|s| s.nll),
            });
        }
    }

    /// A latency or backlog finding passes when the model agrees (it found an interval abnormal
    /// within the confirmation window) or the episode is already open; without a model every
    /// finding passes. A confirmed finding is explained by the model's strongest features.
    fn confirm(&self, now: i64, finding: Option<Finding>, already_firing: bool) -> Option<Finding> {
        let mut f = finding?;
        let Some(model) = &self.model else {
            return Some(f);
        };
        if !matches!(f.kind, AlertKind::Latency | AlertKind::BacklogGrowth) || already_firing {
            return Some(f);
        }
        let (at, s) = self.abnormal?;
        if now.saturating_sub(at) > self.confirm_ms {
            return None;
        }
        f.summary
            .push_str(&format!("; learned baseline: {}", model.explain(&s, 2)));
        f.context.push(("learned_score", s.nll));
        f.context.push(("learned_threshold", model.threshold));
        Some(f)
    }
}
