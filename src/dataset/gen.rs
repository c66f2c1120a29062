//! A generator of realistic payment-queue metric streams with labelled incidents.
//!
//! It simulates, second by second, a Kafka cluster (topics, partitions, consumer groups that
//! consume and commit every 5 s) and a RabbitMQ broker (queues, consumers, prefetch), and writes
//! what exporters would scrape from them every 15 s (with jitter and missed scrapes), plus
//! end-to-end latency observations. Incidents are injected one at a time after a quiet warm-up;
//! traps that must stay quiet happen between them: diurnal load, end-of-day bursts, rebalances,
//! scrape gaps and heavy-tailed single outliers. Everything follows from the seed.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Write};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal, Poisson};

use super::labels::{Incident, LabelFile, Trap};
use crate::detect::AlertKind;

/// Monday 2026-01-05 06:00 UTC: the day's load is ramping up.
pub const DEFAULT_START_MS: i64 = 1_767_592_800_000;
const WARMUP_S: u64 = 30 * 60;
const SCRAPE_EVERY_S: f64 = 15.0;
const COMMIT_EVERY_S: u64 = 5;
const KAFKA: &str = "pay-kafka";
const RABBIT: &str = "pay-rabbit";

/// The kinds of incident the generator injects, by scenario name.
pub const INCIDENT_KINDS: [&str; 7] = [
    "partition_stall",
    "group_stop",
    "latency_spike",
    "latency_drift",
    "backlog_growth",
    "rabbit_consumers_gone",
    "rabbit_unacked_stuck",
];

/// `payments` mixes every incident kind; `quiet` has none (only traps); an incident kind's name
/// (with `-` or `_`) repeats only that kind.
pub fn scenario_kinds(scenario: &str) -> Option<Vec<&'static str>> {
    let s = scenario.replace('-', "_");
    match s.as_str() {
        "payments" | "mixed" => Some(INCIDENT_KINDS.to_vec()),
        "quiet" => Some(Vec::new()),
        _ => INCIDENT_KINDS.iter().find(|k| **k == s).map(|k| vec![*k]),
    }
}

#[derive(Debug, Clone)]
pub struct GenOptions {
    pub scenario: String,
    pub hours: f64,
    pub seed: u64,
    pub start_ms: i64,
}

#[derive(Debug, Clone, Default)]
pub struct GenSummary {
    pub events: u64,
    pub incidents: usize,
    pub traps: usize,
}

struct Topic {
    name: &'static str,
    rate: f64,
    end: Vec<f64>,
    burst: f64,
}

struct Group {
    name: &'static str,
    topic: usize,
    members: u32,
    base_members: u32,
    headroom: f64,
    position: Vec<f64>,
    committed: Vec<f64>,
    paused: bool,
    stuck_partition: Option<usize>,
    stopped: bool,
    slow: bool,
}

struct Queue {
    name: &'static str,
    rate: f64,
    base_consumers: u32,
    consumers: u32,
    prefetch: u32,
    capacity: f64,
    ready: f64,
    unacked: f64,
    published: f64,
    delivered: f64,
    acked: f64,
    mode: QueueMode,
}

#[derive(Clone, Copy, PartialEq)]
enum QueueMode {
    Normal,
    Gone,
    Stuck,
    Slow,
}

struct Latency {
    labels: BTreeMap<String, String>,
    base_ms: f64,
    rate: f64,
    /// Slowdown reached after `ramp_s` seconds from `ramp_from` (at once when `ramp_s` is 0).
    target: f64,
    ramp_from: u64,
    ramp_s: f64,
}

impl Latency {
    fn steady(labels: BTreeMap<String, String>, base_ms: f64) -> Latency {
        Latency {
            labels,
            base_ms,
            rate: 3.0,
            target: 1.0,
            ramp_from: 0,
            ramp_s: 0.0,
        }
    }

    fn factor(&self, t: u64) -> f64 {
        if self.ramp_s <= 0.0 {
            return self.target;
        }
        let done = ((t.saturating_sub(self.ramp_from)) as f64 / self.ramp_s).min(1.0);
        1.0 + (self.target - 1.0) * done
    }
}

/// What happens to the world, and when (seconds from the start).
#[derive(Clone, Copy)]
enum Action {
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

struct World {
    topics: Vec<Topic>,
    groups: Vec<Group>,
    queues: Vec<Queue>,
    latencies: Vec<Latency>,
}

impl World {
    fn new() -> World {
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

    fn group_labels(&self, g: usize) -> BTreeMap<String, String> {
        let g = &self.groups[g];
        labels(&[
            ("cluster", KAFKA),
            ("topic", self.topics[g.topic].name),
            ("consumergroup", g.name),
        ])
    }

    fn queue_labels(&self, q: usize) -> BTreeMap<String, String> {
        labels(&[
            ("cluster", RABBIT),
            ("vhost", "/"),
            ("queue", self.queues[q].name),
        ])
    }

    fn apply(&mut self, a: Action, on: bool, t: u64) {
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

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

struct Episode {
    action: Action,
    start: u64,
    end: u64,
}

/// Load over the day: low at night, peaking mid-afternoon, as a multiplier around 1.
fn diurnal(start_ms: i64, t: u64) -> f64 {
    let hours = ((start_ms / 1000 + t as i64) % 86_400) as f64 / 3600.0;
    1.0 + 0.45 * (std::f64::consts::TAU * (hours - 9.0) / 24.0).sin()
}

/// Generates the scenario: events (JSONL) to `events`, and its labels.
pub fn generate(opts: &GenOptions, events: &mut impl Write) -> io::Result<(LabelFile, GenSummary)> {
    let kinds = scenario_kinds(&opts.scenario).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "unknown scenario `{}`: payments, quiet, or one of {}",
                opts.scenario,
                INCIDENT_KINDS.join(", ")
            ),
        )
    })?;
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let mut world = World::new();
    let secs = (opts.hours * 3600.0).round() as u64;
    let (episodes, incidents) = plan_incidents(&world, &kinds, secs, &mut rng, opts.start_ms);
    let (traps_plan, traps) = plan_traps(&world, &episodes, secs, &mut rng, opts.start_ms);
    let mut timeline: Vec<(u64, bool, Action)> = Vec::new();
    for e in episodes.iter().chain(&traps_plan) {
        timeline.push((e.start, true, e.action));
        timeline.push((e.end, false, e.action));
    }
    timeline.sort_by_key(|(t, on, _)| (*t, *on));
    let gaps: Vec<(u64, u64)> = traps_plan
        .iter()
        .filter_map(|e| matches!(e.action, Action::ScrapeGap).then_some((e.start, e.end)))
        .collect();

    let mut out = EventWriter {
        buf: String::with_capacity(1 << 16),
        events: 0,
    };
    let mut next_kafka_scrape = 7.0;
    let mut next_rabbit_scrape = 3.0;
    let mut ti = 0;
    let jitter = Normal::<f64>::new(0.0, 0.7).expect("valid normal");
    for t in 0..secs {
        while ti < timeline.len() && timeline[ti].0 <= t {
            let (_, on, a) = timeline[ti];
            world.apply(a, on, t);
            ti += 1;
        }
        step(&mut world, opts.start_ms, t, &mut rng);
        let base_ms = opts.start_ms + t as i64 * 1000;
        latency_observations(&world, opts.start_ms, t, &mut rng, &mut out);
        let in_gap = gaps.iter().any(|&(a, b)| (a..b).contains(&t));
        if t as f64 >= next_kafka_scrape {
            next_kafka_scrape += SCRAPE_EVERY_S;
            if !in_gap && rng.random::<f64>() > 0.01 {
                let ts = base_ms + (jitter.sample(&mut rng) * 1000.0) as i64 + 500;
                scrape_kafka(&world, ts, &mut out);
            }
        }
        if t as f64 >= next_rabbit_scrape {
            next_rabbit_scrape += SCRAPE_EVERY_S;
            if !in_gap && rng.random::<f64>() > 0.01 {
                let ts = base_ms + (jitter.sample(&mut rng) * 1000.0) as i64 + 500;
                scrape_rabbit(&world, ts, &mut out);
            }
        }
        if out.buf.len() > 1 << 20 {
            events.write_all(out.buf.as_bytes())?;
            out.buf.clear();
        }
    }
    events.write_all(out.buf.as_bytes())?;
    let summary = GenSummary {
        events: out.events,
        incidents: incidents.len(),
        traps: traps.len(),
    };
    let file = LabelFile {
        scenario: Some(opts.scenario.clone()),
        seed: Some(opts.seed),
        start: Some(opts.start_ms),
        end: Some(opts.start_ms + secs as i64 * 1000),
        incidents,
        traps,
    };
    Ok((file, summary))
}

fn plan_incidents(
    world: &World,
    kinds: &[&str],
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
        let (action, dur, alert_kind, labels) = match kind {
            "partition_stall" => {
                let p = rng.random_range(0..world.groups[g].position.len());
                let mut labels = world.group_labels(g);
                labels.insert("partition".into(), p.to_string());
                (
                    Action::StickPartition(g, p),
                    minutes(rng, 6, 15),
                    AlertKind::ConsumerStall,
                    labels,
                )
            }
            "group_stop" => (
                Action::StopGroup(g),
                minutes(rng, 5, 12),
                AlertKind::ConsumerStall,
                world.group_labels(g),
            ),
            "latency_spike" => {
                let f = rng.random_range(4.0..8.0);
                (
                    Action::LatencyFactor(l, f, 0.0),
                    minutes(rng, 5, 12),
                    AlertKind::Latency,
                    world.latencies[l].labels.clone(),
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
                )
            }
            "backlog_growth" if rng.random_bool(0.5) => (
                Action::SlowQueue(q),
                minutes(rng, 15, 25),
                AlertKind::BacklogGrowth,
                world.queue_labels(q),
            ),
            "backlog_growth" => (
                Action::SlowGroup(g),
                minutes(rng, 15, 25),
                AlertKind::BacklogGrowth,
                world.group_labels(g),
            ),
            "rabbit_consumers_gone" => (
                Action::QueueMode(q, QueueMode::Gone),
                minutes(rng, 5, 12),
                AlertKind::ConsumerStall,
                world.queue_labels(q),
            ),
            _ => (
                Action::QueueMode(q, QueueMode::Stuck),
                minutes(rng, 5, 12),
                AlertKind::ConsumerStall,
                world.queue_labels(q),
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
        });
        t += dur;
    }
    (episodes, incidents)
}

fn plan_traps(
    world: &World,
    incidents: &[Episode],
    secs: u64,
    rng: &mut StdRng,
    start_ms: i64,
) -> (Vec<Episode>, Vec<Trap>) {
    let busy = |a: u64, b: u64| {
        incidents
            .iter()
            .any(|e| a < e.end + 10 * 60 && e.start < b + 5 * 60)
    };
    let mut plan = Vec::new();
    let mut traps = Vec::new();
    let mut push = |plan: &mut Vec<Episode>, action, start, dur: u64, name: &str, labels| {
        plan.push(Episode {
            action,
            start,
            end: start + dur,
        });
        traps.push(Trap {
            name: name.into(),
            labels,
            start: start_ms + start as i64 * 1000,
            end: start_ms + (start + dur) as i64 * 1000,
        });
    };
    let mut t = 10 * 60;
    while t + 15 * 60 < secs {
        t += rng.random_range(8 * 60..20 * 60);
        let what = rng.random_range(0..10);
        let dur = match what {
            0..=4 => rng.random_range(15..35),
            5..=6 => rng.random_range(90..150),
            _ => rng.random_range(60..120),
        };
        if t + dur >= secs || busy(t, t + dur) {
            continue;
        }
        match what {
            0..=4 => {
                let g = rng.random_range(0..world.groups.len());
                push(
                    &mut plan,
                    Action::Rebalance(g),
                    t,
                    dur,
                    "rebalance",
                    world.group_labels(g),
                );
            }
            5..=6 => {
                let tp = rng.random_range(0..world.topics.len());
                let l = labels(&[("cluster", KAFKA), ("topic", world.topics[tp].name)]);
                push(
                    &mut plan,
                    Action::Burst(tp, 4.0),
                    t,
                    dur,
                    "end_of_day_burst",
                    l,
                );
            }
            _ => push(
                &mut plan,
                Action::ScrapeGap,
                t,
                dur,
                "scrape_gap",
                labels(&[("cluster", KAFKA)]),
            ),
        }
        t += dur;
    }
    (plan, traps)
}

fn poisson(rng: &mut StdRng, mean: f64) -> f64 {
    if mean <= 0.0 {
        return 0.0;
    }
    Poisson::new(mean).map_or(mean, |p| p.sample(rng))
}

/// One simulated second of production and consumption.
fn step(w: &mut World, start_ms: i64, t: u64, rng: &mut StdRng) {
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

fn latency_observations(w: &World, start_ms: i64, t: u64, rng: &mut StdRng, out: &mut EventWriter) {
    let noise = Normal::<f64>::new(0.0, 0.3).expect("valid normal");
    let load = diurnal(start_ms, t);
    for l in &w.latencies {
        let n = poisson(rng, l.rate * load) as u32;
        for _ in 0..n {
            let mut v =
                l.base_ms * (1.0 + 0.15 * (load - 1.0)) * l.factor(t) * noise.sample(rng).exp();
            if rng.random::<f64>() < 1.0 / 800.0 {
                v *= rng.random_range(8.0..30.0);
            }
            let ts = start_ms + t as i64 * 1000 + rng.random_range(0..1000);
            out.event(
                ts,
                "message_latency_ms",
                &l.labels,
                (v * 10.0).round() / 10.0,
            );
        }
    }
}

fn scrape_kafka(w: &World, ts: i64, out: &mut EventWriter) {
    for tp in &w.topics {
        for (p, end) in tp.end.iter().enumerate() {
            let ps = p.to_string();
            let l = [
                ("cluster", KAFKA),
                ("partition", ps.as_str()),
                ("topic", tp.name),
            ];
            out.event_pairs(ts, "kafka_topic_partition_current_offset", &l, end.floor());
        }
    }
    for g in &w.groups {
        let tp = &w.topics[g.topic];
        for (p, committed) in g.committed.iter().enumerate() {
            let ps = p.to_string();
            let l = [
                ("cluster", KAFKA),
                ("consumergroup", g.name),
                ("partition", ps.as_str()),
                ("topic", tp.name),
            ];
            out.event_pairs(ts, "kafka_consumergroup_current_offset", &l, *committed);
            out.event_pairs(
                ts,
                "kafka_consumergroup_lag",
                &l,
                (tp.end[p].floor() - committed).max(0.0),
            );
        }
        let l = [
            ("cluster", KAFKA),
            ("consumergroup", g.name),
            ("topic", tp.name),
        ];
        out.event_pairs(ts, "kafka_consumergroup_members", &l, g.members as f64);
    }
}

fn scrape_rabbit(w: &World, ts: i64, out: &mut EventWriter) {
    for q in &w.queues {
        let l = [("cluster", RABBIT), ("queue", q.name), ("vhost", "/")];
        out.event_pairs(ts, "rabbitmq_queue_messages_ready", &l, q.ready.floor());
        out.event_pairs(ts, "rabbitmq_queue_messages_unacked", &l, q.unacked.floor());
        out.event_pairs(ts, "rabbitmq_queue_consumers", &l, q.consumers as f64);
        out.event_pairs(
            ts,
            "rabbitmq_queue_messages_published_total",
            &l,
            q.published.floor(),
        );
        out.event_pairs(
            ts,
            "rabbitmq_queue_messages_delivered_total",
            &l,
            q.delivered.floor(),
        );
        out.event_pairs(
            ts,
            "rabbitmq_queue_messages_acked_total",
            &l,
            q.acked.floor(),
        );
    }
}

struct EventWriter {
    buf: String,
    events: u64,
}

impl EventWriter {
    fn event(&mut self, ts: i64, name: &str, labels: &BTreeMap<String, String>, value: f64) {
        let pairs: smallvec::SmallVec<[(&str, &str); 8]> = labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.event_pairs(ts, name, &pairs, value);
    }

    /// Label names and values here are plain identifiers: nothing needs escaping.
    fn event_pairs(&mut self, ts: i64, name: &str, labels: &[(&str, &str)], value: f64) {
        self.events += 1;
        let _ = write!(self.buf, r#"{{"ts":{ts},"name":"{name}","labels":{{"#);
        for (i, (k, v)) in labels.iter().enumerate() {
            let sep = if i > 0 { "," } else { "" };
            let _ = write!(self.buf, r#"{sep}"{k}":"{v}""#);
        }
        let _ = writeln!(self.buf, r#"}},"value":{value}}}"#);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gen(scenario: &str, hours: f64, seed: u64) -> (String, LabelFile) {
        let opts = GenOptions {
            scenario: scenario.into(),
            hours,
            seed,
            start_ms: DEFAULT_START_MS,
        };
        let mut buf = Vec::new();
        let (labels, summary) = generate(&opts, &mut buf).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert_eq!(text.lines().count() as u64, summary.events);
        (text, labels)
    }

    #[test]
    fn every_line_is_a_valid_event() {
        let (text, _) = gen("payments", 0.5, 1);
        for line in text.lines() {
            crate::event::parse_event(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        }
    }

    #[test]
    fn same_seed_same_data_other_seed_other_data() {
        assert_eq!(gen("payments", 1.5, 3), gen("payments", 1.5, 3));
        assert_ne!(gen("payments", 1.5, 3).0, gen("payments", 1.5, 4).0);
    }

    #[test]
    fn a_mixed_six_hours_has_every_kind_of_incident_and_traps() {
        let (_, labels) = gen("payments", 6.0, 11);
        assert!(labels.incidents.len() >= 7, "{}", labels.incidents.len());
        for k in INCIDENT_KINDS {
            assert!(labels.incidents.iter().any(|i| i.name == k), "no {k}");
        }
        assert!(labels.traps.iter().any(|t| t.name == "rebalance"));
        let (_, quiet) = gen("quiet", 2.0, 11);
        assert!(quiet.incidents.is_empty() && !quiet.traps.is_empty());
    }

    #[test]
    fn unknown_scenarios_are_refused() {
        let opts = GenOptions {
            scenario: "nope".into(),
            hours: 1.0,
            seed: 1,
            start_ms: DEFAULT_START_MS,
        };
        assert!(generate(&opts, &mut Vec::new()).is_err());
    }
}
