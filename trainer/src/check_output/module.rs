//! `model.pt` as libtorch sees it: loads as TorchScript, and maps zeros of
//! the card's input shape to one finite logit per class.

use hone_crds::contract::{self, ModelCard};
use hone_crds::modelversion::Task;
use tch::{CModule, IValue, Kind, Tensor};

use super::Report;

/// Batch sizes the module is run at: verify runs 1, the predictor batches.
const PROBE_BATCHES: [i64; 2] = [1, 2];

/// What running the module found.
#[derive(Clone, Debug, PartialEq)]
pub struct ModuleProbe {
    /// Whether libtorch loaded it as TorchScript.
    pub loaded: Result<(), String>,
    /// One forward pass per batch size of [`PROBE_BATCHES`].
    pub forwards: Vec<Forward>,
}

/// One forward pass on zeros.
#[derive(Clone, Debug, PartialEq)]
pub struct Forward {
    /// Samples in the input batch.
    pub batch: i64,
    /// What came out, or why nothing did.
    pub output: Result<ForwardOutput, String>,
}

/// The output of a forward pass.
#[derive(Clone, Debug, PartialEq)]
pub struct ForwardOutput {
    /// Its shape.
    pub shape: Vec<i64>,
    /// Whether every value is finite.
    pub finite: bool,
}

/// Loads `bytes` as TorchScript and, given a sample shape, runs zeros of it
/// at each of [`PROBE_BATCHES`]. Blocking: libtorch.
pub fn probe_module(bytes: &[u8], sample_shape: Option<&[i64]>) -> ModuleProbe {
    let mut module = match CModule::load_data(&mut std::io::Cursor::new(bytes)) {
        Ok(module) => module,
        Err(e) => return ModuleProbe { loaded: Err(e.to_string()), forwards: Vec::new() },
    };
    module.set_eval();
    let forwards = sample_shape
        .map(|shape| {
            let forward = |&batch| Forward { batch, output: forward_zeros(&module, batch, shape) };
            PROBE_BATCHES.iter().map(forward).collect()
        })
        .unwrap_or_default();
    ModuleProbe { loaded: Ok(()), forwards }
}

fn forward_zeros(module: &CModule, batch: i64, sample_shape: &[i64]) -> Result<ForwardOutput, String> {
    let mut shape = vec![batch];
    shape.extend_from_slice(sample_shape);
    let input = Tensor::zeros(shape.as_slice(), (Kind::Float, tch::Device::Cpu));
    let output = tch::no_grad(|| module.forward_is(&[IValue::Tensor(input)])).map_err(|e| e.to_string())?;
    // The predictor takes the first tensor of a tuple or list.
    let tensor = match output {
        IValue::Tensor(t) => t,
        IValue::Tuple(items) | IValue::GenericList(items) => match items.into_iter().next() {
            Some(IValue::Tensor(t)) => t,
            _ => return Err("the output's first element is not a tensor".into()),
        },
        IValue::TensorList(items) => items.into_iter().next().ok_or("the output is an empty tensor list")?,
        _ => return Err("the output is not a tensor".into()),
    };
    let finite = tensor
        .f_to_kind(Kind::Float)
        .and_then(|t| t.f_isfinite())
        .and_then(|t| t.f_all())
        .map(|t| t.int64_value(&[]) != 0)
        .unwrap_or(false);
    Ok(ForwardOutput { shape: tensor.size(), finite })
}

/// Judges a [`ModuleProbe`] against the card.
pub fn judge_module(report: &mut Report, probe: &ModuleProbe, card: Option<&ModelCard>) {
    const MODEL: &str = contract::MODEL_FILE;
    if let Err(e) = &probe.loaded {
        report.finding(MODEL, format!("does not load as TorchScript (save it with torch.jit): {e}"));
        return;
    }
    report.ok(MODEL, "loads as TorchScript");
    let Some(card) = card else {
        report.note(MODEL, "not run: no usable model.json gives its input shape");
        return;
    };
    let classes = card.signature.output_width() as i64;
    let meaning = match card.signature.task {
        Task::Classification | Task::Multilabel => "one logit per class, in signature.classes order",
        Task::Binary => "task binary: one logit, of the positive class (signature.classes[1])",
        Task::Regression => "task regression: one value per name in signature.classes, or one",
    };
    for Forward { batch, output } in &probe.forwards {
        let mut shape = vec![*batch];
        shape.extend_from_slice(&card.signature.input_shape);
        match output {
            Err(e) => {
                report.finding(MODEL, format!("forward on zeros of shape {shape:?} fails: {e}"));
                return;
            }
            Ok(ForwardOutput { shape: size, .. })
                if size.len() == 2 && size[0] == *batch && size[1] != classes =>
            {
                report.finding(
                    MODEL,
                    format!(
                        "returns {} outputs per sample but model.json's signature needs {classes}: {meaning}",
                        size[1]
                    ),
                );
                return;
            }
            Ok(ForwardOutput { shape: size, .. }) if size != &[*batch, classes] => {
                report.finding(
                    MODEL,
                    format!("input {shape:?} gives output {size:?}, expected [{batch}, {classes}]"),
                );
                return;
            }
            Ok(ForwardOutput { finite: false, .. }) => {
                report.finding(MODEL, format!("input {shape:?} gives non-finite outputs"));
                return;
            }
            Ok(_) => {}
        }
    }
    let dims: Vec<String> = card.signature.input_shape.iter().map(i64::to_string).collect();
    report.ok(MODEL, format!("maps zeros of [batch, {}] to [batch, {classes}] outputs", dims.join(", ")));
}
