//! Generic gauges: any metric without a well-known name is watched for a level far from its robust
//! baseline (median/MAD over `history_intervals`), held for `persistence` intervals.

use super::{robust_z, AlertKind, Finding, RobustHistory, Severity};
use crate::config::LevelConfig;

#[derive(Debug, Clone)]
pub struct LevelDetector {
    cfg: LevelConfig,
    history: RobustHistory,
    streak: usize,
    active: bool,
}

impl LevelDetector {
    pub fn new(cfg: &LevelConfig) -> Self {
        LevelDetector {
            cfg: cfg.clone(),
            history: RobustHistory::new(cfg.history_intervals),
            streak: 0,
            active: false,
        }
    }

    pub fn on_interval(&mut self, value: Option<f64>) -> Option<Finding> {
        let x = value?;
        if self.history.len() < self.cfg.warmup_intervals {
            self.history.push(x);
            return None;
        }
        let median = self.history.median();
        let min_scale = 1e-6_f64.max(median.abs() * 0.01);
        let z = robust_z(x, median, self.history.scale(), min_scale);
        let abnormal = z.abs() >= self.cfg.z_threshold;
        self.streak = if abnormal { self.streak + 1 } else { 0 };
        self.active = self.streak >= self.cfg.persistence
            || (self.active && z.abs() >= self.cfg.z_threshold / 2.0);
        if !self.active {
            self.history.push(x);
            return None;
        }
        let dir = if z > 0.0 { "above" } else { "below" };
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
            score: z,
            summary: format!("value {x:.4} is {dir} its usual {median:.4} (z {z:.1})"),
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
}
