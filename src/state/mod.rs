//! Durable state: checkpoints of every shard, so that a restarted engine, or another engine of
//! the group, resumes judging where this one stood — baselines, learned cadences, open episodes
//! and all — instead of warming up blind.
//!
//! A checkpoint is a set of [`Record`]s, one per shard: its key and its state as [`encode`]d
//! here, in one versioned binary format (postcard over serde, behind a magic and a version). A
//! [`Store`] keeps the newest record of each key: a local file ([`FileStore`]) or a Kafka
//! changelog topic (`crate::scale_out`). [`keep`] is the outbox thread between the workers and
//! alert delivery: it writes what the workers save, and makes it durable before it hands on any
//! alert raised after it, so an accepted alert's episode is never missing from the state.

mod file;
pub mod frame;

use crossbeam_channel::{Receiver, Sender};
use serde::Serialize;

pub use file::FileStore;

use crate::alert::Alert;
use crate::pipeline::{Outbound, SavedShard, Shard, ShardKey};
use crate::telemetry::emit;
use crate::telemetry::events::StateWriteFailed;

/// The version of the checkpoint format this engine writes and reads. Any change to what a shard
/// serialises (a field added, removed or reordered in any state it holds) must bump it; a test
/// holds the encoding of a known shard to a fixed digest to catch a change that did not.
pub const FORMAT_VERSION: u16 = 1;
const MAGIC: &[u8; 4] = b"MQWS";

/// One shard's state as stored: its key and its encoded state.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub key: ShardKey,
    pub value: Vec<u8>,
}

impl Record {
    /// The key as stored: JSON, readable in a changelog topic and unique per shard.
    pub fn key_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.key).expect("shard keys serialise")
    }

    pub fn key_from_bytes(bytes: &[u8]) -> Result<ShardKey, StateError> {
        serde_json::from_slice(bytes).map_err(|e| StateError::Corrupt(format!("shard key: {e}")))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(
        "checkpoint format version {found}, and this engine reads version {FORMAT_VERSION} only"
    )]
    Version { found: u16 },
    #[error("not a checkpoint (no {:?} header)", std::str::from_utf8(MAGIC).unwrap_or(""))]
    NotACheckpoint,
    #[error("corrupt checkpoint: {0}")]
    Corrupt(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Broker(String),
}

#[derive(Serialize)]
struct SavedRef<'a> {
    open_slot: Option<i64>,
    shard: &'a Shard,
}

/// A shard's state, with the first interval its worker had not yet closed, as a record value.
pub fn encode(open_slot: Option<i64>, shard: &Shard) -> Vec<u8> {
    let mut out = Vec::with_capacity(4096);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    postcard::to_io(&SavedRef { open_slot, shard }, &mut out).expect("shards serialise to memory");
    out
}

/// A record value back as the shard it saved. A value of another format version is refused by
/// its version, never half-read.
pub fn decode(value: &[u8]) -> Result<SavedShard, StateError> {
    let body = value
        .strip_prefix(MAGIC.as_slice())
        .ok_or(StateError::NotACheckpoint)?;
    let (version, body) = body
        .split_first_chunk::<2>()
        .ok_or_else(|| StateError::Corrupt("no version".into()))?;
    let found = u16::from_le_bytes(*version);
    if found != FORMAT_VERSION {
        return Err(StateError::Version { found });
    }
    let (saved, rest): (SavedShard, _) =
        postcard::take_from_bytes(body).map_err(|e| StateError::Corrupt(e.to_string()))?;
    if !rest.is_empty() {
        return Err(StateError::Corrupt(format!(
            "{} bytes past the end",
            rest.len()
        )));
    }
    Ok(saved)
}

/// What the records of a checkpoint came to: the shards, and what had to be left out.
#[derive(Default)]
pub struct Restored {
    pub shards: Vec<SavedShard>,
    /// Records refused, with why (the first few), and how many in all.
    pub refused: Vec<String>,
    pub refused_count: usize,
}

impl Restored {
    /// Decodes the newest record of each key.
    pub fn decode(records: impl IntoIterator<Item = Record>) -> Restored {
        let mut out = Restored::default();
        for r in records {
            match decode(&r.value) {
                Ok(saved) if saved.shard.key != r.key => out.refuse(format!(
                    "{}: the record holds the state of {}",
                    r.key, saved.shard.key
                )),
                Ok(saved) => match saved.shard.check() {
                    Ok(()) => out.shards.push(saved),
                    Err(e) => out.refuse(format!("{}: inconsistent: {e}", r.key)),
                },
                Err(e) => out.refuse(format!("{}: {e}", r.key)),
            }
        }
        out
    }

    fn refuse(&mut self, why: String) {
        self.refused_count += 1;
        if self.refused.len() < 5 {
            self.refused.push(why);
        }
    }

    /// Says in the log what was restored from `from`, or why it starts cold.
    pub fn tell(&self, from: &str) {
        let entities: usize = self.shards.iter().map(|s| s.shard.entities()).sum();
        if self.refused_count > 0 {
            tracing::warn!(
                from,
                refused = self.refused_count,
                first = %self.refused.join("; "),
                "{} checkpointed shards refused: they start cold",
                self.refused_count
            );
        }
        if self.shards.is_empty() {
            tracing::info!(from, "no checkpoint to resume from: starting cold");
        } else {
            tracing::info!(
                from,
                shards = self.shards.len(),
                entities,
                "resuming from the checkpoint: {} entities in {} shards",
                entities,
                self.shards.len()
            );
        }
    }
}

/// Where checkpoints are kept: the newest record of each key.
pub trait Store: Send {
    /// Takes records (buffered; not yet durable).
    fn put(&mut self, records: Vec<Record>) -> Result<(), StateError>;
    /// Makes everything put so far durable.
    fn commit(&mut self) -> Result<(), StateError>;
    /// Where it keeps them, for the log.
    fn describe(&self) -> String;
}

/// The outbox thread: writes what the workers save, and commits it before handing on any alert
/// that came after it. A store that fails is said and counted, and the alerts still go on: an
/// engine that cannot save must not stop watching.
pub(crate) fn keep(mut store: Box<dyn Store>, rx: Receiver<Outbound>, alerts: Sender<Alert>) {
    let name = store.describe();
    let mut dirty = false;
    let commit = |store: &mut Box<dyn Store>, dirty: &mut bool| {
        if std::mem::take(dirty) {
            if let Err(e) = store.commit() {
                emit(StateWriteFailed {
                    store: &name,
                    error: &e,
                });
            }
        }
    };
    for out in rx {
        match out {
            Outbound::State { records, done } => {
                crate::telemetry::registry().add("checkpoint_records", &name, records.len() as u64);
                if let Err(e) = store.put(records) {
                    emit(StateWriteFailed {
                        store: &name,
                        error: &e,
                    });
                }
                dirty = true;
                if let Some(done) = done {
                    commit(&mut store, &mut dirty);
                    let _ = done.send(());
                }
            }
            Outbound::Alert(a) => {
                commit(&mut store, &mut dirty);
                let _ = alerts.send(a);
            }
        }
    }
    commit(&mut store, &mut dirty);
}
