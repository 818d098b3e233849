//! The intent log of one pipeline's delivery: which object holds which records.
//!
//! Before an object goes to the sink, a line naming its key, its partition and the
//! sequence range it covers on every shard is appended and synced; after the sink stored
//! it, a `stored` line follows (synced before the acks it releases). After a crash the
//! replayed records are matched against the log (see `Delivery::add`): records of a stored
//! object are skipped — they are durable already — and records of an object that may or
//! may not have reached the sink are gathered into exactly that object again and written
//! under the same key. A replay therefore rewrites the same keys with the same records
//! instead of duplicating them.
//!
//! File: `data_dir/delivery/<pipeline>/intents.jsonl`. Its first line holds a hash of
//! the pipeline's config and the config version used in object names: a changed config
//! bumps the version and discards the old intents (records can no longer be matched to
//! the same partitions). Entries are dropped once their acks are older than
//! [`RETIRE_AFTER`] (the source has written its checkpoint past them by then); the file is
//! rewritten when most of its lines are dead.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long after its acks an entry is kept (checkpoints are written on ack).
pub const RETIRE_AFTER: Duration = Duration::from_secs(30);

/// Errors of the intent log (reading and writing its file).
#[derive(Debug, thiserror::Error)]
#[error("intent log {path}: {source}")]
pub struct IntentError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

/// One object: where its records came from and what it is called.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Intent {
    /// Log-local id.
    pub id: u64,
    /// The partition's identity (stable across runs of the same config).
    pub partition: String,
    /// The object key.
    pub key: String,
    /// Per shard: (shard tag, first sequence, last sequence), sequences as the source set them.
    pub ranges: Vec<(u64, u64, u64)>,
    /// Records in the object.
    pub records: u64,
    /// Why it was flushed (the replayed object is counted the same way).
    pub reason: String,
}

impl Intent {
    /// Whether the record at `seq` falls in one of the ranges.
    pub fn covers(&self, seq: u64) -> bool {
        let tag = seq >> 48;
        self.ranges
            .iter()
            .any(|&(t, first, last)| t == tag && first <= seq && seq <= last)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Line {
    Header { config: String, version: u32 },
    Intent(Intent),
    Stored { stored: u64 },
}

/// An entry found in the log at startup.
#[derive(Debug, Clone)]
pub struct Recovered {
    /// The object.
    pub intent: Intent,
    /// Whether the sink confirmed it before the crash.
    pub stored: bool,
}

struct Entry {
    stored: bool,
    /// Once this ack token is released, the entry's records are behind the checkpoint.
    release_token: Option<u64>,
    released_at: Option<Instant>,
    line: String,
}

/// The open log.
pub struct IntentLog {
    path: PathBuf,
    file: File,
    header: String,
    /// `<config version>` for object names.
    pub version: u32,
    next_id: u64,
    entries: BTreeMap<u64, Entry>,
    lines: usize,
    unsynced: bool,
    released_upto: Option<u64>,
}

impl IntentLog {
    /// Opens (or creates) the log of a pipeline whose config hashes to `config`. Returns
    /// the log and the entries of the previous run that still matter (empty when the
    /// config changed).
    pub fn open(dir: &Path, config: &str) -> Result<(IntentLog, Vec<Recovered>), IntentError> {
        let path = dir.join("intents.jsonl");
        let err = |source| IntentError {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(err)?;
        let mut version = 1;
        let mut same_config = false;
        let mut found: BTreeMap<u64, Recovered> = BTreeMap::new();
        if let Ok(f) = File::open(&path) {
            // A torn last line (crash mid-write) does not parse and is ignored.
            for line in BufReader::new(f).lines() {
                let Ok(line) = line else { break };
                match serde_json::from_str::<Line>(&line) {
                    Ok(Line::Header {
                        config: c,
                        version: v,
                    }) => {
                        same_config = c == config;
                        version = if same_config { v } else { v.saturating_add(1) };
                    }
                    Ok(Line::Intent(i)) if same_config => {
                        found.insert(
                            i.id,
                            Recovered {
                                intent: i,
                                stored: false,
                            },
                        );
                    }
                    Ok(Line::Stored { stored }) if same_config => {
                        if let Some(r) = found.get_mut(&stored) {
                            r.stored = true;
                        }
                    }
                    _ => {}
                }
            }
        }
        let header = serde_json::to_string(&Line::Header {
            config: config.to_string(),
            version,
        })
        .unwrap_or_default();
        let next_id = found.keys().next_back().map_or(1, |k| k + 1);
        let recovered: Vec<Recovered> = found.into_values().collect();
        let entries: BTreeMap<u64, Entry> = recovered
            .iter()
            .map(|r| {
                let line =
                    serde_json::to_string(&Line::Intent(r.intent.clone())).unwrap_or_default();
                let entry = Entry {
                    stored: r.stored,
                    release_token: None,
                    released_at: None,
                    line,
                };
                (r.intent.id, entry)
            })
            .collect();
        let file = write_log(&path, &header, &entries).map_err(err)?;
        let log = IntentLog {
            file,
            lines: 1 + entries.len(),
            path,
            header,
            version,
            next_id,
            entries,
            unsynced: false,
            released_upto: None,
        };
        Ok((log, recovered))
    }

    /// A fresh id for the next object.
    pub fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Records (and syncs) an object about to be submitted; its records are released
    /// with ack `release_token`.
    pub fn intend(&mut self, intent: &Intent, release_token: u64) -> Result<(), IntentError> {
        let line = serde_json::to_string(&Line::Intent(intent.clone())).unwrap_or_default();
        self.append(&line)?;
        self.sync()?;
        self.entries.insert(
            intent.id,
            Entry {
                stored: false,
                release_token: Some(release_token),
                released_at: None,
                line,
            },
        );
        Ok(())
    }

    /// Marks an object stored (synced by [`IntentLog::sync`] before its acks go out).
    pub fn stored(&mut self, id: u64, release_token: u64) -> Result<(), IntentError> {
        if let Some(e) = self.entries.get_mut(&id) {
            e.stored = true;
            e.release_token = Some(release_token);
        }
        self.append(&format!("{{\"stored\":{id}}}"))
    }

    /// A recovered, stored entry whose records the source has read past in batch `token`.
    pub fn passed(&mut self, id: u64, token: u64) {
        if let Some(e) = self.entries.get_mut(&id) {
            e.release_token = Some(token);
        }
    }

    /// Forgets an entry (a replay that gave up: its object is written under a new name).
    pub fn forget(&mut self, id: u64) {
        self.entries.remove(&id);
    }

    /// Every ack token up to `token` has been released.
    pub fn released(&mut self, token: u64) {
        self.released_upto = Some(token);
    }

    /// Makes everything written so far durable.
    pub fn sync(&mut self) -> Result<(), IntentError> {
        if self.unsynced {
            self.file.sync_data().map_err(|source| IntentError {
                path: self.path.clone(),
                source,
            })?;
            self.unsynced = false;
        }
        Ok(())
    }

    /// Drops entries whose acks are older than [`RETIRE_AFTER`] and rewrites the file when
    /// most of its lines are dead. Cheap enough to call every few seconds.
    pub fn maintain(&mut self) -> Result<(), IntentError> {
        let now = Instant::now();
        let upto = self.released_upto;
        self.entries.retain(|_, e| {
            let released =
                e.stored && matches!((e.release_token, upto), (Some(t), Some(u)) if t <= u);
            if released {
                let at = *e.released_at.get_or_insert(now);
                return now.duration_since(at) < RETIRE_AFTER;
            }
            true
        });
        if self.lines > 1024 && self.lines > 4 * (self.entries.len() + 1) {
            self.rewrite().map_err(|source| IntentError {
                path: self.path.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// Live entries (for tests and status).
    pub fn live(&self) -> usize {
        self.entries.len()
    }

    fn append(&mut self, line: &str) -> Result<(), IntentError> {
        let r = self
            .file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.write_all(b"\n"));
        r.map_err(|source| IntentError {
            path: self.path.clone(),
            source,
        })?;
        self.lines += 1;
        self.unsynced = true;
        Ok(())
    }

    fn rewrite(&mut self) -> std::io::Result<()> {
        self.file = write_log(&self.path, &self.header, &self.entries)?;
        self.lines = 1 + self.entries.len();
        self.unsynced = false;
        Ok(())
    }
}

/// Writes the header and the live entries to a temp file, syncs it and renames it over
/// the log (a crash leaves either the old log or the new one); returns the log opened for
/// appending.
fn write_log(path: &Path, header: &str, entries: &BTreeMap<u64, Entry>) -> std::io::Result<File> {
    let tmp = path.with_extension("jsonl.tmp");
    let mut text = String::with_capacity(64 * (entries.len() + 1));
    text.push_str(header);
    text.push('\n');
    for (id, e) in entries {
        text.push_str(&e.line);
        text.push('\n');
        if e.stored {
            text.push_str(&format!("{{\"stored\":{id}}}\n"));
        }
    }
    let mut f = File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_data()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    OpenOptions::new().append(true).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intent(id: u64, partition: &str) -> Intent {
        Intent {
            id,
            partition: partition.into(),
            key: format!("k{id}"),
            ranges: vec![
                (1, (1 << 48) | 5, (1 << 48) | 9),
                (2, (2 << 48) | 3, (2 << 48) | 3),
            ],
            records: 3,
            reason: "size".into(),
        }
    }

    #[test]
    fn entries_survive_a_crash_with_their_stored_marks() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, rec) = IntentLog::open(dir.path(), "h1").unwrap();
        assert!(rec.is_empty());
        assert_eq!(log.version, 1);
        let a = intent(log.next_id(), "a");
        let b = intent(log.next_id(), "b");
        log.intend(&a, 1).unwrap();
        log.intend(&b, 2).unwrap();
        log.stored(a.id, 1).unwrap();
        log.sync().unwrap();
        // A torn line at the end is ignored.
        OpenOptions::new()
            .append(true)
            .open(dir.path().join("intents.jsonl"))
            .unwrap()
            .write_all(b"{\"id\":9,\"parti")
            .unwrap();
        drop(log);
        let (mut log, rec) = IntentLog::open(dir.path(), "h1").unwrap();
        assert_eq!(log.version, 1);
        assert_eq!(rec.len(), 2);
        assert!(rec[0].stored && rec[0].intent == a);
        assert!(!rec[1].stored && rec[1].intent == b);
        assert!(log.next_id() > b.id, "ids are not reused");
        assert!(a.covers((1 << 48) | 7) && !a.covers((2 << 48) | 7) && a.covers((2 << 48) | 3));
    }

    #[test]
    fn a_changed_config_bumps_the_version_and_drops_intents() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = IntentLog::open(dir.path(), "h1").unwrap();
        let a = intent(log.next_id(), "a");
        log.intend(&a, 1).unwrap();
        drop(log);
        let (log, rec) = IntentLog::open(dir.path(), "h2").unwrap();
        assert_eq!((log.version, rec.len()), (2, 0));
        drop(log);
        let (log, _) = IntentLog::open(dir.path(), "h2").unwrap();
        assert_eq!(log.version, 2, "the version is kept while the config is");
    }

    #[test]
    fn released_entries_retire_and_the_file_shrinks() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = IntentLog::open(dir.path(), "h").unwrap();
        for t in 0..2000 {
            let i = intent(log.next_id(), "p");
            log.intend(&i, t).unwrap();
            log.stored(i.id, t).unwrap();
        }
        log.released(1799);
        log.maintain().unwrap();
        assert_eq!(log.live(), 2000, "released, but not for long enough");
        for e in log.entries.values_mut() {
            if e.released_at.is_some() {
                e.released_at = Some(Instant::now() - RETIRE_AFTER);
            }
        }
        log.maintain().unwrap();
        assert_eq!(log.live(), 200);
        drop(log);
        let (_, rec) = IntentLog::open(dir.path(), "h").unwrap();
        assert_eq!(
            rec.len(),
            200,
            "most lines were dead: the file was rewritten"
        );
    }
}
