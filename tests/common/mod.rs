//! Helpers shared by the integration tests: scenarios on disk and replays that keep their alerts.
#![allow(dead_code)]

pub mod live;
pub mod receiver;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use mqwatch::config::Config;
use mqwatch::dataset::gen::{generate, GenOptions, DEFAULT_START_MS};
use mqwatch::dataset::labels::LabelFile;
use mqwatch::run::{replay, ReplayOptions, ReplayReport};

/// Writes a generated scenario into `dir` and returns the events file and its labels.
pub fn scenario(dir: &Path, name: &str, hours: f64, seed: u64) -> (PathBuf, LabelFile) {
    let opts = GenOptions {
        scenario: name.into(),
        hours,
        seed,
        start_ms: DEFAULT_START_MS,
        scrape_s: None,
    };
    let path = dir.join(format!("{name}-{seed}.jsonl"));
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let (labels, _) = generate(&opts, &mut file).unwrap();
    std::io::Write::flush(&mut file).unwrap();
    (path, labels)
}

pub fn replay_collect(config: Config, paths: &[PathBuf]) -> ReplayReport {
    replay_with_models(config, None, paths)
}

/// As [`replay_collect`], scoring with learned models.
pub fn replay_with_models(
    config: Config,
    models: Option<Arc<mqwatch::learn::ModelSet>>,
    paths: &[PathBuf],
) -> ReplayReport {
    let opts = ReplayOptions {
        collect: true,
        learned: mqwatch::pipeline::Learned {
            models,
            features: None,
        },
        ..Default::default()
    };
    replay(Arc::new(config), paths, Vec::new(), &opts).unwrap()
}

/// Writes lines to a file in `dir`.
pub fn write_lines(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, lines.join("\n") + "\n").unwrap();
    p
}

/// A name no other test run uses: for queues, exchanges, topics and groups on the shared brokers.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}.test-{}-{nanos}", std::process::id())
}
