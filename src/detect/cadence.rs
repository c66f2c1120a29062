//! How long something usually lasts before it ends, learned per entity: a freeze before the next
//! commit, a pause before the next ack, a harmless excursion of latency before it settles.
//!
//! A consumer that commits every 5 s and a Kafka Connect sink that commits every 60 s both look
//! frozen between commits; only what each usually does tells a stall from a pause. A [`Cadence`]
//! keeps the lengths of the last freezes that ended in progress and gives a high quantile of them,
//! so one freeze that was an incident (or a scrape gap) does not teach it that stalls are normal.

use serde::{Deserialize, Serialize};

use crate::window::Gauge;

/// Freezes remembered: enough for the quantile to ignore a few outliers, few enough to follow a
/// consumer that changes its schedule within the hour.
const KEPT: usize = 32;
/// Freezes seen before the cadence is trusted.
const MIN_SEEN: usize = 3;

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Cadence {
    lengths: [u32; KEPT],
    seen: usize,
}

impl Default for Cadence {
    fn default() -> Self {
        Cadence {
            lengths: [0; KEPT],
            seen: 0,
        }
    }
}

impl Cadence {
    /// One more of them ended, after `length` (milliseconds, or whatever unit the caller keeps).
    pub fn observe(&mut self, length: i64) {
        self.lengths[self.seen % KEPT] = length.clamp(0, u32::MAX as i64) as u32;
        self.seen += 1;
    }

    /// One more freeze of `gauge` ended at its latest change, having begun at `began`. A freeze
    /// that no sample showed (the gauge moved at every sample, across a lost scrape) was no pause
    /// of its own: it is learned as one sample spacing.
    pub fn observe_freeze(&mut self, began: i64, gauge: &Gauge) {
        let length = gauge.changed_at - began;
        let unseen = gauge.before_change.is_none_or(|b| b <= began);
        self.observe(if unseen && gauge.spacing > 0 {
            length.min(gauge.spacing)
        } else {
            length
        });
    }

    /// The usual longest freeze (the 90th percentile of those kept), once enough were seen.
    pub fn typical(&self) -> Option<i64> {
        let n = self.seen.min(KEPT);
        if n < MIN_SEEN {
            return None;
        }
        let mut kept = self.lengths;
        let kept = &mut kept[..n];
        let rank = (n * 9).div_ceil(10) - 1;
        let (_, v, _) = kept.select_nth_unstable(rank);
        Some(*v as i64)
    }

    /// The longest of those kept, once enough were seen: for what must not be exceeded by
    /// anything routine, where one outlier too many matters less than a page.
    pub fn highest(&self) -> Option<i64> {
        let n = self.seen.min(KEPT);
        (n >= MIN_SEEN).then(|| self.lengths[..n].iter().copied().max().unwrap_or(0) as i64)
    }
}

/// The longest freeze tolerated: `floor`, or `factor` times the learned cadence when that is
/// longer. A counter that moves at about every sample (a cadence within one and a half sample
/// `spacing`s: what the cadence of an every-scrape mover measures is the scraping) has shown no
/// pause of its own, and the floor alone judges it. Until a cadence is learned, `unlearned` (at
/// least `floor`).
pub fn freeze_limit_ms(
    typical: Option<i64>,
    spacing: i64,
    floor: i64,
    factor: f64,
    unlearned: i64,
) -> i64 {
    match typical {
        Some(t) if t <= spacing + spacing / 2 => floor,
        Some(t) => floor.max((t as f64 * factor) as i64),
        None => floor.max(unlearned),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_nothing_from_fewer_than_three_freezes() {
        let mut c = Cadence::default();
        c.observe(60_000);
        c.observe(60_000);
        assert_eq!(c.typical(), None);
        c.observe(75_000);
        assert_eq!(c.typical(), Some(75_000));
    }

    #[test]
    fn a_freeze_no_sample_showed_is_learned_as_one_sample_spacing() {
        // Scraped every 30 s and moving at every scrape; the scrape at 90 s is lost, and at 180 s
        // one shows it unmoved.
        let mut g = Gauge::default();
        let mut c = Cadence::default();
        let mut began = 0;
        for (t, v) in [
            (0, 0.0),
            (30, 1.0),
            (60, 2.0),
            (120, 3.0),
            (150, 4.0),
            (180, 4.0),
            (210, 5.0),
        ] {
            let before = g.changed_at;
            g.update(t * 1000, v);
            if t > 0 && g.changed_at > before {
                c.observe_freeze(began, &g);
                began = g.changed_at;
            }
        }
        let learned: Vec<u32> = c.lengths[..c.seen].to_vec();
        // The lost scrape's 60 s is one spacing (30 s smoothed toward 60: 33.75 s); the 60 s
        // that a sample saw frozen is a pause of its own.
        assert_eq!(learned, [30_000, 30_000, 33_750, 30_000, 60_000]);
    }

    #[test]
    fn one_long_freeze_among_many_does_not_become_the_cadence() {
        let mut c = Cadence::default();
        for i in 0..40 {
            c.observe(if i == 20 {
                900_000
            } else {
                15_000 + (i % 3) * 1000
            });
        }
        assert_eq!(c.typical(), Some(17_000));
    }

    #[test]
    fn follows_a_schedule_that_changed() {
        let mut c = Cadence::default();
        for _ in 0..40 {
            c.observe(5_000);
        }
        for _ in 0..KEPT {
            c.observe(60_000);
        }
        assert_eq!(c.typical(), Some(60_000));
    }

    #[test]
    fn the_limit_is_the_floor_or_the_scaled_cadence_whichever_is_longer() {
        assert_eq!(freeze_limit_ms(Some(15_000), 0, 45_000, 1.5, 0), 45_000);
        assert_eq!(freeze_limit_ms(Some(60_000), 0, 45_000, 1.5, 0), 90_000);
        assert_eq!(freeze_limit_ms(None, 0, 45_000, 1.5, 120_000), 120_000);
    }

    #[test]
    fn a_counter_moving_at_every_sample_is_judged_by_the_floor() {
        // (its cadence, the sample spacing, the limit), at a 20 s floor.
        for (typical, spacing, limit) in [
            // Scraped every 15 s, seen to move 15-19 s apart: it never pauses.
            (19_000, 15_000, 20_000),
            // Every 30 s: the same, with scrapes twice as far apart.
            (34_000, 30_000, 20_000),
            // Commits every minute, scraped every 15 s or 30 s: its own cadence, stretched.
            (62_000, 15_000, 93_000),
            (62_000, 30_000, 93_000),
        ] {
            assert_eq!(
                freeze_limit_ms(Some(typical), spacing, 20_000, 1.5, 0),
                limit,
                "cadence {typical} ms at {spacing} ms spacing"
            );
        }
    }
}
