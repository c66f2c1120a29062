//! The alert journal: an alert is on disk, synced, before any sink is handed it, and it stays
//! there until every sink has confirmed it. An engine that crashes (`kill -9`, power loss) with
//! alerts accepted but unconfirmed delivers them when it starts again.
//!
//! Entries are numbered in the order they were accepted; each sink, by name, has a *cursor*: the
//! number of the first entry it has not confirmed. Every sink is handed every entry in order, so
//! a sink that has confirmed `n` since it started has confirmed everything before its cursor at
//! start plus `n`. Cursors are written about once a second, without a sync: one lost costs
//! duplicates (which subscribers drop by id), never an alert. When every sink has confirmed
//! everything, the journal is emptied. A sink new to the journal starts at its end.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::alert::Alert;
use crate::state::frame::{scan, write_frame, JOURNAL_MAGIC};
use crate::state::StateError;

const JOURNAL: &str = "alerts.journal";
const CURSORS: &str = "alerts.cursors.json";

pub struct Journal {
    path: PathBuf,
    cursors_path: PathBuf,
    file: File,
    /// The number the next entry gets.
    next: u64,
    /// Entries in the file.
    held: u64,
    /// Per sink, in the run's order: its name, its cursor when the run started, and how many
    /// entries it has been handed and has confirmed since.
    sinks: Vec<SinkCursor>,
    written: Option<BTreeMap<String, u64>>,
}

struct SinkCursor {
    name: String,
    start: u64,
    handed: u64,
    confirmed: u64,
}

impl SinkCursor {
    fn cursor(&self) -> u64 {
        self.start + self.handed.min(self.confirmed)
    }
}

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Cursors {
    next: u64,
    sinks: BTreeMap<String, u64>,
}

impl Journal {
    /// Opens (or creates) the journal in `dir` for these sinks, and returns with it what each
    /// sink (in the same order) has yet to be handed: the entries from its cursor on.
    pub fn open(dir: &Path, sinks: &[&str]) -> Result<(Journal, Vec<Vec<Alert>>), StateError> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| StateError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let path = dir.join(JOURNAL);
        let cursors_path = dir.join(CURSORS);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io(&path))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io(&path))?;
        let mut entries: Vec<(u64, Alert)> = Vec::new();
        let mut unreadable = 0;
        if bytes.is_empty() {
            file.write_all(JOURNAL_MAGIC).map_err(io(&path))?;
            file.sync_all().map_err(io(&path))?;
        } else if !bytes.starts_with(JOURNAL_MAGIC) {
            return Err(StateError::Corrupt(format!(
                "{} is not an alert journal of this engine (move it away to start afresh)",
                path.display()
            )));
        } else {
            let good = scan(&bytes, |key, value, _| {
                let seq = key.try_into().map(u64::from_le_bytes);
                match (seq, serde_json::from_slice::<Alert>(value)) {
                    (Ok(seq), Ok(a)) => entries.push((seq, a)),
                    _ => unreadable += 1,
                }
            });
            if good < bytes.len() as u64 {
                tracing::warn!(
                    journal = %path.display(),
                    "the alert journal ends in an entry torn by a crash: it was never accepted, and is cut off"
                );
                file.set_len(good).map_err(io(&path))?;
            }
        }
        if unreadable > 0 {
            tracing::error!(journal = %path.display(), unreadable, "alert journal entries that cannot be read are left out");
        }
        let saved: Cursors = std::fs::read(&cursors_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let oldest = entries.first().map_or(saved.next, |(s, _)| *s);
        let next = entries
            .last()
            .map_or(saved.next, |(s, _)| s + 1)
            .max(saved.next);
        let mut pending = Vec::with_capacity(sinks.len());
        let mut cursors = Vec::with_capacity(sinks.len());
        for name in sinks {
            // A sink the cursors do not know: all of it if the cursors were lost, none if it is new.
            let start = match saved.sinks.get(*name) {
                Some(&c) => c.max(oldest),
                None if saved.sinks.is_empty() => oldest,
                None => next,
            };
            pending.push(
                entries
                    .iter()
                    .filter(|(s, _)| *s >= start)
                    .map(|(_, a)| a.clone())
                    .collect::<Vec<_>>(),
            );
            cursors.push(SinkCursor {
                name: name.to_string(),
                start,
                handed: 0,
                confirmed: 0,
            });
        }
        let waiting: usize = pending.iter().map(Vec::len).sum();
        if waiting > 0 {
            tracing::info!(
                journal = %path.display(),
                alerts = waiting,
                "delivering the alerts accepted before the restart that no sink had confirmed"
            );
        }
        let journal = Journal {
            path,
            cursors_path,
            file,
            next,
            held: entries.len() as u64,
            sinks: cursors,
            written: None,
        };
        Ok((journal, pending))
    }

    fn io(&self, source: std::io::Error) -> StateError {
        StateError::Io {
            path: self.path.display().to_string(),
            source,
        }
    }

    /// Accepts alerts: once this returns they are on disk, and every sink will be handed them.
    pub fn append(&mut self, alerts: &[Alert]) -> Result<(), StateError> {
        if alerts.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(1024 * alerts.len());
        for (i, a) in alerts.iter().enumerate() {
            let seq = self.next + i as u64;
            let json = serde_json::to_vec(a).expect("alerts serialise");
            write_frame(&mut buf, &seq.to_le_bytes(), &json).expect("writing to memory");
        }
        self.file.write_all(&buf).map_err(|e| self.io(e))?;
        self.file.sync_data().map_err(|e| self.io(e))?;
        self.next += alerts.len() as u64;
        self.held += alerts.len() as u64;
        Ok(())
    }

    /// Sink `i` was handed one more entry.
    pub fn handed(&mut self, i: usize) {
        self.sinks[i].handed += 1;
    }

    /// Sink `i` has confirmed `n` of the entries handed to it since the run started.
    pub fn confirmed(&mut self, i: usize, n: u64) {
        self.sinks[i].confirmed = n;
    }

    /// Writes the cursors if they moved, and empties the journal once every sink has confirmed
    /// all of it.
    pub fn tick(&mut self) -> Result<(), StateError> {
        let now = Cursors {
            next: self.next,
            sinks: self
                .sinks
                .iter()
                .map(|s| (s.name.clone(), s.cursor()))
                .collect(),
        };
        if self.written.as_ref() != Some(&now.sinks) {
            let tmp = self.cursors_path.with_extension("json.new");
            let io = |source| StateError::Io {
                path: tmp.display().to_string(),
                source,
            };
            std::fs::write(&tmp, serde_json::to_vec(&now).expect("cursors serialise"))
                .map_err(io)?;
            std::fs::rename(&tmp, &self.cursors_path).map_err(io)?;
            self.written = Some(now.sinks.clone());
        }
        let all_confirmed = now.sinks.values().all(|&c| c >= self.next);
        if self.held > 0 && all_confirmed {
            self.file
                .set_len(JOURNAL_MAGIC.len() as u64)
                .map_err(|e| self.io(e))?;
            self.file.sync_data().map_err(|e| self.io(e))?;
            self.held = 0;
        }
        Ok(())
    }

    /// Entries accepted and not yet confirmed by every sink.
    pub fn unconfirmed(&self) -> u64 {
        let oldest = self
            .sinks
            .iter()
            .map(SinkCursor::cursor)
            .min()
            .unwrap_or(self.next);
        self.next - oldest
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::AlertState;

    fn alert(i: u64) -> Alert {
        Alert {
            id: format!("a{i}"),
            ..Alert::example()
        }
    }

    fn ids(alerts: &[Alert]) -> Vec<&str> {
        alerts.iter().map(|a| a.id.as_str()).collect()
    }

    #[test]
    fn what_a_sink_had_not_confirmed_is_handed_to_it_again_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, pending) = Journal::open(dir.path(), &["kafka", "stdout"]).unwrap();
        assert!(pending.iter().all(Vec::is_empty));
        j.append(&[alert(0), alert(1), alert(2)]).unwrap();
        for i in 0..2 {
            (0..3).for_each(|_| j.handed(i));
        }
        j.confirmed(0, 1);
        j.confirmed(1, 3);
        j.tick().unwrap();
        assert_eq!(j.unconfirmed(), 2);
        // A crash: nothing more is written; the next run opens the same directory.
        drop(j);
        let (mut j, pending) = Journal::open(dir.path(), &["stdout", "kafka", "webhook"]).unwrap();
        assert_eq!(ids(&pending[0]), Vec::<&str>::new(), "stdout confirmed all");
        assert_eq!(ids(&pending[1]), ["a1", "a2"], "kafka had confirmed one");
        assert!(
            pending[2].is_empty(),
            "a sink new to the journal starts at its end"
        );
        j.handed(1);
        j.handed(1);
        j.confirmed(1, 2);
        j.tick().unwrap();
        assert_eq!(j.unconfirmed(), 0);
        assert_eq!(
            std::fs::metadata(dir.path().join(JOURNAL)).unwrap().len(),
            JOURNAL_MAGIC.len() as u64,
            "emptied once every sink confirmed everything"
        );
        j.append(&[Alert {
            state: AlertState::Resolved,
            ..alert(3)
        }])
        .unwrap();
        drop(j);
        let (_, pending) = Journal::open(dir.path(), &["stdout", "kafka", "webhook"]).unwrap();
        assert!(
            pending.iter().all(|p| ids(p) == ["a3"]),
            "numbering goes on"
        );
    }

    #[test]
    fn without_its_cursors_a_journal_hands_everything_again() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(dir.path(), &["kafka"]).unwrap();
        j.append(&[alert(0), alert(1)]).unwrap();
        drop(j);
        let _ = std::fs::remove_file(dir.path().join(CURSORS));
        let (_, pending) = Journal::open(dir.path(), &["kafka"]).unwrap();
        assert_eq!(ids(&pending[0]), ["a0", "a1"]);
    }
}
