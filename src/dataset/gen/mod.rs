//! A generator of realistic payment-queue metric streams with labelled incidents.
//!
//! It simulates, second by second, a Kafka cluster (topics, partitions, consumer groups that
//! consume and commit every 5 s) and a RabbitMQ broker (queues, consumers, prefetch), and writes
//! what exporters would scrape from them every 15 s (with jitter and missed scrapes), plus
//! end-to-end latency observations. Incidents are injected one at a time after a quiet warm-up;
//! traps that must stay quiet happen between them: diurnal load, end-of-day bursts, rebalances,
//! scrape gaps and heavy-tailed single outliers. Everything follows from the seed.

mod plan;
mod scrape;
mod topology;
mod world;

pub use topology::Topology;

use std::io::{self, Write};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, Normal};

use super::labels::LabelFile;
use plan::{plan_incidents, plan_traps, recurring_traps, restless_traps};
use scrape::{latency_observations, scrape_kafka, scrape_rabbit, EventWriter};
use world::{step, Action};

/// Monday 2026-01-05 06:00 UTC: the day's load is ramping up.
pub const DEFAULT_START_MS: i64 = 1_767_592_800_000;

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

/// What a scenario name asks for: a topology (`payments` unless named) and the incident kinds.
/// `payments`, `wide`, `sparse` and `noisy` mix every kind; `quiet` and `wide-quiet` (and so on)
/// have none (only traps); an incident kind's name (with `-` or `_`), alone or after a topology
/// and `:`, repeats only that kind.
pub fn parse_scenario(scenario: &str) -> Option<(Topology, Vec<&'static str>)> {
    let s = scenario.replace('-', "_");
    let (topology, rest) = match s.split_once(':') {
        Some((t, rest)) => (Topology::ALL.into_iter().find(|x| x.name() == t)?, rest),
        None => match Topology::ALL.into_iter().find(|x| s.starts_with(x.name())) {
            Some(t) => (t, &s[t.name().len()..]),
            None => (Topology::Payments, s.as_str()),
        },
    };
    let kinds = match rest {
        "" | "mixed" => INCIDENT_KINDS.to_vec(),
        "quiet" | "_quiet" => Vec::new(),
        kind => vec![*INCIDENT_KINDS.iter().find(|k| **k == kind)?],
    };
    Some((topology, kinds))
}

#[derive(Debug, Clone)]
pub struct GenOptions {
    pub scenario: String,
    pub hours: f64,
    pub seed: u64,
    pub start_ms: i64,
    /// Seconds between scrapes of Kafka and RabbitMQ, instead of the family's own; the world and
    /// its incidents stay those of the seed.
    pub scrape_s: Option<f64>,
}

#[derive(Debug, Clone, Default)]
pub struct GenSummary {
    pub events: u64,
    pub incidents: usize,
    pub traps: usize,
}

/// Generates the scenario: events (JSONL) to `events`, and its labels.
pub fn generate(opts: &GenOptions, events: &mut impl Write) -> io::Result<(LabelFile, GenSummary)> {
    let (topology, kinds) = parse_scenario(&opts.scenario).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "unknown scenario `{}`: payments, quiet, wide, sparse, noisy (each also with -quiet), or one of {} (alone or after `wide:`, `sparse:` or `noisy:`)",
                opts.scenario,
                INCIDENT_KINDS.join(", ")
            ),
        )
    })?;
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let mut world = topology.world(&mut rng);
    if let Some(every) = opts.scrape_s {
        world.noise.kafka_scrape_s = every;
        world.noise.rabbit_scrape_s = every;
    }
    let secs = (opts.hours * 3600.0).round() as u64;
    let subtle = topology.subtle();
    let (episodes, incidents) =
        plan_incidents(&world, &kinds, subtle, secs, &mut rng, opts.start_ms);
    let (mut traps_plan, mut traps) = plan_traps(&world, &episodes, secs, &mut rng, opts.start_ms);
    if world.noise.restless {
        let (plan, restless) = restless_traps(&world, &episodes, secs, &mut rng, opts.start_ms);
        traps_plan.extend(plan);
        traps.extend(restless);
    }
    traps.extend(recurring_traps(&world, secs, opts.start_ms));
    traps.sort_by_key(|t| t.start);
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
        buf: Vec::with_capacity(1 << 16),
        events: 0,
    };
    let noise = world.noise;
    let mut next_kafka_scrape = 7.0;
    let mut next_rabbit_scrape = 3.0;
    let mut ti = 0;
    let jitter = Normal::<f64>::new(0.0, noise.jitter_sd_s).expect("valid normal");
    let jitter_ms = |rng: &mut StdRng| (jitter.sample(rng).clamp(-4.0, 4.0) * 1000.0) as i64;
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
            next_kafka_scrape += noise.kafka_scrape_s;
            if !in_gap && rng.random::<f64>() > noise.dropped {
                let ts = base_ms + jitter_ms(&mut rng) + 500;
                scrape_kafka(&world, ts, &mut out);
            }
        }
        if t as f64 >= next_rabbit_scrape {
            next_rabbit_scrape += noise.rabbit_scrape_s;
            if !in_gap && rng.random::<f64>() > noise.dropped {
                let ts = base_ms + jitter_ms(&mut rng) + 500;
                scrape_rabbit(&world, ts, &mut out);
            }
        }
        if out.buf.len() > 1 << 20 {
            events.write_all(&out.buf)?;
            out.buf.clear();
        }
    }
    events.write_all(&out.buf)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn gen(scenario: &str, hours: f64, seed: u64) -> (String, LabelFile) {
        gen_scraped(scenario, hours, seed, None)
    }

    fn gen_scraped(
        scenario: &str,
        hours: f64,
        seed: u64,
        scrape_s: Option<f64>,
    ) -> (String, LabelFile) {
        let opts = GenOptions {
            scenario: scenario.into(),
            hours,
            seed,
            start_ms: DEFAULT_START_MS,
            scrape_s,
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
    fn another_scrape_interval_sees_the_same_incidents_more_often() {
        let members = |text: &str| {
            text.lines()
                .filter(|l| l.contains(crate::event::names::KAFKA_MEMBERS))
                .count()
        };
        let (every15, labels15) = gen("payments", 2.0, 5);
        let (every5, labels5) = gen_scraped("payments", 2.0, 5, Some(5.0));
        assert_eq!(labels15.incidents, labels5.incidents);
        let ratio = members(&every5) as f64 / members(&every15) as f64;
        assert!((2.8..3.2).contains(&ratio), "{ratio}");
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
    fn scenario_names_choose_a_topology_and_kinds() {
        let all = INCIDENT_KINDS.len();
        assert_eq!(parse_scenario("payments").unwrap().1.len(), all);
        assert_eq!(
            parse_scenario("quiet").unwrap(),
            (Topology::Payments, vec![])
        );
        assert_eq!(parse_scenario("wide").unwrap().0, Topology::Wide);
        assert_eq!(parse_scenario("wide").unwrap().1.len(), all);
        assert_eq!(
            parse_scenario("wide-quiet").unwrap(),
            (Topology::Wide, vec![])
        );
        assert_eq!(
            parse_scenario("wide:group-stop").unwrap(),
            (Topology::Wide, vec!["group_stop"])
        );
        assert_eq!(
            parse_scenario("partition-stall").unwrap(),
            (Topology::Payments, vec!["partition_stall"])
        );
        assert!(parse_scenario("wide:nope").is_none());
        assert!(parse_scenario("narrow").is_none());
    }

    #[test]
    fn a_wide_world_has_slow_committers_several_vhosts_and_every_kind() {
        let (text, labels) = gen("wide", 6.0, 5);
        for k in INCIDENT_KINDS {
            assert!(labels.incidents.iter().any(|i| i.name == k), "no {k}");
        }
        assert!(text.contains(r#""consumergroup":"orders-archive-sink""#));
        for vhost in ["/payments", "/notify", "/risk"] {
            assert!(text.contains(&format!(r#""vhost":"{vhost}""#)), "{vhost}");
        }
    }

    #[test]
    fn a_sparse_world_labels_its_recurring_bursts_and_dumps_as_traps() {
        let (text, labels) = gen("sparse", 6.0, 5);
        for k in INCIDENT_KINDS {
            assert!(labels.incidents.iter().any(|i| i.name == k), "no {k}");
        }
        let count = |name: &str| labels.traps.iter().filter(|t| t.name == name).count();
        assert!(
            (11..=13).contains(&count("recurring_burst")),
            "{}",
            count("recurring_burst")
        );
        assert!(
            (5..=7).contains(&count("batch_dump")),
            "{}",
            count("batch_dump")
        );
        assert!(labels.traps.windows(2).all(|w| w[0].start <= w[1].start));
        assert!(text.contains(r#""queue":"alerts.sms""#));
    }

    #[test]
    fn a_noisy_day_rebalances_often_and_restarts_the_broker() {
        let (text, labels) = gen("noisy-quiet", 6.0, 5);
        let count = |name: &str| labels.traps.iter().filter(|t| t.name == name).count();
        // Four groups, each every 10-20 minutes; a broker restart every two to four hours.
        assert!(count("rebalance") >= 4 * 6 * 3, "{}", count("rebalance"));
        assert!(
            (1..=3).contains(&count("broker_restart")),
            "{}",
            count("broker_restart")
        );
        // A counter reset: some acked total is lower than the one before it.
        let mut last: std::collections::HashMap<String, f64> = Default::default();
        let mut resets = 0;
        for line in text.lines().filter(|l| l.contains("acked_total")) {
            let e = crate::event::parse_event(line).unwrap();
            let q = e.label("queue").unwrap().to_string();
            if last
                .insert(q, e.value)
                .is_some_and(|before| e.value < before)
            {
                resets += 1;
            }
        }
        assert!(resets >= 1, "no counter reset");
    }

    #[test]
    fn unknown_scenarios_are_refused() {
        let opts = GenOptions {
            scenario: "nope".into(),
            hours: 1.0,
            seed: 1,
            start_ms: DEFAULT_START_MS,
            scrape_s: None,
        };
        assert!(generate(&opts, &mut Vec::new()).is_err());
    }
}
