//! `cargo fuzz run api_request` (from daemon/): arbitrary bodies for every Kinesis operation.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // One byte picks the operation (one past the list: an unknown one), the rest is the body.
    if let Some((&first, body)) = data.split_first() {
        let ops = sluiced::api::KINESIS_OPERATIONS;
        let op = ops.get(first as usize % (ops.len() + 1)).copied().unwrap_or("Nope");
        sluiced::api::fuzzing::dispatch(op, body);
    }
});
