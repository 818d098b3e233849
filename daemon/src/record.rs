//! The host's record: what flows between pipeline stages.

use bytes::Bytes;
pub use sluice_plugin_api::Position;

/// One record inside the daemon. Cloning is cheap (`Bytes` are reference counted).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    /// The payload.
    pub data: Bytes,
    /// The partition key (UTF-8 by API contract; 1–256 bytes on the Kinesis API).
    pub partition_key: Bytes,
    /// Arrival time, ms since the Unix epoch.
    pub arrival_ms: i64,
    /// Number in its source: host-assigned, or [`position_key`] of its position.
    pub sequence: u64,
    /// Replay position, for records of a replayable source (and their transform outputs).
    pub position: Option<Position>,
    /// Key/value attributes set by transforms (`partitionKeyFromLambda` keys).
    pub attrs: Vec<(String, String)>,
}

/// Partitions a position may name (16 bits, one value kept free).
pub const MAX_PARTITIONS: u32 = 0xFFFF;
/// Offsets a position may hold (48 bits).
pub const MAX_OFFSET: u64 = (1 << 48) - 1;

/// The `u64` the intent log, object ids and error documents use for a position: the
/// partition plus one in the top 16 bits, the offset below. It is the layout intent logs had
/// before ABI 1.1 (when only the bundled stream source replayed), kept so that recovery
/// still matches after an upgrade. Positions past [`MAX_PARTITIONS`]/[`MAX_OFFSET`] are refused at the ABI.
pub fn position_key(p: Position) -> u64 {
    (u64::from(p.partition) + 1) << 48 | (p.offset & MAX_OFFSET)
}

/// The position a [`position_key`] stands for (`None` for a host-assigned number).
pub fn key_position(k: u64) -> Option<Position> {
    let tag = (k >> 48) as u32;
    (tag > 0).then(|| Position {
        partition: tag - 1,
        offset: k & MAX_OFFSET,
    })
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
