//! Data parallelism over `hone-dist` (libtorch's c10d): every rank trains
//! the same model on its own shard of each epoch, gradients are averaged
//! in buckets before each optimizer step, and metrics are summed so every
//! rank reports the same figures. One process is the same code with no
//! group: each helper is then a no-op.

use std::time::{Duration, Instant};

use hone_dist::{DistError, ProcessGroup};
use tch::nn::VarStore;
use tch::{Device, Tensor};

use crate::cli::DeviceArg;

/// Largest gradient bucket flattened into one all-reduce (DDP's default).
pub const BUCKET_BYTES: usize = 25 * 1024 * 1024;

/// This process's place in the run: its rank and the group, if any.
pub struct Parallel<'a> {
    group: Option<&'a ProcessGroup>,
}

impl<'a> Parallel<'a> {
    /// A run with `group` (None: one process).
    pub fn new(group: Option<&'a ProcessGroup>) -> Self {
        Self { group }
    }

    /// This rank (0 alone).
    pub fn rank(&self) -> usize {
        self.group.map_or(0, ProcessGroup::rank)
    }

    /// Number of processes.
    pub fn world(&self) -> usize {
        self.group.map_or(1, ProcessGroup::world_size)
    }

    /// Whether this process writes checkpoints and the output contract.
    pub fn is_leader(&self) -> bool {
        self.rank() == 0
    }

    /// Whether there is more than one process.
    pub fn is_distributed(&self) -> bool {
        self.group.is_some()
    }

    /// Overwrites every variable of `vs` (parameters and buffers such as
    /// batch-norm statistics) with rank 0's, in name order.
    pub fn broadcast_variables(&self, vs: &VarStore) -> Result<(), DistError> {
        let Some(group) = self.group else { return Ok(()) };
        let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let tensors: Vec<Tensor> = named.into_iter().map(|(_, t)| t).collect();
        tch::no_grad(|| group.broadcast(&tensors))
    }

    /// Overwrites the variables that are not trained (batch-norm running
    /// statistics, which each rank updates from its own batches) with rank 0's.
    pub fn broadcast_buffers(&self, vs: &VarStore) -> Result<(), DistError> {
        let Some(group) = self.group else { return Ok(()) };
        let mut named: Vec<(String, Tensor)> =
            vs.variables().into_iter().filter(|(_, t)| !t.requires_grad()).collect();
        if named.is_empty() {
            return Ok(());
        }
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let tensors: Vec<Tensor> = named.into_iter().map(|(_, t)| t).collect();
        tch::no_grad(|| group.broadcast(&tensors))
    }

    /// Rank 0's value of `value`, on every rank.
    pub fn broadcast_i64(&self, value: i64) -> Result<i64, DistError> {
        let Some(group) = self.group else { return Ok(value) };
        let t = Tensor::from_slice(&[value]);
        group.broadcast(std::slice::from_ref(&t))?;
        Ok(t.int64_value(&[0]))
    }

    /// Sums of `values` over the ranks (f64, so counts stay exact).
    pub fn sum(&self, values: &[f64]) -> Result<Vec<f64>, DistError> {
        let Some(group) = self.group else { return Ok(values.to_vec()) };
        let t = Tensor::from_slice(values);
        group.all_reduce(std::slice::from_ref(&t))?;
        Ok(Vec::<f64>::try_from(&t).unwrap_or_else(|_| values.to_vec()))
    }

    /// Waits for every rank.
    pub fn barrier(&self) -> Result<(), DistError> {
        self.group.map_or(Ok(()), ProcessGroup::barrier)
    }
}

/// The device this process trains on, from `--device`, the CUDA devices
/// it sees, the world size and its local rank; Err is (category, message).
/// One process never trains on one of several visible GPUs: `gpus: N` in one
/// pod is refused, one process per GPU (`workers: N`, `gpus: 1`) is the way.
pub fn pick_device(
    arg: DeviceArg,
    cuda_devices: usize,
    world: usize,
    local_rank: usize,
) -> Result<Device, (&'static str, String)> {
    match (arg, cuda_devices) {
        (DeviceArg::Cpu, _) | (DeviceArg::Auto, 0) => Ok(Device::Cpu),
        (DeviceArg::Cuda, 0) => Err(("NoGpu", "--device cuda, but no CUDA device is visible".into())),
        (_, 1) => Ok(Device::Cuda(0)),
        (_, n) if world <= 1 => Err((
            "InvalidSpec",
            format!(
                "this pod sees {n} CUDA devices but runs one training process, and hone-trainer \
                 trains one process per GPU: set gpus: 1 and workers: {n} (or --device cpu)"
            ),
        )),
        (_, n) if local_rank < n => Ok(Device::Cuda(local_rank)),
        (_, n) => {
            Err(("InvalidSpec", format!("LOCAL_RANK={local_rank}, but this pod sees only {n} CUDA devices")))
        }
    }
}

/// Trainable parameters grouped into buckets of at most [`BUCKET_BYTES`]
/// (a parameter larger than that is a bucket of its own).
pub struct GradientBuckets {
    buckets: Vec<Vec<Tensor>>,
    /// Time spent all-reducing since the last [`GradientBuckets::take_time`].
    spent: Duration,
    steps: u32,
}

impl GradientBuckets {
    /// Buckets over `params`, in their order (the same on every rank).
    pub fn new(params: &[Tensor]) -> Self {
        let sizes: Vec<usize> = params.iter().map(|p| p.numel() * p.kind().elt_size_in_bytes()).collect();
        let buckets = plan_buckets(&sizes, BUCKET_BYTES)
            .into_iter()
            .map(|ids| ids.into_iter().map(|i| params[i].shallow_clone()).collect())
            .collect();
        Self { buckets, spent: Duration::ZERO, steps: 0 }
    }

    /// Number of buckets.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// True when there are no parameters.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Replaces every gradient by its mean over the ranks: each bucket is
    /// flattened into one tensor, summed with one all-reduce, divided by
    /// the world size and copied back. A parameter without a gradient
    /// (unused this step) counts as zeros, so every rank sends the same sizes.
    pub fn average(&mut self, parallel: &Parallel<'_>) -> Result<(), DistError> {
        let Some(group) = parallel.group else { return Ok(()) };
        let world = parallel.world() as f64;
        let start = Instant::now();
        tch::no_grad(|| -> Result<(), DistError> {
            for bucket in &self.buckets {
                let grads: Vec<Tensor> = bucket
                    .iter()
                    .map(|p| {
                        let g = p.grad();
                        if g.defined() { g.reshape([-1]) } else { p.zeros_like().reshape([-1]) }
                    })
                    .collect();
                let flat = Tensor::cat(&grads, 0);
                group.all_reduce(std::slice::from_ref(&flat))?;
                let flat = flat / world;
                let mut offset = 0;
                for p in bucket {
                    let n = p.numel() as i64;
                    let mean = flat.narrow(0, offset, n).view_as(p);
                    let mut g = p.grad();
                    // The built-in networks use every parameter in every step, so
                    // after the first backward every gradient is defined.
                    if g.defined() {
                        g.copy_(&mean);
                    }
                    offset += n;
                }
            }
            Ok(())
        })?;
        self.spent += start.elapsed();
        self.steps += 1;
        Ok(())
    }

    /// Mean milliseconds per step spent all-reducing since the last call; resets.
    pub fn take_time(&mut self) -> Option<f64> {
        let mean = (self.steps > 0).then(|| self.spent.as_secs_f64() * 1e3 / f64::from(self.steps));
        self.spent = Duration::ZERO;
        self.steps = 0;
        mean
    }
}

/// Groups consecutive items of `sizes` bytes into buckets of at most `cap`
/// bytes; returns the indices of each bucket.
pub fn plan_buckets(sizes: &[usize], cap: usize) -> Vec<Vec<usize>> {
    let mut buckets: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut bytes = 0;
    for (i, &size) in sizes.iter().enumerate() {
        if !current.is_empty() && bytes + size > cap {
            buckets.push(std::mem::take(&mut current));
            bytes = 0;
        }
        current.push(i);
        bytes += size;
    }
    if !current.is_empty() {
        buckets.push(current);
    }
    buckets
}

/// Rank `rank`'s share of an epoch's `order` (the same seeded permutation on
/// every rank): every `world`-th item from `rank`, after padding `order`
/// with its own first items to a multiple of `world`, so every rank takes
/// the same number of steps (as PyTorch's `DistributedSampler`).
pub fn shard<T: Copy>(order: &[T], rank: usize, world: usize) -> Vec<T> {
    if world <= 1 || order.is_empty() {
        return order.to_vec();
    }
    let total = order.len().div_ceil(world) * world;
    (rank..total).step_by(world).map(|i| order[i % order.len()]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn shards_cover_the_epoch_once_and_have_equal_lengths() {
        let order: Vec<u32> = (0..10).collect();
        let shards: Vec<Vec<u32>> = (0..3).map(|r| shard(&order, r, 3)).collect();
        assert!(shards.iter().all(|s| s.len() == 4), "{shards:?}");
        assert_eq!(shards[0], [0, 3, 6, 9]);
        assert_eq!(shards[1], [1, 4, 7, 0], "padded with the epoch's first items");
        let mut seen: Vec<u32> = shards.concat();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen, order);
        assert_eq!(shard(&order, 0, 1), order);
    }

    #[test]
    fn buckets_respect_the_cap_and_keep_order() {
        assert_eq!(plan_buckets(&[10, 10, 10, 50, 5], 25), vec![vec![0, 1], vec![2], vec![3], vec![4]]);
        assert_eq!(plan_buckets(&[], 25), Vec::<Vec<usize>>::new());
        assert_eq!(plan_buckets(&[1, 2, 3], 100), vec![vec![0, 1, 2]]);
    }

    #[test]
    fn several_gpus_need_one_process_each() {
        assert_eq!(pick_device(DeviceArg::Auto, 0, 1, 0), Ok(Device::Cpu));
        assert_eq!(pick_device(DeviceArg::Cpu, 4, 1, 0), Ok(Device::Cpu));
        assert_eq!(pick_device(DeviceArg::Cuda, 0, 1, 0).unwrap_err().0, "NoGpu");
        assert_eq!(pick_device(DeviceArg::Auto, 1, 2, 1), Ok(Device::Cuda(0)), "one GPU per pod");
        let (category, message) = pick_device(DeviceArg::Auto, 4, 1, 0).unwrap_err();
        assert_eq!(category, "InvalidSpec");
        assert!(message.contains("workers: 4"), "{message}");
        assert_eq!(pick_device(DeviceArg::Cuda, 4, 4, 2), Ok(Device::Cuda(2)));
        assert_eq!(pick_device(DeviceArg::Cuda, 2, 4, 3).unwrap_err().0, "InvalidSpec");
    }

    #[test]
    fn one_process_is_a_no_op() {
        let p = Parallel::new(None);
        assert_eq!((p.rank(), p.world(), p.is_leader()), (0, 1, true));
        assert_eq!(p.sum(&[1.5, 2.0]).unwrap(), [1.5, 2.0]);
        assert_eq!(p.broadcast_i64(7).unwrap(), 7);
        let x = Tensor::from_slice(&[1.0f32, 2.0]).set_requires_grad(true);
        (&x * 3.0).sum(Kind::Float).backward();
        let mut buckets = GradientBuckets::new(std::slice::from_ref(&x));
        buckets.average(&p).unwrap();
        assert_eq!(Vec::<f32>::try_from(x.grad()).unwrap(), [3.0, 3.0]);
        assert_eq!(buckets.take_time(), None);
    }
}
