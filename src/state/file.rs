//! A local checkpoint store: one append-only log of records in a directory, compacted when it has
//! grown well past what it holds live.
//!
//! Each record is framed ([`super::frame`]), so a record torn by a crash mid-write is recognised
//! and cut off (the records before it stand) instead of being read as state. `commit` flushes and syncs the file: what was committed survives `kill -9` and power
//! loss alike. Compaction writes the newest record of each key to a new file, syncs it and renames
//! it over the old one, so a crash during compaction leaves one whole log or the other.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::frame::{frame_len, scan, write_frame, LOG_MAGIC};
use super::{Record, StateError, Store};

const LOG_NAME: &str = "shards.log";
/// The log is compacted when it is this much larger than what it holds live (and past 4 MiB).
const COMPACT_RATIO: u64 = 3;
const COMPACT_MIN: u64 = 4 << 20;

pub struct FileStore {
    /// Held locked while the store is open: one engine per state directory.
    _lock: File,
    dir: PathBuf,
    path: PathBuf,
    out: BufWriter<File>,
    /// Where the newest value of each key lies in the log: offset and length.
    index: HashMap<Vec<u8>, (u64, u32)>,
    len: u64,
    live: u64,
}

impl FileStore {
    /// Opens (or creates) the log in `dir`, reading what it holds; a torn last record is cut off.
    pub fn open(dir: &Path) -> Result<FileStore, StateError> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| StateError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let lock_path = dir.join("LOCK");
        let lock = File::create(&lock_path).map_err(io(&lock_path))?;
        if let Err(e) = lock.try_lock() {
            return Err(StateError::Io {
                path: dir.display().to_string(),
                source: match e {
                    std::fs::TryLockError::WouldBlock => std::io::Error::other(
                        "in use by another mqwatch (each engine needs a state directory of its own)",
                    ),
                    std::fs::TryLockError::Error(e) => e,
                },
            });
        }
        let path = dir.join(LOG_NAME);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io(&path))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io(&path))?;
        let (index, good) = if bytes.is_empty() {
            file.write_all(LOG_MAGIC).map_err(io(&path))?;
            file.sync_all().map_err(io(&path))?;
            (HashMap::new(), LOG_MAGIC.len() as u64)
        } else if !bytes.starts_with(LOG_MAGIC) {
            return Err(StateError::Corrupt(format!(
                "{} is not a checkpoint log of this engine (move it away to start cold)",
                path.display()
            )));
        } else {
            let mut index = HashMap::new();
            let good = scan(&bytes, |key, value, at| {
                index.insert(key.to_vec(), (at, value.len() as u32));
            });
            (index, good)
        };
        if good < bytes.len() as u64 {
            tracing::warn!(
                log = %path.display(),
                torn_bytes = bytes.len() as u64 - good,
                "the checkpoint log ends in a record torn by a crash: cut off, the records before it stand"
            );
            file.set_len(good).map_err(io(&path))?;
            file.seek(SeekFrom::End(0)).map_err(io(&path))?;
        }
        let live = index.values().map(|&(_, n)| n as u64).sum();
        Ok(FileStore {
            _lock: lock,
            dir: dir.to_path_buf(),
            path,
            out: BufWriter::with_capacity(1 << 20, file),
            index,
            len: good,
            live,
        })
    }

    /// The newest record of every key.
    pub fn load(&mut self) -> Result<Vec<Record>, StateError> {
        self.out.flush().map_err(|e| self.io(e))?;
        let file = self.out.get_ref();
        let mut records = Vec::with_capacity(self.index.len());
        for (key, &(at, n)) in &self.index {
            let mut value = vec![0; n as usize];
            file.read_exact_at(&mut value, at).map_err(|e| self.io(e))?;
            records.push(Record {
                key: Record::key_from_bytes(key)?,
                value,
            });
        }
        Ok(records)
    }

    fn io(&self, source: std::io::Error) -> StateError {
        StateError::Io {
            path: self.path.display().to_string(),
            source,
        }
    }

    /// Rewrites the log with the newest record of each key only.
    fn compact(&mut self) -> Result<(), StateError> {
        self.out.flush().map_err(|e| self.io(e))?;
        let fresh = self.dir.join(format!("{LOG_NAME}.new"));
        let io = |source| StateError::Io {
            path: fresh.display().to_string(),
            source,
        };
        let mut out = BufWriter::new(File::create(&fresh).map_err(io)?);
        out.write_all(LOG_MAGIC).map_err(io)?;
        let mut len = LOG_MAGIC.len() as u64;
        let mut index = HashMap::with_capacity(self.index.len());
        let old = self.out.get_ref();
        for (key, &(at, n)) in &self.index {
            let mut value = vec![0; n as usize];
            old.read_exact_at(&mut value, at).map_err(|e| self.io(e))?;
            let at = len + frame_len(key.len(), 0);
            len += write_frame(&mut out, key, &value).map_err(io)?;
            index.insert(key.clone(), (at, n));
        }
        let file = out.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&fresh, &self.path).map_err(io)?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| self.io(e))?;
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| self.io(e))?;
        self.out = BufWriter::with_capacity(1 << 20, file);
        self.index = index;
        self.len = len;
        Ok(())
    }
}

impl Store for FileStore {
    fn put(&mut self, records: Vec<Record>) -> Result<(), StateError> {
        for r in records {
            let key = r.key_bytes();
            let at = self.len + frame_len(key.len(), 0);
            let n = write_frame(&mut self.out, &key, &r.value).map_err(|e| self.io(e))?;
            self.len += n;
            let size = r.value.len() as u32;
            if let Some((_, old)) = self.index.insert(key, (at, size)) {
                self.live -= old as u64;
            }
            self.live += size as u64;
        }
        Ok(())
    }

    fn commit(&mut self) -> Result<(), StateError> {
        self.out.flush().map_err(|e| self.io(e))?;
        self.out.get_ref().sync_data().map_err(|e| self.io(e))?;
        if self.len > COMPACT_MIN && self.len > COMPACT_RATIO * self.live.max(1) {
            self.compact()?;
        }
        Ok(())
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::SeriesKey;
    use crate::pipeline::ShardKey;

    fn record(name: &str, value: &[u8]) -> Record {
        Record {
            key: ShardKey::Series(SeriesKey {
                name: name.into(),
                labels: Vec::new(),
            }),
            value: value.to_vec(),
        }
    }

    fn newest(store: &mut FileStore) -> Vec<(String, Vec<u8>)> {
        let mut all: Vec<_> = store
            .load()
            .unwrap()
            .into_iter()
            .map(|r| (r.key.to_string(), r.value))
            .collect();
        all.sort();
        all
    }

    #[test]
    fn the_newest_record_of_each_key_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = FileStore::open(dir.path()).unwrap();
        store
            .put(vec![record("a", b"1"), record("b", b"2")])
            .unwrap();
        store.put(vec![record("a", b"3")]).unwrap();
        store.commit().unwrap();
        drop(store);
        let mut store = FileStore::open(dir.path()).unwrap();
        assert_eq!(
            newest(&mut store),
            [
                ("series a{}".to_string(), b"3".to_vec()),
                ("series b{}".to_string(), b"2".to_vec())
            ]
        );
    }

    #[test]
    fn a_record_torn_by_a_crash_is_cut_off_and_the_ones_before_it_stand() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = FileStore::open(dir.path()).unwrap();
        store.put(vec![record("a", b"kept")]).unwrap();
        store.put(vec![record("b", b"torn in half")]).unwrap();
        store.commit().unwrap();
        drop(store);
        let path = dir.path().join(LOG_NAME);
        let len = std::fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 5)
            .unwrap();
        let mut store = FileStore::open(dir.path()).unwrap();
        assert_eq!(
            newest(&mut store),
            [("series a{}".to_string(), b"kept".to_vec())]
        );
        // Appending goes on after the last whole record.
        store.put(vec![record("c", b"after")]).unwrap();
        store.commit().unwrap();
        drop(store);
        let mut store = FileStore::open(dir.path()).unwrap();
        assert_eq!(newest(&mut store).len(), 2);
    }

    #[test]
    fn a_flipped_byte_is_caught_by_the_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = FileStore::open(dir.path()).unwrap();
        store
            .put(vec![record("a", b"one"), record("b", b"two")])
            .unwrap();
        store.commit().unwrap();
        drop(store);
        let path = dir.path().join(LOG_NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        std::fs::write(&path, bytes).unwrap();
        let mut store = FileStore::open(dir.path()).unwrap();
        assert_eq!(
            newest(&mut store),
            [("series a{}".to_string(), b"one".to_vec())]
        );
    }

    #[test]
    fn compaction_keeps_only_the_newest_of_each_key() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = FileStore::open(dir.path()).unwrap();
        let big = vec![7u8; 1 << 20];
        for round in 0..8u8 {
            let mut v = big.clone();
            v[0] = round;
            store
                .put(vec![record("a", &v), record("b", &[round])])
                .unwrap();
            store.commit().unwrap();
        }
        let size = std::fs::metadata(dir.path().join(LOG_NAME)).unwrap().len();
        assert!(size < 3 << 20, "not compacted: {size} bytes");
        drop(store);
        let mut store = FileStore::open(dir.path()).unwrap();
        let all = newest(&mut store);
        assert_eq!(all[0].1[0], 7);
        assert_eq!(all[1].1, [7]);
    }

    #[test]
    fn a_state_directory_serves_one_engine_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let first = FileStore::open(dir.path()).unwrap();
        let e = FileStore::open(dir.path()).err().unwrap().to_string();
        assert!(e.contains("in use by another mqwatch"), "{e}");
        drop(first);
        assert!(FileStore::open(dir.path()).is_ok());
    }

    #[test]
    fn a_file_of_something_else_is_refused_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LOG_NAME), b"hello").unwrap();
        let e = FileStore::open(dir.path()).err().unwrap().to_string();
        assert!(e.contains("not a checkpoint log"), "{e}");
        assert_eq!(std::fs::read(dir.path().join(LOG_NAME)).unwrap(), b"hello");
    }
}
