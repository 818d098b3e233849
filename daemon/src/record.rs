//! The host's record: what flows between pipeline stages.

use bytes::Bytes;

/// One record inside the daemon. Cloning is cheap (`Bytes` are reference counted).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    /// The payload.
    pub data: Bytes,
    /// The partition key (UTF-8 by API contract; 1–256 bytes on the Kinesis API).
    pub partition_key: Bytes,
    /// Arrival time, ms since the Unix epoch.
    pub arrival_ms: i64,
    /// Position in its source (host-assigned).
    pub sequence: u64,
    /// Key/value attributes set by transforms (`partitionKeyFromLambda` keys).
    pub attrs: Vec<(String, String)>,
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
