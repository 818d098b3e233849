//! The on-disk record frames.
//!
//! **v2** (every segment written now) starts the segment with [`SEGMENT_HEADER`] bytes:
//! the magic `SLSEGv2\0` and a random 64-bit **salt** drawn from the OS when the segment is
//! created. Each frame is `len u32 | hcrc u32 | crc u32 | seq u64 | arrival_ms i64 |
//! key_len u16 | key | data`, little-endian; `len` counts every byte after itself. Both
//! checksums are CRC32C seeded with the salt: `crc` covers every byte after itself, `hcrc`
//! covers `len`, `crc`, `seq`, `arrival_ms` and `key_len`. The salt is why recovery cannot
//! be fooled by record contents: a producer who embeds a well-formed frame in its data does
//! not know the salt, so the embedded frame fails both checks. The header checksum is why
//! resynchronising after damage is linear: a candidate offset costs [`HEADER`] bytes of
//! checksum, not a checksum over whatever length the damaged bytes happen to spell.
//!
//! **v1** (segments written before the salt; no segment header) is `len u32 | crc32c u32 |
//! seq u64 | arrival_ms i64 | key_len u16 | key | data` with an unsalted CRC over every byte
//! after itself. It is still read, never written.

/// Bytes at the start of a v2 segment: magic, salt.
pub const SEGMENT_HEADER: usize = 16;
/// The magic of a v2 segment. As a v1 length it would be over 1 GiB, which no v1 frame
/// can have, so the two formats cannot be confused.
pub const MAGIC: &[u8; 8] = b"SLSEGv2\0";
/// Bytes of a v2 frame before the key: len, hcrc, crc, seq, arrival, key_len.
pub const HEADER: usize = 4 + 4 + 4 + 8 + 8 + 2;
/// Bytes of a v1 frame before the key.
pub const HEADER_V1: usize = 4 + 4 + 8 + 8 + 2;
/// Largest frame accepted when reading (a corrupt length must not cause a huge read).
pub const MAX_FRAME: usize = 64 << 20;

/// How a segment's frames are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Legacy unsalted frames (read only).
    V1,
    /// Salted frames with a header checksum.
    V2 {
        /// The segment's salt.
        salt: u64,
    },
}

impl Codec {
    /// Bytes before the first frame of a segment in this format.
    pub fn data_start(self) -> u64 {
        match self {
            Codec::V1 => 0,
            Codec::V2 { .. } => SEGMENT_HEADER as u64,
        }
    }

    /// Bytes before the key.
    pub fn header(self) -> usize {
        match self {
            Codec::V1 => HEADER_V1,
            Codec::V2 { .. } => HEADER,
        }
    }
}

/// The segment header of a v2 segment with this salt.
pub fn segment_header(salt: u64) -> [u8; SEGMENT_HEADER] {
    let mut h = [0u8; SEGMENT_HEADER];
    h[..8].copy_from_slice(MAGIC);
    h[8..].copy_from_slice(&salt.to_le_bytes());
    h
}

/// What the start of a segment file says about its format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentStart {
    /// A v2 header.
    V2(u64),
    /// No header: a v1 segment.
    V1,
    /// Fewer bytes than a header, all a prefix of one (a crash while creating it).
    TornHeader,
}

/// Reads the format of a segment from its first bytes.
pub fn segment_start(bytes: &[u8]) -> SegmentStart {
    if bytes.len() >= SEGMENT_HEADER && &bytes[..8] == MAGIC {
        let mut salt = [0u8; 8];
        salt.copy_from_slice(&bytes[8..16]);
        return SegmentStart::V2(u64::from_le_bytes(salt));
    }
    let n = bytes.len().min(8);
    if bytes.len() < SEGMENT_HEADER && bytes[..n] == MAGIC[..n] {
        return SegmentStart::TornHeader;
    }
    SegmentStart::V1
}

fn seeded(salt: u64) -> u32 {
    crc32c::crc32c(&salt.to_le_bytes())
}

/// Appends one encoded v2 frame to `out`. Keys longer than `u16::MAX` are the caller's bug.
pub fn encode(out: &mut Vec<u8>, salt: u64, seq: u64, arrival_ms: i64, key: &[u8], data: &[u8]) {
    let key_len = key.len().min(u16::MAX as usize);
    let len = (HEADER - 4 + key_len + data.len()) as u32;
    let start = out.len();
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&arrival_ms.to_le_bytes());
    out.extend_from_slice(&(key_len as u16).to_le_bytes());
    out.extend_from_slice(&key[..key_len]);
    out.extend_from_slice(data);
    let seed = seeded(salt);
    let crc = crc32c::crc32c_append(seed, &out[start + 12..]);
    out[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
    let hcrc = header_crc(seed, &out[start..start + HEADER]);
    out[start + 4..start + 8].copy_from_slice(&hcrc.to_le_bytes());
}

/// The header checksum over `len`, `crc`, `seq`, `arrival_ms`, `key_len` of a v2 header.
fn header_crc(seed: u32, h: &[u8]) -> u32 {
    let c = crc32c::crc32c_append(seed, &h[..4]);
    crc32c::crc32c_append(c, &h[8..HEADER])
}

/// Appends one encoded v1 frame (tests of the legacy reader only).
pub fn encode_v1(out: &mut Vec<u8>, seq: u64, arrival_ms: i64, key: &[u8], data: &[u8]) {
    let key_len = key.len().min(u16::MAX as usize);
    let len = (HEADER_V1 - 4 + key_len + data.len()) as u32;
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

/// Encoded size of a v2 frame.
pub fn encoded_len(key: usize, data: usize) -> usize {
    HEADER + key.min(u16::MAX as usize) + data
}

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

/// Outcome of decoding at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A valid frame and its total size.
    Frame(Frame<'a>, usize),
    /// The buffer ends before the frame does (read more, or a torn tail).
    Incomplete,
    /// Not a valid frame (bad length or checksum).
    Invalid,
}

fn le8(b: &[u8]) -> [u8; 8] {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    a
}

/// The total size of the frame whose header starts `buf`, if that header is valid: O(1),
/// independent of the length the header claims. For v1 (no header checksum) only the
/// length bounds are checked.
pub fn check_header(buf: &[u8], codec: Codec) -> Option<usize> {
    let hdr = codec.header();
    if buf.len() < hdr {
        return None;
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if !(hdr - 4..=MAX_FRAME).contains(&len) {
        return None;
    }
    if let Codec::V2 { salt } = codec {
        let hcrc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
        if header_crc(seeded(salt), &buf[..HEADER]) != hcrc {
            return None;
        }
        let key_len = u16::from_le_bytes([buf[28], buf[29]]) as usize;
        if HEADER - 4 + key_len > len {
            return None;
        }
    }
    Some(4 + len)
}

/// Decodes the frame at the start of `buf`.
pub fn decode(buf: &[u8], codec: Codec) -> Decoded<'_> {
    if buf.len() < 4 {
        return Decoded::Incomplete;
    }
    let hdr = codec.header();
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if !(hdr - 4..=MAX_FRAME).contains(&len) {
        return Decoded::Invalid;
    }
    if buf.len() < hdr {
        return Decoded::Incomplete;
    }
    if check_header(buf, codec).is_none() {
        return Decoded::Invalid;
    }
    let total = 4 + len;
    if buf.len() < total {
        return Decoded::Incomplete;
    }
    let (crc_ok, body) = match codec {
        Codec::V1 => {
            let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
            (crc32c::crc32c(&buf[8..total]) == crc, &buf[8..total])
        }
        Codec::V2 { salt } => {
            let crc = u32::from_le_bytes([buf[8], buf[9], buf[10], buf[11]]);
            (
                crc32c::crc32c_append(seeded(salt), &buf[12..total]) == crc,
                &buf[12..total],
            )
        }
    };
    if !crc_ok {
        return Decoded::Invalid;
    }
    // body: seq u64 | arrival i64 | key_len u16 | key | data
    let seq = u64::from_le_bytes(le8(body));
    let arrival_ms = i64::from_le_bytes(le8(&body[8..]));
    let key_len = u16::from_le_bytes([body[16], body[17]]) as usize;
    if 18 + key_len > body.len() {
        return Decoded::Invalid;
    }
    Decoded::Frame(
        Frame {
            seq,
            arrival_ms,
            key: &body[18..18 + key_len],
            data: &body[18 + key_len..],
        },
        total,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const C: Codec = Codec::V2 { salt: 0x5eed };

    #[test]
    fn round_trip() {
        let mut b = Vec::new();
        encode(&mut b, 0x5eed, 7, 1234, b"pk", b"hello");
        assert_eq!(b.len(), encoded_len(2, 5));
        match decode(&b, C) {
            Decoded::Frame(f, n) => {
                assert_eq!(n, b.len());
                assert_eq!(
                    (f.seq, f.arrival_ms, f.key, f.data),
                    (7, 1234, &b"pk"[..], &b"hello"[..])
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(decode(&b[..b.len() - 1], C), Decoded::Incomplete);
        for i in 0..b.len() {
            let mut flipped = b.clone();
            flipped[i] ^= 1;
            assert!(
                !matches!(decode(&flipped, C), Decoded::Frame(..)),
                "bit flip at {i}"
            );
        }
        // Another salt (another segment) does not accept it.
        assert_eq!(decode(&b, Codec::V2 { salt: 1 }), Decoded::Invalid);
        assert_eq!(check_header(&b, Codec::V2 { salt: 1 }), None);
        assert_eq!(check_header(&b, C), Some(b.len()));
    }

    #[test]
    fn v1_frames_still_decode() {
        let mut b = Vec::new();
        encode_v1(&mut b, 3, 9, b"k", b"v1 data");
        match decode(&b, Codec::V1) {
            Decoded::Frame(f, n) => {
                assert_eq!(n, b.len());
                assert_eq!((f.seq, f.key, f.data), (3, &b"k"[..], &b"v1 data"[..]));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(segment_start(&b), SegmentStart::V1);
        assert_eq!(segment_start(&segment_header(5)), SegmentStart::V2(5));
        assert_eq!(segment_start(&MAGIC[..5]), SegmentStart::TornHeader);
        assert_eq!(segment_start(&[]), SegmentStart::TornHeader);
    }

    proptest! {
        /// The decoder never panics and never claims a frame it was not given intact.
        #[test]
        fn decode_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Decoded::Frame(_, n) = decode(&bytes, C) {
                prop_assert!(n <= bytes.len());
            }
            if let Decoded::Frame(_, n) = decode(&bytes, Codec::V1) {
                prop_assert!(n <= bytes.len());
            }
        }

        #[test]
        fn encode_decode(seq: u64, ts: i64, key in proptest::collection::vec(any::<u8>(), 0..300), data in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let mut b = Vec::new();
            encode(&mut b, 0x5eed, seq, ts, &key, &data);
            match decode(&b, C) {
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
