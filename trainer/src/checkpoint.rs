//! Per-epoch checkpoints that survive a killed pod, and mid-epoch ones
//! written when the trainer is asked to stop (SIGTERM).
//!
//! `checkpoints/epoch-NNNNN/` (after epoch N) or
//! `checkpoints/epoch-NNNNN-step-SSSSSSSS/` (S steps into epoch N + 1) holds `weights.ot`, `optimizer.ot` and
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
    /// Steps this rank took into epoch `epoch + 1` before it was stopped (a
    /// mid-epoch checkpoint; 0 at an epoch's end). A resumed run skips them in
    /// the epoch's permutation, which depends only on (seed, epoch).
    #[serde(default)]
    pub epoch_steps: u64,
    /// Sum of the batch losses (times batch size) over those steps.
    #[serde(default)]
    pub partial_loss: f64,
    /// Correct answers over those steps.
    #[serde(default)]
    pub partial_correct: i64,
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

/// The folder of a checkpoint at (epochs completed, steps into the next).
fn checkpoint_dir((epoch, steps): (u32, u64)) -> String {
    if steps == 0 { epoch_dir(epoch) } else { format!("{}-step-{steps:08}", epoch_dir(epoch)) }
}

/// The inverse of [`checkpoint_dir`].
fn parse_checkpoint_dir(dir: &str) -> Option<(u32, u64)> {
    let rest = dir.strip_prefix("epoch-")?;
    match rest.split_once("-step-") {
        Some((epoch, steps)) => Some((epoch.parse().ok()?, steps.parse().ok().filter(|s| *s > 0)?)),
        None => Some((rest.parse().ok()?, 0)),
    }
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

    /// Writes the checkpoint of a completed epoch, or (with
    /// `state.epoch_steps` > 0) of a stopped one, then prunes old ones.
    pub async fn save(
        &self,
        vs: &VarStore,
        optimizer: &[(String, Tensor)],
        state: &TrainState,
    ) -> Result<(), CheckpointError> {
        let dir = self.root.join(&checkpoint_dir((state.epoch, state.epoch_steps)));
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

    /// Checkpoints that have a COMMIT marker, as (epochs completed, steps
    /// into the next), newest first.
    async fn committed_epochs(&self) -> Result<Vec<(u32, u64)>, CheckpointError> {
        let mut epochs: Vec<(u32, u64)> = self
            .root
            .list()
            .await?
            .iter()
            .filter_map(|o| o.relative_path.strip_suffix(&format!("/{COMMIT}")))
            .filter_map(parse_checkpoint_dir)
            .collect();
        epochs.sort_unstable_by(|a, b| b.cmp(a));
        Ok(epochs)
    }

    /// Loads the newest checkpoint whose files all match their COMMIT hashes
    /// into `vs`; `None` when there is none (a fresh run).
    pub async fn restore_latest(&self, vs: &mut VarStore) -> Result<Option<Restored>, CheckpointError> {
        for at in self.committed_epochs().await? {
            let dir = self.root.join(&checkpoint_dir(at));
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
        for at in epochs.iter().skip(KEEP) {
            let dir = self.root.join(&checkpoint_dir(*at));
            // COMMIT first, so a partly deleted checkpoint is never valid.
            for name in [COMMIT, WEIGHTS, OPTIMIZER, STATE] {
                dir.join(name).delete().await?;
            }
        }
        let keep_best = state.best_weights.as_ref().map(|(n, _)| n.as_str());
        let oldest_kept = epochs.get(KEEP.min(epochs.len()).saturating_sub(1)).map_or(0, |(epoch, _)| *epoch);
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
    async fn a_mid_epoch_checkpoint_sits_between_its_epochs() {
        assert_eq!(parse_checkpoint_dir(&checkpoint_dir((2, 17))), Some((2, 17)));
        assert_eq!(parse_checkpoint_dir(&checkpoint_dir((2, 0))), Some((2, 0)));
        assert_eq!(checkpoint_dir((2, 0)), "epoch-00002");
        for junk in ["epoch-", "epoch-x", "epoch-00002-step-", "epoch-00002-step-0", "best-epoch-00002.ot"] {
            assert_eq!(parse_checkpoint_dir(junk), None, "{junk}");
        }
        let dir = tempfile::tempdir().unwrap();
        let root = Location::parse(&format!("file://{}/checkpoints", dir.path().display())).unwrap();
        let cps = Checkpoints::new(root.clone());
        let opt = vec![("step".to_owned(), Tensor::from(1i64))];
        cps.save(&store_with(1.0), &opt, &TrainState { epoch: 1, ..Default::default() }).await.unwrap();
        let stopped = TrainState { epoch: 1, epoch_steps: 9, partial_loss: 4.5, ..Default::default() };
        cps.save(&store_with(1.5), &opt, &stopped).await.unwrap();
        assert!(root.join("epoch-00001-step-00000009/COMMIT").exists().await.unwrap());
        let mut vs = store_with(0.0);
        let restored = cps.restore_latest(&mut vs).await.unwrap().unwrap();
        assert_eq!((restored.state.epoch, restored.state.epoch_steps, value(&vs)), (1, 9, 1.5));
        // The end of epoch 2 is newer than 9 steps into it.
        cps.save(&store_with(2.0), &opt, &TrainState { epoch: 2, ..Default::default() }).await.unwrap();
        let restored = cps.restore_latest(&mut vs).await.unwrap().unwrap();
        assert_eq!((restored.state.epoch, restored.state.epoch_steps, value(&vs)), (2, 0, 2.0));
        // A checkpoint written before these fields existed still reads.
        let old: TrainState = serde_json::from_str(
            r#"{"epoch":3,"globalStep":30,"bestValLoss":null,"bestEpoch":0,
            "bestWeights":null,"epochsWithoutImprovement":0,"history":[],"seed":1}"#,
        )
        .unwrap();
        assert_eq!((old.epoch, old.epoch_steps), (3, 0));
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
