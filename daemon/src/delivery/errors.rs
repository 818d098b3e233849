//! The Firehose error output: error types, their codes and the error documents written
//! for failed records.

use crate::record::{now_ms, Record};
use base64::Engine as _;

/// Firehose error output types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorType {
    /// A transform failed or rejected the record.
    ProcessingFailed,
    /// The partition keys could not be extracted or rendered.
    PartitioningFailed,
    /// Past `max_active_partitions`.
    ActivePartitionExceeded,
    /// The sink kept failing for longer than `retry_duration`: the whole object is written
    /// under the error prefix instead (its body unchanged).
    DeliveryFailed,
    /// The record does not convert to the pipeline's Parquet schema.
    FormatConversionFailed,
}

impl ErrorType {
    /// The `error-output-type` (also the metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::ProcessingFailed => "processing-failed",
            ErrorType::PartitioningFailed => "partitioning-failed",
            ErrorType::ActivePartitionExceeded => "activePartitionExceeded",
            ErrorType::DeliveryFailed => "delivery-failed",
            ErrorType::FormatConversionFailed => "format-conversion-failed",
        }
    }
    pub(super) fn code(self) -> &'static str {
        match self {
            ErrorType::ProcessingFailed => "Processing.Failed",
            ErrorType::PartitioningFailed => "DynamicPartitioning.MetadataExtractionFailed",
            ErrorType::ActivePartitionExceeded => {
                "DynamicPartitioning.ActivePartitionsLimitExceeded"
            }
            ErrorType::DeliveryFailed => "Delivery.Failed",
            ErrorType::FormatConversionFailed => "DataFormatConversion.MalformedData",
        }
    }
}

/// The error document of a failed record, in Firehose's shape (its bytes base64 in
/// `rawData`, with the error code and message).
pub(super) fn error_doc(pipeline: &str, rec: &Record, etype: ErrorType, message: &str) -> Vec<u8> {
    // A position renders as a Kinesis sequence number of (partition, offset): for the
    // stream sources exactly the record's sequence number in its stream.
    let seq = match rec.position {
        Some(p) => crate::stream::sequence_string(p.partition, p.offset),
        None => rec.sequence.to_string(),
    };
    let now = now_ms();
    serde_json::json!({
        "attemptsMade": 1,
        "arrivalTimestamp": rec.arrival_ms,
        "errorCode": etype.code(),
        "errorMessage": message,
        "attemptEndingTimestamp": now,
        "rawData": base64::engine::general_purpose::STANDARD.encode(&rec.data),
        "sequenceNumber": seq,
        "pipeline": pipeline,
    })
    .to_string()
    .into_bytes()
}
