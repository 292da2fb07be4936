//! The training run: resume from the newest checkpoint, train epoch by
//! epoch, checkpoint after each, then trace the model to TorchScript and
//! write the output contract.

use std::collections::BTreeMap;
use std::time::Instant;

use hone_crds::contract::{self, EpochMetrics, InputKind, ModelCard, TrainSummary};
use hone_crds::modelversion::{Preprocessing, Signature};
use hone_crds::trainingjob::{Architecture, Hyperparameters};
use serde_json::json;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use crate::augment::augment;
use crate::checkpoint::{CheckpointError, Checkpoints, TrainState};
use crate::dataset::{self, DataError, DataOptions, Dataset, Inputs};
use crate::log::{EpochProgress, event};
use crate::model::{self, ModelError, Network};
use crate::optim::{Optimizer, learning_rate};
use crate::report;
use crate::rng::SplitMix64;
use crate::stats::input_stats;
use crate::tracking::Tracker;
use hone_storage::{Location, StorageError};

/// Validation-loss improvement that counts for early stopping.
const MIN_IMPROVEMENT: f64 = 1e-4;
/// Batch size for evaluation passes.
const EVAL_BATCH: i64 = 512;

/// Everything a run needs (the TrainingJob spec, as flags).
#[derive(Clone, Debug)]
pub struct TrainOptions {
    /// How to read the data.
    pub data: DataOptions,
    /// Network.
    pub architecture: Architecture,
    /// Initial weights (a VarStore file written by a previous run).
    pub pretrained: Option<String>,
    /// How to train.
    pub hyperparameters: Hyperparameters,
    /// The run's output location (`<output>/<trainingjob>/<attempt>`).
    pub output: String,
    /// Where to train.
    pub device: Device,
    /// Dataset digest the run must train on (the Dataset's pinned digest).
    pub expected_dataset_digest: Option<String>,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The data is unreadable or invalid.
    #[error(transparent)]
    Data(#[from] DataError),
    /// The dataset changed since it was verified.
    #[error(
        "dataset digest is {actual}, but the TrainingJob pinned {expected}: the data changed since verification"
    )]
    DigestMismatch {
        /// Pinned digest.
        expected: String,
        /// Digest read now.
        actual: String,
    },
    /// The network does not fit the data.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// Checkpointing failed.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// Writing outputs failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// libtorch failed (including out of memory).
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// The options cannot make a run.
    #[error("{0}")]
    Invalid(String),
}

impl TrainError {
    /// A short category for the termination summary.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Data(e) => e.category(),
            Self::DigestMismatch { .. } => "DatasetChanged",
            Self::Model(_) | Self::Invalid(_) => "InvalidSpec",
            Self::Checkpoint(_) | Self::Storage(_) => "Storage",
            Self::Torch(e) if e.to_string().contains("out of memory") => "OutOfMemory",
            Self::Torch(_) => "Torch",
        }
    }
}

/// The data as tensors on the training device, normalisation included.
struct Tensors {
    inputs: Tensor,
    labels: Tensor,
    /// Per-channel or per-feature mean and std, shaped to broadcast.
    mean: Tensor,
    std: Tensor,
    mean_values: Vec<f64>,
    std_values: Vec<f64>,
    image: bool,
}

impl Tensors {
    fn new(data: &Dataset, device: Device) -> Self {
        let n = data.len() as i64;
        let mut shape = vec![n];
        shape.extend_from_slice(&data.sample_shape);
        let (inputs, image) = match &data.inputs {
            Inputs::Images(bytes) => (Tensor::from_slice(bytes).view(shape.as_slice()), true),
            Inputs::Features(values) => (Tensor::from_slice(values).view(shape.as_slice()), false),
        };
        let train_idx = Tensor::from_slice(&data.split.train.iter().map(|&i| i as i64).collect::<Vec<_>>());
        let train = scale(&inputs.index_select(0, &train_idx), image);
        // Mean and std over every dimension except channels (images) or features.
        let dims: Vec<i64> = if image { vec![0, 2, 3] } else { vec![0] };
        let mean = train.mean_dim(dims.as_slice(), true, Kind::Float);
        let std = train.std_dim(dims.as_slice(), false, true).clamp_min(1e-6);
        let to_vec =
            |t: &Tensor| Vec::<f64>::try_from(t.flatten(0, -1).to_kind(Kind::Double)).unwrap_or_default();
        Self {
            mean_values: to_vec(&mean),
            std_values: to_vec(&std),
            inputs: inputs.to_device(device),
            labels: Tensor::from_slice(&data.labels).to_device(device),
            mean: mean.to_device(device),
            std: std.to_device(device),
            image,
        }
    }

    /// The batch at `idx`: scaled, optionally augmented, normalised.
    fn batch(&self, idx: &Tensor, aug: Option<&hone_crds::trainingjob::Augmentation>) -> (Tensor, Tensor) {
        let idx = idx.to_device(self.inputs.device());
        let mut x = scale(&self.inputs.index_select(0, &idx), self.image);
        if let (Some(aug), true) = (aug, self.image) {
            x = augment(&x, aug);
        }
        ((x - &self.mean) / &self.std, self.labels.index_select(0, &idx))
    }
}

/// Images to [0, 1] floats; features to floats.
fn scale(x: &Tensor, image: bool) -> Tensor {
    if image { x.to_kind(Kind::Float) / 255.0 } else { x.to_kind(Kind::Float) }
}

/// Loss, accuracy and predictions of `net` over `indices`.
struct Evaluation {
    loss: f64,
    accuracy: f64,
    predictions: Vec<i64>,
    labels: Vec<i64>,
}

fn evaluate(net: &Network, data: &Tensors, indices: &[usize]) -> Evaluation {
    if indices.is_empty() {
        return Evaluation {
            loss: f64::NAN,
            accuracy: f64::NAN,
            predictions: Vec::new(),
            labels: Vec::new(),
        };
    }
    let (mut loss_sum, mut predictions, mut labels) = (0.0, Vec::new(), Vec::new());
    tch::no_grad(|| {
        for chunk in indices.chunks(EVAL_BATCH as usize) {
            let idx = Tensor::from_slice(&chunk.iter().map(|&i| i as i64).collect::<Vec<_>>());
            let (x, y) = data.batch(&idx, None);
            let logits = net.forward_t(&x, false);
            loss_sum += logits.cross_entropy_for_logits(&y).double_value(&[]) * chunk.len() as f64;
            predictions.extend(
                Vec::<i64>::try_from(logits.argmax(-1, false).to_device(Device::Cpu)).unwrap_or_default(),
            );
            labels.extend(Vec::<i64>::try_from(y.to_device(Device::Cpu)).unwrap_or_default());
        }
    });
    let correct = predictions.iter().zip(&labels).filter(|(p, l)| p == l).count();
    Evaluation {
        loss: loss_sum / indices.len() as f64,
        accuracy: correct as f64 / indices.len() as f64,
        predictions,
        labels,
    }
}

/// Per-sample input features for drift statistics: raw features (tabular) or
/// each image's mean intensity per channel in [0, 1].
fn drift_features(data: &Dataset) -> (Vec<String>, Vec<f64>, usize) {
    let train = &data.split.train;
    match &data.inputs {
        Inputs::Features(values) => {
            let f = data.feature_names.len();
            let rows = train
                .iter()
                .flat_map(|&i| values[i * f..(i + 1) * f].iter().map(|&v| f64::from(v)))
                .collect();
            (data.feature_names.clone(), rows, f)
        }
        Inputs::Images(bytes) => {
            let c = data.sample_shape[0] as usize;
            let per_sample: usize = data.sample_shape.iter().product::<i64>() as usize;
            let plane = per_sample / c.max(1);
            let mut rows = Vec::with_capacity(train.len() * c);
            for &i in train {
                for ch in 0..c {
                    let start = i * per_sample + ch * plane;
                    let sum: u64 = bytes[start..start + plane].iter().map(|&b| u64::from(b)).sum();
                    rows.push(sum as f64 / plane as f64 / 255.0);
                }
            }
            ((0..c).map(|ch| format!("channel_{ch}")).collect(), rows, c)
        }
    }
}

/// What a finished run produced.
pub struct TrainOutcome {
    /// The termination summary.
    pub summary: TrainSummary,
    /// model.json as written.
    pub card: ModelCard,
}

/// Runs (or resumes) training and writes the output contract.
pub async fn run(opts: &TrainOptions, tracker: &mut dyn Tracker) -> Result<TrainOutcome, TrainError> {
    let hp = &opts.hyperparameters;
    if hp.batch_size == 0 || hp.epochs == 0 {
        return Err(TrainError::Invalid("epochs and batchSize must be at least 1".into()));
    }
    let started = Instant::now();
    let data = dataset::load(&opts.data).await?;
    if let Some(expected) = &opts.expected_dataset_digest
        && expected != &data.summary.digest
    {
        return Err(TrainError::DigestMismatch {
            expected: expected.clone(),
            actual: data.summary.digest.clone(),
        });
    }
    if data.split.train.is_empty() {
        return Err(TrainError::Invalid("the split leaves no training samples".into()));
    }
    event(
        "info",
        "dataset_loaded",
        json!({"digest": data.summary.digest, "samples": data.len(), "train": data.split.train.len(),
               "val": data.split.val.len(), "test": data.split.test.len(), "classes": data.classes.len(),
               "seconds": started.elapsed().as_secs_f64()}),
    );

    tch::manual_seed(hp.seed as i64);
    let mut vs = VarStore::new(opts.device);
    let net = model::build(opts.architecture, &vs.root(), &data.sample_shape, data.classes.len() as i64)?;
    let params: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .filter(|(_, t)| t.requires_grad())
        .collect::<BTreeMap<_, _>>()
        .into_iter()
        .collect();
    let mut optimizer = Optimizer::new(hp.optimizer, hp.weight_decay, params);
    let tensors = Tensors::new(&data, opts.device);

    let out = Location::parse(&opts.output)?;
    let checkpoints = Checkpoints::new(out.join(contract::CHECKPOINTS_DIR));
    let mut state = match checkpoints.restore_latest(&mut vs).await? {
        Some(restored) => {
            optimizer.load_state(&restored.optimizer).map_err(TrainError::Invalid)?;
            event(
                "info",
                "resumed",
                json!({"epoch": restored.state.epoch, "step": restored.state.global_step}),
            );
            restored.state
        }
        None => {
            if let Some(uri) = &opts.pretrained {
                let bytes = hone_storage::read(uri).await?;
                crate::checkpoint::load_var_store(&mut vs, &bytes)?;
                event("info", "pretrained_loaded", json!({"uri": uri}));
            }
            TrainState { seed: hp.seed, ..Default::default() }
        }
    };
    tracker.start(opts, &data);

    let batch = i64::from(hp.batch_size);
    let steps_per_epoch = (data.split.train.len() as i64 + batch - 1) / batch;
    let total_steps = steps_per_epoch * i64::from(hp.epochs);
    let warmup_steps = steps_per_epoch * i64::from(hp.warmup_epochs);
    let mut stopped_early = false;

    while state.epoch < hp.epochs && !stopped_early {
        let epoch = state.epoch + 1;
        let epoch_start = Instant::now();
        // The epoch's shuffle and augmentation streams depend only on (seed, epoch).
        tch::manual_seed((hp.seed ^ u64::from(epoch).wrapping_mul(0x9E37_79B9)) as i64);
        let mut order: Vec<i64> = data.split.train.iter().map(|&i| i as i64).collect();
        SplitMix64::stream(hp.seed, u64::from(epoch)).shuffle(&mut order);
        let progress = EpochProgress::new(epoch, hp.epochs, steps_per_epoch as u64);
        let (mut loss_sum, mut correct, mut lr) = (0.0, 0i64, hp.learning_rate);
        for chunk in order.chunks(batch as usize) {
            lr = learning_rate(hp.scheduler, hp.learning_rate, state.global_step, total_steps, warmup_steps);
            let (x, y) = tensors.batch(&Tensor::from_slice(chunk), Some(&hp.augmentation));
            let logits = net.forward_t(&x, true);
            let loss = logits.cross_entropy_for_logits(&y);
            optimizer.zero_grad();
            loss.backward();
            optimizer.step(lr);
            state.global_step += 1;
            let batch_loss = loss.double_value(&[]);
            loss_sum += batch_loss * chunk.len() as f64;
            correct += logits.argmax(-1, false).eq_tensor(&y).sum(Kind::Int64).int64_value(&[]);
            progress.step(batch_loss);
        }
        let seconds = epoch_start.elapsed().as_secs_f64();
        let n_train = data.split.train.len() as f64;
        let train_loss = loss_sum / n_train;
        let val = evaluate(&net, &tensors, &data.split.val);
        let metrics = EpochMetrics {
            epoch,
            train_loss,
            train_accuracy: correct as f64 / n_train,
            val_loss: if val.loss.is_nan() { train_loss } else { val.loss },
            val_accuracy: if val.accuracy.is_nan() { correct as f64 / n_train } else { val.accuracy },
            learning_rate: lr,
            samples_per_second: n_train / seconds.max(1e-9),
        };
        let summary = format!(
            "loss {:.4} val_loss {:.4} val_acc {:.4}",
            metrics.train_loss, metrics.val_loss, metrics.val_accuracy
        );
        progress.finish(&summary);
        if !progress.interactive() {
            event("info", "epoch", serde_json::to_value(&metrics).unwrap_or_default());
        }

        if state.best_val_loss.is_none_or(|best| metrics.val_loss < best - MIN_IMPROVEMENT) {
            state.best_val_loss = Some(metrics.val_loss);
            state.best_epoch = epoch;
            state.epochs_without_improvement = 0;
            if hp.early_stopping_patience > 0 {
                state.best_weights = Some(checkpoints.save_best(&vs, epoch).await?);
            }
        } else {
            state.epochs_without_improvement += 1;
        }
        stopped_early =
            hp.early_stopping_patience > 0 && state.epochs_without_improvement >= hp.early_stopping_patience;
        state.epoch = epoch;
        state.history.push(metrics.clone());
        tracker.epoch(&metrics);
        checkpoints.save(&vs, &optimizer.state(), &state).await?;
        write_metrics(&out, &state.history).await?;
        if stopped_early {
            event("info", "early_stop", json!({"epoch": epoch, "best_epoch": state.best_epoch}));
        }
    }

    if hp.early_stopping_patience > 0 && checkpoints.load_best(&mut vs, &state).await? {
        event("info", "restored_best", json!({"epoch": state.best_epoch}));
    }
    let val = evaluate(&net, &tensors, &data.split.val);
    let test = evaluate(&net, &tensors, &data.split.test);
    let mut final_metrics = BTreeMap::new();
    let last = state.history.last().cloned();
    for (key, value) in [
        ("val_loss", val.loss),
        ("val_accuracy", val.accuracy),
        ("test_loss", test.loss),
        ("test_accuracy", test.accuracy),
        ("train_loss", last.as_ref().map_or(f64::NAN, |m| m.train_loss)),
        ("train_accuracy", last.as_ref().map_or(f64::NAN, |m| m.train_accuracy)),
        ("epochs", f64::from(state.epoch)),
    ] {
        if value.is_finite() {
            final_metrics.insert(key.to_owned(), (value * 1e6).round() / 1e6);
        }
    }

    // Trace on the CPU with frozen weights, so the file loads anywhere.
    vs.set_device(Device::Cpu);
    vs.freeze();
    let model_bytes = trace(&net, &data.sample_shape)?;
    vs.set_device(opts.device);
    let artifact_digest =
        format!("sha256:{}", hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&model_bytes)));
    let model_loc = out.join(contract::MODEL_FILE);
    let model_size = model_bytes.len() as u64;
    model_loc.write(model_bytes).await?;

    let (names, values, columns) = drift_features(&data);
    let card = ModelCard {
        format_version: contract::MODEL_CARD_VERSION,
        input: data.kind,
        signature: Signature {
            input_shape: data.sample_shape.clone(),
            classes: data.classes.clone(),
            preprocessing: Some(Preprocessing {
                resize: (data.kind == InputKind::Image)
                    .then(|| vec![data.sample_shape[1] as u32, data.sample_shape[2] as u32]),
                mean: Some(tensors.mean_values.clone()),
                std: Some(tensors.std_values.clone()),
            }),
        },
        feature_names: data.feature_names.clone(),
        architecture: Some(opts.architecture.as_str().to_owned()),
        metrics: final_metrics.clone(),
        dataset_digest: Some(data.summary.digest.clone()),
        artifact_digest: Some(artifact_digest.clone()),
        training_stats: Some(input_stats(&names, &values, columns)),
        trainer_version: Some(env!("CARGO_PKG_VERSION").to_owned()),
    };
    let card_bytes = serde_json::to_vec_pretty(&card).unwrap_or_default();
    // Registration pins the card too (spec.artifact.cardDigest): the server uses its preprocessing.
    let card_digest = format!("sha256:{}", hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&card_bytes)));
    out.join(contract::MODEL_CARD_FILE).write(card_bytes).await?;
    let confusion = if test.labels.is_empty() { &val } else { &test };
    let png = report::render(&state.history, &data.classes, &confusion.labels, &confusion.predictions);
    match png {
        Ok(png) => out.join(contract::REPORT_FILE).write(png).await?,
        Err(e) => event("warn", "report_failed", json!({"error": e.to_string()})),
    }
    tracker.finish(&final_metrics, &out);

    let summary = TrainSummary {
        epoch: state.epoch,
        total_epochs: hp.epochs,
        metrics: final_metrics,
        artifact_uri: model_loc.uri().to_owned(),
        artifact_digest,
        artifact_size_bytes: model_size,
        card_digest: Some(card_digest),
        dataset_digest: Some(data.summary.digest.clone()),
        input_shape: data.sample_shape.clone(),
        classes: card.signature.classes.clone(),
        preprocessing: card.signature.preprocessing.clone(),
    };
    event(
        "info",
        "finished",
        json!({"seconds": started.elapsed().as_secs_f64(), "metrics": summary.metrics}),
    );
    Ok(TrainOutcome { summary, card })
}

async fn write_metrics(out: &Location, history: &[EpochMetrics]) -> Result<(), StorageError> {
    let lines: String =
        history.iter().filter_map(|m| serde_json::to_string(m).ok()).map(|l| l + "\n").collect();
    out.join(contract::METRICS_FILE).write(lines).await
}

/// Traces `net` in eval mode on a zero batch of one sample; returns the saved TorchScript bytes.
fn trace(net: &Network, sample_shape: &[i64]) -> Result<Vec<u8>, TrainError> {
    let mut shape = vec![1];
    shape.extend_from_slice(sample_shape);
    let example = Tensor::zeros(shape.as_slice(), (Kind::Float, Device::Cpu));
    let module = tch::no_grad(|| {
        tch::CModule::create_by_tracing("HoneModel", "forward", &[example], &mut |inputs| {
            vec![net.forward_t(&inputs[0], false)]
        })
    })?;
    let dir = tempfile::tempdir().map_err(|e| TrainError::Invalid(format!("scratch dir: {e}")))?;
    let path = dir.path().join(contract::MODEL_FILE);
    module.save(&path)?;
    std::fs::read(&path).map_err(|e| TrainError::Invalid(format!("reading traced model: {e}")))
}
