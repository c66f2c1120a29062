//! Bad input never crashes the engine: generated and mutated inputs through the wire-format
//! decoder every metric source uses, the config loader, the checkpoint loader (each shard that
//! decodes is then restored into a pipeline and judged for a while), and the checkpoint log and
//! alert journal as files. Zero panics; every refusal counted, by reason.
//!
//! The tests run 20,000 inputs per target. The long run (a million and more in all):
//!
//!     MQWATCH_FUZZ_INPUTS=250000 cargo test --release --test fuzz -- --nocapture
//!
//! Mutations are those of a byte fuzzer (bit flips, interesting bytes, deletions, duplications,
//! truncations, splices of other inputs, dictionary tokens such as `NaN`, `1e400`, deep nesting
//! and invalid UTF-8) over a corpus of valid inputs, plus structurally generated events.

mod common;

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use mqwatch::config::Config;
use mqwatch::event::{ErrorReason, RawEvent};
use mqwatch::pipeline::{Feed, Pipeline};
use mqwatch::state::{self, FileStore, Store};
use mqwatch::telemetry::InputStats;

fn inputs() -> usize {
    std::env::var("MQWATCH_FUZZ_INPUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

/// Tokens a mutation may insert: what trips parsers.
const DICTIONARY: &[&[u8]] = &[
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b"1e400",
    b"-1e400",
    b"-0",
    b"0x10",
    b"null",
    b"true",
    b"9223372036854775808",
    b"-9223372036854775809",
    b"18446744073709551616",
    b"1.7976931348623157e309",
    b"\"",
    b"\\",
    b"\\u0000",
    b"\\ud800",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"\n",
    b"\r\n",
    b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
    b"{\"a\":{\"a\":{\"a\":{\"a\":",
    b"\xff\xfe",
    b"\xc3\x28",
    b"\xe2\x82",
    b"\xf0\x9f\x92",
    b"\"ts\":",
    b"\"labels\":{",
    b"\"value\":",
    b"\"type\":\"counter\"",
    b"=",
    b"[[kafka]]",
    b"[state]",
    b"\"\"\"",
    b"'''",
    b"#",
];

struct Mutator {
    rng: StdRng,
    corpus: Vec<Vec<u8>>,
}

impl Mutator {
    fn new(seed: u64, corpus: Vec<Vec<u8>>) -> Mutator {
        assert!(!corpus.is_empty());
        Mutator {
            rng: StdRng::seed_from_u64(seed),
            corpus,
        }
    }

    fn pick(&mut self) -> Vec<u8> {
        let i = self.rng.random_range(0..self.corpus.len());
        self.corpus[i].clone()
    }

    fn next(&mut self) -> Vec<u8> {
        let mut b = self.pick();
        for _ in 0..self.rng.random_range(1..=4) {
            self.mutate(&mut b);
        }
        b
    }

    fn mutate(&mut self, b: &mut Vec<u8>) {
        let r = &mut self.rng;
        let at = |r: &mut StdRng, len: usize| r.random_range(0..=len);
        match r.random_range(0..10) {
            0 if !b.is_empty() => {
                let i = r.random_range(0..b.len());
                b[i] ^= 1 << r.random_range(0..8);
            }
            1 if !b.is_empty() => {
                let i = r.random_range(0..b.len());
                b[i] = [
                    0u8, 0xff, 0x7f, 0x80, b'"', b'{', b'[', b'\\', b'\n', 0xc3, b'0', b'-',
                ][r.random_range(0..12)];
            }
            2 => {
                let i = at(r, b.len());
                let j = (i + r.random_range(0..=16)).min(b.len());
                b.drain(i..j);
            }
            3 => {
                let i = at(r, b.len());
                let j = (i + r.random_range(0..=64)).min(b.len());
                let copy = b[i..j].to_vec();
                let k = at(r, b.len());
                b.splice(k..k, copy);
            }
            4 => {
                let i = at(r, b.len());
                b.truncate(i);
            }
            5 => {
                let t = DICTIONARY[r.random_range(0..DICTIONARY.len())];
                let k = at(r, b.len());
                b.splice(k..k, t.iter().copied());
            }
            6 => {
                let other = self.pick();
                let r = &mut self.rng;
                let i = at(r, other.len());
                let j = (i + r.random_range(0..=128)).min(other.len());
                let k = at(r, b.len());
                b.splice(k..k, other[i..j].iter().copied());
            }
            7 => {
                // A run of digits becomes an edge value.
                if let Some(i) = b.iter().position(|c| c.is_ascii_digit()) {
                    let j = b[i..]
                        .iter()
                        .position(|c| !c.is_ascii_digit())
                        .map_or(b.len(), |n| i + n);
                    let edge: &[u8] = [
                        &b"1e400"[..],
                        b"-1",
                        b"0",
                        b"99999999999999999999",
                        b"NaN",
                        b"4.2",
                    ][r.random_range(0..6)];
                    b.splice(i..j, edge.iter().copied());
                }
            }
            8 => {
                let k = at(r, b.len());
                let n = r.random_range(1..=8);
                let noise: Vec<u8> = (0..n).map(|_| r.random()).collect();
                b.splice(k..k, noise);
            }
            _ => {
                // Wrapped in an array, or doubled: messages carry arrays of events.
                if r.random_bool(0.5) {
                    b.insert(0, b'[');
                    b.push(b']');
                } else {
                    let copy = b.clone();
                    b.push(b',');
                    b.extend(copy);
                }
            }
        }
    }
}

/// What a target saw: inputs, how many were refused by which reason, and panics with the first
/// input that caused one.
#[derive(Default, Debug)]
struct Tally {
    inputs: usize,
    accepted: usize,
    refused: BTreeMap<String, usize>,
    panics: usize,
    first_panic: Option<Vec<u8>>,
}

impl Tally {
    fn refuse(&mut self, reason: impl Into<String>) {
        *self.refused.entry(reason.into()).or_default() += 1;
    }

    fn run(&mut self, input: &[u8], f: impl FnOnce() -> Result<(), String>) {
        self.inputs += 1;
        match catch_unwind(AssertUnwindSafe(f)) {
            Ok(Ok(())) => self.accepted += 1,
            Ok(Err(reason)) => self.refuse(reason),
            Err(_) => {
                self.panics += 1;
                self.first_panic.get_or_insert_with(|| input.to_vec());
            }
        }
    }

    fn check(self, target: &str) {
        TRYING.with(|t| t.set(false));
        println!(
            "{target}: {} inputs, {} accepted, refused {:?}, {} panics",
            self.inputs, self.accepted, self.refused, self.panics
        );
        assert_eq!(
            self.panics,
            0,
            "{target}: {} panics; the first on {:?}",
            self.panics,
            self.first_panic
                .map(|b| String::from_utf8_lossy(&b).to_string())
        );
        assert!(
            self.accepted > 0 && !self.refused.is_empty(),
            "{target}: the inputs must reach both outcomes: {self:?}"
        );
    }
}

thread_local! {
    static TRYING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Silences the panic messages of the inputs that panic (they are counted instead), on this
/// thread while it tries inputs; every other panic is told as usual.
fn quietly<T>(f: impl FnOnce() -> T) -> T {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let told = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !TRYING.with(|t| t.get()) {
                told(info)
            }
        }));
    });
    TRYING.with(|t| t.set(true));
    let out = f();
    TRYING.with(|t| t.set(false));
    out
}

/// A feed that counts what it is given, as a source's would be counted.
#[derive(Default)]
struct Counting {
    stats: InputStats,
}

impl Feed for Counting {
    fn push(&mut self, ev: &RawEvent<'_>) {
        self.stats.events += 1;
        assert!(
            ev.value.is_finite(),
            "an event with a value that is not finite got through"
        );
    }
    fn reject(&mut self, reason: ErrorReason) {
        self.stats.count_error(reason);
    }
    fn advance_to(&mut self, _: i64) {}
    fn sync(&mut self) {}
    fn stats(&self) -> &InputStats {
        &self.stats
    }
}

fn generated_event(r: &mut StdRng) -> Vec<u8> {
    let names = [
        "kafka_topic_partition_current_offset",
        "kafka_consumergroup_current_offset",
        "kafka_consumergroup_lag",
        "kafka_consumergroup_lag_seconds",
        "kafka_consumergroup_members",
        "rabbitmq_queue_messages_ready",
        "rabbitmq_queue_messages_unacked",
        "rabbitmq_queue_consumers",
        "rabbitmq_queue_messages_published_total",
        "message_latency_ms",
        "cpu_load",
    ];
    let keys = [
        "cluster",
        "topic",
        "consumergroup",
        "partition",
        "queue",
        "vhost",
        "host",
    ];
    let mut labels = serde_json::Map::new();
    for _ in 0..r.random_range(0..6) {
        let k = keys[r.random_range(0..keys.len())];
        labels.insert(k.into(), format!("v{}", r.random_range(0..5)).into());
    }
    let ts: i64 = match r.random_range(0..4) {
        0 => r.random_range(0..2_000_000_000),
        _ => 1_767_225_600_000 + r.random_range(0..86_400_000),
    };
    let value = match r.random_range(0..5) {
        0 => serde_json::json!(-(r.random_range(0..1000) as f64)),
        1 => serde_json::json!(u64::MAX),
        _ => serde_json::json!(r.random_range(0.0..1e6)),
    };
    let mut ev = serde_json::json!({"ts": ts, "name": names[r.random_range(0..names.len())], "labels": labels, "value": value});
    if r.random_bool(0.2) {
        ev["type"] = ["gauge", "counter", "observation", "bogus"][r.random_range(0..4)].into();
    }
    serde_json::to_vec(&ev).unwrap()
}

#[test]
fn the_wire_decoder_of_every_source_refuses_bad_input_by_reason_and_never_panics() {
    let corpus: Vec<Vec<u8>> = include_str!("../datasets/README.md")
        .lines()
        .chain(SAMPLE_EVENTS.lines())
        .filter(|l| l.trim_start().starts_with('{') || l.trim_start().starts_with('['))
        .map(|l| l.as_bytes().to_vec())
        .collect();
    let mut m = Mutator::new(1, corpus);
    let mut gen = StdRng::seed_from_u64(2);
    let mut t = Tally::default();
    quietly(|| {
        for i in 0..inputs() {
            let input = if i % 4 == 0 {
                generated_event(&mut gen)
            } else {
                m.next()
            };
            t.run(&input, || {
                let mut feed = Counting::default();
                let refused = mqwatch::source::decode(&input, &mut feed, false);
                // Every refusal is reported (for the dead-letter sink) and counted by reason.
                assert_eq!(refused.len() as u64, feed.stats.total_errors());
                match refused.first() {
                    None => Ok(()),
                    Some(e) => Err(e.reason.as_str().to_string()),
                }
            });
        }
    });
    t.check("wire format");
}

const SAMPLE_EVENTS: &str = r#"{"ts": 1767225600000, "name": "kafka_consumergroup_lag", "labels": {"cluster": "pay-kafka", "topic": "payments.authorize", "consumergroup": "auth-service", "partition": "3"}, "value": 1532}
[{"ts":1767225600000,"name":"rabbitmq_queue_messages_ready","labels":{"queue":"ledger","vhost":"/"},"value":5},{"ts":"2026-01-01T00:00:01Z","name":"message_latency_ms","labels":{"queue":"ledger"},"value":12.5}]
{"ts":1767225600000,"name":"kafka_topic_partition_current_offset","labels":{"topic":"t","partition":"0"},"value":100,"type":"counter"}"#;

#[test]
fn the_config_loader_refuses_bad_configs_with_one_line_and_never_echoes_a_secret() {
    let planted = |text: &str| text.replace("guest:guest", "mqwatch:hunter2-secret");
    let corpus = vec![
        planted(include_str!("../mqwatch.example.toml")).into_bytes(),
        planted(include_str!("../mqwatch.live.example.toml")).into_bytes(),
        b"[kafka]\n[kafka.properties]\n\"sasl.password\" = \"hunter2-secret\"\n[scale_out]\ncluster = \"kafka\"\n".to_vec(),
    ];
    let mut m = Mutator::new(3, corpus);
    let mut t = Tally::default();
    quietly(|| {
        for _ in 0..inputs() {
            let input = m.next();
            t.run(&input, || {
                let text = String::from_utf8_lossy(&input);
                match Config::parse(&text) {
                    Ok(_) => Ok(()),
                    Err(e) => {
                        let e = e.to_string();
                        // Keys are named in errors (`unknown key ...`); values never are. Where a
                        // mutation moved the secret out of a value, naming it is no leak.
                        let in_values_only =
                            text.lines().filter(|l| l.contains("hunter2")).all(|l| {
                                l.split_once('=').is_some_and(|(k, v)| {
                                    !k.contains("hunter2") && v.trim_start().starts_with('"')
                                })
                            });
                        assert!(
                            !(in_values_only && e.contains("hunter2")),
                            "a config error echoed a secret: {e}"
                        );
                        assert!(
                            !e.contains('\n'),
                            "a config error of more than one line: {e}"
                        );
                        // The kind of refusal: its words before the first quote or colon.
                        let kind = e
                            .split(['`', '"', ':'])
                            .next()
                            .unwrap_or("")
                            .trim()
                            .to_string();
                        Err(if kind.starts_with("line ") {
                            "at a line".to_string()
                        } else {
                            kind.chars().take(40).collect()
                        })
                    }
                }
            });
        }
    });
    t.check("config");
}

/// Real checkpoint records: a short scenario replayed with a state directory.
fn checkpoint_records(dir: &Path) -> Vec<state::Record> {
    let (events, _) = common::scenario(dir, "payments", 0.5, 99);
    let state = dir.join("state");
    let opts = mqwatch::run::ReplayOptions {
        state: Some(state.clone()),
        ..Default::default()
    };
    mqwatch::run::replay(Arc::new(Config::default()), &[events], Vec::new(), &opts).unwrap();
    FileStore::open(&state).unwrap().load().unwrap()
}

#[test]
fn the_checkpoint_loader_refuses_damaged_state_and_what_it_takes_runs_without_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let records = checkpoint_records(dir.path());
    assert!(records.len() > 3);
    let mut m = Mutator::new(4, records.iter().map(|r| r.value.clone()).collect());
    let config = Arc::new(Config {
        engine: mqwatch::config::EngineConfig {
            workers: 1,
            ..Default::default()
        },
        ..Default::default()
    });
    let mut t = Tally::default();
    let mut ran = 0;
    quietly(|| {
        for _ in 0..inputs() {
            let input = m.next();
            t.run(&input, || {
                let saved = state::decode(&input).map_err(|e| match e {
                    state::StateError::Version { .. } => "version".to_string(),
                    state::StateError::NotACheckpoint => "not a checkpoint".to_string(),
                    state::StateError::Corrupt(why) if why.ends_with("past the end") => {
                        "corrupt: bytes past the end".into()
                    }
                    state::StateError::Corrupt(why) => {
                        format!("corrupt: {}", why.split(':').next().unwrap_or(""))
                    }
                    other => other.to_string(),
                })?;
                saved
                    .shard
                    .check()
                    .map_err(|e| format!("inconsistent: {}", e.split(':').next().unwrap_or("")))?;
                // Taken in: restored into a pipeline and judged for half an hour of samples.
                ran += 1;
                let (pipeline, _alerts) = Pipeline::start(config.clone());
                let mut ingest = pipeline.ingest();
                let start = saved.open_slot.unwrap_or(0).max(0) * 10_000;
                ingest.take_over(saved);
                for line in replayed_samples(start) {
                    ingest.push(&mqwatch::event::parse_event(&line).unwrap());
                }
                drop(ingest);
                pipeline.finish();
                Ok(())
            });
        }
    });
    println!("checkpoint: {ran} damaged shards taken in and judged");
    t.check("checkpoint");
}

/// Samples of the kinds of series the scenario's shards hold, for half an hour after `start`.
fn replayed_samples(start: i64) -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..180 {
        let ts = (start + i * 10_000).clamp(1_000_000_000_000, 4_000_000_000_000);
        for (name, labels) in [
            (
                "kafka_consumergroup_lag",
                r#"{"cluster":"pay-kafka","topic":"payments.authorize","consumergroup":"auth-service","partition":"0"}"#,
            ),
            (
                "kafka_topic_partition_current_offset",
                r#"{"cluster":"pay-kafka","topic":"payments.authorize","partition":"0"}"#,
            ),
            (
                "rabbitmq_queue_messages_ready",
                r#"{"cluster":"pay-rabbit","queue":"ledger.postings","vhost":"/"}"#,
            ),
            (
                "message_latency_ms",
                r#"{"cluster":"pay-kafka","topic":"payments.authorize","consumergroup":"auth-service"}"#,
            ),
        ] {
            out.push(format!(
                r#"{{"ts":{ts},"name":"{name}","labels":{labels},"value":{}}}"#,
                (i * 7) % 50
            ));
        }
    }
    out
}

#[test]
fn damaged_checkpoint_logs_and_alert_journals_are_cut_off_or_refused_never_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let records = checkpoint_records(dir.path());
    let log = std::fs::read(dir.path().join("state").join("shards.log")).unwrap();
    let journal = {
        let jdir = dir.path().join("journal");
        let (mut j, _) = mqwatch::sink::Journal::open(&jdir, &["s"]).unwrap();
        let alert: mqwatch::alert::Alert = serde_json::from_str(r#"{"id":"consumer_stall-1","state":"firing","kind":"consumer_stall","severity":"warning","labels":{"queue":"q"},"ts":1767225600000,"started_at":1767225600000,"resolved_at":null,"metric":"ready","observed":1.0,"expected":0.0,"score":1.0,"detector":"no_consumers","summary":"s"}"#).unwrap();
        j.append(&[alert.clone(), alert]).unwrap();
        drop(j);
        std::fs::read(jdir.join("alerts.journal")).unwrap()
    };
    assert!(records.len() > 3);
    // Files are slower to try than bytes: a tenth as many.
    let n = (inputs() / 10).max(1000);
    let mut m = Mutator::new(5, vec![log, journal]);
    let mut t = Tally::default();
    let work = tempfile::tempdir().unwrap();
    quietly(|| {
        for i in 0..n {
            let input = m.next();
            let place = work.path().join(format!("{}", i % 8));
            let _ = std::fs::remove_dir_all(&place);
            std::fs::create_dir_all(&place).unwrap();
            t.run(&input, || {
                if input.starts_with(b"MQWJ") {
                    std::fs::write(place.join("alerts.journal"), &input).unwrap();
                    mqwatch::sink::Journal::open(&place, &["s"]).map_err(|e| {
                        format!("journal: {}", e.to_string().split(':').next().unwrap_or(""))
                    })?;
                } else {
                    std::fs::write(place.join("shards.log"), &input).unwrap();
                    let mut store =
                        FileStore::open(&place).map_err(|_| "log refused".to_string())?;
                    let restored =
                        state::Restored::decode(store.load().map_err(|e| e.to_string())?);
                    store.commit().map_err(|e| e.to_string())?;
                    if restored.refused_count > 0 {
                        return Err("records refused".into());
                    }
                }
                Ok(())
            });
        }
    });
    t.check("checkpoint log and journal");
}
