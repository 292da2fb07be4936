//! Rank 0's last phase of a run: the final evaluation, the TorchScript
//! trace, `model.json`, the report and the termination summary.

use std::collections::BTreeMap;

use hone_crds::contract::TrainSummary;
use hone_crds::contract::{self, InputKind, ModelCard};
use hone_crds::modelversion::{OutputKind, Preprocessing, Signature, Task};
use hone_crds::trainingjob::ModelHead;
use serde_json::json;
use tch::{Device, Kind, Tensor};

use crate::dataset::{Dataset, Inputs};
use crate::log::event;
use crate::model::Network;
use crate::report;
use crate::stats::input_stats;
use crate::tensors::{Evaluation, evaluate, regression_errors};
use crate::tracking::Tracker;
use crate::train::{Prepared, TrainError, TrainOptions, TrainOutcome};

/// Per-sample input features for drift statistics: raw features (tabular) or
/// each image's mean intensity per channel in [0, 1].
fn drift_features(data: &Dataset) -> (Vec<String>, Vec<f64>, usize) {
    let train = &data.split.train;
    if let Inputs::Features(values) = &data.inputs {
        let f = data.feature_names.len();
        let rows =
            train.iter().flat_map(|&i| values[i * f..(i + 1) * f].iter().map(|&v| f64::from(v))).collect();
        return (data.feature_names.clone(), rows, f);
    }
    let c = data.sample_shape[0] as usize;
    let mut rows = Vec::with_capacity(train.len() * c);
    for &i in train {
        rows.extend((0..c).map(|ch| data.channel_moments.get(i * c + ch).map_or(0.0, |m| m[0])));
    }
    ((0..c).map(|ch| format!("channel_{ch}")).collect(), rows, c)
}

/// The final evaluation: the best weights (with early stopping) on the
/// validation and test splits, and the run's final metrics.
pub(crate) struct FinalEvaluation {
    /// The validation split.
    pub(crate) val: Evaluation,
    /// The test split.
    pub(crate) test: Evaluation,
    /// `val_*`, `test_*`, `train_*` and `epochs`, rounded to 6 places.
    pub(crate) metrics: BTreeMap<String, f64>,
}

/// Rank 0's third phase: restores the best weights when early stopping
/// kept them, and evaluates on the held-out splits.
pub(crate) async fn evaluate_final(
    opts: &TrainOptions,
    run: &mut Prepared,
) -> Result<FinalEvaluation, TrainError> {
    let Prepared { data, tensors, vs, net, head, state, checkpoints, .. } = run;
    let head = *head;
    if opts.hyperparameters.early_stopping_patience > 0 && checkpoints.load_best(vs, state).await? {
        event("info", "restored_best", json!({"epoch": state.best_epoch}));
    }
    let val = evaluate(net, head, tensors, &data.split.val)?;
    let test = evaluate(net, head, tensors, &data.split.test)?;
    let mut metrics = BTreeMap::new();
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
            metrics.insert(key.to_owned(), (value * 1e6).round() / 1e6);
        }
    }
    if head == ModelHead::Regression {
        // In the target's own units; the losses above are on it standardised.
        for (split, indices) in [("val", &data.split.val), ("test", &data.split.test)] {
            let Some(e) = regression_errors(net, tensors, indices)? else { continue };
            for (name, value) in [("rmse", e.rmse), ("mae", e.mae), ("r2", e.r2)] {
                if value.is_finite() {
                    metrics.insert(format!("{split}_{name}"), (value * 1e6).round() / 1e6);
                }
            }
        }
    }
    Ok(FinalEvaluation { val, test, metrics })
}

/// Rank 0's last phase: TorchScript, model.json, the report and the summary.
pub(crate) async fn export(
    opts: &TrainOptions,
    run: Prepared,
    evaluation: FinalEvaluation,
    tracker: &mut dyn Tracker,
) -> Result<TrainOutcome, TrainError> {
    let hp = &opts.hyperparameters;
    let Prepared { data, tensors, mut vs, net, head, state, out, started, .. } = run;
    let FinalEvaluation { val, test, metrics: final_metrics } = evaluation;

    // Trace on the CPU with frozen weights, so the file loads anywhere.
    vs.set_device(Device::Cpu);
    vs.freeze();
    // A regression head answers in the target's units: the standardisation is undone in the graph.
    let unscale = (head == ModelHead::Regression).then_some((tensors.target_std, tensors.target_mean));
    let model_bytes = trace(&net, &data.sample_shape, unscale)?;
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
            // A regression model's one output is named after the label column.
            classes: match head {
                ModelHead::Regression => vec![opts.data.label_column.clone()],
                _ => data.classes.clone(),
            },
            preprocessing: Some(Preprocessing {
                resize: (data.kind == InputKind::Image)
                    .then(|| vec![data.sample_shape[1] as u32, data.sample_shape[2] as u32]),
                mean: Some(tensors.mean_values.clone()),
                std: Some(tensors.std_values.clone()),
            }),
            task: match head {
                ModelHead::Softmax => Task::Classification,
                ModelHead::Sigmoid => Task::Binary,
                ModelHead::Regression => Task::Regression,
            },
            threshold: None,
            output: OutputKind::Logits,
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
    // A regression model has no confusion matrix: its panel stays empty.
    let png =
        report::render(&state.history, &card.signature.classes, &confusion.labels, &confusion.predictions);
    match png {
        Ok(png) => out.join(contract::REPORT_FILE).write(png).await?,
        Err(e) => event("warn", "report_failed", json!({"error": e.to_string()})),
    }
    let mlflow_run_id = tracker.finish(&final_metrics, &out);

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
        task: card.signature.task,
        threshold: card.signature.threshold,
        output: card.signature.output,
        artifact_format: Default::default(),
        mlflow_run_id,
    };
    event(
        "info",
        "finished",
        json!({"seconds": started.elapsed().as_secs_f64(), "metrics": summary.metrics}),
    );
    Ok(TrainOutcome::Leader { summary: Box::new(summary), card: Box::new(card) })
}

/// Traces `net` in eval mode on a zero batch of one sample, its output
/// times `scale.0` plus `scale.1` when given; returns the saved TorchScript bytes.
fn trace(net: &Network, sample_shape: &[i64], scale: Option<(f64, f64)>) -> Result<Vec<u8>, TrainError> {
    let mut shape = vec![1];
    shape.extend_from_slice(sample_shape);
    let example = Tensor::zeros(shape.as_slice(), (Kind::Float, Device::Cpu));
    let module = tch::no_grad(|| {
        tch::CModule::create_by_tracing("HoneModel", "forward", &[example], &mut |inputs| {
            let out = net.forward_t(&inputs[0], false);
            vec![match scale {
                Some((std, mean)) => out * std + mean,
                None => out,
            }]
        })
    })?;
    let dir = tempfile::tempdir().map_err(|e| TrainError::Invalid(format!("scratch dir: {e}")))?;
    let path = dir.path().join(contract::MODEL_FILE);
    module.save(&path)?;
    std::fs::read(&path).map_err(|e| TrainError::Invalid(format!("reading traced model: {e}")))
}
