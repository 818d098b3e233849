//! KPL de-aggregation, on the source side of a pipeline (stream records may be KPL
//! aggregates): `F3 89 9A C2` ‖ protobuf `AggregatedRecord` ‖ MD5 of the protobuf.
//! A blob that is too short, lacks the magic, fails the MD5 or does not decode is an
//! ordinary record — as Kinesis consumers treat it.

use md5::{Digest, Md5};

/// The KPL magic prefix.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];

/// One user record inside an aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord<'a> {
    /// Its partition key.
    pub partition_key: &'a [u8],
    /// Its explicit hash key, if any.
    pub explicit_hash_key: Option<&'a [u8]>,
    /// Its data.
    pub data: &'a [u8],
}

fn varint(b: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*pos)?;
        *pos += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Iterates over (field number, wire type, payload) of a protobuf message; `None` on
/// malformed input. Length-delimited payloads are returned as slices; varints as their
/// value in `u64` with an empty slice.
/// (field number, wire type, length-delimited payload, varint value).
type Field<'a> = (u64, u8, &'a [u8], u64);

fn fields(b: &[u8]) -> Option<Vec<Field<'_>>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < b.len() {
        let key = varint(b, &mut pos)?;
        let (field, wire) = (key >> 3, (key & 7) as u8);
        match wire {
            0 => {
                let v = varint(b, &mut pos)?;
                out.push((field, wire, &b[0..0], v));
            }
            1 => {
                pos = pos.checked_add(8).filter(|&p| p <= b.len())?;
            }
            2 => {
                let len = usize::try_from(varint(b, &mut pos)?).ok()?;
                let end = pos.checked_add(len).filter(|&e| e <= b.len())?;
                out.push((field, wire, &b[pos..end], 0));
                pos = end;
            }
            5 => {
                pos = pos.checked_add(4).filter(|&p| p <= b.len())?;
            }
            _ => return None,
        }
    }
    Some(out)
}

/// The user records of a KPL aggregate, or `None` when `blob` is an ordinary record.
pub fn deaggregate(blob: &[u8]) -> Option<Vec<UserRecord<'_>>> {
    if blob.len() < MAGIC.len() + 16 + 1 || blob[..4] != MAGIC {
        return None;
    }
    let (proto, digest) = blob[4..].split_at(blob.len() - 4 - 16);
    if Md5::digest(proto)[..] != digest[..] {
        return None;
    }
    let mut keys = Vec::new();
    let mut ehks = Vec::new();
    let mut recs = Vec::new();
    for (field, wire, payload, _) in fields(proto)? {
        match (field, wire) {
            (1, 2) => keys.push(payload),
            (2, 2) => ehks.push(payload),
            (3, 2) => recs.push(payload),
            _ => {}
        }
    }
    let mut out = Vec::with_capacity(recs.len());
    for r in recs {
        let (mut pk, mut ehk, mut data) = (None, None, None);
        for (field, wire, payload, v) in fields(r)? {
            match (field, wire) {
                (1, 0) => pk = Some(v),
                (2, 0) => ehk = Some(v),
                (3, 2) => data = Some(payload),
                _ => {}
            }
        }
        let key = *keys.get(usize::try_from(pk?).ok()?)?;
        let explicit_hash_key = match ehk {
            Some(i) => Some(*ehks.get(usize::try_from(i).ok()?)?),
            None => None,
        };
        out.push(UserRecord {
            partition_key: key,
            explicit_hash_key,
            data: data?,
        });
    }
    Some(out)
}

/// Splits KPL aggregated records into their user records (each keeps the aggregate's
/// arrival time and position; ordinary records pass unchanged).
pub(super) fn deaggregate_records(
    records: Vec<crate::record::Record>,
) -> Vec<crate::record::Record> {
    if !records.iter().any(|r| r.data.starts_with(&MAGIC)) {
        return records;
    }
    let mut out = Vec::with_capacity(records.len());
    for r in records {
        match deaggregate(&r.data) {
            None => out.push(r),
            Some(users) => {
                for u in users {
                    out.push(crate::record::Record {
                        data: r.data.slice_ref(u.data),
                        partition_key: bytes::Bytes::copy_from_slice(u.partition_key),
                        ..r.clone()
                    });
                }
            }
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    fn put_varint(out: &mut Vec<u8>, mut v: u64) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn put_bytes(out: &mut Vec<u8>, field: u64, b: &[u8]) {
        put_varint(out, field << 3 | 2);
        put_varint(out, b.len() as u64);
        out.extend_from_slice(b);
    }

    /// Builds an aggregate the way the KPL does.
    pub(crate) fn aggregate(records: &[(&str, &[u8])]) -> Vec<u8> {
        let mut keys: Vec<&str> = Vec::new();
        let mut proto = Vec::new();
        let mut body = Vec::new();
        for (k, d) in records {
            let idx = keys.iter().position(|x| x == k).unwrap_or_else(|| {
                keys.push(k);
                keys.len() - 1
            });
            let mut r = Vec::new();
            put_varint(&mut r, 1 << 3);
            put_varint(&mut r, idx as u64);
            put_bytes(&mut r, 3, d);
            put_bytes(&mut body, 3, &r);
        }
        for k in &keys {
            put_bytes(&mut proto, 1, k.as_bytes());
        }
        proto.extend_from_slice(&body);
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&proto);
        out.extend_from_slice(&Md5::digest(&proto));
        out
    }

    #[test]
    fn round_trip() {
        let blob = aggregate(&[("a", b"one"), ("b", b"two"), ("a", b"three")]);
        let recs = deaggregate(&blob).unwrap();
        let got: Vec<(&[u8], &[u8])> = recs.iter().map(|r| (r.partition_key, r.data)).collect();
        assert_eq!(
            got,
            [(&b"a"[..], &b"one"[..]), (b"b", b"two"), (b"a", b"three")]
        );
    }

    #[test]
    fn ordinary_records_stay_ordinary() {
        assert!(deaggregate(b"{\"plain\":true}").is_none());
        let mut blob = aggregate(&[("a", b"x")]);
        let n = blob.len();
        blob[n - 1] ^= 1; // MD5 mismatch
        assert!(deaggregate(&blob).is_none());
        assert!(deaggregate(&MAGIC).is_none());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut with_magic = MAGIC.to_vec();
            with_magic.extend_from_slice(&b);
            let _ = deaggregate(&b);
            let _ = deaggregate(&with_magic);
            // A valid digest over garbage protobuf must not panic either.
            let mut framed = MAGIC.to_vec();
            framed.extend_from_slice(&b);
            framed.extend_from_slice(&Md5::digest(&b));
            let _ = deaggregate(&framed);
        }
    }
}
