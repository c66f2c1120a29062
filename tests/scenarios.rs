//! Dataset-driven floors: on generated scenarios the engine has never seen (fresh seeds, six
//! hours), detection must meet the product's targets, and the quiet traps must stay quiet.

mod common;

use mqwatch::config::Config;
use mqwatch::dataset::eval::evaluate;
use mqwatch::dataset::labels::LabelFile;

fn span(l: &LabelFile) -> (i64, i64) {
    (l.start.unwrap(), l.end.unwrap())
}

#[test]
fn unseen_payment_scenarios_meet_the_detection_floors() {
    let dir = tempfile::tempdir().unwrap();
    for seed in [90_001, 90_002] {
        let (events, labels) = common::scenario(dir.path(), "payments", 6.0, seed);
        let run = common::replay_collect(Config::default(), &[events]);
        let r = evaluate(&labels, &run.alerts, span(&labels));
        let table = r.to_table();
        assert!(
            r.incidents >= 7,
            "seed {seed}: only {} incidents\n{table}",
            r.incidents
        );
        assert!(
            r.recall >= 0.95,
            "seed {seed}: recall {}\n{table}",
            r.recall
        );
        assert!(
            r.kind_accuracy >= 0.9,
            "seed {seed}: kind accuracy {}\n{table}",
            r.kind_accuracy
        );
        assert!(
            r.false_per_hour <= 0.2,
            "seed {seed}: {} false/h\n{table}",
            r.false_per_hour
        );
        assert!(
            r.median_delay_s.unwrap() <= 60.0,
            "seed {seed}: median delay\n{table}"
        );
        assert_eq!(
            r.trap_alerts.values().sum::<usize>(),
            0,
            "seed {seed}: a trap alerted\n{table}"
        );
    }
}

#[test]
fn every_incident_kind_is_detected_with_its_own_kind() {
    let dir = tempfile::tempdir().unwrap();
    for kind in mqwatch::dataset::gen::INCIDENT_KINDS {
        let (events, labels) = common::scenario(dir.path(), kind, 4.0, 31);
        let run = common::replay_collect(Config::default(), &[events]);
        let r = evaluate(&labels, &run.alerts, span(&labels));
        assert!(r.incidents >= 3, "{kind}: {} incidents", r.incidents);
        assert_eq!(r.detected, r.incidents, "{kind}\n{}", r.to_table());
        assert_eq!(r.kind_accuracy, 1.0, "{kind}\n{}", r.to_table());
    }
}

#[test]
fn a_quiet_day_of_traps_raises_no_alert() {
    let dir = tempfile::tempdir().unwrap();
    let (events, labels) = common::scenario(dir.path(), "quiet", 12.0, 77);
    assert!(labels.traps.len() >= 10, "{} traps", labels.traps.len());
    let run = common::replay_collect(Config::default(), &[events]);
    assert!(run.input.events > 1_000_000);
    assert!(run.alerts.is_empty(), "{:#?}", run.alerts.first());
}

#[test]
fn the_shipped_dataset_meets_the_floors() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/payments-6h");
    let labels = LabelFile::load(&dir.join("labels.json")).unwrap();
    let run = common::replay_collect(Config::default(), &[dir.join("events.jsonl.gz")]);
    assert_eq!(run.input.total_errors(), 0);
    let r = evaluate(&labels, &run.alerts, span(&labels));
    assert!(
        r.recall >= 0.95 && r.kind_accuracy >= 0.9 && r.false_per_hour <= 0.2,
        "{}",
        r.to_table()
    );
}
