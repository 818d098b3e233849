//! Shard iterators: opaque, tamper-evident (HMAC-SHA256 with a per-process key) tokens
//! naming a stream, a shard and a position, valid for five minutes.

use base64::Engine as _;
use hmac::{KeyInit, Mac};
use sha2::Sha256;

/// How long an iterator stays valid, as Kinesis.
pub const ITERATOR_TTL_MS: i64 = 300_000;

/// A decoded iterator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// Stream name.
    pub stream: String,
    /// Shard index.
    pub shard: u32,
    /// Next shard-local sequence number to read.
    pub seq: u64,
    /// When it was issued (ms since the epoch).
    pub issued_ms: i64,
}

/// Why an iterator was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum IteratorError {
    /// Not one of ours, or tampered with.
    Invalid,
    /// Older than five minutes.
    Expired { issued_ms: i64 },
}

/// Encodes and checks iterators.
pub struct IteratorCodec {
    key: [u8; 32],
    ttl_ms: i64,
}

const MAC_LEN: usize = 16;

impl IteratorCodec {
    /// A codec with a fresh random key (iterators do not survive a restart).
    pub fn new() -> Self {
        // The key must not be guessable (a guessed key forges iterators for any stream
        // and shard): it comes from the OS CSPRNG. Should the OS have none, the process
        // cannot serve iterators safely at all.
        let mut key = [0u8; 32];
        if let Err(e) = getrandom::fill(&mut key) {
            tracing::error!(error = %e, "no OS randomness for the shard-iterator key");
            std::process::abort();
        }
        IteratorCodec {
            key,
            ttl_ms: ITERATOR_TTL_MS,
        }
    }

    /// A codec whose iterators expire after `ttl` instead of five minutes.
    pub fn with_ttl(ttl: std::time::Duration) -> Self {
        IteratorCodec {
            ttl_ms: ttl.as_millis().min(i64::MAX as u128) as i64,
            ..Self::new()
        }
    }

    /// How long iterators stay valid, in ms.
    pub fn ttl_ms(&self) -> i64 {
        self.ttl_ms
    }

    fn hmac(&self, payload: &[u8]) -> hmac::Hmac<Sha256> {
        let mut m = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("any key length works for HMAC"));
        m.update(payload);
        m
    }

    fn mac(&self, payload: &[u8]) -> [u8; MAC_LEN] {
        let full = self.hmac(payload).finalize().into_bytes();
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(&full[..MAC_LEN]);
        out
    }

    /// The token for a position.
    pub fn encode(&self, p: &Position) -> String {
        let mut b = Vec::with_capacity(32 + p.stream.len());
        b.push(1u8);
        b.push(p.stream.len().min(255) as u8);
        b.extend_from_slice(&p.stream.as_bytes()[..p.stream.len().min(255)]);
        b.extend_from_slice(&p.shard.to_be_bytes());
        b.extend_from_slice(&p.seq.to_be_bytes());
        b.extend_from_slice(&p.issued_ms.to_be_bytes());
        let mac = self.mac(&b);
        b.extend_from_slice(&mac);
        base64::engine::general_purpose::STANDARD.encode(b)
    }

    /// Checks and decodes a token at time `now_ms`.
    pub fn decode(&self, token: &str, now_ms: i64) -> Result<Position, IteratorError> {
        let b = base64::engine::general_purpose::STANDARD
            .decode(token)
            .map_err(|_| IteratorError::Invalid)?;
        if b.len() < 2 + 4 + 8 + 8 + MAC_LEN || b[0] != 1 {
            return Err(IteratorError::Invalid);
        }
        let (payload, mac) = b.split_at(b.len() - MAC_LEN);
        // Constant-time comparison of the truncated tag (`hmac`'s `verify_truncated_left`).
        if self.hmac(payload).verify_truncated_left(mac).is_err() {
            return Err(IteratorError::Invalid);
        }
        let n = payload[1] as usize;
        if payload.len() != 2 + n + 20 {
            return Err(IteratorError::Invalid);
        }
        let stream = std::str::from_utf8(&payload[2..2 + n])
            .map_err(|_| IteratorError::Invalid)?
            .to_string();
        let rest = &payload[2 + n..];
        let shard = u32::from_be_bytes(rest[0..4].try_into().map_err(|_| IteratorError::Invalid)?);
        let seq = u64::from_be_bytes(rest[4..12].try_into().map_err(|_| IteratorError::Invalid)?);
        let issued_ms = i64::from_be_bytes(
            rest[12..20]
                .try_into()
                .map_err(|_| IteratorError::Invalid)?,
        );
        if now_ms - issued_ms > self.ttl_ms {
            return Err(IteratorError::Expired { issued_ms });
        }
        Ok(Position {
            stream,
            shard,
            seq,
            issued_ms,
        })
    }
}

impl Default for IteratorCodec {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip_tamper_and_expiry() {
        let c = IteratorCodec::new();
        let p = Position {
            stream: "events".into(),
            shard: 3,
            seq: 42,
            issued_ms: 1_000,
        };
        let t = c.encode(&p);
        assert_eq!(c.decode(&t, 2_000), Ok(p.clone()));
        assert_eq!(
            c.decode(&t, 1_000 + ITERATOR_TTL_MS + 1),
            Err(IteratorError::Expired { issued_ms: 1_000 })
        );
        let mut raw = base64::engine::general_purpose::STANDARD
            .decode(&t)
            .unwrap();
        raw[5] ^= 1;
        let tampered = base64::engine::general_purpose::STANDARD.encode(raw);
        assert_eq!(c.decode(&tampered, 2_000), Err(IteratorError::Invalid));
        assert_eq!(
            IteratorCodec::new().decode(&t, 2_000),
            Err(IteratorError::Invalid),
            "another process's key"
        );
        assert_eq!(c.decode("not base64!", 0), Err(IteratorError::Invalid));
    }

    proptest! {
        #[test]
        fn arbitrary_tokens_never_panic(s in ".{0,200}") {
            let c = IteratorCodec::new();
            let _ = c.decode(&s, 0);
        }
    }
}
