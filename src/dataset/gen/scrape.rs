//! What the outside world sees of the simulation: exporter scrapes of Kafka and RabbitMQ and
//! end-to-end latency observations, written as metric events in the wire format of [`RawEvent`].

use std::borrow::Cow;
use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::RngExt;
use rand_distr::{Distribution, Normal};

use super::world::{diurnal, poisson, World, KAFKA, RABBIT};
use crate::event::{names, LabelVec, RawEvent};

pub(super) fn latency_observations(
    w: &World,
    start_ms: i64,
    t: u64,
    rng: &mut StdRng,
    out: &mut EventWriter,
) {
    let noise = Normal::<f64>::new(0.0, 0.3).expect("valid normal");
    let load = diurnal(start_ms, t);
    let by_load = 1.0 + w.noise.latency_load * (load - 1.0);
    for (i, l) in w.latencies.iter().enumerate() {
        // Latency streams follow the groups, then the queues.
        let rebalancing = w.groups.get(i).is_some_and(|g| g.paused);
        let lift = if rebalancing {
            w.noise.rebalance_lift
        } else {
            1.0
        };
        let n = poisson(rng, l.rate * load) as u32;
        for _ in 0..n {
            let mut v = l.base_ms * by_load * lift * l.factor(t) * noise.sample(rng).exp();
            if let Some((share, slower)) = w.noise.slow_path {
                if rng.random::<f64>() < share {
                    v *= slower;
                }
            }
            if rng.random::<f64>() < 1.0 / 800.0 {
                v *= rng.random_range(8.0..30.0);
            }
            let ts = start_ms + t as i64 * 1000 + rng.random_range(0..1000);
            out.event(ts, names::LATENCY, &l.labels, (v * 10.0).round() / 10.0);
        }
    }
}

pub(super) fn scrape_kafka(w: &World, ts: i64, out: &mut EventWriter) {
    for tp in &w.topics {
        for (p, end) in tp.end.iter().enumerate() {
            let ps = p.to_string();
            let l = [
                ("cluster", KAFKA),
                ("partition", ps.as_str()),
                ("topic", tp.name),
            ];
            out.event_pairs(ts, names::KAFKA_LOG_END_OFFSET, &l, end.floor());
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
            out.event_pairs(ts, names::KAFKA_COMMITTED_OFFSET, &l, *committed);
            out.event_pairs(
                ts,
                names::KAFKA_LAG,
                &l,
                (tp.end[p].floor() - committed).max(0.0),
            );
        }
        let l = [
            ("cluster", KAFKA),
            ("consumergroup", g.name),
            ("topic", tp.name),
        ];
        out.event_pairs(ts, names::KAFKA_MEMBERS, &l, g.members as f64);
    }
}

pub(super) fn scrape_rabbit(w: &World, ts: i64, out: &mut EventWriter) {
    for q in &w.queues {
        let l = [("cluster", RABBIT), ("queue", q.name), ("vhost", "/")];
        out.event_pairs(ts, names::RABBIT_READY, &l, q.ready.floor());
        out.event_pairs(ts, names::RABBIT_UNACKED, &l, q.unacked.floor());
        out.event_pairs(ts, names::RABBIT_CONSUMERS, &l, q.consumers as f64);
        out.event_pairs(ts, names::RABBIT_PUBLISHED, &l, q.published.floor());
        out.event_pairs(ts, names::RABBIT_DELIVERED, &l, q.delivered.floor());
        out.event_pairs(ts, names::RABBIT_ACKED, &l, q.acked.floor());
    }
}

/// Collects events as JSON lines until the generator flushes them.
pub(super) struct EventWriter {
    pub(super) buf: Vec<u8>,
    pub(super) events: u64,
}

impl EventWriter {
    fn event(&mut self, ts: i64, name: &str, labels: &BTreeMap<String, String>, value: f64) {
        let labels = labels.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        self.write(ts, name, labels, value);
    }

    /// `labels` are sorted by name.
    fn event_pairs(&mut self, ts: i64, name: &str, labels: &[(&str, &str)], value: f64) {
        self.write(ts, name, labels.iter().copied(), value);
    }

    fn write<'l>(
        &mut self,
        ts: i64,
        name: &str,
        labels: impl Iterator<Item = (&'l str, &'l str)>,
        value: f64,
    ) {
        self.events += 1;
        let labels: LabelVec = labels
            .map(|(k, v)| (Cow::Borrowed(k), Cow::Borrowed(v)))
            .collect();
        let event = RawEvent {
            ts,
            name: Cow::Borrowed(name),
            labels,
            value,
            kind: None,
        };
        event.write_line(&mut self.buf);
    }
}
