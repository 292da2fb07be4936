//! A streamed request body against the body limit and memory budget (`hone_router::fuzzing::body`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| hone_router::fuzzing::body(data));
