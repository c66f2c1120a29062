//! Abnormal end-to-end latency: each interval's p50 and (outlier-proof) p99, in log space, against
//! a median/MAD baseline of the last hour of normal intervals. A thin stream (a few observations
//! a minute) is judged on its recent intervals pooled until they hold enough observations.
//!
//! Two paths fire: a *spike*, `persistence` consecutive intervals beyond `z_threshold` (one fewer
//! for a rise far past anything the stream does); and a *drift*, a CUSUM of the z-scores that
//! climbs past `drift_threshold` when latency creeps up too slowly for any single interval to look
//! extreme. Either must also be `min_ratio` above the baseline. While an episode is open the
//! baseline stops learning, so a long incident cannot become the new normal.
//!
//! Some streams bump: a consumer group that rebalances every quarter of an hour doubles its
//! messages' latency for half a minute each time, often between two scrapes that could have
//! shown it. Each stream learns how high its short bumps (abnormal runs too short to fire) rise,
//! and a spike must rise past that, or last `long_persistence` intervals, longer than a bump does.

use super::{robust_z, AlertKind, Cadence, Detector, Finding, RobustHistory, Severity};
use crate::config::LatencyConfig;
use crate::window::IntervalQuantiles;

/// Below this many observations an interval says too little to judge: thinner intervals are
/// pooled with the ones before them until they reach it ([`LatencyWindow::recent`]).
///
/// [`LatencyWindow::recent`]: crate::window::LatencyWindow::recent
pub const MIN_COUNT: u64 = 3;
/// A 5% wiggle is never more than one unit of z, however flat the history.
const MIN_LOG_SCALE: f64 = 0.05;
/// How far past its usual bumps' height a rise must go to be a spike before `long_persistence`.
const ABOVE_BUMPS: f64 = 1.25;
/// How far past its usual bumps' height every interval of a rise must stay, besides reaching
/// `critical_ratio`, to be a spike one interval before `persistence`.
const FAR_ABOVE_BUMPS: f64 = 2.0;

#[derive(Debug, Clone)]
pub struct LatencyDetector {
    cfg: LatencyConfig,
    p50: RobustHistory,
    p99: RobustHistory,
    streak: usize,
    /// The highest p50 and p99 ratios of the current abnormal run.
    peak: [f64; 2],
    /// The lowest ratio of the current abnormal run (of whichever quantile moved more).
    run_low: f64,
    /// How high this stream's short bumps rise, for p50 and p99 (ratios, in thousandths): a
    /// stream's tail may bump high while its median holds steady.
    bumps: [Cadence; 2],
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
            peak: [0.0; 2],
            run_low: f64::INFINITY,
            bumps: [Cadence::default(); 2],
            cusum: 0.0,
            active: false,
        }
    }

    /// Whether the current run rose past the stream's usual bumps (in p50 or p99) and
    /// `min_ratio`, as it must to fire before `long_persistence`.
    fn above_bumps(&self) -> bool {
        self.peak.iter().zip(&self.bumps).any(|(peak, bumps)| {
            let usual = bumps.highest().map_or(0.0, |b| b as f64 / 1000.0);
            *peak >= self.cfg.min_ratio.max(usual * ABOVE_BUMPS)
        })
    }

    /// Whether every interval of the current run stood at `critical_ratio` and far past anything
    /// the stream's bumps reach: such a rise need not wait out the last interval of
    /// `persistence`, though a single interval never fires.
    fn far_above_everything(&self) -> bool {
        let bumps = self
            .bumps
            .iter()
            .filter_map(|b| b.highest())
            .max()
            .map_or(0.0, |b| b as f64 / 1000.0);
        self.run_low >= self.cfg.critical_ratio.max(bumps * FAR_ABOVE_BUMPS)
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
        let (e50, e99) = (self.p50.median().exp(), self.p99.median().exp());
        let ratios = [q.p50 / e50.max(1e-3), q.p99 / e99.max(1e-3)];
        // Judge by whichever quantile moved more, in units of its own spread.
        let (z, metric, observed, expected, ratio) = if z99 >= z50 {
            (z99, "p99", q.p99, e99, ratios[1])
        } else {
            (z50, "p50", q.p50, e50, ratios[0])
        };
        let abnormal = z >= self.cfg.z_threshold && ratio >= self.cfg.min_ratio;
        if abnormal {
            self.streak += 1;
            self.run_low = self.run_low.min(ratio);
            for (peak, r) in self.peak.iter_mut().zip(ratios) {
                *peak = peak.max(r);
            }
        } else {
            // A rise that ended by itself within `long_persistence` is what this stream does,
            // even one that fired (a rebalance's, say): an incident lasts longer.
            if self.streak > 0 && self.streak < self.cfg.long_persistence {
                for (bumps, peak) in self.bumps.iter_mut().zip(self.peak) {
                    bumps.observe((peak * 1000.0) as i64);
                }
            }
            self.streak = 0;
            self.peak = [0.0; 2];
            self.run_low = f64::INFINITY;
        }
        self.cusum = (self.cusum + z.min(self.cfg.z_threshold) - self.cfg.drift_slack).max(0.0);

        let spike = self.streak >= self.cfg.long_persistence
            || (self.streak >= self.cfg.persistence && self.above_bumps())
            || (self.streak + 1 >= self.cfg.persistence.max(3) && self.far_above_everything());
        let drift = self.cusum >= self.cfg.drift_threshold && ratio >= self.cfg.min_ratio;
        let sustained = self.active
            && z >= self.cfg.z_threshold / 2.0
            && ratio >= 1.0 + (self.cfg.min_ratio - 1.0) / 2.0;
        let was_active = self.active;
        self.active = spike || drift || sustained;
        if !self.active {
            if was_active {
                // Over, but the next rise of the same slow trend should not start from nothing.
                self.cusum = self.cusum.min(self.cfg.drift_threshold / 2.0);
            }
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
        for i in 0..4 {
            assert!(d.on_interval(Some(&q(400.0, 2000.0))).is_none());
            assert!(d.on_interval(Some(&steady(i))).is_none());
        }
        for i in 0..20 {
            assert!(d.on_interval(Some(&steady(i))).is_none());
        }
    }

    #[test]
    fn a_sustained_spike_fires_once_it_persists() {
        let mut d = warmed();
        for _ in 1..LatencyConfig::default().persistence {
            assert!(d.on_interval(Some(&q(80.0, 300.0))).is_none());
        }
        let f = d.on_interval(Some(&q(80.0, 300.0))).expect("fires");
        assert_eq!(f.severity, Severity::Warning);
    }

    #[test]
    fn a_spike_far_past_anything_the_stream_does_fires_an_interval_sooner() {
        let mut d = warmed();
        for _ in 2..LatencyConfig::default().persistence {
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
    fn a_stream_that_bumps_learns_its_bumps_and_still_catches_what_rises_past_them() {
        let mut d = warmed();
        let cfg = LatencyConfig::default();
        let doubled = |i| {
            let s = steady(i);
            q(s.p50 * 2.2, s.p99 * 2.2)
        };
        let bump =
            |d: &mut LatencyDetector, len: usize, at: &dyn Fn(usize) -> IntervalQuantiles| {
                let fired = (0..len).any(|i| d.on_interval(Some(&at(i))).is_some());
                for i in 0..30 {
                    assert!(d.on_interval(Some(&steady(i))).is_none());
                }
                fired
            };
        // Before it knows the stream, a doubling for four intervals is a spike.
        assert!(bump(&mut d, 4, &doubled));
        bump(&mut d, 4, &doubled);
        bump(&mut d, 2, &doubled);
        // Three bumps later, the same rise is what this stream does.
        for _ in 0..5 {
            assert!(!bump(&mut d, 4, &doubled), "a usual bump fired");
        }
        // A rise past its bumps is still a spike after `persistence` intervals...
        let threefold = |i| {
            let s = steady(i);
            q(s.p50 * 3.0, s.p99 * 3.0)
        };
        let mut fired_at = None;
        for i in 0..cfg.persistence {
            if d.on_interval(Some(&threefold(i))).is_some() {
                fired_at = Some(i + 1);
                break;
            }
        }
        assert_eq!(fired_at, Some(cfg.persistence));
        for i in 0..40 {
            d.on_interval(Some(&steady(i)));
        }
        // ...and a usual bump that does not end is one after `long_persistence`.
        let fired_at = (0..cfg.long_persistence + 1)
            .position(|i| d.on_interval(Some(&doubled(i))).is_some())
            .map(|i| i + 1);
        assert_eq!(fired_at, Some(cfg.long_persistence));
    }

    #[test]
    fn a_drift_in_a_noisy_stream_is_found_by_its_sum_before_any_interval_stands_out() {
        // p50 wanders +-20% from interval to interval: no run of three intervals stands out
        // until late, but the sum of modest z-scores climbs steadily.
        let noisy = |i: usize, factor: f64| {
            let wiggle = 1.0 + 0.2 * (((i * 7919) % 11) as f64 / 5.0 - 1.0);
            q(40.0 * wiggle * factor, 120.0 * wiggle * factor)
        };
        let mut d = LatencyDetector::new(&LatencyConfig::default());
        for i in 0..360 {
            assert!(
                d.on_interval(Some(&noisy(i, 1.0))).is_none(),
                "interval {i}"
            );
        }
        let found = (0..180).find_map(|i| {
            let factor = 1.0 + 2.0 * i as f64 / 180.0; // 1x to 3x in half an hour
            d.on_interval(Some(&noisy(i, factor))).map(|f| (f, factor))
        });
        let (f, factor) = found.expect("drift found");
        assert_eq!(f.detector, "latency_drift");
        assert!(f.summary.contains("drifting up"), "{}", f.summary);
        assert!(factor < 2.2, "found only at {factor:.2}x");
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
