//! OIP v2 responses for any request and logits (`hone_predictor::fuzzing::response`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| hone_predictor::fuzzing::response(data));
