//! Building OIP v2 responses: which outputs the caller asked for, in JSON or
//! as binary tensors, optionally as top-k classification labels.

use serde_json::{Map, Value, json};

use super::{
    InferRequest, InferResponse, OUTPUT_LOGITS, OUTPUT_PROBABILITIES, OUTPUTS, ResponseOutput, softmax_rows,
};
use crate::input::InputError;

/// One output to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputRequest {
    /// `logits` or `probabilities`.
    pub name: &'static str,
    /// Send the values as binary after the JSON part.
    pub binary: bool,
    /// Answer the top `k` classes as `"value:index:label"` strings instead.
    pub classification: Option<usize>,
}

fn flag(params: Option<&Map<String, Value>>, key: &str) -> Result<bool, InputError> {
    match params.and_then(|p| p.get(key)) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(InputError::Json(format!("parameter {key} must be a boolean, got {other}"))),
    }
}

/// The outputs a request asks for (both, when it names none).
pub fn requested_outputs(request: &InferRequest, classes: usize) -> Result<Vec<OutputRequest>, InputError> {
    let binary_default = flag(request.parameters.as_ref(), "binary_data_output")?;
    let Some(outputs) = &request.outputs else {
        return Ok(OUTPUTS
            .into_iter()
            .map(|name| OutputRequest { name, binary: binary_default, classification: None })
            .collect());
    };
    // Each output at most once: the response can never be larger than the
    // model's answer in every form, whatever the request lists.
    if outputs.len() > OUTPUTS.len() {
        return Err(InputError::TooMany { what: "outputs", found: outputs.len(), limit: OUTPUTS.len() });
    }
    if outputs.len() == 2 && outputs[0].name == outputs[1].name {
        return Err(InputError::Unsupported(format!("output {:?} is requested twice", outputs[0].name)));
    }
    outputs
        .iter()
        .map(|o| {
            let name = match o.name.as_str() {
                OUTPUT_LOGITS => OUTPUT_LOGITS,
                OUTPUT_PROBABILITIES => OUTPUT_PROBABILITIES,
                other => {
                    return Err(InputError::Unsupported(format!(
                        "unknown output {other:?}: this model has {OUTPUT_LOGITS:?} and {OUTPUT_PROBABILITIES:?}"
                    )));
                }
            };
            let params = o.parameters.as_ref();
            let binary = binary_default || flag(params, "binary_data")?;
            let classification = match params.and_then(|p| p.get("classification")) {
                None => None,
                Some(k) => match k.as_u64() {
                    Some(k) if k >= 1 => Some((k as usize).min(classes)),
                    _ => return Err(InputError::Json("classification must be a positive integer".into())),
                },
            };
            Ok(OutputRequest { name, binary, classification })
        })
        .collect()
}

/// The JSON part and the binary part (empty when every output is JSON).
pub fn build_response(
    head: InferResponse,
    wanted: &[OutputRequest],
    logits: &[f32],
    classes: &[String],
) -> Result<(Vec<u8>, Vec<u8>), serde_json::Error> {
    let width = classes.len().max(1);
    let batch = (logits.len() / width) as i64;
    let probabilities =
        wanted.iter().any(|w| w.name == OUTPUT_PROBABILITIES).then(|| softmax_rows(logits, width));
    let mut head = head;
    let mut binary = Vec::new();
    for want in wanted {
        let values = match (want.name, &probabilities) {
            (OUTPUT_PROBABILITIES, Some(p)) => p.as_slice(),
            _ => logits,
        };
        let output = match want.classification {
            Some(k) => {
                let labels = top_k_labels(values, classes, k);
                let shape = vec![batch, k as i64];
                if want.binary {
                    let start = binary.len();
                    for label in &labels {
                        binary.extend_from_slice(&(label.len() as u32).to_le_bytes());
                        binary.extend_from_slice(label.as_bytes());
                    }
                    binary_output(want.name, shape, "BYTES", binary.len() - start)
                } else {
                    ResponseOutput {
                        name: want.name.into(),
                        shape,
                        datatype: "BYTES",
                        parameters: None,
                        data: Some(json!(labels)),
                    }
                }
            }
            None => {
                let shape = vec![batch, width as i64];
                if want.binary {
                    let start = binary.len();
                    for v in values {
                        binary.extend_from_slice(&v.to_le_bytes());
                    }
                    binary_output(want.name, shape, "FP32", binary.len() - start)
                } else {
                    ResponseOutput {
                        name: want.name.into(),
                        shape,
                        datatype: "FP32",
                        parameters: None,
                        data: Some(json!(values)),
                    }
                }
            }
        };
        head.outputs.push(output);
    }
    Ok((serde_json::to_vec(&head)?, binary))
}

fn binary_output(name: &str, shape: Vec<i64>, datatype: &'static str, size: usize) -> ResponseOutput {
    let mut parameters = Map::new();
    parameters.insert("binary_data_size".into(), json!(size));
    ResponseOutput { name: name.into(), shape, datatype, parameters: Some(parameters), data: None }
}

/// Triton's classification strings, `"value:index:label"`, best first.
fn top_k_labels(values: &[f32], classes: &[String], k: usize) -> Vec<String> {
    let width = classes.len().max(1);
    let mut out = Vec::new();
    for row in values.chunks(width) {
        let mut order: Vec<usize> = (0..row.len()).collect();
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
        for &i in order.iter().take(k) {
            let label = classes.get(i).map(String::as_str).unwrap_or("");
            out.push(format!("{}:{i}:{label}", row[i]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oip::parse_request;

    fn head() -> InferResponse {
        InferResponse { model_name: "m".into(), model_version: "1".into(), id: None, outputs: vec![] }
    }

    fn classes() -> Vec<String> {
        vec!["a".into(), "b".into()]
    }

    #[test]
    fn default_outputs_are_json_logits_and_probabilities() {
        let (request, _) = parse_request(br#"{"inputs":[]}"#, None).unwrap();
        let wanted = requested_outputs(&request, 2).unwrap();
        let (json, binary) = build_response(head(), &wanted, &[0.0, 0.0], &classes()).unwrap();
        assert!(binary.is_empty());
        let v: Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["outputs"][0]["name"], "logits");
        assert_eq!(v["outputs"][1]["data"], json!([0.5, 0.5]));
        assert_eq!(v["outputs"][1]["shape"], json!([1, 2]));
    }

    #[test]
    fn binary_and_classification_outputs() {
        let body = br#"{"inputs":[],"outputs":[{"name":"logits","parameters":{"binary_data":true}},
            {"name":"probabilities","parameters":{"classification":1}}]}"#;
        let (request, _) = parse_request(body, None).unwrap();
        let wanted = requested_outputs(&request, 2).unwrap();
        let (json, binary) = build_response(head(), &wanted, &[1.0, 3.0], &classes()).unwrap();
        assert_eq!(binary, [1.0f32.to_le_bytes(), 3.0f32.to_le_bytes()].concat());
        let v: Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["outputs"][0]["parameters"]["binary_data_size"], 8);
        let label = v["outputs"][1]["data"][0].as_str().unwrap();
        assert!(label.ends_with(":1:b"), "{label}");
    }

    #[test]
    fn unknown_outputs_are_refused() {
        let (request, _) = parse_request(br#"{"inputs":[],"outputs":[{"name":"features"}]}"#, None).unwrap();
        assert!(requested_outputs(&request, 2).is_err());
    }

    #[test]
    fn repeated_or_too_many_outputs_are_refused() {
        let twice = br#"{"inputs":[],"outputs":[{"name":"logits"},{"name":"logits"}]}"#;
        let (request, _) = parse_request(twice, None).unwrap();
        assert!(matches!(requested_outputs(&request, 2), Err(InputError::Unsupported(_))));
        let many = format!(r#"{{"inputs":[],"outputs":[{}]}}"#, vec![r#"{"name":"logits"}"#; 5000].join(","));
        let (request, _) = parse_request(many.as_bytes(), None).unwrap();
        assert!(matches!(
            requested_outputs(&request, 2),
            Err(InputError::TooMany { found: 5000, limit: 2, .. })
        ));
    }
}
