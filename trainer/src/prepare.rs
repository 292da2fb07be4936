//! The first phase of a run: load and check the data, build the network
//! and optimizer, and restore the newest checkpoint ([`Prepared`]); and the
//! parameters a tracker records for the run.

use std::collections::BTreeMap;
use std::time::Instant;

use hone_crds::contract;
use hone_crds::trainingjob::ModelHead;
use serde_json::json;
use tch::Tensor;
use tch::nn::VarStore;

use crate::checkpoint::{Checkpoints, TrainState};
use crate::dataset::{self, Dataset};
use crate::distributed::{GradientBuckets, Parallel};
use crate::log::event;
use crate::model::{self, Network};
use crate::optim::Optimizer;
use crate::tensors::Tensors;
use crate::tracking::RunStart;
use crate::train::{TrainError, TrainOptions};
use hone_storage::Location;

/// A run ready to train: data, network, optimizer and the state to resume from.
pub(crate) struct Prepared {
    pub(crate) data: Dataset,
    pub(crate) tensors: Tensors,
    pub(crate) vs: VarStore,
    pub(crate) net: Network,
    pub(crate) head: ModelHead,
    pub(crate) optimizer: Optimizer,
    pub(crate) buckets: GradientBuckets,
    pub(crate) state: TrainState,
    pub(crate) out: Location,
    pub(crate) checkpoints: Checkpoints,
    pub(crate) started: Instant,
}

/// The parameters a tracker records for this run.
pub(crate) fn run_start(opts: &TrainOptions, data: &Dataset) -> RunStart {
    let hp = &opts.hyperparameters;
    let params = [
        ("architecture", opts.architecture.as_str().to_owned()),
        ("head", opts.head.as_str().to_owned()),
        ("epochs", hp.epochs.to_string()),
        ("batch_size", hp.batch_size.to_string()),
        ("learning_rate", hp.learning_rate.to_string()),
        ("optimizer", format!("{:?}", hp.optimizer).to_lowercase()),
        ("weight_decay", hp.weight_decay.to_string()),
        ("scheduler", format!("{:?}", hp.scheduler).to_lowercase()),
        ("warmup_epochs", hp.warmup_epochs.to_string()),
        ("early_stopping_patience", hp.early_stopping_patience.to_string()),
        ("seed", hp.seed.to_string()),
        ("dataset_digest", data.summary.digest.clone()),
        ("dataset_samples", data.len().to_string()),
    ];
    RunStart {
        params: params.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        output: opts.output.clone(),
    }
}

/// Loads and checks the data, builds the network and optimizer, and
/// restores the newest checkpoint; every rank ends with rank 0's weights.
pub(crate) async fn prepare(opts: &TrainOptions, parallel: &Parallel<'_>) -> Result<Prepared, TrainError> {
    let hp = &opts.hyperparameters;
    if hp.batch_size == 0 || hp.epochs == 0 {
        return Err(TrainError::Invalid("epochs and batchSize must be at least 1".into()));
    }
    let started = Instant::now();
    let mut data = dataset::load(&opts.data, Some(&opts.data_path)).await?;
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

    if opts.head == ModelHead::Regression && data.targets.is_empty() {
        return Err(TrainError::Invalid(format!(
            "model.head regression needs a CSV Dataset whose label column {:?} holds only numbers; \
             this Dataset's labels are classes: use head softmax",
            opts.data.label_column
        )));
    }
    tch::manual_seed(hp.seed as i64);
    let mut vs = VarStore::new(opts.device);
    let outputs = model::outputs(opts.head, data.classes.len()).map_err(TrainError::Invalid)?;
    let net = model::build(opts.architecture, &vs.root(), &data.sample_shape, outputs)?;
    let params: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .filter(|(_, t)| t.requires_grad())
        .collect::<BTreeMap<_, _>>()
        .into_iter()
        .collect();
    // Name order, the same on every rank, so bucket i is the same tensors everywhere.
    let buckets = GradientBuckets::new(&params.iter().map(|(_, t)| t.shallow_clone()).collect::<Vec<_>>());
    let mut optimizer = Optimizer::new(hp.optimizer, hp.weight_decay, params);
    let tensors = Tensors::new(&mut data, opts.device, opts.head, &opts.data_path);
    event(
        "info",
        "data_path",
        json!({"streamed": tensors.streamed(), "cache": opts.data_path.cache_dir,
               "workers": opts.data_path.worker_count(), "reads": opts.data_path.reads}),
    );

    let out = Location::parse(&opts.output)?;
    // Every rank reads rank 0's checkpoints from the shared output location.
    let checkpoints = Checkpoints::new(out.join(contract::CHECKPOINTS_DIR));
    let state = match checkpoints.restore_latest(&mut vs).await? {
        Some(restored) => {
            optimizer.load_state(&restored.optimizer).map_err(TrainError::Invalid)?;
            event(
                "info",
                "resumed",
                json!({"epoch": restored.state.epoch, "step": restored.state.global_step,
                       "rank": parallel.rank()}),
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
    opts.metrics.epochs.set(i64::from(hp.epochs));
    opts.metrics.epoch.set(i64::from(state.epoch));
    opts.metrics.step.set(state.global_step);
    let leader_epoch = parallel.broadcast_i64(i64::from(state.epoch))?;
    if leader_epoch != i64::from(state.epoch) {
        return Err(TrainError::Invalid(format!(
            "rank {} resumed after epoch {}, rank 0 after epoch {leader_epoch}: the ranks see different checkpoints",
            parallel.rank(),
            state.epoch
        )));
    }
    parallel.broadcast_variables(&vs)?;
    if parallel.is_distributed() {
        event(
            "info",
            "data_parallel",
            json!({"rank": parallel.rank(), "world": parallel.world(), "buckets": buckets.len()}),
        );
    }
    let head = opts.head;
    Ok(Prepared { data, tensors, vs, net, head, optimizer, buckets, state, out, checkpoints, started })
}
