//! Command-line flags of each subcommand; every flag is also an environment
//! variable (`HONE_*`), which is how the operator configures the pods.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use hone_crds::modelversion::ArtifactFormat;
use hone_crds::predictor::env;

/// Default of `serve --max-body-bytes`; also the largest test image `verify` reads.
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 << 20;
/// Default of `serve --max-image-dimension`; also `verify`'s limit on test images.
pub const DEFAULT_MAX_IMAGE_DIMENSION: u32 = 4096;
/// Default of `serve --max-image-pixels`; also `verify`'s limit on test images.
pub const DEFAULT_MAX_IMAGE_PIXELS: u64 = 16 << 20;

/// `hone-predictor serve`.
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Model location: the folder holding the model file (model.pt or model.onnx)
    /// and model.json, or the model file itself
    /// (a local path or file://, s3://, gs://, az://, http(s)://, pvc:// URI).
    #[arg(long, env = env::MODEL_URI)]
    pub model: String,
    /// The model file's format: `TorchScript` (model.pt) or `ONNX` (model.onnx).
    #[arg(long, env = env::MODEL_FORMAT, default_value = "TorchScript")]
    pub format: ArtifactFormat,
    /// ONNX Runtime's shared library (the `onnxruntime` wheel's
    /// `onnxruntime/capi/libonnxruntime.so.1.31.x`), loaded for ONNX models only.
    #[arg(long, env = env::ONNXRUNTIME_LIB)]
    pub onnxruntime: Option<PathBuf>,
    /// Expected `sha256:` of the model file; unset: the card's artifactDigest, if any.
    #[arg(long, env = env::MODEL_DIGEST)]
    pub digest: Option<String>,
    /// Expected `sha256:` of model.json: a card with any other digest is
    /// refused and the server never turns ready. Unset: any card.
    #[arg(long, env = env::MODEL_CARD_DIGEST)]
    pub card_digest: Option<String>,
    /// Model name in the OIP v2 paths and the metrics' `model` label.
    #[arg(long, env = env::MODEL_NAME, default_value = "model")]
    pub model_name: String,
    /// Model version in OIP v2 answers and the metrics' `version` label;
    /// unset: the first 12 hex digits of the digest.
    #[arg(long, env = env::MODEL_VERSION)]
    pub model_version: Option<String>,
    /// Listen address.
    #[arg(long, env = env::ADDR, default_value = "0.0.0.0:8080")]
    pub addr: SocketAddr,
    /// Listen address of the admin port: `/metrics` and `/drift` without an
    /// API key, for Prometheus; keep it out of the clients' reach. Unset: no
    /// admin port (then `/metrics` is on the client port, behind the key).
    #[arg(long, env = env::ADMIN_ADDR)]
    pub admin_addr: Option<SocketAddr>,
    /// Most samples in one forward pass.
    #[arg(long, env = env::MAX_BATCH_SIZE, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub max_batch_size: u32,
    /// Longest a request waits for others to fill a batch, in milliseconds.
    #[arg(long, env = env::MAX_LATENCY_MS, default_value_t = 5)]
    pub max_latency_ms: u64,
    /// Most requests waiting for the inference thread; more are answered 429.
    #[arg(long, env = "HONE_QUEUE_CAPACITY", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub queue_capacity: u32,
    /// Longest a request may take before it is answered 504, in milliseconds.
    #[arg(long, env = "HONE_REQUEST_TIMEOUT_MS", default_value_t = 30_000)]
    pub request_timeout_ms: u64,
    /// Largest request body, in bytes; larger ones are answered 413.
    #[arg(long, env = "HONE_MAX_BODY_BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
    /// Largest image width or height, in pixels.
    #[arg(long, env = "HONE_MAX_IMAGE_DIMENSION", default_value_t = DEFAULT_MAX_IMAGE_DIMENSION)]
    pub max_image_dimension: u32,
    /// Most images or rows in one `/predict/batch` call, and the largest
    /// batch dimension of an Open Inference Protocol tensor.
    #[arg(long, env = "HONE_MAX_BATCH_ITEMS", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub max_batch_items: u32,
    /// Largest JSON body of `/predict` and `/predict/batch` (feature rows), in
    /// bytes: parsed JSON takes up to ~32x its text, so it has its own limit.
    #[arg(long, env = "HONE_MAX_JSON_BYTES", default_value_t = 1 << 20)]
    pub max_json_bytes: usize,
    /// Most pixels (width x height) of one image.
    #[arg(long, env = "HONE_MAX_IMAGE_PIXELS", default_value_t = DEFAULT_MAX_IMAGE_PIXELS)]
    pub max_image_pixels: u64,
    /// Most request-body bytes held in memory by all requests together;
    /// a request that would exceed it is answered 429.
    #[arg(long, env = "HONE_MAX_INFLIGHT_BODY_BYTES", default_value_t = 256 << 20)]
    pub max_inflight_body_bytes: usize,
    /// Decodes (JSON, images, multipart) running at once on the blocking
    /// pool; 0: one per core.
    #[arg(long, env = "HONE_DECODE_THREADS", default_value_t = 0)]
    pub decode_threads: usize,
    /// Decodes waiting for a decode thread; more are answered 429.
    #[arg(long, env = "HONE_DECODE_QUEUE", default_value_t = 64)]
    pub decode_queue: usize,
    /// Longest a client may take to send a request's headers, and longest an
    /// idle keep-alive connection is kept, in milliseconds.
    #[arg(long, env = "HONE_HEADER_READ_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_read_timeout_ms: u64,
    /// Longest a client may take to send a request's body, in milliseconds (408 after).
    #[arg(long, env = "HONE_BODY_READ_TIMEOUT_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub body_read_timeout_ms: u64,
    /// Accepted API keys: a file with one key per line, or a folder with one
    /// key per file (a mounted Secret). Unset: no authentication.
    #[arg(long, env = env::API_KEYS_FILE)]
    pub api_keys_file: Option<PathBuf>,
    /// Requests per second allowed per API key (token bucket); unset: no limit.
    #[arg(long, env = "HONE_RATE_LIMIT_RPS")]
    pub rate_limit_rps: Option<f64>,
    /// Burst size of the per-key rate limit; unset: one second's worth.
    #[arg(long, env = "HONE_RATE_LIMIT_BURST")]
    pub rate_limit_burst: Option<f64>,
    /// Origins allowed by CORS, comma-separated, or `*`; unset: no CORS headers.
    #[arg(long, env = "HONE_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// Recent samples per feature kept for drift detection.
    #[arg(long, env = "HONE_DRIFT_WINDOW", default_value_t = 1000)]
    pub drift_window: usize,
    /// `auto`, `cpu`, `cuda` or `cuda:N`.
    #[arg(long, env = env::DEVICE, default_value = "auto")]
    pub device: String,
    /// Intra-op threads of libtorch, or of the ONNX Runtime session for ONNX
    /// models; 0: the runtime's default (one per core).
    #[arg(long, env = "HONE_TORCH_THREADS", default_value_t = 0)]
    pub torch_threads: i32,
    /// Seconds to keep serving in-flight requests after SIGTERM before exiting anyway.
    #[arg(long, env = env::SHUTDOWN_GRACE_SECONDS, default_value_t = 30)]
    pub shutdown_grace_seconds: u64,
    /// Fault injection for tests and chaos drills only, never in production:
    /// `inference-panic-on=<value>` makes the inference thread panic on a
    /// sample whose first value is `<value>`.
    #[arg(long, env = "HONE_FAULT_INJECTION", hide = true)]
    pub fault_injection: Option<String>,
}

/// `hone-predictor verify`.
#[derive(Args, Debug, Clone)]
pub struct VerifyArgs {
    /// Model location (as for `serve`).
    #[arg(long, env = env::MODEL_URI)]
    pub model: String,
    /// The model file's declared format: `TorchScript` or `ONNX`; a file in
    /// the other format fails verification (`FormatMismatch`).
    #[arg(long, env = env::MODEL_FORMAT, default_value = "TorchScript")]
    pub format: ArtifactFormat,
    /// ONNX Runtime's shared library (as for `serve`).
    #[arg(long, env = env::ONNXRUNTIME_LIB)]
    pub onnxruntime: Option<PathBuf>,
    /// Expected `sha256:` of the model file.
    #[arg(long, env = env::MODEL_DIGEST)]
    pub digest: Option<String>,
    /// Expected `sha256:` of model.json; a card with any other digest fails
    /// verification (`CardDigestMismatch`).
    #[arg(long, env = env::MODEL_CARD_DIGEST)]
    pub card_digest: Option<String>,
    /// The ModelVersion's `spec.signature` as an `ExpectedSignature` JSON
    /// object; the card's signature must match it (`SignatureMismatch`).
    #[arg(long, env = env::EXPECTED_SIGNATURE)]
    pub expected_signature: Option<String>,
    /// Folder holding a held-out test split (`split.json`, `samples.jsonl`,
    /// `images/`) to evaluate the model on; unset: no evaluation.
    #[arg(long, env = env::EVAL_DIR)]
    pub eval_dir: Option<PathBuf>,
    /// `auto`, `cpu`, `cuda` or `cuda:N`.
    #[arg(long, env = env::DEVICE, default_value = "cpu")]
    pub device: String,
    /// Where to also write the JSON summary (the pod's termination log).
    #[arg(long, env = env::TERMINATION_LOG)]
    pub termination_log: Option<PathBuf>,
}
