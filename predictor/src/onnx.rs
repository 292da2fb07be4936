//! ONNX models (`artifact.format: ONNX`) on ONNX Runtime.
//!
//! The runtime is the shared library the `onnxruntime` wheel ships
//! (`onnxruntime/capi/libonnxruntime.so.1.31.x`), as libtorch comes from the
//! `torch` wheel; it is loaded at run time (`ort`'s `load-dynamic`) from the
//! path in `--onnxruntime` / `ORT_DYLIB_PATH`, and only when an ONNX model
//! is served or verified: a TorchScript predictor never touches it. One
//! runtime environment per process, made on first use.
//!
//! A model must take one float tensor `[batch, ...inputShape]` and return
//! `[batch, outputs]` (logits, probabilities or values, as the card's
//! signature says) as its first float output, with a dynamic batch
//! dimension on both, so the batcher can send any number of samples. Outputs
//! of other types before it are skipped: skl2onnx's classifiers answer an
//! int64 `label` first and the float `probabilities` second. Runs on the
//! CPU: the wheel's runtime has no GPU provider.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::session::Session;
use ort::value::{TensorElementType, TensorRef, ValueType};

/// The first library path asked for, and the environment made from it (or why not).
static RUNTIME: OnceLock<(PathBuf, Result<Environment, String>)> = OnceLock::new();

/// Why an ONNX model cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    /// No library path, or the library cannot be loaded.
    #[error("ONNX Runtime is unavailable: {0}")]
    Runtime(String),
    /// ONNX Runtime refused the model file.
    #[error("loading ONNX model: {0}")]
    Model(String),
    /// The model's inputs or outputs are not what the predictor feeds and reads.
    #[error("unsupported ONNX model signature: {0}")]
    Signature(String),
}

/// Loads ONNX Runtime from `library` (once per process) and returns its environment.
fn environment(library: Option<&Path>) -> Result<Environment, OnnxError> {
    let library = library.ok_or_else(|| {
        OnnxError::Runtime(format!(
            "no library path: set --onnxruntime or {} to libonnxruntime.so.1.{}.x",
            hone_crds::predictor::env::ONNXRUNTIME_LIB,
            ort::MINOR_VERSION
        ))
    })?;
    let (loaded, environment) = RUNTIME.get_or_init(|| {
        let environment = ort::init_from(library)
            .map_err(|e| e.to_string())
            .and_then(|builder| builder.with_name("hone-predictor").build().map_err(|e| e.to_string()));
        (library.to_path_buf(), environment)
    });
    if loaded != library {
        // The library is loaded once per process; a second path cannot replace it.
        tracing::warn!(asked = %library.display(), loaded = %loaded.display(), "ONNX Runtime was already loaded from another path");
    }
    environment.clone().map_err(OnnxError::Runtime)
}

/// An ONNX Runtime session for one model whose signature was checked at load.
pub struct OnnxModel {
    session: Session,
    /// Index of the output read: the first float one.
    output: usize,
}

impl std::fmt::Debug for OnnxModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxModel").finish_non_exhaustive()
    }
}

impl OnnxModel {
    /// Loads the model in `bytes` on the runtime at `library`, with `threads`
    /// intra-op threads (0: the runtime's default, one per core), and checks
    /// its signature against `sample_shape` (one sample, without the batch).
    pub fn load(
        bytes: &[u8],
        library: Option<&Path>,
        threads: usize,
        sample_shape: &[i64],
    ) -> Result<Self, OnnxError> {
        let environment = environment(library)?;
        let model = |e: ort::Error| OnnxError::Model(e.to_string());
        let mut builder = Session::builder(&environment).map_err(model)?;
        if threads > 0 {
            builder = builder.with_intra_threads(threads).map_err(|e| model(e.into()))?;
        }
        let session = builder.commit_from_memory(bytes).map_err(model)?;
        let output = check_signature(&session, sample_shape)?;
        Ok(Self { session, output })
    }

    /// Runs `input` (`shape`, batch first) and returns the read output's
    /// shape and values.
    pub fn forward(&mut self, input: &[f32], shape: &[i64]) -> Result<(Vec<i64>, Vec<f32>), String> {
        let tensor = TensorRef::from_array_view((shape, input)).map_err(|e| e.to_string())?;
        let outputs = self.session.run(ort::inputs![tensor]).map_err(|e| e.to_string())?;
        // Indexing cannot panic: `load` found this output among the model's.
        let (shape, values) = outputs[self.output].try_extract_tensor::<f32>().map_err(|e| e.to_string())?;
        Ok((shape.to_vec(), values.to_vec()))
    }
}

/// Checks that the model takes one float tensor of `[batch, ...sample_shape]`
/// and has a float output with a dynamic batch dimension (as the input);
/// returns the index of the first float output, the one read.
fn check_signature(session: &Session, sample_shape: &[i64]) -> Result<usize, OnnxError> {
    let [input] = session.inputs() else {
        return Err(OnnxError::Signature(format!(
            "the model takes {} inputs; the predictor feeds exactly one",
            session.inputs().len()
        )));
    };
    let outputs = session.outputs();
    if outputs.is_empty() {
        return Err(OnnxError::Signature("the model has no outputs".into()));
    }
    let is_float = |o: &ort::value::Outlet| {
        matches!(o.dtype(), ValueType::Tensor { ty: TensorElementType::Float32, .. })
    };
    // The first float output, else the first one (whose error then says why).
    let index = outputs.iter().position(is_float).unwrap_or(0);
    let input_shape = batched_float_tensor("input", input)?;
    batched_float_tensor("output", &outputs[index])?;
    let declared = &input_shape[1..];
    let fits = declared.len() == sample_shape.len()
        && declared.iter().zip(sample_shape).all(|(&d, &s)| d == -1 || d == s);
    if !fits {
        return Err(OnnxError::Signature(format!(
            "input {:?} has shape {input_shape:?}; the card's inputShape needs [batch, {}]",
            input.name(),
            sample_shape.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(index)
}

/// The shape of a float32 tensor outlet whose first dimension is dynamic (-1).
fn batched_float_tensor(what: &str, outlet: &ort::value::Outlet) -> Result<Vec<i64>, OnnxError> {
    let name = outlet.name();
    let bad = |m: String| Err(OnnxError::Signature(format!("{what} {name:?} {m}")));
    let ValueType::Tensor { ty, shape, .. } = outlet.dtype() else {
        return bad("is not a tensor".into());
    };
    if *ty != TensorElementType::Float32 {
        return bad(format!("is {ty:?}; the predictor works in float32"));
    }
    match shape.first() {
        Some(-1) => Ok(shape.to_vec()),
        Some(d) => bad(format!(
            "has a fixed batch dimension {d} (shape {:?}); export it with a dynamic batch axis, e.g. \
             torch.onnx.export(..., dynamic_axes={{\"input\": {{0: \"batch\"}}, \"logits\": {{0: \"batch\"}}}})",
            shape.to_vec()
        )),
        None => bad("is a scalar; it needs a batch dimension".into()),
    }
}
