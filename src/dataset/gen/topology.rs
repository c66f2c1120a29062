//! The shapes of world the generator builds. `payments` is the small cluster every figure in the
//! README started from; `wide` is a bigger one of another shape: topics of 12–24 partitions read
//! by several groups each, among them sinks and batch jobs that commit only every 30 s to 3 min,
//! queues in several vhosts, a trickle topic, and rates and latencies that vary with the seed;
//! `sparse` is thin traffic with bursts and dumps that are part of its normal day; `noisy` is
//! the payments cluster seen badly (slow, jittery, lossy scrapes) on a restless day (rebalances
//! every few minutes, broker restarts that reset counters, bimodal latency that follows load).

use rand::rngs::StdRng;
use rand::RngExt;

use super::world::{GroupSpec, Noise, QueueSpec, Recurring, TopicSpec, World};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    Payments,
    Wide,
    Sparse,
    Noisy,
}

impl Topology {
    pub const ALL: [Topology; 4] = [
        Topology::Payments,
        Topology::Wide,
        Topology::Sparse,
        Topology::Noisy,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Topology::Payments => "payments",
            Topology::Wide => "wide",
            Topology::Sparse => "sparse",
            Topology::Noisy => "noisy",
        }
    }

    /// Whether incidents are placed at subtler magnitudes than the payments defaults.
    pub(super) fn subtle(self) -> bool {
        self != Topology::Payments
    }

    /// The world at the start; `wide` draws its rates, latencies and commit phases from `rng`.
    pub(super) fn world(self, rng: &mut StdRng) -> World {
        match self {
            Topology::Payments => payments(),
            Topology::Wide => wide(rng),
            Topology::Sparse => sparse(rng),
            Topology::Noisy => noisy(rng),
        }
    }
}

fn payments() -> World {
    let topic = |name, partitions, rate| TopicSpec {
        name,
        partitions,
        rate,
        bursts: None,
    };
    let group = |name, topic, members, latency_ms| GroupSpec {
        name,
        topic,
        members,
        headroom: 3.0,
        commit_every_s: 5,
        commit_phase_s: 0,
        latency_ms,
        observed_per_s: 3.0,
    };
    let queue = |name, rate, consumers, latency_ms| QueueSpec {
        name,
        vhost: "/",
        rate,
        consumers,
        headroom: 3.0,
        latency_ms,
        observed_per_s: 3.0,
        dumps: None,
    };
    World::build(
        &[
            topic("payments.authorize", 12, 150.0),
            topic("payments.settle", 6, 40.0),
            topic("risk.checks", 6, 80.0),
        ],
        &[
            group("auth-service", 0, 4, 45.0),
            group("fraud-scorer", 0, 3, 80.0),
            group("settlement-service", 1, 2, 150.0),
            group("risk-engine", 2, 3, 30.0),
        ],
        &[
            queue("risk.scoring", 30.0, 3, 20.0),
            queue("notifications.email", 10.0, 2, 60.0),
            queue("ledger.postings", 20.0, 2, 35.0),
        ],
    )
}

fn wide(rng: &mut StdRng) -> World {
    let scale = |rng: &mut StdRng, x: f64| x * rng.random_range(0.6..1.6);
    let topics = [
        ("orders.events", 24, 240.0),
        ("payments.captures", 16, 120.0),
        ("ledger.entries", 12, 60.0),
        ("refunds.requests", 12, 6.0),
    ]
    .map(|(name, partitions, rate)| TopicSpec {
        name,
        partitions,
        rate: scale(rng, rate),
        bursts: None,
    });
    let groups = [
        ("order-service", 0, 6, 5),
        ("orders-archive-sink", 0, 2, 60),
        ("orders-analytics-batch", 0, 1, 180),
        ("capture-service", 1, 4, 5),
        ("captures-s3-sink", 1, 1, 60),
        ("ledger-writer", 2, 3, 5),
        ("reconciliation", 2, 1, 30),
        ("refund-service", 3, 2, 5),
        ("refunds-audit-sink", 3, 1, 60),
    ]
    .map(|(name, topic, members, every)| GroupSpec {
        name,
        topic,
        members,
        headroom: 3.0,
        commit_every_s: every,
        commit_phase_s: rng.random_range(0..every),
        latency_ms: scale(rng, 60.0),
        observed_per_s: 3.0,
    });
    let queues = [
        ("card.auth.requests", "/payments", 40.0, 4),
        ("refunds", "/payments", 3.0, 1),
        ("sms.outbound", "/notify", 8.0, 2),
        ("email.outbound", "/notify", 15.0, 2),
        ("risk.review", "/risk", 1.0, 1),
    ]
    .map(|(name, vhost, rate, consumers)| QueueSpec {
        name,
        vhost,
        rate: scale(rng, rate),
        consumers,
        headroom: 3.0,
        latency_ms: scale(rng, 40.0),
        observed_per_s: 3.0,
        dumps: None,
    });
    World::build(&topics, &groups, &queues)
}

/// Thin traffic: partitions that see a message every 10–30 s and sit idle with lag 0 between,
/// a settlement topic quiet but for a burst every half hour that drains within minutes, a queue
/// that receives an hourly dump of thousands of messages, queues that are empty most of the
/// time, and latency streams observed a few times a minute to once a second.
fn sparse(rng: &mut StdRng) -> World {
    let scale = |rng: &mut StdRng, x: f64| x * rng.random_range(0.6..1.6);
    let settle_burst = Recurring {
        every_s: 30 * 60,
        phase_s: rng.random_range(0..30 * 60),
        len_s: 60,
        factor: 40.0,
    };
    let topics = [
        ("refunds.requests", 6, 0.6, None),
        ("chargebacks", 4, 0.2, None),
        ("settlement.night", 6, 1.0, Some(settle_burst)),
        ("kyc.updates", 3, 2.0, None),
    ]
    .map(|(name, partitions, rate, bursts)| TopicSpec {
        name,
        partitions,
        rate: scale(rng, rate),
        bursts,
    });
    // Consumers are fast, whatever the traffic: capacity is many times the trickle.
    let groups = [
        ("refund-service", 0, 2, 5, 1.0),
        ("refunds-audit-sink", 0, 1, 60, 0.6),
        ("chargeback-handler", 1, 1, 5, 0.2),
        ("settlement-batch", 2, 2, 10, 1.0),
        ("kyc-sync", 3, 1, 5, 2.0),
    ]
    .map(|(name, topic, members, every, observed)| GroupSpec {
        name,
        topic,
        members,
        headroom: 120.0,
        commit_every_s: every,
        commit_phase_s: rng.random_range(0..every),
        latency_ms: scale(rng, 80.0),
        observed_per_s: observed,
    });
    let dump = Recurring {
        every_s: 3600,
        phase_s: rng.random_range(0..3600),
        len_s: 1,
        factor: rng.random_range(2000.0..5000.0_f64).round(),
    };
    let queues = [
        ("batch.import", "/batch", 0.5, 2, Some(dump), 1.0),
        ("alerts.sms", "/notify", 0.05, 1, None, 0.05),
        ("manual.review", "/risk", 0.2, 1, None, 0.2),
        ("payouts", "/payments", 1.0, 2, None, 1.0),
    ]
    .map(
        |(name, vhost, rate, consumers, dumps, observed)| QueueSpec {
            name,
            vhost,
            rate: scale(rng, rate),
            consumers,
            headroom: 60.0,
            latency_ms: scale(rng, 50.0),
            observed_per_s: observed,
            dumps,
        },
    );
    World::build(&topics, &groups, &queues)
}

fn noisy(rng: &mut StdRng) -> World {
    let mut world = payments();
    let scrape = |rng: &mut StdRng| if rng.random_bool(0.5) { 15.0 } else { 30.0 };
    world.noise = Noise {
        kafka_scrape_s: scrape(rng),
        rabbit_scrape_s: scrape(rng),
        jitter_sd_s: 2.0,
        dropped: 0.04,
        latency_load: 0.5,
        slow_path: Some((rng.random_range(0.05..0.2), rng.random_range(2.5..4.0))),
        rebalance_lift: 2.0,
        restless: true,
    };
    world
}
