//! Durable state: a replay in parts, each part resuming from the checkpoint the one before left,
//! judges exactly as one replay of the whole — the same alerts, ids and all. Anything a shard
//! learned that its checkpoint left out (a baseline, a cadence, an open episode, a latency
//! window, the learned model's track) would show up here as a different alert. A checkpoint this
//! engine cannot read is refused by name, and the run starts cold, saying so.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mqwatch::alert::{Alert, AlertState};
use mqwatch::config::Config;
use mqwatch::learn::ModelSet;
use mqwatch::pipeline::Learned;
use mqwatch::run::{replay, ReplayOptions};

fn replay_in(paths: &[PathBuf], state: Option<&Path>) -> Vec<Alert> {
    let models = ModelSet::load_dir(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("models")
            .as_path(),
    )
    .unwrap();
    let opts = ReplayOptions {
        collect: true,
        learned: Learned {
            models: Some(Arc::new(models)),
            features: None,
        },
        state: state.map(Path::to_path_buf),
        ..Default::default()
    };
    let report = replay(Arc::new(Config::default()), paths, Vec::new(), &opts).unwrap();
    report.alerts
}

fn as_lines(alerts: &[Alert]) -> Vec<String> {
    let mut lines: Vec<String> = alerts.iter().map(Alert::to_json).collect();
    lines.sort();
    lines
}

/// Splits an events file before its first event at or after `at`: two files that, read one
/// after the other, are the same events in the same order.
fn split_at(events: &Path, at: i64, dir: &Path) -> (PathBuf, PathBuf) {
    let (a, b) = (dir.join("part1.jsonl"), dir.join("part2.jsonl"));
    let mut first = std::io::BufWriter::new(std::fs::File::create(&a).unwrap());
    let mut second = std::io::BufWriter::new(std::fs::File::create(&b).unwrap());
    let mut past = false;
    for line in std::io::BufReader::new(std::fs::File::open(events).unwrap()).lines() {
        let line = line.unwrap();
        let ts = serde_json::from_str::<serde_json::Value>(&line).unwrap()["ts"]
            .as_i64()
            .unwrap();
        past |= ts >= at;
        let out = if past { &mut second } else { &mut first };
        writeln!(out, "{line}").unwrap();
    }
    (a, b)
}

#[test]
fn a_replay_in_parts_resumes_from_its_checkpoint_and_judges_as_one_replay() {
    let dir = tempfile::tempdir().unwrap();
    let (events, _) = common::scenario(dir.path(), "payments", 3.0, 4242);
    let whole = replay_in(std::slice::from_ref(&events), None);
    // Cut in the middle of the longest episode: it must carry on, under its id, across the cut.
    let episode = whole
        .iter()
        .filter(|a| a.state == AlertState::Resolved)
        .max_by_key(|a| a.ts - a.started_at)
        .expect("the scenario raises and resolves alerts");
    let cut = (episode.started_at + episode.ts) / 2;
    let (first, second) = split_at(&events, cut, dir.path());
    let state = dir.path().join("state");
    let mut parts = replay_in(&[first], Some(&state));
    let before_cut: BTreeSet<String> = parts.iter().map(|a| a.id.clone()).collect();
    assert!(
        before_cut.contains(&episode.id),
        "the episode fired before the cut"
    );
    parts.extend(replay_in(&[second], Some(&state)));
    let resolved_after = parts
        .iter()
        .any(|a| a.id == episode.id && a.state == AlertState::Resolved && a.ts > cut);
    assert!(
        resolved_after,
        "the episode resolves under its id after the cut"
    );
    assert_eq!(
        as_lines(&parts),
        as_lines(&whole),
        "two parts resumed from a checkpoint judge as one replay"
    );
}

#[test]
fn a_checkpoint_of_another_version_is_refused_and_the_run_starts_cold() {
    let dir = tempfile::tempdir().unwrap();
    let (events, _) = common::scenario(dir.path(), "payments", 0.5, 17);
    let state = dir.path().join("state");
    let run = |state: &Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_mqwatch"))
            .args(["replay", "--quiet", "--no-models", "--state"])
            .arg(state)
            .arg(&events)
            .output()
            .unwrap()
    };
    let first = run(&state);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(String::from_utf8_lossy(&first.stderr).contains("no checkpoint to resume from"));
    let again = run(&state);
    let said = String::from_utf8_lossy(&again.stderr).to_string();
    assert!(said.contains("resuming from the checkpoint"), "{said}");
    // Every record's value starts with the magic and the format version: make them all another.
    let log = state.join("shards.log");
    let mut bytes = std::fs::read(&log).unwrap();
    let mut changed = 0;
    for i in 0..bytes.len().saturating_sub(6) {
        if &bytes[i..i + 4] == b"MQWS" && bytes[i + 4..i + 6] == 1u16.to_le_bytes() {
            bytes[i + 4] = 99;
            changed += 1;
        }
    }
    assert!(changed > 0);
    // The frames' checksums would refuse the edited records as torn: rewrite them as whole.
    let fixed = reframe(&bytes);
    std::fs::write(&log, fixed).unwrap();
    let cold = run(&state);
    assert!(cold.status.success());
    let said = String::from_utf8_lossy(&cold.stderr).to_string();
    assert!(
        said.contains("checkpoint format version 99, and this engine reads version 1 only")
            && said.contains("start cold")
            && said.contains("no checkpoint to resume from"),
        "{said}"
    );
}

/// The log's frames with their checksums made right again (the frame layout of the file store:
/// key length, value length, CRC-32 of key and value, key, value, after a 6-byte header).
fn reframe(bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes[..6].to_vec();
    let mut at = 6;
    while at + 12 <= bytes.len() {
        let word = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap()) as usize;
        let (k, v) = (word(at), word(at + 4));
        let body = &bytes[at + 12..at + 12 + k + v];
        out.extend_from_slice(&bytes[at..at + 8]);
        out.extend_from_slice(&crc32(body).to_le_bytes());
        out.extend_from_slice(body);
        at += 12 + k + v;
    }
    out
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
