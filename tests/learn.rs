//! Learned baselines: training leaves incidents out, model files round-trip exactly, foreign
//! formats are refused, and the shipped model lowers false alerts without costing recall.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use mqwatch::config::Config;
use mqwatch::dataset::eval::{evaluate, GRACE_MS};
use mqwatch::dataset::labels::{same_entity, LabelFile};
use mqwatch::dataset::train::{collect_rows, train, training_rows};
use mqwatch::learn::{
    EntityClass, FeatureRow, ModelError, ModelFile, ModelSet, TrainOptions, FORMAT_VERSION,
};

fn in_incident(r: &FeatureRow, labels: &LabelFile) -> bool {
    labels.incidents.iter().any(|i| {
        (i.start..=i.end + GRACE_MS).contains(&r.ts)
            && same_entity(&i.labels, &r.entity.label_map())
    })
}

#[test]
fn training_leaves_out_every_labelled_incident_interval() {
    let dir = tempfile::tempdir().unwrap();
    let (events, labels) = common::scenario(dir.path(), "payments", 6.0, 71);
    let (rows, _) = collect_rows(&Config::default(), &[events]).unwrap();
    assert!(!labels.incidents.is_empty());

    let set = training_rows(&rows, Some(&labels));
    let normal: usize = set.normal.values().map(Vec::len).sum();
    let incident: usize = set.incident.values().map(Vec::len).sum();
    assert_eq!(normal + incident, rows.len());
    assert!(incident > 100, "incidents cover {incident} intervals");
    for r in set.normal.values().flatten() {
        assert!(
            !in_incident(r, &labels),
            "{} at {} trained on",
            r.entity.display,
            r.ts
        );
    }
    for r in set.incident.values().flatten() {
        assert!(in_incident(r, &labels));
    }
    // Without labels, everything is training data.
    let all = training_rows(&rows, None);
    assert_eq!(all.normal.values().map(Vec::len).sum::<usize>(), rows.len());
    assert!(all.incident.is_empty());
}

#[test]
fn a_saved_model_loads_back_and_scores_identically() {
    let dir = tempfile::tempdir().unwrap();
    let (events, labels) = common::scenario(dir.path(), "payments", 6.0, 72);
    let (rows, span) = collect_rows(&Config::default(), std::slice::from_ref(&events)).unwrap();
    let labels_path = dir.path().join("labels.json");
    std::fs::write(&labels_path, serde_json::to_string(&labels).unwrap()).unwrap();
    let opts = TrainOptions {
        name: "round-trip".into(),
        components: vec![1, 2],
        ..Default::default()
    };
    let model = train(&rows, span, Some((&labels, &labels_path)), &[events], &opts).unwrap();
    assert_eq!(model.format_version, FORMAT_VERSION);
    assert_eq!(model.training.files.len(), 1);
    assert_eq!(model.training.files[0].sha256.len(), 64);
    assert!(model.training.excluded_intervals.values().sum::<usize>() > 0);

    let path = dir.path().join("models/round-trip.json");
    model.save(&path).unwrap();
    let loaded = ModelFile::load(&path).unwrap();
    assert!(
        loaded == model,
        "the model changed on its way through the file"
    );
    let mut scored = 0;
    for r in &rows {
        let (Some(a), Some(b)) = (model.classes.get(&r.class), loaded.classes.get(&r.class)) else {
            continue;
        };
        let (x, y) = (a.score(r.features(), r.ts), b.score(r.features(), r.ts));
        assert_eq!(x.nll.to_bits(), y.nll.to_bits());
        assert_eq!(x.abnormal, y.abnormal);
        scored += 1;
    }
    assert!(scored > 1000);
    // What training measured is in the file: a threshold near its quantile on held-out data.
    for c in loaded.classes.values() {
        let e = &c.evaluation;
        assert!(e.holdout_flagged < 0.01, "{e:?}");
        assert!(!c.selection.is_empty());
    }
}

#[test]
fn a_model_of_another_format_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/payments-default.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(shipped).unwrap()).unwrap();
    json["format_version"] = (FORMAT_VERSION + 1).into();
    let models = dir.path().join("models");
    std::fs::create_dir(&models).unwrap();
    let path = models.join("future.json");
    std::fs::write(&path, json.to_string()).unwrap();

    match ModelFile::load(&path) {
        Err(e @ ModelError::Version { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("future.json"), "{msg}");
            assert!(
                msg.contains(&format!("version {}", FORMAT_VERSION + 1)),
                "{msg}"
            );
        }
        other => panic!("loaded a future model: {other:?}"),
    }
    assert!(ModelSet::load_dir(&models).is_err());

    // The command refuses it as a usage error, in one line, before doing anything.
    let out = Command::new(env!("CARGO_BIN_EXE_mqwatch"))
        .args([
            "eval",
            "--events",
            "none.jsonl",
            "--labels",
            "none.json",
            "--models",
        ])
        .arg(&models)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("model format version"), "{err}");
}

#[test]
fn the_shipped_model_lowers_false_alerts_without_losing_recall() {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let models = Arc::new(ModelSet::load_dir(&root).unwrap());
    for class in EntityClass::ALL {
        assert!(
            models.get(class).is_some(),
            "{class:?} has no shipped model"
        );
    }
    // The statistical detectors at their most sensitive, as one would run them with a model.
    let sensitive = Config::load(&root.join("sensitive-detectors.toml")).unwrap();

    let (mut false_stat, mut false_learned, mut explained) = (0, 0, 0);
    for (name, seed) in [("payments", 501), ("quiet", 502)] {
        let (events, labels) = common::scenario(dir.path(), name, 8.0, seed);
        let span = (labels.start.unwrap(), labels.end.unwrap());
        let stat = common::replay_collect(sensitive.clone(), std::slice::from_ref(&events));
        let both = common::replay_with_models(
            sensitive.clone(),
            Some(models.clone()),
            std::slice::from_ref(&events),
        );
        let (s, l) = (
            evaluate(&labels, &stat.alerts, span),
            evaluate(&labels, &both.alerts, span),
        );
        assert!(
            l.recall >= s.recall,
            "{name}: recall {} < {}",
            l.recall,
            s.recall
        );
        false_stat += s.false_episodes;
        false_learned += l.false_episodes;
        explained += both
            .alerts
            .iter()
            .filter(|a| a.summary.contains("learned baseline:"))
            .filter(|a| a.context.contains_key("learned_score"))
            .count();
    }
    assert!(
        false_learned < false_stat,
        "false episodes: {false_learned} with the model, {false_stat} without"
    );
    assert!(explained > 0, "no alert was explained by the model");
}
