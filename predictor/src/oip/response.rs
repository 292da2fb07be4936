//! Building OIP v2 responses: which outputs the caller asked for, in JSON or
//! as binary tensors, optionally as top-k classification labels.

use serde_json::{Map, Value, json};

use super::{InferRequest, InferResponse, OUTPUT_PROBABILITIES, ResponseOutput, outputs_of};
use crate::head::Head;
use crate::input::InputError;

/// One output to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputRequest {
    /// `logits` or `probabilities` (classifiers), `values` (regression).
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

/// The outputs a request asks for (all of the model's, when it names none).
pub fn requested_outputs(request: &InferRequest, model: &Head) -> Result<Vec<OutputRequest>, InputError> {
    let names = outputs_of(model);
    let binary_default = flag(request.parameters.as_ref(), "binary_data_output")?;
    let Some(outputs) = &request.outputs else {
        return Ok(names
            .iter()
            .map(|&name| OutputRequest { name, binary: binary_default, classification: None })
            .collect());
    };
    // Each output at most once: the response can never be larger than the
    // model's answer in every form, whatever the request lists.
    if outputs.len() > names.len() {
        return Err(InputError::TooMany { what: "outputs", found: outputs.len(), limit: names.len() });
    }
    if outputs.len() == 2 && outputs[0].name == outputs[1].name {
        return Err(InputError::Unsupported(format!("output {:?} is requested twice", outputs[0].name)));
    }
    outputs
        .iter()
        .map(|o| {
            let Some(&name) = names.iter().find(|&&n| n == o.name) else {
                return Err(InputError::Unsupported(format!(
                    "unknown output {:?}: this model has {}",
                    o.name,
                    names.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(" and ")
                )));
            };
            let params = o.parameters.as_ref();
            let binary = binary_default || flag(params, "binary_data")?;
            let classification = match params.and_then(|p| p.get("classification")) {
                None => None,
                Some(_) if !model.is_classifier() => {
                    return Err(InputError::Unsupported(format!(
                        "classification is for classifiers; this model's task is {}",
                        model.task()
                    )));
                }
                Some(k) => match k.as_u64() {
                    Some(k) if k >= 1 => Some((k as usize).min(model.score_width())),
                    _ => return Err(InputError::Json("classification must be a positive integer".into())),
                },
            };
            Ok(OutputRequest { name, binary, classification })
        })
        .collect()
}

/// The JSON part and the binary part (empty when every output is JSON).
/// `raw` holds whole rows of the model's outputs.
pub fn build_response(
    head: InferResponse,
    wanted: &[OutputRequest],
    raw: &[f32],
    model: &Head,
    classes: &[String],
) -> Result<(Vec<u8>, Vec<u8>), serde_json::Error> {
    let batch = (raw.len() / model.outputs().max(1)) as i64;
    let scores = wanted.iter().any(|w| w.name == OUTPUT_PROBABILITIES).then(|| model.scores(raw));
    let mut head = head;
    let mut binary = Vec::new();
    for want in wanted {
        let (values, width) = match (want.name, &scores) {
            (OUTPUT_PROBABILITIES, Some(p)) => (p.as_slice(), model.score_width()),
            _ => (raw, model.outputs()),
        };
        let output = match want.classification {
            Some(k) => {
                let labels = top_k_labels(values, width, classes, k);
                let shape = vec![batch, k.min(width) as i64];
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

/// Triton's classification strings, `"value:index:label"`, best first,
/// `k` per `width`-wide row (fewer when a row is narrower).
fn top_k_labels(values: &[f32], width: usize, classes: &[String], k: usize) -> Vec<String> {
    let mut out = Vec::new();
    for row in values.chunks(width.max(1)) {
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
    use hone_crds::modelversion::{Signature, Task};

    fn head() -> InferResponse {
        InferResponse { model_name: "m".into(), model_version: "1".into(), id: None, outputs: vec![] }
    }

    fn classes() -> Vec<String> {
        vec!["a".into(), "b".into()]
    }

    fn two_classes() -> Head {
        Head::classification(2)
    }

    fn with_task(task: Task, classes: &[&str]) -> Head {
        Head::new(&Signature {
            input_shape: vec![4],
            classes: classes.iter().map(|c| (*c).to_owned()).collect(),
            task,
            ..Signature::default()
        })
    }

    #[test]
    fn default_outputs_are_json_logits_and_probabilities() {
        let (request, _) = parse_request(br#"{"inputs":[]}"#, None).unwrap();
        let wanted = requested_outputs(&request, &two_classes()).unwrap();
        let (json, binary) =
            build_response(head(), &wanted, &[0.0, 0.0], &two_classes(), &classes()).unwrap();
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
        let wanted = requested_outputs(&request, &two_classes()).unwrap();
        let (json, binary) =
            build_response(head(), &wanted, &[1.0, 3.0], &two_classes(), &classes()).unwrap();
        assert_eq!(binary, [1.0f32.to_le_bytes(), 3.0f32.to_le_bytes()].concat());
        let v: Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["outputs"][0]["parameters"]["binary_data_size"], 8);
        let label = v["outputs"][1]["data"][0].as_str().unwrap();
        assert!(label.ends_with(":1:b"), "{label}");
    }

    #[test]
    fn unknown_outputs_are_refused() {
        let (request, _) = parse_request(br#"{"inputs":[],"outputs":[{"name":"features"}]}"#, None).unwrap();
        assert!(requested_outputs(&request, &two_classes()).is_err());
    }

    #[test]
    fn repeated_or_too_many_outputs_are_refused() {
        let twice = br#"{"inputs":[],"outputs":[{"name":"logits"},{"name":"logits"}]}"#;
        let (request, _) = parse_request(twice, None).unwrap();
        assert!(matches!(requested_outputs(&request, &two_classes()), Err(InputError::Unsupported(_))));
        let many = format!(r#"{{"inputs":[],"outputs":[{}]}}"#, vec![r#"{"name":"logits"}"#; 5000].join(","));
        let (request, _) = parse_request(many.as_bytes(), None).unwrap();
        assert!(matches!(
            requested_outputs(&request, &two_classes()),
            Err(InputError::TooMany { found: 5000, limit: 2, .. })
        ));
    }

    #[test]
    fn a_binary_model_answers_one_logit_and_both_probabilities() {
        let (request, _) = parse_request(br#"{"inputs":[]}"#, None).unwrap();
        let model = with_task(Task::Binary, &["cat", "dog"]);
        let wanted = requested_outputs(&request, &model).unwrap();
        let (json, _) = build_response(head(), &wanted, &[0.0, 0.0], &model, &classes()).unwrap();
        let v: Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["outputs"][0]["shape"], json!([2, 1]));
        assert_eq!(v["outputs"][1]["shape"], json!([2, 2]));
        assert_eq!(v["outputs"][1]["data"], json!([0.5, 0.5, 0.5, 0.5]));
        let top = br#"{"inputs":[],"outputs":[{"name":"probabilities","parameters":{"classification":5}}]}"#;
        let (request, _) = parse_request(top, None).unwrap();
        let wanted = requested_outputs(&request, &model).unwrap();
        let (json, _) = build_response(head(), &wanted, &[4.0], &model, &classes()).unwrap();
        let v: Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["outputs"][0]["shape"], json!([1, 2]));
        assert!(v["outputs"][0]["data"][0].as_str().unwrap().ends_with(":1:b"), "{v}");
    }

    #[test]
    fn a_regression_model_answers_values_only() {
        let model = with_task(Task::Regression, &["price", "rent"]);
        let (request, _) = parse_request(br#"{"inputs":[]}"#, None).unwrap();
        let wanted = requested_outputs(&request, &model).unwrap();
        let (json, _) = build_response(head(), &wanted, &[-1.5, 2.0, 3.0, 4.0], &model, &classes()).unwrap();
        let v: Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["outputs"].as_array().unwrap().len(), 1);
        assert_eq!(v["outputs"][0]["name"], "values");
        assert_eq!(v["outputs"][0]["shape"], json!([2, 2]));
        assert_eq!(v["outputs"][0]["data"], json!([-1.5, 2.0, 3.0, 4.0]));
        for body in [
            &br#"{"inputs":[],"outputs":[{"name":"probabilities"}]}"#[..],
            br#"{"inputs":[],"outputs":[{"name":"values","parameters":{"classification":1}}]}"#,
        ] {
            let (request, _) = parse_request(body, None).unwrap();
            let err = requested_outputs(&request, &model).unwrap_err();
            assert!(matches!(err, InputError::Unsupported(_)), "{err:?}");
        }
    }
}
