//! A stream's shards over time: which shards exist, which are open, who is whose parent.
//! Resharding (SplitShard, MergeShards, UpdateShardCount) changes only this description:
//! it closes parents and adds children, and the open shards always tile the 128-bit
//! hash-key space exactly once. Pure data — no files, no locks — so the rules can be
//! tested on their own; `Stream` applies a new topology to the shard logs and persists it
//! in `stream.json`.
//!
//! Shard indices are never reused: `next_index` only grows (it is persisted), so a
//! sequence number (which encodes the index) names one shard for the stream's life.

use super::routing::shard_range;
use serde::{Deserialize, Serialize};

/// Most shards (open and closed but still retained) a stream keeps: resharding past it
/// is refused until closed shards expire with their records.
pub const MAX_RETAINED_SHARDS: usize = 4096;

/// When and where a shard was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Closed {
    /// The first shard-local sequence number it never gave: every record is below it.
    pub at_seq: u64,
    /// Closing time, ms since the epoch.
    pub ms: i64,
}

/// One shard, open or closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardDef {
    /// Its index (`shardId-<index>`), unique for the stream's life.
    pub index: u32,
    /// First hash key owned.
    #[serde(with = "decimal")]
    pub start: u128,
    /// Last hash key owned.
    #[serde(with = "decimal")]
    pub end: u128,
    /// The shard it was split from, or the first of the two it was merged from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<u32>,
    /// The second shard of a merge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adjacent_parent: Option<u32>,
    /// Creation time, ms since the epoch.
    pub created_ms: i64,
    /// Set once it is closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed: Option<Closed>,
}

impl ShardDef {
    /// Whether it still takes records.
    pub fn is_open(&self) -> bool {
        self.closed.is_none()
    }
}

/// u128 as a decimal string: JSON numbers that large do not survive every reader.
mod decimal {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        let t = String::deserialize(d)?;
        t.parse().map_err(serde::de::Error::custom)
    }
}

/// Why a resharding was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    /// No shard with this index.
    #[error("shard {0} not found")]
    NotFound(u32),
    /// The shard is already closed.
    #[error("shard {0} is closed")]
    Closed(u32),
    /// A split key outside `(start, end]` of the shard.
    #[error("new starting hash key {key} is not inside shard {index}")]
    KeyOutOfRange {
        /// The shard.
        index: u32,
        /// The key asked for.
        key: u128,
    },
    /// Merge of two shards whose ranges do not touch.
    #[error("shards {0} and {1} are not adjacent")]
    NotAdjacent(u32, u32),
    /// A target shard count of 0.
    #[error("a stream needs at least one shard")]
    NoShards,
    /// More retained shards than [`MAX_RETAINED_SHARDS`].
    #[error("the stream would keep more than {MAX_RETAINED_SHARDS} shards")]
    TooManyShards,
    /// A stored topology that breaks the rules (damaged `stream.json`).
    #[error("inconsistent shard topology: {0}")]
    Inconsistent(String),
}

/// The shards of a stream and the next index to give.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    /// The next index a new shard gets.
    pub next_index: u32,
    /// Every retained shard, by index.
    pub shards: Vec<ShardDef>,
}

/// Gives the closing sequence number of shard `index` (the stream reads its log).
pub type Seal<'a> = &'a mut dyn FnMut(u32) -> u64;

impl Topology {
    /// `n` open shards splitting the key space evenly, as CreateStream makes them.
    pub fn uniform(n: u32, now_ms: i64) -> Topology {
        Topology {
            next_index: n,
            shards: (0..n)
                .map(|i| {
                    let (start, end) = shard_range(i, n);
                    ShardDef {
                        index: i,
                        start,
                        end,
                        parent: None,
                        adjacent_parent: None,
                        created_ms: now_ms,
                        closed: None,
                    }
                })
                .collect(),
        }
    }

    /// Checks a stored topology: indices unique and below `next_index`, open shards tiling
    /// the key space exactly once, ranges well-formed.
    pub fn check(&self) -> Result<(), TopologyError> {
        let bad = |m: String| Err(TopologyError::Inconsistent(m));
        let mut seen = std::collections::BTreeSet::new();
        for s in &self.shards {
            if s.index >= self.next_index || !seen.insert(s.index) {
                return bad(format!(
                    "shard index {} repeated or not below next_index",
                    s.index
                ));
            }
            if s.start > s.end {
                return bad(format!("shard {} has an empty hash-key range", s.index));
            }
        }
        if !self.shards.windows(2).all(|w| w[0].index < w[1].index) {
            return bad("shards not in index order".into());
        }
        let open = self.open();
        if open.is_empty() {
            return bad("no open shard".into());
        }
        let mut next = 0u128;
        for (k, s) in open.iter().enumerate() {
            if s.start != next {
                return bad(format!(
                    "open shards do not tile the key space at shard {}",
                    s.index
                ));
            }
            if k + 1 < open.len() {
                if s.end == u128::MAX {
                    return bad("open shards overlap".into());
                }
                next = s.end + 1;
            } else if s.end != u128::MAX {
                return bad("open shards do not reach the last hash key".into());
            }
        }
        Ok(())
    }

    /// The open shards, by starting hash key.
    pub fn open(&self) -> Vec<&ShardDef> {
        let mut v: Vec<&ShardDef> = self.shards.iter().filter(|s| s.is_open()).collect();
        v.sort_by_key(|s| s.start);
        v
    }

    /// A shard by index.
    pub fn get(&self, index: u32) -> Option<&ShardDef> {
        self.shards
            .binary_search_by_key(&index, |s| s.index)
            .ok()
            .map(|i| &self.shards[i])
    }

    fn get_mut(&mut self, index: u32) -> Option<&mut ShardDef> {
        self.shards
            .binary_search_by_key(&index, |s| s.index)
            .ok()
            .map(|i| &mut self.shards[i])
    }

    /// The shards that have `index` as a parent (adjacent or not), by index.
    pub fn children(&self, index: u32) -> Vec<&ShardDef> {
        self.shards
            .iter()
            .filter(|s| s.parent == Some(index) || s.adjacent_parent == Some(index))
            .collect()
    }

    fn open_shard(&self, index: u32) -> Result<&ShardDef, TopologyError> {
        let s = self.get(index).ok_or(TopologyError::NotFound(index))?;
        if !s.is_open() {
            return Err(TopologyError::Closed(index));
        }
        Ok(s)
    }

    fn add(&mut self, start: u128, end: u128, parents: (u32, Option<u32>), now_ms: i64) -> u32 {
        let index = self.next_index;
        self.next_index += 1;
        self.shards.push(ShardDef {
            index,
            start,
            end,
            parent: Some(parents.0),
            adjacent_parent: parents.1,
            created_ms: now_ms,
            closed: None,
        });
        index
    }

    fn close(&mut self, index: u32, now_ms: i64, seal: Seal<'_>) {
        let at_seq = seal(index);
        if let Some(s) = self.get_mut(index) {
            s.closed = Some(Closed { at_seq, ms: now_ms });
        }
    }

    fn room_for(&self, more: usize) -> Result<(), TopologyError> {
        if self.shards.len() + more > MAX_RETAINED_SHARDS {
            return Err(TopologyError::TooManyShards);
        }
        Ok(())
    }

    /// SplitShard: closes `index`; its children own `[start, key-1]` and `[key, end]`.
    /// Returns the children's indices (lower range first).
    pub fn split(
        &mut self,
        index: u32,
        key: u128,
        now_ms: i64,
        seal: Seal<'_>,
    ) -> Result<(u32, u32), TopologyError> {
        let s = self.open_shard(index)?;
        if key <= s.start || key > s.end {
            return Err(TopologyError::KeyOutOfRange { index, key });
        }
        let (start, end) = (s.start, s.end);
        self.room_for(2)?;
        self.close(index, now_ms, seal);
        let a = self.add(start, key - 1, (index, None), now_ms);
        let b = self.add(key, end, (index, None), now_ms);
        Ok((a, b))
    }

    /// MergeShards: closes `a` and `b`, where `b`'s range starts right after `a`'s (the
    /// direction Kinesis requires); the child owns both ranges, with `a` as its parent and
    /// `b` as its adjacent parent.
    pub fn merge(
        &mut self,
        a: u32,
        b: u32,
        now_ms: i64,
        seal: Seal<'_>,
    ) -> Result<u32, TopologyError> {
        let (sa, sb) = (self.open_shard(a)?, self.open_shard(b)?);
        if sa.end.checked_add(1) != Some(sb.start) {
            return Err(TopologyError::NotAdjacent(a, b));
        }
        let (start, end) = (sa.start, sb.end);
        self.room_for(1)?;
        self.close(a, now_ms, seal);
        self.close(b, now_ms, seal);
        Ok(self.add(start, end, (a, Some(b)), now_ms))
    }

    /// UpdateShardCount with UNIFORM_SCALING: afterwards `n` open shards split the key
    /// space evenly (as CreateStream with `n` would). Reached the way Kinesis reaches it,
    /// by splits and merges, so every new shard has at most two parents and readers can
    /// follow the lineage: first every uniform boundary that is not yet one is split at,
    /// then the shards inside each uniform range are merged left to right.
    pub fn scale_to(&mut self, n: u32, now_ms: i64, seal: Seal<'_>) -> Result<(), TopologyError> {
        if n == 0 {
            return Err(TopologyError::NoShards);
        }
        let mut trial = self.clone();
        trial.scale_steps(n, now_ms, &mut |_| 0)?;
        self.scale_steps(n, now_ms, seal)
    }

    fn scale_steps(&mut self, n: u32, now_ms: i64, seal: Seal<'_>) -> Result<(), TopologyError> {
        for i in 1..n {
            let b = shard_range(i, n).0;
            let holder = self
                .open()
                .into_iter()
                .find(|s| s.start <= b && b <= s.end)
                .map(|s| (s.index, s.start));
            match holder {
                Some((_, start)) if start == b => {}
                Some((index, _)) => {
                    self.split(index, b, now_ms, seal)?;
                }
                None => return Err(TopologyError::Inconsistent("no shard holds a key".into())),
            }
        }
        for i in 0..n {
            let (lo, hi) = shard_range(i, n);
            loop {
                let inside: Vec<u32> = self
                    .open()
                    .into_iter()
                    .filter(|s| s.start >= lo && s.end <= hi)
                    .map(|s| s.index)
                    .collect();
                if inside.len() < 2 {
                    break;
                }
                self.merge(inside[0], inside[1], now_ms, seal)?;
            }
        }
        Ok(())
    }

    /// Forgets a closed shard (its records expired); its children read as parentless.
    pub fn expire(&mut self, index: u32) {
        if self.get(index).is_some_and(|s| !s.is_open()) {
            self.shards.retain(|s| s.index != index);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn route(t: &Topology, h: u128) -> u32 {
        t.open()
            .into_iter()
            .find(|s| s.start <= h && h <= s.end)
            .map(|s| s.index)
            .unwrap()
    }

    #[test]
    fn split_and_merge_as_kinesis_names_them() {
        let mut t = Topology::uniform(2, 0);
        let mid = t.get(0).unwrap().end / 2;
        let (a, b) = t.split(0, mid, 5, &mut |_| 7).unwrap();
        assert_eq!((a, b), (2, 3));
        assert_eq!(t.get(0).unwrap().closed, Some(Closed { at_seq: 7, ms: 5 }));
        assert_eq!(
            (t.get(2).unwrap().start, t.get(2).unwrap().end),
            (0, mid - 1)
        );
        assert_eq!(t.get(3).unwrap().start, mid);
        assert_eq!(t.get(3).unwrap().parent, Some(0));
        assert_eq!(t.split(0, 1, 6, &mut |_| 0), Err(TopologyError::Closed(0)));
        assert_eq!(
            t.split(2, 0, 6, &mut |_| 0),
            Err(TopologyError::KeyOutOfRange { index: 2, key: 0 })
        );
        assert_eq!(
            t.merge(2, 1, 6, &mut |_| 0),
            Err(TopologyError::NotAdjacent(2, 1))
        );
        let c = t.merge(3, 1, 6, &mut |_| 0).unwrap();
        let child = t.get(c).unwrap();
        assert_eq!((child.parent, child.adjacent_parent), (Some(3), Some(1)));
        assert_eq!((child.start, child.end), (mid, u128::MAX));
        t.check().unwrap();
        assert_eq!(t.children(0).len(), 2);
    }

    #[test]
    fn stored_topologies_are_checked() {
        let mut t = Topology::uniform(3, 0);
        t.check().unwrap();
        t.shards[1].closed = Some(Closed { at_seq: 0, ms: 0 });
        assert!(t.check().is_err(), "a hole in the key space");
        let mut t = Topology::uniform(3, 0);
        t.next_index = 2;
        assert!(t.check().is_err(), "an index at or past next_index");
        let back: Topology =
            serde_json::from_str(&serde_json::to_string(&Topology::uniform(2, 1)).unwrap())
                .unwrap();
        assert_eq!(back, Topology::uniform(2, 1));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Split(usize, u128),
        Merge(usize),
        Scale(u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (any::<usize>(), any::<u128>()).prop_map(|(i, k)| Op::Split(i, k)),
            any::<usize>().prop_map(Op::Merge),
            (1u32..40).prop_map(Op::Scale),
        ]
    }

    proptest! {
        /// Whatever resharding happens, the open shards tile the key space, every new
        /// shard's range is the union of its parents' (or a part of its one parent's), and
        /// UpdateShardCount ends with exactly Kinesis's uniform ranges.
        #[test]
        fn resharding_keeps_the_key_space_tiled(n in 1u32..12, ops in proptest::collection::vec(op(), 1..25), probes in proptest::collection::vec(any::<u128>(), 8)) {
            let mut t = Topology::uniform(n, 0);
            for (step, op) in ops.into_iter().enumerate() {
                let now = step as i64;
                let open: Vec<(u32, u128, u128)> = t.open().iter().map(|s| (s.index, s.start, s.end)).collect();
                match op {
                    Op::Split(i, k) => {
                        let (index, start, end) = open[i % open.len()];
                        if end > start {
                            let key = start + 1 + k % (end - start);
                            let (a, b) = t.split(index, key, now, &mut |_| 0).unwrap();
                            prop_assert_eq!((t.get(a).unwrap().start, t.get(b).unwrap().end), (start, end));
                        }
                    }
                    Op::Merge(i) => {
                        if open.len() > 1 {
                            let k = i % (open.len() - 1);
                            let c = t.merge(open[k].0, open[k + 1].0, now, &mut |_| 0).unwrap();
                            let c = t.get(c).unwrap();
                            prop_assert_eq!((c.start, c.end), (open[k].1, open[k + 1].2));
                        }
                    }
                    Op::Scale(m) => {
                        let before: Vec<(u32, u128, u128)> = t.shards.iter().map(|s| (s.index, s.start, s.end)).collect();
                        t.scale_to(m, now, &mut |_| 0).unwrap();
                        let got: Vec<(u128, u128)> = t.open().iter().map(|s| (s.start, s.end)).collect();
                        let want: Vec<(u128, u128)> = (0..m).map(|i| shard_range(i, m)).collect();
                        prop_assert_eq!(got, want);
                        // Every new shard's parents are shards that existed or were made in this step.
                        for s in t.shards.iter().filter(|s| !before.iter().any(|b| b.0 == s.index)) {
                            let p = t.get(s.parent.unwrap()).unwrap();
                            match s.adjacent_parent {
                                // A merge child owns exactly its parents' ranges.
                                Some(a) => prop_assert_eq!((p.start, t.get(a).unwrap().end), (s.start, s.end)),
                                // A split child owns part of its parent's.
                                None => prop_assert!(p.start <= s.start && s.end <= p.end),
                            }
                        }
                    }
                }
                t.check().unwrap();
                for &h in &probes {
                    let i = route(&t, h);
                    let s = t.get(i).unwrap();
                    prop_assert!(s.start <= h && h <= s.end);
                }
            }
        }
    }
}
