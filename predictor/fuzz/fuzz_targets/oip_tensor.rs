//! Any body posted to `/v2/models/{name}/infer`: JSON or JSON + binary
//! tensors (the first byte picks a header length), parsed and decoded.
#![no_main]

use hone_predictor::oip::{decode_input, parse_request, requested_outputs};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (header, body) = match data.split_first() {
        Some((&h, rest)) if h % 2 == 1 => (Some(usize::from(h / 2).min(rest.len())), rest),
        Some((_, rest)) => (None, rest),
        None => return,
    };
    if let Ok((request, mut binary)) = parse_request(body, header) {
        let _ = requested_outputs(&request, 3);
        for input in &request.inputs {
            let _ = decode_input(input, &mut binary, &[2, 2], 64);
        }
    }
});
