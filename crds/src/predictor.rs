//! The environment of `hone-predictor`: every flag has a `HONE_*` variable
//! (`predictor/src/config.rs`), and the operator configures predictor and
//! verify pods through the ones named here. One spelling for both sides.

/// Environment variables the predictor reads.
pub mod env {
    /// Model location (folder or `model.pt` URI).
    pub const MODEL_URI: &str = "HONE_MODEL_URI";
    /// Expected digest of model.pt.
    pub const MODEL_DIGEST: &str = "HONE_MODEL_DIGEST";
    /// Model name in the OIP v2 paths.
    pub const MODEL_NAME: &str = "HONE_MODEL_NAME";
    /// Model version in OIP v2 answers and metrics.
    pub const MODEL_VERSION: &str = "HONE_MODEL_VERSION";
    /// Client listen address.
    pub const ADDR: &str = "HONE_ADDR";
    /// Admin listen address (metrics, drift; no key).
    pub const ADMIN_ADDR: &str = "HONE_ADMIN_ADDR";
    /// Most samples in one forward pass.
    pub const MAX_BATCH_SIZE: &str = "HONE_MAX_BATCH_SIZE";
    /// Longest wait for a batch to fill, in milliseconds.
    pub const MAX_LATENCY_MS: &str = "HONE_MAX_LATENCY_MS";
    /// File or folder of accepted API keys.
    pub const API_KEYS_FILE: &str = "HONE_API_KEYS_FILE";
    /// Seconds to finish in-flight requests after SIGTERM.
    pub const SHUTDOWN_GRACE_SECONDS: &str = "HONE_SHUTDOWN_GRACE_SECONDS";
    /// `auto`, `cpu`, `cuda` or `cuda:N`.
    pub const DEVICE: &str = "HONE_DEVICE";
    /// Where `verify` also writes its summary (the pod's termination log).
    pub const TERMINATION_LOG: &str = "HONE_TERMINATION_LOG";
    /// Expected digest of model.json: a card with any other digest is refused.
    pub const MODEL_CARD_DIGEST: &str = "HONE_MODEL_CARD_DIGEST";
    /// `verify`: the ModelVersion's signature as an `ExpectedSignature` JSON; the card's must match.
    pub const EXPECTED_SIGNATURE: &str = "HONE_EXPECTED_SIGNATURE";
    /// `verify`: folder holding the held-out test split to evaluate on.
    pub const EVAL_DIR: &str = "HONE_EVAL_DIR";
    /// The model file's format, `spec.artifact.format`: `TorchScript` or `ONNX`.
    pub const MODEL_FORMAT: &str = "HONE_MODEL_FORMAT";
    /// Path of ONNX Runtime's shared library (`libonnxruntime.so.1.31.x`),
    /// loaded only for ONNX models; the variable the `ort` crate reads too.
    pub const ONNXRUNTIME_LIB: &str = "ORT_DYLIB_PATH";
}
