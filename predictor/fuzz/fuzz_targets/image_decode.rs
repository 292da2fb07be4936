//! Any bytes posted to `/predict` of an image model (`hone_predictor::fuzzing::image_decode`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| hone_predictor::fuzzing::image_decode(data));
