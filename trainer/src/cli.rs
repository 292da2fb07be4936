//! Command-line flags. Every flag also reads an environment variable
//! (`HONE_*`), which is how the operator configures trainer pods.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use hone_crds::contract::env;
use hone_crds::trainingjob::{Architecture, Augmentation, Hyperparameters, ModelHead, Optimizer, Scheduler};

use crate::dataset::{DataMode, DataOptions, DataPath, Format};
use crate::evalsplit::EvalSplitOptions;

/// Hone's trainer: inspects datasets and trains models with libtorch.
#[derive(Parser, Debug)]
#[command(name = "hone-trainer", version, about)]
pub struct Cli {
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Trainer commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Read every sample of a dataset and report its digest, counts and classes.
    Inspect(InspectArgs),
    /// Train a model and write the output contract (model.pt, model.json, ...).
    Train(Box<TrainArgs>),
    /// Write a dataset's held-out test split for a ModelVersion's verify Job.
    EvalSplit(EvalSplitArgs),
    /// Print the libtorch build this binary runs on, as JSON.
    Info,
    /// Delete a model artifact from storage (what a ModelVersion with
    /// `hone.dev/artifact-policy: Delete` runs when it is deleted).
    Purge(PurgeArgs),
    /// Check a training output (yours or ours) against the training contract
    /// and list what it lacks or gets wrong (docs/training-contract.md).
    CheckOutput(CheckOutputArgs),
}

/// `check-output` flags.
#[derive(Args, Debug)]
pub struct CheckOutputArgs {
    /// The output folder holding model.pt and model.json: a storage URI
    /// (file://, s3://, ...) or a local path.
    pub uri: String,
    /// A termination summary (the JSON the trainer wrote to its termination
    /// log) to check against the output.
    #[arg(long)]
    pub summary: Option<PathBuf>,
}

/// `purge` flags.
#[derive(Args, Debug)]
pub struct PurgeArgs {
    /// Objects to delete; missing ones are not an error.
    #[arg(long = "uri", env = env::PURGE_URIS, value_delimiter = ',', required = true)]
    pub uris: Vec<String>,
    /// Delete everything below these locations (each is a folder).
    #[arg(long, env = env::PURGE_PREFIX)]
    pub prefix: bool,
    #[command(flatten)]
    /// Summary output.
    pub summary: SummaryArgs,
}

/// Where the summary goes.
#[derive(Args, Debug, Clone)]
pub struct SummaryArgs {
    /// File the JSON summary is written to (Kubernetes reads it as the
    /// termination message); missing or unwritable is only a warning.
    #[arg(long, env = env::TERMINATION_LOG, default_value = hone_crds::contract::TERMINATION_LOG)]
    pub termination_log: String,
}

/// How to read the dataset.
#[derive(Args, Debug, Clone)]
pub struct DataArgs {
    /// Dataset URI: a folder (ImageFolder) or a file (CSV).
    #[arg(long, env = env::DATASET_SOURCE)]
    pub source: String,
    /// Dataset layout.
    #[arg(long, env = env::DATASET_FORMAT, value_enum, default_value = "ImageFolder")]
    pub format: Format,
    /// CSV: the label column.
    #[arg(long, env = env::CSV_LABEL_COLUMN, default_value = "label")]
    pub label_column: String,
    /// CSV: feature columns (comma-separated; default all but the label).
    #[arg(long, env = env::CSV_FEATURE_COLUMNS, value_delimiter = ',')]
    pub feature_columns: Vec<String>,
    /// Images: width to resize to.
    #[arg(long, env = env::IMAGE_WIDTH, default_value_t = 224)]
    pub image_width: u32,
    /// Images: height to resize to.
    #[arg(long, env = env::IMAGE_HEIGHT, default_value_t = 224)]
    pub image_height: u32,
    /// Images: channels, 1 or 3.
    #[arg(long, env = env::IMAGE_CHANNELS, default_value_t = 3)]
    pub image_channels: u32,
    /// Fraction held out for validation.
    #[arg(long, env = env::SPLIT_VALIDATION, default_value_t = 0.1)]
    pub split_validation: f64,
    /// Fraction held out for test.
    #[arg(long, env = env::SPLIT_TEST, default_value_t = 0.1)]
    pub split_test: f64,
    /// Seed of the split.
    #[arg(long, env = env::SPLIT_SEED, default_value_t = 42)]
    pub split_seed: u64,
}

impl DataArgs {
    /// The options the dataset reader takes.
    pub fn options(&self) -> DataOptions {
        DataOptions {
            source: self.source.clone(),
            format: self.format,
            label_column: self.label_column.clone(),
            feature_columns: self.feature_columns.clone(),
            width: self.image_width,
            height: self.image_height,
            channels: self.image_channels,
            validation: self.split_validation,
            test: self.split_test,
            split_seed: self.split_seed,
        }
    }
}

/// `inspect` flags.
#[derive(Args, Debug)]
pub struct InspectArgs {
    #[command(flatten)]
    /// The dataset.
    pub data: DataArgs,
    #[command(flatten)]
    /// Summary output.
    pub summary: SummaryArgs,
}

/// `eval-split` flags.
#[derive(Args, Debug)]
pub struct EvalSplitArgs {
    #[command(flatten)]
    /// The dataset, read with the options the model was trained with.
    pub data: DataArgs,
    /// Dataset digest the model was trained on; a different digest fails.
    #[arg(long, env = env::DATASET_DIGEST)]
    pub dataset_digest: Option<String>,
    /// Local folder the split is written to (the verify Job's shared volume).
    #[arg(long, env = env::EVAL_OUT, default_value = hone_crds::contract::EVAL_DIR)]
    pub out: PathBuf,
    #[command(flatten)]
    /// Summary output.
    pub summary: SummaryArgs,
}

impl EvalSplitArgs {
    /// The options `evalsplit::run` takes.
    pub fn options(&self) -> EvalSplitOptions {
        EvalSplitOptions {
            data: self.data.options(),
            expected_digest: self.dataset_digest.clone(),
            out: self.out.clone(),
        }
    }
}

/// Where to train.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceArg {
    /// CUDA when available, else CPU.
    Auto,
    /// CPU.
    Cpu,
    /// The first CUDA device (fails when there is none).
    Cuda,
}

/// `train` flags: every TrainingJob field that shapes training.
#[derive(Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    /// The dataset.
    pub data: DataArgs,
    /// The run's output location (`<output>/<trainingjob>/<attempt>`); a
    /// restarted run resumes from the checkpoints found there.
    #[arg(long, env = env::OUTPUT)]
    pub output: String,
    /// Architecture.
    #[arg(long, env = env::ARCHITECTURE, value_parser = parse_architecture)]
    pub architecture: Architecture,
    /// Output head: `softmax` (one logit per class) or `sigmoid` (one
    /// logit, for two classes).
    #[arg(long, env = env::MODEL_HEAD, value_parser = parse_head, default_value = "softmax")]
    pub head: ModelHead,
    /// Serve live `hone_trainer_*` figures on `GET /metrics` at this address
    /// while training (e.g. `0.0.0.0:9090`; port 0 picks one, logged as
    /// `metrics_listening`).
    #[arg(long, env = env::METRICS_ADDR)]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Initial weights (a VarStore file) to fine-tune from.
    #[arg(long, env = env::PRETRAINED)]
    pub pretrained: Option<String>,
    /// Epochs.
    #[arg(long, env = env::EPOCHS, default_value_t = 10)]
    pub epochs: u32,
    /// Batch size.
    #[arg(long, env = env::BATCH_SIZE, default_value_t = 32)]
    pub batch_size: u32,
    /// Peak learning rate.
    #[arg(long, env = env::LEARNING_RATE, default_value_t = 0.001)]
    pub learning_rate: f64,
    /// Optimizer.
    #[arg(long, env = env::OPTIMIZER, value_parser = parse_optimizer, default_value = "adam")]
    pub optimizer: Optimizer,
    /// Weight decay.
    #[arg(long, env = env::WEIGHT_DECAY, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Learning-rate schedule.
    #[arg(long, env = env::SCHEDULER, value_parser = parse_scheduler, default_value = "none")]
    pub scheduler: Scheduler,
    /// Epochs of linear warm-up.
    #[arg(long, env = env::WARMUP_EPOCHS, default_value_t = 0)]
    pub warmup_epochs: u32,
    /// Early-stopping patience in epochs (0 disables).
    #[arg(long, env = env::EARLY_STOPPING_PATIENCE, default_value_t = 0)]
    pub early_stopping_patience: u32,
    /// Seed for initialisation, shuffling and augmentation.
    #[arg(long, env = env::SEED, default_value_t = 42)]
    pub seed: u64,
    /// Flip images left-right at random.
    #[arg(long, env = env::AUG_HORIZONTAL_FLIP, default_value_t = false)]
    pub horizontal_flip: bool,
    /// Random rotation range in degrees.
    #[arg(long, env = env::AUG_ROTATION_DEGREES, default_value_t = 0.0)]
    pub rotation_degrees: f64,
    /// Colour jitter strength (0..1).
    #[arg(long, env = env::AUG_COLOR_JITTER, default_value_t = 0.0)]
    pub color_jitter: f64,
    /// Dataset digest the run must train on; a different digest fails the run.
    #[arg(long, env = env::DATASET_DIGEST)]
    pub dataset_digest: Option<String>,
    /// Device.
    #[arg(long, env = env::DEVICE, value_enum, default_value = "auto")]
    pub device: DeviceArg,
    /// CPU threads for libtorch (default: all cores).
    #[arg(long, env = env::THREADS)]
    pub threads: Option<i32>,
    /// Where decoded images are kept: `auto` keeps them in memory when
    /// they fit a quarter of the memory limit (1 GiB without one) and
    /// streams them otherwise; `memory`; `stream`.
    #[arg(long, env = env::DATA_MODE, value_enum, default_value = "auto")]
    pub data_mode: DataMode,
    /// Folder for the on-disk cache of decoded images (an emptyDir or a
    /// PVC): streamed epochs read it instead of fetching and decoding again.
    #[arg(long, env = env::DATA_CACHE)]
    pub data_cache: Option<PathBuf>,
    /// Decode workers when streaming (0: one per CPU the pod may use).
    #[arg(long, env = env::DATA_WORKERS, default_value_t = 0)]
    pub data_workers: usize,
    /// Storage reads in flight at most (1 to 256).
    #[arg(long, env = env::DATA_READS, default_value_t = 16,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub data_reads: u16,
    /// Benchmarks only: train on the first batch over and over (the
    /// model's rate without the data path).
    #[arg(long, hide = true)]
    pub bench_compute_only: bool,
    /// MLflow tracking server URI.
    #[arg(long, env = env::MLFLOW_URI)]
    pub mlflow_uri: Option<String>,
    /// MLflow experiment name.
    #[arg(long, env = env::MLFLOW_EXPERIMENT, default_value = "hone")]
    pub mlflow_experiment: String,
    /// Run name for tracking (the TrainingJob name).
    #[arg(long, env = env::RUN_NAME)]
    pub run_name: Option<String>,
    #[command(flatten)]
    /// Summary output.
    pub summary: SummaryArgs,
}

impl TrainArgs {
    /// How images are kept and read.
    pub fn data_path(&self) -> DataPath {
        DataPath {
            mode: self.data_mode,
            cache_dir: self.data_cache.clone(),
            workers: self.data_workers.min(256),
            reads: usize::from(self.data_reads),
            memory_budget: 0,
        }
    }

    /// The hyperparameters, as the TrainingJob spec types.
    pub fn hyperparameters(&self) -> Hyperparameters {
        Hyperparameters {
            epochs: self.epochs,
            batch_size: self.batch_size,
            learning_rate: self.learning_rate,
            optimizer: self.optimizer,
            weight_decay: self.weight_decay,
            scheduler: self.scheduler,
            warmup_epochs: self.warmup_epochs,
            early_stopping_patience: self.early_stopping_patience,
            seed: self.seed,
            augmentation: Augmentation {
                horizontal_flip: self.horizontal_flip,
                rotation_degrees: self.rotation_degrees,
                color_jitter: self.color_jitter,
            },
        }
    }
}

/// Parses a spec enum from its wire name (`simple-cnn`, `adamw`, ...).
fn parse_wire<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::String(s.to_owned())).map_err(|e| e.to_string())
}

fn parse_architecture(s: &str) -> Result<Architecture, String> {
    parse_wire(s)
}

fn parse_head(s: &str) -> Result<ModelHead, String> {
    parse_wire(s)
}

fn parse_optimizer(s: &str) -> Result<Optimizer, String> {
    parse_wire(s)
}

fn parse_scheduler(s: &str) -> Result<Scheduler, String> {
    parse_wire(s)
}
