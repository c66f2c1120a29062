//! Backlog growth: the lag of a group (or the ready depth of a queue) keeps growing while its
//! consumers still make progress, i.e. they are alive but too slow.
//!
//! The backlog is expressed in seconds of consumption (backlog / smoothed consumption rate), which
//! makes one threshold fit a quiet queue and a busy topic alike and gives the drain-time projection
//! in the alert. Growth is judged with the Mann-Kendall trend statistic over the fresh samples of
//! the last `growth_window`: a burst that drains promptly, or a rebalance blip, has no sustained
//! trend over that window. Consumers that take in well below what usually arrives are not
//! absorbing any burst, and half the window of growth is enough to believe them slowed. No
//! progress at all is a stall, which is another detector's business.
//!
//! Consumers that report progress in steps (a sink committing once a minute) make the lag a
//! sawtooth. The detector learns how often progress comes ([`Cadence`]) and judges only the
//! backlog left right after each step — the sawtooth's floor — over a window of at least six
//! steps, and counts consumers as progressing while the next step is not overdue.
//!
//! A burst of arrivals (the end-of-day settlement run) also makes the backlog grow, while the
//! consumers work faster than they usually do. If, at their present pace, they would clear the
//! backlog within `critical_backlog_seconds` once arrivals are back to usual, the growth is a
//! burst being absorbed and raises nothing; consumers at (or below) their usual pace would never
//! clear it, so a surge past their capacity or a slowdown still does.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::{AlertKind, Cadence, Detector, Finding, Severity};
use crate::config::BacklogConfig;
use crate::window::Gauge;

/// Smoothing of the consumption rate: about a minute at 10 s intervals.
const RATE_ALPHA: f64 = 0.15;
/// Smoothing of the usual consumption rate: about half an hour at 10 s intervals.
const USUAL_RATE_ALPHA: f64 = 1.0 / 180.0;
/// Intervals (30 s at 10 s) over which consumers must have made some progress: scrapes every
/// 15 s leave single intervals without any. Longer when progress usually comes in slower steps.
const PROGRESS_INTERVALS: i64 = 3;
/// Steps of progress the growth window spans at least, for consumers that progress in steps.
const WINDOW_STEPS: i64 = 6;
/// Steps' worth of backlog such a consumer holds without anything being wrong.
const STEP_ALLOWANCE: f64 = 1.5;
/// Share of the average step that each quarter of the window must rise by.
const MIN_STEP_SHARE: f64 = 0.25;
/// Share of the window's peak the backlog must still be at to count as growing.
const PEAK_SHARE: f64 = 0.9;
/// Consumption below this share of what usually arrives is a slowdown: growth over half the
/// window is enough to believe it.
const SLOWED_SHARE: f64 = 0.8;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BacklogInput {
    /// End of the interval, event time in ms.
    pub now: i64,
    /// Messages waiting (sum of lag over progressing partitions, or ready messages).
    pub backlog: f64,
    /// Whether `backlog` comes from a sample taken during this interval.
    pub fresh: bool,
    /// Messages consumed during the interval.
    pub consumed: f64,
    pub interval_secs: f64,
    /// Age of the oldest waiting message, in seconds, where the source measures it.
    pub time_lag: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BacklogDetector {
    /// Settings come from the config in force, never from a checkpoint.
    #[serde(skip)]
    cfg: BacklogConfig,
    rate: Option<f64>,
    /// The consumption rate while little waits, over about half an hour: what arrives as a rule.
    usual_rate: Option<f64>,
    /// Intervals the usual rate has learned from: a plain mean until there are enough for the
    /// half hour's smoothing, so its first, unrepresentative value does not linger.
    usual_seen: u32,
    /// When consumers last made progress, and how long apart their steps of progress usually are.
    progressed_at: Option<i64>,
    steps: Cadence,
    /// The fresh samples of the backlog, for their usual spacing: steps of progress no further
    /// apart than that are only the scraping, not a consumer's own rhythm.
    sampled: Gauge,
    /// The last time consumers had made no progress: growth counts only after it.
    stalled_at: i64,
    samples: VecDeque<(i64, f64)>,
    active: bool,
}

impl BacklogDetector {
    pub fn new(cfg: &BacklogConfig) -> Self {
        BacklogDetector {
            cfg: cfg.clone(),
            rate: None,
            usual_rate: None,
            usual_seen: 0,
            progressed_at: None,
            steps: Cadence::default(),
            sampled: Gauge::default(),
            stalled_at: i64::MIN,
            samples: VecDeque::new(),
            active: false,
        }
    }
}

impl Detector for BacklogDetector {
    type Config = BacklogConfig;

    fn configure(&mut self, cfg: &BacklogConfig) {
        self.cfg = cfg.clone();
    }

    type Input<'a> = BacklogInput;

    fn on_interval(&mut self, x: BacklogInput) -> Option<Finding> {
        let now_rate = x.consumed / x.interval_secs;
        let interval_ms = (x.interval_secs * 1000.0) as i64;
        if x.fresh {
            self.sampled.update(x.now, x.backlog);
        }
        // Smoothed over a minute, or over three steps for consumers that progress in steps.
        let step_intervals = self.steps.typical().unwrap_or(0) as f64 / interval_ms as f64;
        let alpha = RATE_ALPHA.min(1.0 / (3.0 * step_intervals).max(1.0));
        let rate = match self.rate {
            None => now_rate,
            Some(r) => r + alpha * (now_rate - r),
        };
        self.rate = Some(rate);
        if x.consumed > 0.0 {
            if let Some(before) = self.progressed_at {
                self.steps.observe(x.now - before);
            }
            self.progressed_at = Some(x.now);
        }
        let step_ms = self.steps.typical().unwrap_or(interval_ms);
        let overdue_after = (PROGRESS_INTERVALS * interval_ms).max(step_ms * 3 / 2);
        let progressing = self
            .progressed_at
            .is_some_and(|t| x.now - t < overdue_after);
        let window_ms = (self.cfg.growth_window.as_millis() as i64).max(WINDOW_STEPS * step_ms);
        // Only the backlog left right after a step of progress: between steps it rises anyway.
        if x.fresh && (x.consumed > 0.0 || step_ms <= interval_ms) {
            self.samples.push_back((x.now, x.backlog));
        }
        while self
            .samples
            .front()
            .is_some_and(|&(t, _)| t <= x.now - window_ms)
        {
            self.samples.pop_front();
        }
        if rate <= 0.0 || !progressing {
            self.stalled_at = x.now;
            self.active = false;
            return None;
        }
        let backlog_secs = x.backlog / rate;
        let usual = *self.usual_rate.get_or_insert(rate);
        // Consumers that fell well behind what usually arrives are not absorbing a burst: their
        // backlog's growth needs a shorter run to be believed.
        let slowed = rate < SLOWED_SHARE * usual;
        let judge_ms = if slowed {
            (window_ms / 2).max(WINDOW_STEPS * step_ms)
        } else {
            window_ms
        };
        let all = self.samples.make_contiguous();
        let judged = &all[all.partition_point(|&(t, _)| t <= x.now - judge_ms)..];
        let &(first_t, first) = judged.first()?;
        // The whole window must be one of progress: what piled up during a stall and drains now
        // is the stall's story, not a backlog's.
        let covered = x.now - first_t >= judge_ms * 3 / 4
            && x.now.saturating_sub(self.stalled_at) >= judge_ms;
        let tau = mann_kendall_tau(judged.iter().map(|s| s.1));
        // Still at its peak: a burst already draining is not growth, however it rose.
        let peak = judged.iter().map(|s| s.1).fold(f64::MIN, f64::max);
        let growing = covered
            && tau >= self.cfg.growth_share
            && x.backlog >= PEAK_SHARE * peak
            && rises_throughout(judged)
            && x.backlog > first;
        // A consumer that progresses in steps holds up to a step's worth of backlog as a matter
        // of course (and a scrape may land anywhere in the step): that much is its normal. Steps
        // within one and a half sample spacings are the scraping's, not the consumer's.
        let spacing_ms = self.sampled.spacing.max(interval_ms);
        let usual_secs = if step_ms > spacing_ms + spacing_ms / 2 {
            STEP_ALLOWANCE * step_ms as f64 / 1000.0
        } else {
            0.0
        };
        let min_secs = self.cfg.min_backlog_seconds + usual_secs;
        let absorbing =
            rate > usual && x.backlog / (rate - usual) < self.cfg.critical_backlog_seconds;
        // With little waiting, what is consumed is what arrives.
        if backlog_secs < min_secs {
            self.usual_seen = self.usual_seen.saturating_add(1);
            let alpha = USUAL_RATE_ALPHA.max(1.0 / self.usual_seen as f64);
            self.usual_rate = Some(usual + alpha * (rate - usual));
        }
        let fire = growing && backlog_secs >= min_secs && !absorbing;
        let sustain = self.active && tau > 0.0 && backlog_secs >= min_secs / 2.0;
        self.active = fire || sustain;
        if !self.active {
            return None;
        }
        let minutes = ((x.now - first_t) as f64 / 60_000.0).max(1.0 / 6.0);
        let growth_per_min = (x.backlog - first) / rate / minutes;
        Some(Finding {
            kind: AlertKind::BacklogGrowth,
            severity: if backlog_secs >= self.cfg.critical_backlog_seconds {
                Severity::Critical
            } else {
                Severity::Warning
            },
            detector: "backlog_trend",
            metric: "backlog_seconds",
            observed: backlog_secs,
            expected: (first / rate).min(backlog_secs),
            score: tau,
            summary: format!(
                "backlog is {backlog_secs:.0} s of consumption ({:.0} messages at {rate:.1}/s) and growing {growth_per_min:.1} s per minute{}",
                x.backlog,
                x.time_lag.map_or(String::new(), |t| format!("; oldest message waiting {t:.0} s"))
            ),
            detail: Vec::new(),
            context: [("backlog_messages", x.backlog), ("consume_rate", rate), ("growth_seconds_per_minute", growth_per_min)]
                .into_iter()
                .chain(x.time_lag.map(|t| ("time_lag_seconds", t)))
                .collect(),
        })
    }
}

/// Whether the backlog rose through every quarter of the window, not in one burst: the median of
/// each quarter must exceed the one before by a fair share of the average step.
fn rises_throughout(samples: &[(i64, f64)]) -> bool {
    let (Some(&(t0, _)), Some(&(t1, _))) = (samples.first(), samples.last()) else {
        return false;
    };
    let span = (t1 - t0).max(1);
    let mut medians = [0.0; 4];
    for (q, m) in medians.iter_mut().enumerate() {
        let mut v: smallvec::SmallVec<[f64; 16]> = samples
            .iter()
            .filter(|(t, _)| ((t - t0) * 4 / (span + 1)) as usize == q)
            .map(|s| s.1)
            .collect();
        if v.is_empty() {
            return false;
        }
        v.sort_by(f64::total_cmp);
        *m = v[v.len() / 2];
    }
    let step = (medians[3] - medians[0]) / 3.0;
    step > 0.0
        && medians
            .windows(2)
            .all(|w| w[1] - w[0] >= MIN_STEP_SHARE * step)
}

/// Kendall's tau of the values against their order: 1 for a strictly rising run, 0 for no trend.
fn mann_kendall_tau(values: impl Iterator<Item = f64> + Clone) -> f64 {
    let v: smallvec::SmallVec<[f64; 64]> = values.collect();
    let n = v.len();
    if n < 4 {
        return 0.0;
    }
    let mut s = 0i64;
    for i in 0..n {
        for j in i + 1..n {
            s += (v[j] > v[i]) as i64 - (v[j] < v[i]) as i64;
        }
    }
    s as f64 / (n * (n - 1) / 2) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 10 s interval ending at second `t`.
    fn at(t: i64, backlog: f64, fresh: bool, consumed: f64) -> BacklogInput {
        BacklogInput {
            now: t * 1000,
            backlog,
            fresh,
            consumed,
            interval_secs: 10.0,
            time_lag: None,
        }
    }

    fn run(
        d: &mut BacklogDetector,
        from_s: i64,
        secs: i64,
        lag: impl Fn(i64) -> f64,
        rate: f64,
    ) -> Option<i64> {
        let mut first = None;
        for t in (from_s..from_s + secs).step_by(10) {
            let x = at(t, lag(t), t % 15 < 10, rate * 10.0);
            if d.on_interval(x).is_some() && first.is_none() {
                first = Some(t);
            }
        }
        first
    }

    fn noise(t: i64) -> f64 {
        ((t * 7919) % 13) as f64 * 10.0
    }

    #[test]
    fn persistent_growth_fires_with_a_drain_time() {
        let mut d = BacklogDetector::new(&BacklogConfig::default());
        assert!(run(&mut d, 0, 600, |t| 100.0 + noise(t), 100.0).is_none());
        // Producer outpaces the consumer by 30 messages/s from t=600.
        let fired = run(
            &mut d,
            600,
            900,
            |t| 100.0 + noise(t) + 30.0 * (t - 600) as f64,
            100.0,
        );
        let t = fired.expect("fires");
        assert!(t - 600 <= 330, "fired after {} s", t - 600);
        let f = d
            .on_interval(BacklogInput {
                now: 1_600_000,
                backlog: 30_000.0,
                fresh: true,
                consumed: 1000.0,
                interval_secs: 10.0,
                time_lag: Some(312.0),
            })
            .unwrap();
        assert!(
            f.summary.contains("s of consumption") && f.summary.ends_with("waiting 312 s"),
            "{}",
            f.summary
        );
        assert!(f.context.contains(&("time_lag_seconds", 312.0)));
    }

    #[test]
    fn a_burst_that_drains_promptly_stays_quiet() {
        let mut d = BacklogDetector::new(&BacklogConfig::default());
        let burst = |t: i64| {
            let base = 100.0 + noise(t);
            match t {
                600..=720 => base + 80.0 * (t - 600) as f64,
                721..=840 => base + (9600.0 - 80.0 * (t - 720) as f64).max(0.0),
                _ => base,
            }
        };
        assert!(run(&mut d, 0, 1800, burst, 100.0).is_none());
    }

    #[test]
    fn a_burst_the_consumers_absorb_by_working_faster_is_not_growth() {
        let mut d = BacklogDetector::new(&BacklogConfig::default());
        assert!(run(&mut d, 0, 1800, |t| 100.0 + noise(t), 100.0).is_none());
        // Arrivals triple for four minutes; consumers speed up to 1.6x and fall behind.
        let burst = |t: i64| 100.0 + noise(t) + 140.0 * (t - 1800).clamp(0, 240) as f64;
        assert!(run(&mut d, 1800, 240, burst, 160.0).is_none());
        // The same growth with consumers at their usual pace would never drain.
        let mut at_limit = BacklogDetector::new(&BacklogConfig::default());
        run(&mut at_limit, 0, 1800, |t| 100.0 + noise(t), 100.0);
        let surge = |t: i64| 100.0 + noise(t) + 140.0 * (t - 1800) as f64;
        assert!(run(&mut at_limit, 1800, 600, surge, 100.0).is_some());
    }

    /// Scraped every 15 s on a 10 s grid, as the pipeline sees it: consumption shows only in
    /// the intervals with a fresh sample. Returns seconds from `from_s` to the first finding.
    fn scraped(
        d: &mut BacklogDetector,
        from_s: i64,
        secs: i64,
        lag: impl Fn(i64) -> f64,
        rate: f64,
    ) -> Option<i64> {
        let mut last_fresh = from_s;
        (from_s..from_s + secs).step_by(10).find_map(|t| {
            let fresh = t % 30 < 20;
            let consumed = if fresh {
                rate * (t - last_fresh) as f64
            } else {
                0.0
            };
            if fresh {
                last_fresh = t;
            }
            let x = at(t, lag(t), fresh, consumed);
            d.on_interval(x).map(|_| t - from_s)
        })
    }

    #[test]
    fn consumers_that_step_with_the_scrapes_have_no_step_of_backlog_as_their_normal() {
        let mut d = BacklogDetector::new(&BacklogConfig::default());
        assert!(scraped(&mut d, 0, 1800, |t| 100.0 + noise(t), 100.0).is_none());
        // Consumers slow to 65% of what arrives: 35 messages/s pile up, a minute of consumption
        // within two. Their progress shows only at the scrapes, which is not a rhythm of theirs.
        let grow = |t: i64| 100.0 + noise(t) + 35.0 * (t - 1800) as f64;
        let fired = scraped(&mut d, 1800, 600, grow, 65.0).expect("fires");
        assert!(fired <= 160, "after {fired} s");
    }

    #[test]
    fn consumers_fallen_behind_what_arrives_are_believed_sooner_than_a_surge() {
        // Consumers that always carry 30 s of backlog: a little more is soon a minute's worth.
        let warm = || {
            let mut d = BacklogDetector::new(&BacklogConfig::default());
            assert!(scraped(&mut d, 0, 1800, |t| 3000.0 + noise(t), 100.0).is_none());
            d
        };
        let grow = |t: i64| 3000.0 + noise(t) + 35.0 * (t - 1800) as f64;
        // Slowed to 65% of what arrives: half the window of growth is enough.
        let slowed = scraped(&mut warm(), 1800, 600, grow, 65.0).expect("fires");
        // The same pile-up with consumers at their usual pace is a surge: most of the window.
        let surge = scraped(&mut warm(), 1800, 600, grow, 100.0).expect("fires");
        assert!(
            slowed + 40 <= surge,
            "slowdown after {slowed} s, surge after {surge} s"
        );
    }

    #[test]
    fn growth_stops_counting_once_consumers_stop() {
        let mut d = BacklogDetector::new(&BacklogConfig::default());
        let grow = |t: i64| 100.0 + 30.0 * t as f64;
        assert!(run(&mut d, 0, 900, grow, 100.0).is_some());
        assert!(
            run(&mut d, 900, 30, grow, 0.0).is_some(),
            "one quiet scrape is not a stop"
        );
        assert!(
            run(&mut d, 930, 300, grow, 0.0).is_none(),
            "a stall is not a backlog"
        );
    }

    #[test]
    fn no_progress_is_not_backlog_growth() {
        let mut d = BacklogDetector::new(&BacklogConfig::default());
        assert!(run(&mut d, 0, 1200, |t| 100.0 + 50.0 * t as f64, 0.0).is_none());
    }

    #[test]
    fn tau_measures_trend() {
        assert_eq!(mann_kendall_tau([1.0, 2.0, 3.0, 4.0].into_iter()), 1.0);
        assert_eq!(mann_kendall_tau([4.0, 3.0, 2.0, 1.0].into_iter()), -1.0);
        assert_eq!(mann_kendall_tau([1.0, 2.0].into_iter()), 0.0);
    }
}
