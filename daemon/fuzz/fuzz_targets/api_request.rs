//! `cargo fuzz run api_request` (from daemon/): arbitrary bodies for every Kinesis and
//! Firehose operation.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // One byte picks the operation (one past each list: an unknown one), the rest is the body.
    if let Some((&first, body)) = data.split_first() {
        let (kinesis, firehose) = (
            sluiced::api::KINESIS_OPERATIONS,
            sluiced::api::FIREHOSE_OPERATIONS,
        );
        let i = first as usize % (kinesis.len() + firehose.len() + 2);
        if i <= kinesis.len() {
            let op = kinesis.get(i).copied().unwrap_or("Nope");
            sluiced::api::fuzzing::dispatch(op, body);
        } else {
            let op = firehose.get(i - kinesis.len() - 1).copied().unwrap_or("Nope");
            sluiced::api::fuzzing::dispatch_firehose(op, body);
        }
    }
});
