//! When incidents and traps happen: incidents one at a time after a quiet warm-up, each kind in
//! every round; traps (rebalances, end-of-day bursts, scrape gaps) in the quiet time between them.

use rand::rngs::StdRng;
use rand::RngExt;

use std::collections::BTreeMap;

use super::world::{labels, Action, QueueMode, World, KAFKA, RABBIT};
use crate::dataset::labels::{Incident, Trap};
use crate::detect::AlertKind;

const WARMUP_S: u64 = 30 * 60;
/// A drift stands out once latency has risen by this share (the detectors' `min_ratio` - 1):
/// the daily curve moves latency by less.
const DISTINGUISHABLE_RISE: f64 = 0.5;

type Labels = BTreeMap<String, String>;

/// One change to the world, on from `start` until `end` (seconds from the start).
pub(super) struct Episode {
    pub(super) action: Action,
    pub(super) start: u64,
    pub(super) end: u64,
}

pub(super) fn plan_incidents(
    world: &World,
    kinds: &[&str],
    subtle: bool,
    secs: u64,
    rng: &mut StdRng,
    start_ms: i64,
) -> (Vec<Episode>, Vec<Incident>) {
    let mut episodes = Vec::new();
    let mut incidents = Vec::new();
    let mut t = WARMUP_S;
    let mut order: Vec<&str> = Vec::new();
    loop {
        if kinds.is_empty() {
            break;
        }
        if order.is_empty() {
            order = kinds.to_vec();
            // A fresh shuffle per round keeps every kind represented in any 6-hour run.
            for i in (1..order.len()).rev() {
                order.swap(i, rng.random_range(0..=i));
            }
        }
        let kind = order.pop().expect("refilled above");
        t += rng.random_range(12 * 60..25 * 60);
        let minutes = |rng: &mut StdRng, a: u64, b: u64| rng.random_range(a * 60..b * 60);
        let g = rng.random_range(0..world.groups.len());
        let q = rng.random_range(0..world.queues.len());
        let l = rng.random_range(0..world.latencies.len());
        // Subtle slowdowns consume only 15–40% less than arrives; the default ones 35% less.
        let slow_share = if subtle && kind == "backlog_growth" {
            rng.random_range(0.6..0.85)
        } else {
            0.65
        };
        let (action, dur, alert_kind, labels, distinguishable_after) = match kind {
            "partition_stall" => {
                let p = rng.random_range(0..world.groups[g].position.len());
                let mut labels = world.group_labels(g);
                labels.insert("partition".into(), p.to_string());
                (
                    Action::StickPartition(g, p),
                    minutes(rng, 6, 15),
                    AlertKind::ConsumerStall,
                    labels,
                    None,
                )
            }
            "group_stop" => (
                Action::StopGroup(g),
                minutes(rng, 5, 12),
                AlertKind::ConsumerStall,
                world.group_labels(g),
                None,
            ),
            "latency_spike" => {
                let f = rng.random_range(4.0..8.0);
                (
                    Action::LatencyFactor(l, f, 0.0),
                    minutes(rng, 5, 12),
                    AlertKind::Latency,
                    world.latencies[l].labels.clone(),
                    None,
                )
            }
            "latency_drift" => {
                let f = rng.random_range(3.0..4.0);
                let ramp = minutes(rng, 20, 30);
                (
                    Action::LatencyFactor(l, f, ramp as f64),
                    ramp + 300,
                    AlertKind::Latency,
                    world.latencies[l].labels.clone(),
                    // The climb is linear: it has risen by half once it is 0.5 / (f - 1) up.
                    Some((ramp as f64 * DISTINGUISHABLE_RISE / (f - 1.0)) as u64),
                )
            }
            "backlog_growth" if rng.random_bool(0.5) => (
                Action::SlowQueue(q, slow_share),
                minutes(rng, 15, 25),
                AlertKind::BacklogGrowth,
                world.queue_labels(q),
                None,
            ),
            "backlog_growth" => (
                Action::SlowGroup(g, slow_share),
                minutes(rng, 15, 25),
                AlertKind::BacklogGrowth,
                world.group_labels(g),
                None,
            ),
            "rabbit_consumers_gone" => (
                Action::QueueMode(q, QueueMode::Gone),
                minutes(rng, 5, 12),
                AlertKind::ConsumerStall,
                world.queue_labels(q),
                None,
            ),
            _ => (
                Action::QueueMode(q, QueueMode::Stuck),
                minutes(rng, 5, 12),
                AlertKind::ConsumerStall,
                world.queue_labels(q),
                None,
            ),
        };
        // Leave room after the incident for the backlog to drain before the run ends.
        if t + dur + 10 * 60 > secs {
            break;
        }
        episodes.push(Episode {
            action,
            start: t,
            end: t + dur,
        });
        incidents.push(Incident {
            kind: alert_kind,
            name: kind.to_string(),
            labels,
            start: start_ms + t as i64 * 1000,
            end: start_ms + (t + dur) as i64 * 1000,
            distinguishable_at: distinguishable_after.map(|d| start_ms + (t + d) as i64 * 1000),
        });
        t += dur;
    }
    (episodes, incidents)
}

pub(super) fn plan_traps(
    world: &World,
    incidents: &[Episode],
    secs: u64,
    rng: &mut StdRng,
    start_ms: i64,
) -> (Vec<Episode>, Vec<Trap>) {
    let mut traps = TrapPlan::new(incidents, start_ms);
    let mut t = 10 * 60;
    while t + 15 * 60 < secs {
        t += rng.random_range(8 * 60..20 * 60);
        let what = rng.random_range(0..10);
        let dur = match what {
            0..=4 => rng.random_range(15..35),
            5..=6 => rng.random_range(90..150),
            _ => rng.random_range(60..120),
        };
        if t + dur >= secs || traps.busy(t, t + dur) {
            continue;
        }
        match what {
            0..=4 => {
                let g = rng.random_range(0..world.groups.len());
                let l = world.group_labels(g);
                traps.push(Action::Rebalance(g), t, dur, "rebalance", l);
            }
            5..=6 => {
                let tp = rng.random_range(0..world.topics.len());
                let l = labels(&[("cluster", KAFKA), ("topic", world.topics[tp].name)]);
                traps.push(Action::Burst(tp, 4.0), t, dur, "end_of_day_burst", l);
            }
            _ => {
                let l = labels(&[("cluster", KAFKA)]);
                traps.push(Action::ScrapeGap, t, dur, "scrape_gap", l);
            }
        }
        t += dur;
    }
    traps.done()
}

/// Traps being planned: each a change to the world and its label, kept clear of the incidents
/// (from 5 minutes before one starts to 10 minutes after it ends, time enough to drain).
struct TrapPlan<'a> {
    incidents: &'a [Episode],
    start_ms: i64,
    plan: Vec<Episode>,
    traps: Vec<Trap>,
}

impl<'a> TrapPlan<'a> {
    fn new(incidents: &'a [Episode], start_ms: i64) -> Self {
        TrapPlan {
            incidents,
            start_ms,
            plan: Vec::new(),
            traps: Vec::new(),
        }
    }

    fn busy(&self, a: u64, b: u64) -> bool {
        self.incidents
            .iter()
            .any(|e| a < e.end + 10 * 60 && e.start < b + 5 * 60)
    }

    fn push(&mut self, action: Action, start: u64, dur: u64, name: &str, labels: Labels) {
        self.plan.push(Episode {
            action,
            start,
            end: start + dur,
        });
        self.traps.push(Trap {
            name: name.into(),
            labels,
            start: self.start_ms + start as i64 * 1000,
            end: self.start_ms + (start + dur) as i64 * 1000,
        });
    }

    fn done(self) -> (Vec<Episode>, Vec<Trap>) {
        (self.plan, self.traps)
    }
}

/// The bursts and dumps that are part of the world's normal day, labelled as the traps they are:
/// each counts until 10 minutes after it began, time enough to drain.
pub(super) fn recurring_traps(world: &World, secs: u64, start_ms: i64) -> Vec<Trap> {
    let at = |t: u64| start_ms + t as i64 * 1000;
    let mut traps = Vec::new();
    for t in 0..secs {
        for tp in &world.topics {
            if tp.bursts.is_some_and(|b| b.starts(t)) {
                traps.push(Trap {
                    name: "recurring_burst".into(),
                    labels: labels(&[("cluster", KAFKA), ("topic", tp.name)]),
                    start: at(t),
                    end: at(t + 10 * 60),
                });
            }
        }
        for (i, q) in world.queues.iter().enumerate() {
            if q.dumps.is_some_and(|d| d.starts(t)) {
                traps.push(Trap {
                    name: "batch_dump".into(),
                    labels: world.queue_labels(i),
                    start: at(t),
                    end: at(t + 10 * 60),
                });
            }
        }
    }
    traps
}

/// A restless day: every group rebalances every 10–20 minutes (commits pause for 10–40 s), and
/// the RabbitMQ broker restarts every two to four hours (its counters start again from 0,
/// consumers are gone for 5–15 s). None of it overlaps an incident.
pub(super) fn restless_traps(
    world: &World,
    incidents: &[Episode],
    secs: u64,
    rng: &mut StdRng,
    start_ms: i64,
) -> (Vec<Episode>, Vec<Trap>) {
    let mut traps = TrapPlan::new(incidents, start_ms);
    for g in 0..world.groups.len() {
        let mut t = rng.random_range(5 * 60..15 * 60);
        while t + 5 * 60 < secs {
            let dur = rng.random_range(10..40);
            if !traps.busy(t, t + dur) {
                let l = world.group_labels(g);
                traps.push(Action::Rebalance(g), t, dur, "rebalance", l);
            }
            t += dur + rng.random_range(10 * 60..20 * 60);
        }
    }
    let mut t = rng.random_range(30 * 60..90 * 60);
    while t + 15 * 60 < secs {
        let dur = rng.random_range(5..15);
        if !traps.busy(t, t + dur) {
            let l = labels(&[("cluster", RABBIT)]);
            traps.push(Action::BrokerRestart, t, dur, "broker_restart", l);
        }
        t += rng.random_range(2 * 3600..4 * 3600);
    }
    traps.done()
}
