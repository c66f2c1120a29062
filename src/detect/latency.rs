//! Abnormal end-to-end latency: each interval's p50 and (outlier-proof) p99, in log space, against
//! a median/MAD baseline of the last hour of normal intervals. A thin stream (a few observations
//! a minute) is judged on its recent intervals pooled until they hold enough observations.
//!
//! Two paths fire: a *spike*, `persistence` consecutive intervals beyond `z_threshold`; and a
//! *drift*, a CUSUM of the z-scores that climbs past `drift_threshold` when latency creeps up too
//! slowly for any single interval to look extreme. Either must also be `min_ratio` above the
//! baseline. While an episode is open the baseline stops learning, so a long incident cannot
//! become the new normal.

use super::Detector;
use super::{robust_z, AlertKind, Finding, RobustHistory, Severity};
use crate::config::LatencyConfig;
use crate::window::IntervalQuantiles;

/// Below this many observations an interval says too little to judge: thinner intervals are
/// pooled with the ones before them until they reach it ([`LatencyWindow::recent`]).
///
/// [`LatencyWindow::recent`]: crate::window::LatencyWindow::recent
pub const MIN_COUNT: u64 = 3;
/// A 5% wiggle is never more than one unit of z, however flat the history.
const MIN_LOG_SCALE: f64 = 0.05;

#[derive(Debug, Clone)]
pub struct LatencyDetector {
    cfg: LatencyConfig,
    p50: RobustHistory,
    p99: RobustHistory,
    streak: usize,
    cusum: f64,
    active: bool,
}

impl LatencyDetector {
    pub fn new(cfg: &LatencyConfig) -> Self {
        LatencyDetector {
            cfg: cfg.clone(),
            p50: RobustHistory::new(cfg.history_intervals),
            p99: RobustHistory::new(cfg.history_intervals),
            streak: 0,
            cusum: 0.0,
            active: false,
        }
    }

    fn learn(&mut self, x50: f64, x99: f64) {
        self.p50.push(x50);
        self.p99.push(x99);
    }
}

impl Detector for LatencyDetector {
    type Input<'a> = Option<&'a IntervalQuantiles>;

    fn on_interval(&mut self, q: Option<&IntervalQuantiles>) -> Option<Finding> {
        let q = q.filter(|q| q.count >= MIN_COUNT)?;
        let (x50, x99) = (q.p50.max(1e-3).ln(), q.p99.max(1e-3).ln());
        if self.p99.len() < self.cfg.warmup_intervals {
            self.learn(x50, x99);
            return None;
        }
        let z50 = robust_z(x50, self.p50.median(), self.p50.scale(), MIN_LOG_SCALE);
        let z99 = robust_z(x99, self.p99.median(), self.p99.scale(), MIN_LOG_SCALE);
        // Judge by whichever quantile moved more, in units of its own spread.
        let (z, metric, observed, expected) = if z99 >= z50 {
            (z99, "p99", q.p99, self.p99.median().exp())
        } else {
            (z50, "p50", q.p50, self.p50.median().exp())
        };
        let ratio = observed / expected.max(1e-3);
        let abnormal = z >= self.cfg.z_threshold && ratio >= self.cfg.min_ratio;
        self.streak = if abnormal { self.streak + 1 } else { 0 };
        self.cusum =
            (self.cusum + z.min(2.0 * self.cfg.z_threshold) - self.cfg.drift_slack).max(0.0);

        let spike = self.streak >= self.cfg.persistence;
        let drift = self.cusum >= self.cfg.drift_threshold && ratio >= self.cfg.min_ratio;
        let sustained = self.active
            && z >= self.cfg.z_threshold / 2.0
            && ratio >= 1.0 + (self.cfg.min_ratio - 1.0) / 2.0;
        self.active = spike || drift || sustained;
        if !self.active {
            self.cusum = self.cusum.min(self.cfg.drift_threshold / 2.0);
            self.learn(x50, x99);
            return None;
        }
        let how = if spike || !drift { "" } else { ", drifting up" };
        Some(Finding {
            kind: AlertKind::Latency,
            severity: if ratio >= self.cfg.critical_ratio {
                Severity::Critical
            } else {
                Severity::Warning
            },
            detector: if drift && !spike {
                "latency_drift"
            } else {
                "latency_spike"
            },
            metric,
            observed,
            expected,
            score: z,
            summary: format!(
                "{metric} latency {observed:.0} ms vs {expected:.0} ms expected ({ratio:.1}x{how})"
            ),
            detail: Vec::new(),
            context: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(p50: f64, p99: f64) -> IntervalQuantiles {
        IntervalQuantiles {
            count: 50,
            p50,
            p99,
            max: p99 * 1.2,
        }
    }

    /// A noisy but steady service: p50 around 40 ms, p99 around 120 ms.
    fn steady(i: usize) -> IntervalQuantiles {
        let wiggle = 1.0 + 0.08 * ((i * 7919) % 11) as f64 / 10.0;
        q(40.0 * wiggle, 120.0 * wiggle)
    }

    fn warmed() -> LatencyDetector {
        let mut d = LatencyDetector::new(&LatencyConfig::default());
        for i in 0..100 {
            assert!(d.on_interval(Some(&steady(i))).is_none());
        }
        d
    }

    #[test]
    fn a_single_slow_interval_does_not_fire() {
        let mut d = warmed();
        assert!(d.on_interval(Some(&q(400.0, 2000.0))).is_none());
        assert!(d.on_interval(Some(&steady(1))).is_none());
        assert!(d.on_interval(Some(&q(400.0, 2000.0))).is_none());
        assert!(d.on_interval(Some(&q(400.0, 2000.0))).is_none());
        for i in 0..20 {
            assert!(d.on_interval(Some(&steady(i))).is_none());
        }
    }

    #[test]
    fn a_sustained_spike_fires_once_it_persists() {
        let mut d = warmed();
        for _ in 1..LatencyConfig::default().persistence {
            assert!(d.on_interval(Some(&q(300.0, 900.0))).is_none());
        }
        let f = d.on_interval(Some(&q(300.0, 900.0))).expect("fires");
        assert_eq!(f.kind, AlertKind::Latency);
        assert_eq!(f.severity, Severity::Critical);
        assert!(f.observed / f.expected > 5.0);
        assert!(f.summary.contains("expected"), "{}", f.summary);
    }

    #[test]
    fn a_slow_drift_fires_before_it_doubles_latency_for_long() {
        let mut d = warmed();
        let mut fired_at = None;
        for i in 0..180 {
            let factor = 1.0 + 2.0 * i as f64 / 180.0; // 1x to 3x over 30 minutes
            let mut s = steady(i);
            s.p50 *= factor;
            s.p99 *= factor;
            if d.on_interval(Some(&s)).is_some() {
                fired_at = Some(factor);
                break;
            }
        }
        let f = fired_at.expect("drift detected");
        assert!(f < 2.2, "fired only at {f:.2}x");
    }

    #[test]
    fn quiet_noise_never_fires() {
        let mut d = warmed();
        for i in 0..2000 {
            assert!(d.on_interval(Some(&steady(i))).is_none(), "interval {i}");
        }
    }

    #[test]
    fn empty_or_thin_intervals_are_not_judged() {
        let mut d = warmed();
        assert!(d.on_interval(None).is_none());
        let thin = IntervalQuantiles {
            count: 2,
            p50: 900.0,
            p99: 900.0,
            max: 900.0,
        };
        assert!(d.on_interval(Some(&thin)).is_none());
        assert!(d.on_interval(Some(&thin)).is_none());
    }
}
