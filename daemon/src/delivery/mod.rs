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

mod kpl;
mod partition;
mod prefix;

pub use kpl::{deaggregate, UserRecord, MAGIC as KPL_MAGIC};
pub use partition::{fast_path, Partitioner};
pub use prefix::{civil, hive_escape, Template, MAX_PREFIX};

use crate::config::{Compression, DeliverySpec};
use crate::plugins::{CallError, HostObject, SinkInstance};
use crate::record::{now_ms, Record};
use base64::Engine as _;
use md5::{Digest, Md5};

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// The `<config version>` of object names. Always 1 for now: a per-pipeline counter that
/// survives restarts is not built yet (names must stay deterministic across replays).
const CONFIG_VERSION: u32 = 1;

static MEMORY: AtomicU64 = AtomicU64::new(0);
static MEMORY_LIMIT: AtomicU64 = AtomicU64::new(512 << 20);

/// Sets the global buffer budget (`limits.buffer_memory`).
pub fn set_memory_limit(bytes: u64) {
    MEMORY_LIMIT.store(bytes, Ordering::Relaxed);
    metrics::gauge!("sluice_buffer_memory_limit_bytes").set(bytes as f64);
}

/// Firehose error output types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorType {
    /// A transform failed or rejected the record.
    ProcessingFailed,
    /// The partition keys could not be extracted or rendered.
    PartitioningFailed,
    /// Past `max_active_partitions`.
    ActivePartitionExceeded,
    /// The sink kept failing for longer than `retry_duration`: the whole object is written
    /// under the error prefix instead (its body unchanged).
    DeliveryFailed,
}

impl ErrorType {
    /// The `error-output-type` (also the metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::ProcessingFailed => "processing-failed",
            ErrorType::PartitioningFailed => "partitioning-failed",
            ErrorType::ActivePartitionExceeded => "activePartitionExceeded",
            ErrorType::DeliveryFailed => "delivery-failed",
        }
    }
    fn code(self) -> &'static str {
        match self {
            ErrorType::ProcessingFailed => "Processing.Failed",
            ErrorType::PartitioningFailed => "DynamicPartitioning.MetadataExtractionFailed",
            ErrorType::ActivePartitionExceeded => {
                "DynamicPartitioning.ActivePartitionsLimitExceeded"
            }
            ErrorType::DeliveryFailed => "Delivery.Failed",
        }
    }
}

/// What identifies a buffer: its partition keys, or the error type of an error buffer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BufferKey {
    /// Records of one partition.
    Data {
        /// `partitionKeyFromQuery` keys.
        query: Vec<(String, String)>,
        /// `partitionKeyFromLambda` keys (set by transforms).
        lambda: Vec<(String, String)>,
    },
    /// Error documents of one type.
    Error(ErrorType),
}

struct Buffer {
    key: BufferKey,
    data: Vec<u8>,
    records: u64,
    oldest_ms: i64,
    first_seq: u64,
    created: Instant,
    tokens: Vec<u64>,
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
}

/// One pipeline's delivery state.
pub struct Delivery {
    pipeline: String,
    spec: DeliverySpec,
    partitioner: Option<Partitioner>,
    prefix: Template,
    error_prefix: Template,
    buffers: HashMap<BufferKey, Buffer>,
    /// token → buffers still holding its records, in token order.
    pending: BTreeMap<u64, usize>,
    order: VecDeque<u64>,
    bytes: u64,
    /// Allocated bytes of this pipeline's buffers (its share of the global budget).
    mem: u64,
    /// Open data (not error) buffers, for `max_active_partitions`.
    data_partitions: usize,
    /// Data records durably stored so far.
    pub delivered: u64,
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
}

fn unique_id(pipeline: &str, key: &str, first_seq: u64, records: u64) -> [u8; 16] {
    let mut h = Md5::new();
    h.update(pipeline.as_bytes());
    h.update([0]);
    h.update(key.as_bytes());
    h.update(first_seq.to_le_bytes());
    h.update(records.to_le_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&h.finalize()[..16]);
    out
}

fn uuid(b: &[u8; 16]) -> String {
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

impl Delivery {
    /// Delivery state for a pipeline (the spec was validated with the config).
    pub fn new(pipeline: &str, spec: DeliverySpec) -> Result<Delivery, String> {
        let partitioner = spec.query.as_deref().map(Partitioner::new).transpose()?;
        let prefix = Template::parse(&spec.prefix, false)?;
        let error_prefix = Template::parse(&spec.error_prefix, true)?;
        Ok(Delivery {
            pipeline: pipeline.to_string(),
            spec,
            partitioner,
            prefix,
            error_prefix,
            buffers: HashMap::new(),
            pending: BTreeMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            mem: 0,
            data_partitions: 0,
            delivered: 0,
        })
    }

    /// Appends one payload to the buffer of `key`, creating it if needed. Data records are
    /// followed by the configured delimiter; error documents are JSON lines always.
    fn append(
        &mut self,
        key: BufferKey,
        payload: &[u8],
        rec: &Record,
        token: u64,
        touched: &mut usize,
    ) {
        let delim: &[u8] = match key {
            BufferKey::Data { .. } => self.spec.delimiter.as_bytes(),
            BufferKey::Error(_) => b"\n",
        };
        let b = match self.buffers.entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                if matches!(e.key(), BufferKey::Data { .. }) {
                    self.data_partitions += 1;
                }
                let key = e.key().clone();
                e.insert(Buffer {
                    key,
                    data: Vec::new(),
                    records: 0,
                    oldest_ms: rec.arrival_ms,
                    first_seq: rec.sequence,
                    created: Instant::now(),
                    tokens: Vec::new(),
                })
            }
        };
        let cap = b.data.capacity();
        b.data.extend_from_slice(payload);
        b.data.extend_from_slice(delim);
        // The budget counts allocated capacity, not just length: that is what RSS sees.
        let grown = (b.data.capacity() - cap) as u64;
        self.mem += grown;
        MEMORY.fetch_add(grown, Ordering::Relaxed);
        b.records += 1;
        b.oldest_ms = b.oldest_ms.min(rec.arrival_ms);
        if b.tokens.last() != Some(&token) {
            b.tokens.push(token);
            *touched += 1;
        }
        self.bytes += (payload.len() + delim.len()) as u64;
    }

    fn error_doc(&self, rec: &Record, etype: ErrorType, message: &str) -> Vec<u8> {
        let seq = match crate::plugins::stream_io::split_sequence(rec.sequence) {
            Some((shard, seq)) => crate::stream::sequence_string(shard, seq),
            None => rec.sequence.to_string(),
        };
        let now = now_ms();
        serde_json::json!({
            "attemptsMade": 1,
            "arrivalTimestamp": rec.arrival_ms,
            "errorCode": etype.code(),
            "errorMessage": message,
            "attemptEndingTimestamp": now,
            "rawData": base64::engine::general_purpose::STANDARD.encode(&rec.data),
            "sequenceNumber": seq,
            "pipeline": self.pipeline,
        })
        .to_string()
        .into_bytes()
    }

    fn fail(
        &mut self,
        rec: &Record,
        etype: ErrorType,
        message: &str,
        token: u64,
        touched: &mut usize,
    ) {
        metrics::counter!("sluice_records_failed_total", "pipeline" => self.pipeline.clone(), "error_type" => etype.as_str()).increment(1);
        let doc = self.error_doc(rec, etype, message);
        self.append(BufferKey::Error(etype), &doc, rec, token, touched);
    }

    /// Adds a batch (its delivered records and its rejected ones) under ack `token`.
    pub fn add(&mut self, token: u64, records: &[Record], rejected: &[(Record, String)]) {
        let mut touched = 0usize;
        for (rec, why) in rejected {
            self.fail(rec, ErrorType::ProcessingFailed, why, token, &mut touched);
        }
        for rec in records {
            let query = match &self.partitioner {
                None => Vec::new(),
                Some(p) => match p.extract(&rec.data) {
                    Ok(q) => q,
                    Err(e) => {
                        self.fail(rec, ErrorType::PartitioningFailed, &e, token, &mut touched);
                        continue;
                    }
                },
            };
            let key = BufferKey::Data {
                query,
                lambda: if self.prefix.is_dynamic() {
                    rec.attrs.clone()
                } else {
                    Vec::new()
                },
            };
            // A new partition is checked once: its prefix must render (no missing or empty
            // key, not too long — the same for every record of the partition) and the cap
            // must leave room. Failures go to the error output.
            if !self.buffers.contains_key(&key) {
                let BufferKey::Data { query, lambda } = &key else {
                    continue;
                };
                if let Err(e) =
                    self.prefix
                        .render(query, lambda, rec.arrival_ms, None, "xxxxxxxxxxx")
                {
                    self.fail(rec, ErrorType::PartitioningFailed, &e, token, &mut touched);
                    continue;
                }
                if self.data_partitions >= self.spec.max_active_partitions as usize {
                    let msg = format!(
                        "the pipeline already has {} active partitions",
                        self.spec.max_active_partitions
                    );
                    self.fail(
                        rec,
                        ErrorType::ActivePartitionExceeded,
                        &msg,
                        token,
                        &mut touched,
                    );
                    continue;
                }
            }
            self.append(key, &rec.data, rec, token, &mut touched);
        }
        self.pending.insert(token, touched);
        self.order.push_back(token);
        self.publish_gauges();
    }

    fn pick(&self, reason_filter: impl Fn(&Buffer) -> bool) -> Option<BufferKey> {
        self.buffers
            .values()
            .find(|b| reason_filter(b))
            .map(|b| b.key.clone())
    }

    /// The next buffer to flush, if any is due (size, interval or memory).
    pub fn next_due(&self) -> Option<(BufferKey, FlushReason)> {
        if let Some(k) = self.pick(|b| b.data.len() as u64 >= self.spec.size) {
            return Some((k, FlushReason::Size));
        }
        if let Some(k) = self.pick(|b| b.created.elapsed() >= self.spec.interval) {
            return Some((k, FlushReason::Interval));
        }
        if MEMORY.load(Ordering::Relaxed) > MEMORY_LIMIT.load(Ordering::Relaxed) {
            // Largest first: frees the most memory per object.
            if let Some(b) = self.buffers.values().max_by_key(|b| b.data.capacity()) {
                return Some((b.key.clone(), FlushReason::Memory));
            }
        }
        None
    }

    /// Any buffer (for draining).
    pub fn any(&self) -> Option<BufferKey> {
        self.buffers.keys().next().cloned()
    }

    /// Takes a buffer out and encodes it into an object (CPU-bound: compression).
    pub fn take(&mut self, key: &BufferKey, reason: FlushReason) -> Option<Flushed> {
        let b = self.buffers.remove(key)?;
        if matches!(b.key, BufferKey::Data { .. }) {
            self.data_partitions -= 1;
        }
        let raw = b.data.len() as u64;
        let cap = b.data.capacity() as u64;
        self.bytes -= raw;
        self.mem -= cap;
        MEMORY.fetch_sub(cap, Ordering::Relaxed);
        let (template, query, lambda, error) = match &b.key {
            BufferKey::Data { query, lambda } => {
                (&self.prefix, query.as_slice(), lambda.as_slice(), None)
            }
            BufferKey::Error(t) => (&self.error_prefix, &[][..], &[][..], Some(*t)),
        };
        let partition_id = format!("{:?}", b.key);
        let id = unique_id(&self.pipeline, &partition_id, b.first_seq, b.records);
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
        let (y, mo, d, h, mi, s) = civil(b.oldest_ms);
        let compression = if error.is_some() {
            Compression::None
        } else {
            self.spec.compression
        };
        let key = format!(
            "{prefix}{}-{}-{y:04}-{mo:02}-{d:02}-{h:02}-{mi:02}-{s:02}-{}{}",
            self.pipeline,
            CONFIG_VERSION,
            uuid(&id),
            compression.extension()
        );
        let body = encode(compression, &b.data);
        self.publish_gauges();
        Some(Flushed {
            object: HostObject {
                key,
                content_type: if error.is_some() {
                    "application/x-ndjson"
                } else {
                    "application/octet-stream"
                },
                content_encoding: match compression {
                    Compression::None => "",
                    Compression::Gzip => "gzip",
                    Compression::Zstd => "zstd",
                    Compression::Snappy => "snappy",
                },
                record_count: b.records,
                oldest_ms: b.oldest_ms,
                body,
            },
            tokens: b.tokens,
            reason,
            records: b.records,
            raw_bytes: raw,
            error,
        })
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
            .error_prefix
            .render(
                &[],
                &[],
                f.object.oldest_ms,
                Some(etype.as_str()),
                "xxxxxxxxxxx",
            )
            .unwrap_or_else(|_| format!("{}/", etype.as_str()));
        tracing::error!(pipeline = %self.pipeline, key = %f.object.key, error = why, "giving up on an object after retry_duration; writing it under the error prefix");
        let records = f.records;
        metrics::counter!("sluice_records_failed_total", "pipeline" => self.pipeline.clone(), "error_type" => etype.as_str()).increment(records);
        Flushed {
            object: HostObject {
                key: format!("{prefix}{name}"),
                ..f.object
            },
            error: Some(etype),
            ..f
        }
    }

    /// Records a durably stored object and returns the tokens that may now be acked, in order.
    pub fn stored(&mut self, f: &Flushed) -> Vec<u64> {
        if f.error.is_none() {
            self.delivered += f.records;
        }
        for t in &f.tokens {
            if let Some(n) = self.pending.get_mut(t) {
                *n = n.saturating_sub(1);
            }
        }
        let p = self.pipeline.clone();
        metrics::counter!("sluice_buffer_flushes_total", "pipeline" => p.clone(), "reason" => f.reason.as_str()).increment(1);
        metrics::counter!("sluice_sink_objects_total", "pipeline" => p.clone(), "result" => "success").increment(1);
        if f.error.is_none() {
            metrics::counter!("sluice_sink_records_total", "pipeline" => p.clone())
                .increment(f.records);
            metrics::counter!("sluice_sink_bytes_total", "pipeline" => p.clone())
                .increment(f.raw_bytes);
        }
        let latency = (now_ms() - f.object.oldest_ms).max(0) as f64 / 1000.0;
        metrics::histogram!("sluice_delivery_latency_seconds", "pipeline" => p).record(latency);
        self.release()
    }

    fn release(&mut self) -> Vec<u64> {
        let mut out = Vec::new();
        while let Some(&t) = self.order.front() {
            if self.pending.get(&t).copied().unwrap_or(0) > 0 {
                break;
            }
            self.order.pop_front();
            self.pending.remove(&t);
            out.push(t);
        }
        out
    }

    /// (records, uncompressed bytes, open partitions) buffered now.
    pub fn stats(&self) -> (u64, u64, u64) {
        let records = self.buffers.values().map(|b| b.records).sum();
        (records, self.bytes, self.buffers.len() as u64)
    }

    /// Tokens whose batches had nothing to buffer, ready to ack.
    pub fn ready(&mut self) -> Vec<u64> {
        self.release()
    }

    fn publish_gauges(&self) {
        let p = self.pipeline.clone();
        let records: u64 = self.buffers.values().map(|b| b.records).sum();
        let oldest = self.buffers.values().map(|b| b.oldest_ms).min();
        metrics::gauge!("sluice_buffer_bytes", "pipeline" => p.clone()).set(self.bytes as f64);
        metrics::gauge!("sluice_buffer_records", "pipeline" => p.clone()).set(records as f64);
        metrics::gauge!("sluice_buffer_partitions_active", "pipeline" => p.clone())
            .set(self.buffers.len() as f64);
        let age = oldest
            .map(|o| (now_ms() - o).max(0) as f64 / 1000.0)
            .unwrap_or(0.0);
        metrics::gauge!("sluice_buffer_oldest_record_age_seconds", "pipeline" => p).set(age);
        metrics::gauge!("sluice_buffer_memory_bytes").set(MEMORY.load(Ordering::Relaxed) as f64);
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        MEMORY.fetch_sub(self.mem, Ordering::Relaxed);
    }
}

/// Compresses a whole buffer.
pub fn encode(c: Compression, data: &[u8]) -> Vec<u8> {
    match c {
        Compression::None => data.to_vec(),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(
                Vec::with_capacity(data.len() / 4),
                flate2::Compression::fast(),
            );
            let _ = e.write_all(data);
            e.finish().unwrap_or_default()
        }
        Compression::Zstd => zstd::bulk::compress(data, 3).unwrap_or_default(),
        Compression::Snappy => {
            let mut e = snap::write::FrameEncoder::new(Vec::with_capacity(data.len() / 2));
            let _ = e.write_all(data);
            e.into_inner().unwrap_or_default()
        }
    }
}

/// Delivers one object, retrying retryable failures until it is stored or `limit` passed
/// (see [`crate::plugins::until_stored`]). A fatal error ends the pipeline's run.
pub async fn deliver(
    sink: &mut SinkInstance,
    f: &Flushed,
    pipeline: &str,
    limit: Option<std::time::Duration>,
) -> Result<(), CallError> {
    let res = crate::plugins::until_stored(sink, pipeline, limit, |sink, _| {
        sink.submit_object(&f.object)
    })
    .await;
    if res.is_err() {
        metrics::counter!("sluice_sink_objects_total", "pipeline" => pipeline.to_string(), "result" => "failed").increment(1);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::time::Duration;

    #[test]
    fn every_compression_round_trips() {
        let data: Vec<u8> = (0..50_000u32)
            .flat_map(|i| format!("{{\"n\":{i}}}\n").into_bytes())
            .collect();
        for c in [
            Compression::None,
            Compression::Gzip,
            Compression::Zstd,
            Compression::Snappy,
        ] {
            let enc = encode(c, &data);
            let mut dec = Vec::new();
            match c {
                Compression::None => dec = enc.clone(),
                Compression::Gzip => {
                    flate2::read::MultiGzDecoder::new(&enc[..])
                        .read_to_end(&mut dec)
                        .unwrap();
                }
                Compression::Zstd => dec = zstd::decode_all(&enc[..]).unwrap(),
                Compression::Snappy => {
                    snap::read::FrameDecoder::new(&enc[..])
                        .read_to_end(&mut dec)
                        .unwrap();
                }
            }
            assert_eq!(dec, data, "{c:?}");
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
            ..Default::default()
        }
    }

    fn spec(compression: Compression, max_active_partitions: u32) -> DeliverySpec {
        DeliverySpec {
            query: Some("{type}".into()),
            max_active_partitions,
            size: 1 << 20,
            interval: Duration::from_secs(3600),
            prefix: "t=!{partitionKeyFromQuery:type}/".into(),
            error_prefix: "err/!{firehose:error-output-type}/".into(),
            compression,
            delimiter: "\n".into(),
        }
    }

    #[test]
    fn the_partition_cap_counts_open_data_buffers_only() {
        let mut d = Delivery::new("p", spec(Compression::None, 1)).unwrap();
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
        };
        let b = BufferKey::Data {
            query: vec![("type".into(), "b".into())],
            lambda: vec![],
        };
        assert!(
            d.buffers.contains_key(&a) && !d.buffers.contains_key(&b),
            "b is past the cap"
        );
        assert!(d
            .buffers
            .contains_key(&BufferKey::Error(ErrorType::ActivePartitionExceeded)));
        // Error buffers do not count; a flushed partition frees its place.
        assert!(d
            .buffers
            .contains_key(&BufferKey::Error(ErrorType::PartitioningFailed)));
        d.take(&a, FlushReason::Drain).unwrap();
        d.add(2, &[rec(r#"{"type":"b"}"#, 4)], &[]);
        assert!(d.buffers.contains_key(&b));
    }

    #[test]
    fn acks_wait_for_every_buffer_and_go_in_order() {
        let spec = spec(Compression::None, 10);
        let mut d = Delivery::new("p", spec).unwrap();
        d.add(
            1,
            &[rec(r#"{"type":"a"}"#, 1), rec(r#"{"type":"b"}"#, 2)],
            &[],
        );
        d.add(2, &[rec(r#"{"type":"a"}"#, 3)], &[]);
        d.add(3, &[], &[]);
        assert!(d.ready().is_empty(), "nothing stored yet");
        let a = BufferKey::Data {
            query: vec![("type".into(), "a".into())],
            lambda: vec![],
        };
        let fa = d.take(&a, FlushReason::Drain).unwrap();
        assert_eq!(fa.object.record_count, 2);
        assert!(
            fa.object
                .key
                .starts_with("t=a/2026/11/25/18/p-1-2026-11-25-18-47-55-"),
            "{}",
            fa.object.key
        );
        // Batch 1 still has a record in buffer b; batch 2 must wait for batch 1.
        assert!(d.stored(&fa).is_empty());
        let b = BufferKey::Data {
            query: vec![("type".into(), "b".into())],
            lambda: vec![],
        };
        let fb = d.take(&b, FlushReason::Drain).unwrap();
        assert_eq!(d.stored(&fb), vec![1, 2, 3]);
        // The same records give the same object name: replays overwrite, not duplicate.
        let mut d2 = Delivery::new("p", d.spec.clone()).unwrap();
        d2.add(
            1,
            &[rec(r#"{"type":"a"}"#, 1), rec(r#"{"type":"b"}"#, 2)],
            &[],
        );
        d2.add(2, &[rec(r#"{"type":"a"}"#, 3)], &[]);
        assert_eq!(
            d2.take(&a, FlushReason::Drain).unwrap().object.key,
            fa.object.key
        );
    }

    #[test]
    fn failures_become_firehose_error_documents() {
        let spec = spec(Compression::Gzip, 10);
        let mut d = Delivery::new("p", spec).unwrap();
        d.add(
            1,
            &[rec("not json", 7), rec(r#"{"type":""}"#, 8)],
            &[(rec("x", 9), "jq: boom".into())],
        );
        let f = d
            .take(
                &BufferKey::Error(ErrorType::PartitioningFailed),
                FlushReason::Drain,
            )
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
                &BufferKey::Error(ErrorType::ProcessingFailed),
                FlushReason::Drain,
            )
            .unwrap();
        assert!(String::from_utf8(p.object.body)
            .unwrap()
            .contains("\"errorMessage\":\"jq: boom\""));
    }
}
