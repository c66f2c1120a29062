//! The simulated world: a Kafka cluster (topics, partitions, consumer groups that consume and
//! commit every 5 s), a RabbitMQ broker (queues, consumers, prefetch) and the end-to-end latency
//! of each consumer, advanced one second at a time. Incidents and traps change it through
//! [`Action`]s.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand_distr::{Distribution, Poisson};

pub(super) const COMMIT_EVERY_S: u64 = 5;
pub(super) const KAFKA: &str = "pay-kafka";
pub(super) const RABBIT: &str = "pay-rabbit";

pub(super) struct Topic {
    pub(super) name: &'static str,
    pub(super) rate: f64,
    pub(super) end: Vec<f64>,
    pub(super) burst: f64,
}

pub(super) struct Group {
    pub(super) name: &'static str,
    pub(super) topic: usize,
    pub(super) members: u32,
    pub(super) base_members: u32,
    pub(super) headroom: f64,
    pub(super) position: Vec<f64>,
    pub(super) committed: Vec<f64>,
    pub(super) paused: bool,
    pub(super) stuck_partition: Option<usize>,
    pub(super) stopped: bool,
    pub(super) slow: bool,
}

pub(super) struct Queue {
    pub(super) name: &'static str,
    pub(super) rate: f64,
    pub(super) base_consumers: u32,
    pub(super) consumers: u32,
    pub(super) prefetch: u32,
    pub(super) capacity: f64,
    pub(super) ready: f64,
    pub(super) unacked: f64,
    pub(super) published: f64,
    pub(super) delivered: f64,
    pub(super) acked: f64,
    pub(super) mode: QueueMode,
}

#[derive(Clone, Copy, PartialEq)]
pub(super) enum QueueMode {
    Normal,
    Gone,
    Stuck,
    Slow,
}

pub(super) struct Latency {
    pub(super) labels: BTreeMap<String, String>,
    pub(super) base_ms: f64,
    pub(super) rate: f64,
    /// Slowdown reached after `ramp_s` seconds from `ramp_from` (at once when `ramp_s` is 0).
    pub(super) target: f64,
    pub(super) ramp_from: u64,
    pub(super) ramp_s: f64,
}

impl Latency {
    pub(super) fn steady(labels: BTreeMap<String, String>, base_ms: f64) -> Latency {
        Latency {
            labels,
            base_ms,
            rate: 3.0,
            target: 1.0,
            ramp_from: 0,
            ramp_s: 0.0,
        }
    }

    pub(super) fn factor(&self, t: u64) -> f64 {
        if self.ramp_s <= 0.0 {
            return self.target;
        }
        let done = ((t.saturating_sub(self.ramp_from)) as f64 / self.ramp_s).min(1.0);
        1.0 + (self.target - 1.0) * done
    }
}

/// What happens to the world, and when (seconds from the start).
#[derive(Clone, Copy)]
pub(super) enum Action {
    StickPartition(usize, usize),
    StopGroup(usize),
    SlowGroup(usize),
    SlowQueue(usize),
    QueueMode(usize, QueueMode),
    LatencyFactor(usize, f64, f64),
    Burst(usize, f64),
    Rebalance(usize),
    ScrapeGap,
}

pub(super) struct World {
    pub(super) topics: Vec<Topic>,
    pub(super) groups: Vec<Group>,
    pub(super) queues: Vec<Queue>,
    pub(super) latencies: Vec<Latency>,
}

impl World {
    pub(super) fn new() -> World {
        let topic = |name, partitions, rate| Topic {
            name,
            rate,
            end: vec![0.0; partitions],
            burst: 1.0,
        };
        let topics = vec![
            topic("payments.authorize", 12, 150.0),
            topic("payments.settle", 6, 40.0),
            topic("risk.checks", 6, 80.0),
        ];
        let group = |name, topic: usize, members, n| Group {
            name,
            topic,
            members,
            base_members: members,
            headroom: 3.0,
            position: vec![0.0; n],
            committed: vec![0.0; n],
            paused: false,
            stuck_partition: None,
            stopped: false,
            slow: false,
        };
        let groups = vec![
            group("auth-service", 0, 4, 12),
            group("fraud-scorer", 0, 3, 12),
            group("settlement-service", 1, 2, 6),
            group("risk-engine", 2, 3, 6),
        ];
        let queue = |name, rate: f64, consumers| Queue {
            name,
            rate,
            base_consumers: consumers,
            consumers,
            prefetch: 20,
            capacity: rate * 3.0,
            ready: 0.0,
            unacked: 0.0,
            published: 0.0,
            delivered: 0.0,
            acked: 0.0,
            mode: QueueMode::Normal,
        };
        let queues = vec![
            queue("risk.scoring", 30.0, 3),
            queue("notifications.email", 10.0, 2),
            queue("ledger.postings", 20.0, 2),
        ];
        let mut latencies = Vec::new();
        for (g, base) in groups.iter().zip([45.0, 80.0, 150.0, 30.0]) {
            let labels = labels(&[
                ("cluster", KAFKA),
                ("topic", topics[g.topic].name),
                ("consumergroup", g.name),
            ]);
            latencies.push(Latency::steady(labels, base));
        }
        for (q, base) in queues.iter().zip([20.0, 60.0, 35.0]) {
            let labels = labels(&[("cluster", RABBIT), ("vhost", "/"), ("queue", q.name)]);
            latencies.push(Latency::steady(labels, base));
        }
        World {
            topics,
            groups,
            queues,
            latencies,
        }
    }

    pub(super) fn group_labels(&self, g: usize) -> BTreeMap<String, String> {
        let g = &self.groups[g];
        labels(&[
            ("cluster", KAFKA),
            ("topic", self.topics[g.topic].name),
            ("consumergroup", g.name),
        ])
    }

    pub(super) fn queue_labels(&self, q: usize) -> BTreeMap<String, String> {
        labels(&[
            ("cluster", RABBIT),
            ("vhost", "/"),
            ("queue", self.queues[q].name),
        ])
    }

    pub(super) fn apply(&mut self, a: Action, on: bool, t: u64) {
        match a {
            Action::StickPartition(g, p) => self.groups[g].stuck_partition = on.then_some(p),
            Action::StopGroup(g) => {
                let g = &mut self.groups[g];
                g.stopped = on;
                g.members = if on { 0 } else { g.base_members };
            }
            Action::SlowGroup(g) => self.groups[g].slow = on,
            Action::SlowQueue(q) => {
                self.queues[q].mode = if on {
                    QueueMode::Slow
                } else {
                    QueueMode::Normal
                }
            }
            Action::QueueMode(q, m) => {
                let q = &mut self.queues[q];
                q.mode = if on { m } else { QueueMode::Normal };
                q.consumers = if on && m == QueueMode::Gone {
                    0
                } else {
                    q.base_consumers
                };
            }
            Action::LatencyFactor(l, f, ramp) => {
                let l = &mut self.latencies[l];
                (l.target, l.ramp_from, l.ramp_s) = if on { (f, t, ramp) } else { (1.0, t, 0.0) };
            }
            Action::Burst(t, f) => self.topics[t].burst = if on { f } else { 1.0 },
            Action::Rebalance(g) => {
                let g = &mut self.groups[g];
                g.paused = on;
                g.members = if on {
                    g.base_members - 1
                } else {
                    g.base_members
                };
            }
            Action::ScrapeGap => {}
        }
    }
}

pub(super) fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Load over the day: low at night, peaking mid-afternoon, as a multiplier around 1.
pub(super) fn diurnal(start_ms: i64, t: u64) -> f64 {
    let hours = ((start_ms / 1000 + t as i64) % 86_400) as f64 / 3600.0;
    1.0 + 0.45 * (std::f64::consts::TAU * (hours - 9.0) / 24.0).sin()
}

pub(super) fn poisson(rng: &mut StdRng, mean: f64) -> f64 {
    if mean <= 0.0 {
        return 0.0;
    }
    Poisson::new(mean).map_or(mean, |p| p.sample(rng))
}

/// One simulated second of production and consumption.
pub(super) fn step(w: &mut World, start_ms: i64, t: u64, rng: &mut StdRng) {
    let load = diurnal(start_ms, t);
    for tp in &mut w.topics {
        let per_partition = tp.rate * load * tp.burst / tp.end.len() as f64;
        for end in &mut tp.end {
            *end += poisson(rng, per_partition);
        }
    }
    for g in &mut w.groups {
        let tp = &w.topics[g.topic];
        let n = tp.end.len() as f64;
        let produced_pp = tp.rate * load * tp.burst / n;
        let capacity = if g.slow {
            0.65 * produced_pp
        } else {
            g.headroom * tp.rate * 1.45 / n
        };
        for p in 0..g.position.len() {
            let halted = g.stopped || g.paused || g.stuck_partition == Some(p);
            if !halted {
                g.position[p] = (g.position[p] + capacity).min(tp.end[p]);
            }
            if t % COMMIT_EVERY_S == 0 && !g.stopped && !g.paused {
                g.committed[p] = g.position[p].floor();
            }
        }
    }
    for q in &mut w.queues {
        let published = poisson(rng, q.rate * load);
        q.published += published;
        q.ready += published;
        let window = (q.prefetch * q.consumers) as f64;
        match q.mode {
            QueueMode::Gone => q.unacked = 0.0,
            QueueMode::Stuck => {
                let take = (window - q.unacked).clamp(0.0, q.ready);
                q.ready -= take;
                q.unacked += take;
                q.delivered += take;
            }
            QueueMode::Normal | QueueMode::Slow => {
                // Messages stuck unacked from a previous incident are acked first.
                let cap = if q.mode == QueueMode::Slow {
                    0.65 * q.rate * load
                } else {
                    q.capacity
                };
                let done = poisson(rng, cap).min(q.ready + q.unacked);
                let from_ready = (done - q.unacked).max(0.0);
                q.ready -= from_ready;
                q.delivered += from_ready;
                q.acked += done;
                q.unacked = poisson(rng, q.rate * load * 0.05)
                    .min(window)
                    .min(q.ready + 1.0);
            }
        }
    }
}
