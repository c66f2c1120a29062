//! Generic gauges: any metric without a well-known name is watched for a level far from its robust
//! baseline (median/MAD over `history_intervals`), held for `persistence` intervals.
//!
//! An optional *surprise* path, in the spirit of HTM's anomaly likelihood, catches what a fixed
//! level test misses on series of very different noise: each interval scores how far its value
//! and its jump from the previous value lie from their baselines, and the path fires when the
//! recent mean of that score is far above its own long-run distribution.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::Detector;
use super::{robust_z, AlertKind, Finding, RobustHistory, Severity};
use crate::config::LevelConfig;

/// A surprise beyond this counts as this: one wild value must not dominate the long-run spread.
const MAX_SURPRISE: f64 = 50.0;
/// Intervals of surprise seen before its long-run spread is trusted.
const SURPRISE_WARMUP: f64 = 300.0;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LevelDetector {
    /// Settings come from the config in force, never from a checkpoint.
    #[serde(skip)]
    cfg: LevelConfig,
    history: RobustHistory,
    /// Jumps between consecutive values, kept only for the surprise path.
    jumps: Option<RobustHistory>,
    previous: Option<f64>,
    streak: usize,
    active: bool,
    surprise: Surprise,
}

/// Recent surprises and the long-run mean and variance of surprise (exponentially weighted).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Surprise {
    recent: VecDeque<f64>,
    mean: f64,
    var: f64,
    seen: f64,
    fired: bool,
}

impl LevelDetector {
    pub fn new(cfg: &LevelConfig) -> Self {
        LevelDetector {
            cfg: cfg.clone(),
            history: RobustHistory::new(cfg.history_intervals),
            jumps: (cfg.surprise_intervals > 0).then(|| RobustHistory::new(cfg.history_intervals)),
            previous: None,
            streak: 0,
            active: false,
            surprise: Surprise {
                recent: VecDeque::with_capacity(cfg.surprise_intervals),
                ..Default::default()
            },
        }
    }

    /// The surprise path: `Some(z of the recent mean surprise)` on the interval it crosses the
    /// threshold (once per crossing).
    fn surprised(&mut self, z: f64, jump: Option<f64>, min_scale: f64) -> Option<f64> {
        let jumps = self.jumps.as_ref()?;
        let zj = jump.map_or(0.0, |j| {
            robust_z(j, jumps.median(), jumps.scale(), min_scale).abs()
        });
        let n = self.cfg.surprise_intervals;
        let score = (z.abs() + zj).min(MAX_SURPRISE);
        let s = &mut self.surprise;
        if s.recent.len() == n {
            s.recent.pop_front();
        }
        s.recent.push_back(score);
        let recent = s.recent.iter().sum::<f64>() / s.recent.len() as f64;
        let zl = (recent - s.mean) / s.var.max(1e-6).sqrt();
        let ready = s.seen >= SURPRISE_WARMUP;
        s.seen += 1.0;
        let alpha = (1.0 / s.seen).max(1.0 / self.cfg.history_intervals.max(1) as f64);
        let d = score - s.mean;
        s.mean += alpha * d;
        s.var = (1.0 - alpha) * (s.var + alpha * d * d);
        let over = ready && zl >= self.cfg.surprise_z_threshold;
        let crossing = over && !s.fired;
        s.fired = over;
        crossing.then_some(zl)
    }

    fn learn(&mut self, x: f64, jump: Option<f64>) {
        self.history.push(x);
        if let (Some(jumps), Some(j)) = (self.jumps.as_mut(), jump) {
            jumps.push(j);
        }
    }
}

impl Detector for LevelDetector {
    type Config = LevelConfig;

    fn configure(&mut self, cfg: &LevelConfig) {
        self.cfg = cfg.clone();
        self.history.set_capacity(cfg.history_intervals);
        if let Some(j) = &mut self.jumps {
            j.set_capacity(cfg.history_intervals);
        }
        if cfg.surprise_intervals > 0 && self.jumps.is_none() {
            self.jumps = Some(RobustHistory::new(cfg.history_intervals));
        }
    }

    type Input<'a> = Option<f64>;

    fn on_interval(&mut self, value: Option<f64>) -> Option<Finding> {
        let x = value?;
        let jump = self.previous.map(|p| x - p);
        self.previous = Some(x);
        if self.history.len() < self.cfg.warmup_intervals {
            self.learn(x, jump);
            return None;
        }
        let median = self.history.median();
        let min_scale = 1e-6_f64.max(median.abs() * 0.01);
        let z = robust_z(x, median, self.history.scale(), min_scale);
        let abnormal = z.abs() >= self.cfg.z_threshold;
        self.streak = if abnormal { self.streak + 1 } else { 0 };
        let surprised = self.surprised(z, jump, min_scale);
        self.active = self.streak >= self.cfg.persistence
            || surprised.is_some()
            || (self.active && z.abs() >= self.cfg.z_threshold / 2.0);
        if !self.active {
            self.learn(x, jump);
            return None;
        }
        let dir = if x > median { "above" } else { "below" };
        let (score, how) = match surprised {
            Some(s) if self.streak < self.cfg.persistence => {
                (s, format!(", surprise {s:.1} sd above its usual"))
            }
            _ => (z, String::new()),
        };
        Some(Finding {
            kind: AlertKind::Level,
            severity: if z.abs() >= 2.0 * self.cfg.z_threshold {
                Severity::Critical
            } else {
                Severity::Warning
            },
            detector: "level_shift",
            metric: "value",
            observed: x,
            expected: median,
            score,
            summary: format!("value {x:.4} is {dir} its usual {median:.4} (z {z:.1}{how})"),
            detail: Vec::new(),
            context: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_level_shift_fires_and_a_blip_does_not() {
        let mut d = LevelDetector::new(&LevelConfig::default());
        for i in 0..100 {
            assert!(d.on_interval(Some(50.0 + (i % 5) as f64)).is_none());
        }
        assert!(d.on_interval(Some(500.0)).is_none());
        assert!(d.on_interval(Some(51.0)).is_none());
        assert!(d.on_interval(Some(500.0)).is_none());
        let f = d.on_interval(Some(500.0)).expect("fires");
        assert!(f.summary.contains("above"));
        assert!(d.on_interval(None).is_none());
    }

    #[test]
    fn surprise_fires_once_when_a_series_changes_behaviour_and_never_on_its_usual_noise() {
        let cfg = LevelConfig {
            z_threshold: 100.0,
            warmup_intervals: 50,
            surprise_intervals: 10,
            surprise_z_threshold: 1.75,
            ..LevelConfig::default()
        };
        let mut d = LevelDetector::new(&cfg);
        // Deterministic noise of a few units around 100.
        let noise = |i: u64| ((i.wrapping_mul(2654435761) >> 7) % 1000) as f64 / 250.0 - 2.0;
        let calm = (0..1500)
            .filter(|&i| d.on_interval(Some(100.0 + noise(i))).is_some())
            .count();
        assert_eq!(calm, 0, "fired on its usual noise");
        // The same series turns ten times as jumpy.
        let fired: Vec<u64> = (1500..1530)
            .filter(|&i| d.on_interval(Some(100.0 + 10.0 * noise(i))).is_some())
            .collect();
        assert_eq!(fired.len(), 1, "{fired:?}");
        assert!(fired[0] < 1510, "{fired:?}");
    }
}
