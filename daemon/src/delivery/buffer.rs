//! One partition's buffer: encoded records in chunks (spooled through the compressor or
//! spilled raw to disk when large or under pressure), the ack tokens it holds and the
//! position ranges its records came from.

use super::{chunks, spool, ErrorType};
use crate::record::Record;
use std::path::Path;
use std::time::Instant;

/// What identifies a buffer: its partition keys, or the error type of an error buffer —
/// and, when several nodes share the source's shards, the shard its records come from
/// (`shard`: the tag of their sequences, `sequence >> 48`; 0 otherwise), so every object
/// holds one shard's records and whichever node reads the shard can rebuild it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BufferKey {
    /// Records of one partition.
    Data {
        /// `partitionKeyFromQuery` keys.
        query: Vec<(String, String)>,
        /// `partitionKeyFromLambda` keys (set by transforms).
        lambda: Vec<(String, String)>,
        /// The shard tag (0: objects mix shards).
        shard: u64,
    },
    /// Error documents of one type (and shard tag, as for data).
    Error(ErrorType, u64),
}

pub(super) struct Buffer {
    pub(super) key: BufferKey,
    pub(super) data: chunks::Chunks,
    pub(super) records: u64,
    pub(super) oldest_ms: i64,
    pub(super) first_seq: u64,
    pub(super) created: Instant,
    pub(super) tokens: Vec<u64>,
    /// Per shard tag: (tag, first sequence, last sequence) — kept with an intent log only.
    pub(super) ranges: Vec<(u64, u64, u64)>,
    /// Set once the buffer outgrew [`SPILL_AT`]: records go through the compressor to disk.
    /// Boxed: an encoder is hundreds of bytes, and there is one `Buffer` per partition.
    pub(super) spool: Option<Box<spool::Spool>>,
    pub(super) spool_error: Option<std::io::Error>,
    /// Bytes spilled to disk under memory pressure (they come before `data`).
    pub(super) spill: Option<Box<spool::RawSpill>>,
    /// The schema its records have built (`format = "parquet"` with `schema = "infer"`).
    pub(super) schema: super::parquet::BufferSchema,
    /// `schema = "infer"`: a record did not fit on arrival; the flush decides which ones
    /// are refused ([`super::parquet::decide`]).
    pub(super) conflicted: bool,
    /// `schema = "infer"`: each record's origin, by line, for the flush's decision (its
    /// shard) and the error documents of the records it refuses.
    pub(super) metas: Vec<Meta>,
    /// `schema = "infer"`: the bytes of records re-written on one line (they held line
    /// breaks), by line index, for their error documents.
    pub(super) originals: Vec<(usize, Box<[u8]>)>,
}

/// Where a buffered record came from: what its error document needs if the flush
/// refuses it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Meta {
    pub(super) sequence: u64,
    pub(super) arrival_ms: i64,
    pub(super) position: Option<crate::record::Position>,
}

impl Meta {
    pub(super) fn of(rec: &Record) -> Meta {
        Meta {
            sequence: rec.sequence,
            arrival_ms: rec.arrival_ms,
            position: rec.position,
        }
    }

    /// The record again, with `data` as its bytes (for its error document).
    pub(super) fn record(&self, data: Vec<u8>) -> Record {
        Record {
            data: data.into(),
            arrival_ms: self.arrival_ms,
            sequence: self.sequence,
            position: self.position,
            ..Default::default()
        }
    }
}

impl Buffer {
    pub(super) fn new(key: BufferKey, rec: &Record) -> Buffer {
        Buffer {
            key,
            data: chunks::Chunks::default(),
            records: 0,
            oldest_ms: rec.arrival_ms,
            first_seq: rec.sequence,
            created: Instant::now(),
            tokens: Vec::new(),
            ranges: Vec::new(),
            spool: None,
            spool_error: None,
            spill: None,
            schema: Default::default(),
            conflicted: false,
            metas: Vec::new(),
            originals: Vec::new(),
        }
    }

    /// Bytes held beside the records (`schema = "infer"`'s origins), for the budget.
    pub(super) fn side_bytes(&self) -> u64 {
        (self.metas.capacity() * std::mem::size_of::<Meta>()
            + self.originals.iter().map(|o| o.1.len() + 32).sum::<usize>()) as u64
    }

    /// Uncompressed bytes held (in RAM, spooled or spilled).
    pub(super) fn raw_len(&self) -> u64 {
        self.data.len() as u64
            + self.spool.as_ref().map_or(0, |s| s.raw())
            + self.spill.as_ref().map_or(0, |s| s.len())
    }

    /// Moves the bytes in RAM to the spill file; returns the bytes of chunks freed.
    pub(super) fn spill_out(&mut self, dir: &Path) -> std::io::Result<u64> {
        let sp = match &mut self.spill {
            Some(sp) => sp,
            None => self.spill.insert(Box::new(spool::RawSpill::create(dir)?)),
        };
        sp.append(self.data.slices())?;
        let freed = self.data.capacity() as u64;
        self.data.clear();
        Ok(freed)
    }

    /// Appends a record; returns how much the allocation grew.
    pub(super) fn push(
        &mut self,
        payload: &[u8],
        delim: &[u8],
        rec: &Record,
        token: u64,
        touched: &mut usize,
        ranges: bool,
    ) -> u64 {
        let mut grown = 0;
        match &mut self.spool {
            Some(sp) => {
                if let Err(e) = sp.write(payload).and_then(|()| sp.write(delim)) {
                    self.spool_error.get_or_insert(e);
                }
            }
            None => grown = self.data.extend(payload) + self.data.extend(delim),
        }
        self.records += 1;
        self.oldest_ms = self.oldest_ms.min(rec.arrival_ms);
        if self.tokens.last() != Some(&token) {
            self.tokens.push(token);
            *touched += 1;
        }
        if ranges {
            let (tag, seq) = (rec.sequence >> 48, rec.sequence);
            match self.ranges.iter_mut().find(|r| r.0 == tag) {
                Some(r) => r.2 = seq,
                None => self.ranges.push((tag, seq, seq)),
            }
        }
        // The budget counts whole chunks, not just length: that is what RSS sees.
        grown as u64
    }
}
