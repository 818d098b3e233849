//! The bundled `stream` plugins: a source that reads a stream from its checkpoint and a
//! record sink that appends to a stream. They live in the daemon (they need its streams)
//! but are declared and called through the same ABI descriptor as every other plugin.
//!
//! **Checkpoints**: per pipeline and stream, `data_dir/checkpoints/<pipeline>/<stream>.json`
//! maps each shard to the next sequence number to read. It is replaced atomically (write,
//! fsync, rename, fsync the folder) and only when the host acks a batch — i.e. after the
//! sink confirmed delivery — so a restart resumes at the oldest undelivered record.
//!
//! **Shard leases**: on a stream kept on JetStream, the source reads only the shards whose
//! lease this node holds (`crate::stream::lease`), and the checkpoint lives in the lease
//! instead of the file — so several nodes running the same pipeline share the shards, and
//! a node that takes a shard over resumes where the last one's deliveries were acked.
//!
//! They find the streams and the data directory through their instance handle
//! ([`HostServices`], handed down by the daemon), not through process-wide state.
#![allow(unexpected_cfgs)] // `declare_library!` checks a `dylib` feature this crate does not have

use super::HostServices;
use crate::stream::{Shard, ShardSet, Stream};
use sluice_plugin_api::{
    declare_library, Batch, Completion, Context, Error, NewRecord, Output, Plugin, Poll, Position,
    Sink, Source, Submitted,
};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The host services of this instance: the daemon's streams and data directory.
fn services(ctx: &Context) -> Option<Arc<HostServices>> {
    super::host::services(ctx.instance_handle())
}

fn stream(services: Option<&HostServices>, name: &str) -> Result<Arc<Stream>, Error> {
    let streams = &services
        .ok_or_else(|| Error::fatal("streams are not available (not running in sluiced)"))?
        .streams;
    // Retryable: the stream may be created through the API later.
    streams
        .get(name)
        .ok_or_else(|| Error::retryable(format_args!("stream `{name}` does not exist")))
}

/// The stream a `stream` source — or an `http` source, which reads its stream with one —
/// with options `config_json` in `pipeline` reads, when it is kept on JetStream (its
/// shards are shared by the nodes running the pipeline, under leases).
pub fn shared_stream(
    plugin: &str,
    config_json: &str,
    pipeline: &str,
    services: &HostServices,
) -> Option<crate::stream::lease::SharedSource> {
    let stream = source_stream(plugin, config_json, pipeline)?;
    let cluster = services.streams.get(&stream)?.cluster()?;
    Some(crate::stream::lease::SharedSource {
        cluster,
        stream,
        next_offset,
    })
}

/// The stream a source of `plugin` with options `config_json` in `pipeline` reads with a
/// [`StreamSource`] (`None`: another plugin).
fn source_stream(plugin: &str, config_json: &str, pipeline: &str) -> Option<String> {
    match plugin {
        "stream" => Some(
            serde_json::from_str::<SourceConfig>(config_json)
                .ok()?
                .stream,
        ),
        "http" => Some(
            serde_json::from_str::<super::http_source::HttpSourceConfig>(config_json)
                .ok()?
                .stream
                .unwrap_or_else(|| crate::spec::http_stream(pipeline)),
        ),
        _ => None,
    }
}

/// The checkpoint of a `stream` source is the next sequence number to read, which is
/// the records' position offset.
pub(crate) fn next_offset(checkpoint: &serde_json::Value) -> Option<u64> {
    checkpoint.as_u64()
}

/// Where a new consumer starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Start {
    /// The oldest retained record.
    #[default]
    TrimHorizon,
    /// Only records that arrive from now on.
    Latest,
}

/// `stream` source options.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// The stream to read.
    pub stream: String,
    /// Where to start when there is no checkpoint.
    #[serde(default)]
    pub start: Start,
    /// Most records per poll.
    #[serde(default = "default_batch")]
    pub batch_size: u32,
    /// At most one durable checkpoint write per this interval (and one at stop); `0s`
    /// writes one per acknowledged batch. A later checkpoint only means more replay after
    /// a crash, which object sinks rewrite under the same names (the intent log).
    #[serde(default = "default_checkpoint_interval")]
    pub checkpoint_interval: crate::spec::HumanDuration,
}

fn default_checkpoint_interval() -> crate::spec::HumanDuration {
    crate::spec::HumanDuration(Duration::from_secs(1))
}

fn default_batch() -> u32 {
    500
}

/// Reads a stream shard by shard, round-robin, checkpointing on ack. Follows resharding
/// as the KCL does: a shard is read only once its parents (split or merged from) have
/// been read to their end, so records of one partition key come out in order.
pub struct StreamSource {
    cfg: SourceConfig,
    services: Option<Arc<HostServices>>,
    pipeline: String,
    st: Option<Arc<Stream>>,
    /// The shard set positions were last matched against.
    set: Option<Arc<ShardSet>>,
    /// The checkpoint as loaded (by shard id), for shards not met yet.
    loaded: BTreeMap<String, u64>,
    /// Whether `start = latest` applies to shards met for the first time: only on a first
    /// start (no checkpoint at all), and only to the shards of that first set.
    latest_for_new: bool,
    /// Next sequence to read, per shard index (read position, ahead of the checkpoint).
    read_pos: BTreeMap<u32, u64>,
    /// Next sequence to read, per shard index, as delivered (the checkpoint).
    committed: BTreeMap<u32, u64>,
    /// Closed shards read to their end after their own parents were: a shard's children
    /// may be read once it is here. (Not persisted: after a restart each closed shard
    /// is confirmed again by one empty read, in lineage order.)
    done: std::collections::BTreeSet<u32>,
    /// Positions reached by each polled batch, in poll order.
    in_flight: VecDeque<(u64, u32, u64)>,
    /// Round-robin cursor: the shard index to try first.
    next_shard: u32,
    next_token: u64,
    /// Delivered positions not yet written to the checkpoint file.
    dirty: bool,
    /// When the checkpoint was last written.
    saved_at: std::time::Instant,
    /// `sluice_checkpoint_writes_total{pipeline,stream}`.
    writes: Option<metrics::Counter>,
    /// On a JetStream stream: this node's shard leases (read only those shards).
    leases: Option<crate::stream::lease::SharedLeases>,
    /// Each lease's checkpoint as last seen, by shard id (shards other nodes read).
    lease_view: BTreeMap<String, u64>,
}

fn checkpoint_path(
    services: Option<&HostServices>,
    pipeline: &str,
    stream: &str,
) -> Option<PathBuf> {
    crate::names::check(stream).ok()?;
    let dir = crate::names::child(&services?.data_dir.join("checkpoints"), pipeline).ok()?;
    Some(dir.join(format!("{stream}.json")))
}

/// What a checkpoint file held.
pub(super) enum Checkpoint<V = u64> {
    /// No file: the pipeline never checkpointed this stream.
    Missing,
    /// Positions by shard id.
    At(BTreeMap<String, V>),
    /// Unreadable or not a checkpoint.
    Damaged(String),
}

pub(super) fn load_checkpoint<V: serde::de::DeserializeOwned>(
    path: &std::path::Path,
) -> Checkpoint<V> {
    match std::fs::read_to_string(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Checkpoint::Missing,
        Err(e) => Checkpoint::Damaged(e.to_string()),
        Ok(t) => match serde_json::from_str(&t) {
            Ok(cp) => Checkpoint::At(cp),
            Err(e) => Checkpoint::Damaged(e.to_string()),
        },
    }
}

pub(super) fn store_checkpoint<V: serde::Serialize>(
    path: &std::path::Path,
    cp: &BTreeMap<String, V>,
) -> std::io::Result<()> {
    use std::io::Write as _;
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    sluice_plugin_api::fs::make_dirs_durable(dir)?;
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(serde_json::to_string(cp).unwrap_or_default().as_bytes())?;
    f.sync_data()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

impl Plugin for StreamSource {
    type Config = SourceConfig;
    fn create(cfg: SourceConfig, ctx: &Context) -> Result<Self, Error> {
        if cfg.stream.is_empty() {
            return Err(Error::config_field("stream", "must name a stream"));
        }
        if cfg.batch_size == 0 || cfg.batch_size > 10_000 {
            return Err(Error::config_field(
                "batch_size",
                "must be between 1 and 10000",
            ));
        }
        Ok(StreamSource {
            cfg,
            pipeline: ctx.pipeline().to_string(),
            services: services(ctx),
            st: None,
            set: None,
            loaded: BTreeMap::new(),
            latest_for_new: false,
            read_pos: BTreeMap::new(),
            committed: BTreeMap::new(),
            done: Default::default(),
            in_flight: VecDeque::new(),
            next_shard: 0,
            next_token: 1,
            dirty: false,
            saved_at: std::time::Instant::now(),
            writes: None,
            leases: None,
            lease_view: BTreeMap::new(),
        })
    }

    fn start(&mut self) -> Result<(), Error> {
        let st = stream(self.services.as_deref(), &self.cfg.stream)?;
        if let Some(cluster) = st.cluster() {
            return self.start_leased(st, cluster);
        }
        let path = checkpoint_path(self.services.as_deref(), &self.pipeline, &self.cfg.stream);
        let (cp, damaged) = match path.as_deref().map(load_checkpoint) {
            None | Some(Checkpoint::Missing) => (BTreeMap::new(), false),
            Some(Checkpoint::At(cp)) => (cp, false),
            Some(Checkpoint::Damaged(e)) => {
                // Where delivery stood is unknown: resume from the oldest record still
                // held (replayed objects are rewritten under the same names), never from
                // `latest`, which would skip acknowledged records.
                tracing::error!(pipeline = %self.pipeline, stream = %self.cfg.stream, error = %e, "checkpoint damaged; resuming from the oldest record of every shard");
                metrics::counter!("sluice_checkpoint_damaged_total", "pipeline" => self.pipeline.clone(), "stream" => self.cfg.stream.clone()).increment(1);
                (BTreeMap::new(), true)
            }
        };
        self.loaded = cp;
        let writes = metrics::counter!("sluice_checkpoint_writes_total", "pipeline" => self.pipeline.clone(), "stream" => self.cfg.stream.clone());
        writes.increment(0);
        self.writes = Some(writes);
        self.latest_for_new = self.cfg.start == Start::Latest
            && !damaged
            && matches!(
                path.as_deref().map(load_checkpoint::<u64>),
                None | Some(Checkpoint::Missing)
            );
        self.read_pos.clear();
        self.committed.clear();
        self.done.clear();
        self.set = None;
        self.st = Some(st);
        self.meet_shards();
        if self.latest_for_new {
            // "Latest" is resolved once: the positions it gave are the checkpoint now,
            // so a restart before the first delivery does not skip what arrived meanwhile.
            self.dirty = true;
            self.save_if_due(true);
        }
        // Shards of later sets (children made from now on) start at their beginning.
        self.latest_for_new = false;
        Ok(())
    }

    fn stop(&mut self, _deadline: Duration) -> Result<(), Error> {
        // Every delivered position is in the file when the pipeline stops.
        self.save_if_due(true);
        // Leases go back at once: other nodes need not wait for them to expire.
        let cp = self.checkpoints_by_id();
        if let Some(l) = &mut self.leases {
            l.lock().release_all(&cp);
            if let Some(set) = &self.set {
                for sh in &set.all {
                    sh.set_leased(&self.pipeline, false);
                }
            }
        }
        Ok(())
    }
}

impl Drop for StreamSource {
    fn drop(&mut self) {
        // Every exit path (an error, an aborted drain) keeps the delivered positions, not
        // only a clean stop.
        self.save_if_due(true);
    }
}

impl StreamSource {
    /// `start` on a stream kept on JetStream: positions come with the shard leases.
    fn start_leased(
        &mut self,
        st: Arc<Stream>,
        cluster: Arc<crate::stream::jetstream::Cluster>,
    ) -> Result<(), Error> {
        let leases = crate::stream::lease::SharedLeases::open(cluster, &self.pipeline, &st.name)
            .map_err(|e| Error::retryable(format_args!("{e}")))?;
        let writes = metrics::counter!("sluice_checkpoint_writes_total", "pipeline" => self.pipeline.clone(), "stream" => self.cfg.stream.clone());
        writes.increment(0);
        self.writes = Some(writes);
        self.loaded.clear();
        self.latest_for_new = false;
        self.read_pos.clear();
        self.committed.clear();
        self.done.clear();
        self.set = None;
        self.leases = Some(leases);
        self.st = Some(st);
        self.meet_shards();
        self.tick_leases();
        Ok(())
    }

    /// The delivered positions by shard id.
    fn checkpoints_by_id(&self) -> BTreeMap<String, u64> {
        self.committed
            .iter()
            .map(|(&i, &p)| (crate::stream::shard_id(i), p))
            .collect()
    }

    /// Renews, takes and gives back shard leases (when due) and moves the read positions
    /// with them.
    fn tick_leases(&mut self) {
        if !self.leases.as_ref().is_some_and(|l| l.lock().due()) {
            return;
        }
        let Some(set) = self.set.clone() else {
            return;
        };
        let shards: Vec<String> = set.all.iter().map(|s| s.id.clone()).collect();
        let cp = self.checkpoints_by_id();
        let busy: BTreeSet<u32> = self.in_flight.iter().map(|f| f.1).collect();
        let idle: BTreeSet<String> = set
            .all
            .iter()
            .filter(|s| !busy.contains(&s.index))
            .map(|s| s.id.clone())
            .collect();
        let Some(leases) = &mut self.leases else {
            return;
        };
        let ch = match leases.lock().tick(&shards, &cp, &idle) {
            Ok(ch) => ch,
            Err(e) => {
                tracing::warn!(pipeline = %self.pipeline, stream = %self.cfg.stream, error = %e, "shard leases not renewed");
                return;
            }
        };
        self.lease_view = ch.checkpoints;
        // Above the share: stop reading that many (the last by id; the same ones each
        // tick while they drain).
        for id in ch.lost {
            if let Some(sh) = set.all.iter().find(|s| s.id == id) {
                sh.set_leased(&self.pipeline, false);
                self.read_pos.remove(&sh.index);
                self.committed.remove(&sh.index);
                self.done.remove(&sh.index);
            }
        }
        for (id, checkpoint) in ch.acquired {
            let Some(sh) = set.all.iter().find(|s| s.id == id) else {
                continue;
            };
            // What other nodes appended and retention removed, known before the position.
            let fresh = match sh.log.sync() {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(pipeline = %self.pipeline, shard = %sh.id, error = %e, "cannot refresh a shard's state");
                    false
                }
            };
            let p = match checkpoint {
                // Never before the trim horizon, nor past the end (a checkpoint from the
                // cluster is data from the network: a wrong one must not skip records) —
                // the end as the cluster has it: one this node has not refreshed may be
                // behind what the last reader delivered, and reading from there again
                // would deliver records twice (their objects' entries may be retired).
                Some(n) if fresh => n.clamp(
                    sh.log.first_seq(),
                    sh.log.next_seq().max(sh.log.first_seq()),
                ),
                Some(n) => n.max(sh.log.first_seq()),
                None if self.cfg.start == Start::Latest => {
                    sh.closed().map_or_else(|| sh.log.next_seq(), |c| c.at_seq)
                }
                None => sh.log.first_seq(),
            };
            self.read_pos.insert(sh.index, p);
            self.committed.insert(sh.index, p);
            self.done.remove(&sh.index);
            sh.set_delivered(&self.pipeline, p);
            sh.set_leased(&self.pipeline, true);
            tracing::info!(pipeline = %self.pipeline, stream = %self.cfg.stream, shard = %sh.id, from = p, "reading a shard under lease");
        }
    }

    /// A checkpoint write succeeded.
    fn saved(&mut self) {
        self.dirty = false;
        self.saved_at = std::time::Instant::now();
        if let Some(w) = &self.writes {
            w.increment(1);
        }
    }

    /// Writes the checkpoint if delivered positions are waiting and `force` or the
    /// interval has passed since the last write.
    fn save_if_due(&mut self, force: bool) {
        if !self.dirty || (!force && self.saved_at.elapsed() < self.cfg.checkpoint_interval.0) {
            return;
        }
        if self.leases.is_some() {
            let cp = self.checkpoints_by_id();
            let Some(leases) = &mut self.leases else {
                return;
            };
            let written = leases.lock().checkpoint(&cp);
            match written {
                Ok(()) => self.saved(),
                Err(e) => {
                    tracing::error!(pipeline = %self.pipeline, stream = %self.cfg.stream, error = %e, "cannot write checkpoint into the shard leases");
                }
            }
            return;
        }
        let Some(path) =
            checkpoint_path(self.services.as_deref(), &self.pipeline, &self.cfg.stream)
        else {
            return;
        };
        let cp: BTreeMap<String, u64> = self
            .committed
            .iter()
            .map(|(&i, &p)| (crate::stream::shard_id(i), p))
            .collect();
        match store_checkpoint(&path, &cp) {
            Ok(()) => self.saved(),
            Err(e) => {
                tracing::error!(pipeline = %self.pipeline, stream = %self.cfg.stream, error = %e, "cannot write checkpoint");
            }
        }
    }

    /// Gives every shard of the current set a position (checkpoint, `start`, or its
    /// beginning) the first time it is met.
    fn meet_shards(&mut self) -> Option<Arc<ShardSet>> {
        let st = self.st.clone()?;
        let set = st.shards();
        if self.set.as_ref().is_some_and(|s| Arc::ptr_eq(s, &set)) {
            return Some(set);
        }
        for sh in &set.all {
            // Under leases a shard gets its position when its lease is taken.
            if self.read_pos.contains_key(&sh.index) || self.leases.is_some() {
                continue;
            }
            let p = match self.loaded.get(&sh.id) {
                // Never before the trim horizon: records past retention are gone.
                Some(&n) => n.max(sh.log.first_seq()),
                None if self.latest_for_new => {
                    sh.closed().map_or_else(|| sh.log.next_seq(), |c| c.at_seq)
                }
                None => sh.log.first_seq(),
            };
            self.read_pos.insert(sh.index, p);
            self.committed.insert(sh.index, p);
            sh.set_delivered(&self.pipeline, p);
        }
        // Shards that expired are forgotten.
        self.read_pos.retain(|i, _| set.get(*i).is_some());
        self.committed.retain(|i, _| set.get(*i).is_some());
        self.done.retain(|i| set.get(*i).is_some());
        self.set = Some(set.clone());
        Some(set)
    }

    /// Read to its end, after its parents were (an intermediate shard with no records
    /// of its own must not let its children pass before its parents are done).
    fn finished(&self, set: &ShardSet, index: u32) -> bool {
        // A shard that expired with its records has nothing left to read first.
        let Some(sh) = set.get(index) else {
            return true;
        };
        if self.done.contains(&index) {
            return true;
        }
        // Read by another node: finished once its lease's checkpoint reached its end.
        self.leases.as_ref().is_some_and(|l| !l.lock().owns(&sh.id))
            && sh.closed().is_some_and(|c| {
                self.lease_view
                    .get(&sh.id)
                    .is_some_and(|&cp| cp >= c.at_seq)
            })
    }

    /// Whether shard `sh` may be read now: not finished, and its parents are.
    fn readable(&self, set: &ShardSet, sh: &Shard) -> bool {
        self.leases.as_ref().is_none_or(|l| l.lock().reads(&sh.id))
            && !self.finished(set, sh.index)
            && sh
                .parent
                .into_iter()
                .chain(sh.adjacent_parent)
                .all(|p| self.finished(set, p))
    }
}

impl Source for StreamSource {
    fn poll_batch(&mut self, out: &mut Output<'_>) -> Result<Poll, Error> {
        let Some(st) = self.st.clone() else {
            return Err(Error::fatal("not started"));
        };
        if st.is_deleted() {
            // A stream made again under the name is another stream (numbered above this
            // one): the restart looks the name up again.
            return Err(Error::retryable(format_args!(
                "stream `{}` was deleted",
                st.name
            )));
        }
        let Some(set) = self.meet_shards() else {
            return Err(Error::fatal("not started"));
        };
        // An idle pipeline's last positions reach the file within the interval too.
        self.save_if_due(false);
        self.tick_leases();
        let budget = out.credit_records().min(u64::from(self.cfg.batch_size)) as usize;
        // Round-robin from the cursor; one shard per poll keeps each batch within a shard,
        // so acks map to one position.
        let n = set.all.len();
        let first = set.all.partition_point(|s| s.index < self.next_shard);
        for k in 0..n {
            let sh = set.all[(first + k) % n].clone();
            if !self.readable(&set, &sh) {
                continue;
            }
            let i = sh.index;
            let from = self.read_pos.get(&i).copied().unwrap_or(0);
            // Observed before reading: an empty read of a shard already closed is its end.
            let closed = sh.closed();
            let recs = sh
                .read(from, budget, out.credit_bytes() as usize)
                .map_err(|e| Error::retryable(format_args!("reading {}: {e}", sh.id)))?;
            if recs.is_empty() {
                if let Some(c) = closed {
                    // Its children become readable; nothing to deliver, so the
                    // checkpoint moves too.
                    self.read_pos.insert(i, from.max(c.at_seq));
                    if self.in_flight.iter().all(|f| f.1 != i) {
                        self.committed.insert(i, from.max(c.at_seq));
                        self.dirty = true;
                    }
                    self.done.insert(i);
                    tracing::debug!(pipeline = %self.pipeline, stream = %st.name, shard = %sh.id, "read a closed shard to its end");
                }
                continue;
            }
            let labels = [
                ("stream", st.name.clone()),
                ("shard", sh.id.clone()),
                ("consumer", self.pipeline.clone()),
            ];
            metrics::counter!("sluice_shard_outgoing_records_total", &labels)
                .increment(recs.len() as u64);
            if let Some(last) = recs.last() {
                let behind = if sh.log.last_seq().is_some_and(|n| last.seq < n) {
                    (crate::record::now_ms() - last.arrival_ms).max(0)
                } else {
                    0
                };
                metrics::gauge!("sluice_shard_iterator_age_seconds", &labels)
                    .set(behind as f64 / 1000.0);
            }
            for r in &recs {
                out.emit(&NewRecord {
                    data: &r.data,
                    partition_key: &r.key,
                    timestamp_ms: Some(r.arrival_ms),
                    position: Some(Position {
                        partition: i,
                        offset: r.seq,
                    }),
                    attrs: &[],
                });
            }
            let last = recs.last().map(|r| r.seq + 1).unwrap_or(from);
            self.read_pos.insert(i, last);
            let token = self.next_token;
            self.next_token += 1;
            self.in_flight.push_back((token, i, last));
            out.set_ack_token(token);
            self.next_shard = i.wrapping_add(1);
            return Ok(Poll::Ready);
        }
        out.set_poll_delay(Duration::from_millis(100));
        Ok(Poll::Pending)
    }

    fn ack(&mut self, token: u64, delivered: bool) {
        // Acks arrive in poll order; a batch that was not delivered is read again after a
        // restart, since its position never reaches the checkpoint.
        while let Some(&(t, shard, pos)) = self.in_flight.front() {
            if t > token {
                break;
            }
            self.in_flight.pop_front();
            if delivered && t == token {
                // A shard whose lease went to another node meanwhile is theirs to checkpoint.
                let Some(c) = self.committed.get_mut(&shard) else {
                    continue;
                };
                *c = (*c).max(pos);
                let c = *c;
                if let Some(sh) = self.set.as_ref().and_then(|set| set.get(shard)) {
                    sh.set_delivered(&self.pipeline, c);
                }
            }
        }
        if !delivered {
            return;
        }
        self.dirty = true;
        self.save_if_due(false);
    }
}

/// `stream` sink options.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// The stream to append to.
    pub stream: String,
}

/// Appends records to a stream, routed by partition key like the Kinesis API.
pub struct StreamSink {
    name: String,
    services: Option<Arc<HostServices>>,
}

impl Plugin for StreamSink {
    type Config = SinkConfig;
    fn create(cfg: SinkConfig, ctx: &Context) -> Result<Self, Error> {
        if cfg.stream.is_empty() {
            return Err(Error::config_field("stream", "must name a stream"));
        }
        Ok(StreamSink {
            name: cfg.stream,
            services: services(ctx),
        })
    }
}

impl Sink for StreamSink {
    fn submit(&mut self, batch: &Batch<'_>, done: Completion) -> Result<Submitted, Error> {
        let st = match stream(self.services.as_deref(), &self.name) {
            Ok(s) => s,
            Err(e) => {
                done.fail(&e);
                return Ok(Submitted::Accepted);
            }
        };
        let now = crate::record::now_ms();
        let entries: Vec<sluice_shardlog::Entry<'_>> = batch
            .iter()
            .map(|r| sluice_shardlog::Entry {
                key: r.partition_key,
                data: r.data,
                arrival_ms: r.timestamp_ms.unwrap_or(now),
            })
            .collect();
        if let Err(e) = st.append_routed(&entries) {
            let err = Error::retryable(format_args!("appending to {}: {}", st.name, e.error));
            // What was stored stays stored: only the others are submitted again.
            if e.failed.len() < entries.len() {
                let failed: Vec<u32> = e
                    .failed
                    .iter()
                    .filter_map(|&i| u32::try_from(i).ok())
                    .collect();
                done.partial(&failed, &err);
            } else {
                done.fail(&err);
            }
            return Ok(Submitted::Accepted);
        }
        done.success();
        Ok(Submitted::Accepted)
    }
}

/// `direct-put` source options: none (records arrive through the Firehose API).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectPutConfig {}

/// Reads the pipeline's internal Direct PUT stream (Firehose PutRecord/PutRecordBatch
/// append there, durably, before answering).
pub struct DirectPutSource(StreamSource);

impl Plugin for DirectPutSource {
    type Config = DirectPutConfig;
    fn create(_: DirectPutConfig, ctx: &Context) -> Result<Self, Error> {
        let cfg = SourceConfig {
            stream: crate::spec::direct_put_stream(ctx.pipeline()),
            start: Start::TrimHorizon,
            batch_size: default_batch(),
            checkpoint_interval: default_checkpoint_interval(),
        };
        StreamSource::create(cfg, ctx).map(DirectPutSource)
    }
    fn start(&mut self) -> Result<(), Error> {
        self.0.start()
    }
    fn stop(&mut self, deadline: Duration) -> Result<(), Error> {
        self.0.stop(deadline)
    }
}

impl Source for DirectPutSource {
    fn poll_batch(&mut self, out: &mut Output<'_>) -> Result<Poll, Error> {
        self.0.poll_batch(out)
    }
    fn ack(&mut self, token: u64, delivered: bool) {
        self.0.ack(token, delivered)
    }
}

declare_library!(
    name: "stream",
    plugins: [
        replayable_source("stream", StreamSource, "reads a stream from its checkpoint, shard by shard"),
        sink("stream", StreamSink, "appends records to a stream"),
        replayable_source("direct-put", DirectPutSource, "records put through the Firehose API (PutRecord, PutRecordBatch)"),
    ]
);

#[cfg(test)]
mod tests {
    use super::*;

    /// An `http` source reads its stream with a `stream` source: on a cluster its
    /// delivery records are shared the same way — the stream it names, or its pipeline's
    /// own.
    #[test]
    fn http_and_stream_sources_name_the_stream_they_read() {
        let stream = r#"{"stream":"events"}"#;
        assert_eq!(
            source_stream("stream", stream, "p").as_deref(),
            Some("events")
        );
        let named = r#"{"listen":"127.0.0.1:0","stream":"events"}"#;
        assert_eq!(source_stream("http", named, "p").as_deref(), Some("events"));
        let own = r#"{"listen":"127.0.0.1:0"}"#;
        assert_eq!(
            source_stream("http", own, "p"),
            Some(crate::spec::http_stream("p"))
        );
        assert_eq!(source_stream("generator", "{}", "p"), None);
    }
}
