//! The dataset as tensors on the training device, and evaluation passes
//! over index lists (whole splits, or one rank's share of one).

use std::sync::Arc;

use hone_crds::trainingjob::{Augmentation, ModelHead};
use tch::{Device, Kind, Tensor};

use crate::augment::augment;
use crate::dataset::{DataError, Dataset, Inputs};
use crate::model::Network;
use crate::stream::{DataPath, ImageStream, Prefetch};

/// Samples per evaluation batch at most.
const EVAL_BATCH: usize = 512;
/// Decoded bytes per evaluation batch at most (fewer samples for large images).
const EVAL_BATCH_BYTES: usize = 4 << 20;

/// Where the samples are.
enum Samples {
    /// Images (`uint8`) or features (`f32`), all of them, on the device.
    Memory(Tensor),
    /// Images streamed batch by batch from storage or the on-disk cache.
    Stream(Arc<ImageStream>),
}

/// The data as tensors on the training device, normalisation included.
pub struct Tensors {
    samples: Samples,
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
    sample_shape: Vec<i64>,
    device: Device,
    image: bool,
}

impl Tensors {
    /// The samples of `data` on `device`, with the training split's
    /// statistics; a `regression` head scores against `data.targets`.
    /// Images held in memory move into the tensor (`data` keeps none).
    pub fn new(data: &mut Dataset, device: Device, head: ModelHead, path: &DataPath) -> Self {
        let n = data.len() as i64;
        let mut shape = vec![n];
        shape.extend_from_slice(&data.sample_shape);
        let train_idx = Tensor::from_slice(&data.split.train.iter().map(|&i| i as i64).collect::<Vec<_>>());
        let (samples, image, mean_values, std_values) = match &mut data.inputs {
            Inputs::Features(values) => {
                let inputs = Tensor::from_slice(values).view(shape.as_slice());
                let train = inputs.index_select(0, &train_idx);
                let mean = train.mean_dim([0i64].as_slice(), false, Kind::Double);
                let std = train.std_dim([0i64].as_slice(), false, false).to_kind(Kind::Double);
                let to_vec = |t: Tensor| Vec::<f64>::try_from(t).unwrap_or_default();
                (Samples::Memory(inputs.to_device(device)), false, to_vec(mean), to_vec(std))
            }
            Inputs::Images(bytes) => {
                let bytes = std::mem::take(bytes);
                let inputs = Tensor::from_slice(&bytes).view(shape.as_slice()).to_device(device);
                drop(bytes);
                let (mean, std) = channel_stats(data);
                (Samples::Memory(inputs), true, mean, std)
            }
            Inputs::Stored(_) => {
                let stream = ImageStream::new(data, path).map(Arc::new);
                let (mean, std) = channel_stats(data);
                match stream {
                    Some(stream) => (Samples::Stream(stream), true, mean, std),
                    None => (Samples::Memory(Tensor::zeros([0], (Kind::Uint8, device))), true, mean, std),
                }
            }
        };
        let std_values: Vec<f64> = std_values.into_iter().map(|s| s.max(1e-6)).collect();
        let mut stat_shape = vec![1i64, mean_values.len() as i64];
        if image {
            stat_shape.extend([1, 1]);
        }
        let stat = |v: &[f64]| Tensor::from_slice(v).to_kind(Kind::Float).view(stat_shape.as_slice());
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
            samples,
            target_mean,
            target_std,
            mean: stat(&mean_values).to_device(device),
            std: stat(&std_values).to_device(device),
            mean_values,
            std_values,
            labels: labels
                .to_kind(if head == ModelHead::Regression { Kind::Float } else { Kind::Int64 })
                .to_device(device),
            sample_shape: data.sample_shape.clone(),
            device,
            image,
        }
    }

    /// Whether batches are streamed (the data did not stay in memory).
    pub fn streamed(&self) -> bool {
        matches!(self.samples, Samples::Stream(_))
    }

    /// Samples per evaluation batch: up to 512, fewer for large images.
    pub fn eval_batch(&self) -> usize {
        let sample_bytes = self.sample_shape.iter().product::<i64>().max(1) as usize;
        if self.image { (EVAL_BATCH_BYTES / sample_bytes).clamp(1, EVAL_BATCH) } else { EVAL_BATCH }
    }

    /// The batches `chunks`, in order: scaled, augmented when `aug` is
    /// given, normalised. Streamed images are decoded ahead by the pool.
    pub fn batches<'a>(&'a self, chunks: Vec<Vec<usize>>, aug: Option<&'a Augmentation>) -> Batches<'a> {
        let chunks = Arc::new(chunks);
        let prefetch = match &self.samples {
            Samples::Stream(stream) => Some(stream.prefetch(chunks.clone())),
            Samples::Memory(_) => None,
        };
        Batches { tensors: self, chunks, at: 0, prefetch, aug }
    }

    /// A raw batch (`uint8` images or features) made ready for the network.
    fn finish(&self, raw: Tensor, idx: &Tensor, aug: Option<&Augmentation>) -> (Tensor, Tensor) {
        let mut x = scale(&raw, self.image);
        if let (Some(aug), true) = (aug, self.image) {
            x = augment(&x, aug);
        }
        ((x - &self.mean) / &self.std, self.labels.index_select(0, &idx.to_device(self.device)))
    }
}

/// Per-channel mean and std of the training split from the samples' moments.
fn channel_stats(data: &Dataset) -> (Vec<f64>, Vec<f64>) {
    let c = data.sample_shape[0] as usize;
    let (mut m1, mut m2) = (vec![0.0f64; c], vec![0.0f64; c]);
    for &i in &data.split.train {
        for ch in 0..c {
            if let Some([a, b]) = data.channel_moments.get(i * c + ch) {
                m1[ch] += a;
                m2[ch] += b;
            }
        }
    }
    let n = data.split.train.len().max(1) as f64;
    let mean: Vec<f64> = m1.iter().map(|s| s / n).collect();
    let std = m2.iter().zip(&mean).map(|(s, m)| (s / n - m * m).max(0.0).sqrt()).collect();
    (mean, std)
}

/// Batches in order; see [`Tensors::batches`].
pub struct Batches<'a> {
    tensors: &'a Tensors,
    chunks: Arc<Vec<Vec<usize>>>,
    at: usize,
    prefetch: Option<Prefetch>,
    aug: Option<&'a Augmentation>,
}

impl Iterator for Batches<'_> {
    type Item = Result<(Tensor, Tensor), DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        let chunk = self.chunks.get(self.at)?;
        self.at += 1;
        let idx = Tensor::from_slice(&chunk.iter().map(|&i| i as i64).collect::<Vec<_>>());
        let raw = match (&self.tensors.samples, &mut self.prefetch) {
            (Samples::Memory(all), _) => all.index_select(0, &idx.to_device(all.device())),
            (Samples::Stream(_), Some(prefetch)) => match prefetch.next()? {
                Ok(bytes) => {
                    let mut shape = vec![chunk.len() as i64];
                    shape.extend_from_slice(&self.tensors.sample_shape);
                    Tensor::from_slice(&bytes).view(shape.as_slice()).to_device(self.tensors.device)
                }
                Err(e) => return Some(Err(e)),
            },
            (Samples::Stream(_), None) => return None,
        };
        Some(Ok(self.tensors.finish(raw, &idx, self.aug)))
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
pub fn evaluate(
    net: &Network,
    head: ModelHead,
    data: &Tensors,
    indices: &[usize],
) -> Result<Evaluation, DataError> {
    if indices.is_empty() {
        return Ok(Evaluation {
            loss: f64::NAN,
            accuracy: f64::NAN,
            predictions: Vec::new(),
            labels: Vec::new(),
        });
    }
    let regression = head == ModelHead::Regression;
    let (mut loss_sum, mut predictions, mut labels) = (0.0, Vec::new(), Vec::new());
    tch::no_grad(|| {
        for batch in data.batches(eval_chunks(data, indices), None) {
            let (x, y) = batch?;
            let logits = net.forward_t(&x, false);
            let n = y.size()[0] as f64;
            loss_sum += crate::model::loss(head, &logits, &y).double_value(&[]) * n;
            if regression {
                continue;
            }
            predictions.extend(
                Vec::<i64>::try_from(crate::model::answers(head, &logits).to_device(Device::Cpu))
                    .unwrap_or_default(),
            );
            labels.extend(Vec::<i64>::try_from(y.to_device(Device::Cpu)).unwrap_or_default());
        }
        Ok::<_, DataError>(())
    })?;
    let correct = predictions.iter().zip(&labels).filter(|(p, l)| p == l).count();
    Ok(Evaluation {
        loss: loss_sum / indices.len() as f64,
        accuracy: if regression { f64::NAN } else { correct as f64 / indices.len() as f64 },
        predictions,
        labels,
    })
}

/// `indices` in evaluation batches.
fn eval_chunks(data: &Tensors, indices: &[usize]) -> Vec<Vec<usize>> {
    indices.chunks(data.eval_batch()).map(<[usize]>::to_vec).collect()
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
pub fn regression_errors(
    net: &Network,
    data: &Tensors,
    indices: &[usize],
) -> Result<Option<RegressionErrors>, DataError> {
    if indices.is_empty() {
        return Ok(None);
    }
    let (mut predicted, mut actual) = (Vec::<f64>::new(), Vec::<f64>::new());
    tch::no_grad(|| {
        for batch in data.batches(eval_chunks(data, indices), None) {
            let (x, y) = batch?;
            let out = net.forward_t(&x, false).squeeze_dim(-1).to_kind(Kind::Double).to_device(Device::Cpu);
            let y = y.to_kind(Kind::Double).to_device(Device::Cpu);
            let unscale = |v: f64| v * data.target_std + data.target_mean;
            predicted.extend(Vec::<f64>::try_from(out).unwrap_or_default().into_iter().map(unscale));
            actual.extend(Vec::<f64>::try_from(y).unwrap_or_default().into_iter().map(unscale));
        }
        Ok::<_, DataError>(())
    })?;
    Ok(Some(errors(&predicted, &actual)))
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
pub fn evaluate_sums(
    net: &Network,
    head: ModelHead,
    data: &Tensors,
    indices: &[usize],
) -> Result<[f64; 3], DataError> {
    if indices.is_empty() {
        return Ok([0.0; 3]);
    }
    let e = evaluate(net, head, data, indices)?;
    let n = indices.len() as f64;
    let correct = if e.accuracy.is_finite() { (e.accuracy * n).round() } else { 0.0 };
    Ok([e.loss * n, correct, n])
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
