//! The dataset as tensors on the training device, and evaluation passes
//! over index lists (whole splits, or one rank's share of one).

use hone_crds::trainingjob::ModelHead;
use tch::{Device, Kind, Tensor};

use crate::augment::augment;
use crate::dataset::{Dataset, Inputs};
use crate::model::Network;

/// Batch size for evaluation passes.
const EVAL_BATCH: i64 = 512;

/// The data as tensors on the training device, normalisation included.
pub struct Tensors {
    inputs: Tensor,
    /// What a batch is scored against: class indices, or for a regression
    /// head the standardised targets.
    labels: Tensor,
    /// Mean and std of the training split's targets (regression; 0 and 1
    /// otherwise): the exported model undoes the standardisation.
    pub target_mean: f64,
    /// See `target_mean`.
    pub target_std: f64,
    /// Per-channel or per-feature mean and std, shaped to broadcast.
    mean: Tensor,
    std: Tensor,
    /// Mean of every channel or feature (model.json's preprocessing).
    pub mean_values: Vec<f64>,
    /// Std of every channel or feature.
    pub std_values: Vec<f64>,
    image: bool,
}

impl Tensors {
    /// The samples of `data` on `device`, with the training split's
    /// statistics; a `regression` head scores against `data.targets`.
    pub fn new(data: &Dataset, device: Device, head: ModelHead) -> Self {
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
        let (labels, target_mean, target_std) = if head == ModelHead::Regression {
            let targets = Tensor::from_slice(&data.targets);
            let train_targets = targets.index_select(0, &train_idx).to_kind(Kind::Double);
            let mean = train_targets.mean(Kind::Double).double_value(&[]);
            let std = train_targets.std(false).double_value(&[]);
            let std = if std.is_finite() && std > 1e-12 { std } else { 1.0 };
            ((targets - mean) / std, mean, std)
        } else {
            (Tensor::from_slice(&data.labels), 0.0, 1.0)
        };
        Self {
            target_mean,
            target_std,
            mean_values: to_vec(&mean),
            std_values: to_vec(&std),
            inputs: inputs.to_device(device),
            labels: labels
                .to_kind(if head == ModelHead::Regression { Kind::Float } else { Kind::Int64 })
                .to_device(device),
            mean: mean.to_device(device),
            std: std.to_device(device),
            image,
        }
    }

    /// The batch at `idx`: scaled, optionally augmented, normalised.
    pub fn batch(
        &self,
        idx: &Tensor,
        aug: Option<&hone_crds::trainingjob::Augmentation>,
    ) -> (Tensor, Tensor) {
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
pub struct Evaluation {
    /// Mean loss (NaN for no samples).
    pub loss: f64,
    /// Share answered correctly (NaN for no samples).
    pub accuracy: f64,
    /// Predicted class of every sample.
    pub predictions: Vec<i64>,
    /// True class of every sample.
    pub labels: Vec<i64>,
}

/// Evaluates `net` on `indices` in eval mode (a regression head has no
/// classes: its accuracy is NaN and it answers no predictions).
pub fn evaluate(net: &Network, head: ModelHead, data: &Tensors, indices: &[usize]) -> Evaluation {
    if indices.is_empty() {
        return Evaluation {
            loss: f64::NAN,
            accuracy: f64::NAN,
            predictions: Vec::new(),
            labels: Vec::new(),
        };
    }
    let regression = head == ModelHead::Regression;
    let (mut loss_sum, mut predictions, mut labels) = (0.0, Vec::new(), Vec::new());
    tch::no_grad(|| {
        for chunk in indices.chunks(EVAL_BATCH as usize) {
            let idx = Tensor::from_slice(&chunk.iter().map(|&i| i as i64).collect::<Vec<_>>());
            let (x, y) = data.batch(&idx, None);
            let logits = net.forward_t(&x, false);
            loss_sum += crate::model::loss(head, &logits, &y).double_value(&[]) * chunk.len() as f64;
            if regression {
                continue;
            }
            predictions.extend(
                Vec::<i64>::try_from(crate::model::answers(head, &logits).to_device(Device::Cpu))
                    .unwrap_or_default(),
            );
            labels.extend(Vec::<i64>::try_from(y.to_device(Device::Cpu)).unwrap_or_default());
        }
    });
    let correct = predictions.iter().zip(&labels).filter(|(p, l)| p == l).count();
    Evaluation {
        loss: loss_sum / indices.len() as f64,
        accuracy: if regression { f64::NAN } else { correct as f64 / indices.len() as f64 },
        predictions,
        labels,
    }
}

/// A regression head's errors over a split, in the target's own units.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RegressionErrors {
    /// Root mean squared error.
    pub rmse: f64,
    /// Mean absolute error.
    pub mae: f64,
    /// Coefficient of determination against the split's own mean (1 is
    /// perfect, 0 is as good as always answering the mean).
    pub r2: f64,
}

/// Errors of a regression `net` on `indices` (None for no samples).
pub fn regression_errors(net: &Network, data: &Tensors, indices: &[usize]) -> Option<RegressionErrors> {
    if indices.is_empty() {
        return None;
    }
    let (mut predicted, mut actual) = (Vec::<f64>::new(), Vec::<f64>::new());
    tch::no_grad(|| {
        for chunk in indices.chunks(EVAL_BATCH as usize) {
            let idx = Tensor::from_slice(&chunk.iter().map(|&i| i as i64).collect::<Vec<_>>());
            let (x, y) = data.batch(&idx, None);
            let out = net.forward_t(&x, false).squeeze_dim(-1).to_kind(Kind::Double).to_device(Device::Cpu);
            let y = y.to_kind(Kind::Double).to_device(Device::Cpu);
            let unscale = |v: f64| v * data.target_std + data.target_mean;
            predicted.extend(Vec::<f64>::try_from(out).unwrap_or_default().into_iter().map(unscale));
            actual.extend(Vec::<f64>::try_from(y).unwrap_or_default().into_iter().map(unscale));
        }
    });
    Some(errors(&predicted, &actual))
}

/// RMSE, MAE and R² of `predicted` against `actual` (same length, not empty).
pub fn errors(predicted: &[f64], actual: &[f64]) -> RegressionErrors {
    let n = actual.len().max(1) as f64;
    let mean = actual.iter().sum::<f64>() / n;
    let (mut sq, mut abs, mut total) = (0.0, 0.0, 0.0);
    for (p, a) in predicted.iter().zip(actual) {
        sq += (p - a).powi(2);
        abs += (p - a).abs();
        total += (a - mean).powi(2);
    }
    let r2 = if total > 0.0 { 1.0 - sq / total } else { f64::NAN };
    RegressionErrors { rmse: (sq / n).sqrt(), mae: abs / n, r2 }
}

/// Sums over one rank's share of a split: loss (sum over samples), correct
/// answers and samples, to be added up across ranks.
pub fn evaluate_sums(net: &Network, head: ModelHead, data: &Tensors, indices: &[usize]) -> [f64; 3] {
    if indices.is_empty() {
        return [0.0; 3];
    }
    let e = evaluate(net, head, data, indices);
    let n = indices.len() as f64;
    let correct = if e.accuracy.is_finite() { (e.accuracy * n).round() } else { 0.0 };
    [e.loss * n, correct, n]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regression_errors_are_rmse_mae_and_r2() {
        let e = errors(&[1.0, 2.0, 5.0], &[1.0, 3.0, 3.0]);
        assert!((e.rmse - (5.0f64 / 3.0).sqrt()).abs() < 1e-12, "{e:?}");
        assert!((e.mae - 1.0).abs() < 1e-12, "{e:?}");
        // Mean 7/3; total = (16 + 4 + 4) / 9 = 24/9; residual 5.
        assert!((e.r2 - (1.0 - 5.0 / (24.0 / 9.0))).abs() < 1e-12, "{e:?}");
        assert!(errors(&[2.0, 2.0], &[2.0, 2.0]).r2.is_nan(), "no variance: R² is undefined");
    }
}
