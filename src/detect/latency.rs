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

use serde::{Deserialize, Serialize};

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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LatencyDetector {
    /// Settings come from the config in force, never from a checkpoint.
    #[serde(skip)]
    cfg: LatencyConfig,
    p50: RobustHistory,
    p99: RobustHistory,
    /// A thin stream's settled level (the median of its newest observations): its drifts are
    /// judged on it, since its pooled intervals are too few to tell a slow rise from noise.
    settled: RobustHistory,
    streak: usize,
    /// The highest p50 and p99 ratios of the current abnormal run: what its bumps are learned by.
    peak: [f64; 2],
    /// The second highest: how high the run rose more than once, what it is judged by, since
    /// one interval's tail can rise far for a single slow message.
    reached_twice: [f64; 2],
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
            settled: RobustHistory::new(cfg.history_intervals),
            streak: 0,
            peak: [0.0; 2],
            reached_twice: [0.0; 2],
            run_low: f64::INFINITY,
            bumps: [Cadence::default(); 2],
            cusum: 0.0,
            active: false,
        }
    }

    /// Whether the current run rose past the stream's usual bumps (in p50 or p99) and
    /// `min_ratio` in two of its intervals, as it must to fire before `long_persistence`.
    /// A stream not yet watched for a full history may not have shown how high its bumps rise (a
    /// rebalance may lift its latency a few fold for half a minute, and the first few it shows
    /// need not be its highest): until then, only a rise to `critical_ratio` counts as past them.
    fn above_bumps(&self) -> bool {
        let young = self.p99.len() < self.cfg.history_intervals;
        self.reached_twice
            .iter()
            .zip(&self.bumps)
            .any(|(height, bumps)| {
                let learned = bumps
                    .highest()
                    .map_or(0.0, |b| b as f64 / 1000.0 * ABOVE_BUMPS);
                let past = if young {
                    learned.max(self.cfg.critical_ratio)
                } else {
                    learned
                };
                *height >= self.cfg.min_ratio.max(past)
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

    fn learn(&mut self, x50: f64, x99: f64, settled: Option<f64>) {
        self.p50.push(x50);
        self.p99.push(x99);
        if let Some(x) = settled {
            self.settled.push(x);
        }
    }

    /// The settled level's z-score, ratio and value, once its history is long enough to judge.
    fn settled_judgement(&self, x: Option<f64>) -> Option<(f64, f64, f64)> {
        let x = x.filter(|_| self.settled.len() >= self.cfg.warmup_intervals)?;
        let median = self.settled.median();
        let z = robust_z(x, median, self.settled.scale(), MIN_LOG_SCALE);
        Some((z, (x - median).exp(), x.exp()))
    }
}

impl Detector for LatencyDetector {
    type Config = LatencyConfig;

    fn configure(&mut self, cfg: &LatencyConfig) {
        self.cfg = cfg.clone();
        for h in [&mut self.p50, &mut self.p99, &mut self.settled] {
            h.set_capacity(cfg.history_intervals);
        }
    }

    type Input<'a> = Option<&'a IntervalQuantiles>;

    fn on_interval(&mut self, q: Option<&IntervalQuantiles>) -> Option<Finding> {
        let q = q?;
        let settled = q.settled_p50.map(|m| m.max(1e-3).ln());
        if q.count < MIN_COUNT {
            return self.on_settled_only(settled?);
        }
        let (x50, x99) = (q.p50.max(1e-3).ln(), q.p99.max(1e-3).ln());
        if self.p99.len() < self.cfg.warmup_intervals {
            self.learn(x50, x99, settled);
            return None;
        }
        let z50 = robust_z(x50, self.p50.median(), self.p50.scale(), MIN_LOG_SCALE);
        let z99 = robust_z(x99, self.p99.median(), self.p99.scale(), MIN_LOG_SCALE);
        let (e50, e99) = (self.p50.median().exp(), self.p99.median().exp());
        let ratios = [q.p50 / e50.max(1e-3), q.p99 / e99.max(1e-3)];
        // Judge by whichever quantile moved more, in units of its own spread.
        let (z, metric, observed, ratio) = if z99 >= z50 {
            (z99, "p99", q.p99, ratios[1])
        } else {
            (z50, "p50", q.p50, ratios[0])
        };
        // A pooled interval carries its earlier slots' values: it extends a run only if its own
        // new observations are high, or one slow slot would count for every interval it is
        // pooled into.
        let fresh = q
            .newest_p50
            .is_none_or(|p| p / e50.max(1e-3) >= self.cfg.min_ratio);
        let abnormal = z >= self.cfg.z_threshold && ratio >= self.cfg.min_ratio && fresh;
        if abnormal {
            self.streak += 1;
            self.run_low = self.run_low.min(ratio);
            for ((peak, twice), r) in self
                .peak
                .iter_mut()
                .zip(&mut self.reached_twice)
                .zip(ratios)
            {
                *twice = twice.max(r.min(*peak));
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
            self.reached_twice = [0.0; 2];
            self.run_low = f64::INFINITY;
        }
        // A thin stream drifts in its settled level; a full interval is its own.
        let drifting = self.settled_judgement(settled);
        let (drift_z, drift_ratio) = drifting.map_or((z, ratio), |(z, r, _)| (z, r));
        let drift = self.drifted(drift_z, drift_ratio);

        let spike = self.streak >= self.cfg.long_persistence
            || (self.streak >= self.cfg.persistence && self.above_bumps())
            || (self.streak + 1 >= self.cfg.persistence.max(3) && self.far_above_everything());
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
            self.learn(x50, x99, settled);
            return None;
        }
        // A drift seen only in the settled level is reported in it.
        Some(match drifting {
            Some((z, r, m)) if drift && !spike => self.finding(true, "p50", m, r, z),
            _ => self.finding(drift && !spike, metric, observed, ratio, z),
        })
    }
}

impl LatencyDetector {
    /// Adds a judgement's z-score to the drift sum; whether it has climbed past
    /// `drift_threshold` with latency `min_ratio` up.
    fn drifted(&mut self, z: f64, ratio: f64) -> bool {
        self.cusum = (self.cusum + z.min(self.cfg.z_threshold) - self.cfg.drift_slack).max(0.0);
        self.cusum >= self.cfg.drift_threshold && ratio >= self.cfg.min_ratio
    }

    /// An interval too thin for quantiles of its own (its ring holds fewer than [`MIN_COUNT`])
    /// still moves the stream's settled level `x`: a slow drift is judged on it alone, and
    /// nothing else changes.
    fn on_settled_only(&mut self, x: f64) -> Option<Finding> {
        let Some((z, ratio, observed)) = self.settled_judgement(Some(x)) else {
            self.settled.push(x);
            return None;
        };
        if !self.drifted(z, ratio) {
            if !self.active {
                self.settled.push(x);
            }
            return None;
        }
        self.active = true;
        Some(self.finding(true, "p50", observed, ratio, z))
    }

    fn finding(
        &self,
        drift: bool,
        metric: &'static str,
        observed: f64,
        ratio: f64,
        z: f64,
    ) -> Finding {
        let how = if drift { ", drifting up" } else { "" };
        let expected = observed / ratio;
        Finding {
            kind: AlertKind::Latency,
            severity: if ratio >= self.cfg.critical_ratio {
                Severity::Critical
            } else {
                Severity::Warning
            },
            detector: if drift {
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
        }
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
            settled_p50: None,
            newest_p50: None,
        }
    }

    /// A noisy but steady service: p50 around 40 ms, p99 around 120 ms.
    fn steady(i: usize) -> IntervalQuantiles {
        let wiggle = 1.0 + 0.08 * ((i * 7919) % 11) as f64 / 10.0;
        q(40.0 * wiggle, 120.0 * wiggle)
    }

    /// A detector that has watched a steady stream for a full history.
    fn warmed() -> LatencyDetector {
        let mut d = LatencyDetector::new(&LatencyConfig::default());
        for i in 0..LatencyConfig::default().history_intervals {
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
    fn a_stream_not_yet_watched_for_an_hour_pages_on_a_moderate_rise_only_once_it_lasts() {
        let mut d = LatencyDetector::new(&LatencyConfig::default());
        for i in 0..100 {
            assert!(d.on_interval(Some(&steady(i))).is_none());
        }
        let cfg = LatencyConfig::default();
        // Three short bumps to 1.6x: not yet all the ways a stream may bump.
        for _ in 0..3 {
            for _ in 0..2 {
                assert!(d.on_interval(Some(&q(64.0, 192.0))).is_none());
            }
            for i in 0..10 {
                assert!(d.on_interval(Some(&steady(i))).is_none());
            }
        }
        // Doubled for four intervals: it may be how this stream bumps, which an hour would show.
        for _ in 0..4 {
            assert!(d.on_interval(Some(&q(84.0, 252.0))).is_none());
        }
        for i in 0..30 {
            assert!(d.on_interval(Some(&steady(i))).is_none());
        }
        // Doubled for as long as no bump lasts is a spike all the same.
        let fired_at = (0..cfg.long_persistence)
            .position(|_| d.on_interval(Some(&q(84.0, 252.0))).is_some())
            .map(|i| i + 1);
        assert_eq!(fired_at, Some(cfg.long_persistence));
        for i in 0..30 {
            d.on_interval(Some(&steady(i)));
        }
        // Five-fold is past any bump: a spike within `persistence`.
        let fired_at = (0..cfg.persistence)
            .position(|_| d.on_interval(Some(&q(200.0, 600.0))).is_some())
            .map(|i| i + 1);
        assert!(fired_at.is_some(), "not within {}", cfg.persistence);
    }

    #[test]
    fn a_rise_is_judged_by_what_it_reached_twice_not_by_one_slow_message() {
        // A stream whose short bumps reach about 1.6x, three times seen.
        let bumped = || {
            let mut d = warmed();
            for _ in 0..3 {
                for _ in 0..2 {
                    assert!(d.on_interval(Some(&q(64.0, 192.0))).is_none());
                }
                for i in 0..30 {
                    assert!(d.on_interval(Some(&steady(i))).is_none());
                }
            }
            d
        };
        // One interval's tail tenfold, the rest of the run at the usual bump height: a bump.
        let mut d = bumped();
        assert!(d.on_interval(Some(&q(64.0, 1200.0))).is_none());
        assert!(d.on_interval(Some(&q(64.0, 192.0))).is_none());
        assert!(d.on_interval(Some(&q(64.0, 192.0))).is_none());
        // Twice past it is a spike.
        let mut d = bumped();
        assert!(d.on_interval(Some(&q(64.0, 300.0))).is_none());
        assert!(d.on_interval(Some(&q(64.0, 300.0))).is_none());
        assert!(d.on_interval(Some(&q(64.0, 192.0))).is_some());
    }

    #[test]
    fn one_slow_slot_pooled_into_the_next_intervals_is_no_run() {
        let pooled = |newest: f64| IntervalQuantiles {
            count: 4,
            newest_p50: Some(newest),
            ..q(90.0, 270.0)
        };
        let mut d = warmed();
        assert!(d.on_interval(Some(&q(90.0, 270.0))).is_none());
        // The next two bring one ordinary observation each, pooled with the slow slot.
        assert!(d.on_interval(Some(&pooled(40.0))).is_none());
        assert!(d.on_interval(Some(&pooled(42.0))).is_none());
        for i in 0..20 {
            assert!(d.on_interval(Some(&steady(i))).is_none());
        }
        // New observations as slow as the pool carry the run.
        assert!(d.on_interval(Some(&q(90.0, 270.0))).is_none());
        assert!(d.on_interval(Some(&pooled(88.0))).is_none());
        assert!(d.on_interval(Some(&pooled(92.0))).is_some());
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
    fn a_thin_stream_drifting_up_is_found_in_its_settled_level() {
        // A few observations a minute: every other judged interval pools three of them, the
        // others hold too few for quantiles; each carries the median of the newest sixteen.
        let thin = |i: usize, factor: f64| {
            let one = 40.0 * factor * (0.5 + ((i * 7919) % 11) as f64 / 10.0);
            let settled = 40.0 * factor * (1.0 + 0.1 * (((i * 104_729) % 7) as f64 / 3.0 - 1.0));
            IntervalQuantiles {
                count: if i.is_multiple_of(2) { 3 } else { 1 },
                p50: one,
                p99: 2.0 * one,
                max: 2.0 * one,
                settled_p50: Some(settled),
                newest_p50: None,
            }
        };
        let mut d = LatencyDetector::new(&LatencyConfig::default());
        for i in 0..600 {
            assert!(d.on_interval(Some(&thin(i, 1.0))).is_none(), "interval {i}");
        }
        let found = (0..90).find_map(|i| {
            let factor = 1.0 + 2.0 * i as f64 / 90.0;
            d.on_interval(Some(&thin(i, factor))).map(|f| (f, factor))
        });
        let (f, factor) = found.expect("drift found");
        assert_eq!(f.detector, "latency_drift");
        assert!(factor < 2.0, "found only at {factor:.2}x");
        // Without a settled level, an interval too thin for quantiles is not judged at all.
        let bare = IntervalQuantiles {
            settled_p50: None,
            ..thin(1, 5.0)
        };
        assert!(LatencyDetector::new(&LatencyConfig::default())
            .on_interval(Some(&bare))
            .is_none());
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
            settled_p50: None,
            newest_p50: None,
        };
        assert!(d.on_interval(Some(&thin)).is_none());
        assert!(d.on_interval(Some(&thin)).is_none());
    }
}
