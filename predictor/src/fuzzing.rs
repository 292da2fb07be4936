//! The fuzz harnesses: one function per target in `predictor/fuzz`, each fed
//! arbitrary bytes by libFuzzer (`make fuzz`) and replayed over the committed
//! corpus by an ordinary test (`tests/fuzz_corpus.rs`). None may panic on any
//! input; their `assert!`s are the properties the fuzzer hunts for breaking
//! (a harness that only calls a function finds only its panics).

use std::sync::LazyLock;

use bytes::Bytes;
use hone_crds::contract::ModelCard;
use serde_json::Value;

use crate::head::Head;
use crate::oip::{self, InferResponse, OUTPUTS, REGRESSION_OUTPUTS};
use crate::preprocess::{ImageLimits, Preprocessor, Sample, decode_image};
use hone_crds::modelversion::{Signature, Task};

/// Image limits of the image targets: small, so a decode stays fast.
const IMAGE_LIMITS: ImageLimits = ImageLimits { max_dimension: 512, max_pixels: 1 << 18 };
/// Sample shape the `oip_tensor` target decodes against.
const TENSOR_SAMPLE_SHAPE: [i64; 2] = [2, 2];
/// Largest batch the `oip_tensor` target accepts.
const TENSOR_MAX_BATCH: usize = 64;
/// Parts the `multipart` target accepts: few, so the limit is reached often.
const MULTIPART_MAX_PARTS: usize = 4;
/// Class names of the `response` target; its first byte picks how many.
const RESPONSE_CLASSES: [&str; 4] = ["cat", "dog", "", "a:b"];

/// An RGB image model taking 3x8x8.
const IMAGE_CARD: &str = r#"{"formatVersion":1,"input":"image","signature":{"inputShape":[3,8,8],
    "classes":["a"],"preprocessing":{"mean":[0.5,0.5,0.5],"std":[0.25,0.25,0.25]}}}"#;
/// A tabular model with two named features.
const TABULAR_CARD: &str = r#"{"formatVersion":1,"input":"tabular","featureNames":["x","y"],
    "signature":{"inputShape":[2],"classes":["a"],"preprocessing":{"mean":[1.0,2.0],"std":[2.0,4.0]}}}"#;

/// `None` only if a card above stops parsing, which a unit test rules out.
fn preprocessor(card: &str) -> Option<Preprocessor> {
    let card: ModelCard = serde_json::from_str(card).ok()?;
    Some(Preprocessor::new(&card, IMAGE_LIMITS.max_dimension, IMAGE_LIMITS.max_pixels))
}

static IMAGE_PREPROCESSOR: LazyLock<Option<Preprocessor>> = LazyLock::new(|| preprocessor(IMAGE_CARD));
static TABULAR_PREPROCESSOR: LazyLock<Option<Preprocessor>> = LazyLock::new(|| preprocessor(TABULAR_CARD));

/// Any bytes posted to `/predict` of an image model: decode within the
/// limits, resize, normalise.
pub fn image_decode(data: &[u8]) {
    if let Ok(image) = decode_image(data, IMAGE_LIMITS) {
        let (w, h) = (image.width(), image.height());
        assert!(
            w >= 1
                && h >= 1
                && w <= IMAGE_LIMITS.max_dimension
                && h <= IMAGE_LIMITS.max_dimension
                && u64::from(w) * u64::from(h) <= IMAGE_LIMITS.max_pixels,
            "decoded a {w}x{h} image past the limits"
        );
    }
    let Some(pre) = IMAGE_PREPROCESSOR.as_ref() else { return };
    if let Ok(sample) = pre.image(data) {
        check_sample(&sample, pre.sample_len(), 3);
        assert!(
            sample.drift.iter().all(|d| (0.0..=1.0).contains(d)),
            "channel means outside [0, 1]: {:?}",
            sample.drift
        );
    }
}

/// Any body posted to `/v2/models/{name}/infer`: JSON, or JSON + binary
/// tensors when the first byte is odd (its half is the JSON part's length).
pub fn oip_tensor(data: &[u8]) {
    let (header, body) = match data.split_first() {
        Some((&h, rest)) if h % 2 == 1 => (Some(usize::from(h / 2).min(rest.len())), rest),
        Some((_, rest)) => (None, rest),
        None => return,
    };
    let Ok((request, mut binary)) = oip::parse_request(body, header) else { return };
    let _ = oip::requested_outputs(&request, &Head::classification(3));
    let sample_len = TENSOR_SAMPLE_SHAPE.iter().product::<i64>() as usize;
    for input in &request.inputs {
        let before = binary.len();
        if let Ok((values, batch)) =
            oip::decode_input(input, &mut binary, &TENSOR_SAMPLE_SHAPE, TENSOR_MAX_BATCH)
        {
            assert!((1..=TENSOR_MAX_BATCH).contains(&batch), "batch {batch} accepted");
            assert_eq!(values.len(), batch * sample_len, "values for a batch of {batch}");
            assert!(values.iter().all(|v| v.is_finite()), "non-finite values accepted");
        }
        assert!(binary.len() <= before, "binary data grew");
    }
}

/// Any `multipart/form-data` body posted to `/predict`: the first line is
/// the boundary (as the `Content-Type` header would give it), the rest the body.
pub fn multipart(data: &[u8]) {
    let Some(newline) = data.iter().position(|&b| b == b'\n') else { return };
    let boundary = String::from_utf8_lossy(&data[..newline]).into_owned();
    let body = &data[newline + 1..];
    if let Ok(parts) =
        crate::serve::multipart_files(Bytes::copy_from_slice(body), boundary, MULTIPART_MAX_PARTS)
    {
        assert!(
            (1..=MULTIPART_MAX_PARTS).contains(&parts.len()),
            "{} parts returned (limit {MULTIPART_MAX_PARTS})",
            parts.len()
        );
        let total: usize = parts.iter().map(Bytes::len).sum();
        assert!(total <= body.len(), "{total} bytes of parts from a {}-byte body", body.len());
    }
}

/// Any JSON feature row posted to `/predict` of a tabular model.
pub fn tabular_row(data: &[u8]) {
    let Ok(row) = serde_json::from_slice::<Value>(data) else { return };
    let Some(pre) = TABULAR_PREPROCESSOR.as_ref() else { return };
    if let Ok(sample) = pre.row(&row) {
        check_sample(&sample, 2, 2);
        assert!(sample.drift.iter().all(|d| d.is_finite()), "non-finite raw features");
        // The raw values standardise to the same sample, whatever form the row had.
        assert_eq!(pre.standardize(sample.drift.clone()).ok(), Some(sample), "row {row}");
    }
}

fn check_sample(sample: &Sample, values: usize, drift: usize) {
    assert_eq!(sample.values.len(), values, "values in a sample");
    assert_eq!(sample.drift.len(), drift, "drift features in a sample");
    assert!(sample.values.iter().all(|v| v.is_finite()), "non-finite model input");
}

/// An infer request's outputs rendered for any logits (NaN and infinities
/// included): byte 0 picks the number of classes (low 4 bits) and the task
/// (high bits), byte 1 the number of logit bytes that follow, the rest is
/// the request's JSON. The JSON part always
/// parses back, every tensor holds as many values as its shape says, and
/// the binary part is exactly the declared `binary_data_size`s.
pub fn response(data: &[u8]) {
    let [class_byte, logit_bytes, rest @ ..] = data else { return };
    let task = Task::ALL[usize::from(class_byte >> 4) % Task::ALL.len()];
    let count =
        if task == Task::Binary { 2 } else { 1 + usize::from(*class_byte & 0x0f) % RESPONSE_CLASSES.len() };
    let classes: Vec<String> = RESPONSE_CLASSES[..count].iter().map(|&c| c.into()).collect();
    let model = Head::new(&Signature {
        input_shape: vec![1],
        classes: classes.clone(),
        task,
        ..Signature::default()
    });
    let (logit_bytes, json) = rest.split_at(usize::from(*logit_bytes).min(rest.len()));
    // Whole rows only, as the model answers.
    let row_bytes = 4 * model.outputs();
    let logits: Vec<f32> = logit_bytes[..logit_bytes.len() / row_bytes * row_bytes]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let Ok((request, _)) = oip::parse_request(json, None) else { return };
    let Ok(wanted) = oip::requested_outputs(&request, &model) else { return };
    let head = InferResponse {
        model_name: "m".into(),
        model_version: "1".into(),
        id: request.id.clone(),
        outputs: vec![],
    };
    let built = oip::build_response(head, &wanted, &logits, &model, &classes);
    assert!(built.is_ok(), "the response did not encode: {built:?}");
    let Ok((json, binary)) = built else { return };
    let parsed = serde_json::from_slice::<Value>(&json);
    assert!(parsed.is_ok(), "the response JSON does not parse back: {parsed:?}");
    let Ok(parsed) = parsed else { return };
    let outputs = parsed["outputs"].as_array().map(Vec::as_slice).unwrap_or_default();
    assert_eq!(outputs.len(), wanted.len(), "outputs answered: {parsed}");
    assert_eq!(parsed.get("id").and_then(Value::as_str), request.id.as_deref(), "id echoed");
    let mut rest = binary.as_slice();
    for output in outputs {
        rest = check_output(output, rest);
    }
    assert!(rest.is_empty(), "{} binary bytes beyond the declared sizes", rest.len());
}

/// Checks one response output against its shape; returns the binary data
/// after its own.
fn check_output<'a>(output: &Value, binary: &'a [u8]) -> &'a [u8] {
    assert!(
        OUTPUTS.iter().chain(&REGRESSION_OUTPUTS).any(|&o| output["name"] == o),
        "unknown output {output}"
    );
    let dims: Vec<usize> = output["shape"]
        .as_array()
        .map(|s| s.iter().filter_map(Value::as_u64).map(|d| d as usize).collect())
        .unwrap_or_default();
    assert_eq!(dims.len(), 2, "shape of {output}");
    let count: usize = dims.iter().product();
    let datatype = output["datatype"].as_str().unwrap_or_default();
    let Some(size) = output["parameters"]["binary_data_size"].as_u64() else {
        let data = output["data"].as_array().map_or(usize::MAX, Vec::len);
        assert_eq!(data, count, "JSON values of {output}");
        return binary;
    };
    assert!(output.get("data").is_none(), "both data and binary_data_size in {output}");
    let size = usize::try_from(size).unwrap_or(usize::MAX);
    assert!(size <= binary.len(), "{size} binary bytes declared, {} left", binary.len());
    let (own, rest) = binary.split_at(size.min(binary.len()));
    let elements = match datatype {
        "FP32" => (own.len() % 4 == 0).then_some(own.len() / 4),
        "BYTES" => length_prefixed(own),
        _ => None,
    };
    assert_eq!(elements, Some(count), "binary elements of {output}");
    rest
}

/// Elements of Triton's BYTES encoding (each a u32 LE length, then the
/// bytes); `None` when the data does not split into whole elements.
fn length_prefixed(mut data: &[u8]) -> Option<usize> {
    let mut count = 0;
    while let [a, b, c, d, rest @ ..] = data {
        let len = u32::from_le_bytes([*a, *b, *c, *d]) as usize;
        data = rest.get(len..)?;
        count += 1;
    }
    data.is_empty().then_some(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_cards_parse() {
        assert!(IMAGE_PREPROCESSOR.is_some());
        assert!(TABULAR_PREPROCESSOR.is_some());
    }

    #[test]
    fn length_prefixed_counts_whole_elements_only() {
        assert_eq!(length_prefixed(b""), Some(0));
        assert_eq!(length_prefixed(b"\x01\0\0\0a\0\0\0\0"), Some(2));
        assert_eq!(length_prefixed(b"\x02\0\0\0a"), None);
        assert_eq!(length_prefixed(b"\0\0"), None);
    }

    #[test]
    fn a_binary_classification_response_checks_out() {
        let request =
            br#"{"id":"7","inputs":[],"outputs":[{"name":"logits","parameters":{"binary_data":true}},
            {"name":"probabilities","parameters":{"classification":2,"binary_data":true}}]}"#;
        // Two classes, two rows of logits, one of them NaN.
        let mut data = vec![1, 16];
        for v in [1.0f32, f32::NAN, -3.0, f32::INFINITY] {
            data.extend_from_slice(&v.to_le_bytes());
        }
        data.extend_from_slice(request);
        response(&data);
    }

    #[test]
    #[should_panic(expected = "binary elements of")]
    fn a_binary_size_that_disagrees_with_the_shape_is_caught() {
        let output = serde_json::json!({"name": "logits", "shape": [1, 2], "datatype": "FP32",
            "parameters": {"binary_data_size": 4}});
        check_output(&output, &[0; 4]);
    }

    #[test]
    #[should_panic(expected = "JSON values of")]
    fn json_data_that_disagrees_with_the_shape_is_caught() {
        let output = serde_json::json!({"name": "logits", "shape": [2, 2], "datatype": "FP32",
            "data": [1.0, 2.0]});
        check_output(&output, &[]);
    }
}
