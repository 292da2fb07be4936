//! Any bytes posted to `/predict` of an image model: decode, limit, resize, normalise.
#![no_main]

use hone_crds::contract::ModelCard;
use hone_predictor::preprocess::{ImageLimits, Preprocessor, decode_image};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode_image(data, ImageLimits { max_dimension: 512, max_pixels: 1 << 18 });
    let card: ModelCard = match serde_json::from_str(
        r#"{"formatVersion":1,"input":"image","signature":{"inputShape":[3,8,8],"classes":["a"],
            "preprocessing":{"mean":[0.5,0.5,0.5],"std":[0.25,0.25,0.25]}}}"#,
    ) {
        Ok(card) => card,
        Err(_) => return,
    };
    let _ = Preprocessor::new(&card, 512, 1 << 18).image(data);
});
