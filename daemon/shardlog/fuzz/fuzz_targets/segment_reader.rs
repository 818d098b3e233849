//! `cargo fuzz run segment_reader` (from daemon/shardlog): arbitrary bytes as a segment file.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice_shardlog::fuzzing::open_and_read(data));
