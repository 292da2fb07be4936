//! Hone's trainer: dataset inspection and model training with libtorch.

pub mod checkpoint;
pub mod dataset;
pub mod model;
pub mod optim;
pub mod rng;
pub mod stats;
pub mod storage;
