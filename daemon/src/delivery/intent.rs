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
//!
//! With `schema = "infer"` the log also keeps each partition's inferred schema: an intent
//! records the schema its object started from (a replay starts from it too) and, when the
//! object widened it, the partition's new schema (`carry`). A rewrite keeps the latest
//! schema of every partition as a line of its own, after the intents, so schemas outlive
//! the intents that carried them and survive config changes (they describe the lake, not
//! the config).

use super::parquet::Inferred;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long after its acks an entry is kept: sources write their checkpoint at most
/// [`crate::spec::MAX_CHECKPOINT_INTERVAL`] after an ack, so it has passed the entry's
/// records by then — a replay after a crash never needs an entry this old.
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
    /// `schema = "infer"`: the partition's schema when the object's buffer opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Inferred>,
    /// `schema = "infer"`: the partition's schema after this object, when the object
    /// changed it (new objects of the partition start from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carry: Option<Inferred>,
}

impl Intent {
    /// How many sequence numbers the range of shard `tag` spans (0: none).
    pub fn width(&self, tag: u64) -> u64 {
        self.ranges
            .iter()
            .filter(|r| r.0 == tag)
            .map(|&(_, first, last)| last.saturating_sub(first) + 1)
            .sum()
    }

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
    Header {
        config: String,
        version: u32,
    },
    Intent(Intent),
    Stored {
        stored: u64,
    },
    Schema {
        partition_schema: String,
        schema: Inferred,
    },
}

/// What [`IntentLog::open`] found: the log, the previous run's entries that still matter,
/// and each partition's latest inferred schema.
pub struct Opened {
    /// The open log.
    pub log: IntentLog,
    /// Entries of the previous run (empty when the config changed).
    pub recovered: Vec<Recovered>,
    /// Partition id → its inferred schema (empty unless asked for).
    pub schemas: HashMap<String, Inferred>,
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
    /// Partition id → its latest schema as a `Schema` line (what a rewrite keeps).
    schemas: HashMap<String, String>,
}

impl IntentLog {
    /// Opens (or creates) the log of a pipeline whose config hashes to `config`, with the
    /// entries of the previous run that still matter (none when the config changed) and,
    /// when `schemas` (the pipeline infers Parquet schemas), the partitions' schemas —
    /// else they are dropped.
    pub fn open(dir: &Path, config: &str, schemas: bool) -> Result<Opened, IntentError> {
        let path = dir.join("intents.jsonl");
        let err = |source| IntentError {
            path: path.clone(),
            source,
        };
        sluice_plugin_api::fs::make_dirs_durable(dir).map_err(err)?;
        let mut version = 1;
        let mut same_config = false;
        let mut found: BTreeMap<u64, Recovered> = BTreeMap::new();
        // Later lines win: a rewrite puts the latest schemas after the intents.
        let mut carried: HashMap<String, Inferred> = HashMap::new();
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
                    Ok(Line::Intent(i)) => {
                        if let Some(c) = i.carry.as_ref().filter(|c| c.plausible()) {
                            carried.insert(i.partition.clone(), c.clone());
                        }
                        if !same_config {
                            continue;
                        }
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
                    Ok(Line::Schema {
                        partition_schema,
                        schema,
                    }) if schema.plausible() => {
                        carried.insert(partition_schema, schema);
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
        if !schemas {
            carried.clear();
        }
        let schema_lines: HashMap<String, String> = carried
            .iter()
            .map(|(p, s)| (p.clone(), schema_line(p, s)))
            .collect();
        let file = write_log(&path, &header, &entries, &schema_lines).map_err(err)?;
        let log = IntentLog {
            file,
            lines: 1 + entries.len() + schema_lines.len(),
            schemas: schema_lines,
            path,
            header,
            version,
            next_id,
            entries,
            unsynced: false,
            released_upto: None,
        };
        Ok(Opened {
            log,
            recovered,
            schemas: carried,
        })
    }

    /// A fresh id for the next object.
    pub fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Records an object about to be submitted; its records are released with ack
    /// `release_token`. Not durable until [`IntentLog::sync`], which must come before the
    /// object goes to the sink (one sync for a round of objects).
    pub fn intend(&mut self, intent: &Intent, release_token: u64) -> Result<(), IntentError> {
        let line = serde_json::to_string(&Line::Intent(intent.clone())).unwrap_or_default();
        self.append(&line)?;
        if let Some(c) = &intent.carry {
            self.schemas
                .insert(intent.partition.clone(), schema_line(&intent.partition, c));
        }
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

    /// Forgets a partition's schema (the delivery keeps only the most recently used ones):
    /// the next rewrite drops it.
    pub fn forget_schema(&mut self, partition: &str) {
        self.schemas.remove(partition);
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
        let live = self.entries.len() + self.schemas.len() + 1;
        if self.lines > 1024 && self.lines > 4 * live {
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
        self.file = write_log(&self.path, &self.header, &self.entries, &self.schemas)?;
        self.lines = 1 + self.entries.len() + self.schemas.len();
        self.unsynced = false;
        Ok(())
    }
}

/// A partition's schema as a line of the log.
fn schema_line(partition: &str, schema: &Inferred) -> String {
    serde_json::to_string(&Line::Schema {
        partition_schema: partition.to_string(),
        schema: schema.clone(),
    })
    .unwrap_or_default()
}

/// Writes the header, the live entries and then the partitions' schemas (after the
/// entries: the latest wins) to a temp file, syncs it and renames it over the log (a crash
/// leaves either the old log or the new one); returns the log opened for appending.
fn write_log(
    path: &Path,
    header: &str,
    entries: &BTreeMap<u64, Entry>,
    schemas: &HashMap<String, String>,
) -> std::io::Result<File> {
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
    for line in schemas.values() {
        text.push_str(line);
        text.push('\n');
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

    fn open(dir: &Path, config: &str) -> (IntentLog, Vec<Recovered>) {
        let o = IntentLog::open(dir, config, false).unwrap();
        (o.log, o.recovered)
    }

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
            schema: None,
            carry: None,
        }
    }

    #[test]
    fn entries_survive_a_crash_with_their_stored_marks() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, rec) = open(dir.path(), "h1");
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
        let (mut log, rec) = open(dir.path(), "h1");
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
        let (mut log, _) = open(dir.path(), "h1");
        let a = intent(log.next_id(), "a");
        log.intend(&a, 1).unwrap();
        drop(log);
        let (log, rec) = open(dir.path(), "h2");
        assert_eq!((log.version, rec.len()), (2, 0));
        drop(log);
        let (log, _) = open(dir.path(), "h2");
        assert_eq!(log.version, 2, "the version is kept while the config is");
    }

    fn fields(names: &[&str]) -> Inferred {
        Inferred::Object(
            names
                .iter()
                .map(|n| (n.to_string(), Inferred::Int))
                .collect(),
        )
    }

    /// Each partition's latest schema outlives the intents that carried it (retired and
    /// rewritten away), a config change and a torn line; a damaged schema is not used.
    #[test]
    fn partition_schemas_outlive_their_intents_and_config_changes() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = IntentLog::open(dir.path(), "h1", true).unwrap().log;
        for t in 0..1500u64 {
            let mut i = intent(log.next_id(), if t % 2 == 0 { "p" } else { "q" });
            // `p` widens on every object, `q` only once.
            i.carry = match t {
                _ if t % 2 == 0 => Some(fields(&["a", &format!("f{t}")])),
                1 => Some(fields(&["b"])),
                _ => None,
            };
            i.schema = Some(fields(&["a"]));
            log.intend(&i, t).unwrap();
            log.stored(i.id, t).unwrap();
        }
        log.released(1499);
        log.maintain().unwrap();
        for e in log.entries.values_mut() {
            e.released_at = Some(Instant::now() - RETIRE_AFTER);
        }
        log.maintain().unwrap();
        assert_eq!(log.live(), 0);
        let text = std::fs::read_to_string(dir.path().join("intents.jsonl")).unwrap();
        assert_eq!(
            text.lines().count(),
            3,
            "rewritten: header + two schemas\n{text}"
        );
        // A damaged schema line (a field twice) is ignored, a torn one too.
        OpenOptions::new()
            .append(true)
            .open(dir.path().join("intents.jsonl"))
            .unwrap()
            .write_all(b"{\"partition_schema\":\"q\",\"schema\":{\"Object\":[[\"x\",\"Int\"],[\"x\",\"Text\"]]}}\n{\"partition_schema\":\"q\",\"sch")
            .unwrap();
        drop(log);
        let o = IntentLog::open(dir.path(), "h2", true).unwrap();
        assert_eq!(o.recovered.len(), 0, "the config changed");
        assert_eq!(o.schemas.len(), 2);
        assert_eq!(o.schemas["p"], fields(&["a", "f1498"]), "the latest wins");
        assert_eq!(o.schemas["q"], fields(&["b"]));
        drop(o);
        let o = IntentLog::open(dir.path(), "h2", false).unwrap();
        assert!(o.schemas.is_empty(), "not asked for: dropped");
        drop(o);
        assert!(IntentLog::open(dir.path(), "h2", true)
            .unwrap()
            .schemas
            .is_empty());
    }

    #[test]
    fn released_entries_retire_and_the_file_shrinks() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = open(dir.path(), "h");
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
        let (_, rec) = open(dir.path(), "h");
        assert_eq!(
            rec.len(),
            200,
            "most lines were dead: the file was rewritten"
        );
    }
}
