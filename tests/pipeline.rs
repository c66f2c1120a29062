//! The pipeline end to end on hand-made streams: alert lifecycle, grouping of partitions, event
//! time and lateness, and results that do not depend on how many workers share the work.

mod common;

use std::collections::BTreeSet;

use mqwatch::alert::AlertState;
use mqwatch::config::Config;
use mqwatch::detect::{AlertKind, Severity};

const T0: i64 = 1_767_225_600_000;

fn ev(ts: i64, name: &str, labels: &[(&str, &str)], value: f64) -> String {
    let l: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("\"{k}\":\"{v}\""))
        .collect();
    format!(
        r#"{{"ts":{ts},"name":"{name}","labels":{{{}}},"value":{value}}}"#,
        l.join(",")
    )
}

/// A group of 4 partitions scraped every 15 s for `minutes`; `stuck` partitions stop committing
/// between `from` and `to` seconds while their lag grows.
fn group_stream(minutes: i64, stuck: &[&str], from: i64, to: i64) -> Vec<String> {
    let mut out = Vec::new();
    for s in (0..minutes * 60).step_by(15) {
        let ts = T0 + s * 1000;
        for p in ["0", "1", "2", "3"] {
            let frozen = stuck.contains(&p) && (from..to).contains(&s);
            let committed = if frozen { from * 100 } else { s * 100 };
            let end = s * 100 + 5;
            let l = [
                ("cluster", "k"),
                ("topic", "payments"),
                ("consumergroup", "auth"),
                ("partition", p),
            ];
            out.push(ev(
                ts,
                "kafka_consumergroup_current_offset",
                &l,
                committed as f64,
            ));
            out.push(ev(
                ts,
                "kafka_consumergroup_lag",
                &l,
                (end - committed) as f64,
            ));
        }
        let l = [
            ("cluster", "k"),
            ("topic", "payments"),
            ("consumergroup", "auth"),
        ];
        out.push(ev(ts, "kafka_consumergroup_members", &l, 4.0));
    }
    out
}

#[test]
fn stalled_partitions_make_one_group_alert_that_fires_then_resolves() {
    let dir = tempfile::tempdir().unwrap();
    let f = common::write_lines(
        dir.path(),
        "g.jsonl",
        &group_stream(40, &["1", "3"], 600, 1200),
    );
    let run = common::replay_collect(Config::default(), &[f]);
    let alerts: Vec<_> = run
        .alerts
        .iter()
        .filter(|a| a.kind == AlertKind::ConsumerStall)
        .collect();
    // Warning, escalated to critical after five minutes, then resolved: one episode.
    assert_eq!(alerts.len(), 3, "{alerts:#?}");
    let (fire, escalate, resolve) = (alerts[0], alerts[1], alerts[2]);
    assert_eq!(fire.state, AlertState::Firing);
    assert_eq!(
        (escalate.state, escalate.severity, &escalate.id),
        (AlertState::Firing, Severity::Critical, &fire.id)
    );
    assert_eq!(fire.labels["partitions"], "1,3");
    assert_eq!(fire.labels["consumergroup"], "auth");
    // Frozen while partitions 0 and 2 commit: a stall after 20 s (22.5 s by their 15 s cadence),
    // seen at the second frozen scrape.
    assert!(
        (T0 + 620_000..=T0 + 650_000).contains(&fire.started_at),
        "fired at +{} s",
        (fire.started_at - T0) / 1000
    );
    assert_eq!(resolve.state, AlertState::Resolved);
    assert_eq!(resolve.id, fire.id);
    assert!(resolve.resolved_at.unwrap() >= T0 + 1_200_000);
    assert_eq!(run.alerts.len(), 3, "nothing else fires: {:#?}", run.alerts);
}

#[test]
fn a_whole_group_frozen_at_once_gets_the_rebalance_floor() {
    let dir = tempfile::tempdir().unwrap();
    let all = ["0", "1", "2", "3"];
    let f = common::write_lines(dir.path(), "g.jsonl", &group_stream(20, &all, 600, 900));
    let run = common::replay_collect(Config::default(), &[f]);
    let fire = run
        .alerts
        .iter()
        .find(|a| a.kind == AlertKind::ConsumerStall)
        .expect("a stall");
    assert_eq!(fire.labels["partitions"], "0,1,2,3");
    // No partition moves on, so this may be a rebalance no scrape saw: 45 s, not 20.
    assert!(
        (T0 + 645_000..=T0 + 680_000).contains(&fire.started_at),
        "fired at +{} s",
        (fire.started_at - T0) / 1000
    );
}

#[test]
fn healthy_group_stays_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let f = common::write_lines(dir.path(), "g.jsonl", &group_stream(60, &[], 0, 0));
    assert!(common::replay_collect(Config::default(), &[f])
        .alerts
        .is_empty());
}

#[test]
fn events_within_lateness_count_and_later_ones_are_dropped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let l = [("topic", "t")];
    let lines = vec![
        ev(T0 + 1_000, "message_latency_ms", &l, 10.0),
        ev(T0 + 14_000, "message_latency_ms", &l, 10.0),
        ev(T0 + 9_000, "message_latency_ms", &l, 10.0), // 5 s late: interval 0 still open
        ev(T0 + 40_000, "message_latency_ms", &l, 10.0),
        ev(T0 + 2_000, "message_latency_ms", &l, 10.0), // interval 0 long closed
    ];
    let f = common::write_lines(dir.path(), "late.jsonl", &lines);
    let run = common::replay_collect(Config::default(), &[f]);
    assert_eq!(run.input.events, 5);
    assert_eq!(run.workers.late, 1);
    assert_eq!(run.workers.samples, 4);
}

#[test]
fn results_do_not_depend_on_the_number_of_workers() {
    let dir = tempfile::tempdir().unwrap();
    let (events, _) = common::scenario(dir.path(), "payments", 3.0, 5);
    let ids = |workers| {
        let mut c = Config::default();
        c.engine.workers = workers;
        c.engine.batch_size = 97;
        let run = common::replay_collect(c, std::slice::from_ref(&events));
        assert!(!run.alerts.is_empty());
        run.alerts
            .iter()
            .map(|a| (a.id.clone(), a.ts, a.state == AlertState::Firing))
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(ids(1), ids(3));
}

#[test]
fn a_runaway_label_is_capped_per_source_and_what_is_refused_is_counted() {
    let mut config = Config::default();
    config.engine.max_series = 100;
    let lines: Vec<String> = (0..3)
        .flat_map(|step| {
            (0..150).map(move |i| {
                let request = format!("req-{i}");
                ev(
                    T0 + step * 10_000,
                    "checkout_seconds",
                    &[("request_id", request.as_str())],
                    1.0,
                )
            })
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = common::write_lines(dir.path(), "runaway.jsonl", &lines);
    let run = common::replay_collect(config, &[path]);
    assert_eq!(run.workers.series, 100, "no more series than the cap");
    assert_eq!(
        run.input.events, 300,
        "the first 100 series' events all count"
    );
    assert_eq!(
        run.input.errors(mqwatch::event::ErrorReason::SeriesLimit),
        150,
        "every event of the 50 series beyond the cap is refused and counted"
    );
}
