//! The shard topology of a stream kept on JetStream, shared by every node serving it
//! (issue #12): one key per stream (`topology.<stream>`) in the cluster's table
//! `<prefix>-streams`, written by compare-and-set on its revision, so one node's resharding
//! becomes every node's.
//!
//! A resharding is two writes. The first claims the key: the topology as it stands plus a
//! *pending* plan (the topology after the resharding, its parents' closing sequences not
//! known yet), the node making it and since when. The node then creates the children,
//! seals the parents ([`super::storage::ShardStorage::seal`]: every node's appends to them
//! are refused from then on, so their ends are exact) and writes the plan with the ends
//! filled in, pending cleared. A node whose append met a sealed parent reads the key,
//! waits while a plan is pending, and routes again over the new topology; every node also
//! looks at the key every second. A plan pending for longer than [`STALE_MS`] (its node
//! died in between) is completed by whichever node meets it — every step is idempotent.

use super::jetstream::{token, Cluster};
use super::lease::{Refused, Table};
use super::storage::StorageError;
use super::topology::Topology;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// A pending plan older than this is completed by any node (its node is presumed dead).
pub const STALE_MS: i64 = 10_000;

/// One stream's value in the table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The topology every node serves.
    pub topology: Topology,
    /// A resharding under way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Pending>,
    /// A stream made through the API (CreateStream on a node with `api_streams =
    /// "jetstream"`): what every node needs to serve it. Absent for streams of the nodes'
    /// config files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<ApiStream>,
}

impl Record {
    /// What it says of the stream made through the API of `generation`, if that one is
    /// there and not deleted (not: deleted, made again, or never one of the API's).
    pub fn live_api(&mut self, generation: u64) -> Option<&mut ApiStream> {
        self.api
            .as_mut()
            .filter(|a| a.generation == generation && !a.deleted)
    }
}

/// A stream made through the API, as every node serves it. Its key stays after
/// DeleteStream as a tombstone (`deleted`), whose `base` the next stream made under the
/// name numbers from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiStream {
    /// The stream's name (keys escape it).
    pub name: String,
    /// How many times a stream was made under this name: names its JetStream streams,
    /// so a node still serving a deleted one cannot write into its successor.
    pub generation: u64,
    /// Every shard numbers its records from here: above every number the streams made
    /// under this name before issued (for a tombstone: where the next one starts).
    pub base: u64,
    /// Above every number its shards that expired issued (their ends leave the
    /// topology with them): part of the tombstone's base.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub issued: u64,
    /// When CreateStream made it (ms since the epoch).
    pub created_ms: i64,
    /// Retention (IncreaseStreamRetentionPeriod and DecreaseStreamRetentionPeriod).
    pub retention_hours: u64,
    /// Tags, consumers, mode, encryption, ...
    #[serde(default)]
    pub settings: super::settings::StreamSettings,
    /// DeleteStream removed it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

/// A resharding claimed and not finished yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The topology after it (closed parents' `at_seq` filled in when they are sealed).
    pub plan: Topology,
    /// The node making it.
    pub node: String,
    /// When it was claimed, ms since the epoch.
    pub since_ms: i64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The topology key of one stream.
pub struct Catalog {
    cluster: Arc<Cluster>,
    table: Table,
    key: String,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog").field("key", &self.key).finish()
    }
}

fn err(what: &str, e: impl std::fmt::Display) -> StorageError {
    StorageError::Cluster(format!("stream topology in the cluster: {what}: {e}"))
}

impl Catalog {
    /// The key of `stream` in `cluster`'s table (created if needed).
    pub fn open(cluster: Arc<Cluster>, stream: &str) -> Result<Catalog, StorageError> {
        let table = Table::open_named(&cluster, "streams", "sluice stream topologies")?;
        Ok(Catalog {
            cluster,
            table,
            key: format!("topology.{}", token(stream)),
        })
    }

    /// The records of every stream made through the API on `cluster` (tombstones too), by
    /// name: what each node serves, looked at every second.
    pub fn api_streams(cluster: &Arc<Cluster>) -> Result<Vec<(u64, Record)>, StorageError> {
        let table = Table::open_named(cluster, "streams", "sluice stream topologies")?;
        let t = table.clone();
        let keys = cluster
            .run(async move { t.keys("topology.").await })?
            .map_err(|e| err("cannot list the streams", e))?;
        let mut out = Vec::new();
        for key in keys {
            let t = table.clone();
            let k = key.clone();
            // One key that cannot be read is skipped (the next look tries it again).
            let (rev, body) = match cluster.run(async move { t.entry(&k).await })? {
                Ok(Some(got)) => got,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(key = %key, error = %e, "cannot read a stream's value in the cluster");
                    continue;
                }
            };
            match serde_json::from_slice::<Record>(&body) {
                // The name comes with the value: it must be the key's (a value naming
                // another stream is damage, not that stream).
                Ok(rec)
                    if rec
                        .api
                        .as_ref()
                        .is_some_and(|a| key == format!("topology.{}", token(&a.name)))
                        && rec.topology.check().is_ok() =>
                {
                    out.push((rev, rec))
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(key = %key, error = %e, "a stream's value in the cluster is damaged; not served")
                }
            }
        }
        Ok(out)
    }

    /// This node's name (in the plans it claims).
    pub fn node(&self) -> &str {
        self.cluster.node()
    }

    /// The value and its revision; `None` before any node wrote one.
    pub fn read(&self) -> Result<Option<(u64, Record)>, StorageError> {
        let (table, key) = (self.table.clone(), self.key.clone());
        let got = self
            .cluster
            .run(async move { table.entry(&key).await })?
            .map_err(|e| err("cannot read", e))?;
        match got {
            None => Ok(None),
            Some((rev, body)) => {
                let rec: Record = serde_json::from_slice(&body)
                    .map_err(|e| err(&format!("the value of {} is damaged", self.key), e))?;
                rec.topology
                    .check()
                    .map_err(|e| err("the stored topology", e))?;
                Ok(Some((rev, rec)))
            }
        }
    }

    /// The value and its revision, after publishing `topology` (no plan pending) if no
    /// node wrote one yet — the first node to serve a stream sets it.
    pub fn read_or_publish(&self, topology: &Topology) -> Result<(u64, Record), StorageError> {
        for _ in 0..5 {
            if let Some(got) = self.read()? {
                return Ok(got);
            }
            let mine = Record {
                topology: topology.clone(),
                pending: None,
                api: None,
            };
            if let Some(rev) = self.write(&mine, 0)? {
                return Ok((rev, mine));
            }
        }
        Err(err("cannot read or publish", "the key kept changing"))
    }

    /// Writes `rec` if the key is still at `revision` (0: no value yet). `None`: another
    /// node wrote it first.
    pub fn write(&self, rec: &Record, revision: u64) -> Result<Option<u64>, StorageError> {
        let body = bytes::Bytes::from(serde_json::to_vec(rec).map_err(|e| err("encoding", e))?);
        let (table, key) = (self.table.clone(), self.key.clone());
        match self
            .cluster
            .run(async move { table.write(&key, body, revision).await })?
        {
            Ok(rev) => Ok(Some(rev)),
            Err(Refused::Conflict) => Ok(None),
            Err(e) => Err(err("cannot write", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::jetstream::tests::node;

    /// Two nodes' writes of one stream's key: the first of two writers naming the same
    /// revision wins, the other learns it lost; a damaged value is an error naming the key,
    /// never a topology.
    #[test]
    fn writes_are_compare_and_set_and_damage_is_refused() {
        let cluster = crate::testing::NatsCluster::start(1);
        let (a, b) = (node(&cluster, 1, "C"), node(&cluster, 1, "C"));
        let ca = cluster.wait_for(|| Catalog::open(a.clone(), "s.1"));
        let cb = Catalog::open(b.clone(), "s.1").unwrap();
        assert!(ca.read().unwrap().is_none());
        let rec = |n| Record {
            topology: Topology::uniform(n, 0),
            pending: None,
            api: None,
        };
        let rev = ca.write(&rec(2), 0).unwrap().expect("the first write");
        assert_eq!(
            cb.write(&rec(3), 0).unwrap(),
            None,
            "a second writer of revision 0 loses"
        );
        assert_eq!(cb.read().unwrap(), Some((rev, rec(2))));
        let rev2 = cb
            .write(&rec(3), rev)
            .unwrap()
            .expect("at the revision read");
        assert_eq!(
            ca.write(&rec(4), rev).unwrap(),
            None,
            "a stale revision loses"
        );
        assert_eq!(ca.read().unwrap(), Some((rev2, rec(3))));
        let (table, key) = (ca.table.clone(), ca.key.clone());
        a.run(async move { table.write(&key, "not json".into(), rev2).await })
            .unwrap()
            .map_err(|e| e.to_string())
            .unwrap();
        let e = cb.read().unwrap_err().to_string();
        assert!(e.contains("topology.s_2E1") && e.contains("damaged"), "{e}");
    }
}
