//! Variant and sticky header values and a request line against a config (`hone_router::fuzzing::headers`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| hone_router::fuzzing::headers(data));
