//! Any multipart body posted to `/predict` (`hone_predictor::fuzzing::multipart`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| hone_predictor::fuzzing::multipart(data));
