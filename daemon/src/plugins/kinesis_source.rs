//! The bundled `kinesis` source (issue #12): reads a stream of any Kinesis endpoint — AWS
//! Kinesis Data Streams, or the Kinesis API of another sluiced — as a KCL consumer does:
//! `ListShards`, a shard iterator per shard from its checkpoint, `GetRecords` round-robin
//! over the shards (a shard that had nothing is asked again after `poll_interval`), a
//! child only after its parents were read to their end, and the checkpoint (the last
//! delivered sequence number per shard, `SHARD_END` for a finished one) written when the
//! host acknowledges a batch. So sluice can be the Firehose of a real Kinesis stream.
//!
//! **Leases**: when the daemon has a `[jetstream]` cluster, the shards are shared by lease
//! with the other nodes running the pipeline, in the same lease table and by the same
//! rules as the `stream` source's (`crate::stream::lease`), the checkpoint in the lease;
//! a node that dies loses its shards to the others. Without a cluster one node reads every
//! shard and keeps its checkpoints in `data_dir/checkpoints/<pipeline>/kinesis-<stream>.json`.
//!
//! **Exactly once** (a replayable source): Kinesis sequence numbers do not fit the host's
//! positions (below 2^48), so each record is positioned by the shard's index (partition)
//! and an *ordinal* (offset) counted per shard from an **anchor**: before the first record
//! of a shard without checkpoint is emitted, the shard's first sequence number and the
//! ordinal base are written where the checkpoint lives (file or lease), and every
//! checkpoint after carries the last delivered record's ordinal with its sequence number.
//! A replay — after a crash, or on the node that took the lease over — reads after the
//! checkpoint and numbers the same records the same way, so the intent log (local, or the
//! cluster's per shard) matches them to the objects already written: those stored are
//! skipped, the others rebuilt under the same keys. The base is the anchor's wall-clock
//! millisecond rather than 0, so a shard anchored again because its checkpoint was deleted
//! or damaged does not reuse the ordinals of the previous anchor's intents.
//!
//! Requests are signed with SigV4 when `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` are
//! set in the daemon's environment — with `AWS_SESSION_TOKEN` too for temporary
//! credentials, signed and sent as the SDKs do — and unsigned otherwise, which a sluiced
//! without `[[api.credentials]]` accepts.
#![allow(unexpected_cfgs)] // `declare_library!` checks a `dylib` feature this crate does not have

use super::stream_io::{load_checkpoint, store_checkpoint, Checkpoint, Start};
use super::HostServices;
use base64::Engine as _;
use serde_json::{json, Value};
use sluice_plugin_api::{
    declare_library, Context, Error, NewRecord, Output, Plugin, Poll, Position, Source,
};
use sluice_plugin_http::ureq;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The checkpoint of a shard read to its end (as the KCL writes it).
const SHARD_END: &str = "SHARD_END";
/// How often the shard list is asked for again (new shards after a resharding).
const LIST_EVERY: Duration = Duration::from_secs(30);
/// The largest answer read (GetRecords returns at most 10 MiB of data, base64 in JSON).
const MAX_ANSWER: u64 = 32 << 20;
/// Back-off after a throttling answer.
const THROTTLED: Duration = Duration::from_secs(1);
// The longest `checkpoint_interval`: the intent log keeps a delivered object's entry for
// 30 s after its acks, and a replay must find it while the checkpoint is still behind the
// object's records.
use crate::spec::MAX_CHECKPOINT_INTERVAL;

/// Where a shard's delivery stands: the checkpoint string kept in the file or the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mark {
    /// Delivered up to the record `seq`, numbered `ordinal`: reading goes on after it
    /// (`<seq>/<ordinal>`; a bare `<seq>` from before ordinals counts on from 0).
    After { seq: String, ordinal: u64 },
    /// The anchor: nothing delivered yet; the record at `seq` is the first, numbered
    /// `ordinal + 1` (`at:<seq>/<ordinal>`).
    At { seq: String, ordinal: u64 },
    /// Read to its end and delivered.
    End,
}

impl Mark {
    fn parse(s: &str) -> Option<Mark> {
        if s == SHARD_END {
            return Some(Mark::End);
        }
        let (at, rest) = match s.strip_prefix("at:") {
            Some(r) => (true, r),
            None => (false, s),
        };
        let (seq, ordinal) = match rest.split_once('/') {
            Some((seq, n)) => (seq, n.parse::<u64>().ok()?),
            None if !at => (rest, 0),
            None => return None,
        };
        if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let seq = seq.to_string();
        Some(if at {
            Mark::At { seq, ordinal }
        } else {
            Mark::After { seq, ordinal }
        })
    }

    /// The first ordinal left to read after this mark (`None`: past what ordinals count).
    fn next(&self) -> Option<u64> {
        match self {
            Mark::After { ordinal, .. } | Mark::At { ordinal, .. } => ordinal.checked_add(1),
            Mark::End => Some(u64::MAX),
        }
    }

    fn encode(&self) -> String {
        match self {
            Mark::After { seq, ordinal } => format!("{seq}/{ordinal}"),
            Mark::At { seq, ordinal } => format!("at:{seq}/{ordinal}"),
            Mark::End => SHARD_END.to_string(),
        }
    }
}

/// The position partition of a shard: its index (`shardId-000000000007` → 7), which must
/// be below the host's 65,535 partitions.
fn shard_partition(id: &str) -> Option<u32> {
    let n: u32 = id.strip_prefix("shardId-")?.parse().ok()?;
    // Only the canonical spelling (12 digits): the shard's delivery records in the
    // cluster are keyed by it, and must meet its lease under the same id.
    (n < crate::record::MAX_PARTITIONS && crate::stream::shard_id(n) == id).then_some(n)
}

/// `kinesis` source options.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KinesisConfig {
    /// The stream to read.
    pub stream: String,
    /// The Kinesis endpoint (`https://kinesis.<region>.amazonaws.com` by default).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The region requests are signed for.
    #[serde(default = "default_region")]
    pub region: String,
    /// Where a shard without a checkpoint starts.
    #[serde(default)]
    pub start: Start,
    /// Most records per `GetRecords` (1–10000).
    #[serde(default = "default_batch")]
    pub batch_size: u32,
    /// How long a shard that had nothing new waits before it is asked again.
    #[serde(default = "default_poll")]
    pub poll_interval: crate::spec::HumanDuration,
    /// At most one checkpoint write per this interval (and one at stop); at most 10 s.
    #[serde(default = "default_checkpoint_interval")]
    pub checkpoint_interval: crate::spec::HumanDuration,
    /// Time limit of one request.
    #[serde(default = "default_timeout")]
    pub timeout: crate::spec::HumanDuration,
}

fn default_region() -> String {
    "us-east-1".into()
}
fn default_batch() -> u32 {
    1000
}
fn default_poll() -> crate::spec::HumanDuration {
    crate::spec::HumanDuration(Duration::from_secs(1))
}
fn default_checkpoint_interval() -> crate::spec::HumanDuration {
    crate::spec::HumanDuration(Duration::from_secs(1))
}
fn default_timeout() -> crate::spec::HumanDuration {
    crate::spec::HumanDuration(Duration::from_secs(30))
}

/// An answer other than 200, as Kinesis names it.
struct ApiError {
    kind: String,
    message: String,
}

impl ApiError {
    fn throttled(&self) -> bool {
        matches!(
            self.kind.as_str(),
            "ProvisionedThroughputExceededException" | "LimitExceededException"
        )
    }
}

/// One request's failure: an answer, or no answer.
enum CallError {
    Api(ApiError),
    Transport(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Api(e) => write!(f, "{}: {}", e.kind, e.message),
            CallError::Transport(e) => f.write_str(e),
        }
    }
}

/// The endpoint and how to sign for it.
struct Client {
    agent: ureq::Agent,
    url: String,
    host: String,
    region: String,
    /// Access key id, secret, and the session token of temporary credentials.
    creds: Option<(String, String, Option<String>)>,
}

impl Client {
    fn new(cfg: &KinesisConfig) -> Result<Client, Error> {
        let url = cfg
            .endpoint
            .clone()
            .unwrap_or_else(|| format!("https://kinesis.{}.amazonaws.com", cfg.region));
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))
            .ok_or_else(|| Error::config_field("endpoint", "must be an http:// or https:// URL"))?;
        let host = rest.split('/').next().unwrap_or_default().to_string();
        if host.is_empty() {
            return Err(Error::config_field("endpoint", "names no host"));
        }
        let creds = match (
            std::env::var("AWS_ACCESS_KEY_ID"),
            std::env::var("AWS_SECRET_ACCESS_KEY"),
        ) {
            (Ok(a), Ok(s)) if !a.is_empty() && !s.is_empty() => Some((
                a,
                s,
                std::env::var("AWS_SESSION_TOKEN")
                    .ok()
                    .filter(|t| !t.trim().is_empty()),
            )),
            _ => None,
        };
        Ok(Client {
            agent: sluice_plugin_http::client_agent(cfg.timeout.0),
            url,
            host,
            region: cfg.region.clone(),
            creds,
        })
    }

    /// Calls `Kinesis_20131202.<op>`.
    fn call(&self, op: &str, body: &Value) -> Result<Value, CallError> {
        let body = body.to_string();
        let target = format!("Kinesis_20131202.{op}");
        let mut req = self
            .agent
            .post(&self.url)
            .header("Content-Type", "application/x-amz-json-1.1")
            .header("X-Amz-Target", &target);
        if let Some((akid, secret, token)) = &self.creds {
            let (date, auth) = crate::sigv4::sign(
                &self.host,
                &target,
                body.as_bytes(),
                akid,
                secret,
                token.as_deref(),
                &self.region,
                crate::record::now_ms() / 1000,
            );
            req = req
                .header("X-Amz-Date", &date)
                .header("Authorization", &auth);
            if let Some(t) = token {
                req = req.header("X-Amz-Security-Token", t.trim());
            }
        }
        let mut resp = req
            .send(body.as_bytes())
            .map_err(|e| CallError::Transport(format!("{op} at {}: {e}", self.url)))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER)
            .read_to_vec()
            .map_err(|e| CallError::Transport(format!("{op} at {}: {e}", self.url)))?;
        let v: Value = serde_json::from_slice(&text).map_err(|e| {
            CallError::Transport(format!(
                "{op} at {}: not a JSON answer ({status}): {e}",
                self.url
            ))
        })?;
        if status == 200 {
            return Ok(v);
        }
        let kind = v["__type"]
            .as_str()
            .unwrap_or("UnknownError")
            .rsplit('#')
            .next()
            .unwrap_or_default()
            .to_string();
        let message = v["message"]
            .as_str()
            .or(v["Message"].as_str())
            .unwrap_or_default()
            .to_string();
        Err(CallError::Api(ApiError { kind, message }))
    }
}

/// Why checkpoints were not written.
#[derive(Debug, thiserror::Error)]
enum SaveError {
    /// Into the leases, in the cluster.
    #[error("{0}")]
    Lease(#[from] crate::stream::StorageError),
    /// Into the checkpoint file.
    #[error("checkpoint file: {0}")]
    File(#[from] std::io::Error),
}

/// What the source knows of one shard.
struct ShardState {
    parents: Vec<String>,
    /// The iterator to read from next (none: get one from `read_upto`).
    iterator: Option<String>,
    /// The last sequence number handed to the host (none: from the checkpoint or `start`).
    read_upto: Option<String>,
    /// The ordinal of the next record read (none: from the checkpoint, or an anchor).
    next_ordinal: Option<u64>,
    /// Not asked again before this (nothing new, or throttled).
    ready_at: Instant,
    /// Read to its end (closed): its children may be read once its batches are acked.
    ended: bool,
}

/// Reads one Kinesis stream (see the module's doc).
pub struct KinesisSource {
    cfg: KinesisConfig,
    pipeline: String,
    services: Option<Arc<HostServices>>,
    client: Client,
    shards: BTreeMap<String, ShardState>,
    listed_at: Option<Instant>,
    /// The last delivered sequence number per shard (`SHARD_END`: finished).
    committed: BTreeMap<String, String>,
    /// Batches handed to the host: token, shard, and where it ends.
    in_flight: VecDeque<(u64, String, Mark)>,
    next_token: u64,
    cursor: usize,
    dirty: bool,
    saved_at: Instant,
    leases: Option<crate::stream::lease::SharedLeases<String>>,
    /// Each lease's checkpoint as last seen (shards other nodes read).
    lease_view: BTreeMap<String, String>,
    /// A shard ended since the last listing: its children are listed next poll.
    relist: bool,
}

/// The stream name of the source's leases and shared intent log: apart from a local
/// stream of the same name.
fn lease_stream(stream: &str) -> String {
    format!("kinesis:{stream}")
}

/// Where a `kinesis` pipeline keeps its delivery records when a cluster is configured: in
/// the cluster, per shard, beside the shard's lease (`crate::delivery::SharedIntents`), so
/// whichever node reads the shard next finds them.
pub fn shared_source(
    config_json: &str,
    services: &HostServices,
) -> Option<crate::stream::lease::SharedSource> {
    let cfg: KinesisConfig = serde_json::from_str(config_json).ok()?;
    Some(crate::stream::lease::SharedSource {
        cluster: services.streams.cluster()?,
        stream: lease_stream(&cfg.stream),
        next_offset,
    })
}

/// Whether `mark` may replace the `committed` checkpoint: never one that leaves less read.
fn advances(committed: Option<&str>, mark: &Mark) -> bool {
    committed
        .and_then(Mark::parse)
        .is_none_or(|c| c.next() <= mark.next())
}

/// The first ordinal (position offset) a checkpoint in a lease leaves to read.
fn next_offset(checkpoint: &Value) -> Option<u64> {
    Mark::parse(checkpoint.as_str()?)?.next()
}

fn checkpoint_path(
    services: Option<&HostServices>,
    pipeline: &str,
    stream: &str,
) -> Option<PathBuf> {
    crate::names::check(stream).ok()?;
    let dir = crate::names::child(&services?.data_dir.join("checkpoints"), pipeline).ok()?;
    Some(dir.join(format!("kinesis-{stream}.json")))
}

impl Plugin for KinesisSource {
    type Config = KinesisConfig;
    fn create(cfg: KinesisConfig, ctx: &Context) -> Result<Self, Error> {
        if cfg.stream.is_empty() || cfg.stream.len() > 128 {
            return Err(Error::config_field(
                "stream",
                "must name a stream (1-128 characters)",
            ));
        }
        if cfg.batch_size == 0 || cfg.batch_size > 10_000 {
            return Err(Error::config_field(
                "batch_size",
                "must be between 1 and 10000",
            ));
        }
        if cfg.checkpoint_interval.0 > MAX_CHECKPOINT_INTERVAL {
            return Err(Error::config_field(
                "checkpoint_interval",
                "must be at most 10s (the intent log keeps delivered objects' entries 30 s; a replay needs them until the checkpoint has moved past)",
            ));
        }
        if cfg.poll_interval.0 < Duration::from_millis(200) {
            // Kinesis allows 5 GetRecords per shard and second.
            return Err(Error::config_field(
                "poll_interval",
                "must be at least 200ms",
            ));
        }
        if cfg.region.is_empty()
            || !cfg
                .region
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(Error::config_field(
                "region",
                "must be a region name such as us-east-1",
            ));
        }
        let client = Client::new(&cfg)?;
        Ok(KinesisSource {
            client,
            cfg,
            pipeline: ctx.pipeline().to_string(),
            services: super::host::services(ctx.instance_handle()),
            shards: BTreeMap::new(),
            listed_at: None,
            committed: BTreeMap::new(),
            in_flight: VecDeque::new(),
            next_token: 1,
            cursor: 0,
            dirty: false,
            saved_at: Instant::now(),
            leases: None,
            lease_view: BTreeMap::new(),
            relist: false,
        })
    }

    fn start(&mut self) -> Result<(), Error> {
        let cluster = self.services.as_ref().and_then(|s| s.streams.cluster());
        self.committed.clear();
        self.in_flight.clear();
        self.shards.clear();
        if let Some(cluster) = cluster {
            // Lease keys name the remote stream apart from local ones of the same name.
            let leases = crate::stream::lease::SharedLeases::open(
                cluster,
                &self.pipeline,
                &lease_stream(&self.cfg.stream),
            )
            .map_err(|e| Error::retryable(format_args!("{e}")))?;
            self.leases = Some(leases);
        } else {
            let path = checkpoint_path(self.services.as_deref(), &self.pipeline, &self.cfg.stream);
            match path.as_deref().map(load_checkpoint) {
                None | Some(Checkpoint::Missing) => {}
                Some(Checkpoint::At(cp)) => self.committed = cp,
                Some(Checkpoint::Damaged(e)) => {
                    // Where delivery stood is unknown: from the oldest record, never from
                    // `latest` (which would skip acknowledged records).
                    tracing::error!(pipeline = %self.pipeline, stream = %self.cfg.stream, error = %e, "Kinesis checkpoint damaged; resuming from the oldest record of every shard");
                    self.cfg.start = Start::TrimHorizon;
                }
            }
        }
        self.list()?;
        self.tick_leases();
        Ok(())
    }

    fn stop(&mut self, _deadline: Duration) -> Result<(), Error> {
        self.save_if_due(true);
        let cp = self.committed.clone();
        if let Some(l) = &mut self.leases {
            l.lock().release_all(&cp);
        }
        Ok(())
    }
}

impl KinesisSource {
    /// The shard list, all pages of it.
    fn list(&mut self) -> Result<(), Error> {
        let mut found = BTreeMap::new();
        let mut body = json!({ "StreamName": self.cfg.stream });
        loop {
            let v = self.client.call("ListShards", &body).map_err(|e| {
                Error::retryable(format_args!(
                    "listing the shards of `{}`: {e}",
                    self.cfg.stream
                ))
            })?;
            for s in v["Shards"].as_array().into_iter().flatten() {
                let Some(id) = s["ShardId"].as_str() else {
                    continue;
                };
                let parents = [&s["ParentShardId"], &s["AdjacentParentShardId"]]
                    .into_iter()
                    .filter_map(|p| p.as_str().map(str::to_string))
                    .collect();
                found.insert(id.to_string(), parents);
            }
            match v["NextToken"].as_str() {
                Some(t) => body = json!({ "NextToken": t }),
                None => break,
            }
        }
        // New shards join; shards gone from the list (expired) are forgotten.
        self.shards.retain(|id, _| found.contains_key(id));
        for (id, parents) in found {
            self.shards.entry(id).or_insert_with(|| ShardState {
                parents,
                iterator: None,
                read_upto: None,
                next_ordinal: None,
                ready_at: Instant::now(),
                ended: false,
            });
        }
        self.listed_at = Some(Instant::now());
        self.relist = false;
        Ok(())
    }

    /// Whether `shard` was read to its end and delivered (here or, by its lease, elsewhere).
    fn finished(&self, shard: &str) -> bool {
        // A parent that expired from the stream has nothing left to read.
        if !self.shards.contains_key(shard) {
            return true;
        }
        self.committed.get(shard).map(String::as_str) == Some(SHARD_END)
            || self.lease_view.get(shard).map(String::as_str) == Some(SHARD_END)
    }

    fn readable(&self, id: &str, s: &ShardState, now: Instant) -> bool {
        self.leases.as_ref().is_none_or(|l| l.lock().reads(id))
            && !s.ended
            && !self.finished(id)
            && s.ready_at <= now
            && s.parents.iter().all(|p| self.finished(p))
    }

    /// Renews, takes and gives back leases (when due); a shard taken starts from its
    /// lease's checkpoint.
    fn tick_leases(&mut self) {
        if !self.leases.as_ref().is_some_and(|l| l.lock().due()) {
            return;
        }
        let shards: Vec<String> = self.shards.keys().cloned().collect();
        let busy: BTreeSet<&str> = self.in_flight.iter().map(|f| f.1.as_str()).collect();
        let idle: BTreeSet<String> = shards
            .iter()
            .filter(|s| !busy.contains(s.as_str()))
            .cloned()
            .collect();
        let cp = self.committed.clone();
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
        for id in ch.lost {
            self.committed.remove(&id);
            if let Some(s) = self.shards.get_mut(&id) {
                s.iterator = None;
                s.read_upto = None;
                s.next_ordinal = None;
                s.ended = false;
            }
        }
        for (id, checkpoint) in ch.acquired {
            // Read again from the lease's checkpoint, numbered from it.
            if let Some(s) = self.shards.get_mut(&id) {
                s.iterator = None;
                s.ended = false;
                s.read_upto = None;
                s.next_ordinal = None;
            }
            match checkpoint {
                Some(c) => {
                    self.committed.insert(id.clone(), c);
                }
                None => {
                    self.committed.remove(&id);
                }
            }
            tracing::info!(pipeline = %self.pipeline, stream = %self.cfg.stream, shard = %id, "reading a Kinesis shard under lease");
        }
    }

    fn save_if_due(&mut self, force: bool) {
        if !self.dirty || (!force && self.saved_at.elapsed() < self.cfg.checkpoint_interval.0) {
            return;
        }
        if let Err(e) = self.save() {
            tracing::error!(pipeline = %self.pipeline, stream = %self.cfg.stream, error = %e, "cannot write the Kinesis checkpoint");
        }
    }

    /// Writes the checkpoints now.
    fn save(&mut self) -> Result<(), SaveError> {
        match &mut self.leases {
            Some(l) => l.lock().checkpoint(&self.committed)?,
            None => {
                if let Some(path) =
                    checkpoint_path(self.services.as_deref(), &self.pipeline, &self.cfg.stream)
                {
                    store_checkpoint(&path, &self.committed)?;
                }
            }
        }
        self.dirty = false;
        self.saved_at = Instant::now();
        Ok(())
    }

    /// The shard's checkpoint, if it has a readable one.
    fn mark(&self, id: &str) -> Option<Mark> {
        let cp = self.committed.get(id)?;
        let m = Mark::parse(cp);
        if m.is_none() {
            tracing::error!(pipeline = %self.pipeline, stream = %self.cfg.stream, shard = %id, checkpoint = %cp, "unreadable Kinesis checkpoint; the shard is anchored again");
        }
        m
    }

    /// An iterator for `id`, and the ordinal of the record it starts at: after what was
    /// read, else from its checkpoint, else `start` (ordinal none: anchored when the first
    /// record comes).
    fn iterator(
        &self,
        id: &str,
        s: &ShardState,
    ) -> Result<(Option<String>, Option<u64>), CallError> {
        let mut body = json!({ "StreamName": self.cfg.stream, "ShardId": id });
        let from = match &s.read_upto {
            Some(seq) => Some((seq.clone(), "AFTER_SEQUENCE_NUMBER", s.next_ordinal)),
            None => match self.mark(id) {
                Some(Mark::After { seq, ordinal }) => {
                    Some((seq, "AFTER_SEQUENCE_NUMBER", Some(ordinal + 1)))
                }
                Some(Mark::At { seq, ordinal }) => {
                    Some((seq, "AT_SEQUENCE_NUMBER", Some(ordinal + 1)))
                }
                Some(Mark::End) | None => None,
            },
        };
        let ordinal = match from {
            Some((seq, kind, ordinal)) => {
                body["ShardIteratorType"] = json!(kind);
                body["StartingSequenceNumber"] = json!(seq);
                ordinal
            }
            None => {
                let kind = match self.cfg.start {
                    Start::Latest => "LATEST",
                    Start::TrimHorizon => "TRIM_HORIZON",
                };
                body["ShardIteratorType"] = json!(kind);
                None
            }
        };
        let v = self.client.call("GetShardIterator", &body)?;
        Ok((v["ShardIterator"].as_str().map(str::to_string), ordinal))
    }

    /// Writes the anchor of `id` — its first record `seq` and the ordinal base — where its
    /// checkpoint lives, before any record of it is emitted (see the module's doc). Returns
    /// the first record's ordinal.
    fn anchor(&mut self, id: &str, seq: &str) -> Result<u64, Error> {
        let base = u64::try_from(crate::record::now_ms()).unwrap_or(0);
        let mark = Mark::At {
            seq: seq.to_string(),
            ordinal: base,
        }
        .encode();
        self.committed.insert(id.to_string(), mark.clone());
        self.dirty = true;
        let refused = |why: &dyn std::fmt::Display| {
            Error::retryable(format_args!(
                "{id}: cannot anchor the shard's positions (needed before its first record goes out): {why}"
            ))
        };
        self.save().map_err(|e| refused(&e))?;
        if let Some(l) = &self.leases {
            if l.lock().written(id) != Some(&mark) {
                self.committed.remove(id);
                return Err(refused(&"its lease is another node's now"));
            }
        }
        tracing::info!(pipeline = %self.pipeline, stream = %self.cfg.stream, shard = %id, first = %seq, "anchored a Kinesis shard's positions");
        Ok(base + 1)
    }

    /// One `GetRecords` on `id`: the records emitted, and whether the shard may be asked
    /// again at once.
    fn read(&mut self, id: &str, out: &mut Output<'_>) -> Result<usize, Error> {
        let now = Instant::now();
        let Some(s) = self.shards.get(id) else {
            return Ok(0);
        };
        let Some(partition) = shard_partition(id) else {
            return Err(Error::fatal(format_args!(
                "shard `{id}` is not named shardId-<12 digits, an index below 65535>: its records cannot be positioned for exactly-once delivery"
            )));
        };
        let it = match &s.iterator {
            Some(it) => it.clone(),
            None => match self.iterator(id, s) {
                Ok((Some(it), ordinal)) => {
                    if let Some(s) = self.shards.get_mut(id) {
                        s.next_ordinal = ordinal;
                        s.iterator = Some(it.clone());
                    }
                    it
                }
                // No iterator: the shard is closed and read to its end.
                Ok((None, _)) => {
                    self.shard_ended(id);
                    return Ok(0);
                }
                Err(CallError::Api(e)) if e.throttled() => {
                    self.pause(id, now + THROTTLED);
                    return Ok(0);
                }
                Err(e) => return Err(Error::retryable(format_args!("{id}: {e}"))),
            },
        };
        let limit = u64::from(self.cfg.batch_size)
            .min(out.credit_records())
            .max(1);
        let v = match self.client.call(
            "GetRecords",
            &json!({ "ShardIterator": it, "Limit": limit }),
        ) {
            Ok(v) => v,
            Err(CallError::Api(e)) if e.throttled() => {
                self.pause(id, now + THROTTLED);
                return Ok(0);
            }
            Err(CallError::Api(e)) if e.kind == "ExpiredIteratorException" => {
                if let Some(s) = self.shards.get_mut(id) {
                    s.iterator = None;
                }
                return Ok(0);
            }
            Err(e) => return Err(Error::retryable(format_args!("{id}: {e}"))),
        };
        let recs = v["Records"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        let first_ordinal = match (
            self.shards.get(id).and_then(|s| s.next_ordinal),
            recs.first(),
        ) {
            (Some(n), _) => n,
            (None, Some(first)) => {
                let Some(seq) = first["SequenceNumber"].as_str() else {
                    return Err(Error::retryable(format_args!(
                        "{id}: a record without SequenceNumber"
                    )));
                };
                match self.anchor(id, seq) {
                    Ok(n) => n,
                    Err(e) => {
                        // Read again from the same place once the anchor can be written.
                        if let Some(s) = self.shards.get_mut(id) {
                            s.iterator = None;
                        }
                        return Err(e);
                    }
                }
            }
            (None, None) => 0,
        };
        let mut emitted = 0;
        let mut last: Option<Mark> = None;
        for (ordinal, r) in (first_ordinal..).zip(recs) {
            let (Some(data), Some(seq)) = (r["Data"].as_str(), r["SequenceNumber"].as_str()) else {
                return Err(Error::retryable(format_args!(
                    "{id}: a record without Data or SequenceNumber"
                )));
            };
            let data = base64::engine::general_purpose::STANDARD
                .decode(data)
                .map_err(|e| {
                    Error::retryable(format_args!("{id}: record {seq}: Data is not base64: {e}"))
                })?;
            let ts = r["ApproximateArrivalTimestamp"]
                .as_f64()
                .map(|t| (t * 1000.0) as i64);
            let key = r["PartitionKey"].as_str().unwrap_or_default();
            if ordinal > crate::record::MAX_OFFSET {
                return Err(Error::fatal(format_args!(
                    "{id}: more records than positions can number (2^48)"
                )));
            }
            if !out.emit(&NewRecord {
                data: &data,
                partition_key: key.as_bytes(),
                timestamp_ms: ts,
                position: Some(Position {
                    partition,
                    offset: ordinal,
                }),
                attrs: &[],
            }) {
                break;
            }
            emitted += 1;
            last = Some(Mark::After {
                seq: seq.to_string(),
                ordinal,
            });
        }
        let next = v["NextShardIterator"].as_str().map(str::to_string);
        let all = emitted == recs.len();
        let Some(s) = self.shards.get_mut(id) else {
            return Ok(emitted);
        };
        if let Some(Mark::After { seq, ordinal }) = &last {
            s.read_upto = Some(seq.clone());
            s.next_ordinal = Some(ordinal + 1);
        }
        if let Some(mark) = last {
            let token = self.next_token;
            self.next_token += 1;
            self.in_flight.push_back((token, id.to_string(), mark));
            out.set_ack_token(token);
        }
        // Records the host had no room for are read again after the last one it took.
        s.iterator = if all { next.clone() } else { None };
        if recs.is_empty() {
            s.ready_at = now + self.cfg.poll_interval.0;
        }
        if next.is_none() && all {
            self.shard_ended(id);
        }
        Ok(emitted)
    }

    fn pause(&mut self, id: &str, until: Instant) {
        if let Some(s) = self.shards.get_mut(id) {
            s.ready_at = until;
        }
    }

    /// `id` was read to its end: finished once nothing of it is in flight.
    fn shard_ended(&mut self, id: &str) {
        if let Some(s) = self.shards.get_mut(id) {
            s.ended = true;
        }
        self.relist = true;
        if self.in_flight.iter().all(|f| f.1 != id) {
            self.committed.insert(id.to_string(), SHARD_END.into());
            self.dirty = true;
            tracing::debug!(pipeline = %self.pipeline, shard = %id, "read a closed Kinesis shard to its end");
        }
    }
}

impl Source for KinesisSource {
    fn poll_batch(&mut self, out: &mut Output<'_>) -> Result<Poll, Error> {
        self.save_if_due(false);
        if self.relist || self.listed_at.is_none_or(|t| t.elapsed() >= LIST_EVERY) {
            self.list()?;
        }
        self.tick_leases();
        let now = Instant::now();
        let ids: Vec<String> = self.shards.keys().cloned().collect();
        for k in 0..ids.len() {
            let id = &ids[(self.cursor + k) % ids.len()];
            let ok = self
                .shards
                .get(id)
                .is_some_and(|s| self.readable(id, s, now));
            if !ok {
                continue;
            }
            if self.read(id, out)? > 0 {
                self.cursor = (self.cursor + k + 1) % ids.len();
                return Ok(Poll::Ready);
            }
        }
        let wait = self
            .shards
            .values()
            .map(|s| s.ready_at.saturating_duration_since(now))
            .min()
            .unwrap_or(self.cfg.poll_interval.0)
            .clamp(Duration::from_millis(10), self.cfg.poll_interval.0);
        out.set_poll_delay(wait);
        Ok(Poll::Pending)
    }

    fn ack(&mut self, token: u64, delivered: bool) {
        while let Some((t, _, _)) = self.in_flight.front() {
            if *t > token {
                break;
            }
            let Some((t, shard, mark)) = self.in_flight.pop_front() else {
                break;
            };
            // A shard whose lease went to another node meanwhile is theirs to checkpoint.
            let held = self.leases.as_ref().is_none_or(|l| l.lock().owns(&shard));
            if delivered && t == token && held {
                let ended = self.shards.get(&shard).is_some_and(|s| s.ended)
                    && self.in_flight.iter().all(|f| f.1 != shard);
                let cp = if ended { Mark::End } else { mark };
                // Never back: a batch read before this node lost the shard and took it
                // again acks below the checkpoint it took back, which another node may
                // have carried further (and retired the objects' entries behind it).
                if advances(self.committed.get(&shard).map(String::as_str), &cp) {
                    self.committed.insert(shard, cp.encode());
                    self.dirty = true;
                }
            }
        }
        if delivered {
            self.save_if_due(false);
        }
    }
}

impl Drop for KinesisSource {
    fn drop(&mut self) {
        self.save_if_due(true);
    }
}

declare_library!(
    name: "kinesis",
    plugins: [
        replayable_source("kinesis", KinesisSource, "reads a stream of any Kinesis endpoint (AWS or another sluiced), shards shared by lease"),
    ]
);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn checkpoints_before_ordinals_count_on_from_zero() {
        let seq = "49590338271490256608559692538361571095921575989136588898";
        assert_eq!(
            Mark::parse(seq),
            Some(Mark::After {
                seq: seq.into(),
                ordinal: 0
            })
        );
        assert_eq!(Mark::parse(SHARD_END), Some(Mark::End));
        for bad in [
            "", "at:", "at:12", "12/x", "/3", "x/3", "at:/3", "1 2/3", "-1/2",
        ] {
            assert_eq!(Mark::parse(bad), None, "{bad:?}");
        }
    }

    /// What a lease's checkpoint leaves to read, for the shared intent log's retirement:
    /// the record after the last delivered one, the anchor's first, nothing after the end;
    /// a checkpoint it cannot read retires nothing.
    #[test]
    fn a_checkpoint_leaves_the_ordinals_after_it_to_read() {
        let next = |s: &str| next_offset(&Value::String(s.into()));
        assert_eq!(next("4959/7"), Some(8));
        assert_eq!(next("4959"), Some(1));
        assert_eq!(next("at:4959/1700000000000"), Some(1_700_000_000_001));
        assert_eq!(next(SHARD_END), Some(u64::MAX));
        assert_eq!(next(&format!("1/{}", u64::MAX)), None);
        assert_eq!(next("x/3"), None);
        assert_eq!(next_offset(&serde_json::json!(12)), None);
    }

    /// A late ack (a batch read before the lease was lost and taken back) never moves
    /// the checkpoint back; the end and a later mark move it on.
    #[test]
    fn a_checkpoint_never_moves_back() {
        let after = |ordinal| Mark::After {
            seq: "49".into(),
            ordinal,
        };
        assert!(advances(None, &after(3)));
        assert!(advances(Some("49/3"), &after(3)));
        assert!(advances(Some("49/3"), &after(4)));
        assert!(!advances(Some("49/9"), &after(4)), "a late ack");
        assert!(!advances(Some(SHARD_END), &after(4)));
        assert!(advances(Some("49/9"), &Mark::End));
        assert!(advances(Some("at:49/5"), &after(6)));
        assert!(advances(Some("damaged"), &after(1)));
    }

    #[test]
    fn shard_partitions_are_indices_below_the_hosts_limit() {
        assert_eq!(shard_partition("shardId-000000000007"), Some(7));
        assert_eq!(shard_partition("shardId-000000065534"), Some(65534));
        assert_eq!(shard_partition("shardId-000000065535"), None);
        assert_eq!(shard_partition("shard-7"), None);
        assert_eq!(shard_partition("shardId-"), None);
        // Not the canonical 12 digits: its lease and delivery records would not meet.
        assert_eq!(shard_partition("shardId-7"), None);
        assert_eq!(shard_partition("shardId-0000000000007"), None);
    }

    proptest! {
        #[test]
        fn marks_read_back_as_written(seq in "[1-9][0-9]{0,60}", ordinal in any::<u64>(), at in any::<bool>()) {
            let m = if at {
                Mark::At { seq, ordinal }
            } else {
                Mark::After { seq, ordinal }
            };
            prop_assert_eq!(Mark::parse(&m.encode()), Some(m));
        }
    }
}
