//! Streams: named sets of shards with Kinesis semantics, each shard a durable
//! [`sluice_shardlog::ShardLog`]. Owns routing (MD5 of the partition key, or an explicit
//! hash key, picks the shard whose 128-bit range holds it), sequence numbers as Kinesis
//! decimal strings, retention, and the on-disk layout:
//! `data_dir/streams/<name>/stream.json` + `data_dir/streams/<name>/shardId-…/*.seg`.
//!
//! Streams come from config (they cannot be deleted or resharded through the API) or from
//! the API's CreateStream (they persist across restarts through `stream.json`).
//!
//! **Resharding** (`topology.rs` decides, this module applies): children's logs are made
//! first; then every open shard's *gate* is taken for writing, which waits for appends in
//! flight, so each closing parent's last sequence number is exact; the new topology is
//! persisted, the parents are marked closed and the new shard set replaces the old one;
//! only then are the gates released. An append that waited on a gate finds its shard
//! closed and is routed again, to a child.

mod catalog;
pub mod jetstream;
pub mod lease;
mod routing;
mod settings;
mod storage;
mod topology;

pub use routing::{
    hash_key, parse_sequence, sequence_string, shard_end_sequence, shard_range,
    shard_start_sequence,
};
pub use settings::{Consumer, Encryption, StreamSettings, MAX_CONSUMERS, MAX_TAGS};
pub use storage::{Appended, ShardStorage, StorageError};
pub use topology::{Closed, ShardDef, Topology, TopologyError, MAX_RETAINED_SHARDS};

use crate::record::now_ms;
use crate::spec::{Fsync, StreamSpec, WriteLimit};
use sluice_shardlog::{Entry, FsSync, FsyncPolicy, Options, ShardLog, StoredRecord};
// (`Entry` and `StoredRecord` are the seam's record types too: `storage` re-exports them.)
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Errors of the stream layer.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("stream {0} not found")]
    NotFound(String),
    #[error("stream {0} already exists")]
    Exists(String),
    /// The folder of a stream removed from the configuration (its records kept) holds
    /// the name.
    #[error("stream {0} was removed from the configuration and its records are still in the data directory")]
    LeftOnDisk(String),
    #[error("stream {0} is defined in the configuration and cannot be deleted through the API")]
    FromConfig(String),
    /// A config stream kept on JetStream whose name a stream made through the API on the
    /// cluster has.
    #[error("stream {0}: a stream of this name was made through the API on the JetStream cluster; give the configured stream another name, or delete that one (DeleteStream)")]
    TakenOnCluster(String),
    /// DeleteStream of a stream with registered consumers, without taking them too.
    #[error("stream {0} has {1} registered consumer(s)")]
    HasConsumers(String, usize),
    #[error("{0}")]
    Log(#[from] sluice_shardlog::Error),
    #[error("{0}")]
    Storage(#[from] StorageError),
    #[error("{0}")]
    Name(#[from] crate::names::NameError),
    /// A resharding the topology refused.
    #[error("{0}")]
    Topology(#[from] TopologyError),
    /// An append reached a shard that a resharding closed meanwhile: route it again.
    #[error("shard {0} is closed")]
    ShardClosed(u32),
    /// Another resharding of the stream is still settling (status UPDATING).
    #[error("stream {0} is being resharded")]
    Updating(String),
    #[error("stream {stream}: changing `{key}` of a running stream needs a restart of sluiced (it is {now}, the file says {wanted}); the running configuration is kept")]
    NeedsRestart {
        stream: String,
        key: &'static str,
        now: String,
        wanted: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Where a stream's shards keep their records.
#[derive(Clone, Default)]
pub enum Backend {
    /// One shard log per shard under the stream's folder.
    #[default]
    Log,
    /// One JetStream stream per shard on the daemon's cluster.
    JetStream(Arc<jetstream::Cluster>),
}

impl Backend {
    /// The `storage` setting it stands for.
    pub fn kind(&self) -> crate::spec::StorageKind {
        match self {
            Backend::Log => crate::spec::StorageKind::Log,
            Backend::JetStream(_) => crate::spec::StorageKind::JetStream,
        }
    }
}

/// Where a stream was defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamOrigin {
    /// A `[streams.NAME]` table.
    Config,
    /// CreateStream.
    Api,
}

/// Persisted per-stream metadata.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct StreamMeta {
    /// Open shards (what a reader of an older `stream.json` understands).
    shards: u32,
    /// Every retained shard and its lineage; absent in files written before resharding,
    /// which read as `shards` uniform shards.
    #[serde(default)]
    topology: Option<Topology>,
    created_ms: i64,
    origin: StreamOrigin,
    retention_hours: u64,
    /// Absent in files written before the settings existed.
    #[serde(default)]
    settings: StreamSettings,
    /// Every shard log of this stream numbers its records from at least here: above every
    /// number a deleted stream issued before (see [`SeqFloor`]). 0 (absent) for streams
    /// made before floors existed or when none was deleted.
    #[serde(default, skip_serializing_if = "is_zero")]
    seq_floor: u64,
    /// Above every number issued by shards that expired (they leave the topology, but
    /// readers' checkpoints may still name them): part of the floor a deletion leaves.
    #[serde(default, skip_serializing_if = "is_zero")]
    expired_issued: u64,
    /// The `shards` of this node's file as last applied (streams on a cluster reshard only
    /// when it changes; 0: not recorded yet).
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    configured_shards: u32,
    /// A stream made through the API on JetStream: the how-manieth under its name (see
    /// [`catalog::ApiStream`]); 0 for every other stream. Never in a file: such a stream
    /// lives in the cluster's table only.
    #[serde(default, skip_serializing_if = "is_zero")]
    generation: u64,
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One shard.
pub struct Shard {
    /// `shardId-000000000000`.
    pub id: String,
    /// Index in the stream (never reused).
    pub index: u32,
    /// First hash key owned.
    pub start: u128,
    /// Last hash key owned.
    pub end: u128,
    /// The shard it was split from, or the first of two merged.
    pub parent: Option<u32>,
    /// The second shard of a merge.
    pub adjacent_parent: Option<u32>,
    /// Creation time, ms.
    pub created_ms: i64,
    /// Where its records live (the shard log; the storage seam).
    pub log: Box<dyn ShardStorage>,
    /// The stream's filesystem sync, shared by its shard logs (see [`append_groups`]).
    fs_sync: Option<Arc<GroupSync>>,
    /// Appends hold it for reading; a resharding closing the shard holds it for writing
    /// and leaves `Some` behind.
    gate: RwLock<Option<Closed>>,
    incoming_records: metrics::Counter,
    incoming_bytes: metrics::Counter,
    /// Delivered position (next shard-local sequence to deliver) of each pipeline reading
    /// the shard, for lag in `/admin/status`. One entry per reading pipeline: bounded by
    /// the pipelines in the config.
    consumers: std::sync::Mutex<BTreeMap<String, u64>>,
    /// Pipelines of this node holding the shard's lease (JetStream streams), for status.
    leased: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

/// The shards of a stream at one moment: replaced whole by a resharding, so a reader
/// holding one sees a consistent set.
pub struct ShardSet {
    /// Every retained shard (open and closed), by index.
    pub all: Vec<Arc<Shard>>,
    /// The open shards, by starting hash key.
    open: Vec<Arc<Shard>>,
    /// The lineage the set was built from.
    topology: Topology,
}

impl ShardSet {
    /// The open shard owning `hash`.
    pub fn route(&self, hash: u128) -> &Arc<Shard> {
        let i = self.open.partition_point(|s| s.end < hash);
        &self.open[i.min(self.open.len() - 1)]
    }

    /// A shard by index.
    pub fn get(&self, index: u32) -> Option<&Arc<Shard>> {
        self.all
            .binary_search_by_key(&index, |s| s.index)
            .ok()
            .map(|i| &self.all[i])
    }

    /// The open shards, by starting hash key.
    pub fn open(&self) -> &[Arc<Shard>] {
        &self.open
    }

    /// The shards made from shard `index` (empty while it is open).
    pub fn children(&self, index: u32) -> Vec<&Arc<Shard>> {
        self.topology
            .children(index)
            .into_iter()
            .filter_map(|d| self.get(d.index))
            .collect()
    }
}

/// A stream.
pub struct Stream {
    /// Name.
    pub name: String,
    /// Config or API.
    pub origin: StreamOrigin,
    /// Creation time, ms.
    pub created_ms: i64,
    /// The current shard set (see [`Stream::shards`]).
    shards: RwLock<Arc<ShardSet>>,
    /// One change of `stream.json` at a time (resharding, settings, retention, expiry,
    /// deletion); refused once `deleted` is set (under it), so that nothing waiting for it
    /// writes the folder back.
    reshard: std::sync::Mutex<()>,
    /// Status is UPDATING until then (ms): a resharding settles, as on Kinesis.
    updating_until_ms: std::sync::atomic::AtomicI64,
    /// Retention.
    pub retention: RwLock<Duration>,
    /// Largest record data accepted.
    pub max_record_size: u64,
    /// Optional per-shard byte cap.
    pub max_bytes: Option<u64>,
    /// Durability policy of the shard logs.
    pub fsync: Fsync,
    /// No shard log of this stream issues a number below it (see [`StreamMeta`]).
    seq_floor: u64,
    /// See [`StreamMeta`]'s field of that name (above 0: made through the API on
    /// JetStream, its settings and its existence kept in the cluster).
    generation: u64,
    /// See [`StreamMeta`]'s field of that name.
    expired_issued: std::sync::atomic::AtomicU64,
    /// Set by DeleteStream (while it holds `reshard`); read without a lock by readers.
    deleted: std::sync::atomic::AtomicBool,
    last_sync_ms: std::sync::atomic::AtomicI64,
    /// The write limit and per-shard token buckets (by shard index); changes apply live.
    limiter: std::sync::Mutex<Option<(WriteLimit, BTreeMap<u32, Bucket>)>>,
    dir: PathBuf,
    /// Tags, monitoring, encryption, mode, policy, consumers (persisted on change).
    settings: RwLock<StreamSettings>,
    /// Where its shards keep their records.
    backend: Backend,
    /// One `syncfs` for many shard logs' appends (shard logs under `fsync = "batch"`).
    fs_sync: Option<Arc<GroupSync>>,
    /// The topology every node serving the stream shares (JetStream streams).
    catalog: Option<catalog::Catalog>,
    /// The `shards` of this node's config as last applied (0: none yet): on a cluster only
    /// a change of it reshards — another node's file may say otherwise, and a node that
    /// starts or reloads must not undo the others' resharding.
    configured_shards: std::sync::atomic::AtomicU32,
}

/// A token bucket holding up to one second of the allowed rate.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    records: f64,
    bytes: f64,
    at_ms: i64,
}

/// Writes `stream.json` in `dir`: temp file, fsync, rename, fsync of the folder, so a
/// crash leaves the old or the new file, never a torn one.
fn write_meta_file(dir: &Path, meta: &StreamMeta) -> Result<(), StreamError> {
    use std::io::Write as _;
    sluice_plugin_api::fs::make_dirs_durable(dir).map_err(|source| StreamError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let path = dir.join("stream.json");
    let tmp = dir.join("stream.json.tmp");
    let text = serde_json::to_vec_pretty(meta).unwrap_or_default();
    std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(&text).and_then(|()| f.sync_data()))
        .and_then(|()| std::fs::rename(&tmp, &path))
        .and_then(|()| std::fs::File::open(dir)?.sync_all())
        .map_err(|source| StreamError::Io { path, source })
}

/// Shard id for an index.
pub fn shard_id(index: u32) -> String {
    format!("shardId-{index:012}")
}

fn policy(f: Fsync) -> FsyncPolicy {
    match f {
        Fsync::Batch => FsyncPolicy::Batch,
        Fsync::None => FsyncPolicy::None,
        Fsync::Interval(d) => FsyncPolicy::Interval(d),
    }
}

/// The filesystem sync of a stream whose shard logs sync per batch; `None` otherwise, or
/// where `syncfs` cannot report errors (each shard then syncs on its own, as always).
fn open_fs_sync(dir: &Path, name: &str, fsync: Fsync, backend: &Backend) -> Option<Arc<GroupSync>> {
    if !matches!((fsync, backend), (Fsync::Batch, Backend::Log)) {
        return None;
    }
    let labels = [("stream", name.to_string())];
    match FsSync::open(dir) {
        Ok(f) => f.map(|fs| {
            Arc::new(GroupSync {
                fs,
                syncs: metrics::counter!("sluice_stream_syncfs_total", &labels),
                failures: metrics::counter!("sluice_stream_syncfs_failures_total", &labels),
            })
        }),
        Err(e) => {
            tracing::warn!(stream = name, error = %e, "no filesystem-wide sync; each shard syncs on its own");
            None
        }
    }
}

/// A stream's [`FsSync`] and its counters.
struct GroupSync {
    fs: FsSync,
    syncs: metrics::Counter,
    failures: metrics::Counter,
}

/// What a stream's shards are opened with.
struct ShardOpts<'a> {
    dir: &'a Path,
    name: &'a str,
    fsync: Fsync,
    floor: u64,
    generation: u64,
    /// Make the storage when it does not exist (JetStream: always for config streams;
    /// for a stream made through the API only by the node making it or its children —
    /// others find it, or find it deleted).
    create: bool,
    backend: &'a Backend,
    max_record_size: u64,
    max_bytes: Option<u64>,
    fs_sync: &'a Option<Arc<GroupSync>>,
}

/// Opens shard `def`'s storage: its log in the stream folder (reporting what recovery
/// found) or its JetStream stream.
fn open_shard(o: &ShardOpts<'_>, def: &ShardDef) -> Result<Shard, StreamError> {
    let id = shard_id(def.index);
    let log: Box<dyn ShardStorage> = match o.backend {
        Backend::Log => Box::new(open_log(o.dir, o.name, &id, o.fsync, o.floor)?),
        Backend::JetStream(c) => {
            let js = c.open_shard(
                o.name,
                o.generation,
                o.create,
                &id,
                usize::try_from(o.max_record_size).unwrap_or(usize::MAX),
                o.max_bytes,
                def.closed.is_some(),
            )?;
            // A stream made through the API numbers from its base (above every number a
            // deleted one of its name issued); config streams always numbered from 0.
            match o.generation {
                0 => Box::new(js),
                _ => Box::new(storage::Based::new(Box::new(js), o.floor)),
            }
        }
    };
    let name = o.name;
    let labels = [("stream", name.to_string()), ("shard", id.clone())];
    // Zeros from the start: dashboards and alerts see 0, not a gap.
    metrics::counter!("sluice_shard_write_throttled_total", &labels).increment(0);
    Ok(Shard {
        incoming_records: metrics::counter!("sluice_shard_incoming_records_total", &labels),
        incoming_bytes: metrics::counter!("sluice_shard_incoming_bytes_total", &labels),
        id,
        index: def.index,
        start: def.start,
        end: def.end,
        parent: def.parent,
        adjacent_parent: def.adjacent_parent,
        created_ms: def.created_ms,
        log,
        fs_sync: o.fs_sync.clone(),
        gate: RwLock::new(def.closed),
        consumers: Default::default(),
        leased: Default::default(),
    })
}

/// Opens shard `id`'s log in the stream folder `dir`, reporting what recovery found.
fn open_log(
    dir: &Path,
    name: &str,
    id: &str,
    fsync: Fsync,
    floor: u64,
) -> Result<ShardLog, StreamError> {
    let id = id.to_string();
    // A new shard's folder is durable before its first record is: its entry in the
    // stream's folder is synced here, not left to the next `stream.json` write.
    let shard_dir = dir.join(&id);
    sluice_plugin_api::fs::make_dirs_durable(&shard_dir).map_err(|source| StreamError::Io {
        path: shard_dir.clone(),
        source,
    })?;
    let (log, report) = ShardLog::open(
        &shard_dir,
        Options {
            fsync: policy(fsync),
            floor,
            ..Options::default()
        },
    )?;
    for d in &report.damage {
        if d.truncated {
            tracing::warn!(stream = name, shard = %id, segment = %d.segment.display(), offset = d.offset, bytes = d.len, "torn tail truncated to the last good record");
            metrics::counter!("sluice_shard_recovered_truncations_total", "stream" => name.to_string(), "shard" => id.clone()).increment(1);
        } else {
            tracing::error!(stream = name, shard = %id, segment = %d.segment.display(), offset = d.offset, bytes = d.len, "corrupt records in the middle of a segment; skipped");
            metrics::counter!("sluice_shard_corrupt_bytes_total", "stream" => name.to_string(), "shard" => id.clone()).increment(d.len);
        }
    }
    if report.mark_damaged {
        tracing::error!(stream = name, shard = %id, skipped = report.seq_skipped, "sequence mark damaged; sequence numbers skip ahead blindly so none is issued twice");
    } else if report.seq_skipped > 0 {
        tracing::info!(stream = name, shard = %id, skipped = report.seq_skipped, "not stopped cleanly; sequence numbers resume past every number that may have been issued");
    }
    Ok(log)
}

/// Builds the shard set of `topology`, reusing the shards of `old` that are still there.
fn shard_set(
    topology: Topology,
    mut make: impl FnMut(&ShardDef) -> Result<Arc<Shard>, StreamError>,
) -> Result<ShardSet, StreamError> {
    let all = topology
        .shards
        .iter()
        .map(&mut make)
        .collect::<Result<Vec<_>, _>>()?;
    let open_idx: std::collections::HashSet<u32> =
        topology.open().iter().map(|d| d.index).collect();
    let mut open: Vec<Arc<Shard>> = all
        .iter()
        .filter(|s| open_idx.contains(&s.index))
        .cloned()
        .collect();
    open.sort_by_key(|s| s.start);
    Ok(ShardSet {
        all,
        open,
        topology,
    })
}

/// The key of a stream on the cluster as the node serving it must find it: for a stream of
/// the config files (generation 0), the cluster's topology — `topology` published if no
/// node wrote one yet — unless a stream made through the API has the name; for a stream
/// made through the API, its own generation, not deleted (else [`StreamError::NotFound`]:
/// deleted, or made again, by another node).
fn shared_record(
    cat: &catalog::Catalog,
    generation: u64,
    name: &str,
    topology: &Topology,
) -> Result<(u64, catalog::Record), StreamError> {
    if generation == 0 {
        let (rev, rec) = cat.read_or_publish(topology)?;
        if rec.api.is_some() {
            return Err(StreamError::TakenOnCluster(name.to_string()));
        }
        return Ok((rev, rec));
    }
    match cat.read()? {
        Some((rev, mut rec)) => match rec.live_api(generation) {
            Some(_) => Ok((rev, rec)),
            None => Err(StreamError::NotFound(name.to_string())),
        },
        None => Err(StreamError::NotFound(name.to_string())),
    }
}

/// How long a resharded stream reports UPDATING (and refuses the next resharding).
pub const UPDATING_MS: i64 = 500;

/// How long an append that met a shard another node sealed waits for that node's
/// resharding to be written (it takes a few round trips to the cluster).
const PENDING_WAIT: Duration = Duration::from_secs(3);

/// The gates of a shard set's open shards, held for writing.
type Gates<'a> = Vec<(u32, std::sync::RwLockWriteGuard<'a, Option<Closed>>)>;

impl Stream {
    fn open(
        dir: PathBuf,
        name: &str,
        meta: &StreamMeta,
        fsync: Fsync,
        max_record_size: u64,
        max_bytes: Option<u64>,
        backend: Backend,
    ) -> Result<Stream, StreamError> {
        let mut topology = match &meta.topology {
            Some(t) => {
                t.check()?;
                t.clone()
            }
            None => Topology::uniform(meta.shards.max(1), meta.created_ms),
        };
        // On a cluster the nodes' shared topology wins over this node's file (another node
        // may have resharded meanwhile); the first node to open the stream publishes its own.
        let catalog = match &backend {
            Backend::JetStream(c) => {
                let cat = catalog::Catalog::open(Arc::clone(c), name)?;
                // (A plan left pending is taken up by the first `sync_topology`.)
                let (_, rec) = shared_record(&cat, meta.generation, name, &topology)?;
                topology = rec.topology;
                Some(cat)
            }
            Backend::Log => None,
        };
        let fs_sync = open_fs_sync(&dir, name, fsync, &backend);
        let opts = ShardOpts {
            dir: &dir,
            name,
            fsync,
            floor: meta.seq_floor,
            generation: meta.generation,
            create: meta.generation == 0,
            backend: &backend,
            max_record_size,
            max_bytes,
            fs_sync: &fs_sync,
        };
        let set = shard_set(topology, |d| Ok(Arc::new(open_shard(&opts, d)?)))?;
        Ok(Stream {
            name: name.to_string(),
            origin: meta.origin,
            created_ms: meta.created_ms,
            shards: RwLock::new(Arc::new(set)),
            reshard: std::sync::Mutex::new(()),
            updating_until_ms: std::sync::atomic::AtomicI64::new(0),
            retention: RwLock::new(Duration::from_secs(meta.retention_hours * 3600)),
            max_record_size,
            max_bytes,
            limiter: std::sync::Mutex::new(None),
            fsync,
            last_sync_ms: std::sync::atomic::AtomicI64::new(now_ms()),
            dir,
            settings: RwLock::new(meta.settings.clone()),
            seq_floor: meta.seq_floor,
            generation: meta.generation,
            expired_issued: std::sync::atomic::AtomicU64::new(meta.expired_issued),
            deleted: std::sync::atomic::AtomicBool::new(false),
            backend,
            fs_sync,
            catalog,
            configured_shards: std::sync::atomic::AtomicU32::new(meta.configured_shards),
        })
    }

    /// The JetStream cluster its shards live on (`storage = "jetstream"`).
    pub fn cluster(&self) -> Option<Arc<jetstream::Cluster>> {
        match &self.backend {
            Backend::JetStream(c) => Some(Arc::clone(c)),
            Backend::Log => None,
        }
    }

    /// Whether DeleteStream removed it: readers holding it must look the name up again
    /// (a stream made under the same name is another stream).
    pub fn is_deleted(&self) -> bool {
        self.deleted.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The current shard set (a resharding replaces it; hold it for one consistent view).
    pub fn shards(&self) -> Arc<ShardSet> {
        match self.shards.read() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// `UPDATING` for a moment after a resharding, else `ACTIVE`.
    pub fn status(&self) -> &'static str {
        if now_ms()
            < self
                .updating_until_ms
                .load(std::sync::atomic::Ordering::Relaxed)
        {
            "UPDATING"
        } else {
            "ACTIVE"
        }
    }

    /// SplitShard: returns the children's indices.
    pub fn split_shard(&self, index: u32, key: u128) -> Result<(u32, u32), StreamError> {
        let mut out = (0, 0);
        self.reshard(true, |t, now, seal| {
            out = t.split(index, key, now, seal)?;
            Ok(())
        })?;
        Ok(out)
    }

    /// MergeShards: returns the child's index.
    pub fn merge_shards(&self, a: u32, b: u32) -> Result<u32, StreamError> {
        let mut out = 0;
        self.reshard(true, |t, now, seal| {
            out = t.merge(a, b, now, seal)?;
            Ok(())
        })?;
        Ok(out)
    }

    /// UpdateShardCount (UNIFORM_SCALING). `settle` makes the stream report UPDATING for
    /// a moment and refuse another resharding meanwhile, as the API does; a config reload
    /// does not wait.
    pub fn scale_to(&self, n: u32, settle: bool) -> Result<(), StreamError> {
        if self.shards().open.len() == n as usize
            && self
                .shards()
                .open
                .iter()
                .enumerate()
                .all(|(i, s)| (s.start, s.end) == shard_range(i as u32, n))
        {
            return Ok(());
        }
        self.reshard(settle, |t, now, seal| Ok(t.scale_to(n, now, seal)?))
    }

    /// The `stream.json` lock; refused once the stream was deleted.
    fn lock_meta(&self) -> Result<std::sync::MutexGuard<'_, ()>, StreamError> {
        let g = self
            .reshard
            .lock()
            .map_err(|_| StreamError::Updating(self.name.clone()))?;
        if self.is_deleted() {
            return Err(StreamError::NotFound(self.name.clone()));
        }
        Ok(g)
    }

    /// Applies a resharding (see the module doc for the order of steps; on a cluster,
    /// `catalog.rs`'s).
    fn reshard(
        &self,
        settle: bool,
        mut op: impl FnMut(&mut Topology, i64, topology::Seal<'_>) -> Result<(), StreamError>,
    ) -> Result<(), StreamError> {
        use std::sync::atomic::Ordering;
        let _one = self.lock_meta()?;
        let now = now_ms();
        if settle && now < self.updating_until_ms.load(Ordering::Relaxed) {
            return Err(StreamError::Updating(self.name.clone()));
        }
        match &self.catalog {
            Some(cat) => {
                // Planned on the topology every node serves: another node's resharding first.
                let (rev, api) = self.sync_locked(cat, true)?;
                let old = self.shards();
                let mut plan = old.topology.clone();
                op(&mut plan, now, &mut |_| 0)?;
                if plan == old.topology {
                    // Another node made this resharding already.
                    return Ok(());
                }
                let claim = catalog::Record {
                    topology: old.topology.clone(),
                    pending: Some(catalog::Pending {
                        plan: plan.clone(),
                        node: cat.node().to_string(),
                        since_ms: now,
                    }),
                    api: api.clone(),
                };
                let Some(rev) = cat.write(&claim, rev)? else {
                    return Err(StreamError::Updating(self.name.clone()));
                };
                self.complete(cat, rev, &plan, api)?;
            }
            None => {
                let old = self.shards();
                // A dry run names the new shards, whose logs are made before any append
                // waits.
                let mut plan = old.topology.clone();
                op(&mut plan, now, &mut |_| 0)?;
                let made = self.open_missing(&old, &plan, true, true)?;
                let gates = self.lock_gates(&old)?;
                let mut next = old.topology.clone();
                op(&mut next, now, &mut |i| {
                    old.get(i).map_or(0, |s| s.log.next_seq())
                })?;
                self.install(&old, next, &made, gates)?;
            }
        }
        if settle {
            self.updating_until_ms
                .store(now + UPDATING_MS, Ordering::Relaxed);
        }
        metrics::counter!("sluice_stream_reshards_total", "stream" => self.name.clone())
            .increment(1);
        tracing::info!(stream = %self.name, open_shards = self.shards().open.len(), "resharded");
        Ok(())
    }

    /// Opens the shards of `next` that `old` lacks (`fresh`: open whatever `next` says, as
    /// the shard log of a local resharding is made before its gate closes it).
    fn open_missing(
        &self,
        old: &ShardSet,
        next: &Topology,
        fresh: bool,
        create: bool,
    ) -> Result<BTreeMap<u32, Arc<Shard>>, StreamError> {
        let mut made = BTreeMap::new();
        for d in next.shards.iter().filter(|d| old.get(d.index).is_none()) {
            let mut def = d.clone();
            if fresh {
                def.closed = None;
            }
            made.insert(
                d.index,
                Arc::new(open_shard(
                    &ShardOpts {
                        dir: &self.dir,
                        name: &self.name,
                        fsync: self.fsync,
                        floor: self.seq_floor,
                        generation: self.generation,
                        create,
                        backend: &self.backend,
                        max_record_size: self.max_record_size,
                        max_bytes: self.max_bytes,
                        fs_sync: &self.fs_sync,
                    },
                    &def,
                )?),
            );
        }
        Ok(made)
    }

    /// The gates of every open shard of `old`, in index order (appends hold one at a time):
    /// held, no append is between numbering and the gate's check.
    fn lock_gates<'a>(&self, old: &'a ShardSet) -> Result<Gates<'a>, StreamError> {
        let mut gates = Vec::new();
        for s in &old.open {
            gates.push((
                s.index,
                s.gate
                    .write()
                    .map_err(|_| StreamError::Updating(self.name.clone()))?,
            ));
        }
        Ok(gates)
    }

    /// Makes `next` the stream's topology: `stream.json`, the gates of the shards it
    /// closes, and the shard set (the shards of `old` and `made`; those of `old` that
    /// `next` no longer has are retired — closed shards another node expired).
    fn install(
        &self,
        old: &ShardSet,
        next: Topology,
        made: &BTreeMap<u32, Arc<Shard>>,
        mut gates: Gates<'_>,
    ) -> Result<(), StreamError> {
        let settings = self.settings();
        self.save_meta_with(&settings, self.retention_hours(), &next)?;
        for (index, g) in gates.iter_mut() {
            if let Some(d) = next.get(*index) {
                **g = d.closed;
            }
        }
        // Shards made and closed within this step (UpdateShardCount's intermediates).
        for (index, s) in made {
            if let (Some(d), Ok(mut g)) = (next.get(*index), s.gate.write()) {
                *g = d.closed;
            }
        }
        let gone: Vec<Arc<Shard>> = old
            .all
            .iter()
            .filter(|s| next.get(s.index).is_none())
            .cloned()
            .collect();
        let set = shard_set(next, |d| {
            old.get(d.index)
                .or_else(|| made.get(&d.index))
                .cloned()
                .ok_or(StreamError::Topology(TopologyError::NotFound(d.index)))
        })?;
        match self.shards.write() {
            Ok(mut s) => *s = Arc::new(set),
            Err(p) => *p.into_inner() = Arc::new(set),
        }
        drop(gates);
        for sh in gone {
            self.expired_issued
                .fetch_max(sh.log.next_seq(), std::sync::atomic::Ordering::AcqRel);
            sh.log.retire();
        }
        Ok(())
    }

    /// Finishes the resharding `plan` claimed at revision `rev` of the stream's key (this
    /// node's, or one another node left pending): children opened, parents sealed — their
    /// ends exact for every node — and the plan with those ends written as the topology.
    fn complete(
        &self,
        cat: &catalog::Catalog,
        rev: u64,
        plan: &Topology,
        api: Option<catalog::ApiStream>,
    ) -> Result<(), StreamError> {
        let old = self.shards();
        let made = self.open_missing(&old, plan, false, true)?;
        let gates = self.lock_gates(&old)?;
        let mut next = plan.clone();
        for d in &mut next.shards {
            let was_open = old.topology.get(d.index).is_some_and(|o| o.is_open());
            if let (Some(c), true, Some(sh)) = (d.closed.as_mut(), was_open, old.get(d.index)) {
                c.at_seq = sh.log.seal()?;
            }
        }
        // The crash test's place: parents sealed, the new topology not written yet.
        sluice_plugin_api::failpoint("reshard-sealed");
        let mut done = catalog::Record {
            topology: next.clone(),
            pending: None,
            api,
        };
        let mut rev = rev;
        for _ in 0..8 {
            if cat.write(&done, rev)?.is_some() {
                return self.install(&old, next, &made, gates);
            }
            // Refused: another node completed it meanwhile (the same ends: the parents
            // are sealed; the next look at the key takes theirs) — or changed the
            // stream's settings (made through the API) while the plan is still pending:
            // written again over those, keeping them.
            match cat.read()? {
                Some((r, rec)) if rec.pending.as_ref().is_some_and(|p| p.plan == *plan) => {
                    rev = r;
                    done.api = rec.api;
                }
                _ => break,
            }
        }
        Err(StreamError::Updating(self.name.clone()))
    }

    /// Records `n` as the `shards` of this node's file last applied (in `stream.json`).
    fn record_configured_shards(&self, n: u32) -> Result<(), StreamError> {
        let _one = self.lock_meta()?;
        self.configured_shards
            .store(n, std::sync::atomic::Ordering::Release);
        self.save_meta_with(
            &self.settings(),
            self.retention_hours(),
            &self.shards().topology,
        )
    }

    /// Brings this node's topology to the one the cluster holds for the stream (JetStream
    /// streams; nothing for others): another node's resharding or expiry is applied here,
    /// a plan left pending too long is completed. With `wait`, a plan being carried out is
    /// waited for (at most [`PENDING_WAIT`]); without, it is left for the next look.
    pub fn sync_topology(&self, wait: bool) -> Result<(), StreamError> {
        let Some(cat) = &self.catalog else {
            return Ok(());
        };
        // Waited for without the meta lock: appends that met a sealed parent at once
        // each look every 50 ms, instead of queueing for the lock 3 s apiece.
        let deadline = std::time::Instant::now() + PENDING_WAIT;
        loop {
            let looked = {
                let _one = self.lock_meta()?;
                self.sync_locked(cat, false)
            };
            match looked {
                Err(StreamError::Updating(_)) if wait && std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                r => return r.map(|_| ()),
            }
        }
    }

    /// [`Stream::sync_topology`] under the meta lock; returns the key's revision and what
    /// it says of a stream made through the API (written back with every change). Such a
    /// stream deleted (or made again) in the cluster is [`StreamError::NotFound`] here;
    /// its settings changed on another node are taken.
    fn sync_locked(
        &self,
        cat: &catalog::Catalog,
        wait: bool,
    ) -> Result<(u64, Option<catalog::ApiStream>), StreamError> {
        let deadline = std::time::Instant::now() + PENDING_WAIT;
        loop {
            // (No value: the table was emptied; this node's topology, then.)
            let (rev, rec) =
                shared_record(cat, self.generation, &self.name, &self.shards().topology)?;
            if let Some(a) = &rec.api {
                self.take_shared_settings(a);
            }
            if rec.topology != self.shards().topology {
                let old = self.shards();
                // The node that resharded made the children's storage; one missing now
                // was deleted with its stream (made through the API) and stays so.
                let made = self.open_missing(&old, &rec.topology, false, self.generation == 0)?;
                let gates = self.lock_gates(&old)?;
                self.install(&old, rec.topology.clone(), &made, gates)?;
                tracing::info!(stream = %self.name, open_shards = self.shards().open.len(), "took the cluster's shard topology");
            }
            match rec.pending {
                None => return Ok((rev, rec.api)),
                Some(p) if now_ms() - p.since_ms > catalog::STALE_MS => {
                    tracing::warn!(stream = %self.name, node = %p.node, "completing a resharding another node left unfinished");
                    // Done: read the key again. Refused (another node finished it first):
                    // the next look takes theirs.
                    self.complete(cat, rev, &p.plan, rec.api)?;
                    continue;
                }
                Some(_) if wait && std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Some(_) => return Err(StreamError::Updating(self.name.clone())),
            }
        }
    }

    /// Appends records routed by the MD5 of their partition key, as PutRecords does
    /// (records without a key are routed by their bytes and stored with key `-`), each
    /// shard's group in one durable append. A shard closed by a resharding meanwhile
    /// refuses: its records go to the children on the next round. A shard that fails
    /// fails only its own records (those not stored): the error names them, so a retry
    /// writes nothing twice.
    pub fn append_routed(&self, records: &[Entry<'_>]) -> Result<(), NotStored> {
        let mut pending: Vec<(usize, u128, Entry<'_>)> = records
            .iter()
            .enumerate()
            .map(|(i, e)| {
                if e.key.is_empty() {
                    (i, hash_key(e.data), Entry { key: b"-", ..*e })
                } else {
                    (i, hash_key(e.key), *e)
                }
            })
            .collect();
        let mut failed: Vec<usize> = Vec::new();
        let mut first_error: Option<StreamError> = None;
        let mut sealed = false;
        for _round in 0..8 {
            if pending.is_empty() {
                break;
            }
            if self.is_deleted() {
                first_error.get_or_insert(StreamError::NotFound(self.name.clone()));
                break;
            }
            // A shard closed by another node: its resharding is read before routing again.
            if std::mem::take(&mut sealed) {
                if let Err(e) = self.sync_topology(true) {
                    first_error.get_or_insert(e);
                    break;
                }
            }
            let set = self.shards();
            let mut groups: BTreeMap<u32, Vec<(usize, u128, Entry<'_>)>> = BTreeMap::new();
            for p in pending.drain(..) {
                groups.entry(set.route(p.1).index).or_default().push(p);
            }
            let mut present = Vec::new();
            for (i, g) in groups {
                match set.get(i) {
                    Some(sh) => {
                        let entries: Vec<Entry<'_>> = g.iter().map(|p| p.2).collect();
                        present.push((sh.clone(), entries, g));
                    }
                    None => pending.extend(g),
                }
            }
            let calls: Vec<(&Shard, &[Entry<'_>])> = present
                .iter()
                .map(|(sh, entries, _)| (&**sh, entries.as_slice()))
                .collect();
            let results = append_groups(&calls);
            for ((_, _, g), r) in present.into_iter().zip(results) {
                let rest = g.into_iter().skip(r.seqs.len());
                match r.error {
                    None => {}
                    Some(StreamError::ShardClosed(_)) => {
                        sealed = true;
                        pending.extend(rest);
                    }
                    // The other groups' records are stored all the same: only these failed.
                    Some(e) => {
                        failed.extend(rest.map(|p| p.0));
                        first_error.get_or_insert(e);
                    }
                }
            }
        }
        if !pending.is_empty() {
            failed.extend(pending.iter().map(|p| p.0));
            first_error.get_or_insert(StreamError::Updating(self.name.clone()));
        }
        match first_error {
            None => Ok(()),
            Some(error) => {
                failed.sort_unstable();
                Err(NotStored {
                    failed,
                    error: Box::new(error),
                })
            }
        }
    }

    /// Records appended but not yet delivered by `consumer`, over every shard.
    pub fn backlog(&self, consumer: &str) -> u64 {
        self.shards()
            .all
            .iter()
            .map(|sh| {
                let (first, next) = (sh.log.first_seq(), sh.log.next_seq());
                let at = sh
                    .consumers
                    .lock()
                    .ok()
                    .and_then(|c| c.get(consumer).copied())
                    .unwrap_or(first);
                next.saturating_sub(at.max(first))
            })
            .sum()
    }

    /// The largest record (data and partition key) a put may carry: UpdateMaxRecordSize's,
    /// else the configured `max_record_size`.
    pub fn max_record_bytes(&self) -> u64 {
        self.with_settings(|s| s.max_record_kib)
            .map_or(self.max_record_size, |k| u64::from(k) * 1024)
    }

    /// Reads the settings in place (no copy: PutRecord reads the encryption type).
    pub fn with_settings<R>(&self, f: impl FnOnce(&StreamSettings) -> R) -> R {
        match self.settings.read() {
            Ok(s) => f(&s),
            Err(_) => f(&StreamSettings::default()),
        }
    }

    /// The API-managed settings, as they stand (a copy).
    pub fn settings(&self) -> StreamSettings {
        self.settings.read().map(|s| s.clone()).unwrap_or_default()
    }

    /// Changes the settings through `f`, then persists them; `f`'s error (a refusal)
    /// changes nothing. One change at a time per stream. A stream made through the API on
    /// JetStream keeps them in the cluster: `f` applies to the cluster's copy (another
    /// node may have changed it a moment ago), written by compare-and-set — `f` runs again
    /// on the newer copy when another node wrote in between.
    pub fn update_settings<E>(
        &self,
        mut f: impl FnMut(&mut StreamSettings) -> Result<(), E>,
    ) -> Result<Result<(), E>, StreamError> {
        // Lock order everywhere: the resharding lock, then the settings.
        let _one = self.lock_meta()?;
        if self.generation > 0 {
            let mut refused = None;
            self.write_shared(|a| {
                let mut next = a.settings.clone();
                match f(&mut next) {
                    Ok(()) => {
                        a.settings = next;
                        refused = None;
                    }
                    Err(e) => refused = Some(e),
                }
            })?;
            return Ok(refused.map_or(Ok(()), Err));
        }
        let mut guard = self
            .settings
            .write()
            .map_err(|_| StreamError::NotFound(self.name.clone()))?;
        let mut next = guard.clone();
        if let Err(e) = f(&mut next) {
            return Ok(Err(e));
        }
        if next != *guard {
            self.save_meta(&next, self.retention_hours())?;
            *guard = next;
        }
        Ok(Ok(()))
    }

    /// Changes the retention period to what `f` makes of the current one (an API
    /// stream's; a config stream's comes from its file) and persists it; the next upkeep
    /// trims by it. `f`'s error (a refusal) changes nothing. On a stream made through the
    /// API on the cluster, `f` sees the cluster's current period (another node may have
    /// changed it a moment ago).
    pub fn update_retention<E>(
        &self,
        mut f: impl FnMut(u64) -> Result<u64, E>,
    ) -> Result<Result<(), E>, StreamError> {
        let _one = self.lock_meta()?;
        if self.generation > 0 {
            let mut refused = None;
            self.write_shared(|a| match f(a.retention_hours) {
                Ok(h) => {
                    a.retention_hours = h;
                    refused = None;
                }
                Err(e) => refused = Some(e),
            })?;
            return Ok(refused.map_or(Ok(()), Err));
        }
        let hours = match f(self.retention_hours()) {
            Ok(h) => h,
            Err(e) => return Ok(Err(e)),
        };
        let settings = self.settings();
        self.save_meta(&settings, hours)?;
        if let Ok(mut r) = self.retention.write() {
            *r = Duration::from_secs(hours * 3600);
        }
        Ok(Ok(()))
    }

    fn save_meta(
        &self,
        settings: &StreamSettings,
        retention_hours: u64,
    ) -> Result<(), StreamError> {
        // Callers hold the resharding lock: a resharding persisting meanwhile is not undone.
        self.save_meta_with(settings, retention_hours, &self.shards().topology)
    }

    /// Changes what the cluster keeps of a stream made through the API (its settings and
    /// retention) through `change`, by compare-and-set (read again and `change` again
    /// when another node wrote in between), and takes the result. Callers hold the meta
    /// lock.
    fn write_shared(
        &self,
        mut change: impl FnMut(&mut catalog::ApiStream),
    ) -> Result<(), StreamError> {
        let Some(cat) = &self.catalog else {
            return Err(StreamError::NotFound(self.name.clone()));
        };
        for _ in 0..8 {
            let Some((rev, mut rec)) = cat.read()? else {
                return Err(StreamError::NotFound(self.name.clone()));
            };
            let Some(a) = rec.live_api(self.generation) else {
                return Err(StreamError::NotFound(self.name.clone()));
            };
            let before = a.clone();
            change(a);
            if *a == before || cat.write(&rec, rev)?.is_some() {
                if let Some(a) = &rec.api {
                    self.take_shared_settings(a);
                }
                return Ok(());
            }
        }
        Err(StreamError::Updating(self.name.clone()))
    }

    /// Takes the settings and retention the cluster holds for a stream made through the
    /// API (another node changed them). Callers hold the meta lock.
    fn take_shared_settings(&self, a: &catalog::ApiStream) {
        if let Ok(mut g) = self.settings.write() {
            if *g != a.settings {
                *g = a.settings.clone();
            }
        }
        if self.retention_hours() != a.retention_hours {
            if let Ok(mut r) = self.retention.write() {
                *r = Duration::from_secs(a.retention_hours * 3600);
            }
        }
    }

    fn save_meta_with(
        &self,
        settings: &StreamSettings,
        retention_hours: u64,
        topology: &Topology,
    ) -> Result<(), StreamError> {
        if self.generation > 0 {
            // Made through the API on JetStream: nothing of it on this node's disk (its
            // topology, settings and existence are the cluster's; a start finds it there).
            return Ok(());
        }
        let meta = StreamMeta {
            shards: topology.open().len() as u32,
            topology: Some(topology.clone()),
            created_ms: self.created_ms,
            origin: self.origin,
            retention_hours,
            settings: settings.clone(),
            seq_floor: self.seq_floor,
            expired_issued: self
                .expired_issued
                .load(std::sync::atomic::Ordering::Acquire),
            configured_shards: self
                .configured_shards
                .load(std::sync::atomic::Ordering::Acquire),
            generation: self.generation,
        };
        write_meta_file(&self.dir, &meta)
    }

    /// Sets (or clears) the write limit; applies live.
    pub fn set_write_limit(&self, limit: Option<WriteLimit>) {
        let Ok(mut g) = self.limiter.lock() else {
            return;
        };
        if g.as_ref().map(|l| l.0) == limit {
            return;
        }
        *g = limit.map(|l| (l, BTreeMap::new()));
    }

    /// Takes one record of `bytes` from shard `index`'s budget; false when throttled
    /// (counted).
    pub fn admit(&self, index: u32, bytes: usize) -> bool {
        let Ok(mut g) = self.limiter.lock() else {
            return true;
        };
        let Some((limit, buckets)) = g.as_mut() else {
            return true;
        };
        let now = now_ms();
        // A shard's budget starts full; buckets of shards no longer open are dropped
        // below, so there is at most one per retained shard.
        let bk = buckets.entry(index).or_insert(Bucket {
            records: limit.records_per_sec.unwrap_or(0) as f64,
            bytes: limit.bytes_per_sec.unwrap_or(0) as f64,
            at_ms: now,
        });
        let dt = (now - bk.at_ms).max(0) as f64 / 1000.0;
        bk.at_ms = now;
        let ok_records = limit.records_per_sec.is_none_or(|r| {
            bk.records = (bk.records + dt * r as f64).min(r as f64);
            bk.records >= 1.0
        });
        let ok_bytes = limit.bytes_per_sec.is_none_or(|r| {
            bk.bytes = (bk.bytes + dt * r as f64).min(r as f64);
            bk.bytes >= bytes as f64
        });
        if ok_records && ok_bytes {
            if limit.records_per_sec.is_some() {
                bk.records -= 1.0;
            }
            if limit.bytes_per_sec.is_some() {
                bk.bytes -= bytes as f64;
            }
            true
        } else {
            if buckets.len() > MAX_RETAINED_SHARDS {
                let set = self.shards();
                buckets.retain(|i, _| set.get(*i).is_some_and(|s| s.closed().is_none()));
            }
            metrics::counter!("sluice_shard_write_throttled_total", "stream" => self.name.clone(), "shard" => shard_id(index)).increment(1);
            false
        }
    }

    /// Retention in hours, as Kinesis reports it.
    pub fn retention_hours(&self) -> u64 {
        self.retention
            .read()
            .map(|r| r.as_secs() / 3600)
            .unwrap_or(24)
            .max(1)
    }

    /// Drops segments past retention (and the size cap) on every shard, and forgets
    /// closed shards whose every record is past retention (their folders are removed).
    pub fn enforce_retention(&self) {
        let keep = self
            .retention
            .read()
            .map(|r| *r)
            .unwrap_or(Duration::from_secs(86_400));
        let cutoff = now_ms() - keep.as_millis() as i64;
        let set = self.shards();
        let mut expired = Vec::new();
        for s in &set.all {
            if s.closed().is_some_and(|c| c.ms < cutoff) {
                expired.push(s.index);
                continue;
            }
            if let Err(e) = s.log.enforce_retention(cutoff, self.max_bytes) {
                tracing::warn!(stream = %self.name, shard = %s.id, error = %e, "retention failed");
            }
        }
        if !expired.is_empty() {
            if let Err(e) = self.expire(&expired) {
                tracing::warn!(stream = %self.name, error = %e, "forgetting expired closed shards failed");
            }
        }
    }

    fn expire(&self, indices: &[u32]) -> Result<(), StreamError> {
        let _one = self.lock_meta()?;
        // On a cluster, forgotten by every node: written to the shared topology first (a
        // node that finds it changed, or a resharding pending, leaves it for later).
        let (rev, api) = match &self.catalog {
            Some(cat) => {
                let (rev, api) = self.sync_locked(cat, false)?;
                (Some(rev), api)
            }
            None => (None, None),
        };
        let old = self.shards();
        let mut next = old.topology.clone();
        for &i in indices {
            next.expire(i);
            if let Some(sh) = old.get(i) {
                self.expired_issued
                    .fetch_max(sh.log.next_seq(), std::sync::atomic::Ordering::AcqRel);
            }
        }
        if next == old.topology {
            return Ok(());
        }
        if let (Some(cat), Some(rev)) = (&self.catalog, rev) {
            // A stream made through the API remembers what its expired shards issued:
            // the base of the next stream of its name must be above it.
            let mut api = api;
            if let Some(a) = api.as_mut() {
                for &i in indices {
                    if let Some(c) = old.topology.get(i).and_then(|d| d.closed) {
                        a.issued = a.issued.max(c.at_seq);
                    }
                }
            }
            let rec = catalog::Record {
                topology: next.clone(),
                pending: None,
                api,
            };
            if cat.write(&rec, rev)?.is_none() {
                return Ok(());
            }
            for &i in indices {
                if let (Some(sh), Some(c)) = (old.get(i), self.cluster()) {
                    if let Err(e) = c.delete_shard(&self.name, self.generation, &sh.id) {
                        tracing::warn!(stream = %self.name, shard = %sh.id, error = %e, "deleting an expired shard's JetStream stream failed");
                    }
                }
            }
        }
        self.save_meta_with(&self.settings(), self.retention_hours(), &next)?;
        let set = shard_set(next, |d| {
            old.get(d.index)
                .cloned()
                .ok_or(StreamError::Topology(TopologyError::NotFound(d.index)))
        })?;
        if let Ok(mut s) = self.shards.write() {
            *s = Arc::new(set);
        }
        for &i in indices {
            if let Some(sh) = old.get(i) {
                sh.log.retire();
                let dir = self.dir.join(&sh.id);
                // A shard kept on JetStream has no folder (and a stream made through the
                // API on the cluster owns none: a folder of its name is another stream's).
                let on_disk = matches!(self.backend, Backend::Log);
                if let Err(e) = if on_disk {
                    std::fs::remove_dir_all(&dir)
                } else {
                    Ok(())
                }
                .or_else(|e| {
                    (e.kind() == std::io::ErrorKind::NotFound)
                        .then_some(())
                        .ok_or(e)
                }) {
                    tracing::warn!(stream = %self.name, shard = %sh.id, error = %e, "removing an expired shard's folder failed");
                }
                tracing::info!(stream = %self.name, shard = %sh.id, "closed shard expired with its records");
            }
        }
        Ok(())
    }

    /// With `fsync = "interval:<d>"`, syncs every shard once `d` has passed since the last
    /// time. Called frequently by the daemon.
    pub fn sync_if_due(&self) {
        let Fsync::Interval(d) = self.fsync else {
            return;
        };
        let now = now_ms();
        let last = self.last_sync_ms.load(std::sync::atomic::Ordering::Relaxed);
        if now - last < d.as_millis() as i64 {
            return;
        }
        self.last_sync_ms
            .store(now, std::sync::atomic::Ordering::Relaxed);
        for s in self.shards().open() {
            if let Err(e) = s.log.sync() {
                tracing::error!(stream = %self.name, shard = %s.id, error = %e, "interval fsync failed");
            }
        }
    }

    /// Publishes shard gauges.
    pub fn record_gauges(&self) {
        let now = now_ms();
        for s in &self.shards().all {
            let labels = [("stream", self.name.clone()), ("shard", s.id.clone())];
            metrics::gauge!("sluice_shard_log_bytes", &labels).set(s.log.total_bytes() as f64);
            if let Some(last) = s.log.last_seq() {
                metrics::gauge!("sluice_shard_last_sequence_number", &labels).set(last as f64);
            }
            let age = s
                .log
                .arrival_range()
                .map(|(first, _)| (now - first).max(0) as f64 / 1000.0)
                .unwrap_or(0.0);
            metrics::gauge!("sluice_shard_oldest_record_age_seconds", &labels).set(age);
            if let Some(max) = self.max_bytes {
                metrics::gauge!("sluice_shard_max_bytes", &labels).set(max as f64);
            }
        }
    }
}

impl Shard {
    /// Records `consumer`'s delivered position: every record below `next` is delivered.
    pub fn set_delivered(&self, consumer: &str, next: u64) {
        if let Ok(mut c) = self.consumers.lock() {
            match c.get_mut(consumer) {
                Some(p) => *p = next,
                None => {
                    c.insert(consumer.to_string(), next);
                }
            }
        }
    }

    /// Records whether `pipeline` on this node holds the shard's lease.
    pub fn set_leased(&self, pipeline: &str, held: bool) {
        if let Ok(mut l) = self.leased.lock() {
            if held {
                l.insert(pipeline.to_string());
            } else {
                l.remove(pipeline);
            }
        }
    }

    /// The pipelines of this node holding the shard's lease.
    pub fn leased_by(&self) -> Vec<String> {
        self.leased
            .lock()
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Forgets a consumer that stopped reading.
    pub fn forget_consumer(&self, consumer: &str) {
        if let Ok(mut c) = self.consumers.lock() {
            c.remove(consumer);
        }
    }

    /// Each reading pipeline and how many records it has yet to deliver from this shard
    /// (records past retention are not counted: they cannot be delivered any more).
    pub fn consumer_lag(&self) -> Vec<(String, u64)> {
        let (first, next) = (self.log.first_seq(), self.log.next_seq());
        self.consumers
            .lock()
            .map(|c| {
                c.iter()
                    .map(|(k, &p)| (k.clone(), next.saturating_sub(p.max(first))))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// When and at which sequence number a resharding closed it.
    pub fn closed(&self) -> Option<Closed> {
        match self.gate.read() {
            Ok(g) => *g,
            Err(p) => *p.into_inner(),
        }
    }

    /// Appends records (durable on return under `fsync = "batch"`); returns the first
    /// shard-local sequence number and each record's arrival time. A closed shard refuses
    /// with [`StreamError::ShardClosed`]: route the records again.
    pub fn append(&self, entries: &[Entry<'_>]) -> Result<(u64, Vec<i64>), StreamError> {
        let mut attempt = 1;
        loop {
            let a = self.append_unsynced(entries)?;
            match self.commit(entries, &a) {
                Ok(()) => return Ok((a.first, a.arrivals)),
                // Another node appended first and nothing was stored: numbered again.
                Err(StreamError::Storage(StorageError::Conflict))
                    if attempt < CONFLICT_ATTEMPTS =>
                {
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The first half of [`Shard::append`]: numbered and written (under the gate: a
    /// resharding's closing sequence number counts them), durable after
    /// [`Shard::commit`]. See [`append_groups`].
    pub fn append_unsynced(&self, entries: &[Entry<'_>]) -> Result<Appended, StreamError> {
        let gate = self
            .gate
            .read()
            .map_err(|_| StreamError::ShardClosed(self.index))?;
        if gate.is_some() {
            return Err(StreamError::ShardClosed(self.index));
        }
        let a = self.log.append_unsynced(entries)?;
        drop(gate);
        Ok(a)
    }

    /// The second half of [`Shard::append`]: `a` (of `entries`) made durable, and counted.
    pub fn commit(&self, entries: &[Entry<'_>], a: &Appended) -> Result<(), StreamError> {
        match self.log.commit(a.commit) {
            // Sealed by another node's resharding: routed again once its topology is here.
            Err(StorageError::Closed) => return Err(StreamError::ShardClosed(self.index)),
            Err(StorageError::Partial { stored, sealed }) => {
                let done = &entries[..stored.min(entries.len())];
                self.incoming_records.increment(done.len() as u64);
                self.incoming_bytes
                    .increment(done.iter().map(|e| e.data.len() as u64).sum());
                return Err(StreamError::Storage(StorageError::Partial {
                    stored,
                    sealed,
                }));
            }
            r => r?,
        }
        self.incoming_records.increment(entries.len() as u64);
        self.incoming_bytes
            .increment(entries.iter().map(|e| e.data.len() as u64).sum());
        Ok(())
    }

    /// Reads from shard-local sequence `from`.
    pub fn read(
        &self,
        from: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredRecord>, StreamError> {
        Ok(self.log.read(from, max_records, max_bytes)?)
    }
}

/// Appends a shard refused because another writer appended first (nothing stored) are
/// made again at most this many times in all.
const CONFLICT_ATTEMPTS: u32 = 5;

/// Records of a [`Stream::append_routed`] that were not stored — their indexes in the
/// call, in order — and the first reason; every other record was stored.
#[derive(Debug, thiserror::Error)]
#[error("{} of the records not stored: {error}", .failed.len())]
pub struct NotStored {
    /// Indexes of the records not stored.
    pub failed: Vec<usize>,
    /// Why (the first error met).
    pub error: Box<StreamError>,
}

/// What [`append_groups`] did with one group: the sequence numbers of the records stored
/// — the group's first `seqs.len()` records, in order — and why the others were not.
#[derive(Debug)]
pub struct GroupOutcome {
    /// Sequence number of each record stored, from the group's first on.
    pub seqs: Vec<u64>,
    /// Why the rest was not stored (`ShardClosed`: route them again).
    pub error: Option<StreamError>,
}

/// Appends each group to its shard on this thread: every group written first, then
/// writeback started on every shard, then each committed — a call touching N shards waits
/// for one round of overlapping syncs (and later commits often find theirs done by an
/// earlier one), not N syncs one after another or N threads. Per group, in order: what
/// was stored, and why the rest was not — a batch another node's append or a seal cut
/// short keeps the part that was stored, so its producer retries only the rest.
pub fn append_groups(groups: &[(&Shard, &[Entry<'_>])]) -> Vec<GroupOutcome> {
    let written: Vec<Result<Appended, StreamError>> = groups
        .iter()
        .map(|(sh, entries)| sh.append_unsynced(entries))
        .collect();
    for ((sh, _), w) in groups.iter().zip(&written) {
        if w.is_ok() {
            sh.log.start_sync();
        }
    }
    sync_together(groups, &written);
    groups
        .iter()
        .zip(written)
        .map(|((sh, entries), w)| finish(sh, entries, w))
        .collect()
}

/// Commits the append `first` of `entries` to `sh`; what another writer's appends refused
/// (nothing, or all after a stored prefix) is appended again, at most
/// [`CONFLICT_ATTEMPTS`] times in all; what a seal refused is left to be routed again.
fn finish(sh: &Shard, entries: &[Entry<'_>], first: Result<Appended, StreamError>) -> GroupOutcome {
    let mut seqs = Vec::with_capacity(entries.len());
    let mut rest = entries;
    let mut next = first;
    for attempt in 1.. {
        let a = match next {
            Ok(a) => a,
            Err(e) => {
                return GroupOutcome {
                    seqs,
                    error: Some(e),
                }
            }
        };
        let (stored, sealed) = match sh.commit(rest, &a) {
            Ok(()) => (rest.len(), false),
            Err(StreamError::Storage(StorageError::Conflict)) => (0, false),
            Err(StreamError::Storage(StorageError::Partial { stored, sealed })) => {
                (stored.min(rest.len()), sealed)
            }
            Err(e) => {
                return GroupOutcome {
                    seqs,
                    error: Some(e),
                }
            }
        };
        seqs.extend((a.first..).take(stored));
        rest = &rest[stored..];
        let error = if rest.is_empty() {
            None
        } else if sealed {
            Some(StreamError::ShardClosed(sh.index))
        } else if attempt >= CONFLICT_ATTEMPTS {
            Some(StreamError::Storage(StorageError::Conflict))
        } else {
            next = sh.append_unsynced(rest);
            continue;
        };
        return GroupOutcome { seqs, error };
    }
    GroupOutcome {
        seqs,
        error: Some(StreamError::Storage(StorageError::Conflict)),
    }
}

/// A call needing this many shard syncs makes them one `syncfs` of the stream's
/// filesystem (its other dirty files are written too, so fewer syncs stay per shard).
/// 16 shards' syncs cost about twice one `syncfs` here; 4 about as much (BENCHMARKS.md).
pub const SYNCFS_MIN_SHARDS: usize = 8;

/// The commits of [`append_groups`] made by one filesystem sync when enough of the
/// stream's shard logs need one. On failure nothing is marked: each commit then syncs its
/// own shard, which reports that shard's errors only.
fn sync_together(groups: &[(&Shard, &[Entry<'_>])], written: &[Result<Appended, StreamError>]) {
    let Some(fs) = groups.first().and_then(|(sh, _)| sh.fs_sync.as_ref()) else {
        return;
    };
    let logs: Vec<(&ShardLog, u64)> = groups
        .iter()
        .zip(written)
        .filter_map(|((sh, _), w)| {
            let a = w.as_ref().ok()?;
            let same = sh.fs_sync.as_ref().is_some_and(|f| Arc::ptr_eq(f, fs));
            let log = sh.log.shard_log()?;
            (same && fs.fs.covers(log) && log.needs_sync(a.commit)).then_some((log, a.commit))
        })
        .collect();
    if logs.len() < SYNCFS_MIN_SHARDS {
        return;
    }
    match fs.fs.commit(&logs) {
        Ok(true) => fs.syncs.increment(1),
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(error = %e, shards = logs.len(), "filesystem sync failed; each shard syncs on its own");
            fs.failures.increment(1);
        }
    }
}

/// Every stream of the daemon.
pub struct Streams {
    data_dir: PathBuf,
    streams: RwLock<BTreeMap<String, Arc<Stream>>>,
    floor: SeqFloor,
    /// The JetStream cluster of `[jetstream]`, once connected.
    cluster: RwLock<Option<Arc<jetstream::Cluster>>>,
    /// CreateStream makes streams on the cluster (`api_streams = "jetstream"`), and this
    /// node serves every stream made so by any node.
    api_on_cluster: std::sync::atomic::AtomicBool,
    /// Names of streams made through the API in the cluster that this node cannot serve
    /// (a stream of its own has the name): warned about once.
    shadowed: std::sync::Mutex<std::collections::BTreeSet<String>>,
    /// API streams (name, highest dead generation) whose dead generations' JetStream
    /// streams this process made sure are gone ([`jetstream::Cluster::sweep_deleted`]),
    /// and when a sweep last failed (the next waits [`SWEEP_RETRY`]).
    swept: std::sync::Mutex<Swept>,
}

/// What [`Streams::sweep`] did: the (name, highest dead generation) pairs swept, and when
/// a sweep last failed.
#[derive(Default)]
struct Swept {
    done: std::collections::BTreeSet<(String, u64)>,
    failed_at: Option<std::time::Instant>,
}

/// How long after a failed sweep of deleted API streams' leftovers the next one waits
/// (each lists every JetStream stream of the account).
const SWEEP_RETRY: Duration = Duration::from_secs(30);

/// `data_dir/seq-floor.json`: one number above every sequence number a deleted stream
/// issued. New streams number from there, whatever their name: positions remembered by
/// readers of an earlier stream of the same name (checkpoints by shard id, intent-log
/// ranges, object names) then never match a new record. One number, not one per name, so
/// it stays one small file however many streams come and go.
struct SeqFloor {
    path: PathBuf,
    lock: std::sync::Mutex<()>,
}

impl SeqFloor {
    fn get(&self) -> Result<u64, StreamError> {
        let io = |source| StreamError::Io {
            path: self.path.clone(),
            source,
        };
        match std::fs::read_to_string(&self.path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(io(e)),
            Ok(t) => serde_json::from_str::<FloorFile>(&t)
                .map(|f| f.floor)
                .map_err(|e| io(std::io::Error::new(std::io::ErrorKind::InvalidData, e))),
        }
    }

    /// Raises the floor to at least `to`, durably.
    fn raise(&self, to: u64) -> Result<(), StreamError> {
        use std::io::Write as _;
        let _one = self.lock.lock().map_err(|_| StreamError::Io {
            path: self.path.clone(),
            source: std::io::Error::other("lock poisoned"),
        })?;
        // A damaged file must not lower the floor: refuse (the delete fails, data stays).
        let now = self.get()?;
        if to <= now {
            return Ok(());
        }
        let tmp = self.path.with_extension("json.tmp");
        let text = serde_json::to_vec(&FloorFile { floor: to }).unwrap_or_default();
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::File::create(&tmp)
            .and_then(|mut f| f.write_all(&text).and_then(|()| f.sync_data()))
            .and_then(|()| std::fs::rename(&tmp, &self.path))
            .and_then(|()| std::fs::File::open(dir)?.sync_all())
            .map_err(|source| StreamError::Io {
                path: self.path.clone(),
                source,
            })
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FloorFile {
    floor: u64,
}

impl Streams {
    /// Opens the streams created through the API that live in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Streams, StreamError> {
        let root = data_dir.join("streams");
        std::fs::create_dir_all(&root).map_err(|source| StreamError::Io {
            path: root.clone(),
            source,
        })?;
        let s = Streams {
            data_dir: data_dir.to_path_buf(),
            streams: RwLock::new(BTreeMap::new()),
            floor: SeqFloor {
                path: data_dir.join("seq-floor.json"),
                lock: std::sync::Mutex::new(()),
            },
            cluster: RwLock::new(None),
            api_on_cluster: Default::default(),
            shadowed: Default::default(),
            swept: Default::default(),
        };
        // What a deletion moved out and a crash kept it from removing.
        if let Err(e) = std::fs::remove_dir_all(s.trash_dir()) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %s.trash_dir().display(), error = %e, "removing deleted streams' folders failed");
            }
        }
        let entries = std::fs::read_dir(&root).map_err(|source| StreamError::Io {
            path: root.clone(),
            source,
        })?;
        for e in entries.flatten() {
            let dir = e.path();
            let Some(name) = dir.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
                continue;
            };
            if let Err(e) = crate::names::check(&name) {
                tracing::warn!(dir = %dir.display(), error = %e, "not a stream folder; left alone");
                continue;
            }
            let Ok(text) = std::fs::read_to_string(dir.join("stream.json")) else {
                continue;
            };
            let Ok(meta) = serde_json::from_str::<StreamMeta>(&text) else {
                tracing::error!(stream = %name, "unreadable stream.json; stream not opened");
                continue;
            };
            if meta.origin == StreamOrigin::Api {
                let st =
                    Stream::open(dir, &name, &meta, Fsync::Batch, 1 << 20, None, Backend::Log)?;
                s.insert(st);
            }
        }
        Ok(s)
    }

    /// The JetStream cluster that streams with `storage = "jetstream"` live on (connected
    /// at startup, before the config streams are applied).
    pub fn set_cluster(&self, c: Arc<jetstream::Cluster>) {
        if let Ok(mut g) = self.cluster.write() {
            *g = Some(c);
        }
    }

    /// The JetStream cluster, if `[jetstream]` is configured.
    pub fn cluster(&self) -> Option<Arc<jetstream::Cluster>> {
        self.cluster.read().ok()?.clone()
    }

    /// Makes CreateStream put new streams on the cluster (set after
    /// [`Streams::set_cluster`], with `[jetstream] api_streams = "jetstream"`); the streams
    /// any node made so are served here from the next [`Streams::sync_topologies`] on.
    pub fn share_api_streams(&self) {
        self.api_on_cluster
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// The cluster CreateStream puts streams on, if it does.
    fn api_cluster(&self) -> Option<Arc<jetstream::Cluster>> {
        if self
            .api_on_cluster
            .load(std::sync::atomic::Ordering::Acquire)
        {
            self.cluster()
        } else {
            None
        }
    }

    /// Opens the stream `rec` describes (made through the API on the cluster) and serves
    /// it, unless a stream of that name is served already (then that one).
    fn open_shared(
        &self,
        c: &Arc<jetstream::Cluster>,
        rec: &catalog::Record,
    ) -> Result<Arc<Stream>, StreamError> {
        let a = rec
            .api
            .as_ref()
            .ok_or_else(|| StreamError::NotFound(String::new()))?;
        // The name comes from the cluster: checked as any name (it becomes a path).
        crate::names::check(&a.name)?;
        let meta = StreamMeta {
            shards: rec.topology.open().len() as u32,
            topology: Some(rec.topology.clone()),
            created_ms: a.created_ms,
            origin: StreamOrigin::Api,
            retention_hours: a.retention_hours.max(1),
            settings: a.settings.clone(),
            seq_floor: a.base,
            expired_issued: 0,
            configured_shards: 0,
            generation: a.generation.max(1),
        };
        let st = Stream::open(
            self.dir(&a.name)?,
            &a.name,
            &meta,
            Fsync::Batch,
            1 << 20,
            None,
            Backend::JetStream(Arc::clone(c)),
        )?;
        let mut m = self
            .streams
            .write()
            .map_err(|_| StreamError::NotFound(a.name.clone()))?;
        Ok(m.entry(a.name.clone())
            .or_insert_with(|| Arc::new(st))
            .clone())
    }

    /// CreateStream on the cluster: the stream's key written by compare-and-set (a name
    /// another node made at the same moment, or any stream of the cluster has, is taken),
    /// numbered above what a deleted stream of the name issued (its tombstone's base).
    fn create_shared(
        &self,
        c: &Arc<jetstream::Cluster>,
        name: &str,
        shards: u32,
        settings: StreamSettings,
    ) -> Result<Arc<Stream>, StreamError> {
        // Refused before anything is written: a stream no node could open.
        c.check_record_size(1 << 20)?;
        let cat = catalog::Catalog::open(Arc::clone(c), name)?;
        let (rev, before) = match cat.read()? {
            Some((rev, rec)) => (rev, Some(rec)),
            None => (0, None),
        };
        let (generation, base) = match before.as_ref().map(|r| &r.api) {
            None => (1, 0),
            Some(Some(a)) if a.deleted => (a.generation + 1, a.base),
            Some(_) => return Err(StreamError::Exists(name.to_string())),
        };
        let now = now_ms();
        let topology = Topology::uniform(shards.max(1), now);
        // The shards' storage first (only this node makes it: the others find it, or find
        // it deleted, and never bring a deleted stream's storage back).
        for d in &topology.shards {
            c.open_shard(
                name,
                generation,
                true,
                &shard_id(d.index),
                1 << 20,
                None,
                false,
            )?;
        }
        let rec = catalog::Record {
            topology,
            pending: None,
            api: Some(catalog::ApiStream {
                name: name.to_string(),
                generation,
                // Above this node's floor too: its readers may remember positions of a
                // local stream of this name deleted before.
                base: base.max(self.floor.get()?),
                issued: 0,
                created_ms: now,
                retention_hours: 24,
                settings,
                deleted: false,
            }),
        };
        if cat.write(&rec, rev)?.is_none() {
            // Another node made it at the same moment (its storage is the same).
            return Err(StreamError::Exists(name.to_string()));
        }
        tracing::info!(stream = %name, generation, "stream made on the JetStream cluster");
        self.open_shared(c, &rec)
    }

    /// DeleteStream of a stream made through the API on the cluster: every open shard
    /// sealed (no node's append lands after the ends read), then a tombstone whose base is
    /// above every number issued, then its JetStream streams deleted. Every node forgets
    /// the stream at its next look. A resharding another node makes meanwhile is taken and
    /// its children sealed too before the tombstone is written. A deletion that fails
    /// part-way leaves the stream refusing appends (nothing stored is lost) until
    /// DeleteStream is called again.
    fn delete_shared(
        &self,
        st: &Arc<Stream>,
        c: &Arc<jetstream::Cluster>,
        with_consumers: bool,
    ) -> Result<(), StreamError> {
        let Some(cat) = &st.catalog else {
            return Err(StreamError::NotFound(st.name.clone()));
        };
        let meta_lock = st.lock_meta()?;
        let mut deleted = None;
        for _ in 0..8 {
            // The cluster's topology (another node's resharding) and settings first.
            let (_, api) = st.sync_locked(cat, false)?;
            let Some(api) = api else {
                return Err(StreamError::NotFound(st.name.clone()));
            };
            let consumers = api.settings.consumers.len();
            if consumers > 0 && !with_consumers {
                return Err(StreamError::HasConsumers(st.name.clone(), consumers));
            }
            let set = st.shards();
            let mut floor = api
                .base
                .max(api.issued)
                .max(st.expired_issued.load(std::sync::atomic::Ordering::Acquire));
            for sh in &set.all {
                let end = match set.topology.get(sh.index).and_then(|d| d.closed) {
                    // Exact, in the topology every node shares.
                    Some(c) => c.at_seq,
                    None => sh.log.seal()?,
                };
                floor = floor.max(end);
            }
            let Some((rev, mut rec)) = cat.read()? else {
                return Err(StreamError::NotFound(st.name.clone()));
            };
            // Resharded (or being resharded) since: take it, seal its children too.
            if rec.topology != set.topology || rec.pending.is_some() {
                continue;
            }
            let Some(a) = rec.live_api(st.generation) else {
                return Err(StreamError::NotFound(st.name.clone()));
            };
            a.deleted = true;
            a.base = floor;
            if cat.write(&rec, rev)?.is_some() {
                deleted = Some((set, floor));
                break;
            }
        }
        let Some((set, floor)) = deleted else {
            return Err(StreamError::Updating(st.name.clone()));
        };
        sluice_plugin_api::failpoint("api-stream-tombstoned");
        st.deleted.store(true, std::sync::atomic::Ordering::Release);
        for sh in &set.all {
            sh.log.retire();
        }
        drop(meta_lock);
        self.forget(st);
        // A stream of this name made later on this node's disk numbers above it too.
        if let Err(e) = self.floor.raise(floor) {
            tracing::warn!(stream = %st.name, error = %e, "cannot raise the sequence floor of deleted streams");
        }
        let mut all_deleted = true;
        for sh in &set.all {
            if let Err(e) = c.delete_shard(&st.name, st.generation, &sh.id) {
                all_deleted = false;
                tracing::warn!(stream = %st.name, shard = %sh.id, error = %e, "deleting a deleted stream's JetStream stream failed; every node's sweep tries again");
            }
        }
        if all_deleted {
            // Nothing left for this node's sweep to list the cluster for — when the
            // generations before were swept too.
            let mut swept = self.swept.lock().unwrap_or_else(|p| p.into_inner());
            let below = (st.name.clone(), st.generation.saturating_sub(1));
            if st.generation == 1 || swept.done.contains(&below) {
                swept.done.insert((st.name.clone(), st.generation));
            }
        }
        tracing::info!(stream = %st.name, next_base = floor, "stream deleted from the JetStream cluster");
        Ok(())
    }

    /// Stops serving `st` (deleted, here or by another node): readers holding it see it
    /// deleted, writers are refused.
    fn forget(&self, st: &Arc<Stream>) {
        st.deleted.store(true, std::sync::atomic::Ordering::Release);
        for sh in &st.shards().all {
            sh.log.retire();
        }
        if let Ok(mut m) = self.streams.write() {
            if m.get(&st.name).is_some_and(|s| Arc::ptr_eq(s, st)) {
                m.remove(&st.name);
            }
        }
    }

    /// Serves every stream made through the API on the cluster that this node does not
    /// serve yet (another node's CreateStream), and forgets those deleted there.
    fn sync_api_streams(&self, c: &Arc<jetstream::Cluster>) {
        let records = match catalog::Catalog::api_streams(c) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the streams made on the JetStream cluster");
                return;
            }
        };
        self.sweep(c, &records);
        for (_, rec) in records {
            let Some(a) = &rec.api else { continue };
            let held = self.get(&a.name);
            match &held {
                // Served already — or newer than what this listing saw (made here since).
                Some(st) if st.generation >= a.generation => continue,
                // Made again under its name: the old one is gone.
                Some(st) if st.generation > 0 => self.forget(st),
                Some(_) if a.deleted => continue,
                Some(_) => {
                    let mut warned = self.shadowed.lock().unwrap_or_else(|p| p.into_inner());
                    if warned.insert(a.name.clone()) {
                        tracing::warn!(stream = %a.name, "a stream of this name was made through the API on the JetStream cluster, and this node has a stream of its own under the name: not served here");
                    }
                    continue;
                }
                None => {}
            }
            if a.deleted {
                continue;
            }
            match self.open_shared(c, &rec) {
                Ok(_) => {
                    tracing::info!(stream = %a.name, generation = a.generation, "serving a stream made on the JetStream cluster")
                }
                // Deleted meanwhile.
                Err(StreamError::NotFound(_)) => {}
                Err(e) => {
                    tracing::warn!(stream = %a.name, error = %e, "cannot serve a stream made on the JetStream cluster")
                }
            }
        }
    }

    /// Deletes the JetStream streams deleted API streams left (a deleting node died after
    /// the tombstone, or its deletes failed; a stream deleted and made again before any
    /// node swept) — the generations of a tombstone, and those below a live stream's —
    /// once per stream and process, in one listing of the cluster's streams for all.
    fn sweep(&self, c: &Arc<jetstream::Cluster>, records: &[(u64, catalog::Record)]) {
        let mut swept = self.swept.lock().unwrap_or_else(|p| p.into_inner());
        if swept.failed_at.is_some_and(|t| t.elapsed() < SWEEP_RETRY) {
            return;
        }
        let due: Vec<(String, u64)> = records
            .iter()
            .filter_map(|(_, r)| r.api.as_ref())
            .map(|a| {
                let upto = if a.deleted {
                    a.generation
                } else {
                    a.generation.saturating_sub(1)
                };
                (a.name.clone(), upto)
            })
            .filter(|k| k.1 > 0 && !swept.done.contains(k))
            .collect();
        if due.is_empty() {
            return;
        }
        match c.sweep_deleted(&due) {
            Ok(done) => {
                let all = done.len() == due.len();
                swept.done.extend(done);
                swept.failed_at = (!all).then(std::time::Instant::now);
            }
            Err(e) => {
                swept.failed_at = Some(std::time::Instant::now());
                tracing::warn!(error = %e, "cannot list what deleted streams left on the JetStream cluster (tried again in 30 s)")
            }
        }
    }

    /// The backend a spec's `storage` names.
    fn backend(&self, spec: &StreamSpec) -> Result<Backend, StreamError> {
        match spec.storage {
            crate::spec::StorageKind::Log => Ok(Backend::Log),
            crate::spec::StorageKind::JetStream => match self.cluster() {
                Some(c) => Ok(Backend::JetStream(c)),
                None => Err(StreamError::Storage(StorageError::Cluster(format!(
                    "stream {}: storage = \"jetstream\" but no JetStream cluster is connected ([jetstream] in the daemon's config)",
                    spec.name
                )))),
            },
        }
    }

    fn insert(&self, st: Stream) {
        if let Ok(mut m) = self.streams.write() {
            m.insert(st.name.clone(), Arc::new(st));
        }
    }

    /// The stream's folder; a name that could leave `streams/` is refused.
    fn dir(&self, name: &str) -> Result<PathBuf, StreamError> {
        Ok(crate::names::child(&self.data_dir.join("streams"), name)?)
    }

    fn write_meta(&self, name: &str, meta: &StreamMeta) -> Result<(), StreamError> {
        write_meta_file(&self.dir(name)?, meta)
    }

    /// Makes the config streams exist with these settings (opening existing data);
    /// returns the names of config streams that are no longer configured (left on disk).
    pub fn apply_config(
        &self,
        specs: &BTreeMap<String, StreamSpec>,
    ) -> Result<Vec<String>, StreamError> {
        // First refuse what cannot change live, before anything is changed: a reload is
        // applied whole or not at all.
        for spec in specs.values() {
            let Some(st) = self
                .get(&spec.name)
                .filter(|s| s.origin == StreamOrigin::Config)
            else {
                continue;
            };
            // Compared as values; formatted only for the refusal.
            let refuse = |key: &'static str, now: String, wanted: String| {
                Err(StreamError::NeedsRestart {
                    stream: spec.name.clone(),
                    key,
                    now,
                    wanted,
                })
            };
            if st.fsync != spec.fsync {
                return refuse(
                    "fsync",
                    format!("{:?}", st.fsync),
                    format!("{:?}", spec.fsync),
                );
            }
            if st.max_record_size != spec.max_record_size {
                let (a, b) = (st.max_record_size, spec.max_record_size);
                return refuse("max_record_size", a.to_string(), b.to_string());
            }
            if st.max_bytes != spec.max_bytes {
                let (a, b) = (st.max_bytes, spec.max_bytes);
                return refuse("max_bytes", format!("{a:?}"), format!("{b:?}"));
            }
            if st.backend.kind() != spec.storage {
                let (a, b) = (st.backend.kind(), spec.storage);
                return refuse("storage", format!("{a:?}"), format!("{b:?}"));
            }
        }
        // A resharding that could not be done is refused before anything changes, too.
        for spec in specs.values() {
            let mut trial = match self.get(&spec.name) {
                Some(st) if st.origin == StreamOrigin::Config => st.shards().topology.clone(),
                _ => match stored_meta(&self.dir(&spec.name)?).and_then(|m| m.topology) {
                    Some(t) => t,
                    None => continue,
                },
            };
            if let Err(e) = trial.scale_to(spec.shards, now_ms(), &mut |_| 0) {
                return Err(StreamError::Topology(e));
            }
        }
        for spec in specs.values() {
            let st = match self.get(&spec.name) {
                Some(st) if st.origin == StreamOrigin::Config => {
                    // Retention applies live; the rest needs no change.
                    if let Ok(mut r) = st.retention.write() {
                        *r = spec.retention;
                    }
                    st.set_write_limit(spec.write_limit);
                    st
                }
                _ => {
                    let stored = stored_meta(&self.dir(&spec.name)?);
                    let meta = StreamMeta {
                        // What is on disk opens as it is; the count is reached below.
                        shards: stored.as_ref().map_or(spec.shards, |m| m.shards),
                        topology: stored.as_ref().and_then(|m| m.topology.clone()),
                        created_ms: stored.as_ref().map_or_else(now_ms, |m| m.created_ms),
                        origin: StreamOrigin::Config,
                        retention_hours: (spec.retention.as_secs() / 3600).max(1),
                        seq_floor: match &stored {
                            Some(m) => m.seq_floor,
                            None => self.floor.get()?,
                        },
                        expired_issued: stored.as_ref().map_or(0, |m| m.expired_issued),
                        configured_shards: stored.as_ref().map_or(0, |m| m.configured_shards),
                        generation: 0,
                        // Tags, consumers, ... set through the API survive restarts.
                        settings: stored.map(|m| m.settings).unwrap_or_default(),
                    };
                    self.write_meta(&spec.name, &meta)?;
                    let mut st = Stream::open(
                        self.dir(&spec.name)?,
                        &spec.name,
                        &meta,
                        spec.fsync,
                        spec.max_record_size,
                        spec.max_bytes,
                        self.backend(spec)?,
                    )?;
                    st.retention = RwLock::new(spec.retention);
                    st.set_write_limit(spec.write_limit);
                    self.insert(st);
                    self.get(&spec.name)
                        .ok_or_else(|| StreamError::NotFound(spec.name.clone()))?
                }
            };
            // A changed `shards` reshards (UpdateShardCount, uniform scaling). On a cluster
            // only a change of this node's file does: the others' resharding stands.
            // The count last applied is kept in `stream.json`: a change made while the
            // node was down reshards at its start too.
            let before = st
                .configured_shards
                .load(std::sync::atomic::Ordering::Acquire);
            if st.catalog.is_none() || (before != 0 && before != spec.shards) {
                st.scale_to(spec.shards, false)?;
            } else if st.shards().open.len() != spec.shards as usize {
                tracing::warn!(stream = %spec.name, configured = spec.shards, open = st.shards().open.len(), "the cluster's nodes serve another shard count than this node's file says; it reshards only when `shards` is changed in the file");
            }
            if before != spec.shards {
                st.record_configured_shards(spec.shards)?;
            }
        }
        let gone: Vec<String> = self
            .streams
            .read()
            .map(|m| {
                m.values()
                    .filter(|s| s.origin == StreamOrigin::Config && !specs.contains_key(&s.name))
                    .map(|s| s.name.clone())
                    .collect()
            })
            .unwrap_or_default();
        if let Ok(mut m) = self.streams.write() {
            for g in &gone {
                m.remove(g);
            }
        }
        Ok(gone)
    }

    /// The data directory the streams live in (account-wide API settings live there too).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// A stream by name.
    pub fn get(&self, name: &str) -> Option<Arc<Stream>> {
        self.streams.read().ok()?.get(name).cloned()
    }

    /// Every stream.
    pub fn list(&self) -> Vec<Arc<Stream>> {
        self.streams
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// CreateStream.
    pub fn create(
        &self,
        name: &str,
        shards: u32,
        settings: StreamSettings,
    ) -> Result<Arc<Stream>, StreamError> {
        crate::names::check(name)?;
        if let Some(c) = self.api_cluster() {
            if self.get(name).is_some() {
                return Err(StreamError::Exists(name.to_string()));
            }
            return self.create_shared(&c, name, shards, settings);
        }
        let mut m = self
            .streams
            .write()
            .map_err(|_| StreamError::Exists(name.to_string()))?;
        if m.contains_key(name) {
            return Err(StreamError::Exists(name.to_string()));
        }
        // A config stream no longer configured keeps its folder (and records): taken
        // over by a new API stream, its old shard logs would be read as the new stream's.
        let dir = self.dir(name)?;
        if dir.join("stream.json").exists() {
            return Err(StreamError::LeftOnDisk(name.to_string()));
        }
        // A folder without `stream.json` is no stream (what an interrupted deletion of an
        // older version left): its shard logs must not become the new stream's.
        if dir.exists() {
            remove_trashed(name, &self.to_trash(name, &dir)?);
        }
        let meta = StreamMeta {
            shards,
            topology: None,
            created_ms: now_ms(),
            origin: StreamOrigin::Api,
            retention_hours: 24,
            settings,
            seq_floor: self.floor.get()?,
            expired_issued: 0,
            configured_shards: 0,
            generation: 0,
        };
        self.write_meta(name, &meta)?;
        let st = Arc::new(Stream::open(
            self.dir(name)?,
            name,
            &meta,
            Fsync::Batch,
            1 << 20,
            None,
            Backend::Log,
        )?);
        m.insert(name.to_string(), st.clone());
        Ok(st)
    }

    /// DeleteStream (API streams only): removes it and its data — and its registered
    /// consumers, only with `with_consumers` (Kinesis's `EnforceConsumerDeletion`).
    pub fn delete(&self, name: &str, with_consumers: bool) -> Result<(), StreamError> {
        let mut m = self
            .streams
            .write()
            .map_err(|_| StreamError::NotFound(name.to_string()))?;
        let st = m
            .get(name)
            .cloned()
            .ok_or_else(|| StreamError::NotFound(name.to_string()))?;
        if st.origin == StreamOrigin::Config {
            return Err(StreamError::FromConfig(name.to_string()));
        }
        if st.generation > 0 {
            drop(m);
            let c = st
                .cluster()
                .ok_or_else(|| StreamError::NotFound(name.to_string()))?;
            return self.delete_shared(&st, &c, with_consumers);
        }
        let consumers = st.settings().consumers.len();
        if consumers > 0 && !with_consumers {
            return Err(StreamError::HasConsumers(name.to_string(), consumers));
        }
        let dir = st.dir.clone();
        // Exactly the stream's own folder, whatever went before.
        let expected = self.dir(name)?;
        if dir != expected {
            return Err(StreamError::Io {
                path: dir,
                source: std::io::Error::other("not the stream's own folder; not removed"),
            });
        }
        // Nothing waiting to change `stream.json` may write the folder back afterwards.
        let meta_lock = st.lock_meta()?;
        // Writers that still hold the stream fail from now on (as if it were not found):
        // none may write into a folder a CreateStream of the same name makes next.
        for sh in &st.shards().all {
            sh.log.retire();
        }
        // Durable before the records go, and while the name is still taken: a stream made
        // again under this name numbers above everything this one issued, so readers'
        // checkpoints and intent logs (which remember positions by name) cannot skip its
        // records, and object names that carry positions cannot collide with this one's.
        let issued = st.shards().all.iter().map(|sh| sh.log.next_seq()).max();
        let expired = st.expired_issued.load(std::sync::atomic::Ordering::Acquire);
        if let Err(e) = self.floor.raise(issued.unwrap_or(0).max(expired)) {
            // Nothing happened: the stream takes appends again.
            for sh in &st.shards().all {
                sh.log.unretire();
            }
            return Err(e);
        }
        st.deleted.store(true, std::sync::atomic::Ordering::Release);
        // Moved while the name is still taken: a CreateStream of it finds no folder.
        let moved = self.to_trash(name, &dir);
        m.remove(name);
        drop(m);
        drop(meta_lock);
        remove_trashed(name, &moved?);
        Ok(())
    }

    /// Where deleted streams' folders go before they are removed (`data_dir/streams.deleted`,
    /// outside `streams/`, emptied at every start).
    fn trash_dir(&self) -> PathBuf {
        self.data_dir.join("streams.deleted")
    }

    /// Moves a stream folder out of `streams/` in one durable rename (then
    /// [`remove_trashed`]), so a crash part-way through its removal can leave neither a
    /// folder without its `stream.json` nor one missing some shards for the next start or
    /// CreateStream to adopt (what is left in the trash goes at the next start).
    fn to_trash(&self, name: &str, dir: &Path) -> Result<PathBuf, StreamError> {
        let trash = self.trash_dir();
        let gone = trash.join(format!("{name}.{:016x}", fastrand::u64(..)));
        std::fs::create_dir_all(&trash)
            .and_then(|()| std::fs::rename(dir, &gone))
            .and_then(|()| std::fs::File::open(self.data_dir.join("streams"))?.sync_all())
            .map_err(|source| StreamError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        Ok(gone)
    }

    /// A clean stop: every shard log synced and its sequence mark set exactly, so the next
    /// start resumes its numbering without a skip.
    pub fn close(&self) {
        for st in self.list() {
            for sh in &st.shards().all {
                if let Err(e) = sh.log.close() {
                    tracing::warn!(stream = %st.name, shard = %sh.id, error = %e, "closing the shard log failed");
                }
            }
        }
    }

    /// Interval fsyncs that are due.
    pub fn sync_due(&self) {
        for s in self.list() {
            s.sync_if_due();
        }
    }

    /// Periodic upkeep: retention and gauges.
    pub fn upkeep(&self) {
        for s in self.list() {
            s.enforce_retention();
            s.record_gauges();
        }
    }

    /// Takes the shared topology of every stream kept on JetStream (another node's
    /// resharding): called every second by the daemon.
    pub fn sync_topologies(&self) {
        // While the cluster is unreachable there is nothing to learn (readiness and
        // `sluice_jetstream_connected` say so already): no warning every second.
        if self.cluster().is_some_and(|c| !c.connected()) {
            return;
        }
        if let Some(c) = self.api_cluster() {
            self.sync_api_streams(&c);
        }
        for s in self.list() {
            match s.sync_topology(false) {
                Ok(()) | Err(StreamError::Updating(_)) => {}
                // Made through the API and deleted by another node.
                Err(StreamError::NotFound(_)) if s.generation > 0 => {
                    tracing::info!(stream = %s.name, "stream deleted on another node");
                    self.forget(&s);
                }
                Err(e) => {
                    tracing::warn!(stream = %s.name, error = %e, "cannot read the stream's shard topology from the cluster")
                }
            }
        }
    }
}

/// Deletes a folder [`Streams::to_trash`] moved out (a failure is left to the next start).
fn remove_trashed(name: &str, gone: &Path) {
    if let Err(e) = std::fs::remove_dir_all(gone) {
        tracing::warn!(stream = %name, dir = %gone.display(), error = %e, "removing a deleted stream's records failed; the next start removes them");
    }
}

fn stored_meta(dir: &Path) -> Option<StreamMeta> {
    serde_json::from_str(&std::fs::read_to_string(dir.join("stream.json")).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    /// A shard log whose next append is cut short after `cut` records, as another node's
    /// append (or, `sealed`, a seal) cuts a JetStream batch: only those are written, and
    /// the commit reports them as a stored prefix. (The race itself cannot be forced on a
    /// real cluster; what the stream does with its answer can.)
    struct CutShort {
        log: ShardLog,
        cut: std::sync::Mutex<Option<(usize, bool)>>,
        armed: std::sync::Mutex<Option<(usize, bool)>>,
        /// Every append after the cut fails (the cluster went away).
        then_down: bool,
    }

    impl ShardStorage for CutShort {
        fn append_unsynced(&self, entries: &[Entry<'_>]) -> Result<Appended, StorageError> {
            if self.then_down && self.cut.lock().unwrap().is_none() {
                return Err(StorageError::Cluster("down".into()));
            }
            let cut = self.cut.lock().unwrap().take();
            *self.armed.lock().unwrap() = cut;
            let n = cut.map_or(entries.len(), |c| c.0.min(entries.len()));
            ShardStorage::append_unsynced(&self.log, &entries[..n])
        }
        fn commit(&self, commit: u64) -> Result<(), StorageError> {
            ShardStorage::commit(&self.log, commit)?;
            match self.armed.lock().unwrap().take() {
                Some((stored, sealed)) => Err(StorageError::Partial { stored, sealed }),
                None => Ok(()),
            }
        }
        fn read(&self, from: u64, n: usize, b: usize) -> Result<Vec<StoredRecord>, StorageError> {
            ShardStorage::read(&self.log, from, n, b)
        }
        fn seek_timestamp(&self, ts: i64) -> Result<u64, StorageError> {
            ShardStorage::seek_timestamp(&self.log, ts)
        }
        fn first_seq(&self) -> u64 {
            ShardStorage::first_seq(&self.log)
        }
        fn next_seq(&self) -> u64 {
            ShardStorage::next_seq(&self.log)
        }
        fn last_seq(&self) -> Option<u64> {
            ShardStorage::last_seq(&self.log)
        }
        fn records(&self) -> u64 {
            ShardStorage::records(&self.log)
        }
        fn total_bytes(&self) -> u64 {
            ShardStorage::total_bytes(&self.log)
        }
        fn arrival_range(&self) -> Option<(i64, i64)> {
            ShardStorage::arrival_range(&self.log)
        }
        fn sync(&self) -> Result<(), StorageError> {
            ShardStorage::sync(&self.log)
        }
        fn enforce_retention(&self, cutoff: i64, max: Option<u64>) -> Result<usize, StorageError> {
            ShardStorage::enforce_retention(&self.log, cutoff, max)
        }
        fn retire(&self) {}
        fn unretire(&self) {}
        fn close(&self) -> Result<(), StorageError> {
            ShardStorage::close(&self.log)
        }
    }

    fn cut_short_shard(dir: &Path, cut: (usize, bool)) -> Shard {
        cut_short_shard_of(dir, cut, false, &Topology::uniform(1, 0).shards[0])
    }

    fn cut_short_shard_of(
        dir: &Path,
        cut: (usize, bool),
        then_down: bool,
        def: &ShardDef,
    ) -> Shard {
        let (log, _) = ShardLog::open(dir, Options::default()).unwrap();
        Shard {
            id: shard_id(def.index),
            index: def.index,
            start: def.start,
            end: def.end,
            parent: None,
            adjacent_parent: None,
            created_ms: 0,
            log: Box::new(CutShort {
                log,
                cut: std::sync::Mutex::new(Some(cut)),
                armed: std::sync::Mutex::new(None),
                then_down,
            }),
            fs_sync: None,
            gate: RwLock::new(None),
            incoming_records: metrics::counter!("test_records"),
            incoming_bytes: metrics::counter!("test_bytes"),
            consumers: Default::default(),
            leased: Default::default(),
        }
    }

    /// A batch cut short after a stored prefix: the prefix keeps its sequence numbers,
    /// the rest is appended again after it (another writer's appends) or handed back to
    /// be routed again (a seal) — never stored twice, never reported failed whole.
    #[test]
    fn a_batch_cut_short_keeps_its_stored_prefix() {
        let entries: Vec<Entry<'_>> = (0..4u8)
            .map(|_| Entry {
                key: b"k",
                data: b"d",
                arrival_ms: 1,
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let sh = cut_short_shard(dir.path(), (2, false));
        let out = append_groups(&[(&sh, &entries)]);
        assert_eq!(out[0].seqs, [0, 1, 2, 3]);
        assert!(out[0].error.is_none(), "{:?}", out[0].error);
        assert_eq!(sh.log.records(), 4, "each record once");

        let dir = tempfile::tempdir().unwrap();
        let sh = cut_short_shard(dir.path(), (1, true));
        let out = append_groups(&[(&sh, &entries)]);
        assert_eq!(out[0].seqs, [0]);
        assert!(matches!(out[0].error, Some(StreamError::ShardClosed(0))));
        assert_eq!(sh.log.records(), 1);
    }

    /// A stream append whose one shard stores a prefix and then fails names exactly the
    /// records not stored; the other shard's records are stored.
    #[test]
    fn a_failing_shard_fails_only_its_records_not_stored() {
        let dir = tempfile::tempdir().unwrap();
        let st = open(dir.path(), Fsync::Batch);
        let set = st.shards();
        let def = set.topology.get(0).unwrap().clone();
        let broken = Arc::new(cut_short_shard_of(
            &dir.path().join("broken"),
            (1, false),
            true,
            &def,
        ));
        let all = vec![broken.clone(), set.all[1].clone()];
        let replaced = ShardSet {
            open: all.clone(),
            all,
            topology: set.topology.clone(),
        };
        *st.shards.write().unwrap() = Arc::new(replaced);
        let keys: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
        let entries: Vec<Entry<'_>> = keys
            .iter()
            .map(|k| Entry {
                key: k.as_bytes(),
                data: b"d",
                arrival_ms: 1,
            })
            .collect();
        let to_broken: Vec<usize> = (0..entries.len())
            .filter(|&i| st.shards().route(hash_key(entries[i].key)).index == 0)
            .collect();
        assert!(to_broken.len() >= 2 && to_broken.len() < entries.len());
        let e = st.append_routed(&entries).unwrap_err();
        assert_eq!(e.failed, to_broken[1..], "all but the stored first one");
        assert!(e.to_string().contains("down"), "{e}");
        assert_eq!(broken.log.records(), 1);
        assert_eq!(
            set.all[1].log.records() as usize,
            entries.len() - to_broken.len()
        );
    }

    /// Stream `s` (2 shards) of one node on a JetStream cluster (`cl`), in `dir`.
    fn open_on(dir: &Path, cl: &Arc<jetstream::Cluster>) -> Result<Stream, StreamError> {
        let meta = StreamMeta {
            shards: 2,
            topology: None,
            created_ms: 0,
            origin: StreamOrigin::Config,
            retention_hours: 24,
            settings: StreamSettings::default(),
            seq_floor: 0,
            expired_issued: 0,
            configured_shards: 0,
            generation: 0,
        };
        Stream::open(
            dir.join("s"),
            "s",
            &meta,
            Fsync::Batch,
            1 << 20,
            None,
            Backend::JetStream(cl.clone()),
        )
    }

    /// A resharding on one node of a cluster is the other's at its next look; closed
    /// shards past retention expire for both — out of the shared topology, their
    /// JetStream streams deleted.
    #[test]
    fn closed_shards_expire_for_every_node_of_a_cluster() {
        let nats = crate::testing::NatsCluster::start(1);
        let (ca, cb) = (
            jetstream::tests::node(&nats, 1, "E"),
            jetstream::tests::node(&nats, 1, "E"),
        );
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = nats.wait_for(|| open_on(da.path(), &ca));
        let b = open_on(db.path(), &cb).unwrap();
        a.scale_to(3, false).unwrap();
        b.sync_topology(false).unwrap();
        assert_eq!(b.shards().topology, a.shards().topology);
        let closed: Vec<u32> = a
            .shards()
            .topology
            .shards
            .iter()
            .filter(|d| !d.is_open())
            .map(|d| d.index)
            .collect();
        assert!(!closed.is_empty());
        std::thread::sleep(Duration::from_millis(5));
        *a.retention.write().unwrap() = Duration::ZERO;
        a.enforce_retention();
        b.sync_topology(false).unwrap();
        for st in [&a, &b] {
            let t = st.shards().topology.clone();
            assert!(closed.iter().all(|i| t.get(*i).is_none()), "{t:?}");
            assert_eq!(t.open().len(), 3);
        }
        let js = ca.context();
        for i in closed {
            let name = format!(
                "E{}_{}",
                jetstream::token("s"),
                jetstream::token(&shard_id(i))
            );
            let gone = ca
                .run({
                    let (js, name) = (js.clone(), name.clone());
                    async move { js.get_stream(&name).await.is_err() }
                })
                .unwrap();
            assert!(gone, "{name} deleted");
        }
    }

    fn open(dir: &Path, fsync: Fsync) -> Stream {
        let meta = StreamMeta {
            shards: 2,
            topology: None,
            created_ms: 0,
            origin: StreamOrigin::Config,
            retention_hours: 24,
            settings: StreamSettings::default(),
            seq_floor: 0,
            expired_issued: 0,
            configured_shards: 0,
            generation: 0,
        };
        Stream::open(
            dir.join("s"),
            "s",
            &meta,
            fsync,
            1 << 20,
            None,
            Backend::Log,
        )
        .unwrap()
    }

    #[test]
    fn interval_fsync_runs_when_due_and_only_then() {
        let dir = std::env::temp_dir().join(format!("sluice-stream-test-{}", std::process::id()));
        let st = open(&dir, Fsync::Interval(Duration::from_millis(20)));
        let before = st.last_sync_ms.load(Ordering::Relaxed);
        st.sync_if_due();
        assert_eq!(
            st.last_sync_ms.load(Ordering::Relaxed),
            before,
            "not due yet"
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while st.last_sync_ms.load(Ordering::Relaxed) == before
            && std::time::Instant::now() < deadline
        {
            st.sync_if_due();
            std::thread::yield_now();
        }
        assert!(
            st.last_sync_ms.load(Ordering::Relaxed) >= before + 20,
            "synced once due"
        );
        let batch = open(&dir.join("b"), Fsync::Batch);
        let b0 = batch.last_sync_ms.load(Ordering::Relaxed);
        batch.sync_if_due();
        assert_eq!(
            batch.last_sync_ms.load(Ordering::Relaxed),
            b0,
            "batch streams sync on append instead"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A closed shard leaves with its records: once its closing time is past retention it
    /// is forgotten (lineage persisted) and its folder removed; its children stay.
    #[test]
    fn a_stream_made_again_under_a_deleted_name_numbers_above_the_old_one() {
        let tmp = tempfile::tempdir().unwrap();
        let streams = Streams::open(tmp.path()).unwrap();
        let put = |st: &Stream, n: usize| {
            let sh = st.shards();
            let e = Entry {
                key: b"k",
                data: b"d",
                arrival_ms: 1,
            };
            for _ in 0..n {
                sh.all[0].append(&[e]).unwrap();
            }
        };
        let old = streams.create("s", 1, StreamSettings::default()).unwrap();
        put(&old, 5);
        // A split shard that expires still counts: checkpoints may name it.
        let mid = old.shards().get(0).unwrap().end / 2;
        let (a, _) = old.split_shard(0, mid).unwrap();
        *old.retention.write().unwrap() = Duration::ZERO;
        let closed_ms = old.shards().get(0).unwrap().closed().unwrap().ms;
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while now_ms() <= closed_ms && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        old.enforce_retention();
        assert!(old.shards().get(0).is_none(), "shard 0 expired");
        assert!(old.shards().get(a).unwrap().log.next_seq() < 5);
        streams.delete("s", false).unwrap();
        assert!(old.is_deleted());
        let new = streams.create("s", 1, StreamSettings::default()).unwrap();
        assert!(!new.is_deleted());
        let sh = new.shards();
        assert!(
            sh.all[0].log.first_seq() >= 5,
            "above shard 0's old records"
        );
        put(&new, 1);
        assert!(new.shards().all[0].read(0, 10, usize::MAX).unwrap()[0].seq >= 5);
        // Its children too, and after a restart.
        let mid = sh.all[0].end / 2;
        let (c, _) = new.split_shard(0, mid).unwrap();
        assert!(new.shards().get(c).unwrap().log.next_seq() >= 5);
        drop((sh, new, old));
        streams.close();
        drop(streams);
        let streams = Streams::open(tmp.path()).unwrap();
        let st = streams.get("s").unwrap();
        assert!(st.shards().all.iter().all(|s| s.log.first_seq() >= 5));
        // A damaged floor file refuses the next creation rather than starting below it.
        std::fs::write(tmp.path().join("seq-floor.json"), b"{not json").unwrap();
        assert!(streams.create("t", 1, StreamSettings::default()).is_err());
    }

    #[test]
    fn a_deletion_that_cannot_raise_the_floor_leaves_the_stream_as_it_was() {
        let tmp = tempfile::tempdir().unwrap();
        let streams = Streams::open(tmp.path()).unwrap();
        let st = streams.create("s", 1, StreamSettings::default()).unwrap();
        let put = |st: &Stream| {
            st.shards().all[0].append(&[Entry {
                key: b"k",
                data: b"d",
                arrival_ms: 1,
            }])
        };
        put(&st).unwrap();
        std::fs::write(tmp.path().join("seq-floor.json"), b"{damaged").unwrap();
        assert!(streams.delete("s", false).is_err());
        assert!(
            !st.is_deleted() && streams.get("s").is_some(),
            "still there"
        );
        put(&st).expect("takes appends again");
        assert!(tmp.path().join("streams/s/stream.json").exists());
        std::fs::remove_file(tmp.path().join("seq-floor.json")).unwrap();
        streams.delete("s", false).unwrap();
        assert!(st.is_deleted() && put(&st).is_err());
        assert!(!tmp.path().join("streams/s").exists());
    }

    #[test]
    fn a_config_stream_left_on_disk_is_not_taken_over_by_create_stream() {
        let tmp = tempfile::tempdir().unwrap();
        let streams = Streams::open(tmp.path()).unwrap();
        let spec = StreamSpec {
            name: "c".into(),
            file: "x.toml".into(),
            shards: 1,
            retention: Duration::from_secs(3600),
            max_record_size: 1 << 20,
            max_bytes: None,
            fsync: Fsync::None,
            write_limit: None,
            storage: crate::spec::StorageKind::Log,
        };
        streams
            .apply_config(&BTreeMap::from([("c".to_string(), spec)]))
            .unwrap();
        let gone = streams.apply_config(&BTreeMap::new()).unwrap();
        assert_eq!(gone, ["c"]);
        assert!(matches!(
            streams.create("c", 1, StreamSettings::default()),
            Err(StreamError::LeftOnDisk(_))
        ));
        // A folder without `stream.json` (an interrupted deletion) is not adopted.
        let stale = tmp.path().join("streams").join("stale").join(shard_id(0));
        std::fs::create_dir_all(&stale).unwrap();
        std::fs::write(stale.join("00000000000000000000.seg"), b"old records").unwrap();
        let st = streams
            .create("stale", 1, StreamSettings::default())
            .unwrap();
        assert!(st.shards().all[0]
            .read(0, 10, usize::MAX)
            .unwrap()
            .is_empty());
        // And what a deletion moved out is gone at the next start.
        std::fs::create_dir_all(tmp.path().join("streams.deleted").join("x.1")).unwrap();
        drop((st, streams));
        let _ = Streams::open(tmp.path()).unwrap();
        assert!(!tmp.path().join("streams.deleted").exists());
    }

    #[test]
    fn closed_shards_expire_with_their_records() {
        let tmp = tempfile::tempdir().unwrap();
        let st = open(tmp.path(), Fsync::None);
        let mid = st.shards().get(0).unwrap().end / 2;
        let (a, b) = st.split_shard(0, mid).unwrap();
        let parent_dir = tmp.path().join("s").join(shard_id(0));
        assert!(parent_dir.exists());
        st.enforce_retention();
        assert!(st.shards().get(0).is_some(), "kept while within retention");
        *st.retention.write().unwrap() = Duration::ZERO;
        let closed_ms = st.shards().get(0).unwrap().closed().unwrap().ms;
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while now_ms() <= closed_ms && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        st.enforce_retention();
        let set = st.shards();
        assert!(set.get(0).is_none(), "the expired parent is forgotten");
        assert!(set.get(a).is_some() && set.get(b).is_some() && set.get(1).is_some());
        assert!(!parent_dir.exists(), "and its folder removed");
        let meta = stored_meta(&tmp.path().join("s")).unwrap();
        let topo = meta.topology.unwrap();
        assert!(topo.get(0).is_none() && topo.get(a).is_some(), "persisted");
    }

    #[test]
    fn write_limits_refill_over_time() {
        let dir = std::env::temp_dir().join(format!("sluice-stream-limit-{}", std::process::id()));
        let st = open(&dir, Fsync::None);
        st.set_write_limit(Some(WriteLimit {
            bytes_per_sec: Some(100),
            records_per_sec: None,
        }));
        assert!(st.admit(0, 60));
        assert!(!st.admit(0, 60), "only 40 bytes left this second");
        assert!(st.admit(1, 60), "each shard has its own budget");
        st.set_write_limit(None);
        assert!(st.admit(0, 1 << 20), "limits apply live, and can be lifted");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
