//! A bounded history of values with its median and MAD: the robust baseline behind the latency
//! and level detectors. The statistics are refreshed every few pushes rather than on each, which
//! keeps the per-interval cost at a copy and a partial sort every [`REFRESH_EVERY`] intervals.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

const REFRESH_EVERY: usize = 6;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RobustHistory {
    values: VecDeque<f32>,
    capacity: usize,
    median: f64,
    mad: f64,
    pushes_since_refresh: usize,
    #[serde(skip)]
    scratch: Vec<f32>,
}

impl RobustHistory {
    pub fn new(capacity: usize) -> Self {
        RobustHistory {
            values: VecDeque::with_capacity(capacity.max(1)),
            capacity: capacity.max(1),
            median: 0.0,
            mad: 0.0,
            pushes_since_refresh: usize::MAX,
            scratch: Vec::new(),
        }
    }

    /// Keeps at most `capacity` values from here on (the newest): what a history restored from
    /// a checkpoint takes from the settings in force.
    pub fn set_capacity(&mut self, capacity: usize) {
        let capacity = capacity.max(1);
        if capacity == self.capacity {
            return;
        }
        self.capacity = capacity;
        while self.values.len() > self.capacity {
            self.values.pop_front();
        }
        // The statistics are refreshed at the next push, over what is kept.
        self.pushes_since_refresh = usize::MAX;
    }

    pub fn push(&mut self, v: f64) {
        while self.values.len() >= self.capacity.max(1) {
            self.values.pop_front();
        }
        self.values.push_back(v as f32);
        self.pushes_since_refresh = self.pushes_since_refresh.saturating_add(1);
        if self.pushes_since_refresh >= REFRESH_EVERY || self.values.len() < 2 * REFRESH_EVERY {
            self.refresh();
        }
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub fn median(&self) -> f64 {
        self.median
    }

    /// MAD scaled to be comparable with a standard deviation.
    pub fn scale(&self) -> f64 {
        1.4826 * self.mad
    }

    fn refresh(&mut self) {
        self.pushes_since_refresh = 0;
        self.scratch.clear();
        self.scratch.extend(self.values.iter());
        self.median = median_in_place(&mut self.scratch);
        let m = self.median as f32;
        self.scratch.iter_mut().for_each(|v| *v = (*v - m).abs());
        self.mad = median_in_place(&mut self.scratch);
    }
}

fn median_in_place(v: &mut [f32]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mid = v.len() / 2;
    let (_, m, _) = v.select_nth_unstable_by(mid, f32::total_cmp);
    *m as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_scale_resist_outliers() {
        let mut h = RobustHistory::new(100);
        for i in 0..99 {
            h.push(10.0 + (i % 3) as f64);
        }
        h.push(1e6);
        assert_eq!(h.median(), 11.0);
        assert!(h.scale() < 2.0, "scale {}", h.scale());
    }

    #[test]
    fn forgets_values_beyond_its_capacity() {
        let mut h = RobustHistory::new(12);
        for _ in 0..12 {
            h.push(1.0);
        }
        for _ in 0..12 {
            h.push(5.0);
        }
        assert_eq!(h.len(), 12);
        assert_eq!(h.median(), 5.0);
    }
}
