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
mod fit;
mod model;

pub use features::{
    hour_of_day, EntityClass, FeatureRow, FeatureState, Raw, Vector, LEVEL_INTERVALS, MAX_FEATURES,
    WARMUP_INTERVALS,
};
pub use fit::{fit, FitError, TrainOptions};
pub use model::{
    Candidate, ClassEvaluation, ClassModel, Mixture, ModelError, ModelFile, ModelSet, Scored,
    TrainingFile, TrainingSummary, FORMAT_VERSION, MIN_INCIDENT_FLAGGED, MIN_TRAIN_INTERVALS,
};

use std::sync::Arc;

use crossbeam_channel::Sender;
use serde::{Deserialize, Serialize};

use crate::alert::Entity;
use crate::config::LearnedConfig;
use crate::detect::{AlertKind, Finding};

/// One entity's learned-baseline state: its features, its class model (if loaded), the time
/// the model last found an interval abnormal, and whether the model can be trusted here.
///
/// A checkpoint keeps what the track learned of its entity; the model, the feature tap and the
/// settings come from the run in force ([`LearnedTrack::attach`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LearnedTrack {
    features: FeatureState,
    #[serde(skip)]
    model: Option<Arc<ClassModel>>,
    #[serde(skip)]
    tap: Option<Sender<FeatureRow>>,
    /// The latest interval the model found abnormal, and how it scored.
    abnormal: Option<(i64, Scored)>,
    #[serde(skip)]
    confirm_ms: i64,
    /// How long a finding the model does not confirm is held back at most.
    #[serde(skip)]
    hold_ms: i64,
    /// A finding held back: since when, and when it was last seen.
    held: Option<(i64, i64)>,
    trust: Trust,
    /// Whether the class model earned, in training, the right to hold findings back.
    #[serde(skip)]
    may_veto: bool,
    /// The model's score of the last interval it scored.
    last_score: Option<f64>,
}

/// A model is fitted to find about 0.1% of normal intervals abnormal. One that finds far more
/// of an entity's intervals abnormal has met data unlike its training data: it is out of its
/// depth there, and steps aside (confirms every finding) until the share falls back.
const UNTRUSTED_SHARE: f64 = 0.05;
const TRUSTED_AGAIN_SHARE: f64 = 0.02;
/// Intervals the share is measured over (about an hour at 10 s), and scored before it counts:
/// until then the model has no evidence about this entity and holds nothing back.
const TRUST_WINDOW: f64 = 360.0;
const TRUST_AFTER: u32 = 60;

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Trust {
    scored: u32,
    /// Share of recent intervals the model found abnormal (a moving average over the window).
    flagged: f64,
    out_of_depth: bool,
}

impl Trust {
    fn observe(&mut self, abnormal: bool, entity: &Entity) {
        self.scored = self.scored.saturating_add(1);
        let n = (self.scored as f64).min(TRUST_WINDOW);
        self.flagged += (f64::from(u8::from(abnormal)) - self.flagged) / n;
        if self.scored < TRUST_AFTER {
            return;
        }
        if !self.out_of_depth && self.flagged > UNTRUSTED_SHARE {
            self.out_of_depth = true;
            tracing::warn!(
                entity = %entity.display,
                flagged_share = self.flagged,
                "the learned model finds {:.0}% of this entity's intervals abnormal: it is out of \
                 its depth here and confirms every finding until that falls below {:.0}%",
                self.flagged * 100.0,
                TRUSTED_AGAIN_SHARE * 100.0
            );
        } else if self.out_of_depth && self.flagged < TRUSTED_AGAIN_SHARE {
            self.out_of_depth = false;
            tracing::info!(entity = %entity.display, "the learned model is trusted here again");
        }
    }

    /// Whether the model may hold findings back for this entity.
    fn trusted(&self) -> bool {
        self.scored >= TRUST_AFTER && !self.out_of_depth
    }
}

impl LearnedTrack {
    pub fn new(
        model: Option<Arc<ClassModel>>,
        tap: Option<Sender<FeatureRow>>,
        cfg: &LearnedConfig,
    ) -> Self {
        let mut track = LearnedTrack {
            features: FeatureState::default(),
            model: None,
            tap: None,
            abnormal: None,
            confirm_ms: 0,
            hold_ms: 0,
            held: None,
            trust: Trust {
                scored: 0,
                flagged: 0.0,
                out_of_depth: false,
            },
            may_veto: false,
            last_score: None,
        };
        track.attach(model, tap, cfg);
        track
    }

    /// Takes the run's model, feature tap and settings: what a track restored from a checkpoint
    /// goes on with.
    pub fn attach(
        &mut self,
        model: Option<Arc<ClassModel>>,
        tap: Option<Sender<FeatureRow>>,
        cfg: &LearnedConfig,
    ) {
        self.may_veto = model.as_ref().is_some_and(|m| m.veto_refused().is_none());
        self.model = model;
        self.tap = tap;
        self.confirm_ms = cfg.confirm_window.as_millis() as i64;
        self.hold_ms = cfg.hold_at_most.as_millis() as i64;
    }

    /// Whether a loaded model judges this entity (it has seen enough of it, and does not find
    /// much of it abnormal); `None` without a model.
    pub fn model_trusted(&self) -> Option<bool> {
        self.model.as_ref().map(|_| self.trust.trusted())
    }

    /// What the model makes of this entity, for the operations surface; `None` without a model.
    pub fn model_status(&self) -> Option<crate::status::ModelStatus> {
        self.model.as_ref().map(|m| crate::status::ModelStatus {
            trusted: self.trust.trusted(),
            score: self.last_score,
            threshold: m.threshold,
        })
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
        if let Some(s) = scored {
            self.last_score = Some(s.nll);
            self.trust.observe(s.abnormal, entity);
            if s.abnormal {
                self.abnormal = Some((now, s));
            }
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
    /// within the confirmation window), the episode is already open, or the model is not
    /// trusted for this entity (see [`Trust`]); without a model every finding passes. A
    /// confirmed finding is explained by the model's strongest features. The model holds a
    /// finding back, never silences it: one that lasts `hold_at_most` fires anyway, saying the
    /// model saw nothing abnormal.
    fn confirm(
        &mut self,
        now: i64,
        finding: Option<Finding>,
        already_firing: bool,
    ) -> Option<Finding> {
        let mut f = finding?;
        let Some(model) = &self.model else {
            return Some(f);
        };
        if !matches!(f.kind, AlertKind::Latency | AlertKind::BacklogGrowth) || already_firing {
            return Some(f);
        }
        // A model that knows too little of this entity, is out of its depth here, or never
        // showed in training that it sees incidents of this class, has no evidence against it.
        if !self.trust.trusted() || !self.may_veto {
            return Some(f);
        }
        if let Some((_, s)) = self
            .abnormal
            .filter(|(at, _)| now.saturating_sub(*at) <= self.confirm_ms)
        {
            self.held = None;
            f.summary
                .push_str(&format!("; learned baseline: {}", model.explain(&s, 2)));
            f.context.push(("learned_score", s.nll));
            f.context.push(("learned_threshold", model.threshold));
            return Some(f);
        }
        // The same finding is still held if it was last seen within the confirmation window: a
        // thinly scraped entity has findings only in the intervals its samples land in.
        let since = match self.held {
            Some((since, last)) if now.saturating_sub(last) <= self.confirm_ms => since,
            _ => now,
        };
        if now.saturating_sub(since) < self.hold_ms {
            self.held = Some((since, now));
            return None;
        }
        self.held = None;
        f.summary.push_str(&format!(
            "; the learned baseline saw nothing abnormal, but it has lasted {} s",
            (now - since) / 1000
        ));
        Some(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::Severity;

    fn finding(kind: AlertKind) -> Option<Finding> {
        Some(Finding {
            kind,
            severity: Severity::Warning,
            detector: "test",
            metric: "p99",
            observed: 2.0,
            expected: 1.0,
            score: 5.0,
            summary: "p99 doubled".into(),
            detail: Vec::new(),
            context: Vec::new(),
        })
    }

    fn latency(p99: f64) -> Option<Raw> {
        Some(Raw::Latency { p50: 10.0, p99 })
    }

    fn config() -> LearnedConfig {
        LearnedConfig {
            confirm_window: std::time::Duration::from_secs(20),
            hold_at_most: std::time::Duration::from_secs(60),
        }
    }

    /// A latency stream judged by the unit test model.
    fn latency_track() -> (LearnedTrack, Arc<Entity>) {
        let mut model = model::unit_model(3);
        model.compile(EntityClass::Latency).unwrap();
        let entity = Entity::new(Vec::new(), "t/g".into());
        (
            LearnedTrack::new(Some(Arc::new(model)), None, &config()),
            entity,
        )
    }

    #[test]
    fn a_finding_the_model_does_not_confirm_is_held_back_for_a_while_not_for_ever() {
        let (mut track, entity) = latency_track();
        let mut t = 0;
        let mut step = |track: &mut LearnedTrack, f| {
            t += 10_000;
            track.judge(t, &entity, latency(40.0), f, false)
        };
        for _ in 0..=WARMUP_INTERVALS + TRUST_AFTER {
            step(&mut track, None);
        }
        assert_eq!(track.model_trusted(), Some(true));
        let backlog = || finding(AlertKind::BacklogGrowth);
        for i in 0..6 {
            assert!(step(&mut track, backlog()).is_none(), "held at {i}0 s");
        }
        let f = step(&mut track, backlog()).expect("held 60 s: fires");
        assert!(
            f.summary
                .ends_with("the learned baseline saw nothing abnormal, but it has lasted 60 s"),
            "{}",
            f.summary
        );
        // A gap in the finding no longer than the confirmation window does not restart the hold.
        assert!(step(&mut track, None).is_none());
        assert!(step(&mut track, None).is_none());
        for i in 0..6 {
            assert!(step(&mut track, backlog()).is_none(), "held anew at {i}0 s");
        }
        assert!(step(&mut track, None).is_none());
        assert!(
            step(&mut track, backlog()).is_some(),
            "70 s since it was first held"
        );
    }

    #[test]
    fn the_model_holds_back_what_it_finds_normal_and_explains_what_it_confirms() {
        let (mut track, entity) = latency_track();
        let mut t = 0;
        let mut step = |track: &mut LearnedTrack, raw, f, firing| {
            t += 10_000;
            track.judge(t, &entity, raw, f, firing)
        };
        for _ in 0..=WARMUP_INTERVALS {
            step(&mut track, latency(40.0), None, false);
        }
        // Before the model has scored enough of this entity it holds nothing back.
        assert_eq!(track.model_trusted(), Some(false));
        assert!(step(
            &mut track,
            latency(40.0),
            finding(AlertKind::Latency),
            false
        )
        .is_some());
        for _ in 0..TRUST_AFTER {
            step(&mut track, latency(40.0), None, false);
        }
        assert_eq!(track.model_trusted(), Some(true));
        // Normal to the model: a statistical latency finding is held back, a stall is not.
        assert!(step(
            &mut track,
            latency(40.0),
            finding(AlertKind::Latency),
            false
        )
        .is_none());
        assert!(step(
            &mut track,
            latency(40.0),
            finding(AlertKind::ConsumerStall),
            false
        )
        .is_some());
        // An episode already open goes on.
        assert!(step(&mut track, latency(40.0), finding(AlertKind::Latency), true).is_some());
        // Far out: confirmed, and explained by the feature that moved.
        let f = step(
            &mut track,
            latency(4.0e8),
            finding(AlertKind::Latency),
            false,
        )
        .unwrap();
        assert!(f.summary.contains("learned baseline: p99"), "{}", f.summary);
        assert!(f.context.iter().any(|(k, _)| *k == "learned_score"));
        // Still within the confirmation window one interval later, not three.
        assert!(step(
            &mut track,
            latency(40.0),
            finding(AlertKind::Latency),
            false
        )
        .is_some());
        step(&mut track, latency(40.0), None, false);
        assert!(step(
            &mut track,
            latency(40.0),
            finding(AlertKind::Latency),
            false
        )
        .is_none());
    }

    #[test]
    fn a_model_that_finds_much_of_an_entity_abnormal_steps_aside_until_it_no_longer_does() {
        let (mut track, entity) = latency_track();
        let mut t = 0;
        let mut step = |track: &mut LearnedTrack, p99: f64, f| {
            t += 10_000;
            track.judge(t, &entity, latency(p99), f, false)
        };
        for _ in 0..=WARMUP_INTERVALS + TRUST_AFTER {
            step(&mut track, 40.0, None);
        }
        assert_eq!(track.model_trusted(), Some(true));
        // One interval in ten far out: this entity is unlike anything the model was fitted on.
        for i in 0..200 {
            step(&mut track, if i % 10 == 0 { 4.0e8 } else { 40.0 }, None);
        }
        assert_eq!(track.model_trusted(), Some(false));
        // Out of its depth, it vetoes nothing.
        assert!(step(&mut track, 40.0, finding(AlertKind::Latency)).is_some());
        for _ in 0..600 {
            step(&mut track, 40.0, None);
        }
        assert_eq!(
            track.model_trusted(),
            Some(true),
            "trusted again once it settles"
        );
        assert!(step(&mut track, 40.0, finding(AlertKind::Latency)).is_none());
    }

    #[test]
    fn a_model_that_barely_saw_the_incidents_in_training_vetoes_nothing() {
        let mut model = model::unit_model(3);
        model.evaluation.incident_flagged = Some(0.025);
        assert!(model.veto_refused().unwrap().contains("2.5%"));
        model.compile(EntityClass::Latency).unwrap();
        let entity = Entity::new(Vec::new(), "t/g".into());
        let mut track = LearnedTrack::new(Some(Arc::new(model)), None, &config());
        for i in 0..=(WARMUP_INTERVALS + TRUST_AFTER + 5) as i64 {
            let f = track.judge(
                i * 10_000,
                &entity,
                latency(40.0),
                finding(AlertKind::Latency),
                false,
            );
            assert!(
                f.is_some(),
                "interval {i}: a finding the model finds normal still passes"
            );
        }
        let mut unlabelled = model::unit_model(3);
        unlabelled.evaluation.incident_flagged = None;
        assert!(unlabelled.veto_refused().is_some());
        unlabelled.evaluation.incident_flagged = Some(0.3);
        unlabelled.evaluation.train_intervals = 500;
        assert!(unlabelled.veto_refused().unwrap().contains("500 intervals"));
    }

    #[test]
    fn without_a_model_every_finding_passes_and_features_still_flow() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let entity = Entity::new(Vec::new(), "q".into());
        let mut track = LearnedTrack::new(None, Some(tx), &config());
        for i in 0..=WARMUP_INTERVALS as i64 + 5 {
            let f = track.judge(
                i * 10_000,
                &entity,
                latency(40.0),
                finding(AlertKind::Latency),
                false,
            );
            assert!(f.is_some());
        }
        let rows: Vec<FeatureRow> = rx.try_iter().collect();
        assert_eq!(rows.len(), 6, "one row per interval once warmed up");
        assert!(rows.iter().all(|r| r.score.is_none() && r.primary == 40.0));
    }
}
