//! Command-line flags of each subcommand; every flag is also an environment
//! variable (`HONE_*`), which is how the operator configures the pods.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

/// `hone-predictor serve`.
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Model location: the folder holding model.pt and model.json, or model.pt itself
    /// (a local path or file://, s3://, gs://, az://, http(s)://, pvc:// URI).
    #[arg(long, env = "HONE_MODEL_URI")]
    pub model: String,
    /// Expected `sha256:` of model.pt; unset: the card's artifactDigest, if any.
    #[arg(long, env = "HONE_MODEL_DIGEST")]
    pub digest: Option<String>,
    /// Model name in the OIP v2 paths and the metrics' `model` label.
    #[arg(long, env = "HONE_MODEL_NAME", default_value = "model")]
    pub model_name: String,
    /// Model version in OIP v2 answers and the metrics' `version` label;
    /// unset: the first 12 hex digits of the digest.
    #[arg(long, env = "HONE_MODEL_VERSION")]
    pub model_version: Option<String>,
    /// Listen address.
    #[arg(long, env = "HONE_ADDR", default_value = "0.0.0.0:8080")]
    pub addr: SocketAddr,
    /// Most samples in one forward pass.
    #[arg(long, env = "HONE_MAX_BATCH_SIZE", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub max_batch_size: u32,
    /// Longest a request waits for others to fill a batch, in milliseconds.
    #[arg(long, env = "HONE_MAX_LATENCY_MS", default_value_t = 5)]
    pub max_latency_ms: u64,
    /// Most requests waiting for the inference thread; more are answered 429.
    #[arg(long, env = "HONE_QUEUE_CAPACITY", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub queue_capacity: u32,
    /// Longest a request may take before it is answered 504, in milliseconds.
    #[arg(long, env = "HONE_REQUEST_TIMEOUT_MS", default_value_t = 30_000)]
    pub request_timeout_ms: u64,
    /// Largest request body, in bytes; larger ones are answered 413.
    #[arg(long, env = "HONE_MAX_BODY_BYTES", default_value_t = 16 << 20)]
    pub max_body_bytes: usize,
    /// Largest image width or height, in pixels.
    #[arg(long, env = "HONE_MAX_IMAGE_DIMENSION", default_value_t = 4096)]
    pub max_image_dimension: u32,
    /// Most images or rows in one `/predict/batch` call.
    #[arg(long, env = "HONE_MAX_BATCH_ITEMS", default_value_t = 64)]
    pub max_batch_items: usize,
    /// Accepted API keys: a file with one key per line, or a folder with one
    /// key per file (a mounted Secret). Unset: no authentication.
    #[arg(long, env = "HONE_API_KEYS_FILE")]
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
    #[arg(long, env = "HONE_DEVICE", default_value = "auto")]
    pub device: String,
    /// libtorch intra-op threads; 0: libtorch's default (one per core).
    #[arg(long, env = "HONE_TORCH_THREADS", default_value_t = 0)]
    pub torch_threads: i32,
    /// Seconds to keep serving in-flight requests after SIGTERM before exiting anyway.
    #[arg(long, env = "HONE_SHUTDOWN_GRACE_SECONDS", default_value_t = 30)]
    pub shutdown_grace_seconds: u64,
}

/// `hone-predictor verify`.
#[derive(Args, Debug, Clone)]
pub struct VerifyArgs {
    /// Model location (as for `serve`).
    #[arg(long, env = "HONE_MODEL_URI")]
    pub model: String,
    /// Expected `sha256:` of model.pt.
    #[arg(long, env = "HONE_MODEL_DIGEST")]
    pub digest: Option<String>,
    /// `auto`, `cpu`, `cuda` or `cuda:N`.
    #[arg(long, env = "HONE_DEVICE", default_value = "cpu")]
    pub device: String,
    /// Where to also write the JSON summary (the pod's termination log).
    #[arg(long, env = "HONE_TERMINATION_LOG")]
    pub termination_log: Option<PathBuf>,
}
