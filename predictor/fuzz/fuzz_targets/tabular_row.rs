//! Any JSON feature row posted to `/predict` (`hone_predictor::fuzzing::tabular_row`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| hone_predictor::fuzzing::tabular_row(data));
