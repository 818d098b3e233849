//! Firehose-style delivery for pipelines with an object sink: partition-key extraction,
//! per-partition buffers flushed by size, interval, memory pressure or drain, encoding
//! (delimiter + compression), deterministic object names, the Firehose error output, and
//! acks that trail durable delivery (a low watermark over the open buffers).
//!
//! **Invariant:** a batch is acked to its source only when every buffer that holds one of
//! its records has been durably stored by the sink — and acks go out in batch order, so a
//! checkpoint never passes an undelivered record.
//! **Invariant:** buffered bytes of all pipelines together stay under
//! `limits.buffer_memory`: past it, the pipeline adding records flushes its largest buffers
//! (reason `memory`).

mod budget;
mod buffer;
mod chunks;
mod encode;
mod errors;
mod intent;
mod naming;
mod parquet;
mod recovery;
mod shared;
mod spool;
mod watermark;

pub use budget::MemoryBudget;
pub use buffer::BufferKey;
pub use encode::encode;
pub use errors::ErrorType;
pub use intent::{Intent, IntentError, IntentLog};
pub use shared::{SharedError, SharedIntents};
pub use spool::{SpoolFile, SPILL_AT};

use buffer::Buffer;
use encode::Encoders;
use naming::unique_id;
use recovery::{partition_id, Recovering, Recovery};
use shared::IntentStore;

use crate::plugins::{CallError, HostObject, SinkInstance};
use crate::record::{now_ms, Record};
use crate::spec::{Compression, DeliverySpec};

use std::collections::HashMap;
use std::path::PathBuf;

/// A buffer to flush: an open partition, or the replay of an object from the intent log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slot {
    /// The open buffer of a partition (or error type).
    Open(BufferKey),
    /// The records of an object that may have been stored before a crash, gathered again.
    Replay(u64),
}

/// Why a buffer was flushed (`sluice_buffer_flushes_total{reason}`).
#[derive(Debug, Clone, Copy)]
pub enum FlushReason {
    /// Reached `buffer.size`.
    Size,
    /// `buffer.interval` passed since its first record.
    Interval,
    /// Global memory budget exceeded.
    Memory,
    /// The pipeline is stopping.
    Drain,
}

impl FlushReason {
    fn as_str(self) -> &'static str {
        match self {
            FlushReason::Size => "size",
            FlushReason::Interval => "interval",
            FlushReason::Memory => "memory",
            FlushReason::Drain => "drain",
        }
    }
    fn parse(s: &str) -> FlushReason {
        match s {
            "size" => FlushReason::Size,
            "memory" => FlushReason::Memory,
            "drain" => FlushReason::Drain,
            _ => FlushReason::Interval,
        }
    }
}

/// What can go wrong on delivery's own disk files (the intent log, spool files): the
/// pipeline's run ends and it restarts from its checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// Reading or writing the intent log.
    #[error(transparent)]
    Intent(#[from] IntentError),
    /// Reading or writing the shared intent log in the cluster (or fenced off it).
    #[error(transparent)]
    Shared(#[from] SharedError),
    /// Writing a spool file.
    #[error("spool file: {0}")]
    Spool(#[from] std::io::Error),
    /// Converting a buffer to Parquet.
    #[error(transparent)]
    Convert(#[from] parquet::ConvertError),
}

/// Where a pipeline keeps its intent log, and the hash of the config it belongs to. Only
/// pipelines whose source replays the same records with the same sequences get one.
#[derive(Debug, Clone)]
pub struct Journal {
    /// `data_dir/delivery/<pipeline>`.
    pub dir: PathBuf,
    /// Hash of everything that decides which record lands in which object.
    pub config_hash: String,
    /// The source's shards are shared by several nodes (leases): objects hold one shard's
    /// records each and the intents live in the cluster's lease table, not in `dir`.
    pub shared: Option<crate::stream::lease::SharedSource>,
}

/// One pipeline's delivery state.
pub struct Delivery {
    pipeline: String,
    spec: DeliverySpec,
    buffers: HashMap<BufferKey, Buffer>,
    /// Which batches may be acked.
    acks: watermark::Watermark,
    bytes: u64,
    /// Allocated bytes of this pipeline's buffers (its share of the global budget).
    mem: u64,
    /// Open data (not error) buffers, for `max_active_partitions`.
    data_partitions: usize,
    /// Compression states reused from object to object.
    encoders: Encoders,
    /// Data records durably stored so far.
    pub delivered: u64,
    log: Option<IntentStore>,
    /// Objects hold one shard's records each (the intents are shared by nodes).
    per_shard: bool,
    /// `per_shard`: the highest sequence met per shard tag — a source that rewinds (it
    /// took a shard back) replays records this delivery holds or stored already.
    high: HashMap<u64, u64>,
    recovering: Recovering,
    /// Replays of objects from the previous run, by intent id.
    replays: HashMap<u64, Buffer>,
    spool_dir: Option<PathBuf>,
    spools: usize,
    /// Spilling failed once: memory pressure flushes early instead.
    spill_failed: bool,
    /// The last relief found nothing worth spilling.
    nothing_to_spill: bool,
    /// The daemon's shared buffer budget.
    budget: std::sync::Arc<MemoryBudget>,
    /// `schema = "infer"`: each partition's schema as its last object left it; new
    /// buffers start from it.
    carried: parquet::PartitionSchemas,
    /// Records in all buffers (kept, not summed: thousands of partitions).
    records: u64,
    /// An open buffer reached `size` since the last scan for due buffers.
    size_due: bool,
    /// No open buffer's interval ends before this (a lower bound): until then, and with
    /// no buffer at its size, [`Delivery::due`] needs no scan.
    next_interval_at: Option<std::time::Instant>,
    /// When the oldest-record gauge was last computed (a scan; at most once a second).
    oldest_at: Option<std::time::Instant>,
}

/// An encoded object ready for the sink, plus what completing it releases.
pub struct Flushed {
    /// The object.
    pub object: HostObject,
    tokens: Vec<u64>,
    reason: FlushReason,
    records: u64,
    raw_bytes: u64,
    error: Option<ErrorType>,
    /// Of `records`, those in the error output (all of them when `error` is set).
    failed: u64,
    /// The error documents of records a Parquet conversion refused, delivered before
    /// `object` under the same intent (both are stored before it is marked stored).
    pub companion: Option<HostObject>,
    intent: Option<u64>,
    /// The body's file, when the object was spooled: held for its `Drop`, which removes
    /// the file once the object is stored or abandoned.
    _spool: Option<SpoolFile>,
}

/// Whether a record may open a partition of its own (checked once per partition, when
/// its first record comes): its prefix must render — no missing or empty key, not too long,
/// the same for every record of the partition — and the cap must leave room. Data
/// partitions only; the error output's buffers always open.
fn new_partition(
    spec: &DeliverySpec,
    open: usize,
    key: &BufferKey,
    rec: &Record,
) -> Result<(), (ErrorType, String)> {
    let BufferKey::Data { query, lambda, .. } = key else {
        return Ok(());
    };
    if let Err(e) = spec
        .prefix_template
        .render(query, lambda, rec.arrival_ms, None, "xxxxxxxxxxx")
    {
        return Err((ErrorType::PartitioningFailed, e.to_string()));
    }
    if open >= spec.max_active_partitions as usize {
        return Err((
            ErrorType::ActivePartitionExceeded,
            format!(
                "the pipeline already has {} active partitions",
                spec.max_active_partitions
            ),
        ));
    }
    Ok(())
}

impl Delivery {
    /// Delivery state for a pipeline (the spec was validated with the config). With a
    /// journal, the intent log is opened and what it holds from the previous run is
    /// matched against replayed records.
    pub fn new(
        pipeline: &str,
        spec: DeliverySpec,
        journal: Option<&Journal>,
        spool_dir: Option<PathBuf>,
        budget: std::sync::Arc<MemoryBudget>,
    ) -> Result<Delivery, DeliveryError> {
        if let Some(dir) = &spool_dir {
            spool::clean(dir);
        }
        metrics::counter!("sluice_buffer_spills_total", "pipeline" => pipeline.to_string())
            .increment(0);
        metrics::counter!("sluice_buffer_spilled_bytes_total", "pipeline" => pipeline.to_string())
            .increment(0);
        // Registering the histogram exports it with a zero count before the first object.
        let _ = metrics::histogram!("sluice_delivery_latency_seconds", "pipeline" => pipeline.to_string());
        let infer = matches!(
            &spec.format,
            Some(crate::spec::ParquetSpec {
                schema: crate::spec::SchemaSpec::Infer,
                ..
            })
        );
        let (log, recovered, schemas) = match journal {
            Some(Journal {
                shared: Some(src),
                config_hash,
                ..
            }) => {
                let table = crate::stream::lease::IntentTable::open(
                    src.cluster.clone(),
                    pipeline,
                    &src.stream,
                )
                .map_err(SharedError::from)?;
                let s =
                    SharedIntents::new(std::sync::Arc::new(table), config_hash, src.next_offset);
                (Some(IntentStore::Shared(s)), Vec::new(), HashMap::new())
            }
            Some(j) => {
                let o = IntentLog::open(&j.dir, &j.config_hash, infer)?;
                (Some(IntentStore::Local(o.log)), o.recovered, o.schemas)
            }
            None => (None, Vec::new(), HashMap::new()),
        };
        // Every flush reason is exported from the start, at 0. `partitions` stays 0: past
        // `max_active_partitions` records go to the error output, as in Firehose, instead
        // of forcing a flush.
        for reason in ["size", "interval", "memory", "partitions", "drain"] {
            metrics::counter!("sluice_buffer_flushes_total", "pipeline" => pipeline.to_string(), "reason" => reason).increment(0);
        }
        if infer {
            metrics::gauge!("sluice_delivery_inferred_schemas", "pipeline" => pipeline.to_string())
                .set(schemas.len() as f64);
        }
        let mut recovering = Recovering::default();
        if !recovered.is_empty() {
            tracing::info!(
                pipeline,
                objects = recovered.len(),
                "intent log: matching replayed records against the objects of the previous run"
            );
        }
        recovering.entries = recovered.into_iter().map(|r| (r.intent.id, r)).collect();
        recovering.index();
        Ok(Delivery {
            per_shard: matches!(log, Some(IntentStore::Shared(_))),
            high: HashMap::new(),
            log,
            recovering,
            replays: HashMap::new(),
            spool_dir,
            spools: 0,
            spill_failed: false,
            nothing_to_spill: false,
            budget,
            carried: parquet::PartitionSchemas::new(schemas, spec.max_active_partitions),
            records: 0,
            size_due: false,
            next_interval_at: None,
            oldest_at: None,
            pipeline: pipeline.to_string(),
            spec,
            buffers: HashMap::new(),
            acks: watermark::Watermark::default(),
            bytes: 0,
            mem: 0,
            data_partitions: 0,
            encoders: Encoders::default(),
            delivered: 0,
        })
    }

    /// Appends one payload to the buffer of `key`, creating it if needed — or, during
    /// crash recovery, skips it or adds it to the replay of its old object. Data records
    /// are followed by the configured delimiter; error documents are JSON lines always.
    fn append(
        &mut self,
        key: BufferKey,
        payload: &[u8],
        rec: &Record,
        token: u64,
        touched: &mut usize,
    ) {
        let route = self.recovering.lookup(&key, rec.sequence);
        // Only error documents come this way: they are never converted.
        self.append_routed(key, payload, None, rec, token, touched, route);
    }

    /// [`Delivery::append`] with the recovery lookup already done (`route`). `parsed` is
    /// a Parquet record under `schema = "infer"`: it widens the buffer's schema, or — when
    /// it does not fit the buffer's earlier records — marks the buffer conflicted (it is
    /// buffered all the same: the flush decides which records are refused).
    #[allow(clippy::too_many_arguments)]
    fn append_routed(
        &mut self,
        key: BufferKey,
        payload: &[u8],
        parsed: Option<&serde_json::Value>,
        rec: &Record,
        token: u64,
        touched: &mut usize,
        route: Option<Recovery>,
    ) {
        let ranges = self.log.is_some();
        let compression = match key {
            BufferKey::Data { .. } => self.spec.buffer_codec(),
            BufferKey::Error(..) => Compression::None.codec(),
        };
        let spill = self.spools < spool::MAX_OPEN;
        // A Parquet record that opens a buffer is checked before the buffer exists (only
        // then: the lookup costs a second hash of the key per record).
        let mut first_schema = None;
        let mut checked = false;
        if parsed.is_some() {
            let exists = match route {
                Some(Recovery::Skip) => true,
                Some(Recovery::Replay(id)) => self.replays.contains_key(&id),
                None => self.buffers.contains_key(&key),
            };
            if !exists {
                // A record refused a partition must not touch the schema cache.
                if route.is_none() {
                    if let Err((t, why)) =
                        new_partition(&self.spec, self.data_partitions, &key, rec)
                    {
                        self.fail(rec, t, &why, token, touched);
                        return;
                    }
                    checked = true;
                }
                first_schema = Some(parquet::BufferSchema::starting(
                    self.start_schema(&key, &route),
                ));
            }
        }
        let delim: &[u8] = match key {
            // Parquet buffers hold JSON lines until the flush converts them.
            BufferKey::Data { .. } if self.spec.format.is_some() => b"\n",
            BufferKey::Data { .. } => self.spec.delimiter.as_bytes(),
            BufferKey::Error(..) => b"\n",
        };
        let b = match route {
            Some(Recovery::Skip) => {
                metrics::counter!("sluice_delivery_replay_skipped_records_total", "pipeline" => self.pipeline.clone()).increment(1);
                return;
            }
            Some(Recovery::Replay(id)) => self
                .replays
                .entry(id)
                .or_insert_with(|| Buffer::new(key, rec)),
            // One lookup per record: a new partition is checked where the map finds no
            // buffer for it.
            None => match self.buffers.entry(key) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    // (A Parquet record was checked before its schema was looked up.)
                    let refused = match checked {
                        true => Ok(()),
                        false => new_partition(&self.spec, self.data_partitions, e.key(), rec),
                    };
                    if let Err((t, why)) = refused {
                        drop(e);
                        self.fail(rec, t, &why, token, touched);
                        return;
                    }
                    if matches!(e.key(), BufferKey::Data { .. }) {
                        self.data_partitions += 1;
                    }
                    let key = e.key().clone();
                    let b = Buffer::new(key, rec);
                    let ends = b.created + self.spec.interval;
                    self.next_interval_at =
                        Some(self.next_interval_at.map_or(ends, |t| t.min(ends)));
                    e.insert(b)
                }
            },
        };
        if let Some(s) = first_schema {
            b.schema = s;
        }
        let mut grown = 0;
        if let Some(v) = parsed {
            if b.schema.take(v, &rec.data).is_err() {
                b.conflicted = true;
            }
            let side = b.side_bytes();
            if !std::ptr::eq(payload.as_ptr(), rec.data.as_ptr()) {
                // Re-written on one line: its error document keeps the original bytes.
                b.originals
                    .push((b.metas.len(), rec.data.to_vec().into_boxed_slice()));
            }
            b.metas.push(buffer::Meta::of(rec));
            grown += b.side_bytes() - side;
        }
        grown += b.push(payload, delim, rec, token, touched, ranges);
        self.records += 1;
        if b.raw_len() >= self.spec.size {
            self.size_due = true;
        }
        let mut freed = 0;
        if b.spill.is_some() && b.data.len() >= SPILL_AT {
            // A spilled buffer keeps spilling (its bytes must stay in order on disk).
            if let Some(dir) = &self.spool_dir {
                match b.spill_out(dir) {
                    Ok(f) => freed = f,
                    Err(e) => {
                        b.spool_error.get_or_insert(e);
                    }
                }
            }
        } else if spill && b.spool.is_none() && b.data.len() >= SPILL_AT {
            if let Some(dir) = &self.spool_dir {
                match spool::Spool::create(dir, compression) {
                    Ok(mut sp) => {
                        if let Err(e) = b.data.slices().try_for_each(|s| sp.write(s)) {
                            b.spool_error.get_or_insert(e);
                        }
                        freed = b.data.capacity() as u64;
                        b.data.clear();
                        b.spool = Some(Box::new(sp));
                        grown += spool::Spool::memory(compression);
                        self.spools += 1;
                    }
                    Err(e) => {
                        tracing::warn!(pipeline = %self.pipeline, error = %e, "cannot create a spool file; the buffer stays in memory");
                    }
                }
            }
        }
        self.mem = self.mem + grown - freed;
        self.budget.add(grown);
        self.budget.sub(freed);
        self.bytes += (payload.len() + delim.len()) as u64;
    }

    /// The inferred schema a new buffer starts from: a replayed object's from its intent
    /// (so the replay checks its records exactly as the first run did), a partition's from
    /// its previous object.
    fn start_schema(
        &mut self,
        key: &BufferKey,
        route: &Option<Recovery>,
    ) -> Option<parquet::Inferred> {
        match route {
            Some(Recovery::Replay(id)) => self
                .recovering
                .entries
                .get(id)
                .and_then(|r| r.intent.schema.clone()),
            Some(Recovery::Skip) => None,
            None => self.carried.get(&partition_id(key)),
        }
    }

    /// During recovery: stored objects of the previous run whose records the source has
    /// read past (on every shard) no longer need matching.
    fn recovery_passed(&mut self, token: u64) {
        if self.recovering.entries.is_empty() {
            return;
        }
        let max_seen = &self.recovering.max_seen;
        let passed: Vec<u64> = self
            .recovering
            .entries
            .values()
            .filter(|r| {
                r.stored
                    && r.intent
                        .ranges
                        .iter()
                        .all(|&(t, _, last)| max_seen.get(&t).is_some_and(|&m| m > last))
            })
            .map(|r| r.intent.id)
            .collect();
        if passed.is_empty() {
            return;
        }
        for id in &passed {
            self.recovering.entries.remove(id);
            if let Some(log) = &mut self.log {
                log.passed(*id, token);
            }
        }
        self.recovering.index();
        if self.recovering.entries.is_empty() {
            tracing::info!(pipeline = %self.pipeline, "intent log: recovery finished");
        }
    }

    fn error_doc(&self, rec: &Record, etype: ErrorType, message: &str) -> Vec<u8> {
        errors::error_doc(&self.pipeline, rec, etype, message)
    }

    fn fail(
        &mut self,
        rec: &Record,
        etype: ErrorType,
        message: &str,
        token: u64,
        touched: &mut usize,
    ) {
        // Records rejected by transforms were counted where they were rejected.
        if etype != ErrorType::ProcessingFailed {
            metrics::counter!("sluice_records_failed_total", "pipeline" => self.pipeline.clone(), "error_type" => etype.as_str()).increment(1);
        }
        let doc = self.error_doc(rec, etype, message);
        let shard = self.shard_of(rec);
        self.append(BufferKey::Error(etype, shard), &doc, rec, token, touched);
    }

    /// The shard tag a record's buffer is keyed by (0 unless objects hold one shard each).
    fn shard_of(&self, rec: &Record) -> u64 {
        if self.per_shard {
            rec.sequence >> 48
        } else {
            0
        }
    }

    /// With intents shared by nodes: reads what the cluster holds for every shard of this
    /// batch that this delivery has not met yet (the objects the last reader of the shard
    /// left unconfirmed are rebuilt, those it stored are skipped). Call before
    /// [`Delivery::add`].
    pub fn claim_shards(
        &mut self,
        records: &[Record],
        rejected: &[(Record, String)],
    ) -> Result<(), DeliveryError> {
        let Some(IntentStore::Shared(log)) = &mut self.log else {
            return Ok(());
        };
        let mut found = Vec::new();
        for rec in records.iter().chain(rejected.iter().map(|r| &r.0)) {
            let tag = rec.sequence >> 48;
            if tag == 0 || log.claimed(tag) {
                continue;
            }
            let recovered = log.claim(tag)?;
            if !recovered.is_empty() {
                tracing::info!(pipeline = %self.pipeline, shard = %crate::stream::shard_id(u32::try_from(tag - 1).unwrap_or(u32::MAX)), objects = recovered.len(), "matching the shard's records against the objects its last reader wrote");
            }
            found.extend(recovered);
        }
        if !found.is_empty() {
            self.recovering
                .entries
                .extend(found.into_iter().map(|r| (r.intent.id, r)));
            self.recovering.index();
        }
        Ok(())
    }

    /// `per_shard`: whether a record is one this delivery met already (its source
    /// rewound a shard it took back), counted as skipped. Outputs of one input share its
    /// sequence, so a record is met already only if an earlier batch went past it.
    fn met_already(&mut self, rec: &Record, high: &HashMap<u64, u64>) -> bool {
        let tag = rec.sequence >> 48;
        let met = self.per_shard && tag != 0 && high.get(&tag).is_some_and(|&h| rec.sequence <= h);
        if met {
            metrics::counter!("sluice_delivery_replay_skipped_records_total", "pipeline" => self.pipeline.clone()).increment(1);
        }
        met
    }

    /// Adds a batch (its delivered records and its rejected ones) under ack `token`.
    pub fn add(&mut self, token: u64, records: &[Record], rejected: &[(Record, String)]) {
        let mut touched = 0usize;
        // What earlier batches reached (this batch's own records raise it at the end).
        let high = if self.per_shard {
            let before = self.high.clone();
            for rec in records.iter().chain(rejected.iter().map(|r| &r.0)) {
                let tag = rec.sequence >> 48;
                if tag != 0 {
                    let h = self.high.entry(tag).or_insert(rec.sequence);
                    *h = (*h).max(rec.sequence);
                }
            }
            before
        } else {
            HashMap::new()
        };
        for (rec, why) in rejected {
            if self.met_already(rec, &high) {
                continue;
            }
            self.fail(rec, ErrorType::ProcessingFailed, why, token, &mut touched);
        }
        for rec in records {
            if self.met_already(rec, &high) {
                continue;
            }
            let query = match &self.spec.partitioner {
                None => Vec::new(),
                Some(p) => match p.extract(&rec.data) {
                    Ok(q) => q,
                    Err(e) => {
                        let e = e.to_string();
                        self.fail(rec, ErrorType::PartitioningFailed, &e, token, &mut touched);
                        continue;
                    }
                },
            };
            let key = BufferKey::Data {
                query,
                lambda: if self.spec.prefix_template.is_dynamic() {
                    rec.attrs.clone()
                } else {
                    Vec::new()
                },
                shard: self.shard_of(rec),
            };
            // Parquet: the record must convert (Firehose checks after partitioning).
            let mut compact = None;
            let mut parsed = None;
            if let Some(f) = &self.spec.format {
                match parquet::check(&f.schema, &rec.data) {
                    Ok(v) => {
                        // Lines hold one record each: a record spread over lines is
                        // re-written on one (the same JSON value).
                        if rec.data.contains(&b'\n') {
                            compact = Some(serde_json::to_vec(&v).unwrap_or_default());
                        }
                        if matches!(f.schema, crate::spec::SchemaSpec::Infer) {
                            parsed = Some(v);
                        }
                    }
                    Err(e) => {
                        let e = e.0;
                        self.fail(
                            rec,
                            ErrorType::FormatConversionFailed,
                            &e,
                            token,
                            &mut touched,
                        );
                        continue;
                    }
                }
            }
            // Recovery may take the record (skip it or add it to a replay): then it needs no
            // partition of its own.
            let route = self.recovering.lookup(&key, rec.sequence);
            let payload = compact.as_deref().unwrap_or(&rec.data);
            self.append_routed(
                key,
                payload,
                parsed.as_ref(),
                rec,
                token,
                &mut touched,
                route,
            );
        }
        self.recovery_passed(token);
        self.acks.arrived(token, touched);
        self.relieve();
        self.publish_gauges();
    }

    /// Up to `max` buffers due now, from one pass over the buffers (a pass per object was
    /// quadratic with thousands of partitions): replayed objects once they hold all their
    /// records again (or, as a safety net when they do not all come back, after twice the
    /// interval), then buffers past their size, then past their interval; when none is due
    /// and memory is short with no way to spill, the largest buffer.
    pub fn due(&mut self, max: usize) -> Vec<(Slot, FlushReason)> {
        let mut out = Vec::new();
        let now = std::time::Instant::now();
        for (id, b) in &self.replays {
            if out.len() >= max {
                return out;
            }
            if let Some(r) = self.recovering.entries.get(id) {
                if b.records >= r.intent.records {
                    out.push((Slot::Replay(*id), FlushReason::parse(&r.intent.reason)));
                    continue;
                }
            }
            if now.duration_since(b.created) >= self.spec.interval * 2 {
                out.push((Slot::Replay(*id), FlushReason::Interval));
            }
        }
        let pressed = self.budget.used() > self.budget.limit()
            && (self.spool_dir.is_none() || self.spill_failed || self.nothing_to_spill);
        let quiet = !self.size_due && self.next_interval_at.is_none_or(|t| now < t);
        if quiet && !pressed {
            return out;
        }
        let mut by_time = Vec::new();
        let mut sized = 0;
        let mut next: Option<std::time::Instant> = None;
        for b in self.buffers.values() {
            let ends = b.created + self.spec.interval;
            next = Some(next.map_or(ends, |t| t.min(ends)));
            if b.raw_len() >= self.spec.size {
                sized += 1;
                if out.len() < max {
                    out.push((Slot::Open(b.key.clone()), FlushReason::Size));
                }
            } else if by_time.len() < max && now >= ends {
                by_time.push((Slot::Open(b.key.clone()), FlushReason::Interval));
            }
        }
        // Those returned are about to be taken; if they are not, the bound is still low
        // and the next call scans again.
        self.size_due = sized > max;
        self.next_interval_at = next;
        out.extend(by_time);
        out.truncate(max);
        if out.is_empty() && pressed {
            // Only when buffers cannot spill to disk: flush early, largest first (frees
            // the most memory per object).
            if let Some(b) = self.buffers.values().max_by_key(|b| b.data.capacity()) {
                out.push((Slot::Open(b.key.clone()), FlushReason::Memory));
            }
        }
        out
    }

    /// Under memory pressure, moves the largest buffers' bytes to spill files until the
    /// budget has 1/8 of room again. Objects keep their size and time boundaries; only
    /// when spilling is impossible (no data_dir, a disk error) do buffers flush early.
    fn relieve(&mut self) {
        let limit = self.budget.limit();
        if self.budget.used() <= limit || self.spill_failed {
            return;
        }
        let Some(dir) = self.spool_dir.clone() else {
            return;
        };
        let target = limit - limit / 8;
        let spills =
            metrics::counter!("sluice_buffer_spills_total", "pipeline" => self.pipeline.clone());
        let spilled = metrics::counter!("sluice_buffer_spilled_bytes_total", "pipeline" => self.pipeline.clone());
        // Largest first, from one sorted pass (not a scan per spill: with 20,000
        // partitions that scan was most of the CPU under pressure).
        let mut order: Vec<(usize, Option<BufferKey>, Option<u64>)> = self
            .buffers
            .iter()
            .filter(|(_, b)| b.spool.is_none() && b.data.capacity() > chunks::FIRST)
            .map(|(k, b)| (b.data.capacity(), Some(k.clone()), None))
            .chain(
                self.replays
                    .iter()
                    .filter(|(_, b)| b.spool.is_none() && b.data.capacity() > chunks::FIRST)
                    .map(|(id, b)| (b.data.capacity(), None, Some(*id))),
            )
            .collect();
        order.sort_unstable_by_key(|o| std::cmp::Reverse(o.0));
        for (cap, key, id) in order {
            if self.budget.used() <= target {
                self.nothing_to_spill = false;
                return;
            }
            let b = match (key, id) {
                (Some(k), _) => self.buffers.get_mut(&k),
                (_, Some(id)) => self.replays.get_mut(&id),
                _ => None,
            };
            let Some(b) = b else { continue };
            let len = b.data.len() as u64;
            match b.spill_out(&dir) {
                Ok(freed) => {
                    self.mem -= freed;
                    self.budget.sub(freed);
                    spills.increment(1);
                    spilled.increment(len);
                }
                Err(e) => {
                    tracing::error!(pipeline = %self.pipeline, error = %e, bytes = cap, "cannot spill a buffer to disk; buffers flush early under memory pressure instead");
                    self.spill_failed = true;
                    return;
                }
            }
        }
        // Spilling all that is worth it did not bring the budget down (first chunks of
        // many partitions, spool encoders, or other pipelines hold it): let the largest
        // buffer flush early instead of spilling on every batch.
        self.nothing_to_spill = self.budget.used() > target;
    }

    /// Up to `max` buffers, due or not (for draining).
    pub fn any(&self, max: usize) -> Vec<(Slot, FlushReason)> {
        self.buffers
            .keys()
            .map(|k| Slot::Open(k.clone()))
            .chain(self.replays.keys().map(|id| Slot::Replay(*id)))
            .take(max)
            .map(|s| (s, FlushReason::Drain))
            .collect()
    }

    /// Takes a buffer out and encodes it into an object (CPU-bound: compression). With an
    /// intent log, the object's intent is written and synced before it is returned.
    pub fn take(
        &mut self,
        slot: &Slot,
        reason: FlushReason,
    ) -> Result<Option<Flushed>, DeliveryError> {
        let f = self.take_unsynced(slot, reason)?;
        if let Some(log) = &mut self.log {
            log.sync()?;
        }
        Ok(f)
    }

    /// Takes the buffers of `due` out as objects — all of them, or the first ones holding
    /// `max_bytes` of records (at least one) — with one sync of the intent log for all
    /// their intents: every object returned may go to the sink at once.
    pub fn take_round(
        &mut self,
        due: &[(Slot, FlushReason)],
        max_bytes: u64,
    ) -> Result<Vec<Flushed>, DeliveryError> {
        let mut out = Vec::new();
        let mut bytes = 0;
        for (slot, reason) in due {
            if !out.is_empty() && bytes >= max_bytes {
                // The rest stays due: the next `due` scans again.
                self.size_due = true;
                break;
            }
            if let Some(f) = self.take_unsynced(slot, *reason)? {
                bytes += f.raw_bytes;
                out.push(f);
            }
        }
        if let Some(log) = &mut self.log {
            log.sync()?;
        }
        Ok(out)
    }

    /// [`Delivery::take`] without the sync: the intent is written, not yet durable.
    fn take_unsynced(
        &mut self,
        slot: &Slot,
        reason: FlushReason,
    ) -> Result<Option<Flushed>, DeliveryError> {
        let (mut b, replay_of) = match slot {
            Slot::Open(key) => {
                let Some(b) = self.buffers.remove(key) else {
                    return Ok(None);
                };
                if matches!(b.key, BufferKey::Data { .. }) {
                    self.data_partitions -= 1;
                }
                (b, None)
            }
            Slot::Replay(id) => {
                let Some(b) = self.replays.remove(id) else {
                    return Ok(None);
                };
                (b, self.recovering.remove(*id))
            }
        };
        self.records -= b.records;
        let raw = b.raw_len();
        let (template, query, lambda, mut error, shard) = match &b.key {
            BufferKey::Data {
                query,
                lambda,
                shard,
            } => (
                &self.spec.prefix_template,
                query.as_slice(),
                lambda.as_slice(),
                None,
                *shard,
            ),
            BufferKey::Error(t, shard) => (
                &self.spec.error_template,
                &[][..],
                &[][..],
                Some(*t),
                *shard,
            ),
        };
        let version = self.log.as_ref().map_or(1, |l| l.version(shard));
        let compression = if error.is_some() {
            Compression::None.codec()
        } else {
            self.spec.codec()
        };
        // How the buffer's bytes were held (plain lines for Parquet, converted below).
        let held_codec = if error.is_some() {
            Compression::None.codec()
        } else {
            self.spec.buffer_codec()
        };
        let parquet = match error {
            None => self.spec.format.as_ref(),
            Some(_) => None,
        };
        let partition = partition_id(&b.key);
        let id = unique_id(&self.pipeline, &partition, b.first_seq, b.records);
        let random: String = id
            .iter()
            .take(11)
            .map(|x| (b'a' + x % 26) as char)
            .collect();
        // Validated at add time; a failure here would be a bug, so fall back to the error type.
        let prefix = template
            .render(
                query,
                lambda,
                b.oldest_ms,
                error.map(ErrorType::as_str),
                &random,
            )
            .unwrap_or_else(|_| {
                format!(
                    "{}/",
                    error.map(ErrorType::as_str).unwrap_or("unpartitioned")
                )
            });
        let mut key = naming::object_key(
            &prefix,
            &self.pipeline,
            version,
            b.oldest_ms,
            &id,
            if parquet.is_some() {
                ".parquet"
            } else {
                compression.compression.extension()
            },
        );
        let last_token = b.tokens.last().copied().unwrap_or(0);
        // Released before encoding: the budget frees as the flush starts.
        let held = b.data.capacity() as u64
            + b.side_bytes()
            + if b.spool.is_some() {
                spool::Spool::memory(held_codec)
            } else {
                0
            };
        self.bytes -= raw;
        self.mem -= held;
        self.budget.sub(held);
        if let Some(e) = b.spool_error.take() {
            return Err(DeliveryError::Spool(e));
        }
        let (body, spool) = match (b.spool.take(), &b.spill, &self.spool_dir) {
            (Some(sp), _, _) => {
                self.spools -= 1;
                (Vec::new(), Some((*sp).finish()?))
            }
            // Spilled: spilled bytes then the ones in RAM, through the compressor to a
            // spool file (one encoder, for the time of this flush only).
            (None, Some(raw), Some(dir)) => {
                let mut sp = spool::Spool::create(dir, held_codec)?;
                raw.copy_into(&mut sp)?;
                for s in b.data.slices() {
                    sp.write(s)?;
                }
                (Vec::new(), Some(sp.finish()?))
            }
            _ => (
                self.encoders
                    .encode_slices(held_codec, b.data.slices(), b.data.len()),
                None,
            ),
        };
        // `schema = "infer"` with records that conflicted on arrival (or no column at
        // all): which ones are refused is decided now, in shard-and-sequence order, so a
        // replay that meets the shards interleaved otherwise decides the same.
        let mut refused = Vec::new();
        let infer = matches!(
            parquet,
            Some(crate::spec::ParquetSpec {
                schema: crate::spec::SchemaSpec::Infer
            })
        );
        if infer && (b.conflicted || !b.schema.inferred().is_some_and(parquet::has_column)) {
            let tags: Vec<u64> = b.metas.iter().map(|m| m.sequence >> 48).collect();
            let path = spool.as_ref().map(|f| f.path().to_path_buf());
            let d = parquet::decide(b.schema.start().cloned(), &tags, || {
                Ok(match &path {
                    Some(p) => Box::new(std::io::BufReader::new(std::fs::File::open(p)?)),
                    None => Box::new(&body[..]),
                })
            })?;
            b.schema = d.schema;
            refused = d.refused;
        }
        // `schema = "infer"`: the schema the object started from goes into its intent, and
        // the one it ends with becomes the partition's (not a replay's: the partition has
        // moved on since).
        let start = b.schema.start().cloned();
        let carry = match (&slot, b.schema.inferred()) {
            (Slot::Open(_), Some(end)) if error.is_none() => {
                let (changed, forgotten) = self.carried.keep(&partition, end);
                if let Some(log) = &mut self.log {
                    for p in &forgotten {
                        log.forget_schema(p);
                    }
                }
                if changed {
                    metrics::gauge!("sluice_delivery_inferred_schemas", "pipeline" => self.pipeline.clone())
                        .set(self.carried.len() as f64);
                }
                changed.then(|| end.clone())
            }
            _ => None,
        };
        let intent = match (replay_of, &mut self.log) {
            // Every record is back: the very same object, under the very same key.
            (Some(r), _) if r.intent.records == b.records => {
                key = r.intent.key;
                Some(r.intent.id)
            }
            (replay_of, Some(log)) => {
                if let Some(r) = replay_of {
                    // Not every record came back: these records go out under a new name, and
                    // the old object (if the sink had stored it) holds them too.
                    log.forget(r.intent.id);
                    tracing::warn!(pipeline = %self.pipeline, key = %r.intent.key, records = b.records, "intent log: an object of the previous run could not be rebuilt; its records may be duplicated");
                    metrics::counter!("sluice_delivery_duplicate_records_total", "pipeline" => self.pipeline.clone()).increment(b.records);
                }
                let intent = Intent {
                    id: log.next_id(),
                    partition: partition.clone(),
                    key: key.clone(),
                    ranges: b.ranges.clone(),
                    records: b.records,
                    reason: reason.as_str().to_string(),
                    schema: start,
                    carry,
                };
                log.intend(&intent, last_token)?;
                Some(intent.id)
            }
            (_, None) => None,
        };
        // The refused records' error documents: an object of their own, named after the
        // data object (a replay names it the same), delivered with it.
        let etype = ErrorType::FormatConversionFailed;
        let refusals = (!refused.is_empty()).then(|| {
            metrics::counter!("sluice_records_failed_total", "pipeline" => self.pipeline.clone(), "error_type" => etype.as_str()).increment(refused.len() as u64);
            let mut docs = Vec::new();
            for (i, why, line) in &refused {
                let data = match b.originals.binary_search_by_key(i, |o| o.0) {
                    Ok(at) => b.originals[at].1.to_vec(),
                    Err(_) => line.clone(),
                };
                let rec = match b.metas.get(*i) {
                    Some(m) => m.record(data),
                    None => Record {
                        data: data.into(),
                        ..Default::default()
                    },
                };
                docs.extend(self.error_doc(&rec, etype, why));
                docs.push(b'\n');
            }
            let prefix = self
                .spec
                .error_template
                .render(&[], &[], b.oldest_ms, Some(etype.as_str()), &random)
                .unwrap_or_else(|_| format!("{}/", etype.as_str()));
            // From the data object's key: a replay has the first run's key (its first
            // record may be another one, shards interleaving otherwise).
            let rid = unique_id(&self.pipeline, &format!("{key}\u{0}refused"), 0, b.records);
            HostObject {
                key: naming::object_key(
                    &prefix,
                    &self.pipeline,
                    version,
                    b.oldest_ms,
                    &rid,
                    "",
                ),
                content_type: "application/x-ndjson",
                content_encoding: "",
                record_count: refused.len() as u64,
                oldest_ms: b.oldest_ms,
                body: docs,
                body_path: None,
            }
        });
        let skip: Vec<usize> = refused.iter().map(|r| r.0).collect();
        let (body, spool, companion) = match parquet {
            // Every record refused: the refusals are the object.
            Some(_) if skip.len() as u64 == b.records && refusals.is_some() => {
                let f = refusals.map(|o| Flushed {
                    object: o,
                    tokens: b.tokens,
                    reason,
                    records: b.records,
                    raw_bytes: raw,
                    error: Some(etype),
                    failed: b.records,
                    companion: None,
                    intent,
                    _spool: None,
                });
                return Ok(f);
            }
            Some(f) => {
                let schema = parquet::buffer_schema(&f.schema, &b.schema);
                let avg = usize::try_from(raw / b.records.max(1)).unwrap_or(usize::MAX);
                match self.to_parquet(&body, spool.as_ref(), &skip, schema, compression, raw, avg) {
                    Ok((body, spool)) => (body, spool, refusals),
                    // Every record was checked on the way in, so this is a bug; the
                    // records must neither be lost nor stop the pipeline: they go under the
                    // error prefix as the JSON lines they are (like `delivery-failed`),
                    // the refused ones among them.
                    Err(DeliveryError::Convert(e)) => {
                        tracing::error!(pipeline = %self.pipeline, key = %key, error = %e, "cannot convert a buffer to Parquet; its records go under the error prefix as JSON lines");
                        metrics::counter!("sluice_records_failed_total", "pipeline" => self.pipeline.clone(), "error_type" => etype.as_str()).increment(b.records - skip.len() as u64);
                        let prefix = self
                            .spec
                            .error_template
                            .render(&[], &[], b.oldest_ms, Some(etype.as_str()), &random)
                            .unwrap_or_else(|_| format!("{}/", etype.as_str()));
                        let name = key.rsplit('/').next().unwrap_or_default();
                        key = format!("{prefix}{}", name.trim_end_matches(".parquet"));
                        error = Some(etype);
                        (body, spool, None)
                    }
                    Err(e) => return Err(e),
                }
            }
            None => (body, spool, None),
        };
        let failed = match (error, &companion) {
            (Some(_), _) => b.records,
            (None, Some(c)) => c.record_count,
            (None, None) => 0,
        };
        Ok(Some(Flushed {
            object: HostObject {
                key,
                content_type: if error.is_some() {
                    "application/x-ndjson"
                } else if parquet.is_some() {
                    "application/vnd.apache.parquet"
                } else {
                    "application/octet-stream"
                },
                content_encoding: match compression.compression {
                    // Parquet compresses inside the file.
                    _ if parquet.is_some() => "",
                    Compression::None => "",
                    Compression::Gzip => "gzip",
                    Compression::Zstd => "zstd",
                    Compression::Snappy => "snappy",
                },
                record_count: if error.is_some() {
                    b.records
                } else {
                    b.records - skip.len() as u64
                },
                oldest_ms: b.oldest_ms,
                body,
                body_path: spool.as_ref().map(|f| f.path().to_path_buf()),
            },
            tokens: b.tokens,
            reason,
            records: b.records,
            raw_bytes: raw,
            error,
            failed,
            companion,
            intent,
            _spool: spool,
        }))
    }

    /// Converts a buffer's JSON lines (`lines`, or the spool file holding them) into one
    /// Parquet file: in memory when small, else in a new spool file.
    #[allow(clippy::too_many_arguments)]
    fn to_parquet(
        &self,
        lines: &[u8],
        held: Option<&SpoolFile>,
        skip: &[usize],
        schema: arrow_schema::Schema,
        codec: crate::spec::Codec,
        raw: u64,
        avg_record: usize,
    ) -> Result<(Vec<u8>, Option<SpoolFile>), DeliveryError> {
        let input: Box<dyn std::io::BufRead + '_> = match held {
            Some(f) => Box::new(std::io::BufReader::new(std::fs::File::open(f.path())?)),
            None => Box::new(lines),
        };
        let input: Box<dyn std::io::BufRead + '_> = match skip {
            [] => input,
            _ => Box::new(parquet::SkipLines::new(input, skip)),
        };
        match &self.spool_dir {
            Some(dir) if raw >= SPILL_AT as u64 => {
                let (file, out) = SpoolFile::create(dir)?;
                let mut w = std::io::BufWriter::new(file);
                parquet::write(input, schema, codec, avg_record, &mut w)?;
                w.into_inner().map_err(|e| e.into_error())?;
                Ok((Vec::new(), Some(out)))
            }
            _ => {
                let mut out = Vec::new();
                parquet::write(input, schema, codec, avg_record, &mut out)?;
                Ok((out, None))
            }
        }
    }

    /// How long a retryable sink failure is retried before [`Delivery::redirect`].
    pub fn retry_limit(&self) -> Option<std::time::Duration> {
        self.spec.retry_duration
    }

    /// The same object, moved under the error prefix (`delivery-failed`) after the sink
    /// failed for longer than `retry_duration`: the records are kept, not dropped.
    pub fn redirect(&self, f: Flushed, why: &str) -> Flushed {
        let name = f.object.key.rsplit('/').next().unwrap_or_default();
        let etype = ErrorType::DeliveryFailed;
        let prefix = self
            .spec
            .error_template
            .render(
                &[],
                &[],
                f.object.oldest_ms,
                Some(etype.as_str()),
                "xxxxxxxxxxx",
            )
            .unwrap_or_else(|_| format!("{}/", etype.as_str()));
        tracing::error!(pipeline = %self.pipeline, key = %f.object.key, error = why, "giving up on an object after retry_duration; writing it under the error prefix");
        // The refused records' documents (the companion) are error output already.
        let records = match f.error {
            Some(_) => f.records,
            None => f.records - f.failed,
        };
        metrics::counter!("sluice_records_failed_total", "pipeline" => self.pipeline.clone(), "error_type" => etype.as_str()).increment(records);
        Flushed {
            object: HostObject {
                key: format!("{prefix}{name}"),
                ..f.object
            },
            error: Some(etype),
            failed: f.records,
            ..f
        }
    }

    /// Records a durably stored object and returns the tokens that may now be acked, in
    /// order (the intent log is synced before they are returned).
    pub fn stored(&mut self, f: &Flushed) -> Result<Vec<u64>, DeliveryError> {
        self.mark_stored(f)?;
        self.release()
    }

    /// Records a durably stored object; what it releases is returned by the next
    /// [`Delivery::ready`] (one intent-log sync for a whole round of objects).
    pub fn mark_stored(&mut self, f: &Flushed) -> Result<(), DeliveryError> {
        if let (Some(id), Some(log)) = (f.intent, &mut self.log) {
            log.stored(id, f.tokens.last().copied().unwrap_or(0))?;
        }
        if f.error.is_none() {
            self.delivered += f.records - f.failed;
        }
        self.acks.stored(&f.tokens);
        let p = self.pipeline.clone();
        metrics::counter!("sluice_buffer_flushes_total", "pipeline" => p.clone(), "reason" => f.reason.as_str()).increment(1);
        metrics::counter!("sluice_sink_objects_total", "pipeline" => p.clone(), "result" => "success").increment(1);
        if f.error.is_none() {
            metrics::counter!("sluice_sink_records_total", "pipeline" => p.clone())
                .increment(f.records - f.failed);
            metrics::counter!("sluice_sink_bytes_total", "pipeline" => p.clone())
                .increment(f.raw_bytes);
        }
        let latency = (now_ms() - f.object.oldest_ms).max(0) as f64 / 1000.0;
        metrics::histogram!("sluice_delivery_latency_seconds", "pipeline" => p).record(latency);
        Ok(())
    }

    fn release(&mut self) -> Result<Vec<u64>, DeliveryError> {
        let out = self.acks.release();
        if let (Some(&last), Some(log)) = (out.last(), &mut self.log) {
            // A `stored` mark must be durable before the acks it allows: otherwise a crash
            // could leave a checkpoint past an object the log calls unstored.
            log.sync()?;
            log.released(last);
        }
        Ok(out)
    }

    /// Retires old intent log entries (call every few seconds).
    pub fn maintain(&mut self) -> Result<(), DeliveryError> {
        match &mut self.log {
            Some(log) => Ok(log.maintain()?),
            None => Ok(()),
        }
    }

    fn all_buffers(&self) -> impl Iterator<Item = &Buffer> {
        self.buffers.values().chain(self.replays.values())
    }

    /// (records, uncompressed bytes, open partitions) buffered now.
    pub fn stats(&self) -> (u64, u64, u64) {
        let open = self.buffers.len() + self.replays.len();
        (self.records, self.bytes, open as u64)
    }

    /// Tokens whose batches had nothing to buffer, ready to ack.
    pub fn ready(&mut self) -> Result<Vec<u64>, DeliveryError> {
        self.release()
    }

    /// The buffer gauges: from running totals, and the oldest record's age from a scan
    /// of the buffers at most once a second (thousands of partitions).
    pub fn publish_gauges(&mut self) {
        let p = self.pipeline.clone();
        let (records, _, open) = self.stats();
        metrics::gauge!("sluice_buffer_bytes", "pipeline" => p.clone()).set(self.bytes as f64);
        metrics::gauge!("sluice_buffer_records", "pipeline" => p.clone()).set(records as f64);
        metrics::gauge!("sluice_buffer_partitions_active", "pipeline" => p.clone())
            .set(open as f64);
        metrics::gauge!("sluice_buffer_memory_bytes").set(self.budget.used() as f64);
        if self
            .oldest_at
            .is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(1))
            && records > 0
        {
            return;
        }
        self.oldest_at = Some(std::time::Instant::now());
        let oldest = self.all_buffers().map(|b| b.oldest_ms).min();
        let age = oldest
            .map(|o| (now_ms() - o).max(0) as f64 / 1000.0)
            .unwrap_or(0.0);
        metrics::gauge!("sluice_buffer_oldest_record_age_seconds", "pipeline" => p).set(age);
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        self.budget.sub(self.mem);
    }
}

/// Delivers one object, retrying retryable failures until it is stored or `limit` passed
/// (see [`crate::plugins::until_stored`]). A fatal error ends the pipeline's run.
pub async fn deliver(
    sink: &std::sync::Mutex<SinkInstance>,
    f: &Flushed,
    health: &crate::plugins::SinkHealth,
    limit: Option<std::time::Duration>,
) -> Result<(), CallError> {
    let pipeline = health.pipeline();
    let mut res = Ok(());
    for o in f.companion.iter().chain([&f.object]) {
        res = crate::plugins::until_stored(sink, health, limit, |sink, _| sink.submit_object(o))
            .await;
        if res.is_err() {
            break;
        }
    }
    if res.is_err() {
        metrics::counter!("sluice_sink_objects_total", "pipeline" => pipeline.to_string(), "result" => "failed").increment(1);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Codec, Compiled, Partitioner, Template};

    fn budget() -> std::sync::Arc<MemoryBudget> {
        std::sync::Arc::new(MemoryBudget::new(512 << 20))
    }
    use std::io::Read;
    use std::time::Duration;

    /// Undoes [`encode`].
    pub(super) fn decode(c: Compression, enc: &[u8]) -> Vec<u8> {
        let mut dec = Vec::new();
        match c {
            Compression::None => dec = enc.to_vec(),
            Compression::Gzip => {
                flate2::read::MultiGzDecoder::new(enc)
                    .read_to_end(&mut dec)
                    .unwrap();
            }
            Compression::Zstd => dec = zstd::decode_all(enc).unwrap(),
            Compression::Snappy => {
                snap::read::FrameDecoder::new(enc)
                    .read_to_end(&mut dec)
                    .unwrap();
            }
        }
        dec
    }

    /// Every compression, for tests that go through them all.
    pub(super) const ALL: [Compression; 4] = [
        Compression::None,
        Compression::Gzip,
        Compression::Zstd,
        Compression::Snappy,
    ];

    /// `n` small JSON lines.
    pub(super) fn json_lines(n: u32) -> Vec<u8> {
        (0..n)
            .flat_map(|i| format!("{{\"n\":{i}}}\n").into_bytes())
            .collect()
    }

    #[test]
    fn compression_levels_apply_and_round_trip() {
        // Less regular than `json_lines`, so that higher levels have something to find.
        let data: Vec<u8> = (0..20_000u64)
            .flat_map(|i| {
                format!(
                    "{{\"n\":{i},\"h\":{}}}\n",
                    i.wrapping_mul(2_654_435_761) % 1_000_003
                )
                .into_bytes()
            })
            .collect();
        for (c, lo, hi) in [(Compression::Gzip, 1, 9), (Compression::Zstd, 1, 19)] {
            let fast = encode(
                Codec {
                    compression: c,
                    level: lo,
                },
                &data,
            );
            let small = encode(
                Codec {
                    compression: c,
                    level: hi,
                },
                &data,
            );
            assert_eq!(decode(c, &small), data, "{c:?}");
            assert!(
                small.len() < fast.len(),
                "{c:?}: level {hi} is smaller than {lo}"
            );
        }
        let stored = encode(
            Codec {
                compression: Compression::Gzip,
                level: 0,
            },
            &data,
        );
        assert_eq!(decode(Compression::Gzip, &stored), data);
        assert!(stored.len() > data.len(), "gzip level 0 stores");
    }

    #[test]
    fn every_compression_round_trips() {
        let data = json_lines(50_000);
        for c in ALL {
            let enc = encode(c.codec(), &data);
            assert_eq!(decode(c, &enc), data, "{c:?}");
            if c != Compression::None {
                assert!(enc.len() < data.len() / 2, "{c:?} compresses");
            }
        }
    }

    fn rec(data: &str, seq: u64) -> Record {
        Record {
            data: bytes::Bytes::from(data.to_string()),
            arrival_ms: 1_795_632_475_960,
            sequence: seq,
            position: crate::record::key_position(seq),
            ..Default::default()
        }
    }

    /// Partition ids are persisted (intent log): pinned, never `Debug` output.
    #[test]
    fn partition_ids_are_stable() {
        let k = BufferKey::Data {
            query: vec![("type".into(), "a/b".into())],
            lambda: vec![],
            shard: 0,
        };
        assert_eq!(
            partition_id(&k),
            r#"{"lambda":[],"query":[["type","a/b"]]}"#
        );
        assert_eq!(
            partition_id(&BufferKey::Error(ErrorType::ProcessingFailed, 0)),
            r#"{"error":"processing-failed"}"#
        );
    }

    fn spec(compression: Compression, max_active_partitions: u32) -> DeliverySpec {
        let (query, prefix, error_prefix) = (
            "{type}",
            "t=!{partitionKeyFromQuery:type}/",
            "err/!{firehose:error-output-type}/",
        );
        DeliverySpec {
            query: Some(query.into()),
            max_active_partitions,
            size: 1 << 20,
            interval: Duration::from_secs(3600),
            prefix: prefix.into(),
            error_prefix: error_prefix.into(),
            compression,
            compression_level: None,
            delimiter: "\n".into(),
            format: None,
            retry_duration: None,
            partitioner: Some(Compiled::new(Partitioner::new(query).unwrap())),
            prefix_template: Compiled::new(Template::parse(prefix, false).unwrap()),
            error_template: Compiled::new(Template::parse(error_prefix, true).unwrap()),
        }
    }

    #[test]
    fn the_partition_cap_counts_open_data_buffers_only() {
        let mut d = Delivery::new("p", spec(Compression::None, 1), None, None, budget()).unwrap();
        d.add(
            1,
            &[
                rec(r#"{"type":"a"}"#, 1),
                rec(r#"{"type":"b"}"#, 2),
                rec("bad", 3),
            ],
            &[],
        );
        let a = BufferKey::Data {
            query: vec![("type".into(), "a".into())],
            lambda: vec![],
            shard: 0,
        };
        let b = BufferKey::Data {
            query: vec![("type".into(), "b".into())],
            lambda: vec![],
            shard: 0,
        };
        assert!(
            d.buffers.contains_key(&a) && !d.buffers.contains_key(&b),
            "b is past the cap"
        );
        assert!(d
            .buffers
            .contains_key(&BufferKey::Error(ErrorType::ActivePartitionExceeded, 0)));
        // Error buffers do not count; a flushed partition frees its place.
        assert!(d
            .buffers
            .contains_key(&BufferKey::Error(ErrorType::PartitioningFailed, 0)));
        d.take(&Slot::Open(a.clone()), FlushReason::Drain)
            .unwrap()
            .unwrap();
        d.add(2, &[rec(r#"{"type":"b"}"#, 4)], &[]);
        assert!(d.buffers.contains_key(&b));
    }

    #[test]
    fn acks_wait_for_every_buffer_and_go_in_order() {
        let spec = spec(Compression::None, 10);
        let mut d = Delivery::new("p", spec, None, None, budget()).unwrap();
        d.add(
            1,
            &[rec(r#"{"type":"a"}"#, 1), rec(r#"{"type":"b"}"#, 2)],
            &[],
        );
        d.add(2, &[rec(r#"{"type":"a"}"#, 3)], &[]);
        d.add(3, &[], &[]);
        assert!(d.ready().unwrap().is_empty(), "nothing stored yet");
        let a = BufferKey::Data {
            query: vec![("type".into(), "a".into())],
            lambda: vec![],
            shard: 0,
        };
        let fa = d
            .take(&Slot::Open(a.clone()), FlushReason::Drain)
            .unwrap()
            .unwrap();
        assert_eq!(fa.object.record_count, 2);
        assert!(
            fa.object
                .key
                .starts_with("t=a/2026/11/25/18/p-1-2026-11-25-18-47-55-"),
            "{}",
            fa.object.key
        );
        // Batch 1 still has a record in buffer b; batch 2 must wait for batch 1.
        assert!(d.stored(&fa).unwrap().is_empty());
        let b = BufferKey::Data {
            query: vec![("type".into(), "b".into())],
            lambda: vec![],
            shard: 0,
        };
        let fb = d
            .take(&Slot::Open(b.clone()), FlushReason::Drain)
            .unwrap()
            .unwrap();
        assert_eq!(d.stored(&fb).unwrap(), vec![1, 2, 3]);
        // The same records give the same object name: replays overwrite, not duplicate.
        let mut d2 = Delivery::new("p", d.spec.clone(), None, None, budget()).unwrap();
        d2.add(
            1,
            &[rec(r#"{"type":"a"}"#, 1), rec(r#"{"type":"b"}"#, 2)],
            &[],
        );
        d2.add(2, &[rec(r#"{"type":"a"}"#, 3)], &[]);
        assert_eq!(
            d2.take(&Slot::Open(a.clone()), FlushReason::Drain)
                .unwrap()
                .unwrap()
                .object
                .key,
            fa.object.key
        );
    }

    #[test]
    fn a_buffer_that_does_not_convert_to_parquet_goes_under_the_error_prefix_whole() {
        use crate::spec::{Column, ColumnType, ParquetSpec, SchemaSpec};
        let mut spec = spec(Compression::Snappy, 10);
        spec.format = Some(ParquetSpec {
            schema: SchemaSpec::Declared(vec![
                Column {
                    name: "type".into(),
                    ty: ColumnType::String,
                    nullable: false,
                },
                Column {
                    name: "n".into(),
                    ty: ColumnType::Int64,
                    nullable: true,
                },
            ]),
        });
        let mut d = Delivery::new("p", spec, None, None, budget()).unwrap();
        d.add(
            1,
            &[rec(r#"{"type":"a"}"#, 1), rec(r#"{"type":"a","n":"x"}"#, 2)],
            &[],
        );
        // The misfit was refused on the way in.
        assert!(d
            .buffers
            .contains_key(&BufferKey::Error(ErrorType::FormatConversionFailed, 0)));
        let ok = d
            .take(&Slot::Open(key("a")), FlushReason::Drain)
            .unwrap()
            .unwrap();
        assert!(ok.object.key.ends_with(".parquet"), "{}", ok.object.key);
        assert_eq!(&ok.object.body[..4], b"PAR1");
        // A line the checks let through but Arrow refuses (cannot happen but by a bug):
        // the buffer's records go under the error prefix as they are, nothing lost.
        d.add(2, &[rec(r#"{"type":"a"}"#, 3)], &[]);
        let b = d.buffers.get_mut(&key("a")).unwrap();
        b.data.extend(b"{\"type\":\"a\",\"n\":\"x\"}\n");
        let f = d
            .take(&Slot::Open(key("a")), FlushReason::Drain)
            .unwrap()
            .unwrap();
        assert_eq!(f.error, Some(ErrorType::FormatConversionFailed));
        assert!(
            f.object.key.starts_with("err/format-conversion-failed/")
                && !f.object.key.ends_with(".parquet"),
            "{}",
            f.object.key
        );
        assert_eq!(
            f.object.body,
            b"{\"type\":\"a\"}\n{\"type\":\"a\",\"n\":\"x\"}\n"
        );
    }

    #[test]
    fn failures_become_firehose_error_documents() {
        let spec = spec(Compression::Gzip, 10);
        let mut d = Delivery::new("p", spec, None, None, budget()).unwrap();
        d.add(
            1,
            &[rec("not json", 7), rec(r#"{"type":""}"#, 8)],
            &[(rec("x", 9), "jq: boom".into())],
        );
        let f = d
            .take(
                &Slot::Open(BufferKey::Error(ErrorType::PartitioningFailed, 0)),
                FlushReason::Drain,
            )
            .unwrap()
            .unwrap();
        assert!(
            f.object
                .key
                .starts_with("err/partitioning-failed/2026/11/25/18/"),
            "{}",
            f.object.key
        );
        let docs: Vec<serde_json::Value> = String::from_utf8(f.object.body.clone())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            docs.len(),
            2,
            "error documents are plain JSON lines, never compressed"
        );
        assert_eq!(docs[0]["rawData"], "bm90IGpzb24=");
        assert_eq!(
            docs[0]["errorCode"],
            "DynamicPartitioning.MetadataExtractionFailed"
        );
        assert_eq!(
            docs[1]["errorMessage"],
            "the partition key `type` (partitionKeyFromQuery) is empty"
        );
        let p = d
            .take(
                &Slot::Open(BufferKey::Error(ErrorType::ProcessingFailed, 0)),
                FlushReason::Drain,
            )
            .unwrap()
            .unwrap();
        assert!(String::from_utf8(p.object.body)
            .unwrap()
            .contains("\"errorMessage\":\"jq: boom\""));
    }

    fn key(t: &str) -> BufferKey {
        BufferKey::Data {
            query: vec![("type".into(), t.into())],
            lambda: vec![],
            shard: 0,
        }
    }

    /// Records of types a and b on two shards (tags 1 and 2), as a stream source replays them.
    fn shard_batch(from: u64, to: u64) -> Vec<Record> {
        (from..to)
            .map(|i| {
                let t = if i % 3 == 0 { "b" } else { "a" };
                rec(
                    &format!(r#"{{"type":"{t}","n":{i}}}"#),
                    ((1 + i % 2) << 48) | i,
                )
            })
            .collect()
    }

    fn journal(dir: &std::path::Path) -> Journal {
        Journal {
            dir: dir.to_path_buf(),
            config_hash: "h".into(),
            shared: None,
        }
    }

    #[test]
    fn a_replay_after_a_crash_skips_stored_objects_and_rebuilds_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let j = journal(dir.path());
        let mut d =
            Delivery::new("p", spec(Compression::None, 10), Some(&j), None, budget()).unwrap();
        d.add(1, &shard_batch(0, 30), &[]);
        // a is stored (but never acked: b holds batch 1 back); b's upload is cut short.
        let fa = d
            .take(&Slot::Open(key("a")), FlushReason::Size)
            .unwrap()
            .unwrap();
        assert!(d.stored(&fa).unwrap().is_empty());
        let fb = d
            .take(&Slot::Open(key("b")), FlushReason::Size)
            .unwrap()
            .unwrap();
        drop(d); // crash: the checkpoint is still before record 0

        let mut d =
            Delivery::new("p", spec(Compression::None, 10), Some(&j), None, budget()).unwrap();
        d.add(7, &shard_batch(0, 30), &[]);
        d.add(8, &shard_batch(30, 33), &[]);
        // a's records were skipped, b's rebuilt into the same object, and the rest is new.
        let (slot, _) = d.due(1).pop().unwrap();
        assert!(matches!(slot, Slot::Replay(_)));
        let again = d.take(&slot, FlushReason::Size).unwrap().unwrap();
        assert_eq!(again.object.key, fb.object.key);
        assert_eq!(again.object.body, fb.object.body);
        assert!(d.due(1).pop().is_none());
        let rest_a = d
            .take(&Slot::Open(key("a")), FlushReason::Drain)
            .unwrap()
            .unwrap();
        let rest_b = d
            .take(&Slot::Open(key("b")), FlushReason::Drain)
            .unwrap()
            .unwrap();
        assert_eq!(rest_a.object.record_count, 2, "records 31 and 32");
        assert_eq!(rest_b.object.record_count, 1, "record 30");
        assert!(d.buffers.is_empty() && d.replays.is_empty());
        assert_eq!(d.stored(&again).unwrap(), vec![7]);
        assert!(d.stored(&rest_a).unwrap().is_empty());
        assert_eq!(d.stored(&rest_b).unwrap(), vec![8]);
        // Past every recovered object on both shards: matching is over.
        assert!(d.recovering.entries.is_empty());
    }

    /// Stream `s` of a one-server cluster, as a source whose shards nodes share.
    fn shared_source(nats: &crate::testing::NatsCluster) -> crate::stream::lease::SharedSource {
        use crate::stream::jetstream::{Cluster, JetStreamOptions};
        let cluster = Cluster::connect(JetStreamOptions {
            servers: nats.urls(),
            replicas: 1,
            ..JetStreamOptions::default()
        })
        .unwrap();
        crate::stream::lease::SharedSource {
            cluster,
            stream: "s".into(),
            next_offset: |c| c.as_u64(),
        }
    }

    /// Nodes sharing a stream's shards (issue #12): node B reads the shards after node A,
    /// which stopped with one object stored and one uploaded but not confirmed. B rebuilds
    /// the second under A's key, from the intents A left in the cluster, and skips the
    /// first one's records; each object holds one shard's records. A write by either node
    /// over the other's fences the writer off: its objects must not go out.
    #[test]
    fn a_node_taking_shards_over_rebuilds_the_last_readers_objects() {
        let nats = crate::testing::NatsCluster::start(1);
        let shared = shared_source(&nats);
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let journal = |dir: &std::path::Path| Journal {
            dir: dir.to_path_buf(),
            config_hash: "h".into(),
            shared: Some(shared.clone()),
        };
        let node = |j: &Journal| {
            Delivery::new("p", spec(Compression::None, 10), Some(j), None, budget()).unwrap()
        };
        let sk = |t: &str, shard: u64| BufferKey::Data {
            query: vec![("type".into(), t.into())],
            lambda: vec![],
            shard,
        };
        let (ja, jb) = (journal(da.path()), journal(db.path()));
        let batch = shard_batch(0, 30);
        let mut a = node(&ja);
        a.claim_shards(&batch, &[]).unwrap();
        a.add(1, &batch, &[]);
        assert_eq!(a.buffers.len(), 4, "one buffer per type and shard");
        let fa1 = a
            .take(&Slot::Open(sk("a", 1)), FlushReason::Size)
            .unwrap()
            .unwrap();
        a.mark_stored(&fa1).unwrap();
        let fb1 = a
            .take(&Slot::Open(sk("b", 1)), FlushReason::Size)
            .unwrap()
            .unwrap();
        // A node stops here (killed, or its lease expired); B reads from the checkpoint.

        let mut b = node(&jb);
        b.claim_shards(&batch, &[]).unwrap();
        b.add(7, &batch, &[]);
        let (slot, _) = b.due(1).pop().unwrap();
        assert!(matches!(slot, Slot::Replay(_)));
        let again = b.take(&slot, FlushReason::Size).unwrap().unwrap();
        assert_eq!(again.object.key, fb1.object.key);
        assert_eq!(again.object.body, fb1.object.body);
        assert!(
            !b.buffers.contains_key(&sk("a", 1)),
            "a@1 was stored: its records are skipped"
        );
        assert!(b.buffers.contains_key(&sk("a", 2)) && b.buffers.contains_key(&sk("b", 2)));
        b.mark_stored(&again).unwrap();
        // B's first write of shard 1 (the stored mark goes out with the next object).
        b.add(8, &shard_batch(30, 34), &[]);
        let b_more = b
            .take(&Slot::Open(sk("a", 1)), FlushReason::Size)
            .unwrap()
            .unwrap();
        assert_eq!(b_more.object.record_count, 1, "record 31");

        // A, still running, can no longer record an object of shard 1 ...
        a.add(2, &shard_batch(30, 34), &[]);
        let fenced = a.take(&Slot::Open(sk("a", 1)), FlushReason::Size);
        assert!(
            matches!(
                fenced,
                Err(DeliveryError::Shared(SharedError::Fenced { .. }))
            ),
            "{:?}",
            fenced.err()
        );
        // ... but shard 2, which B read and has not written yet, A writes first: then B is
        // the one fenced off, and after its restart it rebuilds A's object.
        let mut a = node(&ja);
        a.claim_shards(&batch, &[]).unwrap();
        a.add(1, &batch, &[]);
        let fa2 = a
            .take(&Slot::Open(sk("a", 2)), FlushReason::Size)
            .unwrap()
            .unwrap();
        let fenced = b.take(&Slot::Open(sk("a", 2)), FlushReason::Size);
        assert!(matches!(
            fenced,
            Err(DeliveryError::Shared(SharedError::Fenced { .. }))
        ));
        let mut b = node(&jb);
        b.claim_shards(&batch, &[]).unwrap();
        b.add(1, &batch, &[]);
        let (slot, _) = b.due(1).pop().unwrap();
        let again = b.take(&slot, FlushReason::Size).unwrap().unwrap();
        assert_eq!(again.object.key, fa2.object.key);
        assert_eq!(again.object.body, fa2.object.body);
    }

    /// With shards shared by nodes, a source that rewinds a shard (it gave the lease back
    /// and took it again) replays records this delivery holds already: they are skipped,
    /// and its acks still wait for the buffers holding the first copies.
    #[test]
    fn records_met_before_a_rewind_are_not_buffered_twice() {
        let nats = crate::testing::NatsCluster::start(1);
        let dir = tempfile::tempdir().unwrap();
        let j = Journal {
            dir: dir.path().to_path_buf(),
            config_hash: "h".into(),
            shared: Some(shared_source(&nats)),
        };
        let mut d =
            Delivery::new("p", spec(Compression::None, 10), Some(&j), None, budget()).unwrap();
        let first = shard_batch(0, 20);
        d.claim_shards(&first, &[]).unwrap();
        d.add(1, &first, &[]);
        let held = d.records;
        // The same shard from an earlier position again, and a little further.
        let again = shard_batch(10, 24);
        d.claim_shards(&again, &[]).unwrap();
        d.add(2, &again, &[]);
        assert_eq!(d.records, held + 4, "only records 20 to 23 are new");
        assert!(
            d.ready().unwrap().is_empty(),
            "batch 2 waits behind batch 1"
        );
    }

    /// A buffer opened during a replay spans the replayed object's range without holding
    /// its records. After another crash, a record of that range belongs to the replayed
    /// object (the innermost range), even when the outer buffer's object was stored and
    /// the replayed one was not: skipping it would lose it.
    #[test]
    fn a_record_belongs_to_the_innermost_object_whose_range_covers_it() {
        let dir = tempfile::tempdir().unwrap();
        let j = journal(dir.path());
        let batch = |from: u64, to: u64| -> Vec<Record> {
            (from..to)
                .map(|i| rec(&format!(r#"{{"type":"a","n":{i}}}"#), (1 << 48) | i))
                .collect()
        };
        let open =
            || Delivery::new("p", spec(Compression::None, 10), Some(&j), None, budget()).unwrap();
        // Run 1: records 10..20 went out as one object, never confirmed.
        let mut d = open();
        d.add(1, &batch(10, 20), &[]);
        let inner = d
            .take(&Slot::Open(key("a")), FlushReason::Size)
            .unwrap()
            .unwrap();
        drop(d);
        // Run 2 replays 0..30: 10..20 rebuild the object, the others open a buffer whose
        // range is 0..29. That one is stored; the rebuilt one is cut short again.
        let mut d = open();
        d.add(1, &batch(0, 30), &[]);
        let (slot, _) = d.due(1).pop().unwrap();
        let again = d.take(&slot, FlushReason::Size).unwrap().unwrap();
        assert_eq!(again.object.key, inner.object.key);
        let outer = d
            .take(&Slot::Open(key("a")), FlushReason::Size)
            .unwrap()
            .unwrap();
        assert_eq!(outer.object.record_count, 20);
        d.mark_stored(&outer).unwrap();
        d.ready().unwrap();
        drop(d);
        // Run 3: 10..20 rebuild the inner object once more; the outer one's are skipped.
        let mut d = open();
        d.add(1, &batch(0, 30), &[]);
        let (slot, _) = d.due(1).pop().expect("the inner object is rebuilt");
        let third = d.take(&slot, FlushReason::Size).unwrap().unwrap();
        assert_eq!(third.object.key, inner.object.key);
        assert_eq!(third.object.body, inner.object.body);
        assert!(
            d.buffers.is_empty(),
            "the outer object's records were skipped"
        );
    }

    /// The records a flush refused (its companion error object's).
    fn refused(f: &Flushed) -> u64 {
        f.companion.as_ref().map_or(0, |c| c.record_count)
    }

    /// `schema = "infer"`: a partition's schema carries from one object to the next and
    /// across a crash, and a replayed object checks its records against the schema its
    /// first run started from — so it is the very same file even where a fresh inference
    /// would have refused other records.
    #[test]
    fn an_inferred_schema_is_the_partitions_across_objects_crashes_and_replays() {
        let spec = || {
            let mut s = spec(Compression::Snappy, 10);
            s.format = Some(crate::spec::ParquetSpec {
                schema: crate::spec::SchemaSpec::Infer,
            });
            s
        };
        let at = |i: u64| (1 << 48) | i;
        let dir = tempfile::tempdir().unwrap();
        let j = journal(dir.path());
        let mut d = Delivery::new("p", spec(), Some(&j), None, budget()).unwrap();
        d.add(1, &[rec(r#"{"type":"a","x":1}"#, at(1))], &[]);
        let a1 = d
            .take(&Slot::Open(key("a")), FlushReason::Size)
            .unwrap()
            .unwrap();
        assert_eq!(d.stored(&a1).unwrap(), vec![1]);
        // The next object: `x` is an integer for the partition, not only for `a1`.
        d.add(
            2,
            &[
                rec(r#"{"type":"a","x":"s"}"#, at(2)),
                rec(r#"{"type":"a","x":2,"y":true}"#, at(3)),
            ],
            &[],
        );
        let a2 = d
            .take(&Slot::Open(key("a")), FlushReason::Size)
            .unwrap()
            .unwrap();
        assert_eq!(
            refused(&a2),
            1,
            "a text `x` is refused in the partition's second object"
        );
        d.stored(&a2).unwrap();
        // A third object, intended but not confirmed when the process dies.
        let third = [
            rec(r#"{"type":"a","x":"s2"}"#, at(4)),
            rec(r#"{"type":"a","x":3}"#, at(5)),
        ];
        d.add(3, &third, &[]);
        let a3 = d
            .take(&Slot::Open(key("a")), FlushReason::Size)
            .unwrap()
            .unwrap();
        assert_eq!(a3.object.record_count, 1);
        assert_eq!(refused(&a3), 1);
        drop(d);

        let mut d = Delivery::new("p", spec(), Some(&j), None, budget()).unwrap();
        assert_eq!(
            d.carried.len(),
            1,
            "the partition's schema survived the crash"
        );
        // The source replays from its checkpoint (after batch 2): the third object is
        // rebuilt from the schema it started from. Inferred afresh, `"s2"` would have
        // opened it as text and `3` been refused: the same name, other contents.
        d.add(7, &third, &[]);
        let (slot, _) = d.due(1).pop().unwrap();
        assert!(matches!(slot, Slot::Replay(_)));
        let again = d.take(&slot, FlushReason::Size).unwrap().unwrap();
        assert_eq!(again.object.key, a3.object.key);
        assert_eq!(again.object.body, a3.object.body, "the very same file");
        let (c, c3) = (again.companion.unwrap(), a3.companion.unwrap());
        assert_eq!(c.key, c3.key, "its refusals under the same name too");
        assert!(
            c.key.starts_with("err/format-conversion-failed/"),
            "{}",
            c.key
        );
        // New records after the restart still meet the partition's schema.
        d.add(
            8,
            &[
                rec(r#"{"type":"a","x":"t"}"#, at(6)),
                rec(r#"{"type":"a","z":1.5}"#, at(7)),
            ],
            &[],
        );
        let a4 = d
            .take(&Slot::Open(key("a")), FlushReason::Size)
            .unwrap()
            .unwrap();
        assert_eq!(refused(&a4), 1, "`\"t\"`");
        let schema = ::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            bytes::Bytes::from(a4.object.body.clone()),
        )
        .unwrap()
        .schema()
        .clone();
        let cols: Vec<(&str, &arrow_schema::DataType)> = schema
            .fields()
            .iter()
            .map(|f| (f.name().as_str(), f.data_type()))
            .collect();
        use arrow_schema::DataType::*;
        assert_eq!(
            cols,
            [
                ("type", &Utf8),
                ("x", &Int64),
                ("y", &Boolean),
                ("z", &Float64)
            ],
            "the partition's columns, in the order they came"
        );
    }

    /// Records of one partition from two shards whose types conflict: the first run
    /// meets shard 2 first, the replay after the crash shard 1 first — and both refuse
    /// the same records (decided in shard-and-sequence order at the flush), so the replay
    /// rewrites the very same objects.
    #[test]
    fn refusals_do_not_depend_on_how_shards_interleave() {
        let spec = || {
            let mut s = spec(Compression::Snappy, 10);
            s.format = Some(crate::spec::ParquetSpec {
                schema: crate::spec::SchemaSpec::Infer,
            });
            s
        };
        let r = |shard: u64, i: u64, x: &str| {
            rec(
                &format!(r#"{{"type":"a","x":{x},"id":"{shard}-{i}"}}"#),
                (shard << 48) | i,
            )
        };
        let (a1, a2) = (r(1, 1, "1"), r(1, 2, "2"));
        let (b1, b2) = (r(2, 1, "\"t\""), r(2, 2, "\"u\""));
        let ids = |f: &Flushed| -> Vec<String> {
            let c = f.companion.as_ref().unwrap();
            let mut ids: Vec<String> = String::from_utf8(c.body.clone())
                .unwrap()
                .lines()
                .map(|l| {
                    use base64::Engine as _;
                    let d: serde_json::Value = serde_json::from_str(l).unwrap();
                    assert_eq!(d["errorCode"], "DataFormatConversion.MalformedData");
                    let raw = base64::engine::general_purpose::STANDARD
                        .decode(d["rawData"].as_str().unwrap())
                        .unwrap();
                    let v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
                    v["id"].as_str().unwrap().to_string()
                })
                .collect();
            ids.sort();
            ids
        };
        let dir = tempfile::tempdir().unwrap();
        let j = journal(dir.path());
        let mut d = Delivery::new("p", spec(), Some(&j), None, budget()).unwrap();
        d.add(1, &[b1.clone(), a1.clone()], &[]);
        d.add(2, &[b2.clone(), a2.clone()], &[]);
        let first = d
            .take(&Slot::Open(key("a")), FlushReason::Size)
            .unwrap()
            .unwrap();
        assert_eq!(first.object.record_count, 2);
        assert_eq!(ids(&first), ["2-1", "2-2"], "shard 1's integers come first");
        drop(d);

        let mut d = Delivery::new("p", spec(), Some(&j), None, budget()).unwrap();
        d.add(7, &[a1, a2], &[]);
        d.add(8, &[b1, b2], &[]);
        let (slot, _) = d.due(1).pop().unwrap();
        assert!(matches!(slot, Slot::Replay(_)));
        let again = d.take(&slot, FlushReason::Size).unwrap().unwrap();
        assert_eq!(again.object.key, first.object.key);
        assert_eq!(again.object.body, first.object.body, "the very same file");
        assert_eq!(
            again.companion.as_ref().unwrap().key,
            first.companion.as_ref().unwrap().key
        );
        assert_eq!(ids(&again), ids(&first));
        assert_eq!((again.records, again.failed), (4, 2));
    }

    /// Whether a partition's records make a column is decided on the buffer's whole
    /// schema: `{}` beside a record with fields converts; a buffer of only `{}` is refused
    /// whole, as one error object.
    #[test]
    fn records_without_columns_are_refused_only_when_the_buffer_has_none() {
        let mut s = spec(Compression::Snappy, 10);
        s.format = Some(crate::spec::ParquetSpec {
            schema: crate::spec::SchemaSpec::Infer,
        });
        let mut d = Delivery::new("p", s, None, None, budget()).unwrap();
        d.add(
            1,
            &[rec(r#"{"type":"a"}"#, 1), rec(r#"{"type":"b","o":{}}"#, 2)],
            &[],
        );
        // `type` is the partition key, and a field: `a`'s records have a column.
        let a = d
            .take(&Slot::Open(key("a")), FlushReason::Size)
            .unwrap()
            .unwrap();
        assert!(a.error.is_none() && a.companion.is_none());
        let mut s = spec(Compression::Snappy, 10);
        s.format = Some(crate::spec::ParquetSpec {
            schema: crate::spec::SchemaSpec::Infer,
        });
        s.partitioner = None;
        s.query = None;
        s.prefix = "all/".into();
        s.prefix_template = Compiled::new(Template::parse("all/", false).unwrap());
        let mut d = Delivery::new("p", s, None, None, budget()).unwrap();
        d.add(1, &[rec("{}", 1), rec(r#"{"o":{}}"#, 2)], &[]);
        let all = BufferKey::Data {
            query: vec![],
            lambda: vec![],
            shard: 0,
        };
        let f = d
            .take(&Slot::Open(all.clone()), FlushReason::Size)
            .unwrap()
            .unwrap();
        assert_eq!(f.error, Some(ErrorType::FormatConversionFailed));
        assert!(
            f.object.key.starts_with("err/format-conversion-failed/"),
            "{}",
            f.object.key
        );
        assert_eq!((f.object.record_count, f.failed), (2, 2));
        assert!(String::from_utf8(f.object.body.clone())
            .unwrap()
            .contains("no field to store as a column"));
        d.add(2, &[rec("{}", 3), rec(r#"{"n":1}"#, 4)], &[]);
        let f = d
            .take(&Slot::Open(all), FlushReason::Size)
            .unwrap()
            .unwrap();
        assert!(f.error.is_none() && f.companion.is_none());
        assert_eq!(f.object.record_count, 2);
    }

    #[test]
    fn a_replay_that_cannot_be_completed_is_written_under_a_new_name() {
        let dir = tempfile::tempdir().unwrap();
        let j = journal(dir.path());
        let mut sp = spec(Compression::None, 10);
        sp.interval = Duration::from_millis(1);
        let mut d = Delivery::new("p", sp.clone(), Some(&j), None, budget()).unwrap();
        d.add(1, &shard_batch(0, 30), &[]);
        let fb = d
            .take(&Slot::Open(key("b")), FlushReason::Size)
            .unwrap()
            .unwrap();
        drop(d);
        let mut d = Delivery::new("p", sp, Some(&j), None, budget()).unwrap();
        // Only part of b's records come back (say, retention removed the rest).
        d.add(1, &shard_batch(15, 30), &[]);
        std::thread::sleep(Duration::from_millis(5));
        let (slot, reason) = d.due(1).pop().unwrap();
        assert!(matches!(slot, Slot::Replay(_)) && matches!(reason, FlushReason::Interval));
        let f = d.take(&slot, reason).unwrap().unwrap();
        assert_eq!(f.object.record_count, 5);
        assert_ne!(f.object.key, fb.object.key);
    }

    #[test]
    fn the_config_version_in_names_follows_config_changes() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = journal(dir.path());
        let name = |j: &Journal, from: u64| {
            let mut d =
                Delivery::new("p", spec(Compression::None, 10), Some(j), None, budget()).unwrap();
            d.add(1, &shard_batch(from, from + 3), &[]);
            d.take(&Slot::Open(key("a")), FlushReason::Size)
                .unwrap()
                .unwrap()
                .object
                .key
        };
        assert!(name(&j, 0).contains("/p-1-"));
        assert!(name(&j, 10).contains("/p-1-"));
        j.config_hash = "other".into();
        assert!(name(&j, 20).contains("/p-2-"));
    }

    #[test]
    fn a_large_buffer_moves_to_a_spool_file_and_leaves_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let mut sp = spec(Compression::Gzip, 10);
        sp.size = 64 << 20;
        let mut d = Delivery::new("p", sp, None, Some(dir.path().to_path_buf()), budget()).unwrap();
        let line = format!(r#"{{"type":"a","pad":"{}"}}"#, "x".repeat(1000));
        let n = (SPILL_AT / line.len()) as u64 + 1000;
        for i in 0..n {
            d.add(i, &[rec(&line, i)], &[]);
        }
        let (records, bytes, _) = d.stats();
        assert_eq!((records, bytes), (n, n * (line.len() as u64 + 1)));
        assert!(
            d.mem < 4 << 20,
            "spooled bytes are not in the budget: {}",
            d.mem
        );
        let f = d
            .take(&Slot::Open(key("a")), FlushReason::Drain)
            .unwrap()
            .unwrap();
        assert!(f.object.body.is_empty());
        let path = f.object.body_path.clone().unwrap();
        let body = std::fs::read(&path).unwrap();
        let text = String::from_utf8(decode(Compression::Gzip, &body)).unwrap();
        assert_eq!(text.lines().count() as u64, n);
        assert!(text.lines().all(|l| l == line));
        assert_eq!(d.mem, 0);
        drop(f);
        assert!(!path.exists(), "the spool file goes with the object");
    }
}
