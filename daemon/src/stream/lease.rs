//! Shard leases (issue #12): which sluiced node runs a pipeline's reading of which shard of
//! a stream kept on JetStream, the way the KCL's lease table does it — in a JetStream
//! stream used as a key-value table (`<prefix>-leases`: one subject per key, the newest
//! message of a subject is its value, its sequence the revision; a write names the
//! revision it replaces with `Nats-Expected-Last-Subject-Sequence`, which is what
//! JetStream's own key-value buckets do underneath — their client API does not speak to
//! the 2.9 servers here), so several nodes share a pipeline's shards.
//!
//! Keys: `lease.<pipeline>.<stream>.<shard>` → `{owner, expires_ms, checkpoint}` (the
//! checkpoint lives with the lease: a new owner resumes where the last one's deliveries
//! were acknowledged), and `members.<pipeline>` → `{node: expires_ms}`, the nodes running
//! the pipeline now. Every change is a compare-and-set on the key's revision, so two nodes
//! never both believe they hold one lease: a node whose renewal fails has lost it.
//!
//! A node ticks every third of the lease duration: it renews its leases (with their
//! checkpoints), counts the live members, takes free or expired leases up to its fair
//! share (`ceil(shards / members)`), and gives back what is above it — only leases whose
//! shards have nothing in flight, so the next owner starts where this one delivered. A
//! dead node's leases expire after at most one lease duration and are taken within a tick.
//! Expiry compares wall clocks: nodes' clocks must agree to well within the duration.

use super::jetstream::Cluster;
use super::storage::StorageError;
use async_nats::jetstream;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a lease's checkpoint may be: the `stream` source's next sequence number (`u64`),
/// the `kinesis` source's last delivered sequence number (`String`).
pub trait LeaseCheckpoint:
    Serialize + serde::de::DeserializeOwned + Clone + PartialEq + Send + 'static
{
}
impl<T: Serialize + serde::de::DeserializeOwned + Clone + PartialEq + Send + 'static>
    LeaseCheckpoint for T
{
}

/// One lease's value.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Lease<C = u64> {
    /// The node holding it (empty: given back).
    pub owner: String,
    /// Until when (ms since the epoch, the owner's clock).
    pub expires_ms: i64,
    /// Where the shard's delivery stands.
    pub checkpoint: Option<C>,
}

/// What a tick changed.
#[derive(Debug)]
pub struct Changes<C = u64> {
    /// Leases taken: shard id and the checkpoint they carried.
    pub acquired: Vec<(String, Option<C>)>,
    /// Leases this node no longer holds (renewal failed, or given back).
    pub lost: Vec<String>,
    /// Every lease's checkpoint as last seen, by shard id (whether a shard another node
    /// reads is finished).
    pub checkpoints: BTreeMap<String, C>,
}

impl<C> Default for Changes<C> {
    fn default() -> Self {
        Changes {
            acquired: Vec::new(),
            lost: Vec::new(),
            checkpoints: BTreeMap::new(),
        }
    }
}

/// This node's leases on one stream for one pipeline.
pub struct Leases<C = u64> {
    cluster: Arc<Cluster>,
    kv: Table,
    pipeline: String,
    stream: String,
    node: String,
    duration: Duration,
    /// Held leases: shard id → (revision, checkpoint written).
    held: BTreeMap<String, (u64, Option<C>)>,
    /// Until when each held lease may be read under, by this node's monotonic clock:
    /// three quarters of the duration from the start of its last successful write — so
    /// a node that cannot reach the cluster stops reading before another may take over.
    valid_until: BTreeMap<String, Instant>,
    next_tick: Option<Instant>,
    /// When a tick or [`Leases::renew_if_idle`] last renewed the held leases.
    renewed_at: Instant,
    /// Leases the renewer found taken, reported by the next tick.
    lost_pending: Vec<String>,
    /// Held leases above this node's share that are busy: not read any more (see
    /// [`Leases::reads`]), so their batches finish and the next tick gives them back.
    draining: BTreeSet<String>,
    owned_gauges: BTreeMap<String, metrics::Gauge>,
    takeovers: metrics::Counter,
    lost: metrics::Counter,
}

/// [`Leases`] shared with a renewer thread, which renews the held leases whenever the
/// reader has not ticked for a third of the duration — a pipeline held back by a slow sink
/// stops polling, and must not lose its shards for it. Every renewal goes through the one
/// lock, so the reader's and the renewer's compare-and-sets never race each other.
pub struct SharedLeases<C: LeaseCheckpoint = u64> {
    inner: Arc<std::sync::Mutex<Leases<C>>>,
}

impl<C: LeaseCheckpoint> SharedLeases<C> {
    /// Opens the leases ([`Leases::open`]) and starts their renewer (it ends when this is
    /// dropped).
    pub fn open(
        cluster: Arc<Cluster>,
        pipeline: &str,
        stream: &str,
    ) -> Result<SharedLeases<C>, StorageError> {
        let leases = Leases::open(cluster, pipeline, stream)?;
        let period = leases.duration / 6;
        let inner = Arc::new(std::sync::Mutex::new(leases));
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("sluice-leases".into())
            .spawn(move || loop {
                std::thread::sleep(period);
                let Some(l) = weak.upgrade() else {
                    return;
                };
                l.lock().unwrap_or_else(|p| p.into_inner()).renew_if_idle();
            })
            .map_err(|e| err("cannot start the lease renewer", e))?;
        Ok(SharedLeases { inner })
    }

    /// The leases, for a call.
    pub fn lock(&self) -> std::sync::MutexGuard<'_, Leases<C>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The key of the lease of `pipeline`'s reading of `shard` of `stream`.
fn lease_key(pipeline: &str, stream: &str, shard: &str) -> String {
    format!(
        "lease.{}.{}.{}",
        super::jetstream::token(pipeline),
        super::jetstream::token(stream),
        super::jetstream::token(shard)
    )
}

/// A JetStream stream used as a key-value table (see the module's doc): one subject per
/// key, the newest message its value, its sequence the revision every write names.
#[derive(Clone)]
pub(super) struct Table {
    js: jetstream::Context,
    stream: jetstream::stream::Stream,
    subjects: String,
}

/// Why a write was refused.
pub(super) enum Refused {
    /// The key's revision is not the one named: another node wrote it first.
    Conflict,
    Other(String),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Conflict => f.write_str("another node wrote it first"),
            Refused::Other(e) => f.write_str(e),
        }
    }
}

impl Table {
    /// Opens the lease table of `cluster` (creating it if needed).
    fn open(cluster: &Arc<Cluster>) -> Result<Table, StorageError> {
        Table::open_named(cluster, "leases", "sluice shard leases")
    }

    /// Opens (creating if needed) the table `<prefix>-<suffix>` of `cluster`.
    pub(super) fn open_named(
        cluster: &Arc<Cluster>,
        suffix: &str,
        description: &str,
    ) -> Result<Table, StorageError> {
        let js = cluster.context();
        let name = format!("{}-{suffix}", cluster.prefix());
        let subjects = name.clone();
        let config = jetstream::stream::Config {
            name: name.clone(),
            subjects: vec![format!("{subjects}.>")],
            description: Some(description.into()),
            max_messages_per_subject: 1,
            max_messages: -1,
            max_bytes: -1,
            max_message_size: -1,
            num_replicas: cluster.replicas(),
            storage: jetstream::stream::StorageType::File,
            discard: jetstream::stream::DiscardPolicy::Old,
            retention: jetstream::stream::RetentionPolicy::Limits,
            ..Default::default()
        };
        let table = cluster
            .ensure_stream(config, true)
            .map_err(|e| StorageError::Cluster(format!("cannot open the table {name}: {e}")))?;
        Ok(Table {
            js,
            stream: table,
            subjects,
        })
    }

    /// The key's newest value and its revision.
    pub(super) async fn entry(&self, key: &str) -> Result<Option<(u64, bytes::Bytes)>, Refused> {
        let subject = format!("{}.{key}", self.subjects);
        match self.stream.get_last_raw_message_by_subject(&subject).await {
            Ok(m) => Ok(Some((m.sequence, m.payload))),
            Err(e) if e.kind() == jetstream::stream::LastRawMessageErrorKind::NoMessageFound => {
                Ok(None)
            }
            Err(e) => Err(Refused::Other(e.to_string())),
        }
    }

    /// Every key starting with `prefix` that holds a value.
    pub(super) async fn keys(&self, prefix: &str) -> Result<Vec<String>, Refused> {
        use futures_util::TryStreamExt as _;
        let head = format!("{}.", self.subjects);
        let mut subjects = self
            .stream
            .info_with_subjects(format!("{head}{prefix}>"))
            .await
            .map_err(|e| Refused::Other(e.to_string()))?;
        let mut keys = Vec::new();
        while let Some((subject, _)) = subjects
            .try_next()
            .await
            .map_err(|e| Refused::Other(e.to_string()))?
        {
            if let Some(k) = subject.strip_prefix(&head) {
                keys.push(k.to_string());
            }
        }
        keys.sort();
        Ok(keys)
    }

    /// Writes `value` if the key's revision is `revision` (0: the key has none).
    pub(super) async fn write(
        &self,
        key: &str,
        value: bytes::Bytes,
        revision: u64,
    ) -> Result<u64, Refused> {
        let subject = format!("{}.{key}", self.subjects);
        let m = jetstream::message::PublishMessage::build()
            .payload(value)
            .expected_last_subject_sequence(revision);
        let ack = self
            .js
            .send_publish(subject, m)
            .await
            .map_err(|e| Refused::Other(e.to_string()))?
            .await;
        match ack {
            Ok(a) => Ok(a.sequence),
            Err(e) if e.kind() == jetstream::context::PublishErrorKind::WrongLastSequence => {
                Err(Refused::Conflict)
            }
            Err(e) => Err(Refused::Other(e.to_string())),
        }
    }
}

fn now_ms() -> i64 {
    crate::record::now_ms()
}

fn err(what: &str, e: impl std::fmt::Display) -> StorageError {
    StorageError::Cluster(format!("shard leases: {what}: {e}"))
}

impl<C: LeaseCheckpoint> Leases<C> {
    /// Opens (creating if needed) the lease bucket for `pipeline` reading `stream`.
    pub fn open(
        cluster: Arc<Cluster>,
        pipeline: &str,
        stream: &str,
    ) -> Result<Leases<C>, StorageError> {
        let store = Table::open(&cluster)?;
        let labels = [
            ("pipeline", pipeline.to_string()),
            ("stream", stream.to_string()),
        ];
        let takeovers = metrics::counter!("sluice_lease_takeovers_total", &labels);
        takeovers.increment(0);
        let lost = metrics::counter!("sluice_lease_lost_total", &labels);
        lost.increment(0);
        Ok(Leases {
            node: cluster.node().to_string(),
            duration: cluster.lease_duration(),
            cluster,
            kv: store,
            pipeline: pipeline.to_string(),
            stream: stream.to_string(),
            held: BTreeMap::new(),
            valid_until: BTreeMap::new(),
            next_tick: None,
            renewed_at: Instant::now(),
            lost_pending: Vec::new(),
            draining: BTreeSet::new(),
            owned_gauges: BTreeMap::new(),
            takeovers,
            lost,
        })
    }

    fn key(&self, shard: &str) -> String {
        lease_key(&self.pipeline, &self.stream, shard)
    }

    /// Whether this node holds the lease of `shard`.
    pub fn owns(&self, shard: &str) -> bool {
        self.held.contains_key(shard)
            && self
                .valid_until
                .get(shard)
                .is_some_and(|&t| Instant::now() < t)
    }

    /// The checkpoint last written into the lease of `shard`, while this node holds it
    /// (after [`Leases::checkpoint`]: whether that write went through).
    pub fn written(&self, shard: &str) -> Option<&C> {
        self.held.get(shard).and_then(|h| h.1.as_ref())
    }

    /// Whether this node reads `shard` now: it holds the lease ([`Leases::owns`]) and is
    /// not giving it back.
    pub fn reads(&self, shard: &str) -> bool {
        self.owns(shard) && !self.draining.contains(shard)
    }

    /// Whether a tick is due.
    pub fn due(&self) -> bool {
        self.next_tick.is_none_or(|t| Instant::now() >= t)
    }

    fn gauge(&mut self, shard: &str, v: f64) {
        let g = self
            .owned_gauges
            .entry(shard.to_string())
            .or_insert_with(|| {
                metrics::gauge!(
                    "sluice_lease_owned",
                    "pipeline" => self.pipeline.clone(),
                    "stream" => self.stream.clone(),
                    "shard" => shard.to_string()
                )
            });
        g.set(v);
    }

    async fn read(kv: &Table, key: &str) -> Result<Option<(u64, Option<Lease<C>>)>, Refused> {
        Ok(kv
            .entry(key)
            .await?
            .map(|(rev, v)| (rev, serde_json::from_slice(&v).ok())))
    }

    /// Renews held leases with `checkpoints`, refreshes membership, takes leases up to this
    /// node's share of `shards` and gives back held leases above it among `idle` (shards
    /// with nothing in flight). Called when [`Leases::due`].
    pub fn tick(
        &mut self,
        shards: &[String],
        checkpoints: &BTreeMap<String, C>,
        idle: &BTreeSet<String>,
    ) -> Result<Changes<C>, StorageError> {
        self.next_tick = Some(Instant::now() + self.duration / 3);
        self.renewed_at = Instant::now();
        let mut ch = Changes::<C> {
            lost: std::mem::take(&mut self.lost_pending),
            ..Changes::default()
        };
        let dur_ms = i64::try_from(self.duration.as_millis()).unwrap_or(i64::MAX);
        // Membership: one key per pipeline, a CAS-updated map of live nodes.
        let members_key = self.members_key();
        let (kv, node, key) = (self.kv.clone(), self.node.clone(), members_key);
        let members = self
            .cluster
            .run(async move {
                for _ in 0..5 {
                    let found = kv.entry(&key).await.map_err(|e| e.to_string())?;
                    let (rev, mut map): (u64, BTreeMap<String, i64>) = match found {
                        Some((rev, v)) => (rev, serde_json::from_slice(&v).unwrap_or_default()),
                        None => (0, BTreeMap::new()),
                    };
                    let now = now_ms();
                    map.retain(|_, &mut exp| exp > now);
                    map.insert(node.clone(), now + dur_ms);
                    let body = bytes::Bytes::from(serde_json::to_vec(&map).unwrap_or_default());
                    match kv.write(&key, body, rev).await {
                        Ok(_) => return Ok(map.len()),
                        Err(Refused::Conflict) => continue,
                        Err(e) => return Err(e.to_string()),
                    }
                }
                Err("membership kept changing under this node".to_string())
            })?
            .map_err(|e| err("cannot update the pipeline's members", e))?;
        let share = shards.len().div_ceil(members.max(1));
        // Renew what is held; a failed renewal means another node has it now.
        let held: Vec<(String, u64)> = self.held.iter().map(|(k, v)| (k.clone(), v.0)).collect();
        for (shard, rev) in held {
            let cp = checkpoints
                .get(&shard)
                .cloned()
                .or_else(|| self.held.get(&shard).and_then(|h| h.1.clone()));
            match self.claim(&shard, rev, cp)? {
                Ok(()) => {}
                Err(Refused::Conflict) => {
                    tracing::warn!(pipeline = %self.pipeline, stream = %self.stream, shard = %shard, "lease lost to another node");
                    self.held.remove(&shard);
                    self.lost.increment(1);
                    self.gauge(&shard, 0.0);
                    ch.lost.push(shard);
                }
                Err(e) => return Err(err("cannot renew a lease", e)),
            }
        }
        // Read every lease: checkpoints, and which are free.
        let mut free = Vec::new();
        for shard in shards {
            let (kv, key) = (self.kv.clone(), self.key(shard));
            let got = self
                .cluster
                .run(async move { Self::read(&kv, &key).await })?
                .map_err(|e| err("cannot read a lease", e))?;
            let (rev, lease) = match got {
                None => (0, None),
                Some((rev, l)) => (rev, l),
            };
            if let Some(cp) = lease.as_ref().and_then(|l| l.checkpoint.clone()) {
                ch.checkpoints.insert(shard.clone(), cp);
            }
            if self.held.contains_key(shard) {
                continue;
            }
            // This node's name on a lease it does not hold is an earlier run of this
            // pipeline here (a restart): taken back at once, not after it expires.
            let taken = lease.as_ref().is_some_and(|l| {
                !l.owner.is_empty() && l.owner != self.node && l.expires_ms > now_ms()
            });
            if !taken {
                free.push((shard.clone(), rev, lease));
            }
        }
        // Take free leases up to the share.
        for (shard, rev, old) in free {
            if self.held.len() >= share {
                break;
            }
            let checkpoint = old.as_ref().and_then(|l| l.checkpoint.clone());
            // Another node was quicker: it is theirs.
            if self.claim(&shard, rev, checkpoint.clone())?.is_err() {
                continue;
            }
            if old
                .as_ref()
                .is_some_and(|l| !l.owner.is_empty() && l.owner != self.node)
            {
                self.takeovers.increment(1);
                tracing::info!(pipeline = %self.pipeline, stream = %self.stream, shard = %shard, from = %old.as_ref().map(|l| l.owner.as_str()).unwrap_or(""), "took over an expired lease");
            }
            self.gauge(&shard, 1.0);
            ch.acquired.push((shard, checkpoint));
        }
        // Give back what is above the share, idle shards only.
        let extra: Vec<String> = self
            .held
            .keys()
            .filter(|s| idle.contains(*s))
            .take(self.held.len().saturating_sub(share))
            .cloned()
            .collect();
        for shard in extra {
            self.give_back(&shard, checkpoints)?;
            tracing::info!(pipeline = %self.pipeline, stream = %self.stream, shard = %shard, "gave a lease back to balance the nodes");
            ch.lost.push(shard);
        }
        // Busy ones above the share (the last by id, the same ones each tick) stop being
        // read, so that they are idle — and go back — at a later tick.
        let surplus = self.held.len().saturating_sub(share);
        let draining: BTreeSet<String> = self.held.keys().rev().take(surplus).cloned().collect();
        if draining != self.draining && !draining.is_empty() {
            tracing::info!(pipeline = %self.pipeline, stream = %self.stream, shards = ?draining, "above this node's share: finishing these shards' batches to give their leases back");
        }
        self.draining = draining;
        Ok(ch)
    }

    /// Renews the held leases (with the checkpoints they carry) when no tick did for a
    /// third of the duration; a lease found taken is reported lost by the next tick.
    pub fn renew_if_idle(&mut self) {
        if self.renewed_at.elapsed() < self.duration / 3 || self.held.is_empty() {
            return;
        }
        self.renewed_at = Instant::now();
        let held: Vec<(String, u64, Option<C>)> = self
            .held
            .iter()
            .map(|(k, v)| (k.clone(), v.0, v.1.clone()))
            .collect();
        for (shard, rev, cp) in held {
            match self.claim(&shard, rev, cp) {
                Ok(Ok(())) => {}
                Ok(Err(Refused::Conflict)) => {
                    tracing::warn!(pipeline = %self.pipeline, stream = %self.stream, shard = %shard, "lease lost to another node");
                    self.held.remove(&shard);
                    self.lost.increment(1);
                    self.gauge(&shard, 0.0);
                    self.lost_pending.push(shard);
                }
                // Unreachable now: the next renewal tries again (the reading stops by
                // itself if none succeeds for three quarters of the duration).
                Ok(Err(_)) | Err(_) => {}
            }
        }
    }

    /// Writes `checkpoints` into the held leases (renewing them too).
    pub fn checkpoint(&mut self, checkpoints: &BTreeMap<String, C>) -> Result<(), StorageError> {
        let held: Vec<(String, u64, Option<C>)> = self
            .held
            .iter()
            .map(|(k, v)| (k.clone(), v.0, v.1.clone()))
            .collect();
        for (shard, rev, old) in held {
            let cp = checkpoints.get(&shard).cloned();
            if cp.is_none() || cp == old {
                continue;
            }
            match self.claim(&shard, rev, cp)? {
                Ok(()) => {}
                Err(Refused::Conflict) => {
                    // Lost: the next tick reports it.
                    tracing::warn!(pipeline = %self.pipeline, stream = %self.stream, shard = %shard, "checkpoint refused: the lease is another node's now");
                }
                Err(e) => return Err(err("cannot write a checkpoint into its lease", e)),
            }
        }
        Ok(())
    }

    /// Gives every held lease back (a clean stop: others take them at once, not after
    /// they expire), with `checkpoints`.
    pub fn release_all(&mut self, checkpoints: &BTreeMap<String, C>) {
        let held: Vec<String> = self.held.keys().cloned().collect();
        for shard in held {
            // At a stop: a lease not given back expires by itself.
            let _ = self.give_back(&shard, checkpoints);
        }
        self.held.clear();
        self.valid_until.clear();
        // Out of the members too: the others' share grows at their next tick, not after
        // this node's membership expired.
        let (kv, node, key) = (self.kv.clone(), self.node.clone(), self.members_key());
        let _ = self.cluster.run(async move {
            for _ in 0..5 {
                let Ok(Some((rev, v))) = kv.entry(&key).await else {
                    return;
                };
                let mut map: BTreeMap<String, i64> = serde_json::from_slice(&v).unwrap_or_default();
                if map.remove(&node).is_none() {
                    return;
                }
                let body = bytes::Bytes::from(serde_json::to_vec(&map).unwrap_or_default());
                match kv.write(&key, body, rev).await {
                    Err(Refused::Conflict) => continue,
                    _ => return,
                }
            }
        });
        self.next_tick = None;
    }

    /// Writes this node's lease of `shard` over revision `rev`: owned for another lease
    /// duration, with `checkpoint`. On success the lease is held, and read under for three
    /// quarters of the duration from now; refused, it is not.
    fn claim(
        &mut self,
        shard: &str,
        rev: u64,
        checkpoint: Option<C>,
    ) -> Result<Result<(), Refused>, StorageError> {
        let dur_ms = i64::try_from(self.duration.as_millis()).unwrap_or(i64::MAX);
        let lease = Lease {
            owner: self.node.clone(),
            expires_ms: now_ms() + dur_ms,
            checkpoint: checkpoint.clone(),
        };
        let (kv, key) = (self.kv.clone(), self.key(shard));
        let sent = Instant::now();
        let body = bytes::Bytes::from(serde_json::to_vec(&lease).unwrap_or_default());
        let done = self
            .cluster
            .run(async move { kv.write(&key, body, rev).await })?;
        Ok(done.map(|r| {
            self.held.insert(shard.to_string(), (r, checkpoint));
            self.valid_until
                .insert(shard.to_string(), sent + self.duration * 3 / 4);
        }))
    }

    /// Gives the lease of `shard` back (no owner), with its checkpoint.
    fn give_back(
        &mut self,
        shard: &str,
        checkpoints: &BTreeMap<String, C>,
    ) -> Result<(), StorageError> {
        let Some((rev, cp)) = self.held.remove(shard) else {
            return Ok(());
        };
        self.valid_until.remove(shard);
        self.gauge(shard, 0.0);
        let lease = Lease {
            owner: String::new(),
            expires_ms: 0,
            checkpoint: checkpoints.get(shard).cloned().or(cp),
        };
        let (kv, key) = (self.kv.clone(), self.key(shard));
        let body = bytes::Bytes::from(serde_json::to_vec(&lease).unwrap_or_default());
        // Refused: another node holds it already; nothing to give back.
        let _ = self
            .cluster
            .run(async move { kv.write(&key, body, rev).await })?;
        Ok(())
    }

    fn members_key(&self) -> String {
        format!("members.{}", super::jetstream::token(&self.pipeline))
    }
}

impl<C> Drop for Leases<C> {
    fn drop(&mut self) {
        // Dropped without `release_all` (a pipeline that failed and restarts): the leases
        // expire or are taken back by the next run here, but this run holds none now.
        for g in self.owned_gauges.values() {
            g.set(0.0);
        }
    }
}

/// A pipeline source whose shards several nodes share: the stream it reads, on its
/// cluster.
#[derive(Clone)]
pub struct SharedSource {
    /// The cluster holding the stream (and the lease table).
    pub cluster: Arc<Cluster>,
    /// The stream's name.
    pub stream: String,
    /// The first position offset a lease's checkpoint (as the source writes it) leaves
    /// to read: the shared intent log retires objects whose records are all below it.
    /// `None` for a checkpoint it does not understand (nothing is retired by it).
    pub next_offset: fn(&serde_json::Value) -> Option<u64>,
}

impl std::fmt::Debug for SharedSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedSource")
            .field("stream", &self.stream)
            .finish()
    }
}

/// A pipeline's delivery records per shard, beside the shard's lease in the same table
/// (`intents.<pipeline>.<stream>.<shard>`): which objects hold which of the shard's records
/// (`crate::delivery` decides the value's form). Each write is a compare-and-set on the
/// key's revision, so a node that read the key at some revision and wrote nothing since
/// is the only writer: a node that took the shard over in between makes its write fail.
pub struct IntentTable {
    cluster: Arc<Cluster>,
    kv: Table,
    pipeline: String,
    stream: String,
}

impl std::fmt::Debug for IntentTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntentTable")
            .field("pipeline", &self.pipeline)
            .field("stream", &self.stream)
            .finish()
    }
}

impl IntentTable {
    /// Opens the table of `pipeline` reading `stream`.
    pub fn open(
        cluster: Arc<Cluster>,
        pipeline: &str,
        stream: &str,
    ) -> Result<IntentTable, StorageError> {
        Ok(IntentTable {
            kv: Table::open(&cluster)?,
            cluster,
            pipeline: pipeline.to_string(),
            stream: stream.to_string(),
        })
    }

    fn key(&self, shard: &str) -> String {
        format!(
            "intents.{}.{}.{}",
            super::jetstream::token(&self.pipeline),
            super::jetstream::token(&self.stream),
            super::jetstream::token(shard)
        )
    }

    /// The shard's value and its revision (none yet: `None`).
    pub fn read(&self, shard: &str) -> Result<Option<(u64, bytes::Bytes)>, StorageError> {
        let (kv, key) = (self.kv.clone(), self.key(shard));
        self.cluster
            .run(async move { kv.entry(&key).await })?
            .map_err(|e| err("cannot read a shard's delivery records", e))
    }

    /// Writes the shard's value over `revision` (0: none yet); the new revision, or `None`
    /// when another node wrote the key since.
    pub fn write(
        &self,
        shard: &str,
        value: bytes::Bytes,
        revision: u64,
    ) -> Result<Option<u64>, StorageError> {
        let (kv, key) = (self.kv.clone(), self.key(shard));
        match self
            .cluster
            .run(async move { kv.write(&key, value, revision).await })?
        {
            Ok(rev) => Ok(Some(rev)),
            Err(Refused::Conflict) => Ok(None),
            Err(e) => Err(err("cannot write a shard's delivery records", e)),
        }
    }

    /// The shard's lease as the cluster holds it now — its owner, and its checkpoint as
    /// the source wrote it (none: no lease yet, or a value this build cannot read).
    pub fn lease(&self, shard: &str) -> Result<Option<Lease<serde_json::Value>>, StorageError> {
        let (kv, key) = (
            self.kv.clone(),
            lease_key(&self.pipeline, &self.stream, shard),
        );
        let found = self
            .cluster
            .run(async move { kv.entry(&key).await })?
            .map_err(|e| err("cannot read a shard's lease", e))?;
        Ok(found.and_then(|(_, v)| serde_json::from_slice(&v).ok()))
    }

    /// This node's name in the cluster.
    pub fn node(&self) -> &str {
        self.cluster.node()
    }

    /// The cluster's lease duration.
    pub fn lease_duration(&self) -> Duration {
        self.cluster.lease_duration()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::jetstream::{Cluster, JetStreamOptions};

    /// A reader held back — no ticks, as when a slow sink stops its polls — keeps its
    /// leases: the renewer renews them, so it may go on reading, and another node cannot
    /// take them.
    #[test]
    fn held_leases_are_renewed_without_ticks() {
        let cluster = crate::testing::NatsCluster::start(1);
        let connect = |node: &str| {
            Cluster::connect(JetStreamOptions {
                servers: cluster.urls(),
                replicas: 1,
                lease_duration: Duration::from_secs(1),
                node: Some(node.into()),
                ..JetStreamOptions::default()
            })
            .unwrap()
        };
        let l: SharedLeases = SharedLeases::open(connect("a"), "p", "s").unwrap();
        let shards = ["shardId-000000000000".to_string()];
        let idle = BTreeSet::new();
        let ch = l.lock().tick(&shards, &BTreeMap::new(), &idle).unwrap();
        assert_eq!(ch.acquired.len(), 1);
        let until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < until {
            assert!(l.lock().owns(&shards[0]), "stopped reading without ticks");
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut other: Leases = Leases::open(connect("b"), "p", "s").unwrap();
        let ch = other.tick(&shards, &BTreeMap::new(), &idle).unwrap();
        assert!(ch.acquired.is_empty(), "another node took a renewed lease");
        let ch = l.lock().tick(&shards, &BTreeMap::new(), &idle).unwrap();
        assert!(ch.lost.is_empty() && l.lock().owns(&shards[0]));
    }

    /// A run of a pipeline that ended without giving its leases back (a failure and
    /// restart in the same process) is followed by one that takes them back at once, not
    /// after they expire; another node's leases still wait for their expiry.
    #[test]
    fn a_later_run_on_the_same_node_takes_its_leases_back_at_once() {
        let cluster = crate::testing::NatsCluster::start(1);
        let connect = |node: &str| {
            Cluster::connect(JetStreamOptions {
                servers: cluster.urls(),
                replicas: 1,
                lease_duration: Duration::from_secs(60),
                node: Some(node.into()),
                ..JetStreamOptions::default()
            })
            .unwrap()
        };
        let shards = ["shardId-000000000000".to_string()];
        let (none, idle) = (BTreeMap::new(), BTreeSet::new());
        let a = connect("a");
        let mut first: Leases = Leases::open(a.clone(), "p", "s").unwrap();
        assert_eq!(first.tick(&shards, &none, &idle).unwrap().acquired.len(), 1);
        drop(first);
        let mut other: Leases = Leases::open(connect("b"), "p", "s").unwrap();
        assert!(other
            .tick(&shards, &none, &idle)
            .unwrap()
            .acquired
            .is_empty());
        let mut again: Leases = Leases::open(a, "p", "s").unwrap();
        assert_eq!(again.tick(&shards, &none, &idle).unwrap().acquired.len(), 1);
    }

    /// A node reads under a lease only while its last renewal is recent: one that stops
    /// renewing (it cannot reach the cluster, say) stops reading within three quarters of
    /// the duration — before the lease expires for the others — and a renewal restores it.
    #[test]
    fn an_unrenewed_lease_stops_being_read_before_it_expires() {
        let cluster = crate::testing::NatsCluster::start(1);
        let c = Cluster::connect(JetStreamOptions {
            servers: cluster.urls(),
            replicas: 1,
            lease_duration: Duration::from_secs(1),
            ..JetStreamOptions::default()
        })
        .unwrap();
        let mut l: Leases = Leases::open(c, "p", "s").unwrap();
        let shards = ["shardId-000000000000".to_string()];
        let idle = BTreeSet::new();
        let ch = l.tick(&shards, &BTreeMap::new(), &idle).unwrap();
        assert_eq!(ch.acquired.len(), 1);
        assert!(l.owns(&shards[0]));
        let since = Instant::now();
        let deadline = since + Duration::from_secs(5);
        while l.owns(&shards[0]) {
            assert!(
                Instant::now() < deadline,
                "still read under an unrenewed lease"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            since.elapsed() <= Duration::from_millis(800),
            "stopped after {:?}: later than 3/4 of the lease",
            since.elapsed()
        );
        // Still this node's in the table: the next tick renews it.
        let ch = l.tick(&shards, &BTreeMap::new(), &idle).unwrap();
        assert!(ch.lost.is_empty() && ch.acquired.is_empty());
        assert!(l.owns(&shards[0]));
    }
}
