//! Hone's trainer: dataset inspection, model training with libtorch, and
//! the held-out test split for evaluation.

pub mod augment;
pub mod checkpoint;
pub mod cli;
pub mod dataset;
pub mod evalsplit;
pub mod log;
pub mod model;
pub mod optim;
pub mod purge;
pub mod report;
pub mod rng;
pub mod stats;
pub mod termination;
pub mod tracking;
pub mod train;
