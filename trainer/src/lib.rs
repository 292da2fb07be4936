//! Hone's trainer: dataset inspection and model training with libtorch.

pub mod storage;
