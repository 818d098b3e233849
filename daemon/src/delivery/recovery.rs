//! Crash recovery: the objects of the previous run (from the intent log) that a replayed
//! record may belong to, and the persisted identity of a partition.

use super::{intent, BufferKey};
use std::collections::HashMap;

/// Where a replayed record goes during crash recovery.
pub(super) enum Recovery {
    /// Into a stored object already: skip it.
    Skip,
    /// Into the object with this intent id, rebuilt under the same key.
    Replay(u64),
}

/// Crash recovery state: objects of the previous run the source may replay records of.
#[derive(Default)]
pub(super) struct Recovering {
    pub(super) entries: HashMap<u64, intent::Recovered>,
    pub(super) by_partition: HashMap<String, Vec<u64>>,
    /// Per shard tag, the lowest first and highest last sequence over all entries.
    pub(super) hull: HashMap<u64, (u64, u64)>,
    /// Per shard tag, the highest sequence read in this run.
    pub(super) max_seen: HashMap<u64, u64>,
}

impl Recovering {
    pub(super) fn index(&mut self) {
        self.by_partition.clear();
        self.hull.clear();
        for (id, r) in &self.entries {
            self.by_partition
                .entry(r.intent.partition.clone())
                .or_default()
                .push(*id);
            for &(t, first, last) in &r.intent.ranges {
                let h = self.hull.entry(t).or_insert((first, last));
                *h = (h.0.min(first), h.1.max(last));
            }
        }
    }

    pub(super) fn remove(&mut self, id: u64) -> Option<intent::Recovered> {
        let r = self.entries.remove(&id);
        self.index();
        r
    }

    /// Where the record at `seq` of partition `key` belongs, if it was in an object of the
    /// previous run. Outside the hull of those objects this costs one map update.
    pub(super) fn lookup(&mut self, key: &BufferKey, seq: u64) -> Option<Recovery> {
        if self.entries.is_empty() {
            return None;
        }
        let tag = seq >> 48;
        let m = self.max_seen.entry(tag).or_insert(seq);
        *m = (*m).max(seq);
        let (lo, hi) = *self.hull.get(&tag)?;
        if seq < lo || seq > hi {
            return None;
        }
        let ids = self.by_partition.get(&partition_id(key))?;
        // Ranges of one partition nest or are disjoint: a buffer opened during a replay
        // spans the replayed object's range without holding its records (they went to
        // the replay). So the innermost range that covers `seq` is the object that holds
        // the record — the first one found could be the outer buffer's, and skipping the
        // record as stored there would leave the replay without it.
        let r = ids
            .iter()
            .filter_map(|id| self.entries.get(id))
            .filter(|r| r.intent.covers(seq))
            .min_by_key(|r| r.intent.width(tag))?;
        Some(if r.stored {
            Recovery::Skip
        } else {
            Recovery::Replay(r.intent.id)
        })
    }
}

/// A partition's persisted identity (intent log, object names): canonical JSON of its
/// keys, stable across builds (never `Debug` output).
pub(super) fn partition_id(key: &BufferKey) -> String {
    // Without a shard (objects mixing shards) the id is what it always was.
    match key {
        BufferKey::Data {
            query,
            lambda,
            shard: 0,
        } => serde_json::json!({ "query": query, "lambda": lambda }).to_string(),
        BufferKey::Data {
            query,
            lambda,
            shard,
        } => serde_json::json!({ "query": query, "lambda": lambda, "shard": shard }).to_string(),
        BufferKey::Error(t, 0) => serde_json::json!({ "error": t.as_str() }).to_string(),
        BufferKey::Error(t, shard) => {
            serde_json::json!({ "error": t.as_str(), "shard": shard }).to_string()
        }
    }
}
