//! Safe views over the ABI's record batches, objects and output builder.

use crate::ffi;
use std::marker::PhantomData;
use std::time::Duration;

/// Where a record sits in a replayable source (ABI 1.1): a partition (a shard, a Kafka
/// partition, ...) and an offset that strictly increases within it. After a restart a
/// replayable source emits again, with the same positions and bytes, every record whose
/// batch it did not see acknowledged as delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Position {
    /// Below 65,535.
    pub partition: u32,
    /// Below 2^48.
    pub offset: u64,
}

/// One input record, borrowed from the host.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// The record's bytes.
    pub data: &'a [u8],
    /// The partition key (UTF-8 by contract; lossy views are the host's job).
    pub partition_key: &'a [u8],
    /// Host-assigned number of the record in its source.
    pub sequence: u64,
    /// Its position in a replayable source, when it came from one (ABI 1.1 hosts).
    pub position: Option<Position>,
    /// Arrival time in ms since the Unix epoch, if known.
    pub timestamp_ms: Option<i64>,
    attrs: &'a [ffi::sl_attr],
}

impl<'a> Record<'a> {
    /// Key/value attributes (e.g. keys for `partitionKeyFromLambda`).
    pub fn attrs(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
        // SAFETY: attribute views live as long as the batch.
        self.attrs
            .iter()
            .map(|a| unsafe { (a.key.as_slice(), a.value.as_slice()) })
    }

    /// The same record as output (data, key and timestamp kept, no attributes).
    pub fn to_new(&self) -> NewRecord<'a> {
        NewRecord {
            data: self.data,
            partition_key: self.partition_key,
            timestamp_ms: self.timestamp_ms,
            position: None,
            attrs: &[],
        }
    }
}

/// A host-owned batch of records, valid for the duration of a call.
#[derive(Clone, Copy)]
pub struct Batch<'a> {
    raw: &'a ffi::sl_batch,
}

impl<'a> Batch<'a> {
    /// # Safety
    /// `raw` must describe `len` valid records at `record_stride` intervals for `'a`.
    pub unsafe fn from_raw(raw: &'a ffi::sl_batch) -> Self {
        Batch { raw }
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.raw.len
    }

    /// True when the batch holds no record.
    pub fn is_empty(&self) -> bool {
        self.raw.len == 0
    }

    /// The record at `i`.
    pub fn get(&self, i: usize) -> Option<Record<'a>> {
        if i >= self.raw.len || self.raw.records.is_null() {
            return None;
        }
        let stride = self.raw.record_stride as usize;
        // Fields only grow at the end: a newer host's larger records are read by prefix, an
        // ABI 1.0 host's smaller ones are copied into a zeroed record (no 1.1 fields).
        if stride < ffi::SL_RECORD_V1_0_SIZE {
            return None;
        }
        // SAFETY: guaranteed by from_raw's contract: `stride` readable bytes per record.
        let at = unsafe { (self.raw.records as *const u8).add(i * stride) };
        let mut copy = ffi::sl_record::zeroed();
        let r: &ffi::sl_record = if stride >= std::mem::size_of::<ffi::sl_record>() {
            // SAFETY: a whole record at `at`, aligned as the host's array is.
            unsafe { &*(at as *const ffi::sl_record) }
        } else {
            // SAFETY: `stride` bytes readable at `at`, fewer than a record's.
            unsafe { std::ptr::copy_nonoverlapping(at, &mut copy as *mut _ as *mut u8, stride) };
            &copy
        };
        // SAFETY: views inside a valid record are valid for the batch's lifetime.
        unsafe {
            Some(Record {
                data: r.data.as_slice(),
                partition_key: r.partition_key.as_slice(),
                sequence: r.sequence,
                position: (r.flags & ffi::SL_RECORD_POSITIONED != 0).then_some(Position {
                    partition: r.partition,
                    offset: r.sequence,
                }),
                timestamp_ms: (r.timestamp_ms != ffi::SL_TIMESTAMP_UNSET).then_some(r.timestamp_ms),
                attrs: if r.attrs.is_null() || r.attrs_len == 0 {
                    &[]
                } else {
                    std::slice::from_raw_parts(r.attrs, r.attrs_len as usize)
                },
            })
        }
    }

    /// Iterates over the records in order.
    pub fn iter(&self) -> impl Iterator<Item = Record<'a>> + '_ {
        (0..self.len()).filter_map(move |i| self.get(i))
    }
}

/// A record to output; the host copies it during [`Output::push`].
#[derive(Debug, Clone, Copy, Default)]
pub struct NewRecord<'a> {
    /// The bytes.
    pub data: &'a [u8],
    /// The partition key; empty lets the host choose (sources) or keep the input's (transforms).
    pub partition_key: &'a [u8],
    /// Arrival time override; `None` keeps the input's (transforms) or uses now (sources).
    pub timestamp_ms: Option<i64>,
    /// The record's position, for replayable sources (declared with
    /// `replayable_source(...)`); `None` lets the host number records. Transforms leave it
    /// `None`: outputs keep the position of the input they derive from.
    pub position: Option<Position>,
    /// Key/value attributes, e.g. partition keys for `!{partitionKeyFromLambda:KEY}`.
    pub attrs: &'a [(&'a str, &'a str)],
}

/// The host's output builder: records pushed here are copied immediately.
pub struct Output<'a> {
    raw: *mut ffi::sl_batch_builder,
    ack_token: u64,
    kept: Vec<u32>,
    _life: PhantomData<&'a mut ffi::sl_batch_builder>,
}

impl<'a> Output<'a> {
    /// # Safety
    /// `raw` must be a valid, exclusive builder for `'a`.
    pub unsafe fn from_raw(raw: *mut ffi::sl_batch_builder) -> Self {
        Output {
            raw,
            ack_token: 0,
            kept: Vec::new(),
            _life: PhantomData,
        }
    }

    /// Sets the token [`crate::Source::ack`] receives once this poll's records are delivered.
    pub fn set_ack_token(&mut self, token: u64) {
        self.ack_token = token;
    }

    /// The token set by [`Self::set_ack_token`] (0 by default).
    pub fn ack_token(&self) -> u64 {
        self.ack_token
    }

    fn raw(&self) -> &ffi::sl_batch_builder {
        // SAFETY: from_raw's contract.
        unsafe { &*self.raw }
    }

    /// How many more records the host takes in this call.
    pub fn credit_records(&self) -> u64 {
        self.raw().credit_records
    }

    /// How many more bytes the host takes in this call.
    pub fn credit_bytes(&self) -> u64 {
        self.raw().credit_bytes
    }

    /// Asks the host to poll again after at most `delay` (sources).
    pub fn set_poll_delay(&mut self, delay: Duration) {
        // SAFETY: from_raw's contract (exclusive).
        unsafe { (*self.raw).poll_delay_ms = delay.as_millis().clamp(1, u32::MAX as u128) as u32 };
    }

    /// Pushes a record derived from input `origin` (transforms) — sources use [`Self::emit`].
    /// Returns false when the host's credit is exhausted (the record was not taken).
    pub fn push(&mut self, origin: usize, rec: &NewRecord<'_>) -> bool {
        self.push_raw(origin, rec)
    }

    /// Pushes a new record (sources). Returns false when credit is exhausted.
    pub fn emit(&mut self, rec: &NewRecord<'_>) -> bool {
        self.push_raw(usize::MAX, rec)
    }

    /// Passes input record `input_index` through unchanged (transforms). Cheaper than
    /// [`Self::push`]: kept records are handed over in one call, without copying.
    pub fn keep(&mut self, input_index: usize) {
        match u32::try_from(input_index) {
            Ok(i) => self.kept.push(i),
            Err(_) => self.reject(input_index, "input index out of range"),
        }
    }

    /// Hands pending kept records to the host. The SDK calls it after `transform` returns
    /// (and before any push, to keep output order); call it yourself only when driving an
    /// `Output` outside the SDK's trampolines.
    pub fn finish(&mut self) {
        self.flush_kept();
    }

    fn flush_kept(&mut self) {
        if self.kept.is_empty() {
            return;
        }
        let raw = self.raw();
        let has_keep = raw.struct_size as usize >= std::mem::size_of::<ffi::sl_batch_builder>();
        if let (true, Some(keep)) = (has_keep, raw.keep) {
            // SAFETY: the host reads the indexes before returning.
            unsafe { keep(raw.host, self.kept.as_ptr(), self.kept.len()) };
        }
        self.kept.clear();
    }

    fn push_raw(&mut self, origin: usize, rec: &NewRecord<'_>) -> bool {
        self.flush_kept();
        let attrs: Vec<ffi::sl_attr>;
        let (attrs_ptr, attrs_len) = if rec.attrs.is_empty() {
            (std::ptr::null(), 0)
        } else {
            attrs = rec
                .attrs
                .iter()
                .map(|(k, v)| ffi::sl_attr {
                    key: ffi::sl_bytes::from_slice(k.as_bytes()),
                    value: ffi::sl_bytes::from_slice(v.as_bytes()),
                })
                .collect();
            (attrs.as_ptr(), attrs.len() as u32)
        };
        let r = ffi::sl_record {
            data: ffi::sl_bytes::from_slice(rec.data),
            partition_key: ffi::sl_bytes::from_slice(rec.partition_key),
            sequence: rec.position.map_or(0, |p| p.offset),
            timestamp_ms: rec.timestamp_ms.unwrap_or(ffi::SL_TIMESTAMP_UNSET),
            attrs: attrs_ptr,
            attrs_len,
            flags: if rec.position.is_some() {
                ffi::SL_RECORD_POSITIONED
            } else {
                0
            },
            partition: rec.position.map_or(0, |p| p.partition),
            reserved: 0,
        };
        let raw = self.raw();
        match raw.push {
            // SAFETY: the host's push copies the record before returning.
            Some(push) => unsafe {
                push(
                    raw.host,
                    origin,
                    &r,
                    std::mem::size_of::<ffi::sl_record>() as u32,
                ) == ffi::SL_OK
            },
            None => false,
        }
    }

    /// Sends input record `input_index` to the error output with `reason`.
    pub fn reject(&mut self, input_index: usize, reason: &str) {
        let raw = self.raw();
        if let Some(reject) = raw.reject {
            // SAFETY: the host copies the reason before returning.
            unsafe {
                reject(
                    raw.host,
                    input_index,
                    ffi::sl_bytes::from_slice(reason.as_bytes()),
                )
            };
        }
    }
}

/// A flushed object handed to an object sink; borrowed for the call.
pub struct Object<'a> {
    /// Object key (relative to the sink's bucket/prefix root).
    pub key: &'a str,
    /// MIME type of the body.
    pub content_type: &'a str,
    /// Content encoding (`gzip`, `zstd`, ... or empty).
    pub content_encoding: &'a str,
    /// Records in the object.
    pub record_count: u64,
    /// Arrival time of the oldest record, ms since the epoch.
    pub oldest_timestamp_ms: i64,
    /// The body when it is in memory.
    pub body: &'a [u8],
    /// The body's spool file when it is on disk (then `body` is empty).
    pub body_path: Option<&'a str>,
}

impl<'a> Object<'a> {
    /// # Safety
    /// `raw` and every view in it must be valid for `'a`.
    pub unsafe fn from_raw(raw: &'a ffi::sl_object) -> Self {
        // SAFETY: caller's contract; strings are UTF-8 by ABI contract, checked anyway.
        unsafe {
            let s = |b: &ffi::sl_str| std::str::from_utf8(b.as_slice()).unwrap_or("");
            Object {
                key: s(&raw.key),
                content_type: s(&raw.content_type),
                content_encoding: s(&raw.content_encoding),
                record_count: raw.record_count,
                oldest_timestamp_ms: raw.oldest_timestamp_ms,
                body: raw.body.as_slice(),
                body_path: (raw.body_path.len > 0).then(|| s(&raw.body_path)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(data: &'static [u8], position: Option<Position>) -> ffi::sl_record {
        ffi::sl_record {
            data: ffi::sl_bytes::from_slice(data),
            sequence: position.map_or(7, |p| p.offset),
            flags: if position.is_some() {
                ffi::SL_RECORD_POSITIONED
            } else {
                0
            },
            partition: position.map_or(0, |p| p.partition),
            timestamp_ms: 5,
            ..ffi::sl_record::zeroed()
        }
    }

    /// An ABI 1.0 host lays records out at the 1.0 size: they are read without the 1.1
    /// fields, never past their end.
    #[test]
    fn records_of_an_abi_1_0_host_are_read_by_prefix() {
        let p = Position {
            partition: 2,
            offset: 9,
        };
        let recs = [raw(b"a", Some(p)), raw(b"bc", None)];
        let stride = ffi::SL_RECORD_V1_0_SIZE;
        // u64 backing keeps the 8-byte alignment a host's array has.
        let mut buf = vec![0u64; recs.len() * stride / 8];
        for (i, r) in recs.iter().enumerate() {
            // SAFETY: copies the 1.0 prefix of a record into its slot of `buf`.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    r as *const _ as *const u8,
                    (buf.as_mut_ptr() as *mut u8).add(i * stride),
                    stride,
                )
            };
        }
        let b = ffi::sl_batch {
            struct_size: std::mem::size_of::<ffi::sl_batch>() as u32,
            record_stride: stride as u32,
            records: buf.as_ptr() as *const ffi::sl_record,
            len: 2,
        };
        // SAFETY: two records at `stride` in `buf`, alive for the test.
        let batch = unsafe { Batch::from_raw(&b) };
        let got: Vec<_> = batch
            .iter()
            .map(|r| (r.data, r.sequence, r.position))
            .collect();
        // The 1.0 prefix carries the flag but not the partition: partition reads as 0.
        assert_eq!(
            got,
            vec![
                (
                    &b"a"[..],
                    9,
                    Some(Position {
                        partition: 0,
                        offset: 9
                    })
                ),
                (&b"bc"[..], 7, None)
            ]
        );
        // At the 1.1 stride the partition is there.
        let b11 = ffi::sl_batch {
            record_stride: std::mem::size_of::<ffi::sl_record>() as u32,
            records: recs.as_ptr(),
            ..b
        };
        // SAFETY: two whole records.
        let batch = unsafe { Batch::from_raw(&b11) };
        assert_eq!(batch.get(0).unwrap().position, Some(p));
    }
}
