//! Kinesis routing and sequence numbers: shard i of N owns
//! `[floor(i·2^128/N), floor((i+1)·2^128/N) − 1]`, a record's hash key is the MD5 of its
//! partition key read as a big-endian 128-bit number (or its `ExplicitHashKey`), and
//! sequence numbers are 56-digit decimal strings that increase within a shard.

use md5::{Digest, Md5};

/// `floor(i · 2^128 / n)` without overflow.
fn boundary(i: u32, n: u32) -> Option<u128> {
    let n = u128::from(n);
    let i = u128::from(i);
    if i >= n {
        return None; // 2^128 itself: past the end
    }
    if i == 0 {
        return Some(0); // also avoids 2^128 / 1, which does not fit
    }
    // 2^128 = q·n + r
    let q = u128::MAX / n + (u128::MAX % n + 1) / n;
    let r = (u128::MAX % n + 1) % n;
    Some(i * q + (i * r) / n)
}

/// The hash-key range `(start, end)` of shard `i` of `n`.
pub fn shard_range(i: u32, n: u32) -> (u128, u128) {
    let start = boundary(i, n).unwrap_or(u128::MAX);
    let end = boundary(i + 1, n).map(|b| b - 1).unwrap_or(u128::MAX);
    (start, end)
}

/// The 128-bit hash key of a partition key.
pub fn hash_key(partition_key: &[u8]) -> u128 {
    let d = Md5::digest(partition_key);
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    u128::from_be_bytes(b)
}

/// `49` + 54 digits of `index << 64 | low`.
fn external(index: u32, low: u64) -> String {
    format!("49{:054}", (u128::from(index) << 64) | u128::from(low))
}

/// The Kinesis-style sequence number of the record at shard-local `seq` in shard
/// `index`: 56 decimal digits, increasing with `seq` within a shard and distinct across
/// shards. It is one above the shard-local number, so that the shard's starting number
/// ([`shard_start_sequence`]) sorts before its first record, as on Kinesis: a consumer
/// that read nothing yet continues AFTER_SEQUENCE_NUMBER of it and misses nothing.
pub fn sequence_string(index: u32, seq: u64) -> String {
    external(index, seq.saturating_add(1))
}

/// `StartingSequenceNumber` of shard `index` (below every record of it).
pub fn shard_start_sequence(index: u32) -> String {
    external(index, 0)
}

/// `EndingSequenceNumber` of shard `index` closed at shard-local `at_seq` (the number of
/// its last possible record; its starting number when it never had one).
pub fn shard_end_sequence(index: u32, at_seq: u64) -> String {
    external(index, at_seq)
}

/// The (shard index, low part) of a sequence number string: the record at shard-local
/// `low - 1` (AT_SEQUENCE_NUMBER reads from `low - 1`, AFTER_SEQUENCE_NUMBER from `low`).
pub fn parse_sequence(s: &str) -> Option<(u32, u64)> {
    if s.len() != 56 || !s.starts_with("49") || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let v: u128 = s[2..].parse().ok()?;
    let index = u32::try_from(v >> 64).ok()?;
    Some((index, v as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn two_shards_match_kinesis() {
        assert_eq!(
            shard_range(0, 2),
            (0, 170141183460469231731687303715884105727)
        );
        assert_eq!(
            shard_range(1, 2),
            (170141183460469231731687303715884105728, u128::MAX)
        );
        assert_eq!(shard_range(0, 1), (0, u128::MAX));
    }

    #[test]
    fn md5_of_the_key() {
        // md5("pk1") = 0x... read big-endian
        let h = hash_key(b"a");
        assert_eq!(format!("{h:032x}"), "0cc175b9c0f1b6a831c399e269772661");
    }

    proptest! {
        #[test]
        fn ranges_tile_the_key_space(n in 1u32..2000) {
            let mut next = 0u128;
            for i in 0..n {
                let (s, e) = shard_range(i, n);
                prop_assert_eq!(s, next);
                prop_assert!(e >= s);
                if i + 1 < n { next = e + 1; } else { prop_assert_eq!(e, u128::MAX); }
            }
        }

        #[test]
        fn sequence_numbers_round_trip_and_order(i in 0u32..100_000, a in 0u64..u64::MAX, b in 0u64..u64::MAX) {
            let (sa, sb) = (sequence_string(i, a), sequence_string(i, b));
            prop_assert_eq!(sa.len(), 56);
            prop_assert_eq!(parse_sequence(&sa), Some((i, a.saturating_add(1))));
            prop_assert!(shard_start_sequence(i) < sa);
            prop_assert_eq!(a.cmp(&b), sa.cmp(&sb));
        }
    }
}
