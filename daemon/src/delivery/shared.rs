//! The intent log of a pipeline whose shards several nodes share (a `stream` source on a
//! stream kept on JetStream, issue #12): the same entries as the local intent log
//! (`intent.rs`: which object holds which records, stored or not), kept per shard in the
//! cluster's lease table beside the shard's lease, so whichever node reads the shard next
//! finds them — a node that takes a shard over rebuilds the objects the last one had not
//! confirmed under the same keys and skips the records of those it had, exactly as a
//! restarted single node does with its own log.
//!
//! Objects hold records of one shard only in this mode (the buffers are keyed by partition
//! *and* shard), so an entry belongs to one shard's value. A node reads a shard's value
//! the first time it meets a record of that shard and from then on writes it with a
//! compare-and-set on the revision it read: every object's entry is in the table before
//! the object goes to the sink. A write refused because another node wrote the value
//! meanwhile means the shard was taken over: the objects it describes must not be
//! uploaded (or acknowledged) by this node, so the pipeline fails with
//! [`SharedError::Fenced`] and restarts from what the table holds. An entry is dropped
//! once the checkpoint in the shard's lease (as the cluster holds it) is past its records:
//! not after a delay, which a checkpoint write held up longer (a server down) would
//! outrun — a takeover would then replay records without their object boundaries and
//! deliver them twice.

use super::intent::{Intent, Recovered};
use crate::stream::lease::IntentTable;
use crate::stream::StorageError;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Largest value written for one shard: under the 1 MiB `max_payload` NATS servers have
/// by default.
const VALUE_LIMIT: usize = 900 << 10;

/// Errors of the shared intent log.
#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    /// The cluster could not be read or written.
    #[error("delivery records in the cluster: {0}")]
    Cluster(#[from] StorageError),
    /// Another node wrote the shard's records since this node read them.
    #[error("another node took {shard} over (it wrote the shard's delivery records since this node read them); the pipeline restarts from what the cluster holds")]
    Fenced {
        /// The shard id.
        shard: String,
    },
    /// The shard's entries would not fit in one value.
    #[error("the delivery records of {shard} would take {bytes} bytes, more than the {VALUE_LIMIT} one value may hold")]
    TooLarge {
        /// The shard id.
        shard: String,
        /// The encoded size.
        bytes: usize,
    },
}

/// One shard's value in the table.
#[derive(Serialize, Deserialize)]
struct Value {
    /// Hash of the pipeline's config: entries of another config cannot be matched.
    config: String,
    /// The config version in object names.
    version: u32,
    /// The node that wrote it (for an operator reading the table).
    node: String,
    entries: Vec<StoredEntry>,
}

#[derive(Serialize, Deserialize)]
struct StoredEntry {
    intent: Intent,
    stored: bool,
}

struct Entry {
    intent: Intent,
    stored: bool,
}

/// What this node knows of one shard's value.
struct ShardLog {
    id: String,
    revision: u64,
    version: u32,
    entries: BTreeMap<u64, Entry>,
    /// Changes that must be in the table before what they describe happens (an object's
    /// upload, its acks).
    must_write: bool,
    /// Changes that may wait (retired entries).
    dirty: bool,
}

/// The shared intent log of one pipeline (see the module's doc).
pub struct SharedIntents {
    table: Arc<IntentTable>,
    config: String,
    next_id: u64,
    /// By shard tag (`sequence >> 48`).
    shards: HashMap<u64, ShardLog>,
    /// Intent id → its shard tag.
    tag_of: HashMap<u64, u64>,
    /// What a lease's checkpoint leaves to read (the source's meaning of it).
    next_offset: fn(&serde_json::Value) -> Option<u64>,
}

/// Whether `checkpoint` (the first position offset a reader of the entry's shard takes)
/// is past every record of `intent` (its ranges are of one shard; sequences are position
/// keys).
fn passed(intent: &Intent, checkpoint: u64) -> bool {
    intent.ranges.iter().all(|&(_, _, last)| {
        crate::record::key_position(last).is_some_and(|p| p.offset < checkpoint)
    })
}

/// The shard id a tag stands for (`position_key`: the shard index plus one).
fn shard_id(tag: u64) -> String {
    crate::stream::shard_id(u32::try_from(tag.saturating_sub(1)).unwrap_or(u32::MAX))
}

impl SharedIntents {
    /// The log of a pipeline whose config hashes to `config`, in `table`; `next_offset`
    /// reads the source's checkpoints ([`crate::stream::lease::SharedSource`]).
    pub fn new(
        table: Arc<IntentTable>,
        config: &str,
        next_offset: fn(&serde_json::Value) -> Option<u64>,
    ) -> SharedIntents {
        SharedIntents {
            table,
            config: config.to_string(),
            next_id: 1,
            shards: HashMap::new(),
            tag_of: HashMap::new(),
            next_offset,
        }
    }

    /// Whether the shard of `tag` was read already.
    pub fn claimed(&self, tag: u64) -> bool {
        self.shards.contains_key(&tag)
    }

    /// Reads the shard of `tag`: the entries the last node to read it left (none when its
    /// config differed), with ids of this log.
    pub fn claim(&mut self, tag: u64) -> Result<Vec<Recovered>, SharedError> {
        if self.shards.contains_key(&tag) {
            return Ok(Vec::new());
        }
        let id = shard_id(tag);
        let found = self.table.read(&id)?;
        let (revision, value) = match &found {
            None => (0, None),
            Some((rev, bytes)) => match serde_json::from_slice::<Value>(bytes) {
                Ok(v) => (*rev, Some(v)),
                Err(e) => {
                    // Data from the network: what it held is unknown, so nothing is
                    // skipped (its records may be delivered twice, never lost).
                    tracing::error!(shard = %id, error = %e, "damaged delivery records in the cluster; starting the shard without them");
                    (*rev, None)
                }
            },
        };
        let (version, entries) = match value {
            Some(v) if v.config == self.config => (v.version, v.entries),
            Some(v) => (v.version.saturating_add(1), Vec::new()),
            // A damaged value: a version no earlier value of this key can have had.
            None if revision > 0 => (u32::try_from(revision).unwrap_or(u32::MAX), Vec::new()),
            None => (1, Vec::new()),
        };
        let mut log = ShardLog {
            id,
            revision,
            version,
            entries: BTreeMap::new(),
            must_write: false,
            dirty: false,
        };
        let mut out = Vec::new();
        for StoredEntry { mut intent, stored } in entries {
            intent.id = self.next_id;
            self.next_id += 1;
            self.tag_of.insert(intent.id, tag);
            out.push(Recovered {
                intent: intent.clone(),
                stored,
            });
            log.entries.insert(intent.id, Entry { intent, stored });
        }
        self.shards.insert(tag, log);
        Ok(out)
    }

    /// The config version for object names of the shard of `tag`.
    pub fn version(&self, tag: u64) -> u32 {
        self.shards.get(&tag).map_or(1, |s| s.version)
    }

    /// A fresh id for the next object.
    pub fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Records an object about to be submitted (its records all of one shard); written
    /// by [`SharedIntents::sync`], which must come before the object goes to the sink. A
    /// shard this node no longer reads (another node wrote its value) is
    /// [`SharedError::Fenced`]: the object must not go out.
    pub fn intend(&mut self, intent: &Intent) -> Result<(), SharedError> {
        let tag = intent.ranges.first().map_or(0, |r| r.0);
        let Some(log) = self.shards.get_mut(&tag) else {
            return Err(SharedError::Fenced {
                shard: shard_id(tag),
            });
        };
        self.tag_of.insert(intent.id, tag);
        log.entries.insert(
            intent.id,
            Entry {
                intent: intent.clone(),
                stored: false,
            },
        );
        log.must_write = true;
        Ok(())
    }

    fn entry(&mut self, id: u64) -> Option<(&mut ShardLog, u64)> {
        let tag = *self.tag_of.get(&id)?;
        Some((self.shards.get_mut(&tag)?, id))
    }

    /// Marks an object stored (written by [`SharedIntents::sync`] before its acks go out).
    pub fn stored(&mut self, id: u64) {
        if let Some((log, id)) = self.entry(id) {
            if let Some(e) = log.entries.get_mut(&id) {
                e.stored = true;
                log.must_write = true;
            }
        }
    }

    /// Forgets an entry (a replay that gave up: its object is written under a new name).
    pub fn forget(&mut self, id: u64) {
        if let Some((log, id)) = self.entry(id) {
            log.entries.remove(&id);
            log.dirty = true;
        }
        self.tag_of.remove(&id);
    }

    /// Writes every changed shard's value. A refused write of changes that must be there
    /// (new objects, stored marks) is [`SharedError::Fenced`]; a refused write of
    /// retirements only means the shard is another node's now: this node forgets it.
    pub fn sync(&mut self) -> Result<(), SharedError> {
        let node = self.table.node().to_string();
        let mut gone = Vec::new();
        for (tag, log) in self.shards.iter_mut() {
            if !log.must_write && !log.dirty {
                continue;
            }
            let encode = |log: &ShardLog| {
                let value = Value {
                    config: self.config.clone(),
                    version: log.version,
                    node: node.clone(),
                    entries: log
                        .entries
                        .values()
                        .map(|e| StoredEntry {
                            intent: e.intent.clone(),
                            stored: e.stored,
                        })
                        .collect(),
                };
                serde_json::to_vec(&value).unwrap_or_default()
            };
            let mut body = encode(log);
            if body.len() > VALUE_LIMIT {
                // Too many objects kept for one shard (acks held back by a long buffer):
                // the oldest stored ones go first. A takeover before the checkpoint passes
                // them would deliver their records again — never lose them.
                let stored: Vec<u64> = log
                    .entries
                    .iter()
                    .filter(|(_, e)| e.stored)
                    .map(|(id, _)| *id)
                    .collect();
                let dropped = stored.len().div_ceil(2);
                for id in stored.into_iter().take(dropped) {
                    log.entries.remove(&id);
                    self.tag_of.remove(&id);
                }
                tracing::warn!(shard = %log.id, dropped, "too many delivery records for one value; dropped the oldest stored ones (a takeover now may deliver their records twice)");
                body = encode(log);
            }
            if body.len() > VALUE_LIMIT {
                return Err(SharedError::TooLarge {
                    shard: log.id.clone(),
                    bytes: body.len(),
                });
            }
            match self.table.write(&log.id, body.into(), log.revision)? {
                Some(rev) => {
                    log.revision = rev;
                    log.must_write = false;
                    log.dirty = false;
                }
                None if log.must_write => {
                    return Err(SharedError::Fenced {
                        shard: log.id.clone(),
                    })
                }
                None => gone.push(*tag),
            }
        }
        self.forget_shards(gone);
        Ok(())
    }

    /// Drops the entries whose records the shard's lease checkpoint has passed — as the
    /// cluster holds it, whichever node wrote it: no node reads those records again, so no
    /// replay needs their object boundaries — and writes the shards that changed. While
    /// checkpoint writes do not reach the cluster (a server down, a lease write refused),
    /// entries stay, however long that lasts. A shard whose lease is not this node's any
    /// more is forgotten here, unwritten: its next reader retires its entries (a write
    /// here would fence that reader off). One lease read per shard with entries; cheap
    /// enough to call every few seconds.
    pub fn maintain(&mut self) -> Result<(), SharedError> {
        let node = self.table.node().to_string();
        let mut gone = Vec::new();
        for (tag, log) in self.shards.iter_mut() {
            if log.entries.is_empty() {
                continue;
            }
            let lease = match self.table.lease(&log.id) {
                Ok(Some(l)) => l,
                Ok(None) => continue,
                Err(e) => {
                    // Retiring can wait for the next call; the other shards' leases are
                    // on the same unreachable table.
                    tracing::warn!(shard = %log.id, error = %e, "cannot read the shard's lease; its delivery records are kept for now");
                    break;
                }
            };
            if lease.owner != node {
                if !log.must_write {
                    gone.push(*tag);
                }
                continue;
            }
            let Some(checkpoint) = lease.checkpoint.as_ref().and_then(self.next_offset) else {
                continue;
            };
            let before = log.entries.len();
            log.entries.retain(|id, e| {
                let keep = !passed(&e.intent, checkpoint);
                if !keep {
                    self.tag_of.remove(id);
                }
                keep
            });
            if log.entries.len() != before {
                log.dirty = true;
            }
        }
        self.forget_shards(gone);
        self.sync()
    }

    /// Forgets what this node knew of the shards of `tags` (another node reads them now).
    fn forget_shards(&mut self, tags: Vec<u64>) {
        for tag in tags {
            if let Some(log) = self.shards.remove(&tag) {
                tracing::info!(shard = %log.id, "another node reads this shard now; its delivery records are theirs");
                for id in log.entries.keys() {
                    self.tag_of.remove(id);
                }
            }
        }
    }

    /// Live entries (for tests and status).
    pub fn live(&self) -> usize {
        self.shards.values().map(|s| s.entries.len()).sum()
    }
}

/// Where a delivery's intents go: its own file, or (shards shared by nodes) the
/// cluster's lease table.
pub(super) enum IntentStore {
    Local(super::IntentLog),
    Shared(SharedIntents),
}

impl IntentStore {
    pub(super) fn next_id(&mut self) -> u64 {
        match self {
            IntentStore::Local(l) => l.next_id(),
            IntentStore::Shared(s) => s.next_id(),
        }
    }

    pub(super) fn intend(
        &mut self,
        intent: &Intent,
        release_token: u64,
    ) -> Result<(), super::DeliveryError> {
        match self {
            IntentStore::Local(l) => l.intend(intent, release_token)?,
            IntentStore::Shared(s) => s.intend(intent)?,
        }
        Ok(())
    }

    pub(super) fn stored(
        &mut self,
        id: u64,
        release_token: u64,
    ) -> Result<(), super::DeliveryError> {
        match self {
            IntentStore::Local(l) => l.stored(id, release_token)?,
            IntentStore::Shared(s) => s.stored(id),
        }
        Ok(())
    }

    pub(super) fn passed(&mut self, id: u64, token: u64) {
        // Shared entries retire by the lease's checkpoint, not by acks.
        if let IntentStore::Local(l) = self {
            l.passed(id, token);
        }
    }

    pub(super) fn forget(&mut self, id: u64) {
        match self {
            IntentStore::Local(l) => l.forget(id),
            IntentStore::Shared(s) => s.forget(id),
        }
    }

    pub(super) fn forget_schema(&mut self, partition: &str) {
        if let IntentStore::Local(l) = self {
            l.forget_schema(partition);
        }
    }

    pub(super) fn released(&mut self, token: u64) {
        if let IntentStore::Local(l) = self {
            l.released(token);
        }
    }

    pub(super) fn sync(&mut self) -> Result<(), super::DeliveryError> {
        match self {
            IntentStore::Local(l) => l.sync()?,
            IntentStore::Shared(s) => s.sync()?,
        }
        Ok(())
    }

    pub(super) fn maintain(&mut self) -> Result<(), super::DeliveryError> {
        match self {
            IntentStore::Local(l) => l.maintain()?,
            IntentStore::Shared(s) => s.maintain()?,
        }
        Ok(())
    }

    /// The config version in object names (shared: per shard, by tag).
    pub(super) fn version(&self, tag: u64) -> u32 {
        match self {
            IntentStore::Local(l) => l.version,
            IntentStore::Shared(s) => s.version(tag),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{position_key, Position};
    use crate::stream::jetstream::{Cluster, JetStreamOptions};
    use crate::stream::lease::Leases;
    use std::collections::{BTreeMap, BTreeSet};

    /// An entry stays in the cluster until the checkpoint in its shard's lease is past its
    /// last record — however long checkpoint writes are held up (here: not written at
    /// all), a node taking the shard over finds it — and goes at the first `maintain`
    /// after the checkpoint passes it.
    #[test]
    fn entries_retire_only_once_the_leases_checkpoint_passes_them() {
        let nats = crate::testing::NatsCluster::start(1);
        let cluster = Cluster::connect(JetStreamOptions {
            servers: nats.urls(),
            replicas: 1,
            ..JetStreamOptions::default()
        })
        .unwrap();
        let shard = crate::stream::shard_id(0);
        let mut leases: Leases = Leases::open(cluster.clone(), "p", "s").unwrap();
        let ch = leases
            .tick(
                std::slice::from_ref(&shard),
                &BTreeMap::new(),
                &BTreeSet::new(),
            )
            .unwrap();
        assert_eq!(ch.acquired.len(), 1);
        let table = Arc::new(IntentTable::open(cluster, "p", "s").unwrap());
        let mut log = SharedIntents::new(table.clone(), "h", |c| c.as_u64());
        let tag = 1;
        assert!(log.claim(tag).unwrap().is_empty());
        let key = |offset| {
            position_key(Position {
                partition: 0,
                offset,
            })
        };
        let intent = Intent {
            id: log.next_id(),
            partition: "x".into(),
            key: "k".into(),
            ranges: vec![(tag, key(10), key(19))],
            records: 10,
            reason: "size".into(),
            schema: None,
            carry: None,
        };
        log.intend(&intent).unwrap();
        log.sync().unwrap();
        log.stored(intent.id);
        log.sync().unwrap();
        let recovered = |table: &Arc<IntentTable>| {
            SharedIntents::new(table.clone(), "h", |c| c.as_u64())
                .claim(tag)
                .unwrap()
                .len()
        };
        // Acknowledged long ago, but no checkpoint written: kept.
        for _ in 0..3 {
            log.maintain().unwrap();
        }
        assert_eq!(log.live(), 1);
        assert_eq!(recovered(&table), 1, "a takeover finds the object");
        // A checkpoint at the object's last record has not passed it.
        leases
            .checkpoint(&BTreeMap::from([(shard.clone(), 19)]))
            .unwrap();
        log.maintain().unwrap();
        assert_eq!(log.live(), 1);
        leases
            .checkpoint(&BTreeMap::from([(shard.clone(), 20)]))
            .unwrap();
        log.maintain().unwrap();
        assert_eq!(log.live(), 0);
        assert_eq!(recovered(&table), 0, "retired in the cluster too");

        // A shard this node gave back is forgotten, not written: the next reader, which
        // may have read the value already, must not be fenced off by a retirement.
        let next = Intent {
            id: log.next_id(),
            ranges: vec![(tag, key(20), key(29))],
            ..intent
        };
        log.intend(&next).unwrap();
        log.stored(next.id);
        log.sync().unwrap();
        leases.release_all(&BTreeMap::from([(shard, 30)]));
        log.maintain().unwrap();
        assert_eq!(log.live(), 0, "forgotten here");
        assert_eq!(recovered(&table), 1, "left for the next reader");
    }
}
