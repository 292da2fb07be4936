//! A loaded model and its forward pass, whatever its format: a TorchScript
//! module on libtorch or an ONNX model on ONNX Runtime. Both take the same
//! preprocessed `[samples, ...inputShape]` f32 batch and give back the same
//! `[samples, outputs]` rows (logits, or numbers for regression), so batching, routes, metrics and drift
//! do not know which one runs. Blocking: run on dedicated threads.

use std::path::PathBuf;

use hone_crds::contract::ModelCard;
use hone_crds::modelversion::{ArtifactFormat, Task};
use tch::{CModule, Device, IValue, Kind, Tensor};

use crate::model::LoadError;
use crate::onnx::OnnxModel;

/// How to load a model: its declared format and where it runs.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// The declared format (`--format`, `spec.artifact.format`).
    pub format: ArtifactFormat,
    /// Where a TorchScript module runs; ONNX models run on the CPU.
    pub device: Device,
    /// Intra-op threads of an ONNX session (0: one per core); libtorch's
    /// count is process-wide and set by the caller (`--torch-threads`).
    pub threads: usize,
    /// ONNX Runtime's shared library (`--onnxruntime`, `ORT_DYLIB_PATH`).
    pub onnxruntime: Option<PathBuf>,
}

impl RuntimeConfig {
    /// The config for `format` on `device`: ONNX models run on the CPU
    /// whatever the device asked for (the ONNX Runtime wheel has no GPU provider).
    pub fn new(format: ArtifactFormat, device: Device, threads: usize, onnxruntime: Option<PathBuf>) -> Self {
        let device = match format {
            ArtifactFormat::TorchScript => device,
            ArtifactFormat::Onnx => {
                if device != Device::Cpu {
                    tracing::info!(asked = ?device, "ONNX models run on the CPU");
                }
                Device::Cpu
            }
        };
        Self { format, device, threads, onnxruntime }
    }
}

/// A model ready to run.
#[derive(Debug)]
pub enum Model {
    /// A TorchScript module in eval mode.
    TorchScript(CModule),
    /// An ONNX Runtime session.
    Onnx(OnnxModel),
}

/// The format `bytes` are in, when they tell: TorchScript files are zip
/// archives; an ONNX file is a protobuf `ModelProto`, which starts with its
/// `ir_version` field (tag 0x08) and can never start with a zip signature.
pub fn sniff_format(bytes: &[u8]) -> Option<ArtifactFormat> {
    if bytes.starts_with(b"PK\x03\x04") {
        Some(ArtifactFormat::TorchScript)
    } else if bytes.first() == Some(&0x08) {
        Some(ArtifactFormat::Onnx)
    } else {
        None
    }
}

/// Loads `bytes` as `config.format` and checks it can take the card's
/// inputs. Bytes in the other format are a [`LoadError::FormatMismatch`]
/// (with the declared loader's own error); unrecognisable bytes get that
/// loader's error.
pub fn load_model(bytes: &[u8], card: &ModelCard, config: &RuntimeConfig) -> Result<Model, LoadError> {
    let loaded = match config.format {
        ArtifactFormat::TorchScript => load_module(bytes, config.device).map(Model::TorchScript),
        ArtifactFormat::Onnx => {
            OnnxModel::load(bytes, config.onnxruntime.as_deref(), config.threads, &card.signature.input_shape)
                .map(Model::Onnx)
                .map_err(LoadError::from)
        }
    };
    match (loaded, sniff_format(bytes)) {
        (Err(e), Some(found)) if found != config.format => {
            let detail = e.to_string();
            // libtorch's messages carry a C++ backtrace: its first line says it.
            let detail = detail.lines().next().unwrap_or_default().to_owned();
            Err(LoadError::FormatMismatch { declared: config.format, found, detail })
        }
        (loaded, _) => loaded,
    }
}

/// Loads the TorchScript module onto `device` in eval mode.
pub fn load_module(bytes: &[u8], device: Device) -> Result<CModule, LoadError> {
    let mut module =
        CModule::load_data_on_device(&mut std::io::Cursor::new(bytes), device).map_err(LoadError::Module)?;
    module.set_eval();
    Ok(module)
}

/// Runs `module` on `input`; a tuple or list output yields its first tensor.
pub fn forward(module: &CModule, input: Tensor) -> Result<Tensor, tch::TchError> {
    match module.forward_is(&[IValue::Tensor(input)])? {
        IValue::Tensor(t) => Ok(t),
        IValue::Tuple(items) | IValue::GenericList(items) => match items.into_iter().next() {
            Some(IValue::Tensor(t)) => Ok(t),
            _ => Err(tch::TchError::Kind("model output's first element is not a tensor".into())),
        },
        IValue::TensorList(items) => items
            .into_iter()
            .next()
            .ok_or_else(|| tch::TchError::Kind("model returned an empty tensor list".into())),
        _ => Err(tch::TchError::Kind("model output is not a tensor".into())),
    }
}

/// Runs `samples` samples (`input`, each of `sample_shape`) through `model`
/// and returns the `[samples, outputs]` logits, row by row, on the CPU: the
/// forward pass of the inference thread and of `verify`'s evaluation.
pub fn forward_logits(
    model: &mut Model,
    input: &[f32],
    samples: usize,
    sample_shape: &[i64],
    outputs: usize,
    device: Device,
) -> Result<Vec<f32>, String> {
    let mut shape = vec![samples as i64];
    shape.extend_from_slice(sample_shape);
    let expected = [samples as i64, outputs as i64];
    match model {
        Model::TorchScript(module) => torch_logits(module, input, &shape, expected, device),
        Model::Onnx(session) => {
            let (size, values) = session.forward(input, &shape)?;
            if size != expected {
                return Err(format!("model returned shape {size:?}, expected {expected:?}"));
            }
            Ok(values)
        }
    }
}

fn torch_logits(
    module: &CModule,
    input: &[f32],
    shape: &[i64],
    expected: [i64; 2],
    device: Device,
) -> Result<Vec<f32>, String> {
    let err = |e: tch::TchError| e.to_string();
    let tensor = Tensor::f_from_slice(input).map_err(err)?.f_view(shape).map_err(err)?;
    let tensor = tensor.f_to_device(device).map_err(err)?;
    let output = forward(module, tensor).map_err(err)?;
    // `size` panics only on tensors without sizes (nested ones); the inference
    // thread catches panics, and `verify` runs this on a blocking task.
    let size = output.size();
    if size != expected {
        return Err(format!("model returned shape {size:?}, expected {expected:?}"));
    }
    let output = output
        .f_to_device(Device::Cpu)
        .and_then(|t| t.f_to_kind(Kind::Float))
        .and_then(|t| t.f_contiguous())
        .and_then(|t| t.f_view([-1]))
        .map_err(err)?;
    Vec::<f32>::try_from(&output).map_err(|e| e.to_string())
}

/// Runs `batch` zero samples through `model` and checks the output is
/// `[batch, outputs]` (the signature's output width): the warm-up before
/// readiness and the verify check.
pub fn forward_zeros(
    model: &mut Model,
    card: &ModelCard,
    batch: i64,
    device: Device,
) -> Result<(), LoadError> {
    let outputs = card.signature.output_width() as i64;
    let mut shape = vec![batch];
    shape.extend_from_slice(&card.signature.input_shape);
    let size = match model {
        Model::TorchScript(module) => {
            let zeros = Tensor::zeros(shape.as_slice(), (Kind::Float, device));
            tch::no_grad(|| forward(module, zeros)).map_err(|e| LoadError::WarmUp(e.to_string()))?.size()
        }
        Model::Onnx(session) => {
            // `validate_card` bounds one sample; the batch size is bounded by its flag.
            let zeros = vec![0f32; shape.iter().product::<i64>().max(0) as usize];
            session.forward(&zeros, &shape).map_err(LoadError::WarmUp)?.0
        }
    };
    if size != [batch, outputs] {
        let meaning = match card.signature.task {
            Task::Classification => "one logit per class",
            Task::Binary => "one logit, of the positive class",
            Task::Multilabel => "one logit per class",
            Task::Regression => "one value per named output, or one",
        };
        return Err(LoadError::WarmUp(format!(
            "output shape {size:?}, expected [{batch}, {outputs}] (task {}: {meaning})",
            card.signature.task
        )));
    }
    Ok(())
}

/// The device for `--device`: `cpu`, `cuda`, `cuda:N` or `auto` (CUDA when present).
pub fn parse_device(name: &str) -> Result<Device, String> {
    match name {
        "auto" => Ok(Device::cuda_if_available()),
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::Cuda(0)),
        other => other
            .strip_prefix("cuda:")
            .and_then(|n| n.parse().ok())
            .map(Device::Cuda)
            .ok_or_else(|| format!("unknown device {other:?}: use auto, cpu, cuda or cuda:N")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse() {
        assert_eq!(parse_device("cpu"), Ok(Device::Cpu));
        assert_eq!(parse_device("cuda:1"), Ok(Device::Cuda(1)));
        assert!(parse_device("tpu").is_err());
    }

    #[test]
    fn zip_archives_are_torchscript_and_protobufs_onnx() {
        assert_eq!(sniff_format(b"PK\x03\x04rest"), Some(ArtifactFormat::TorchScript));
        assert_eq!(sniff_format(&[0x08, 0x07, 0x12]), Some(ArtifactFormat::Onnx));
        assert_eq!(sniff_format(b"garbage"), None);
        assert_eq!(sniff_format(b""), None);
    }
}
