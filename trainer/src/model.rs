//! The built-in architectures.

use hone_crds::trainingjob::{Architecture, ModelHead};
use tch::nn::{self, ModuleT};
use tch::{Kind, Tensor};

/// Why a network cannot be built for the data.
#[derive(Debug, thiserror::Error)]
#[error("{architecture} cannot take input of shape {shape:?}: {reason}")]
pub struct ModelError {
    architecture: &'static str,
    shape: Vec<i64>,
    reason: String,
}

/// A network: anything that maps a batch to logits, with train/eval modes.
pub type Network = Box<dyn ModuleT + Send>;

/// Logits per sample for `head` on a Dataset of `classes` classes: one per
/// class, or one for `sigmoid`, which needs exactly two classes.
pub fn outputs(head: ModelHead, classes: usize) -> Result<i64, String> {
    match head {
        ModelHead::Softmax => Ok(classes as i64),
        ModelHead::Sigmoid if classes == 2 => Ok(1),
        ModelHead::Sigmoid => Err(format!(
            "model.head sigmoid needs a Dataset of exactly two classes (its one logit is the second class's); \
             this one has {classes}: use head softmax"
        )),
        ModelHead::Regression => Ok(1),
    }
}

/// The mean loss of `logits` against the class indices `y`: softmax
/// cross-entropy, or binary cross-entropy on the one logit (class 1 positive);
/// for `regression`, the mean squared error against the (standardised)
/// targets `y`.
pub fn loss(head: ModelHead, logits: &Tensor, y: &Tensor) -> Tensor {
    match head {
        ModelHead::Softmax => logits.cross_entropy_for_logits(y),
        ModelHead::Sigmoid => logits.squeeze_dim(-1).binary_cross_entropy_with_logits::<Tensor>(
            &y.to_kind(Kind::Float),
            None,
            None,
            tch::Reduction::Mean,
        ),
        ModelHead::Regression => logits.squeeze_dim(-1).mse_loss(y, tch::Reduction::Mean),
    }
}

/// The class each row of `logits` answers: the top class, or for `sigmoid`
/// class 1 when its probability reaches 0.5 (the logit reaches 0), as the
/// predictor answers a `binary` model with the default threshold.
pub fn answers(head: ModelHead, logits: &Tensor) -> Tensor {
    match head {
        ModelHead::Softmax => logits.argmax(-1, false),
        ModelHead::Sigmoid => logits.squeeze_dim(-1).ge(0.0).to_kind(Kind::Int64),
        // No class: the number is the answer.
        ModelHead::Regression => logits.squeeze_dim(-1),
    }
}

/// Builds `architecture` under `p` for samples of `shape` (no batch dim) and `classes` outputs
/// (see [`outputs`]).
pub fn build(
    architecture: Architecture,
    p: &nn::Path,
    shape: &[i64],
    classes: i64,
) -> Result<Network, ModelError> {
    let err = |reason: &str| ModelError {
        architecture: architecture.as_str(),
        shape: shape.to_vec(),
        reason: reason.into(),
    };
    match architecture {
        Architecture::Mlp => Ok(Box::new(mlp(p, shape.iter().product(), classes))),
        Architecture::SimpleCnn => match shape {
            [c, h, w] if *h >= 16 && *w >= 16 => Ok(Box::new(simple_cnn(p, *c, *h, *w, classes))),
            [_, _, _] => Err(err("simple-cnn pools four times and needs images of at least 16x16")),
            _ => Err(err("simple-cnn takes images (C x H x W)")),
        },
        Architecture::Resnet18 | Architecture::Resnet34 | Architecture::EfficientNetB0 => match shape {
            [c @ (1 | 3), h, w] if *h >= 32 && *w >= 32 => {
                let body: Network = match architecture {
                    Architecture::Resnet18 => Box::new(tch::vision::resnet::resnet18(p, classes)),
                    Architecture::Resnet34 => Box::new(tch::vision::resnet::resnet34(p, classes)),
                    _ => Box::new(tch::vision::efficientnet::b0(p, classes)),
                };
                Ok(Box::new(ToRgb { gray: *c == 1, body }))
            }
            _ => Err(err("needs 1- or 3-channel images of at least 32x32")),
        },
    }
}

/// Repeats a grayscale channel three times for networks built for RGB.
#[derive(Debug)]
struct ToRgb {
    gray: bool,
    body: Network,
}

impl ModuleT for ToRgb {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        if self.gray {
            self.body.forward_t(&xs.repeat([1, 3, 1, 1]), train)
        } else {
            self.body.forward_t(xs, train)
        }
    }
}

/// Two hidden layers (128, 64) with ReLU.
fn mlp(p: &nn::Path, inputs: i64, classes: i64) -> nn::SequentialT {
    nn::seq_t()
        .add_fn(|x| x.flatten(1, -1))
        .add(nn::linear(p / "fc1", inputs, 128, Default::default()))
        .add_fn(Tensor::relu)
        .add(nn::linear(p / "fc2", 128, 64, Default::default()))
        .add_fn(Tensor::relu)
        .add(nn::linear(p / "out", 64, classes, Default::default()))
}

/// Four Conv3x3-BN-ReLU-MaxPool2 blocks (32, 64, 128, 256 channels) and a
/// three-layer classifier (512, 128, classes) with dropout.
fn simple_cnn(p: &nn::Path, c: i64, h: i64, w: i64, classes: i64) -> nn::SequentialT {
    let conv = nn::ConvConfig { padding: 1, bias: false, ..Default::default() };
    let mut net = nn::seq_t();
    let mut in_ch = c;
    for (i, out_ch) in [32, 64, 128, 256].into_iter().enumerate() {
        let block = p / format!("block{i}");
        net = net
            .add(nn::conv2d(&block / "conv", in_ch, out_ch, 3, conv))
            .add(nn::batch_norm2d(&block / "bn", out_ch, Default::default()))
            .add_fn(Tensor::relu)
            .add_fn(|x| x.max_pool2d_default(2));
        in_ch = out_ch;
    }
    let flat = 256 * (h / 16) * (w / 16);
    net.add_fn(|x| x.flatten(1, -1))
        .add(nn::linear(p / "fc1", flat, 512, Default::default()))
        .add_fn(Tensor::relu)
        .add_fn_t(|x, train| x.dropout(0.5, train))
        .add(nn::linear(p / "fc2", 512, 128, Default::default()))
        .add_fn(Tensor::relu)
        .add(nn::linear(p / "out", 128, classes, Default::default()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn a_sigmoid_head_is_one_logit_on_two_classes_only() {
        assert_eq!(outputs(ModelHead::Softmax, 10), Ok(10));
        assert_eq!(outputs(ModelHead::Sigmoid, 2), Ok(1));
        assert!(outputs(ModelHead::Sigmoid, 3).unwrap_err().contains("exactly two classes"));
    }

    #[test]
    fn the_sigmoid_loss_and_answers_are_those_of_the_positive_logit() {
        let logits = Tensor::from_slice(&[2.0f32, -1.0, 0.0]).view([3, 1]);
        let y = Tensor::from_slice(&[1i64, 1, 0]);
        let answers = Vec::<i64>::try_from(answers(ModelHead::Sigmoid, &logits)).unwrap();
        assert_eq!(answers, vec![1, 0, 1]);
        // Mean of -log(sigmoid(2)), -log(sigmoid(-1)), -log(1 - sigmoid(0)).
        let s = |x: f64| 1.0 / (1.0 + (-x).exp());
        let expected = (-(s(2.0).ln()) - s(-1.0).ln() - (1.0 - s(0.0)).ln()) / 3.0;
        let got = loss(ModelHead::Sigmoid, &logits, &y).double_value(&[]);
        assert!((got - expected).abs() < 1e-6, "{got} vs {expected}");
    }

    #[test]
    fn the_regression_head_is_one_number_and_its_loss_the_mean_squared_error() {
        assert_eq!(outputs(ModelHead::Regression, 214), Ok(1));
        let out = Tensor::from_slice(&[1.0f32, -2.0, 0.5]).view([3, 1]);
        let y = Tensor::from_slice(&[0.0f32, -1.0, 2.5]);
        let got = loss(ModelHead::Regression, &out, &y).double_value(&[]);
        assert!((got - (1.0 + 1.0 + 4.0) / 3.0).abs() < 1e-6, "{got}");
        assert_eq!(Vec::<f32>::try_from(answers(ModelHead::Regression, &out)).unwrap(), vec![1.0, -2.0, 0.5]);
    }

    #[test]
    fn every_architecture_gives_logits_per_class() {
        let cases: [(Architecture, &[i64]); 4] = [
            (Architecture::Mlp, &[4]),
            (Architecture::SimpleCnn, &[1, 32, 32]),
            (Architecture::Resnet18, &[1, 32, 32]),
            (Architecture::EfficientNetB0, &[3, 32, 32]),
        ];
        for (arch, shape) in cases {
            let vs = nn::VarStore::new(Device::Cpu);
            let net = build(arch, &vs.root(), shape, 5).unwrap();
            let mut batch = vec![2];
            batch.extend_from_slice(shape);
            let out = net.forward_t(&Tensor::zeros(batch.as_slice(), (Kind::Float, Device::Cpu)), false);
            assert_eq!(out.size(), [2, 5], "{arch:?}");
        }
    }

    #[test]
    fn too_small_images_are_an_error_not_a_crash() {
        let vs = nn::VarStore::new(Device::Cpu);
        let err = build(Architecture::SimpleCnn, &vs.root(), &[1, 8, 8], 10).err().unwrap();
        assert!(err.to_string().contains("at least 16x16"), "{err}");
        assert!(build(Architecture::Resnet18, &vs.root(), &[4], 10).is_err());
    }
}
