//! Environment variables the trainer reads (`trainer/src/cli.rs`, every flag
//! has one) and the operator sets in inspect, training and purge Jobs: the
//! contract between the Job builders and `hone-trainer`.

/// Where `pvc://` claims are mounted in a pod (read by `hone-storage`).
pub const PVC_ROOT: &str = "HONE_PVC_ROOT";
/// Dataset URI.
pub const DATASET_SOURCE: &str = "HONE_DATASET_SOURCE";
/// `ImageFolder` or `CSV`.
pub const DATASET_FORMAT: &str = "HONE_DATASET_FORMAT";
/// CSV label column.
pub const CSV_LABEL_COLUMN: &str = "HONE_CSV_LABEL_COLUMN";
/// CSV feature columns, comma-separated.
pub const CSV_FEATURE_COLUMNS: &str = "HONE_CSV_FEATURE_COLUMNS";
/// Image width.
pub const IMAGE_WIDTH: &str = "HONE_IMAGE_WIDTH";
/// Image height.
pub const IMAGE_HEIGHT: &str = "HONE_IMAGE_HEIGHT";
/// Image channels.
pub const IMAGE_CHANNELS: &str = "HONE_IMAGE_CHANNELS";
/// Validation fraction.
pub const SPLIT_VALIDATION: &str = "HONE_SPLIT_VALIDATION";
/// Test fraction.
pub const SPLIT_TEST: &str = "HONE_SPLIT_TEST";
/// Split seed.
pub const SPLIT_SEED: &str = "HONE_SPLIT_SEED";
/// Termination log path.
pub const TERMINATION_LOG: &str = "HONE_TERMINATION_LOG";
/// Output location of a training run.
pub const OUTPUT: &str = "HONE_OUTPUT";
/// Architecture.
pub const ARCHITECTURE: &str = "HONE_ARCHITECTURE";
/// Address the trainer serves `GET /metrics` on while it trains (e.g.
/// `0.0.0.0:9091`; the operator sets it to port [`super::TRAINER_METRICS_PORT`]).
pub const METRICS_ADDR: &str = "HONE_METRICS_ADDR";
/// Output head (`softmax`, `sigmoid`).
pub const MODEL_HEAD: &str = "HONE_MODEL_HEAD";
/// Pretrained weights URI.
pub const PRETRAINED: &str = "HONE_PRETRAINED";
/// Epochs.
pub const EPOCHS: &str = "HONE_EPOCHS";
/// Batch size.
pub const BATCH_SIZE: &str = "HONE_BATCH_SIZE";
/// Learning rate.
pub const LEARNING_RATE: &str = "HONE_LEARNING_RATE";
/// Optimizer.
pub const OPTIMIZER: &str = "HONE_OPTIMIZER";
/// Weight decay.
pub const WEIGHT_DECAY: &str = "HONE_WEIGHT_DECAY";
/// Scheduler.
pub const SCHEDULER: &str = "HONE_SCHEDULER";
/// Warm-up epochs.
pub const WARMUP_EPOCHS: &str = "HONE_WARMUP_EPOCHS";
/// Early-stopping patience.
pub const EARLY_STOPPING_PATIENCE: &str = "HONE_EARLY_STOPPING_PATIENCE";
/// Training seed.
pub const SEED: &str = "HONE_SEED";
/// Horizontal flip augmentation.
pub const AUG_HORIZONTAL_FLIP: &str = "HONE_AUG_HORIZONTAL_FLIP";
/// Rotation augmentation.
pub const AUG_ROTATION_DEGREES: &str = "HONE_AUG_ROTATION_DEGREES";
/// Colour jitter augmentation.
pub const AUG_COLOR_JITTER: &str = "HONE_AUG_COLOR_JITTER";
/// Dataset digest the run must train on.
pub const DATASET_DIGEST: &str = "HONE_DATASET_DIGEST";
/// Device (`auto`, `cpu`, `cuda`).
pub const DEVICE: &str = "HONE_DEVICE";
/// libtorch intra-op threads.
pub const THREADS: &str = "HONE_THREADS";
/// Where training keeps decoded images: `auto`, `memory` or `stream`.
pub const DATA_MODE: &str = "HONE_DATA_MODE";
/// Folder of the on-disk cache of decoded images (the operator mounts the
/// TrainingJob's `dataCache` volume there).
pub const DATA_CACHE: &str = "HONE_DATA_CACHE";
/// Decode workers of the streaming data path (default: one per CPU).
pub const DATA_WORKERS: &str = "HONE_DATA_WORKERS";
/// Storage reads in flight at most while reading the data.
pub const DATA_READS: &str = "HONE_DATA_READS";
/// MLflow tracking URI.
pub const MLFLOW_URI: &str = "HONE_MLFLOW_URI";
/// MLflow experiment.
pub const MLFLOW_EXPERIMENT: &str = "HONE_MLFLOW_EXPERIMENT";
/// Run name (the TrainingJob name).
pub const RUN_NAME: &str = "HONE_RUN_NAME";
/// Objects `purge` deletes, comma-separated.
pub const PURGE_URIS: &str = "HONE_PURGE_URIS";
/// Whether `purge` deletes everything below each URI.
pub const PURGE_PREFIX: &str = "HONE_PURGE_PREFIX";
/// `eval-split`: folder the held-out test split is written to.
pub const EVAL_OUT: &str = "HONE_EVAL_OUT";
/// torchrun's rendezvous host: rank 0's TCPStore (the operator points it
/// at pod 0 through the headless Service).
pub const MASTER_ADDR: &str = "MASTER_ADDR";
/// torchrun's rendezvous port.
pub const MASTER_PORT: &str = "MASTER_PORT";
/// torchrun's number of processes.
pub const WORLD_SIZE: &str = "WORLD_SIZE";
/// torchrun's rank of this process (0-based).
pub const RANK: &str = "RANK";
/// torchrun's rank of this process within its node (picks its GPU).
pub const LOCAL_RANK: &str = "LOCAL_RANK";
/// Path of `libhone_dist_nccl.so`, where it is not beside the trainer binary.
pub const DIST_NCCL_PLUGIN: &str = "HONE_DIST_NCCL_PLUGIN";
