//! Optimizers and learning-rate schedules, written over plain tensors so
//! their state (moments, step) is checkpointed with the weights and a resumed
//! run continues exactly where it stopped.

use hone_crds::trainingjob::{Optimizer as OptimizerKind, Scheduler};
use tch::Tensor;

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;
const MOMENTUM: f64 = 0.9;

/// One trainable parameter with its optimizer state.
struct Slot {
    name: String,
    param: Tensor,
    /// First moment (Adam) or momentum buffer (SGD).
    m: Tensor,
    /// Second moment (Adam only).
    v: Tensor,
}

/// Adam, AdamW or SGD with momentum, over named parameters.
pub struct Optimizer {
    kind: OptimizerKind,
    weight_decay: f64,
    slots: Vec<Slot>,
    /// Steps taken so far (Adam bias correction).
    pub step: i64,
}

impl Optimizer {
    /// An optimizer over the trainable `(name, tensor)` pairs.
    pub fn new(kind: OptimizerKind, weight_decay: f64, params: Vec<(String, Tensor)>) -> Self {
        let slots = params
            .into_iter()
            .map(|(name, param)| Slot { m: param.zeros_like(), v: param.zeros_like(), name, param })
            .collect();
        Self { kind, weight_decay, slots, step: 0 }
    }

    /// Zeroes every parameter's gradient.
    pub fn zero_grad(&mut self) {
        for s in &mut self.slots {
            let mut grad = s.param.grad();
            if grad.defined() {
                let _ = grad.zero_();
            }
        }
    }

    /// One update with learning rate `lr`.
    pub fn step(&mut self, lr: f64) {
        self.step += 1;
        let t = self.step as f64;
        let (wd, kind) = (self.weight_decay, self.kind);
        tch::no_grad(|| {
            for s in &mut self.slots {
                let grad = s.param.grad();
                if !grad.defined() {
                    continue;
                }
                match kind {
                    OptimizerKind::Sgd => {
                        let g = if wd > 0.0 { &grad + &s.param * wd } else { grad.shallow_clone() };
                        let _ = s.m.g_mul_scalar_(MOMENTUM).g_add_(&g);
                        let _ = s.param.g_sub_(&(&s.m * lr));
                    }
                    OptimizerKind::Adam | OptimizerKind::Adamw => {
                        let g = if wd > 0.0 && kind == OptimizerKind::Adam {
                            &grad + &s.param * wd
                        } else {
                            grad.shallow_clone()
                        };
                        if wd > 0.0 && kind == OptimizerKind::Adamw {
                            let _ = s.param.g_mul_scalar_(1.0 - lr * wd);
                        }
                        let _ = s.m.g_mul_scalar_(BETA1).g_add_(&(&g * (1.0 - BETA1)));
                        let _ = s.v.g_mul_scalar_(BETA2).g_add_(&(&g * &g * (1.0 - BETA2)));
                        let m_hat = &s.m / (1.0 - BETA1.powf(t));
                        let v_hat = &s.v / (1.0 - BETA2.powf(t));
                        let update = m_hat / (v_hat.sqrt() + EPS) * lr;
                        let _ = s.param.g_sub_(&update);
                    }
                }
            }
        });
    }

    /// The state tensors to checkpoint, named `m.<param>` and `v.<param>`.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![("step".to_owned(), Tensor::from(self.step))];
        for s in &self.slots {
            out.push((format!("m.{}", s.name), s.m.shallow_clone()));
            out.push((format!("v.{}", s.name), s.v.shallow_clone()));
        }
        out
    }

    /// Restores state saved by [`Optimizer::state`]; missing entries are an error.
    pub fn load_state(&mut self, saved: &[(String, Tensor)]) -> Result<(), String> {
        let find = |name: &str| saved.iter().find(|(n, _)| n == name).map(|(_, t)| t);
        self.step = find("step").map(|t| t.int64_value(&[])).ok_or("optimizer state has no step")?;
        tch::no_grad(|| {
            for s in &mut self.slots {
                for (prefix, dst) in [("m", &mut s.m), ("v", &mut s.v)] {
                    let src = find(&format!("{prefix}.{}", s.name))
                        .ok_or_else(|| format!("optimizer state lacks {prefix}.{}", s.name))?;
                    dst.copy_(&src.to_device(dst.device()));
                }
            }
            Ok(())
        })
    }
}

/// Learning rate at optimizer step `step` (0-based) of `total_steps`, with
/// `warmup_steps` of linear warm-up, for a peak rate `base`.
pub fn learning_rate(scheduler: Scheduler, base: f64, step: i64, total_steps: i64, warmup_steps: i64) -> f64 {
    if step < warmup_steps {
        return base * (step + 1) as f64 / warmup_steps as f64;
    }
    let after = (step - warmup_steps) as f64;
    let span = (total_steps - warmup_steps).max(1) as f64;
    match scheduler {
        Scheduler::None => base,
        Scheduler::Cosine => base * 0.5 * (1.0 + (std::f64::consts::PI * (after / span).min(1.0)).cos()),
        Scheduler::Step => base * 0.1f64.powi((3.0 * after / span).floor().min(2.0) as i32),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn minimise(kind: OptimizerKind) -> f64 {
        // f(x) = (x - 3)^2, from x = 0.
        let x = Tensor::zeros([1], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let mut opt = Optimizer::new(kind, 0.0, vec![("x".into(), x.shallow_clone())]);
        for _ in 0..300 {
            opt.zero_grad();
            let loss = (&x - 3.0).pow_tensor_scalar(2).sum(Kind::Float);
            loss.backward();
            opt.step(0.05);
        }
        x.double_value(&[0])
    }

    #[test]
    fn each_optimizer_finds_the_minimum() {
        for kind in [OptimizerKind::Adam, OptimizerKind::Adamw, OptimizerKind::Sgd] {
            let x = minimise(kind);
            assert!((x - 3.0).abs() < 0.05, "{kind:?} ended at {x}");
        }
    }

    #[test]
    fn state_round_trips() {
        let x = Tensor::ones([2], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let mut opt = Optimizer::new(OptimizerKind::Adam, 0.0, vec![("x".into(), x.shallow_clone())]);
        (&x * 2.0).sum(Kind::Float).backward();
        opt.step(0.1);
        let saved = opt.state();
        let y = Tensor::ones([2], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let mut other = Optimizer::new(OptimizerKind::Adam, 0.0, vec![("x".into(), y)]);
        other.load_state(&saved).unwrap();
        assert_eq!(other.step, 1);
        assert!(other.state()[1].1.allclose(&saved[1].1, 1e-9, 1e-9, false));
        assert!(other.load_state(&[]).is_err());
    }

    #[test]
    fn schedules() {
        let lr = |s, step| learning_rate(s, 1.0, step, 100, 10);
        assert!((lr(Scheduler::Cosine, 0) - 0.1).abs() < 1e-9, "warm-up starts at base/warmup");
        assert!((lr(Scheduler::Cosine, 9) - 1.0).abs() < 1e-9, "warm-up ends at base");
        assert!(lr(Scheduler::Cosine, 99) < 0.01, "cosine decays to ~0");
        assert!((lr(Scheduler::None, 50) - 1.0).abs() < 1e-9);
        assert!((lr(Scheduler::Step, 10) - 1.0).abs() < 1e-9);
        assert!((lr(Scheduler::Step, 45) - 0.1).abs() < 1e-9);
        assert!((lr(Scheduler::Step, 99) - 0.01).abs() < 1e-9);
    }
}
