//! Per-epoch checkpoints that survive a killed pod.
//!
//! `checkpoints/epoch-NNNNN/` holds `weights.ot`, `optimizer.ot` and
//! `state.json`, then `COMMIT` last, which records the sha256 of the other
//! three. A checkpoint counts only when `COMMIT` exists and every hash
//! matches, so a half-written one is never picked; object stores make each
//! single write atomic.

use std::collections::BTreeMap;

use bytes::Bytes;
use hone_crds::contract::EpochMetrics;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tch::Tensor;
use tch::nn::VarStore;

use hone_storage::{Location, StorageError};

const WEIGHTS: &str = "weights.ot";
const OPTIMIZER: &str = "optimizer.ot";
const STATE: &str = "state.json";
const COMMIT: &str = "COMMIT";
/// Complete checkpoints kept (older ones are deleted).
const KEEP: usize = 2;

/// Everything besides tensors that a resumed run needs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TrainState {
    /// Epochs completed.
    pub epoch: u32,
    /// Optimizer steps taken.
    pub global_step: i64,
    /// Lowest validation loss so far.
    pub best_val_loss: Option<f64>,
    /// Epoch that reached it.
    pub best_epoch: u32,
    /// Object name (under checkpoints/) of the best weights, and their sha256.
    pub best_weights: Option<(String, String)>,
    /// Epochs since the last improvement (early stopping).
    pub epochs_without_improvement: u32,
    /// One entry per completed epoch.
    pub history: Vec<EpochMetrics>,
    /// Seed the run's random streams derive from; each epoch's shuffle and
    /// augmentation stream is keyed by (seed, epoch), so resuming replays them.
    pub seed: u64,
}

/// What can go wrong with checkpoints.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// libtorch failed to save or load.
    #[error("checkpoint tensors: {0}")]
    Torch(#[from] tch::TchError),
    /// Local scratch files failed.
    #[error("checkpoint scratch file: {0}")]
    Io(#[from] std::io::Error),
    /// state.json could not be written or read.
    #[error("checkpoint state: {0}")]
    Json(#[from] serde_json::Error),
}

/// A checkpoint loaded for resuming.
pub struct Restored {
    /// Training state.
    pub state: TrainState,
    /// Optimizer tensors, as saved by `Optimizer::state`.
    pub optimizer: Vec<(String, Tensor)>,
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn epoch_dir(epoch: u32) -> String {
    format!("epoch-{epoch:05}")
}

/// Serialises a VarStore through a scratch file (libtorch writes files).
pub fn var_store_bytes(vs: &VarStore) -> Result<Bytes, CheckpointError> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join(WEIGHTS);
    vs.save(&path)?;
    Ok(Bytes::from(std::fs::read(&path)?))
}

/// Loads VarStore weights from bytes written by [`var_store_bytes`].
pub fn load_var_store(vs: &mut VarStore, bytes: &[u8]) -> Result<(), CheckpointError> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join(WEIGHTS);
    std::fs::write(&path, bytes)?;
    vs.load(&path)?;
    Ok(())
}

fn tensors_bytes(tensors: &[(String, Tensor)]) -> Result<Bytes, CheckpointError> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join(OPTIMIZER);
    Tensor::save_multi(tensors, &path)?;
    Ok(Bytes::from(std::fs::read(&path)?))
}

fn tensors_from(bytes: &[u8]) -> Result<Vec<(String, Tensor)>, CheckpointError> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join(OPTIMIZER);
    std::fs::write(&path, bytes)?;
    Ok(Tensor::load_multi(&path)?)
}

/// The checkpoints folder of one training run.
pub struct Checkpoints {
    root: Location,
}

impl Checkpoints {
    /// Checkpoints under `root` (the run's `checkpoints/` location).
    pub fn new(root: Location) -> Self {
        Self { root }
    }

    /// Saves the best weights so far under a name unique to `epoch`; returns (name, sha256).
    pub async fn save_best(&self, vs: &VarStore, epoch: u32) -> Result<(String, String), CheckpointError> {
        let bytes = var_store_bytes(vs)?;
        let name = format!("best-{}.ot", epoch_dir(epoch));
        let sha = sha256_hex(&bytes);
        self.root.join(&name).write(bytes).await?;
        Ok((name, sha))
    }

    /// Loads the best weights recorded in `state`, checking their hash.
    pub async fn load_best(&self, vs: &mut VarStore, state: &TrainState) -> Result<bool, CheckpointError> {
        let Some((name, sha)) = &state.best_weights else { return Ok(false) };
        let bytes = self.root.join(name).read().await?;
        if &sha256_hex(&bytes) != sha {
            return Ok(false);
        }
        load_var_store(vs, &bytes)?;
        Ok(true)
    }

    /// Writes the checkpoint of a completed epoch, then prunes old ones.
    pub async fn save(
        &self,
        vs: &VarStore,
        optimizer: &[(String, Tensor)],
        state: &TrainState,
    ) -> Result<(), CheckpointError> {
        let dir = self.root.join(&epoch_dir(state.epoch));
        let files = [
            (WEIGHTS, var_store_bytes(vs)?),
            (OPTIMIZER, tensors_bytes(optimizer)?),
            (STATE, Bytes::from(serde_json::to_vec_pretty(state)?)),
        ];
        let mut commit = BTreeMap::new();
        for (name, bytes) in files {
            commit.insert(name.to_owned(), sha256_hex(&bytes));
            dir.join(name).write(bytes).await?;
        }
        dir.join(COMMIT).write(serde_json::to_vec(&commit)?).await?;
        self.prune(state).await
    }

    /// Epochs that have a COMMIT marker, newest first.
    async fn committed_epochs(&self) -> Result<Vec<u32>, CheckpointError> {
        let mut epochs: Vec<u32> = self
            .root
            .list()
            .await?
            .iter()
            .filter_map(|o| o.relative_path.strip_suffix(&format!("/{COMMIT}")))
            .filter_map(|d| d.strip_prefix("epoch-")?.parse().ok())
            .collect();
        epochs.sort_unstable_by(|a, b| b.cmp(a));
        Ok(epochs)
    }

    /// Loads the newest checkpoint whose files all match their COMMIT hashes
    /// into `vs`; `None` when there is none (a fresh run).
    pub async fn restore_latest(&self, vs: &mut VarStore) -> Result<Option<Restored>, CheckpointError> {
        for epoch in self.committed_epochs().await? {
            let dir = self.root.join(&epoch_dir(epoch));
            let commit: BTreeMap<String, String> =
                match serde_json::from_slice(&dir.join(COMMIT).read().await?) {
                    Ok(c) => c,
                    Err(_) => continue,
                };
            let mut files = BTreeMap::new();
            let mut valid = true;
            for name in [WEIGHTS, OPTIMIZER, STATE] {
                match dir.join(name).read().await {
                    Ok(bytes) if commit.get(name) == Some(&sha256_hex(&bytes)) => {
                        files.insert(name, bytes);
                    }
                    _ => valid = false,
                }
            }
            if !valid {
                continue;
            }
            let (Some(weights), Some(optimizer), Some(state)) =
                (files.get(WEIGHTS), files.get(OPTIMIZER), files.get(STATE))
            else {
                continue;
            };
            load_var_store(vs, weights)?;
            return Ok(Some(Restored {
                state: serde_json::from_slice(state)?,
                optimizer: tensors_from(optimizer)?,
            }));
        }
        Ok(None)
    }

    /// Deletes complete checkpoints beyond the newest [`KEEP`], and best
    /// weights no longer referenced. Failures here are not fatal to training.
    async fn prune(&self, state: &TrainState) -> Result<(), CheckpointError> {
        let epochs = self.committed_epochs().await?;
        for epoch in epochs.iter().skip(KEEP) {
            let dir = self.root.join(&epoch_dir(*epoch));
            // COMMIT first, so a partly deleted checkpoint is never valid.
            for name in [COMMIT, WEIGHTS, OPTIMIZER, STATE] {
                dir.join(name).delete().await?;
            }
        }
        let keep_best = state.best_weights.as_ref().map(|(n, _)| n.as_str());
        let oldest_kept = epochs.get(KEEP.min(epochs.len()).saturating_sub(1)).copied().unwrap_or(0);
        for object in self.root.list().await? {
            let name = object.relative_path.as_str();
            let stale_best = name.starts_with("best-")
                && Some(name) != keep_best
                && name
                    .strip_prefix("best-epoch-")
                    .and_then(|s| s.strip_suffix(".ot"))
                    .and_then(|n| n.parse::<u32>().ok())
                    < Some(oldest_kept);
            if stale_best {
                self.root.join(name).delete().await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind, nn};

    fn store_with(value: f64) -> VarStore {
        let vs = VarStore::new(Device::Cpu);
        let _ = vs.root().var("w", &[3], nn::Init::Const(value));
        vs
    }

    fn value(vs: &VarStore) -> f64 {
        vs.variables()["w"].double_value(&[0])
    }

    #[tokio::test]
    async fn newest_valid_checkpoint_wins_and_torn_ones_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let root = Location::parse(&format!("file://{}/checkpoints", dir.path().display())).unwrap();
        let cps = Checkpoints::new(root.clone());
        let opt = vec![("step".to_owned(), Tensor::from(7i64))];
        for epoch in 1..=3u32 {
            let state = TrainState { epoch, ..Default::default() };
            cps.save(&store_with(f64::from(epoch)), &opt, &state).await.unwrap();
        }
        // Only the newest two survive pruning.
        assert!(!root.join("epoch-00001/COMMIT").exists().await.unwrap());

        // A torn epoch 4: weights written, no COMMIT.
        root.join("epoch-00004/weights.ot").write(var_store_bytes(&store_with(4.0)).unwrap()).await.unwrap();
        // A corrupt epoch 5: COMMIT present but weights changed after.
        let state5 = TrainState { epoch: 5, ..Default::default() };
        cps.save(&store_with(5.0), &opt, &state5).await.unwrap();
        root.join("epoch-00005/weights.ot").write(Bytes::from_static(b"garbage")).await.unwrap();

        let mut vs = store_with(0.0);
        let restored = cps.restore_latest(&mut vs).await.unwrap().unwrap();
        assert_eq!(restored.state.epoch, 3);
        assert_eq!(value(&vs), 3.0);
        assert_eq!(restored.optimizer[0].1.int64_value(&[]), 7);
    }

    #[tokio::test]
    async fn no_checkpoint_means_fresh_start() {
        let dir = tempfile::tempdir().unwrap();
        let root = Location::parse(&format!("file://{}/checkpoints", dir.path().display())).unwrap();
        let mut vs = store_with(1.0);
        assert!(Checkpoints::new(root).restore_latest(&mut vs).await.unwrap().is_none());
        assert_eq!(vs.variables()["w"].kind(), Kind::Float);
    }
}
