//! The simulated world: a Kafka cluster (topics, partitions, consumer groups that consume and
//! commit on their own schedule), a RabbitMQ broker (queues in vhosts, consumers, prefetch) and
//! the end-to-end latency of each consumer, advanced one second at a time. Its shape comes from a
//! [`topology`](super::topology); incidents and traps change it through [`Action`]s.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand_distr::{Distribution, Poisson};

pub(super) const KAFKA: &str = "pay-kafka";
pub(super) const RABBIT: &str = "pay-rabbit";

/// What a topology says of a topic, a group and a queue; the world builds itself from them.
pub(super) struct TopicSpec {
    pub(super) name: &'static str,
    pub(super) partitions: usize,
    /// Messages per second over the whole topic, at the day's average load.
    pub(super) rate: f64,
    /// Bursts that are part of its normal day (a settlement run every half hour).
    pub(super) bursts: Option<Recurring>,
}

pub(super) struct GroupSpec {
    pub(super) name: &'static str,
    pub(super) topic: usize,
    pub(super) members: u32,
    /// Consumption capacity as a multiple of the topic's average rate.
    pub(super) headroom: f64,
    pub(super) commit_every_s: u64,
    pub(super) commit_phase_s: u64,
    pub(super) latency_ms: f64,
    /// End-to-end latency observations per second.
    pub(super) observed_per_s: f64,
}

pub(super) struct QueueSpec {
    pub(super) name: &'static str,
    pub(super) vhost: &'static str,
    pub(super) rate: f64,
    pub(super) consumers: u32,
    /// Consumption capacity as a multiple of the average publish rate.
    pub(super) headroom: f64,
    pub(super) latency_ms: f64,
    pub(super) observed_per_s: f64,
    /// Batch dumps that are part of its normal day: `factor` is the dump size in messages.
    pub(super) dumps: Option<Recurring>,
}

/// Something that recurs every `every_s` seconds from `phase_s`, lasting `len_s`.
#[derive(Clone, Copy)]
pub(super) struct Recurring {
    pub(super) every_s: u64,
    pub(super) phase_s: u64,
    pub(super) len_s: u64,
    pub(super) factor: f64,
}

impl Recurring {
    pub(super) fn on(&self, t: u64) -> bool {
        (t + self.every_s - self.phase_s % self.every_s) % self.every_s < self.len_s
    }

    pub(super) fn starts(&self, t: u64) -> bool {
        (t + self.every_s - self.phase_s % self.every_s).is_multiple_of(self.every_s)
    }
}

pub(super) struct Topic {
    pub(super) name: &'static str,
    pub(super) rate: f64,
    pub(super) end: Vec<f64>,
    pub(super) burst: f64,
    pub(super) bursts: Option<Recurring>,
}

pub(super) struct Group {
    pub(super) name: &'static str,
    pub(super) topic: usize,
    pub(super) members: u32,
    pub(super) base_members: u32,
    pub(super) headroom: f64,
    /// Commits every `commit_every` seconds, `commit_phase` seconds into each period.
    pub(super) commit_every: u64,
    pub(super) commit_phase: u64,
    pub(super) position: Vec<f64>,
    pub(super) committed: Vec<f64>,
    pub(super) paused: bool,
    pub(super) stuck_partition: Option<usize>,
    pub(super) stopped: bool,
    /// Consumption as a share of production while a slowdown lasts.
    pub(super) slow: Option<f64>,
}

pub(super) struct Queue {
    pub(super) name: &'static str,
    pub(super) vhost: &'static str,
    pub(super) dumps: Option<Recurring>,
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
    /// Consumption as a share of publishing while in [`QueueMode::Slow`].
    pub(super) slow_share: f64,
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
    pub(super) fn steady(labels: BTreeMap<String, String>, base_ms: f64, rate: f64) -> Latency {
        Latency {
            labels,
            base_ms,
            rate,
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
    /// Consumption falls to this share of production.
    SlowGroup(usize, f64),
    SlowQueue(usize, f64),
    QueueMode(usize, QueueMode),
    LatencyFactor(usize, f64, f64),
    Burst(usize, f64),
    Rebalance(usize),
    /// The RabbitMQ broker restarts: its counters start again from 0.
    BrokerRestart,
    ScrapeGap,
}

pub(super) struct World {
    pub(super) topics: Vec<Topic>,
    pub(super) groups: Vec<Group>,
    pub(super) queues: Vec<Queue>,
    pub(super) latencies: Vec<Latency>,
    pub(super) noise: Noise,
}

/// How the world is seen and how rough it is around the edges.
#[derive(Debug, Clone, Copy)]
pub(super) struct Noise {
    pub(super) kafka_scrape_s: f64,
    pub(super) rabbit_scrape_s: f64,
    /// Scrape timestamps wander by this much (normal), clipped at ±4 s.
    pub(super) jitter_sd_s: f64,
    /// Share of scrapes that never arrive.
    pub(super) dropped: f64,
    /// How much latency follows the day's load (0.15: 7% above average at the daily peak).
    pub(super) latency_load: f64,
    /// A slow path (share of messages, slowdown): latency that is bimodal when healthy.
    pub(super) slow_path: Option<(f64, f64)>,
    /// Latency of a group's messages during its rebalances, as a multiple.
    pub(super) rebalance_lift: f64,
    /// Rebalances of every group every 10–20 min, and broker restarts that reset counters.
    pub(super) restless: bool,
}

impl Default for Noise {
    fn default() -> Self {
        Noise {
            kafka_scrape_s: 15.0,
            rabbit_scrape_s: 15.0,
            jitter_sd_s: 0.7,
            dropped: 0.01,
            latency_load: 0.15,
            slow_path: None,
            rebalance_lift: 1.0,
            restless: false,
        }
    }
}

impl World {
    /// Builds the world a topology describes; latency streams follow the groups, then the queues.
    pub(super) fn build(
        topics: &[TopicSpec],
        groups_spec: &[GroupSpec],
        queues_spec: &[QueueSpec],
    ) -> World {
        let topics: Vec<Topic> = topics
            .iter()
            .map(|t| Topic {
                name: t.name,
                rate: t.rate,
                end: vec![0.0; t.partitions],
                burst: 1.0,
                bursts: t.bursts,
            })
            .collect();
        let groups: Vec<Group> = groups_spec
            .iter()
            .map(|g| Group {
                name: g.name,
                topic: g.topic,
                members: g.members,
                base_members: g.members,
                headroom: g.headroom,
                commit_every: g.commit_every_s,
                commit_phase: g.commit_phase_s,
                position: vec![0.0; topics[g.topic].end.len()],
                committed: vec![0.0; topics[g.topic].end.len()],
                paused: false,
                stuck_partition: None,
                stopped: false,
                slow: None,
            })
            .collect();
        let queues: Vec<Queue> = queues_spec
            .iter()
            .map(|q| Queue {
                name: q.name,
                vhost: q.vhost,
                dumps: q.dumps,
                rate: q.rate,
                base_consumers: q.consumers,
                consumers: q.consumers,
                prefetch: 20,
                capacity: q.rate * q.headroom,
                ready: 0.0,
                unacked: 0.0,
                published: 0.0,
                delivered: 0.0,
                acked: 0.0,
                mode: QueueMode::Normal,
                slow_share: 1.0,
            })
            .collect();
        let mut world = World {
            topics,
            groups,
            queues,
            latencies: Vec::new(),
            noise: Noise::default(),
        };
        for (i, g) in groups_spec.iter().enumerate() {
            let labels = world.group_labels(i);
            world
                .latencies
                .push(Latency::steady(labels, g.latency_ms, g.observed_per_s));
        }
        for (i, q) in queues_spec.iter().enumerate() {
            let labels = world.queue_labels(i);
            world
                .latencies
                .push(Latency::steady(labels, q.latency_ms, q.observed_per_s));
        }
        world
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
        let q = &self.queues[q];
        labels(&[("cluster", RABBIT), ("vhost", q.vhost), ("queue", q.name)])
    }

    pub(super) fn apply(&mut self, a: Action, on: bool, t: u64) {
        match a {
            Action::StickPartition(g, p) => self.groups[g].stuck_partition = on.then_some(p),
            Action::StopGroup(g) => {
                let g = &mut self.groups[g];
                g.stopped = on;
                g.members = if on { 0 } else { g.base_members };
            }
            Action::SlowGroup(g, share) => self.groups[g].slow = on.then_some(share),
            Action::SlowQueue(q, share) => {
                self.queues[q].slow_share = share;
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
            Action::BrokerRestart => {
                for q in &mut self.queues {
                    // The broker forgets its totals; consumers reconnect once it is back.
                    if on {
                        (q.published, q.delivered, q.acked) = (0.0, 0.0, 0.0);
                    }
                    q.consumers = if on { 0 } else { q.base_consumers };
                }
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
        let recurring = tp.bursts.filter(|b| b.on(t)).map_or(1.0, |b| b.factor);
        let per_partition = tp.rate * load * tp.burst * recurring / tp.end.len() as f64;
        for end in &mut tp.end {
            *end += poisson(rng, per_partition);
        }
    }
    for g in &mut w.groups {
        let tp = &w.topics[g.topic];
        let n = tp.end.len() as f64;
        let recurring = tp.bursts.filter(|b| b.on(t)).map_or(1.0, |b| b.factor);
        let produced_pp = tp.rate * load * tp.burst * recurring / n;
        let capacity = if let Some(share) = g.slow {
            share * produced_pp
        } else {
            g.headroom * tp.rate * 1.45 / n
        };
        for p in 0..g.position.len() {
            let halted = g.stopped || g.paused || g.stuck_partition == Some(p);
            if !halted {
                g.position[p] = (g.position[p] + capacity).min(tp.end[p]);
            }
            if t % g.commit_every == g.commit_phase && !g.stopped && !g.paused {
                g.committed[p] = g.position[p].floor();
            }
        }
    }
    for q in &mut w.queues {
        let dumped = q.dumps.filter(|d| d.starts(t)).map_or(0.0, |d| d.factor);
        let published = poisson(rng, q.rate * load) + dumped;
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
                    q.slow_share * q.rate * load
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
