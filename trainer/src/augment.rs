//! Seeded augmentation on a batch of images in [0, 1], done with tensor ops
//! on the training device. The caller seeds libtorch's generator per epoch,
//! so the same seed and epoch give the same augmented batches.

use hone_crds::trainingjob::Augmentation;
use tch::{Kind, Tensor};

/// Applies flips, rotations and colour jitter to `x` (`B x C x H x W`).
pub fn augment(x: &Tensor, aug: &Augmentation) -> Tensor {
    let (b, c) = (x.size()[0], x.size()[1]);
    let opts = (Kind::Float, x.device());
    let mut x = x.shallow_clone();
    if aug.horizontal_flip {
        let flip = Tensor::rand([b, 1, 1, 1], opts).lt(0.5);
        x = x.flip([3]).where_self(&flip, &x);
    }
    if aug.rotation_degrees > 0.0 {
        let angle = (Tensor::rand([b], opts) * 2.0 - 1.0) * aug.rotation_degrees.to_radians();
        let (cos, sin, zero) = (angle.cos(), angle.sin(), angle.zeros_like());
        let theta = Tensor::stack(&[&cos, &(-&sin), &zero, &sin, &cos, &zero], 1).view([b, 2, 3]);
        let grid = Tensor::affine_grid_generator(&theta, x.size(), false);
        // bilinear (0), zero padding (0)
        x = Tensor::grid_sampler(&x, &grid, 0, 0, false);
    }
    if aug.color_jitter > 0.0 {
        let j = aug.color_jitter;
        let factor = || (Tensor::rand([b, 1, 1, 1], opts) * 2.0 - 1.0) * j + 1.0;
        x = &x * factor(); // brightness
        let mean = x.mean_dim([1i64, 2, 3].as_slice(), true, Kind::Float);
        x = (&x - &mean) * factor() + &mean; // contrast
        if c == 3 {
            let gray = x.mean_dim([1i64].as_slice(), true, Kind::Float);
            x = (&x - &gray) * factor() + &gray; // saturation
        }
        x = x.clamp(0.0, 1.0);
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn batch() -> Tensor {
        Tensor::rand([4, 3, 8, 8], (Kind::Float, Device::Cpu))
    }

    #[test]
    fn no_augmentation_is_identity() {
        let x = batch();
        assert!(augment(&x, &Augmentation::default()).equal(&x));
    }

    #[test]
    fn same_seed_same_result_and_values_stay_in_range() {
        let aug = Augmentation { horizontal_flip: true, rotation_degrees: 15.0, color_jitter: 0.3 };
        let x = batch();
        tch::manual_seed(3);
        let a = augment(&x, &aug);
        tch::manual_seed(3);
        let b = augment(&x, &aug);
        assert!(a.equal(&b));
        assert_eq!(a.size(), x.size());
        assert!(a.min().double_value(&[]) >= 0.0 && a.max().double_value(&[]) <= 1.0);
        assert!(!a.equal(&x));
    }

    #[test]
    fn flip_only_mirrors_whole_images() {
        let aug = Augmentation { horizontal_flip: true, ..Default::default() };
        let x = batch();
        tch::manual_seed(1);
        let y = augment(&x, &aug);
        for i in 0..4 {
            let (xi, yi) = (x.get(i), y.get(i));
            assert!(yi.equal(&xi) || yi.equal(&xi.flip([2])), "sample {i} is neither kept nor mirrored");
        }
    }
}
