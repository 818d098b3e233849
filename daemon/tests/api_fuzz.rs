//! The API fuzz target's body under proptest: arbitrary and near-valid request bodies for
//! every Kinesis and Firehose operation never panic and never produce a server error.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use sluiced::api::fuzzing::{dispatch, dispatch_firehose};

use sluiced::api::{FIREHOSE_OPERATIONS as FH_OPS, KINESIS_OPERATIONS as OPS};

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        ".{0,40}".prop_map(serde_json::Value::from),
        Just(serde_json::Value::from("events")),
        Just(serde_json::Value::from("eyJuIjoxfQ==")),
        Just(serde_json::Value::from("shardId-000000000001")),
        Just(serde_json::Value::from("TRIM_HORIZON")),
        Just(serde_json::Value::from("lake")),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("StreamName".to_string()),
                    Just("Records".to_string()),
                    Just("Data".to_string()),
                    Just("PartitionKey".to_string()),
                    Just("ExplicitHashKey".to_string()),
                    Just("ShardId".to_string()),
                    Just("ShardIteratorType".to_string()),
                    Just("StartingSequenceNumber".to_string()),
                    Just("Timestamp".to_string()),
                    Just("ShardIterator".to_string()),
                    Just("Limit".to_string()),
                    Just("ShardCount".to_string()),
                    Just("NextToken".to_string()),
                    Just("MaxResults".to_string()),
                    Just("DeliveryStreamName".to_string()),
                    Just("Record".to_string()),
                    Just("ExclusiveStartDeliveryStreamName".to_string()),
                    Just("DeliveryStreamType".to_string()),
                    ".{0,10}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn structured_bodies(op in 0..OPS.len(), v in json_value()) {
        dispatch(OPS[op], v.to_string().as_bytes());
    }

    #[test]
    fn raw_bytes(op in 0..OPS.len(), body in proptest::collection::vec(any::<u8>(), 0..300)) {
        dispatch(OPS[op], &body);
    }

    #[test]
    fn firehose_structured_bodies(op in 0..FH_OPS.len(), v in json_value()) {
        dispatch_firehose(FH_OPS[op], v.to_string().as_bytes());
    }

    #[test]
    fn firehose_raw_bytes(op in 0..FH_OPS.len(), body in proptest::collection::vec(any::<u8>(), 0..300)) {
        dispatch_firehose(FH_OPS[op], &body);
    }
}
