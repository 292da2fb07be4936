//! The training run: resume from the newest checkpoint, train epoch by
//! epoch, checkpoint after each, then trace the model to TorchScript and
//! write the output contract. With a process group it is one rank of a
//! data-parallel run (`distributed`): rank 0 alone writes checkpoints and
//! the contract.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use hone_crds::contract::{self, EpochMetrics, ModelCard, TrainSummary, WorkerSummary};
use hone_crds::trainingjob::{Architecture, Hyperparameters, ModelHead};
use serde_json::json;
use tch::{Device, Kind, Tensor};

use crate::checkpoint::CheckpointError;
use crate::dataset::{DataError, DataOptions, DataPath};
use crate::distributed::{Parallel, shard};
use crate::log::{EpochProgress, event};
use crate::metrics::TrainerMetrics;
use crate::model::{self, ModelError};
use crate::optim::learning_rate;
pub(crate) use crate::prepare::Prepared;
use crate::prepare::{prepare, run_start};
use crate::rng::SplitMix64;
use crate::tensors::evaluate_sums;
use crate::tracking::Tracker;
use hone_dist::{DistError, ProcessGroup};
use hone_storage::{Location, StorageError};

/// Validation-loss improvement that counts for early stopping.
const MIN_IMPROVEMENT: f64 = 1e-4;

/// Everything a run needs (the TrainingJob spec, as flags).
#[derive(Clone, Debug)]
pub struct TrainOptions {
    /// How to read the data.
    pub data: DataOptions,
    /// Network.
    pub architecture: Architecture,
    /// Output head.
    pub head: ModelHead,
    /// Initial weights (a VarStore file written by a previous run).
    pub pretrained: Option<String>,
    /// How to train.
    pub hyperparameters: Hyperparameters,
    /// The run's output location (`<output>/<trainingjob>/<attempt>`).
    pub output: String,
    /// Where to train.
    pub device: Device,
    /// How images are kept and read: in memory, or streamed through the
    /// decode pool and the on-disk cache.
    pub data_path: DataPath,
    /// Benchmarks only: train on the first batch over and over, so the rate
    /// is the model's alone, without the data path.
    pub compute_only: bool,
    /// Dataset digest the run must train on (the Dataset's pinned digest).
    pub expected_dataset_digest: Option<String>,
    /// Live figures for `/metrics`.
    pub metrics: std::sync::Arc<TrainerMetrics>,
    /// Set on SIGTERM (preemption, a node drain): the run checkpoints where
    /// it is, mid-epoch, and stops with [`TrainError::Stopped`].
    pub stop: std::sync::Arc<AtomicBool>,
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
    /// A collective of a data-parallel run failed (a peer gone, a timeout).
    #[error("data-parallel: {0}")]
    Dist(#[from] DistError),
    /// libtorch failed (including out of memory).
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// The options cannot make a run.
    #[error("{0}")]
    Invalid(String),
    /// Asked to stop (SIGTERM); the checkpoint at the step it reached is saved.
    #[error(
        "stopped by SIGTERM {step} of {steps} steps into epoch {epoch}; its checkpoint is saved and the \
         next attempt resumes there"
    )]
    Stopped {
        /// The epoch in progress.
        epoch: u32,
        /// Steps of it taken.
        step: u64,
        /// Steps of each epoch.
        steps: u64,
    },
}

impl TrainError {
    /// A short category for the termination summary.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Data(e) => e.category(),
            Self::DigestMismatch { .. } => "DatasetChanged",
            Self::Model(_) | Self::Invalid(_) => "InvalidSpec",
            Self::Checkpoint(_) | Self::Storage(_) => "Storage",
            Self::Dist(e) => e.category(),
            Self::Torch(e) if e.to_string().contains("out of memory") => "OutOfMemory",
            Self::Torch(_) => "Torch",
            Self::Stopped { .. } => "Preempted",
        }
    }
}

/// What a finished run produced.
pub enum TrainOutcome {
    /// Rank 0 (or the only process): the output contract was written.
    Leader {
        /// The termination summary.
        summary: Box<TrainSummary>,
        /// model.json as written.
        card: Box<ModelCard>,
    },
    /// Another rank of a data-parallel run: it trained, rank 0 wrote everything.
    Worker(WorkerSummary),
}

/// Runs (or resumes) training and writes the output contract; with a
/// process group, as one rank of a data-parallel run.
pub async fn run(
    opts: &TrainOptions,
    tracker: &mut dyn Tracker,
    group: Option<&ProcessGroup>,
) -> Result<TrainOutcome, TrainError> {
    let parallel = Parallel::new(group);
    let mut run = prepare(opts, &parallel).await?;
    if parallel.is_leader() {
        tracker.start(&run_start(opts, &run.data));
    }
    train_epochs(opts, &parallel, &mut run, tracker).await?;
    if !parallel.is_leader() {
        let summary = WorkerSummary {
            rank: parallel.rank() as u32,
            world_size: parallel.world() as u32,
            epoch: run.state.epoch,
            message: format!(
                "worker {} of {} trained {} epochs; rank 0 wrote the model and its summary",
                parallel.rank(),
                parallel.world(),
                run.state.epoch
            ),
        };
        event("info", "worker_finished", json!({"rank": summary.rank, "epoch": summary.epoch}));
        return Ok(TrainOutcome::Worker(summary));
    }
    let evaluation = crate::export::evaluate_final(opts, &mut run).await?;
    crate::export::export(opts, run, evaluation, tracker).await
}

/// Step counts of a run, the same on every rank.
struct Schedule {
    batch: i64,
    steps_per_epoch: i64,
    total_steps: i64,
    warmup_steps: i64,
}

/// This rank's sums over one epoch's steps.
struct StepSums {
    loss: f64,
    correct: i64,
    seen: usize,
    learning_rate: f64,
    allreduce_ms_per_step: Option<f64>,
    /// Seconds of the steps themselves (not the validation pass).
    seconds: f64,
    /// Stopped before the epoch's end (SIGTERM); the state says where.
    stopped: bool,
}

/// Trains the remaining epochs on this rank's shard of each, checkpointing
/// after each epoch (rank 0) and stopping early when validation stalls.
async fn train_epochs(
    opts: &TrainOptions,
    parallel: &Parallel<'_>,
    run: &mut Prepared,
    tracker: &mut dyn Tracker,
) -> Result<(), TrainError> {
    let hp = &opts.hyperparameters;
    let batch = i64::from(hp.batch_size);
    let shard_len = run.data.split.train.len().div_ceil(parallel.world()) as i64;
    let steps_per_epoch = (shard_len + batch - 1) / batch;
    let schedule = Schedule {
        batch,
        steps_per_epoch,
        total_steps: steps_per_epoch * i64::from(hp.epochs),
        warmup_steps: steps_per_epoch * i64::from(hp.warmup_epochs),
    };
    opts.metrics.steps.set(schedule.total_steps);
    let val_share: Vec<usize> =
        run.data.split.val.iter().copied().skip(parallel.rank()).step_by(parallel.world()).collect();
    let mut stopped_early = false;
    while run.state.epoch < hp.epochs && !stopped_early {
        let epoch = run.state.epoch + 1;
        let progress = EpochProgress::new(epoch, hp.epochs, schedule.steps_per_epoch as u64);
        let steps = epoch_steps(opts, parallel, run, &schedule, epoch, &progress)?;
        if steps.stopped {
            // Every rank stopped at the same step; rank 0 writes where, and
            // the next attempt resumes there.
            if parallel.is_leader() {
                run.checkpoints.save(&run.vs, &run.optimizer.state(), &run.state).await?;
            }
            parallel.barrier()?;
            event(
                "warn",
                "stopped",
                json!({"epoch": epoch, "step": run.state.epoch_steps,
                  "globalStep": run.state.global_step}),
            );
            return Err(TrainError::Stopped {
                epoch,
                step: run.state.epoch_steps,
                steps: schedule.steps_per_epoch as u64,
            });
        }
        run.state.epoch_steps = 0;
        run.state.partial_loss = 0.0;
        run.state.partial_correct = 0;
        // Batch-norm statistics differ per rank; rank 0's are the model's.
        parallel.broadcast_buffers(&run.vs)?;
        let [loss_total, correct_total, seen] =
            sums3(parallel, [steps.loss, steps.correct as f64, steps.seen as f64])?;
        let [val_loss_sum, val_correct, val_n] =
            sums3(parallel, evaluate_sums(&run.net, run.head, &run.tensors, &val_share)?)?;
        // A regression head has no accuracy (its errors are in the final metrics).
        let accuracy =
            |correct: f64, n: f64| if run.head == ModelHead::Regression { f64::NAN } else { correct / n };
        let (train_loss, train_accuracy) = (loss_total / seen, accuracy(correct_total, seen));
        let metrics = EpochMetrics {
            epoch,
            train_loss,
            train_accuracy,
            val_loss: if val_n > 0.0 { val_loss_sum / val_n } else { train_loss },
            val_accuracy: if val_n > 0.0 { accuracy(val_correct, val_n) } else { train_accuracy },
            learning_rate: steps.learning_rate,
            // Training throughput: the steps' own time, as a PyTorch loop measures it.
            samples_per_second: seen / steps.seconds.max(1e-9),
            allreduce_ms_per_step: steps.allreduce_ms_per_step,
        };
        let live = &opts.metrics;
        live.epoch.set(i64::from(epoch));
        live.accuracy.set(train_accuracy);
        live.val_loss.set(metrics.val_loss);
        live.val_accuracy.set(metrics.val_accuracy);
        live.samples_per_second.set(metrics.samples_per_second);
        progress.finish(&format!(
            "loss {:.4} val_loss {:.4} val_acc {:.4}",
            metrics.train_loss, metrics.val_loss, metrics.val_accuracy
        ));
        if !progress.interactive() {
            event("info", "epoch", serde_json::to_value(&metrics).unwrap_or_default());
        }
        stopped_early = end_epoch(hp, parallel, run, metrics, tracker).await?;
    }
    Ok(())
}

/// One epoch's steps on this rank's shard of the epoch's permutation.
fn epoch_steps(
    opts: &TrainOptions,
    parallel: &Parallel<'_>,
    run: &mut Prepared,
    schedule: &Schedule,
    epoch: u32,
    progress: &EpochProgress,
) -> Result<StepSums, TrainError> {
    let (hp, live, stop) = (&opts.hyperparameters, &*opts.metrics, &*opts.stop);
    let Prepared { data, tensors, net, head, optimizer, buckets, state, .. } = run;
    // The epoch's shuffle depends only on (seed, epoch), so every rank
    // shards the same permutation; augmentation and dropout streams
    // also depend on the rank (rank 0's is a single process's).
    let rank_stream = (parallel.rank() as u64).wrapping_mul(0x632B_E59B_D9B4_E019);
    tch::manual_seed((hp.seed ^ u64::from(epoch).wrapping_mul(0x9E37_79B9) ^ rank_stream) as i64);
    let mut order: Vec<i64> = data.split.train.iter().map(|&i| i as i64).collect();
    SplitMix64::stream(hp.seed, u64::from(epoch)).shuffle(&mut order);
    let mine = shard(&order, parallel.rank(), parallel.world());
    // A run stopped mid-epoch resumes after the steps it took (the same
    // permutation), with the sums of those steps.
    let mut sums = StepSums {
        loss: state.partial_loss,
        correct: state.partial_correct,
        seen: mine.len(),
        learning_rate: hp.learning_rate,
        allreduce_ms_per_step: None,
        seconds: 0.0,
        stopped: false,
    };
    let skip = state.epoch_steps as usize;
    let chunks: Vec<Vec<usize>> = mine
        .chunks(schedule.batch as usize)
        .skip(skip)
        .map(|c| c.iter().map(|&i| i as usize).collect())
        .collect();
    let mut batches = tensors.batches(chunks, Some(&hp.augmentation));
    let mut first: Option<(Tensor, Tensor)> = None;
    let (started, mut waited, mut done) = (Instant::now(), 0.0f64, 0usize);
    for (index, chunk) in mine.chunks(schedule.batch as usize).enumerate().skip(skip) {
        if stop_requested(parallel, stop)? {
            state.epoch_steps = index as u64;
            state.partial_loss = sums.loss;
            state.partial_correct = sums.correct;
            sums.stopped = true;
            break;
        }
        sums.learning_rate = learning_rate(
            hp.scheduler,
            hp.learning_rate,
            state.global_step,
            schedule.total_steps,
            schedule.warmup_steps,
        );
        let fetched = Instant::now();
        let (x, y) = match &first {
            Some((x, y)) if opts.compute_only => (x.shallow_clone(), y.shallow_clone()),
            _ => {
                let Some(batch) = batches.next() else { break };
                let (x, y) = batch?;
                if opts.compute_only {
                    first = Some((x.shallow_clone(), y.shallow_clone()));
                }
                (x, y)
            }
        };
        waited += fetched.elapsed().as_secs_f64();
        let logits = net.forward_t(&x, true);
        let loss = model::loss(*head, &logits, &y);
        optimizer.zero_grad();
        loss.backward();
        buckets.average(parallel)?;
        optimizer.step(sums.learning_rate);
        state.global_step += 1;
        let batch_loss = loss.double_value(&[]);
        sums.loss += batch_loss * chunk.len() as f64;
        if *head != ModelHead::Regression {
            sums.correct += model::answers(*head, &logits).eq_tensor(&y).sum(Kind::Int64).int64_value(&[]);
        }
        progress.step(batch_loss);
        done += chunk.len();
        let elapsed = started.elapsed().as_secs_f64().max(1e-9);
        live.step.set(state.global_step);
        live.loss.set(batch_loss);
        live.learning_rate.set(sums.learning_rate);
        live.samples_per_second.set(done as f64 / elapsed);
        live.data_wait_ratio.set((waited / elapsed).min(1.0));
    }
    sums.allreduce_ms_per_step = buckets.take_time();
    sums.seconds = started.elapsed().as_secs_f64();
    Ok(sums)
}

/// Records a finished epoch: the best weights so far, rank 0's checkpoint
/// and metrics, and whether validation stalled long enough to stop.
async fn end_epoch(
    hp: &Hyperparameters,
    parallel: &Parallel<'_>,
    run: &mut Prepared,
    metrics: EpochMetrics,
    tracker: &mut dyn Tracker,
) -> Result<bool, TrainError> {
    let Prepared { vs, optimizer, state, out, checkpoints, .. } = run;
    let epoch = metrics.epoch;
    if state.best_val_loss.is_none_or(|best| metrics.val_loss < best - MIN_IMPROVEMENT) {
        state.best_val_loss = Some(metrics.val_loss);
        state.best_epoch = epoch;
        state.epochs_without_improvement = 0;
        if hp.early_stopping_patience > 0 && parallel.is_leader() {
            state.best_weights = Some(checkpoints.save_best(vs, epoch).await?);
        }
    } else {
        state.epochs_without_improvement += 1;
    }
    let stopped_early =
        hp.early_stopping_patience > 0 && state.epochs_without_improvement >= hp.early_stopping_patience;
    state.epoch = epoch;
    if parallel.is_leader() {
        tracker.epoch(&metrics);
    }
    state.history.push(metrics);
    if parallel.is_leader() {
        checkpoints.save(vs, &optimizer.state(), state).await?;
        write_metrics(out, &state.history).await?;
    }
    // No rank starts the next epoch before rank 0's checkpoint of this one is complete.
    parallel.barrier()?;
    if stopped_early {
        event("info", "early_stop", json!({"epoch": epoch, "best_epoch": state.best_epoch}));
    }
    Ok(stopped_early)
}

/// Whether to stop before the next step: this process got SIGTERM, or (in
/// a data-parallel run) any rank did, so that all stop at the same step.
fn stop_requested(parallel: &Parallel<'_>, stop: &AtomicBool) -> Result<bool, TrainError> {
    let mine = stop.load(Ordering::Relaxed);
    if !parallel.is_distributed() {
        return Ok(mine);
    }
    Ok(parallel.sum(&[f64::from(u8::from(mine))])?[0] > 0.0)
}

/// Sums three figures over the ranks.
fn sums3(parallel: &Parallel<'_>, values: [f64; 3]) -> Result<[f64; 3], TrainError> {
    let summed = parallel.sum(&values)?;
    Ok([summed[0], summed[1], summed[2]])
}

async fn write_metrics(out: &Location, history: &[EpochMetrics]) -> Result<(), StorageError> {
    let lines: String =
        history.iter().filter_map(|m| serde_json::to_string(m).ok()).map(|l| l + "\n").collect();
    out.join(contract::METRICS_FILE).write(lines).await
}
