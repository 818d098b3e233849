//! `cargo fuzz run api_request` (from daemon/): arbitrary bodies for every Kinesis operation.
#![no_main]
const OPS: &[&str] = &[
    "CreateStream", "DeleteStream", "ListStreams", "DescribeStream", "DescribeStreamSummary",
    "ListShards", "PutRecord", "PutRecords", "GetShardIterator", "GetRecords", "Nope",
];
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Some((&first, body)) = data.split_first() {
        sluiced::api::fuzzing::dispatch(OPS[first as usize % OPS.len()], body);
    }
});
