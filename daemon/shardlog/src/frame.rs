//! The on-disk record frame: `len u32 | crc32c u32 | seq u64 | arrival_ms i64 |
//! key_len u16 | key | data`, little-endian. `len` counts every byte after itself; the CRC
//! (Castagnoli) covers every byte after itself.

/// Bytes before the key: len, crc, seq, arrival, key_len.
pub const HEADER: usize = 4 + 4 + 8 + 8 + 2;
/// Largest frame accepted when reading (a corrupt length must not cause a huge read).
pub const MAX_FRAME: usize = 64 << 20;

/// A decoded frame borrowing from the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Shard-local sequence number.
    pub seq: u64,
    /// Arrival time, ms since the epoch.
    pub arrival_ms: i64,
    /// Partition key.
    pub key: &'a [u8],
    /// Payload.
    pub data: &'a [u8],
}

/// Appends one encoded frame to `out`. Keys longer than `u16::MAX` are the caller's bug.
pub fn encode(out: &mut Vec<u8>, seq: u64, arrival_ms: i64, key: &[u8], data: &[u8]) {
    let key_len = key.len().min(u16::MAX as usize);
    let len = (HEADER - 4 + key_len + data.len()) as u32;
    let start = out.len();
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&arrival_ms.to_le_bytes());
    out.extend_from_slice(&(key_len as u16).to_le_bytes());
    out.extend_from_slice(&key[..key_len]);
    out.extend_from_slice(data);
    let crc = crc32c::crc32c(&out[start + 8..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Encoded size of a frame.
pub fn encoded_len(key: usize, data: usize) -> usize {
    HEADER + key.min(u16::MAX as usize) + data
}

/// Outcome of decoding at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A valid frame and its total size.
    Frame(Frame<'a>, usize),
    /// The buffer ends before the frame does (read more, or a torn tail).
    Incomplete,
    /// Not a valid frame (bad length or CRC).
    Invalid,
}

/// Decodes the frame at the start of `buf`.
pub fn decode(buf: &[u8]) -> Decoded<'_> {
    if buf.len() < 4 {
        return Decoded::Incomplete;
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if !(HEADER - 4..=MAX_FRAME).contains(&len) {
        return Decoded::Invalid;
    }
    let total = 4 + len;
    if buf.len() < total {
        return Decoded::Incomplete;
    }
    let body = &buf[4..total];
    let crc = u32::from_le_bytes([body[0], body[1], body[2], body[3]]);
    if crc32c::crc32c(&body[4..]) != crc {
        return Decoded::Invalid;
    }
    let le8 = |b: &[u8]| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[..8]);
        a
    };
    let seq = u64::from_le_bytes(le8(&body[4..]));
    let arrival_ms = i64::from_le_bytes(le8(&body[12..]));
    let key_len = u16::from_le_bytes([body[20], body[21]]) as usize;
    if 22 + key_len > body.len() {
        return Decoded::Invalid;
    }
    Decoded::Frame(
        Frame {
            seq,
            arrival_ms,
            key: &body[22..22 + key_len],
            data: &body[22 + key_len..],
        },
        total,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip() {
        let mut b = Vec::new();
        encode(&mut b, 7, 1234, b"pk", b"hello");
        assert_eq!(b.len(), encoded_len(2, 5));
        match decode(&b) {
            Decoded::Frame(f, n) => {
                assert_eq!(n, b.len());
                assert_eq!(
                    (f.seq, f.arrival_ms, f.key, f.data),
                    (7, 1234, &b"pk"[..], &b"hello"[..])
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(decode(&b[..b.len() - 1]), Decoded::Incomplete);
        let mut flipped = b.clone();
        flipped[30] ^= 1;
        assert_eq!(decode(&flipped), Decoded::Invalid);
    }

    proptest! {
        /// The decoder never panics and never claims a frame it was not given intact.
        #[test]
        fn decode_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Decoded::Frame(_, n) = decode(&bytes) {
                prop_assert!(n <= bytes.len());
            }
        }

        #[test]
        fn encode_decode(seq: u64, ts: i64, key in proptest::collection::vec(any::<u8>(), 0..300), data in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let mut b = Vec::new();
            encode(&mut b, seq, ts, &key, &data);
            match decode(&b) {
                Decoded::Frame(f, n) => {
                    prop_assert_eq!(n, b.len());
                    prop_assert_eq!(f.seq, seq);
                    prop_assert_eq!(f.arrival_ms, ts);
                    prop_assert_eq!(f.key, &key[..]);
                    prop_assert_eq!(f.data, &data[..]);
                }
                other => prop_assert!(false, "{:?}", other),
            }
        }
    }
}
