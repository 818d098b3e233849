//! Deterministic object names: the same records always make the same object id.

use crate::spec::civil;
use md5::{Digest, Md5};

/// The object id: md5 of what decides the object's records (pipeline, partition, first
/// position, count), so a replay after a crash names the same object the same way.
pub(super) fn unique_id(pipeline: &str, key: &str, first_seq: u64, records: u64) -> [u8; 16] {
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

/// The id in UUID form, as Firehose puts one in object names.
pub(super) fn uuid(b: &[u8; 16]) -> String {
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

/// Firehose's object name under `prefix`:
/// `<pipeline>-<config version>-<yyyy-MM-dd-HH-mm-ss of the oldest record>-<id><ext>`.
pub(super) fn object_key(
    prefix: &str,
    pipeline: &str,
    version: u32,
    oldest_ms: i64,
    id: &[u8; 16],
    ext: &str,
) -> String {
    let (y, mo, d, h, mi, s) = civil(oldest_ms);
    format!(
        "{prefix}{pipeline}-{version}-{y:04}-{mo:02}-{d:02}-{h:02}-{mi:02}-{s:02}-{}{ext}",
        uuid(id)
    )
}
