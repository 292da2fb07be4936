//! The built-in architectures.

use hone_crds::trainingjob::Architecture;
use tch::Tensor;
use tch::nn::{self, ModuleT};

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

/// Builds `architecture` under `p` for samples of `shape` (no batch dim) and `classes` outputs.
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
    use tch::{Device, Kind};

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
