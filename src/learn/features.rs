//! Per-interval feature vectors, the one definition shared by training and scoring.
//!
//! Features are *relative*: each quantity, in log space, against the entity's own level (an EWMA
//! over about an hour) or its previous interval. One model per entity class then fits every
//! topic and queue of that class, whatever its absolute traffic, and a new entity is scored as
//! soon as its level has warmed up.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::alert::Entity;

/// The most features any class has.
pub const MAX_FEATURES: usize = 5;
/// Time constant of the level each quantity is compared with, in intervals.
pub const LEVEL_INTERVALS: f64 = 360.0;
/// Intervals an entity needs before its features mean anything.
pub const WARMUP_INTERVALS: u32 = 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntityClass {
    /// A Kafka consumer group on a topic.
    KafkaGroup,
    /// A RabbitMQ queue.
    RabbitQueue,
    /// An end-to-end latency series.
    Latency,
}

impl EntityClass {
    pub const ALL: [EntityClass; 3] = [
        EntityClass::KafkaGroup,
        EntityClass::RabbitQueue,
        EntityClass::Latency,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EntityClass::KafkaGroup => "kafka_group",
            EntityClass::RabbitQueue => "rabbit_queue",
            EntityClass::Latency => "latency",
        }
    }

    /// Feature names, in vector order: what a model file must list to be accepted.
    pub fn feature_names(self) -> &'static [&'static str] {
        match self {
            EntityClass::KafkaGroup => &[
                "backlog_vs_level",
                "backlog_change",
                "consume_rate_vs_level",
                "members_vs_level",
            ],
            EntityClass::RabbitQueue => &[
                "ready_vs_level",
                "ready_change",
                "unacked_share",
                "ack_rate_vs_level",
                "consumers_vs_level",
            ],
            EntityClass::Latency => &["p50_vs_level", "p99_vs_level", "p99_over_p50"],
        }
    }

    pub fn dims(self) -> usize {
        self.feature_names().len()
    }
}

/// One interval's raw measurements of an entity, as its detectors saw them.
#[derive(Debug, Clone, Copy)]
pub enum Raw {
    KafkaGroup {
        backlog: f64,
        consume_rate: f64,
        members: f64,
    },
    RabbitQueue {
        ready: f64,
        unacked: f64,
        ack_rate: f64,
        consumers: f64,
    },
    Latency {
        p50: f64,
        p99: f64,
    },
}

impl Raw {
    pub fn class(&self) -> EntityClass {
        match self {
            Raw::KafkaGroup { .. } => EntityClass::KafkaGroup,
            Raw::RabbitQueue { .. } => EntityClass::RabbitQueue,
            Raw::Latency { .. } => EntityClass::Latency,
        }
    }

    /// The measurement a person would plot for this entity: backlog, ready depth or p99.
    pub fn primary(&self) -> f64 {
        match *self {
            Raw::KafkaGroup { backlog, .. } => backlog,
            Raw::RabbitQueue { ready, .. } => ready,
            Raw::Latency { p99, .. } => p99,
        }
    }
}

pub type Vector = [f64; MAX_FEATURES];

/// Turns an entity's raw measurements into feature vectors, interval after interval.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct FeatureState {
    level: Vector,
    previous: Vector,
    seen: u32,
}

impl FeatureState {
    /// The features of this interval, or `None` while the entity warms up.
    pub fn next(&mut self, raw: &Raw) -> Option<Vector> {
        let mut logs = [0.0; MAX_FEATURES];
        let mut x = [0.0; MAX_FEATURES];
        match *raw {
            Raw::KafkaGroup {
                backlog,
                consume_rate,
                members,
            } => {
                logs[..3].copy_from_slice(&[ln1p(backlog), ln1p(consume_rate), ln1p(members)]);
                x[0] = logs[0] - self.level[0];
                x[1] = logs[0] - self.previous[0];
                x[2] = logs[1] - self.level[1];
                x[3] = logs[2] - self.level[2];
            }
            Raw::RabbitQueue {
                ready,
                unacked,
                ack_rate,
                consumers,
            } => {
                logs[..3].copy_from_slice(&[ln1p(ready), ln1p(ack_rate), ln1p(consumers)]);
                x[0] = logs[0] - self.level[0];
                x[1] = logs[0] - self.previous[0];
                x[2] = unacked.max(0.0) / (ready.max(0.0) + unacked.max(0.0) + 1.0);
                x[3] = logs[1] - self.level[1];
                x[4] = logs[2] - self.level[2];
            }
            Raw::Latency { p50, p99 } => {
                logs[..2].copy_from_slice(&[p50.max(0.01).ln(), p99.max(0.01).ln()]);
                x[0] = logs[0] - self.level[0];
                x[1] = logs[1] - self.level[1];
                x[2] = logs[1] - logs[0];
            }
        }
        if x.iter().chain(&logs).any(|v| !v.is_finite()) {
            return None;
        }
        let alpha = if self.seen == 0 {
            1.0
        } else {
            (1.0 / (self.seen as f64 + 1.0)).max(1.0 / LEVEL_INTERVALS)
        };
        for (level, log) in self.level.iter_mut().zip(logs) {
            *level += alpha * (log - *level);
        }
        self.previous = logs;
        self.seen = self.seen.saturating_add(1);
        (self.seen > WARMUP_INTERVALS).then_some(x)
    }
}

fn ln1p(x: f64) -> f64 {
    x.max(0.0).ln_1p()
}

/// One entity's interval, as training and reports see it.
#[derive(Debug, Clone)]
pub struct FeatureRow {
    pub entity: Arc<Entity>,
    pub class: EntityClass,
    /// End of the interval, Unix ms.
    pub ts: i64,
    pub primary: f64,
    pub x: Vector,
    /// The learned score, where a model for the class was loaded.
    pub score: Option<f64>,
}

impl FeatureRow {
    pub fn features(&self) -> &[f64] {
        &self.x[..self.class.dims()]
    }
}

/// Hour of day (UTC) of an event time, for seasonal profiles.
pub fn hour_of_day(ts_ms: i64) -> usize {
    (ts_ms.div_euclid(3_600_000).rem_euclid(24)) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_are_relative_to_the_entitys_own_level() {
        let mut small = FeatureState::default();
        let mut big = FeatureState::default();
        let raw = |scale: f64, p99: f64| Raw::Latency {
            p50: 10.0 * scale,
            p99: p99 * scale,
        };
        for _ in 0..WARMUP_INTERVALS {
            assert!(small.next(&raw(1.0, 40.0)).is_none());
            assert!(big.next(&raw(100.0, 40.0)).is_none());
        }
        let a = small.next(&raw(1.0, 40.0)).unwrap();
        let b = big.next(&raw(100.0, 40.0)).unwrap();
        assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-9));
        assert!(a[1].abs() < 1e-9, "steady p99 is at its level");
        let spike = small.next(&raw(1.0, 400.0)).unwrap();
        assert!((spike[1] - 10f64.ln()).abs() < 0.01, "{spike:?}");
    }

    #[test]
    fn a_queue_that_loses_its_consumers_says_so() {
        let mut s = FeatureState::default();
        let raw = |consumers| Raw::RabbitQueue {
            ready: 10.0,
            unacked: 30.0,
            ack_rate: 50.0,
            consumers,
        };
        for _ in 0..=WARMUP_INTERVALS {
            s.next(&raw(2.0));
        }
        let x = s.next(&raw(0.0)).unwrap();
        assert!(x[4] < -1.0, "{x:?}");
        assert!((x[2] - 30.0 / 41.0).abs() < 1e-9);
    }
}
