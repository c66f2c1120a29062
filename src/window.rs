//! Per-series state between events: rolling HDR histograms for observations, samples for gauges
//! and counters, and a partition's table of log-end offsets over time (how old a committed offset
//! is).
//!
//! Time is cut into event-time intervals ("slots", `ts / interval`). A [`LatencyWindow`] keeps a
//! ring of one HDR histogram per slot, so late events still land in their own slot and the rolling
//! window is the sum of the ring. Histograms record microseconds and grow only as far as the values
//! recorded need, which keeps a latency series at a few tens of KiB.

use std::collections::VecDeque;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Quantiles of one closed interval, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IntervalQuantiles {
    pub count: u64,
    pub p50: f64,
    /// The 99th percentile, but never the single largest value: one outlier cannot move it.
    pub p99: f64,
    pub max: f64,
    /// Where the interval holds fewer than [`SETTLED_COUNT`] observations (and the stream has
    /// seen that many): the median of its newest `SETTLED_COUNT`. A thin stream's level, steadier
    /// than its pooled intervals, for judging slow changes.
    pub settled_p50: Option<f64>,
    /// Where the interval was pooled with earlier ones: the median of its own observations, what
    /// it brings that is new.
    pub newest_p50: Option<f64>,
}

/// How many of a stream's newest observations make its [`IntervalQuantiles::settled_p50`].
pub const SETTLED_COUNT: usize = 16;

/// Largest latency recorded as itself; anything above is recorded as this (one hour).
const MAX_RECORDED_US: u64 = 3_600_000_000;

pub struct LatencyWindow {
    digits: u8,
    ring: Vec<Histogram<u32>>,
    slots: Vec<i64>,
    /// Where thin intervals are pooled; kept so that pooling does not allocate once warm.
    pooled: Histogram<u32>,
    /// The newest observations in arrival order (a ring), and how many were ever recorded.
    newest: [f32; SETTLED_COUNT],
    recorded: u64,
}

impl LatencyWindow {
    pub fn new(intervals: usize, significant_digits: u8) -> Self {
        let intervals = intervals.max(1);
        let mut h = Histogram::<u32>::new(significant_digits).expect("digits validated by config");
        h.auto(true);
        LatencyWindow {
            digits: significant_digits,
            ring: vec![h.clone(); intervals],
            slots: vec![i64::MIN; intervals],
            pooled: h,
            newest: [0.0; SETTLED_COUNT],
            recorded: 0,
        }
    }

    pub fn record(&mut self, slot: i64, value_ms: f64) {
        let i = slot.rem_euclid(self.ring.len() as i64) as usize;
        if self.slots[i] != slot {
            self.ring[i].reset();
            self.slots[i] = slot;
        }
        let us = ((value_ms * 1000.0).round() as u64).clamp(1, MAX_RECORDED_US);
        // Saturate rather than fail: a u32 count overflows only past 4 billion values per slot.
        let _ = self.ring[i].record(us);
        self.newest[(self.recorded % SETTLED_COUNT as u64) as usize] = value_ms as f32;
        self.recorded += 1;
    }

    /// Quantiles of one slot, if it recorded anything.
    pub fn interval(&self, slot: i64) -> Option<IntervalQuantiles> {
        let i = slot.rem_euclid(self.ring.len() as i64) as usize;
        (self.slots[i] == slot && !self.ring[i].is_empty()).then(|| quantiles(&self.ring[i]))
    }

    /// Quantiles of the newest evidence at `slot`: the slot alone when it holds `min_count`
    /// observations, else pooled with the slots before it (within the ring) until it does. `None`
    /// when the slot recorded nothing new, or the whole ring holds fewer than `min_count` and the
    /// stream has no settled level yet: a thin stream's quantiles are judged as often as it says
    /// enough, never on one or two values (a `count` below `min_count` says they are not).
    pub fn recent(&mut self, slot: i64, min_count: u64) -> Option<IntervalQuantiles> {
        let newest = self.interval(slot)?;
        let settled_p50 = self.settled_p50(newest.count);
        if newest.count >= min_count {
            return Some(IntervalQuantiles {
                settled_p50,
                ..newest
            });
        }
        self.pooled.reset();
        for back in 0..self.ring.len() as i64 {
            let i = (slot - back).rem_euclid(self.ring.len() as i64) as usize;
            if self.slots[i] != slot - back {
                continue;
            }
            let _ = self.pooled.add(&self.ring[i]);
            if self.pooled.len() >= min_count {
                break;
            }
        }
        (self.pooled.len() >= min_count || settled_p50.is_some()).then(|| IntervalQuantiles {
            settled_p50,
            newest_p50: Some(newest.p50),
            ..quantiles(&self.pooled)
        })
    }

    /// The median of the newest [`SETTLED_COUNT`] observations, for an interval of `count` that
    /// holds fewer.
    fn settled_p50(&self, count: u64) -> Option<f64> {
        if count >= SETTLED_COUNT as u64 || self.recorded < SETTLED_COUNT as u64 {
            return None;
        }
        let mut v = self.newest;
        let (low, upper, _) = v.select_nth_unstable_by(SETTLED_COUNT / 2, f32::total_cmp);
        // An even count: the mean of the two middle values.
        let lower = low.iter().copied().fold(f32::MIN, f32::max);
        Some((lower as f64 + *upper as f64) / 2.0)
    }

    /// Quantiles over the rolling window ending with `slot`.
    pub fn window(&self, slot: i64) -> Option<IntervalQuantiles> {
        let oldest = slot - self.ring.len() as i64 + 1;
        let mut merged: Option<Histogram<u32>> = None;
        for (h, &s) in self.ring.iter().zip(&self.slots) {
            if s < oldest || s > slot || h.is_empty() {
                continue;
            }
            match merged.as_mut() {
                None => merged = Some(h.clone()),
                Some(m) => {
                    let _ = m.add(h);
                }
            }
        }
        merged.map(|m| quantiles(&m))
    }

    /// Bytes held by the histograms: what one latency series costs.
    pub fn memory_bytes(&self) -> usize {
        self.ring
            .iter()
            .map(|h| h.distinct_values() * std::mem::size_of::<u32>())
            .sum()
    }
}

/// A window as a checkpoint keeps it: each slot's recorded values and counts (one value per
/// bucket, which lands in the same bucket again), not the histograms' internal arrays.
#[derive(Serialize, Deserialize)]
struct SavedWindow {
    digits: u8,
    slots: Vec<i64>,
    ring: Vec<Vec<(u64, u64)>>,
    newest: [f32; SETTLED_COUNT],
    recorded: u64,
}

impl Serialize for LatencyWindow {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let ring = self
            .ring
            .iter()
            .map(|h| {
                h.iter_recorded()
                    .map(|v| (v.value_iterated_to(), v.count_at_value() as u64))
                    .collect()
            })
            .collect();
        SavedWindow {
            digits: self.digits,
            slots: self.slots.clone(),
            ring,
            newest: self.newest,
            recorded: self.recorded,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for LatencyWindow {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let saved = SavedWindow::deserialize(d)?;
        if !(1..=5).contains(&saved.digits) {
            return Err(D::Error::custom(format!(
                "latency window: {} significant digits (1 to 5)",
                saved.digits
            )));
        }
        if saved.ring.is_empty() || saved.ring.len() != saved.slots.len() {
            return Err(D::Error::custom(format!(
                "latency window: {} histograms for {} slots",
                saved.ring.len(),
                saved.slots.len()
            )));
        }
        let mut w = LatencyWindow::new(saved.ring.len(), saved.digits);
        for (h, counts) in w.ring.iter_mut().zip(&saved.ring) {
            for &(value, count) in counts {
                let value = value.clamp(1, MAX_RECORDED_US);
                let count = u32::try_from(count).map_err(|_| {
                    D::Error::custom(format!("latency window: count {count} at {value}"))
                })?;
                h.record_n(value, count)
                    .map_err(|e| D::Error::custom(format!("latency window: value {value}: {e}")))?;
            }
        }
        w.slots = saved.slots;
        w.newest = saved.newest;
        w.recorded = saved.recorded;
        Ok(w)
    }
}

fn quantiles(h: &Histogram<u32>) -> IntervalQuantiles {
    let n = h.len();
    let q99 = 0.99f64.min(1.0 - 1.5 / n as f64).max(0.5);
    let ms = |us: u64| us as f64 / 1000.0;
    IntervalQuantiles {
        count: n,
        p50: ms(h.value_at_quantile(0.5)),
        p99: ms(h.value_at_quantile(q99)),
        max: ms(h.max()),
        settled_p50: None,
        newest_p50: None,
    }
}

/// The latest value of a gauge or counter and when it was taken.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub ts: i64,
    pub value: f64,
}

/// A gauge: the newest sample wins; an older one arriving late does not overwrite it.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Gauge {
    pub last: Option<Sample>,
    /// When the value last changed (or was first seen).
    pub changed_at: i64,
    /// The newest sample before that change, if the gauge had one.
    pub before_change: Option<i64>,
    /// The usual time between its samples (smoothed over about eight), 0 until two were seen.
    pub spacing: i64,
}

impl Gauge {
    pub fn update(&mut self, ts: i64, value: f64) {
        match self.last {
            Some(s) if ts < s.ts => {}
            Some(s) => {
                let step = ts - s.ts;
                if step > 0 {
                    self.spacing = if self.spacing == 0 {
                        step
                    } else {
                        self.spacing + (step - self.spacing) / 8
                    };
                }
                if s.value != value {
                    self.changed_at = ts;
                    self.before_change = Some(s.ts);
                }
                self.last = Some(Sample { ts, value });
            }
            None => {
                self.changed_at = ts;
                self.last = Some(Sample { ts, value });
            }
        }
    }

    pub fn value(&self) -> Option<f64> {
        self.last.map(|s| s.value)
    }

    /// How long the present value has held at least: since the first sample that showed it.
    pub fn held_at_least(&self) -> i64 {
        self.last.map_or(0, |s| s.ts - self.changed_at)
    }

    /// How long the present value has held, as well as the samples tell: it took that value
    /// somewhere in the gap before the first sample that showed it, halfway in on average. The
    /// estimate reaches back no further than the samples since reach forward, so a value seen
    /// once, or first seen after a long scrape gap, is credited with no time nobody watched.
    pub fn held_for(&self) -> i64 {
        estimated_hold(self.held_at_least(), self.gap_before_change())
    }

    /// How long before the last change the sample before it came (0 if none): the change
    /// happened somewhere in that gap.
    pub fn gap_before_change(&self) -> i64 {
        self.before_change.map_or(0, |b| self.changed_at - b)
    }
}

/// How long a state has held, from how long it was `seen` and the `gap` before the first sample
/// that showed it: it began halfway into that gap on average, but the estimate reaches back no
/// further than the samples since reach forward.
pub fn estimated_hold(seen: i64, gap: i64) -> i64 {
    seen + gap.min(seen) / 2
}

/// A monotonically increasing total: the gauge of its value plus the sum of its increases, with
/// resets (a value below the previous one) counted as a restart from zero.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Counter {
    pub gauge: Gauge,
    pub increase: f64,
    increase_at_close: f64,
}

impl Counter {
    pub fn update(&mut self, ts: i64, value: f64) {
        if let Some(prev) = self.gauge.last {
            if ts >= prev.ts {
                self.increase += if value >= prev.value {
                    value - prev.value
                } else {
                    value
                };
            }
        }
        self.gauge.update(ts, value);
    }

    /// Increase since the previous call: what the counter moved during the interval just closed.
    pub fn take_interval_increase(&mut self) -> f64 {
        let d = self.increase - self.increase_at_close;
        self.increase_at_close = self.increase;
        d
    }
}

/// Recent (log-end offset, time) points of one partition, to say how old a committed offset is.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TimeLag {
    points: VecDeque<(i64, i64)>,
}

impl TimeLag {
    pub fn record(&mut self, end_offset: i64, ts: i64, capacity: usize) {
        match self.points.back_mut() {
            // Offsets did not move: only the time of the newest point matters for "caught up".
            Some(last) if last.0 == end_offset => last.1 = ts,
            _ => self.points.push_back((end_offset, ts)),
        }
        while self.points.len() > capacity.max(2) {
            self.points.pop_front();
        }
    }

    /// Seconds between when the log end reached `committed` and `now`, by interpolation between
    /// the recorded points (extrapolated at the table's average rate before the oldest).
    pub fn lag_seconds(&self, committed: i64, now: i64) -> f64 {
        let Some(&(last_o, _)) = self.points.back() else {
            return 0.0;
        };
        if committed >= last_o {
            return 0.0;
        }
        let reached_at = match self.points.iter().position(|&(o, _)| o > committed) {
            Some(0) | None => {
                let (&(o0, t0), &(o1, t1)) = (
                    self.points.front().expect("non-empty"),
                    self.points.back().expect("non-empty"),
                );
                let rate = if t1 > t0 {
                    (o1 - o0) as f64 / (t1 - t0) as f64
                } else {
                    0.0
                };
                if rate > 0.0 {
                    t0 as f64 - (o0 - committed) as f64 / rate
                } else {
                    t0 as f64
                }
            }
            Some(i) => {
                let ((o0, t0), (o1, t1)) = (self.points[i - 1], self.points[i]);
                t0 as f64 + (committed - o0) as f64 / (o1 - o0) as f64 * (t1 - t0) as f64
            }
        };
        ((now as f64 - reached_at) / 1000.0).max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_lag_interpolates_between_points() {
        let mut t = TimeLag::default();
        t.record(0, 0, 10);
        t.record(100, 10_000, 10);
        t.record(300, 20_000, 10);
        assert_eq!(t.lag_seconds(300, 25_000), 0.0, "caught up");
        assert_eq!(
            t.lag_seconds(200, 20_000),
            5.0,
            "offset 200 was reached at 15 s"
        );
        assert_eq!(t.lag_seconds(50, 20_000), 15.0);
        // Before the oldest point: extrapolated at 15 offsets/s.
        let mut short = TimeLag::default();
        short.record(1000, 100_000, 2);
        short.record(1150, 110_000, 2);
        short.record(1300, 120_000, 2);
        assert!((short.lag_seconds(1000, 120_000) - 20.0).abs() < 1e-9);
    }

    #[test]
    fn an_idle_partition_only_refreshes_its_newest_point() {
        let mut t = TimeLag::default();
        t.record(10, 0, 4);
        t.record(10, 5_000, 4);
        t.record(10, 9_000, 4);
        assert_eq!(t.points.len(), 1);
        assert_eq!(t.lag_seconds(10, 9_000), 0.0);
    }

    #[test]
    fn thin_intervals_are_pooled_until_they_say_enough() {
        let mut w = LatencyWindow::new(6, 2);
        w.record(10, 40.0);
        assert_eq!(w.recent(10, 3), None, "one value is not enough");
        w.record(11, 42.0);
        w.record(12, 400.0);
        let q = w.recent(12, 3).expect("three values in three slots");
        assert_eq!(q.count, 3);
        assert!(
            q.newest_p50.is_some_and(|p| (396.0..404.0).contains(&p)),
            "{q:?}"
        );
        assert!((41.0..43.0).contains(&q.p50), "{q:?}");
        assert_eq!(w.recent(13, 3), None, "nothing new in slot 13");
        for v in [50.0, 51.0, 52.0] {
            w.record(14, v);
        }
        let alone = w.recent(14, 3).unwrap();
        assert_eq!(
            (alone.count, alone.newest_p50),
            (3, None),
            "a full slot stands alone"
        );
        w.record(30, 45.0);
        assert_eq!(w.recent(30, 3), None, "older slots left the ring");
    }

    #[test]
    fn a_thin_stream_carries_the_median_of_its_newest_observations() {
        let mut w = LatencyWindow::new(6, 2);
        // One observation a slot, far apart: older than the ring, yet still the newest 16.
        for i in 0..SETTLED_COUNT as i64 - 1 {
            w.record(i * 10, 40.0 + i as f64);
            assert_eq!(w.recent(i * 10, 1).unwrap().settled_p50, None, "not 16 yet");
        }
        w.record(200, 1000.0);
        let q = w.recent(200, 1).unwrap();
        assert_eq!(q.count, 1);
        // 40..=54 and 1000: the middle two are 47 and 48.
        assert_eq!(q.settled_p50, Some(47.5));
        // An interval that holds enough is its own settled level.
        for _ in 0..SETTLED_COUNT {
            w.record(201, 60.0);
        }
        assert_eq!(w.recent(201, 1).unwrap().settled_p50, None);
    }
    #[test]
    fn a_gauge_estimates_how_long_its_value_held_from_the_samples_around_the_change() {
        let mut g = Gauge::default();
        g.update(0, 3.0);
        g.update(15_000, 3.0);
        g.update(30_000, 0.0);
        assert_eq!((g.held_at_least(), g.held_for()), (0, 0), "seen once");
        g.update(45_000, 0.0);
        assert_eq!(g.held_at_least(), 15_000);
        assert_eq!(g.held_for(), 22_500, "halfway into the gap before");
        // First seen after a two-minute gap: no more credit than one sample spacing gives.
        let mut late = Gauge::default();
        late.update(0, 3.0);
        late.update(120_000, 0.0);
        late.update(135_000, 0.0);
        assert_eq!(late.held_for(), 22_500);
    }

    #[test]
    fn a_window_saved_and_loaded_answers_as_before() {
        let mut w = LatencyWindow::new(6, 2);
        for slot in 0..9 {
            for i in 0..(slot * 7 + 1) {
                w.record(slot, 3.0 + (i * slot) as f64 * 1.7);
            }
        }
        let bytes = postcard::to_stdvec(&w).unwrap();
        let mut back: LatencyWindow = postcard::from_bytes(&bytes).unwrap();
        for slot in 0..10 {
            assert_eq!(back.interval(slot), w.interval(slot), "slot {slot}");
            assert_eq!(back.window(slot), w.window(slot), "window at {slot}");
            assert_eq!(back.recent(slot, 3), w.recent(slot, 3), "recent at {slot}");
        }
        assert_eq!(postcard::to_stdvec(&back).unwrap(), bytes);
        let mut bad: SavedWindow = postcard::from_bytes(&bytes).unwrap();
        bad.slots.pop();
        let bad = postcard::to_stdvec(&bad).unwrap();
        assert!(
            postcard::from_bytes::<LatencyWindow>(&bad).is_err(),
            "slots and histograms disagree"
        );
    }

    #[test]
    fn interval_quantiles_ignore_a_single_outlier() {
        let mut w = LatencyWindow::new(6, 2);
        for i in 0..99 {
            w.record(7, 10.0 + (i % 10) as f64);
        }
        w.record(7, 5000.0);
        let q = w.interval(7).unwrap();
        assert_eq!(q.count, 100);
        assert!(q.p99 < 25.0, "p99 {} moved by one outlier", q.p99);
        assert!((q.max - 5000.0).abs() < 50.0);
        assert!((q.p50 - 14.0).abs() < 1.0, "p50 {}", q.p50);
    }

    #[test]
    fn ring_reuses_slots_and_window_merges_recent_ones() {
        let mut w = LatencyWindow::new(3, 2);
        w.record(1, 100.0);
        w.record(2, 200.0);
        w.record(3, 300.0);
        w.record(4, 400.0); // evicts slot 1
        assert!(w.interval(1).is_none());
        let win = w.window(4).unwrap();
        assert_eq!(win.count, 3);
        assert!((win.max - 400.0).abs() < 4.0);
        assert!(w.memory_bytes() > 0);
    }

    #[test]
    fn counter_handles_resets_and_late_samples() {
        let mut c = Counter::default();
        c.update(0, 100.0);
        c.update(10, 150.0);
        c.update(5, 120.0); // late: ignored
        c.update(20, 30.0); // reset: counts 30
        assert_eq!(c.take_interval_increase(), 80.0);
        assert_eq!(c.take_interval_increase(), 0.0);
        assert_eq!(c.gauge.value(), Some(30.0));
    }

    #[test]
    fn gauge_tracks_when_it_last_changed() {
        let mut g = Gauge::default();
        g.update(0, 5.0);
        g.update(10, 5.0);
        assert_eq!(g.changed_at, 0);
        g.update(20, 6.0);
        assert_eq!(g.changed_at, 20);
    }
}
