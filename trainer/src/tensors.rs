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
    labels: Tensor,
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
    /// The samples of `data` on `device`, with the training split's statistics.
    pub fn new(data: &Dataset, device: Device) -> Self {
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

/// Evaluates `net` on `indices` in eval mode.
pub fn evaluate(net: &Network, head: ModelHead, data: &Tensors, indices: &[usize]) -> Evaluation {
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
            loss_sum += crate::model::loss(head, &logits, &y).double_value(&[]) * chunk.len() as f64;
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
        accuracy: correct as f64 / indices.len() as f64,
        predictions,
        labels,
    }
}

/// Sums over one rank's share of a split: loss (sum over samples), correct
/// answers and samples, to be added up across ranks.
pub fn evaluate_sums(net: &Network, head: ModelHead, data: &Tensors, indices: &[usize]) -> [f64; 3] {
    let e = evaluate(net, head, data, indices);
    if e.labels.is_empty() {
        return [0.0; 3];
    }
    let n = e.labels.len() as f64;
    [e.loss * n, (e.accuracy * n).round(), n]
}
