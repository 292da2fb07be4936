//! Open Inference Protocol v2 (the KServe / Triton REST protocol): message
//! types, the JSON tensor parser (with Triton's binary tensor extension) and
//! response building. Pure code: the HTTP handlers live in `serve`.

mod response;
mod tensor;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::head::Head;

pub use response::{OutputRequest, build_response, requested_outputs};
pub use tensor::{Datatype, FlatData, decode_input, parse_request};

/// Header carrying the JSON part's length when binary tensors follow it.
pub const HEADER_CONTENT_LENGTH: &str = "inference-header-content-length";
/// Name of the input tensor in the model metadata.
pub const INPUT_NAME: &str = "input";
/// Output with the raw model output, one row per sample.
pub const OUTPUT_LOGITS: &str = "logits";
/// Output with the head's probabilities: softmax of the logits (binary:
/// `[1 - p, p]`; multilabel: a sigmoid per class).
pub const OUTPUT_PROBABILITIES: &str = "probabilities";
/// A regression model's output: the numbers themselves.
pub const OUTPUT_VALUES: &str = "values";
/// Every output a classifier answers; a request may name each once.
pub const OUTPUTS: [&str; 2] = [OUTPUT_LOGITS, OUTPUT_PROBABILITIES];
/// The output of a regression model.
pub const REGRESSION_OUTPUTS: [&str; 1] = [OUTPUT_VALUES];

/// The outputs a model answers, by its head.
pub fn outputs_of(model: &Head) -> &'static [&'static str] {
    if model.is_classifier() { &OUTPUTS } else { &REGRESSION_OUTPUTS }
}

/// `POST /v2/models/{name}/infer` request.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct InferRequest {
    /// Echoed in the response.
    #[serde(default)]
    pub id: Option<String>,
    /// Request parameters, e.g. `binary_data_output`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Map<String, Value>>,
    /// Input tensors (this server's models take exactly one).
    pub inputs: Vec<RequestInput>,
    /// Outputs wanted; all when absent.
    #[serde(default)]
    pub outputs: Option<Vec<RequestOutput>>,
}

/// One input tensor.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct RequestInput {
    /// Tensor name.
    pub name: String,
    /// Shape, batch first.
    pub shape: Vec<i64>,
    /// OIP datatype, e.g. `FP32`, `INT64`, `UINT8`.
    pub datatype: String,
    /// Input parameters, e.g. `binary_data_size`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Map<String, Value>>,
    /// Values, flat or nested in row-major order; absent when sent as binary.
    /// Kept as raw JSON until the shape is checked, so that the values are
    /// only ever parsed into a buffer of the size the shape allows.
    #[serde(default)]
    #[schema(value_type = Option<Vec<f64>>)]
    pub data: Option<Box<serde_json::value::RawValue>>,
}

/// One output asked for.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct RequestOutput {
    /// `logits` or `probabilities`.
    pub name: String,
    /// Output parameters: `binary_data` (bool), `classification` (top-k labels).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Map<String, Value>>,
}

/// `POST /v2/models/{name}/infer` response (the JSON part).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct InferResponse {
    /// Model name.
    pub model_name: String,
    /// Model version.
    pub model_version: String,
    /// The request's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Output tensors.
    pub outputs: Vec<ResponseOutput>,
}

/// One output tensor.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ResponseOutput {
    /// Tensor name.
    pub name: String,
    /// Shape, batch first.
    pub shape: Vec<i64>,
    /// `FP32`, or `BYTES` for classification labels.
    pub datatype: &'static str,
    /// `binary_data_size` when the values follow the JSON part.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Map<String, Value>>,
    /// Values, flat in row-major order; absent when sent as binary.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<f64>>)]
    pub data: Option<Value>,
}

/// A tensor's name, datatype and shape (`-1` = any size).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TensorMetadata {
    /// Tensor name.
    pub name: String,
    /// OIP datatype.
    pub datatype: &'static str,
    /// Shape, batch first.
    pub shape: Vec<i64>,
}

/// `GET /v2/models/{name}` response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ModelMetadata {
    /// Model name.
    pub name: String,
    /// Versions served (one).
    pub versions: Vec<String>,
    /// `pytorch_torchscript`.
    pub platform: &'static str,
    /// Inputs.
    pub inputs: Vec<TensorMetadata>,
    /// Outputs.
    pub outputs: Vec<TensorMetadata>,
}

/// `GET /v2` response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ServerMetadata {
    /// Server name.
    pub name: &'static str,
    /// Server version.
    pub version: &'static str,
    /// Protocol extensions supported.
    pub extensions: Vec<&'static str>,
}

/// The metadata of a model with `sample_shape` inputs, read by `model`.
pub fn model_metadata(name: &str, version: &str, sample_shape: &[i64], model: &Head) -> ModelMetadata {
    let mut input_shape = vec![-1];
    input_shape.extend_from_slice(sample_shape);
    let outputs = outputs_of(model)
        .iter()
        .map(|&output| {
            let width = if output == OUTPUT_PROBABILITIES { model.score_width() } else { model.outputs() };
            TensorMetadata { name: output.into(), datatype: "FP32", shape: vec![-1, width as i64] }
        })
        .collect();
    ModelMetadata {
        name: name.to_owned(),
        versions: vec![version.to_owned()],
        platform: "pytorch_torchscript",
        inputs: vec![TensorMetadata { name: INPUT_NAME.into(), datatype: "FP32", shape: input_shape }],
        outputs,
    }
}

/// `GET /v2` answer.
pub fn server_metadata() -> ServerMetadata {
    ServerMetadata {
        name: "hone-predictor",
        version: env!("CARGO_PKG_VERSION"),
        extensions: vec!["binary_tensor_data", "classification"],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_declares_batch_dimension() {
        let m = model_metadata("m", "1", &[1, 8, 8], &Head::classification(3));
        assert_eq!(m.inputs[0].shape, vec![-1, 1, 8, 8]);
        assert_eq!(m.outputs[1].shape, vec![-1, 3]);
    }
}
