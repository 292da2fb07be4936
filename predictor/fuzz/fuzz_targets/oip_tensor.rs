//! Any body posted to `/v2/models/{name}/infer` (`hone_predictor::fuzzing::oip_tensor`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| hone_predictor::fuzzing::oip_tensor(data));
