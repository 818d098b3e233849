//! Typed request shapes of both APIs: one struct per operation input (and per nested
//! structure), so a handler reads fields, not JSON paths. Reading a body into its shape is
//! AWS's type check: members are read in the shape's order, a member of the wrong JSON
//! type is the `SerializationException` AWS's Java front end answers (its words), `null`
//! counts as absent, unknown members are ignored. Constraint validation (lengths,
//! patterns, ranges: `ValidationException`) then reads the same typed fields.

use super::error::ApiError;
use super::request::{blob_error, not_a_list, not_a_structure, wrong_type};
use serde_json::Value;

/// A member type: reads one JSON value, with AWS's type errors.
pub trait Member: Sized {
    /// The value, or AWS's `SerializationException` for a value of another type.
    fn read(v: &Value) -> Result<Self, ApiError>;
}

impl Member for String {
    fn read(v: &Value) -> Result<Self, ApiError> {
        match v {
            Value::String(s) => Ok(s.clone()),
            other => Err(wrong_type(other, "an String")),
        }
    }
}

/// An `Integer` member; out-of-range numbers are clamped, as AWS clamps them.
impl Member for i64 {
    fn read(v: &Value) -> Result<Self, ApiError> {
        match v {
            Value::Number(n) => Ok(match n.as_i64() {
                Some(i) => i.clamp(i64::from(i32::MIN), i64::from(i32::MAX)),
                None if n.as_f64().is_some_and(|f| f > 0.0) => i64::from(i32::MAX),
                None => i64::from(i32::MIN),
            }),
            other => Err(wrong_type(other, "an Integer")),
        }
    }
}

/// A list of strings.
impl Member for Vec<String> {
    fn read(v: &Value) -> Result<Self, ApiError> {
        match v {
            Value::Array(a) => a.iter().map(String::read).collect(),
            other => Err(not_a_list(other)),
        }
    }
}

/// A map of strings to strings, sorted by key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StrMap(pub Vec<(String, String)>);

impl Member for StrMap {
    fn read(v: &Value) -> Result<Self, ApiError> {
        match v {
            Value::Object(m) => {
                let mut out = m
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), String::read(v)?)))
                    .collect::<Result<Vec<_>, ApiError>>()?;
                out.sort_unstable();
                Ok(StrMap(out))
            }
            _ => Err(ApiError::serialization("Expected map or null")),
        }
    }
}

impl StrMap {
    /// The pairs as borrowed strings.
    pub fn pairs(&self) -> Vec<(&str, &str)> {
        self.0
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }
}

/// A `Blob` member: base64 in JSON, decoded (AWS's decoder errors, typo included).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Blob(pub Vec<u8>);

impl Member for Blob {
    fn read(v: &Value) -> Result<Self, ApiError> {
        use base64::Engine as _;
        match v {
            Value::String(s) => base64::engine::general_purpose::STANDARD
                .decode(s)
                .map(Blob)
                .map_err(|_| ApiError::serialization(blob_error(s))),
            other => Err(wrong_type(other, "a Blob")),
        }
    }
}

/// A `Timestamp` member: seconds since the epoch (a number, or a number in a string).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timestamp(pub f64);

impl Member for Timestamp {
    fn read(v: &Value) -> Result<Self, ApiError> {
        match v {
            Value::Number(n) => Ok(Timestamp(n.as_f64().unwrap_or(0.0))),
            // AWS's words do not repeat the value.
            Value::String(s) => s.parse::<f64>().map(Timestamp).map_err(|_| {
                ApiError::serialization(
                    "class java.lang.String can not be converted to milliseconds since epoch",
                )
            }),
            other => Err(wrong_type(other, "milliseconds since epoch")),
        }
    }
}

/// A structure kept as JSON: the Firehose destination and source configurations, which
/// DescribeDeliveryStream echoes back; the handler checks the members it reads.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Doc(pub Value);

impl Member for Doc {
    fn read(v: &Value) -> Result<Self, ApiError> {
        match v {
            Value::Object(_) => Ok(Doc(v.clone())),
            other => Err(not_a_structure(other)),
        }
    }
}

impl Member for bool {
    fn read(v: &Value) -> Result<Self, ApiError> {
        match v {
            Value::Bool(b) => Ok(*b),
            other => Err(wrong_type(other, "an Boolean")),
        }
    }
}

/// A list of structures, each read into its own shape.
impl<T: Shape> Member for Vec<T> {
    fn read(v: &Value) -> Result<Self, ApiError> {
        match v {
            Value::Array(a) => a.iter().map(T::read_shape).collect(),
            other => Err(not_a_list(other)),
        }
    }
}

/// A structure shape (a request, or a structure inside one).
pub trait Shape: Sized {
    /// Reads a JSON object into the shape (type checks only).
    fn read_shape(v: &Value) -> Result<Self, ApiError>;
}

/// Declares a shape: a struct of optional members, each read from its AWS member name in
/// declaration order (AWS's type-check order).
macro_rules! shape {
    ($(#[$m:meta])* $name:ident { $($(#[$fm:meta])* $field:ident : $ty:ty = $json:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Default)]
        pub struct $name {
            $($(#[$fm])* pub $field: Option<$ty>,)*
        }

        impl Shape for $name {
            fn read_shape(v: &Value) -> Result<Self, ApiError> {
                let obj = match v {
                    Value::Object(m) => m,
                    other => return Err(not_a_structure(other)),
                };
                #[allow(unused_mut)]
                let mut out = $name::default();
                $(
                    if let Some(x) = obj.get($json).filter(|x| !x.is_null()) {
                        out.$field = Some(<$ty as Member>::read(x)?);
                    }
                )*
                let _ = obj;
                Ok(out)
            }
        }

        impl Member for $name {
            fn read(v: &Value) -> Result<Self, ApiError> {
                <$name as Shape>::read_shape(v)
            }
        }
    };
}

// ---- Kinesis Data Streams ----

shape!(
    /// CreateStream.
    CreateStreamInput {
        stream_name: String = "StreamName",
        shard_count: i64 = "ShardCount",
        stream_mode_details: StreamModeDetails = "StreamModeDetails",
        tags: StrMap = "Tags",
        warm_throughput_mibps: i64 = "WarmThroughputMiBps",
        max_record_size_kib: i64 = "MaxRecordSizeInKiB",
    }
);

shape!(
    /// `StreamModeDetails`.
    StreamModeDetails {
        stream_mode: String = "StreamMode",
    }
);

shape!(
    /// Every operation that names a stream and nothing else (DescribeStreamSummary).
    StreamRef {
        stream_name: String = "StreamName",
        stream_arn: String = "StreamARN",
    }
);

shape!(
    /// DeleteStream.
    DeleteStreamInput {
        stream_name: String = "StreamName",
        enforce_consumer_deletion: bool = "EnforceConsumerDeletion",
        stream_arn: String = "StreamARN",
    }
);

shape!(
    /// ListStreams.
    ListStreamsInput {
        limit: i64 = "Limit",
        exclusive_start_stream_name: String = "ExclusiveStartStreamName",
        next_token: String = "NextToken",
    }
);

shape!(
    /// DescribeStream.
    DescribeStreamInput {
        stream_name: String = "StreamName",
        stream_arn: String = "StreamARN",
        limit: i64 = "Limit",
        exclusive_start_shard_id: String = "ExclusiveStartShardId",
    }
);

shape!(
    /// ListShards.
    ListShardsInput {
        stream_name: String = "StreamName",
        stream_arn: String = "StreamARN",
        next_token: String = "NextToken",
        exclusive_start_shard_id: String = "ExclusiveStartShardId",
        max_results: i64 = "MaxResults",
        stream_creation_timestamp: Timestamp = "StreamCreationTimestamp",
        shard_filter: ShardFilter = "ShardFilter",
    }
);

shape!(
    /// `ShardFilter` of ListShards.
    ShardFilter {
        kind: String = "Type",
        shard_id: String = "ShardId",
        timestamp: Timestamp = "Timestamp",
    }
);

shape!(
    /// SplitShard.
    SplitShardInput {
        stream_name: String = "StreamName",
        shard_to_split: String = "ShardToSplit",
        new_starting_hash_key: String = "NewStartingHashKey",
        stream_arn: String = "StreamARN",
    }
);

shape!(
    /// MergeShards.
    MergeShardsInput {
        stream_name: String = "StreamName",
        shard_to_merge: String = "ShardToMerge",
        adjacent_shard_to_merge: String = "AdjacentShardToMerge",
        stream_arn: String = "StreamARN",
    }
);

shape!(
    /// UpdateShardCount.
    UpdateShardCountInput {
        stream_name: String = "StreamName",
        target_shard_count: i64 = "TargetShardCount",
        scaling_type: String = "ScalingType",
        stream_arn: String = "StreamARN",
    }
);

shape!(
    /// PutRecord, and one entry of PutRecords (which has no stream members).
    PutRecordInput {
        stream_name: String = "StreamName",
        stream_arn: String = "StreamARN",
        data: Blob = "Data",
        partition_key: String = "PartitionKey",
        explicit_hash_key: String = "ExplicitHashKey",
        sequence_number_for_ordering: String = "SequenceNumberForOrdering",
    }
);

shape!(
    /// PutRecords.
    PutRecordsInput {
        records: Vec<PutRecordInput> = "Records",
        stream_name: String = "StreamName",
        stream_arn: String = "StreamARN",
    }
);

shape!(
    /// GetShardIterator.
    GetShardIteratorInput {
        stream_name: String = "StreamName",
        stream_arn: String = "StreamARN",
        shard_id: String = "ShardId",
        shard_iterator_type: String = "ShardIteratorType",
        starting_sequence_number: String = "StartingSequenceNumber",
        timestamp: Timestamp = "Timestamp",
    }
);

shape!(
    /// GetRecords.
    GetRecordsInput {
        shard_iterator: String = "ShardIterator",
        limit: i64 = "Limit",
        stream_arn: String = "StreamARN",
    }
);

shape!(
    /// AddTagsToStream, TagResource (with `ResourceARN`), RegisterStreamConsumer's tags.
    TagsInput {
        tags: StrMap = "Tags",
        stream_name: String = "StreamName",
        stream_arn: String = "StreamARN",
        resource_arn: String = "ResourceARN",
    }
);

shape!(
    /// RemoveTagsFromStream, UntagResource.
    TagKeysInput {
        tag_keys: Vec<String> = "TagKeys",
        stream_name: String = "StreamName",
        stream_arn: String = "StreamARN",
        resource_arn: String = "ResourceARN",
    }
);

shape!(
    /// ListTagsForStream.
    ListTagsInput {
        limit: i64 = "Limit",
        exclusive_start_tag_key: String = "ExclusiveStartTagKey",
        stream_name: String = "StreamName",
        stream_arn: String = "StreamARN",
    }
);

shape!(
    /// ListTagsForResource, Get/DeleteResourcePolicy, PutResourcePolicy (with `Policy`).
    ResourceInput {
        resource_arn: String = "ResourceARN",
        policy: String = "Policy",
    }
);

shape!(
    /// Increase/DecreaseStreamRetentionPeriod.
    RetentionInput {
        retention_period_hours: i64 = "RetentionPeriodHours",
        stream_name: String = "StreamName",
        stream_arn: String = "StreamARN",
    }
);

shape!(
    /// Enable/DisableEnhancedMonitoring.
    MonitoringInput {
        shard_level_metrics: Vec<String> = "ShardLevelMetrics",
        stream_name: String = "StreamName",
        stream_arn: String = "StreamARN",
    }
);

shape!(
    /// Start/StopStreamEncryption.
    EncryptionInput {
        encryption_type: String = "EncryptionType",
        key_id: String = "KeyId",
        stream_name: String = "StreamName",
        stream_arn: String = "StreamARN",
    }
);

shape!(
    /// UpdateStreamMode.
    UpdateStreamModeInput {
        stream_arn: String = "StreamARN",
        stream_mode_details: StreamModeDetails = "StreamModeDetails",
        warm_throughput_mibps: i64 = "WarmThroughputMiBps",
    }
);

shape!(
    /// Register/Describe/Deregister/ListStreamConsumers.
    ConsumerInput {
        stream_arn: String = "StreamARN",
        consumer_name: String = "ConsumerName",
        consumer_arn: String = "ConsumerARN",
        tags: StrMap = "Tags",
        max_results: i64 = "MaxResults",
        next_token: String = "NextToken",
        /// ListStreamConsumers' (type-checked only).
        stream_creation_timestamp: Timestamp = "StreamCreationTimestamp",
    }
);

shape!(
    /// `MinimumThroughputBillingCommitment` of UpdateAccountSettings.
    Commitment {
        status: String = "Status",
    }
);

shape!(
    /// UpdateAccountSettings.
    UpdateAccountSettingsInput {
        commitment: Commitment = "MinimumThroughputBillingCommitment",
    }
);

shape!(
    /// UpdateMaxRecordSize.
    UpdateMaxRecordSizeInput {
        stream_arn: String = "StreamARN",
        max_record_size_kib: i64 = "MaxRecordSizeInKiB",
    }
);

shape!(
    /// UpdateStreamWarmThroughput.
    UpdateWarmThroughputInput {
        stream_arn: String = "StreamARN",
        stream_name: String = "StreamName",
        warm_throughput_mibps: i64 = "WarmThroughputMiBps",
    }
);

shape!(
    /// `StartingPosition` of SubscribeToShard.
    StartingPosition {
        kind: String = "Type",
        sequence_number: String = "SequenceNumber",
        timestamp: Timestamp = "Timestamp",
    }
);

shape!(
    /// SubscribeToShard.
    SubscribeToShardInput {
        consumer_arn: String = "ConsumerARN",
        shard_id: String = "ShardId",
        starting_position: StartingPosition = "StartingPosition",
    }
);

// ---- Firehose ----

shape!(
    /// A Firehose `Record`.
    FirehoseRecord {
        data: Blob = "Data",
    }
);

shape!(
    /// PutRecord and PutRecordBatch.
    FirehosePutInput {
        delivery_stream_name: String = "DeliveryStreamName",
        record: FirehoseRecord = "Record",
        records: Vec<FirehoseRecord> = "Records",
    }
);

shape!(
    /// A Firehose `Tag`.
    FirehoseTag {
        key: String = "Key",
        value: String = "Value",
    }
);

shape!(
    /// CreateDeliveryStream.
    CreateDeliveryStreamInput {
        delivery_stream_name: String = "DeliveryStreamName",
        delivery_stream_type: String = "DeliveryStreamType",
        kinesis_stream_source_configuration: Doc = "KinesisStreamSourceConfiguration",
        encryption: Doc = "DeliveryStreamEncryptionConfigurationInput",
        s3_destination_configuration: Doc = "S3DestinationConfiguration",
        extended_s3_destination_configuration: Doc = "ExtendedS3DestinationConfiguration",
        redshift: Doc = "RedshiftDestinationConfiguration",
        elasticsearch: Doc = "ElasticsearchDestinationConfiguration",
        opensearch: Doc = "AmazonopensearchserviceDestinationConfiguration",
        splunk: Doc = "SplunkDestinationConfiguration",
        http_endpoint: Doc = "HttpEndpointDestinationConfiguration",
        opensearch_serverless: Doc = "AmazonOpenSearchServerlessDestinationConfiguration",
        snowflake: Doc = "SnowflakeDestinationConfiguration",
        iceberg: Doc = "IcebergDestinationConfiguration",
        tags: Vec<FirehoseTag> = "Tags",
    }
);

shape!(
    /// DescribeDeliveryStream.
    DescribeDeliveryStreamInput {
        delivery_stream_name: String = "DeliveryStreamName",
        limit: i64 = "Limit",
        exclusive_start_destination_id: String = "ExclusiveStartDestinationId",
    }
);

shape!(
    /// ListDeliveryStreams.
    ListDeliveryStreamsInput {
        limit: i64 = "Limit",
        delivery_stream_type: String = "DeliveryStreamType",
        exclusive_start_delivery_stream_name: String = "ExclusiveStartDeliveryStreamName",
    }
);

shape!(
    /// DeleteDeliveryStream.
    DeleteDeliveryStreamInput {
        delivery_stream_name: String = "DeliveryStreamName",
        allow_force_delete: bool = "AllowForceDelete",
    }
);

shape!(
    /// UpdateDestination.
    UpdateDestinationInput {
        delivery_stream_name: String = "DeliveryStreamName",
        current_delivery_stream_version_id: String = "CurrentDeliveryStreamVersionId",
        destination_id: String = "DestinationId",
        s3_destination_update: Doc = "S3DestinationUpdate",
        extended_s3_destination_update: Doc = "ExtendedS3DestinationUpdate",
        redshift: Doc = "RedshiftDestinationUpdate",
        elasticsearch: Doc = "ElasticsearchDestinationUpdate",
        opensearch: Doc = "AmazonopensearchserviceDestinationUpdate",
        splunk: Doc = "SplunkDestinationUpdate",
        http_endpoint: Doc = "HttpEndpointDestinationUpdate",
        opensearch_serverless: Doc = "AmazonOpenSearchServerlessDestinationUpdate",
        snowflake: Doc = "SnowflakeDestinationUpdate",
        iceberg: Doc = "IcebergDestinationUpdate",
    }
);

shape!(
    /// TagDeliveryStream.
    TagDeliveryStreamInput {
        delivery_stream_name: String = "DeliveryStreamName",
        tags: Vec<FirehoseTag> = "Tags",
    }
);

shape!(
    /// UntagDeliveryStream.
    UntagDeliveryStreamInput {
        delivery_stream_name: String = "DeliveryStreamName",
        tag_keys: Vec<String> = "TagKeys",
    }
);

shape!(
    /// ListTagsForDeliveryStream.
    ListTagsForDeliveryStreamInput {
        delivery_stream_name: String = "DeliveryStreamName",
        exclusive_start_tag_key: String = "ExclusiveStartTagKey",
        limit: i64 = "Limit",
    }
);

shape!(
    /// StartDeliveryStreamEncryption, StopDeliveryStreamEncryption.
    DeliveryStreamEncryptionInput {
        delivery_stream_name: String = "DeliveryStreamName",
        encryption: Doc = "DeliveryStreamEncryptionConfigurationInput",
    }
);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn members_are_typed_with_aws_type_errors() {
        let r = PutRecordInput::read_shape(
            &json!({"StreamName": "s", "Data": "aGk=", "PartitionKey": "k", "Other": 1}),
        )
        .unwrap();
        assert_eq!(r.stream_name.as_deref(), Some("s"));
        assert_eq!(r.data, Some(Blob(b"hi".to_vec())));
        assert_eq!(r.explicit_hash_key, None);
        let e = PutRecordInput::read_shape(&json!({"StreamName": true})).unwrap_err();
        assert_eq!(
            e.message,
            "class java.lang.Boolean can not be converted to an String"
        );
        let e = ListStreamsInput::read_shape(&json!({"Limit": "3"})).unwrap_err();
        assert_eq!(
            e.message,
            "class java.lang.String can not be converted to an Integer"
        );
        assert_eq!(
            ListStreamsInput::read_shape(&json!({"Limit": 1e20}))
                .unwrap()
                .limit,
            Some(i64::from(i32::MAX))
        );
        let e = PutRecordsInput::read_shape(&json!({"Records": [{"Data": 5}]})).unwrap_err();
        assert!(
            e.message.contains("can not be converted to a Blob"),
            "{}",
            e.message
        );
        let e = PutRecordsInput::read_shape(&json!({"Records": [[1]]})).unwrap_err();
        assert_eq!(e.message, "Start of list found where not expected");
        let t = TagsInput::read_shape(&json!({"Tags": {"b": "2", "a": "1"}})).unwrap();
        assert_eq!(t.tags.unwrap().pairs(), [("a", "1"), ("b", "2")]);
        assert!(TagsInput::read_shape(&json!({"Tags": {"a": 1}})).is_err());
        // null is absent
        assert_eq!(
            StreamRef::read_shape(&json!({"StreamName": null}))
                .unwrap()
                .stream_name,
            None
        );
    }
}
